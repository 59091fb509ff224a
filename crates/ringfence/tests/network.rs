//! Network isolation end to end: a real sandbox whose only way out is the supervisor's egress
//! proxy. Upstream servers listen on the host's loopback; the sandbox has its own loopback, so
//! they are reachable only through the proxy and only when the policy names them by IP literal
//! and port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;

use common::{run, TestDir};

fn upstream() -> u16 {
    common::http_upstream(|_, path| format!("upstream saw {path}\n"))
}

fn rf(dir: &TestDir) -> Command {
    common::rf_in(dir)
}

fn setup(tag: &str, json: &str) -> (TestDir, String) {
    common::with_settings(tag, json)
}

fn events(dir: &TestDir, name: &str) -> Vec<serde_json::Value> {
    common::log_events(rf(dir), name)
}

/// An echo server on the host's loopback.
fn echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn need_curl() -> bool {
    if common::have("curl") {
        return true;
    }
    common::skip("curl is not installed");
    false
}

#[test]
fn allowed_ip_literal_is_reached_through_http_connect_and_socks() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "net-allowed",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#),
    );
    let name = format!("net-{}", common::unique_number());
    let script = format!(
        "curl -sS --noproxy '' http://127.0.0.1:{port}/plain; \
         curl -sS --noproxy '' -p http://127.0.0.1:{port}/tunnel; \
         curl -sS --noproxy '' -x socks5h://127.0.0.1:1080 http://127.0.0.1:{port}/socks; \
         curl -sS --noproxy '' -x socks5h://127.0.0.1:3128 http://127.0.0.1:{port}/either-port"
    );
    let out = run(rf(&dir).args(["run", "--name", &name, "-s", &settings, "-c", &script]));
    let stdout = out.ok();
    for p in ["/plain", "/socks", "/either-port"] {
        assert!(
            stdout.contains(&format!("upstream saw {p}\n")),
            "{p}: {out:#?}"
        );
    }
    // Through a CONNECT tunnel the upstream sees an origin-form request.
    assert!(stdout.contains("upstream saw /tunnel\n"), "{out:#?}");
    let ev = events(&dir, &name);
    let allowed: Vec<_> = ev
        .iter()
        .filter(|e| e["kind"] == "net.decision" && e["decision"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 4, "{ev:#?}");
    assert!(allowed.iter().all(|e| e["port"] == port), "{ev:#?}");
    let protocols: Vec<&str> = allowed
        .iter()
        .map(|e| e["protocol"].as_str().unwrap_or(""))
        .collect();
    assert!(protocols.contains(&"http"), "{protocols:?}");
    assert!(protocols.contains(&"connect"), "{protocols:?}");
    assert!(protocols.contains(&"socks5"), "{protocols:?}");
}

