//! Errors of `glass serve`: setting up the run table, and one request's failure.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors while resolving what to serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A path given on the command line is neither a run nor a directory of runs.
    #[error("{path}: {msg}")]
    Path {
        /// The path as given.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ServeError>;

/// A request that could not be answered: an HTTP status and a message, sent as
/// `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Status code (4xx: the request; 5xx: the run could not be read).
    pub status: StatusCode,
    /// What went wrong.
    pub msg: String,
}

impl ApiError {
    /// 400: a malformed or out-of-range parameter.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            msg: msg.into(),
        }
    }

    /// 404: no such run, checkpoint, step or series.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            msg: msg.into(),
        }
    }

    /// 500: the run's files could not be read (a malformed or incomplete run).
    pub fn run(e: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.msg });
        (self.status, axum::Json(body)).into_response()
    }
}
