//! `ringfence apply` and `ringfence undo`: bringing a run's layer into the real folders, and
//! taking it back out. Every path is resolved beneath its root without following symlinks, so
//! nothing in the layer or in the real tree can redirect a write outside the root. Files are
//! written aside, the filesystem is synced once for the whole batch, then each file is renamed
//! over its target (atomic per file). What an apply replaces or deletes is kept in
//! `runs/NAME/undo/K/` (a hard link where possible, a copy otherwise) for `undo`.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ringfence_linux::layer;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    changes, display, key, load_manifest, refuse_live, review_event, run_dir, stamp, Change, Kind,
    RootManifest, Stamp, State,
};

pub struct ApplyOptions {
    pub paths: Vec<PathBuf>,
    pub yes: bool,
    pub include_protected: Vec<PathBuf>,
}

/// One step of an apply, as `undo` needs it.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct UndoEntry {
    root: usize,
    rel: PathBuf,
    /// The backup of what was there (a name in `files/`), when something was replaced or deleted.
    backup: Option<String>,
    /// The mode before, for a change of mode only.
    old_mode: Option<u32>,
    /// What the apply left there (None: nothing); undo refuses a path that differs from it.
    after: Option<Stamp>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct UndoRecord {
    entries: Vec<UndoEntry>,
}

/// A path named on the command line, absolute and (where it exists) real.
fn absolute(p: &Path) -> Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the working directory")?
            .join(p)
    };
    Ok(fs::canonicalize(&p).unwrap_or(p))
}

/// `name` in the directory `dir` refers to, resolved through the descriptor.
fn at(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn split(rel: &Path) -> Result<(&Path, &OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => bail!("{}: not a path inside a root", rel.display()),
    }
}

fn perm(m: &fs::Metadata) -> u32 {
    m.permissions().mode() & 0o7777
}

/// Why applying `c` would overwrite a change made in the real folder since the run started.
fn conflict(base: &RootManifest, root: &Path, c: &Change) -> Option<String> {
    let real = root.join(&c.rel);
    let cur = fs::symlink_metadata(&real).ok().map(|m| stamp(&m));
    let was = base.entries.get(&key(&c.rel)).copied();
    match (was, cur) {
        (None, None) => None,
        (None, Some(_)) => Some("created in the real folder after the run started".into()),
        (Some(_), None) => Some("deleted from the real folder after the run started".into()),
        (Some(w), Some(n)) if w != n => {
            Some("changed in the real folder after the run started".into())
        }
        (Some(w), Some(_)) if w.0 == 'd' && c.new != Some(Kind::Dir) => {
            // A directory this change removes: nothing in it may have changed either.
            let prefix = format!("{}/", key(&c.rel));
            let mut seen = 0usize;
            let mut stack = vec![c.rel.clone()];
            while let Some(rel) = stack.pop() {
                for e in fs::read_dir(root.join(&rel))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let r = rel.join(e.file_name());
                    let Ok(m) = e.metadata() else { continue };
                    if base.entries.get(&key(&r)) != Some(&stamp(&m)) {
                        return Some(format!(
                            "{} changed in the real folder after the run started",
                            r.display()
                        ));
                    }
                    seen += 1;
                    if m.is_dir() {
                        stack.push(r);
                    }
                }
            }
            let before = base
                .entries
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .count();
            (before != seen).then(|| "entries in it were deleted after the run started".to_string())
        }
        _ => None,
    }
}

/// Who may answer a confirmation.
enum Answer {
    /// `--yes` was given and policy allows it.
    Given,
    /// The terminal, or `--yes` (policy allows it, it was not given).
    YesAllowed,
    /// The terminal only: `workspace.allowYes` is false.
    YesForbidden,
    /// The terminal only: protected files.
    TerminalOnly,
}

