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
