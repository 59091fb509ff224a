//! Filesystem escapes tried from inside a real sandbox: reading denied secrets by every route,
//! writing outside the allowed roots, and tampering with protected files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sh, TestDir};

const SECRET: &str = "RF-SECRET-MARKER-7f3a";

/// A test dir with `secret/key.txt` (denied) and `work/` (writable).
fn secret_fixture(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.write("secret/key.txt", &format!("{SECRET}\n"));
    dir.write("secret/sub/more.txt", &format!("{SECRET}\n"));
    dir.mkdir("work");
    // The fixture itself must hold the secret, so the sandbox is what hides it.
    assert!(dir.read("secret/key.txt").contains(SECRET));
    dir
}

fn deny_secret_file(dir: &TestDir) -> Vec<String> {
    vec![
        "--deny-read".into(),
        dir.s("secret/key.txt"),
        "--allow-write".into(),
        dir.s("work"),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn denied_file_reads_empty() {
    let dir = secret_fixture("deny-file");
    let a = deny_secret_file(&dir);
    let out = sh(
        &args(&a),
        &format!("cat '{}'; echo done", dir.s("secret/key.txt")),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
}

#[test]
fn denied_file_through_symlink_made_inside() {
    let dir = secret_fixture("deny-symlink");
    let a = deny_secret_file(&dir);
    let script = format!(
        "ln -s '{target}' '{work}/abs' && ln -s ../secret/key.txt '{work}/rel' && \
         cat '{work}/abs' '{work}/rel'; readlink -f '{work}/rel'; echo done",
        target = dir.s("secret/key.txt"),
        work = dir.s("work"),
    );
    let out = sh(&args(&a), &script);
    let stdout = out.ok();
    assert!(!stdout.contains(SECRET), "{out:#?}");
    assert!(stdout.ends_with("done\n"), "{out:#?}");
    // The links were really made (the writable root works), so the read went through them.
    assert!(dir.join("work/abs").symlink_metadata().is_ok());
}

#[test]
fn denied_file_through_dotdot_paths() {
    let dir = secret_fixture("deny-dotdot");
    let a = deny_secret_file(&dir);
    let script = format!(
        "cat '{root}/secret/sub/../key.txt' '{root}/work/../secret/./key.txt'; \
         cd '{root}/secret/sub' && cat ../key.txt ../../secret/key.txt; echo done",
        root = dir.s(""),
    );
    let out = sh(&args(&a), &script);
    assert_eq!(out.ok(), "done\n", "{out:#?}");
}

#[test]
fn denied_file_through_proc_self_root() {
    let dir = secret_fixture("deny-proc-self");
    let a = deny_secret_file(&dir);
    let script = format!(
        "cat '/proc/self/root{p}'; cat \"/proc/$$/root{p}\"; echo done",
        p = dir.s("secret/key.txt"),
    );
    let out = sh(&args(&a), &script);
    assert!(!out.stdout.contains(SECRET), "{out:#?}");
    assert!(out.stdout.ends_with("done\n"), "{out:#?}");
}

#[test]
fn denied_file_through_proc_1_root() {
    let dir = secret_fixture("deny-proc-1");
    let a = deny_secret_file(&dir);
    let script = format!(
        "cat '/proc/1/root{p}'; cat '/proc/1/cwd{p}'; ls /proc/1/root/ >/dev/null; echo done",
        p = dir.s("secret/key.txt"),
    );
    let out = sh(&args(&a), &script);
    assert!(!out.stdout.contains(SECRET), "{out:#?}");
    assert!(out.stdout.ends_with("done\n"), "{out:#?}");
}

#[test]
fn denied_directory_lists_empty() {
    let dir = secret_fixture("deny-dir");
    let script = format!(
        "ls -A '{d}'; echo listed; cat '{d}/key.txt' '{d}/sub/more.txt' 2>/dev/null; echo done",
        d = dir.s("secret"),
    );
    let out = sh(&["--deny-read", &dir.s("secret")], &script);
    assert_eq!(out.ok(), "listed\ndone\n", "{out:#?}");
}

#[test]
fn allow_read_reopens_inside_denied_directory() {
    let dir = secret_fixture("deny-reallow");
    dir.write("secret/public/readme.txt", "public\n");
    let script = format!(
        "cat '{d}/public/readme.txt'; cat '{d}/key.txt'; echo done",
        d = dir.s("secret"),
    );
    let out = sh(
        &[
            "--deny-read",
            &dir.s("secret"),
            "--allow-read",
            &dir.s("secret/public"),
        ],
        &script,
    );
    assert_eq!(out.ok(), "public\ndone\n", "{out:#?}");
}

#[test]
fn hard_link_to_denied_file_fails() {
    let dir = TestDir::new("deny-hardlink");
    dir.write("work/key.txt", &format!("{SECRET}\n"));
    dir.write("outside.txt", &format!("{SECRET}\n"));
    let script = format!(
        "ln '{w}/key.txt' '{w}/hl1'; echo ln1=$?; ln '{o}' '{w}/hl2'; echo ln2=$?; \
         cat '{w}/hl1' '{w}/hl2' 2>/dev/null; echo done",
        w = dir.s("work"),
        o = dir.s("outside.txt"),
    );
    let out = sh(
        &[
            "--allow-write",
            &dir.s("work"),
            "--deny-read",
            &dir.s("work/key.txt"),
            "--deny-read",
            &dir.s("outside.txt"),
        ],
        &script,
    );
    let stdout = out.ok();
    assert!(!stdout.contains(SECRET), "{out:#?}");
    assert!(!stdout.contains("ln1=0"), "{out:#?}");
    assert!(!stdout.contains("ln2=0"), "{out:#?}");
    assert!(!dir.join("work/hl1").exists());
    assert!(!dir.join("work/hl2").exists());
}

#[test]
fn host_process_environ_is_invisible() {
    let marker = common::unique("RFHOSTENVMARK");
    let mut host = std::process::Command::new("sleep")
        .arg("30")
        .env("RF_HOST_MARKER", &marker)
        .spawn()
        .unwrap();
    let pid = host.id();
    // The marker is really readable on the host (once the child has exec'd).
    let mut seen = false;
    for _ in 0..200 {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        if String::from_utf8_lossy(&environ).contains(&marker) {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(seen, "the host process never showed its marker");

    // Split the marker so the script's own command line does not contain it.
    let (head, tail) = marker.split_at(6);
    let script = format!(
        "test -e /proc/{pid} && echo pid-visible; \
         cat /proc/{pid}/environ 2>/dev/null | tr '\\0' '\\n' | grep -c RF_HOST_MARKER; \
         grep -l -a \"{head}\"\"{tail}\" /proc/[0-9]*/environ 2>/dev/null; \
         ls /proc | grep -c '^[0-9]'; echo done"
    );
    let out = sh(&[], &script);
    host.kill().unwrap();
    host.wait().unwrap();
    let stdout = out.ok();
    assert!(!stdout.contains("pid-visible"), "{out:#?}");
    assert!(!stdout.contains("/environ"), "{out:#?}");
    assert!(!stdout.contains(&marker), "{out:#?}");
    // Only the sandbox's own handful of processes are visible.
    let lines: Vec<&str> = stdout.lines().collect();
    let count: u32 = lines[lines.len() - 2].parse().unwrap();
    assert!(count < 10, "too many processes visible: {out:#?}");
}

#[test]
fn write_outside_allowed_roots_is_erofs() {
    let dir = TestDir::new("erofs");
    dir.mkdir("work");
    dir.write("ro/existing.txt", "original\n");
    let script = format!(
        "echo x > '{ro}/new.txt'; echo x >> '{ro}/existing.txt'; rm -f '{ro}/existing.txt'; \
         mkdir '{ro}/d'; touch /usr/rf-test-file; echo ok > '{w}/ok.txt'; echo done",
        ro = dir.s("ro"),
        w = dir.s("work"),
    );
    let out = sh(&["--allow-write", &dir.s("work")], &script);
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    let erofs = out.stderr.matches("Read-only file system").count();
    assert!(erofs >= 5, "expected EROFS for each write: {out:#?}");
    assert!(!dir.join("ro/new.txt").exists());
    assert!(!dir.join("ro/d").exists());
    assert!(!std::path::Path::new("/usr/rf-test-file").exists());
    assert_eq!(dir.read("ro/existing.txt"), "original\n");
    assert_eq!(dir.read("work/ok.txt"), "ok\n");
}

#[test]
fn deny_write_inside_allowed_root() {
    let dir = TestDir::new("deny-write");
    dir.write("work/locked/file.txt", "original\n");
    let script = format!(
        "echo x > '{w}/locked/new.txt'; echo x >> '{w}/locked/file.txt'; \
         rm -rf '{w}/locked'; mv '{w}/locked' '{w}/moved'; echo ok > '{w}/ok.txt'; echo done",
        w = dir.s("work"),
    );
    let out = sh(
        &[
            "--allow-write",
            &dir.s("work"),
            "--deny-write",
            &dir.s("work/locked"),
        ],
        &script,
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:#?}");
    assert!(!dir.join("work/locked/new.txt").exists());
    assert!(!dir.join("work/moved").exists());
    assert_eq!(dir.read("work/locked/file.txt"), "original\n");
    assert_eq!(dir.read("work/ok.txt"), "ok\n");
}

/// Tries to modify, replace, remove and rename the protected file `rel` (inside the writable
/// root `work/`) and checks on the host that it is unchanged.
fn assert_protected_file(name: &str, rel: &str) {
    let dir = TestDir::new(name);
    let original = format!("original {rel}\n");
    dir.write(&format!("work/{rel}"), &original);
    dir.write("work/unrelated.txt", "u\n");
    let f = dir.s(&format!("work/{rel}"));
    let script = format!(
        "echo evil >> '{f}'; echo evil > '{f}'; printf evil | dd of='{f}' conv=notrunc 2>/dev/null; \
         truncate -s 0 '{f}'; chmod 777 '{f}'; rm -f '{f}'; mv '{f}' '{f}.moved'; \
         echo evil > '{f}.new' && mv -f '{f}.new' '{f}'; ln -sf /etc/passwd '{f}'; \
         echo ok >> '{u}'; echo done",
        u = dir.s("work/unrelated.txt"),
    );
    let out = sh(&["--allow-write", &dir.s("work")], &script);
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    let host = dir.join(format!("work/{rel}"));
    let meta = host.symlink_metadata().unwrap();
    assert!(meta.is_file(), "{rel} was replaced: {out:#?}");
    assert_eq!(
        std::fs::read_to_string(&host).unwrap(),
        original,
        "{out:#?}"
    );
    assert!(!dir.join(format!("work/{rel}.moved")).exists());
    // The writable root itself still works.
    assert_eq!(dir.read("work/unrelated.txt"), "u\nok\n");
}

#[test]
fn protected_bashrc_deep_inside_writable_root() {
    assert_protected_file("prot-bashrc", "a/b/c/d/.bashrc");
}

#[test]
fn protected_git_hook() {
    assert_protected_file("prot-hook", "repo/.git/hooks/pre-commit");
}

#[test]
fn protected_git_config() {
    assert_protected_file("prot-gitconfig", "repo/.git/config");
}

#[test]
fn protected_vscode_settings() {
    assert_protected_file("prot-vscode", "proj/.vscode/settings.json");
}

#[test]
fn protected_claude_settings() {
    assert_protected_file("prot-claude", "proj/.claude/settings.json");
}

#[test]
fn protected_other_rc_and_agent_files() {
    for rel in [
        ".bash_profile",
        ".zshrc",
        ".zprofile",
        ".profile",
        ".gitconfig",
        "sub/.gitmodules",
        "sub/.ripgreprc",
        "sub/.mcp.json",
        "sub/.envrc",
        "sub/.ringfence.json",
        "sub/.srt-settings.json",
        "sub/.idea/workspace.xml",
        "sub/.cursor/mcp.json",
        "sub/.codex/config.toml",
        "sub/.claude/settings.local.json",
        "sub/.claude/commands/run.md",
        "sub/.claude/agents/a.md",
    ] {
        assert_protected_file("prot-other", rel);
    }
}

#[test]
fn protected_directories_refuse_new_entries() {
    let dir = TestDir::new("prot-dirs");
    for d in [
        "repo/.git/hooks",
        "proj/.vscode",
        "proj/.claude/commands",
        "proj/.idea",
    ] {
        dir.write(&format!("work/{d}/existing"), "x\n");
    }
    let mut script = String::new();
    for d in [
        "repo/.git/hooks",
        "proj/.vscode",
        "proj/.claude/commands",
        "proj/.idea",
    ] {
        script.push_str(&format!(
            "echo evil > '{p}/post-checkout'; mkdir '{p}/newdir'; ",
            p = dir.s(&format!("work/{d}"))
        ));
    }
    script.push_str("echo done");
    let out = sh(&["--allow-write", &dir.s("work")], &script);
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    for d in [
        "repo/.git/hooks",
        "proj/.vscode",
        "proj/.claude/commands",
        "proj/.idea",
    ] {
        assert!(
            !dir.join(format!("work/{d}/post-checkout")).exists(),
            "{d}: {out:#?}"
        );
        assert!(!dir.join(format!("work/{d}/newdir")).exists(), "{d}");
    }
}

#[test]
fn protected_core_hooks_path_directory() {
    let dir = TestDir::new("prot-hookspath");
    dir.write("work/repo/.git/config", "[core]\n\thooksPath = myhooks\n");
    dir.write("work/repo/myhooks/pre-commit", "original\n");
    let h = dir.s("work/repo/myhooks");
    let script = format!(
        "echo evil >> '{h}/pre-commit'; echo evil > '{h}/post-checkout'; rm -f '{h}/pre-commit'; \
         mv '{h}' '{h}.moved'; echo done"
    );
    let out = sh(&["--allow-write", &dir.s("work")], &script);
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert_eq!(dir.read("work/repo/myhooks/pre-commit"), "original\n");
    assert!(!dir.join("work/repo/myhooks/post-checkout").exists());
    assert!(!dir.join("work/repo/myhooks.moved").exists());
}

#[test]
fn renaming_parent_of_protected_entry_is_ebusy() {
    let dir = TestDir::new("prot-rename");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    dir.write("work/a/b/.bashrc", "original\n");
    dir.write("work/repo/.git/hooks/pre-commit", "hook\n");
    let w = dir.s("work");
    let probes = [
        format!("rename={w}/a,{w}/z"),
        format!("rename={w}/a/b,{w}/a/c"),
        format!("rename={w}/a/b,{w}/y"),
        format!("rename={w}/repo/.git,{w}/repo/.git2"),
        format!("rename={w}/repo,{w}/repo2"),
        format!("rename={w}/repo/.git/hooks,{w}/hooks"),
        format!("rename={w}/a/b/.bashrc,{w}/a/b/x"),
    ];
    let names: Vec<&str> = probes.iter().map(String::as_str).collect();
    let out = common::run_probe(&["--allow-write", &w], &probe, &names);
    // EBUSY from the mount points, EXDEV when moving one out of its parent mount, or
    // EACCES/EPERM where the creation guard refuses the operation first.
    let refused = [libc::EBUSY, libc::EXDEV, libc::EACCES, libc::EPERM];
    for p in &names {
        let errno = out.errno(p);
        assert!(refused.contains(&errno), "{p}: errno={errno}: {out:#?}");
    }
    // The plain case, a directory above a protected file renamed in place, is EBUSY.
    assert_eq!(out.errno(names[0]), libc::EBUSY, "{out:#?}");
    assert_eq!(dir.read("work/a/b/.bashrc"), "original\n");
    assert_eq!(dir.read("work/repo/.git/hooks/pre-commit"), "hook\n");
    for gone in ["z", "y", "a/c", "a/b/x", "repo/.git2", "repo2", "hooks"] {
        assert!(!dir.join(format!("work/{gone}")).exists(), "{gone}");
    }
}

#[test]
fn mv_of_parent_of_protected_entry_keeps_it() {
    let dir = TestDir::new("prot-mv");
    dir.write("work/a/b/.bashrc", "original\n");
    let w = dir.s("work");
    let out = sh(
        &["--allow-write", &w],
        &format!("mv '{w}/a' '{w}/z'; echo rc1=$?; mv '{w}/a/b' '{w}/a/c'; echo rc2=$?"),
    );
    assert_eq!(out.ok(), "rc1=1\nrc2=1\n", "{out:#?}");
    assert!(out.stderr.contains("Device or resource busy"), "{out:#?}");
    assert_eq!(dir.read("work/a/b/.bashrc"), "original\n");
}

#[test]
fn rm_rf_parent_of_protected_entry_keeps_it() {
    let dir = TestDir::new("prot-rmrf");
    dir.write("work/a/b/.bashrc", "original\n");
    dir.write("work/a/b/other.txt", "other\n");
    dir.write("work/repo/.git/config", "[core]\n");
    let w = dir.s("work");
    let out = sh(
        &["--allow-write", &w],
        &format!("rm -rf '{w}/a' '{w}/repo'; echo rc=$?"),
    );
    let stdout = out.ok();
    assert!(
        !stdout.contains("rc=0"),
        "rm -rf should report failure: {out:#?}"
    );
    assert_eq!(dir.read("work/a/b/.bashrc"), "original\n");
    assert_eq!(dir.read("work/repo/.git/config"), "[core]\n");
}

#[test]
fn the_settings_file_in_use_is_read_only_inside() {
    let dir = TestDir::new("settings-in-root");
    dir.mkdir("work");
    let settings = dir.join("work/policy.json");
    std::fs::write(&settings, r#"{"limits":{"pids":500}}"#).unwrap();
    let w = dir.s("work");
    let out = sh(
        &["-s", settings.to_str().unwrap(), "--allow-write", &w],
        &format!("echo '{{}}' > '{w}/policy.json'; echo rc=$?; touch '{w}/ok' && echo made"),
    );
    assert!(out.stdout.contains("made"), "{out:#?}");
    assert!(!out.stdout.contains("rc=0"), "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        r#"{"limits":{"pids":500}}"#
    );
}

/// No set-user-ID or set-group-ID file can be made in a writable root (for a root caller it
/// would be a root-owned set-user-ID program on the host): chmod, creation with such a mode and
/// O_TMPFILE are refused; ordinary modes still work.
#[test]
fn set_id_bits_cannot_be_set() {
    if !common::have("python3") {
        common::skip("python3 is not installed");
        return;
    }
    let dir = TestDir::new("setid");
    dir.write("work/prog", "#!/bin/sh\n");
    let w = dir.s("work");
    let script = format!(
        r#"import os, stat
def tryit(name, f):
    try:
        f(); print(name, "ok")
    except OSError as e:
        print(name, "errno", e.errno)
os.chdir("{w}")
tryit("chmod-suid", lambda: os.chmod("prog", 0o4755))
tryit("chmod-sgid", lambda: os.chmod("prog", 0o2755))
tryit("chmod-plain", lambda: os.chmod("prog", 0o755))
tryit("create-suid", lambda: os.close(os.open("made", os.O_CREAT | os.O_WRONLY, 0o4755)))
tryit("create-plain", lambda: os.close(os.open("plain", os.O_CREAT | os.O_WRONLY, 0o755)))
tryit("tmpfile-suid", lambda: os.close(os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o4755)))
for n in ["prog", "made", "plain"]:
    if os.path.exists(n):
        print(n, "mode", oct(stat.S_IMODE(os.stat(n).st_mode)))
"#
    );
    let out = common::run(
        common::ringfence(&["--allow-write", &w]).args(["--", "python3", "-c", &script]),
    );
    let stdout = out.ok();
    for line in [
        "chmod-suid errno 1",
        "chmod-sgid errno 1",
        "chmod-plain ok",
        "create-suid errno 1",
        "create-plain ok",
        "tmpfile-suid errno 1",
        "prog mode 0o755",
        "plain mode 0o755",
    ] {
        assert!(stdout.contains(line), "{line}: {out:#?}");
    }
    assert!(!dir.join("work/made").exists(), "{out:#?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("work/prog"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o6000, 0, "{mode:o}");
}

// ---------------------------------------------------------------------------------------------
// Writable paths behave like writable paths; refusals look like a read-only file system.
// ---------------------------------------------------------------------------------------------

/// Tries each `name:op:path[:path2]` and prints `name errno=N` (0: it worked). Ops: `create`
/// (open O_CREAT|O_WRONLY|O_TRUNC), `excl` (O_CREAT|O_EXCL), `write` (O_WRONLY, no O_CREAT),
/// `mkdir`, `symlink` (path2 -> path), `link`, `rename`, `unlink`, `chmod` (to 0600).
const ERRNO_PROBE: &str = r#"
import os, sys
for spec in sys.argv[1:]:
    name, op, *p = spec.split(":")
    try:
        if op in ("create", "excl", "write"):
            flags = {"create": os.O_CREAT | os.O_TRUNC, "excl": os.O_CREAT | os.O_EXCL, "write": 0}[op]
            fd = os.open(p[0], os.O_WRONLY | flags, 0o644)
            os.write(fd, b"sandbox\n")
            os.close(fd)
        elif op == "mkdir":
            os.mkdir(p[0])
        elif op == "symlink":
            os.symlink(p[1], p[0])
        elif op == "link":
            os.link(p[0], p[1])
        elif op == "rename":
            os.rename(p[0], p[1])
        elif op == "unlink":
            os.unlink(p[0])
        elif op == "chmod":
            os.chmod(p[0], 0o600)
        print(name, "errno=0")
    except OSError as e:
        print(name, "errno=%d" % e.errno)
"#;

fn errnos(args: &[&str], probes: &[String]) -> common::Outcome {
    let mut cmd = common::ringfence(args);
    cmd.args(["--", "python3", "-c", ERRNO_PROBE]).args(probes);
    let out = common::run(&mut cmd);
    assert_eq!(out.code(), 0, "{out:#?}");
    out
}

fn python3() -> bool {
    if common::have("python3") {
        return true;
    }
    common::skip("no python3");
    false
}

#[test]
fn refusals_look_like_a_read_only_file_system() {
    if !python3() {
        return;
    }
    let dir = TestDir::new("erofs-everywhere");
    dir.write("work/locked/file.txt", "original\n");
    dir.write("work/hidden/file.txt", "secret\n");
    dir.write("work/hidden.txt", "secret\n");
    dir.write("ro/file.txt", "original\n");
    let (w, ro) = (dir.s("work"), dir.s("ro"));
    let probes: Vec<String> = [
        // Outside the writable roots: the read-only host tree.
        "etc_create:create:/etc/rf-fs-test",
        "etc_mkdir:mkdir:/etc/rf-fs-test",
        &format!("ro_create:create:{ro}/new"),
        &format!("ro_write:write:{ro}/file.txt"),
        &format!("ro_mkdir:mkdir:{ro}/d"),
        &format!("ro_unlink:unlink:{ro}/file.txt"),
        &format!("ro_symlink:symlink:{ro}/l:x"),
        &format!("ro_rename:rename:{ro}/file.txt:{ro}/moved"),
        // A denyWrite directory inside a writable root (a read-only bind).
        &format!("deny_create:create:{w}/locked/new"),
        &format!("deny_write:write:{w}/locked/file.txt"),
        &format!("deny_mkdir:mkdir:{w}/locked/d"),
        &format!("deny_unlink:unlink:{w}/locked/file.txt"),
        // A denyWrite path that does not exist yet (the creation guard).
        &format!("notyet_create:create:{w}/notyet"),
        &format!("notyet_mkdir:mkdir:{w}/notyet"),
        &format!("notyet_symlink:symlink:{w}/notyet:x"),
        // denyRead masks inside a writable root (an empty read-only directory or file).
        &format!("hidden_dir_create:create:{w}/hidden/new"),
        &format!("hidden_dir_mkdir:mkdir:{w}/hidden/d"),
        &format!("hidden_file_write:write:{w}/hidden.txt"),
        &format!("hidden_file_create:create:{w}/hidden.txt"),
        // A protected name: its directory is writable, only the name is refused.
        &format!("protected_create:create:{w}/.bashrc"),
        &format!("protected_mkdir:mkdir:{w}/.vscode"),
        // And what is allowed still works.
        &format!("allowed_create:create:{w}/ok"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args = [
        "--allow-write",
        &w,
        "--deny-write",
        &dir.s("work/locked"),
        "--deny-write",
        &dir.s("work/notyet"),
        "--deny-read",
        &dir.s("work/hidden"),
        "--deny-read",
        &dir.s("work/hidden.txt"),
    ];
    let out = errnos(&args, &probes);
    for p in &probes {
        let name = p.split(':').next().unwrap();
        let want = if name.starts_with("protected_") {
            libc::EACCES
        } else if name.starts_with("allowed_") {
            0
        } else {
            libc::EROFS
        };
        assert_eq!(out.errno(name), want, "{name}: {out:#?}");
    }
    assert_eq!(dir.read("work/locked/file.txt"), "original\n");
    assert_eq!(dir.read("ro/file.txt"), "original\n");
    assert_eq!(dir.read("work/hidden.txt"), "secret\n");
    for gone in [
        "work/notyet",
        "work/notyet2",
        "work/.bashrc",
        "ro/new",
        "ro/l",
    ] {
        assert!(
            dir.join(gone).symlink_metadata().is_err(),
            "{gone}: {out:#?}"
        );
    }

    // With nothing writable (no creation guard at all) the answer is the same.
    let out = errnos(&[], &probes[..8]);
    for p in &probes[..8] {
        let name = p.split(':').next().unwrap();
        assert_eq!(out.errno(name), libc::EROFS, "{name}: {out:#?}");
    }
}

/// `--name` for a run whose record a test reads.
fn run_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("fs-{tag}-{}-{nanos}", std::process::id())
}

fn run_record(name: &str) -> String {
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/state"),
    };
    let path = base.join(format!("ringfence/runs/{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_missing_writable_directory_is_created_before_the_run() {
    let dir = TestDir::new("create-dir");
    dir.mkdir("home");
    let claude = dir.s("home/.claude");
    let name = run_name("created");
    let out = sh(
        &["--name", &name, "--allow-write", &claude],
        &format!(
            "mkdir -p '{claude}/projects/p' && echo hi > '{claude}/projects/p/log' && \
             echo made; echo x > '{claude}/settings.json' || echo protected-refused"
        ),
    );
    assert_eq!(out.ok(), "made\nprotected-refused\n", "{out:#?}");
    assert_eq!(dir.read("home/.claude/projects/p/log"), "hi\n");
    assert!(!dir.join("home/.claude/settings.json").exists());
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir.join("home/.claude")).unwrap();
    assert!(meta.is_dir());
    let home = std::env::var_os("HOME").unwrap();
    if dir.path.starts_with(&home) {
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    }
    let record = run_record(&name);
    assert!(
        record.contains(&format!("\"created\":[\"{claude}\"]")),
        "{record}"
    );

    // Only the last name is made, in a directory that exists; a symlink there is not followed.
    let deep = dir.s("home/a/b");
    let out = sh(&["--allow-write", &deep], "echo ran");
    assert_eq!(out.ok(), "ran\n", "{out:#?}");
    assert!(!dir.join("home/a").exists());
    dir.mkdir("elsewhere");
    std::os::unix::fs::symlink(dir.join("elsewhere/target"), dir.join("home/dangling")).unwrap();
    let out = sh(
        &["--allow-write", &dir.s("home/dangling")],
        &format!("echo x > '{}' || echo refused", dir.s("home/dangling")),
    );
    assert_eq!(out.ok(), "refused\n", "{out:#?}");
    assert!(!dir.join("elsewhere/target").exists(), "{out:#?}");
}

#[test]
fn allow_write_of_a_protected_name_keeps_it_read_only() {
    let dir = TestDir::new("allow-protected");
    dir.write("home/.bashrc", "original\n");
    dir.mkdir("home");
    let out = sh(
        &[
            "--allow-write",
            &dir.s("home/.bashrc"),
            "--allow-write",
            &dir.s("home/.vscode"),
        ],
        &format!(
            "echo pwned >> '{h}/.bashrc' || echo refused; mkdir '{h}/.vscode' || echo refused",
            h = dir.s("home")
        ),
    );
    assert_eq!(out.ok(), "refused\nrefused\n", "{out:#?}");
    assert_eq!(dir.read("home/.bashrc"), "original\n");
    assert!(!dir.join("home/.vscode").exists());
}

#[test]
fn a_writable_single_file_is_saved_by_rename_and_nothing_else_in_its_directory() {
    if !python3() {
        return;
    }
    let dir = TestDir::new("single-file");
    dir.write("home/.claude.json", "v0\n");
    dir.write("home/other", "keep\n");
    let h = dir.s("home");
    let f = dir.s("home/.claude.json");
    let wfa = "/usr/lib/node_modules/npm/node_modules/write-file-atomic";
    let node = if common::have("node") && std::path::Path::new(wfa).is_dir() {
        // npm's own write-file-atomic: `file.<hash>` written, chown and chmod by path to the
        // old file's owner and mode, then renamed over the file.
        format!(
            "node -e 'require(\"{wfa}\").sync(process.argv[1], \"node\\n\")' '{f}' && cat '{f}';"
        )
    } else if common::have("node") {
        common::skip("no npm's write-file-atomic: its pattern is tried by hand");
        format!(
            "node -e 'const fs=require(\"fs\"); const t=process.argv[1]+\".\"+process.pid.toString(16); \
             fs.writeFileSync(t, \"node\\n\"); fs.renameSync(t, process.argv[1])' '{f}' && cat '{f}';"
        )
    } else {
        common::skip("no node: its write-file-atomic pattern is not tried");
        format!("echo node > '{f}'; cat '{f}';")
    };
    let script = format!(
        "cd '{h}' && {node} \
         python3 -c 'import os, tempfile, sys; t = tempfile.NamedTemporaryFile(\"w\", dir=\".\", delete=False); \
         t.write(\"python\\n\"); t.close(); os.replace(t.name, sys.argv[1])' .claude.json && cat .claude.json && \
         sed -i s/python/sed/ .claude.json && cat .claude.json && \
         echo appended >> .claude.json && cat .claude.json"
    );
    let out = sh(&["--allow-write", &f], &script);
    assert_eq!(out.ok(), "node\npython\nsed\nsed\nappended\n", "{out:#?}");
    assert_eq!(dir.read("home/.claude.json"), "sed\nappended\n");

    // Nothing else in that directory: other names, renames onto other names, other kinds.
    let probes: Vec<String> = [
        format!("other_create:create:{h}/new"),
        format!("other_excl:excl:{h}/new"),
        format!("other_write:create:{h}/other"),
        format!("temp_made:excl:{h}/.claude.json.tmp1"),
        format!("temp_onto_other:rename:{h}/.claude.json.tmp1:{h}/other"),
        format!("temp_onto_new:rename:{h}/.claude.json.tmp1:{h}/fresh"),
        format!("other_onto_file:rename:{h}/other:{h}/.claude.json"),
        format!("file_away:rename:{h}/.claude.json:{h}/stolen"),
        format!("temp_mkdir:mkdir:{h}/.claude.json.d"),
        format!("temp_symlink:symlink:{h}/.claude.json.l:/etc/passwd"),
        format!("temp_link:link:{h}/other:{h}/.claude.json.h"),
        format!("temp_chmod:chmod:{h}/.claude.json.tmp1"),
        format!("other_chmod:chmod:{h}/other"),
        format!("other_unlink:unlink:{h}/other"),
        format!("temp2_made:create:{h}/.claude.json.tmp2"),
        format!("temp2_unlink:unlink:{h}/.claude.json.tmp2"),
        format!("file_unlink:unlink:{h}/.claude.json"),
        format!("hostlink_onto_file:rename:{h}/.claude.json.hostlink:{h}/.claude.json"),
        format!("temp_onto_file:rename:{h}/.claude.json.tmp1:{h}/.claude.json"),
    ]
    .to_vec();
    // A symlink that was there already under a temporary-looking name is not put in place.
    std::os::unix::fs::symlink("/etc/passwd", dir.join("home/.claude.json.hostlink")).unwrap();
    let out = errnos(&["--allow-write", &f], &probes);
    for p in &probes {
        let name = p.split(':').next().unwrap();
        let want = if matches!(
            name,
            "temp_made"
                | "temp_chmod"
                | "temp2_made"
                | "temp2_unlink"
                | "file_unlink"
                | "temp_onto_file"
        ) {
            0
        } else {
            libc::EROFS
        };
        assert_eq!(out.errno(name), want, "{name}: {out:#?}");
    }
    assert_eq!(dir.read("home/other"), "keep\n");
    assert_eq!(dir.read("home/.claude.json"), "sandbox\n");
    for gone in [
        "new",
        "fresh",
        "stolen",
        ".claude.json.d",
        ".claude.json.l",
        ".claude.json.h",
        ".claude.json.tmp1",
        ".claude.json.tmp2",
    ] {
        assert!(
            dir.join("home").join(gone).symlink_metadata().is_err(),
            "{gone}: {out:#?}"
        );
    }
}

#[test]
fn a_missing_single_file_can_be_created() {
    let dir = TestDir::new("single-file-new");
    dir.mkdir("home");
    let f = dir.s("home/.claude.json");
    let out = sh(
        &["--allow-write", &f],
        &format!(
            "echo created > '{f}' && cat '{f}'; echo x > '{}' || echo refused",
            dir.s("home/x.json")
        ),
    );
    assert_eq!(out.ok(), "created\nrefused\n", "{out:#?}");
    assert_eq!(dir.read("home/.claude.json"), "created\n");
    assert!(!dir.join("home/x.json").exists());
}

#[test]
fn pid1s_writable_handle_on_a_single_files_directory_is_out_of_reach() {
    // PID 1 holds a writable handle on the directory of a writable single file, and the guard
    // resolves paths in PID 1's context: naming PID 1's descriptors through /proc must not
    // reach it, for creating, renaming or linking.
    if !python3() {
        return;
    }
    let dir = TestDir::new("single-file-handle");
    dir.write("home/.claude.json", "v0\n");
    dir.write("home/victim", "original\n");
    dir.mkdir("work");
    let w = dir.s("work");
    let script = format!(
        r#"
import os
made = 0
for n in range(64):
    base = "/proc/1/fd/%d" % n
    for op in (
        lambda: os.close(os.open(base + "/pwned", os.O_CREAT | os.O_WRONLY, 0o644)),
        lambda: os.close(os.open(base + "/victim", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)),
        lambda: os.mkdir(base + "/pwned-dir"),
        lambda: os.symlink("/x", base + "/pwned-link"),
        lambda: os.rename("{w}/t", base + "/pwned-moved"),
        lambda: os.link(base + "/victim", "{w}/linked"),
        lambda: os.rename(base + "/victim", "{w}/moved"),
        lambda: os.chmod(base + "/victim", 0o666),
        lambda: os.unlink(base + "/victim"),
    ):
        try:
            open("{w}/t", "w").close()
            op()
            made += 1
        except OSError:
            pass
print("made", made)
"#
    );
    let out = common::run(
        common::ringfence(&[
            "--allow-write",
            &dir.s("home/.claude.json"),
            "--allow-write",
            &w,
        ])
        .args(["--", "python3", "-c", &script]),
    );
    // Some calls do succeed: PID 1 holds the caller's own directories while it answers (a
    // rename's first parent names the second), which reach nothing the caller cannot reach.
    assert!(out.ok().starts_with("made "), "{out:#?}");
    assert_eq!(dir.read("home/victim"), "original\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("home/victim"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o777, 0o666, "{out:#?}");
    for gone in [
        "home/pwned",
        "home/pwned-dir",
        "home/pwned-link",
        "home/pwned-moved",
        "work/linked",
        "work/moved",
    ] {
        assert!(
            dir.join(gone).symlink_metadata().is_err(),
            "{gone}: {out:#?}"
        );
    }
    let home: Vec<_> = std::fs::read_dir(dir.join("home"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(home.len(), 2, "{home:?}: {out:#?}");
}

/// The home directory's credential stores are hidden with no settings at all; `allowRead`
/// re-opens one of them; `explain` lists them.
#[test]
fn credential_stores_are_hidden_by_default() {
    let dir = TestDir::new("stores");
    let home = dir.mkdir("home");
    dir.write("home/.ssh/id_ed25519", "SSH-SECRET\n");
    dir.write(
        "home/.npmrc",
        "//registry.npmjs.org/:_authToken=NPM-SECRET\n",
    );
    dir.write("home/.kube/config", "KUBE-SECRET\n");
    dir.write("home/.docker/config.json", "DOCKER-SECRET\n");
    dir.write("home/.config/gh/hosts.yml", "GH-SECRET\n");
    dir.write("home/.git-credentials", "GIT-SECRET\n");
    dir.write("home/notes.txt", "plain\n");
    let script = "cat ~/.ssh/id_ed25519 ~/.npmrc ~/.kube/config ~/.docker/config.json \
                  ~/.config/gh/hosts.yml ~/.git-credentials ~/notes.txt 2>/dev/null; \
                  test -d ~/.ssh && echo ssh-dir-present";
    let run = |args: &[&str]| {
        common::run(
            common::ringfence(args)
                .env("HOME", &home)
                .args(["--", "/bin/sh", "-c", script]),
        )
    };
    let out = run(&[]);
    assert!(out.stdout.contains("plain"), "{out:#?}");
    for secret in ["SSH", "NPM", "KUBE", "DOCKER", "GH", "GIT"] {
        assert!(
            !out.stdout.contains(&format!("{secret}-SECRET")),
            "{secret}: {out:#?}"
        );
    }
    // Hidden, not gone: tools that expect the file or directory still find one (empty).
    assert!(out.stdout.contains("ssh-dir-present"), "{out:#?}");

    let settings = dir.settings(r#"{"filesystem": {"allowRead": ["~/.npmrc"]}}"#);
    let out = run(&["-s", &settings]);
    assert!(out.stdout.contains("NPM-SECRET"), "{out:#?}");
    assert!(!out.stdout.contains("SSH-SECRET"), "{out:#?}");

    let out = common::run(
        std::process::Command::new(common::bin())
            .args(["explain"])
            .env("HOME", &home)
            .current_dir("/"),
    );
    let ssh = format!("{}/.ssh", home.display());
    assert!(out.stdout.contains("defaultDenyRead:"), "{out:#?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(&ssh) && l.contains("built-in")),
        "{out:#?}"
    );
}
