//! TLS termination of CONNECT tunnels (`network.tlsTerminate`): for an allowed CONNECT to a
//! host that is not excluded, the proxy answers the client's TLS handshake with a certificate
//! for the CONNECT target signed by a CA the sandbox trusts, opens its own TLS connection to
//! the target verified against the host's trust store, and carries HTTP/1.1 or HTTP/2
//! requests between the two (see [`serve`]). What the sandbox trusts is a bundle file written
//! here: the CA, the host's roots and `extraCaCertPaths`.
//!
//! The CA's private key stays outside the sandbox: the per-user CA lives in the state
//! directory, which the sandbox cannot read, and a `caKeyPath` of the user's is hidden too.

pub(crate) mod body;
mod ca;
mod roots;
pub(crate) mod rules;
pub(crate) mod serve;
pub mod sigv4;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use ca::{Authority, CA_FILE};

use crate::host::Host;
use crate::policy::DomainList;
use crate::Error;

/// The variables that clients read for the CA bundle they trust; each is set to the bundle.
pub const TRUST_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "NIX_SSL_CERT_FILE",
    "npm_config_cafile",
    "HEX_CACERTS_PATH",
];

/// A leaf certificate is minted again after this long.
const LEAF_REUSE: Duration = Duration::from_secs(24 * 3600);
/// At most this many leaf certificates are kept; past it the cache starts over.
const LEAF_CACHE: usize = 4096;

/// A masked credential (`credentials.envVars`, mode "mask"): the sandbox holds `placeholder`;
/// in requests inside terminated tunnels to one of its hosts the proxy puts the real value in
/// its place, and a request that carries it to any other host is refused.
pub struct Secret {
    pub name: String,
    pub placeholder: String,
    value: String,
    inject: DomainList,
    /// A variable of the sandbox's environment (set to the placeholder); false for a value
    /// from a masked file.
    pub in_env: bool,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value.
        f.debug_struct("Secret")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// A credential named `name` with the real `value`, injected toward `inject_hosts`
    /// (allowedDomains syntax; `key` names the setting in errors). The placeholder is random.
    pub fn new(
        key: &'static str,
        name: &str,
        value: String,
        inject_hosts: &[String],
    ) -> Result<Secret, Error> {
        let mut bytes = [0u8; 16];
        // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if usize::try_from(n).ok() != Some(bytes.len()) {
            return Err(Error::Io {
                what: "getrandom for a credential placeholder".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Secret {
            name: name.to_string(),
            placeholder: format!("ringfence_placeholder_{hex}"),
            value,
            inject: DomainList::parse(key, inject_hosts)?,
            in_env: true,
        })
    }

    /// A value from a masked file (`credentials.files`, mode "mask"), shown in messages as
    /// `name`; the sandbox's environment does not get it.
    pub fn from_file(name: &str, value: String, inject_hosts: &[String]) -> Result<Secret, Error> {
        let mut s = Secret::new("credentials.files.injectHosts", name, value, inject_hosts)?;
        s.in_env = false;
        Ok(s)
    }

    pub(crate) fn injects_at(&self, host: &Host, port: u16) -> bool {
        self.inject.matches(host, port)
    }

    pub(crate) fn value(&self) -> &str {
        &self.value
    }
}

/// A header field set on every request to a host (`credentials.inject`), replacing what the
/// client sent in that field. The value is marked sensitive and never shown.
pub struct Injection {
    hosts: DomainList,
    pub(crate) name: http::HeaderName,
    pub(crate) value: http::HeaderValue,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Injection {
    pub fn new(host: &str, header: &str, value: &str) -> Result<Injection, Error> {
        let mut v = http::HeaderValue::from_str(value).map_err(|_| {
            tls_err(format!(
                "the value for {header} is not a valid header value (a line break?)"
            ))
        })?;
        v.set_sensitive(true);
        Ok(Injection {
            hosts: DomainList::parse("credentials.inject.host", &[host.to_string()])?,
            name: http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|e| tls_err(format!("{header}: {e}")))?,
            value: v,
        })
    }

