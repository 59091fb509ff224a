//! Creating protected entries that do not exist yet, from inside a real sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sh, TestDir};

/// Tries to create `rel` (and its missing parents) inside the writable root and checks on the
/// host that nothing appeared.
fn assert_cannot_create(name: &str, rel: &str) {
    let dir = TestDir::new(name);
    dir.mkdir("work/sub");
    let f = dir.s(&format!("work/{rel}"));
    let script = format!("mkdir -p \"$(dirname '{f}')\"; echo evil > '{f}'; echo done",);
    let out = sh(&["--allow-write", &dir.s("work")], &script);
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert!(
        !dir.join(format!("work/{rel}")).exists(),
        "{rel} was created: {out:#?}"
    );
}

#[test]
fn new_bashrc_cannot_be_created() {
    assert_cannot_create("create-bashrc", "sub/deep/.bashrc");
}

#[test]
fn new_git_hook_cannot_be_created() {
    assert_cannot_create("create-hook", "repo/.git/hooks/pre-commit");
}

#[test]
fn new_git_config_cannot_be_written_directly() {
    // In a `.git` the sandbox made, an open with O_CREAT of `config` gets an empty file that
    // stays empty (git writes it by a checked rename); nothing reaches it this way.
    let dir = TestDir::new("create-gitconfig");
    dir.mkdir("work");
    let w = dir.s("work");
    let out = sh(
        &["--allow-write", &w],
        &format!("mkdir -p '{w}/repo/.git'; echo evil > '{w}/repo/.git/config'; echo evil >> '{w}/repo/.git/config'; echo done"),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    let config = std::fs::read_to_string(dir.join("work/repo/.git/config")).unwrap_or_default();
    assert_eq!(config, "", "{out:#?}");
}

#[test]
fn new_vscode_settings_cannot_be_created() {
    assert_cannot_create("create-vscode", "proj/.vscode/settings.json");
}

#[test]
fn new_claude_settings_cannot_be_created() {
    assert_cannot_create("create-claude", "proj/.claude/settings.json");
}

#[test]
fn new_rc_and_agent_files_cannot_be_created() {
    for rel in [
        ".profile",
        ".zshrc",
        ".gitconfig",
        "sub/.mcp.json",
        "sub/.envrc",
        "sub/.ringfence.json",
        "sub/.cursor/mcp.json",
        "sub/.claude/commands/x.md",
    ] {
        assert_cannot_create("create-other", rel);
    }
}

#[test]
fn mv_copy_of_protected_parent_does_not_plant_a_new_bashrc() {
    // Moving a protected entry's parent across mounts makes mv fall back to copying, which
    // would write a fresh .bashrc at the destination.
    let dir = TestDir::new("create-mv-copy");
    dir.write("work/a/b/.bashrc", "original\n");
    let w = dir.s("work");
    let out = sh(
        &["--allow-write", &w],
        &format!("mv '{w}/a/b' '{w}/y'; echo done"),
    );
    assert_eq!(out.ok(), "done\n", "{out:#?}");
    assert!(!dir.join("work/y/.bashrc").exists(), "{out:#?}");
}
