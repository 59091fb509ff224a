//! `filesystem.ask` (`run --ask-fs`): a write outside the writable roots is asked about on
//! `--control-fd` instead of refused, and the answer decides. Approved writes land on the host;
//! denied ones fail as a read-only file system does; protected names, denyWrite and hidden
//! paths are never asked about; a symlink is asked about by the path it leads to; "always"
//! adds the folder to the user's settings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDir;

/// Runs `script` with `--ask-fs` and the settings `json`, answering each write question with
/// `answer(path)`; returns the run's stdout and the questions asked (op, path).
fn asked(
    dir: &TestDir,
    settings: &str,
    name: &str,
    script: &str,
    answer: fn(&str) -> &'static str,
) -> (String, Vec<(String, String)>) {
    let mut cmd = common::rf_in(dir);
    cmd.current_dir(dir.s("work")).args([
        "run",
        "--ask-fs",
        "--name",
        name,
        "-s",
        settings,
        "--control-fd",
        "7",
        "-c",
        script,
    ]);
    let (out, asked) = common::run_answering(cmd, move |v| {
        assert_eq!(v["kind"], "write", "{v}");
        answer(v["path"].as_str().unwrap())
    });
    let questions = asked
        .iter()
        .map(|v| {
            (
                v["op"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.ok().to_string(), questions)
}

fn fixture(tag: &str) -> (TestDir, String) {
    let (dir, settings) = common::with_settings(
        tag,
        r#"{"filesystem": {"allowWrite": ["."], "denyWrite": ["../outside/locked"],
            "denyRead": ["~/.ssh"]}}"#,
    );
    dir.mkdir("work");
    dir.mkdir("outside");
    dir.mkdir("outside/locked");
    dir.mkdir("home/.ssh");
    (dir, settings)
}

#[test]
fn an_answered_write_outside_the_roots_is_made_on_the_host() {
    let (dir, settings) = fixture("fsask-once");
    let out = dir.s("outside");
    let script = format!(
        "echo approved > {out}/yes.txt; echo a=$?; \
         echo refused > {out}/no.txt; echo b=$?; \
         mkdir {out}/newdir; echo c=$?; \
         echo rc > {out}/.bashrc; echo d=$?; \
         echo locked > {out}/locked/x; echo e=$?; \
         echo key > ~/.ssh/id_new; echo f=$?; \
         ln -s {out}/target.txt link; echo via-link > link; echo g=$?"
    );
    let name = format!("fsask-{}", common::unique_number());
    let (stdout, questions) = asked(&dir, &settings, &name, &script, |p| {
        if p.ends_with("/yes.txt") || p.ends_with("/target.txt") {
            "once"
        } else {
            "deny"
        }
    });
    // Asked about: the two files, the directory, and the symlink by the file it leads to.
    let paths: Vec<&str> = questions.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{out}/yes.txt"),
            format!("{out}/no.txt"),
            format!("{out}/newdir"),
            format!("{out}/target.txt"),
        ],
        "{stdout}"
    );
    assert_eq!(questions[2].0, "mkdir");
    // The answers decided, on the host.
    assert!(stdout.contains("a=0\n"), "{stdout}");
    assert_eq!(dir.read("outside/yes.txt"), "approved\n");
    assert!(
        stdout.contains("b=2\n") || stdout.contains("b=1\n"),
        "{stdout}"
    );
    assert!(!dir.path.join("outside/no.txt").exists());
    assert!(!dir.path.join("outside/newdir").exists());
    assert!(stdout.contains("g=0\n"), "{stdout}");
    assert_eq!(dir.read("outside/target.txt"), "via-link\n");
    // Never asked about, and refused: a protected name, a denyWrite path, a hidden one.
    assert!(!dir.path.join("outside/.bashrc").exists());
    assert!(!dir.path.join("outside/locked/x").exists());
    assert!(!dir.path.join("home/.ssh/id_new").exists());
    for k in ["d", "e", "f"] {
        assert!(!stdout.contains(&format!("{k}=0\n")), "{k}: {stdout}");
    }
    // The log has each question and its answer.
    let events = common::log_events(common::rf_in(&dir), &name);
    let answers: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "answer")
        .filter_map(|e| e["answer"].as_str())
        .collect();
    assert_eq!(answers, ["file", "deny", "deny", "file"], "{events:#?}");
    assert!(events
        .iter()
        .any(|e| e["kind"] == "ask" && e["path"] == format!("{out}/yes.txt")));
}

#[test]
fn a_folder_answer_covers_what_follows_and_always_is_remembered() {
    let (dir, settings) = fixture("fsask-always");
    let out = dir.s("outside");
    let script = format!(
        "mkdir {out}/cache; echo a=$?; echo 1 > {out}/cache/one; echo b=$?; \
         mkdir {out}/cache/sub; echo c=$?; echo 2 > {out}/cache/sub/two; echo d=$?"
    );
    let name = format!("fsask-{}", common::unique_number());
    let (stdout, questions) = asked(&dir, &settings, &name, &script, |_| "always");
    // One question: the rest is inside the folder that answer allowed.
    assert_eq!(questions.len(), 1, "{questions:?} {stdout}");
    assert_eq!(questions[0], ("mkdir".to_string(), format!("{out}/cache")));
    for k in ["a", "b", "c", "d"] {
        assert!(stdout.contains(&format!("{k}=0\n")), "{k}: {stdout}");
    }
    assert_eq!(dir.read("outside/cache/sub/two"), "2\n");
    // "always" went to the settings file the run used (-s FILE).
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    let allow = written["filesystem"]["allowWrite"].as_array().unwrap();
    assert!(
        allow
            .iter()
            .any(|v| v == &serde_json::json!(format!("{out}/cache"))),
        "{written}"
    );
}

#[test]
fn ask_is_off_in_project_files_and_with_overlays() {
    let (dir, settings) = fixture("fsask-refused");
    dir.write("work/.ringfence.json", r#"{"filesystem": {"ask": true}}"#);
    let out = common::run(
        common::rf_in(&dir)
            .current_dir(dir.s("work"))
            .args(["run", "-s", &settings, "--", "true"]),
    );
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("filesystem.ask"), "{out:#?}");
    std::fs::remove_file(dir.path.join("work/.ringfence.json")).unwrap();
    let out = common::run(common::rf_in(&dir).current_dir(dir.s("work")).args([
        "run",
        "--ask-fs",
        "--overlay",
        "-s",
        &settings,
        "--",
        "true",
    ]));
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("overlay"), "{out:#?}");
}
