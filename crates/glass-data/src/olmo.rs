//! OLMo's training data: token memmaps listed in the run's config, cut into instances as
//! `olmo/data/memmap_dataset.py` does, in the order of `global_indices.npy`.
//!
//! - Each file in `data.paths` (or, without it, `data.datasets`' lists in sorted label
//!   order) is a bare array of `data.memmap_dtype` token ids (default uint16). File `f`
//!   holds `⌊bytes / (width · seq_len)⌋` instances; the tail of each file is dropped (files
//!   are chunked separately, never across a boundary). Instance `i` is chunk `i − start(f)`
//!   of the file whose range holds it, `seq_len = model.max_sequence_length` tokens.
//! - `global_indices.npy` lists instance indices in training order (OLMo writes it as a
//!   bare `np.memmap` of uint32; a `.npy` with a `<u4`/`<u8` header is read too). Batch
//!   `s` is entries `[s·B, (s+1)·B)`, `B = global_train_batch_size`; OLMo's trainer logs
//!   that batch as step `s + 1`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{DataError, Result};
use crate::npy::IndexArray;

/// Token width of OLMo memmaps (`data.memmap_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OlmoDtype {
    /// `uint8`.
    Uint8,
    /// `uint16` (OLMo's default).
    Uint16,
    /// `uint32`.
    Uint32,
    /// `uint64`.
    Uint64,
}

impl OlmoDtype {
    /// Parses numpy's name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uint8" => Self::Uint8,
            "uint16" => Self::Uint16,
            "uint32" => Self::Uint32,
            "uint64" => Self::Uint64,
            _ => return None,
        })
    }

    /// Bytes per token.
    pub fn width(self) -> u64 {
        match self {
            Self::Uint8 => 1,
            Self::Uint16 => 2,
            Self::Uint32 => 4,
            Self::Uint64 => 8,
        }
    }
}

/// What Glass needs from an OLMo training config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OlmoConfig {
    /// The data files, as the config names them (URLs or paths), in dataset order.
    pub paths: Vec<String>,
    /// Each file's `data.datasets` label (none for `data.paths`).
    pub labels: Vec<Option<String>>,
    /// Token width.
    pub dtype: OlmoDtype,
    /// `model.max_sequence_length`: tokens per instance.
    pub seq_len: u64,
    /// `global_train_batch_size`: instances per step.
    pub global_batch_size: u64,
}

fn cfg_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::layout(path, None, msg)
}

fn positive(y: &Yaml, key: &str, path: &Path) -> Result<u64> {
    match y {
        Yaml::Integer(i) if *i > 0 => Ok(*i as u64),
        Yaml::BadValue => Err(cfg_err(path, format!("`{key}` is missing"))),
        other => Err(cfg_err(
            path,
            format!("`{key}` must be a positive integer, not {other:?}"),
        )),
    }
}

fn strings(y: &Yaml, key: &str, path: &Path) -> Result<Vec<String>> {
    let Yaml::Array(a) = y else {
        return Err(cfg_err(path, format!("`{key}` must be a list of paths")));
    };
    a.iter()
        .map(|v| match v {
            Yaml::String(s) if s.contains("${") => Err(cfg_err(
                path,
                format!("`{key}` holds the unresolved interpolation `{s}`: use the config.yaml saved with the run's checkpoints, whose paths are resolved"),
            )),
            Yaml::String(s) => Ok(s.clone()),
            other => Err(cfg_err(path, format!("`{key}`: {other:?} is not a path"))),
        })
        .collect()
}