    pub(crate) fn applies(&self, host: &Host, port: u16) -> bool {
        self.hosts.matches(host, port)
    }
}

/// What the proxy adds to requests: masked values, header fields, AWS keys to sign with.
#[derive(Debug, Default)]
pub struct Credentials {
    pub secrets: Vec<Secret>,
    pub injections: Vec<Injection>,
    pub aws: Vec<sigv4::AwsPair>,
}

/// TLS termination as configured, shared by all tunnels of a proxy.
pub struct Terminator {
    /// None for the reverse proxy, which mints no certificate (its clients speak plain HTTP).
    ca: Option<Authority>,
    exclude: DomainList,
    /// The upstream TLS client configuration, offering h2 and HTTP/1.1 whatever the client
    /// chose (hyper carries requests between the two).
    upstream: Arc<ClientConfig>,
    slots: Arc<Semaphore>,
    pub(crate) handshake_timeout: Duration,
    leaves: Mutex<HashMap<Host, (Instant, Arc<ServerConfig>)>>,
    pub(crate) secrets: Arc<Vec<Secret>>,
    pub(crate) rules: Arc<rules::Rules>,
    pub(crate) injections: Vec<Injection>,
    /// Masked AWS credentials whose SigV4 signatures are made again (`credentials.awsPairs`).
    pub(crate) aws: Vec<sigv4::AwsPair>,
    pub(crate) sigv4_pass: sigv4::Passthrough,
    /// `network.refuseOpaqueTunnels`: every tunnel that is not terminated is refused.
    refuse_opaque: bool,
    /// `network.ambiguousRequestTarget: "refuse"`: a path normalisation changes gets 400.
    pub(crate) refuse_ambiguous: bool,
    /// `network.ambiguousRequestTarget: "asSpelled"` (and not "refuse"): a path is forwarded
    /// as the client spelled it, and request rules must hold for it and its normalised form.
    pub(crate) as_spelled: bool,
    /// `network.stripResponseHeaders`, folded ([`fold_field_name`]).
    strip_response: Vec<String>,
}

/// A header field name as `stripResponseHeaders` compares it: lower case, without "-", "_"
/// and ".".
pub(crate) fn fold_field_name(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator").finish_non_exhaustive()
    }
}

/// Two terminators are equal when they are the same one (each has its own leaf key and cache).
impl PartialEq for Terminator {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Terminator {}

/// What a run needs to use TLS termination: the terminator for the proxy, and for the
/// sandbox the bundle to trust, the variables that point at it and the paths to hide.
#[derive(Debug)]
pub struct Setup {
    pub terminator: Arc<Terminator>,
    /// The trust bundle (readable inside).
    pub bundle: PathBuf,
    /// `TRUST_VARS`, each set to the bundle, and each masked variable set to its placeholder.
    pub env: Vec<(String, String)>,
    /// Files that must not be readable inside (a `caKeyPath` of the user's).
    pub hidden: Vec<PathBuf>,
    /// Masked files: each real path, and the file with placeholders bound read-only over it.
    pub masked_files: Vec<(PathBuf, PathBuf)>,
    /// Masked files left as they are (`onExtractNoMatch: "warn"`): not hidden either.
    pub unmasked: Vec<PathBuf>,
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring builds with a C compiler alone (aws-lc-rs needs cmake); the price is no
    // post-quantum key exchange, which is what the deprecation is about.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: impl std::fmt::Display) -> Error {
    Error::Tls(what.to_string())
}

/// A slot of `maxTunnels`, held while a terminated tunnel lasts.
pub(crate) struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Terminator {
    /// A terminator with CA `ca` whose upstream connections trust `roots`.
    pub fn new(
        t: &ringfence_policy::TlsTerminate,
        ca: Option<Authority>,
        roots: RootCertStore,
    ) -> Result<Terminator, Error> {
        let roots = Arc::new(roots);
        let client = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, Error> {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(tls_err)?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(c))
        };
        Ok(Terminator {
            ca,
            exclude: DomainList::parse("network.tlsTerminate.excludeDomains", &t.exclude_domains)?,
            upstream: client(&[b"h2", b"http/1.1"])?,
            slots: Arc::new(Semaphore::new(t.max_tunnels.max(1))),
            handshake_timeout: t.handshake_timeout,
            leaves: Mutex::new(HashMap::new()),
            secrets: Arc::new(Vec::new()),
            rules: Arc::new(rules::Rules::default()),
            injections: Vec::new(),
            aws: Vec::new(),
            sigv4_pass: sigv4::Passthrough::default(),
            refuse_opaque: false,
            refuse_ambiguous: false,
            as_spelled: false,
            strip_response: Vec::new(),
        })
    }

