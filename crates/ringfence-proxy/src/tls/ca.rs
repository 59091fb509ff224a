//! The certificate authority of TLS termination: the per-user CA (created once, on first use,
//! in a private directory of the state directory) or the user's own (`caCertPath`), and the
//! leaf certificates it signs, one per CONNECT target.
//!
//! The per-user CA file holds the private key and the certificate. It is created with
//! O_CREAT|O_EXCL and mode 0600 under a temporary name and linked into place, so two runs that
//! start at once end up with one CA; it is opened with O_NOFOLLOW and used only if it is a
//! regular file of ours that nobody else can read.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::host::Host;
use crate::Error;

/// The per-user CA's file name inside its directory.
pub const CA_FILE: &str = "ca.pem";

/// How long the per-user CA is valid from its creation.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid (it is minted again when the proxy restarts, and
/// after [`super::LEAF_REUSE`]).
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

fn err(what: impl Into<String>, source: std::io::Error) -> Error {
    Error::Io {
        what: what.into(),
        source,
    }
}

fn tls_err(what: impl std::fmt::Display) -> Error {
    Error::Tls(what.to_string())
}

/// A CA that can sign leaf certificates.
pub struct Authority {
    /// The CA as rcgen needs it to sign (subject, key identifier), re-created from the PEM.
    issuer: Certificate,
    key: KeyPair,
    /// The CA certificate as stored, for the sandbox's trust bundle.
    pub(crate) cert_pem: String,
    /// One key for every leaf of this proxy: the names differ, the key need not.
    leaf_key: KeyPair,
    serial: AtomicU64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// The PEM blocks of `label` in `text`, each with its BEGIN and END lines.
pub(crate) fn pem_blocks<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(&begin) {
        let Some(e) = rest[b..].find(&end) else {
            break;
        };
        let stop = b + e + end.len();
        out.push(&rest[b..stop]);
        rest = &rest[stop..];
    }
    out
}

impl Authority {
    /// A CA from a certificate and a PKCS#8 private key in PEM form.
    pub fn from_pem(cert_pem: &str, key_pem: &str, origin: &str) -> Result<Authority, Error> {
        let cert = pem_blocks(cert_pem, "CERTIFICATE")
            .first()
            .map(|s| s.to_string())
            .ok_or_else(|| tls_err(format!("{origin}: no PEM CERTIFICATE block")))?;
        let key = pem_blocks(key_pem, "PRIVATE KEY")
            .first()
            .map(|s| s.to_string())
            .ok_or_else(|| {
                tls_err(format!(
                    "{origin}: no PEM PRIVATE KEY block (PKCS#8 is needed)"
                ))
            })?;
        let key = KeyPair::from_pem(&key)
            .map_err(|e| tls_err(format!("{origin}: the private key: {e}")))?;
        let params = CertificateParams::from_ca_cert_pem(&cert)
            .map_err(|e| tls_err(format!("{origin}: the CA certificate: {e}")))?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(tls_err(format!(
                "{origin}: the certificate is not a CA (basicConstraints CA:TRUE is needed)"
            )));
        }
        let original = CertificateDer::from_pem_slice(cert.as_bytes())
            .map_err(|e| tls_err(format!("{origin}: the CA certificate: {e}")))?;
        if !spki_matches(&original, &key) {
            return Err(tls_err(format!(
                "{origin}: the private key does not belong to the CA certificate"
            )));
        }
        let issuer = params
            .self_signed(&key)
            .map_err(|e| tls_err(format!("{origin}: {e}")))?;
        let leaf_key = KeyPair::generate().map_err(tls_err)?;
        Ok(Authority {
            issuer,
            key,
            cert_pem: format!("{cert}\n"),
            leaf_key,
            serial: AtomicU64::new(0),
        })
    }

    /// The user's own CA (`caCertPath`, `caKeyPath`).
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, Error> {
        let read = |p: &Path, key: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| err(format!("network.tlsTerminate.{key} {}", p.display()), e))
        };
        let c = read(cert, "caCertPath")?;
        let k = read(key, "caKeyPath")?;
        Self::from_pem(&c, &k, &format!("network.tlsTerminate {}", cert.display()))
    }

    /// The per-user CA in `dir` (created, with `dir`, on first use).
    pub fn per_user(dir: &Path) -> Result<Authority, Error> {
        private_dir(dir)?;
        let file = dir.join(CA_FILE);
        let text = match read_private(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_ca(dir, &file)?;
                read_private(&file).map_err(|e| err(format!("reading {}", file.display()), e))?
            }
            Err(e) => return Err(err(format!("reading {}", file.display()), e)),
        };
        Self::from_pem(&text, &text, &file.display().to_string())
    }

    /// A leaf certificate for `host`, signed by this CA, with its key.
    pub(crate) fn mint(
        &self,
        host: &Host,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let mut p = CertificateParams::default();
        let (san, cn) = match host {
            Host::Name(n) => (
                SanType::DnsName(n.clone().try_into().map_err(tls_err)?),
                n.clone(),
            ),
            Host::Ip(ip) => (SanType::IpAddress(*ip), ip.to_string()),
        };
        p.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - Duration::from_secs(3600);
        p.not_after = now + LEAF_VALIDITY;
        p.serial_number = Some(self.next_serial());
        let cert = p
            .signed_by(&self.leaf_key, &self.issuer, &self.key)
            .map_err(tls_err)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        Ok((vec![cert.der().clone()], key))
    }

    fn next_serial(&self) -> SerialNumber {
        // Unique per CA: the time of minting and a counter, with the top bit clear (a
        // positive INTEGER).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let mut b = Vec::with_capacity(17);
        b.push(0x01);
        b.extend_from_slice(&nanos.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        SerialNumber::from(b)
    }
}

