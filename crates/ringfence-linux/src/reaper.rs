//! PID 1 of the sandbox: forks the command, forwards the signals the supervisor sends it, reaps
//! every orphan, and when the command ends kills whatever it left behind and reports the
//! command's status to the supervisor.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::guard::Agent;
use crate::sandbox::{
    recv_fds, send_fds, send_with_fd, Ready, Spec, MSG_EXITED, MSG_SIGNALED, MSG_SYSV_SHM,
};
use crate::{caps, seccomp, sys};

static COMMAND_PID: AtomicI32 = AtomicI32::new(0);

/// Signals PID 1 passes on to the command.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGTSTP,
];

extern "C" fn forward(sig: libc::c_int) {
    let pid = COMMAND_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn block_all() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigfillset; sigprocmask gets valid pointers.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

static CHILD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_child(_: libc::c_int) {
    let fd = CHILD_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 0u8;
        // SAFETY: write is async-signal-safe; the buffer is one valid byte.
        unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
    }
}

fn handle(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: handler is an async-signal-safe extern "C" function.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// `guard_filter`: the command's filter (`seccomp::build_guard` for `spec`), which it installs
/// on itself and whose listener it hands to PID 1.
pub(crate) fn run(
    spec: &Spec,
    channel: OwnedFd,
    ready: Ready,
    guard_filter: &[libc::sock_filter],
) -> ! {
    // The command installs the creation guard on itself and hands PID 1 the listener over
    // this pair (a stream pair: the main filter allows those).
    let guard_pair = match stream_pair() {
        Ok(p) => Some(p),
        Err(_) => report(&channel, MSG_EXITED, 125),
    };
    let (wake_read, wake_write) = match sys::pipe() {
        Ok(p) => p,
        Err(_) => report(&channel, MSG_EXITED, 125),
    };
    let old_mask = block_all();
    // SAFETY: the process is single-threaded; the child only execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        report(&channel, MSG_EXITED, 125);
    }
    if pid == 0 {
        drop(channel);
        drop((wake_read, wake_write));
        let guard_end = guard_pair.map(|(_, theirs)| theirs);
        command(
            spec,
            ready.pty_slave.as_ref(),
            &old_mask,
            guard_end.map(|g| (g, guard_filter)),
        );
    }
    COMMAND_PID.store(pid, Ordering::Relaxed);
    crate::timing::mark("command forked");
    // The reaper itself: not dumpable, so nothing in the sandbox can read its memory or fds.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    CHILD_PIPE.store(wake_write.as_raw_fd(), Ordering::Relaxed);
    for &sig in FORWARDED {
        handle(sig, forward);
    }
    handle(libc::SIGCHLD, on_child);
    // SAFETY: restoring the previous signal mask.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };

    let listener = guard_pair.and_then(|(ours, theirs)| {
        drop(theirs);
        if spec.unix_sockets.is_some() {
            return take_listener(pid, &ours);
        }
        let mut b = [0u8; 1];
        // A command that died before installing the guard sends nothing: no listener.
        recv_fds(ours.as_raw_fd(), &mut b)
            .ok()
            .and_then(|(_, fds)| fds.into_iter().next())
    });
    crate::timing::mark("guard listener received");
    let agent = listener.as_ref().map(|l| {
        Agent::new(
            spec.guard.as_ref(),
            l,
            channel.as_raw_fd(),
            &ready.file_dirs,
        )
        .with_unix_sockets(spec.unix_sockets.as_ref())
    });

    let mut status = 0;
    let mut listening = agent.is_some();
    let mut sysv = SysvReport::default();
    'outer: loop {
        if spec.report_sysv_shm {
            sysv.tick(channel.as_raw_fd());
        }
        loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r == pid {
                status = st;
                break 'outer;
            }
            if r <= 0 {
                if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                    break 'outer;
                }
                break;
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: wake_read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: match (&listener, listening) {
                    (Some(l), true) => l.as_raw_fd(),
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = if spec.report_sysv_shm {
            SYSV_INTERVAL_MS as libc::c_int
        } else {
            -1
        };
        // Queued reports go out when they are due, or when nothing else is to be done.
        let timeout = match agent.as_ref().and_then(|a| a.reports_due_in()) {
            Some(due) => {
                // Rounded up: a timeout of 0 would spin until the batch is due.
                let due = due.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
                if timeout < 0 {
                    due
                } else {
                    timeout.min(due)
                }
            }
            None => timeout,
        };
        // SAFETY: fds is a valid array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            let _ = sys::read_some(wake_read.as_raw_fd(), &mut buf);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(a) = &agent {
                a.handle_one();
            }
        } else if fds[1].revents != 0 {
            listening = false;
        }
        if let Some(a) = &agent {
            a.flush_reports_if_due();
        }
    }
    crate::timing::mark("command exited");
    if let Some(a) = &agent {
        a.flush_dropped();
    }
    COMMAND_PID.store(0, Ordering::Relaxed);
    // Everything the command left behind ends with it.
    // SAFETY: kill(-1) from PID 1 signals every other process in this PID namespace.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // SAFETY: waitpid with a null status pointer, reaping until there is nothing left.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    crate::timing::mark("the rest killed and reaped");
    crate::timing::report("sandbox");
    if libc::WIFSIGNALED(status) {
        report(&channel, MSG_SIGNALED, libc::WTERMSIG(status));
    }
    report(&channel, MSG_EXITED, libc::WEXITSTATUS(status));
}

