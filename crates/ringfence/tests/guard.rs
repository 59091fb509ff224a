//! The creation guard under attack, from inside real sandboxes: umask, a second thread racing
//! the path, symlinks, O_TMPFILE, directory descriptors, renames, FIFOs, volume, git, and the
//! exit report. Every check of "nothing was created" is made on the host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{find_in_path, have, ringfence, run, run_for, sh, skip, TestDir};

/// The race and syscall probe's source, compiled at test time (see `guard_probe`).
const GUARD_PROBE_SOURCE: &str = include_str!("probes/guard_race.c");

/// Final names that may never be created in a writable root.
const PROTECTED: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".zshrc",
    ".zprofile",
    ".profile",
    ".gitconfig",
    ".gitmodules",
    ".ripgreprc",
    ".mcp.json",
    ".envrc",
    ".ringfence.json",
    ".srt-settings.json",
    ".vscode",
    ".idea",
    ".cursor",
    ".codex",
];

const PYTHON: &str = "/usr/bin/python3";

/// Compiles guard_race.c into `dir`; `None` (after a visible skip notice) without a compiler.
fn guard_probe(dir: &TestDir) -> Option<String> {
    let Some(cc) = find_in_path("cc").or_else(|| find_in_path("gcc")) else {
        skip("no C compiler (cc) to build the guard probe");
        return None;
    };
    let src = dir.write("probe-src/guard_race.c", GUARD_PROBE_SOURCE);
    let out = dir.join("probe-bin/guard_race");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let outcome = run(Command::new(cc)
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(&src));
    assert!(
        outcome.success(),
        "compiling guard_race.c failed: {outcome:#?}"
    );
    Some(out.to_str().unwrap().to_string())
}

fn python() -> bool {
    if std::path::Path::new(PYTHON).is_file() {
        return true;
    }
    skip("no /usr/bin/python3");
    false
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The names in `dir` (not recursive).
fn names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Panics when any protected name exists anywhere under `dir` (symlinks included).
fn assert_no_protected(dir: &std::path::Path, context: &dyn std::fmt::Debug) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !PROTECTED.contains(&name.as_str()),
            "{} was created: {context:#?}",
            entry.path().display()
        );
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            if name == ".git" {
                // A repository the sandbox created may have a hooks directory, holding nothing
                // git would run: only samples, none executable.
                let hooks = entry.path().join("hooks");
                if hooks.is_dir() {
                    for hook in names(&hooks) {
                        assert!(
                            hook.ends_with(".sample") && mode(&hooks.join(&hook)) & 0o111 == 0,
                            "{}/{hook} was created: {context:#?}",
                            hooks.display()
                        );
                    }
                } else {
                    assert!(
                        !hooks.exists(),
                        "{} was created: {context:#?}",
                        hooks.display()
                    );
                }
            }
            assert_no_protected(&entry.path(), context);
        }
    }
}

// --- 1. umask ------------------------------------------------------------------------------

#[test]
fn umask_is_honoured_by_files_and_directories() {
    let dir = TestDir::new("guard-umask");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "cd '{w}' && umask 077 && touch f600 && umask 002 && mkdir d775 && \
             umask 022 && mkdir d755 && touch f644 && umask 027 && mkdir -p p/q && echo done"
        ),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert_eq!(mode(&dir.join("work/f600")), 0o600);
    assert_eq!(mode(&dir.join("work/d775")), 0o775);
    assert_eq!(mode(&dir.join("work/d755")), 0o755);
    assert_eq!(mode(&dir.join("work/f644")), 0o644);
    assert_eq!(mode(&dir.join("work/p/q")), 0o750);
}

#[test]
fn umask_change_in_the_same_process_applies_to_the_next_creation() {
    // Redirections are opened by the shell itself: one process, its umask changed between
    // creations (a cached umask would give every file the first one).
    let dir = TestDir::new("guard-umask-same");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "cd '{w}' && umask 077 && : > s600 && umask 022 && : > s644 && umask 002 && \
             : > s664 && umask 077 && : > t600 && echo done"
        ),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    for (name, want) in [
        ("s600", 0o600),
        ("s644", 0o644),
        ("s664", 0o664),
        ("t600", 0o600),
    ] {
        assert_eq!(mode(&dir.join(format!("work/{name}"))), want, "{name}");
    }
    if !python() {
        return;
    }
    // The same within one python process, for open, mkdir and mknod (mkfifo).
    let script = format!(
        "import os\nos.chdir('{w}')\n\
         for m in (0o077, 0o022, 0o002, 0o027):\n\
         \x20   os.umask(m)\n\
         \x20   os.close(os.open('py-f-%03o' % m, os.O_CREAT | os.O_WRONLY, 0o666))\n\
         \x20   os.mkdir('py-d-%03o' % m, 0o777)\n\
         \x20   os.mkfifo('py-p-%03o' % m, 0o666)\n\
         print('done')\n"
    );
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", &script]));
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    for m in [0o077u32, 0o022, 0o002, 0o027] {
        assert_eq!(
            mode(&dir.join(format!("work/py-f-{m:03o}"))),
            0o666 & !m,
            "file with umask {m:03o}"
        );
        assert_eq!(
            mode(&dir.join(format!("work/py-d-{m:03o}"))),
            0o777 & !m,
            "directory with umask {m:03o}"
        );
        assert_eq!(
            mode(&dir.join(format!("work/py-p-{m:03o}"))),
            0o666 & !m,
            "fifo with umask {m:03o}"
        );
    }
}

