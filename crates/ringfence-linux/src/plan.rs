//! The mount plan: the ordered list of mounts that turns the host tree into the sandbox's view.
//! Building it is a pure function of the resolved policy and of what exists on disk (passed in as
//! a lookup), so the exact plan can be unit-tested and printed by `explain` before anything runs.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a path is on the host, following symlinks (mounts follow them too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Why a path is made read-only inside a writable root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    DenyWrite,
    Protected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The whole host tree, recursively read-only, nosuid and nodev.
    RootReadOnly,
    /// A minimal /dev: null, zero, full, random, urandom, tty, a private devpts and /dev/shm.
    Dev,
    /// A fresh /proc for the sandbox's PID namespace, with the kernel knobs read-only.
    Proc,
    /// A private /tmp of at most `size` bytes.
    Tmp { size: u64 },
    /// A host path bound read-write.
    Writable { path: PathBuf },
    /// A single writable file (it may not exist yet), not bound: its directory stays read-only
    /// and the creation guard creates, replaces and renames onto exactly this name, through a
    /// writable handle on the directory that only the sandbox's PID 1 holds (see
    /// `guard::WritableFile`). A bind mount would make the file a mount point, which cannot be
    /// renamed onto (EBUSY), so an editor's or a tool's atomic save could never work.
    WritableFile { path: PathBuf },
    /// A host path seen through a copy-on-write overlay: reads come from the real folder, writes
    /// go to `upper` (with `work` as overlayfs's scratch directory on the same filesystem).
    Overlay {
        path: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    /// A denied directory replaced by an empty read-only directory.
    HideDir { path: PathBuf },
    /// A denied file replaced by an empty read-only file.
    HideFile { path: PathBuf },
    /// A masked credential file (`credentials.files`, mode "mask"): `fake`, a host file with
    /// placeholders, bound read-only over it.
    MaskFile { path: PathBuf, fake: PathBuf },
    /// A path inside a hidden area re-opened from the host (read-write when it is also writable).
    Reopen {
        path: PathBuf,
        kind: Kind,
        writable: bool,
    },
    /// A directory bound onto itself so that it cannot be renamed or removed while the run lasts.
    Pin { path: PathBuf },
    /// A path bound onto itself read-only.
    ReadOnly { path: PathBuf, reason: Reason },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPlan {
    pub steps: Vec<Step>,
    /// Writable directories that do not exist yet and are created on the host before the run
    /// (their parent exists); the plan binds them as if they existed.
    pub create: Vec<PathBuf>,
    /// Rules that produced no mount, with the reason (shown by `explain` and `--debug`).
    pub skipped: Vec<String>,
}

/// Inputs to the plan: absolute, normalised paths.
#[derive(Clone, Debug, Default)]
pub struct PlanInput {
    pub deny_read: Vec<PathBuf>,
    pub allow_read: Vec<PathBuf>,
    pub allow_write: Vec<PathBuf>,
    pub deny_write: Vec<PathBuf>,
    /// Existing protected entries inside writable roots.
    pub protected: Vec<PathBuf>,
    pub tmp_size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

impl MountPlan {
    /// Shows each of `masked` (real path, file with placeholders) in place of the real file:
    /// the step that hides it is replaced, and one in a hidden directory is added last, after
    /// the directory was hidden.
    pub fn mask_files(&mut self, masked: &[(PathBuf, PathBuf)]) {
        for (path, fake) in masked {
            self.steps
                .retain(|s| !matches!(s, Step::HideFile { path: p } if p == path));
            self.steps.push(Step::MaskFile {
                path: path.clone(),
                fake: fake.clone(),
            });
        }
    }
}

/// Whether `p` is already as [`Path::components`] gives it back: no empty or `.` component, no
/// trailing slash. Then its components are its slash-separated names, and [`depth`] and
/// [`under`] can work on its bytes.
fn is_clean(p: &Path) -> bool {
    let b = p.as_os_str().as_bytes();
    if b == b"/" {
        return true;
    }
    !b.is_empty()
        && !b.ends_with(b"/")
        && !b.ends_with(b"/.")
        && b != b"."
        && !b.starts_with(b"./")
        && !b.windows(2).any(|w| w == b"//")
        && !b.windows(3).any(|w| w == b"/./")
}

/// `p` as [`Path::components`] gives it back (the same path to the kernel).
fn clean(p: &Path) -> PathBuf {
    if is_clean(p) {
        p.to_path_buf()
    } else {
        p.components().collect()
    }
}

/// The number of components of `p`, a path made clean by [`sorted_unique`] (or a parent of
/// one, or a constant).
fn depth(p: &Path) -> usize {
    debug_assert!(is_clean(p), "{}", p.display());
    let b = p.as_os_str().as_bytes();
    match b {
        b"/" => 1,
        _ => b.iter().filter(|&&c| c == b'/').count() + 1,
    }
}

/// `p.starts_with(root)` for clean paths (see [`depth`]), on their bytes: the plan asks this
/// for every pair of rules, which component by component was a third of a run's set-up time.
fn under(p: &Path, root: &Path) -> bool {
    debug_assert!(is_clean(p) && is_clean(root));
    let (pb, rb) = (p.as_os_str().as_bytes(), root.as_os_str().as_bytes());
    if rb == b"/" {
        return pb.first() == Some(&b'/');
    }
    pb.starts_with(rb) && (pb.len() == rb.len() || pb[rb.len()] == b'/')
}

/// Read visibility of `p` from the read rules: the longest rule that contains it decides,
/// allowRead winning a tie; no rule means visible.
fn visible(p: &Path, deny: &[PathBuf], allow: &[PathBuf]) -> bool {
    let best_deny = deny.iter().filter(|d| under(p, d)).map(|d| depth(d)).max();
    let best_allow = allow.iter().filter(|a| under(p, a)).map(|a| depth(a)).max();
    match (best_deny, best_allow) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(d), Some(a)) => a >= d,
    }
}