impl OlmoConfig {
    /// Parses the YAML of an OLMo `TrainConfig` (`config.yaml`); `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let docs =
            YamlLoader::load_from_str(text).map_err(|e| cfg_err(path, format!("not YAML: {e}")))?;
        let [root] = docs.as_slice() else {
            return Err(cfg_err(path, "expected exactly one YAML document"));
        };
        if !matches!(root, Yaml::Hash(_)) {
            return Err(cfg_err(path, "expected a mapping at the top level"));
        }
        let seq_len = positive(
            &root["model"]["max_sequence_length"],
            "model.max_sequence_length",
            path,
        )?;
        let global_batch_size = positive(
            &root["global_train_batch_size"],
            "global_train_batch_size",
            path,
        )?;
        let data = &root["data"];
        let dtype = match &data["memmap_dtype"] {
            Yaml::BadValue | Yaml::Null => OlmoDtype::Uint16,
            Yaml::String(s) => OlmoDtype::parse(s).ok_or_else(|| {
                cfg_err(
                    path,
                    format!("data.memmap_dtype `{s}`: expected uint8, uint16, uint32 or uint64"),
                )
            })?,
            other => return Err(cfg_err(path, format!("data.memmap_dtype: {other:?}"))),
        };
        let has = |y: &Yaml| !matches!(y, Yaml::BadValue | Yaml::Null);
        let (paths, labels) = match (has(&data["paths"]), has(&data["datasets"])) {
            (true, true) => {
                return Err(cfg_err(
                    path,
                    "data.paths and data.datasets are mutually exclusive",
                ))
            }
            (true, false) => {
                let p = strings(&data["paths"], "data.paths", path)?;
                let n = p.len();
                (p, vec![None; n])
            }
            (false, true) => {
                let Yaml::Hash(h) = &data["datasets"] else {
                    return Err(cfg_err(
                        path,
                        "data.datasets must map labels to lists of paths",
                    ));
                };
                let mut labelled = Vec::new();
                for (k, v) in h {
                    let Yaml::String(label) = k else {
                        return Err(cfg_err(
                            path,
                            format!("data.datasets: label {k:?} is not a string"),
                        ));
                    };
                    labelled.push((
                        label.clone(),
                        strings(v, &format!("data.datasets.{label}"), path)?,
                    ));
                }
                labelled.sort_by(|a, b| a.0.cmp(&b.0));
                let mut paths = Vec::new();
                let mut labels = Vec::new();
                for (l, ps) in labelled {
                    labels.extend(std::iter::repeat_n(Some(l), ps.len()));
                    paths.extend(ps);
                }
                (paths, labels)
            }
            (false, false) => {
                return Err(cfg_err(path, "neither data.paths nor data.datasets is set"))
            }
        };
        if paths.is_empty() {
            return Err(cfg_err(path, "the config lists no data files"));
        }
        Ok(Self {
            paths,
            labels,
            dtype,
            seq_len,
            global_batch_size,
        })
    }
}

/// The local copy of a path the config names, looked up under `data_dir`: the path
/// without its scheme (`s3://`, `https://`, …) with the host and leading folders dropped
/// one at a time (`host/a/b/f.npy`, `a/b/f.npy`, `b/f.npy`, `f.npy`); the longest that
/// exists wins. `None` when none does.
pub fn resolve_local(data_dir: &Path, config_path: &str) -> Option<PathBuf> {
    let rest = config_path
        .split_once("://")
        .map_or(config_path, |(_, r)| r);
    let comps: Vec<&str> = rest
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    (0..comps.len())
        .map(|k| {
            comps[k..]
                .iter()
                .fold(data_dir.to_path_buf(), |p, c| p.join(c))
        })
        .find(|p| p.is_file())
}

/// Where an instance came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceOrigin {
    /// The instance index (as `global_indices` lists it).
    pub instance: u64,
    /// The file holding it.
    pub file: usize,
    /// Its chunk within the file.
    pub chunk: u64,
    /// Byte offset in the file.
    pub byte: u64,
}

/// OLMo's `MemMapDataset` over local files.
pub struct OlmoDataset {
    paths: Vec<PathBuf>,
    maps: Vec<Option<memmap2::Mmap>>,
    /// `starts[f]` = first instance of file `f`; `starts[n]` = instances in all.
    starts: Vec<u64>,
    dtype: OlmoDtype,
    seq_len: u64,
}

impl OlmoDataset {
    /// Maps every file and counts its instances.
    pub fn open(paths: &[PathBuf], dtype: OlmoDtype, seq_len: u64) -> Result<Self> {
        if seq_len == 0 {
            return Err(DataError::Range("sequence length 0".into()));
        }
        let mut maps = Vec::new();
        let mut starts = vec![0u64];
        for p in paths {
            let f = glass_io::open::open_regular(p)?;
            let n = f.len() / dtype.width().saturating_mul(seq_len);
            maps.push(f.map()?);
            starts.push(starts.last().copied().unwrap_or(0) + n);
        }
        Ok(Self {
            paths: paths.to_vec(),
            maps,
            starts,
            dtype,
            seq_len,
        })
    }

