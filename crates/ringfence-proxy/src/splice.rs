//! Moving bytes between two sockets (TCP, or a unix socket to an inspection proxy) without copying them through user space: splice(2)
//! from one socket into a pipe and from the pipe into the other. Tunnels and large bodies go
//! this way; with the client, the upstream and the proxy sharing a few cores, every copy saved
//! is throughput. A direction holds a pipe only while bytes are moving: when its socket has
//! nothing more to read, the emptied pipe goes back to a small shared stock, so that thousands
//! of idle tunnels hold two descriptors each, not six.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ringfence_linux::net::splice;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;

use crate::route::Sock;

/// Bytes the pipe holds (F_SETPIPE_SZ; the default of 64 KiB is kept if this is refused).
const PIPE_BYTES: usize = 1 << 20;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

/// Empty pipes kept for the next burst of any direction.
static SPARE: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
const SPARE_MAX: usize = 64;

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w, size) = ringfence_linux::net::splice_pipe(PIPE_BYTES)?;
        Ok(Pipe { r, w, size })
    }

    /// A spare pipe, or a new one. Out of descriptors, it waits for one (up to 2 s) rather
    /// than ending the tunnel.
    async fn take() -> io::Result<Pipe> {
        if let Some(p) = SPARE.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(p);
        }
        let mut tries = 0;
        loop {
            match Pipe::new() {
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && tries < 100 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                r => return r,
            }
        }
    }

    /// Back to the stock; only an emptied pipe may be given back.
    fn give_back(self) {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_MAX {
            spare.push(self);
        }
    }
}

/// Moves bytes from `from` to `to` until `from` ends (or `limit` bytes, when given), adding
/// them to `moved` as they go. Returns the bytes moved; a short count with a limit means `from`
/// ended early.
pub(crate) async fn copy<A: Sock, B: Sock>(
    from: &A,
    to: &B,
    limit: Option<u64>,
    moved: &AtomicU64,
) -> io::Result<u64> {
    if limit == Some(0) {
        return Ok(0);
    }
    let mut left = limit;
    let mut total = 0u64;
    loop {
        // An idle direction holds no pipe.
        from.wait_readable().await?;
        let pipe = Pipe::take().await?;
        let mut first = true;
        loop {
            let want = match left {
                Some(0) => {
                    pipe.give_back();
                    return Ok(total);
                }
                Some(l) => l.min(pipe.size as u64) as usize,
                None => pipe.size,
            };
            let read = || splice(from.fd(), pipe.w.as_fd(), want);
            let got = if first {
                first = false;
                from.io(Interest::READABLE, read).await?
            } else {
                match from.try_io(Interest::READABLE, read) {
                    Ok(n) => n,
                    // Nothing more for now: the pipe is empty, give it back and wait.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            };
            if got == 0 {
                pipe.give_back();
                return Ok(total);
            }
            if let Some(l) = left.as_mut() {
                *l -= got as u64;
            }
            let mut in_pipe = got;
            while in_pipe > 0 {
                let sent = to
                    .io(Interest::WRITABLE, || {
                        splice(pipe.r.as_fd(), to.fd(), in_pipe)
                    })
                    .await?;
                in_pipe -= sent;
                total += sent as u64;
                moved.fetch_add(sent as u64, Ordering::Relaxed);
            }
        }
        pipe.give_back();
    }
}

/// Ends the sending direction of `s` (the peer reads end of input).
pub(crate) fn shutdown_write<S: Sock>(s: &S) {
    ringfence_linux::net::shutdown_write(s.fd());
}

/// Relays both ways until both directions have ended or one fails; returns the bytes moved
/// (a to b, b to a) either way.
pub(crate) async fn tunnel<A: Sock, B: Sock>(a: &A, b: &B) -> (u64, u64) {
    let (ab, ba) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = async {
        copy(a, b, None, &ab).await?;
        shutdown_write(b);
        Ok::<(), io::Error>(())
    };
    let down = async {
        copy(b, a, None, &ba).await?;
        shutdown_write(a);
        Ok::<(), io::Error>(())
    };
    let _ = tokio::try_join!(up, down);
    (ab.load(Ordering::Relaxed), ba.load(Ordering::Relaxed))
}
