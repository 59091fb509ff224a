//! Creating the sandbox: one clone() into new user, mount, PID, IPC, UTS and cgroup namespaces
//! from a single-threaded supervisor (the network namespace PID 1 makes itself, see `NetNs`).
//! The child maps nothing itself: the supervisor writes its uid/gid maps, then the child builds
//! the filesystem view, hardens itself and becomes the PID-1 reaper that runs the command (see
//! `reaper`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::cgroup::{Cgroups, TasksFile};
use crate::error::{Error, Result};
use crate::guard::{GuardRules, UnixSocketRules};
use crate::limits::{self, Resource};
use crate::plan::MountPlan;
use crate::{caps, mounts, reaper, seccomp, sys};

/// Everything the sandbox needs, prepared before the clone.
#[derive(Debug)]
pub struct Spec {
    /// The program (searched in the sandbox's PATH when it has no slash) and its arguments.
    pub argv: Vec<CString>,
    /// The command's environment, `NAME=value`.
    pub env: Vec<CString>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    pub plan: MountPlan,
    pub seccomp: Vec<libc::sock_filter>,
    pub limits: Vec<(Resource, u64)>,
    pub hostname: String,
    /// Which of stdin, stdout and stderr get the sandbox's own pseudo-terminal; all false: none.
    pub pty: [bool; 3],
    /// Names that may not be created in the writable roots (see `guard`).
    pub guard: Option<GuardRules>,
    /// `network.allowUnixSockets`: connect and send by path are checked by PID 1 (`guard`).
    pub unix_sockets: Option<UnixSocketRules>,
    /// Ports on 127.0.0.1 inside the sandbox's network namespace where the supervisor's egress
    /// proxy listens: the sockets are created in there and handed to the supervisor.
    pub proxy_ports: Vec<u16>,
    /// Host services reached at their own address: loopback addresses and ports listened on
    /// inside the sandbox's network namespace, whose connections the supervisor carries to the
    /// same address on the host. Bound before the command starts, so nothing inside can take
    /// them first.
    pub host_services: Vec<std::net::SocketAddr>,
    /// The supervisor sums the sandbox's memory itself (there is no memory cgroup): PID 1
    /// reports the SysV shared memory of the sandbox's IPC namespace, which only a process
    /// inside it can see (`MSG_SYSV_SHM`).
    pub report_sysv_shm: bool,
    /// Descriptors (each above 2) that become the command's stdin, stdout and stderr in place of
    /// the supervisor's own; `None`: the supervisor's are inherited (or the pty, see `pty`).
    pub stdio: Option<[RawFd; 3]>,
    /// `network.transparent`: a TUN device carries every packet that does not stay on `lo` to
    /// the supervisor (see `tun`), and /etc/resolv.conf names the supervisor's DNS server.
    pub transparent: bool,
}

/// A started sandbox, seen from the supervisor.
pub struct Sandbox {
    /// Host pid of the sandbox's PID 1.
    pub pid: libc::pid_t,
    /// Control channel to PID 1: setup errors, readiness, the command's status.
    pub channel: OwnedFd,
    /// Master side of the sandbox's pseudo-terminal, when one was asked for.
    pub pty_master: Option<OwnedFd>,
    /// Listening sockets inside the sandbox's network namespace, one per `Spec::proxy_ports`.
    pub proxy_listeners: Vec<std::net::TcpListener>,
    /// Listening sockets inside the sandbox, one per `Spec::host_services`.
    pub service_listeners: Vec<std::net::TcpListener>,
    /// The TUN device of transparent capture, when `Spec::transparent`.
    pub tun: Option<OwnedFd>,
    /// A cgroup v1 freezer group the sandbox may be moved into by `ringfence pause`; thawed
    /// before the sandbox is killed (frozen v1 tasks ignore SIGKILL until thawed).
    pub freezer: Option<PathBuf>,
}