// With `network.allowUnixSockets` the guard filter sends every sendmsg to PID 1, including
// the one that would carry the listener to it (SCM_RIGHTS): the command would wait on an
// answer from a listener nobody holds yet. So the command writes the listener's number
// instead (write(2) is not checked), PID 1 takes it with pidfd_getfd, and acknowledges, after
// which the command closes its copy.

/// The command's side: offers `listener` and waits until PID 1 has taken it.
fn offer_listener(sock: &OwnedFd, listener: &OwnedFd) -> bool {
    let n = listener.as_raw_fd().to_ne_bytes();
    // SAFETY: n is a valid buffer of 4 bytes.
    let wrote = unsafe { libc::write(sock.as_raw_fd(), n.as_ptr().cast(), n.len()) };
    let mut ack = [0u8; 1];
    wrote == n.len() as isize && matches!(sys::read_some(sock.as_raw_fd(), &mut ack), Ok(1))
}

/// PID 1's side: the listener of the command `pid`, taken from it.
fn take_listener(pid: libc::pid_t, sock: &OwnedFd) -> Option<OwnedFd> {
    let mut n = [0u8; 4];
    // A command that died before installing the guard sends nothing: no listener.
    if !matches!(sys::read_some(sock.as_raw_fd(), &mut n), Ok(4)) {
        return None;
    }
    let fd = crate::guard::take_fd(pid as u32, i32::from_ne_bytes(n)).ok()?;
    // SAFETY: one valid byte.
    unsafe { libc::write(sock.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    Some(fd)
}

fn stream_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How often PID 1 reads the SysV shared memory of the sandbox, in milliseconds.
const SYSV_INTERVAL_MS: u64 = 100;

/// PID 1's reports of SysV shared memory: a segment that no process has attached is in no
/// resident set, and its IPC namespace's segments are listed only to processes inside it.
#[derive(Default)]
struct SysvReport {
    last: Option<std::time::Instant>,
    sent: u64,
}

impl SysvReport {
    fn tick(&mut self, channel: std::os::fd::RawFd) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t).as_millis() < u128::from(SYSV_INTERVAL_MS))
        {
            return;
        }
        self.last = Some(now);
        let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
        let total = sysv_shm_bytes(&text);
        if total != self.sent {
            let mut msg = vec![MSG_SYSV_SHM];
            msg.extend_from_slice(&total.to_ne_bytes());
            if send_with_fd(channel, &msg, None).is_ok() {
                self.sent = total;
            }
        }
    }
}