    /// Why a tunnel to `host:port` that is not terminated (excludeDomains) must be refused:
    /// request rules name the host, and they could not see its requests.
    pub(crate) fn opaque_refusal(&self, host: &Host, port: u16) -> Option<String> {
        if self.refuse_opaque {
            return Some(format!(
                "{host}:{port} is in tlsTerminate.excludeDomains, and network.refuseOpaqueTunnels \
                 refuses tunnels that are not terminated"
            ));
        }
        self.rules.cover(host, port).then(|| {
            format!(
                "network.requests has rules for {host}:{port}, which is in \
                 tlsTerminate.excludeDomains, so its requests could not be checked"
            )
        })
    }

    /// Whether a response field of this name is kept from the sandbox (stripResponseHeaders).
    pub(crate) fn strips(&self, name: &str) -> bool {
        !self.strip_response.is_empty() && self.strip_response.contains(&fold_field_name(name))
    }

    /// Whether CONNECTs to `host:port` are terminated (not in excludeDomains).
    pub(crate) fn terminates(&self, host: &Host, port: u16) -> bool {
        !self.exclude.matches(host, port)
    }

    /// A slot for one more terminated tunnel, or None at `maxTunnels`.
    pub(crate) fn slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(Slot)
    }

    /// The server configuration for tunnels to `host`: its leaf certificate, h2 and HTTP/1.1.
    pub(crate) fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, Error> {
        if let Ok(l) = self.leaves.lock() {
            if let Some((at, c)) = l.get(host) {
                if at.elapsed() < LEAF_REUSE {
                    return Ok(c.clone());
                }
            }
        }
        let ca = self
            .ca
            .as_ref()
            .ok_or_else(|| tls_err("no CA to mint a certificate with"))?;
        let (chain, key) = ca.mint(host)?;
        let mut c = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let c = Arc::new(c);
        if let Ok(mut l) = self.leaves.lock() {
            if l.len() >= LEAF_CACHE {
                l.clear();
            }
            l.insert(host.clone(), (Instant::now(), c.clone()));
        }
        Ok(c)
    }

    pub(crate) fn upstream_config(&self) -> Arc<ClientConfig> {
        self.upstream.clone()
    }
}

/// Sets TLS termination up for a run: loads or creates the CA (the per-user one in
/// `state_dir/tls`), reads the host's trust store (system roots and `ssl_cert_file`, the
/// host's SSL_CERT_FILE) for the upstream side, and writes the sandbox's trust bundle into
/// `state_dir/tls`. Any failure refuses the run.
pub fn setup(
    t: &ringfence_policy::TlsTerminate,
    state_dir: &Path,
    ssl_cert_file: Option<&Path>,
    c: Credentials,
    p: &ringfence_policy::Policy,
) -> Result<Setup, Error> {
    let dir = state_dir.join("tls");
    ca::private_dir(&dir)?;
    let (ca, hidden) = match &t.ca {
        Some((cert, key)) => (Authority::load(cert, key)?, vec![key.clone()]),
        None => (Authority::per_user(&dir)?, Vec::new()),
    };
    let host_roots = roots::host_roots(ssl_cert_file)?;
    let store = root_store(&host_roots, "network.tlsTerminate")?;
    let mut bundle = String::new();
    bundle.push_str(&ca.cert_pem);
    for text in &host_roots {
        for block in ca::pem_blocks(text, "CERTIFICATE") {
            bundle.push_str(block);
            bundle.push('\n');
        }
    }
    for p in &t.extra_ca_cert_paths {
        // As in srt: a missing or unreadable file, or one without certificates, is skipped.
        if let Ok(text) = std::fs::read_to_string(p) {
            for block in ca::pem_blocks(&text, "CERTIFICATE") {
                bundle.push_str(block);
                bundle.push('\n');
            }
        }
    }
    let bundle_path = roots::write_bundle(&dir, &bundle)?;
    let mut terminator = Terminator::new(t, Some(ca), store)?;
    let shown = bundle_path.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = TRUST_VARS
        .iter()
        .map(|k| (k.to_string(), shown.clone()))
        .collect();
    env.extend(
        c.secrets
            .iter()
            .filter(|s| s.in_env)
            .map(|s| (s.name.clone(), s.placeholder.clone())),
    );
    terminator.configure(c, p)?;
    let terminator = Arc::new(terminator);
    Ok(Setup {
        terminator,
        bundle: bundle_path,
        env,
        hidden,
        masked_files: Vec::new(),
        unmasked: Vec::new(),
    })
}