pub(crate) const MSG_ERROR: u8 = b'E';
pub(crate) const MSG_READY: u8 = b'R';
/// The supervisor's word that PID 1 may start the command: the sandbox is in the run's cgroups
/// and the run's activity log is open.
const MSG_GO: u8 = b'J';
pub(crate) const MSG_EXITED: u8 = b'X';
pub(crate) const MSG_SIGNALED: u8 = b'S';
/// PID 1's report of the SysV shared memory in the sandbox (8 bytes, native order).
pub(crate) const MSG_SYSV_SHM: u8 = b'M';

/// The namespaces PID 1 is cloned into. Not the network namespace: PID 1 makes that one itself,
/// on a thread, while it builds the mount view (`NetNs`).
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// The sandbox's network namespace, made by a thread of PID 1 while PID 1 builds the mount view.
/// Creating a network namespace is the slowest step of a start (0.8-0.9 ms on a 2-core VM,
/// most of it registering the namespace's sysctl tables), and neither the view nor anything
/// before it needs one; made by the clone, it held up the supervisor and everything after it.
/// PID 1 enters it (`enter`) before it makes anything that belongs to a network namespace:
/// the loopback interface, the TUN device, listening sockets. Nothing of the command's runs
/// before that, and a failure to make or enter it fails the setup.
struct NetNs(std::thread::JoinHandle<io::Result<OwnedFd>>);