/// Whether the certificate's subject public key is `key`'s.
fn spki_matches(cert: &CertificateDer<'_>, key: &KeyPair) -> bool {
    // The DER of the SubjectPublicKeyInfo appears verbatim inside the certificate.
    let spki = key.public_key_der();
    cert.as_ref()
        .windows(spki.len())
        .any(|w| w == spki.as_slice())
}

use rustls::pki_types::pem::PemObject;

/// Creates `dir` (mode 0700) if needed; refuses a symlink, a directory of someone else, or one
/// that others can write or read.
pub(crate) fn private_dir(dir: &Path) -> Result<(), Error> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| err(format!("creating {}", parent.display()), e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(format!("creating {}", dir.display()), e)),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| err(format!("{}", dir.display()), e))?;
    if !m.is_dir() {
        return Err(tls_err(format!(
            "{}: not a directory (a symlink is refused); remove it",
            dir.display()
        )));
    }
    check_private(dir, &m)
}

fn check_private(path: &Path, m: &std::fs::Metadata) -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if m.uid() != uid {
        return Err(tls_err(format!(
            "{}: owned by uid {}, not by you (uid {uid}); remove it",
            path.display(),
            m.uid()
        )));
    }
    if m.permissions().mode() & 0o077 != 0 {
        return Err(tls_err(format!(
            "{}: readable or writable by others (mode {:o}); chmod go= it",
            path.display(),
            m.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads a private file without following a symlink, checking it is ours and private.
fn read_private(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    check_private(path, &m).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// Generates the per-user CA and puts it at `file`, unless another run did first.
fn create_ca(dir: &Path, file: &Path) -> Result<(), Error> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let mut p = CertificateParams::default();
    let user = std::env::var("USER").unwrap_or_default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ringfence");
    dn.push(
        DnType::CommonName,
        if user.is_empty() {
            "ringfence TLS termination CA".to_string()
        } else {
            format!("ringfence TLS termination CA ({user})")
        },
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = now + CA_VALIDITY;
    let cert = p.self_signed(&key).map_err(tls_err)?;
    let text = format!("{}{}", key.serialize_pem(), cert.pem());

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp: PathBuf = dir.join(format!(".{CA_FILE}.{}.{nanos}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, file) {
            Ok(()) => Ok(()),
            // Another run created it meanwhile: its CA is the one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| err(format!("creating {}", file.display()), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn per_user_ca_is_created_once_private_and_signs_leaves() {
        let base = std::env::temp_dir().join(format!("rf-ca-test-{}", std::process::id()));
        let dir = base.join("tls");
        let a = Authority::per_user(&dir).unwrap();
        let file = dir.join(CA_FILE);
        let m = std::fs::metadata(&file).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let b = Authority::per_user(&dir).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem, "the second run uses the same CA");
        let (chain, _) = b.mint(&Host::Name("example.com".into())).unwrap();
        assert_eq!(chain.len(), 1);
        // A symlink in place of the CA file is refused, not followed.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
        assert!(Authority::per_user(&dir).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn pem_blocks_are_found() {
        let t = "x\n-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBB\n-----END CERTIFICATE-----";
        assert_eq!(pem_blocks(t, "CERTIFICATE").len(), 2);
        assert!(pem_blocks(t, "PRIVATE KEY").is_empty());
    }
}
