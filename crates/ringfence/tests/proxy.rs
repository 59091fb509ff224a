//! End-to-end tests of `ringfence proxy`: a small HTTP upstream on 127.0.0.1, the proxy on a
//! free loopback port, driven with curl (HTTP, CONNECT, SOCKS5) and with raw sockets for
//! malformed and smuggling-style requests. Every refusal test also checks that nothing reached
//! the upstream, and each has an accepted twin, so that a proxy that refuses everything fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback HTTP/1.1 server that answers every request with 200 and the path, and keeps
/// the heads it received.
struct Upstream {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let h = h.clone();
                std::thread::spawn(move || serve_upstream(s, h));
            }
        });
        Upstream { port, heads }
    }

    fn count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

fn serve_upstream(s: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if let Some(cl) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
        {
            body.resize(cl.trim().parse().unwrap(), 0);
            r.read_exact(&mut body).unwrap();
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        heads.lock().unwrap().push(head);
        if path == "/big" {
            let body = big_body();
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if w.write_all(h.as_bytes()).is_err() || w.write_all(&body).is_err() {
                return;
            }
            continue;
        }
        let text = format!("upstream-ok {path} {}", String::from_utf8_lossy(&body));
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A body large enough to take the proxy's splice path, with content that shows reordering.
fn big_body() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i % 251) as u8).collect()
}

/// A running `ringfence proxy`, killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
    /// The gateway's first line on stderr.
    banner: String,
    dir: PathBuf,
    /// The other end of `--control-fd 3`, when one was given.
    control: Option<BufReader<UnixStream>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    fn start(settings: &str, with_control: bool) -> Gateway {
        Self::start_with(settings, with_control, &[])
    }

    /// [`Gateway::start`] with more arguments (relative paths are in its directory).
    fn start_with(settings: &str, with_control: bool, extra: &[&str]) -> Gateway {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringfence-proxy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.json");
        std::fs::write(&file, settings).unwrap();
        let log = dir.join("decisions.log");
        let mut cmd = Command::new(common::bin());
        cmd.arg("proxy")
            .arg("-s")
            .arg(&file)
            .args(["--listen", "127.0.0.1:0", "--log"])
            .arg(&log)
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut control = None;
        if with_control {
            let (ours, theirs) = UnixStream::pair().unwrap();
            use std::os::fd::{AsRawFd, IntoRawFd};
            let fd = theirs.into_raw_fd();
            use std::os::unix::process::CommandExt;
            // SAFETY: dup2 and close are async-signal-safe; fd stays open in the parent
            // until the child has been spawned.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.args(["--control-fd", "3"]);
            let child = cmd.spawn().unwrap();
            // SAFETY: closing our copy of the child's end.
            unsafe { libc::close(fd) };
            ours.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = ours.as_raw_fd();
            control = Some(BufReader::new(ours));
            return Self::finish(child, dir, control);
        }
        let child = cmd.spawn().unwrap();
        Self::finish(child, dir, control)
    }

    /// The directory for `start_with`'s relative paths, before the gateway starts.
    fn next_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ringfence-proxy-clients-{}-{}",
            std::process::id(),
            common::unique_number()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn finish(mut child: Child, dir: PathBuf, control: Option<BufReader<UnixStream>>) -> Gateway {
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let port = line
            .split("listening on 127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no listening line: {line:?}"));
        // Keep draining stderr so the proxy never blocks on it.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
        });
        Gateway {
            child,
            port,
            banner: line,
            dir,
            control,
        }
    }

    fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Decision lines written so far.
    fn decisions(&self) -> Vec<serde_json::Value> {
        // Lines are flushed as soon as the writer's queue is empty.
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(self.dir.join("decisions.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Sends raw bytes and returns everything the proxy answers before closing (or 5 s).
    fn raw(&self, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "--noproxy", ""])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn need_curl() -> bool {
    if common::have("curl") {
        return true;
    }
    common::skip("curl is not installed (apt-get install curl)");
    false
}

#[test]
fn curl_http_connect_and_socks5_allowed_and_denied() {
    if !need_curl() {
        return;
    }
    let up = Upstream::start();
    let gw = Gateway::start(
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{}"], "deniedDomains": ["bad.example"],
                "deniedDomainReasons": {{"bad.example": "use the internal mirror"}}}}}}"#,
            up.port
        ),
        false,
    );
    let target = format!("http://127.0.0.1:{}/hello", up.port);
    let px = gw.proxy_url();
    let socks = format!("socks5h://agent-1:pw@127.0.0.1:{}", gw.port);
    let socks_plain = format!("socks5://127.0.0.1:{}", gw.port);
    for args in [
        vec!["-x", px.as_str(), target.as_str()],
        vec!["-p", "-x", px.as_str(), target.as_str()],
        vec!["--proxy", socks.as_str(), target.as_str()],
        vec!["--proxy", socks_plain.as_str(), target.as_str()],
    ] {
        let o = curl(&args);
        assert_eq!(text(&o), "upstream-ok /hello ", "{args:?}: {o:?}");
    }
    assert_eq!(up.count(), 4);
    // Large bodies, tunnels and SOCKS5 arrive intact.
    let big = format!("http://127.0.0.1:{}/big", up.port);
    for args in [
        vec!["-x", px.as_str(), big.as_str()],
        vec!["-p", "-x", px.as_str(), big.as_str()],
        vec!["--proxy", socks.as_str(), big.as_str()],
    ] {
        let o = curl(&args);
        assert!(o.stdout == big_body(), "{args:?}: {} bytes", o.stdout.len());
    }
    assert_eq!(up.count(), 7);

    // The same upstream on a port the policy does not list.
    let other = Upstream::start();
    let denied_target = format!("http://127.0.0.1:{}/x", other.port);
    let o = curl(&["-i", "-x", &px, &denied_target]);
    let out = text(&o);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("X-Proxy-Error: blocked-by-ringfence"), "{out}");
    let o = curl(&["-i", "-x", &px, "http://bad.example/"]);
    assert!(text(&o).contains("bad.example:80 is not allowed: use the internal mirror"));
    let o = curl(&["-p", "-x", &px, "http://bad.example/"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("403"), "{o:?}");
    let o = curl(&["--proxy", &socks, &denied_target]);
    assert_eq!(o.status.code(), Some(97), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("(2)"), "{o:?}");
    assert_eq!(other.count(), 0);

    let d = gw.decisions();
    let by_agent: Vec<_> = d.iter().filter(|e| e["client"] == "agent-1").collect();
    assert_eq!(by_agent.len(), 3, "{d:?}");
    assert!(
        by_agent[1]["bytesDown"].as_u64().unwrap() > 3_000_000,
        "{d:?}"
    );
    assert_eq!(by_agent[0]["decision"], "allow");
    assert_eq!(by_agent[0]["protocol"], "socks5");
    assert_eq!(by_agent[2]["decision"], "deny");
    assert!(d.iter().all(|e| e["kind"] == "net.decision"));
    let denied = d
        .iter()
        .find(|e| e["host"] == "bad.example")
        .expect("a decision for bad.example");
    assert_eq!(denied["rule"], "bad.example");
}