impl NetNs {
    /// `proc`: a procfs of the sandbox's PID namespace (`mounts::stage_proc`), through which
    /// the thread names its namespace.
    fn start(proc: &OwnedFd) -> Result<NetNs> {
        let err = |source| Error::Syscall {
            step: "create the sandbox's network namespace",
            source,
        };
        let proc = proc.try_clone().map_err(err)?;
        std::thread::Builder::new()
            .name("ringfence-netns".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // Only this thread moves to the new namespace.
                new_net_ns()?;
                open_in(&proc, c"thread-self/ns/net", libc::O_RDONLY)
            })
            .map(NetNs)
            .map_err(err)
    }

    /// Waits for the namespace and moves PID 1 into it; the thread is gone afterwards.
    fn enter(self) -> Result<()> {
        let ns = self
            .0
            .join()
            .map_err(|_| Error::Setup("the thread creating the network namespace failed".into()))?
            .map_err(|source| Error::Syscall {
                step: "create the sandbox's network namespace (unshare CLONE_NEWNET)",
                source,
            })?;
        // SAFETY: setns with a namespace descriptor that outlives the call.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(Error::Syscall {
                step: "enter the sandbox's network namespace (setns)",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// The uid and gid the command has inside: the caller's own, except that root outside is mapped
/// to `nobody` inside.
pub fn inside_ids() -> (u32, u32) {
    if sys::getuid() == 0 {
        (65534, 65534)
    } else {
        (sys::getuid(), sys::getgid())
    }
}

/// The number of threads of this process: field 20 of `/proc/self/stat`, which the kernel
/// writes out in far less time than `/proc/self/status` (no memory accounting walk).
pub fn threads() -> Option<u64> {
    let stat = sys::read_kernel_text("/proc/self/stat").ok()?;
    stat_threads(&stat)
}

/// `num_threads` of a `/proc/<pid>/stat` line. The command name in parentheses may hold
/// spaces and parentheses itself, so the fields are counted from its last `)`: state is
/// field 3, num_threads field 20.
fn stat_threads(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(17)?.parse().ok()
}

/// Starts the sandbox. Must be called while the process has a single thread.
pub fn spawn(
    spec: &Spec,
    winsize: Option<libc::winsize>,
    cgroups: Option<&Cgroups>,
) -> Result<Sandbox> {
    start(spec, winsize, cgroups)?.finish()
}

/// A sandbox that builds its filesystem view while the supervisor finishes its own part of
/// the start (opening the activity log, say). PID 1 starts no command before `finish` gives
/// the word; dropped unfinished, the sandbox is killed.
#[must_use = "the sandbox starts its command only once `finish` is called"]
pub struct Starting {
    sandbox: Option<Sandbox>,
    /// Listening sockets PID 1 hands over: the proxy's first, then the host services'.
    proxy_ports: usize,
    listeners: usize,
    transparent: bool,
}

impl Starting {
    /// Lets PID 1 start the command once its setup is complete, and waits for that.
    pub fn finish(mut self) -> Result<Sandbox> {
        let Some(sandbox) = self.sandbox.take() else {
            return Err(Error::Setup("the sandbox was already started".into()));
        };
        // PID 1 may have failed its setup and gone meanwhile: EPIPE then, not a SIGPIPE.
        let ready = sys::send_message(&sandbox.channel, &[MSG_GO])
            .map_err(|source| Error::Syscall {
                step: "tell the sandbox to start the command",
                source,
            })
            // A sandbox whose setup failed meanwhile has closed its end: its error says why.
            .map_err(|e| setup_error_sent(&sandbox.channel).unwrap_or(e))
            .and_then(|()| recv_ready(&sandbox.channel, self.listeners, self.transparent));
        crate::timing::mark("sandbox ready");
        match ready {
            Ok((pty_master, mut proxy_listeners, tun)) => {
                let service_listeners = proxy_listeners.split_off(self.proxy_ports);
                Ok(Sandbox {
                    pty_master,
                    proxy_listeners,
                    service_listeners,
                    tun,
                    ..sandbox
                })
            }
            Err(e) => {
                kill(sandbox);
                Err(e)
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            kill(sb);
        }
    }
}

/// Clones the sandbox and lets it build its view (`Starting::finish` lets it go on to the
/// command). Must be called while the process has a single thread; the threads of a previous
/// run in this process that are ending are given up to a second.
pub fn start(
    spec: &Spec,
    winsize: Option<libc::winsize>,
    cgroups: Option<&Cgroups>,
) -> Result<Starting> {
    let single = (0..100).any(|i| {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        threads() == Some(1)
    });
    if !single {
        return Err(Error::Setup(
            "the sandbox must be created from a single-threaded process".into(),
        ));
    }
    let root_caller = sys::getuid() == 0;
    let (ours, theirs) = sys::seqpacket_pair().map_err(|source| Error::Syscall {
        step: "socketpair",
        source,
    })?;
    // v1 groups: PID 1 moves itself in, first thing (see `Cgroups::tasks_files`).
    let tasks = match cgroups {
        Some(c) => c.tasks_files()?,
        None => None,
    };
    // The command's own filter (see `reaper`), built here: in the command, after two forks,
    // every page it writes would be a copy first.
    let guard_filter = seccomp::build_guard(
        spec.guard.is_some(),
        spec.guard.as_ref().is_some_and(|g| !g.files.is_empty()),
        spec.unix_sockets.is_some(),
        spec.guard.as_ref().is_some_and(|g| g.ask.is_some()),
        spec.guard.as_ref().is_some_and(|g| g.ask_read.is_some()),
    );
    // SAFETY: the process is single-threaded (checked above), so the child may run arbitrary
    // code until it execs or exits; a null stack makes clone behave like fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (NAMESPACES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let source = io::Error::last_os_error();
        return Err(Error::Setup(format!(
            "creating the sandbox's namespaces (user, mount, pid, ipc, uts, cgroup): {source}"
        )));
    }
    if pid == 0 {
        drop(ours);
        crate::timing::forget_before("clone (sandbox side)");
        let join = match &tasks {
            Some(t) => Join::Itself(t),
            None => Join::Nothing,
        };
        child(spec, theirs, root_caller, join, &guard_filter);
    }
    crate::timing::mark("clone");
    let tasks_moved = tasks.is_some();
    drop(tasks);
    let pid = pid as libc::pid_t;
    drop(theirs);
    let sandbox = Sandbox {
        pid,
        channel: ours,
        pty_master: None,
        proxy_listeners: Vec::new(),
        service_listeners: Vec::new(),
        tun: None,
        freezer: None,
    };
    let started = write_id_maps(pid)
        .and_then(|()| {
            let mut go = [0u8; 8];
            if let Some(ws) = winsize {
                go[0..2].copy_from_slice(&ws.ws_row.to_ne_bytes());
                go[2..4].copy_from_slice(&ws.ws_col.to_ne_bytes());
                go[4..6].copy_from_slice(&ws.ws_xpixel.to_ne_bytes());
                go[6..8].copy_from_slice(&ws.ws_ypixel.to_ne_bytes());
            }
            sys::send_message(&sandbox.channel, &go).map_err(|source| Error::Syscall {
                step: "start sandbox",
                source,
            })
        })
        // PID 1 may have failed already (it moves itself into v1 groups first): its own error
        // says why.
        .map_err(|e| setup_error_sent(&sandbox.channel).unwrap_or(e));
    crate::timing::mark("id maps written, setup started");
    // The sandbox builds its filesystem view meanwhile: moving it into the run's groups (a
    // cgroup v1 move waits for an RCU grace period) overlaps with that. PID 1 waits for the
    // word of `Starting::finish` before it starts the command, so the limits bind the command
    // from its first instruction; nothing in the sandbox forks before that.
    let result = started.and_then(|()| match cgroups {
        Some(_) if tasks_moved => Ok(()),
        Some(c) => c
            .add(pid)
            .inspect(|()| crate::timing::mark("cgroups joined"))
            // A sandbox whose setup failed meanwhile cannot be moved: its own error says why.
            .map_err(|e| setup_error_sent(&sandbox.channel).unwrap_or(e)),
        None => Ok(()),
    });
    let starting = Starting {
        sandbox: Some(sandbox),
        proxy_ports: spec.proxy_ports.len(),
        listeners: spec.proxy_ports.len() + spec.host_services.len(),
        transparent: spec.transparent,
    };
    // An error: dropping `starting` kills and reaps the sandbox.
    result.map(|()| starting)
}

/// Ends a started sandbox that will not be waited for (the supervisor failed after `spawn`).
pub fn kill(sandbox: Sandbox) {
    kill_pid1(sandbox.pid, sandbox.freezer.as_deref());
    reap(sandbox.pid);
}

/// SIGKILL to PID 1, which takes every process of the sandbox with it; a v1 freezer group is
/// thawed (frozen v1 tasks do not die until thawed).
pub(crate) fn kill_pid1(pid: libc::pid_t, freezer: Option<&std::path::Path>) {
    let _ = sys::kill(pid, libc::SIGKILL);
    if let Some(f) = freezer {
        let _ = std::fs::write(f.join("freezer.state"), "THAWED");
    }
}

/// Waits for our child `pid` to be gone (retried on EINTR).
pub(crate) fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
}

