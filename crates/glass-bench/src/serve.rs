//! `glass bench serve`: the dashboard on a synthetic million-step run. Measures the JSON
//! API's latency for the loss curve (downsampled to a chart's width, p50 and p99 over
//! fresh connections) and, when Chromium is installed, the time from starting a headless
//! browser on the run page to its first drawn chart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_run::metrics::{CheckpointRow, StepRow};
use glass_run::Metrics;
use serde::Serialize;

use crate::error::io;
use crate::http::Reply;
use crate::{BenchError, Result};

/// What to time.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Steps of the synthetic run.
    pub steps: u64,
    /// Timed API requests.
    pub requests: usize,
    /// Chart width in pixels the requests ask for.
    pub width: usize,
    /// Where the synthetic run is written (reused while it has `steps` steps).
    pub dir: PathBuf,
    /// Headless page loads timed (0: skip the browser).
    pub loads: usize,
    /// Chromium binary (default: `chromium`, then `chromium-browser`, `google-chrome`).
    pub chromium: Option<PathBuf>,
}

/// What `glass bench serve` measured.
#[derive(Debug, Serialize)]
pub struct ServeBench {
    /// Steps in the synthetic run.
    pub steps: u64,
    /// Width asked for.
    pub width: usize,
    /// Points in each reply.
    pub points: usize,
    /// Bytes in each reply.
    pub reply_bytes: usize,
    /// Requests timed.
    pub requests: usize,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// Latency of the full-resolution curve (no width), one request (ms).
    pub full_resolution_ms: f64,
    /// Headless Chromium: median wall time of loading the run page until it has drawn
    /// its charts and exits (ms).
    pub browser_page_ms: Option<f64>,
    /// The same for a page with nothing to draw (browser start and exit alone, ms).
    pub browser_baseline_ms: Option<f64>,
    /// Their difference: time to the first drawn chart (ms).
    pub first_chart_ms: Option<f64>,
    /// The page's own count: `performance.now()` from navigation to its charts drawn
    /// (median, ms; under `--virtual-time-budget`, so idle time is not counted).
    pub in_page_ms: Option<f64>,
}

