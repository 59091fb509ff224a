//! Filesystem rules: turning the paths written in settings (`~`, relative, globs) into absolute,
//! lexically normalised paths. Globs are expanded completely against the filesystem or not at all.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

use crate::settings::PathEntry;
use crate::{Error, Layer};

/// One filesystem rule after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// Absolute, lexically normalised path (a glob is already expanded into one rule per match).
    pub path: PathBuf,
    /// The entry as written in the settings file or on the command line.
    pub pattern: String,
    /// The layer the rule comes from.
    pub layer: Layer,
    /// The settings file path, or the command-line option (e.g. "--allow-write").
    pub origin: String,
}

/// Resolves `..` and `.` lexically, without following symlinks; `..` at the root stays at the root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(if path.is_absolute() { "/" } else { "." });
    }
    out
}

/// Makes a path as written absolute: `~` and `~/x` are under `home`, relative paths under
/// `cwd`; the result is normalised. `~user` is not supported.
pub fn resolve_path(written: &str, cwd: &Path, home: &Path) -> Result<PathBuf, String> {
    let joined = if written == "~" {
        home.to_path_buf()
    } else if let Some(rest) = written.strip_prefix("~/") {
        home.join(rest)
    } else if written.starts_with('~') {
        return Err(format!(
            "\"{written}\": only \"~\" and \"~/...\" are supported; write the full path"
        ));
    } else {
        cwd.join(written)
    };
    if !joined.is_absolute() {
        return Err(format!(
            "\"{written}\" does not resolve to an absolute path"
        ));
    }
    Ok(normalize(&joined))
}

/// Whether `path` is `ancestor` or lies below it (component-wise, after normalisation).
pub fn is_within(path: &Path, ancestor: &Path) -> bool {
    path.starts_with(ancestor)
}

/// Whether a written path contains glob syntax.
pub fn is_glob(written: &str) -> bool {
    written.contains(['*', '?', '['])
}

/// Why a glob could not be expanded.
#[derive(Debug)]
pub enum GlobFailure {
    /// The pattern itself is malformed.
    Pattern(String),
    /// A directory on the way could not be read or searched.
    Unreadable { dir: PathBuf, source: io::Error },
}

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Expands an absolute glob. `*`, `?` and `[...]` match within one path component (including
/// names starting with a dot); a `**` component matches zero or more directories, and a final
/// `**` everything below. Symlinked directories are not descended into by `**`. Any directory
/// that cannot be read is an error: a partial expansion is never returned.
pub fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, GlobFailure> {
    let mut parts = Vec::new();
    for c in pattern.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => {
                let s = s.to_str().ok_or_else(|| {
                    GlobFailure::Pattern("a glob must be valid UTF-8".to_string())
                })?;
                if s.contains("**") && s != "**" {
                    return Err(GlobFailure::Pattern(format!(
                        "\"{s}\": ** must be a whole path component, as in \"a/**/b\""
                    )));
                }
                parts.push(s.to_string());
            }
            _ => {
                return Err(GlobFailure::Pattern(
                    "a glob must be absolute and normalised".to_string(),
                ))
            }
        }
    }
    let mut compiled = Vec::with_capacity(parts.len());
    for s in &parts {
        compiled.push(if s == "**" {
            Part::AnyDepth
        } else if is_glob(s) {
            Part::Glob(Pattern::new(s).map_err(|e| GlobFailure::Pattern(format!("\"{s}\": {e}")))?)
        } else {
            Part::Literal(s.clone())
        });
    }
    let mut out = Vec::new();
    walk(Path::new("/"), &compiled, &mut out)?;
    out.sort();
    out.dedup();
    Ok(out)
}

enum Part {
    Literal(String),
    Glob(Pattern),
    AnyDepth,
}

