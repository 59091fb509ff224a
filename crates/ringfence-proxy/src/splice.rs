//! Moving bytes between two sockets (TCP, or a unix socket to an inspection proxy) without copying them through user space: splice(2)
//! from one socket into a pipe and from the pipe into the other. Tunnels and large bodies go
//! this way; with the client, the upstream and the proxy sharing a few cores, every copy saved
//! is throughput.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

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

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w, size) = ringfence_linux::net::splice_pipe(PIPE_BYTES)?;
        Ok(Pipe { r, w, size })
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
    // An idle tunnel holds no pipe.
    from.wait_readable().await?;
    let pipe = Pipe::new()?;
    let mut left = limit;
    let mut total = 0u64;
    loop {
        let want = match left {
            Some(0) => return Ok(total),
            Some(l) => l.min(pipe.size as u64) as usize,
            None => pipe.size,
        };
        let got = from
            .io(Interest::READABLE, || {
                splice(from.fd(), pipe.w.as_fd(), want)
            })
            .await?;
        if got == 0 {
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