#[test]
fn umask_of_a_thread_changed_by_another_thread_applies() {
    // umask is shared by the threads of a process: a change made by one applies to the
    // creations of the other (a cache keyed by thread id would miss it).
    if !python() {
        return;
    }
    let dir = TestDir::new("guard-umask-thread");
    let w = dir.s("work");
    dir.mkdir("work");
    let script = format!(
        "import os, threading\nos.chdir('{w}')\nos.umask(0o022)\n\
         ev1, ev2 = threading.Event(), threading.Event()\n\
         def worker():\n\
         \x20   os.close(os.open('a644', os.O_CREAT | os.O_WRONLY, 0o666))\n\
         \x20   ev1.set(); ev2.wait()\n\
         \x20   os.close(os.open('b600', os.O_CREAT | os.O_WRONLY, 0o666))\n\
         t = threading.Thread(target=worker); t.start()\n\
         ev1.wait(); os.umask(0o077); ev2.set(); t.join()\nprint('done')\n"
    );
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", &script]));
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert_eq!(mode(&dir.join("work/a644")), 0o644);
    assert_eq!(mode(&dir.join("work/b600")), 0o600);
}

// --- 2. the race ---------------------------------------------------------------------------

fn race(op: &str, iters: u32) {
    let dir = TestDir::new(&format!("guard-race-{op}"));
    let Some(probe) = guard_probe(&dir) else {
        return;
    };
    let w = dir.s("work");
    dir.mkdir("work");
    let out = run_for(
        ringfence(&["--allow-write", &w]).args(["--", &probe, "race", &w, op, &iters.to_string()]),
        Duration::from_secs(240),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_no_protected(&dir.join("work"), &out);
    // Evidence that the race ran: some name was created (the flipper tears names, so what
    // was created need not be a whole `ok-NNNN`; under load few calls win at all).
    let ok = names(&dir.join("work"))
        .iter()
        .filter(|n| n.as_str() != "src")
        .count();
    assert!(
        ok > 0,
        "nothing was created: the race did not run: {out:#?}"
    );
    eprintln!("race {op}: {} ; {ok} entries", out.stdout.trim());
}

#[test]
fn race_open_flipping_path_never_creates_bashrc() {
    race("open", 30_000);
}

#[test]
fn race_mkdir_flipping_path_never_creates_bashrc() {
    race("mkdir", 30_000);
}

#[test]
fn race_rename_flipping_path_never_creates_bashrc() {
    race("rename", 15_000);
}

#[test]
fn race_symlink_flipping_path_never_creates_bashrc() {
    race("symlink", 30_000);
}

#[test]
fn race_link_flipping_path_never_creates_bashrc() {
    race("link", 15_000);
}

// --- 3. symlinks ---------------------------------------------------------------------------

#[test]
fn writing_through_symlinks_to_protected_names_is_refused() {
    let dir = TestDir::new("guard-symlinks");
    let w = dir.s("work");
    dir.mkdir("work/sub");
    let script = format!(
        "cd '{w}' || exit 99\n\
         ln -s .bashrc link && {{ echo x > link; echo \"link=$?\"; }}\n\
         ln -s b a && ln -s .zshrc b && {{ echo x > a; echo \"chain=$?\"; }}\n\
         ln -s ../.profile sub/l && {{ echo x > sub/l; echo \"up=$?\"; }}\n\
         ln -s '{w}/.envrc' absl && {{ echo x > absl; echo \"abs=$?\"; }}\n\
         ln -s .git g && mkdir .git && {{ mkdir g/hooks; echo x > g/hooks/pre-commit; echo \"hooks=$?\"; }}\n\
         ln -s sub/../.gitconfig dots && {{ echo x >> dots; echo \"dots=$?\"; }}\n\
         ln -s ok-target fine && echo y > fine && cat ok-target\n"
    );
    let out = sh(&["--allow-write", &w], &script);
    assert_eq!(out.code(), 0, "{out:#?}");
    for key in ["link", "chain", "up", "abs", "hooks", "dots"] {
        let line = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= line: {out:#?}"));
        assert_ne!(line, "0", "{key} succeeded: {out:#?}");
    }
    assert!(out.stdout.ends_with("y\n"), "{out:#?}");
    assert_no_protected(&dir.join("work"), &out);
    assert!(dir.join("work/.git").is_dir(), "mkdir .git is allowed");
}

#[test]
fn symlink_target_naming_proc_self_is_stored_verbatim() {
    // A symlink's target is text the kernel stores as given; `/proc/self` in it names whoever
    // follows the link later, not the process that made it.
    let dir = TestDir::new("guard-symlink-verbatim");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = sh(
        &["--allow-write", &w],
        &format!("cd '{w}' && ln -s /proc/self/cwd c && ln -s /proc/self/fd/0 in && echo done"),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert_eq!(
        std::fs::read_link(dir.join("work/c")).unwrap(),
        std::path::Path::new("/proc/self/cwd"),
        "{out:#?}"
    );
    assert_eq!(
        std::fs::read_link(dir.join("work/in")).unwrap(),
        std::path::Path::new("/proc/self/fd/0"),
        "{out:#?}"
    );
}

#[test]
fn creating_through_a_symlink_to_proc_self_cwd_uses_the_callers_cwd() {
    // `/proc/self` reached through a symlink names the process that follows it: without the
    // guard, `cd sub; echo > ../c/x` with c -> /proc/self/cwd creates sub/x.
    let dir = TestDir::new("guard-proc-self-link");
    let w = dir.s("work");
    dir.mkdir("work/sub");
    std::os::unix::fs::symlink("/proc/self/cwd", dir.join("work/c")).unwrap();
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "cd '{w}/sub' && echo hi > ../c/through && cat through; \
             echo x > ../c/.bashrc; echo \"bashrc=$?\""
        ),
    );
    // The failed redirection's status is the shell's choice (dash: 2, bash: 1); not 0.
    assert!(out.stdout.starts_with("hi\nbashrc="), "{out:#?}");
    assert!(!out.stdout.contains("bashrc=0"), "{out:#?}");
    assert_eq!(dir.read("work/sub/through"), "hi\n");
    assert!(
        !dir.join("work/through").exists(),
        "created in the wrong directory"
    );
    assert_no_protected(&dir.join("work"), &out);
}

// --- 4. O_TMPFILE + linkat ---------------------------------------------------------------

#[test]
fn tmpfile_linked_by_proc_fd_works_but_not_to_a_protected_name() {
    let dir = TestDir::new("guard-tmpfile");
    let Some(probe) = guard_probe(&dir) else {
        return;
    };
    let w = dir.s("work");
    dir.mkdir("work");
    let out = common::run_probe(&["--allow-write", &w], &probe, &["tmpfile", &w, "linked"]);
    if out.errno("tmpfile") == libc::EOPNOTSUPP {
        skip("the filesystem of the test directory has no O_TMPFILE");
        return;
    }
    assert_eq!(out.errno("tmpfile"), 0, "{out:#?}");
    assert_eq!(out.errno("link"), 0, "{out:#?}");
    assert_eq!(dir.read("work/linked"), "tmpdata\n");

    let out = common::run_probe(&["--allow-write", &w], &probe, &["tmpfile", &w, ".bashrc"]);
    assert_eq!(out.errno("tmpfile"), 0, "{out:#?}");
    assert_eq!(out.errno("link"), libc::EACCES, "{out:#?}");
    assert!(!dir.join("work/.bashrc").exists(), "{out:#?}");
    assert!(out.stderr.contains("refused to create"), "{out:#?}");

    if !python() {
        return;
    }
    // os.link calls link(2), which does not follow /proc/self/fd/N: linkat through ctypes.
    let script = format!(
        "import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         def link(fd, dst):\n\
         \x20   r = libc.linkat(-100, f'/proc/self/fd/{{fd}}'.encode(), -100, dst.encode(), 0x400)\n\
         \x20   return 0 if r == 0 else ctypes.get_errno()\n\
         fd = os.open('{w}', os.O_TMPFILE | os.O_WRONLY, 0o644)\nos.write(fd, b'py\\n')\n\
         assert link(fd, '{w}/pylinked') == 0\n\
         fd2 = os.open('{w}', os.O_TMPFILE | os.O_WRONLY, 0o644)\n\
         print('refused' if link(fd2, '{w}/.mcp.json') == 13 else 'linked')\n"
    );
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", &script]));
    assert_eq!(out.ok(), "refused\n", "{out:#?}");
    assert_eq!(dir.read("work/pylinked"), "py\n");
    assert_no_protected(&dir.join("work"), &out);
}

// --- 5. directory descriptors, renames ---------------------------------------------------

#[test]
fn openat_relative_to_a_dirfd_and_absolute_with_an_invalid_dirfd() {
    let dir = TestDir::new("guard-dirfd");
    let Some(probe) = guard_probe(&dir) else {
        return;
    };
    let w = dir.s("work");
    dir.mkdir("work/sub");
    let out = common::run_probe(&["--allow-write", &w], &probe, &["dirfd", &w]);
    for (name, want) in [
        ("openat_rel_ok", 0),
        ("openat_rel_bashrc", libc::EACCES),
        ("openat_rel_sub_profile", libc::EACCES),
        ("mkdirat_rel_ok", 0),
        ("mkdirat_rel_vscode", libc::EACCES),
        ("openat_badfd_abs_ok", 0),
        ("openat_badfd_abs_zshrc", libc::EACCES),
        ("openat_badfd_rel", libc::EBADF),
        ("openat_filefd_rel", libc::ENOTDIR),
    ] {
        assert_eq!(out.errno(name), want, "{name}: {out:#?}");
    }
    assert!(dir.join("work/rel-ok").is_file());
    assert!(dir.join("work/dir-ok").is_dir());
    assert!(dir.join("work/abs-ok").is_file());
    assert_no_protected(&dir.join("work"), &out);

    if !python() {
        return;
    }
    let script = format!(
        "import os\nd = os.open('{w}/sub', os.O_RDONLY | os.O_DIRECTORY)\n\
         os.close(os.open('py-ok', os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d))\n\
         try:\n\
         \x20   os.open('.gitmodules', os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d)\n\
         \x20   print('created')\n\
         except PermissionError:\n\
         \x20   print('refused')\n"
    );
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", &script]));
    assert_eq!(out.ok(), "refused\n", "{out:#?}");
    assert!(dir.join("work/sub/py-ok").is_file());
    assert_no_protected(&dir.join("work"), &out);
}

#[test]
fn rename_exchange_and_noreplace_with_a_protected_name_are_refused() {
    let dir = TestDir::new("guard-exchange");
    let Some(probe) = guard_probe(&dir) else {
        return;
    };
    let w = dir.s("work");
    dir.mkdir("work");
    let out = common::run_probe(&["--allow-write", &w], &probe, &["exchange", &w]);
    assert_ne!(out.errno("exchange"), 0, "{out:#?}");
    assert_ne!(out.errno("exchange_rev"), 0, "{out:#?}");
    assert_ne!(out.errno("noreplace"), 0, "{out:#?}");
    assert_eq!(out.errno("noreplace_ok"), 0, "{out:#?}");
    assert_eq!(dir.read("work/renamed-ok"), "normal\n");
    assert_no_protected(&dir.join("work"), &out);

    // With a .bashrc that exists, exchanging would swap attacker content into it.
    let dir = TestDir::new("guard-exchange-existing");
    let w = dir.s("work");
    dir.write("work/.bashrc", "original\n");
    let out = common::run_probe(&["--allow-write", &w], &probe, &["exchange", &w]);
    assert_ne!(out.errno("exchange"), 0, "{out:#?}");
    assert_ne!(out.errno("exchange_rev"), 0, "{out:#?}");
    assert_eq!(dir.read("work/.bashrc"), "original\n", "{out:#?}");
}

#[test]
fn directory_with_hooks_cannot_be_renamed_to_git() {
    let dir = TestDir::new("guard-rename-git");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "cd '{w}' && mkdir -p d/hooks && echo '#!/bin/sh' > d/hooks/pre-commit && \
             mkdir -p r && {{ mv d r/.git; echo \"mv=$?\"; }}; \
             mkdir -p e/hooks && {{ mv -T e .claude; echo \"claude=$?\"; }}; \
             echo f > f && {{ mv f .git; echo \"file=$?\"; }}"
        ),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(!out.stdout.contains("mv=0"), "{out:#?}");
    assert!(!out.stdout.contains("claude=0"), "{out:#?}");
    assert!(!out.stdout.contains("file=0"), "{out:#?}");
    assert!(!dir.join("work/r/.git").exists(), "{out:#?}");
    assert!(!dir.join("work/.claude").exists(), "{out:#?}");
    assert!(!dir.join("work/.git").exists(), "{out:#?}");
    assert!(dir.join("work/d/hooks/pre-commit").is_file());
}

