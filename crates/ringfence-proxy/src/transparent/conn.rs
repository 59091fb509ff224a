//! One captured TCP connection: decided by name and port like a proxy request, its first
//! bytes checked against the name, dialled by the proxy's dialer, relayed and recorded.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};

use super::sniff::{self, Named};
use crate::host::normalize_host;
use crate::proxy::{ActiveGuard, AskAnswer, ConnectError, Decision, DecisionRecord, Protocol};
use crate::route::ReadHalf;

/// What a task asks of the stack for its connection.
pub(crate) enum Cmd {
    Data(Vec<u8>),
    /// Reset the connection.
    Abort,
    /// From now on the stack reads the upstream itself, straight into the socket's send
    /// buffer (once the data before it is sent).
    Upstream(Arc<Downstream>),
}

/// An upstream's read half, shared between its task (which waits for it to become readable)
/// and the stack (which reads it into the sandbox's socket until it would block). Saves a
/// buffer, a copy and a channel hop per chunk on the download path.
pub(crate) struct Downstream {
    pub read: ReadHalf,
    /// Set by the task when the upstream became readable, before it wakes the stack.
    pub readable: AtomicBool,
    /// Woken by the stack when a read would block (the task waits for readiness again) or
    /// when it is done with the upstream.
    pub drained: Notify,
    /// Set by the stack when the upstream ended, failed, or the sandbox's side is gone.
    pub done: AtomicBool,
    /// Bytes read from the upstream.
    pub bytes: AtomicU64,
}

impl Downstream {
    /// The stack is done with the upstream.
    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.drained.notify_one();
    }
}

/// How long a client may take to send its first bytes before a connection is carried
/// without looking at them (protocols where the server speaks first).
const FIRST_BYTES: Duration = Duration::from_millis(300);

/// A task's end of its connection.
pub(crate) struct Link {
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub tx: mpsc::Sender<Cmd>,
    pub notify: Arc<Notify>,
}

async fn send(tx: &mpsc::Sender<Cmd>, notify: &Notify, c: Cmd) -> bool {
    let ok = tx.send(c).await.is_ok();
    notify.notify_one();
    ok
}

async fn recv(rx: &mut mpsc::Receiver<Vec<u8>>, notify: &Notify) -> Option<Vec<u8>> {
    let d = rx.recv().await;
    // Room in the channel: the stack may hand over more.
    notify.notify_one();
    d
}

/// The first bytes of the sandbox's stream, as far as they are needed to see what they name.
async fn first_bytes(rx: &mut mpsc::Receiver<Vec<u8>>, notify: &Notify) -> (Vec<u8>, Named, bool) {
    let mut buf = Vec::new();
    let deadline = tokio::time::sleep(FIRST_BYTES);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            d = recv(rx, notify) => match d {
                Some(d) => {
                    buf.extend_from_slice(&d);
                    match sniff::named_host(&buf) {
                        Named::NeedMore if buf.len() < sniff::MAX_SNIFF => continue,
                        Named::NeedMore => return (buf, Named::Malformed, false),
                        n => return (buf, n, false),
                    }
                }
                None => {
                    let n = match sniff::named_host(&buf) {
                        Named::NeedMore => Named::Nothing,
                        n => n,
                    };
                    return (buf, n, true);
                }
            },
            _ = &mut deadline => {
                let n = if buf.is_empty() { Named::Nothing } else { Named::Malformed };
                return (buf, n, false);
            }
        }
    }
}

