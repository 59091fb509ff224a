//! Egress through other proxies, end to end: a parent (corporate) proxy from
//! `network.parentProxy` or the host's HTTP_PROXY, an inspection proxy on a unix socket
//! (`network.mitmProxy`), and the user's own proxy in place of the built-in one
//! (`network.httpProxyPort`). The proxies here are small test servers on the host's loopback
//! that record what they were asked and connect every request to one loopback target; the
//! sandbox reaches them only through ringfence's supervisor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

use common::{run, TestDir};

/// An HTTP server on the host's loopback: answers every request with its path and Host.
fn target() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                let mut host = String::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("host:") {
                        host = v.trim().to_string();
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("?").to_string();
                // Large enough to be moved with splice(2) on the way back.
                let body = if path == "/big" {
                    "x".repeat(1 << 20)
                } else {
                    format!("target saw {path} for {host}\n")
                };
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

/// What a test proxy was asked: the request line and the Proxy-Authorization it carried.
#[derive(Debug, Clone)]
struct Asked {
    line: String,
    auth: Option<String>,
}

type Log = Arc<Mutex<Vec<Asked>>>;

fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Serves one client connection as an HTTP proxy: CONNECT is answered 200 and spliced to the
/// target; an absolute-form request is sent on to the target in origin form. With `auth`, a
/// request without that Proxy-Authorization gets 407.
fn serve_proxy<S: Read + Write + Send + 'static>(
    client: S,
    clone: impl FnOnce(&S) -> S,
    target: u16,
    auth: Option<String>,
    log: Log,
) {
    let mut w = clone(&client);
    let mut r = BufReader::new(client);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let line = line.trim_end().to_string();
    let mut headers = Vec::new();
    let mut got_auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        match h.split_once(':') {
            Some((n, v)) if n.eq_ignore_ascii_case("proxy-authorization") => {
                got_auth = Some(v.trim().to_string())
            }
            _ => headers.push(h),
        }
    }
    log.lock().unwrap().push(Asked {
        line: line.clone(),
        auth: got_auth.clone(),
    });
    if auth.is_some() && got_auth != auth {
        let _ = w.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, uri) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let up = TcpStream::connect(("127.0.0.1", target)).unwrap();
    if method == "CONNECT" {
        let _ = w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    } else {
        let path = uri
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| "/".into());
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for h in &headers {
            head.push_str(h);
        }
        head.push_str("\r\n");
        (&up).write_all(head.as_bytes()).unwrap();
    }
    let up2 = up.try_clone().unwrap();
    let t = thread::spawn(move || pump(r, up2));
    pump(up, w);
    let _ = t.join();
}

/// A test proxy on the host's loopback.
fn tcp_proxy(target: u16, auth: Option<&str>) -> (u16, Log) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let (log2, auth) = (log.clone(), auth.map(str::to_string));
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (log, auth) = (log2.clone(), auth.clone());
            thread::spawn(move || serve_proxy(s, |s| s.try_clone().unwrap(), target, auth, log));
        }
    });
    (port, log)
}

/// A test proxy on a unix socket.
fn unix_proxy(path: &std::path::Path, target: u16) -> Log {
    let l = UnixListener::bind(path).unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let log = log2.clone();
            thread::spawn(move || serve_proxy(s, |s| s.try_clone().unwrap(), target, None, log));
        }
    });
    log
}

/// ringfence with a clean proxy environment (the host's own variables only where a test sets
/// them).
fn rf(dir: &TestDir) -> Command {
    let mut c = common::rf_in(dir);
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

fn setup(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.mkdir("state");
    dir.mkdir("home");
    dir
}

fn need_curl() -> bool {
    if common::have("curl") {
        return true;
    }
    common::skip("curl is not installed");
    false
}

fn events(dir: &TestDir, name: &str) -> Vec<serde_json::Value> {
    common::log_events(rf(dir), name)
}

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|a| a.line.clone()).collect()
}

/// The requests of the parent test, as a shell script run inside the sandbox.
const SCRIPT: &str = "\
curl -sS http://allowed.test/plain; \
curl -sS -p http://allowed.test:8080/tunnel; \
curl -sS -x socks5h://127.0.0.1:1080 http://allowed.test:81/socks; \
curl -sSf http://denied.test/no; echo \" denied=$?\"; \
curl -sSf http://direct.test/no; echo \" direct=$?\"";