    /// Instances in all files.
    pub fn len(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Instances of file `f`.
    pub fn file_instances(&self, f: usize) -> u64 {
        self.starts[f + 1] - self.starts[f]
    }

    /// Appends instance `i`'s `seq_len` token ids to `out`.
    pub fn instance(&self, i: u64, out: &mut Vec<u32>) -> Result<InstanceOrigin> {
        if i >= self.len() {
            return Err(DataError::Range(format!(
                "instance {i} past the {} instances of the {} data files",
                self.len(),
                self.paths.len()
            )));
        }
        let f = self.starts.partition_point(|&s| s <= i) - 1;
        let chunk = i - self.starts[f];
        let w = self.dtype.width();
        let byte = chunk * self.seq_len * w;
        let map = self.maps[f].as_deref().unwrap_or(&[]);
        let bytes = &map[byte as usize..(byte + self.seq_len * w) as usize];
        for (k, b) in bytes.chunks_exact(w as usize).enumerate() {
            let v = match self.dtype {
                OlmoDtype::Uint8 => b[0] as u64,
                OlmoDtype::Uint16 => u16::from_le_bytes([b[0], b[1]]) as u64,
                OlmoDtype::Uint32 => u32::from_le_bytes(b.try_into().expect("4")) as u64,
                OlmoDtype::Uint64 => u64::from_le_bytes(b.try_into().expect("8")),
            };
            let v = u32::try_from(v).map_err(|_| {
                DataError::layout(
                    &self.paths[f],
                    Some(byte + k as u64 * w),
                    format!("token id {v} is past u32"),
                )
            })?;
            out.push(v);
        }
        Ok(InstanceOrigin {
            instance: i,
            file: f,
            chunk,
            byte,
        })
    }
}

/// OLMo's data order: `global_indices` cut into batches of `B` instances.
pub struct OlmoOrder {
    indices: IndexArray,
    batch: u64,
}

impl OlmoOrder {
    /// Opens the order file.
    pub fn open(path: &Path, global_batch_size: u64) -> Result<Self> {
        if global_batch_size == 0 {
            return Err(DataError::Range("global batch size 0".into()));
        }
        Ok(Self {
            indices: IndexArray::open(path)?,
            batch: global_batch_size,
        })
    }

    /// The array.
    pub fn indices(&self) -> &IndexArray {
        &self.indices
    }

    /// Complete batches.
    pub fn n_steps(&self) -> u64 {
        self.indices.len() / self.batch
    }

    /// The instance indices of batch `step`, each checked against `n_instances` (an
    /// index past the data names the order file and the entry's byte offset).
    pub fn step_instances(&self, step: u64, n_instances: u64) -> Result<Vec<u64>> {
        if step >= self.n_steps() {
            return Err(DataError::Range(format!(
                "step {step} is past the last step: {} holds {} indices, {} steps of {}",
                self.indices.path().display(),
                self.indices.len(),
                self.n_steps(),
                self.batch
            )));
        }
        (step * self.batch..(step + 1) * self.batch)
            .map(|k| {
                let v = self.indices.get(k)?;
                if v >= n_instances {
                    return Err(DataError::layout(
                        self.indices.path(),
                        Some(self.indices.byte_offset(k)),
                        format!("entry {k} is instance {v}, past the {n_instances} instances the data files hold: this order belongs to other data (or another max_sequence_length or memmap_dtype)"),
                    ));
                }
                Ok(v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_datasets_configs() {
        let p = Path::new("config.yaml");
        let c = OlmoConfig::parse(
            "model:\n  max_sequence_length: 8\nglobal_train_batch_size: 4\ndata:\n  memmap_dtype: uint32\n  paths:\n    - s3://b/x/a.npy\n    - b.npy\n",
            p,
        )
        .unwrap();
        assert_eq!(c.paths, ["s3://b/x/a.npy", "b.npy"]);
        assert_eq!(
            (c.seq_len, c.global_batch_size, c.dtype),
            (8, 4, OlmoDtype::Uint32)
        );
        let c = OlmoConfig::parse(
            "model: {max_sequence_length: 8}\nglobal_train_batch_size: 4\ndata:\n  datasets:\n    z: [z1.npy]\n    a: [a1.npy, a2.npy]\n",
            p,
        )
        .unwrap();
        assert_eq!(c.paths, ["a1.npy", "a2.npy", "z1.npy"]);
        assert_eq!(c.labels[2].as_deref(), Some("z"));
        assert_eq!(c.dtype, OlmoDtype::Uint16);
        for bad in [
            "model: {max_sequence_length: 0}\nglobal_train_batch_size: 4\ndata: {paths: [a]}",
            "model: {max_sequence_length: 8}\ndata: {paths: [a]}",
            "model: {max_sequence_length: 8}\nglobal_train_batch_size: 4\ndata: {paths: [a], memmap_dtype: float32}",
            "model: {max_sequence_length: 8}\nglobal_train_batch_size: 4\ndata: {paths: ['${path.glob:x}']}",
            "model: {max_sequence_length: 8}\nglobal_train_batch_size: 4\ndata: {}",
            ": : :",
        ] {
            let e = OlmoConfig::parse(bad, p).unwrap_err().to_string();
            assert!(e.contains("config.yaml"), "{e}");
        }
    }

    #[test]
    fn resolves_urls_to_the_longest_local_suffix() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("x/y")).unwrap();
        std::fs::write(d.path().join("x/y/f.npy"), b"").unwrap();
        std::fs::write(d.path().join("f.npy"), b"").unwrap();
        assert_eq!(
            resolve_local(d.path(), "https://host.org/x/y/f.npy"),
            Some(d.path().join("x/y/f.npy"))
        );
        assert_eq!(
            resolve_local(d.path(), "s3://b/q/f.npy"),
            Some(d.path().join("f.npy"))
        );
        assert_eq!(resolve_local(d.path(), "s3://b/q/g.npy"), None);
    }
}
