//! Transparent capture (`run --transparent`, `network.transparent`): programs that ignore the
//! proxy variables are held to the network policy. Allowed names are reached through a
//! recording parent proxy on the host's loopback (the one party that is ever told a name on
//! the sandbox's behalf, so it also shows that denied names never leave the sandbox); denied
//! names get NXDOMAIN; a TLS server name or Host header that names another host, and a
//! connection to an address no name was given, are refused; everything is in the log.
//! Where this user cannot open /dev/net/tun, the run must refuse with 125 naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{run, TestDir};

const ALLOWED: &str = "api.transparent.test";
const DENIED: &str = "evil.transparent.test";

/// A CONNECT proxy on the host's loopback that records each target it is asked for and
/// connects every tunnel to `target_port` on loopback.
fn recording_parent(target_port: u16) -> (u16, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = asked.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let seen = seen.clone();
            thread::spawn(move || {
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
                let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(target);
                let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    return;
                };
                let mut c = s;
                let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut up_r, mut c_w) = (up.try_clone().unwrap(), c.try_clone().unwrap());
                let down = thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut c_w);
                    let _ = c_w.shutdown(std::net::Shutdown::Write);
                });
                // What the client sent after the head (buffered in `r`) goes first.
                let mut up_w = up;
                let _ = std::io::copy(&mut r, &mut up_w);
                let _ = up_w.shutdown(std::net::Shutdown::Write);
                let _ = down.join();
                let _ = c.read(&mut [0u8; 1]);
            });
        }
    });
    (port, asked)
}

struct Fixture {
    dir: TestDir,
    settings: String,
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
}

fn fixture(tag: &str) -> Fixture {
    let upstream = common::http_upstream(|_, path| format!("upstream saw {path}\n"));
    let (pport, asked) = recording_parent(upstream);
    let (dir, settings) = common::with_settings(
        tag,
        &format!(
            r#"{{"network": {{"allowedDomains": ["{ALLOWED}"], "deniedDomains": ["{DENIED}"],
                "parentProxy": {{"http": "http://127.0.0.1:{pport}", "https": "http://127.0.0.1:{pport}"}}}}}}"#
        ),
    );
    Fixture {
        dir,
        settings,
        // Any port: the parent proxy carries every tunnel to the upstream.
        port: 8443,
        asked,
    }
}

/// Whether this user can use transparent mode here; if not, checks that a run asking for it
/// is refused with 125 naming the device, and says that the rest is skipped.
fn tun_usable(f: &Fixture) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok()
    {
        return true;
    }
    let out = run(common::rf_in(&f.dir).args([
        "run",
        "-s",
        &f.settings,
        "--transparent",
        "--",
        "/bin/true",
    ]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("/dev/net/tun"), "{out:#?}");
    // A device the distribution leaves to root (mode 0600) is a property of the machine for an
    // unprivileged user, whose refusal was just checked; root must always get it.
    if common::is_root() {
        common::skip("root cannot open /dev/net/tun: only the refusal was checked");
    } else {
        common::not_here(
            "this user cannot open /dev/net/tun (its mode): only the refusal was checked",
        );
    }
    false
}

fn need(progs: &[&str]) -> bool {
    for p in progs {
        if !common::have(p) {
            common::skip(&format!("{p} is not installed"));
            return false;
        }
    }
    true
}

fn transparent_run(f: &Fixture, name: &str, script: &str) -> common::Outcome {
    run(common::rf_in(&f.dir).args([
        "run",
        "--name",
        name,
        "-s",
        &f.settings,
        "--transparent",
        "-c",
        script,
    ]))
}

fn decisions(f: &Fixture, name: &str) -> Vec<serde_json::Value> {
    common::log_events(common::rf_in(&f.dir), name)
        .into_iter()
        .filter(|e| e["kind"] == "net.decision")
        .collect()
}

