//! Glass data layer: sources, tokenizer, mixing, and training-order chunk files.
//!
//! The batch at every step is a pure function of the `[data]` config and its seed — never
//! of world size, thread count or resume point — and every row records which source,
//! document and token offsets it holds. See `docs/data-format.md` for the on-disk format.

#![warn(missing_docs)]

pub mod branch;
mod bytelevel;
pub mod chunk;
pub mod columnar;
pub mod config;
pub mod crystalcoder;
pub mod decontaminate;
pub mod dedup;
mod demo;
pub mod dtype;
pub mod embedded;
pub mod error;
pub mod external;
pub mod hdf5;
pub mod heldout;
pub mod inspect;
pub mod integrity;
pub mod manifest;
pub mod megatron;
pub mod minhash;
pub mod npy;
pub mod olmo;
pub mod order;
pub mod pack;
pub mod pieces;
pub mod preflight;
pub mod prepare;
pub mod pretokenized;
pub mod reader;
pub mod rows;
pub mod sources;
pub mod store;
pub mod substring;
pub mod tokenizer;

pub use config::DataConfig;
pub use demo::default_demo_toml;
pub use embedded::{embedded_code, embedded_work, embedded_works, HELD_OUT_CODE, HELD_OUT_WORKS};
pub use error::{DataError, Result};
pub use manifest::{verify, BaseData, Manifest, VerifyReport};
pub use prepare::{prepare, PrepareOptions, PrepareReport, Shard};
pub use reader::PreparedData;
pub use tokenizer::GlassTokenizer;
