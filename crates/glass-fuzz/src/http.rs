//! The dashboard's request parsing, end to end: one `glass serve` server per process over
//! a copy of the seed run, fed raw request bytes on a socket. The property: the server
//! answers (or closes) within the deadline, and still answers a plain request afterwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::Scratch;

struct Server {
    addr: SocketAddr,
    _run: Scratch,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let run = Scratch::new();
        let runs = glass_serve::Runs::new(vec![run.run.clone()]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let _ = rt.block_on(glass_serve::api::serve(listener, runs));
        });
        Server { addr, _run: run }
    })
}

/// Sends `bytes`, reads whatever comes back until the server closes or `wait` passes.
/// The write side stays open: the server may take a half-closed connection for a client
/// that left, and drop the request.
fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("the dashboard accepts connections");
    s.set_read_timeout(Some(wait)).unwrap();
    s.set_write_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 8192];
    while t0.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// One raw request; then the server must still answer `GET /api/runs`.
pub fn request(bytes: &[u8]) {
    let srv = server();
    // A request cut short leaves the server waiting for the rest: give up after 1 s.
    let _ = exchange(srv.addr, bytes, Duration::from_secs(1));
    let probe = exchange(
        srv.addr,
        b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(8),
    );
    assert!(
        probe.starts_with(b"HTTP/1.1 200"),
        "the dashboard stopped answering after a request: {:?}",
        String::from_utf8_lossy(&probe[..probe.len().min(200)])
    );
}
