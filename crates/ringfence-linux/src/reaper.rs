//! PID 1 of the sandbox: starts the command, forwards the signals the supervisor sends it, reaps
//! every orphan, and when the command ends kills whatever it left behind and reports the
//! command's status to the supervisor.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::guard::Agent;
use crate::sandbox::{
    recv_fds, send_fds, send_with_fd, Ready, Spec, MSG_EXITED, MSG_SIGNALED, MSG_SYSV_SHM,
};
use crate::{caps, seccomp, sys};

static COMMAND_PID: AtomicI32 = AtomicI32::new(0);

/// The command's pid in the sandbox (0 before it is started and after it ended).
pub(crate) fn command_pid() -> u32 {
    COMMAND_PID.load(Ordering::Relaxed).max(0) as u32
}

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
    let Some(program) = spec.argv.first() else {
        eprintln!("ringfence: empty command");
        report(&channel, MSG_EXITED, 125);
    };
    let old_mask = block_all();
    // Everything the command's process reads until it execs, made here: it runs in this
    // process's memory (see `Launch`). Never freed: PID 1 does not learn when the exec is
    // done, and it lives only as long as the sandbox.
    let launch: &Launch<'_> = Box::leak(Box::new(Launch {
        spec,
        pty_slave: ready.pty_slave.as_ref(),
        mask: old_mask,
        guard: guard_pair
            .as_ref()
            .map(|(_, theirs)| (theirs.as_raw_fd(), guard_filter)),
        close: [
            channel.as_raw_fd(),
            wake_read.as_raw_fd(),
            wake_write.as_raw_fd(),
            guard_pair.as_ref().map_or(-1, |(ours, _)| ours.as_raw_fd()),
        ],
        argv: sys::cstr_ptrs(&spec.argv),
        envp: sys::cstr_ptrs(&spec.env),
        candidates: candidates(program, &spec.env),
    }));
    let pid = match launch_stack() {
        // SAFETY: `launch_command` gets a pointer to a leaked, never-changed `Launch` and runs
        // on a stack of its own; CLONE_VM with SIGCHLD makes a child process (not a thread)
        // that shares this memory until it execs or exits, which is all it does.
        Some(top) => unsafe {
            libc::clone(
                launch_command,
                top,
                libc::CLONE_VM | libc::SIGCHLD,
                (launch as *const Launch<'_>).cast_mut().cast(),
            )
        },
        None => -1,
    };
    if pid < 0 {
        // Nothing runs beside PID 1 here: the standard library may print.
        eprintln!(
            "ringfence: starting the command (a stack of its own, then clone): {}",
            std::io::Error::last_os_error()
        );
        report(&channel, MSG_EXITED, 125);
    }
    COMMAND_PID.store(pid, Ordering::Relaxed);
    crate::timing::mark("command started");
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
    // The reaper itself: not dumpable, so nothing in the sandbox can read its memory or fds.
    // Only now: dumpability belongs to the memory, which the command's process shares until
    // it execs, and PID 1 takes the listener from it with pidfd_getfd, which a process that
    // is not dumpable refuses. The command cannot exec before PID 1 answers its execve.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
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
fn offer_listener(sock: RawFd, listener: &OwnedFd) -> bool {
    let n = listener.as_raw_fd().to_ne_bytes();
    // SAFETY: n is a valid buffer of 4 bytes.
    let wrote = unsafe { libc::write(sock, n.as_ptr().cast(), n.len()) };
    let mut ack = [0u8; 1];
    wrote == n.len() as isize && matches!(sys::read_some(sock, &mut ack), Ok(1))
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

/// What the command's process works from. It is cloned with CLONE_VM, not forked: a fork
/// copied PID 1's page tables and made both processes fault on every page either wrote
/// afterwards, a good part of a short run's start. Until it execs it runs in PID 1's memory,
/// beside PID 1, so:
/// - it allocates and frees nothing (the two would share malloc's per-thread caches), and
///   everything it reads is made before the clone and never changes;
/// - once PID 1 has the guard's listener, PID 1 runs on beside it, and it makes raw system
///   calls only: they leave errno, which the two share, to PID 1. Until then PID 1 sets up
///   its signal handling and waits for the listener; the calls the command makes meanwhile
///   touch errno only when they fail, and then the command ends (its message may show an
///   error number of PID 1's), and whatever PID 1 reads from errno, a failure to get the
///   listener leaves the command unable to exec (every execve waits for PID 1).
struct Launch<'a> {
    spec: &'a Spec,
    pty_slave: Option<&'a CString>,
    mask: libc::sigset_t,
    /// The command's end of the pair the listener goes over, and the guard filter.
    guard: Option<(RawFd, &'a [libc::sock_filter])>,
    /// PID 1's descriptors, closed in the command at once.
    close: [RawFd; 4],
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    candidates: Vec<CString>,
}

/// Room for the command's process until it execs (it needs a few pages; the rest is never
/// touched), with an inaccessible page below it.
const LAUNCH_STACK: usize = 256 * 1024;

/// The top of a fresh stack for the command's process, or `None` if none could be mapped.
/// Never unmapped, like the `Launch`.
fn launch_stack() -> Option<*mut libc::c_void> {
    // SAFETY: sysconf with a constant name.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // SAFETY: an anonymous private mapping; the result is checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LAUNCH_STACK + page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the lowest page of the mapping just made.
    if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
        return None;
    }
    // SAFETY: one past the end of the mapping: the stack grows down from there.
    Some(unsafe { base.cast::<u8>().add(LAUNCH_STACK + page) }.cast())
}

extern "C" fn launch_command(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked `Launch` that `run` passed to clone.
    let l = unsafe { &*(arg as *const Launch<'_>) };
    command(l)
}

/// A system call of up to four arguments that leaves errno alone, for the command's process
/// once PID 1 runs beside it: the kernel's result, a negative error number on failure.
///
/// # Safety
/// The arguments must be valid for system call `nr`.
unsafe fn raw_syscall(nr: libc::c_long, a: [usize; 4]) -> isize {
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the Linux x86-64 system call convention; rcx and r11 are clobbered.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the Linux arm64 system call convention.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            options(nostack),
        );
    }
    ret
}

/// Writes `parts` to standard error with raw writes (nothing allocated, errno untouched).
fn say(parts: &[&[u8]]) {
    for p in parts {
        // SAFETY: write from a live buffer of its length.
        unsafe { raw_syscall(libc::SYS_write, [2, p.as_ptr() as usize, p.len(), 0]) };
    }
}

/// The text of the errors an exec or the steps before it may end with, as strerror(3) gives
/// them (strerror itself may allocate, and saves and restores errno).
const ERROR_TEXTS: &[(i32, &str)] = &[
    (libc::EPERM, "Operation not permitted"),
    (libc::ENOENT, "No such file or directory"),
    (libc::EINTR, "Interrupted system call"),
    (libc::EIO, "Input/output error"),
    (libc::E2BIG, "Argument list too long"),
    (libc::ENOEXEC, "Exec format error"),
    (libc::EBADF, "Bad file descriptor"),
    (libc::EAGAIN, "Resource temporarily unavailable"),
    (libc::ENOMEM, "Cannot allocate memory"),
    (libc::EACCES, "Permission denied"),
    (libc::EFAULT, "Bad address"),
    (libc::EBUSY, "Device or resource busy"),
    (libc::ENOTDIR, "Not a directory"),
    (libc::EISDIR, "Is a directory"),
    (libc::EINVAL, "Invalid argument"),
    (libc::ENFILE, "Too many open files in system"),
    (libc::EMFILE, "Too many open files"),
    (libc::ETXTBSY, "Text file busy"),
    (libc::EPIPE, "Broken pipe"),
    (libc::ENAMETOOLONG, "File name too long"),
    (libc::ENOSYS, "Function not implemented"),
    (libc::ELOOP, "Too many levels of symbolic links"),
    (libc::ELIBBAD, "Accessing a corrupted shared library"),
    (libc::ESRCH, "No such process"),
    (libc::ENXIO, "No such device or address"),
    (libc::ECHILD, "No child processes"),
    (libc::EEXIST, "File exists"),
    (libc::ENODEV, "No such device"),
    (libc::ENOTTY, "Inappropriate ioctl for device"),
    (libc::ENOSPC, "No space left on device"),
    (libc::EROFS, "Read-only file system"),
    (libc::EMLINK, "Too many links"),
    (libc::ECONNREFUSED, "Connection refused"),
    (libc::ENOTSOCK, "Socket operation on non-socket"),
    (libc::EOPNOTSUPP, "Operation not supported"),
    (libc::EDQUOT, "Disk quota exceeded"),
];

/// "Permission denied (os error 13)", as `std::io::Error` shows it, in `buf`, without
/// allocating.
fn error_text(errno: i32, buf: &mut [u8; 80]) -> &[u8] {
    let text = ERROR_TEXTS
        .iter()
        .find(|(e, _)| *e == errno)
        .map_or("Unknown error", |(_, t)| t);
    let mut digits = [0u8; 12];
    let mut d = digits.len();
    let mut v = errno.unsigned_abs();
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut n = 0;
    for part in [text.as_bytes(), b" (os error ", &digits[d..], b")"] {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    &buf[..n]
}

/// "ringfence: WHAT: ERROR" and exit `code`, allocating nothing.
fn fail(code: i32, what: &str, errno: i32) -> ! {
    let mut buf = [0u8; 80];
    say(&[
        b"ringfence: ",
        what.as_bytes(),
        b": ",
        error_text(errno, &mut buf),
        b"\n",
    ]);
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(code) }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The command's process: new session, its terminal, no inherited descriptors, default signal
/// handling, then exec. Exits 127 when the program is not found and 126 when it cannot run.
fn command(l: &Launch<'_>) -> ! {
    let spec = l.spec;
    for &fd in &l.close {
        if fd >= 0 {
            // SAFETY: closing PID 1's descriptors in this process's own table.
            unsafe { libc::close(fd) };
        }
    }
    // The standard signals: those from 32 to SIGRTMIN are the C library's own, which it
    // refuses to change (and says so in errno, which PID 1 shares).
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to the default is always valid.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: restoring the mask the supervisor had.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &l.mask, std::ptr::null_mut()) };
    // SAFETY: setsid has no arguments; a new session detaches from any host terminal.
    unsafe { libc::setsid() };
    if let Some(slave) = l.pty_slave {
        // SAFETY: slave is a valid path string.
        let fd = unsafe { libc::open(slave.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            fail(
                126,
                "opening the sandbox's terminal",
                errno_of(&std::io::Error::last_os_error()),
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
        let errno = match &e {
            crate::Error::Syscall { source, .. } => errno_of(source),
            _ => libc::EPERM,
        };
        fail(125, "dropping capabilities", errno);
    }
    if let Some((sock, filter)) = l.guard {
        // Last step before exec: from here on every creating syscall waits for PID 1.
        match seccomp::install_with_listener(filter) {
            Ok(listener) if spec.unix_sockets.is_some() => {
                if !offer_listener(sock, &listener) {
                    fail(
                        125,
                        "handing over the creation guard",
                        errno_of(&std::io::Error::last_os_error()),
                    );
                }
            }
            Ok(listener) => {
                if let Err(e) = send_fds(sock, &[0], &[listener.as_raw_fd()]) {
                    fail(125, "handing over the creation guard", errno_of(&e));
                }
            }
            Err(crate::Error::Seccomp { step, source }) => {
                let mut buf = [0u8; 80];
                say(&[
                    b"ringfence: seccomp: ",
                    step.as_bytes(),
                    b": ",
                    error_text(errno_of(&source), &mut buf),
                    b"\n",
                ]);
                // SAFETY: _exit ends the process at once.
                unsafe { libc::_exit(125) }
            }
            Err(_) => fail(125, "installing the guard filter", libc::EINVAL),
        }
    }
    // PID 1 runs beside this process from here on: raw system calls only.
    // SAFETY: close_range with integer arguments; closing fds we do not use is the intent.
    let r = unsafe { raw_syscall(libc::SYS_close_range, [3, u32::MAX as usize, 0, 0]) };
    if r < 0 {
        fail(125, "closing inherited descriptors", -r as i32);
    }
    let mut last_error = libc::ENOENT;
    for candidate in &l.candidates {
        // Each execve waits for PID 1's exec report: a directory of PATH that has no such
        // program, or that this user may not search, is passed over with a stat, as execve
        // would fail there the same way (ENOENT, ENOTDIR; EACCES, which is kept as the error
        // to report if nothing else runs).
        // SAFETY: stat is plain data; newfstatat gets a NUL-terminated path and a buffer of
        // its size.
        let r = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            raw_syscall(
                libc::SYS_newfstatat,
                [
                    libc::AT_FDCWD as usize,
                    candidate.as_ptr() as usize,
                    &mut st as *mut libc::stat as usize,
                    0,
                ],
            )
        };
        match -r as i32 {
            libc::ENOENT | libc::ENOTDIR if r < 0 => continue,
            libc::EACCES if r < 0 => {
                last_error = libc::EACCES;
                continue;
            }
            _ => {}
        }
        // SAFETY: candidate, argv and envp are NUL-terminated and live until execve returns.
        let r = unsafe {
            raw_syscall(
                libc::SYS_execve,
                [
                    candidate.as_ptr() as usize,
                    l.argv.as_ptr() as usize,
                    l.envp.as_ptr() as usize,
                    0,
                ],
            )
        };
        match -r as i32 {
            libc::ENOENT | libc::ENOTDIR => {}
            e => last_error = e,
        }
    }
    let name = spec.argv.first().map_or(&[][..], |p| p.as_bytes());
    if last_error == libc::ENOENT {
        say(&[b"ringfence: ", name, b": command not found\n"]);
        // SAFETY: _exit after a failed exec.
        unsafe { libc::_exit(127) }
    }
    let mut buf = [0u8; 80];
    say(&[
        b"ringfence: ",
        name,
        b": cannot run: ",
        error_text(last_error, &mut buf),
        b"\n",
    ]);
    // SAFETY: _exit after a failed exec.
    unsafe { libc::_exit(126) }
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
    fn error_texts_read_as_the_standard_library_shows_them() {
        for &(errno, _) in super::ERROR_TEXTS {
            let mut buf = [0u8; 80];
            let ours = String::from_utf8_lossy(super::error_text(errno, &mut buf)).into_owned();
            assert_eq!(ours, std::io::Error::from_raw_os_error(errno).to_string());
        }
        let mut buf = [0u8; 80];
        assert_eq!(
            super::error_text(4095, &mut buf),
            b"Unknown error (os error 4095)"
        );
    }

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
