//! `glass serve`: a read-only web dashboard and JSON API over Glass runs.
//!
//! [`router`] maps a fixed set of routes onto a fixed table of runs ([`Runs`]): a
//! request names a run by its id, never by a path, so no request text ever reaches the
//! file system. Every run file is opened read-only (the metrics database too, in WAL
//! mode), so a dashboard never slows or blocks `glass train`. The pages are plain HTML
//! and JavaScript with uPlot, embedded in the binary ([`assets`]). The API is documented
//! in `docs/serve.md`.

#![warn(missing_docs)]

pub mod api;
pub mod assets;
pub mod cache;
pub mod downsample;
pub mod error;
pub mod internals;
pub mod runs;

pub use api::router;
pub use error::{Result, ServeError};
pub use runs::{discover, Runs, ServedRun};