#[test]
fn programs_that_ignore_the_proxy_reach_an_allowed_name() {
    let f = fixture("tp-allowed");
    if !tun_usable(&f) || !need(&["curl", "python3"]) {
        return;
    }
    let name = format!("tp-{}", common::unique_number());
    let port = f.port;
    let script = format!(
        "curl -sS --noproxy '*' http://{ALLOWED}:{port}/curl; \
         python3 -c 'import socket\n\
s = socket.create_connection((\"{ALLOWED}\", {port}))\n\
s.sendall(b\"GET /python HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n\")\n\
print(s.makefile().read().splitlines()[-1])'"
    );
    // Node's fetch ignores proxy variables before Node 24 (and without NODE_USE_ENV_PROXY).
    let node = common::have("node");
    let script = if node {
        format!(
            "{script}; node -e 'fetch(\"http://{ALLOWED}:{port}/node\").then(r => r.text()).then(t => process.stdout.write(t))'"
        )
    } else {
        common::skip("node is not installed: its fetch is not tried");
        script
    };
    let out = transparent_run(&f, &name, &script);
    let stdout = out.ok();
    assert!(stdout.contains("upstream saw /curl\n"), "{out:#?}");
    assert!(stdout.contains("upstream saw /python\n"), "{out:#?}");
    let clients = if node { 3 } else { 2 };
    if node {
        assert!(stdout.contains("upstream saw /node\n"), "{out:#?}");
    }
    let asked = f.asked.lock().unwrap().clone();
    assert!(
        asked.iter().all(|a| a == &format!("{ALLOWED}:{port}")) && asked.len() == clients,
        "{asked:?}"
    );
    let ev = decisions(&f, &name);
    let allowed: Vec<_> = ev
        .iter()
        .filter(|e| e["decision"] == "allow" && e["protocol"] == "transparent")
        .collect();
    assert_eq!(allowed.len(), clients, "{ev:#?}");
    assert!(allowed
        .iter()
        .all(|e| e["host"] == ALLOWED && e["port"] == port));
}

#[test]
fn a_denied_name_gets_nxdomain_and_never_leaves_the_sandbox() {
    let f = fixture("tp-denied");
    if !tun_usable(&f) || !need(&["curl", "python3"]) {
        return;
    }
    let name = format!("tp-{}", common::unique_number());
    let script = format!(
        "curl -sS --noproxy '*' http://{DENIED}:{}/x; echo curl=$?; \
         python3 -c 'import socket\n\
try:\n    socket.getaddrinfo(\"{DENIED}\", 443); print(\"resolved\")\n\
except socket.gaierror as e: print(\"gaierror\", e.errno == socket.EAI_NONAME)'",
        f.port
    );
    let out = transparent_run(&f, &name, &script);
    let stdout = out.ok();
    assert!(stdout.contains("curl=6\n"), "{out:#?}");
    assert!(stdout.contains("gaierror True"), "{out:#?}");
    assert!(f.asked.lock().unwrap().is_empty(), "{:?}", f.asked);
    let ev = decisions(&f, &name);
    let denied: Vec<_> = ev
        .iter()
        .filter(|e| e["decision"] == "deny" && e["protocol"] == "dns")
        .collect();
    assert_eq!(denied.len(), 1, "one record per name: {ev:#?}");
    assert_eq!(denied[0]["host"], DENIED);
    assert!(ev.iter().all(|e| e["decision"] != "allow"), "{ev:#?}");
}

