//! Small pieces for a process that works in another process's network namespace from the
//! outside (the OCI gateway hook): a pidfd, a thread that enters the namespace, descriptors
//! handed to a child at fixed numbers, and a wait for readable descriptors.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};

/// A pidfd for process `pid`: readable once it has ended.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments; the result is checked before it is owned.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Runs `f` on a thread of its own that has entered the network namespace `ns` (a namespace
/// descriptor, or a pidfd for that process's; setns of a network namespace moves only the
/// calling thread), and returns what it returns. Sockets it makes belong to that namespace.
pub fn in_netns<T: Send>(
    ns: &impl AsRawFd,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let ns = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace or pidfd descriptor the caller holds open for the
            // whole call (it borrows it).
            if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread in the namespace panicked")))
    })
}

/// Spawns `cmd` with `fds` at descriptors 3, 4, ... (in that order) and in a session of its
/// own, so that signals to the caller's process group do not reach it.
pub fn spawn_with_fds(cmd: &mut Command, fds: &[RawFd]) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    const MAX: usize = 8;
    if fds.len() > MAX {
        return Err(io::Error::other("spawn_with_fds: more than 8 descriptors"));
    }
    let mut sources = [-1 as libc::c_int; MAX];
    sources[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // Copies first go above every source and every target number (F_DUPFD takes the lowest
    // free one from there, so nothing open is overwritten), and then move into place.
    let above = fds
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(2 + count as libc::c_int)
        + 1;
    // SAFETY: the closure calls only async-signal-safe functions (fcntl, dup2, close,
    // close_range, setsid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [-1 as libc::c_int; MAX];
            for i in 0..count {
                high[i] = libc::fcntl(sources[i], libc::F_DUPFD_CLOEXEC, above);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, &h) in high.iter().enumerate().take(count) {
                if libc::dup2(h, 3 + i as libc::c_int) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(h);
            }
            // Nothing else the caller held open goes with it.
            libc::syscall(
                libc::SYS_close_range,
                3 + count as libc::c_uint,
                libc::c_uint::MAX,
                0,
            );
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
}

/// Takes the descriptor `fd` that this process was given at start (it must be open), marked
/// close-on-exec. Call once per descriptor, before anything else may own that number.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on an integer; checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and by this function's contract the caller was handed
    // it and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// As root, becomes nobody (uid and gid 65534, no supplementary groups) with no_new_privs,
/// for a helper that needs no privilege once it holds its descriptors; otherwise changes
/// nothing.
pub fn become_nobody() -> io::Result<()> {
    // SAFETY: getuid has no arguments.
    if unsafe { libc::getuid() } != 0 {
        return Ok(());
    }
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: setgroups with an empty list; setresgid and setresuid with integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(65534, 65534, 65534))?;
        check(libc::setresuid(65534, 65534, 65534))?;
    }
    crate::sys::set_no_new_privs()
}

/// Waits until at least one of `fds` is readable (or has hung up); returns which are.
pub fn wait_readable(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: p is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(p.iter().map(|x| x.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::fs::File;
    use std::os::fd::AsFd;

    #[test]
    fn a_pidfd_is_readable_once_its_process_ends() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        let fd = pidfd_open(child.id() as libc::pid_t).unwrap();
        assert_eq!(wait_readable(&[fd.as_fd()]).unwrap(), vec![true]);
        child.wait().unwrap();
    }

    #[test]
    fn the_own_namespace_can_be_entered_again() {
        let ns = File::open("/proc/self/ns/net").unwrap();
        let l = in_netns(&ns, || std::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        assert!(l.local_addr().unwrap().port() > 0);
    }
}