fn unreadable(dir: &Path) -> impl FnOnce(io::Error) -> GlobFailure + '_ {
    move |source| GlobFailure::Unreadable {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Lists a directory's entries as (name, path, is a real directory).
fn list(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, GlobFailure> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable(dir))? {
        let entry = entry.map_err(unreadable(dir))?;
        let is_dir = entry.file_type().map_err(unreadable(dir))?.is_dir();
        // Names that are not UTF-8 cannot match a UTF-8 pattern component except via `**`.
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push((name, entry.path(), is_dir));
    }
    Ok(entries)
}

/// Whether `path` exists (without following a final symlink); a failure other than "not
/// found" means the parent could not be searched, which is an error.
fn exists(path: &Path) -> Result<bool, GlobFailure> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(20) => Ok(false), // ENOTDIR: a file on the way
        Err(e) => Err(GlobFailure::Unreadable {
            dir: path.parent().unwrap_or(path).to_path_buf(),
            source: e,
        }),
    }
}

fn is_dir(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_dir())
}

fn walk(base: &Path, parts: &[Part], out: &mut Vec<PathBuf>) -> Result<(), GlobFailure> {
    let Some((first, rest)) = parts.split_first() else {
        out.push(base.to_path_buf());
        return Ok(());
    };
    match first {
        Part::Literal(name) => {
            let next = base.join(name);
            if exists(&next)? {
                walk(&next, rest, out)?;
            }
        }
        Part::Glob(pattern) => {
            if !is_dir(base) {
                return Ok(());
            }
            for (name, path, _) in list(base)? {
                if pattern.matches_with(&name, OPTIONS) {
                    walk(&path, rest, out)?;
                }
            }
        }
        Part::AnyDepth => {
            if !is_dir(base) {
                return Ok(());
            }
            if rest.is_empty() {
                // A final `**`: everything below base, not base itself.
                descend(base, &mut |p| {
                    out.push(p.to_path_buf());
                    Ok(())
                })?;
            } else {
                walk(base, rest, out)?;
                descend(base, &mut |p| {
                    if is_real_dir(p) {
                        walk(p, rest, out)?;
                    }
                    Ok(())
                })?;
            }
        }
    }
    Ok(())
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Calls `f` for every entry below `dir`, depth first, without following symlinked directories.
fn descend(
    dir: &Path,
    f: &mut dyn FnMut(&Path) -> Result<(), GlobFailure>,
) -> Result<(), GlobFailure> {
    for (_, path, is_dir) in list(dir)? {
        f(&path)?;
        if is_dir {
            descend(&path, f)?;
        }
    }
    Ok(())
}

/// Which list a rule belongs to; decides what happens to paths that do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleKind {
    /// A missing path grants nothing: it is skipped with a note.
    Allow,
    /// allowWrite: a missing path whose parent directory exists is kept (the mount plan creates
    /// it as a directory, or lets the sandbox create it as a file); one whose parent is missing
    /// too is skipped with a note.
    Write,
    /// A missing path is kept: the mount code decides how to deny it.
    Deny,
}

/// Where rules come from, for messages and for the rules themselves.
pub(crate) struct RuleSource<'a> {
    pub layer: Layer,
    pub origin: &'a str,
    pub key: &'a str,
    pub cwd: &'a Path,
    pub home: &'a Path,
}