/// The paths made clean, outermost first, each once.
fn sorted_unique(v: &[PathBuf]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = v.iter().map(|p| clean(p)).collect();
    v.sort_by(|a, b| depth(a).cmp(&depth(b)).then(a.cmp(b)));
    v.dedup();
    v
}

/// Whether a name that does not exist yet is meant as a file: it has an extension (a dot after
/// its first character).
pub fn looks_like_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > 1 && n[1..].contains('.') && !n.ends_with('.'))
}

/// Paths the sandbox always gets from its own mounts; rules may not re-bind them.
const OWN_MOUNTS: &[&str] = &["/proc", "/dev"];

/// Builds the plan. `kind` reports what exists on the host (None: nothing there).
pub fn build(
    input: &PlanInput,
    kind: &dyn Fn(&Path) -> Option<Kind>,
) -> Result<MountPlan, PlanError> {
    let mut plan = MountPlan::default();
    for p in input
        .allow_write
        .iter()
        .chain(&input.allow_read)
        .chain(&input.deny_read)
        .chain(&input.deny_write)
    {
        if !p.is_absolute() {
            return Err(PlanError(format!("{}: not an absolute path", p.display())));
        }
    }
    for p in &input.allow_write {
        if p == Path::new("/") {
            return Err(PlanError(
                "allowWrite: \"/\" would make the whole host writable; name the directories instead"
                    .into(),
            ));
        }
        if let Some(own) = OWN_MOUNTS.iter().find(|o| p.starts_with(o)) {
            return Err(PlanError(format!(
                "allowWrite: {}: {own} is the sandbox's own; it cannot be bound from the host",
                p.display()
            )));
        }
    }

    let deny_write = sorted_unique(&input.deny_write);
    // Deny beats allow: a writable root inside a denied one is not writable.
    let mut writable = Vec::new();
    let mut files = Vec::new();
    for w in sorted_unique(&input.allow_write) {
        if let Some(d) = deny_write.iter().find(|d| under(&w, d)) {
            plan.skipped.push(format!(
                "allowWrite {}: inside denyWrite {}",
                w.display(),
                d.display()
            ));
            continue;
        }
        let parent_is_dir = w.parent().is_some_and(|p| kind(p) == Some(Kind::Dir));
        match kind(&w) {
            Some(Kind::Dir) => writable.push(w),
            Some(Kind::File) => files.push(w),
            None if !parent_is_dir => plan.skipped.push(format!(
                "allowWrite {}: neither it nor its parent directory exists",
                w.display()
            )),
            // A name that does not exist yet: a name with an extension (`.claude.json`,
            // `notes.txt`) is taken as a file, which the sandbox may then create; any other
            // name (`.claude`, `build`) as a directory, created before the run so that it can
            // be bound like any other writable root.
            None if looks_like_file(&w) => files.push(w),
            None => {
                plan.create.push(w.clone());
                writable.push(w);
            }
        }
    }
    // A file inside a writable directory is writable through that directory already.
    files.retain(|f| !writable.iter().any(|w| under(f, w)));
    let host_tmp = writable.iter().any(|w| w == Path::new("/tmp"));
    // A file under a private /tmp is bound as before: its directory there is the sandbox's own
    // tmpfs, which a handle on the host's /tmp must not stand for.
    if !host_tmp {
        let (tmp, rest): (Vec<PathBuf>, Vec<PathBuf>) = std::mem::take(&mut files)
            .into_iter()
            .partition(|f| under(f, Path::new("/tmp")));
        files = rest;
        for f in tmp {
            if kind(&f).is_some() {
                writable.push(f);
            } else {
                plan.skipped.push(format!(
                    "allowWrite {}: not visible anyway (the sandbox's /tmp is private)",
                    f.display()
                ));
            }
        }
    }
    let is_writable = |p: &Path| writable.iter().any(|w| under(p, w));

    plan.steps.push(Step::RootReadOnly);
    plan.steps.push(Step::Dev);
    plan.steps.push(Step::Proc);
    if !host_tmp {
        plan.steps.push(Step::Tmp {
            size: input.tmp_size,
        });
    }
    for w in &writable {
        // A writable root nested in another one is already covered by the outer bind.
        if writable.iter().any(|o| o != w && under(w, o)) {
            continue;
        }
        plan.steps.push(Step::Writable { path: w.clone() });
    }
    for f in &files {
        plan.steps.push(Step::WritableFile { path: f.clone() });
    }

    // Read rules, outermost first, so re-opened paths are mounted on top of their hidden parent.
    let deny_read = sorted_unique(&input.deny_read);
    let allow_read = sorted_unique(&input.allow_read);
    let mut read_rules: Vec<(PathBuf, bool)> = deny_read
        .iter()
        .map(|p| (p.clone(), true))
        .chain(allow_read.iter().map(|p| (p.clone(), false)))
        .collect();
    read_rules.sort_by(|a, b| depth(&a.0).cmp(&depth(&b.0)).then(a.0.cmp(&b.0)));
    // With a private /tmp, host paths under it are not there at all unless bound writable.
    let shadowed = |p: &Path| !host_tmp && under(p, Path::new("/tmp")) && !is_writable(p);
    for (path, is_deny) in read_rules {
        if shadowed(&path) {
            plan.skipped.push(format!(
                "{} {}: not visible anyway (the sandbox's /tmp is private)",
                if is_deny { "denyRead" } else { "allowRead" },
                path.display()
            ));
            continue;
        }
        let parent_visible = match path.parent() {
            Some(parent) => visible(parent, &deny_read, &allow_read),
            None => true,
        };
        let Some(k) = kind(&path) else {
            plan.skipped.push(format!(
                "{} {}: does not exist",
                if is_deny { "denyRead" } else { "allowRead" },
                path.display()
            ));
            continue;
        };
        if is_deny {
            if !parent_visible {
                continue;
            }
            // An allowRead of the very same path wins over the deny.
            if allow_read.contains(&path) {
                continue;
            }
            plan.steps.push(match k {
                Kind::Dir => Step::HideDir { path },
                Kind::File => Step::HideFile { path },
            });
        } else if !parent_visible {
            let writable = is_writable(&path);
            plan.steps.push(Step::Reopen {
                path,
                kind: k,
                writable,
            });
        }
    }
    let is_visible = |p: &Path| visible(p, &deny_read, &allow_read);

    // Protected entries: pin every directory between the writable root and the entry so that no
    // ancestor can be renamed away and recreated, then make the entry itself read-only.
    let mut pins: Vec<PathBuf> = Vec::new();
    let mut read_only: Vec<(PathBuf, Reason)> = Vec::new();
    for p in sorted_unique(&input.protected) {
        let Some(root) = writable
            .iter()
            .filter(|w| under(&p, w))
            .max_by_key(|w| depth(w))
        else {
            continue;
        };
        if !is_visible(&p) || kind(&p).is_none() {
            continue;
        }
        let mut a = p.parent();
        while let Some(dir) = a {
            if dir == root.as_path() || !under(dir, root) {
                break;
            }
            pins.push(dir.to_path_buf());
            a = dir.parent();
        }
        read_only.push((p, Reason::Protected));
    }
    for d in &deny_write {
        if !is_writable(d) {
            continue; // read-only already
        }
        if !is_visible(d) {
            continue;
        }
        if kind(d).is_none() {
            plan.skipped.push(format!(
                "denyWrite {}: does not exist yet (it can be created)",
                d.display()
            ));
            continue;
        }
        read_only.push((d.clone(), Reason::DenyWrite));
    }
    pins.sort_by(|a, b| depth(a).cmp(&depth(b)).then(a.cmp(b)));
    pins.dedup();
    for p in pins {
        if read_only.iter().any(|(r, _)| under(&p, r)) {
            continue;
        }
        plan.steps.push(Step::Pin { path: p });
    }
    read_only.sort_by(|a, b| depth(&a.0).cmp(&depth(&b.0)).then(a.0.cmp(&b.0)));
    read_only.dedup_by(|a, b| a.0 == b.0);
    let mut done: Vec<PathBuf> = Vec::new();
    for (path, reason) in read_only {
        // Inside a path already read-only (recursively): nothing to add.
        if done.iter().any(|d| under(&path, d)) {
            continue;
        }
        done.push(path.clone());
        plan.steps.push(Step::ReadOnly { path, reason });
    }
    Ok(plan)
}

