//! Overlay mode end to end: real sandboxes write into a private layer, then `diff`, `apply`,
//! `undo` and `discard` act on the real folder. Run as root and as an unprivileged user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, TestDir};

/// A fixture: the project (`proj`) and a state directory outside it.
struct Fixture {
    dir: TestDir,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = TestDir::new(tag);
        dir.mkdir("proj");
        dir.mkdir("state");
        Fixture { dir }
    }
    fn proj(&self) -> PathBuf {
        self.dir.join("proj")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn rf(&self) -> Command {
        let mut c = Command::new(common::bin());
        c.env("XDG_STATE_HOME", self.state())
            .current_dir(self.proj())
            .stdin(Stdio::null());
        c
    }
    /// `ringfence run --overlay --name NAME --allow-write proj [extra] -- sh -c SCRIPT` from proj.
    fn run_overlay(&self, name: &str, extra: &[&str], script: &str) -> common::Outcome {
        let proj = self.proj();
        let mut c = self.rf();
        c.args(["run", "--overlay", "--name", name, "--allow-write"])
            .arg(&proj)
            .args(extra)
            .args(["--", "/bin/sh", "-c", script]);
        run(&mut c)
    }
    fn cmd(&self, args: &[&str]) -> common::Outcome {
        run(self.rf().args(args))
    }
    fn upper(&self, name: &str) -> PathBuf {
        self.state().join(format!("ringfence/runs/{name}/upper/0"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // A run whose supervisor was killed keeps overlayfs's work directory (mode 000).
        let runs = self.state().join("ringfence/runs");
        for e in fs::read_dir(runs).into_iter().flatten().flatten() {
            for w in fs::read_dir(e.path().join("work"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ =
                    fs::set_permissions(w.path().join("work"), fs::Permissions::from_mode(0o700));
            }
        }
    }
}

/// Every entry under `root`: kind, mode and content (or link target). Two trees are equal when
/// these maps are.
fn tree(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = m.permissions().mode() & 0o7777;
            let entry = if m.file_type().is_symlink() {
                (
                    'l',
                    0,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', mode, Vec::new())
            } else {
                ('f', mode, fs::read(&p).unwrap())
            };
            out.insert(rel, entry);
        }
    }
    out
}

fn populate(root: &Path) {
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    w("keep.txt", "unchanged\n");
    w("mod.txt", "one\ntwo\nthree\n");
    w("del.txt", "to be deleted\n");
    w("ren.txt", "moved content\n");
    w("run.sh", "#!/bin/sh\necho hi\n");
    w("dir2file/a", "a\n");
    w("dir2file/b", "b\n");
    w("file2dir", "was a file\n");
    w("sub/deep/x.txt", "deep\n");
    w("gone/1", "1\n");
    w("gone/2", "2\n");
    fs::write(root.join("bin.dat"), b"\x00\x01\x02binary").unwrap();
}

/// Creates, modifies, deletes, renames, chmods, links, and swaps a directory and a file.
const SCRIPT: &str = "set -e
printf 'one\\n2\\nthree\\nfour\\n' > mod.txt
rm del.txt
mv ren.txt renamed.txt
chmod 755 run.sh
ln -s keep.txt link
mkdir -p new/nested && echo fresh > new/nested/f.txt
rm -r dir2file && echo now-a-file > dir2file
rm file2dir && mkdir file2dir && echo inside > file2dir/g
mv sub/deep sub/moved
rm -r gone
printf '\\000\\001\\003' > bin.dat
echo command-saw-its-writes: $(cat new/nested/f.txt)";

#[test]
fn apply_reproduces_the_run_and_undo_restores_the_original() {
    let f = Fixture::new("overlay-cycle");
    populate(&f.proj());
    // The reference: the same script run directly on a copy.
    let reference = f.dir.mkdir("reference");
    populate(&reference);
    let direct = run(Command::new("/bin/sh")
        .args(["-c", SCRIPT])
        .current_dir(&reference));
    assert!(direct.success(), "{direct:#?}");
    let original = tree(&f.proj());
    let expected = tree(&reference);
    assert_ne!(original, expected);

    let name = format!("cycle-{}", common::unique_number());
    let out = f.run_overlay(&name, &[], SCRIPT);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(
        out.stdout.contains("command-saw-its-writes: fresh"),
        "{out:#?}"
    );
    // The real folder is untouched.
    assert_eq!(
        tree(&f.proj()),
        original,
        "the run wrote to the real folder"
    );
    assert!(out.stderr.contains("ringfence: overlay:"), "{out:#?}");
    assert!(
        out.stderr.contains(&format!("ringfence apply {name}")),
        "{out:#?}"
    );

    // diff names each kind of change.
    let d = f.cmd(&["diff", &name]);
    assert_eq!(d.code(), 0, "{d:#?}");
    for want in [
        "+four",
        "-two",
        "deleted file",
        "renamed",
        "renamed.txt",
        "new symlink",
        "deleted directory",
        "binary",
        "mode",
    ] {
        assert!(d.stdout.contains(want), "diff lacks {want:?}: {}", d.stdout);
    }
    let j = f.cmd(&["diff", &name, "--json"]);
    let changes: Vec<serde_json::Value> = serde_json::from_str(&j.stdout).unwrap();
    let of = |p: &str| {
        changes
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(p))
            .unwrap_or_else(|| panic!("no change for {p}: {changes:#?}"))["change"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(of("/mod.txt"), "modified");
    assert_eq!(of("/del.txt"), "deleted");
    assert_eq!(of("/renamed.txt"), "renamed");
    assert_eq!(of("/run.sh"), "mode");
    assert_eq!(of("/link"), "added");
    assert_eq!(of("/dir2file"), "replaced");
    assert_eq!(of("/file2dir"), "replaced");
    // A directory moved as a whole shows as one rename.
    assert_eq!(of("/sub/moved"), "renamed");
    assert!(!changes
        .iter()
        .any(|c| c["path"].as_str().unwrap().ends_with("/sub/moved/x.txt")));
    assert!(d.stdout.contains("sub/deep/ -> "), "{}", d.stdout);
    let stat = f.cmd(&["diff", &name, "--stat"]);
    assert!(
        stat.stdout.contains("mod.txt | modified +2 -1"),
        "{stat:#?}"
    );

    // A directory replaced by a file and the deletions ask for a confirmation; --yes gives it.
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 125, "{a:#?}");
    assert!(a.stderr.contains("needs a confirmation"), "{a:#?}");
    assert_eq!(tree(&f.proj()), original);
    let a = f.cmd(&["apply", &name, "--yes"]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(tree(&f.proj()), expected, "apply did not reproduce the run");
    assert!(f.cmd(&["diff", &name]).stdout.is_empty());

    let u = f.cmd(&["undo", &name]);
    assert_eq!(u.code(), 0, "{u:#?}");
    assert_eq!(
        tree(&f.proj()),
        original,
        "undo did not restore the original"
    );

    let log = f.cmd(&["log"]);
    let line = log.stdout.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(line.contains("undone"), "{log:#?}");
    let shown = f.cmd(&["log", "show", &name]);
    assert!(shown.stdout.contains("overlay.apply"), "{shown:#?}");
    assert!(shown.stdout.contains("overlay.undo"), "{shown:#?}");
}

#[test]
fn conflicts_are_reported_and_the_rest_applies() {
    let f = Fixture::new("overlay-conflict");
    fs::write(f.proj().join("a.txt"), "a0\n").unwrap();
    fs::write(f.proj().join("b.txt"), "b0\n").unwrap();
    let name = format!("conflict-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &[],
        "echo a1 > a.txt; echo b1 > b.txt; echo c1 > c.txt; echo d1 > d.txt",
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    // Meanwhile, on the host: a.txt is edited and c.txt created.
    fs::write(f.proj().join("a.txt"), "host edit\n").unwrap();
    fs::write(f.proj().join("c.txt"), "host c\n").unwrap();
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 1, "{a:#?}");
    assert!(
        a.stderr.contains("a.txt: changed in the real folder"),
        "{a:#?}"
    );
    assert!(
        a.stderr.contains("c.txt: created in the real folder"),
        "{a:#?}"
    );
    assert_eq!(f.dir.read("proj/a.txt"), "host edit\n");
    assert_eq!(f.dir.read("proj/c.txt"), "host c\n");
    assert_eq!(f.dir.read("proj/b.txt"), "b1\n");
    assert_eq!(f.dir.read("proj/d.txt"), "d1\n");

    // Undo refuses a file changed again since the apply, and restores the rest.
    fs::write(f.proj().join("d.txt"), "edited after apply\n").unwrap();
    let u = f.cmd(&["undo", &name]);
    assert_eq!(u.code(), 1, "{u:#?}");
    assert!(
        u.stderr.contains("d.txt: changed again since the apply"),
        "{u:#?}"
    );
    assert_eq!(f.dir.read("proj/b.txt"), "b0\n");
    assert_eq!(f.dir.read("proj/d.txt"), "edited after apply\n");
}

#[test]
fn protected_files_stay_protected_and_are_held_back() {
    let f = Fixture::new("overlay-protected");
    fs::create_dir_all(f.proj().join(".git/hooks")).unwrap();
    fs::write(f.proj().join("x.txt"), "x\n").unwrap();
    let name = format!("prot-{}", common::unique_number());
    // Inside, the protected names cannot be written on top of the overlay either.
    let out = f.run_overlay(
        &name,
        &[],
        "echo evil > .bashrc || echo bashrc-refused; echo evil > .git/hooks/pre-commit || echo hook-refused; echo y > x.txt",
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("bashrc-refused"), "{out:#?}");
    assert!(out.stdout.contains("hook-refused"), "{out:#?}");
    // Whatever reaches the layer anyway is held back at apply.
    let upper = f.upper(&name);
    fs::write(upper.join(".bashrc"), "evil\n").unwrap();
    fs::create_dir_all(upper.join(".vscode")).unwrap();
    fs::write(upper.join(".vscode/tasks.json"), "{}").unwrap();
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert!(a.stderr.contains("held back (protected)"), "{a:#?}");
    assert!(a.stderr.contains(".bashrc"), "{a:#?}");
    assert!(!f.proj().join(".bashrc").exists());
    assert!(!f.proj().join(".vscode").exists());
    assert_eq!(f.dir.read("proj/x.txt"), "y\n");
    // Naming it is not enough without a terminal, --yes or not.
    let bashrc = f.proj().join(".bashrc");
    let a = f.cmd(&[
        "apply",
        &name,
        "--yes",
        "--include-protected",
        bashrc.to_str().unwrap(),
    ]);
    assert_eq!(a.code(), 125, "{a:#?}");
    assert!(a.stderr.contains("protected"), "{a:#?}");
    assert!(!bashrc.exists());
}

#[test]
fn a_large_deletion_asks_for_confirmation() {
    let f = Fixture::new("overlay-delete");
    for i in 0..40 {
        fs::write(f.proj().join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    let strict = f.dir.settings(r#"{"workspace": {"allowYes": false}}"#);
    let name = format!("del-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &["-s", &strict],
        "rm f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11 f12",
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 125, "{a:#?}");
    assert!(a.stderr.contains("deletes 12 files"), "{a:#?}");
    assert!(a.stderr.contains("workspace.allowYes is false"), "{a:#?}");
    let a = f.cmd(&["apply", &name, "--yes"]);
    assert_eq!(a.code(), 125, "{a:#?}");
    assert!(f.proj().join("f1").exists());

    // A few deletions under the threshold apply without a question.
    let name = format!("del-{}", common::unique_number());
    let out = f.run_overlay(&name, &[], "rm f1 f2");
    assert_eq!(out.code(), 0, "{out:#?}");
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert!(!f.proj().join("f1").exists());
    assert!(f.proj().join("f3").exists());
}

#[test]
fn killing_the_supervisor_leaves_a_reviewable_layer() {
    let f = Fixture::new("overlay-kill");
    fs::write(f.proj().join("a.txt"), "a\n").unwrap();
    let name = format!("kill-{}", common::unique_number());
    let marker = common::unique_number();
    let mut c = f.rf();
    c.args(["run", "--overlay", "--name", &name, "--allow-write"])
        .arg(f.proj())
        .args([
            "--",
            "/bin/sh",
            "-c",
            &format!("echo b > b.txt; exec sleep 1000.{marker}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let manifest = f
        .state()
        .join(format!("ringfence/runs/{name}/manifest.jsonl"));
    let start = Instant::now();
    // The file is written (not only created) once the command has become the sleep.
    while !(f.upper(&name).join("b.txt").exists()
        && manifest.exists()
        && !common::host_process_with(&format!("1000.{marker}")).is_empty())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let start = Instant::now();
    while !common::host_process_with(&format!("1000.{marker}")).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the sandbox outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!f.proj().join("b.txt").exists());
    let log = f.cmd(&["log"]);
    let line = log.stdout.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(line.contains("pending"), "{log:#?}");
    let d = f.cmd(&["diff", &name, "--json"]);
    assert_eq!(d.code(), 0, "{d:#?}");
    assert!(d.stdout.contains("b.txt"), "{d:#?}");
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(f.dir.read("proj/b.txt"), "b\n");
}

#[test]
fn discard_removes_the_layer_and_the_state_dir_stays_hidden() {
    let f = Fixture::new("overlay-discard");
    fs::write(f.proj().join("a.txt"), "a\n").unwrap();
    let name = format!("discard-{}", common::unique_number());
    let state = f.state();
    let out = f.run_overlay(
        &name,
        &[],
        &format!(
            "echo changed > a.txt; ls -A '{}/ringfence' 2>/dev/null | wc -l",
            state.display()
        ),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    // The layer (in the state directory) is not reachable from inside.
    assert_eq!(out.stdout.trim(), "0", "{out:#?}");
    assert!(f.upper(&name).join("a.txt").exists());
    // overlayfs's scratch directory is gone once the run is over.
    assert!(!f
        .state()
        .join(format!("ringfence/runs/{name}/work"))
        .exists());
    let d = f.cmd(&["discard", &name]);
    assert_eq!(d.code(), 0, "{d:#?}");
    assert!(!f.upper(&name).exists());
    assert_eq!(f.dir.read("proj/a.txt"), "a\n");
    let log = f.cmd(&["log"]);
    let line = log.stdout.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(line.contains("discarded"), "{log:#?}");
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 125, "{a:#?}");
    assert!(a.stderr.contains("discarded"), "{a:#?}");
    assert!(f
        .cmd(&["log", "show", &name])
        .stdout
        .contains("overlay.discard"));
}

#[test]
fn workspace_mode_overlay_in_the_policy() {
    let f = Fixture::new("overlay-policy");
    fs::write(f.proj().join("a.txt"), "a\n").unwrap();
    let settings = f.dir.settings(r#"{"workspace": {"mode": "overlay"}}"#);
    let name = format!("policy-{}", common::unique_number());
    let out = run(f
        .rf()
        .args(["run", "--name", &name, "-s", &settings, "--allow-write"])
        .arg(f.proj())
        .args(["--", "/bin/sh", "-c", "echo b > a.txt; cat a.txt"]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "b");
    assert_eq!(f.dir.read("proj/a.txt"), "a\n");
    assert!(f.upper(&name).join("a.txt").exists());
    // The activity log records the overlay in the mount plan and the policy.
    let shown = f.cmd(&["log", "show", &name, "--json"]);
    let start: serde_json::Value =
        serde_json::from_str(shown.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(start["policy"]["workspace"]["mode"], "overlay", "{start:#}");
    let plan = start["policy"]["mountPlan"].to_string();
    assert!(plan.contains("overlay    "), "{plan}");
    // Only the sandbox's own package caches stay writable directly.
    let direct: Vec<&str> = start["policy"]["mountPlan"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .filter(|s| s.starts_with("writable   "))
        .collect();
    assert!(
        direct.iter().all(|s| s.ends_with("/ringfence/sandbox")),
        "{plan}"
    );
}

#[test]
fn apply_of_named_paths_only() {
    let f = Fixture::new("overlay-paths");
    fs::write(f.proj().join("a.txt"), "a\n").unwrap();
    let name = format!("paths-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &[],
        "echo a2 > a.txt; mkdir -p n/m && echo x > n/m/x.txt && echo y > n/y.txt",
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    // Only n/m/x.txt (and the directories it needs).
    let a = run(f.rf().args(["apply", &name, "n/m/x.txt"]));
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(f.dir.read("proj/n/m/x.txt"), "x\n");
    assert!(!f.proj().join("n/y.txt").exists());
    assert_eq!(f.dir.read("proj/a.txt"), "a\n");
    // The rest later; then one undo takes both applies back.
    let d = f.cmd(&["diff", &name, "--stat"]);
    assert!(
        d.stdout.contains("a.txt") && d.stdout.contains("y.txt"),
        "{d:#?}"
    );
    assert!(!d.stdout.contains("x.txt"), "{d:#?}");
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(f.dir.read("proj/a.txt"), "a2\n");
    assert_eq!(f.dir.read("proj/n/y.txt"), "y\n");
    let u = f.cmd(&["undo", &name]);
    assert_eq!(u.code(), 0, "{u:#?}");
    assert_eq!(f.dir.read("proj/a.txt"), "a\n");
    assert!(!f.proj().join("n").exists());
}

#[test]
fn apply_never_writes_through_a_symlink() {
    let f = Fixture::new("overlay-symlink");
    let outside = f.dir.mkdir("outside");
    fs::create_dir(f.proj().join("d")).unwrap();
    fs::write(f.proj().join("d/x.txt"), "x\n").unwrap();
    let name = format!("symlink-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &[],
        &format!(
            "echo changed > d/x.txt; echo new > d/new.txt; ln -s '{}' escape",
            outside.display()
        ),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    // On the host, d is swapped for a symlink to a directory outside the root.
    fs::rename(f.proj().join("d"), f.dir.join("d-moved")).unwrap();
    std::os::unix::fs::symlink(&outside, f.proj().join("d")).unwrap();
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 1, "{a:#?}");
    assert!(a.stderr.contains("not applied"), "{a:#?}");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "apply wrote outside the root"
    );
    // The layer's own symlink is created as a symlink.
    let link = f.proj().join("escape");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), outside);
}

#[test]
fn set_id_bits_are_not_applied() {
    let f = Fixture::new("overlay-setid");
    let name = format!("setid-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &[],
        "printf '#!/bin/sh\\n' > tool && chmod 755 tool && { chmod 6755 tool; stat -c %a tool; }",
    );
    // The sandbox refuses the bits (seccomp); apply would strip them too.
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "755", "{out:#?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 0, "{a:#?}");
    let mode = fs::metadata(f.proj().join("tool"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
}

/// `ringfence apply` on a pseudo-terminal (util-linux `script`), answering `answer`.
fn apply_on_terminal(f: &Fixture, name: &str, extra: &str, answer: &str) -> common::Outcome {
    let cmd = format!("{} apply {name} {extra}", common::bin().display());
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env("XDG_STATE_HOME", f.state())
        .current_dir(f.proj())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    common::wait(child, common::RUN_TIMEOUT)
}

#[test]
fn confirmations_on_a_terminal() {
    if !common::have("script") {
        common::skip("no `script` (util-linux) to give apply a terminal");
        return;
    }
    let f = Fixture::new("overlay-tty");
    for i in 0..20 {
        fs::write(f.proj().join(format!("f{i}")), "x\n").unwrap();
    }
    let name = format!("tty-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &[],
        "rm f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11 f12; echo evil > .envrc || true",
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    fs::write(f.upper(&name).join(".envrc"), "evil\n").unwrap();
    let a = apply_on_terminal(&f, &name, "", "n");
    assert_eq!(a.code(), 1, "{a:#?}");
    assert!(a.stdout.contains("Apply? [y/N]"), "{a:#?}");
    assert!(f.proj().join("f1").exists());
    let a = apply_on_terminal(&f, &name, "", "y");
    assert_eq!(a.code(), 0, "{a:#?}");
    assert!(!f.proj().join("f1").exists());
    assert!(!f.proj().join(".envrc").exists());
    // A protected file named explicitly, confirmed on the terminal.
    let envrc = f.proj().join(".envrc");
    let a = apply_on_terminal(
        &f,
        &name,
        &format!("--include-protected {}", envrc.display()),
        "y",
    );
    assert_eq!(a.code(), 0, "{a:#?}");
    assert!(a.stdout.contains("protected paths"), "{a:#?}");
    assert_eq!(f.dir.read("proj/.envrc"), "evil\n");
}

#[test]
fn every_writable_root_is_an_overlay() {
    let f = Fixture::new("overlay-roots");
    let other = f.dir.mkdir("other");
    fs::write(other.join("o.txt"), "o\n").unwrap();
    let name = format!("roots-{}", common::unique_number());
    let out = f.run_overlay(
        &name,
        &["--allow-write", other.to_str().unwrap()],
        &format!("echo p > p.txt; echo o2 > '{}/o.txt'", other.display()),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(
        out.stderr.matches("ringfence: overlay:").count(),
        2,
        "{out:#?}"
    );
    assert_eq!(f.dir.read("other/o.txt"), "o\n");
    assert!(!f.proj().join("p.txt").exists());
    let a = f.cmd(&["apply", &name]);
    assert_eq!(a.code(), 0, "{a:#?}");
    assert_eq!(f.dir.read("other/o.txt"), "o2\n");
    assert_eq!(f.dir.read("proj/p.txt"), "p\n");
}