#[test]
fn unlisted_hosts_are_denied_with_a_policy_error_and_logged() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let other = upstream();
    let (dir, settings) = setup(
        "net-denied",
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"], "deniedDomains": ["blocked.example"]}}}}"#
        ),
    );
    let name = format!("net-{}", common::unique_number());
    let script = format!(
        "curl -sS -i --noproxy '' http://127.0.0.1:{other}/nope; echo; \
         curl -sS -i --noproxy '' http://blocked.example/; echo; \
         curl -sS --noproxy '' -x socks5h://127.0.0.1:1080 http://127.0.0.1:{other}/socks; echo socks=$?"
    );
    let out = run(rf(&dir).args([
        "run",
        "--name",
        &name,
        "-s",
        &settings,
        "--violations-report",
        "stderr",
        "-c",
        &script,
    ]));
    let stdout = out.ok();
    assert!(!stdout.contains("upstream saw"), "{out:#?}");
    assert_eq!(stdout.matches(" 403 ").count(), 2, "{out:#?}");
    assert_eq!(
        stdout
            .to_ascii_lowercase()
            .matches("x-proxy-error: blocked-by-ringfence")
            .count(),
        2,
        "{out:#?}"
    );
    // curl reports a SOCKS refusal as exit 97.
    assert!(stdout.contains("socks=97"), "{out:#?}");
    assert!(
        out.stderr.contains("denied 3 network connections"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("<sandbox_violations>"), "{out:#?}");
    assert!(
        out.stderr.contains("deny network blocked.example:80"),
        "{out:#?}"
    );
    let ev = events(&dir, &name);
    let denied: Vec<_> = ev
        .iter()
        .filter(|e| e["kind"] == "net.decision" && e["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 3, "{ev:#?}");
    let end = ev.iter().find(|e| e["kind"] == "run.end").unwrap();
    assert_eq!(end["counts"]["net.denied"], 3, "{end:#?}");
    let verify = run(rf(&dir).args(["log", "verify", &name]));
    assert_eq!(verify.code(), 0, "{verify:#?}");
}

#[test]
fn a_name_that_resolves_to_loopback_is_refused() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "net-loopback-name",
        r#"{"network": {"allowedDomains": ["localhost"]}}"#,
    );
    let script =
        format!("curl -sS -i --noproxy '' -x http://127.0.0.1:3128 http://localhost:{port}/x");
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &script]));
    assert!(!out.stdout.contains("upstream saw"), "{out:#?}");
    assert!(out.stdout.contains(" 403 "), "{out:#?}");
}

#[test]
fn programs_that_ignore_the_proxy_reach_nothing() {
    let port = upstream();
    let unlisted = upstream();
    let (dir, settings) = setup(
        "net-bypass",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}", "example.com"]}}}}"#),
    );
    // Straight to a host loopback port the policy does not list (an allowed one is served at
    // its own address, see host_services.rs), to an outside address, and a DNS lookup of an
    // allowed name: each must fail.
    let script = format!(
        r#"import socket
for target in [("127.0.0.1", {unlisted}), ("10.255.255.53", 53), ("1.1.1.1", 443)]:
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(target)
        print("connected", target)
    except OSError as e:
        print("failed", target, e.errno)
try:
    print("resolved", socket.getaddrinfo("example.com", 80))
except OSError as e:
    print("dns failed")
"#
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "python3", "-c", &script]));
    let stdout = out.ok();
    assert!(!stdout.contains("connected"), "{out:#?}");
    assert!(!stdout.contains("resolved"), "{out:#?}");
    assert!(stdout.contains("dns failed"), "{out:#?}");
    assert_eq!(stdout.matches("failed (").count(), 3, "{out:#?}");
}

#[test]
fn the_sandboxs_own_loopback_works() {
    let (dir, settings) = setup("net-own-loopback", r#"{}"#);
    let script = r#"import socket, threading
l = socket.socket(); l.bind(("127.0.0.1", 8765)); l.listen(1)
def serve():
    c, _ = l.accept(); c.sendall(b"inside"); c.close()
threading.Thread(target=serve).start()
s = socket.create_connection(("127.0.0.1", 8765)); print(s.recv(10).decode())
"#;
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "python3", "-c", script]));
    assert_eq!(out.ok().trim(), "inside", "{out:#?}");
}

#[test]
fn connect_tunnels_stdio_for_ssh_proxycommand() {
    let port = echo();
    let (dir, settings) = setup(
        "net-connect",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#),
    );
    let bin = common::bin();
    let bin = bin.to_str().unwrap();
    let denied = closed_port();
    let script = format!(
        "printf 'ping through the tunnel\\n' | '{bin}' connect 127.0.0.1 {port}; \
         echo | '{bin}' connect 127.0.0.1 {denied}; echo denied=$?; \
         case \"$GIT_SSH_COMMAND\" in *\"connect %h %p\"*) echo ssh-configured;; esac"
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &script]));
    let stdout = out.ok();
    assert!(stdout.contains("ping through the tunnel\n"), "{out:#?}");
    assert!(stdout.contains("denied=125"), "{out:#?}");
    assert!(
        out.stderr
            .contains("network policy does not allow 127.0.0.1:"),
        "{out:#?}"
    );
    assert!(stdout.contains("ssh-configured"), "{out:#?}");
}

