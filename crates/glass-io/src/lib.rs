//! Glass's file I/O, shared by data, runs, Hugging Face interop and releases: every
//! artifact is written atomically and hashed as it is written ([`atomic`], with large
//! files staged past the page cache by [`stages`]), safetensors files come from one
//! writer ([`safetensors`]), paths read from manifests stay inside their directory
//! ([`paths`]), every file read from a run, release or data directory is opened by one
//! checked opener (regular files only, beneath their root, never past their recorded
//! length: [`open`]), and long work reports progress on stderr ([`progress`]).
//!
//! This crate knows no Glass format: it is the plumbing the format owners share.

#![warn(missing_docs)]

pub mod atomic;
pub mod contain;
pub mod disk;
pub mod error;
pub mod open;
pub mod paths;
pub mod progress;
pub mod safetensors;
mod stages;

pub use atomic::{
    remove_if_exists, sha256_file, sha256_hex, sync_dir, write_atomic, write_atomic_all,
    write_atomic_beneath, write_atomic_with, AtomicFile,
};
pub use error::{IoContext, IoError, Result};
