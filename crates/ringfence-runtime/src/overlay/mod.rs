//! Overlay mode, host side. A run's writable roots are overlayfs mounts whose upper layers live in
//! the run's state directory (`runs/NAME/upper/N`); nothing reaches the real folders until
//! `ringfence apply`. This module owns that directory: its record (`overlay.json`), the baseline
//! taken while the command runs (`manifest.jsonl`), and the list of changes a layer holds.
//!
//! Reading a layer: with the `userxattr` mount option (the only one a user namespace can use) the
//! kernel marks deletions with whiteouts (character devices 0/0) and directories that hide the
//! lower one with `user.overlay.opaque=y`. Redirects are off in that mode, so a renamed directory
//! is a copy plus a whiteout; a renamed file is a deletion plus an addition (`diff` pairs them by
//! content).
//!
//! Baseline: the lower layer is the live real folder, so "what the run saw" is recorded as a
//! manifest of (kind, size, mtime, ctime, inode) per entry of each root, walked by a thread of the
//! supervisor once the command has started (no cost at startup). A path the layer changes whose
//! real entry no longer matches its manifest entry is a conflict at apply. A host change made
//! between the start of the command and the moment the walk reaches that entry is not seen.

pub mod apply;
pub mod diff;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ringfence_linux::layer;
use ringfence_linux::plan::{self, MountPlan};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A run's overlay directory: `runs/NAME/` in the state directory.
pub fn run_dir(name: &str) -> Result<PathBuf> {
    Ok(crate::runs::state_dir()?.join("runs").join(name))
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    /// The real folder.
    pub path: PathBuf,
    /// Its upper layer.
    pub upper: PathBuf,
}

/// `overlay.json`: what later commands need to review the run.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub run: String,
    pub roots: Vec<Root>,
    pub confirm_deletes: u64,
    pub allow_yes: bool,
    pub allow_git_config: bool,
    /// Protected paths found at run start (and those that may not be created): never applied
    /// without `--include-protected`, like every protected name.
    pub protected: Vec<PathBuf>,
    /// pending, applied, discarded or undone.
    pub state: String,
    /// How many applies left an undo record (undo/1, undo/2, ...).
    #[serde(default)]
    pub applies: u32,
}

