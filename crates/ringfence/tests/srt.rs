//! srt's settings end to end: srt 0.0.83's own README example runs unchanged, and the srt keys
//! that act on the proxy, the filesystem and git do what srt documents, seen from inside a
//! real sandbox. The README comes from the srt that scripts/test installs (`RINGFENCE_SRT_DIR`);
//! without it that test is skipped visibly (and fails under RINGFENCE_TEST_STRICT=1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{run, TestDir};

fn rf(dir: &TestDir) -> Command {
    let mut c = common::rf_in(dir);
    c.current_dir(dir.s("work"));
    c
}

fn setup(tag: &str, json: &str) -> (TestDir, String) {
    let (dir, settings) = common::with_settings(tag, json);
    dir.mkdir("work");
    (dir, settings)
}

fn upstream() -> u16 {
    common::http_upstream(|method, path| format!("upstream saw {method} {path}\n"))
}

/// The installed srt's package directory, or a visible skip (a failure in CI).
fn srt_dir() -> Option<PathBuf> {
    let why = match std::env::var_os("RINGFENCE_SRT_DIR").map(PathBuf::from) {
        Some(d) if d.join("README.md").is_file() => return Some(d),
        Some(d) => format!("{}: no README.md (RINGFENCE_SRT_DIR)", d.display()),
        None => "RINGFENCE_SRT_DIR is not set (the directory of an installed @anthropic-ai/sandbox-runtime)".into(),
    };
    common::skip(&why);
    None
}

/// The first ```json block after the "Complete Configuration Example" heading.
fn readme_example(readme: &str) -> String {
    let at = readme
        .find("### Complete Configuration Example")
        .expect("srt's README has no \"Complete Configuration Example\"");
    let rest = &readme[at..];
    let start = rest.find("```json\n").expect("no json block") + "```json\n".len();
    let end = rest[start..].find("```").expect("unterminated json block");
    rest[start..start + end].to_string()
}

#[test]
fn srt_readme_example_runs_unchanged() {
    let Some(srt) = srt_dir() else { return };
    let readme = std::fs::read_to_string(srt.join("README.md")).unwrap();
    let example = readme_example(&readme);
    let doc: serde_json::Value = serde_json::from_str(&example).unwrap();
    let (dir, settings) = setup("srt-readme", &example);
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    // Keys ringfence refuses with a reason; 0.0.83's example has none of them.
    let refused = ["/credentials"];
    if let Some(key) = refused.iter().find(|k| doc.pointer(k).is_some()) {
        let key = key.trim_start_matches('/').replace('/', ".");
        assert_eq!(out.code(), 125, "{out:#?}");
        assert!(
            out.stderr.contains(&format!("{settings}: {key}")),
            "{out:#?}"
        );
        return;
    }
    // The example makes the host's /tmp writable; a /tmp holding a directory this user can
    // enter but not list (another user's) cannot be scanned for protected files, and ringfence
    // refuses to run rather than leave it unprotected. That is this machine, not the settings:
    // they must still load.
    if out.code() == 125
        && out.stderr.starts_with("ringfence: cannot scan /tmp/")
        && out
            .stderr
            .contains("a writable root must be fully readable")
    {
        let check = run(rf(&dir).args(["check", "-s", &settings, "-c", "true"]));
        assert_eq!(check.code(), 0, "the example's settings load: {check:#?}");
        common::not_here(&format!(
            "running srt's README example: the host's /tmp cannot be scanned by this user ({})",
            out.stderr.trim()
        ));
        return;
    }
    assert_eq!(out.code(), 0, "srt's README example: {out:#?}");
    assert!(!out.stderr.contains("unknown key"), "{out:#?}");
    // The keys without effect on Linux are named, once each.
    for key in ["enableWeakerNetworkIsolation", "allowAppleEvents"] {
        let line = format!(
            "ringfence: note: {settings}: {key}: accepted for srt compatibility; no effect in ringfence"
        );
        if doc
            .pointer(&format!("/{}", key.replace('.', "/")))
            .is_some()
        {
            assert_eq!(
                out.stderr.lines().filter(|l| *l == line).count(),
                1,
                "{key}: {out:#?}"
            );
        }
    }
}

