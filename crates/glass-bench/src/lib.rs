//! The benchmarks behind `glass bench`: one module per benchmark, each a plain function
//! that takes an options struct and returns a serializable report saying what it
//! measured. Every benchmark times the real pipeline (the functions the commands run),
//! never a copy of it. Printing is the caller's job.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod error;
pub mod gemm;
pub mod hf;
pub mod http;
pub mod index;
pub mod model;
pub mod pytorch;
pub mod serve;
pub mod train;

pub use error::{BenchError, Result};
