//! The supervisor's side of a running sandbox: relays the terminal, forwards signals, enforces the
//! wall-clock and memory limits and collects the command's status from PID 1.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::guard::{
    split_batch, Denial, Exec, FsQuestion, GuardReport, MSG_ASK_FS, MSG_BATCH, MSG_DROPPED,
    MSG_EXEC, MSG_REFUSED,
};
use crate::memwatch::{self, MemoryWatch};
use crate::sandbox::{recv_with_fd, Sandbox, MSG_EXITED, MSG_SIGNALED, MSG_SYSV_SHM};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this status.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
    /// The wall-clock limit was reached and the sandbox was killed.
    TimedOut,
    /// The memory limit was reached (the sandbox used this many bytes) and the sandbox was
    /// killed.
    MemoryLimit(u64),
    /// PID 1 ended without reporting (killed from outside).
    Lost,
}

impl Outcome {
    /// The exit status a shell would show: the command's own, 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => 128 + s,
            Outcome::TimedOut | Outcome::MemoryLimit(_) => 128 + libc::SIGKILL,
            Outcome::Lost => 125,
        }
    }
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write is async-signal-safe; the buffer is one valid byte.
        unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
    }
}

const SUPERVISOR_SIGNALS: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios is plain data filled by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is a terminal; saved is a valid termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } < 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: raw is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: fd is a terminal; raw is a valid termios.
        unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) };
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes saved from this terminal.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

fn signal_set(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Holds the signals the supervisor forwards until `wait` is ready to forward them: one that
/// arrives while the sandbox starts stays pending instead of killing the supervisor.
pub fn hold_signals() {
    let set = signal_set(SUPERVISOR_SIGNALS);
    // SAFETY: blocking signals of this thread with a valid set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// The host terminal's window size, from the first of stdin, stdout, stderr that is a terminal.
pub fn host_winsize() -> Option<libc::winsize> {
    for fd in 0..3 {
        // SAFETY: winsize is plain data filled by TIOCGWINSZ.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 {
            return Some(ws);
        }
    }
    None
}

pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty with an integer fd.
    unsafe { libc::isatty(fd) == 1 }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// A question for the person at the host terminal (never the sandbox's), asked by `wait`
/// while it relays the terminal: the keys typed while a prompt is shown answer it and do not
/// reach the sandbox.
pub struct Prompt {
    /// The question, one line; control characters are escaped before it is shown.
    pub text: String,
    /// The keys that answer it (lowercase ASCII), shown as the choices.
    pub keys: &'static [(u8, &'static str)],
    /// The key that Ctrl-C or Escape stands for.
    pub cancel: u8,
    /// After this, the prompt is withdrawn and answered with `None`.
    pub deadline: Instant,
    /// Receives the key, or `None` when there was no answer in time.
    pub answer: Box<dyn FnOnce(Option<u8>) + Send>,
}

/// Prompts waiting for the terminal, posted from any thread.
pub struct Prompts {
    queue: Mutex<VecDeque<Prompt>>,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
}

impl Prompts {
    pub fn new() -> io::Result<Prompts> {
        let (wake_read, wake_write) = sys::pipe()?;
        set_nonblocking(wake_read.as_raw_fd());
        set_nonblocking(wake_write.as_raw_fd());
        Ok(Prompts {
            queue: Mutex::new(VecDeque::new()),
            wake_read,
            wake_write,
        })
    }

    /// Queues a prompt; `wait` shows it when the ones before it are answered.
    pub fn ask(&self, p: Prompt) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(p);
        }
        // A full pipe already holds a wake-up.
        let _ = sys::write_all(&self.wake_write, b"!");
    }

    fn next(&self) -> Option<Prompt> {
        self.queue.lock().ok()?.pop_front()
    }

    /// Answers `None` to the queued prompts whose deadline has passed; returns the earliest
    /// deadline of the others.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut q = self.queue.lock().ok()?;
        let (gone, kept): (VecDeque<Prompt>, VecDeque<Prompt>) =
            q.drain(..).partition(|p| p.deadline <= now);
        *q = kept;
        let earliest = q.iter().map(|p| p.deadline).min();
        drop(q);
        for p in gone {
            (p.answer)(None);
        }
        earliest
    }
}

