//! PID 1 of the sandbox: forks the command, forwards the signals the supervisor sends it, reaps
//! every orphan, and when the command ends kills whatever it left behind and reports the
//! command's status to the supervisor.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::sandbox::{send_with_fd, Ready, Spec, MSG_EXITED, MSG_SIGNALED};
use crate::sys;

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

pub(crate) fn run(spec: &Spec, channel: OwnedFd, ready: Ready) -> ! {
    let old_mask = block_all();
    // SAFETY: the process is single-threaded; the child only execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        report(&channel, MSG_EXITED, 125);
    }
    if pid == 0 {
        drop(channel);
        command(spec, ready.pty_slave.as_ref(), &old_mask);
    }
    COMMAND_PID.store(pid, Ordering::Relaxed);
    // The reaper itself: not dumpable, so nothing in the sandbox can read its memory or fds.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for &sig in FORWARDED {
        // SAFETY: forward is an async-signal-safe extern "C" handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: restoring the previous signal mask.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };

    let mut status = 0;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r == pid {
            status = st;
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    COMMAND_PID.store(0, Ordering::Relaxed);
    // Everything the command left behind ends with it.
    // SAFETY: kill(-1) from PID 1 signals every other process in this PID namespace.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // SAFETY: waitpid with a null status pointer, reaping until there is nothing left.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    if libc::WIFSIGNALED(status) {
        report(&channel, MSG_SIGNALED, libc::WTERMSIG(status));
    }
    report(&channel, MSG_EXITED, libc::WEXITSTATUS(status));
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
fn command(spec: &Spec, pty_slave: Option<&CString>, mask: &libc::sigset_t) -> ! {
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