fn write_id_maps(pid: libc::pid_t) -> Result<()> {
    let (in_uid, in_gid) = inside_ids();
    let (uid, gid) = (sys::getuid(), sys::getgid());
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, text: String| {
        let p = proc.join(name);
        sys::write_file(&p, text.as_bytes()).map_err(|source| Error::Path {
            step: "write",
            path: p,
            source,
        })
    };
    if uid != 0 {
        write("setgroups", "deny".into())?;
    }
    write("gid_map", format!("{in_gid} {gid} 1\n"))?;
    write("uid_map", format!("{in_uid} {uid} 1\n"))
}

/// What PID 1 hands over when setup is complete: the pty master, the proxy listeners and the
/// TUN device.
type Handover = (Option<OwnedFd>, Vec<std::net::TcpListener>, Option<OwnedFd>);

/// Waits for PID 1 to report that setup is complete; returns the pty master when one was
/// asked for, the `listeners` proxy listening sockets and the TUN device when `tun`.
fn recv_ready(channel: &OwnedFd, listeners: usize, tun: bool) -> Result<Handover> {
    let mut buf = [0u8; 4096];
    let (n, fds) = recv_fds(channel.as_raw_fd(), &mut buf).map_err(|source| Error::Syscall {
        step: "wait for sandbox setup",
        source,
    })?;
    match buf.first() {
        Some(&MSG_READY) if n >= 2 => {
            let with_master = buf[1] == 1;
            let expected = usize::from(with_master) + listeners + usize::from(tun);
            if fds.len() != expected {
                return Err(Error::Setup(format!(
                    "the sandbox handed over {} descriptors, expected {expected}",
                    fds.len(),
                )));
            }
            let mut fds = fds;
            let tun_fd = if tun { fds.pop() } else { None };
            let mut fds = fds.into_iter();
            let master = if with_master { fds.next() } else { None };
            Ok((
                master,
                fds.map(std::net::TcpListener::from).collect(),
                tun_fd,
            ))
        }
        Some(&MSG_ERROR) if n >= 1 => Err(Error::decode(&buf[1..n])),
        _ => Err(Error::Setup(
            "the sandbox ended during setup without saying why".into(),
        )),
    }
}

