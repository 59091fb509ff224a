//! The gateway's TLS listener (`ringfence proxy --tls-cert`): clients reach the proxy over
//! TLS, and with a client CA each one is its certificate: it must chain to the CA and be
//! listed in the clients file by its SHA-256, and the listed client's policy decides for it.
//! After the handshake the decrypted stream is handed to the same HTTP/SOCKS5 code as a plain
//! connection, over a loopback TCP pair, with the identity already known.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::proxy::{ActiveGuard, DecisionRecord, Protocol, Proxy};
use crate::Error;

/// The TLS side of the gateway's listener.
pub struct TlsListener {
    acceptor: TlsAcceptor,
    /// A client CA was given: every client presents a certificate, and is the listed client
    /// with that certificate.
    client_certs: bool,
}

/// The SHA-256 of a certificate's DER encoding, as the clients file lists it.
pub fn certificate_sha256(der: &[u8]) -> [u8; 32] {
    crate::clients::token_hash(der)
}

impl TlsListener {
    /// The server certificate chain and key (PEM), and the CA that client certificates must
    /// chain to (PEM, one or more certificates), if clients are known by their certificates.
    /// `names` says where each came from, for errors: (certificate, key, client CA).
    pub fn new(
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
        names: (&str, &str, &str),
    ) -> Result<TlsListener, Error> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    Error::Tls(format!("{}: not a PEM certificate chain: {e}", names.0))
                })?;
        if chain.is_empty() {
            return Err(Error::Tls(format!(
                "{}: no CERTIFICATE block in the file",
                names.0
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Tls(format!("{}: no private key in the file: {e}", names.1)))?;
        let provider = crate::tls::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let c = c.map_err(|e| {
                        Error::Tls(format!("{}: not a PEM certificate: {e}", names.2))
                    })?;
                    roots
                        .add(c)
                        .map_err(|e| Error::Tls(format!("{}: {e}", names.2)))?;
                }
                if roots.is_empty() {
                    return Err(Error::Tls(format!(
                        "{}: no CERTIFICATE block in the file",
                        names.2
                    )));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| Error::Tls(format!("{}: {e}", names.2)))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            Error::Tls(format!(
                "{} and {}: the certificate and key do not make a server identity: {e}",
                names.0, names.1
            ))
        })?;
        // Every connection is a full handshake: its certificate is checked against the CA
        // and the clients in force now, never carried over from an earlier session.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(TlsListener {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_certs: client_ca_pem.is_some(),
        })
    }

    /// Whether clients are known by their certificates.
    pub fn client_certs(&self) -> bool {
        self.client_certs
    }
}

/// A connected pair of TCP sockets on loopback: the proxy's code serves one end as a client
/// connection while the TLS session is relayed to the other. The listener is private to this
/// pair, and a connection from anyone else that reaches it first is dropped.
async fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let ours = TcpStream::connect(l.local_addr()?).await?;
    let from = ours.local_addr()?;
    loop {
        let (s, peer) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "loopback pair"))??;
        if peer == from {
            let _ = s.set_nodelay(true);
            let _ = ours.set_nodelay(true);
            return Ok((s, ours));
        }
    }
}

impl Proxy {
    /// [`Proxy::serve`] over TLS: accepts on `listener`, completes the handshake, then serves
    /// the connection as HTTP or SOCKS5. With client certificates, a certificate that is not
    /// listed in the clients in force is refused after the handshake, and every refusal
    /// (handshake or listing) is recorded with the client's address.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        tls: TlsListener,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let tls = Arc::new(tls);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if crate::proxy::is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let proxy = self.clone();
            let guard = ActiveGuard::new(proxy.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let _ = stream.set_nodelay(true);
                let accepted =
                    tokio::time::timeout(proxy.limits.head_timeout, tls.acceptor.accept(stream))
                        .await;
                let session = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return proxy.record(&DecisionRecord::refused_client(
                            peer,
                            format!("TLS handshake failed: {e}"),
                        ))
                    }
                    Err(_) => {
                        return proxy.record(&DecisionRecord::refused_client(
                            peer,
                            "no TLS handshake in time".into(),
                        ))
                    }
                };
                let known = if tls.client_certs {
                    let fp = session
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| certificate_sha256(c.as_ref()));
                    let name = fp.and_then(|fp| {
                        proxy
                            .clients()
                            .and_then(|c| c.by_certificate(&fp).map(|c| c.name.clone()))
                    });
                    match (name, fp) {
                        (Some(n), _) => Some(n),
                        (None, fp) => {
                            let what = fp.map_or("no certificate".to_string(), |fp| {
                                format!(
                                    "the client certificate sha256:{}",
                                    crate::clients::hex(&fp)
                                )
                            });
                            proxy.record(&DecisionRecord::refused_client(
                                peer,
                                format!("{what} is not in the clients file"),
                            ));
                            let mut session = session;
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut session).await;
                            return;
                        }
                    }
                } else {
                    None
                };
                let Ok((inner, outer)) = loopback_pair().await else {
                    return;
                };
                let mut relay = tokio::spawn(async move {
                    let mut session = session;
                    let mut outer = outer;
                    let _ = tokio::io::copy_bidirectional(&mut session, &mut outer).await;
                });
                proxy.dispatch(inner, peer, known).await;
                // The proxy is done with the connection: a client that keeps its side of the
                // session open after the close does not keep it for long.
                if tokio::time::timeout(Duration::from_secs(5), &mut relay)
                    .await
                    .is_err()
                {
                    relay.abort();
                }
            });
        }
    }
}

impl DecisionRecord {
    /// The refusal of a TLS client before it sent a request (handshake, certificate).
    pub(crate) fn refused_client(peer: SocketAddr, reason: String) -> DecisionRecord {
        let mut d = DecisionRecord::unauthenticated(String::new(), 0, Protocol::Tls, peer);
        d.reason = Some(reason);
        d
    }
}
