//! One run, from policy to exit status: the builder an embedding program (and `ringfence run`)
//! configures, the handle of a running sandbox, and the teardown that leaves nothing behind.
//!
//! The steps of `Builder::spawn`, in order (each names the function that does it):
//! 1. compile the policy into a sandbox spec: `prepare::prepare` (load, merge, validate; mount
//!    plan, seccomp filter, limits, environment, creation guard, package caches);
//! 2. the network policy and egress (`NetPolicy::from_policy`, `netrun::Egress::from_policy`,
//!    `netrun::host_services`);
//! 3. the run record in the state directory (`runs::Record::start`), writable directories that
//!    do not exist yet (`prepare::create_dirs`), overlay mode (`overlay::start`);
//! 4. the run's cgroups (`Cgroups::create`), then the sandbox itself, cloned from this
//!    single-threaded process (`ringfence_linux::sandbox::start`: namespaces, mounts,
//!    pivot_root, capabilities, no_new_privs, seccomp); while it builds its view, the activity
//!    log with its `run.start` (`audit::Activity::start`); then `Starting::finish` lets PID 1
//!    start the command (PID 1 reaper, `execve`);
//! 5. only now threads: the egress proxy on the listeners the sandbox handed over
//!    (`netrun::Network::start`), and the supervisor thread (`supervise::wait_with`: reports,
//!    limits, signals, the terminal relay).
//!
//! `Running::wait` joins the supervisor thread, which tears the run down (`Teardown`): the
//! sandbox killed, the proxy stopped and the log closed with `run.end` while the kernel takes
//! the sandbox down, then PID 1 reaped, the cgroups removed and the run record finished.
//! Dropping a `Running` without waiting does the same.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::anyhow;
use ringfence_linux::cgroup::{self, Cgroups};
use ringfence_linux::guard::GuardReport;
use ringfence_linux::memwatch::MemoryWatch;
use ringfence_linux::sandbox::{self as linux_sandbox, Spec};
use ringfence_linux::supervise::{self, Outcome, Signals};
use ringfence_proxy::AskAnswer;

use crate::audit::{Activity, Event, Observer};
use crate::netrun::{self, AskRequest, NetDenial};
use crate::prepare::{self, Prepared, Sources};
use crate::{netenv, overlay, runs, vm, Error};
use anyhow::Context as _;

/// The lines of an srt-style violations report kept in an outcome (the log keeps them all).
const REPORT_LINES: usize = 200;

/// Entry point of the embedding API.
///
/// ```
/// use ringfence_runtime::{Sandbox, Sources, Stdio};
/// use std::io::Read;
///
/// let mut run = Sandbox::builder(Sources::layered())
///     .shell("echo hello; echo x > /etc/ringfence-doc-test")
///     .stdio(Stdio::Piped)
///     .spawn()?;
/// let mut out = String::new();
/// run.stdout.take().unwrap().read_to_string(&mut out)?;
/// let outcome = run.wait()?;
/// assert_eq!(out, "hello\n");
/// // /etc is read-only inside: the shell's redirection failed.
/// assert_ne!(outcome.code(), 0);
/// assert!(!std::path::Path::new("/etc/ringfence-doc-test").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sandbox;

impl Sandbox {
    /// A run of the policy from `sources`; give it a command with `command` or `shell`.
    pub fn builder(sources: Sources) -> Builder {
        Builder {
            sources,
            argv: Vec::new(),
            name: None,
            log: None,
            stdio: Stdio::Inherit,
            observer: None,
            asker: None,
            control_fd: None,
            overlay: false,
            transparent: false,
            terminal: false,
            on_prepared: None,
            vm: None,
        }
    }
}

/// Where the command's standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// This process's own stdin, stdout and stderr (the sandbox never gets a terminal it could
    /// inject into: with `Builder::terminal`, a terminal is relayed through a pty of its own).
    Inherit,
    /// Pipes: `Running::stdin`, `stdout` and `stderr`.
    Piped,
    /// `/dev/null` for all three.
    Null,
}

type PreparedHook = Box<dyn FnOnce(&Prepared) + Send>;

/// A run being configured. Nothing happens until `spawn`.
pub struct Builder {
    sources: Sources,
    argv: Vec<Vec<u8>>,
    name: Option<String>,
    log: Option<PathBuf>,
    stdio: Stdio,
    observer: Option<Observer>,
    asker: Option<netrun::AskFn>,
    control_fd: Option<OwnedFd>,
    overlay: bool,
    transparent: bool,
    terminal: bool,
    on_prepared: Option<PreparedHook>,
    vm: Option<VmRequest>,
}

