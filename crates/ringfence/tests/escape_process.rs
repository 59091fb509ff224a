//! Process, privilege, resource and network escapes tried from inside a real sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run, sh, TestDir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `Field:` line of /proc/self/status as seen inside the sandbox.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn no_capabilities_and_no_new_privs() {
    let out = sh(&[], "cat /proc/self/status");
    let status = out.ok();
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(status, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(status, "NoNewPrivs"), "1");
    assert_eq!(status_field(status, "Seccomp"), "2");
}

#[test]
fn setuid_binaries_do_not_give_root() {
    let candidates: Vec<&str> = ["/usr/bin/su", "/bin/su", "/usr/bin/sudo", "/usr/bin/passwd"]
        .into_iter()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    if candidates.is_empty() {
        common::skip("no setuid binary (su, sudo, passwd) on this machine");
        return;
    }
    let script = "su -c 'id -u' root; echo su=$?; sudo -n id -u; echo sudo=$?; \
                  grep -E '^(Uid|Gid):' /proc/self/status; \
                  awk '$5 == \"/\" {print $6}' /proc/self/mountinfo";
    let out = sh(&[], script);
    let stdout = out.ok();
    assert!(
        !stdout.lines().any(|l| l == "0"),
        "a setuid binary gave uid 0: {out:#?}"
    );
    assert!(!stdout.contains("su=0"), "{out:#?}");
    assert!(!stdout.contains("sudo=0"), "{out:#?}");
    let uid_line = stdout.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        !uid_line.split_whitespace().skip(1).any(|id| id == "0"),
        "{uid_line}"
    );
    // The host tree is mounted nosuid.
    let root_opts = stdout.lines().last().unwrap();
    assert!(root_opts.split(',').any(|o| o == "nosuid"), "{out:#?}");
}

#[test]
fn uid_inside_is_nobody_for_root_and_unchanged_otherwise() {
    let out = sh(&[], "id -u; id -g");
    let expected = if common::is_root() {
        "65534".to_string()
    } else {
        common::uid().to_string()
    };
    let stdout = out.ok();
    assert_eq!(stdout.lines().next().unwrap(), expected, "{out:#?}");
}

#[test]
fn hostname_is_not_the_hosts() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = sh(&[], "cat /proc/sys/kernel/hostname");
    assert_ne!(out.ok().trim(), host.trim(), "{out:#?}");
}

#[test]
fn own_pid_namespace() {
    let out = sh(&[], "echo $$; ls /proc | grep -c '^[0-9]'");
    let stdout = out.ok();
    let mut lines = stdout.lines();
    // PID 3 where the kernel has no ns_last_pid: the thread that made the sandbox's network
    // namespace was PID 2 (sandbox.rs, `NetNs`).
    let expected = if std::path::Path::new("/proc/sys/kernel/ns_last_pid").exists() {
        "2"
    } else {
        "3"
    };
    assert_eq!(
        lines.next(),
        Some(expected),
        "the command should be PID {expected}: {out:#?}"
    );
    let count: u32 = lines.next().unwrap().parse().unwrap();
    assert!(count <= 5, "host processes visible: {out:#?}");
}

#[test]
fn inherited_fds_are_closed() {
    let dir = TestDir::new("fds");
    dir.write("extra.txt", "x\n");
    let bin = common::bin();
    // fd 7 and 9 are inherited by the shell and by everything it starts without CLOEXEC.
    let script = format!(
        "exec 7<'{extra}' 9>>'{extra}'; ls /proc/self/fd | tr '\\n' ' '; echo; \
         '{bin}' run -- ls /proc/self/fd | tr '\\n' ' '; echo",
        extra = dir.s("extra.txt"),
        bin = bin.display(),
    );
    let out = run(Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .current_dir("/")
        .stdin(Stdio::null()));
    let stdout = out.ok();
    let mut lines = stdout.lines();
    let host: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert!(
        host.contains(&"7") && host.contains(&"9"),
        "fixture: {out:#?}"
    );
    let inside: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // 0, 1, 2 and the directory ls is reading.
    assert_eq!(inside, ["0", "1", "2", "3"], "{out:#?}");
}

