//! `run --check` with `--control-fd`: a command that needs approval is asked about on the
//! control channel before the sandbox starts; the answer decides whether it runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::TestDir;

fn run_with_answer(answer: &'static str) -> (common::Outcome, serde_json::Value) {
    let dir = TestDir::new("check-control");
    dir.mkdir("state");
    dir.mkdir("home");
    let settings = dir.settings(r#"{"permissions": {"defaultMode": "ask"}}"#);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(common::bin());
    cmd.env("XDG_STATE_HOME", dir.s("state"))
        .env("HOME", dir.s("home"))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .args([
            "run",
            "-s",
            &settings,
            "--check",
            "--control-fd",
            "7",
            "-c",
            "echo the command ran",
        ]);
    common::inherit_as(&mut cmd, fd, 7);
    let child = cmd.spawn().unwrap();
    drop(theirs);
    let mut w = ours.try_clone().unwrap();
    let mut r = BufReader::new(ours);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let question: serde_json::Value = serde_json::from_str(&line).unwrap();
    writeln!(w, r#"{{"type":"answer","id":0,"answer":"{answer}"}}"#).unwrap();
    drop(w);
    drop(r);
    (common::wait(child, common::RUN_TIMEOUT), question)
}

#[test]
fn an_approved_command_runs() {
    let (out, question) = run_with_answer("once");
    assert_eq!(question["type"], "approve", "{question:#}");
    assert_eq!(question["command"], "echo the command ran", "{question:#}");
    assert!(question["reasons"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(out.ok(), "the command ran\n", "{out:#?}");
}

#[test]
fn a_refused_command_does_not_run() {
    let (out, _) = run_with_answer("deny");
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(!out.stdout.contains("the command ran"), "{out:#?}");
    assert!(out.stderr.contains("not approved"), "{out:#?}");
}
