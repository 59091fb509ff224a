//! The same small settings files under srt 0.0.83 and under ringfence, the same requests from
//! inside each sandbox (curl, forced through the sandbox's proxy), and the same allow or deny
//! for each; where ringfence is deliberately stricter than srt, the case says so and both
//! outcomes are pinned, so a change on either side shows. srt comes from `RINGFENCE_SRT_DIR`
//! (scripts/test installs it); the upstream is a server of this test on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::TestDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allow,
    Deny,
    /// The settings are refused before anything runs (exit 125).
    Refused,
}
use Outcome::*;

/// The installed srt and what it needs to run a sandbox, or a counted skip.
fn srt() -> Option<PathBuf> {
    let dir = match std::env::var_os("RINGFENCE_SRT_DIR").map(PathBuf::from) {
        Some(d) if d.join("dist/cli.js").is_file() => d,
        _ => {
            common::skip("RINGFENCE_SRT_DIR does not name an installed srt (dist/cli.js)");
            return None;
        }
    };
    for tool in ["node", "bwrap", "socat", "rg", "curl"] {
        if !common::have(tool) {
            common::skip(&format!("{tool} is not installed (srt's sandbox needs it)"));
            return None;
        }
    }
    Some(dir)
}

/// What a run of `curl URL` printed: `%{http_code}/%{http_connect}`, as allow or deny. Any
/// other output (srt or ringfence failing to start, curl missing) fails the test.
fn classify(who: &str, code: i32, stdout: &str, stderr: &str) -> Outcome {
    if code == 125 && stdout.is_empty() {
        return Refused;
    }
    let Some((plain, connect)) = stdout.trim().split_once('/') else {
        panic!("{who}: unexpected output {stdout:?} (status {code:?}): {stderr}");
    };
    let num = |s: &str| {
        s.parse::<u16>()
            .unwrap_or_else(|_| panic!("{who}: {stdout:?}: {stderr}"))
    };
    match (num(plain), num(connect)) {
        (200, _) | (_, 200) => Allow,
        (p, 0) if p >= 400 => Deny,
        (0, c) if c >= 400 => Deny,
        other => panic!("{who}: neither an allow nor a proxy's refusal: {other:?}: {stderr}"),
    }
}

fn script(url: &str, method: &str) -> String {
    format!("curl -s -o /dev/null --noproxy '' -X {method} -w '%{{http_code}}/%{{http_connect}}' '{url}'")
}

fn under_srt(
    srt: &std::path::Path,
    dir: &TestDir,
    settings: &str,
    url: &str,
    method: &str,
) -> Outcome {
    let out = common::run(
        Command::new("node")
            .arg(srt.join("dist/cli.js"))
            .args(["-s", settings, "--", "/bin/sh", "-c", &script(url, method)])
            .current_dir(&dir.path)
            .stdin(Stdio::null()),
    );
    classify("srt", out.code(), &out.stdout, &out.stderr)
}

fn under_ringfence(settings: &str, url: &str, method: &str) -> Outcome {
    let out = common::sh(&["-s", settings], &script(url, method));
    classify("ringfence", out.code(), &out.stdout, &out.stderr)
}

struct Case {
    name: &'static str,
    allowed: Vec<String>,
    denied: Vec<String>,
    url: String,
    method: &'static str,
    /// srt's outcome, and ringfence's where it differs on purpose (with the README's reason).
    srt: Outcome,
    ringfence: Option<(Outcome, &'static str)>,
}

fn cases(port: u16) -> Vec<Case> {
    let at = |p: u16| format!("127.0.0.1:{p}");
    let url = |p: u16, scheme: &str| format!("{scheme}://127.0.0.1:{p}/x");
    let other = port.wrapping_add(1).max(1024);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Case {
            name: "an allowed address and port",
            allowed: vec![at(port)],
            denied: vec![],
            url: url(port, "http"),
            method: "GET",
            srt: Allow,
            ringfence: None,
        },
        Case {
            name: "another port of an allowed address",
            allowed: vec![at(port)],
            denied: vec![],
            url: url(other, "http"),
            method: "GET",
            srt: Deny,
            ringfence: None,
        },
        Case {
            name: "a deny entry over an allow entry",
            allowed: vec![at(port)],
            denied: s(&["127.0.0.1"]),
            url: url(port, "http"),
            method: "GET",
            srt: Deny,
            ringfence: None,
        },
        Case {
            name: "not in allowedDomains",
            allowed: s(&["example.com"]),
            denied: vec![],
            url: url(port, "http"),
            method: "GET",
            srt: Deny,
            ringfence: None,
        },
        Case {
            name: "CONNECT to an allowed address and port",
            allowed: vec![at(port)],
            denied: vec![],
            url: url(port, "https"),
            method: "GET",
            srt: Allow,
            ringfence: None,
        },
        Case {
            name: "CONNECT to an address not in allowedDomains",
            allowed: s(&["example.com"]),
            denied: vec![],
            url: url(port, "https"),
            method: "GET",
            srt: Deny,
            ringfence: None,
        },
        Case {
            name: "a wildcard entry does not cover its base",
            allowed: s(&["*.example.com"]),
            denied: vec![],
            url: "http://example.com/x".into(),
            method: "GET",
            srt: Deny,
            ringfence: None,
        },
        Case {
            name: "TRACE to an allowed host",
            allowed: vec![at(port)],
            denied: vec![],
            url: url(port, "http"),
            method: "TRACE",
            srt: Allow,
            ringfence: Some((
                Deny,
                "TRACE reflects the request, injected credentials included, back to the client",
            )),
        },
        Case {
            name: "a loopback address allowed without a port",
            allowed: s(&["127.0.0.1"]),
            denied: vec![],
            url: url(port, "http"),
            method: "GET",
            srt: Allow,
            ringfence: Some((
                Deny,
                "host services only by address with an explicit port (README: Host services)",
            )),
        },
        Case {
            name: "a name that resolves to loopback",
            allowed: vec![format!("localhost:{port}")],
            denied: vec![],
            url: format!("http://localhost:{port}/x"),
            method: "GET",
            srt: Allow,
            ringfence: Some((
                Deny,
                "names that resolve to loopback are refused (README: Host services)",
            )),
        },
        Case {
            name: "a wildcard over an IP address",
            allowed: s(&["*.0.0.1"]),
            denied: vec![],
            url: url(port, "http"),
            method: "GET",
            srt: Deny,
            ringfence: Some((
                Refused,
                "an entry that cannot match is refused at load time",
            )),
        },
    ]
}

#[test]
fn srt_and_ringfence_decide_the_same_requests_alike() {
    let Some(srt) = srt() else { return };
    let port = common::http_upstream(|_, _| "upstream\n".to_string());
    let dir = TestDir::new("srt-compare");
    let mut differ = Vec::new();
    for (i, c) in cases(port).into_iter().enumerate() {
        let settings = dir.write(
            &format!("case-{i}.json"),
            &serde_json::json!({
                "network": {"allowedDomains": c.allowed, "deniedDomains": c.denied},
                "filesystem": {"denyRead": [], "allowWrite": [], "denyWrite": []},
            })
            .to_string(),
        );
        let settings = settings.to_str().unwrap();
        let s = under_srt(&srt, &dir, settings, &c.url, c.method);
        let r = under_ringfence(settings, &c.url, c.method);
        let want_r = c.ringfence.map_or(c.srt, |(o, _)| o);
        if s != c.srt || r != want_r {
            differ.push(format!(
                "{}: srt {s:?} (expected {:?}), ringfence {r:?} (expected {want_r:?})",
                c.name, c.srt
            ));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
}
