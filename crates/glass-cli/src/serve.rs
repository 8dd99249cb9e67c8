//! `glass serve`: resolves the runs to serve, prints the URL, runs the dashboard.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// Options of `glass serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Runs, or directories with runs below them (default: the current directory).
    pub paths: Vec<PathBuf>,
    /// TCP port (0: any free port; the URL printed names it).
    #[arg(long, default_value_t = 8360)]
    pub port: u16,
    /// Address to listen on. Anything but a loopback address lets other machines read
    /// the runs (there is no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
}

/// Runs `glass serve` until interrupted.
pub fn run(a: ServeArgs) -> Result<()> {
    let paths = if a.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        a.paths
    };
    let runs = glass_serve::Runs::new(glass_serve::discover(&paths)?);
    if !a.bind.is_loopback() {
        eprintln!(
            "warning: listening on {}, not a loopback address: anyone who can reach it can read these runs (metrics, training rows, checkpoint hashes); there is no authentication",
            a.bind
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.bind, a.port))
            .await
            .with_context(|| format!("listening on {}:{}", a.bind, a.port))?;
        let addr = listener.local_addr()?;
        for r in runs.list() {
            println!("  {:<24} {}", r.id, r.dir.display());
        }
        let first = match runs.list() {
            [one] => format!("runs/{}", one.id),
            _ => String::new(),
        };
        println!(
            "serving {} run(s) read-only at http://{addr}/{first}  (Ctrl-C stops)",
            runs.list().len()
        );
        glass_serve::api::serve(listener, runs)
            .await
            .context("serving")
    })
}