impl State {
    pub fn load(name: &str) -> Result<State> {
        let p = run_dir(name)?.join("overlay.json");
        let text = fs::read_to_string(&p).with_context(|| {
            format!("run {name} has no overlay ({} is missing); only runs started with --overlay can be reviewed", p.display())
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not an overlay record", p.display()))
    }

    pub fn save(&self) -> Result<()> {
        let dir = run_dir(&self.run)?;
        let tmp = dir.join("overlay.json.tmp");
        let text = serde_json::to_string_pretty(self).context("encoding the overlay record")?;
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dir.join("overlay.json"))
            .with_context(|| format!("writing {}", dir.join("overlay.json").display()))
    }

    /// The protected names as the run's policy had them (`allowGitConfig` included).
    pub fn protected_lists(&self) -> crate::prepare::ProtectedLists {
        crate::prepare::ProtectedLists::new(self.allow_git_config)
    }

    /// Whether `rel` under `root` is protected: by name (`names`, from `protected_lists`) or
    /// as an entry the run found protected.
    pub fn is_protected(
        &self,
        names: &ringfence_linux::protect::ProtectedNames,
        root: &Path,
        rel: &Path,
    ) -> bool {
        let abs = root.join(rel);
        ringfence_linux::protect::is_protected_path(rel, names)
            || self.protected.iter().any(|p| abs.starts_with(p))
    }
}

/// Overlay mode for a run that is starting: creates its layers and turns the plan's writable
/// roots into overlays (None: nothing is writable, so there is no layer).
pub fn start(
    name: &str,
    plan: &mut MountPlan,
    ws: &ringfence_policy::Workspace,
    allow_git_config: bool,
    protected: Vec<PathBuf>,
    direct: &[PathBuf],
) -> Result<Option<State>> {
    let dir = run_dir(name)?;
    let roots = plan::use_overlays(plan, &dir, direct);
    if let Some((file, _)) = roots.iter().find(|(r, _)| !r.is_dir()) {
        bail!(
            "--overlay: the writable root {} is a file; overlays need directories: make its directory writable instead, or run without overlay mode",
            file.display()
        );
    }
    if roots.is_empty() {
        // Nothing is writable: there is nothing to review either.
        return Ok(None);
    }
    if let Some(root) = roots.iter().map(|(r, _)| r).find(|r| dir.starts_with(r)) {
        bail!(
            "--overlay: the writable root {} holds the state directory {}; set XDG_STATE_HOME to a directory outside it",
            root.display(),
            dir.display()
        );
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    for (i, (root, upper)) in roots.iter().enumerate() {
        let work = dir.join("work").join(i.to_string());
        for d in [upper, &work] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .with_context(|| format!("creating {}", d.display()))?;
        }
        // The overlay's root directory shows the upper layer's mode: keep the real one.
        if let Ok(m) = fs::metadata(root) {
            let _ = fs::set_permissions(upper, fs::Permissions::from_mode(m.mode() & 0o7777));
        }
    }
    let state = State {
        run: name.to_string(),
        roots: roots
            .into_iter()
            .map(|(path, upper)| Root { path, upper })
            .collect(),
        confirm_deletes: ws.confirm_deletes,
        allow_yes: ws.allow_yes,
        allow_git_config,
        protected,
        state: "pending".into(),
        applies: 0,
    };
    state.save()?;
    Ok(Some(state))
}

/// What an entry was when the manifest was taken: kind, size, mtime and ctime (ns), inode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(pub char, pub u64, pub i64, pub i64, pub u64);

pub fn stamp(m: &fs::Metadata) -> Stamp {
    let k = kind_of(m).letter();
    if k == 'd' {
        return Stamp(k, 0, 0, 0, m.ino());
    }
    Stamp(
        k,
        m.size(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        m.ino(),
    )
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct RootManifest {
    /// Non-directory entries under the root.
    pub files: u64,
    /// Relative path -> stamp.
    pub entries: HashMap<String, Stamp>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Manifest {
    pub roots: Vec<RootManifest>,
}

pub fn key(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// One line of `manifest.jsonl`: an entry of root `r`, or (with `files`) the end of root `r`.
#[derive(Serialize, Deserialize)]
struct ManifestLine {
    r: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files: Option<u64>,
}

/// Walks `root` without following symlinks, writing one line per entry (the supervisor never
/// holds the whole tree in memory).
fn walk_manifest(index: usize, root: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let mut files = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            let r = rel.join(e.file_name());
            if md.is_dir() {
                stack.push(r.clone());
            } else {
                files += 1;
            }
            let line = ManifestLine {
                r: index,
                p: Some(key(&r)),
                s: Some(stamp(&md)),
                files: None,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    let end = ManifestLine {
        r: index,
        p: None,
        s: None,
        files: Some(files),
    };
    serde_json::to_writer(&mut *out, &end)?;
    out.write_all(b"\n")
}

/// Records the baseline of every root (see the module comment); run on a thread of its own.
pub fn record_manifest(state: &State) -> Result<()> {
    let dir = run_dir(&state.run)?;
    let tmp = dir.join("manifest.jsonl.tmp");
    let f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(f);
    for (i, r) in state.roots.iter().enumerate() {
        walk_manifest(i, &r.path, &mut out)
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, dir.join("manifest.jsonl")).context("writing the manifest")
}

/// The baseline, when the run recorded one completely.
pub fn load_manifest(name: &str) -> Result<Option<Manifest>> {
    let p = run_dir(name)?.join("manifest.jsonl");
    let Ok(f) = fs::File::open(&p) else {
        return Ok(None);
    };
    let mut m = Manifest::default();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.with_context(|| format!("reading {}", p.display()))?;
        let l: ManifestLine = serde_json::from_str(&line)
            .with_context(|| format!("{}: not a manifest", p.display()))?;
        while m.roots.len() <= l.r {
            m.roots.push(RootManifest::default());
        }
        let root = &mut m.roots[l.r];
        match (l.p, l.s, l.files) {
            (Some(p), Some(s), _) => {
                root.entries.insert(p, s);
            }
            (_, _, Some(n)) => root.files = n,
            _ => {}
        }
    }
    Ok(Some(m))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Symlink,
    Dir,
    /// A fifo, socket or device node: never applied.
    Special,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Symlink => 'l',
            Kind::Dir => 'd',
            Kind::Special => 'o',
        }
    }
}

pub fn kind_of(m: &fs::Metadata) -> Kind {
    let t = m.file_type();
    if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Special
    }
}

/// One path the layer changes, compared with the real folder as it is now.
#[derive(Clone, Debug)]
pub struct Change {
    pub root: usize,
    pub rel: PathBuf,
    /// In the real folder (None: absent).
    pub old: Option<Kind>,
    /// In the run's view (None: deleted).
    pub new: Option<Kind>,
    /// Content or link target differs (same kind on both sides).
    pub content: bool,
    /// The run's mode where it differs from the real one.
    pub mode: Option<u32>,
    /// Files of the real folder this change removes (a deleted directory counts its tree).
    pub deleted_files: u64,
    /// Size in the run's view (files).
    pub size: u64,
    pub old_size: u64,
}

impl Change {
    pub fn label(&self) -> &'static str {
        match (self.old, self.new) {
            (None, _) => "added",
            (_, None) => "deleted",
            (Some(a), Some(b)) if a != b => "replaced",
            _ if self.content => "modified",
            _ => "mode",
        }
    }
}

/// Files under `p` (1 for anything but a directory).
fn count_files(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| count_files(&e.path())).sum())
            .unwrap_or(0),
        Ok(_) => 1,
        Err(_) => 0,
    }
}