/// A connection to the proxy port from outside the sandbox is impossible: the listeners live in
/// the sandbox's network namespace.
#[test]
fn the_proxy_is_not_reachable_from_the_host() {
    let (dir, settings) = setup("net-host-side", r#"{}"#);
    let out = run(rf(&dir).args([
        "run",
        "-s",
        &settings,
        "--",
        "sh",
        "-c",
        "grep -c ': 0100007F:0C38 00000000:0000 0A' /proc/net/tcp",
    ]));
    assert_eq!(out.ok().trim(), "1", "{out:#?}");
    // On the host, port 3128 is either free or somebody else's: it is not ours.
    if let Ok(mut s) = TcpStream::connect("127.0.0.1:3128") {
        let _ = s.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("ringfence"),
            "a ringfence proxy answered on the host"
        );
    }
}

/// `git ls-remote git@...`-style access over SSH: ssh inside the sandbox reaches an sshd on the
/// host's loopback only through ringfence's own ProxyCommand (`ringfence connect`).
#[test]
fn git_over_ssh_through_the_proxycommand() {
    let sshd = std::path::Path::new("/usr/sbin/sshd");
    if !sshd.exists() || !common::have("ssh") || !common::have("git") {
        common::skip("sshd, ssh or git is not installed");
        return;
    }
    let dir = TestDir::new("net-ssh");
    dir.mkdir("state");
    dir.mkdir("home");
    let keygen = |name: &str| {
        let out = run(Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &dir.s(name),
        ]));
        assert!(out.success(), "{out:#?}");
    };
    keygen("hostkey");
    keygen("userkey");
    std::fs::copy(dir.join("userkey.pub"), dir.join("authorized_keys")).unwrap();
    let port = closed_port();
    let cfg = dir.write(
        "sshd_config",
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            dir.s("hostkey"),
            dir.s("authorized_keys"),
            dir.s("sshd.pid"),
        ),
    );
    if common::is_root() {
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let mut daemon = Command::new(sshd)
        .args(["-D", "-e", "-f", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !up {
        let _ = daemon.kill();
        panic!("sshd did not start on 127.0.0.1:{port}");
    }
    // A bare repository with one commit.
    let git = |args: &[&str], cwd: &std::path::Path| {
        let out = run(Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid"));
        assert!(out.success(), "git {args:?}: {out:#?}");
        out.stdout
    };
    let src = dir.mkdir("src");
    git(&["init", "-q", "-b", "main"], &src);
    dir.write("src/README", "hello\n");
    git(&["add", "README"], &src);
    git(&["commit", "-q", "-m", "first"], &src);
    let head = git(&["rev-parse", "HEAD"], &src);
    git(&["clone", "-q", "--bare", "src", "repo.git"], &dir.path);
    let settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#
    ));
    let user = if common::is_root() {
        "root".to_string()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "ringfence-test".into())
    };
    let url = format!("ssh://{user}@127.0.0.1:{port}{}", dir.s("repo.git"));
    let ssh = format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes",
        dir.s("userkey")
    );
    let out = run(rf(&dir).env("GIT_SSH_COMMAND", &ssh).args([
        "run",
        "-s",
        &settings,
        "--",
        "git",
        "ls-remote",
        &url,
    ]));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(out.ok().contains(head.trim()), "{out:#?}");
}

