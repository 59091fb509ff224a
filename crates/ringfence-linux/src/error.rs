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
    /// A setup step inside the sandbox failed, as the sandbox reported it over its setup
    /// channel: the step, the path it worked on (if any) and the error number.
    #[error("{step}{}: {source}", path.as_ref().map(|p| format!(" of {}", p.display())).unwrap_or_default())]
    InSandbox {
        step: String,
        path: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The error as the sandbox sends it to the supervisor: a kind byte, the error number, the
    /// step, a NUL, the path. An error without an error number travels as its text.
    pub(crate) fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let (step, path, source): (String, Option<&PathBuf>, &io::Error) = match self {
            Error::Seccomp { step, source } => (format!("seccomp: {step}"), None, source),
            Error::Path { step, path, source } => (step.to_string(), Some(path), source),
            Error::Syscall { step, source } => (step.to_string(), None, source),
            Error::InSandbox { step, path, source } => (step.clone(), path.as_ref(), source),
            Error::Setup(m) => {
                let mut v = vec![b'M'];
                v.extend_from_slice(m.as_bytes());
                return v;
            }
        };
        let Some(errno) = source.raw_os_error() else {
            let mut v = vec![b'M'];
            v.extend_from_slice(self.to_string().as_bytes());
            return v;
        };
        let mut v = vec![if path.is_some() { b'P' } else { b'S' }];
        v.extend_from_slice(&errno.to_ne_bytes());
        v.extend_from_slice(step.as_bytes());
        v.push(0);
        if let Some(p) = path {
            v.extend_from_slice(p.as_os_str().as_bytes());
        }
        v
    }

    /// The error `encode` wrote; anything else becomes `Setup` with its text.
    pub(crate) fn decode(b: &[u8]) -> Error {
        use std::os::unix::ffi::OsStrExt;
        match b.split_first() {
            Some((&kind @ (b'P' | b'S'), rest)) if rest.len() >= 4 => {
                let errno = i32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let rest = &rest[4..];
                let (step, path) = match rest.iter().position(|&c| c == 0) {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &[][..]),
                };
                Error::InSandbox {
                    step: String::from_utf8_lossy(step).into_owned(),
                    path: (kind == b'P').then(|| PathBuf::from(std::ffi::OsStr::from_bytes(path))),
                    source: io::Error::from_raw_os_error(errno),
                }
            }
            Some((b'M', rest)) => Error::Setup(String::from_utf8_lossy(rest).into_owned()),
            _ => Error::Setup(String::from_utf8_lossy(b).into_owned()),
        }
    }

    /// The error number of the failing call, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Seccomp { source, .. }
            | Error::Path { source, .. }
            | Error::Syscall { source, .. }
            | Error::InSandbox { source, .. } => source.raw_os_error(),
            Error::Setup(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn setup_errors_cross_the_channel_as_types() {
        let e = Error::Path {
            step: "bind mount",
            path: PathBuf::from("/home/u/.ssh"),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        let d = Error::decode(&e.encode());
        assert_eq!(d.to_string(), e.to_string());
        match d {
            Error::InSandbox { step, path, source } => {
                assert_eq!(step, "bind mount");
                assert_eq!(path.unwrap(), PathBuf::from("/home/u/.ssh"));
                assert_eq!(source.raw_os_error(), Some(libc::EACCES));
            }
            other => panic!("{other:?}"),
        }
        let s = Error::Seccomp {
            step: "load",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(Error::decode(&s.encode()).to_string(), s.to_string());
        assert_eq!(Error::decode(&s.encode()).errno(), Some(libc::EINVAL));
        let m = Error::Setup("the cwd /x is not visible".into());
        assert_eq!(Error::decode(&m.encode()).to_string(), m.to_string());
    }
}