#[test]
fn mv_from_private_tmp_does_not_bring_in_a_bashrc() {
    // /tmp is another filesystem: mv falls back to copying, one creation at a time.
    let dir = TestDir::new("guard-mv-tmp");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "mkdir -p /tmp/t/sub /tmp/t/.git/hooks && echo evil > /tmp/t/sub/.bashrc && \
             echo ok > /tmp/t/sub/ok && echo h > /tmp/t/.git/hooks/post-checkout && \
             echo e > /tmp/t/.envrc && cat /tmp/t/sub/.bashrc && \
             {{ mv /tmp/t '{w}/t'; echo \"mv=$?\"; }}"
        ),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(
        out.stdout.starts_with("evil\n"),
        "outside the roots nothing is refused: {out:#?}"
    );
    assert_eq!(dir.read("work/t/sub/ok"), "ok\n", "{out:#?}");
    assert_no_protected(&dir.join("work"), &out);
}

// --- 6. FIFO -------------------------------------------------------------------------------

#[test]
fn fifo_in_a_writable_root_does_not_deadlock() {
    let dir = TestDir::new("guard-fifo");
    let w = dir.s("work");
    dir.mkdir("work");
    let settings = dir.settings(r#"{"limits":{"wallSeconds":30}}"#);
    let out = run_for(
        ringfence(&["-s", &settings, "--allow-write", &w]).args([
            "--",
            "/bin/sh",
            "-c",
            &format!(
                "cd '{w}' && mkfifo p && (cat p > out &) ; echo hi > p; \
                 i=0; while [ ! -s out ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
                 cat out; mkfifo q && {{ cat q > out2 & }} && echo two > q && wait && cat out2"
            ),
        ]),
        Duration::from_secs(50),
    );
    assert_eq!(out.ok(), "hi\ntwo\n", "{out:#?}");
    assert_eq!(dir.read("work/out"), "hi\n");
}

#[test]
fn fifo_opened_by_both_ends_with_o_creat_does_not_deadlock() {
    // Both ends go through the guard (O_CREAT on an existing FIFO): the agent must keep serving
    // while the first open waits for the second.
    if !python() {
        return;
    }
    let dir = TestDir::new("guard-fifo-both");
    let w = dir.s("work");
    dir.mkdir("work");
    let settings = dir.settings(r#"{"limits":{"wallSeconds":30}}"#);
    let script = format!(
        "import os\nos.chdir('{w}')\nos.mkfifo('p')\n\
         if os.fork() == 0:\n\
         \x20   fd = os.open('p', os.O_CREAT | os.O_RDONLY)\n\
         \x20   data = os.read(fd, 100)\n\
         \x20   open('got', 'wb').write(data)\n\
         \x20   os._exit(0)\n\
         fd = os.open('p', os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'ping')\nos.close(fd)\n\
         os.wait()\nprint(open('got').read())\n"
    );
    let out = run_for(
        ringfence(&["-s", &settings, "--allow-write", &w]).args(["--", PYTHON, "-c", &script]),
        Duration::from_secs(50),
    );
    assert_eq!(out.ok(), "ping\n", "{out:#?}");
}

// --- 7. volume -----------------------------------------------------------------------------

#[test]
fn two_thousand_files_are_all_created_with_their_content() {
    let dir = TestDir::new("guard-many");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = run_for(
        ringfence(&["--allow-write", &w]).args([
            "--",
            "/bin/sh",
            "-c",
            &format!(
                "cd '{w}' && i=0; while [ $i -lt 2000 ]; do echo \"content $i\" > f$i || exit 1; \
                 i=$((i+1)); done; echo done"
            ),
        ]),
        Duration::from_secs(120),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    for i in 0..2000 {
        assert_eq!(dir.read(&format!("work/f{i}")), format!("content {i}\n"));
    }
    assert_eq!(names(&dir.join("work")).len(), 2000);
}

// --- 8. git --------------------------------------------------------------------------------

#[test]
fn git_init_commit_and_clone_work_with_allow_git_config() {
    if !have("git") {
        skip("no git");
        return;
    }
    let dir = TestDir::new("guard-git");
    let w = dir.s("work");
    dir.mkdir("work");
    let settings = dir.settings(r#"{"filesystem":{"allowGitConfig":true}}"#);
    let git = "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main";
    let out = sh(
        &["-s", &settings, "--allow-write", &w],
        &format!(
            "set -e; cd '{w}'; {git} init -q repo; cd repo; echo hello > a.txt; {git} add a.txt; \
             {git} commit -q -m first; cd ..; {git} clone -q repo clone; cat clone/a.txt; \
             {git} -C clone log --format=%s"
        ),
    );
    assert_eq!(out.ok(), "hello\nfirst\n", "{out:#?}");
    for repo in ["repo", "clone"] {
        assert!(dir.join(format!("work/{repo}/.git/config")).is_file());
        assert!(
            !dir.join(format!("work/{repo}/.git/hooks")).exists(),
            "{repo}/.git/hooks was created: {out:#?}"
        );
    }
    assert_eq!(dir.read("work/clone/a.txt"), "hello\n");
}

const GIT: &str = "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main";

#[test]
fn git_creates_clones_and_commits_in_new_repositories() {
    // Without allowGitConfig: a repository the sandbox creates gets a configuration that git
    // writes through the guard (checked), and no hooks.
    if !have("git") {
        skip("no git");
        return;
    }
    let dir = TestDir::new("guard-git-new");
    let w = dir.s("work");
    dir.mkdir("work");
    // A repository outside the writable root to clone from.
    let src = dir.s("src");
    let made = run(Command::new("sh").arg("-c").arg(format!(
        "set -e; {GIT} init -q '{src}'; cd '{src}'; echo up > u.txt; {GIT} add u.txt; \
         {GIT} commit -q -m up"
    )));
    assert!(made.success(), "{made:#?}");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "set -e; cd '{w}'; {GIT} init -q repo; cd repo; git config user.name t; \
             git config user.email t@example.com; echo hello > a.txt; git add a.txt; \
             git commit -q -m first; git checkout -q -b feature; echo more >> a.txt; \
             git stash -q; git stash list | wc -l; git stash pop -q; git commit -qam second; \
             git gc -q; git log --format=%s; cd ..; {GIT} clone -q '{src}' clone; \
             cat clone/u.txt; git -C clone remote -v | head -1"
        ),
    );
    assert_eq!(
        out.ok(),
        format!("1\nsecond\nfirst\nup\norigin\t{src} (fetch)\n"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("refused"), "{out:#?}");
    let config = dir.read("work/repo/.git/config");
    assert!(config.contains("name = t"), "{config}");
    for repo in ["repo", "clone"] {
        assert!(
            !dir.join(format!("work/{repo}/.git/hooks")).exists(),
            "{repo}/.git/hooks was created: {out:#?}"
        );
    }
}

#[test]
fn a_hook_cannot_be_planted_in_a_new_repository() {
    // git's templates bring a hooks directory of samples; nothing else may appear in it, in
    // any way, and no sample is executable.
    if !have("git") || !python() {
        skip("no git or python3");
        return;
    }
    let dir = TestDir::new("guard-git-hook");
    let w = dir.s("work");
    dir.mkdir("work");
    let script = format!(
        r##"
import os, subprocess
os.chdir("{w}")
subprocess.run(["git", "-c", "init.templateDir=/usr/share/git-core/templates", "init", "-q", "r"], check=True)
os.chdir("r")
h = ".git/hooks"
def attempt(name, f):
    try:
        f(); print(name, "done")
    except OSError as e:
        print(name, "refused", e.errno)
attempt("open", lambda: open(h + "/pre-commit", "w").write("#!/bin/sh\necho pwned\n"))
attempt("creat-exec", lambda: os.close(os.open(h + "/post-checkout", os.O_CREAT | os.O_WRONLY, 0o755)))
attempt("rename-sample", lambda: os.rename(h + "/pre-commit.sample", h + "/pre-commit"))
attempt("link", lambda: os.link(h + "/update.sample", h + "/update"))
attempt("symlink", lambda: os.symlink("/bin/sh", h + "/pre-push"))
os.makedirs("ev/hooks"); open("ev/hooks/pre-commit", "w").write("x")
attempt("dir-into-git", lambda: os.rename("ev", ".git/modules"))
attempt("mkdir-in-hooks", lambda: os.mkdir(h + "/sub.sample"))
attempt("new-sample", lambda: os.close(os.open(h + "/mine.sample", os.O_CREAT | os.O_WRONLY, 0o755)))
"##
    );
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", &script]));
    assert_eq!(out.code(), 0, "{out:#?}");
    for name in [
        "open",
        "creat-exec",
        "rename-sample",
        "link",
        "symlink",
        "dir-into-git",
        "mkdir-in-hooks",
    ] {
        assert!(
            out.stdout.contains(&format!("{name} refused")),
            "{name}: {out:#?}"
        );
    }
    assert!(out.stdout.contains("new-sample done"), "{out:#?}");
    let hooks = dir.join("work/r/.git/hooks");
    let found = names(&hooks);
    assert!(found.len() > 5, "the template's samples: {found:?}");
    for n in &found {
        assert!(n.ends_with(".sample"), "{n} in hooks: {out:#?}");
        let m = mode(&hooks.join(n));
        assert_eq!(m & 0o111, 0, "{n} is executable ({m:o})");
    }
    assert!(!dir.join("work/r/.git/modules").exists());
    // And git runs nothing: a commit succeeds without any hook output.
    let out = sh(
        &["--allow-write", &w],
        &format!("cd '{w}/r' && echo a > a && git add a && {GIT} commit -q -m c && echo ok"),
    );
    assert_eq!(out.ok(), "ok\n", "{out:#?}");
}

/// Keys that make git run a program or load other configuration, with a value for each.
const DANGEROUS_GIT_KEYS: &[(&str, &str)] = &[
    ("core.hooksPath", "/tmp/h"),
    ("core.fsmonitor", "./fsm"),
    ("core.sshCommand", "sh -c pwned"),
    ("core.pager", "sh -c pwned"),
    ("core.editor", "sh -c pwned"),
    ("core.askPass", "./x"),
    ("core.worktree", "/"),
    ("sequence.editor", "./x"),
    ("diff.external", "./x"),
    ("diff.bin.textconv", "./x"),
    ("diff.bin.command", "./x"),
    ("filter.f.clean", "./x"),
    ("filter.f.smudge", "./x"),
    ("filter.f.process", "./x"),
    ("merge.m.driver", "./x"),
    ("credential.helper", "./x"),
    ("gpg.program", "./x"),
    ("gpg.ssh.program", "./x"),
    ("include.path", "../evil.cfg"),
    ("includeIf.gitdir:/.path", "../evil.cfg"),
    ("alias.st", "!sh -c pwned"),
    ("remote.origin.uploadpack", "./x"),
    ("remote.origin.receivepack", "./x"),
    ("uploadpack.packObjectsHook", "./x"),
    ("protocol.ext.allow", "always"),
];

/// Python run inside a new repository: every way around git to change its config.
const CONFIG_BYPASSES: &str = r#"
import os
def attempt(name, f):
    try:
        f(); print("done", name)
    except OSError as e:
        print("refused", name, e.errno)
open("c.lock", "w").write("[core]\n\thooksPath = /tmp/h\n")
attempt("rename", lambda: os.rename("c.lock", ".git/config"))
attempt("link", lambda: os.link(".git/config", "alias"))
if os.path.exists("alias"):
    attempt("append-alias", lambda: open("alias", "a").write("[core]\n\tpager = x\n"))
fd = os.open(".git/config", os.O_PATH)
attempt("procfd", lambda: open("/proc/self/fd/%d" % fd, "a").write("[core]\n\tpager = x\n"))
attempt("rdwr", lambda: os.close(os.open(".git/config", os.O_RDWR)))
attempt("trunc", lambda: os.close(os.open(".git/config", os.O_WRONLY | os.O_TRUNC)))
attempt("symlink", lambda: os.symlink("../evil.cfg", ".git/config.worktree"))
"#;

#[test]
fn a_new_repository_config_cannot_make_git_run_a_program() {
    if !have("git") || !python() {
        skip("no git or python3");
        return;
    }
    let dir = TestDir::new("guard-git-config");
    let w = dir.s("work");
    dir.mkdir("work");
    let bypass = dir.write("bypass.py", CONFIG_BYPASSES);
    let mut script = format!("cd '{w}' && {GIT} init -q r && cd r || exit 99\n");
    for (key, value) in DANGEROUS_GIT_KEYS {
        script.push_str(&format!(
            "git config '{key}' '{value}' 2>/dev/null && echo 'set {key}'\n"
        ));
    }
    script.push_str(&format!("{PYTHON} '{}'\n", bypass.display()));
    let out = sh(&["--allow-write", &w], &script);
    for (key, _) in DANGEROUS_GIT_KEYS {
        assert!(
            !out.stdout.contains(&format!("set {key}\n")),
            "{key} was set: {out:#?}"
        );
    }
    for name in [
        "rename",
        "procfd",
        "rdwr",
        "trunc",
        "append-alias",
        "symlink",
    ] {
        assert!(
            !out.stdout.contains(&format!("done {name}\n")),
            "{name}: {out:#?}"
        );
    }
    for name in ["rename", "procfd", "rdwr", "trunc", "symlink"] {
        assert!(
            out.stdout.contains(&format!("refused {name}")),
            "{name}: {out:#?}"
        );
    }
    assert!(
        out.stderr.contains("core.hookspath: makes git run hooks"),
        "the report gives the reason: {out:#?}"
    );
    let config = std::fs::read_to_string(dir.join("work/r/.git/config")).unwrap();
    assert!(config.contains("repositoryformatversion"), "{config}");
    for (key, _) in DANGEROUS_GIT_KEYS {
        let last = key.rsplit('.').next().unwrap().to_lowercase();
        assert!(
            !config.to_lowercase().contains(&format!("{last} =")),
            "{key} reached the config: {config}"
        );
    }
    assert!(!config.contains("pager"), "{config}");
    assert!(!dir.join("work/r/.git/config.worktree").exists());
}

#[test]
fn an_existing_repository_keeps_its_protection() {
    if !have("git") {
        skip("no git");
        return;
    }
    let dir = TestDir::new("guard-git-existing");
    let w = dir.s("work");
    dir.mkdir("work");
    let made = run(Command::new("sh").arg("-c").arg(format!(
        "{GIT} init -q '{w}/old' && rm -rf '{w}/old/.git/hooks'"
    )));
    assert!(made.success(), "{made:#?}");
    let before = dir.read("work/old/.git/config");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "cd '{w}/old'; git config core.pager x; echo c1=$?; git config user.name x; \
             echo c2=$?; mkdir .git/hooks; echo c3=$?; ln -s /tmp .git/probe; echo c4=$?"
        ),
    );
    for c in ["c1=0", "c2=0", "c3=0", "c4=0"] {
        assert!(!out.stdout.contains(c), "{c}: {out:#?}");
    }
    assert_eq!(dir.read("work/old/.git/config"), before);
    assert!(!dir.join("work/old/.git/hooks").exists());
    assert!(!dir.join("work/old/.git/probe").exists());
}

// --- 9. the exit report ------------------------------------------------------------------

#[test]
fn exit_report_names_the_refused_path() {
    let dir = TestDir::new("guard-report");
    let w = dir.s("work");
    dir.mkdir("work");
    let out = sh(
        &["--allow-write", &w],
        &format!("cd '{w}' && touch .bashrc"),
    );
    assert_ne!(out.code(), 0, "{out:#?}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("ringfence: refused to create"))
        .unwrap_or_else(|| panic!("no report: {out:#?}"));
    assert!(
        line.contains("refused to create 1 protected path "),
        "{line}"
    );
    assert!(line.contains(&format!("{w}/.bashrc")), "{line}");

    // Nothing refused, nothing reported; creations in /tmp are never refused.
    let out = sh(
        &["--allow-write", &w],
        &format!("cd '{w}' && touch fine && touch /tmp/.bashrc && echo ok"),
    );
    assert_eq!(out.ok(), "ok\n", "{out:#?}");
    assert!(!out.stderr.contains("refused to create"), "{out:#?}");
}

// --- other creating syscalls ---------------------------------------------------------------

#[test]
fn unix_socket_bind_cannot_create_a_protected_name() {
    // bind(2) of an AF_UNIX socket creates a name like mknod does.
    if !python() {
        return;
    }
    let dir = TestDir::new("guard-bind");
    let w = dir.s("work");
    dir.mkdir("work");
    // A socketpair (allowed without allowAllUnixSockets, and for root callers) can be bound to
    // a path like any unix socket.
    let script = format!(
        "import socket\nfor name in ('ok.sock', '.bashrc', '.envrc'):\n\
         \x20   s, _ = socket.socketpair()\n\
         \x20   try:\n\
         \x20       s.bind('{w}/' + name); print(name, 'bound')\n\
         \x20   except OSError as e:\n\
         \x20       print(name, 'errno', e.errno)\n"
    );
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", &script]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("ok.sock bound"), "{out:#?}");
    assert_no_protected(&dir.join("work"), &out);
}

#[test]
fn non_dumpable_callers_can_create_files_and_bind_sockets() {
    // ssh-agent and gpg-agent make themselves non-dumpable; the guard must still read their
    // path arguments and take their descriptors.
    if !python() {
        return;
    }
    let dir = TestDir::new("guard-nondumpable");
    let w = dir.s("work");
    dir.mkdir("work");
    let script = format!(
        r#"
import ctypes, os, socket
assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0
os.chdir("{w}")
open("plain", "w").write("x")
fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open("viadirfd", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
s, _ = socket.socketpair()
s.bind("agent.sock")
try:
    open(".bashrc", "w")
    print("bashrc created")
except PermissionError:
    print("bashrc refused")
print("done")
"#
    );
    let out =
        run(ringfence(&["--allow-write", &w]).args(["--", "/usr/bin/python3", "-c", &script]));
    assert_eq!(out.stdout, "bashrc refused\ndone\n", "{out:#?}");
    assert_eq!(dir.read("work/plain"), "x");
    assert!(dir.join("work/viadirfd").exists());
    let sock = std::fs::symlink_metadata(dir.join("work/agent.sock")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&sock.file_type()));
    assert!(!dir.join("work/.bashrc").exists());
}

#[test]
fn git_directory_redirection_and_submodule_hooks_are_refused() {
    // git takes config and hooks from wherever `.git/commondir` points, and a submodule's
    // git directory lives in `.git/modules/<name>/`: both are protected inside any `.git`.
    let dir = TestDir::new("guard-commondir");
    let w = dir.s("work");
    dir.mkdir("work/.git/objects");
    dir.mkdir("work/.git/modules/sub/objects");
    dir.mkdir("work/.git/worktrees/t");
    let out = sh(
        &["--allow-write", &w],
        &format!(
            "cd '{w}'; echo ../evil > .git/commondir; echo c1=$?; \
             mkdir .git/modules/sub/hooks; echo c2=$?; \
             echo x > .git/modules/sub/config; echo c3=$?; \
             echo ../x > .git/worktrees/t/commondir; echo c4=$?; \
             echo x > .git/worktrees/t/gitdir; echo c5=$?; \
             mkdir -p .git/modules/sub/refs && echo ok > .git/modules/sub/refs/x && echo c6=ok"
        ),
    );
    for c in ["c1=0", "c2=0", "c3=0", "c4=0", "c5=0"] {
        assert!(!out.stdout.contains(c), "{c}: {out:#?}");
    }
    assert!(out.stdout.contains("c6=ok"), "{out:#?}");
    for p in [
        "work/.git/commondir",
        "work/.git/modules/sub/hooks",
        "work/.git/modules/sub/config",
        "work/.git/worktrees/t/commondir",
        "work/.git/worktrees/t/gitdir",
    ] {
        assert!(!dir.join(p).exists(), "{p} was created: {out:#?}");
    }
}

#[test]
fn a_parent_renamed_or_symlinked_into_place_cannot_bring_a_denied_path() {
    // denyWrite names a file that does not exist yet: building it elsewhere and renaming its
    // directory into place must not work either.
    let dir = TestDir::new("guard-rename-parent");
    let w = dir.s("work");
    dir.mkdir("work");
    let denied = format!("{w}/secrets/key");
    let out = sh(
        &["--allow-write", &w, "--deny-write", &denied],
        &format!(
            "cd '{w}'; mkdir -p t && echo pwned > t/key; mv t secrets; echo r1=$?; \
             ln -s t secrets; echo r2=$?; mkdir secrets && echo made-dir; \
             echo x > secrets/key; echo r3=$?"
        ),
    );
    for c in ["r1=0", "r2=0", "r3=0"] {
        assert!(!out.stdout.contains(c), "{c}: {out:#?}");
    }
    assert!(out.stdout.contains("made-dir"), "{out:#?}");
    assert!(!dir.join("work/secrets/key").exists(), "{out:#?}");
}

#[test]
fn the_guard_does_not_open_other_processes_proc_files_for_a_caller() {
    // PID 1 may read every process in the sandbox; a caller asking it (open with O_CREAT) for
    // another process's memory must get what it would get itself.
    if !python() {
        return;
    }
    let dir = TestDir::new("guard-proc-deputy");
    let w = dir.s("work");
    dir.mkdir("work");
    let script = r#"
import ctypes, os, sys, time
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # non-dumpable, like ssh-agent
    os.write(w, b"x")
    time.sleep(30)
    os._exit(0)
os.read(r, 1)
for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY | os.O_CREAT):
    try:
        os.close(os.open("/proc/%d/mem" % pid, flags))
        print("opened")
    except OSError as e:
        print("errno", e.errno)
os.kill(pid, 9)
"#;
    let out = run(ringfence(&["--allow-write", &w]).args(["--", PYTHON, "-c", script]));
    assert_eq!(out.stdout, "errno 13\nerrno 13\n", "{out:#?}");
}
