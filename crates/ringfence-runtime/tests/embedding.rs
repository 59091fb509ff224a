//! The embedding API end to end: real sandboxes started with `Sandbox::builder` from this
//! process. Without the test harness (`harness = false`): a sandbox is cloned from a process
//! with a single thread, and the harness runs tests on threads of its own, so the scenarios run
//! one after another on the main thread. scripts/test runs this as root and as an unprivileged
//! user, like the binary's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringfence_runtime::{
    read_all, runs, Answer, AskRequest, Error, Outcome, Sandbox, Sources, Stdio,
};

/// A directory for this process's scenarios, outside /tmp (private inside the sandbox).
fn scratch() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
    let d = home.join(format!(".cache/ringfence-embedding-{}", std::process::id()));
    std::fs::create_dir_all(d.join("work")).unwrap();
    d
}

fn settings(dir: &std::path::Path, name: &str, json: &str) -> Sources {
    let f = dir.join(format!("{name}.json"));
    std::fs::write(&f, json).unwrap();
    Sources::settings_file(f).in_dir(dir.join("work"))
}

fn output(run: &mut ringfence_runtime::Running) -> (String, String) {
    let mut out = String::new();
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let err = String::from_utf8(read_all(run.stderr.take()).unwrap()).unwrap();
    (out, err)
}

fn piped_streams_status_and_events(dir: &std::path::Path) {
    let kinds = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = kinds.clone();
    let mut run = Sandbox::builder(settings(
        dir,
        "piped",
        r#"{"filesystem": {"allowWrite": ["."]}}"#,
    ))
    .shell("echo out; echo err >&2; echo made > made.txt; touch /etc/ringfence-embedding; exit 3")
    .stdio(Stdio::Piped)
    .observer(move |e| seen.lock().unwrap().push(e.kind.to_string()))
    .spawn()
    .unwrap();
    let (out, err) = output(&mut run);
    let o = run.wait().unwrap();
    assert_eq!(o.status, Outcome::Exited(3));
    assert_eq!(out, "out\n");
    assert!(err.contains("err\n"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("work/made.txt")).unwrap(),
        "made\n"
    );
    assert!(!std::path::Path::new("/etc/ringfence-embedding").exists());
    assert!(
        o.violations
            .iter()
            .any(|v| v.contains("/etc/ringfence-embedding")),
        "{:?}",
        o.violations
    );
    assert!(o.log_hash.is_some());
    let kinds = kinds.lock().unwrap();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("run.start"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("run.end"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "exec"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "fs.denied"), "{kinds:?}");
}

fn the_asker_decides_about_unlisted_hosts(dir: &std::path::Path) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let mut run = Sandbox::builder(settings(
        dir,
        "asker",
        r#"{"network": {"allowedDomains": [], "ask": true}}"#,
    ))
    .shell("curl -s -o /dev/null -w '%{http_code}' http://blocked.invalid/")
    .stdio(Stdio::Piped)
    .asker(move |q| {
        log.lock().unwrap().push(q);
        Answer::Deny
    })
    .spawn()
    .unwrap();
    let (out, _) = output(&mut run);
    let o = run.wait().unwrap();
    assert_eq!(out, "403");
    let asked = asked.lock().unwrap();
    assert!(
        matches!(asked.as_slice(), [AskRequest::Connect { host, port: 80, .. }] if host == "blocked.invalid"),
        "{asked:?}"
    );
    assert!(
        o.violations
            .iter()
            .any(|v| v.starts_with("deny network blocked.invalid:80")),
        "{:?}",
        o.violations
    );
}

/// A loopback HTTP server in a process of its own (this process must stay single-threaded).
fn upstream(dir: &std::path::Path) -> (Child, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 for the loopback upstream");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("the loopback upstream did not start");
}

fn a_live_policy_update_reaches_the_proxy(dir: &std::path::Path) {
    let (mut server, port) = upstream(dir);
    let script = format!(
        "for i in $(seq 50); do [ -e go ] && break; sleep 0.1; done; \
         curl -sS -o /dev/null -w '%{{http_code}}' --noproxy '' -x http://127.0.0.1:3128 http://127.0.0.1:{port}/"
    );
    let mut run = Sandbox::builder(settings(
        dir,
        "update",
        r#"{"filesystem": {"allowWrite": ["."]}, "network": {"allowedDomains": []}}"#,
    ))
    .shell(&script)
    .stdio(Stdio::Piped)
    .spawn()
    .unwrap();
    run.update_policy(&format!(
        r#"{{"type":"allow","host":"127.0.0.1","port":{port}}}"#
    ))
    .unwrap();
    assert!(run.update_policy(r#"{"type":"policy"}"#).is_err());
    std::fs::write(dir.join("work/go"), "").unwrap();
    let (out, err) = output(&mut run);
    let o = run.wait().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out, "200", "{err} {:?}", o.violations);
}

fn stop_pause_and_drop_end_the_sandbox(dir: &std::path::Path) {
    let sources = settings(dir, "stop", "{}");
    // stop: the sandbox is killed, and wait says so.
    let run = Sandbox::builder(sources.clone())
        .command(["sleep", "60"])
        .stdio(Stdio::Null)
        .spawn()
        .unwrap();
    run.pause().unwrap();
    run.resume().unwrap();
    run.stop().unwrap();
    let o = run.wait().unwrap();
    assert_eq!(o.status, Outcome::Signaled(libc::SIGKILL));
    // drop without wait: the run is torn down and its record finished.
    let name = format!("embedding-drop-{}", std::process::id());
    let run = Sandbox::builder(sources)
        .command(["sleep", "60"])
        .stdio(Stdio::Null)
        .name(&name)
        .spawn()
        .unwrap();
    drop(run);
    assert!(!runs::is_live(&name));
    let record = runs::load(&name).unwrap();
    assert!(!record["status"].is_null(), "{record}");
}

fn errors_are_typed(dir: &std::path::Path) {
    let e = Sandbox::builder(settings(dir, "none", "{}"))
        .spawn()
        .err()
        .unwrap();
    assert!(matches!(e, Error::NoCommand), "{e:?}");
    let e = Sandbox::builder(settings(dir, "bad", r#"{"filesystem": {"nope": 1}}"#))
        .command(["true"])
        .spawn()
        .err()
        .unwrap();
    assert!(matches!(e, Error::Policy(_)), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
}

fn main() {
    let dir = scratch();
    type Scenario = (&'static str, fn(&std::path::Path));
    let scenarios: [Scenario; 5] = [
        (
            "piped_streams_status_and_events",
            piped_streams_status_and_events,
        ),
        (
            "the_asker_decides_about_unlisted_hosts",
            the_asker_decides_about_unlisted_hosts,
        ),
        (
            "a_live_policy_update_reaches_the_proxy",
            a_live_policy_update_reaches_the_proxy,
        ),
        (
            "stop_pause_and_drop_end_the_sandbox",
            stop_pause_and_drop_end_the_sandbox,
        ),
        ("errors_are_typed", errors_are_typed),
    ];
    for (name, f) in scenarios {
        f(&dir);
        println!("test {name} ... ok");
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("test result: ok. {} passed; 0 failed", scenarios.len());
}
