//! `network.allowUnixSockets`: listed host sockets are reachable from inside the sandbox, every
//! other socket by path is refused with EACCES, also when a second thread rewrites the address
//! while the connect is checked; ssh-agent forwarding works while the key file stays hidden.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;

use common::{sh, TestDir};

/// A host server on `path` that answers every connection with `marker`.
fn serve(path: &Path, marker: &'static str) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(marker.as_bytes());
        }
    });
}

fn settings(dir: &TestDir, list: &[&str]) -> String {
    let list: Vec<String> = list.iter().map(|p| format!("\"{p}\"")).collect();
    dir.settings(&format!(
        r#"{{"network":{{"allowUnixSockets":[{}]}}}}"#,
        list.join(",")
    ))
}

const CLIENT: &str = r#"
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p)
        print(p, "got", s.recv(16).decode())
    except OSError as e:
        print(p, "errno", e.errno)
"#;

#[test]
fn listed_socket_reachable_unlisted_refused() {
    let dir = TestDir::new("usock-basic");
    serve(&dir.join("ok.sock"), "listed");
    serve(&dir.join("no.sock"), "unlisted");
    let s = settings(&dir, &[&dir.s("ok.sock")]);
    let client = dir.write("client.py", CLIENT);
    let ok = dir.s("ok.sock");
    let no = dir.s("no.sock");
    // A symlink to the unlisted socket is judged by what it leads to.
    std::os::unix::fs::symlink(dir.join("no.sock"), dir.join("link.sock")).unwrap();
    let link = dir.s("link.sock");
    let out = common::run(common::ringfence(&["-s", &s]).args([
        "--",
        "python3",
        client.to_str().unwrap(),
        &ok,
        &no,
        &link,
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains(&format!("{ok} got listed")), "{out:#?}");
    assert!(out.stdout.contains(&format!("{no} errno 13")), "{out:#?}");
    assert!(out.stdout.contains(&format!("{link} errno 13")), "{out:#?}");
    assert!(!out.stdout.contains("got unlisted"), "{out:#?}");
    assert!(
        out.stderr
            .contains("to unix sockets not in network.allowUnixSockets"),
        "{out:#?}"
    );
    // Without the key, unix sockets cannot even be created: the test above could not pass
    // with the sandbox switched off, nor with the check missing.
    let out =
        common::run(common::ringfence(&[]).args(["--", "python3", client.to_str().unwrap(), &ok]));
    assert!(!out.stdout.contains("got"), "{out:#?}");
}

#[test]
fn sockets_in_the_sandbox_tmp_stay_reachable() {
    let dir = TestDir::new("usock-scratch");
    let s = settings(&dir, &[&dir.s("none.sock")]);
    let out = sh(
        &["-s", &s],
        "python3 -c '
import socket
l = socket.socket(socket.AF_UNIX); l.bind(\"/tmp/own.sock\"); l.listen(1)
c = socket.socket(socket.AF_UNIX); c.setblocking(False)
r = c.connect_ex(\"/tmp/own.sock\"); print(\"connect\", r)
a = socket.socket(socket.AF_UNIX); a.bind(\"\\0rf-abstract\"); a.listen(1)
b = socket.socket(socket.AF_UNIX); b.connect(\"\\0rf-abstract\"); print(\"abstract ok\")
'",
    );
    assert!(out.stdout.contains("connect 0\n"), "{out:#?}");
    assert!(out.stdout.contains("abstract ok"), "{out:#?}");
}

/// A second thread flips the address between the listed and the unlisted socket while the
/// main thread connects: what is connected is always what was checked.
#[test]
fn racing_address_rewrite_never_reaches_the_unlisted_socket() {
    let dir = TestDir::new("usock-race");
    serve(&dir.join("ok.sock"), "listed");
    serve(&dir.join("no.sock"), "unlisted");
    let s = settings(&dir, &[&dir.s("ok.sock")]);
    let ok = dir.s("ok.sock");
    let no = dir.s("no.sock");
    assert_eq!(ok.len(), no.len());
    let script = dir.write(
        "race.py",
        r#"
import ctypes, socket, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
ok, no = sys.argv[1].encode(), sys.argv[2].encode()
class Sun(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("path", ctypes.c_char * 108)]
addr = Sun(socket.AF_UNIX, ok)
stop = False
def flip():
    while not stop:
        ctypes.memmove(ctypes.addressof(addr) + 2, no, len(no))
        ctypes.memmove(ctypes.addressof(addr) + 2, ok, len(ok))
t = threading.Thread(target=flip); t.start()
seen = {}
for i in range(400):
    s = socket.socket(socket.AF_UNIX)
    r = libc.connect(s.fileno(), ctypes.byref(addr), ctypes.sizeof(addr))
    key = s.recv(16).decode() if r == 0 else "errno%d" % ctypes.get_errno()
    seen[key] = seen.get(key, 0) + 1
    s.close()
stop = True; t.join()
print(sorted(seen.items()))
"#,
    );
    let out = common::run(common::ringfence(&["-s", &s]).args([
        "--",
        "python3",
        script.to_str().unwrap(),
        &ok,
        &no,
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("('listed', "), "{out:#?}");
    assert!(!out.stdout.contains("unlisted"), "{out:#?}");
}

#[test]
fn datagram_sendto_unlisted_refused_listed_delivered() {
    let dir = TestDir::new("usock-dgram");
    let ok = UnixDatagram::bind(dir.join("ok.dgram")).unwrap();
    let no = UnixDatagram::bind(dir.join("no.dgram")).unwrap();
    ok.set_nonblocking(true).unwrap();
    no.set_nonblocking(true).unwrap();
    let s = settings(&dir, &[&dir.s("ok.dgram")]);
    let script = format!(
        "python3 -c '
import socket, sys
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for p in [\"{}\", \"{}\"]:
    try:
        d.sendto(b\"hi\", p); print(p, \"sent\")
    except OSError as e:
        print(p, \"errno\", e.errno)
# A pair socket is no way around the list.
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    a.sendto(b\"pair\", \"{}\"); print(\"pair sent\")
except OSError as e:
    print(\"pair errno\", e.errno)
'",
        dir.s("ok.dgram"),
        dir.s("no.dgram"),
        dir.s("no.dgram")
    );
    let out = sh(&["-s", &s], &script);
    assert!(out.stdout.contains("ok.dgram sent"), "{out:#?}");
    assert!(out.stdout.contains("no.dgram errno 13"), "{out:#?}");
    assert!(out.stdout.contains("pair errno 13"), "{out:#?}");
    let mut buf = [0u8; 16];
    assert_eq!(ok.recv(&mut buf).unwrap(), 2);
    assert!(
        no.recv(&mut buf).is_err(),
        "the unlisted socket got a datagram"
    );
}

#[test]
fn listed_socket_under_deny_read_is_refused_at_load() {
    let dir = TestDir::new("usock-denied");
    dir.mkdir("secret");
    let s = dir.settings(&format!(
        r#"{{"filesystem":{{"denyRead":["{}"]}},"network":{{"allowUnixSockets":["{}"]}}}}"#,
        dir.s("secret"),
        dir.s("secret/agent.sock")
    ));
    let out = common::run(&mut common::ringfence(&["-s", &s, "--", "true"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("network.allowUnixSockets"), "{out:#?}");
}

#[test]
fn ssh_agent_forwarding_lists_the_key_and_hides_the_key_file() {
    for prog in ["ssh-agent", "ssh-add", "ssh-keygen"] {
        if !common::have(prog) {
            common::skip(&format!("{prog} is not installed"));
            return;
        }
    }
    let dir = TestDir::new("usock-ssh");
    dir.mkdir("keys");
    let key = dir.s("keys/id_test");
    let gen = common::run(std::process::Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "rf-usock-key",
        "-f",
        &key,
    ]));
    assert!(gen.success(), "{gen:#?}");
    let sock = dir.s("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a", &sock])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..200 {
        if Path::new(&sock).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let add = common::run(
        std::process::Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock),
    );
    assert!(add.success(), "{add:#?}");
    let s = dir.settings(&format!(
        r#"{{"filesystem":{{"denyRead":["{}"]}},"network":{{"allowUnixSockets":["$SSH_AUTH_SOCK"]}},"env":{{"allow":["SSH_AUTH_SOCK"]}}}}"#,
        dir.s("keys")
    ));
    let out = common::run(
        common::ringfence(&["-s", &s])
            .env("SSH_AUTH_SOCK", &sock)
            .args([
                "--",
                "/bin/sh",
                "-c",
                &format!("ssh-add -l; cat {key} >/dev/null 2>&1 && echo KEY-READABLE; true"),
            ]),
    );
    assert!(out.stdout.contains("rf-usock-key"), "{out:#?}");
    assert!(!out.stdout.contains("KEY-READABLE"), "{out:#?}");
    // Not listed: the agent is out of reach.
    let s = dir.settings(&format!(
        r#"{{"network":{{"allowUnixSockets":["{}"]}},"env":{{"allow":["SSH_AUTH_SOCK"]}}}}"#,
        dir.s("other.sock")
    ));
    let out = common::run(
        common::ringfence(&["-s", &s])
            .env("SSH_AUTH_SOCK", &sock)
            .args(["--", "/bin/sh", "-c", "ssh-add -l; true"]),
    );
    assert!(!out.stdout.contains("rf-usock-key"), "{out:#?}");
}

/// With `network.ask`, a socket not listed is asked about on `--control-fd` by its real path:
/// "once" connects, "deny" refuses, and the listed socket is never asked about.
#[test]
fn an_unlisted_socket_is_asked_about_with_network_ask() {
    let dir = TestDir::new("usock-ask");
    serve(&dir.join("ok.sock"), "listed");
    serve(&dir.join("yes.sock"), "approved");
    serve(&dir.join("no.sock"), "unlisted");
    let s = dir.settings(&format!(
        r#"{{"network":{{"allowUnixSockets":["{}"], "ask": true, "allowedDomains": []}}}}"#,
        dir.s("ok.sock")
    ));
    let client = dir.write("client.py", CLIENT);
    std::os::unix::fs::symlink(dir.join("yes.sock"), dir.join("link.sock")).unwrap();
    let mut cmd = common::ringfence(&["-s", &s, "--control-fd", "7"]);
    cmd.args([
        "--",
        "python3",
        client.to_str().unwrap(),
        &dir.s("ok.sock"),
        &dir.s("link.sock"),
        &dir.s("no.sock"),
    ]);
    let yes = dir.s("yes.sock");
    let (out, asked) = common::run_answering(cmd, move |v| {
        if v["path"] == yes.as_str() {
            "once"
        } else {
            "deny"
        }
    });
    let asked: Vec<(String, String)> = asked
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            ("socket".to_string(), dir.s("yes.sock")),
            ("socket".to_string(), dir.s("no.sock")),
        ],
        "{out:#?}"
    );
    assert!(out.stdout.contains(" got listed"), "{out:#?}");
    assert!(out.stdout.contains(" got approved"), "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("{} errno 13", dir.s("no.sock"))),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("got unlisted"), "{out:#?}");
}
