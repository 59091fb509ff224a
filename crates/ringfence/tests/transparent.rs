//! Transparent capture (`run --transparent`, `network.transparent`): programs that ignore the
//! proxy variables are held to the network policy. Allowed names are reached through a
//! recording parent proxy on the host's loopback (the one party that is ever told a name on
//! the sandbox's behalf, so it also shows that denied names never leave the sandbox); denied
//! names get NXDOMAIN; a TLS server name or Host header that names another host, and a
//! connection to an address no name was given, are refused; everything is in the log. Go's
//! `net/http` with no proxy, `git://` and `psql` against real servers on loopback; a test
//! namespace whose only resolver records what it is asked (the supervisor asks it for allowed
//! names only); UDP other than DNS and ICMP refused and recorded.
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
/// connects every tunnel to the target's port on loopback (where the test's upstreams are).
fn recording_parent() -> (u16, Arc<Mutex<Vec<String>>>) {
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
                let target_port: u16 = target
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
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
    let (pport, asked) = recording_parent();
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
        // The parent proxy carries each tunnel to the same port on loopback.
        port: upstream,
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

/// A port nothing listens on now, for a server the test starts.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process the test started: stopped (SIGTERM, then waited for) when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Waits until something accepts TCP connections on loopback `port`.
fn wait_listening(port: u16, what: &str) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < end, "{what} did not start");
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The decisions of a run for the allowed name (allowed, transparent, on `port`) and for
/// the denied one (a denied lookup).
fn assert_allowed_and_denied(f: &Fixture, name: &str, port: u16, allowed: usize) {
    let ev = decisions(f, name);
    let ok: Vec<_> = ev
        .iter()
        .filter(|e| e["decision"] == "allow" && e["protocol"] == "transparent")
        .collect();
    assert_eq!(ok.len(), allowed, "{ev:#?}");
    assert!(ok.iter().all(|e| e["host"] == ALLOWED && e["port"] == port));
    assert!(
        ev.iter()
            .any(|e| e["decision"] == "deny" && e["protocol"] == "dns" && e["host"] == DENIED),
        "{ev:#?}"
    );
    let asked = f.asked.lock().unwrap().clone();
    assert!(
        asked.len() == allowed && asked.iter().all(|a| a == &format!("{ALLOWED}:{port}")),
        "only the allowed name was ever sent on: {asked:?}"
    );
}

const GO_CLIENT: &str = r#"package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

// Fetches each URL with a transport that uses no proxy whatever the environment says.
func main() {
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	for _, u := range os.Args[1:] {
		r, err := c.Get(u)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		fmt.Print(string(b))
	}
}
"#;