/// Asks on the terminal unless `--yes` answers for the user; false: the user said no.
fn confirm(question: &str, answer: Answer) -> Result<bool> {
    let hint = match answer {
        Answer::Given => return Ok(true),
        Answer::YesAllowed => ", or pass --yes",
        Answer::YesForbidden => " (--yes is not allowed: workspace.allowYes is false)",
        Answer::TerminalOnly => " (--yes does not answer for protected files)",
    };
    if !ringfence_linux::supervise::is_tty(0) {
        bail!("{question}: this needs a confirmation; nothing was applied; run `ringfence apply` on a terminal{hint}");
    }
    eprint!("ringfence: {question}. Apply? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Copies a file, symlink or tree (used when a rename or link would cross filesystems).
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let m = fs::symlink_metadata(src)?;
    if m.is_dir() {
        fs::DirBuilder::new().mode(0o700).create(dst)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(perm(&m)))
    } else if m.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)
    } else if m.is_file() {
        fs::copy(src, dst).map(drop)
    } else {
        Ok(())
    }
}

fn remove_tree(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    }
}

/// Moves `src` to `dst`: a rename, or a copy and removal across filesystems.
fn move_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    match fs::rename(src, dst) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(src, dst)?;
            remove_tree(src)
        }
        r => r,
    }
}

/// Keeps what `target` is now at `dst` while `target` stays in place until it is replaced.
fn keep(target: &Path, dst: &Path) -> std::io::Result<()> {
    fs::hard_link(target, dst).or_else(|_| copy_tree(target, dst))
}

/// Writes the layer's `src` next to its target under a temporary name; returns that name.
fn write_aside(dir: &OwnedFd, seq: usize, src: &Path, kind: Kind) -> Result<String> {
    let tmp = format!(".ringfence-apply-{}-{seq}", std::process::id());
    let path = at(dir, OsStr::new(&tmp));
    match kind {
        Kind::Symlink => {
            let target =
                fs::read_link(src).with_context(|| format!("reading {}", src.display()))?;
            std::os::unix::fs::symlink(target, &path)
        }
        _ => (|| {
            let mut input = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(src)?;
            // Never a set-user-ID or set-group-ID file: the command could set those bits on
            // its own files, and outside the sandbox they would run with the owner's rights.
            let mode = perm(&input.metadata()?) & !0o6000;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::io::copy(&mut input, &mut out)?;
            out.set_permissions(fs::Permissions::from_mode(mode))
        })(),
    }
    .map_err(|e| {
        let _ = fs::remove_file(&path);
        anyhow::anyhow!("writing beside it: {e}")
    })?;
    Ok(tmp)
}

/// The directory of the last path looked at: changes come parents first and siblings together,
/// so most lookups reuse it instead of resolving the path again.
#[derive(Default)]
struct Parent(Option<(usize, PathBuf, OwnedFd)>);

impl Parent {
    fn open(&mut self, roots: &[OwnedFd], root: usize, rel: &Path) -> Result<&OwnedFd> {
        if !matches!(&self.0, Some((r, p, _)) if *r == root && p == rel) {
            let fd = layer::open_dir_beneath(&roots[root], rel)
                .context("opening its directory without following symlinks")?;
            self.0 = Some((root, rel.to_path_buf(), fd));
        }
        match &self.0 {
            Some((_, _, fd)) => Ok(fd),
            None => bail!("opening its directory"),
        }
    }
}

fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// `ringfence apply RUN [PATH...]`.
pub fn apply(name: &str, opts: &ApplyOptions) -> Result<i32> {
    let mut state = State::load(name)?;
    refuse_live(name)?;
    if state.state == "discarded" {
        bail!("run {name} was discarded; its layer is gone");
    }
    let Some(manifest) = load_manifest(name)? else {
        bail!(
            "run {name} has no baseline ({}): its supervisor ended before recording what the real folders held, so changes made to them since cannot be told apart; review with `ringfence diff {name}` and copy by hand",
            run_dir(name)?.join("manifest.jsonl").display()
        );
    };
    let paths: Vec<PathBuf> = opts
        .paths
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<_>>()?;
    let include: Vec<PathBuf> = opts
        .include_protected
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<_>>()?;

    let mut selected: Vec<Change> = Vec::new();
    let mut conflicts: Vec<(PathBuf, String)> = Vec::new();
    let mut held: Vec<PathBuf> = Vec::new();
    let mut special: Vec<PathBuf> = Vec::new();
    let mut protected_included: Vec<PathBuf> = Vec::new();
    let empty = RootManifest::default();
    let lists = state.protected_lists();
    let protected = lists.view();
    for (i, r) in state.roots.iter().enumerate() {
        let base = manifest.roots.get(i).unwrap_or(&empty);
        let mut skip: Vec<PathBuf> = Vec::new();
        for c in changes(i, &r.path, &r.upper)? {
            if skip.iter().any(|p| c.rel.starts_with(p)) {
                continue;
            }
            let abs = r.path.join(&c.rel);
            let wanted = paths.is_empty()
                || paths.iter().any(|p| {
                    abs.starts_with(p)
                        || (c.new == Some(Kind::Dir)
                            && c.old != Some(Kind::Dir)
                            && p.starts_with(&abs))
                });
            if !wanted {
                continue;
            }
            if c.new == Some(Kind::Special) {
                special.push(abs);
                continue;
            }
            if state.is_protected(&protected, &r.path, &c.rel) {
                if include.iter().any(|p| abs.starts_with(p)) {
                    protected_included.push(abs.clone());
                } else {
                    held.push(abs);
                    skip.push(c.rel.clone());
                    continue;
                }
            }
            if let Some(why) = conflict(base, &r.path, &c) {
                conflicts.push((abs, why));
                skip.push(c.rel.clone());
                continue;
            }
            selected.push(c);
        }
    }

    // Large deletions and directories replaced by files are confirmed first.
    let mut reasons = Vec::new();
    let deletes: u64 = selected.iter().map(|c| c.deleted_files).sum();
    if deletes > state.confirm_deletes {
        reasons.push(format!(
            "it deletes {deletes} files (more than workspace.confirmDeletes, {})",
            state.confirm_deletes
        ));
    }
    for (i, r) in state.roots.iter().enumerate() {
        let d: u64 = selected
            .iter()
            .filter(|c| c.root == i)
            .map(|c| c.deleted_files)
            .sum();
        let files = manifest.roots.get(i).map_or(0, |m| m.files);
        if d > 0 && d * 5 > files {
            reasons.push(format!(
                "it deletes {d} of the {files} files in {} (more than 20 %)",
                display(&r.path)
            ));
        }
    }
    for c in &selected {
        if c.old == Some(Kind::Dir) && c.new.is_some_and(|k| k != Kind::Dir) {
            reasons.push(format!(
                "it replaces the directory {} with a file",
                display(&state.roots[c.root].path.join(&c.rel))
            ));
        }
    }
    if !reasons.is_empty() {
        let answer = match (opts.yes, state.allow_yes) {
            (_, false) => Answer::YesForbidden,
            (true, true) => Answer::Given,
            (false, true) => Answer::YesAllowed,
        };
        if !confirm(&reasons.join("; "), answer)? {
            eprintln!("ringfence: nothing applied");
            return Ok(1);
        }
    }
    if !protected_included.is_empty() {
        let list: Vec<String> = protected_included.iter().map(|p| display(p)).collect();
        if !confirm(
            &format!("it writes protected paths: {}", list.join(", ")),
            Answer::TerminalOnly,
        )? {
            eprintln!("ringfence: nothing applied");
            return Ok(1);
        }
    }

    let (applied, failed) = if selected.is_empty() {
        (0, Vec::new())
    } else {
        execute(&mut state, &selected)?
    };
    for (p, why) in &failed {
        eprintln!(
            "ringfence: not applied: {}: {why}",
            display(p).escape_debug()
        );
    }
    for (p, why) in &conflicts {
        eprintln!(
            "ringfence: not applied: {}: {why}",
            display(p).escape_debug()
        );
    }
    for p in &held {
        eprintln!(
            "ringfence: held back (protected): {}; name it with --include-protected to apply it",
            display(p).escape_debug()
        );
    }
    for p in &special {
        eprintln!(
            "ringfence: not applied: {}: a fifo, socket or device node",
            display(p).escape_debug()
        );
    }
    review_event(
        name,
        "overlay.apply",
        json!({
            "roots": state.roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>(),
            "applied": applied,
            "conflicts": conflicts.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
            "heldBack": held.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "protectedIncluded": protected_included.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "undo": state.applies,
        }),
    )?;
    if applied > 0 {
        println!(
            "ringfence: applied {applied} change{} from run {name}; `ringfence undo {name}` takes {} back",
            if applied == 1 { "" } else { "s" },
            if applied == 1 { "it" } else { "them" }
        );
    } else {
        println!("ringfence: nothing applied from run {name}");
    }
    Ok(if conflicts.is_empty() && failed.is_empty() {
        0
    } else {
        1
    })
}

