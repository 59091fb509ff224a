//! The one error type of this crate. Every variant names the file (or command-line option) and
//! the key path involved, so a user can find and fix the offending setting.

use std::io;
use std::path::PathBuf;

/// Why a policy could not be loaded. Any of these means nothing may run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A settings file exists (or was named with `-s`) but could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A settings file holds nothing but whitespace.
    #[error("{path}: the file is empty; write {{}} for a file without settings, or remove it")]
    Empty { path: PathBuf },
    /// The file is not valid JSON.
    #[error("{origin}: not valid JSON: {message}")]
    Syntax { origin: String, message: String },
    /// A key is unknown or its value is invalid.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    /// A project file tried to widen access.
    #[error("{origin}: {key}: a project file may only add restrictions; {hint}")]
    ProjectWidens {
        origin: String,
        key: String,
        hint: String,
    },
    /// A lower layer tried to loosen what the managed settings fix.
    #[error("{origin}: {key}: {message}; managed settings cannot be loosened")]
    ManagedConflict {
        origin: String,
        key: String,
        message: String,
    },
    /// A glob could not be expanded completely because a directory could not be read.
    #[error(
        "{origin}: {key}: cannot expand {pattern}: {dir} cannot be read ({source}); \
         fix its permissions or write a pattern that does not reach it"
    )]
    Unreadable {
        origin: String,
        key: String,
        pattern: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(
        origin: &str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            origin: origin.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }
}