#[test]
fn a_server_name_or_host_naming_another_host_is_refused() {
    let f = fixture("tp-mismatch");
    if !tun_usable(&f) || !need(&["curl", "python3"]) {
        return;
    }
    let name = format!("tp-{}", common::unique_number());
    let port = f.port;
    let script = format!(
        "curl -sS --noproxy '*' -H 'Host: {DENIED}' http://{ALLOWED}:{port}/host; echo curl=$?; \
         python3 -c 'import socket, ssl\n\
s = socket.create_connection((\"{ALLOWED}\", {port}))\n\
c = ssl.create_default_context()\n\
try:\n    c.wrap_socket(s, server_hostname=\"other.example\"); print(\"handshake\")\n\
except (OSError, ssl.SSLError) as e: print(\"refused\", type(e).__name__)'"
    );
    let out = transparent_run(&f, &name, &script);
    let stdout = out.ok();
    assert!(!stdout.contains("upstream saw"), "{out:#?}");
    assert!(!stdout.contains("curl=0\n"), "{out:#?}");
    assert!(stdout.contains("refused"), "{out:#?}");
    let ev = decisions(&f, &name);
    let refused: Vec<_> = ev
        .iter()
        .filter(|e| {
            e["decision"] == "deny"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("first bytes name"))
        })
        .collect();
    assert_eq!(refused.len(), 2, "{ev:#?}");
}

#[test]
fn a_connection_to_an_address_no_name_was_given_is_refused_and_logged() {
    let f = fixture("tp-direct");
    if !tun_usable(&f) || !need(&["python3"]) {
        return;
    }
    let name = format!("tp-{}", common::unique_number());
    let py = [
        "import socket",
        "for a in [('192.0.2.1', 80), ('198.18.200.9', 443)]:",
        "    try:",
        "        socket.create_connection(a, timeout=10); print('connected')",
        "    except ConnectionRefusedError: print('refused')",
        "    except OSError as e: print('other', e)",
        // The command cannot take the device down or move it (no CAP_NET_ADMIN after setup).
        "import fcntl, struct",
        "try:",
        "    fcntl.ioctl(socket.socket(), 0x8914, struct.pack('16sh14x', b'rf0', 0)); print('reconfigured')",
        "except PermissionError: print('EPERM')",
    ]
    .join("\n");
    let script = format!("python3 -c \"{py}\"");
    let out = transparent_run(&f, &name, &script);
    let stdout = out.ok();
    assert_eq!(stdout, "refused\nrefused\nEPERM\n", "{out:#?}");
    let ev = decisions(&f, &name);
    for host in ["192.0.2.1", "198.18.200.9"] {
        assert!(
            ev.iter().any(|e| e["host"] == host
                && e["decision"] == "deny"
                && e["protocol"] == "transparent"),
            "{host}: {ev:#?}"
        );
    }
    assert!(f.asked.lock().unwrap().is_empty());
}

#[test]
fn without_the_mode_nothing_is_captured() {
    let f = fixture("tp-off");
    if !need(&["python3"]) {
        return;
    }
    let out = run(common::rf_in(&f.dir).args([
        "run",
        "-s",
        &f.settings,
        "-c",
        "python3 -c 'import socket\n\
try:\n    socket.getaddrinfo(\"api.transparent.test\", 80); print(\"resolved\")\n\
except OSError: print(\"no resolver\")'",
    ]));
    assert_eq!(out.ok(), "no resolver\n", "{out:#?}");
}

#[test]
fn the_device_travels_with_as_many_host_services_as_the_channel_carries() {
    let entries: Vec<String> = (0..61)
        .map(|i| format!("\"127.0.0.1:{}\"", 21000 + i))
        .collect();
    let (dir, settings) = common::with_settings(
        "tp-most",
        &format!(
            r#"{{"network": {{"allowedDomains": [{}]}}}}"#,
            entries.join(",")
        ),
    );
    let f = Fixture {
        dir,
        settings,
        port: 0,
        asked: Arc::new(Mutex::new(Vec::new())),
    };
    if !tun_usable(&f) {
        return;
    }
    let out = run(common::rf_in(&f.dir).args([
        "run",
        "-s",
        &f.settings,
        "--transparent",
        "-c",
        "grep -c rf0 /proc/net/dev",
    ]));
    assert_eq!(out.ok(), "1\n", "{out:#?}");
}
