//! Where a training step's time goes, phase by phase (`glass bench train --profile`).
//!
//! Off by default: a span then costs one relaxed atomic load. When on, each span adds
//! the wall time between its creation and its drop to its phase's counter (nanoseconds,
//! summed over calls), timed on the calling thread around the whole parallel operation,
//! so the phases of one step add up to (almost all of) the step. Profiling changes no
//! computed bit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A phase of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Phase {
    /// Token embedding, forward and backward.
    Embedding,
    /// Norms (block and final), forward.
    NormFwd,
    /// Norms, backward.
    NormBwd,
    /// `[q; k; v]` projection GEMM, forward.
    QkvFwd,
    /// QK-norm, qkv clipping, RoPE, forward.
    RopeFwd,
    /// Causal attention, forward.
    AttnFwd,
    /// Output projection GEMM (+ residual), forward.
    OFwd,
    /// MLP input projection GEMM, forward.
    MlpInFwd,
    /// SwiGLU / GELU, forward.
    ActFwd,
    /// Down projection GEMM (+ residual), forward.
    DownFwd,
    /// Output head GEMM, softmax, cross-entropy and the head's backward GEMMs.
    HeadLoss,
    /// Down projection backward GEMMs (dx, dW).
    DownBwd,
    /// SwiGLU backward.
    ActBwd,
    /// MLP input projection backward GEMMs.
    MlpInBwd,
    /// Output projection backward GEMMs.
    OBwd,
    /// Causal attention, backward.
    AttnBwd,
    /// RoPE, backward.
    RopeBwd,
    /// `[q; k; v]` projection backward GEMMs.
    QkvBwd,
    /// Bias gradients and residual adds.
    Elementwise,
    /// Gradient accumulation across micro-batches (the fixed-order tree).
    GradReduce,
    /// Gradient norm, clipping and AdamW.
    Optimizer,
}

/// Every phase, in report order.
pub const PHASES: [Phase; 21] = [
    Phase::Embedding,
    Phase::NormFwd,
    Phase::QkvFwd,
    Phase::RopeFwd,
    Phase::AttnFwd,
    Phase::OFwd,
    Phase::MlpInFwd,
    Phase::ActFwd,
    Phase::DownFwd,
    Phase::HeadLoss,
    Phase::DownBwd,
    Phase::ActBwd,
    Phase::MlpInBwd,
    Phase::OBwd,
    Phase::AttnBwd,
    Phase::RopeBwd,
    Phase::QkvBwd,
    Phase::NormBwd,
    Phase::Elementwise,
    Phase::GradReduce,
    Phase::Optimizer,
];

impl Phase {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Embedding => "embedding (fwd+bwd)",
            Phase::NormFwd => "norms fwd",
            Phase::NormBwd => "norms bwd",
            Phase::QkvFwd => "GEMM qkv fwd",
            Phase::RopeFwd => "rope (+qk-norm) fwd",
            Phase::AttnFwd => "attention fwd",
            Phase::OFwd => "GEMM o fwd",
            Phase::MlpInFwd => "GEMM gate/up fwd",
            Phase::ActFwd => "swiglu fwd",
            Phase::DownFwd => "GEMM down fwd",
            Phase::HeadLoss => "head + loss (fwd+bwd GEMMs)",
            Phase::DownBwd => "GEMM down bwd",
            Phase::ActBwd => "swiglu bwd",
            Phase::MlpInBwd => "GEMM gate/up bwd",
            Phase::OBwd => "GEMM o bwd",
            Phase::AttnBwd => "attention bwd",
            Phase::RopeBwd => "rope bwd",
            Phase::QkvBwd => "GEMM qkv bwd",
            Phase::Elementwise => "biases, residual adds",
            Phase::GradReduce => "gradient accumulation",
            Phase::Optimizer => "grad norm + AdamW",
        }
    }
}

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; PHASES.len()] = [const { AtomicU64::new(0) }; PHASES.len()];
static CALLS: [AtomicU64; PHASES.len()] = [const { AtomicU64::new(0) }; PHASES.len()];

/// Turns profiling on or off (process-wide) and clears the counters.
pub fn enable(on: bool) {
    for (n, c) in NANOS.iter().zip(&CALLS) {
        n.store(0, Ordering::Relaxed);
        c.store(0, Ordering::Relaxed);
    }
    ON.store(on, Ordering::Relaxed);
}

/// Clears the counters (e.g. after warm-up steps).
pub fn reset() {
    for (n, c) in NANOS.iter().zip(&CALLS) {
        n.store(0, Ordering::Relaxed);
        c.store(0, Ordering::Relaxed);
    }
}

/// `(phase, seconds, calls)` for every phase since the last reset.
pub fn totals() -> Vec<(Phase, f64, u64)> {
    PHASES
        .iter()
        .map(|&p| {
            (
                p,
                NANOS[p as usize].load(Ordering::Relaxed) as f64 * 1e-9,
                CALLS[p as usize].load(Ordering::Relaxed),
            )
        })
        .collect()
}

/// Times until dropped (see the module docs).
pub struct Span {
    phase: Phase,
    start: Option<Instant>,
}

/// Starts timing `phase` (a no-op when profiling is off).
#[inline]
pub fn span(phase: Phase) -> Span {
    Span {
        phase,
        start: ON.load(Ordering::Relaxed).then(Instant::now),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            let i = self.phase as usize;
            NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
