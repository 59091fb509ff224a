//! `ringfence proxy --listen-fd N --decider-fd M`: srt's standalone proxy with an external
//! decider. The test is the decider (srt's framing: a 4-byte big-endian length and one JSON
//! object), hands ringfence a listening socket and one end of a socketpair as inherited
//! descriptors, and checks that every request goes upstream only on an allow, as decided, and
//! that a decider that breaks the protocol or goes away means every request is refused. The
//! same requests and verdicts run against srt 0.0.83's own proxy-only mode (`srt-proxy`, from
//! `RINGFENCE_SRT_DIR`), which must answer them alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LISTEN_FD: i32 = 100;
const DECIDER_FD: i32 = 101;

fn write_frame(s: &mut UnixStream, v: &Value) {
    write_raw(s, v.to_string().as_bytes());
}

fn write_raw(s: &mut UnixStream, body: &[u8]) {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    s.write_all(&f).unwrap();
}

fn read_frame(s: &mut UnixStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    serde_json::from_slice(&buf).unwrap()
}

/// An upstream that answers 200 with the whole request it received (head and
/// Content-Length body) as its body.
fn echo_upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut seen = String::new();
                let mut length = 0usize;
                let mut chunked = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
                    seen.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                if chunked {
                    // The decoded body, after a marker.
                    seen.push_str("[chunked]");
                    loop {
                        let mut size = String::new();
                        r.read_line(&mut size).unwrap();
                        let n = usize::from_str_radix(size.trim(), 16).unwrap();
                        if n == 0 {
                            r.read_line(&mut String::new()).unwrap();
                            break;
                        }
                        let mut data = vec![0u8; n + 2];
                        r.read_exact(&mut data).unwrap();
                        seen.push_str(&String::from_utf8_lossy(&data[..n]));
                    }
                } else {
                    let mut body = vec![0u8; length];
                    r.read_exact(&mut body).unwrap();
                    seen.push_str(&String::from_utf8_lossy(&body));
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{seen}",
                    seen.len()
                );
            });
        }
    });
    port
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    decider: UnixStream,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ringfence's standalone proxy.
fn ringfence() -> Vec<String> {
    vec![common::bin().to_str().unwrap().to_string(), "proxy".into()]
}

/// srt's own (`srt-proxy`, dist/proxy-main.js of the installed srt), or a counted skip.
fn srt_proxy() -> Option<Vec<String>> {
    let dir = std::env::var_os("RINGFENCE_SRT_DIR").map(std::path::PathBuf::from);
    let main = dir
        .map(|d| d.join("dist/proxy-main.js"))
        .filter(|m| m.is_file());
    match (main, common::have("node")) {
        (Some(m), true) => Some(vec!["node".into(), m.to_str().unwrap().to_string()]),
        _ => {
            common::skip("srt (RINGFENCE_SRT_DIR) and node are needed to run srt's own proxy");
            None
        }
    }
}