/// `--isolation vm` as `ringfence run` asks for it (also `"isolation": "vm"` in the policy).
#[derive(Debug, Clone)]
pub struct VmRequest {
    /// The command line asked for a VM (the policy may ask for one without it).
    pub forced: bool,
    pub accel: vm::Accel,
    /// `ringfence run`'s arguments for the run inside the guest (without the isolation
    /// options): the same policy sources, the same command.
    pub run_args: Vec<String>,
}

impl Builder {
    /// The program (searched in the sandbox's PATH when it has no slash) and its arguments.
    pub fn command<I, S>(mut self, argv: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv = argv
            .into_iter()
            .map(|a| a.as_ref().as_bytes().to_vec())
            .collect();
        self
    }

    /// A shell command line, run with `/bin/bash -c` (or `/bin/sh -c` where bash is missing).
    pub fn shell(mut self, script: &str) -> Builder {
        self.argv = shell_argv(script);
        self
    }

    /// The command's working directory (default: this process's), whose `.ringfence.json` is
    /// the project layer of the policy.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.sources.cwd = Some(dir.into());
        self
    }

    pub fn stdio(mut self, stdio: Stdio) -> Builder {
        self.stdio = stdio;
        self
    }

    /// The run's name, unique on this machine (generated when absent): `ringfence log show
    /// NAME`, `ringfence ps`.
    pub fn name(mut self, name: &str) -> Builder {
        self.name = Some(name.to_string());
        self
    }

    /// Writes the activity log to `path` instead of the state directory.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.log = Some(path.into());
        self
    }

    /// Sees each activity event as the log records it (`exec`, `fs.denied`, `net.decision`,
    /// `ask`, `run.end`, ...), on the supervisor's threads.
    pub fn observer(mut self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Builder {
        self.observer = Some(Arc::new(f));
        self
    }

    /// Answers questions about hosts the policy neither allows nor denies (`network.ask`);
    /// without one (and without `control_fd` or `terminal`) such hosts are denied. An
    /// `Always` answer is also written to the user's settings file.
    pub fn asker(mut self, f: impl Fn(AskRequest) -> AskAnswer + Send + Sync + 'static) -> Builder {
        self.asker = Some(Arc::new(f));
        self
    }

    /// `--control-fd`: questions and live policy updates as JSON lines on this descriptor.
    pub fn control_fd(mut self, fd: OwnedFd) -> Builder {
        self.control_fd = Some(fd);
        self
    }

    /// Writes go to a private copy-on-write layer, reviewed afterwards (`overlay::diff`,
    /// `overlay::apply`, `overlay::discard`); also `workspace.mode: "overlay"`.
    pub fn overlay(mut self, on: bool) -> Builder {
        self.overlay = on;
        self
    }

    /// Transparent capture: every TCP connection and DNS query of the sandbox is decided by
    /// the network policy, also for programs that ignore proxy variables (also
    /// `network.transparent: true`). Needs /dev/net/tun.
    pub fn transparent(mut self, on: bool) -> Builder {
        self.transparent = on;
        self
    }

    /// Behave as the whole process's supervisor (`ringfence run`): a terminal on stdin is
    /// relayed through the sandbox's own pty, questions are asked there, and SIGINT, SIGTERM,
    /// SIGHUP, ... of this process are passed on to the command. Not for embedding programs
    /// (it installs signal handlers).
    pub fn terminal(mut self, on: bool) -> Builder {
        self.terminal = on;
        self
    }

    /// Called with the compiled policy before anything is created (`ringfence run --debug`
    /// prints it).
    pub fn on_prepared(mut self, f: impl FnOnce(&Prepared) + Send + 'static) -> Builder {
        self.on_prepared = Some(Box::new(f));
        self
    }

    /// How a VM would be run: `ringfence run` gives it always; the VM is used when `forced`
    /// or when the policy says `"isolation": "vm"`.
    pub fn vm(mut self, request: VmRequest) -> Builder {
        self.vm = Some(request);
        self
    }

    /// Compiles the policy and starts the command in its sandbox. Must be called while this
    /// process has a single thread (the sandbox is cloned from it; see the crate's docs): the
    /// threads a previous run started are gone once its `wait` returned.
    pub fn spawn(self) -> Result<Running, Error> {
        spawn(self)
    }

    /// `spawn`, then `wait`.
    pub fn run(self) -> Result<RunOutcome, Error> {
        self.spawn()?.wait()
    }
}

/// `sh -c SCRIPT` as an argument vector: `/bin/bash` where it exists, else `/bin/sh`.
pub fn shell_argv(script: &str) -> Vec<Vec<u8>> {
    let shell = if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    vec![shell.into(), b"-c".to_vec(), script.as_bytes().to_vec()]
}

