//! The activity log of real runs: what is recorded, and that `ringfence log verify` finds each
//! kind of tampering and names the line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{run, TestDir};

fn rf(state: &str) -> Command {
    let mut c = Command::new(common::bin());
    c.env("XDG_STATE_HOME", state)
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    c
}

#[test]
fn denied_creations_are_logged_and_the_chain_verifies() {
    let dir = TestDir::new("activity");
    dir.mkdir("work");
    dir.mkdir("state");
    let w = dir.s("work");
    let state = dir.s("state");
    let name = format!("act-{}", common::unique_number());
    let out = run(rf(&state).args([
        "run",
        "--name",
        &name,
        "--allow-write",
        &w,
        "--",
        "sh",
        "-c",
        &format!(
            "touch '{w}/.bashrc'; mkdir '{w}/.vscode'; ls -A '{state}/ringfence' | wc -l; echo ok > '{w}/f'"
        ),
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");
    // The state directory (logs of this and other runs) is not readable inside.
    assert_eq!(out.stdout.trim(), "0", "{out:#?}");
    assert!(
        out.stderr.contains(&format!("ringfence log show {name}")),
        "{out:#?}"
    );

    let shown = run(rf(&state).args(["log", "show", &name, "--json"]));
    assert_eq!(shown.code(), 0, "{shown:#?}");
    let events: Vec<serde_json::Value> = shown
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
        assert_eq!(e["run"], name.as_str());
    }
    // Every program run inside, in order: the shell, touch, mkdir, ls, wc.
    let execs: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "exec")
        .map(|e| e["argv"][0].as_str().unwrap())
        .collect();
    assert_eq!(execs[0], "sh", "{execs:?}");
    for prog in ["touch", "mkdir", "ls", "wc"] {
        assert!(execs.contains(&prog), "{prog} missing from {execs:?}");
    }
    let events: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] != "exec").collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run.start", "fs.denied", "fs.denied", "run.end"]);
    assert_eq!(events[1]["op"], "open");
    assert_eq!(events[1]["path"], format!("{w}/.bashrc"));
    assert_eq!(events[1]["program"], "touch");
    assert_eq!(events[2]["op"], "mkdir");
    assert_eq!(events[3]["exit"], 0);
    assert_eq!(events[3]["counts"]["fs.denied"], 2);
    assert_eq!(events[3]["counts"]["exec"], execs.len());
    assert!(events[0]["policyDigest"].as_str().unwrap().len() == 64);

    let ok = run(rf(&state).args(["log", "verify", &name]));
    assert_eq!(ok.code(), 0, "{ok:#?}");
    assert!(ok.stdout.contains("intact ("), "{ok:#?}");

    let list = run(rf(&state).args(["log"]));
    assert!(list.stdout.contains(&name), "{list:#?}");

    // Each kind of tampering is found, with its line.
    let log = dir.join(format!("state/ringfence/runs/{name}.jsonl"));
    let orig = std::fs::read_to_string(&log).unwrap();
    let all: Vec<&str> = orig.lines().collect();
    let n = all.len();
    let k = all
        .iter()
        .position(|l| l.contains("\"kind\":\"fs.denied\""))
        .unwrap();
    let write = |l: &[&str]| {
        std::fs::write(&log, l.iter().map(|s| format!("{s}\n")).collect::<String>()).unwrap()
    };
    let check = |expect: &str| {
        let bad = run(rf(&state).args(["log", "verify", &name]));
        assert_eq!(bad.code(), 1, "{bad:#?}");
        assert!(bad.stdout.contains(expect), "expected {expect}: {bad:#?}");
    };
    let mut edited = all.clone();
    let changed = all[k].replace(".bashrc", ".bashrx");
    edited[k] = &changed;
    write(&edited);
    check(&format!("line {}: its content does not match", k + 1));
    let mut removed = all.clone();
    removed.remove(k);
    write(&removed);
    check(&format!("line {}: sequence number", k + 1));
    let mut swapped = all.clone();
    swapped.swap(k, k + 1);
    write(&swapped);
    check(&format!("line {}:", k + 1));
    write(&all[..n - 1]);
    check(&format!(
        "line {}: the log does not end with run.end",
        n - 1
    ));
    write(&all);
    let ok = run(rf(&state).args(["log", "verify", &name]));
    assert_eq!(ok.code(), 0, "{ok:#?}");
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

