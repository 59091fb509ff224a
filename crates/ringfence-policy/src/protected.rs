//! The protected-name rule: which entries inside a writable root are never writable (shell rc
//! files, `.git/hooks`, editor and agent configuration), decided by name alone. The mount scan,
//! the creation guard, overlay apply and the shell analyser all ask [`ProtectedNames`]; nothing
//! else compares these names. Pure: components in, a match out.

use std::path::{Component, Path};

use crate::{GIT_INTERNAL_NAMES, PROTECTED_DIR_NAMES, PROTECTED_FILE_NAMES, PROTECTED_NESTED};

/// The protected names in force for one policy (`allowGitConfig` releases a repository's
/// `config` and `config.worktree`). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtectedNames {
    allow_git_config: bool,
}

/// Why an entry is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Protected wherever it is, by its own name (`.bashrc`, `.vscode`).
    Name(&'static str),
    /// Protected as the child of a directory of that name (`.claude/settings.json`).
    Nested {
        parent: &'static str,
        child: &'static str,
    },
    /// Protected anywhere inside a `.git` directory, at any depth (`hooks`, `config`).
    GitInternal(&'static str),
}

impl Protection {
    /// How a report names the rule: `.bashrc`, `.claude/settings.json`, `.git/.../hooks`.
    pub fn label(&self) -> String {
        match self {
            Protection::Name(n) => (*n).to_string(),
            Protection::Nested { parent, child } => format!("{parent}/{child}"),
            Protection::GitInternal(n) => format!(".git/.../{n}"),
        }
    }

    /// Whether the rule is about what git runs (a `.git` child or a name inside `.git`).
    pub fn is_git(&self) -> bool {
        matches!(
            self,
            Protection::GitInternal(_) | Protection::Nested { parent: ".git", .. }
        )
    }
}

/// Whether two file names are the same protected name. File names are compared as a
/// case-insensitive file system would (vfat, or an ext4 directory with `+F`): ASCII case and
/// the two non-ASCII letters that fold to ASCII ones (KELVIN SIGN to `k`, LONG S to `s`). A
/// Linux file system that tells cases apart then protects a few more names than needed, never
/// fewer.
pub fn same_name(name: &str, protected: &str) -> bool {
    if name.is_ascii() {
        return name.eq_ignore_ascii_case(protected);
    }
    let mut folded = name.chars().flat_map(|c| match c {
        '\u{212A}' => 'k'.to_lowercase(),
        '\u{017F}' => 's'.to_lowercase(),
        c => c.to_lowercase(),
    });
    let mut want = protected.chars().map(|c| c.to_ascii_lowercase());
    loop {
        match (folded.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether `name` is `.git` (as [`same_name`] compares).
pub fn is_git_dir(name: &str) -> bool {
    same_name(name, ".git")
}

fn find(list: &[&'static str], name: &str) -> Option<&'static str> {
    list.iter().copied().find(|p| same_name(name, p))
}

impl ProtectedNames {
    pub const fn new(allow_git_config: bool) -> ProtectedNames {
        ProtectedNames { allow_git_config }
    }

    pub fn allow_git_config(&self) -> bool {
        self.allow_git_config
    }

    fn released(&self, name: &str) -> bool {
        self.allow_git_config && matches!(name, "config" | "config.worktree")
    }

    /// Names protected by themselves, wherever they are.
    pub fn names(&self) -> Vec<&'static str> {
        PROTECTED_FILE_NAMES
            .iter()
            .chain(PROTECTED_DIR_NAMES)
            .copied()
            .collect()
    }

    /// `(parent, child)` pairs in force.
    pub fn nested(&self) -> Vec<(&'static str, &'static str)> {
        PROTECTED_NESTED
            .iter()
            .copied()
            .filter(|&(p, n)| !(p == ".git" && self.released(n)))
            .collect()
    }

    /// Names protected anywhere inside a `.git` directory, in force.
    pub fn git_internal(&self) -> Vec<&'static str> {
        GIT_INTERNAL_NAMES
            .iter()
            .copied()
            .filter(|n| !self.released(n))
            .collect()
    }

    /// The rule protecting the entry `name` of a directory named `parent`; `in_git` says
    /// whether that directory is a `.git` directory or lies inside one.
    pub fn entry(&self, parent: &str, in_git: bool, name: &str) -> Option<Protection> {
        if let Some(n) =
            find(PROTECTED_FILE_NAMES, name).or_else(|| find(PROTECTED_DIR_NAMES, name))
        {
            return Some(Protection::Name(n));
        }
        if in_git {
            if let Some(n) = find(GIT_INTERNAL_NAMES, name).filter(|n| !self.released(n)) {
                return Some(Protection::GitInternal(n));
            }
        }
        PROTECTED_NESTED
            .iter()
            .copied()
            .filter(|&(p, c)| !(p == ".git" && self.released(c)))
            .find(|&(p, c)| same_name(parent, p) && same_name(name, c))
            .map(|(parent, child)| Protection::Nested { parent, child })
    }

    /// The first rule protecting a component of `components` (a path relative to a writable
    /// root, one name each): the path is a protected entry or lies inside one.
    pub fn path<'a>(&self, components: impl IntoIterator<Item = &'a str>) -> Option<Protection> {
        let mut parent = "";
        let mut in_git = false;
        for name in components {
            if let Some(p) = self.entry(parent, in_git, name) {
                return Some(p);
            }
            in_git |= is_git_dir(name);
            parent = name;
        }
        None
    }

    /// [`ProtectedNames::path`] for a `Path`; `.` and `..` components and non-UTF-8 names
    /// protect nothing (the callers resolve paths first).
    pub fn protects_path(&self, rel: &Path) -> Option<Protection> {
        let names: Vec<&str> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_str().unwrap_or("")),
                _ => None,
            })
            .collect();
        self.path(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(p: &ProtectedNames, path: &str) -> Option<String> {
        p.protects_path(Path::new(path)).map(|m| m.label())
    }

    #[test]
    fn names_at_any_depth_and_inside_protected_directories() {
        let p = ProtectedNames::new(false);
        assert_eq!(label(&p, ".bashrc").as_deref(), Some(".bashrc"));
        assert_eq!(label(&p, "a/b/c/d/e/.bashrc").as_deref(), Some(".bashrc"));
        assert_eq!(
            label(&p, "a/.vscode/tasks.json").as_deref(),
            Some(".vscode")
        );
        assert_eq!(label(&p, "a/.bashrc.d/x"), None);
        assert_eq!(label(&p, "a/x.bashrc"), None);
        assert_eq!(label(&p, "src/main.rs"), None);
        assert_eq!(
            label(&p, "p/.claude/settings.json").as_deref(),
            Some(".claude/settings.json")
        );
        assert_eq!(label(&p, "p/.claude/other.json"), None);
        assert_eq!(label(&p, "p/settings.json"), None);
    }

    #[test]
    fn git_internal_names_at_depth() {
        let p = ProtectedNames::new(false);
        assert_eq!(label(&p, "r/.git/hooks").as_deref(), Some(".git/.../hooks"));
        assert_eq!(
            label(&p, "r/.git/hooks/pre-commit").as_deref(),
            Some(".git/.../hooks")
        );
        assert_eq!(
            label(&p, "r/.git/modules/sub/hooks/post-checkout").as_deref(),
            Some(".git/.../hooks")
        );
        assert_eq!(
            label(&p, "r/.git/worktrees/w/commondir").as_deref(),
            Some(".git/.../commondir")
        );
        assert_eq!(
            label(&p, "r/.git/config").as_deref(),
            Some(".git/.../config")
        );
        assert_eq!(label(&p, "r/.git/objects/ab/cdef"), None);
        // Outside a .git directory these are ordinary names.
        assert_eq!(label(&p, "r/hooks/pre-commit"), None);
        assert_eq!(label(&p, "r/config"), None);
    }

    #[test]
    fn allow_git_config_releases_config_only() {
        let p = ProtectedNames::new(true);
        assert_eq!(label(&p, "r/.git/config"), None);
        assert_eq!(label(&p, "r/.git/modules/m/config.worktree"), None);
        assert!(label(&p, "r/.git/hooks").is_some());
        assert!(!p.nested().contains(&(".git", "config")));
        assert!(!p.git_internal().contains(&"config"));
        assert!(ProtectedNames::new(false)
            .git_internal()
            .contains(&"config"));
    }

    #[test]
    fn case_and_folding_letters_protect_too() {
        let p = ProtectedNames::new(false);
        assert_eq!(label(&p, ".BASHRC").as_deref(), Some(".bashrc"));
        assert_eq!(
            label(&p, "r/.GIT/Hooks/x").as_deref(),
            Some(".git/.../hooks")
        );
        // KELVIN SIGN folds to `k` on a case-insensitive file system.
        assert_eq!(
            label(&p, "r/.git/hoo\u{212A}s").as_deref(),
            Some(".git/.../hooks")
        );
        assert_eq!(label(&p, "\u{017F}rc/.zshrc").as_deref(), Some(".zshrc"));
        assert_eq!(label(&p, ".bashrc\u{0301}"), None);
    }

    #[test]
    fn git_rules_say_so() {
        let p = ProtectedNames::new(false);
        assert!(p.entry(".git", true, "hooks").is_some_and(|m| m.is_git()));
        assert!(p.entry("x", false, ".bashrc").is_some_and(|m| !m.is_git()));
    }
}