/// Overlay mode: every writable root becomes an [`Step::Overlay`] whose layers live in
/// `dir/upper/N` and `dir/work/N` (N counts the roots in plan order). Returns the roots with
/// their upper directories.
/// Writable roots in `direct` (the sandbox's own caches, which nothing reviews) stay writable.
pub fn use_overlays(
    plan: &mut MountPlan,
    dir: &Path,
    direct: &[PathBuf],
) -> Vec<(PathBuf, PathBuf)> {
    let mut roots = Vec::new();
    // A writable file would be written on the host directly, past the reviewable changeset:
    // in overlay mode it stays read-only.
    let mut kept = Vec::new();
    for step in std::mem::take(&mut plan.steps) {
        match step {
            Step::WritableFile { path } => plan.skipped.push(format!(
                "allowWrite {}: a single file is not writable in overlay mode",
                path.display()
            )),
            s => kept.push(s),
        }
    }
    plan.steps = kept;
    for step in &mut plan.steps {
        if let Step::Writable { path } = step {
            if direct.contains(path) {
                continue;
            }
            let n = roots.len();
            let upper = dir.join("upper").join(n.to_string());
            roots.push((path.clone(), upper.clone()));
            *step = Step::Overlay {
                path: path.clone(),
                upper,
                work: dir.join("work").join(n.to_string()),
            };
        }
    }
    roots
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RootReadOnly => write!(f, "read-only  /  (host tree, nosuid, nodev)"),
            Step::Dev => write!(f, "minimal    /dev"),
            Step::Proc => write!(f, "fresh      /proc"),
            Step::Tmp { size } => write!(f, "tmpfs      /tmp  ({} MiB)", size >> 20),
            Step::Writable { path } => write!(f, "writable   {}", path.display()),
            Step::WritableFile { path } => write!(
                f,
                "writable   {}  (this file only, replaceable by rename; its directory stays read-only)",
                path.display()
            ),
            Step::Overlay { path, upper, .. } => write!(
                f,
                "overlay    {}  (writes go to {})",
                path.display(),
                upper.display()
            ),
            Step::HideDir { path } => write!(f, "hidden     {}  (empty directory)", path.display()),
            Step::HideFile { path } => write!(f, "hidden     {}  (empty file)", path.display()),
            Step::MaskFile { path, .. } => {
                write!(f, "masked     {}  (placeholders)", path.display())
            }
            Step::Reopen { path, writable, .. } => write!(
                f,
                "re-opened  {}{}",
                path.display(),
                if *writable { "  (writable)" } else { "" }
            ),
            Step::Pin { path } => write!(f, "pinned     {}  (cannot be renamed)", path.display()),
            Step::ReadOnly { path, reason } => write!(
                f,
                "read-only  {}  ({})",
                path.display(),
                match reason {
                    Reason::DenyWrite => "denyWrite",
                    Reason::Protected => "protected",
                }
            ),
        }
    }
}