/// The ask flow through `--control-fd`: a host in neither list makes the connection wait for
/// the program on the other end; its answer decides, live policy updates take effect at once,
/// and every step is in the log.
#[test]
fn control_fd_asks_and_the_answer_decides() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    if !need_curl() {
        return;
    }
    let port = upstream();
    let other = upstream();
    let (dir, settings) = setup(
        "net-ask",
        r#"{"network": {"allowedDomains": [], "ask": true, "askTimeoutSeconds": 20}}"#,
    );
    let name = format!("net-{}", common::unique_number());
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    // 1. a name in neither list: asked, denied by the answer; 2. an IP literal allowed by a
    // live update sent with that answer; 3. asked again, allowed once, and still refused
    // because the name resolves to loopback.
    let script = format!(
        "curl -sS -o /dev/null -w 'first=%{{http_code}}\\n' --noproxy '' -x http://127.0.0.1:3128 http://localhost:{port}/first; \
         curl -sS --noproxy '' http://127.0.0.1:{port}/second; \
         curl -sS -o /dev/null -w 'third=%{{http_code}}\\n' --noproxy '' -x http://127.0.0.1:3128 http://localhost:{other}/third"
    );
    let mut cmd = rf(&dir);
    cmd.args([
        "run",
        "--name",
        &name,
        "-s",
        &settings,
        "--control-fd",
        "7",
        "-c",
        &script,
    ]);
    common::inherit_as(&mut cmd, fd, 7);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    drop(theirs);
    let answerer = thread::spawn(move || {
        let mut questions = Vec::new();
        let mut w = ours.try_clone().unwrap();
        let r = BufReader::new(ours);
        for line in r.lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["type"] != "ask" {
                continue;
            }
            if questions.is_empty() {
                writeln!(w, r#"{{"type":"allow","host":"127.0.0.1","port":{port}}}"#).unwrap();
            }
            let answer = if questions.is_empty() { "deny" } else { "once" };
            questions.push(v.clone());
            writeln!(
                w,
                r#"{{"type":"answer","id":{},"answer":"{answer}"}}"#,
                v["id"]
            )
            .unwrap();
        }
        questions
    });
    let out = common::wait(child, common::RUN_TIMEOUT);
    let questions = answerer.join().unwrap();
    let stdout = out.ok();
    assert!(stdout.contains("first=403\n"), "{out:#?}");
    assert!(stdout.contains("upstream saw /second\n"), "{out:#?}");
    assert!(stdout.contains("third=403\n"), "{out:#?}");
    assert!(!stdout.contains("upstream saw /first"), "{out:#?}");
    assert!(!stdout.contains("upstream saw /third"), "{out:#?}");
    assert_eq!(questions.len(), 2, "{questions:#?}");
    assert_eq!(questions[0]["host"], "localhost", "{questions:#?}");
    assert_eq!(questions[0]["port"], port, "{questions:#?}");
    assert_eq!(questions[1]["port"], other, "{questions:#?}");
    let ev = events(&dir, &name);
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ask").count(),
        2,
        "{kinds:?}"
    );
    let answers: Vec<&str> = ev
        .iter()
        .filter(|e| e["kind"] == "answer")
        .map(|e| e["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["deny", "once"], "{ev:#?}");
    let updates: Vec<_> = ev.iter().filter(|e| e["kind"] == "policy.update").collect();
    assert_eq!(updates.len(), 1, "{ev:#?}");
    assert_eq!(updates[0]["source"], "control-fd", "{updates:#?}");
    assert_eq!(updates[0]["update"]["port"], port, "{updates:#?}");
}

/// Without a terminal or a control channel there is nobody to ask: an unlisted host is denied
/// at once, even with asking enabled.
#[test]
fn asking_without_anyone_to_ask_denies() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let (dir, settings) = setup("net-ask-nobody", r#"{"network": {"ask": true}}"#);
    let script = format!(
        "curl -sS -o /dev/null -w '%{{http_code}}\\n' --noproxy '' http://127.0.0.1:{port}/x"
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &script]));
    assert_eq!(out.ok().trim(), "403", "{out:#?}");
}