/// The error PID 1 reported, if it reported one and ended (nothing is waited for).
fn setup_error_sent(channel: &OwnedFd) -> Option<Error> {
    let mut first = 0u8;
    // SAFETY: a one-byte buffer; MSG_PEEK leaves the message for recv_ready.
    let n = unsafe {
        libc::recv(
            channel.as_raw_fd(),
            (&mut first as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n != 1 || first != MSG_ERROR {
        return None;
    }
    match recv_ready(channel, 0, false) {
        Err(e @ (Error::Setup(_) | Error::InSandbox { .. })) => Some(e),
        _ => None,
    }
}

/// Receives one message and at most one descriptor passed with it.
pub(crate) fn recv_with_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let (n, fds) = recv_fds(fd, buf)?;
    Ok((n, fds.into_iter().next()))
}

pub(crate) fn send_with_fd(fd: RawFd, buf: &[u8], pass: Option<RawFd>) -> io::Result<()> {
    let fds: Vec<RawFd> = pass.into_iter().collect();
    send_fds(fd, buf, &fds)
}

/// Most descriptors one message carries: the pty master, the proxy's two listeners and the
/// host services' listeners.
pub const MAX_FDS: usize = 64;

/// All descriptors one message carries: [`MAX_FDS`] and the TUN device of transparent capture.
const MAX_PASSED: usize = MAX_FDS + 1;

/// Room for one cmsg header (16 bytes) and MAX_PASSED descriptors, in 8-byte words.
const CMSG_WORDS: usize = 2 + MAX_PASSED.div_ceil(2);

/// Receives one message and the descriptors passed with it (at most `MAX_PASSED`).
pub(crate) fn recv_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use std::os::fd::FromRawFd;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cmsg = [0u64; CMSG_WORDS];
    // SAFETY: msghdr is plain old data; zeroed is valid before the fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    let n = loop {
        // SAFETY: msg points to valid buffers that outlive the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut received = Vec::new();
    // SAFETY: msg was filled by recvmsg; the CMSG macros walk within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const libc::c_int;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    received.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, received))
}

/// Sends one message with the given descriptors (at most `MAX_PASSED`).
pub(crate) fn send_fds(fd: RawFd, buf: &[u8], pass: &[RawFd]) -> io::Result<()> {
    if pass.len() > MAX_PASSED {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cmsg = [0u64; CMSG_WORDS];
    // SAFETY: msghdr is plain old data; zeroed is valid before the fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !pass.is_empty() {
        let bytes = std::mem::size_of_val(pass) as u32;
        msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        // SAFETY: the control buffer (CMSG_WORDS words) holds one cmsg header and MAX_PASSED
        // ints.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            let data = libc::CMSG_DATA(c) as *mut libc::c_int;
            for (i, &f) in pass.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), f);
            }
        }
    }
    // SAFETY: msg points to valid buffers that outlive the call.
    if unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The sandbox side: runs as PID 1 of the new namespaces and never returns.