/// The memory of the segments in `/proc/sysvipc/shm`, in bytes: resident and swapped pages
/// where the kernel lists them, else the segments' sizes.
pub(crate) fn sysv_shm_bytes(text: &str) -> u64 {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let cols: Vec<usize> = match (col("rss"), col("swap"), col("size")) {
        (Some(r), Some(s), _) => vec![r, s],
        (_, _, Some(z)) => vec![z],
        _ => return 0,
    };
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            cols.iter()
                .filter_map(|&c| f.get(c)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn report(channel: &OwnedFd, kind: u8, value: i32) -> ! {
    let mut msg = vec![kind];
    msg.extend_from_slice(&value.to_ne_bytes());
    let _ = send_with_fd(channel.as_raw_fd(), &msg, None);
    // SAFETY: _exit ends PID 1, and with it the sandbox.
    unsafe { libc::_exit(0) }
}

/// The command's process: new session, its terminal, no inherited descriptors, default signal
/// handling, then exec. Exits 127 when the program is not found and 126 when it cannot run.
fn command(
    spec: &Spec,
    pty_slave: Option<&CString>,
    mask: &libc::sigset_t,
    guard: Option<(OwnedFd, &[libc::sock_filter])>,
) -> ! {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to the default is always valid.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: restoring the mask the supervisor had.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    // SAFETY: setsid has no arguments; a new session detaches from any host terminal.
    unsafe { libc::setsid() };
    if let Some(slave) = pty_slave {
        // SAFETY: slave is a valid path string.
        let fd = unsafe { libc::open(slave.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            fail(
                126,
                "opening the sandbox's terminal",
                std::io::Error::last_os_error(),
            );
        }
        // SAFETY: fd is our new terminal; making it the controlling terminal of our session.
        unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
        for (target, wanted) in spec.pty.iter().enumerate() {
            if *wanted {
                let _ = sys::dup2(fd, target as i32);
            }
        }
    }
    if let Err(e) = caps::clear() {
        fail(
            125,
            "dropping capabilities",
            std::io::Error::other(e.to_string()),
        );
    }
    if let Some((sock, filter)) = guard {
        // Last step before exec: from here on every creating syscall waits for PID 1.
        match seccomp::install_with_listener(filter) {
            Ok(listener) if spec.unix_sockets.is_some() => {
                if !offer_listener(&sock, &listener) {
                    fail(
                        125,
                        "handing over the creation guard",
                        std::io::Error::last_os_error(),
                    );
                }
            }
            Ok(listener) => {
                if send_fds(sock.as_raw_fd(), &[0], &[listener.as_raw_fd()]).is_err() {
                    fail(
                        125,
                        "handing over the creation guard",
                        std::io::Error::last_os_error(),
                    );
                }
            }
            Err(e) => {
                eprintln!("ringfence: {e}");
                // SAFETY: _exit ends the process at once.
                unsafe { libc::_exit(125) }
            }
        }
    }
    if let Err(e) = sys::close_from(3) {
        fail(125, "closing inherited descriptors", e);
    }
    let argv = sys::cstr_ptrs(&spec.argv);
    let envp = sys::cstr_ptrs(&spec.env);
    let Some(program) = spec.argv.first() else {
        fail(
            125,
            "empty command",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        );
    };
    let mut last_error = libc::ENOENT;
    for candidate in candidates(program, &spec.env) {
        // Each execve waits for PID 1's exec report: a directory of PATH that has no such
        // program, or that this user may not search, is passed over with a stat, as execve
        // would fail there the same way (ENOENT, ENOTDIR; EACCES, which is kept as the error
        // to report if nothing else runs).
        // SAFETY: stat with a NUL-terminated path and a valid buffer.
        let stat_error = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(candidate.as_ptr(), &mut st) < 0 {
                std::io::Error::last_os_error().raw_os_error()
            } else {
                None
            }
        };
        match stat_error {
            Some(libc::ENOENT | libc::ENOTDIR) => continue,
            Some(libc::EACCES) => {
                last_error = libc::EACCES;
                continue;
            }
            _ => {}
        }
        // SAFETY: candidate, argv and envp are NUL-terminated and live until execve returns.
        unsafe { libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT);
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            _ => last_error = e,
        }
    }
    let name = program.to_string_lossy();
    if last_error == libc::ENOENT {
        eprintln!("ringfence: {name}: command not found");
        // SAFETY: _exit after a failed exec.
        unsafe { libc::_exit(127) }
    }
    eprintln!(
        "ringfence: {name}: cannot run: {}",
        sys::errno_str(last_error)
    );
    // SAFETY: _exit after a failed exec.
    unsafe { libc::_exit(126) }
}

fn fail(code: i32, what: &str, e: std::io::Error) -> ! {
    eprintln!("ringfence: {what}: {e}");
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(code) }
}

/// Where to look for `program`: itself when it has a slash, else each directory of the sandbox
/// environment's PATH.
fn candidates(program: &CString, env: &[CString]) -> Vec<CString> {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        return vec![program.clone()];
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(bytes);
            full
        })
        .filter_map(|v| CString::new(v).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_sysv_segments() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                    0 0 1600 67108864 2 2 0 1000 1000 1000 1000 1 2 3 67108864 0\n\
                    0 1 1600 67108864 2 2 1 1000 1000 1000 1000 1 2 3 4096 8192\n";
        assert_eq!(super::sysv_shm_bytes(text), 67108864 + 4096 + 8192);
        let old = "key shmid perms size cpid\n0 0 1600 1000 2\n0 1 1600 24 2\n";
        assert_eq!(super::sysv_shm_bytes(old), 1024);
        assert_eq!(super::sysv_shm_bytes(""), 0);
    }
}