/// Carries out the selected changes; returns how many were applied and the paths that failed
/// (with why). A failure leaves that path as it was (or restorable by `undo`) and skips what lies
/// under it; the rest goes on.
fn execute(state: &mut State, selected: &[Change]) -> Result<(usize, Vec<(PathBuf, String)>)> {
    let k = state.applies + 1;
    let store = run_dir(&state.run)?.join("undo").join(k.to_string());
    let files = store.join("files");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&files)
        .with_context(|| format!("creating {}", files.display()))?;
    let roots: Vec<OwnedFd> = state
        .roots
        .iter()
        .map(|r| layer::open_dir(&r.path).with_context(|| format!("opening {}", r.path.display())))
        .collect::<Result<_>>()?;
    let mut record = UndoRecord::default();
    let mut failed: Vec<(PathBuf, String)> = Vec::new();
    let mut skip: Vec<(usize, PathBuf)> = Vec::new();
    // Files written aside: (entry, temporary name).
    let mut pending: Vec<(usize, String)> = Vec::new();
    let mut parents = Parent::default();
    for (seq, c) in selected.iter().enumerate() {
        if skip
            .iter()
            .any(|(r, p)| *r == c.root && c.rel.starts_with(p))
        {
            continue;
        }
        let root = &state.roots[c.root];
        let mut entry = UndoEntry {
            root: c.root,
            rel: c.rel.clone(),
            backup: None,
            old_mode: None,
            after: None,
        };
        let mut tmp_name: Option<String> = None;
        let result = (|| -> Result<()> {
            let (parent, fname) = split(&c.rel)?;
            let dir = parents.open(&roots, c.root, parent)?;
            let target = at(dir, fname);
            let src = root.upper.join(&c.rel);
            match (c.old, c.new) {
                (Some(Kind::Dir), Some(Kind::Dir)) | (Some(Kind::File), Some(Kind::File))
                    if !c.content =>
                {
                    let m = fs::symlink_metadata(&target).context("reading it")?;
                    if let Some(mode) = c.mode {
                        let mode = if m.is_dir() { mode } else { mode & !0o6000 };
                        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                            .context("changing its mode")?;
                        entry.old_mode = Some(perm(&m));
                    }
                }
                (Some(old), Some(new)) if old != Kind::Dir && new != Kind::Dir => {
                    let b = seq.to_string();
                    keep(&target, &files.join(&b)).context("keeping a copy of it")?;
                    entry.backup = Some(b);
                    tmp_name = Some(write_aside(dir, seq, &src, new)?);
                }
                (old, new) => {
                    if old.is_some() {
                        let b = seq.to_string();
                        move_tree(&target, &files.join(&b)).context("moving it aside")?;
                        entry.backup = Some(b);
                    }
                    match new {
                        None => {}
                        Some(Kind::Dir) => {
                            mkdir(&target, c.mode.unwrap_or(0o755)).context("creating it")?
                        }
                        Some(kind) => tmp_name = Some(write_aside(dir, seq, &src, kind)?),
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                if let Some(t) = tmp_name {
                    pending.push((record.entries.len(), t));
                }
                record.entries.push(entry);
            }
            Err(e) => {
                failed.push((root.path.join(&c.rel), format!("{e:#}")));
                skip.push((c.root, c.rel.clone()));
                // What was moved aside can still be put back by `undo`.
                if entry.backup.is_some() && c.old.is_some_and(|_| !is_kept(c)) {
                    record.entries.push(entry);
                }
            }
        }
    }
    // Everything written aside (and every copy kept for undo) reaches the disk before any of it
    // replaces a file.
    for fd in &roots {
        layer::syncfs(fd).context("syncing the written files")?;
    }
    let store_fd = layer::open_dir(&store).context("opening the undo store")?;
    layer::syncfs(&store_fd).context("syncing the undo store")?;
    write_record(&store, &record)?;
    let mut unplaced: Vec<usize> = Vec::new();
    for (i, tmp) in &pending {
        let e = &record.entries[*i];
        let abs = state.roots[e.root].path.join(&e.rel);
        let renamed = split(&e.rel).and_then(|(parent, fname)| {
            let dir = parents.open(&roots, e.root, parent)?;
            fs::rename(at(dir, OsStr::new(tmp)), at(dir, fname)).map_err(|x| {
                let _ = fs::remove_file(at(dir, OsStr::new(tmp)));
                anyhow::anyhow!("renaming it into place: {x}")
            })
        });
        if let Err(x) = renamed {
            failed.push((abs, format!("{x:#}")));
            unplaced.push(*i);
        }
    }
    for (i, e) in record.entries.iter_mut().enumerate() {
        e.after = split(&e.rel).ok().and_then(|(parent, fname)| {
            let dir = parents.open(&roots, e.root, parent).ok()?;
            fs::symlink_metadata(at(dir, fname)).ok().map(|m| stamp(&m))
        });
        if unplaced.contains(&i) && e.backup.is_some() {
            // Not replaced after all: nothing for undo to put back.
            e.backup = None;
            e.after = None;
        }
    }
    record
        .entries
        .retain(|e| e.backup.is_some() || e.old_mode.is_some() || e.after.is_some());
    write_record(&store, &record)?;
    for fd in &roots {
        layer::syncfs(fd).context("syncing the renames")?;
    }
    let applied = record.entries.len();
    if applied > 0 {
        state.applies = k;
        state.state = "applied".into();
        state.save()?;
    } else {
        let _ = fs::remove_dir_all(&store);
    }
    Ok((applied, failed))
}

/// Whether `c` keeps the original in place until it is replaced (a copy, not a move).
fn is_kept(c: &Change) -> bool {
    matches!((c.old, c.new), (Some(o), Some(n)) if o != Kind::Dir && n != Kind::Dir)
}

fn write_record(store: &Path, record: &UndoRecord) -> Result<()> {
    let tmp = store.join("record.json.tmp");
    let text = serde_json::to_vec(record).context("encoding the undo record")?;
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, store.join("record.json")).context("writing the undo record")
}

/// `ringfence undo RUN`: restores what the run's applies replaced or deleted, newest first.
pub fn undo(name: &str) -> Result<i32> {
    let mut state = State::load(name)?;
    refuse_live(name)?;
    if state.applies == 0 {
        bail!("run {name} has no apply to undo");
    }
    let roots: Vec<OwnedFd> = state
        .roots
        .iter()
        .map(|r| layer::open_dir(&r.path).with_context(|| format!("opening {}", r.path.display())))
        .collect::<Result<_>>()?;
    let mut refused: Vec<(PathBuf, String)> = Vec::new();
    let mut restored = 0usize;
    let mut left = 0u32;
    for k in (1..=state.applies).rev() {
        let store = run_dir(name)?.join("undo").join(k.to_string());
        let text = match fs::read(store.join("record.json")) {
            Ok(t) => t,
            Err(_) => continue,
        };
        let record: UndoRecord =
            serde_json::from_slice(&text).context("reading the undo record")?;
        let mut kept: Vec<UndoEntry> = Vec::new();
        // Children come before their parents here (the reverse of the apply), so a directory
        // kept open is never one that was removed or put back.
        let mut parents = Parent::default();
        for e in record.entries.into_iter().rev() {
            let abs = state.roots[e.root].path.join(&e.rel);
            let result = split(&e.rel)
                .and_then(|(parent, fname)| Ok((parents.open(&roots, e.root, parent)?, fname)))
                .map_err(|x| format!("{x:#}"))
                .and_then(|(dir, fname)| undo_one(dir, fname, &store, &e));
            match result {
                Ok(()) => restored += 1,
                Err(why) => {
                    refused.push((abs, why));
                    kept.push(e);
                }
            }
        }
        if kept.is_empty() {
            fs::remove_dir_all(&store).with_context(|| format!("removing {}", store.display()))?;
        } else {
            kept.reverse();
            write_record(&store, &UndoRecord { entries: kept })?;
            left = left.max(k);
        }
    }
    state.applies = left;
    if left == 0 {
        state.state = "undone".into();
    }
    state.save()?;
    for (p, why) in &refused {
        eprintln!(
            "ringfence: not undone: {}: {why}",
            display(p).escape_debug()
        );
    }
    review_event(
        name,
        "overlay.undo",
        json!({
            "roots": state.roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>(),
            "restored": restored,
            "refused": refused.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
        }),
    )?;
    println!(
        "ringfence: undid {restored} change{} of run {name}",
        if restored == 1 { "" } else { "s" }
    );
    Ok(if refused.is_empty() { 0 } else { 1 })
}

fn undo_one(
    dir: &OwnedFd,
    fname: &OsStr,
    store: &Path,
    e: &UndoEntry,
) -> std::result::Result<(), String> {
    let target = at(dir, fname);
    let cur = fs::symlink_metadata(&target).ok().map(|m| stamp(&m));
    if cur != e.after {
        return Err("changed again since the apply".into());
    }
    let io = |what: &'static str| move |x: std::io::Error| format!("{what}: {x}");
    if let Some(mode) = e.old_mode {
        return fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .map_err(io("restoring its mode"));
    }
    let backup = e.backup.as_ref().map(|b| store.join("files").join(b));
    let backup_is_dir = backup
        .as_ref()
        .and_then(|b| fs::symlink_metadata(b).ok())
        .is_some_and(|m| m.is_dir());
    match (cur, &backup) {
        // A file the apply replaced: put the kept one back over it in one rename.
        (Some(c), Some(b)) if c.0 != 'd' && !backup_is_dir => {
            return fs::rename(b, &target)
                .or_else(|x| {
                    if x.raw_os_error() == Some(libc::EXDEV) {
                        let tmp = at(
                            dir,
                            OsStr::new(&format!(".ringfence-undo-{}", std::process::id())),
                        );
                        copy_tree(b, &tmp).and_then(|()| fs::rename(&tmp, &target))
                    } else {
                        Err(x)
                    }
                })
                .map_err(io("restoring it"));
        }
        (Some(c), _) if c.0 == 'd' => fs::remove_dir(&target).map_err(io(
            "removing the directory the apply created (is it empty?)",
        ))?,
        (Some(_), _) => fs::remove_file(&target).map_err(io("removing what the apply created"))?,
        (None, _) => {}
    }
    if let Some(b) = backup {
        move_tree(&b, &target).map_err(io("restoring it"))?;
    }
    Ok(())
}
