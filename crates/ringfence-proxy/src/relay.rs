//! A relay without a policy: every connection to a listener is passed byte for byte to one
//! fixed address. Used for srt's `network.httpProxyPort` / `socksProxyPort`, where the user's
//! own proxy on the host's loopback replaces the built-in one and does its own filtering; the
//! sandbox's empty network namespace cannot reach the host's loopback any other way.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// One relayed connection, reported when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRecord {
    /// Where the connection was passed to.
    pub target: SocketAddr,
    /// The client's address as the relay saw it.
    pub peer: Option<SocketAddr>,
    /// Connecting to the target failed.
    pub error: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
}

/// Relays connections of one listener.
pub struct Relay {
    target: SocketAddr,
    connect_timeout: Duration,
    record: Box<dyn Fn(&RelayRecord) + Send + Sync>,
    active: AtomicUsize,
}

struct Active(Arc<Relay>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Relay {
    pub fn new(
        target: SocketAddr,
        record: impl Fn(&RelayRecord) + Send + Sync + 'static,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            target,
            connect_timeout: Duration::from_secs(10),
            record: Box::new(record),
            active: AtomicUsize::new(0),
        })
    }

    /// Connections being relayed now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Accepts on an already-bound listener until accepting fails or the future is dropped.
    /// Must be called within a tokio runtime.
    pub async fn serve(self: Arc<Self>, listener: std::net::TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.active.fetch_add(1, Ordering::AcqRel);
            let guard = Active(self.clone());
            tokio::spawn(async move {
                let relay = guard.0.clone();
                let started = Instant::now();
                let mut rec = RelayRecord {
                    target: relay.target,
                    peer: Some(peer),
                    error: None,
                    bytes_up: 0,
                    bytes_down: 0,
                    duration: Duration::ZERO,
                };
                match tokio::time::timeout(relay.connect_timeout, TcpStream::connect(relay.target))
                    .await
                {
                    Ok(Ok(up)) => {
                        let _ = up.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let (a, b) = crate::splice::tunnel(&client, &up).await;
                        rec.bytes_up = a;
                        rec.bytes_down = b;
                    }
                    Ok(Err(e)) => rec.error = Some(format!("connecting to {}: {e}", relay.target)),
                    Err(_) => {
                        rec.error = Some(format!("connecting to {}: timed out", relay.target))
                    }
                }
                rec.duration = started.elapsed();
                (relay.record)(&rec);
                drop(guard);
            });
        }
    }
}
