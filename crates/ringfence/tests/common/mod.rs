//! Shared helpers for the end-to-end tests: locate the binary, make a per-test fixture directory
//! the sandbox can see (outside /tmp, which is private inside), run a sandbox with a time limit,
//! and build the syscall probe.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The probe program's source, compiled at test time (see `probe`).
pub const PROBE_SOURCE: &str = include_str!("../probes/probe.c");

/// How long any single sandbox run may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The ringfence binary under test.
pub fn bin() -> PathBuf {
    match std::env::var_os("RINGFENCE_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ringfence")),
    }
}

/// `ringfence run` with `args` before the `--`.
pub fn ringfence(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("run").args(args);
    // The sandbox starts in the caller's directory; the test binary may run from under /tmp,
    // which is private inside, so start from a directory every sandbox can see.
    cmd.current_dir("/");
    cmd.stdin(Stdio::null());
    cmd
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

mod skip;
#[allow(unused_imports)]
pub use skip::{not_here, skip, strict};

/// Whether `prog` is found on the host's PATH.
pub fn have(prog: &str) -> bool {
    find_in_path(prog).is_some()
}

pub fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(prog))
        .find(|candidate| candidate.is_file())
}

/// A fresh directory for one test, visible inside the sandbox; removed when dropped.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = match std::env::var_os("RINGFENCE_TEST_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                let home = std::env::var_os("HOME").expect("HOME is set");
                PathBuf::from(home).join(".cache/ringfence-tests")
            }
        };
        assert!(
            !base.starts_with("/tmp"),
            "{}: the sandbox has a private /tmp; set RINGFENCE_TEST_DIR to a directory outside it",
            base.display()
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = base.join(format!(
            "{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        let path = path.canonicalize().unwrap();
        TestDir { path }
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Path as a `String` for shell scripts and arguments.
    pub fn s(&self, rel: &str) -> String {
        self.join(rel).to_str().unwrap().to_string()
    }

    /// Writes `content` to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.join(rel);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.join(rel)).unwrap()
    }

    /// A settings file with `json` as its content.
    pub fn settings(&self, json: &str) -> String {
        let name = format!(
            "settings-{}.json",
            COUNTER_SETTINGS.fetch_add(1, Ordering::Relaxed)
        );
        self.write(&name, json);
        self.s(&name)
    }
}

static COUNTER_SETTINGS: AtomicU32 = AtomicU32::new(0);

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a finished run left behind.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The exit code; panics when the process was killed by a signal.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(code) => code,
            None => panic!("ringfence was killed by a signal: {self:?}"),
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Asserts exit code 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code(), 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// The `errno=` reported by the probe named `name`.
    pub fn errno(&self, name: &str) -> i32 {
        let prefix = format!("{name} errno=");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no result for probe {name}: {self:#?}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// Runs `cmd` to completion (stdout and stderr captured), failing the test after `RUN_TIMEOUT`.
pub fn run(cmd: &mut Command) -> Outcome {
    run_for(cmd, RUN_TIMEOUT)
}

pub fn run_for(cmd: &mut Command, timeout: Duration) -> Outcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    wait(child, timeout)
}

/// Waits for a spawned child whose stdout and stderr are piped.
pub fn wait(mut child: Child, timeout: Duration) -> Outcome {
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringfence did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `ringfence run ARGS -- sh -c SCRIPT`.
pub fn sh(args: &[&str], script: &str) -> Outcome {
    run(ringfence(args).args(["--", "/bin/sh", "-c", script]))
}

/// Compiles the probe into `dir`; `None` (after a visible skip notice) when there is no `cc`.
pub fn probe(dir: &TestDir) -> Option<String> {
    let Some(cc) = find_in_path("cc").or_else(|| find_in_path("gcc")) else {
        skip("no C compiler (cc) to build the syscall probe");
        return None;
    };
    let src = dir.write("probe-src/probe.c", PROBE_SOURCE);
    let out = dir.join("probe-bin/probe");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let outcome = run(Command::new(cc).arg("-O1").arg("-o").arg(&out).arg(&src));
    assert!(
        outcome.success(),
        "compiling the probe failed: {outcome:#?}"
    );
    Some(out.to_str().unwrap().to_string())
}

/// Runs the probe inside a sandbox with `args`, asking for `probes`.
pub fn run_probe(args: &[&str], probe: &str, probes: &[&str]) -> Outcome {
    let outcome = run(ringfence(args).arg("--").arg(probe).args(probes));
    assert_eq!(outcome.code(), 0, "the probe failed: {outcome:#?}");
    outcome
}

/// Whether any host process has `needle` in its command line.
pub fn host_process_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// A marker unique to this test process and call.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A decimal number unique to this test process and call (for `sleep 1000.N` style markers).
pub fn unique_number() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{:04}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes the child see `fd` (open in this process) as descriptor `target`, without
/// close-on-exec (as `--control-fd N` expects).
pub fn inherit_as(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only dup2 and fcntl run between the fork and the exec, on descriptors this
    // process owns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself (fd already `target`) would keep close-on-exec: clear it either way.
            if libc::dup2(fd, target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The directory of this process's own cgroup in the hierarchy of `controller` (cgroup v1),
/// or in the unified hierarchy (`None`, cgroup v2), where the hierarchy is mounted: the group
/// beneath which ringfence makes a run's groups.
pub fn own_cgroup_dir(controller: Option<&str>) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount) = info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let (fstype, _, opts) = (r.next()?, r.next()?, r.next()?);
        let hit = match controller {
            Some(c) => fstype == "cgroup" && opts.split(',').any(|o| o == c),
            None => fstype == "cgroup2",
        };
        let f: Vec<&str> = left.split_whitespace().collect();
        hit.then(|| (f[3].to_string(), f[4].to_string()))
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, ctl, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match controller {
            Some(c) => ctl.split(',').any(|x| x == c),
            None => id == "0" && ctl.is_empty(),
        };
        hit.then(|| path.to_string())
    })?;
    let rel = path.strip_prefix(root.trim_end_matches('/'))?;
    Some(PathBuf::from(mount).join(rel.trim_start_matches('/')))
}

/// A tiny HTTP/1.1 server on the host's loopback for the network tests: every request gets
/// `200` with the body `answer(method, path)`. Returns its port.
pub fn http_upstream(answer: fn(&str, &str) -> String) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let mut words = first.split_whitespace();
                let method = words.next().unwrap_or("?");
                let path = words.next().unwrap_or("?");
                let body = answer(method, path);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// The ringfence binary with its state directory and home inside `dir` (`state/`, `home/`),
/// started from `/`, stdin closed.
pub fn rf_in(dir: &TestDir) -> Command {
    let mut c = Command::new(bin());
    c.env("XDG_STATE_HOME", dir.s("state"))
        .env("HOME", dir.s("home"))
        .current_dir("/")
        .stdin(Stdio::null());
    c
}

/// A fixture with `state/` and `home/` and a settings file holding `json`.
pub fn with_settings(tag: &str, json: &str) -> (TestDir, String) {
    let dir = TestDir::new(tag);
    dir.mkdir("state");
    dir.mkdir("home");
    let settings = dir.settings(json);
    (dir, settings)
}

/// A run's activity log as JSON values, through `ringfence log show --json` run by `rf`.
pub fn log_events(mut rf: Command, name: &str) -> Vec<serde_json::Value> {
    let out = run(rf.args(["log", "show", name, "--json"]));
    out.ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `cmd` (a `ringfence run` whose arguments include `--control-fd 7`) with one end of a
/// socket pair as its fd 7, answering each `ask` line with `answer(question)` (`once`,
/// `always` or `deny`); returns the outcome and the questions asked, in order.
pub fn run_answering(
    mut cmd: Command,
    answer: impl Fn(&serde_json::Value) -> &'static str + Send + 'static,
) -> (Outcome, Vec<serde_json::Value>) {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::AsRawFd;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    inherit_as(&mut cmd, theirs.as_raw_fd(), 7);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    drop(theirs);
    let answerer = std::thread::spawn(move || {
        let mut asked = Vec::new();
        let mut w = ours.try_clone().unwrap();
        for line in BufReader::new(ours).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["type"] != "ask" {
                continue;
            }
            let a = answer(&v);
            writeln!(w, r#"{{"type":"answer","id":{},"answer":"{a}"}}"#, v["id"]).unwrap();
            asked.push(v);
        }
        asked
    });
    let out = wait(child, RUN_TIMEOUT);
    (out, answerer.join().unwrap())
}
