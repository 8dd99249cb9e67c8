//! The `prepare` progress bar: input MB/s, tokens/s and ETA; drawn only on a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of tokenization over a known number of input bytes.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    tokens: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// A bar over `total_bytes`; hidden when `show` is false or stderr is not a terminal.
    pub fn new(total_bytes: u64, show: bool) -> Self {
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
        bar.set_prefix("tokenize");
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
