//! One error type for the syscall layer: every variant names the step and the object involved.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp: {step}: {source}")]
    Seccomp {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{step} of {path}: {source}")]
    Path {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Syscall {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, Error>;
