//! Glass releases: a run published the way LLM360 published Amber — every checkpoint as a
//! transformers folder, the exact training rows between checkpoints as JSONL, the
//! metrics, a model and data card, and a manifest with the sha256 of every file — plus
//! verification of a release and its conversion back into a run that replays and
//! continues bit for bit. The layout is specified in `docs/release.md`.

mod card;
mod data;
pub mod error;
pub mod import;
pub mod layout;
pub mod llm360;
pub mod metrics;
pub mod verify;
pub mod write;

pub use error::{ReleaseError, Result};
pub use import::{import_release, ImportReleaseReport};
pub use layout::{is_release, ReleaseManifest};
pub use llm360::{import_llm360, import_llm360_with, Llm360Report};
pub use verify::{verify_release, ReleaseProblem, ReleaseVerifyReport};
pub use write::{write_release, CheckpointSelection, PartDone, ReleaseOptions, ReleaseReport};