/// Expands the written entries of one list into rules.
pub(crate) fn resolve_rules(
    written: &[PathEntry],
    kind: RuleKind,
    src: &RuleSource<'_>,
    notes: &mut Vec<String>,
) -> Result<Vec<PathRule>, Error> {
    let mut rules = Vec::new();
    for (i, entry) in written.iter().enumerate() {
        let w = &entry.as_str().to_string();
        // On the command line the option is the origin and the value itself is the key.
        let key = if src.layer == Layer::CommandLine {
            w.clone()
        } else {
            format!("{}[{i}]", src.key)
        };
        let path = resolve_path(w, src.cwd, src.home)
            .map_err(|m| Error::invalid(src.origin, key.clone(), m))?;
        let rule = |path: PathBuf| PathRule {
            path,
            pattern: w.clone(),
            layer: src.layer,
            origin: src.origin.to_string(),
        };
        let literal = matches!(entry, PathEntry::Literal(_));
        if is_glob(w) && !literal {
            let mut found = expand_glob(&path).map_err(|f| match f {
                GlobFailure::Pattern(m) => Error::invalid(src.origin, key.clone(), m),
                GlobFailure::Unreadable { dir, source } => Error::Unreadable {
                    origin: src.origin.to_string(),
                    key: key.clone(),
                    pattern: w.clone(),
                    dir,
                    source,
                },
            })?;
            // A deny also covers the path the pattern spells, where one exists by that name
            // (a folder called `[WIP] project`); an allow needs `"literal": true` for that.
            if kind == RuleKind::Deny
                && fs::symlink_metadata(&path).is_ok()
                && !found.contains(&path)
            {
                found.push(path.clone());
            }
            if found.is_empty() {
                notes.push(format!(
                    "{}: {key}: \"{w}\" matches nothing; no rule added",
                    src.origin
                ));
            }
            rules.extend(found.into_iter().map(rule));
            continue;
        }
        if kind != RuleKind::Deny {
            let parent_is_dir = || path.parent().is_some_and(|p| p.is_dir());
            match fs::metadata(&path) {
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && kind == RuleKind::Write
                        && parent_is_dir() => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    notes.push(format!(
                        "{}: {key}: {} does not exist; skipped",
                        src.origin,
                        path.display()
                    ));
                    continue;
                }
                Err(e) => {
                    return Err(Error::invalid(
                        src.origin,
                        key,
                        format!("cannot check {}: {e}", path.display()),
                    ))
                }
            }
        }
        rules.push(rule(path));
    }
    Ok(rules)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ringfence-policy-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            // Canonical, so expectations compare equal even if the temp dir is a symlink.
            TempDir(dir.canonicalize().unwrap())
        }

        pub(crate) fn touch(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"x").unwrap();
            p
        }

        pub(crate) fn mkdir(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            fs::create_dir_all(&p).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = make_readable(&self.0);
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn make_readable(dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for e in fs::read_dir(dir)?.flatten() {
            if e.file_type()?.is_dir() {
                fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755))?;
                make_readable(&e.path())?;
            }
        }
        Ok(())
    }

    pub(crate) fn running_as_root() -> bool {
        // The owner of a freshly created file is the effective uid.
        use std::os::unix::fs::MetadataExt;
        let t = TempDir::new();
        fs::metadata(&t.0).unwrap().uid() == 0
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d/")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/../../x")), PathBuf::from("/x"));
        assert_eq!(normalize(Path::new("/a/..")), PathBuf::from("/"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
        assert_eq!(normalize(Path::new("/a//b")), PathBuf::from("/a/b"));
    }

    #[test]
    fn tilde_and_relative() {
        let cwd = Path::new("/work/proj");
        let home = Path::new("/home/u");
        let r = |w: &str| resolve_path(w, cwd, home);
        assert_eq!(r("~").unwrap(), PathBuf::from("/home/u"));
        assert_eq!(r("~/").unwrap(), PathBuf::from("/home/u"));
        assert_eq!(r("~/.ssh").unwrap(), PathBuf::from("/home/u/.ssh"));
        assert_eq!(r("~/a/../.aws").unwrap(), PathBuf::from("/home/u/.aws"));
        assert_eq!(r(".").unwrap(), PathBuf::from("/work/proj"));
        assert_eq!(r("build").unwrap(), PathBuf::from("/work/proj/build"));
        assert_eq!(r("../other/x").unwrap(), PathBuf::from("/work/other/x"));
        assert_eq!(r("/etc/../var/./log").unwrap(), PathBuf::from("/var/log"));
        assert_eq!(r("x/~").unwrap(), PathBuf::from("/work/proj/x/~"));
        assert!(r("~root/x").unwrap_err().contains("only \"~\""));
    }

    #[test]
    fn within() {
        assert!(is_within(Path::new("/a/b"), Path::new("/a")));
        assert!(is_within(Path::new("/a"), Path::new("/a")));
        assert!(!is_within(Path::new("/ab"), Path::new("/a")));
        assert!(!is_within(Path::new("/a"), Path::new("/a/b")));
    }

    #[test]
    fn glob_detection() {
        assert!(is_glob("*.env") && is_glob("a?") && is_glob("[ab]") && is_glob("~/**/x"));
        assert!(!is_glob("~/plain/path"));
    }

    fn rel(t: &TempDir, v: Vec<PathBuf>) -> Vec<String> {
        v.iter()
            .map(|p| p.strip_prefix(&t.0).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn glob_expansion() {
        let t = TempDir::new();
        for f in [
            "a.env",
            "b.env",
            ".hidden.env",
            "c.txt",
            "sub/d.env",
            "sub/deep/e.env",
            "x1",
            "x2",
            "xa",
        ] {
            t.touch(f);
        }
        t.mkdir("sub/deep/empty");
        let g = |p: &str| rel(&t, expand_glob(&t.0.join(p)).unwrap());
        assert_eq!(g("*.env"), [".hidden.env", "a.env", "b.env"]);
        assert_eq!(g("x?"), ["x1", "x2", "xa"]);
        assert_eq!(g("x[12]"), ["x1", "x2"]);
        assert_eq!(g("[ab].env"), ["a.env", "b.env"]);
        assert_eq!(g("x[!1]"), ["x2", "xa"]);
        assert_eq!(
            g("**/*.env"),
            [
                ".hidden.env",
                "a.env",
                "b.env",
                "sub/d.env",
                "sub/deep/e.env"
            ]
        );
        assert_eq!(g("sub/**/e.env"), ["sub/deep/e.env"]);
        assert_eq!(
            g("sub/**"),
            ["sub/d.env", "sub/deep", "sub/deep/e.env", "sub/deep/empty"]
        );
        assert_eq!(g("*/deep"), ["sub/deep"]);
        assert_eq!(g("nothing/*"), Vec::<String>::new());
        assert_eq!(g("a.env/*"), Vec::<String>::new());
        assert!(matches!(
            expand_glob(&t.0.join("a**")),
            Err(GlobFailure::Pattern(_))
        ));
        assert!(matches!(
            expand_glob(&t.0.join("[")),
            Err(GlobFailure::Pattern(_))
        ));
    }

    #[test]
    fn glob_does_not_follow_symlinked_dirs_with_double_star() {
        let t = TempDir::new();
        t.touch("real/f.env");
        std::os::unix::fs::symlink(&t.0, t.0.join("real/loop")).unwrap();
        let found = rel(&t, expand_glob(&t.0.join("**/*.env")).unwrap());
        assert_eq!(found, ["real/f.env"]);
    }

    #[test]
    fn unreadable_dir_during_glob_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        if running_as_root() {
            println!("skipped: running as root (root can read any directory)");
            return;
        }
        let t = TempDir::new();
        t.touch("open/a.env");
        let closed = t.mkdir("closed");
        t.touch("closed/b.env");
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
        match expand_glob(&t.0.join("**/*.env")) {
            Err(GlobFailure::Unreadable { dir, .. }) => assert_eq!(dir, closed),
            other => panic!("expected an unreadable error, got {other:?}"),
        }
        match expand_glob(&t.0.join("closed/*")) {
            Err(GlobFailure::Unreadable { dir, .. }) => assert_eq!(dir, closed),
            other => panic!("expected an unreadable error, got {other:?}"),
        }
        // A literal component below an unsearchable directory cannot be checked either.
        match expand_glob(&t.0.join("closed/b.env/*")) {
            Err(GlobFailure::Unreadable { dir, .. }) => assert_eq!(dir, closed),
            other => panic!("expected an unreadable error, got {other:?}"),
        }
    }

    #[test]
    fn rules_skip_missing_allows_and_keep_missing_denies() {
        let t = TempDir::new();
        t.touch("there");
        let src = RuleSource {
            layer: Layer::User,
            origin: "/u.json",
            key: "filesystem.allowWrite",
            cwd: &t.0,
            home: Path::new("/home/u"),
        };
        let mut notes = Vec::new();
        let written: Vec<PathEntry> = vec!["there".into(), "missing".into(), "*.none".into()];
        let allow = resolve_rules(&written, RuleKind::Allow, &src, &mut notes).unwrap();
        assert_eq!(allow.len(), 1);
        assert_eq!(allow[0].path, t.0.join("there"));
        assert_eq!(allow[0].pattern, "there");
        assert_eq!(allow[0].layer, Layer::User);
        assert_eq!(allow[0].origin, "/u.json");
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0].starts_with("/u.json: filesystem.allowWrite[1]: "),
            "{}",
            notes[0]
        );
        assert!(notes[0].ends_with("missing does not exist; skipped"));
        assert!(notes[1].contains("\"*.none\" matches nothing"));
        notes.clear();
        let deny = resolve_rules(&written, RuleKind::Deny, &src, &mut notes).unwrap();
        assert_eq!(deny.len(), 2);
        assert_eq!(deny[1].path, t.0.join("missing"));
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn literal_entries_are_never_patterns() {
        let t = TempDir::new();
        t.touch("a.env");
        t.touch("b.env");
        t.touch("[WIP] x/keep");
        let src = RuleSource {
            layer: Layer::User,
            origin: "/u.json",
            key: "filesystem.denyRead",
            cwd: &t.0,
            home: Path::new("/home/u"),
        };
        let mut notes = Vec::new();
        // As a pattern `*.env` is both files; marked literal it is the name `*.env` alone,
        // kept for a deny although nothing has that name yet.
        let pattern = resolve_rules(&["*.env".into()], RuleKind::Deny, &src, &mut notes).unwrap();
        assert_eq!(pattern.len(), 2);
        let literal = [PathEntry::Literal("*.env".into())];
        let deny = resolve_rules(&literal, RuleKind::Deny, &src, &mut notes).unwrap();
        assert_eq!(deny.len(), 1);
        assert_eq!(deny[0].path, t.0.join("*.env"));
        assert_eq!(deny[0].pattern, "*.env");
        // A literal allow of a missing path grants nothing, like any missing allow.
        let allow = resolve_rules(&literal, RuleKind::Allow, &src, &mut notes).unwrap();
        assert!(allow.is_empty());
        assert!(notes
            .last()
            .unwrap()
            .ends_with("*.env does not exist; skipped"));
        // A literal `/**` at the end is part of the name.
        let tail = [PathEntry::Literal("sub/**".into())];
        let deny = resolve_rules(&tail, RuleKind::Deny, &src, &mut notes).unwrap();
        assert_eq!(deny[0].path, t.0.join("sub/**"));
        // A folder whose name has glob characters: a literal allow names it.
        let wip = [PathEntry::Literal("[WIP] x/keep".into())];
        let allow = resolve_rules(&wip, RuleKind::Allow, &src, &mut notes).unwrap();
        assert_eq!(allow[0].path, t.0.join("[WIP] x/keep"));
        // An unmarked deny covers both readings: the pattern (nothing matches `[WIP] x`, which
        // is one character of W, I, P, then " x") and the existing path it spells.
        let deny =
            resolve_rules(&["[WIP] x/keep".into()], RuleKind::Deny, &src, &mut notes).unwrap();
        assert_eq!(
            deny.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
            [t.0.join("[WIP] x/keep")]
        );
        // An unmarked allow is a pattern only.
        let allow =
            resolve_rules(&["[WIP] x/keep".into()], RuleKind::Allow, &src, &mut notes).unwrap();
        assert!(allow.is_empty());
    }
}
