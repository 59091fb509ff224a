//! The reverse proxy (`ringfence proxy --reverse https://host`): for clients that take a base
//! URL rather than a proxy. Each connection arrives as plain HTTP on a local socket; the
//! policy decides the one upstream as it decides a CONNECT, and the requests are then handled
//! as those inside a terminated tunnel to it (request rules, injected fields, masked
//! credentials) over a TLS connection verified against the host's trust store.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;

use crate::host::Host;
use crate::proxy::{is_transient, ActiveGuard, ConnectError};
use crate::tls::Terminator;
use crate::{Decision, DecisionRecord, Protocol, Proxy};

/// The one upstream of a reverse proxy.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl Proxy {
    /// Accepts on `listener` until accepting fails, sending every request to `upstream`.
    /// Must be called within a tokio runtime.
    pub async fn serve_reverse(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        upstream: Upstream,
        terminator: Arc<Terminator>,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let proxy = self.clone();
            let (upstream, t) = (upstream.clone(), terminator.clone());
            let guard = ActiveGuard::new(proxy.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let _ = stream.set_nodelay(true);
                proxy.reverse_connection(stream, peer, &upstream, &t).await;
            });
        }
    }

    async fn reverse_connection(
        &self,
        client: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        upstream: &Upstream,
        t: &Arc<Terminator>,
    ) {
        let started = Instant::now();
        let port = upstream.port;
        let record = |host: String,
                      decision: Decision,
                      rule: Option<String>,
                      reason: Option<String>,
                      resolved: Option<std::net::SocketAddr>,
                      error: Option<String>,
                      bytes: (u64, u64)| {
            self.record(&DecisionRecord {
                host,
                port,
                protocol: Protocol::Reverse,
                decision,
                rule,
                reason,
                asked: None,
                client: None,
                peer: Some(peer),
                resolved,
                via: None,
                error,
                bytes_up: bytes.0,
                bytes_down: bytes.1,
                duration: started.elapsed(),
            })
        };
        let allowed = match self
            .authorize(&upstream.host, port, Protocol::Reverse, None)
            .await
        {
            Ok(a) => a,
            Err(r) => {
                let msg = format!("{}:{port} is not allowed: {}", r.host, r.reason);
                record(
                    r.host,
                    Decision::Denied,
                    r.rule,
                    Some(r.reason),
                    None,
                    None,
                    (0, 0),
                );
                crate::tls::serve::answer_all(client, 403, msg, true).await;
                return;
            }
        };
        let host: Host = allowed.host.clone();
        let shown = host.to_string();
        let route = self.route(&host, port, false);
        let opened = match self.open_tunnel(&host, port, &route).await {
            Ok(o) => o,
            Err(ConnectError::Refused(reason)) => {
                let msg = format!("{shown}:{port} is not allowed: {reason}");
                record(
                    shown,
                    Decision::Denied,
                    allowed.rule,
                    Some(reason),
                    None,
                    None,
                    (0, 0),
                );
                crate::tls::serve::answer_all(client, 403, msg, true).await;
                return;
            }
            Err(ConnectError::Failed(e)) => {
                record(
                    shown,
                    Decision::Allowed,
                    allowed.rule,
                    None,
                    None,
                    Some(e.clone()),
                    (0, 0),
                );
                crate::tls::serve::answer_all(client, 502, e, false).await;
                return;
            }
        };
        let on_refusal = crate::tls::serve::recorder(self, &shown, port, None, peer);
        let out =
            crate::tls::serve::reverse(t, &host, port, client, opened.stream, on_refusal).await;
        record(
            shown,
            Decision::Allowed,
            allowed.rule,
            None,
            opened.resolved,
            out.error,
            (out.up, out.down),
        );
    }
}