#[test]
fn names_resolving_to_loopback_are_refused() {
    if !need_curl() {
        return;
    }
    let up = Upstream::start();
    let gw = Gateway::start(
        &format!(
            r#"{{"network": {{"allowedDomains": ["localhost", "127.0.0.1:{}", "127.0.0.2"]}}}}"#,
            up.port
        ),
        false,
    );
    let px = gw.proxy_url();
    for url in [
        format!("http://localhost:{}/", up.port),
        format!("http://LOCALHOST.:{}/", up.port),
        // Allowed as a literal, but without a port: host services need one.
        format!("http://127.0.0.2:{}/", up.port),
        // Spellings of 127.0.0.1 on a port the entry does not name.
        format!("http://2130706433:{}/", up.port + 1),
    ] {
        let o = curl(&["-i", "-x", &px, &url]);
        let out = text(&o);
        assert!(out.starts_with("HTTP/1.1 403"), "{url}: {out}");
    }
    let o = curl(&["-i", "-x", &px, &format!("http://localhost:{}/", up.port)]);
    assert!(text(&o).contains("loopback"), "{}", text(&o));
    let o = curl(&[
        "--proxy",
        &format!("socks5h://127.0.0.1:{}", gw.port),
        &format!("http://localhost:{}/", up.port),
    ]);
    assert_eq!(o.status.code(), Some(97));
    assert_eq!(up.count(), 0);
    // Other spellings of the allowed literal and port are the same destination.
    for host in ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1"] {
        let o = curl(&["-x", &px, &format!("http://{host}:{}/s", up.port)]);
        assert_eq!(text(&o), "upstream-ok /s ", "{host}");
    }
}