fn show_prompt(p: &Prompt) {
    // Keys typed before the question was shown were meant for the sandbox: they must not
    // answer it.
    // SAFETY: tcflush on fd 0 (the host terminal this loop relays) discards unread input.
    unsafe { libc::tcflush(0, libc::TCIFLUSH) };
    let choices: Vec<String> = p
        .keys
        .iter()
        .map(|(k, label)| format!("[{}] {}", *k as char, label))
        .collect();
    let text = format!(
        "\r\nringfence: {} {} (key, then Enter): ",
        p.text.escape_debug(),
        choices.join(" / ")
    );
    let _ = sys::write_all(&std::io::stderr(), text.as_bytes());
}

/// Runs until the command ends; returns its outcome. The sandbox is gone when this returns.
/// What the sandbox's PID 1 reports while the command runs.
pub enum Report<'a> {
    Denied(&'a Denial),
    Exec(&'a Exec),
    /// This many reports were dropped because the supervisor fell behind.
    Dropped(u64),
    /// `filesystem.ask`: PID 1 waits for the answer (`guard::answer_fs` on a duplicate of the
    /// channel); the callback must not block the loop.
    AskFs(&'a FsQuestion),
}

/// `on_report` sees every refusal of the creation guard and every exec as they arrive.
/// `prompts` are asked on the host terminal; pass them only when stdin is the terminal that
/// `wait` relays (the sandbox has a pty). `memory` is looked at as often as it asks (every
/// `memwatch::INTERVAL_MS` near the limit) and once more at the end (a process the kernel
/// killed for memory may have ended the command before the next look).
pub fn wait(
    sandbox: Sandbox,
    wall: Option<Duration>,
    memory: Option<&MemoryWatch>,
    on_report: &mut dyn FnMut(Report<'_>),
    prompts: Option<&Prompts>,
) -> (Outcome, GuardReport) {
    wait_with(sandbox, wall, memory, on_report, prompts, Signals::Process)
}

/// Which signals `wait_with` passes on to the sandbox.
pub enum Signals {
    /// The supervisor process's own (SIGINT, SIGTERM, SIGHUP, ...): `wait_with` installs their
    /// handlers. For a program whose supervisor is the whole process (`ringfence run`).
    Process,
    /// Signal numbers written, one byte each, to the other end of this pipe; the process's
    /// signal handlers are left alone. For a program that embeds the runtime.
    Pipe(OwnedFd),
}

/// `wait`, with the signals to pass on chosen by the caller.
pub fn wait_with(
    sandbox: Sandbox,
    wall: Option<Duration>,
    memory: Option<&MemoryWatch>,
    on_report: &mut dyn FnMut(Report<'_>),
    prompts: Option<&Prompts>,
    signals: Signals,
) -> (Outcome, GuardReport) {
    let (outcome, report, pid1) = wait_unreaped(sandbox, wall, memory, on_report, prompts, signals);
    pid1.reap();
    (outcome, report)
}

/// PID 1 once the command's outcome is known: killed (it exits by itself after reporting),
/// not yet reaped. The kernel takes the sandbox's namespaces down as PID 1 exits, which takes
/// a while; a caller can finish its own bookkeeping meanwhile and reap after. Reaped when
/// dropped if `reap` was not called, so that no sandbox outlives its supervisor's teardown.
#[must_use = "PID 1 is reaped by `reap` (or when this is dropped)"]
pub struct Unreaped {
    pid: libc::pid_t,
    freezer: Option<std::path::PathBuf>,
    reaped: bool,
}

impl Unreaped {
    /// Waits until PID 1, and with it every process of the sandbox, is gone.
    pub fn reap(mut self) {
        self.wait();
    }

    fn wait(&mut self) {
        if std::mem::replace(&mut self.reaped, true) {
            return;
        }
        crate::sandbox::reap(self.pid);
        crate::timing::mark("PID 1 reaped");
    }
}

impl Drop for Unreaped {
    fn drop(&mut self) {
        if !self.reaped {
            // Dropped on a path that did not kill it first (a panic while waiting, say): a
            // sandbox is never waited for while it runs on. Harmless when it was killed.
            crate::sandbox::kill_pid1(self.pid, self.freezer.as_deref());
        }
        self.wait();
    }
}

/// `wait_with`, returning as soon as the outcome is known: PID 1 has been killed and is
/// reaped through the returned `Unreaped`.
pub fn wait_unreaped(
    sandbox: Sandbox,
    wall: Option<Duration>,
    memory: Option<&MemoryWatch>,
    on_report: &mut dyn FnMut(Report<'_>),
    prompts: Option<&Prompts>,
    signals: Signals,
) -> (Outcome, GuardReport, Unreaped) {
    let mut pid1 = Unreaped {
        pid: sandbox.pid,
        freezer: sandbox.freezer.clone(),
        reaped: false,
    };
    let (outcome, report) = wait_inner(
        sandbox, wall, memory, on_report, prompts, signals, &mut pid1,
    );
    // The command and everything it started are gone (PID 1 reports after killing the rest),
    // so the memory cgroup's count is final.
    let outcome = match (outcome, memory) {
        (Outcome::Exited(_) | Outcome::Signaled(_), Some(w @ MemoryWatch::Cgroup(_))) => {
            w.reached(0).map_or(outcome, Outcome::MemoryLimit)
        }
        _ => outcome,
    };
    (outcome, report, pid1)
}

fn wait_inner(
    sandbox: Sandbox,
    wall: Option<Duration>,
    memory: Option<&MemoryWatch>,
    on_report: &mut dyn FnMut(Report<'_>),
    prompts: Option<&Prompts>,
    signals: Signals,
    pid1: &mut Unreaped,
) -> (Outcome, GuardReport) {
    let process_signals = matches!(signals, Signals::Process);
    let (sig_read, _sig_write) = match signals {
        Signals::Pipe(fd) => (fd, None),
        Signals::Process => match sys::pipe() {
            Ok((r, w)) => (r, Some(w)),
            Err(_) => return (kill_pid1(&sandbox, Outcome::Lost), GuardReport::default()),
        },
    };
    if let (true, Some(w)) = (process_signals, &_sig_write) {
        SIGNAL_PIPE.store(w.as_raw_fd(), Ordering::Relaxed);
        for &sig in SUPERVISOR_SIGNALS {
            // SAFETY: on_signal is an async-signal-safe extern "C" handler.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        // Handlers are in place: signals held while the sandbox started are delivered now.
        let set = signal_set(SUPERVISOR_SIGNALS);
        // SAFETY: unblocking signals of this thread with a valid set.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
    let mut report = GuardReport::default();
    let mut signals_open = true;
    let master: Option<&OwnedFd> = sandbox.pty_master.as_ref();
    let _raw = match master {
        Some(_) if is_tty(0) => RawMode::enter(0),
        _ => None,
    };
    if let Some(m) = master {
        set_nonblocking(m.as_raw_fd());
    }
    let deadline = wall.map(|w| Instant::now() + w);
    let mut next_look = Instant::now() + Duration::from_millis(memwatch::INTERVAL_MS);
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    let mut asking: Option<Prompt> = None;
    let mut shown_at = Instant::now();
    let mut answer_typed: Vec<u8> = Vec::new();
    let outcome = loop {
        let now = Instant::now();
        if let Some(w) = memory {
            if now >= next_look {
                let (reached, after) = w.look(sandbox.pid);
                if let Some(used) = reached {
                    break kill_pid1(&sandbox, Outcome::MemoryLimit(used));
                }
                next_look = Instant::now() + after;
            }
        }
        let mut prompt_deadline = prompts.and_then(|p| p.expire(now));
        if asking.as_ref().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = asking.take() {
                let _ = sys::write_all(&std::io::stderr(), b"no answer in time\r\n");
                (p.answer)(None);
            }
        }
        if asking.is_none() {
            if let Some(p) = prompts.and_then(Prompts::next) {
                show_prompt(&p);
                shown_at = Instant::now();
                answer_typed.clear();
                asking = Some(p);
            }
        }
        if let Some(p) = &asking {
            prompt_deadline = Some(prompt_deadline.map_or(p.deadline, |d| d.min(p.deadline)));
        }
        let mut fds = vec![
            libc::pollfd {
                fd: sandbox.channel.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // Negative: no longer polled (the embedding program closed its end).
                fd: if signals_open {
                    sig_read.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Some(p) = prompts {
            fds.push(libc::pollfd {
                fd: p.wake_read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let io_at = fds.len();
        // While a question is shown the sandbox's output is held back (it waits in the pty),
        // so that the sandbox cannot draw over the question or fake another one.
        if let (Some(m), true, true) = (master, master_open, asking.is_none()) {
            fds.push(libc::pollfd {
                fd: m.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if stdin_open {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break kill_pid1(&sandbox, Outcome::TimedOut);
                }
                left.as_millis().min(i32::MAX as u128) as i32
            }
            None => -1,
        };
        let timeout = match prompt_deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).as_millis() as i32 + 1;
                if timeout < 0 {
                    left
                } else {
                    timeout.min(left)
                }
            }
            None => timeout,
        };
        let timeout = match memory {
            Some(_) => {
                let left = next_look
                    .saturating_duration_since(Instant::now())
                    .as_millis() as i32;
                if timeout < 0 {
                    left
                } else {
                    timeout.min(left)
                }
            }
            None => timeout,
        };
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break kill_pid1(&sandbox, Outcome::Lost);
        }
        for pfd in &fds[io_at..] {
            if pfd.revents == 0 {
                continue;
            }
            if Some(pfd.fd) == master.map(|m| m.as_raw_fd()) {
                match sys::read_some(pfd.fd, &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(k) => {
                        let _ = sys::write_all(&std::io::stdout(), &buf[..k]);
                    }
                }
            } else if pfd.fd == 0 {
                match sys::read_some(0, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(k) => {
                        let mut from = 0;
                        if asking.is_some() {
                            // Keys answer the question; none of them reaches the sandbox. An
                            // answer is one key and Enter, typed after the question appeared,
                            // so that a word typed for the sandbox cannot answer it.
                            from = k;
                            for &b in &buf[..k] {
                                let Some(p) = asking.as_ref() else { break };
                                let early = shown_at.elapsed() < Duration::from_millis(300);
                                let key = match b {
                                    0x03 | 0x1b => Some(p.cancel),
                                    b'\r' | b'\n' => {
                                        let typed = std::mem::take(&mut answer_typed);
                                        match typed.as_slice() {
                                            [c] if p.keys.iter().any(|(k, _)| k == c) => Some(*c),
                                            _ => {
                                                show_prompt(p);
                                                None
                                            }
                                        }
                                    }
                                    0x7f | 0x08 => {
                                        answer_typed.pop();
                                        None
                                    }
                                    _ if early => None,
                                    b => {
                                        if answer_typed.len() < 8 {
                                            answer_typed.push(b.to_ascii_lowercase());
                                        }
                                        None
                                    }
                                };
                                if let Some(key) = key {
                                    if let Some(p) = asking.take() {
                                        let label = p
                                            .keys
                                            .iter()
                                            .find(|(c, _)| *c == key)
                                            .map_or("", |(_, l)| *l);
                                        let line = format!("{label}\r\n");
                                        let _ = sys::write_all(&std::io::stderr(), line.as_bytes());
                                        (p.answer)(Some(key));
                                    }
                                    answer_typed.clear();
                                    break;
                                }
                            }
                        }
                        if let (Some(m), true) = (master, from < k) {
                            let _ = sys::write_all(m, &buf[from..k]);
                        }
                    }
                }
            }
        }
        if let Some(p) = prompts {
            let mut drain = [0u8; 64];
            while matches!(sys::read_some(p.wake_read.as_raw_fd(), &mut drain), Ok(n) if n > 0) {}
        }
        if fds[1].revents != 0 {
            let mut sigs = [0u8; 64];
            let k = sys::read_some(sig_read.as_raw_fd(), &mut sigs).unwrap_or(0);
            if k == 0 {
                signals_open = false;
            }
            for &s in &sigs[..k] {
                let s = s as libc::c_int;
                if s == libc::SIGWINCH {
                    if let (Some(m), Some(ws)) = (master, host_winsize()) {
                        // SAFETY: TIOCSWINSZ reads a valid winsize.
                        unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                    }
                } else {
                    let _ = sys::kill(sandbox.pid, s);
                }
            }
        }
        if fds[0].revents != 0 {
            let mut msg = vec![0u8; 32 * 1024];
            let got = recv_with_fd(sandbox.channel.as_raw_fd(), &mut msg);
            if let Ok((n, _)) = got {
                if n >= 1 && msg[0] == MSG_BATCH {
                    split_batch(&msg[1..n], &mut |m| {
                        report_one(m, &mut report, memory, on_report);
                    });
                    continue;
                }
                if report_one(&msg[..n], &mut report, memory, on_report) {
                    continue;
                }
            }
            let outcome = match got {
                Ok((5, _)) if msg[0] == MSG_EXITED || msg[0] == MSG_SIGNALED => {
                    let v = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
                    if msg[0] == MSG_EXITED {
                        Outcome::Exited(v)
                    } else {
                        Outcome::Signaled(v)
                    }
                }
                _ => Outcome::Lost,
            };
            break kill_pid1(&sandbox, outcome);
        }
    };
    // Whatever the command wrote last to its terminal: read once every end of the terminal
    // inside is closed, that is once PID 1 is gone.
    if let (Some(m), true) = (master, master_open) {
        pid1.wait();
        while let Ok(k) = sys::read_some(m.as_raw_fd(), &mut buf) {
            if k == 0 {
                break;
            }
            let _ = sys::write_all(&std::io::stdout(), &buf[..k]);
        }
    }
    if process_signals {
        SIGNAL_PIPE.store(-1, Ordering::Relaxed);
    }
    (outcome, report)
}

/// Passes on one report of PID 1; false when `msg` is not a report (it is the command's status).
fn report_one(
    msg: &[u8],
    report: &mut GuardReport,
    memory: Option<&MemoryWatch>,
    on_report: &mut dyn FnMut(Report<'_>),
) -> bool {
    let n = msg.len();
    if n >= 1 && msg[0] == MSG_REFUSED {
        if let Some(d) = Denial::decode(&msg[1..n]) {
            report.add(&d);
            on_report(Report::Denied(&d));
        }
        return true;
    }
    if n == 9 && msg[0] == MSG_SYSV_SHM {
        let mut c = [0u8; 8];
        c.copy_from_slice(&msg[1..9]);
        if let Some(w) = memory {
            w.set_sysv(u64::from_ne_bytes(c));
        }
        return true;
    }
    if n == 9 && msg[0] == MSG_DROPPED {
        let mut c = [0u8; 8];
        c.copy_from_slice(&msg[1..9]);
        on_report(Report::Dropped(u64::from_ne_bytes(c)));
        return true;
    }
    if n >= 1 && msg[0] == MSG_EXEC {
        if let Some(e) = Exec::decode(&msg[1..n]) {
            on_report(Report::Exec(&e));
        }
        return true;
    }
    if n >= 1 && msg[0] == MSG_ASK_FS {
        if let Some(q) = FsQuestion::decode(&msg[1..n]) {
            on_report(Report::AskFs(&q));
        }
        return true;
    }
    false
}

/// Makes sure PID 1 (and with it every process of the sandbox) goes; `Unreaped` reaps it.
fn kill_pid1(sandbox: &Sandbox, outcome: Outcome) -> Outcome {
    crate::timing::mark("command's status received");
    // PID 1 exits by itself after reporting; killing it is harmless then and needed otherwise.
    crate::sandbox::kill_pid1(sandbox.pid, sandbox.freezer.as_deref());
    outcome
}