/// Writes the synthetic run: loss decaying with noise and a few spikes, cosine lr,
/// gradient norm, throughput, a checkpoint every 1% with validation loss, some events.
fn write_run(dir: &Path, steps: u64) -> Result<()> {
    if let Ok(m) = Metrics::open_read_only(dir) {
        if m.step_extent()?.map(|e| e.2) == Some(steps) {
            return Ok(());
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("clearing", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut m = Metrics::open(dir)?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let tokens_per_step = 4096u64;
    let mut rows = Vec::with_capacity(100_000);
    for s in 0..steps {
        let t = s as f64 / steps as f64;
        let mut loss = 2.0 + 8.0 * (-(s as f64) / 20_000.0).exp() + 0.05 * noise();
        if s % 99_991 == 5_000 {
            loss *= 3.0;
        }
        rows.push(StepRow {
            step: s,
            loss,
            lr: 3e-4 * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())),
            grad_norm: 0.5 + 0.1 * noise(),
            tokens: (s + 1) * tokens_per_step,
            tokens_per_s: 50_000.0 + 1000.0 * noise(),
            wall_time: 1.7e9 + s as f64 * 0.08,
        });
        if rows.len() == rows.capacity() {
            m.steps_bulk(&rows)?;
            rows.clear();
        }
    }
    m.steps_bulk(&rows)?;
    let every = (steps / 100).max(1);
    for k in 0..=(steps / every) {
        let step = (k * every).min(steps);
        m.checkpoint(&CheckpointRow {
            checkpoint: k as u32,
            step,
            tokens: step * tokens_per_step,
            val_loss: Some(2.1 + 8.0 * (-(step as f64) / 20_000.0).exp()),
            val_bpb: Some(0.9),
        })?;
    }
    for s in (5_000..steps).step_by(99_991) {
        m.event(
            Some(s),
            "rollback",
            serde_json::json!({"reason": "loss spike (synthetic)"}),
        )?;
    }
    Ok(())
}

/// The Chromium binary to use, if any.
pub fn find_chromium(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(PathBuf::from)
}

/// Loads `url` in headless Chromium until the page is idle; returns the DOM.
pub fn dump_dom(chromium: &Path, url: &str, budget_ms: u32) -> Result<String> {
    let o = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ])
        .output()
        .map_err(io("running", chromium))?;
    if !o.status.success() {
        return Err(BenchError::Failed(format!(
            "{} failed on {url}: {}",
            chromium.display(),
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts `glass serve`'s router over `dir` on a loopback port, in a thread of its own.
fn start_server(dir: &Path) -> Result<SocketAddr> {
    let runs = glass_serve::Runs::new(vec![dir.to_path_buf()]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .expect("bind");
            tx.send(l.local_addr().expect("address")).expect("send");
            glass_serve::api::serve(l, runs).await.expect("serve");
        });
    });
    rx.recv()
        .map_err(|_| BenchError::Failed("the dashboard server did not start".into()))
}

/// Writes (or reuses) the synthetic run under `dir`, serves it, and times the API and,
/// when `loads` > 0 and Chromium is found, the run page. `progress` hears what is being
/// written and what is skipped.
pub fn run(o: &ServeOptions, progress: &mut dyn FnMut(&str)) -> Result<ServeBench> {
    let run_dir = o.dir.join("run-1m");
    progress(&format!(
        "writing the synthetic {}-step run to {}",
        o.steps,
        run_dir.display()
    ));
    write_run(&run_dir, o.steps)?;
    let addr = start_server(&run_dir)?;
    let id = glass_serve::Runs::new(vec![run_dir.clone()]).list()[0]
        .id
        .clone();
    let target = format!("/api/runs/{id}/series/loss?width={}", o.width);
    let get = |t: &str| -> Result<(f64, Reply)> {
        let t0 = Instant::now();
        let r = crate::http::get(addr, t).map_err(|source| BenchError::Io {
            what: format!("GET {t}"),
            source,
        })?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if r.status != 200 {
            return Err(BenchError::Failed(format!(
                "GET {t}: {} {}",
                r.status,
                r.text()
            )));
        }
        Ok((ms, r))
    };
    let (_, first) = get(&target)?; // warm the page cache
    let v: serde_json::Value =
        serde_json::from_slice(&first.body).map_err(|source| BenchError::Json {
            what: format!("reading the reply to GET {target}"),
            source,
        })?;
    let points = v["steps"].as_array().map_or(0, |a| a.len());
    let mut lat = Vec::with_capacity(o.requests);
    for _ in 0..o.requests.max(1) {
        lat.push(get(&target)?.0);
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    let (full_ms, _) = get(&format!("/api/runs/{id}/series/loss"))?;
    let mut r = ServeBench {
        steps: o.steps,
        width: o.width,
        points,
        reply_bytes: first.body.len(),
        requests: lat.len(),
        p50_ms: p(0.5),
        p99_ms: p(0.99),
        full_resolution_ms: full_ms,
        browser_page_ms: None,
        browser_baseline_ms: None,
        first_chart_ms: None,
        in_page_ms: None,
    };
    if o.loads > 0 {
        match find_chromium(o.chromium.as_deref()) {
            None => progress("no chromium found: browser timing skipped (--chromium PATH)"),
            Some(c) => {
                let (mut page, mut base, mut inner) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..o.loads {
                    let t0 = Instant::now();
                    dump_dom(&c, &format!("http://{addr}/assets/uPlot.LICENSE"), 5000)?;
                    base.push(t0.elapsed().as_secs_f64() * 1e3);
                    let t0 = Instant::now();
                    let dom = dump_dom(&c, &format!("http://{addr}/runs/{id}?live=0"), 5000)?;
                    page.push(t0.elapsed().as_secs_f64() * 1e3);
                    if !dom.contains("data-charts-drawn") {
                        return Err(BenchError::Failed(
                            "the run page drew no chart in headless Chromium".into(),
                        ));
                    }
                    let ms = dom
                        .split("data-first-chart-ms=\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .and_then(|s| s.parse::<f64>().ok());
                    inner.extend(ms);
                }
                let (pm, bm) = (median(&mut page), median(&mut base));
                r.browser_page_ms = Some(pm);
                r.browser_baseline_ms = Some(bm);
                r.first_chart_ms = Some(pm - bm);
                if !inner.is_empty() {
                    r.in_page_ms = Some(median(&mut inner));
                }
            }
        }
    }
    Ok(r)
}