/// How a run ended and what it tried.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run's name (`ringfence log show NAME`).
    pub name: String,
    pub status: Outcome,
    /// What was refused, as srt's `<sandbox_violations>` lines (`deny write /path`, `deny
    /// network host:443 reason`), at most 200, without those `ignoreViolations` hides.
    pub violations: Vec<String>,
    /// Refusals beyond the 200 lines (the log has them all).
    pub unreported: u64,
    /// Connections the proxy denied.
    pub net_denied: Vec<NetDenial>,
    /// What the creation guard refused.
    pub refused: GuardReport,
    /// Events by kind, as `run.end` counts them.
    pub counts: serde_json::Value,
    /// The last hash of the log's chain (`ringfence log verify`); `None` when the log is
    /// incomplete.
    pub log_hash: Option<String>,
    pub log_path: PathBuf,
    /// `limits.memory` and `limits.wallSeconds` as they were in force.
    pub memory_limit: u64,
    pub wall_seconds: Option<u64>,
    /// Overlay mode: the summary of the changes waiting for review, or why there is none.
    pub overlay: Option<Result<String, String>>,
}

impl RunOutcome {
    /// The exit status a shell would show: the command's own, 128+N for signal N, 137 for a
    /// limit that killed the sandbox, 125 when the sandbox ended without saying.
    pub fn code(&self) -> i32 {
        self.status.code()
    }
}

/// A running sandbox. Dropping it without `wait` kills the sandbox and tears the run down.
pub struct Running {
    name: String,
    log_path: PathBuf,
    /// The command's stdin, stdout and stderr with `Stdio::Piped`.
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// Notes about the policy worth showing the user (a path that does not exist, a key with no
    /// effect here).
    pub notes: Vec<String>,
    /// Signals for the supervisor thread to pass on (None with `terminal`: this process's own
    /// signals are passed on instead).
    signals: Option<OwnedFd>,
    network: Arc<Mutex<Option<netrun::Network>>>,
    supervisor: Option<JoinHandle<Result<RunOutcome, Error>>>,
}

impl Running {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Replaces the network policy for new connections: one line as `--control-fd` takes it,
    /// e.g. `{"type": "policy", "network": {"allowedDomains": ["example.com"]}}` or
    /// `{"type": "allow", "host": "example.com", "port": 443}`.
    pub fn update_policy(&self, line: &str) -> Result<(), Error> {
        let net = self.network.lock().map_err(|_| Error::Ended)?;
        match net.as_ref() {
            Some(n) => n.update(line).map_err(Error::Policy),
            None => Err(Error::Ended),
        }
    }

    /// Freezes every process of the sandbox (the freezer cgroup where there is one, else
    /// SIGSTOP); returns what was done.
    pub fn pause(&self) -> Result<String, Error> {
        crate::control::pause(&self.name, true).map_err(Error::Run)
    }

    pub fn resume(&self) -> Result<String, Error> {
        crate::control::pause(&self.name, false).map_err(Error::Run)
    }

    /// Kills the sandbox (every process in it); `wait` then reports SIGKILL.
    pub fn stop(&self) -> Result<(), Error> {
        let fd = self.signals.as_ref().ok_or_else(|| {
            Error::Run(anyhow!(
                "a run with `terminal` passes on this process's signals: send it SIGTERM"
            ))
        })?;
        // A paused sandbox must be thawed to die (frozen cgroup v1 tasks ignore SIGKILL).
        let _ = crate::control::pause(&self.name, false);
        ringfence_linux::sys::write_all(fd, &[libc::SIGKILL as u8])
            .map_err(|e| Error::Run(anyhow!("stopping the sandbox: {e}")))
    }

    /// Waits for the command to end and the run to be torn down.
    pub fn wait(mut self) -> Result<RunOutcome, Error> {
        self.join()
    }

    fn join(&mut self) -> Result<RunOutcome, Error> {
        // Our ends of the pipes close first: a command reading stdin sees EOF.
        self.stdin.take();
        match self.supervisor.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Run(anyhow!("the supervisor thread panicked")))?,
            None => Err(Error::Ended),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.supervisor.is_some() {
            let _ = self.stop();
            let _ = self.join();
        }
    }
}

/// Everything of a run that must not outlive it. Dropped on every path: a setup step that
/// fails, the end of the command, a panic.
struct Teardown {
    name: String,
    record: Option<runs::Record>,
    log: Option<Arc<Mutex<Activity>>>,
    groups: Option<Cgroups>,
    /// The run's v1 freezer group (made only if the run is paused), worked out once: probing
    /// the cgroup mounts again at the end would lengthen every run's teardown.
    freezer: Option<PathBuf>,
    sandbox: Option<linux_sandbox::Sandbox>,
    network: Arc<Mutex<Option<netrun::Network>>>,
    outcome: Option<Outcome>,
    /// The log's final hash, once it is closed.
    log_hash: Option<String>,
    /// What `end_log` got from closing the log: its hash, the refusals, the counts.
    log_end: Option<(Option<String>, u64, Option<serde_json::Value>)>,
    counts: serde_json::Value,
}

