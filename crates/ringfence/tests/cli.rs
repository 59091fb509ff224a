//! The command line contract: exit statuses, settings errors and the shell-string form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run, sh, TestDir};

#[test]
fn exit_status_passes_through() {
    assert_eq!(sh(&[], "exit 3").code(), 3);
    assert_eq!(sh(&[], "exit 0").code(), 0);
    assert_eq!(sh(&[], "exit 124").code(), 124);
}

#[test]
fn killed_by_sigkill_is_137() {
    assert_eq!(sh(&[], "kill -9 $$").code(), 137);
}

#[test]
fn killed_by_sigterm_is_143() {
    assert_eq!(sh(&[], "kill -TERM $$").code(), 143);
}

#[test]
fn command_not_found_is_127() {
    let out = run(common::ringfence(&[]).args(["--", "/nonexistent/rf-no-such-command"]));
    assert_eq!(out.code(), 127, "{out:#?}");
    let out = run(common::ringfence(&[]).args(["--", "rf-no-such-command-on-path"]));
    assert_eq!(out.code(), 127, "{out:#?}");
}

#[test]
fn not_executable_is_126() {
    let dir = TestDir::new("cli-noexec");
    let file = dir.write("script.sh", "#!/bin/sh\necho ran\n");
    let out = run(common::ringfence(&[]).args(["--", common::path_str(&file)]));
    assert_eq!(out.code(), 126, "{out:#?}");
    assert!(!out.stdout.contains("ran"));
}

#[test]
fn unknown_settings_key_is_125_and_names_the_key() {
    let dir = TestDir::new("cli-badkey");
    let settings = dir.settings(r#"{"limits":{"pidz":1}}"#);
    let out = run(common::ringfence(&["-s", &settings]).args(["--", "/bin/sh", "-c", "echo ran"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("limits.pidz"), "{out:#?}");
    assert!(out.stderr.contains(&settings), "{out:#?}");
    assert!(!out.stdout.contains("ran"), "the command ran: {out:#?}");
}

#[test]
fn empty_settings_file_is_125() {
    let dir = TestDir::new("cli-empty");
    let settings = dir.settings("");
    let out = run(common::ringfence(&["-s", &settings]).args(["--", "/bin/sh", "-c", "echo ran"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains(&settings), "{out:#?}");
    assert!(!out.stdout.contains("ran"), "{out:#?}");
}

#[test]
fn invalid_settings_value_is_125() {
    let dir = TestDir::new("cli-badvalue");
    for json in [
        r#"{"limits":{"memory":"lots"}}"#,
        r#"{"limits":{"pids":-1}}"#,
        "{not json",
    ] {
        let settings = dir.settings(json);
        let out =
            run(common::ringfence(&["-s", &settings]).args(["--", "/bin/sh", "-c", "echo ran"]));
        assert_eq!(out.code(), 125, "{json}: {out:#?}");
        assert!(!out.stdout.contains("ran"), "{json}: {out:#?}");
    }
}

#[test]
fn missing_settings_file_is_125() {
    let dir = TestDir::new("cli-missing");
    let missing = dir.s("nope.json");
    let out = run(common::ringfence(&["-s", &missing]).args(["--", "true"]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains(&missing), "{out:#?}");
}

#[test]
fn shell_string_form() {
    let out = run(&mut common::ringfence(&["-c", "echo $((6 * 7)); exit 5"]));
    assert_eq!(out.code(), 5, "{out:#?}");
    assert_eq!(out.stdout, "42\n");
}

#[test]
fn debug_prints_policy_and_mount_plan() {
    let dir = TestDir::new("cli-debug");
    dir.mkdir("work");
    let out = run(common::ringfence(&["-d", "--allow-write", &dir.s("work")]).args(["--", "true"]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stderr.contains("mount plan:"), "{out:#?}");
    assert!(out.stderr.contains(&dir.s("work")), "{out:#?}");
}

/// Runs ringfence on a pseudo-terminal (driven by python3's pty module): the command must get a
/// terminal of its own (not the caller's), see the window size, and get SIGINT from Ctrl-C.
#[test]
fn terminal_is_the_sandboxs_own_and_ctrl_c_reaches_the_command() {
    if !std::path::Path::new("/usr/bin/python3").is_file() {
        common::skip("no /usr/bin/python3");
        return;
    }
    let driver = r#"
import os, pty, struct, fcntl, termios, time, sys
pid, fd = pty.fork()
if pid == 0:
    os.chdir("/")
    os.execv(sys.argv[1], [sys.argv[1], "run", "--", "/bin/sh", "-c",
        "tty; stty size; trap 'echo got-sigint; exit 7' INT; echo ready; while :; do sleep 0.1; done"])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
out = b""
deadline = time.time() + 20
sent = False
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if b"ready" in out and not sent:
        os.write(fd, b"\x03")
        sent = True
_, status = os.waitpid(pid, 0)
print(repr(out.decode(errors="replace")))
print("status", os.waitstatus_to_exitcode(status))
"#;
    let bin = common::bin();
    let out = run(std::process::Command::new("/usr/bin/python3")
        .args(["-c", driver])
        .arg(&bin)
        .current_dir("/"));
    let text = out.stdout.clone();
    // The command's terminal is a pty of the sandbox's own devpts, not the caller's.
    assert!(text.contains("/dev/pts/0"), "{out:#?}");
    assert!(
        text.contains("33 101"),
        "window size not passed on: {out:#?}"
    );
    assert!(
        text.contains("got-sigint"),
        "Ctrl-C did not reach the command: {out:#?}"
    );
    assert!(text.contains("status 7"), "{out:#?}");
}

#[test]
fn a_path_directory_that_cannot_be_searched_is_passed_over_and_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("cli-path-closed");
    let program = "rf-path-closed-probe";
    for (sub, says) in [("closed", "closed"), ("open", "open")] {
        let p = dir.write(
            &format!("{sub}/{program}"),
            &format!("#!/bin/sh\necho {says}\n"),
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Mode 000: not even its owner may search it (the command has no capabilities).
    let closed = dir.join("closed");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
    let path_with = |dirs: &[&str]| {
        let mut v: Vec<String> = dirs.iter().map(|d| dir.s(d)).collect();
        v.push("/usr/bin:/bin".into());
        v.join(":")
    };
    let passed_over = run(common::ringfence(&[])
        .env("PATH", path_with(&["closed", "open"]))
        .args(["--", program]));
    let only_closed = run(common::ringfence(&[])
        .env("PATH", path_with(&["closed"]))
        .args(["--", program]));
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(passed_over.ok().trim(), "open", "{passed_over:#?}");
    assert_eq!(only_closed.code(), 126, "{only_closed:#?}");
    assert!(
        only_closed.stderr.contains("Permission denied"),
        "{only_closed:#?}"
    );
    assert!(!only_closed.stdout.contains("closed"), "{only_closed:#?}");
}