#[test]
fn ps_pause_resume_follow_and_stop_a_live_run() {
    let dir = TestDir::new("control");
    dir.mkdir("state");
    let state = dir.s("state");
    let marker = common::unique_number();
    let name = format!("ctl-{marker}");
    // A bound, so that a failing assertion below never leaves the loop running for long.
    let settings = dir.settings(r#"{"limits":{"wallSeconds":60}}"#);
    let mut child = rf(&state)
        .args([
            "run",
            "-s",
            &settings,
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            &format!("while :; do sleep 0.05; done; : {marker}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let ps = run(rf(&state).args(["ps"]));
        if ps.stdout.contains(&name) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the run ended before it was listed: {status}: {err}");
        }
        assert!(start.elapsed().as_secs() < 20, "never listed: {ps:#?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let follower = rf(&state)
        .args(["log", "follow", &name, "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The supervisor and the sandbox's PID 1 carry the same command line; the shell is the
    // one whose program is sh.
    // Listed as soon as its record exists: the shell may still be starting (and for a moment
    // after each fork, its child carries the same command line).
    let find_shell = || -> Vec<u32> {
        common::host_process_with(&format!(": {marker}"))
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sh\0"))
            })
            .collect()
    };
    let start = std::time::Instant::now();
    let mut shell = find_shell();
    while shell.len() != 1 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        shell = find_shell();
    }
    assert_eq!(shell.len(), 1, "{shell:?}");
    // Paused: the loop makes no progress (no new `sleep` is started). A process that was
    // waiting for PID 1 when it was stopped stays blocked rather than stopped, so progress,
    // not the `T` state, is what is checked.
    let sleeps = || -> Vec<u32> {
        let mut v: Vec<u32> = common::host_process_with("sleep 0.05")
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.to_string()))
                    .and_then(|r| r.split_whitespace().nth(1).map(String::from))
                    .is_some_and(|pp| pp == shell[0].to_string())
            })
            .collect();
        v.sort();
        v
    };
    let paused = run(rf(&state).args(["pause", &name]));
    assert!(paused.stdout.contains("paused"), "{paused:#?}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = sleeps();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(sleeps(), before, "the loop went on while paused");
    assert_ne!(state_of(shell[0]), Some('R'), "the command is running");
    let resumed = run(rf(&state).args(["resume", &name]));
    assert!(resumed.stdout.contains("resumed"), "{resumed:#?}");
    let start = std::time::Instant::now();
    while sleeps() == before {
        assert!(
            start.elapsed().as_secs() < 10,
            "the loop did not go on after resume"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Stopping a paused run works too: the SIGTERM reaches the command once it is thawed.
    let paused = run(rf(&state).args(["pause", &name]));
    assert!(paused.stdout.contains("paused"), "{paused:#?}");
    let stopped = run(rf(&state).args(["stop", &name]));
    assert!(stopped.stdout.contains("stopped"), "{stopped:#?}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let followed = common::wait(follower, std::time::Duration::from_secs(10));
    let kinds: Vec<String> = followed
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .filter(|k| k != "\"exec\"")
        .collect();
    assert_eq!(kinds, ["\"run.start\"", "\"run.end\""], "{followed:#?}");
    let ps = run(rf(&state).args(["ps"]));
    assert!(!ps.stdout.contains(&name), "{ps:#?}");
}

#[test]
fn violations_report_appends_srt_style_lines_to_stderr() {
    let dir = TestDir::new("violations");
    dir.mkdir("work");
    dir.mkdir("state");
    let w = dir.s("work");
    let state = dir.s("state");
    let out = run(rf(&state).args([
        "run",
        "--violations-report",
        "stderr",
        "--allow-write",
        &w,
        "--",
        "sh",
        "-c",
        &format!("touch '{w}/.envrc' 2>/dev/null; echo ok > '{w}/fine'"),
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");
    let expected = format!("\n<sandbox_violations>\ndeny open {w}/.envrc\n</sandbox_violations>\n");
    assert!(out.stderr.ends_with(&expected), "{out:#?}");

    // Nothing denied: no block at all.
    let quiet = run(rf(&state).args([
        "run",
        "--violations-report",
        "stderr",
        "--allow-write",
        &w,
        "--",
        "true",
    ]));
    assert_eq!(quiet.code(), 0, "{quiet:#?}");
    assert!(!quiet.stderr.contains("sandbox_violations"), "{quiet:#?}");
}

/// A write that a read-only mount refuses (outside the writable roots) is recorded too, with
/// the path as the sandbox saw it; the mount, not the report, is what refuses it.
#[test]
fn writes_outside_the_writable_roots_are_logged() {
    let dir = TestDir::new("activity-erofs");
    dir.mkdir("work");
    dir.mkdir("state");
    let w = dir.s("work");
    let state = dir.s("state");
    let name = format!("erofs-{}", common::unique_number());
    let outside = dir.s("outside-file");
    let out = run(rf(&state).args([
        "run",
        "--name",
        &name,
        "--allow-write",
        &w,
        "--",
        "sh",
        "-c",
        &format!("touch '{outside}'; mkdir /etc/ringfence-test-dir; echo ok > '{w}/inside'"),
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(!dir.join("outside-file").exists());
    assert_eq!(dir.read("work/inside"), "ok\n");
    assert!(
        out.stderr
            .contains("refused 2 writes outside the writable roots (read-only)"),
        "{out:#?}"
    );
    let show = run(rf(&state).args(["log", "show", &name, "--json", "--kind", "fs"]));
    let events: Vec<serde_json::Value> = show
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["op"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            ("open", outside.as_str()),
            ("mkdir", "/etc/ringfence-test-dir")
        ],
        "{events:#?}"
    );
    assert!(events
        .iter()
        .all(|e| e["reason"] == "outside the writable roots (read-only)"));
}

/// A supervisor that falls behind never holds up the sandbox: reports that do not fit are
/// dropped and counted, and the log says how many. Each exec carries 8 KB of arguments, so that
/// the reports overflow the channel even though they travel in batches.
#[test]
fn a_stalled_supervisor_drops_reports_and_counts_them() {
    let dir = TestDir::new("activity-dropped");
    dir.mkdir("work");
    dir.mkdir("state");
    let w = dir.s("work");
    let state = dir.s("state");
    let name = format!("drop-{}", common::unique_number());
    let child = rf(&state)
        .args([
            "run",
            "--name",
            &name,
            "--allow-write",
            &w,
            "--",
            "sh",
            "-c",
            &format!(
                "while [ ! -e '{w}/go' ]; do sleep 0.02; done; a=$(printf '%01000d' 0); \
                 i=0; while [ $i -lt 1500 ]; do /bin/true $a $a $a $a $a $a $a $a; i=$((i+1)); done; \
                 echo done > '{w}/done'"
            ),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let supervisor = child.id() as i32;
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill with integer arguments, on our own child.
    unsafe { libc::kill(supervisor, libc::SIGSTOP) };
    std::fs::write(dir.join("work/go"), "").unwrap();
    let start = std::time::Instant::now();
    while !dir.join("work/done").exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let finished_while_stalled = dir.join("work/done").exists();
    // SAFETY: as above.
    unsafe { libc::kill(supervisor, libc::SIGCONT) };
    let out = common::wait(child, common::RUN_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(
        finished_while_stalled,
        "the sandbox was held up by a stopped supervisor"
    );
    let show = run(rf(&state).args(["log", "show", &name, "--json"]));
    let events: Vec<serde_json::Value> = show
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dropped: u64 = events
        .iter()
        .filter(|e| e["kind"] == "events.dropped")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    let end = events.iter().find(|e| e["kind"] == "run.end").unwrap();
    assert!(dropped > 0, "nothing was dropped: {end:#?}");
    assert_eq!(end["counts"]["dropped"], dropped, "{end:#?}");
    let trues = events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["path"] == "/bin/true")
        .count() as u64;
    // Every exec is either in the log or in the dropped count (the count also covers the
    // sleeps of the wait loop, and the shell itself).
    assert!(trues + dropped >= 1500, "{trues} + {dropped} < 1500");
    let verify = run(rf(&state).args(["log", "verify", &name]));
    assert_eq!(verify.code(), 0, "{verify:#?}");
}

#[test]
fn log_show_prints_a_timeline_coloured_only_when_asked() {
    let dir = TestDir::new("activity-timeline");
    dir.mkdir("work");
    dir.mkdir("state");
    let w = dir.s("work");
    let state = dir.s("state");
    let name = format!("timeline-{}", common::unique_number());
    let out = run(rf(&state).args([
        "run",
        "--name",
        &name,
        "--allow-write",
        &w,
        "--",
        "sh",
        "-c",
        // A refused path carrying terminal escapes: the timeline must not pass them on.
        &format!("touch '{w}/.bashrc'; mkdir \"/etc/rf$(printf '\\033[2J')\"; true"),
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");

    // Not a terminal, no --color: plain text, a line per event, times after the start.
    let plain = run(rf(&state).args(["log", "show", &name]));
    let text = plain.ok();
    assert!(!text.contains('\u{1b}'), "{plain:#?}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("+00:00.000  run.start "), "{plain:#?}");
    assert!(lines.last().unwrap().contains("run.end"), "{plain:#?}");
    let denied: Vec<&&str> = lines.iter().filter(|l| l.contains("fs.denied")).collect();
    assert_eq!(denied.len(), 2, "{plain:#?}");
    assert!(denied[0].contains(&format!("open {w}/.bashrc by touch")));
    assert!(
        denied[1].contains("mkdir /etc/rf\\u{1b}[2J by mkdir"),
        "{plain:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains(" exec ") && l.contains("touch ")));

    // --kind keeps that kind only; --color always colours denials red.
    let fs = run(rf(&state).args(["log", "show", &name, "--kind", "fs"]));
    assert_eq!(fs.ok().lines().count(), 2, "{fs:#?}");
    let coloured = run(rf(&state).args(["log", "show", &name, "--color", "always"]));
    assert!(coloured.ok().contains("\u{1b}[31mopen "), "{coloured:#?}");
    // The only escape sequences are the timeline's own (SGR colour codes).
    let stray = coloured
        .stdout
        .match_indices('\u{1b}')
        .filter(|(i, _)| !coloured.stdout[i + 1..].starts_with('['))
        .count();
    assert_eq!(stray, 0);
    assert!(!coloured.stdout.contains("\u{1b}[2J"), "{coloured:#?}");
    let never = run(rf(&state).args(["log", "show", &name, "--color", "never"]));
    assert_eq!(never.ok(), text);

    // The list: status, duration and counts.
    let list = run(rf(&state).args(["log"]));
    let header = list.ok().lines().next().unwrap().to_string();
    for col in [
        "STATUS",
        "DURATION",
        "EXEC",
        "FS-DENIED",
        "NET-ALLOW",
        "NET-DENIED",
    ] {
        assert!(header.contains(col), "{list:#?}");
    }
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    // name, "exit", "0", duration, exec, fs-denied, net-allow, net-denied, command...
    assert_eq!(&row[1..3], ["exit", "0"], "{list:#?}");
    assert_eq!(&row[5..8], ["2", "0", "0"], "{list:#?}");
}

#[test]
fn watch_refuses_without_a_terminal() {
    let dir = TestDir::new("activity-watch");
    dir.mkdir("state");
    let out = run(rf(&dir.s("state")).arg("watch"));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("watch needs a terminal"), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
}

/// The run record says whether the command could create user namespaces of its own.
#[test]
fn run_start_names_nested_user_namespaces() {
    let dir = TestDir::new("activity-userns");
    dir.mkdir("state");
    let state = dir.s("state");
    let mut cases = vec![("{}", false)];
    if !common::is_root() {
        // A root caller is refused this key (escape_syscalls.rs tests the refusal).
        cases.push((r#"{"allowNestedUserNamespaces": true}"#, true));
    }
    for (settings, expected) in cases {
        let settings = dir.settings(settings);
        let name = format!("userns-{}", common::unique_number());
        let out = run(rf(&state).args(["run", "--name", &name, "-s", &settings, "--", "true"]));
        assert_eq!(out.code(), 0, "{out:#?}");
        let shown = run(rf(&state).args(["log", "show", &name, "--json"]));
        let start: serde_json::Value =
            serde_json::from_str(shown.stdout.lines().next().unwrap()).unwrap();
        assert_eq!(start["kind"], "run.start", "{shown:#?}");
        assert_eq!(
            start["protections"]["nestedUserNamespaces"], expected,
            "{start:#}"
        );
        assert_eq!(
            start["policy"]["allowNestedUserNamespaces"], expected,
            "{start:#}"
        );
    }
}

/// An exec's report holds its path and arguments as the program got them: an argument longer
/// than the first piece read of it, more arguments than are recorded (the first 64 are), and a
/// program run by a relative path that exits at once (its directory is looked at before it
/// goes on).
/// The exec events of run `name`, from `ringfence log show`.
fn execs_of(state: &str, name: &str) -> Vec<serde_json::Value> {
    run(rf(state).args(["log", "show", name, "--json"]))
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "exec")
        .collect()
}

#[test]
fn exec_reports_hold_long_arguments_and_relative_programs() {
    let dir = TestDir::new("activity-exec-args");
    dir.mkdir("work");
    dir.mkdir("state");
    let w = dir.s("work");
    let state = dir.s("state");
    std::fs::copy("/bin/true", dir.join("work/prog")).unwrap();
    let name = format!("args-{}", common::unique_number());
    let long = "x".repeat(3000);
    let out = run(rf(&state).args([
        "run",
        "--name",
        &name,
        "--allow-write",
        &w,
        "--",
        "sh",
        "-c",
        &format!(
            "/bin/echo {long} short >/dev/null; /bin/true $(seq 1 70); cd '{w}' && ./prog relative"
        ),
    ]));
    assert_eq!(out.code(), 0, "{out:#?}");
    let execs = execs_of(&state, &name);
    let argv = |path: &str| -> Vec<String> {
        let e = execs
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("no exec of {path}: {execs:#?}"));
        e["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(argv("/bin/echo"), ["/bin/echo", long.as_str(), "short"]);
    let trues = argv("/bin/true");
    assert_eq!(trues.len(), 64, "{trues:?}");
    assert_eq!(trues[0], "/bin/true");
    assert_eq!(trues[63], "63");
    assert_eq!(argv("./prog"), ["./prog", "relative"]);

    // The command itself by a relative path: its exec is reported before it has memory of
    // its own (it runs in PID 1's until then).
    let first = format!("first-{}", common::unique_number());
    let out = run(rf(&state)
        .current_dir(&w)
        .args(["run", "--name", &first, "--", "./prog", "first"]));
    assert_eq!(out.code(), 0, "{out:#?}");
    let execs = execs_of(&state, &first);
    assert!(
        execs
            .iter()
            .any(|e| e["path"] == "./prog" && e["argv"] == serde_json::json!(["./prog", "first"])),
        "{execs:#?}"
    );
}