#[test]
fn malformed_and_smuggling_requests_are_refused() {
    let up = Upstream::start();
    let gw = Gateway::start(
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{}"]}}}}"#,
            up.port
        ),
        false,
    );
    let t = format!("127.0.0.1:{}", up.port);
    // Accepted twins first: the same shapes, well formed.
    let ok = gw.raw(
        format!("POST http://{t}/a HTTP/1.1\r\nHost: {t}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").as_bytes(),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("upstream-ok /a abc"), "{ok}");
    let ok = gw.raw(
        format!("POST http://{t}/c HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes(),
    );
    assert!(ok.ends_with("upstream-ok /c abc"), "{ok}");
    // Two requests on one connection (keep-alive to the proxy and to the upstream).
    let two = gw.raw(
        format!("GET http://{t}/1 HTTP/1.1\r\nHost: {t}\r\n\r\nGET http://{t}/2 HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        two.contains("upstream-ok /1") && two.contains("upstream-ok /2"),
        "{two}"
    );
    let seen = up.count();
    assert_eq!(seen, 4);
    let last = up.heads.lock().unwrap()[3].clone();
    assert!(last.starts_with("GET /2 HTTP/1.1\r\n"), "{last}");
    assert!(!last.to_ascii_lowercase().contains("connection:"), "{last}");

    let big = "a".repeat(70 * 1024);
    let cases: Vec<(String, &str)> = vec![
        (format!("POST http://{t}/ HTTP/1.1\r\nHost: {t}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"), "400"),
        (format!("POST http://{t}/ HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), "400"),
        (format!("POST http://{t}/ HTTP/1.1\r\nHost: {t}\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc"), "400"),
        (format!("POST http://{t}/ HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding: xchunked\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\nHost: {t}\r\nX-Bad: a\x01b\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\nHost: {t}\r\nX Bad: 1\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\nHost: {t}\r\nX-Fold: 1\r\n folded\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\nHost: {t}\n\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\nHost: {t}\r\nX-Big: {big}\r\n\r\n"), "431"),
        (format!("GET / HTTP/1.1\r\nHost: {t}\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\nHost: {t}\r\nHost: {t}\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/1.1\r\n\r\n"), "400"),
        (format!("GET http://x@{t}/ HTTP/1.1\r\nHost: {t}\r\n\r\n"), "400"),
        (format!("GET  http://{t}/ HTTP/1.1\r\nHost: {t}\r\n\r\n"), "400"),
        (format!("GET http://{t}/ HTTP/9.9\r\nHost: {t}\r\n\r\n"), "400"),
        ("garbage\r\n\r\n".to_string(), "400"),
    ];
    for (req, status) in &cases {
        let out = gw.raw(req.as_bytes());
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {out:?}",
            &req[..req.len().min(120)]
        );
        assert!(!out.contains("blocked-by-ringfence"), "{out}");
    }
    assert_eq!(up.count(), seen, "a refused request reached the upstream");
}

#[test]
fn socks5_commands_and_address_types() {
    let up = Upstream::start();
    let gw = Gateway::start(
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{}"]}}}}"#,
            up.port
        ),
        false,
    );
    let socks = |req: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&[5, 1, 0]).unwrap();
        let mut m = [0u8; 2];
        s.read_exact(&mut m).unwrap();
        assert_eq!(m, [5, 0]);
        s.write_all(req).unwrap();
        let mut r = [0u8; 10];
        let n = s.read(&mut r).unwrap();
        r[..n].to_vec()
    };
    let p = up.port.to_be_bytes();
    // CONNECT to the allowed IPv4 literal succeeds; BIND and UDP ASSOCIATE are refused with
    // "command not supported"; IPv6 loopback is not allowed by the ruleset.
    assert_eq!(socks(&[5, 1, 0, 1, 127, 0, 0, 1, p[0], p[1]])[1], 0x00);
    assert_eq!(socks(&[5, 2, 0, 1, 127, 0, 0, 1, p[0], p[1]])[1], 0x07);
    assert_eq!(socks(&[5, 3, 0, 1, 127, 0, 0, 1, p[0], p[1]])[1], 0x07);
    let mut v6 = vec![5, 1, 0, 4];
    v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v6.extend_from_slice(&p);
    assert_eq!(socks(&v6)[1], 0x02);
    // A domain with a NUL byte is malformed, so not allowed.
    let name = b"127.0.0.1\0.evil";
    let mut d = vec![5, 1, 0, 3, name.len() as u8];
    d.extend_from_slice(name);
    d.extend_from_slice(&p);
    assert_eq!(socks(&d)[1], 0x02);
    // An unknown address type.
    assert_eq!(socks(&[5, 1, 0, 9, 0, 0])[1], 0x08);
}

/// Reads the next JSON line from the control channel.
fn next_line(c: &mut BufReader<UnixStream>) -> serde_json::Value {
    let mut line = String::new();
    c.read_line(&mut line).expect("a control line in time");
    serde_json::from_str(&line).unwrap()
}