/// How the sandbox gets into the run's cgroups.
enum Join<'a> {
    /// No cgroups, or the supervisor moves PID 1 while it sets up (before `MSG_GO`).
    Nothing,
    /// PID 1 moves itself, through these `tasks` files, before anything else.
    Itself(&'a [TasksFile]),
}

/// PID 1 moves itself into the run's v1 groups; on failure it reports and ends (exit 125).
fn join_itself(files: &[TasksFile], fd: RawFd) {
    for f in files {
        // SAFETY: writing two bytes from a valid buffer to a descriptor we hold.
        let n = unsafe { libc::write(f.fd.as_raw_fd(), b"0\n".as_ptr().cast(), 2) };
        if n != 2 {
            let mut msg = vec![MSG_ERROR];
            msg.extend_from_slice(
                format!(
                    "moving the sandbox into its cgroup ({}): {}",
                    f.path.display(),
                    io::Error::last_os_error()
                )
                .as_bytes(),
            );
            let _ = send_with_fd(fd, &msg, None);
            // SAFETY: _exit ends the child at once.
            unsafe { libc::_exit(125) }
        }
    }
}

fn child(
    spec: &Spec,
    channel: OwnedFd,
    root_caller: bool,
    join: Join<'_>,
    guard_filter: &[libc::sock_filter],
) -> ! {
    // The supervisor holds some signals while it starts the sandbox; nothing here inherits that.
    // SAFETY: an empty set, replacing this process's signal mask.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    let fd = channel.as_raw_fd();
    if let Some(stdio) = spec.stdio {
        for (target, from) in stdio.into_iter().enumerate() {
            if sys::dup2(from, target as RawFd).is_err() {
                let mut msg = vec![MSG_ERROR, b'M'];
                msg.extend_from_slice(
                    format!(
                        "giving the command its standard streams (dup2): {}",
                        io::Error::last_os_error()
                    )
                    .as_bytes(),
                );
                let _ = send_with_fd(fd, &msg, None);
                // SAFETY: _exit ends the child at once.
                unsafe { libc::_exit(125) }
            }
        }
    }
    if let Join::Itself(files) = join {
        join_itself(files, fd);
        crate::timing::mark("moved itself into its cgroups");
    }
    // Nothing the supervisor holds (the activity log, the run record, a --control-fd, its own
    // pipes) stays open in PID 1: only the standard streams and the channel.
    // SAFETY: close_range with integer arguments; the ranges exclude 0-2 and the channel.
    let closed = unsafe {
        (fd <= 3 || libc::syscall(libc::SYS_close_range, 3u32, (fd - 1) as u32, 0u32) == 0)
            && libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32) == 0
    };
    if !closed {
        let mut msg = vec![MSG_ERROR, b'M'];
        msg.extend_from_slice(
            format!(
                "closing the supervisor's descriptors in the sandbox (close_range, Linux 5.9): {}",
                io::Error::last_os_error()
            )
            .as_bytes(),
        );
        let _ = send_with_fd(fd, &msg, None);
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(125) }
    }
    match setup(spec, fd, root_caller) {
        Ok(setup) => reaper::run(spec, channel, setup, guard_filter),
        Err(e) => {
            let mut msg = vec![MSG_ERROR];
            msg.extend_from_slice(&e.encode());
            let _ = send_with_fd(fd, &msg, None);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(125) }
        }
    }
}

/// Opens the sandbox's `ns_last_pid` through `proc` and writes `value`: `None` where the kernel
/// has no such file (no checkpoint/restore support).
fn set_last_pid(proc: &OwnedFd, value: &[u8]) -> Result<Option<OwnedFd>> {
    let Ok(last) = open_in(proc, c"sys/kernel/ns_last_pid", libc::O_WRONLY) else {
        return Ok(None);
    };
    write_last_pid(&last, value)?;
    Ok(Some(last))
}

