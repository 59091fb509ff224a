//! Host services at their own address: an allowed loopback literal with a port
//! (`"127.0.0.1:PORT"`) is listened on inside the sandbox's namespace and carried to the host's
//! service, so clients that skip the proxy for loopback reach it. The services listen on the
//! host's loopback; without the entry (or on another port) nothing inside answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;

use common::{run, TestDir};

fn upstream() -> u16 {
    common::http_upstream(|_, path| format!("host service saw {path}\n"))
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

/// Python inside: connects to 127.0.0.1:PORT directly and prints the answer, or the errno.
fn python_get(port: u16, path: &str) -> String {
    format!(
        r#"python3 -c '
import socket
try:
    s = socket.create_connection(("127.0.0.1", {port}), timeout=20)
    s.sendall(b"GET {path} HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    print(data.decode().splitlines()[-1])
except OSError as e:
    print("python {port} errno=%d" % e.errno)
'"#
    )
}

#[test]
fn allowed_loopback_service_is_reached_at_its_own_address() {
    if !common::have("curl") || !common::have("python3") {
        common::skip("curl or python3 is not installed");
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "svc-allowed",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#),
    );
    let name = format!("svc-{}", common::unique_number());
    let mut script = format!(
        "curl -sS --noproxy '*' http://127.0.0.1:{port}/curl; \
         curl -sS --noproxy '*' http://localhost:{port}/localhost; {}",
        python_get(port, "/python")
    );
    let node = common::have("node");
    if node {
        // Node 20's fetch ignores the proxy variables and connects to loopback directly.
        script += &format!(
            "; node -e 'fetch(\"http://127.0.0.1:{port}/node\").then(r => r.text())\
             .then(t => process.stdout.write(t), e => {{ console.log(\"node failed\", e.cause); }})'"
        );
    } else {
        common::skip("node is not installed: the fetch part is not run");
    }
    let out = run(rf(&dir).args(["run", "--name", &name, "-s", &settings, "-c", &script]));
    let stdout = out.ok();
    assert!(stdout.contains("host service saw /curl\n"), "{out:#?}");
    assert!(stdout.contains("host service saw /python\n"), "{out:#?}");
    // The client resolves the name itself (the sandbox's /etc/hosts) and reaches the address.
    assert!(stdout.contains("host service saw /localhost\n"), "{out:#?}");
    if node {
        assert!(stdout.contains("host service saw /node\n"), "{out:#?}");
    }
    let ev = events(&dir, &name);
    let tcp: Vec<_> = ev
        .iter()
        .filter(|e| e["kind"] == "net.decision" && e["protocol"] == "tcp")
        .collect();
    assert_eq!(tcp.len(), if node { 4 } else { 3 }, "{ev:#?}");
    for e in &tcp {
        assert_eq!(e["decision"], "allow", "{e:#?}");
        assert_eq!(e["host"], "127.0.0.1", "{e:#?}");
        assert_eq!(e["port"], port, "{e:#?}");
        assert_eq!(e["rule"], format!("127.0.0.1:{port}"), "{e:#?}");
        assert_eq!(e["resolved"], format!("127.0.0.1:{port}"), "{e:#?}");
        assert!(
            e["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{e:#?}"
        );
        assert!(e["bytesUp"].as_u64().unwrap() > 0, "{e:#?}");
        assert!(e["bytesDown"].as_u64().unwrap() > 0, "{e:#?}");
        assert!(e.get("durationMs").is_some(), "{e:#?}");
    }
    // The program that connected, found in the sandbox's socket table.
    let mut clients: Vec<&str> = tcp.iter().filter_map(|e| e["client"].as_str()).collect();
    clients.sort_unstable();
    clients.dedup();
    let mut want = vec!["curl", "python3"];
    if node {
        want.insert(1, "node");
    }
    assert_eq!(clients, want, "{ev:#?}");
}

#[test]
fn loopback_ports_not_listed_stay_unreachable() {
    if !common::have("python3") {
        common::skip("python3 is not installed");
        return;
    }
    let listed = upstream();
    let other = upstream();
    let denied = upstream();
    let (dir, settings) = setup(
        "svc-unlisted",
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{listed}", "127.0.0.1:{denied}"],
                "deniedDomains": ["127.0.0.1:{denied}"]}}}}"#
        ),
    );
    let script = format!(
        "{}; {}; {}",
        python_get(listed, "/listed"),
        python_get(other, "/other"),
        python_get(denied, "/denied")
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &script]));
    let stdout = out.ok();
    assert!(stdout.contains("host service saw /listed\n"), "{out:#?}");
    assert_eq!(out.errno(&format!("python {other}")), libc::ECONNREFUSED);
    // A deny entry wins: no listener at all.
    assert_eq!(out.errno(&format!("python {denied}")), libc::ECONNREFUSED);

    // Without the entry the same service is unreachable.
    let (dir, settings) = setup("svc-none", r#"{}"#);
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &python_get(listed, "/x")]));
    assert_eq!(out.errno(&format!("python {listed}")), libc::ECONNREFUSED);
}