#[test]
fn ask_flow_and_live_updates_over_control_fd() {
    if !need_curl() {
        return;
    }
    let up = Upstream::start();
    let mut gw = Gateway::start(
        r#"{"network": {"ask": true, "askTimeoutSeconds": 2, "allowedDomains": [], "deniedDomains": []}}"#,
        true,
    );
    let px = gw.proxy_url();
    let url = format!("http://localhost:{}/", up.port);
    let ask_once = |gw: &mut Gateway, answer: &str| {
        let px = px.clone();
        let url = url.clone();
        let h = std::thread::spawn(move || curl(&["-i", "-x", &px, &url]));
        let c = gw.control.as_mut().unwrap();
        let q = next_line(c);
        assert_eq!(q["type"], "ask", "{q}");
        assert_eq!(q["host"], "localhost");
        assert_eq!(q["port"], up.port);
        assert_eq!(q["protocol"], "http");
        let line = format!(
            "{{\"type\":\"answer\",\"id\":{},\"answer\":\"{answer}\"}}\n",
            q["id"]
        );
        c.get_mut().write_all(line.as_bytes()).unwrap();
        text(&h.join().unwrap())
    };
    // Denied by the user.
    let out = ask_once(&mut gw, "deny");
    assert!(out.contains("not allowed when asked"), "{out}");
    // Allowed once: the policy lets it through, and the resolved-address check still refuses
    // loopback.
    let out = ask_once(&mut gw, "once");
    assert!(out.contains("resolves only to refused addresses"), "{out}");
    // No answer: denied after the timeout, and the question is withdrawn.
    let out = curl(&["-i", "-x", &px, &url]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("not allowed when asked"),
        "{}",
        text(&out)
    );
    let c = gw.control.as_mut().unwrap();
    assert_eq!(next_line(c)["type"], "ask");
    assert_eq!(next_line(c)["type"], "expired");
    // "always" adds the entry: the next request is not asked about (the next line on the
    // channel is the answer to a nonsense line, not a question).
    let out = ask_once(&mut gw, "always");
    assert!(out.contains("resolves only to refused addresses"), "{out}");
    let out = text(&curl(&["-i", "-x", &px, &url]));
    assert!(out.contains("resolves only to refused addresses"), "{out}");
    let c = gw.control.as_mut().unwrap();
    c.get_mut().write_all(b"{\"type\":\"nonsense\"}\n").unwrap();
    assert_eq!(next_line(c)["type"], "error");
    // Literal host-service addresses are never asked about.
    let lit = format!("http://127.0.0.1:{}/", up.port);
    let out = text(&curl(&["-i", "-x", &px, &lit]));
    assert!(out.contains("loopback address"), "{out}");
    // A live update (our line format), then srt's (a whole settings document), then an
    // invalid line that changes nothing.
    c.get_mut()
        .write_all(
            format!(
                "{{\"type\":\"allow\",\"host\":\"127.0.0.1\",\"port\":{}}}\n",
                up.port
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        text(&curl(&["-x", &px, &format!("{lit}a")])),
        "upstream-ok /a "
    );
    c.get_mut()
        .write_all(b"{\"network\":{\"allowedDomains\":[],\"deniedDomains\":[\"*\"]},\"filesystem\":{\"denyRead\":[],\"allowWrite\":[],\"denyWrite\":[]}}\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = text(&curl(&["-i", "-x", &px, &format!("{lit}b")]));
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    c.get_mut().write_all(b"{\"type\":\"nonsense\"}\n").unwrap();
    let e = next_line(c);
    assert_eq!(e["type"], "error");
    assert!(e["message"].as_str().unwrap().contains("nonsense"), "{e}");
    let out = text(&curl(&["-i", "-x", &px, &format!("{lit}c")]));
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(up.count(), 1);
}

#[test]
fn bad_settings_exit_125() {
    let dir = std::env::temp_dir().join(format!("ringfence-proxy-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.json");
    std::fs::write(&file, r#"{"network": {"allowedDomains": ["a..b"]}}"#).unwrap();
    let o = Command::new(common::bin())
        .arg("proxy")
        .arg("-s")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("network.allowedDomains: \"a..b\""), "{err}");
    // The gateway is the proxy: handing its port to another one is refused, not skipped.
    std::fs::write(&file, r#"{"network": {"socksProxyPort": 1080}}"#).unwrap();
    let o = Command::new(common::bin())
        .arg("proxy")
        .arg("-s")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("network.socksProxyPort"), "{err}");
}

/// A client token from `ringfence proxy --new-client-token`: (token, its SHA-256).
fn new_token() -> (String, String) {
    let o = Command::new(common::bin())
        .args(["proxy", "--new-client-token"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    (field("token:"), field("tokenSha256:"))
}

#[test]
fn clients_authenticate_and_each_has_its_own_policy() {
    if !need_curl() {
        return;
    }
    let (a, b) = (Upstream::start(), Upstream::start());
    let (alice, alice_hash) = new_token();
    let (bob, bob_hash) = new_token();
    assert!(alice.len() >= 22 && alice != bob);
    let dir = Gateway::next_dir();
    let allow = |port: u16| format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#);
    std::fs::write(dir.join("alice.json"), allow(a.port)).unwrap();
    std::fs::write(dir.join("bob.json"), allow(b.port)).unwrap();
    let clients = |alice_file: &str| {
        format!(
            r#"{{"clients": [
                {{"name": "alice", "tokenSha256": "{alice_hash}", "settings": "{alice_file}"}},
                {{"name": "bob", "tokenSha256": "{bob_hash}", "settings": "bob.json"}}]}}"#
        )
    };
    let clients_file = dir.join("clients.json");
    std::fs::write(&clients_file, clients("alice.json")).unwrap();
    // The -s policy allows both; with clients, only each client's own policy decides.
    let gw = Gateway::start_with(
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{}", "127.0.0.1:{}"]}}}}"#,
            a.port, b.port
        ),
        false,
        &["--clients", clients_file.to_str().unwrap()],
    );
    let port = gw.port;
    let to_a = format!("http://127.0.0.1:{}/a", a.port);
    let to_b = format!("http://127.0.0.1:{}/b", b.port);
    let http = |user: &str, pass: &str| format!("http://{user}:{pass}@127.0.0.1:{port}");
    let socks = |user: &str, pass: &str| format!("socks5h://{user}:{pass}@127.0.0.1:{port}");
    let status = |o: &Output| text(o).lines().next().unwrap_or("").to_string();

    // Each client reaches its own host, over HTTP, CONNECT and SOCKS5, and not the other's.
    for (user, pass, mine, other) in [("alice", &alice, &to_a, &to_b), ("bob", &bob, &to_b, &to_a)]
    {
        assert!(text(&curl(&["-x", &http(user, pass), mine])).starts_with("upstream-ok"));
        assert!(text(&curl(&["-p", "-x", &http(user, pass), mine])).starts_with("upstream-ok"));
        assert!(text(&curl(&["--proxy", &socks(user, pass), mine])).starts_with("upstream-ok"));
        let o = curl(&["-i", "-x", &http(user, pass), other]);
        assert!(status(&o).starts_with("HTTP/1.1 403"), "{o:?}");
    }
    assert_eq!((a.count(), b.count()), (3, 3));

    // No credentials, another client's token, a changed byte, an unknown name: 407, and
    // SOCKS5 fails the authentication.
    let mut wrong = alice.clone().into_bytes();
    wrong[5] = if wrong[5] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    let plain = format!("http://127.0.0.1:{port}");
    for px in [
        plain.clone(),
        http("alice", &bob),
        http("alice", &wrong),
        http("carol", &alice),
    ] {
        let o = curl(&["-i", "-x", &px, &to_a]);
        assert!(status(&o).starts_with("HTTP/1.1 407"), "{px}: {o:?}");
        assert!(text(&o).contains("Proxy-Authenticate: Basic"), "{o:?}");
    }
    for px in [
        format!("socks5h://127.0.0.1:{port}"),
        socks("alice", &bob),
        socks("bob", &wrong),
    ] {
        let o = curl(&["--proxy", &px, &to_a]);
        assert!(!o.status.success(), "{px}: {o:?}");
    }
    assert_eq!((a.count(), b.count()), (3, 3));

    // Every decision carries the authenticated client.
    let all = gw.decisions();
    let (d, failed): (Vec<_>, Vec<_>) = all.iter().partition(|e| !e["client"].is_null());
    assert_eq!(d.len(), 8, "{all:?}");
    // The failed authentications are recorded too, without a client.
    assert_eq!(failed.len(), 7, "{all:?}");
    assert!(failed.iter().all(
        |e| e["decision"] == "deny" && e["reason"].as_str().unwrap().contains("authentication")
    ));
    for e in &d {
        let mine = if e["client"] == "alice" {
            a.port
        } else {
            b.port
        };
        assert!(e["client"] == "alice" || e["client"] == "bob", "{e}");
        assert_eq!(e["decision"] == "allow", e["port"] == mine, "{e}");
    }

    // A tunnel open across a reload keeps going; new connections get the new policy.
    let mut t = TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let basic = base64(format!("alice:{alice}").as_bytes());
    write!(
        t,
        "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nProxy-Authorization: Basic {basic}\r\n\r\n",
        p = a.port
    )
    .unwrap();
    let mut r = BufReader::new(t.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    // alice now gets bob's policy file.
    std::fs::write(&clients_file, clients("bob.json")).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        let o = curl(&["-i", "-x", &http("alice", &alice), &to_b]);
        if text(&o).contains("upstream-ok") {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(switched, "the clients file was not reloaded");
    let o = curl(&["-i", "-x", &http("alice", &alice), &to_a]);
    assert!(status(&o).starts_with("HTTP/1.1 403"), "{o:?}");
    t.write_all(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("upstream-ok /still") {
        match r.read(&mut buf) {
            Ok(n) if n > 0 => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    assert!(got.contains("upstream-ok /still"), "{got}");

    // A clients file that does not load leaves the clients in force.
    std::fs::write(&clients_file, "{\"clients\": [{\"name\": \"x\"}]}").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(text(&curl(&["-x", &http("alice", &alice), &to_b])).starts_with("upstream-ok"));
}

#[test]
fn a_bad_clients_file_exits_125() {
    let dir = Gateway::next_dir();
    std::fs::write(dir.join("s.json"), "{}").unwrap();
    for (text, names) in [
        (
            r#"{"clients": [{"name": "a", "tokenSha256": "00", "settings": "s.json"}]}"#,
            "tokenSha256",
        ),
        (r#"{"clients": [], "extra": 1}"#, "unknown key extra"),
        (r#"{"clients": []}"#, "empty"),
        (
            r#"{"clients": [{"name": "a", "tokenSha256": "0000000000000000000000000000000000000000000000000000000000000000", "settings": "s.json", "role": "x"}]}"#,
            "role",
        ),
    ] {
        std::fs::write(dir.join("c.json"), text).unwrap();
        let o = Command::new(common::bin())
            .args(["proxy", "--listen", "127.0.0.1:0", "--clients"])
            .arg(dir.join("c.json"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(names), "{names}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn healthz_and_metrics_on_their_own_address() {
    if !need_curl() {
        return;
    }
    let up = Upstream::start();
    let gw = Gateway::start_with(
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{}"]}}}}"#,
            up.port
        ),
        false,
        &["--metrics", "127.0.0.1:0"],
    );
    let mport: u16 = gw
        .banner
        .split("/metrics on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metrics address: {}", gw.banner));
    assert_ne!(mport, gw.port);
    let m = format!("http://127.0.0.1:{mport}");
    assert_eq!(text(&curl(&[&format!("{m}/healthz")])), "ok\n");
    let px = format!("http://agent-3:x@127.0.0.1:{}", gw.port);
    let target = format!("http://127.0.0.1:{}/m", up.port);
    assert!(text(&curl(&["-x", &px, &target])).starts_with("upstream-ok"));
    assert!(text(&curl(&["-x", &px, &target])).starts_with("upstream-ok"));
    let o = curl(&["-x", &px, "http://denied.example/"]);
    assert!(text(&o).contains("not allowed"), "{o:?}");
    // The proxy port does not serve them, nor does the metrics port proxy.
    let o = curl(&["-i", &format!("http://127.0.0.1:{}/metrics", gw.port)]);
    assert!(!text(&o).contains("ringfence_proxy_"), "{o:?}");
    let o = curl(&["-i", "-x", &m, &target]);
    assert!(text(&o).starts_with("HTTP/1.1 404"), "{o:?}");
    // Decisions are recorded when a request ends; give the writer a moment.
    std::thread::sleep(Duration::from_millis(200));
    let metrics = text(&curl(&[&format!("{m}/metrics")]));
    assert!(
        metrics.contains("# TYPE ringfence_proxy_decisions_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ringfence_proxy_decisions_total{client="agent-3",decision="allow"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ringfence_proxy_decisions_total{client="agent-3",decision="deny"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringfence_proxy_active_connections "),
        "{metrics}"
    );
    let up_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ringfence_proxy_bytes_total{direction="down"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(up_bytes > 0, "{metrics}");
}

#[test]
fn the_policy_file_reloads_without_dropping_tunnels() {
    if !need_curl() {
        return;
    }
    let (a, b) = (Upstream::start(), Upstream::start());
    let allow = |port: u16| format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#);
    let gw = Gateway::start(&allow(a.port), false);
    let px = gw.proxy_url();
    let to_a = format!("http://127.0.0.1:{}/a", a.port);
    let to_b = format!("http://127.0.0.1:{}/b", b.port);
    assert!(text(&curl(&["-x", &px, &to_a])).starts_with("upstream-ok"));
    assert!(text(&curl(&["-i", "-x", &px, &to_b])).starts_with("HTTP/1.1 403"));

    let mut t = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        t,
        "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
        p = a.port
    )
    .unwrap();
    let mut r = BufReader::new(t.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        r.read_line(&mut line).unwrap();
    }

    std::fs::write(gw.dir.join("settings.json"), allow(b.port)).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        if text(&curl(&["-x", &px, &to_b])).starts_with("upstream-ok") {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(switched, "the policy file was not reloaded");
    assert!(text(&curl(&["-i", "-x", &px, &to_a])).starts_with("HTTP/1.1 403"));
    // The tunnel opened before still carries requests.
    t.write_all(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("upstream-ok /still") {
        match r.read(&mut buf) {
            Ok(n) if n > 0 => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    assert!(got.contains("upstream-ok /still"), "{got}");
    // A policy that does not load leaves the one in force.
    std::fs::write(
        gw.dir.join("settings.json"),
        r#"{"network": {"allowedDomains": ["a..b"]}}"#,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(text(&curl(&["-x", &px, &to_b])).starts_with("upstream-ok"));
}

/// A test CA that issues the gateway's server certificate and the clients' certificates.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A certificate and key: for the server at 127.0.0.1, or for the client `name`.
    fn issue(&self, name: Option<&str>) -> (rcgen::Certificate, rcgen::KeyPair) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        match name {
            None => {
                p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Some(n) => {
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, n.to_string());
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }
}

/// SOCKS5 over TLS with a client certificate: no user name, a CONNECT to `port` on loopback
/// and one GET; returns what came back (empty when the gateway refused).
fn socks_over_tls(
    gw_port: u16,
    ca: &TestCa,
    client: &(rcgen::Certificate, rcgen::KeyPair),
    port: u16,
) -> String {
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client.0.der().clone()],
            PrivateKeyDer::Pkcs8(client.1.serialize_der().into()),
        )
        .unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", gw_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut reply = [0u8; 10];
    if s.write_all(&[5, 1, 0]).is_err() || s.read_exact(&mut reply[..2]).is_err() {
        return String::new();
    }
    assert_eq!(&reply[..2], &[5, 0]);
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    if s.read_exact(&mut reply).is_err() || reply[1] != 0 {
        return String::new();
    }
    s.write_all(b"GET /socks-tls HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("upstream-ok") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_client_certificate_is_the_client_over_tls() {
    if !need_curl() {
        return;
    }
    let (a, b) = (Upstream::start(), Upstream::start());
    let ca = TestCa::new("ringfence test client CA");
    let other_ca = TestCa::new("someone else's CA");
    let dir = Gateway::next_dir();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ca_file = write("ca.pem", ca.cert.pem());
    let (server, server_key) = ca.issue(None);
    let server_file = write("server.pem", server.pem());
    let server_key_file = write("server.key", server_key.serialize_pem());
    let mut pems = std::collections::HashMap::new();
    let mut issued = std::collections::HashMap::new();
    for (name, by) in [
        ("alice", &ca),
        ("bob", &ca),
        ("carol", &ca),
        ("mallory", &other_ca),
    ] {
        let c = by.issue(Some(name));
        let cert = write(&format!("{name}.pem"), c.0.pem());
        let key = write(&format!("{name}.key"), c.1.serialize_pem());
        pems.insert(name, (cert, key));
        issued.insert(name, c);
    }
    let fp = |name: &str| {
        let d = ring::digest::digest(&ring::digest::SHA256, issued[name].0.der());
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let allow = |port: u16| format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#);
    write("alice.json", allow(a.port));
    write("bob.json", allow(b.port));
    // alice's fingerprint as openssl prints it (upper case, colons).
    let alice_colons = fp("alice")
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let clients = |with_alice: bool| {
        let mut list = vec![format!(
            r#"{{"name": "bob", "certSha256": "{}", "settings": "bob.json"}}"#,
            fp("bob")
        )];
        if with_alice {
            list.push(format!(
                r#"{{"name": "alice", "certSha256": "{alice_colons}", "settings": "alice.json"}}"#
            ));
        }
        format!(r#"{{"clients": [{}]}}"#, list.join(","))
    };
    let clients_file = write("clients.json", clients(true));
    let gw = Gateway::start_with(
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{}", "127.0.0.1:{}"]}}}}"#,
            a.port, b.port
        ),
        false,
        &[
            "--clients",
            &clients_file,
            "--tls-cert",
            &server_file,
            "--tls-key",
            &server_key_file,
            "--client-ca",
            &ca_file,
        ],
    );
    assert!(gw.banner.contains("over TLS"), "{}", gw.banner);
    let proxy = format!("https://127.0.0.1:{}", gw.port);
    let via = |who: &str, extra: &[&str], url: &str| {
        let mut args = vec!["-i", "-x", &proxy, "--proxy-cacert", &ca_file];
        if let Some((c, k)) = pems.get(who) {
            args.extend(["--proxy-cert", c.as_str(), "--proxy-key", k.as_str()]);
        }
        args.extend(extra);
        args.push(url);
        curl(&args)
    };
    let to_a = format!("http://127.0.0.1:{}/a", a.port);
    let to_b = format!("http://127.0.0.1:{}/b", b.port);

    // Each listed certificate reaches its own client's host (forwarded, CONNECT, SOCKS5),
    // not the other's; a proxy user name and password change nothing.
    for (who, mine, other, port) in [
        ("alice", &to_a, &to_b, a.port),
        ("bob", &to_b, &to_a, b.port),
    ] {
        assert!(text(&via(who, &[], mine)).contains("upstream-ok"), "{who}");
        assert!(
            text(&via(who, &["-p"], mine)).contains("upstream-ok"),
            "{who}"
        );
        let o = via(who, &["--proxy-user", "bob:x"], mine);
        assert!(text(&o).contains("upstream-ok"), "{who}: {o:?}");
        let o = via(who, &[], other);
        assert!(text(&o).starts_with("HTTP/1.1 403"), "{who}: {o:?}");
        let got = socks_over_tls(gw.port, &ca, &issued[who], port);
        assert!(got.contains("upstream-ok /socks-tls"), "{who}: {got}");
    }
    assert_eq!((a.count(), b.count()), (4, 4));

    // A certificate of the CA that is not listed, one of another CA, none at all, and plain
    // text: refused, nothing reaches an upstream.
    for who in ["carol", "mallory", "nobody"] {
        let o = via(who, &[], &to_a);
        assert!(!text(&o).contains("upstream-ok"), "{who}: {o:?}");
        let o = via(who, &["-p"], &to_a);
        assert!(!text(&o).contains("upstream-ok"), "{who}: {o:?}");
    }
    assert!(socks_over_tls(gw.port, &ca, &issued["carol"], a.port).is_empty());
    assert!(socks_over_tls(gw.port, &other_ca, &issued["mallory"], a.port).is_empty());
    let o = curl(&["-i", "-x", &gw.proxy_url(), &to_a]);
    assert!(!text(&o).contains("upstream-ok"), "{o:?}");
    assert_eq!((a.count(), b.count()), (4, 4));

    // Every decision carries the certificate's client; every refusal is recorded.
    let all = gw.decisions();
    let (named, refused): (Vec<_>, Vec<_>) = all.iter().partition(|e| !e["client"].is_null());
    assert_eq!(named.len(), 10, "{all:?}");
    for e in &named {
        let mine = if e["client"] == "alice" {
            a.port
        } else {
            b.port
        };
        assert!(e["client"] == "alice" || e["client"] == "bob", "{e}");
        assert_eq!(e["decision"] == "allow", e["port"] == mine, "{e}");
    }
    assert!(refused
        .iter()
        .all(|e| e["decision"] == "deny" && e["protocol"] == "tls"));
    let reasons: Vec<&str> = refused
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    let carol = format!("sha256:{} is not in the clients file", fp("carol"));
    assert_eq!(
        reasons.iter().filter(|r| r.contains(&carol)).count(),
        3,
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .filter(|r| r.starts_with("TLS handshake failed"))
            .count()
            >= 6,
        "{reasons:?}"
    );

    // alice is removed from the clients file: her certificate is refused from then on.
    std::fs::write(&clients_file, clients(false)).unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !text(&via("alice", &[], &to_a)).contains("upstream-ok") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the clients file was not reloaded");
    assert!(text(&via("bob", &[], &to_b)).contains("upstream-ok"));
}

#[test]
fn tls_listener_options_are_checked() {
    let dir = Gateway::next_dir();
    let ca = TestCa::new("ca");
    let (server, key) = ca.issue(None);
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("s.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("s.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("p.json"), "{}").unwrap();
    let zeros = "0".repeat(64);
    std::fs::write(
        dir.join("tokens.json"),
        format!(
            r#"{{"clients": [{{"name": "a", "tokenSha256": "{zeros}", "settings": "p.json"}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("certs.json"),
        format!(
            r#"{{"clients": [{{"name": "a", "certSha256": "{zeros}", "settings": "p.json"}}]}}"#
        ),
    )
    .unwrap();
    let tls = ["--tls-cert", "s.pem", "--tls-key", "s.key"];
    let mtls = [
        "--tls-cert",
        "s.pem",
        "--tls-key",
        "s.key",
        "--client-ca",
        "ca.pem",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert", "s.pem"], "--tls-key"),
        (vec!["--tls-key", "s.key"], "--tls-cert"),
        (vec!["--client-ca", "ca.pem"], "--tls-cert"),
        (mtls.to_vec(), "--clients"),
        (
            [&mtls[..], &["--clients", "tokens.json"]].concat(),
            "tokenSha256",
        ),
        (
            [&tls[..], &["--clients", "certs.json"]].concat(),
            "certSha256",
        ),
        (
            vec!["--tls-cert", "s.key", "--tls-key", "s.key"],
            "--tls-cert",
        ),
        (
            vec![
                "--tls-cert",
                "s.pem",
                "--tls-key",
                "s.key",
                "--client-ca",
                "p.json",
                "--clients",
                "certs.json",
            ],
            "--client-ca",
        ),
    ];
    for (args, names) in cases {
        let o = Command::new(common::bin())
            .args(["proxy", "--listen", "127.0.0.1:0"])
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(names), "{args:?}: {names}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
