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

use crate::checkpoint::{bad_value, first_bad, non_finite, CheckpointState, FileEntry, ValueRule};
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
    /// Whether every value of both moments is finite (a checkpoint that holds a
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
        crate::integrity::all_finite(&self.0.m) && crate::integrity::all_finite(&self.0.v)
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
    /// Tensor names, in layout order (without the moment's prefix).
    names: Vec<String>,
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
            names: layout.tensors().iter().map(|t| t.name.clone()).collect(),
            at,
        })
    }

    /// Reads the values of `moment` over the flat parameter range `range` into `out`
    /// (`range.len()` values), tensor by tensor, checking each value as it is read
    /// (finite; the second moment also not negative): a bad one is an error naming the
    /// file, the tensor and the element.
    pub fn read(&self, moment: Moment, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let rule = match moment {
            Moment::ExpAvg => ValueRule::Finite,
            Moment::ExpAvgSq => ValueRule::FiniteNonNegative,
        };
        let at = &self.at[moment as usize];
        let first = self.extents.partition_point(|e| e.end <= range.start);
        for ((e, &base), name) in self.extents[first..]
            .iter()
            .zip(&at[first..])
            .zip(&self.names[first..])
        {
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
            let values = &out[a - range.start..b - range.start];
            if let Some(i) = first_bad(values, rule) {
                return Err(bad_value(
                    &self.path,
                    &format!("{}{name}", moment.prefix()),
                    a - e.start + i,
                    values[i],
                    rule,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sharded optimizer's moments, read back piece by piece from a checkpoint's file,
    /// are checked as they are read: a non-finite first moment or a negative second
    /// moment is an error naming the file, the tensor and the element.
    #[test]
    fn moments_read_in_pieces_are_checked() {
        let cfg = glass_engine::ModelConfig::from_toml(
            "vocab_size=8\nd_model=4\nn_layers=1\nn_heads=1\nn_kv_heads=1\nffn_hidden=4\nmax_seq_len=4\n",
        )
        .unwrap();
        let model = Model::new(&cfg, 1).unwrap();
        let n = model.params.len();
        let dir = tempfile::tempdir().unwrap();
        let name = "optimizer.safetensors";
        let t = &model.layout.tensors()[1];
        let cases = [
            (Moment::ExpAvgSq, -1.0f32, "finite and not negative"),
            (Moment::ExpAvg, f32::INFINITY, "finite"),
        ];
        for (bad, value, rule) in cases {
            let (mut m, mut v) = (vec![0.5f32; n], vec![0.25f32; n]);
            let buf = match bad {
                Moment::ExpAvg => &mut m,
                Moment::ExpAvgSq => &mut v,
            };
            buf[t.range().start + 2] = value;
            let (sha256, bytes) = crate::checkpoint::write_tensors(
                &dir.path().join(name),
                &model,
                &[("exp_avg.", &m), ("exp_avg_sq.", &v)],
                Default::default(),
            )
            .unwrap();
            let entry = FileEntry {
                path: name.into(),
                sha256,
                bytes,
            };
            let file = OptimizerFile::open(dir.path(), &entry, &model.layout).unwrap();
            let mut out = vec![0f32; n];
            // The other moment, and the pieces before the bad value, read as written.
            let good = Moment::BOTH.into_iter().find(|m| *m != bad).unwrap();
            file.read(good, 0..n, &mut out).unwrap();
            let before = t.range().start + 2;
            file.read(bad, 0..before, &mut out[..before]).unwrap();
            let e = file.read(bad, 0..n, &mut out).unwrap_err().to_string();
            let tensor = format!("`{}{}`", bad.prefix(), t.name);
            for w in [name, tensor.as_str(), "element 2", &value.to_string(), rule] {
                assert!(e.contains(w), "missing {w} in: {e}");
            }
        }
    }
}