/// Starts `program` (ringfence's or srt's proxy) with the decider's lists and `extra` options,
/// answering its hello.
fn start_program(program: &[String], allowed: &[&str], denied: &[&str], extra: &[&str]) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let (l, d) = (listener.as_raw_fd(), theirs.as_raw_fd());
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..])
        .args([
            "--listen-fd",
            &LISTEN_FD.to_string(),
            "--decider-fd",
            &DECIDER_FD.to_string(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only dup2 and fcntl, both async-signal-safe, on
    // descriptors this process holds open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(l, LISTEN_FD), (d, DECIDER_FD)] {
                if libc::dup2(from, to) < 0 || libc::fcntl(to, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(listener);
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(read_frame(&mut ours), json!({"t": "hello", "proto": 1}));
    write_frame(
        &mut ours,
        &json!({"t": "hello", "proto": 1, "allowedDomains": allowed, "deniedDomains": denied}),
    );
    Gateway {
        child,
        addr,
        decider: ours,
    }
}

/// Sends one raw request from another thread; returns its handle.
fn send(addr: SocketAddr, raw: String) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn get(port: u16, path: &str, extra_headers: &str) -> String {
    format!("GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra_headers}\r\n")
}

#[test]
fn every_request_goes_upstream_only_as_the_decider_says() {
    scenario(&ringfence());
}

/// The same requests and verdicts against srt's own proxy-only mode: ringfence's answers are
/// the ones srt gives.
#[test]
fn srt_answers_the_same_requests_alike() {
    if let Some(srt) = srt_proxy() {
        scenario(&srt);
    }
}

fn scenario(program: &[String]) {
    let up = echo_upstream();
    let entry = format!("127.0.0.1:{up}");
    let mut gw = start_program(program, &[&entry], &[], &[]);

    // Allowed, with a header removed: the decider sees the request, upstream what it allowed.
    let client = send(
        gw.addr,
        get(up, "/a/b?x=1", "X-Secret: s3\r\nX-Keep: k\r\n"),
    );
    let req = read_frame(&mut gw.decider);
    assert_eq!(req["t"], "req");
    assert_eq!(req["id"], 1);
    assert_eq!(req["method"], "GET");
    assert_eq!(req["host"], "127.0.0.1");
    assert_eq!(req["port"], up);
    assert_eq!(req["path"], "/a/b");
    assert_eq!(req["query"], "x=1");
    assert_eq!(req["hostHeader"], entry);
    assert_eq!(req["headers"]["x-secret"], json!(["s3"]));
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 1, "action": "allow", "removeHeaders": ["x-secret"]}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("GET /a/b?x=1 HTTP/1.1"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-keep: k"), "{out}");
    assert!(!out.contains("s3"), "{out}");

    // Denied by the decider: its status and reason, nothing upstream.
    let client = send(gw.addr, get(up, "/no", ""));
    let req = read_frame(&mut gw.decider);
    assert_eq!(req["id"], 2);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 2, "action": "deny", "status": 451, "reason": "not this one"}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 451"), "{out}");
    assert!(lc(&out).contains("x-deny-reason: decider"), "{out}");
    assert!(out.contains("not this one"), "{out}");
    assert!(!out.contains("GET /no"), "{out}");

    // A body shown to the decider first (cut at its max), then forwarded whole.
    let body = "0123456789";
    let client = send(
        gw.addr,
        format!(
            "POST http://127.0.0.1:{up}/up HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let req = read_frame(&mut gw.decider);
    assert_eq!(req["method"], "POST");
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 3, "action": "need_body", "max": 4}),
    );
    let b = read_frame(&mut gw.decider);
    assert_eq!(
        b,
        json!({"t": "body", "id": 3, "data": "MDEyMw==", "cut": true})
    );
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 3, "action": "allow"}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(body), "{out}");

    // A chunked body, shown decoded (and cut) and forwarded whole.
    let chunked = format!(
        "POST http://127.0.0.1:{up}/ch HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    );
    let client = send(gw.addr, chunked.clone());
    assert_eq!(read_frame(&mut gw.decider)["id"], 4);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 4, "action": "need_body", "max": 5}),
    );
    // "abcde"
    assert_eq!(
        read_frame(&mut gw.decider),
        json!({"t": "body", "id": 4, "data": "YWJjZGU=", "cut": true})
    );
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 4, "action": "allow"}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("[chunked]abcdefg"), "{out}");

    // The same body within the max: shown whole, not cut; then denied.
    let client = send(gw.addr, chunked);
    assert_eq!(read_frame(&mut gw.decider)["id"], 5);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 5, "action": "need_body", "max": 7}),
    );
    assert_eq!(
        read_frame(&mut gw.decider),
        json!({"t": "body", "id": 5, "data": "YWJjZGVmZw=="})
    );
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 5, "action": "deny", "status": 403}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(!out.contains("[chunked]"), "{out}");

    // An allow that sets a header is refused on plain HTTP without --plaintext-header-set.
    let client = send(gw.addr, get(up, "/set", ""));
    read_frame(&mut gw.decider);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 6, "action": "allow", "setHeaders": {"x-added": ["v"]}}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(
        lc(&out).contains("x-deny-reason: plaintext_header_set"),
        "{out}"
    );

    // Refused without asking: a host outside the hello's list, a CONNECT, a Host mismatch.
    let other = echo_upstream();
    let out = send(gw.addr, get(other, "/", "")).join().unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(
        lc(&out).contains("x-deny-reason: host_not_allowed"),
        "{out}"
    );
    let out = send(
        gw.addr,
        format!("CONNECT 127.0.0.1:{up} HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\n\r\n"),
    )
    .join()
    .unwrap();
    assert!(lc(&out).contains("x-deny-reason: opaque_tunnel"), "{out}");
    let out = send(
        gw.addr,
        format!(
            "GET http://127.0.0.1:{up}/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        ),
    )
    .join()
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 421"), "{out}");

    // The next request still gets the next id: none of those was asked about.
    let client = send(gw.addr, get(up, "/last", ""));
    let req = read_frame(&mut gw.decider);
    assert_eq!(req["id"], 7);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 7, "action": "allow"}),
    );
    assert!(client.join().unwrap().starts_with("HTTP/1.1 200"));
}

fn exits(gw: &mut Gateway) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if gw.child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = gw.child.kill();
    let mut err = String::new();
    if let Some(mut e) = gw.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    eprintln!("the gateway did not stop; its stderr: {err}");
    false
}

/// ringfence only: a body whose framing is ambiguous is refused, and headers the client's
/// Connection header names are hop-by-hop.
#[test]
fn ambiguous_bodies_are_refused_and_connection_named_headers_dropped() {
    let up = echo_upstream();
    let mut gw = start_program(&ringfence(), &[&format!("127.0.0.1:{up}")], &[], &[]);
    let out = send(
        gw.addr,
        format!(
            "POST http://127.0.0.1:{up}/c HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        ),
    )
    .join()
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let client = send(
        gw.addr,
        get(
            up,
            "/h",
            "Connection: x-hop\r\nX-Hop: gone\r\nX-Stay: here\r\n",
        ),
    );
    assert_eq!(read_frame(&mut gw.decider)["id"], 1);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 1, "action": "allow"}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("X-Stay: here"), "{out}");
    assert!(!out.contains("gone"), "{out}");
}