/// Runs `script` under ringfence on a pseudo-terminal; answers the first question with `key`
/// and then types a line for the sandbox. Returns everything the terminal showed.
fn on_a_terminal(dir: &TestDir, settings: &str, script: &str, key: &str) -> common::Outcome {
    let driver = r#"
import os, pty, sys, time
key = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
out = b""
deadline = time.time() + 30
answered = False
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not answered and b"allow?" in out and b"[d] deny" in out:
        # Typing meant for the sandbox (several keys, then Enter) does not answer: the
        # question is asked again. Then the key and Enter, after the question appeared.
        time.sleep(0.4)
        os.write(fd, b"status\r")
        time.sleep(0.2)
        os.write(fd, key + b"\r")
        time.sleep(0.3)
        os.write(fd, b"hello\r")
        answered = True
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
"#;
    let bin = common::bin();
    run(Command::new("python3")
        .args([
            "-c",
            driver,
            key,
            bin.to_str().unwrap(),
            "run",
            "-s",
            settings,
            "-c",
            script,
        ])
        .env("XDG_STATE_HOME", dir.s("state"))
        .env("HOME", dir.s("home"))
        .current_dir("/"))
}

/// On a terminal, the question goes to the person at the host terminal (the supervisor's
/// side of the relay, not the sandbox's pty): the key typed answers it and the connection
/// waits meanwhile.
#[test]
fn the_terminal_is_asked_and_the_key_decides() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "net-ask-tty",
        r#"{"network": {"ask": true, "askTimeoutSeconds": 20}}"#,
    );
    let script = format!(
        "curl -sS -o /dev/null -w 'code=%{{http_code}}\\n' --noproxy '' -x http://127.0.0.1:3128 http://localhost:{port}/x; \
         read -r line; echo \"sandbox read: $line\""
    );
    let out = on_a_terminal(&dir, &settings, &script, "d");
    let text = out.ok();
    assert!(
        text.contains(&format!("connect to localhost:{port} (http); allow?")),
        "{out:#?}"
    );
    assert!(text.contains("code=403"), "{out:#?}");
    // "status" and Enter did not answer: the question was shown again.
    assert_eq!(text.matches("allow?").count(), 2, "{out:#?}");
    // The keys went to the question only; the next line reached the sandbox whole.
    assert!(text.contains("sandbox read: hello"), "{out:#?}");
    assert!(!text.contains("sandbox read: dhello"), "{out:#?}");
    assert!(!text.contains("sandbox read: status"), "{out:#?}");
}

/// "Always" is written to the user's settings file (here the -s file) and not asked again.
#[test]
fn always_is_remembered_in_the_settings_file() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "net-ask-always",
        r#"{"network": {"ask": true, "askTimeoutSeconds": 20}}"#,
    );
    let script = format!(
        "for p in a b; do curl -sS -o /dev/null --noproxy '' -x http://127.0.0.1:3128 http://localhost:{port}/$p; done; \
         read -r line; echo \"sandbox read: $line\""
    );
    let out = on_a_terminal(&dir, &settings, &script, "a");
    let text = out.ok();
    // Shown twice (again after "status"), for one question only: the second request was not
    // asked about.
    assert_eq!(text.matches("allow?").count(), 2, "{out:#?}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(
        saved["network"]["allowedDomains"],
        serde_json::json!([format!("localhost:{port}")]),
        "{saved:#}"
    );
    assert_eq!(saved["network"]["ask"], true, "{saved:#}");
}

/// The threads of process `pid` named `name`.
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_proxy_starts_its_workers_only_when_the_sandbox_first_connects() {
    if !need_curl() {
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "net-lazy",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#),
    );
    // The command says where it is on stdout and waits for a line on stdin at each step.
    let script = format!(
        "echo started; read a; curl -sS --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:{port}/lazy; \
         echo fetched; read b"
    );
    let mut child = rf(&dir)
        .args(["run", "-s", &settings, "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    // Before any connection: only the thread that waits for one.
    assert_eq!(
        threads_named(pid, "ringfence-proxy"),
        1,
        "before the first connection"
    );
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "upstream saw /lazy");
    assert_eq!(lines.next().unwrap().unwrap(), "fetched");
    // The runtime's two workers serve now; the waiting thread is gone.
    let workers = threads_named(pid, "ringfence-proxy");
    assert!(
        workers >= 2,
        "after the first connection: {workers} proxy threads"
    );
    stdin.write_all(b"done\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