#[test]
fn a_go_client_with_no_proxy_reaches_an_allowed_name_and_not_a_denied_one() {
    let f = fixture("tp-go");
    if !tun_usable(&f) || !need(&["go"]) {
        return;
    }
    f.dir.write("gosrc/main.go", GO_CLIENT);
    f.dir.write("gosrc/go.mod", "module gohttp\n\ngo 1.19\n");
    let client = f.dir.s("gohttp");
    // Built here, offline, with a cache of its own (the standard library comes prebuilt).
    let out = run(std::process::Command::new("go")
        .args(["build", "-o", &client, "."])
        .current_dir(f.dir.join("gosrc"))
        .env("HOME", f.dir.s("home"))
        .env("GOCACHE", f.dir.s("gocache"))
        .env("GOPATH", f.dir.s("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local"));
    out.ok();
    let name = format!("tp-{}", common::unique_number());
    let port = f.port;
    let out = transparent_run(
        &f,
        &name,
        &format!("{client} http://{ALLOWED}:{port}/go http://{DENIED}:{port}/go"),
    );
    let stdout = out.ok();
    assert!(stdout.starts_with("upstream saw /go\n"), "{out:#?}");
    assert!(
        stdout.contains("error:") && stdout.contains("no such host"),
        "{out:#?}"
    );
    assert_allowed_and_denied(&f, &name, port, 1);
}

#[test]
fn a_git_protocol_clone_reaches_an_allowed_name_and_not_a_denied_one() {
    let f = fixture("tp-git");
    if !tun_usable(&f) || !need(&["git"]) {
        return;
    }
    let git = |args: &[&str]| {
        let out = run(std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .env("HOME", f.dir.s("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1"));
        out.ok();
    };
    let work = f.dir.s("work");
    git(&["init", "-q", &work]);
    f.dir.write("work/hello.txt", "hello over git://\n");
    git(&["-C", &work, "add", "hello.txt"]);
    git(&["-C", &work, "commit", "-qm", "first"]);
    git(&["clone", "-q", "--bare", &work, &f.dir.s("srv/repo.git")]);
    let port = free_port();
    let _daemon = Server(
        std::process::Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", f.dir.s("srv")))
            .arg(f.dir.s("srv"))
            .env("HOME", f.dir.s("home"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port, "git daemon");
    let name = format!("tp-{}", common::unique_number());
    let out = transparent_run(
        &f,
        &name,
        &format!(
            "git clone -q git://{ALLOWED}:{port}/repo.git /tmp/c && cat /tmp/c/hello.txt; \
             git clone -q git://{DENIED}:{port}/repo.git /tmp/d; echo denied=$?"
        ),
    );
    let stdout = out.ok();
    assert!(stdout.starts_with("hello over git://\n"), "{out:#?}");
    assert!(stdout.contains("denied=128\n"), "{out:#?}");
    assert!(
        out.stderr.contains("unable to look up") || out.stderr.contains("not known"),
        "{out:#?}"
    );
    assert_allowed_and_denied(&f, &name, port, 1);
}

/// The server programs of the installed PostgreSQL (Debian keeps them off PATH).
fn postgres_bindir() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("postgres").is_file() && d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

#[test]
fn a_postgresql_client_reaches_an_allowed_name_and_not_a_denied_one() {
    let f = fixture("tp-pg");
    if !tun_usable(&f) || !need(&["psql"]) {
        return;
    }
    let Some(bindir) = postgres_bindir() else {
        common::skip("the PostgreSQL server (package postgresql) is not installed");
        return;
    };
    // The server refuses to run as root: as root it runs as nobody, in a directory of its own
    // that nobody can reach.
    let root = common::is_root();
    let base = if root {
        let d = std::env::temp_dir().join(format!("rf-tp-pg-{}", common::unique_number()));
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        d
    } else {
        f.dir.mkdir("pg")
    };
    let data = base.join("data");
    let as_server = |prog: &str| {
        let mut c = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bindir.join(prog));
            c
        } else {
            std::process::Command::new(bindir.join(prog))
        };
        c.current_dir(&base).env("LC_ALL", "C");
        c
    };
    let out = run(as_server("initdb")
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-D"])
        .arg(&data));
    out.ok();
    let port = free_port();
    let server = Server(
        as_server("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&data)
            .args(["-c", "fsync=off"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port, "postgres");
    let name = format!("tp-{}", common::unique_number());
    let out = transparent_run(
        &f,
        &name,
        &format!(
            "psql -h {ALLOWED} -p {port} -U postgres -d postgres -Atc 'select 40 + 2'; \
             psql -h {DENIED} -p {port} -U postgres -d postgres -Atc 'select 1'; echo denied=$?"
        ),
    );
    drop(server);
    if root {
        let _ = std::fs::remove_dir_all(&base);
    }
    let stdout = out.ok();
    assert!(stdout.starts_with("42\n"), "{out:#?}");
    assert!(stdout.contains("denied=2\n"), "{out:#?}");
    assert!(out.stderr.contains(DENIED), "{out:#?}");
    assert_allowed_and_denied(&f, &name, port, 1);
}

#[test]
fn udp_other_than_dns_and_icmp_are_refused_and_logged_and_ipv6_has_no_route() {
    let f = fixture("tp-udp");
    if !tun_usable(&f) || !need(&["python3"]) {
        return;
    }
    let py = [
        "import errno, socket",
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
        "u.settimeout(10)",
        "u.connect(('192.0.2.7', 443))",
        "u.send(b'quic?')",
        "try:",
        "    u.recv(100); print('udp answered')",
        "except ConnectionRefusedError: print('udp refused')",
        "except socket.timeout: print('udp unanswered')",
        "try:",
        "    i = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)",
        "    i.settimeout(3)",
        "    i.sendto(bytes([8, 0, 0, 0, 0, 1, 0, 1]), ('192.0.2.8', 0))",
        "    try:",
        "        i.recv(100); print('icmp answered')",
        "    except socket.timeout: print('icmp unanswered')",
        "except PermissionError: print('icmp sockets not permitted')",
        "try:",
        "    socket.create_connection(('2001:db8::1', 80), timeout=5); print('v6 connected')",
        "except OSError as e: print('v6', errno.errorcode.get(e.errno))",
    ]
    .join("\n");
    let name = format!("tp-{}", common::unique_number());
    let out = transparent_run(&f, &name, &format!("python3 -c \"{py}\""));
    let stdout = out.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "udp refused", "{out:#?}");
    assert!(
        lines[1] == "icmp unanswered" || lines[1] == "icmp sockets not permitted",
        "{out:#?}"
    );
    assert_eq!(lines[2], "v6 ENETUNREACH", "{out:#?}");
    let ev = decisions(&f, &name);
    assert!(
        ev.iter().any(|e| e["protocol"] == "udp"
            && e["decision"] == "deny"
            && e["host"] == "192.0.2.7"
            && e["port"] == 443),
        "{ev:#?}"
    );
    if lines[1] == "icmp unanswered" {
        assert!(
            ev.iter().any(|e| e["protocol"] == "icmp"
                && e["decision"] == "deny"
                && e["host"] == "192.0.2.8"),
            "{ev:#?}"
        );
    }
    assert!(ev.iter().all(|e| e["decision"] == "deny"), "{ev:#?}");
}

/// A DNS server for `ns.sh`'s namespace, on 127.0.0.1:53: writes each name it is asked for,
/// a line each, to argv[1]; answers the allowed name with the upstream's address, the one
/// that ends on the host's loopback with 127.0.0.1, every other with NXDOMAIN.
const RECORDING_RESOLVER: &str = r#"import socket, sys
log = open(sys.argv[1], "a", buffering=1)
answers = {"api.transparent.test": "10.77.0.2", "loop.transparent.test": "127.0.0.1"}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
open(sys.argv[2], "w").close()
while True:
    m, a = s.recvfrom(4096)
    i, labels = 12, []
    while m[i]:
        labels.append(m[i + 1 : i + 1 + m[i]].decode())
        i += 1 + m[i]
    name, qtype = ".".join(labels).lower(), int.from_bytes(m[i + 1 : i + 3], "big")
    log.write(name + "\n")
    ip, an = answers.get(name), b""
    if ip is None:
        flags = 0x8183
    else:
        flags = 0x8180
        if qtype == 1:
            an = bytes.fromhex("c00c000100010000003c0004") + socket.inet_aton(ip)
    head = m[:2] + flags.to_bytes(2, "big") + b"\0\1" + (1 if an else 0).to_bytes(2, "big") + b"\0\0\0\0"
    s.sendto(head + m[12 : i + 5] + an, a)
"#;

/// Run in new network and mount namespaces (as root, or in a user namespace of the caller's
/// own): an upstream HTTP server in a namespace of its own at 10.77.0.2 (over a veth pair, so
/// that it is not an address of the namespace ringfence runs in), the recording resolver as
/// the only name server of `/etc/resolv.conf`, then `ringfence "$@"` without capabilities.
const TEST_NAMESPACE: &str = r#"set -eu
D=$1; shift
ip link set lo up
unshare -n sh -c 'while ! ip -o addr show dev v1 2>/dev/null | grep -q 10.77.0.2; do sleep 0.05; done
  exec python3 -m http.server --bind 10.77.0.2 8080 --directory "$0"' "$D/www" >/dev/null 2>&1 &
UP=$!
while [ "$(readlink /proc/$UP/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.02; done
ip link add v0 type veth peer name v1 netns "$UP"
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
nsenter -t "$UP" -n sh -c 'ip addr add 10.77.0.2/24 dev v1 && ip link set v1 up'
printf 'nameserver 127.0.0.1\n' > "$D/resolv.conf"
mount --bind "$D/resolv.conf" /etc/resolv.conf
python3 "$D/resolver.py" "$D/asked" "$D/ready" &
REC=$!
while [ ! -e "$D/ready" ]; do sleep 0.02; done
until python3 -c 'import socket; socket.create_connection(("10.77.0.2", 8080), timeout=1)' 2>/dev/null; do sleep 0.05; done
set +e
setpriv --inh-caps=-all --ambient-caps=-all "$@"
echo "rc=$?"
kill "$REC" "$UP"
"#;

#[test]
fn the_hosts_resolver_is_asked_only_for_allowed_names() {
    let (dir, settings) = common::with_settings(
        "tp-resolver",
        &format!(
            r#"{{"network": {{"allowedDomains": ["{ALLOWED}", "loop.transparent.test"],
                "deniedDomains": ["{DENIED}"]}}}}"#
        ),
    );
    let f = Fixture {
        dir,
        settings,
        port: 8080,
        asked: Arc::new(Mutex::new(Vec::new())),
    };
    if !tun_usable(&f) || !need(&["python3", "ip", "unshare", "nsenter", "setpriv", "curl"]) {
        return;
    }
    f.dir.write("www/hello", "hello from the test namespace\n");
    f.dir.write("resolver.py", RECORDING_RESOLVER);
    f.dir.write("ns.sh", TEST_NAMESPACE);
    let name = format!("tp-{}", common::unique_number());
    let script = format!(
        "curl -sS --noproxy '*' http://{ALLOWED}:8080/hello; \
         curl -sS --noproxy '*' http://{DENIED}:8080/; echo denied=$?; \
         python3 -c 'import socket\n\
try:\n    socket.getaddrinfo(\"unlisted.transparent.test\", 80); print(\"resolved\")\n\
except socket.gaierror: print(\"unlisted gaierror\")'; \
         curl -sS --noproxy '*' http://loop.transparent.test:8080/; echo loop=$?"
    );
    let rf = common::bin();
    let mut ns = std::process::Command::new("unshare");
    if !common::is_root() {
        ns.args(["--user", "--map-current-user", "--keep-caps"]);
    }
    ns.args(["--mount", "--net", "sh"])
        .arg(f.dir.join("ns.sh"))
        .arg(&f.dir.path)
        .arg(&rf)
        .args([
            "run",
            "--name",
            &name,
            "-s",
            &f.settings,
            "--transparent",
            "-c",
        ])
        .arg(&script)
        .env("XDG_STATE_HOME", f.dir.s("state"))
        .env("HOME", f.dir.s("home"))
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
    ] {
        ns.env_remove(v);
    }
    let out = run(&mut ns);
    let stdout = out.ok();
    assert!(
        stdout.starts_with("hello from the test namespace\n"),
        "{out:#?}"
    );
    assert!(stdout.contains("denied=6\n"), "{out:#?}");
    assert!(stdout.contains("unlisted gaierror\n"), "{out:#?}");
    assert!(!stdout.contains("loop=0\n"), "{out:#?}");
    assert!(stdout.ends_with("rc=0\n"), "{out:#?}");
    // The resolver was asked (by the supervisor, when it dialled) for the allowed names only.
    let asked = f.dir.read("asked");
    let names: std::collections::BTreeSet<&str> = asked.lines().collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec![ALLOWED, "loop.transparent.test"],
        "{asked}"
    );
    let ev = decisions(&f, &name);
    assert!(ev.iter().any(|e| e["host"] == ALLOWED
        && e["decision"] == "allow"
        && e["resolved"] == "10.77.0.2:8080"));
    assert!(ev
        .iter()
        .any(|e| e["host"] == DENIED && e["protocol"] == "dns"));
    assert!(ev.iter().any(|e| e["host"] == "loop.transparent.test"
        && e["decision"] == "deny"
        && e["reason"].as_str().is_some_and(|r| r.contains("loopback"))));
}