/// The roots rustls can use among the PEM texts `host_roots`; none at all refuses (`key`
/// names the setting that needed them).
fn root_store(host_roots: &[String], key: &str) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for text in host_roots {
        for block in ca::pem_blocks(text, "CERTIFICATE") {
            // A certificate rustls cannot use as a root is left out, as other clients do.
            if let Ok(der) = rustls::pki_types::CertificateDer::from_pem_slice(block.as_bytes()) {
                let _ = store.add(der);
            }
        }
    }
    if store.is_empty() {
        return Err(tls_err(format!(
            "{key}: no usable root certificate in the host's trust store; set SSL_CERT_FILE \
             to a PEM bundle"
        )));
    }
    Ok(store)
}

impl Terminator {
    /// What the policy adds to a terminator: masked credentials, injected fields, request
    /// rules and the request and response options.
    fn configure(&mut self, c: Credentials, p: &ringfence_policy::Policy) -> Result<(), Error> {
        let Credentials {
            secrets,
            injections,
            aws,
        } = c;
        self.aws = aws;
        self.sigv4_pass = sigv4::Passthrough {
            streaming: p.sigv4_passthrough.streaming,
            presigned: p.sigv4_passthrough.presigned,
            sigv4a: p.sigv4_passthrough.sigv4a,
        };
        self.secrets = Arc::new(secrets);
        self.rules = Arc::new(rules::Rules::compile(&p.request_rules)?);
        self.injections = injections;
        self.refuse_opaque = p.refuse_opaque_tunnels.is_some();
        self.refuse_ambiguous = p.refuse_ambiguous_paths.is_some();
        self.as_spelled = !self.refuse_ambiguous && p.spelled_paths.is_some();
        self.strip_response = p
            .strip_response_headers
            .iter()
            .map(|h| fold_field_name(h))
            .collect();
        Ok(())
    }
}

/// The request handling of TLS termination for the reverse proxy (`ringfence proxy
/// --reverse`): no CA (its clients speak plain HTTP to it); its upstream connections are
/// verified against the host's trust store and `ssl_cert_file`, as terminated tunnels are.
pub fn reverse_setup(
    ssl_cert_file: Option<&Path>,
    c: Credentials,
    p: &ringfence_policy::Policy,
) -> Result<Arc<Terminator>, Error> {
    let host_roots = roots::host_roots(ssl_cert_file)?;
    let store = root_store(&host_roots, "--reverse")?;
    let t = ringfence_policy::TlsTerminate {
        ca: None,
        exclude_domains: Vec::new(),
        extra_ca_cert_paths: Vec::new(),
        max_tunnels: ringfence_policy::MAX_TUNNELS,
        handshake_timeout: Duration::from_millis(ringfence_policy::HANDSHAKE_TIMEOUT_MS),
    };
    let mut terminator = Terminator::new(&t, None, store)?;
    terminator.configure(c, p)?;
    Ok(Arc::new(terminator))
}

use rustls::pki_types::pem::PemObject;
