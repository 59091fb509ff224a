//! Moving bytes between two sockets (TCP, or a unix socket to an inspection proxy) without copying them through user space: splice(2)
//! from one socket into a pipe and from the pipe into the other. Tunnels and large bodies go
//! this way; with the client, the upstream and the proxy sharing a few cores, every copy saved
//! is throughput.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own. A refusal (over the user's pipe-pages limit)
        // leaves the size the kernel chose, which F_GETPIPE_SZ reports.
        let size = unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES as i32);
            libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let size = if size > 0 { size as usize } else { 4096 };
        Ok(Pipe { r, w, size })
    }
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: splice between two descriptors that stay open for the call; null offsets mean
    // "current position", as sockets and pipes require.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
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
                splice(from.fd(), pipe.w.as_raw_fd(), want)
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
                    splice(pipe.r.as_raw_fd(), to.fd(), in_pipe)
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
    // SAFETY: shutdown on a socket that stays open for the call.
    unsafe { libc::shutdown(s.fd(), libc::SHUT_WR) };
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