impl fmt::Display for MountPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.create {
            writeln!(
                f,
                "  create     {}  (before the run: it does not exist yet)",
                c.display()
            )?;
        }
        for s in &self.steps {
            writeln!(f, "  {s}")?;
        }
        for s in &self.skipped {
            writeln!(f, "  skipped    {s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn byte_checks_agree_with_components() {
        let raw = [
            "/", "/a", "/a/", "/a/b", "/a//b", "/a/./b", "/a/.", "/ab", "/a-b", "/a/b/c", "/a/..",
            "/a/../b", "/tmp", "/tmp/x", "/tmpx", "/.a", "/a/.b", "//",
        ];
        for a in raw {
            let ca = clean(Path::new(a));
            assert!(is_clean(&ca), "{a}");
            assert_eq!(ca, Path::new(a).components().collect::<PathBuf>(), "{a}");
            assert_eq!(depth(&ca), Path::new(a).components().count(), "{a}");
            for b in raw {
                let cb = clean(Path::new(b));
                assert_eq!(
                    under(&ca, &cb),
                    Path::new(a).starts_with(b),
                    "{a} under {b}"
                );
            }
        }
        assert!(!is_clean(Path::new("/a/")) && !is_clean(Path::new("/a//b")));
        assert!(!is_clean(Path::new("/a/./b")) && !is_clean(Path::new("/a/.")));
    }

    /// A fake filesystem: directories and files that "exist".
    fn fs(
        dirs: &'static [&'static str],
        files: &'static [&'static str],
    ) -> impl Fn(&Path) -> Option<Kind> {
        move |q: &Path| {
            if dirs.iter().any(|d| Path::new(d) == q) {
                Some(Kind::Dir)
            } else if files.iter().any(|f| Path::new(f) == q) {
                Some(Kind::File)
            } else {
                None
            }
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn nothing_writable() {
        let plan = build(
            &PlanInput {
                tmp_size: GIB,
                ..PlanInput::default()
            },
            &fs(&[], &[]),
        )
        .unwrap();
        assert_eq!(
            plan.steps,
            vec![
                Step::RootReadOnly,
                Step::Dev,
                Step::Proc,
                Step::Tmp { size: GIB }
            ]
        );
    }

    #[test]
    fn writable_root_with_deny_write_and_protected_entries() {
        let input = PlanInput {
            allow_write: vec![p("/home/u/proj"), p("/home/u/proj/sub")],
            deny_write: vec![p("/home/u/proj/secrets"), p("/home/u/proj/new")],
            protected: vec![p("/home/u/proj/a/b/.bashrc"), p("/home/u/proj/.git/hooks")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(
            &input,
            &fs(
                &[
                    "/home/u/proj",
                    "/home/u/proj/sub",
                    "/home/u/proj/secrets",
                    "/home/u/proj/.git/hooks",
                ],
                &["/home/u/proj/a/b/.bashrc"],
            ),
        )
        .unwrap();
        assert_eq!(
            plan.steps,
            vec![
                Step::RootReadOnly,
                Step::Dev,
                Step::Proc,
                Step::Tmp { size: GIB },
                // The nested writable root is covered by the outer bind.
                Step::Writable {
                    path: p("/home/u/proj")
                },
                // Outermost first, so that each pin holds the ones below it.
                Step::Pin {
                    path: p("/home/u/proj/.git")
                },
                Step::Pin {
                    path: p("/home/u/proj/a")
                },
                Step::Pin {
                    path: p("/home/u/proj/a/b")
                },
                // Shallowest first.
                Step::ReadOnly {
                    path: p("/home/u/proj/secrets"),
                    reason: Reason::DenyWrite
                },
                Step::ReadOnly {
                    path: p("/home/u/proj/.git/hooks"),
                    reason: Reason::Protected
                },
                Step::ReadOnly {
                    path: p("/home/u/proj/a/b/.bashrc"),
                    reason: Reason::Protected
                },
            ]
        );
        assert_eq!(
            plan.skipped,
            vec!["denyWrite /home/u/proj/new: does not exist yet (it can be created)".to_string()]
        );
    }

    #[test]
    fn deny_beats_allow_for_writable_roots() {
        let input = PlanInput {
            allow_write: vec![p("/data/x/y")],
            deny_write: vec![p("/data/x")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(&input, &fs(&["/data/x", "/data/x/y"], &[])).unwrap();
        assert!(!plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Writable { .. })));
        assert_eq!(
            plan.skipped,
            vec!["allowWrite /data/x/y: inside denyWrite /data/x".to_string()]
        );
    }

    #[test]
    fn read_rules_nest_outermost_first() {
        let input = PlanInput {
            deny_read: vec![p("/home/u"), p("/home/u/proj/.env"), p("/home/u/.ssh")],
            allow_read: vec![p("/home/u/proj")],
            allow_write: vec![p("/home/u/proj")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(
            &input,
            &fs(
                &["/home/u", "/home/u/proj", "/home/u/.ssh"],
                &["/home/u/proj/.env"],
            ),
        )
        .unwrap();
        assert_eq!(
            plan.steps[4..],
            [
                Step::Writable {
                    path: p("/home/u/proj")
                },
                Step::HideDir { path: p("/home/u") },
                // ~/.ssh is inside the hidden home already: no mount of its own.
                Step::Reopen {
                    path: p("/home/u/proj"),
                    kind: Kind::Dir,
                    writable: true
                },
                Step::HideFile {
                    path: p("/home/u/proj/.env")
                },
            ]
        );
    }

    #[test]
    fn private_tmp_and_host_tmp() {
        let input = PlanInput {
            deny_read: vec![p("/tmp/secret")],
            allow_write: vec![p("/tmp/shared")],
            tmp_size: 16 << 20,
            ..PlanInput::default()
        };
        let plan = build(&input, &fs(&["/tmp/shared"], &["/tmp/secret"])).unwrap();
        assert_eq!(
            plan.steps[3..],
            [
                Step::Tmp { size: 16 << 20 },
                Step::Writable {
                    path: p("/tmp/shared")
                },
            ]
        );
        assert_eq!(
            plan.skipped,
            vec![
                "denyRead /tmp/secret: not visible anyway (the sandbox's /tmp is private)"
                    .to_string()
            ]
        );

        // Allowing /tmp itself shares the host's /tmp instead of a private one.
        let input = PlanInput {
            allow_write: vec![p("/tmp")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(&input, &fs(&["/tmp"], &[])).unwrap();
        assert_eq!(
            plan.steps,
            vec![
                Step::RootReadOnly,
                Step::Dev,
                Step::Proc,
                Step::Writable { path: p("/tmp") }
            ]
        );
    }

    #[test]
    fn overlay_mode_replaces_each_writable_root() {
        let input = PlanInput {
            allow_write: vec![p("/home/u/a"), p("/home/u/b"), p("/home/u/a/sub")],
            protected: vec![p("/home/u/a/.bashrc")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let mut plan = build(
            &input,
            &fs(
                &["/home/u/a", "/home/u/b", "/home/u/a/sub"],
                &["/home/u/a/.bashrc"],
            ),
        )
        .unwrap();
        let roots = use_overlays(&mut plan, Path::new("/s/runs/r"), &[]);
        assert_eq!(
            roots,
            vec![
                (p("/home/u/a"), p("/s/runs/r/upper/0")),
                (p("/home/u/b"), p("/s/runs/r/upper/1"))
            ]
        );
        assert_eq!(
            plan.steps[4..],
            [
                Step::Overlay {
                    path: p("/home/u/a"),
                    upper: p("/s/runs/r/upper/0"),
                    work: p("/s/runs/r/work/0")
                },
                Step::Overlay {
                    path: p("/home/u/b"),
                    upper: p("/s/runs/r/upper/1"),
                    work: p("/s/runs/r/work/1")
                },
                // Protected entries stay read-only on top of the overlay.
                Step::ReadOnly {
                    path: p("/home/u/a/.bashrc"),
                    reason: Reason::Protected
                },
            ]
        );
    }

    #[test]
    fn refused_inputs() {
        let bad = |allow: &str| {
            build(
                &PlanInput {
                    allow_write: vec![p(allow)],
                    ..PlanInput::default()
                },
                &fs(&["/", "/proc/sys", "/dev/shm"], &[]),
            )
            .unwrap_err()
            .0
        };
        assert!(bad("/").contains("whole host writable"));
        assert!(bad("/proc/sys").contains("/proc is the sandbox's own"));
        assert!(bad("/dev/shm").contains("/dev is the sandbox's own"));
        assert!(bad("relative").contains("not an absolute path"));
    }

    #[test]
    fn missing_paths_are_skipped_with_a_reason() {
        let input = PlanInput {
            allow_write: vec![p("/nope")],
            deny_read: vec![p("/gone")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(&input, &fs(&[], &[])).unwrap();
        assert_eq!(plan.steps.len(), 4);
        assert_eq!(
            plan.skipped,
            vec![
                "allowWrite /nope: neither it nor its parent directory exists".to_string(),
                "denyRead /gone: does not exist".to_string()
            ]
        );
    }

    #[test]
    fn single_files_and_names_not_yet_created() {
        let input = PlanInput {
            allow_write: vec![
                p("/h/u/.claude.json"),
                p("/h/u/.claude"),
                p("/h/u/new.json"),
                p("/h/u/proj"),
                p("/h/u/proj/inside.txt"),
            ],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(
            &input,
            &fs(
                &["/h/u", "/h/u/proj"],
                &["/h/u/.claude.json", "/h/u/proj/inside.txt"],
            ),
        )
        .unwrap();
        // A missing name without an extension is a directory made before the run; one with an
        // extension a file the sandbox may create; a file inside a writable root needs nothing.
        assert_eq!(plan.create, vec![p("/h/u/.claude")]);
        assert_eq!(
            plan.steps[4..],
            [
                Step::Writable {
                    path: p("/h/u/.claude")
                },
                Step::Writable {
                    path: p("/h/u/proj")
                },
                Step::WritableFile {
                    path: p("/h/u/.claude.json")
                },
                Step::WritableFile {
                    path: p("/h/u/new.json")
                },
            ]
        );
        // Overlay mode writes nothing on the host directly: single files stay read-only.
        let mut plan = plan;
        use_overlays(&mut plan, Path::new("/s"), &[]);
        assert!(!plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::WritableFile { .. })));
        assert!(plan.skipped.contains(
            &"allowWrite /h/u/new.json: a single file is not writable in overlay mode".to_string()
        ));
        // Under a private /tmp a file is bound as before (its directory is the sandbox's own).
        let input = PlanInput {
            allow_write: vec![p("/tmp/x.json"), p("/tmp/new.json")],
            tmp_size: GIB,
            ..PlanInput::default()
        };
        let plan = build(&input, &fs(&["/tmp"], &["/tmp/x.json"])).unwrap();
        assert_eq!(
            plan.steps[4..],
            [Step::Writable {
                path: p("/tmp/x.json")
            }]
        );
        assert_eq!(
            plan.skipped,
            vec![
                "allowWrite /tmp/new.json: not visible anyway (the sandbox's /tmp is private)"
                    .to_string()
            ]
        );
        assert!(looks_like_file(Path::new("/a/b.c")));
        assert!(!looks_like_file(Path::new("/a/.b")));
        assert!(!looks_like_file(Path::new("/a/b.")));
    }

    #[test]
    fn a_masked_file_replaces_its_hiding_step_and_comes_last() {
        let mut plan = MountPlan {
            steps: vec![
                Step::RootReadOnly,
                Step::HideFile {
                    path: p("/h/.netrc"),
                },
                Step::HideDir { path: p("/h/.aws") },
            ],
            ..MountPlan::default()
        };
        plan.mask_files(&[
            (p("/h/.netrc"), p("/s/0.fake")),
            (p("/h/.aws/credentials"), p("/s/1.fake")),
        ]);
        assert_eq!(
            plan.steps,
            vec![
                Step::RootReadOnly,
                Step::HideDir { path: p("/h/.aws") },
                Step::MaskFile {
                    path: p("/h/.netrc"),
                    fake: p("/s/0.fake")
                },
                Step::MaskFile {
                    path: p("/h/.aws/credentials"),
                    fake: p("/s/1.fake")
                },
            ]
        );
    }
}
