//! The host's trust store, as the upstream side of TLS termination uses it and as the
//! sandbox's bundle copies it: the system bundle and the host's SSL_CERT_FILE.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// Where distributions keep their PEM bundle of roots; the first that exists is used.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The PEM texts of the host's trust store: the system bundle and `ssl_cert_file`. A
/// SSL_CERT_FILE that cannot be read refuses the run: the user asked for it.
pub(crate) fn host_roots(ssl_cert_file: Option<&Path>) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    if let Some(p) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        if let Ok(t) = std::fs::read_to_string(p) {
            out.push(t);
        }
    }
    if let Some(p) = ssl_cert_file {
        let t = std::fs::read_to_string(p).map_err(|e| Error::Io {
            what: format!("SSL_CERT_FILE {}", p.display()),
            source: e,
        })?;
        out.push(t);
    }
    Ok(out)
}

/// Writes the trust bundle into `dir` under a name derived from its content (so runs with the
/// same bundle share one file and a run never rewrites another's), and returns its path.
pub(crate) fn write_bundle(dir: &Path, text: &str) -> Result<PathBuf, Error> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let path = dir.join(format!("bundle-{:016x}.pem", h.finish()));
    let io = |what: String| move |source| Error::Io { what, source };
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".bundle.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("creating {}", path.display())))?;
    Ok(path)
}