#[test]
fn the_sandbox_cannot_take_a_served_port() {
    if !common::have("python3") {
        common::skip("python3 is not installed");
        return;
    }
    let port = upstream();
    let (dir, settings) = setup(
        "svc-bind",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#),
    );
    let script = format!(
        r#"python3 -c '
import socket
for host in ("127.0.0.1", "0.0.0.0"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, {port})); s.listen(1)
        print("bind %s errno=0" % host)
    except OSError as e:
        print("bind %s errno=%d" % (host, e.errno))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    s.bind(("127.0.0.1", {port})); s.listen(1)
    print("reuseport errno=0")
except OSError as e:
    print("reuseport errno=%d" % e.errno)
'; {}"#,
        python_get(port, "/still-served")
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &script]));
    assert_eq!(out.errno("bind 127.0.0.1"), libc::EADDRINUSE, "{out:#?}");
    assert_eq!(out.errno("bind 0.0.0.0"), libc::EADDRINUSE, "{out:#?}");
    assert_eq!(out.errno("reuseport"), libc::EADDRINUSE, "{out:#?}");
    assert!(
        out.stdout.contains("host service saw /still-served\n"),
        "{out:#?}"
    );
}

#[test]
fn ipv6_loopback_service_is_reached_at_its_own_address() {
    if !common::have("curl") {
        common::skip("curl is not installed");
        return;
    }
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        common::not_here("the host has no IPv6 loopback");
        return;
    };
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nv6\n"
            );
        }
    });
    let (dir, settings) = setup(
        "svc-v6",
        &format!(r#"{{"network": {{"allowedDomains": ["[::1]:{port}"]}}}}"#),
    );
    let script = format!("curl -sS --noproxy '*' 'http://[::1]:{port}/'");
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &script]));
    assert_eq!(out.ok(), "v6\n", "{out:#?}");
}

#[test]
fn live_updates_decide_served_connections_but_add_no_listeners() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    if !common::have("python3") || !common::have("curl") {
        common::skip("curl or python3 is not installed");
        return;
    }
    let first = upstream();
    let second = upstream();
    let (dir, settings) = setup(
        "svc-live",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{first}"]}}}}"#),
    );
    let name = format!("svc-{}", common::unique_number());
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    // The first connection is served; its decision makes the controller replace the list with
    // the second port. The script then waits until the first port is refused, and tries the
    // second at its own address (no listener) and through the proxy (allowed).
    let script = format!(
        "{before}; \
         i=0; while [ $i -lt 600 ]; do out=$({probe}); \
           case \"$out\" in *'host service saw'*) sleep 0.05; i=$((i+1));; *) echo first-refused; break;; esac; done; \
         {direct}; curl -sS -x http://127.0.0.1:3128 --noproxy '' http://127.0.0.1:{second}/proxied",
        before = python_get(first, "/before"),
        probe = python_get(first, "/after"),
        direct = python_get(second, "/direct"),
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
    let controller = thread::spawn(move || {
        let mut w = ours.try_clone().unwrap();
        let mut sent = false;
        for line in BufReader::new(ours).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if !sent && v["type"] == "decision" && v["port"] == first {
                writeln!(
                    w,
                    r#"{{"type":"policy","network":{{"allowedDomains":["127.0.0.1:{second}"]}}}}"#
                )
                .unwrap();
                sent = true;
            }
        }
    });
    let out = common::wait(child, common::RUN_TIMEOUT);
    controller.join().unwrap();
    let stdout = out.ok();
    assert!(stdout.contains("host service saw /before\n"), "{out:#?}");
    assert!(stdout.contains("first-refused\n"), "{out:#?}");
    assert_eq!(out.errno(&format!("python {second}")), libc::ECONNREFUSED);
    assert!(stdout.contains("host service saw /proxied\n"), "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "--control-fd allowed 127.0.0.1:{second}, but only host services"
        )),
        "{out:#?}"
    );
    let ev = events(&dir, &name);
    let update = ev
        .iter()
        .find(|e| e["kind"] == "policy.update")
        .expect("a policy.update event");
    assert_eq!(
        update["unserved"],
        serde_json::json!([format!("127.0.0.1:{second}")]),
        "{update:#?}"
    );
    assert!(
        ev.iter().any(|e| e["kind"] == "net.decision"
            && e["protocol"] == "tcp"
            && e["port"] == first
            && e["decision"] == "deny"),
        "{ev:#?}"
    );
}

#[test]
fn as_many_services_as_the_setup_channel_carries_are_served() {
    if !common::have("python3") {
        common::skip("python3 is not installed");
        return;
    }
    let port = upstream();
    // 61 listeners, the proxy's two, and room for the pty master: 64 descriptors.
    let mut entries: Vec<String> = (0..60)
        .map(|i| format!("\"127.0.0.1:{}\"", 20000 + i))
        .collect();
    entries.push(format!("\"127.0.0.1:{port}\""));
    let (dir, settings) = setup(
        "svc-most",
        &format!(
            r#"{{"network": {{"allowedDomains": [{}]}}}}"#,
            entries.join(",")
        ),
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "-c", &python_get(port, "/last")]));
    assert!(out.ok().contains("host service saw /last\n"), "{out:#?}");
}

#[test]
fn more_services_than_the_setup_channel_carries_are_refused() {
    let entries: Vec<String> = (0..70)
        .map(|i| format!("\"127.0.0.1:{}\"", 20000 + i))
        .collect();
    let (dir, settings) = setup(
        "svc-many",
        &format!(
            r#"{{"network": {{"allowedDomains": [{}]}}}}"#,
            entries.join(",")
        ),
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(
        out.stderr
            .contains("network.allowedDomains: 70 loopback services with a port"),
        "{out:#?}"
    );
}