#[test]
fn fork_bomb_is_bounded_by_pids_limit() {
    let dir = TestDir::new("forkbomb");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let settings = dir.settings(r#"{"limits":{"pids":64,"wallSeconds":20}}"#);
    let start = Instant::now();
    let out = run(common::ringfence(&["-s", &settings]).args(["--", &probe, "forkcount=400"]));
    let stdout = out.ok();
    let forked: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("forked="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        forked < 64,
        "pids limit 64 allowed {forked} processes: {out:#?}"
    );
    assert_eq!(out.errno("forkcount=400"), libc::EAGAIN, "{out:#?}");
    assert!(start.elapsed() < Duration::from_secs(20));
    // The children were killed with the sandbox.
    let still = common::host_process_with(&probe);
    assert!(still.is_empty(), "fork bomb children survive: {still:?}");
}

#[test]
fn shell_fork_bomb_terminates() {
    let dir = TestDir::new("forkbomb-sh");
    let settings = dir.settings(r#"{"limits":{"pids":32,"wallSeconds":5}}"#);
    let marker = common::unique_number();
    // A bounded bomb: each level starts two more, 10 levels deep.
    let script = format!(
        "b() {{ [ \"$1\" -gt 10 ] && exec sleep 100.{marker}; b $(($1+1)) & b $(($1+1)) & wait; }}; \
         b 0 2>/dev/null; echo finished"
    );
    let start = Instant::now();
    let out = sh(&["-s", &settings], &script);
    assert!(start.elapsed() < Duration::from_secs(30), "{out:#?}");
    // Stopped by the pids limit (forks fail: the script finishes, or the shell itself gives up
    // with status 2 when a fork it needs fails) or, when some branch reached the sleeping
    // leaves, by wallSeconds: never by running free, and never a failure of ringfence itself.
    assert!(
        (out.code() == 0 && out.stdout.contains("finished"))
            || out.code() == 2
            || out.code() == 137,
        "the bomb should be contained: {out:#?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let still = common::host_process_with(&format!("sleep 100.{marker}"));
    assert!(still.is_empty(), "bomb processes survive: {still:?}");
}

/// A bomb stopped for memory: the sandbox was stopped at the limit (137, said on stderr).
fn stopped_for_memory(out: &common::Outcome) -> bool {
    out.code() == 137
        && out
            .stderr
            .contains("ringfence: memory limit of 512M reached")
}

#[test]
fn memory_bomb_fails_under_memory_limit() {
    let dir = TestDir::new("membomb");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let settings = dir.settings(r#"{"limits":{"memory":"512M","wallSeconds":30}}"#);
    let out = common::run_probe(&["-s", &settings], &probe, &["alloc=64"]);
    assert_eq!(out.errno("alloc=64"), 0, "{out:#?}");
    let out = run(common::ringfence(&["-s", &settings]).args(["--", &probe, "alloc=16384"]));
    assert!(stopped_for_memory(&out), "{out:#?}");
}

#[test]
fn python_memory_bomb_fails_under_memory_limit() {
    let Some(python) = common::find_in_path("python3") else {
        common::skip("no python3");
        return;
    };
    // The interpreter must be usable inside (not under a denied or private path).
    let python = python.canonicalize().unwrap();
    if python.starts_with("/tmp") {
        common::skip("python3 lives under /tmp, which is private inside the sandbox");
        return;
    }
    let dir = TestDir::new("membomb-py");
    let settings = dir.settings(r#"{"limits":{"memory":"512M","wallSeconds":30}}"#);
    let out = run(common::ringfence(&["-s", &settings]).args([
        "--",
        "python3",
        "-c",
        "b = bytearray(2**34)",
    ]));
    assert!(stopped_for_memory(&out), "{out:#?}");
}

#[test]
fn tmp_fill_stops_at_tmp_size() {
    let dir = TestDir::new("tmpfill");
    let settings = dir.settings(r#"{"limits":{"tmpSize":"16M","wallSeconds":30}}"#);
    let out = sh(
        &["-s", &settings],
        "dd if=/dev/zero of=/tmp/small bs=1M count=4 2>/dev/null && echo small-ok; rm /tmp/small; \
         dd if=/dev/zero of=/tmp/fill bs=1M count=64; echo rc=$?; stat -c %s /tmp/fill",
    );
    let stdout = out.ok();
    assert!(stdout.starts_with("small-ok\n"), "{out:#?}");
    assert!(!stdout.contains("rc=0"), "{out:#?}");
    assert!(out.stderr.contains("No space left on device"), "{out:#?}");
    let size: u64 = stdout.lines().last().unwrap().parse().unwrap();
    assert!(
        (12 << 20..=16 << 20).contains(&size),
        "wrote {size} bytes into a 16M /tmp: {out:#?}"
    );
}

#[test]
fn file_size_and_open_files_limits() {
    let dir = TestDir::new("fsize");
    dir.mkdir("work");
    let settings = dir.settings(r#"{"limits":{"fileSize":"1M","openFiles":64}}"#);
    let out = sh(
        &["-s", &settings, "--allow-write", &dir.s("work")],
        &format!(
            "trap '' XFSZ; dd if=/dev/zero of='{w}/big' bs=1M count=4 2>/dev/null; echo rc=$?; ulimit -n",
            w = dir.s("work")
        ),
    );
    let stdout = out.ok();
    assert!(!stdout.contains("rc=0"), "{out:#?}");
    assert_eq!(stdout.lines().last(), Some("64"), "{out:#?}");
    assert_eq!(
        std::fs::metadata(dir.join("work/big")).unwrap().len(),
        1 << 20
    );
}

#[test]
fn orphans_are_killed_when_command_exits() {
    let marker = common::unique_number();
    let needle = format!("sleep 1000.{marker}");
    let script = format!(
        "sleep 1000.{marker} & echo $!; setsid sh -c 'sleep 1000.{marker}' >/dev/null 2>&1 & \
         nohup sleep 1000.{marker} >/dev/null 2>&1 & sleep 0.2"
    );
    let start = Instant::now();
    let out = sh(&[], &script);
    out.ok();
    assert!(start.elapsed() < Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut still = common::host_process_with(&needle);
    while !still.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        still = common::host_process_with(&needle);
    }
    for pid in &still {
        // SAFETY: kill has no memory-safety preconditions; cleanup of a leaked test process.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert!(still.is_empty(), "orphans survive on the host: {still:?}");
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let marker = common::unique_number();
    let script = format!("trap 'exit 42' TERM; sleep 100.{marker} & echo ready; wait");
    let mut child = common::ringfence(&[])
        .args(["--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut line).unwrap();
    assert_eq!(&line, b"ready\n");
    // SAFETY: kill has no memory-safety preconditions; the pid is our own live child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    child.stdout = Some(stdout);
    let out = common::wait(child, Duration::from_secs(30));
    assert_eq!(out.code(), 42, "{out:#?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(common::host_process_with(&format!("sleep 100.{marker}")).is_empty());
}

#[test]
fn credential_env_vars_removed() {
    let out = run(common::ringfence(&[])
        .args(["--", "env"])
        .env("FOO_TOKEN", "t1")
        .env("AWS_SECRET_ACCESS_KEY", "t2")
        .env("GITHUB_TOKEN", "t3")
        .env("SSH_AUTH_SOCK", "/run/agent.sock")
        .env("RF_ORDINARY_VAR", "keep-me")
        .env("LANG", "C.UTF-8"));
    let stdout = out.ok();
    for var in [
        "FOO_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "SSH_AUTH_SOCK",
    ] {
        assert!(
            !stdout.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var} leaked: {out:#?}"
        );
    }
    assert!(
        stdout.lines().any(|l| l == "RF_ORDINARY_VAR=keep-me"),
        "{out:#?}"
    );
    assert!(stdout.lines().any(|l| l == "LANG=C.UTF-8"), "{out:#?}");
}

#[test]
fn only_loopback_interface() {
    let out = sh(&[], "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    assert_eq!(out.ok(), "lo\n", "{out:#?}");
}

#[test]
fn host_loopback_tcp_server_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // Reachable from the host.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let _ = listener.accept();

    let dir = TestDir::new("net-tcp");
    let probe = common::probe(&dir);
    if let Some(probe) = probe {
        let p = format!("connect_tcp={port}");
        let out = common::run_probe(&[], &probe, &[&p]);
        assert_eq!(out.errno(&p), libc::ECONNREFUSED, "{out:#?}");
    }
    if common::have("bash") {
        let out = run(common::ringfence(&[]).args([
            "--",
            "bash",
            "-c",
            &format!("echo hi > /dev/tcp/127.0.0.1/{port}; echo rc=$?"),
        ]));
        assert_eq!(out.ok(), "rc=1\n", "{out:#?}");
    }
    assert!(
        listener.accept().is_err(),
        "a connection arrived from inside"
    );
}

#[test]
fn killing_the_supervisor_kills_the_whole_sandbox() {
    let marker = common::unique_number();
    let name = format!("killed-supervisor-{marker}");
    let mut child = common::ringfence(&["--name", &name])
        .args([
            "--",
            "sh",
            "-c",
            &format!("sleep 1000.{marker} & setsid sleep 1000.{marker} & sleep 1000.{marker}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let needle = format!("sleep 1000.{marker}");
    let start = Instant::now();
    while common::host_process_with(&needle).len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sandboxed processes never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: the supervisor gets no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    loop {
        let still = common::host_process_with(&needle);
        if still.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "processes of the run survive their supervisor: {still:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Where the run had cgroups (named <supervisor pid>-<run>, beneath the groups this test
    // runs in), a later run removes the leftovers once they are empty.
    let suffix = format!("-{name}");
    let leftovers = || -> Vec<std::path::PathBuf> {
        [Some("pids"), Some("memory"), Some("freezer"), None]
            .into_iter()
            .filter_map(common::own_cgroup_dir)
            .filter_map(|h| std::fs::read_dir(h.join("ringfence")).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
            .map(|e| e.path())
            .collect()
    };
    for _ in 0..20 {
        let out = run(&mut common::ringfence(&["--", "true"]));
        assert_eq!(out.code(), 0, "{out:#?}");
        if leftovers().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(leftovers().is_empty(), "leftover cgroups {:?}", leftovers());
}
