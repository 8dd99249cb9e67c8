//! Progress on stderr for long work: a bar with a rate and an ETA, drawn only when asked
//! and only on a terminal, so logs and pipes stay clean.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// Progress over a known number of input bytes turned into tokens (or any other unit):
/// input bytes/s, millions of output units/s, ETA.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    tokens: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// A bar over `total_bytes` named `prefix`; hidden when `show` is false or stderr is
    /// not a terminal.
    pub fn new(prefix: &'static str, total_bytes: u64, show: bool) -> Self {
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total_bytes), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ETA {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        Self {
            bar,
            start: Instant::now(),
            tokens: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Records `bytes` of input turned into `tokens` tokens.
    pub fn inc(&self, bytes: u64, tokens: u64) {
        let t = self.tokens.fetch_add(tokens, Ordering::Relaxed) + tokens;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        self.bar
            .set_message(format!("{:.2} M tok/s", t as f64 / secs / 1e6));
        self.bar.inc(bytes);
    }

    /// Tokens and bytes so far, and seconds elapsed.
    pub fn totals(&self) -> (u64, u64, f64) {
        (
            self.tokens.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.start.elapsed().as_secs_f64(),
        )
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A plain bar of `len` steps drawn with an indicatif `template`; hidden when `show` is
/// false (indicatif itself draws nothing when stderr is not a terminal).
pub fn bar(len: u64, show: bool, template: &str) -> ProgressBar {
    let target = if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let b = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b
}
