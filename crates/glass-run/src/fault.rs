//! Deterministic crash points for tests and for users who want to see recovery work.
//!
//! `GLASS_FAULT=NAME:N` aborts the process (like `kill -9`: no destructors, no flush)
//! the N-th time execution reaches fault point NAME. Unset, a point costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    static T: OnceLock<Option<(String, u64)>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("GLASS_FAULT").ok()?;
        let (name, n) = v.split_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    })
}

/// Marks a point where a crash is interesting (mid-checkpoint, after a step, ...).
pub fn point(name: &str) {
    if let Some((want, n)) = target() {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("GLASS_FAULT: aborting at {name} #{n}");
            std::process::abort();
        }
    }
}

/// Like [`point`], but instead of aborting reports whether this is the N-th hit, for
/// faults the caller injects itself (`GLASS_FAULT=nan-weights:N` poisons the weights
/// after the N-th update, to exercise the guard's parameter check).
pub fn triggered(name: &str) -> bool {
    match target() {
        Some((want, n)) if want == name => HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}