/// The decider over a pair of pipes (`--decider-in`, `--decider-out`) instead of a socket.
#[test]
fn a_decider_over_two_pipes() {
    let up = echo_upstream();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (to_proxy_r, mut to_proxy_w) = std::io::pipe().unwrap();
    let (mut from_proxy_r, from_proxy_w) = std::io::pipe().unwrap();
    let fds = [
        (listener.as_raw_fd(), LISTEN_FD),
        (to_proxy_r.as_raw_fd(), DECIDER_FD),
        (from_proxy_w.as_raw_fd(), DECIDER_FD + 1),
    ];
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "proxy",
        "--listen-fd",
        "100",
        "--decider-in",
        "101",
        "--decider-out",
        "102",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: as in `start_program`.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in fds {
                if libc::dup2(from, to) < 0 || libc::fcntl(to, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop((listener, to_proxy_r, from_proxy_w));
    let read = |r: &mut std::io::PipeReader| {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut buf).unwrap();
        serde_json::from_slice::<Value>(&buf).unwrap()
    };
    let write = |w: &mut std::io::PipeWriter, v: Value| {
        let body = v.to_string();
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body.as_bytes());
        w.write_all(&f).unwrap();
    };
    assert_eq!(read(&mut from_proxy_r), json!({"t": "hello", "proto": 1}));
    write(
        &mut to_proxy_w,
        json!({"t": "hello", "proto": 1, "allowedDomains": [format!("127.0.0.1:{up}")], "deniedDomains": []}),
    );
    let client = send(addr, get(up, "/p", ""));
    assert_eq!(read(&mut from_proxy_r)["path"], "/p");
    write(
        &mut to_proxy_w,
        json!({"t": "verdict", "id": 1, "action": "allow"}),
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Closing the decider's stream stops the proxy.
    drop(to_proxy_w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        stopped,
        "the proxy did not stop when its decider's stream ended"
    );
}

#[test]
fn a_decider_that_sends_garbage_means_deny() {
    garbage(&ringfence());
}

#[test]
fn a_decider_that_disconnects_means_deny() {
    disconnect(&ringfence());
}

#[test]
fn a_verdict_for_a_request_nobody_asked_about_means_deny() {
    unasked(&ringfence());
}

/// srt fails closed the same way.
#[test]
fn srt_fails_closed_alike() {
    if let Some(srt) = srt_proxy() {
        garbage(&srt);
        disconnect(&srt);
        unasked(&srt);
    }
}

fn garbage(program: &[String]) {
    let up = echo_upstream();
    let mut gw = start_program(program, &[&format!("127.0.0.1:{up}")], &[], &[]);
    let client = send(gw.addr, get(up, "/x", ""));
    read_frame(&mut gw.decider);
    // A verdict with a duplicate key is not a verdict.
    write_raw(
        &mut gw.decider,
        br#"{"t":"verdict","id":1,"action":"allow","action":"allow"}"#,
    );
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(
        lc(&out).contains("x-deny-reason: decider_unavailable"),
        "{out}"
    );
    assert!(!out.contains("GET /x"), "{out}");
    assert!(exits(&mut gw), "the gateway stops once its decider is gone");
}

fn disconnect(program: &[String]) {
    let up = echo_upstream();
    let mut gw = start_program(program, &[&format!("127.0.0.1:{up}")], &[], &[]);
    let client = send(gw.addr, get(up, "/x", ""));
    read_frame(&mut gw.decider);
    gw.decider.shutdown(std::net::Shutdown::Both).unwrap();
    let out = client.join().unwrap();
    // Refused (or, had the gateway already gone, never answered): never forwarded.
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(!out.contains("GET /x"), "{out}");
    assert!(exits(&mut gw));
}

fn unasked(program: &[String]) {
    let up = echo_upstream();
    let mut gw = start_program(program, &[&format!("127.0.0.1:{up}")], &[], &[]);
    write_frame(
        &mut gw.decider,
        &json!({"t": "verdict", "id": 7, "action": "allow"}),
    );
    assert!(exits(&mut gw));
}

#[test]
fn a_bad_hello_and_unsupported_options_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let (l, d) = (listener.as_raw_fd(), theirs.as_raw_fd());
    let mut cmd = Command::new(common::bin());
    cmd.args(["proxy", "--listen-fd", "100", "--decider-fd", "101"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: as in `start`.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(l, LISTEN_FD), (d, DECIDER_FD)] {
                if libc::dup2(from, to) < 0 || libc::fcntl(to, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    read_frame(&mut ours);
    write_frame(&mut ours, &json!({"t": "hello", "proto": 2}));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hello"),
        "{out:?}"
    );

    let out = Command::new(common::bin())
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--decider-fd",
            "3",
            "--ca-fd",
            "4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca-fd"),
        "{out:?}"
    );
}
