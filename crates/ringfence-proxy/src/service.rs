//! Host services at their own address: a listener inside the sandbox on an allowed loopback
//! address and port (`127.0.0.1:8080`) whose connections are carried, byte for byte, to the
//! same address on the host. Clients that skip the proxy for loopback (all of them, as the
//! sandbox's `NO_PROXY` says) reach the service as if it ran inside. Each connection is decided
//! by the policy in force when it arrives, like a proxy request, and recorded.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::host::Host;
use crate::proxy::{is_transient, ActiveGuard, Decision, DecisionRecord, Protocol, Proxy};

impl Proxy {
    /// Accepts on `listener` (bound inside the sandbox on `target`'s address) and carries each
    /// allowed connection to `target` on the host. A denied connection is reset at once.
    /// Must be called within a tokio runtime.
    pub async fn serve_host_service(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        target: SocketAddr,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let guard = ActiveGuard::new(self.clone());
            tokio::spawn(async move {
                let proxy = guard.0.clone();
                proxy.carry(client, peer, target).await;
                drop(guard);
            });
        }
    }

    async fn carry(&self, client: TcpStream, peer: SocketAddr, target: SocketAddr) {
        let started = Instant::now();
        let host = Host::Ip(target.ip()).to_string();
        // Who connected is looked up while the decision and the upstream connection are made:
        // the client is still waiting for its first answer then.
        let hooks = self.hooks();
        let who = tokio::task::spawn_blocking(move || hooks.identify(peer, target));
        let client_name = std::sync::Mutex::new(None::<String>);
        let record = |decision, rule, reason, asked, resolved, error, bytes: (u64, u64)| {
            self.record(&DecisionRecord {
                host: host.clone(),
                port: target.port(),
                protocol: Protocol::Tcp,
                decision,
                rule,
                reason,
                asked,
                client: client_name.lock().ok().and_then(|c| c.clone()),
                peer: Some(peer),
                resolved,
                via: None,
                error,
                bytes_up: bytes.0,
                bytes_down: bytes.1,
                duration: started.elapsed(),
            })
        };
        // The same decision as a proxy request for this literal: an update may have removed
        // the entry since the listener was made, and a loopback address is never asked about.
        let allowed = match self
            .authorize(&host, target.port(), Protocol::Tcp, None)
            .await
        {
            Ok(a) => a,
            Err(r) => {
                set(&client_name, who.await);
                record(
                    Decision::Denied,
                    r.rule,
                    Some(r.reason),
                    r.asked,
                    None,
                    None,
                    (0, 0),
                );
                reset(&client);
                return;
            }
        };
        let (up, who) = tokio::join!(
            tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(target)),
            who
        );
        set(&client_name, who);
        let up = match up {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                record(
                    Decision::Allowed,
                    allowed.rule,
                    None,
                    allowed.asked,
                    None,
                    Some(format!("connecting to {target}: {e}")),
                    (0, 0),
                );
                reset(&client);
                return;
            }
            Err(_) => {
                record(
                    Decision::Allowed,
                    allowed.rule,
                    None,
                    allowed.asked,
                    None,
                    Some(format!("connecting to {target}: timed out")),
                    (0, 0),
                );
                reset(&client);
                return;
            }
        };
        let _ = up.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let (a, b) = crate::splice::tunnel(&client, &up).await;
        record(
            Decision::Allowed,
            allowed.rule,
            None,
            allowed.asked,
            Some(target),
            None,
            (a, b),
        );
    }
}

fn set(
    slot: &std::sync::Mutex<Option<String>>,
    who: Result<Option<String>, tokio::task::JoinError>,
) {
    if let (Ok(mut s), Ok(Some(name))) = (slot.lock(), who) {
        *s = Some(name);
    }
}

/// Makes the coming close of `s` a reset, so the client sees its connection refused rather
/// than a stream that ends as if the service had answered nothing. A zero linger time never
/// blocks the close.
fn reset(s: &TcpStream) {
    use std::os::fd::AsFd;
    // Without it the client sees an empty answer instead of a refusal; nothing else changes.
    let _ = ringfence_linux::net::reset_on_close(s.as_fd());
}