#[test]
fn keys_not_supported_yet_and_broad_entries_are_refused_at_load() {
    let cases = [
        (
            r#"{"network": {"allowedDomains": ["*.test"]}}"#,
            "network.allowedDomains[0]: \"*.test\" would allow every domain registered under the public suffix \"test\"; list the domains themselves, e.g. \"*.example.test\"",
        ),
        (
            r#"{"network": {"allowedDomains": ["github.com", "*.co.uk"]}}"#,
            "network.allowedDomains[1]: \"*.co.uk\" would allow every domain registered under the public suffix \"co.uk\"",
        ),
        (
            r#"{"network": {"deniedDomains": ["2001:db8::1:443"]}}"#,
            "network.deniedDomains[0]: \"2001:db8::1:443\": write an IPv6 address in brackets, \"[2001:db8::1:443]\"",
        ),
        (
            r#"{"network": {"parentProxy": {"https": "https://proxy.example.com:3128"}}}"#,
            "network.parentProxy.https: \"https://proxy.example.com:3128\": a TLS connection to the parent proxy",
        ),
        (
            r#"{"network": {"tlsTerminate": {"caCertPath": "/ca.pem"}}}"#,
            "network.tlsTerminate: caCertPath and caKeyPath must be given together",
        ),
        (
            r#"{"credentials": {"envVars": [{"name": "GITHUB_TOKEN", "mode": "mask"}]}}"#,
            "credentials.envVars[0].mode: \"mask\" needs network.tlsTerminate",
        ),
    ];
    for (json, want) in cases {
        let (dir, settings) = setup("srt-refused", json);
        let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
        assert_eq!(out.code(), 125, "{json}: {out:#?}");
        assert!(
            out.stderr.contains(&format!("{settings}: {want}")),
            "{json}: {out:#?}"
        );
    }
}

/// A raw HTTP exchange with the proxy from inside the sandbox (bash's /dev/tcp): prints the
/// status line of the answer to `request`.
fn status_line_script(request: &str) -> String {
    format!(
        "exec 3<>/dev/tcp/127.0.0.1/3128 && printf '{request}' >&3 && head -n 1 <&3 | tr -d '\\r'"
    )
}

#[test]
fn a_connect_refusal_carries_the_denied_domain_reason_as_its_status_phrase() {
    if !common::have("bash") {
        return common::skip("bash is not installed");
    }
    let (dir, settings) = setup(
        "srt-reason",
        r#"{"network": {"deniedDomains": ["blocked.example.com", "plain.example.com"],
            "deniedDomainReasons": {"blocked.example.com": "Use the mirror \u2014 see https://wiki.example.com/mirror\r\nX-Injected: yes"}}}"#,
    );
    let bin = common::bin();
    let script = format!(
        "{}; {}; '{}' connect blocked.example.com 443 </dev/null; echo connect=$?",
        status_line_script("CONNECT blocked.example.com:443 HTTP/1.1\\r\\nHost: blocked.example.com:443\\r\\n\\r\\n"),
        status_line_script("CONNECT plain.example.com:443 HTTP/1.1\\r\\nHost: plain.example.com:443\\r\\n\\r\\n"),
        bin.display()
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "bash", "-c", &script]));
    let stdout = out.ok();
    let phrase = "Use the mirror ? see https://wiki.example.com/mirror  X-Injected: yes";
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("HTTP/1.1 403 {phrase}"), "{out:#?}");
    assert_eq!(lines[1], "HTTP/1.1 403 Forbidden", "{out:#?}");
    assert_eq!(lines[2], "connect=125", "{out:#?}");
    // `ringfence connect` (ssh's ProxyCommand inside) shows the status line it got.
    assert!(out.stderr.contains(phrase), "{out:#?}");
}

#[test]
fn ssh_through_socks_prints_the_denied_domain_reason() {
    if !common::have("ssh") || !common::have("python3") {
        return common::skip("ssh or python3 is not installed");
    }
    let (dir, settings) = setup(
        "srt-ssh-reason",
        r#"{"network": {"deniedDomains": ["*:22"],
            "deniedDomainReasons": {"*:22": "SSH is blocked here; use an https:// remote"}}}"#,
    );
    // A no-auth SOCKS5 ProxyCommand (what `nc -X 5 -x 127.0.0.1:1080 %h %p` does).
    dir.write(
        "work/socks.py",
        r#"import os, select, socket, struct, sys
host, port = sys.argv[1].encode(), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", 1080))
s.sendall(b"\x05\x01\x00")
assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", port))
reply = s.recv(10)
if reply[1] != 0:
    sys.exit(1)
while True:
    r, _, _ = select.select([0, s], [], [])
    if 0 in r:
        data = os.read(0, 65536)
        if not data:
            s.shutdown(socket.SHUT_WR)
        else:
            s.sendall(data)
    if s in r:
        data = s.recv(65536)
        if not data:
            break
        os.write(1, data)
"#,
    );
    let script = format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o ProxyCommand='python3 {} %h %p' git@github.com true; echo ssh=$?",
        dir.s("work/socks.py")
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "sh", "-c", &script]));
    assert!(out.stdout.contains("ssh=255"), "{out:#?}");
    assert!(
        out.stderr
            .contains(":1: SSH is blocked here; use an https:// remote"),
        "OpenSSH prints the disconnect reason: {out:#?}"
    );
}