/// Moves the calling thread to a new network namespace.
fn new_net_ns() -> io::Result<()> {
    // SAFETY: unshare with a flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `path` beneath the directory `dir` (close-on-exec).
fn open_in(dir: &OwnedFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: openat with a valid directory fd and a NUL-terminated relative path; the result
    // is checked before it is owned.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// At offset 0: a sysctl ignores a write past the start of its file.
fn write_last_pid(last: &OwnedFd, value: &[u8]) -> Result<()> {
    // SAFETY: pwrite from a live buffer of its length.
    if unsafe { libc::pwrite(last.as_raw_fd(), value.as_ptr().cast(), value.len(), 0) }
        != value.len() as isize
    {
        return Err(Error::Syscall {
            step: "write the sandbox's /proc/sys/kernel/ns_last_pid",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

pub(crate) struct Ready {
    pub pty_slave: Option<CString>,
    /// PID 1's writable handles on the directories of writable single files.
    pub file_dirs: Vec<crate::guard::WritableDir>,
}

fn setup(spec: &Spec, channel: RawFd, root_caller: bool) -> Result<Ready> {
    // If the supervisor dies from here on, so does the sandbox (and with PID 1, all of it).
    sys::set_pdeathsig(libc::SIGKILL).map_err(|source| Error::Syscall {
        step: "PR_SET_PDEATHSIG",
        source,
    })?;
    let mut go = [0u8; 8];
    let n = sys::read_some(channel, &mut go).map_err(|source| Error::Syscall {
        step: "wait for id maps",
        source,
    })?;
    if n != go.len() {
        // The supervisor is gone before the maps were written.
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(125) }
    }
    if sys::getuid() == 0 {
        return Err(Error::Setup(
            "the sandbox's user would be root inside its namespace; refusing".into(),
        ));
    }
    if root_caller {
        // Root's supplementary groups must not follow it in (only root may drop them).
        // SAFETY: setgroups with an empty list.
        if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
            return Err(Error::Syscall {
                step: "setgroups",
                source: io::Error::last_os_error(),
            });
        }
    }
    sys::sethostname(&spec.hostname).map_err(|source| Error::Syscall {
        step: "sethostname",
        source,
    })?;
    crate::timing::mark("id maps received");
    // The TUN device is opened through the host's /dev, which the sandbox's root replaces, and
    // made in the namespace it serves: with one, PID 1 makes its network namespace itself, now.
    let tun = if spec.transparent {
        new_net_ns().map_err(|source| Error::Syscall {
            step: "create the sandbox's network namespace (unshare CLONE_NEWNET)",
            source,
        })?;
        Some(crate::tun::create()?)
    } else {
        None
    };
    mounts::stage()?;
    // Otherwise a thread makes it while PID 1 builds the view. Pids are handed out in turn:
    // the thread is given one past 9 (`ns_last_pid`, where the kernel has it), and before the
    // command starts the count is set back, so that the command is PID 2, as it always was.
    let (netns, last_pid) = if spec.transparent {
        (None, None)
    } else {
        let proc = mounts::stage_proc()?;
        let last_pid = set_last_pid(&proc, b"9")?;
        (Some(NetNs::start(&proc)?), last_pid)
    };
    let file_dirs = mounts::apply(&spec.plan)?;
    if spec.transparent {
        mounts::resolv_conf(&crate::tun::resolv_conf())?;
    }
    crate::timing::mark("mounts");
    mounts::enter()?;
    if let Some(n) = netns {
        n.enter()?;
    }
    crate::timing::mark("network namespace entered");
    mounts::loopback_up()?;
    if spec.transparent {
        crate::tun::configure()?;
    }
    crate::timing::mark("pivot_root, loopback up");
    // The proxy's listeners: bound in here, so they are reachable only from inside; the
    // supervisor accepts on them from the host side.
    let mut listeners = Vec::with_capacity(spec.proxy_ports.len());
    for &port in &spec.proxy_ports {
        let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).map_err(
            |source| Error::Syscall {
                step: "listen for the egress proxy on 127.0.0.1 in the sandbox",
                source,
            },
        )?;
        listeners.push(l);
    }
    // Host services, at the loopback address and port they have on the host.
    for &addr in &spec.host_services {
        let l = std::net::TcpListener::bind(addr).map_err(|source| {
            Error::Setup(format!(
                "listening on {addr} in the sandbox for the allowed host service at that address: {source}"
            ))
        })?;
        listeners.push(l);
    }
    std::env::set_current_dir(&spec.cwd).map_err(|source| Error::Path {
        step: "enter working directory",
        path: spec.cwd.clone(),
        source,
    })?;
    let mut pty_slave = None;
    let mut master = None;
    if spec.pty.iter().any(|&b| b) {
        let (m, s) = mounts::open_pty()?;
        let ws = libc::winsize {
            ws_row: u16::from_ne_bytes([go[0], go[1]]),
            ws_col: u16::from_ne_bytes([go[2], go[3]]),
            ws_xpixel: u16::from_ne_bytes([go[4], go[5]]),
            ws_ypixel: u16::from_ne_bytes([go[6], go[7]]),
        };
        if ws.ws_row != 0 || ws.ws_col != 0 {
            // SAFETY: TIOCSWINSZ reads a winsize struct.
            unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
        pty_slave = Some(s);
        master = Some(m);
    }
    for (resource, value) in &spec.limits {
        limits::set(*resource, *value)?;
    }
    crate::timing::mark("listeners, cwd, pty, rlimits");
    wait_for_go(channel)?;
    crate::timing::mark("waited for the word to start");
    if let Some(last) = last_pid {
        write_last_pid(&last, b"1")?;
    }
    // PID 1 answers the guard filter (exec reports, creation guard): it keeps CAP_SYS_PTRACE
    // (in the sandbox's user namespace only) to read the memory of callers that made themselves
    // non-dumpable, as ssh-agent and gpg-agent do. The command drops it before exec.
    caps::drop_all_but(Some(caps::CAP_SYS_PTRACE))?;
    sys::set_pdeathsig(libc::SIGKILL).map_err(|source| Error::Syscall {
        step: "PR_SET_PDEATHSIG",
        source,
    })?;
    seccomp::install(&spec.seccomp)?;
    let mut pass: Vec<RawFd> = master.iter().map(|m| m.as_raw_fd()).collect();
    pass.extend(listeners.iter().map(|l| l.as_raw_fd()));
    pass.extend(tun.iter().map(|t| t.as_raw_fd()));
    let msg = [MSG_READY, u8::from(master.is_some())];
    send_fds(channel, &msg, &pass).map_err(|source| Error::Syscall {
        step: "report ready",
        source,
    })?;
    drop(master);
    drop(listeners);
    drop(tun);
    crate::timing::mark("caps, seccomp, ready sent");
    crate::timing::report("sandbox");
    Ok(Ready {
        pty_slave,
        file_dirs,
    })
}

/// PID 1 waits for the supervisor's word that the command may start (the sandbox is in the
/// run's cgroups, the activity log is open). Anything else (the supervisor failed and is
/// killing the sandbox, or is gone) ends setup.
fn wait_for_go(channel: RawFd) -> Result<()> {
    let mut b = [0u8; 1];
    match sys::read_some(channel, &mut b) {
        Ok(1) if b[0] == MSG_GO => Ok(()),
        Ok(_) => Err(Error::Setup(
            "the supervisor did not give the word to start the command".into(),
        )),
        Err(source) => Err(Error::Syscall {
            step: "wait for the word to start the command",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn thread_count_is_field_twenty_of_stat() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 7 0 12345 \
                    1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(stat_threads(line), Some(7));
        assert_eq!(stat_threads("4242 (x) S 1"), None);
        assert_eq!(stat_threads("no parenthesis"), None);
    }

    #[test]
    fn this_test_thread_is_counted() {
        let here = threads().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let from_status: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The test harness may start or end threads between the two reads.
        assert!(here >= 1 && from_status >= 1);
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)));
        let with_one_more = threads().unwrap();
        t.join().unwrap();
        assert!(with_one_more >= 2, "{with_one_more}");
    }
}
