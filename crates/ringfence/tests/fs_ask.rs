//! `filesystem.ask` (`run --ask-fs`): a write, a rename, a link or a removal outside the
//! writable roots is asked about on `--control-fd` instead of refused, and the answer decides.
//! Approved changes land on the host; denied ones, and ones not answered in time, fail as a
//! read-only file system does; protected names, denyWrite and hidden paths, and directories
//! holding them, are never asked about; a symlink is asked about by the path it leads to;
//! "always" adds the folder to the user's settings; a directory swapped for a symlink while the
//! question is open is not followed.
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
    let (out, asked) = asked_with(dir, settings, name, script, move |v| {
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
    (out, questions)
}

/// Like [`asked`], with the whole question given to `answer`; returns the questions as sent.
fn asked_with(
    dir: &TestDir,
    settings: &str,
    name: &str,
    script: &str,
    answer: impl Fn(&serde_json::Value) -> &'static str + Send + 'static,
) -> (String, Vec<serde_json::Value>) {
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
        answer(v)
    });
    (out.ok().to_string(), asked)
}

/// (op, path, to) of each question.
fn ops(asked: &[serde_json::Value]) -> Vec<(String, String, Option<String>)> {
    asked
        .iter()
        .map(|v| {
            (
                v["op"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
                v["to"].as_str().map(str::to_string),
            )
        })
        .collect()
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

#[test]
fn renames_links_and_removals_outside_the_roots_are_asked_about() {
    let (dir, settings) = fixture("fsask-rename");
    let out = dir.s("outside");
    dir.write("outside/a.txt", "moved\n");
    dir.write("outside/keep.txt", "kept\n");
    dir.write("outside/gone.txt", "x\n");
    dir.write("outside/locked/x", "locked\n");
    dir.mkdir("outside/emptydir");
    let home = dir.s("home");
    let script = format!(
        "mv {out}/a.txt {out}/b.txt; echo a=$?; \
         rm {out}/keep.txt; echo b=$?; \
         rm {out}/gone.txt; echo c=$?; \
         rmdir {out}/emptydir; echo d=$?; \
         ln {out}/b.txt {out}/hard.txt; echo e=$?; \
         ln -s some/target {out}/sym; echo f=$?; \
         mv {out}/b.txt {out}/.bashrc; echo g=$?; \
         rm {out}/locked/x; echo h=$?; \
         mv {home} {out}/home2; echo i=$?; \
         mv {out}/keep.txt {out}/.git; echo j=$?"
    );
    let name = format!("fsask-{}", common::unique_number());
    let (stdout, asked) = asked_with(&dir, &settings, &name, &script, |v| {
        if v["path"].as_str().unwrap().ends_with("/keep.txt") {
            "deny"
        } else {
            "once"
        }
    });
    let p = |n: &str| format!("{out}/{n}");
    assert_eq!(
        ops(&asked),
        [
            ("rename".into(), p("a.txt"), Some(p("b.txt"))),
            ("unlink".into(), p("keep.txt"), None),
            ("unlink".into(), p("gone.txt"), None),
            ("rmdir".into(), p("emptydir"), None),
            ("link".into(), p("b.txt"), Some(p("hard.txt"))),
            ("symlink".into(), p("sym"), Some("some/target".into())),
        ],
        "{stdout}"
    );
    // The approved ones were done on the host.
    for k in ["a", "c", "d", "e", "f"] {
        assert!(stdout.contains(&format!("{k}=0\n")), "{k}: {stdout}");
    }
    assert!(!dir.path.join("outside/a.txt").exists());
    assert_eq!(dir.read("outside/b.txt"), "moved\n");
    assert!(!dir.path.join("outside/gone.txt").exists());
    assert!(!dir.path.join("outside/emptydir").exists());
    assert_eq!(dir.read("outside/hard.txt"), "moved\n");
    assert_eq!(
        std::fs::read_link(dir.path.join("outside/sym")).unwrap(),
        std::path::PathBuf::from("some/target")
    );
    // Denied, or never asked about: a protected name, a denyWrite path, a directory that holds
    // a hidden one (~/.ssh), and a rename onto `.git`.
    for k in ["b", "g", "h", "i", "j"] {
        assert!(!stdout.contains(&format!("{k}=0\n")), "{k}: {stdout}");
    }
    assert_eq!(dir.read("outside/keep.txt"), "kept\n");
    assert!(!dir.path.join("outside/.bashrc").exists());
    assert!(!dir.path.join("outside/.git").exists());
    assert_eq!(dir.read("outside/locked/x"), "locked\n");
    assert!(dir.path.join("home/.ssh").is_dir());
    assert!(!dir.path.join("outside/home2").exists());
    // Each question and answer is in the log, and so is each change made.
    let events = common::log_events(common::rf_in(&dir), &name);
    let kinds =
        |k: &str| -> Vec<&serde_json::Value> { events.iter().filter(|e| e["kind"] == k).collect() };
    let answers: Vec<&str> = kinds("answer")
        .iter()
        .filter_map(|e| e["answer"].as_str())
        .collect();
    assert_eq!(
        answers,
        ["file", "deny", "file", "file", "file", "file"],
        "{events:#?}"
    );
    let ask = kinds("ask");
    assert_eq!(ask[0]["op"], "rename", "{events:#?}");
    assert_eq!(ask[0]["to"], p("b.txt"), "{events:#?}");
    let written: Vec<&str> = kinds("fs.written")
        .iter()
        .filter_map(|e| e["op"].as_str())
        .collect();
    assert_eq!(
        written,
        ["rename", "unlink", "rmdir", "link", "symlink"],
        "{events:#?}"
    );
    let refused = kinds("fs.ask.refused");
    assert_eq!(refused.len(), 4, "{events:#?}");
}

#[test]
fn always_for_a_rename_is_remembered_and_covers_the_folder() {
    let (dir, settings) = fixture("fsask-mv-always");
    let out = dir.s("outside");
    dir.write("outside/cache/x", "x\n");
    let script = format!(
        "mv {out}/cache/x {out}/cache/y; echo a=$?; rm {out}/cache/y; echo b=$?; \
         mkdir {out}/cache/d; echo c=$?; rmdir {out}/cache/d; echo d=$?"
    );
    let name = format!("fsask-{}", common::unique_number());
    let (stdout, asked) = asked_with(&dir, &settings, &name, &script, |_| "always");
    assert_eq!(
        ops(&asked),
        [(
            "rename".to_string(),
            format!("{out}/cache/x"),
            Some(format!("{out}/cache/y"))
        )],
        "{stdout}"
    );
    for k in ["a", "b", "c", "d"] {
        assert!(stdout.contains(&format!("{k}=0\n")), "{k}: {stdout}");
    }
    assert!(!dir.path.join("outside/cache/x").exists());
    assert!(!dir.path.join("outside/cache/y").exists());
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
fn a_question_not_answered_in_time_is_a_refusal() {
    let (dir, settings) = common::with_settings(
        "fsask-late",
        r#"{"filesystem": {"allowWrite": ["."]}, "network": {"askTimeoutSeconds": 1}}"#,
    );
    dir.mkdir("work");
    dir.write("outside/slow.txt", "still here\n");
    let out = dir.s("outside");
    // The run outlives the late answers, which come after each question was denied.
    let script = format!(
        "rm {out}/slow.txt; echo a=$?; mv {out}/slow.txt {out}/moved.txt; echo b=$?; sleep 4"
    );
    let name = format!("fsask-{}", common::unique_number());
    let (stdout, asked) = asked_with(&dir, &settings, &name, &script, |_| {
        std::thread::sleep(std::time::Duration::from_secs(2));
        "once"
    });
    assert_eq!(asked.len(), 2, "{asked:?} {stdout}");
    assert!(stdout.contains("a=1\n"), "{stdout}");
    assert!(stdout.contains("b=1\n"), "{stdout}");
    assert_eq!(dir.read("outside/slow.txt"), "still here\n");
    assert!(!dir.path.join("outside/moved.txt").exists());
    let events = common::log_events(common::rf_in(&dir), &name);
    let answers: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "answer")
        .filter_map(|e| e["answer"].as_str())
        .collect();
    assert_eq!(answers, ["deny", "deny"], "{events:#?}");
}

#[test]
fn a_directory_swapped_for_a_symlink_after_the_question_is_not_followed() {
    let (dir, settings) = fixture("fsask-race");
    let out = dir.s("outside");
    for d in ["sub", "sub2", "elsewhere"] {
        dir.write(&format!("outside/{d}/victim.txt"), &format!("{d}\n"));
    }
    let script = format!(
        "rm {out}/sub/victim.txt; echo a=$?; \
         mv {out}/sub2/victim.txt {out}/sub2/renamed.txt; echo b=$?"
    );
    let name = format!("fsask-{}", common::unique_number());
    let base = dir.path.join("outside");
    let (stdout, asked) = asked_with(&dir, &settings, &name, &script, move |v| {
        // While the question is open, the approved path's directory becomes a symlink to
        // another directory holding a file of the same name.
        let path = std::path::PathBuf::from(v["path"].as_str().unwrap());
        let parent = path.parent().unwrap();
        let moved = base.join(format!(
            "{}.moved",
            parent.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::rename(parent, &moved).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), parent).unwrap();
        "once"
    });
    assert_eq!(asked.len(), 2, "{asked:?} {stdout}");
    assert!(!stdout.contains("a=0\n"), "{stdout}");
    assert!(!stdout.contains("b=0\n"), "{stdout}");
    // Neither the file the symlink leads to nor the one that was approved was touched.
    assert_eq!(dir.read("outside/elsewhere/victim.txt"), "elsewhere\n");
    assert!(!dir.path.join("outside/elsewhere/renamed.txt").exists());
    assert_eq!(dir.read("outside/sub.moved/victim.txt"), "sub\n");
    assert_eq!(dir.read("outside/sub2.moved/victim.txt"), "sub2\n");
    let events = common::log_events(common::rf_in(&dir), &name);
    assert!(
        !events.iter().any(|e| e["kind"] == "fs.written"),
        "{events:#?}"
    );
    let failed = events
        .iter()
        .filter(|e| e["kind"] == "fs.write.failed" && e["errno"] == libc::ELOOP)
        .count();
    assert_eq!(failed, 2, "{events:#?}");
}

#[test]
fn a_read_of_a_hidden_file_is_asked_about_with_ask_read() {
    let (dir, settings) = common::with_settings(
        "fsask-read",
        r#"{"filesystem": {"allowWrite": ["."], "denyRead": ["~/.ssh", "~/.npmrc"],
            "askRead": true},
            "credentials": {"files": [{"path": "~/.netrc", "mode": "deny"}]}}"#,
    );
    dir.mkdir("work");
    dir.write("home/.ssh/config", "Host approved\n");
    dir.write("home/.ssh/id_test", "SECRET-KEY\n");
    dir.write("home/.npmrc", "npm-token\n");
    dir.write("home/.netrc", "NETRC-SECRET\n");
    dir.write("home/visible.txt", "visible\n");
    let name = format!("fsask-{}", common::unique_number());
    let script = "cat ~/.ssh/config; echo a=$?; cat ~/.ssh/id_test; echo b=$?; \
                  cat ~/.npmrc; echo c=$?; cat ~/.netrc; echo d=$?; \
                  echo n=$(ls -A ~/.ssh | wc -l); cat ~/.ssh/config; echo e=$?; \
                  cat ~/visible.txt; echo f=$?";
    let mut cmd = common::rf_in(&dir);
    cmd.current_dir(dir.s("work")).args([
        "run",
        "--name",
        &name,
        "-s",
        &settings,
        "--control-fd",
        "7",
        "-c",
        script,
    ]);
    let (out, asked) = common::run_answering(cmd, |v| {
        assert_eq!(v["kind"], "read", "{v}");
        let p = v["path"].as_str().unwrap();
        if p.ends_with("/config") {
            "once"
        } else if p.ends_with("/.npmrc") {
            "always"
        } else {
            "deny"
        }
    });
    let stdout = out.ok().to_string();
    let home = dir.s("home");
    let paths: Vec<&str> = asked.iter().map(|v| v["path"].as_str().unwrap()).collect();
    // Asked once each (the second read of config was already approved); the credential file
    // and a file that is not hidden are never asked about.
    assert_eq!(
        paths,
        [
            format!("{home}/.ssh/config"),
            format!("{home}/.ssh/id_test"),
            format!("{home}/.npmrc"),
        ],
        "{stdout}"
    );
    assert_eq!(stdout.matches("Host approved\n").count(), 2, "{stdout}");
    assert!(stdout.contains("npm-token\n"), "{stdout}");
    for k in ["a", "c", "d", "e", "f"] {
        assert!(stdout.contains(&format!("{k}=0\n")), "{k}: {stdout}");
    }
    // Denied: the view as without the question (nothing there); the credential stays empty,
    // and the hidden directory still lists empty.
    assert!(!stdout.contains("SECRET"), "{stdout}");
    assert!(stdout.contains("b=1\n"), "{stdout}");
    assert!(stdout.contains("n=0\n"), "{stdout}");
    // "always" went to the settings file as allowRead of that one file.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(
        written["filesystem"]["allowRead"],
        serde_json::json!([format!("{home}/.npmrc")]),
        "{written}"
    );
    let events = common::log_events(common::rf_in(&dir), &name);
    let reads = events.iter().filter(|e| e["kind"] == "fs.read").count();
    assert_eq!(reads, 3, "{events:#?}");
}

#[test]
fn ask_read_is_off_in_project_files() {
    let (dir, settings) = fixture("fsask-read-project");
    dir.write(
        "work/.ringfence.json",
        r#"{"filesystem": {"askRead": true}}"#,
    );
    let out = common::run(
        common::rf_in(&dir)
            .current_dir(dir.s("work"))
            .args(["run", "-s", &settings, "--", "true"]),
    );
    assert_eq!(out.code(), 125, "{out:#?}");
    assert!(out.stderr.contains("filesystem.askRead"), "{out:#?}");
}