pub fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn perm(m: &fs::Metadata) -> u32 {
    m.mode() & 0o7777
}

/// The changes held in `upper` for the real folder `root`, parents before children.
pub fn changes(index: usize, root: &Path, upper: &Path) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(index, root, upper, Path::new(""), true, false, &mut out)?;
    Ok(out)
}

fn walk(
    index: usize,
    root: &Path,
    upper: &Path,
    rel: &Path,
    real_is_dir: bool,
    opaque: bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    let dir = upper.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading the layer {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let blank = |r: &Path| Change {
        root: index,
        rel: r.to_path_buf(),
        old: None,
        new: None,
        content: false,
        mode: None,
        deleted_files: 0,
        size: 0,
        old_size: 0,
    };
    // In an opaque directory, what the real one holds beyond the layer is deleted.
    if opaque && real_is_dir {
        let mut real_names: Vec<_> = fs::read_dir(root.join(rel))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        real_names.sort();
        for n in real_names {
            let r = rel.join(&n);
            if fs::symlink_metadata(upper.join(&r)).is_ok() {
                continue;
            }
            if let Ok(m) = fs::symlink_metadata(root.join(&r)) {
                out.push(Change {
                    old: Some(kind_of(&m)),
                    deleted_files: count_files(&root.join(&r)),
                    old_size: m.len(),
                    ..blank(&r)
                });
            }
        }
    }
    for name in names {
        let r = rel.join(&name);
        let u = upper.join(&r);
        let um = fs::symlink_metadata(&u).with_context(|| format!("reading {}", u.display()))?;
        let real = root.join(&r);
        let rm = if real_is_dir {
            fs::symlink_metadata(&real).ok()
        } else {
            None
        };
        let old = rm.as_ref().map(kind_of);
        if layer::is_whiteout(&um) {
            if let Some(m) = &rm {
                out.push(Change {
                    old,
                    deleted_files: count_files(&real),
                    old_size: m.len(),
                    ..blank(&r)
                });
            }
            continue;
        }
        let new = kind_of(&um);
        let mut c = Change {
            old,
            new: Some(new),
            size: um.len(),
            old_size: rm.as_ref().map_or(0, |m| m.len()),
            ..blank(&r)
        };
        if new != Kind::Symlink && rm.as_ref().is_none_or(|m| perm(m) != perm(&um)) {
            c.mode = Some(perm(&um));
        }
        if new == Kind::Dir {
            let dir_opaque = opaque || layer::is_opaque(&u).unwrap_or(false);
            match old {
                Some(Kind::Dir) => {
                    if c.mode.is_some() {
                        out.push(c);
                    }
                }
                Some(_) => {
                    c.deleted_files = 1;
                    out.push(c);
                }
                None => out.push(c),
            }
            walk(
                index,
                root,
                upper,
                &r,
                old == Some(Kind::Dir),
                dir_opaque,
                out,
            )?;
            continue;
        }
        match old {
            None => out.push(c),
            Some(Kind::Dir) => {
                c.deleted_files = count_files(&real);
                out.push(c);
            }
            Some(o) if o == new => {
                c.content = match new {
                    Kind::File => !same_content(&u, &real).unwrap_or(false),
                    Kind::Symlink => fs::read_link(&u).ok() != fs::read_link(&real).ok(),
                    _ => true,
                };
                if c.content || c.mode.is_some() {
                    out.push(c);
                }
            }
            Some(_) => {
                c.content = true;
                out.push(c);
            }
        }
    }
    Ok(())
}

/// Counts for the summary line of one root.
#[derive(Default, Debug, Clone, Copy, Serialize)]
pub struct Counts {
    pub changed: u64,
    pub added: u64,
    pub deleted: u64,
}

pub fn counts(changes: &[Change]) -> Counts {
    let mut c = Counts::default();
    for ch in changes {
        c.deleted += ch.deleted_files;
        match (ch.old, ch.new) {
            (_, Some(Kind::Dir)) | (_, None) => {}
            (None, Some(_)) => c.added += 1,
            (Some(_), Some(_)) => c.changed += 1,
        }
    }
    c
}

/// `~/x` for paths in the home directory.
pub fn display(p: &Path) -> String {
    if let Ok(home) = crate::prepare::home() {
        if let Ok(rest) = p.strip_prefix(&home) {
            return format!("~/{}", rest.display());
        }
    }
    p.display().to_string()
}

/// The lines printed when an overlay run ends.
pub fn summary(name: &str) -> Result<String> {
    let state = State::load(name)?;
    let mut out = String::new();
    let mut any = false;
    for (i, r) in state.roots.iter().enumerate() {
        let ch = changes(i, &r.path, &r.upper)?;
        any |= !ch.is_empty();
        let c = counts(&ch);
        out.push_str(&format!(
            "ringfence: overlay: {} file{} changed, {} added, {} deleted in {}\n",
            c.changed,
            if c.changed == 1 { "" } else { "s" },
            c.added,
            c.deleted,
            display(&r.path)
        ));
    }
    if any {
        out.push_str(&format!(
            "ringfence: review with `ringfence diff {name}`, then `ringfence apply {name}` or `ringfence discard {name}`\n"
        ));
    } else {
        out.push_str(&format!(
            "ringfence: nothing to apply; `ringfence discard {name}` removes the layer\n"
        ));
    }
    Ok(out)
}

/// Appends an event to the run's review log (`runs/NAME/review.jsonl`), whose chain starts
/// from the final hash of the run's activity log.
pub fn review_event(name: &str, kind: &str, fields: Value) -> Result<()> {
    let rec = crate::runs::load(name).unwrap_or(Value::Null);
    let genesis = rec
        .get("logHash")
        .and_then(Value::as_str)
        .unwrap_or(ringfence_audit::GENESIS)
        .to_string();
    let path = run_dir(name)?.join("review.jsonl");
    let mut w = ringfence_audit::LogWriter::append(&path, name, &genesis)
        .map_err(|e| anyhow::anyhow!("opening the review log: {e}"))?;
    let fields = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    w.write(kind, fields)
        .and_then(|_| w.flush())
        .map_err(|e| anyhow::anyhow!("writing the review log: {e}"))
}

/// The overlay state of run `name` for `ringfence log` (None: not an overlay run).
pub fn state_label(name: &str) -> Option<String> {
    State::load(name).ok().map(|s| s.state)
}

pub fn refuse_live(name: &str) -> Result<()> {
    if crate::runs::is_live(name) {
        bail!("run {name} is still running; wait for it to end (or `ringfence stop {name}`)");
    }
    Ok(())
}

/// Removes overlayfs's scratch directories once the run is over (it leaves one with mode 000,
/// which would stop a plain `rm -r` of the state directory).
pub fn remove_work_dirs(name: &str) {
    let Ok(dir) = run_dir(name) else { return };
    let work = dir.join("work");
    for e in fs::read_dir(&work).into_iter().flatten().flatten() {
        let _ = fs::set_permissions(e.path().join("work"), fs::Permissions::from_mode(0o700));
    }
    let _ = fs::remove_dir_all(&work);
}

/// `ringfence discard RUN`: removes the layers.
pub fn discard(name: &str) -> Result<i32> {
    let mut state = State::load(name)?;
    refuse_live(name)?;
    let dir = run_dir(name)?;
    remove_work_dirs(name);
    for sub in ["upper", "manifest.jsonl"] {
        let p = dir.join(sub);
        let r = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::NotFound {
                bail!("removing {}: {e}", p.display());
            }
        }
    }
    let was = std::mem::replace(&mut state.state, "discarded".into());
    state.save()?;
    review_event(
        name,
        "overlay.discard",
        json!({"roots": state.roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>(), "was": was}),
    )?;
    println!("ringfence: discarded the layer of run {name}");
    Ok(0)
}
