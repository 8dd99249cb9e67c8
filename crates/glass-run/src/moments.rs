//! AdamW's moments as a checkpoint's `optimizer.safetensors` holds them, streamed: written
//! from a source that hands out any flat range in pieces (the whole optimizer of this
//! process, or a ZeRO-1 optimizer sharded over ranks, gathered on rank 0 one piece at a
//! time: `glass_run::dist::ShardedMoments`), and read back range by range from the file
//! without holding it ([`OptimizerFile`]). Either way the file has the bytes one process
//! writes from its whole optimizer.

use std::ops::Range;
use std::path::{Path, PathBuf};

use glass_engine::layout::ParamLayout;
use glass_engine::{AdamW, Model};
use glass_io::safetensors::{file_order, Dtype, TensorHeader};

use crate::checkpoint::{non_finite, CheckpointState, FileEntry};
use crate::error::{Result, RunError};

/// One of AdamW's two moments, as the optimizer file names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// First moment (`exp_avg.<name>`).
    ExpAvg,
    /// Second moment (`exp_avg_sq.<name>`).
    ExpAvgSq,
}

impl Moment {
    /// Both, in the order the optimizer file holds them.
    pub const BOTH: [Moment; 2] = [Moment::ExpAvg, Moment::ExpAvgSq];

    /// Tensor-name prefix in `optimizer.safetensors`.
    pub fn prefix(self) -> &'static str {
        match self {
            Moment::ExpAvg => "exp_avg.",
            Moment::ExpAvgSq => "exp_avg_sq.",
        }
    }

    /// This moment's buffer in `opt`.
    pub fn of(self, opt: &AdamW) -> &[f32] {
        match self {
            Moment::ExpAvg => &opt.m,
            Moment::ExpAvgSq => &opt.v,
        }
    }

    /// This moment's buffer in `opt`, writable.
    pub fn of_mut(self, opt: &mut AdamW) -> &mut Vec<f32> {
        match self {
            Moment::ExpAvg => &mut opt.m,
            Moment::ExpAvgSq => &mut opt.v,
        }
    }
}

/// Where a checkpoint's AdamW moments come from while its optimizer file is written
/// ([`crate::checkpoint::write_with`]).
pub trait MomentSource {
    /// AdamW's step counter.
    fn adamw_step(&self) -> u64;
    /// Whether every value of the second moment is finite (a checkpoint that holds a
    /// non-finite moment is never published).
    fn finite(&self) -> bool;
    /// Hands `sink` the values of `moment` over the flat parameter range `range`, in
    /// order, in pieces of any length.
    fn stream(
        &mut self,
        moment: Moment,
        range: Range<usize>,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()>;
}

/// The moments of an optimizer held whole by this process.
pub struct WholeMoments<'a>(pub &'a AdamW);

impl MomentSource for WholeMoments<'_> {
    fn adamw_step(&self) -> u64 {
        self.0.step
    }
    fn finite(&self) -> bool {
        crate::integrity::all_finite(&self.0.v)
    }
    fn stream(
        &mut self,
        moment: Moment,
        range: Range<usize>,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        sink(&moment.of(self.0)[range])
    }
}

/// The optimizer file's tensors (headers in layout order) and the (moment, flat
/// parameter range) of each in the order the file holds their bytes.
pub(crate) fn optimizer_stream(
    layout: &ParamLayout,
) -> (Vec<TensorHeader>, Vec<(Moment, Range<usize>)>) {
    let mut headers = Vec::new();
    let mut parts = Vec::new();
    for moment in Moment::BOTH {
        for t in layout.tensors() {
            headers.push(TensorHeader {
                name: format!("{}{}", moment.prefix(), t.name),
                dtype: Dtype::F32,
                shape: t.shape.clone(),
                bytes: 4 * t.len(),
            });
            parts.push((moment, t.range()));
        }
    }
    let order = file_order(&headers)
        .into_iter()
        .map(|i| parts[i].clone())
        .collect();
    (headers, order)
}

/// What a rank that holds part of a sharded optimizer does while rank 0 writes a
/// checkpoint ([`crate::checkpoint::write_with`]): asks `moments` for the same ranges in
/// the same order, so that each collective rank 0's source makes finds this rank in it.
/// Refuses where rank 0 refuses before streaming (non-finite weights, which every rank
/// holds alike, or non-finite moments, which every rank learns of: see
/// [`MomentSource::finite`]), so that no rank waits for a piece that never comes.
pub fn serve_optimizer(
    model: &Model,
    moments: &mut dyn MomentSource,
    state: &CheckpointState,
) -> Result<()> {
    if !crate::integrity::all_finite(&model.params) {
        return Err(non_finite(state, "weights"));
    }
    if !moments.finite() {
        return Err(non_finite(state, "optimizer state"));
    }
    for (moment, range) in optimizer_stream(&model.layout).1 {
        moments.stream(moment, range, &mut |_| Ok(()))?;
    }
    Ok(())
}

/// A published checkpoint's `optimizer.safetensors`, opened (beneath the run, with the
/// manifest's length; its hash checked by the caller) and its tensors found, to read
/// ranges of the moments from without holding them: rank 0 of a sharded optimizer reads
/// one piece at a time and sends it to the rank that owns it. Reads go through `pread`,
/// not a map, so the pages read are not held by this process.
pub struct OptimizerFile {
    path: PathBuf,
    file: std::fs::File,
    /// Tensor extents in the flat parameter buffer, in layout order.
    extents: Vec<Range<usize>>,
    /// Byte offset in the file of each tensor, per moment ([`Moment::BOTH`] order).
    at: [Vec<u64>; 2],
}

impl OptimizerFile {
    /// Opens the file `entry` of `run_dir` and finds every tensor of `layout` in it
    /// (dtype and shape checked).
    pub fn open(run_dir: &Path, entry: &FileEntry, layout: &ParamLayout) -> Result<Self> {
        let path = crate::checkpoint::entry_path(run_dir, entry)?;
        let opened = glass_io::open::open_beneath(run_dir, &path)?;
        opened.expect_len(entry.bytes)?;
        let map = opened.map()?.ok_or_else(|| RunError::Checkpoint {
            path: path.clone(),
            msg: "empty; the checkpoint is incomplete".into(),
        })?;
        let mut at: [Vec<u64>; 2] = Default::default();
        for (i, moment) in Moment::BOTH.into_iter().enumerate() {
            at[i] = crate::checkpoint::tensor_ranges(&path, &map, layout, moment.prefix())?
                .into_iter()
                .map(|r| r.start as u64)
                .collect();
        }
        drop(map);
        Ok(Self {
            path,
            file: opened.into_file(),
            extents: layout.tensors().iter().map(|t| t.range()).collect(),
            at,
        })
    }

    /// Reads the values of `moment` over the flat parameter range `range` into `out`
    /// (`range.len()` values), tensor by tensor.
    pub fn read(&self, moment: Moment, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let at = &self.at[moment as usize];
        let first = self.extents.partition_point(|e| e.end <= range.start);
        for (e, &base) in self.extents[first..].iter().zip(&at[first..]) {
            if e.start >= range.end {
                break;
            }
            let (a, b) = (range.start.max(e.start), range.end.min(e.end));
            let dst: &mut [u8] =
                bytemuck::cast_slice_mut(&mut out[a - range.start..b - range.start]);
            self.file
                .read_exact_at(dst, base + 4 * (a - e.start) as u64)
                .map_err(|e| RunError::Checkpoint {
                    path: self.path.clone(),
                    msg: format!("{e}; the checkpoint is incomplete"),
                })?;
        }
        Ok(())
    }
}