impl Teardown {
    /// Stops the network (the sandbox is gone, or about to be) and returns what it denied.
    fn stop_network(&mut self) -> Vec<NetDenial> {
        let net = match self.network.lock() {
            Ok(mut n) => n.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some(net) = net else {
            return Vec::new();
        };
        let denied = net.denied.clone();
        net.stop();
        let denied = denied
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        denied
    }

    /// Closes the log with `run.end` (once); the record is finished by `close`.
    fn end_log(&mut self) {
        if self.log_end.is_some() {
            return;
        }
        self.log_end = Some(match self.log.as_ref().map(|l| l.lock()) {
            Some(Ok(mut l)) => {
                let (hash, denied) = l.end(self.outcome);
                (hash, denied, Some(l.counts()))
            }
            _ => (None, 0, None),
        });
    }

    /// Closes the log with `run.end` (unless `end_log` did) and the run record with it.
    fn close(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        self.end_log();
        let (hash, denied, counts) = self.log_end.take().unwrap_or((None, 0, None));
        let mut extra = serde_json::Map::new();
        if let Some(h) = &hash {
            extra.insert("logHash".into(), h.clone().into());
        }
        extra.insert("denied".into(), denied.into());
        if let Some(c) = &counts {
            extra.insert("counts".into(), c.clone());
        }
        record.finish_with(self.outcome, extra);
        self.log_hash = hash;
        self.counts = counts.unwrap_or_default();
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            linux_sandbox::kill(sb);
        }
        self.stop_network();
        if let Some(g) = &self.groups {
            g.remove();
        }
        if let Some(f) = self.freezer.take() {
            let _ = std::fs::remove_dir(f);
        }
        self.close();
    }
}

/// The ends of the command's standard streams: the sandbox's (given to `Spec::stdio`, closed
/// here once the sandbox has its copies) and ours.
struct Streams {
    theirs: [OwnedFd; 3],
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
}

/// A descriptor above 2, close-on-exec: the sandbox's dup2 onto 0-2 must never find its source
/// already sitting on one of the targets.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, Error> {
    ringfence_linux::process::dup_at_least(&fd, 3)
        .map_err(|e| Error::Run(anyhow!("duplicating a standard stream: {e}")))
}

fn streams(stdio: Stdio) -> Result<Option<Streams>, Error> {
    let pipe = || {
        ringfence_linux::sys::pipe_blocking()
            .map_err(|e| Error::Run(anyhow!("creating the command's standard streams: {e}")))
    };
    match stdio {
        Stdio::Inherit => Ok(None),
        Stdio::Null => {
            let null = |write: bool| -> Result<OwnedFd, Error> {
                let f = std::fs::OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .open("/dev/null")
                    .map_err(|e| Error::Run(anyhow!("opening /dev/null: {e}")))?;
                above_stdio(OwnedFd::from(f))
            };
            Ok(Some(Streams {
                theirs: [null(false)?, null(true)?, null(true)?],
                stdin: None,
                stdout: None,
                stderr: None,
            }))
        }
        Stdio::Piped => {
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            Ok(Some(Streams {
                theirs: [above_stdio(in_r)?, above_stdio(out_w)?, above_stdio(err_w)?],
                stdin: Some(File::from(in_w)),
                stdout: Some(File::from(out_r)),
                stderr: Some(File::from(err_r)),
            }))
        }
    }
}

