//! Finding protected entries (shell rc files, `.git/hooks`, editor and agent config, policy files)
//! at any depth inside the writable roots, before the sandbox starts. Nothing is created in the
//! user's tree: entries that exist are mounted read-only, and their ancestors pinned.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The names to look for. Files and directories alike are protected by their final name; nested
/// entries by (parent name, name).
pub struct ProtectedNames<'a> {
    pub names: &'a [&'a str],
    pub nested: &'a [(&'a str, &'a str)],
}

#[derive(Debug, Default)]
pub struct Found {
    pub paths: Vec<PathBuf>,
    /// Protected paths that do not exist yet (a core.hooksPath directory not yet created).
    pub missing: Vec<PathBuf>,
    pub dirs_scanned: usize,
    pub entries_scanned: usize,
}

#[derive(Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Walks `root` without following symlinks and returns every protected entry in it.
/// `core.hooksPath` of each repository found is protected too.
/// An unreadable directory is an error: a tree that cannot be scanned cannot be protected.
pub fn scan(root: &Path, names: &ProtectedNames<'_>, found: &mut Found) -> Result<(), WalkError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        found.dirs_scanned += 1;
        let rd = fs::read_dir(&dir).map_err(|source| WalkError {
            path: dir.clone(),
            source,
        })?;
        let parent_name = dir.file_name().unwrap_or_default();
        for entry in rd {
            let entry = entry.map_err(|source| WalkError {
                path: dir.clone(),
                source,
            })?;
            found.entries_scanned += 1;
            let name = entry.file_name();
            let ty = entry.file_type().map_err(|source| WalkError {
                path: entry.path(),
                source,
            })?;
            if is_protected(parent_name, &name, names) {
                found.paths.push(entry.path());
                // Nothing inside a read-only protected directory needs a mount of its own.
                continue;
            }
            if name == ".git" && ty.is_dir() {
                match hooks_path(&dir, &entry.path()) {
                    Some((hooks, true)) => found.paths.push(hooks),
                    Some((hooks, false)) => found.missing.push(hooks),
                    None => {}
                }
            }
            if ty.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

fn is_protected(parent: &OsStr, name: &OsStr, names: &ProtectedNames<'_>) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    if names.names.contains(&name) {
        return true;
    }
    let parent = parent.to_str().unwrap_or("");
    names.nested.iter().any(|(p, n)| *p == parent && *n == name)
}

/// Reads `core.hooksPath` from a repository's config; returns the directory it names, resolved
/// against the work tree, and whether it exists.
fn hooks_path(worktree: &Path, git_dir: &Path) -> Option<(PathBuf, bool)> {
    let text = fs::read_to_string(git_dir.join("config")).ok()?;
    let value = core_hooks_path(&text)?;
    let p = if let Some(rest) = value.strip_prefix("~/") {
        PathBuf::from(std::env::var_os("HOME")?).join(rest)
    } else {
        worktree.join(value)
    };
    let exists = p.symlink_metadata().is_ok();
    Some((p, exists))
}

/// The value of `hooksPath` in the `[core]` section of a git config file.
pub fn core_hooks_path(config: &str) -> Option<String> {
    let mut in_core = false;
    let mut result = None;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let section = line.trim_start_matches('[').split([']', ' ', '"']).next();
            in_core = section.is_some_and(|s| s.eq_ignore_ascii_case("core"));
            continue;
        }
        if !in_core {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("hookspath") {
                let v = v.trim().trim_matches('"').to_string();
                if !v.is_empty() {
                    result = Some(v);
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const NAMES: ProtectedNames<'static> = ProtectedNames {
        names: &[".bashrc", ".vscode"],
        nested: &[(".git", "hooks"), (".git", "config")],
    };

    #[test]
    fn finds_protected_entries_at_any_depth() {
        let base = std::env::temp_dir().join(format!("rf-protect-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let deep = base.join("a/b/c/d/e");
        fs::create_dir_all(deep.join(".git/hooks")).unwrap();
        fs::write(deep.join(".git/config"), "[core]\n\thooksPath = myhooks\n").unwrap();
        fs::create_dir_all(deep.join("myhooks")).unwrap();
        fs::write(deep.join(".bashrc"), "").unwrap();
        fs::create_dir_all(base.join(".vscode/inner")).unwrap();
        std::os::unix::fs::symlink("nowhere", base.join("a/.bashrc")).unwrap();
        let mut found = Found::default();
        scan(&base, &NAMES, &mut found).unwrap();
        let mut got: Vec<_> = found
            .paths
            .iter()
            .map(|p| p.strip_prefix(&base).unwrap().to_path_buf())
            .collect();
        got.sort();
        let want: Vec<PathBuf> = [
            ".vscode",
            "a/.bashrc",
            "a/b/c/d/e/.bashrc",
            "a/b/c/d/e/.git/config",
            "a/b/c/d/e/.git/hooks",
            "a/b/c/d/e/myhooks",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn parses_core_hooks_path() {
        assert_eq!(
            core_hooks_path("[user]\nname=x\n[core]\n  bare = false\n  hooksPath = \"h d\"\n"),
            Some("h d".into())
        );
        assert_eq!(core_hooks_path("[other]\nhooksPath = x\n"), None);
        assert_eq!(core_hooks_path("[CORE]\nHOOKSPATH=y\n"), Some("y".into()));
    }
}
