//! The system calls the egress proxy needs, behind safe functions: zero-copy relaying with
//! `splice` through a pipe, half-closing and resetting sockets, the host's own interface
//! addresses, and the access mode of a descriptor handed to it. Each borrows the descriptors it
//! acts on, so none can outlive its owner.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec pipe for `splice`, asked to hold `bytes`; returns both ends and
/// the size the kernel granted (a refusal over the user's pipe-pages limit leaves the default).
pub fn splice_pipe(bytes: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let want = i32::try_from(bytes).unwrap_or(i32::MAX);
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int and changes nothing else.
    let size = unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want);
        libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
    };
    let size = if size > 0 { size as usize } else { 4096 };
    Ok((r, w, size))
}

/// splice(2) of up to `len` bytes from `from` to `to` at their current positions, non-blocking.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the call; null offsets mean "current
    // position", as sockets and pipes require.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
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

/// Ends the sending direction of a socket (the peer reads end of input). Errors (not
/// connected, already shut) leave nothing to do.
pub fn shutdown_write(s: BorrowedFd<'_>) {
    // SAFETY: shutdown on a borrowed socket, open for the call.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
}

/// Makes closing the socket send a reset instead of a normal end (SO_LINGER with a zero time).
pub fn reset_on_close(s: BorrowedFd<'_>) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a linger struct of the size passed, on a borrowed socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a descriptor was opened for reading and for writing (its O_ACCMODE).
pub fn access_mode(fd: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    // SAFETY: F_GETFL on a borrowed descriptor only reads its flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let mode = flags & libc::O_ACCMODE;
    Ok((
        mode == libc::O_RDONLY || mode == libc::O_RDWR,
        mode == libc::O_WRONLY || mode == libc::O_RDWR,
    ))
}

/// The addresses of this host's interfaces (empty if they cannot be listed).
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own and free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn splice_moves_bytes_through_a_pipe_and_modes_read_back() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (r, w, size) = splice_pipe(1 << 16).unwrap();
        assert!(size >= 4096);
        a.write_all(b"hello").unwrap();
        assert_eq!(splice(b.as_fd(), w.as_fd(), 5).unwrap(), 5);
        let mut out = [0u8; 5];
        std::fs::File::from(r).read_exact(&mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert_eq!(access_mode(b.as_fd()).unwrap(), (true, true));
        assert_eq!(access_mode(w.as_fd()).unwrap(), (false, true));
        shutdown_write(a.as_fd());
        let mut rest = Vec::new();
        (&b).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        reset_on_close(b.as_fd()).unwrap_or_default();
        assert!(interface_addresses().iter().any(|a| a.is_loopback()));
    }
}