fn spawn(b: Builder) -> Result<Running, Error> {
    let Builder {
        sources,
        argv: raw_argv,
        name,
        log: log_file,
        stdio,
        observer,
        asker,
        control_fd,
        overlay: overlay_flag,
        transparent,
        terminal,
        on_prepared,
        vm: vm_request,
    } = b;
    if raw_argv.is_empty() {
        return Err(Error::NoCommand);
    }
    let mut argv: Vec<CString> = raw_argv
        .iter()
        .map(|a| CString::new(a.clone()).map_err(|_| Error::NulInArgument))
        .collect::<Result<_, _>>()?;
    // 1. The policy, compiled.
    let mut prepared = prepare::prepare(&sources).map_err(Error::Policy)?;
    ringfence_linux::timing::mark("seccomp, limits, environment");
    if let Some(f) = on_prepared {
        f(&prepared);
    }
    let mut notes: Vec<String> = prepared
        .policy
        .notes
        .iter()
        .filter(|n| {
            n.contains("skipped") || n.contains("does not exist") || n.contains("no effect")
        })
        .cloned()
        .collect();
    // 2. The network.
    let net_policy = ringfence_proxy::NetPolicy::from_policy(&prepared.policy)
        .map_err(|e| Error::Policy(anyhow!("network: {e}")))?;
    let mut egress = netrun::Egress::from_policy(&prepared.policy).map_err(Error::Policy)?;
    let in_guest = vm::in_guest();
    if in_guest {
        // Inside a ringfence guest the proxy relays every connection to PID 1's endpoint,
        // which carries it to the supervisor's proxy on the host: one policy decides.
        egress.http_port = Some(netenv::HTTP_PORT);
        egress.socks_port = Some(netenv::SOCKS_PORT);
        egress.parent = None;
    }
    let use_vm = !in_guest
        && (prepared.policy.isolation_vm || vm_request.as_ref().is_some_and(|v| v.forced));
    if use_vm {
        argv = vm_argv(
            vm_request.as_ref(),
            &prepared,
            overlay_flag || prepared.policy.workspace.overlay,
            transparent || prepared.policy.transparent,
        )
        .map_err(Error::Policy)?;
        // The VMM runs in the host-side sandbox: its memory is the guest's plus its own,
        // bounded by `limits.memory` as a whole.
        ringfence_linux::timing::mark("vm: initramfs, job");
    }
    egress.tls = prepared.tls.as_ref().map(|t| t.terminator.clone());
    let proxy_ports = vec![netenv::HTTP_PORT, netenv::SOCKS_PORT];
    let host_services =
        netrun::host_services(&net_policy, &proxy_ports, &mut notes).map_err(Error::Policy)?;
    if (prepared.policy.workspace.overlay || overlay_flag)
        && (prepared.policy.fs_ask || prepared.policy.fs_ask_read)
    {
        let key = if prepared.policy.fs_ask {
            "filesystem.ask"
        } else {
            "filesystem.askRead"
        };
        return Err(Error::Policy(anyhow!(
            "{key} cannot be used with overlay mode: an approved question acts on the host's \
             files, outside the overlay's review; turn one of them off"
        )));
    }
    let streams = streams(stdio)?;
    // 3. The run's record, directories, overlay and log. From here on `teardown` undoes what
    // exists on every path.
    let mut record = runs::Record::start(
        name.as_deref(),
        &raw_argv,
        &prepared.cwd,
        log_file.as_deref(),
    )
    .map_err(Error::Run)?;
    let created = prepare::create_dirs(&prepared.plan);
    if let Ok(c) = &created {
        if !c.is_empty() {
            record.set(
                "created",
                c.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
    }
    let run_name = record.name().to_string();
    let network_slot = Arc::new(Mutex::new(None));
    let mut teardown = Teardown {
        name: run_name.clone(),
        record: Some(record),
        log: None,
        groups: None,
        freezer: None,
        sandbox: None,
        network: network_slot.clone(),
        outcome: None,
        log_hash: None,
        log_end: None,
        counts: serde_json::Value::Null,
    };
    created.map_err(Error::Run)?;
    // Overlay mode turns the writable roots into overlays before the log records the plan.
    prepared.policy.workspace.overlay |= overlay_flag;
    let overlay_state = if prepared.policy.workspace.overlay {
        let mut protected = prepared.protected.clone();
        protected.extend(prepared.not_yet.iter().cloned());
        protected.extend(prepared.deny_not_yet.iter().cloned());
        overlay::start(
            &run_name,
            &mut prepared.plan,
            &prepared.policy.workspace,
            prepared.policy.allow_git_config,
            protected,
            &prepared.caches.dirs_root(),
        )
        .map_err(Error::Run)?
    } else {
        None
    };
    // Overlay mode leaves writable single files read-only: the guard has none to serve.
    let single_files: Vec<PathBuf> = prepared
        .plan
        .steps
        .iter()
        .filter_map(|s| match s {
            ringfence_linux::plan::Step::WritableFile { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    if let Some(g) = prepared.guard.as_mut() {
        g.files.retain(|f| single_files.contains(f));
    }
    let log_path = teardown
        .record
        .as_ref()
        .map(|r| r.log_path())
        .unwrap_or_default();
    ringfence_linux::timing::mark("run record");
    // 4. The cgroups and the sandbox.
    // Give back what scanning a large tree allocated before the sandbox is cloned from this
    // process: a smaller image is quicker to clone and to move into the run's cgroups.
    ringfence_linux::process::trim_heap();
    let relay = terminal && streams.is_none();
    let pty = [
        relay && supervise::is_tty(0),
        relay && supervise::is_tty(0) && supervise::is_tty(1),
        relay && supervise::is_tty(0) && supervise::is_tty(2),
    ];
    let spec = Spec {
        argv,
        env: std::mem::take(&mut prepared.env),
        cwd: prepared.cwd.clone(),
        // The log records the plan and the guard once the sandbox is cloned: copies here.
        plan: prepared.plan.clone(),
        seccomp: std::mem::take(&mut prepared.seccomp),
        limits: std::mem::take(&mut prepared.limits),
        hostname: "ringfence".into(),
        pty,
        guard: prepared.guard.clone(),
        proxy_ports,
        host_services: host_services.clone(),
        unix_sockets: prepared.unix_sockets.take(),
        report_sysv_shm: prepared.mechanism == cgroup::Mechanism::NoCgroup,
        transparent: transparent || prepared.policy.transparent,
        stdio: streams.as_ref().map(|s| {
            let fd = |i: usize| -> RawFd { s.theirs[i].as_raw_fd() };
            [fd(0), fd(1), fd(2)]
        }),
    };
    let winsize = if pty[0] {
        supervise::host_winsize()
    } else {
        None
    };
    teardown.groups = Cgroups::create(&prepared.mechanism, &run_name, prepared.cgroup_limits)
        .map_err(|source| Error::Cgroups {
            mechanism: prepared.mechanism.describe(),
            source,
        })?;
    teardown.freezer = cgroup::own_freezer_v1(&run_name);
    ringfence_linux::timing::mark("cgroups created");
    if terminal {
        supervise::hold_signals();
    }
    let starting = linux_sandbox::start(&spec, winsize, teardown.groups.as_ref())?;
    // The activity log is opened while the sandbox builds its view; the command starts only
    // once it is open (a failure here drops `starting`, which kills the sandbox).
    let log = Arc::new(Mutex::new(
        Activity::start(log_path.clone(), &run_name, &raw_argv, &prepared, observer)
            .map_err(Error::Run)?,
    ));
    teardown.log = Some(log.clone());
    ringfence_linux::timing::mark("activity log");
    // Groups left by supervisors that died, removed while the sandbox builds its view.
    if teardown.groups.is_some() {
        cgroup::sweep(&prepared.mechanism);
    }
    let mut sb = starting.finish()?;
    sb.freezer = teardown.freezer.clone();
    let (stdin, stdout, stderr) = match streams {
        // The sandbox has its copies; ours of its ends close here.
        Some(Streams {
            theirs: _,
            stdin,
            stdout,
            stderr,
        }) => (stdin, stdout, stderr),
        None => (None, None, None),
    };
    let pid1 = sb.pid;
    // `filesystem.ask`: the rules and the channel its answers go back on, taken before the
    // sandbox moves to the supervisor thread.
    // (With `network.ask`, a unix socket not listed is asked about through the same path.)
    let socket_ask = spec.unix_sockets.as_ref().is_some_and(|u| u.ask.is_some());
    let asks_fs = prepared.policy.fs_ask || prepared.policy.fs_ask_read;
    let fs_ask_parts = match (asks_fs, spec.guard.as_ref()) {
        (true, Some(rules)) => Some(rules.clone()),
        _ if socket_ask => Some(Default::default()),
        _ => None,
    };
    let fs_ask_parts = match fs_ask_parts {
        Some(rules) => match sb.channel.try_clone() {
            Ok(channel) => Some((channel, rules)),
            Err(e) => {
                linux_sandbox::kill(sb);
                return Err(Error::Run(anyhow!(
                    "asking about paths: duplicating the channel: {e}"
                )));
            }
        },
        None => None,
    };
    let proxy_listeners = std::mem::take(&mut sb.proxy_listeners);
    let service_listeners = std::mem::take(&mut sb.service_listeners);
    let tun = sb.tun.take();
    teardown.sandbox = Some(sb);
    // 5. Threads: the proxy, then the supervisor.
    // Questions about unlisted hosts: the embedding program's asker, a program on
    // --control-fd, the person at the terminal that the supervisor relays, else nobody.
    let prompts = if pty[0] {
        supervise::Prompts::new().ok().map(Arc::new)
    } else {
        None
    };
    let asking = match (asker, &control_fd, &prompts) {
        (Some(f), _, _) => netrun::Asking::Library(f),
        (None, Some(_), _) => netrun::Asking::Control,
        (None, None, Some(p)) => netrun::Asking::Terminal(p.clone()),
        (None, None, None) => netrun::Asking::Nobody,
    };
    let user_settings = prepare::user_settings_file(&sources, &prepared.policy);
    let network = netrun::Network::start(
        pid1,
        proxy_listeners,
        service_listeners.into_iter().zip(host_services).collect(),
        net_policy,
        egress,
        log.clone(),
        asking,
        user_settings,
        control_fd,
        tun,
    )
    .map_err(Error::Run)?;
    let fs_ask = fs_ask_parts.map(|(channel, rules)| {
        Arc::new(crate::fsask::FsAsk::new(
            channel,
            network.write_asker(),
            Duration::from_secs(
                prepared
                    .policy
                    .ask_timeout_seconds
                    .unwrap_or(ringfence_policy::ASK_TIMEOUT_SECONDS),
            ),
            &spec.plan.steps,
            prepared
                .policy
                .deny_write
                .iter()
                .map(|r| r.path.clone())
                .collect(),
            rules,
            log.clone(),
            prepare::user_settings_file(&sources, &prepared.policy),
            prepare::home().ok(),
        ))
    });
    if let Ok(mut slot) = network_slot.lock() {
        *slot = Some(network);
    }
    ringfence_linux::timing::mark("proxy started");
    let (signals, signal_writer) = if terminal {
        (Signals::Process, None)
    } else {
        let (r, w) = ringfence_linux::sys::pipe()
            .map_err(|e| Error::Run(anyhow!("creating the supervisor's signal pipe: {e}")))?;
        (Signals::Pipe(r), Some(w))
    };
    let watch = Watch {
        wall: prepared.policy.limits.wall_seconds,
        memory_limit: prepared.policy.limits.memory,
        overlay: overlay_state,
        policy: prepared.policy,
        argv: raw_argv,
        prompts,
        fs_ask,
    };
    let supervisor = std::thread::Builder::new()
        .name("ringfence-supervisor".into())
        .spawn(move || supervise_run(teardown, watch, log, signals))
        .map_err(|e| Error::Run(anyhow!("starting the supervisor thread: {e}")))?;
    Ok(Running {
        name: run_name,
        log_path,
        stdin,
        stdout,
        stderr,
        notes,
        signals: signal_writer,
        network: network_slot,
        supervisor: Some(supervisor),
    })
}

/// What the supervisor thread needs besides the teardown.
struct Watch {
    wall: Option<u64>,
    memory_limit: u64,
    overlay: Option<overlay::State>,
    policy: ringfence_policy::Policy,
    argv: Vec<Vec<u8>>,
    prompts: Option<Arc<supervise::Prompts>>,
    fs_ask: Option<Arc<crate::fsask::FsAsk>>,
}

fn supervise_run(
    mut teardown: Teardown,
    watch: Watch,
    log: Arc<Mutex<Activity>>,
    signals: Signals,
) -> Result<RunOutcome, Error> {
    let Some(sb) = teardown.sandbox.take() else {
        return Err(Error::Ended);
    };
    let stopped_by_us = matches!(signals, Signals::Pipe(_));
    // The overlay's baseline is walked while the command runs (see `overlay`).
    let manifest = watch
        .overlay
        .clone()
        .map(|s| std::thread::spawn(move || overlay::record_manifest(&s)));
    let memory_watch = match teardown.groups.as_ref().and_then(Cgroups::memory) {
        Some(g) => MemoryWatch::Cgroup(g.clone()),
        None => MemoryWatch::resident(watch.memory_limit),
    };
    let mut violations: Vec<String> = Vec::new();
    let mut unreported = 0u64;
    let (mut status, refused, pid1) = supervise::wait_unreaped(
        sb,
        watch.wall.map(Duration::from_secs),
        Some(&memory_watch),
        &mut |r| match r {
            supervise::Report::Denied(d) => {
                if let Ok(mut l) = log.lock() {
                    l.denied(d);
                }
                if violations.len() < REPORT_LINES {
                    let path = d.path.display().to_string();
                    violations.push(format!("deny {} {}", d.op, path.escape_debug()));
                } else {
                    unreported += 1;
                }
            }
            supervise::Report::Exec(e) => {
                if let Ok(mut l) = log.lock() {
                    l.exec(e);
                }
            }
            supervise::Report::Dropped(n) => {
                if let Ok(mut l) = log.lock() {
                    l.dropped(n);
                }
            }
            supervise::Report::AskFs(q) => {
                // PID 1 asks only with `filesystem.ask` or `askRead`, which set `fs_ask`.
                if let Some(f) = &watch.fs_ask {
                    f.handle(q.clone());
                }
            }
        },
        watch.prompts.as_deref(),
        signals,
    );
    ringfence_linux::timing::mark("command ended");
    // `stop` kills PID 1, which then cannot report: the command was killed.
    if stopped_by_us && status == Outcome::Lost {
        status = Outcome::Signaled(libc::SIGKILL);
    }
    let net_denied = teardown.stop_network();
    for d in &net_denied {
        if violations.len() < REPORT_LINES {
            violations.push(format!(
                "deny network {}:{} {}",
                d.host.escape_debug(),
                d.port,
                d.reason.escape_debug()
            ));
        } else {
            unreported += 1;
        }
    }
    teardown.outcome = Some(status);
    // The log is closed with `run.end` while the kernel takes the sandbox down (PID 1 is
    // killed); the run record says the run ended only once PID 1, and with it every process of
    // the sandbox, is reaped (`ps`, `stop`, overlay `apply` go by the record), and the groups
    // can be removed only then.
    teardown.end_log();
    ringfence_linux::timing::mark("proxy stopped, log closed");
    pid1.reap();
    if let Some(g) = teardown.groups.take() {
        g.remove();
    }
    teardown.close();
    ringfence_linux::timing::mark("PID 1 reaped, cgroups removed, record finished");
    let overlay = manifest.map(|m| {
        let baseline = match m.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!(
                "overlay: {e:#}; `ringfence apply` will refuse this run"
            )),
            Err(_) => Some("overlay: recording the baseline failed".to_string()),
        };
        overlay::remove_work_dirs(&teardown.name);
        let summary = overlay::summary(&teardown.name).map_err(|e| format!("overlay: {e:#}"));
        match (baseline, summary) {
            (None, s) => s,
            (Some(b), Ok(s)) => Ok(format!("ringfence: {b}\n{s}")),
            (Some(b), Err(e)) => Err(format!("{b}; {e}")),
        }
    });
    // `ignoreViolations` thins the report only; the activity log has every event.
    let command_text = watch
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    violations.retain(|v| !watch.policy.ignores_violation(v, &command_text));
    let outcome = RunOutcome {
        name: teardown.name.clone(),
        status,
        violations,
        unreported,
        net_denied,
        refused,
        counts: std::mem::take(&mut teardown.counts),
        log_hash: teardown.log_hash.take(),
        log_path: log.lock().map(|l| l.path.clone()).unwrap_or_default(),
        memory_limit: watch.memory_limit,
        wall_seconds: watch.wall,
        overlay,
    };
    drop(teardown);
    Ok(outcome)
}

/// The command of the host-side sandbox of a VM run: `ringfence __vm-host JOB`.
fn vm_argv(
    request: Option<&VmRequest>,
    prepared: &Prepared,
    overlay: bool,
    transparent: bool,
) -> anyhow::Result<Vec<CString>> {
    let Some(request) = request else {
        return Err(anyhow!(
            "isolation: \"vm\" is supported by `ringfence run` only, not by this embedding program"
        ));
    };
    for (on, what) in [
        (overlay, "overlay mode (--overlay, workspace.mode)"),
        (
            transparent,
            "transparent capture (--transparent, network.transparent)",
        ),
        (prepared.policy.fs_ask, "filesystem.ask (--ask-fs)"),
        (prepared.policy.fs_ask_read, "filesystem.askRead"),
    ] {
        if on {
            return Err(anyhow!(
                "isolation vm: {what} is not supported inside a VM yet; turn one of them off"
            ));
        }
    }
    vm::check_accel(request.accel)?;
    let machine = vm::machine().context("isolation vm")?;
    let home = prepare::home()?;
    let cache = crate::caches::root(&home, &|k| std::env::var(k).ok());
    let cache = cache.parent().map(PathBuf::from).unwrap_or(cache);
    let initramfs =
        vm::initramfs::cached(&machine, &cache).context("isolation vm: the initramfs")?;
    let boot_kernel = vm::kernel::cached(&machine, &cache);
    // The `-s` file travels in the job: the guest sees the host-side sandbox's tree, where the
    // file may be absent (under the private /tmp, or denied).
    let (run_args, settings_file) = vm::split_settings(&request.run_args);
    let settings = match settings_file {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("isolation vm: reading {}", f.display()))?,
        ),
        None => None,
    };
    let job = vm::HostJob {
        machine,
        boot_kernel,
        initramfs,
        accel: request.accel,
        memory_mib: vm::guest_memory_mib(prepared.policy.limits.memory)?,
        cpus: vm::cpus(),
        run_args,
        settings,
        exe: std::env::current_exe().context("isolation vm: this program's path")?,
        timing: std::env::var_os("RINGFENCE_TIMING").is_some_and(|v| !v.is_empty() && v != "0"),
        tsc_khz: match request.accel {
            vm::Accel::Tcg => ringfence_linux::vmm::tsc_khz(std::time::Duration::from_millis(10)),
            vm::Accel::Kvm => None,
        },
    };
    let job = serde_json::to_string(&job)?;
    [
        std::env::current_exe()
            .context("isolation vm: this program's path")?
            .display()
            .to_string(),
        vm::HOST_COMMAND.to_string(),
        job,
    ]
    .into_iter()
    .map(|a| CString::new(a).map_err(|_| anyhow!("isolation vm: a NUL byte in the VM's job")))
    .collect()
}

/// Reads a whole stream, for callers that want the output as bytes.
pub fn read_all(f: Option<File>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    if let Some(mut f) = f {
        f.read_to_end(&mut v)?;
    }
    Ok(v)
}
