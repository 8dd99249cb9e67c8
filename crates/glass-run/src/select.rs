//! The one way every command names checkpoints (and, for memorization, data chunks):
//! `--checkpoint K|latest` picks one, `--checkpoints all|latest|K,K2,...` picks several
//! (`latest` may also appear in a list). Parsing and resolving against the run's
//! manifest live here, so `latest` means the same thing everywhere and an unknown index
//! gets the same message everywhere.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};
use crate::manifest::{CheckpointEntry, RunManifest};

/// One checkpoint: `latest` or an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// The last published checkpoint.
    Latest,
    /// This index.
    Index(u32),
}

impl std::str::FromStr for Checkpoint {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "latest" => Ok(Checkpoint::Latest),
            t => t
                .parse()
                .map(Checkpoint::Index)
                .map_err(|_| format!("`{s}` is not a checkpoint: use an index K or `latest`")),
        }
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checkpoint::Latest => f.write_str("latest"),
            Checkpoint::Index(k) => write!(f, "{k}"),
        }
    }
}

impl Checkpoint {
    /// The manifest entry this names.
    pub fn resolve<'a>(&self, m: &'a RunManifest) -> Result<&'a CheckpointEntry> {
        match self {
            Checkpoint::Index(k) => m.checkpoint(*k),
            Checkpoint::Latest => m.checkpoints.last().ok_or_else(|| {
                RunError::Invalid(
                    "`latest`: the run has no checkpoint yet (run `glass train` first)".into(),
                )
            }),
        }
    }

    /// The index this names in `run_dir` (whose manifest is read for `latest`).
    pub fn index_in(&self, run_dir: &std::path::Path) -> Result<u32> {
        match self {
            Checkpoint::Index(k) => Ok(*k),
            Checkpoint::Latest => Ok(self.resolve(&RunManifest::require(run_dir)?)?.index),
        }
    }
}

/// Several checkpoints (or chunks): `all`, `latest`, or a comma-separated list of
/// indices in which `latest` may appear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Every one.
    All,
    /// The last one.
    Latest,
    /// These indices (`with_latest`: and the last one).
    List {
        /// Indices, as given.
        indices: Vec<u64>,
        /// `latest` was in the list.
        with_latest: bool,
    },
}

impl std::str::FromStr for Selection {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "all" => Ok(Selection::All),
            "latest" => Ok(Selection::Latest),
            list => {
                let mut indices = Vec::new();
                let mut with_latest = false;
                for part in list.split(',') {
                    let p = part.trim();
                    if p == "latest" {
                        with_latest = true;
                        continue;
                    }
                    indices.push(p.parse().map_err(|_| {
                        format!("`{p}` is not an index: use all, latest or K,K2,... (latest allowed in the list)")
                    })?);
                }
                Ok(Selection::List {
                    indices,
                    with_latest,
                })
            }
        }
    }
}

impl Selection {
    /// These indices.
    pub fn list(indices: impl IntoIterator<Item = u64>) -> Self {
        Selection::List {
            indices: indices.into_iter().collect(),
            with_latest: false,
        }
    }

    /// The selected members of `available` (ascending, each once); an index that is not
    /// available is an error naming `what` ("checkpoint", "chunk") and the range there is.
    pub fn pick(&self, available: &[u64], what: &str) -> Result<Vec<u64>> {
        let mut v = match self {
            Selection::All => return Ok(available.to_vec()),
            Selection::Latest => available.last().copied().into_iter().collect(),
            Selection::List {
                indices,
                with_latest,
            } => {
                for k in indices {
                    if !available.contains(k) {
                        return Err(RunError::Invalid(
                            match (available.first(), available.last()) {
                                (Some(a), Some(b)) => {
                                    format!(
                                        "there is no {what} {k} (the run has {what}s {a}..={b})"
                                    )
                                }
                                _ => format!("there is no {what} {k} (the run has none yet)"),
                            },
                        ));
                    }
                }
                let mut v = indices.clone();
                if *with_latest {
                    v.extend(available.last().copied());
                }
                v
            }
        };
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// The selected checkpoints of a run, in index order.
    pub fn checkpoints(&self, m: &RunManifest) -> Result<Vec<CheckpointEntry>> {
        let available: Vec<u64> = m.checkpoints.iter().map(|c| c.index as u64).collect();
        self.pick(&available, "checkpoint")?
            .into_iter()
            .map(|k| Ok(m.checkpoint(k as u32)?.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse_and_pick() {
        let avail = [0, 1, 2, 4, 8];
        let pick = |s: &str| s.parse::<Selection>().unwrap().pick(&avail, "checkpoint");
        assert_eq!(pick("all").unwrap(), avail);
        assert_eq!(pick("latest").unwrap(), vec![8]);
        assert_eq!(pick("4,1,latest,1").unwrap(), vec![1, 4, 8]);
        let e = pick("3").unwrap_err().to_string();
        assert!(e.contains("no checkpoint 3") && e.contains("0..=8"), "{e}");
        assert!("x".parse::<Selection>().is_err());
        assert_eq!("latest".parse::<Checkpoint>(), Ok(Checkpoint::Latest));
        assert_eq!(" 7".parse::<Checkpoint>(), Ok(Checkpoint::Index(7)));
        assert!("-1".parse::<Checkpoint>().unwrap_err().contains("latest"));
        // The release format records selections: the JSON stays what it was.
        let j = serde_json::to_string(&"2,latest".parse::<Selection>().unwrap()).unwrap();
        assert_eq!(j, r#"{"list":{"indices":[2],"with_latest":true}}"#);
        assert_eq!(serde_json::to_string(&Selection::All).unwrap(), r#""all""#);
    }
}
