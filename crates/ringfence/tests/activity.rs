//! The activity log of real runs: what is recorded, and that `ringfence log verify` finds each
//! kind of tampering and names the line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{run, TestDir};

fn rf(state: &str) -> Command {
    let mut c = Command::new(common::bin());
    c.env("XDG_STATE_HOME", state).current_dir("/");
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
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run.start", "fs.denied", "fs.denied", "run.end"]);
    assert_eq!(events[1]["op"], "open");
    assert_eq!(events[1]["path"], format!("{w}/.bashrc"));
    assert_eq!(events[1]["program"], "touch");
    assert_eq!(events[2]["op"], "mkdir");
    assert_eq!(events[3]["exit"], 0);
    assert_eq!(events[3]["counts"]["fs.denied"], 2);
    assert!(events[0]["policyDigest"].as_str().unwrap().len() == 64);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
        assert_eq!(e["run"], name.as_str());
    }

    let ok = run(rf(&state).args(["log", "verify", &name]));
    assert_eq!(ok.code(), 0, "{ok:#?}");
    assert!(ok.stdout.contains("intact (4 events)"), "{ok:#?}");

    let list = run(rf(&state).args(["log"]));
    assert!(list.stdout.contains(&name), "{list:#?}");

    // Each kind of tampering is found, with its line.
    let log = dir.join(format!("state/ringfence/runs/{name}.jsonl"));
    let orig = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = orig.lines().collect();
    let write = |l: &[&str]| {
        std::fs::write(&log, l.iter().map(|s| format!("{s}\n")).collect::<String>()).unwrap()
    };
    let check = |expect: &str| {
        let bad = run(rf(&state).args(["log", "verify", &name]));
        assert_eq!(bad.code(), 1, "{bad:#?}");
        assert!(bad.stdout.contains(expect), "expected {expect}: {bad:#?}");
    };
    let edited = lines[2].replace(".vscode", ".vscodx");
    write(&[lines[0], lines[1], &edited, lines[3]]);
    check("line 3: its content does not match");
    write(&[lines[0], lines[2], lines[3]]);
    check("line 2: sequence number");
    write(&[lines[0], lines[2], lines[1], lines[3]]);
    check("line 2:");
    write(&[lines[0], lines[1], lines[2]]);
    check("line 3: the log does not end with run.end");
    write(&lines);
    let ok = run(rf(&state).args(["log", "verify", &name]));
    assert_eq!(ok.code(), 0, "{ok:#?}");
}