pub(crate) async fn run(
    guard: ActiveGuard,
    host: String,
    dst: SocketAddrV4,
    peer: SocketAddrV4,
    link: Link,
) {
    let proxy = guard.0.clone();
    let started = Instant::now();
    let port = dst.port();
    let Link { mut rx, tx, notify } = link;
    #[allow(clippy::too_many_arguments)]
    let client = Mutex::new(None::<String>);
    let record = |host: String,
                  decision,
                  rule,
                  reason,
                  asked: Option<AskAnswer>,
                  resolved,
                  via,
                  error,
                  bytes: (u64, u64)| {
        proxy.record(&DecisionRecord {
            host,
            port,
            protocol: Protocol::Transparent,
            decision,
            rule,
            reason,
            asked,
            client: client
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            peer: Some(SocketAddr::V4(peer)),
            resolved,
            via,
            error,
            bytes_up: bytes.0,
            bytes_down: bytes.1,
            duration: started.elapsed(),
        })
    };
    let authorized = proxy
        .authorize(&host, port, Protocol::Transparent, None)
        .await;
    let allowed = match authorized {
        Ok(a) => a,
        Err(r) => {
            // Who tried is looked up for refusals only: the lookup reads the sandbox's whole
            // socket table, far more work than carrying a connection.
            let hooks = proxy.hooks();
            let who = tokio::task::spawn_blocking(move || {
                hooks.identify(SocketAddr::V4(peer), SocketAddr::V4(dst))
            });
            *client.lock().unwrap_or_else(PoisonError::into_inner) = who.await.ok().flatten();
            record(
                r.host,
                Decision::Denied,
                r.rule,
                Some(r.reason),
                r.asked,
                None,
                None,
                None,
                (0, 0),
            );
            send(&tx, &notify, Cmd::Abort).await;
            return;
        }
    };
    let shown = allowed.host.to_string();
    let route = proxy.route(&allowed.host, port, false);
    let via = route.via();
    let (opened, (first, named, eof)) = tokio::join!(
        proxy.open_tunnel(&allowed.host, port, &route),
        first_bytes(&mut rx, &notify)
    );
    let mismatch = match &named {
        Named::Host(h) => match normalize_host(h) {
            Ok(n) if n == allowed.host => None,
            _ => Some(format!(
                "the connection's first bytes name {}, not {shown}",
                h.escape_debug()
            )),
        },
        Named::Malformed => Some(
            "the connection's first bytes are an unreadable TLS ClientHello or HTTP request head"
                .to_string(),
        ),
        _ => None,
    };
    if let Some(reason) = mismatch {
        record(
            shown,
            Decision::Denied,
            allowed.rule,
            Some(reason),
            allowed.asked,
            None,
            via,
            None,
            (0, 0),
        );
        send(&tx, &notify, Cmd::Abort).await;
        return;
    }
    let opened = match opened {
        Ok(o) => o,
        Err(ConnectError::Refused(reason)) => {
            record(
                shown,
                Decision::Denied,
                allowed.rule,
                Some(reason),
                allowed.asked,
                None,
                via,
                None,
                (0, 0),
            );
            send(&tx, &notify, Cmd::Abort).await;
            return;
        }
        Err(ConnectError::Failed(e)) => {
            record(
                shown,
                Decision::Allowed,
                allowed.rule,
                None,
                allowed.asked,
                None,
                via,
                Some(e),
                (0, 0),
            );
            send(&tx, &notify, Cmd::Abort).await;
            return;
        }
    };
    let resolved = opened.resolved;
    let early = opened.early;
    let (r, mut w) = opened.stream.into_split();
    let up = async {
        let mut n = first.len() as u64;
        if !first.is_empty() && w.write_all(&first).await.is_err() {
            return n;
        }
        if !eof {
            while let Some(d) = recv(&mut rx, &notify).await {
                if w.write_all(&d).await.is_err() {
                    return n;
                }
                n += d.len() as u64;
            }
        }
        let _ = w.shutdown().await;
        n
    };
    let down = async {
        let n = early.len() as u64;
        if !early.is_empty() && !send(&tx, &notify, Cmd::Data(early)).await {
            return n;
        }
        let ds = Arc::new(Downstream {
            read: r,
            readable: AtomicBool::new(false),
            drained: Notify::new(),
            done: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
        });
        if !send(&tx, &notify, Cmd::Upstream(ds.clone())).await {
            return n;
        }
        // The stack reads until a read would block, then says so; this waits for the
        // upstream to become readable again and wakes the stack. The sandbox's side gone
        // (reset, or forgotten by the stack): stop waiting for an upstream that may never
        // speak or close.
        loop {
            tokio::select! {
                _ = ds.drained.notified() => {}
                _ = tx.closed() => break,
            }
            if ds.done.load(Ordering::Acquire) {
                break;
            }
            tokio::select! {
                r = ds.read.readable() => if r.is_err() {
                    send(&tx, &notify, Cmd::Abort).await;
                    break;
                },
                _ = tx.closed() => break,
            }
            ds.readable.store(true, Ordering::Release);
            notify.notify_one();
        }
        n + ds.bytes.load(Ordering::Acquire)
    };
    let (a, b) = tokio::join!(up, down);
    record(
        shown,
        Decision::Allowed,
        allowed.rule,
        None,
        allowed.asked,
        resolved,
        via,
        None,
        (a, b),
    );
    drop(guard);
}