#[test]
fn trace_and_track_are_refused_for_allowed_hosts() {
    if !common::have("bash") {
        return common::skip("bash is not installed");
    }
    let port = upstream();
    let (dir, settings) = setup(
        "srt-trace",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"]}}}}"#),
    );
    let request = |method: &str| {
        status_line_script(&format!(
            "{method} http://127.0.0.1:{port}/x HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n"
        ))
    };
    let script = format!(
        "{}; {}; {}; {}",
        request("TRACE"),
        request("TRACK"),
        request("trace"),
        request("GET")
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "bash", "-c", &script]));
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(
        lines,
        [
            "HTTP/1.1 405 Method Not Allowed",
            "HTTP/1.1 405 Method Not Allowed",
            "HTTP/1.1 405 Method Not Allowed",
            "HTTP/1.1 200 OK"
        ],
        "{out:#?}"
    );
}

#[test]
fn literal_entries_name_one_path_and_patterns_all_matches() {
    let (dir, literal) = setup(
        "srt-literal",
        r#"{"filesystem": {"denyRead": [{"path": "./a*.txt", "literal": true}]}}"#,
    );
    let pattern = dir.settings(r#"{"filesystem": {"denyRead": ["./a*.txt"]}}"#);
    dir.write("work/a*.txt", "star\n");
    dir.write("work/ab.txt", "ab\n");
    // A denied file reads as empty (or not at all).
    let script = "echo \"[$(cat 'a*.txt' 2>/dev/null)] [$(cat ab.txt 2>/dev/null)]\"";
    let out = run(rf(&dir).args(["run", "-s", &literal, "--", "sh", "-c", script]));
    assert_eq!(out.ok(), "[] [ab]\n", "{out:#?}");
    let out = run(rf(&dir).args(["run", "-s", &pattern, "--", "sh", "-c", script]));
    assert_eq!(out.ok(), "[] []\n", "{out:#?}");
}

#[test]
fn git_safe_directories_reach_git_inside() {
    if !common::have("git") {
        return common::skip("git is not installed");
    }
    let (dir, settings) = setup(
        "srt-safe-dirs",
        r#"{"git": {"safeDirectories": ["/srv/repo", "~/proj"]}}"#,
    );
    let out = run(rf(&dir)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "user.name")
        .env("GIT_CONFIG_VALUE_0", "Caller")
        .args([
            "run",
            "-s",
            &settings,
            "--",
            "sh",
            "-c",
            "git config --get-all safe.directory; git config user.name",
        ]));
    let home = dir.s("home");
    assert_eq!(
        out.ok(),
        format!("/srv/repo\n/srv/repo/*\n{home}/proj\n{home}/proj/*\nCaller\n"),
        "{out:#?}"
    );
}

#[test]
fn ignore_violations_thin_the_report_but_not_the_log() {
    if !common::have("bash") {
        return common::skip("bash is not installed");
    }
    let (dir, settings) = setup(
        "srt-ignore",
        r#"{"network": {"deniedDomains": ["quiet.example.com", "loud.example.com"]},
            "ignoreViolations": {"*": ["quiet.example.com"], "rf-marker": ["loud.example.com"]}}"#,
    );
    let connect = |host: &str| {
        status_line_script(&format!(
            "CONNECT {host}:443 HTTP/1.1\\r\\nHost: {host}:443\\r\\n\\r\\n"
        ))
    };
    let script = format!(
        "{}; {}",
        connect("quiet.example.com"),
        connect("loud.example.com")
    );
    let name = format!("srt-ignore-{}", common::unique_number());
    let report = |name: &str, script: &str| {
        run(rf(&dir).args([
            "run",
            "--name",
            name,
            "--violations-report",
            "stderr",
            "-s",
            &settings,
            "--",
            "bash",
            "-c",
            script,
        ]))
    };
    let out = report(&name, &script);
    assert!(out.stderr.contains("<sandbox_violations>"), "{out:#?}");
    assert!(
        out.stderr.contains("deny network loud.example.com:443"),
        "{out:#?}"
    );
    assert!(
        !out.stderr.contains("deny network quiet.example.com"),
        "{out:#?}"
    );
    // Both are in the activity log.
    let log = run(rf(&dir).args(["log", "show", &name, "--json"]));
    let text = log.ok();
    assert!(
        text.contains("\"quiet.example.com\"") && text.contains("\"loud.example.com\""),
        "{text}"
    );
    // A command that contains "rf-marker" has loud.example.com left out too.
    let script = format!("{script}; : rf-marker");
    let out = report(&format!("{name}-2"), &script);
    assert!(!out.stderr.contains("deny network"), "{out:#?}");
}