#[test]
fn allowed_hosts_go_through_the_parent_proxy_with_its_credentials() {
    if !need_curl() {
        return;
    }
    let t = target();
    // "alice:s@cret" as the URL spells it, and as Basic credentials.
    let (pport, asked) = tcp_proxy(t, Some("Basic YWxpY2U6c0BjcmV0"));
    let dir = setup("pproxy-settings");
    let settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["allowed.test", "direct.test"],
            "parentProxy": {{"http": "http://alice:s%40cret@127.0.0.1:{pport}", "noProxy": "direct.test"}}}}}}"#
    ));
    let name = format!("pproxy-{}", common::unique_number());
    let out = run(rf(&dir).args(["run", "--name", &name, "-s", &settings, "-c", SCRIPT]));
    let stdout = &out.stdout;
    assert!(
        stdout.contains("target saw /plain for allowed.test\n"),
        "{out:#?}"
    );
    assert!(
        stdout.contains("target saw /tunnel for allowed.test:8080\n"),
        "{out:#?}"
    );
    assert!(
        stdout.contains("target saw /socks for allowed.test:81\n"),
        "{out:#?}"
    );
    assert!(!stdout.contains("denied=0"), "{out:#?}");
    assert!(!stdout.contains("direct=0"), "{out:#?}");
    let seen = lines(&asked);
    // Plain HTTP in absolute form, tunnels (HTTP CONNECT and SOCKS) as CONNECT.
    assert!(
        seen.contains(&"GET http://allowed.test/plain HTTP/1.1".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"CONNECT allowed.test:8080 HTTP/1.1".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"CONNECT allowed.test:81 HTTP/1.1".to_string()),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The denied host and the noProxy host never reached the parent.
    assert!(!seen.iter().any(|l| l.contains("denied.test")), "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("direct.test")), "{seen:?}");
    assert!(asked
        .lock()
        .unwrap()
        .iter()
        .all(|a| a.auth.as_deref() == Some("Basic YWxpY2U6c0BjcmV0")));
    // The log says which way each connection left; the credentials are not in it.
    let ev = events(&dir, &name);
    let decisions: Vec<_> = ev.iter().filter(|e| e["kind"] == "net.decision").collect();
    let via_parent = decisions
        .iter()
        .filter(|e| e["host"] == "allowed.test" && e["decision"] == "allow")
        .collect::<Vec<_>>();
    assert_eq!(via_parent.len(), 3, "{decisions:#?}");
    assert!(
        via_parent
            .iter()
            .all(|e| e["via"] == format!("parent http://***@127.0.0.1:{pport}")),
        "{decisions:#?}"
    );
    let direct = decisions
        .iter()
        .find(|e| e["host"] == "direct.test")
        .unwrap();
    assert!(direct.get("via").is_none(), "{direct:#?}");
    assert!(
        direct["error"].as_str().unwrap_or("").contains("resolve"),
        "{direct:#?}"
    );
    let denied = decisions
        .iter()
        .find(|e| e["host"] == "denied.test")
        .unwrap();
    assert_eq!(denied["decision"], "deny", "{denied:#?}");
    let text = serde_json::to_string(&ev).unwrap();
    assert!(
        !text.contains("s%40cret") && !text.contains("s@cret"),
        "{text}"
    );
}

#[test]
fn the_hosts_proxy_variables_are_the_parent_when_settings_name_none() {
    if !need_curl() {
        return;
    }
    let t = target();
    let (pport, asked) = tcp_proxy(t, None);
    let dir = setup("pproxy-env");
    let settings = dir.settings(r#"{"network": {"allowedDomains": ["allowed.test"]}}"#);
    let out = run(rf(&dir)
        .env("HTTP_PROXY", format!("127.0.0.1:{pport}"))
        .args([
            "run",
            "-s",
            &settings,
            "-c",
            "curl -sS http://allowed.test/env; curl -sS -p http://allowed.test/envtunnel; \
             echo \"inside=$HTTP_PROXY\"",
        ]));
    let stdout = out.ok();
    assert!(
        stdout.contains("target saw /env for allowed.test\n"),
        "{out:#?}"
    );
    assert!(
        stdout.contains("target saw /envtunnel for allowed.test\n"),
        "{out:#?}"
    );
    // The sandbox's own variable points at ringfence's proxy, not the host's.
    assert!(stdout.contains("inside=http://127.0.0.1:3128"), "{out:#?}");
    let seen = lines(&asked);
    assert_eq!(
        seen,
        [
            "GET http://allowed.test/env HTTP/1.1",
            "CONNECT allowed.test:80 HTTP/1.1"
        ],
        "{seen:?}"
    );
}

#[test]
fn an_unusable_parent_proxy_stops_the_run() {
    let dir = setup("pproxy-bad");
    let settings = dir.settings(
        r#"{"network": {"parentProxy": {"https": "https://bob:hunter2@proxy.example:443"}}}"#,
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(
        out.stderr.contains("network.parentProxy.https")
            && out.stderr.contains("https://***@proxy.example:443"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("hunter2"), "{out:#?}");
    let settings = dir.settings("{}");
    let out = run(rf(&dir)
        .env("HTTPS_PROXY", "socks5://127.0.0.1:1080")
        .args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("HTTPS_PROXY"), "{out:#?}");
}

#[test]
fn mitm_domains_go_to_the_inspection_socket_and_the_rest_to_the_parent() {
    if !need_curl() {
        return;
    }
    let t = target();
    let (pport, parent) = tcp_proxy(t, None);
    let dir = setup("pproxy-mitm");
    let sock = dir.join("mitm.sock");
    let mitm = unix_proxy(&sock, t);
    let settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["allowed.test", "*.mitm.test"],
            "parentProxy": {{"http": "http://127.0.0.1:{pport}"}},
            "mitmProxy": {{"socketPath": "{}", "domains": ["*.mitm.test"]}}}}}}"#,
        sock.display()
    ));
    let name = format!("pproxy-mitm-{}", common::unique_number());
    let script = "curl -sS http://api.mitm.test/m1; curl -sS -p http://api.mitm.test:8443/m2; \
                  curl -sS -x socks5h://127.0.0.1:1080 http://api.mitm.test/m3; \
                  curl -sS http://allowed.test/p1; \
                  echo \"plainbig=$(curl -sS http://api.mitm.test/big | wc -c)\"; \
                  echo \"tunnelbig=$(curl -sS -p http://api.mitm.test/big | wc -c)\"";
    let out = run(rf(&dir).args(["run", "--name", &name, "-s", &settings, "-c", script]));
    let stdout = out.ok();
    for want in [
        "target saw /m1 for api.mitm.test\n",
        "target saw /m2 for api.mitm.test:8443\n",
        "target saw /m3 for api.mitm.test\n",
        "target saw /p1 for allowed.test\n",
        "plainbig=1048576\n",
        "tunnelbig=1048576\n",
    ] {
        assert!(stdout.contains(want), "{want}: {out:#?}");
    }
    assert_eq!(
        lines(&mitm),
        [
            "GET http://api.mitm.test/m1 HTTP/1.1",
            "CONNECT api.mitm.test:8443 HTTP/1.1",
            "CONNECT api.mitm.test:80 HTTP/1.1",
            "GET http://api.mitm.test/big HTTP/1.1",
            "CONNECT api.mitm.test:80 HTTP/1.1"
        ]
    );
    assert_eq!(lines(&parent), ["GET http://allowed.test/p1 HTTP/1.1"]);
    let ev = events(&dir, &name);
    let via: Vec<_> = ev
        .iter()
        .filter(|e| e["kind"] == "net.decision" && e["host"] == "api.mitm.test")
        .map(|e| e["via"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(via.len(), 5, "{ev:#?}");
    assert!(
        via.iter()
            .all(|v| *v == format!("mitm unix:{}", sock.display())),
        "{via:?}"
    );
}

#[test]
fn http_proxy_port_relays_to_the_users_own_proxy() {
    if !need_curl() {
        return;
    }
    let t = target();
    let (uport, own) = tcp_proxy(t, None);
    let dir = setup("pproxy-own");
    // No allowed domains: ringfence's policy would deny everything; the user's proxy decides.
    let settings = dir.settings(&format!(r#"{{"network": {{"httpProxyPort": {uport}}}}}"#));
    let name = format!("pproxy-own-{}", common::unique_number());
    let script = "curl -sS http://anything.test/own; \
                  curl -sS -x socks5h://127.0.0.1:1080 http://anything.test/socks; echo \" socks=$?\"";
    let out = run(rf(&dir).args(["run", "--name", &name, "-s", &settings, "-c", script]));
    let stdout = &out.stdout;
    assert!(
        stdout.contains("target saw /own for anything.test\n"),
        "{out:#?}"
    );
    // The SOCKS port is still ringfence's, with its policy.
    assert!(!stdout.contains("socks=0"), "{out:#?}");
    assert_eq!(lines(&own), ["GET http://anything.test/own HTTP/1.1"]);
    let ev = events(&dir, &name);
    let relayed: Vec<_> = ev.iter().filter(|e| e["kind"] == "net.relay").collect();
    assert_eq!(relayed.len(), 1, "{ev:#?}");
    assert_eq!(relayed[0]["key"], "network.httpProxyPort");
    assert_eq!(relayed[0]["target"], format!("127.0.0.1:{uport}"));
    assert!(
        relayed[0]["bytesDown"].as_u64().unwrap() > 0,
        "{relayed:#?}"
    );
    assert!(ev.iter().any(|e| e["kind"] == "net.decision"
        && e["decision"] == "deny"
        && e["protocol"] == "socks5"));
}
