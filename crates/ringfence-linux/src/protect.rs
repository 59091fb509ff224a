//! Finding protected entries (shell rc files, `.git/hooks`, editor and agent config, policy files)
//! at any depth inside the writable roots, before the sandbox starts. Nothing is created in the
//! user's tree: entries that exist are mounted read-only, and their ancestors pinned.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The names to look for: the one protected-name rule, from the policy crate.
pub use ringfence_policy::ProtectedNames;

#[derive(Debug, Default)]
pub struct Found {
    pub paths: Vec<PathBuf>,
    /// Protected paths that do not exist yet (a core.hooksPath directory not yet created).
    pub missing: Vec<PathBuf>,
    pub dirs_scanned: usize,
    pub entries_scanned: usize,
    /// Directories below a root that this user can neither list nor enter (another user's
    /// private directory in a shared `/tmp`): skipped, see [`scan`].
    pub out_of_reach: Vec<PathBuf>,
}

/// Whether nothing below `dir` can be reached by this process, nor by a sandbox running as the
/// same user without capabilities: it belongs to another user (so it cannot be chmod-ed) and
/// it cannot be searched (so no path through it resolves, and nothing can be created in it).
fn out_of_reach(dir: &Path) -> bool {
    let Ok(m) = fs::symlink_metadata(dir) else {
        return false;
    };
    if m.uid() == crate::sys::getuid() {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; faccessat only reads it.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
}

#[derive(Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// What one directory held when it was read: enough to skip reading it again while its inode
/// and change time (and those of its repository config) are what they were.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirRecord {
    stamp: Stamp,
    /// `.git/config` of a repository whose work tree this directory is.
    git_config: Option<Stamp>,
    subdirs: Vec<OsString>,
    protected: Vec<OsString>,
    /// `core.hooksPath` values of the repository here, resolved.
    hooks: Vec<PathBuf>,
}

/// Inode and change time: any entry added, removed or renamed in a directory changes its ctime,
/// and ctime cannot be set from user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let m = fs::symlink_metadata(p).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

/// Scan results of earlier runs, one record per directory; see [`scan`].
///
/// The records stay in their encoded form (the cache file's bytes, and those read again during
/// this scan appended to a second buffer), found through an index of path hashes; the path is
/// stored in the record and compared, so a hash collision only costs a read. A root of 10,000
/// directories costs the file's size plus about 0.3 MiB of index, where decoded records cost
/// about 2 MiB more (a third of the supervisor's peak).
#[derive(Debug)]
pub struct ScanCache {
    old: Vec<u8>,
    new: Vec<u8>,
    index: HashMap<u64, Slot, std::hash::BuildHasherDefault<KeyHasher>>,
    /// Directories read again during this scan (the rest came from the cache).
    pub reread: usize,
    /// Directories changed less than this many seconds ago are not cached (negative: cache
    /// everything, for tests).
    pub settle_secs: i64,
}

/// Where one record is, and whether this scan visited its directory (only those are saved:
/// the others are no longer in the tree).
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u32,
    new: bool,
    seen: bool,
}

/// The index's keys are already hashes.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn key(path: &[u8]) -> u64 {
    use std::hash::Hasher;
    // Fixed keys: the same path hashes alike in every run.
    let mut h = std::hash::DefaultHasher::new();
    h.write(path);
    h.finish()
}

impl Default for ScanCache {
    fn default() -> Self {
        ScanCache {
            old: Vec::new(),
            new: Vec::new(),
            index: HashMap::default(),
            reread: 0,
            settle_secs: 2,
        }
    }
}

const CACHE_MAGIC: &[u8] = b"ringfence-scan-cache-v1\n";

impl ScanCache {
    /// Loads a cache file; a missing or unreadable one is an empty cache (it only saves work).
    pub fn load(path: &Path) -> ScanCache {
        let mut cache = ScanCache::default();
        if let Ok(bytes) = fs::read(path) {
            if let Some(index) = index_of(&bytes) {
                cache.old = bytes;
                cache.index = index;
            }
        }
        cache
    }

    /// Writes the records of the directories this scan visited, atomically (write aside,
    /// rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut out = io::BufWriter::with_capacity(64 * 1024, fs::File::create(&tmp)?);
            out.write_all(CACHE_MAGIC)?;
            for slot in self.index.values().filter(|s| s.seen) {
                let buf = if slot.new { &self.new } else { &self.old };
                let rest = &buf[slot.offset as usize..];
                if let Some(v) = view(rest) {
                    out.write_all(&rest[..v.len])?;
                }
            }
            out.flush()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path)
    }

    /// The record of `dir`, if there is one (the stored path compared).
    fn get(&self, k: u64, dir: &[u8]) -> Option<(Slot, View<'_>)> {
        let slot = *self.index.get(&k)?;
        let buf = if slot.new { &self.new } else { &self.old };
        let v = view(buf.get(slot.offset as usize..)?)?;
        (v.path == dir).then_some((slot, v))
    }

    /// Keeps `record` (one encoded record) as the current one for its key.
    fn put(&mut self, k: u64, record: &[u8]) {
        let Ok(offset) = u32::try_from(self.new.len()) else {
            self.index.remove(&k);
            return;
        };
        self.new.extend_from_slice(record);
        self.index.insert(
            k,
            Slot {
                offset,
                new: true,
                seen: true,
            },
        );
    }

    fn forget(&mut self, k: u64) {
        self.index.remove(&k);
    }

    #[cfg(test)]
    fn record(&self, dir: &Path) -> Option<DirRecord> {
        let (_, v) = self.get(key(dir.as_os_str().as_bytes()), dir.as_os_str().as_bytes())?;
        Some(v.decode())
    }

    #[cfg(test)]
    fn replace(&mut self, dir: &Path, r: &DirRecord) {
        let mut buf = Vec::new();
        encode(&mut buf, dir.as_os_str().as_bytes(), r);
        self.put(key(dir.as_os_str().as_bytes()), &buf);
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_stamp(out: &mut Vec<u8>, s: &Stamp) {
    for v in [s.dev, s.ino, s.ctime as u64, s.ctime_nsec as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// One record: the path, the stamp, the repository config's stamp if any, then the lists of
/// subdirectories, protected names and hooks paths (the cache file is these, one after another,
/// after [`CACHE_MAGIC`]).
fn encode(out: &mut Vec<u8>, path: &[u8], r: &DirRecord) {
    put(out, path);
    put_stamp(out, &r.stamp);
    match &r.git_config {
        Some(s) => {
            out.push(1);
            put_stamp(out, s);
        }
        None => out.push(0),
    }
    for list in [&r.subdirs, &r.protected] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for n in list.iter() {
            put(out, n.as_bytes());
        }
    }
    out.extend_from_slice(&(r.hooks.len() as u32).to_le_bytes());
    for h in &r.hooks {
        put(out, h.as_os_str().as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn stamp(&mut self) -> Option<Stamp> {
        Some(Stamp {
            dev: self.u64()?,
            ino: self.u64()?,
            ctime: self.u64()? as i64,
            ctime_nsec: self.u64()? as i64,
        })
    }
    fn names(&mut self) -> Option<Names<'a>> {
        let n = self.u32()?;
        let start = self.0;
        for _ in 0..n {
            self.bytes()?;
        }
        Some(Names {
            n,
            bytes: &start[..start.len() - self.0.len()],
        })
    }
}

/// One encoded list of names.
#[derive(Clone, Copy)]
struct Names<'a> {
    n: u32,
    bytes: &'a [u8],
}

impl<'a> Names<'a> {
    fn iter(self) -> impl Iterator<Item = &'a OsStr> {
        let mut r = Reader(self.bytes);
        (0..self.n).filter_map(move |_| r.bytes().map(OsStr::from_bytes))
    }
}

/// One record, read in place.
struct View<'a> {
    path: &'a [u8],
    stamp: Stamp,
    git_config: Option<Stamp>,
    subdirs: Names<'a>,
    protected: Names<'a>,
    hooks: Names<'a>,
    /// Its length in bytes.
    len: usize,
}

impl View<'_> {
    #[cfg(test)]
    fn decode(&self) -> DirRecord {
        DirRecord {
            stamp: self.stamp,
            git_config: self.git_config,
            subdirs: self.subdirs.iter().map(OsStr::to_os_string).collect(),
            protected: self.protected.iter().map(OsStr::to_os_string).collect(),
            hooks: self.hooks.iter().map(PathBuf::from).collect(),
        }
    }
}

/// The record at the start of `buf`.
fn view(buf: &[u8]) -> Option<View<'_>> {
    let mut r = Reader(buf);
    let path = r.bytes()?;
    let stamp = r.stamp()?;
    let git_config = match r.take(1)?[0] {
        0 => None,
        1 => Some(r.stamp()?),
        _ => return None,
    };
    let subdirs = r.names()?;
    let protected = r.names()?;
    let hooks = r.names()?;
    Some(View {
        path,
        stamp,
        git_config,
        subdirs,
        protected,
        hooks,
        len: buf.len() - r.0.len(),
    })
}

/// The index of a cache file's records, or None if it is not one.
fn index_of(bytes: &[u8]) -> Option<HashMap<u64, Slot, std::hash::BuildHasherDefault<KeyHasher>>> {
    let body = bytes.strip_prefix(CACHE_MAGIC)?;
    u32::try_from(bytes.len()).ok()?;
    let mut index = HashMap::default();
    let mut at = CACHE_MAGIC.len();
    let mut rest = body;
    while !rest.is_empty() {
        let v = view(rest)?;
        index.insert(
            key(v.path),
            Slot {
                offset: at as u32,
                new: false,
                seen: false,
            },
        );
        at += v.len;
        rest = &rest[v.len..];
    }
    Some(index)
}

/// Reads one directory and records what matters in it.
fn read_one(
    dir: &Path,
    stamp: Stamp,
    names: &ProtectedNames,
    found: &mut Found,
) -> Result<DirRecord, WalkError> {
    let rd = fs::read_dir(dir).map_err(|source| WalkError {
        path: dir.to_path_buf(),
        source,
    })?;
    let parent_name = dir.file_name().unwrap_or_default();
    let in_git = dir.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(ringfence_policy::is_git_dir)
    });
    let mut git_config = None;
    let mut subdirs = Vec::new();
    let mut protected = Vec::new();
    let mut hooks = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| WalkError {
            path: dir.to_path_buf(),
            source,
        })?;
        found.entries_scanned += 1;
        let name = entry.file_name();
        let ty = match entry.file_type() {
            Ok(t) => t,
            // Removed since the directory was listed: nothing there to protect.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(WalkError {
                    path: entry.path(),
                    source,
                })
            }
        };
        if is_protected(parent_name, in_git, &name, names) {
            // Nothing inside a read-only protected directory needs a mount of its own.
            protected.push(name);
            continue;
        }
        if name.to_str().is_some_and(ringfence_policy::is_git_dir) && ty.is_dir() {
            git_config = Some(stamp_or_missing(&entry.path().join("config")));
            if let Some(h) = hooks_path(dir, &entry.path()) {
                hooks.push(h);
            }
        }
        if ty.is_dir() {
            subdirs.push(name);
        }
    }
    Ok(DirRecord {
        stamp,
        git_config,
        subdirs,
        protected,
        hooks,
    })
}

/// A stamp that also stands for "not there" (all zero).
fn stamp_or_missing(p: &Path) -> Stamp {
    stamp(p).unwrap_or(Stamp {
        dev: 0,
        ino: 0,
        ctime: 0,
        ctime_nsec: 0,
    })
}

/// Walks `root` without following symlinks and returns every protected entry in it.
/// `core.hooksPath` of each repository found is protected too. A directory whose stamp matches
/// `cache` is not read again; everything read is put back into `cache`. Directories changed
/// within the last two seconds are not cached, since a change in the same clock tick on a
/// coarse-timestamp filesystem would not show.
/// An unreadable directory is an error: a tree that cannot be scanned cannot be protected;
/// except one below the root that is another user's and that this user cannot search either
/// ([`out_of_reach`]), since nothing in it can be reached or created from the sandbox.
pub fn scan(
    root: &Path,
    names: &ProtectedNames,
    cache: &mut ScanCache,
    found: &mut Found,
) -> Result<(), WalkError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    let mut stack = vec![root.to_path_buf()];
    // The record of a directory read again, encoded for the cache.
    let mut scratch = Vec::new();
    while let Some(dir) = stack.pop() {
        found.dirs_scanned += 1;
        let dir_bytes = dir.as_os_str().as_bytes();
        let k = key(dir_bytes);
        // A directory below the root that disappeared while the scan ran (a `git gc`, a build
        // cleaning up) holds nothing to protect: skip it. Any other failure stops the run.
        let vanished = |e: &io::Error, dir: &Path| {
            dir != root && matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
        };
        let Some(st) = stamp(&dir) else {
            let source = io::Error::last_os_error();
            if vanished(&source, &dir) {
                cache.forget(k);
                continue;
            }
            return Err(WalkError { path: dir, source });
        };
        // A record still current is used where it lies, once.
        if let Some((_, v)) = cache.get(k, dir_bytes).filter(|(_, v)| {
            v.stamp == st
                && v.git_config
                    .is_none_or(|c| c == stamp_or_missing(&dir.join(".git/config")))
        }) {
            take(
                &dir,
                v.protected.iter(),
                v.hooks.iter().map(Path::new),
                v.subdirs.iter(),
                found,
                &mut stack,
            );
            if let Some(slot) = cache.index.get_mut(&k) {
                slot.seen = true;
            }
            continue;
        }
        cache.reread += 1;
        let r = match read_one(&dir, st, names, found) {
            Ok(r) => r,
            Err(e) if e.path == dir && vanished(&e.source, &dir) => {
                cache.forget(k);
                continue;
            }
            Err(e)
                if e.path == dir
                    && dir != root
                    && e.source.raw_os_error() == Some(libc::EACCES)
                    && out_of_reach(&dir) =>
            {
                cache.forget(k);
                found.out_of_reach.push(dir.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        if cache.settle_secs < 0 || st.ctime < now - cache.settle_secs {
            scratch.clear();
            encode(&mut scratch, dir_bytes, &r);
            cache.put(k, &scratch);
        } else {
            cache.forget(k);
        }
        take(
            &dir,
            r.protected.iter().map(OsString::as_os_str),
            r.hooks.iter().map(PathBuf::as_path),
            r.subdirs.iter().map(OsString::as_os_str),
            found,
            &mut stack,
        );
    }
    Ok(())
}

/// What one directory's record adds to the scan: its protected entries and hooks paths found,
/// its subdirectories still to walk.
fn take<'a>(
    dir: &Path,
    protected: impl Iterator<Item = &'a OsStr>,
    hooks: impl Iterator<Item = &'a Path>,
    subdirs: impl Iterator<Item = &'a OsStr>,
    found: &mut Found,
    stack: &mut Vec<PathBuf>,
) {
    for p in protected {
        found.paths.push(dir.join(p));
    }
    for h in hooks {
        if h.symlink_metadata().is_ok() {
            found.paths.push(h.to_path_buf());
        } else {
            found.missing.push(h.to_path_buf());
        }
    }
    for s in subdirs {
        stack.push(dir.join(s));
    }
}

/// Whether `rel`, a path relative to a writable root, is a protected entry or lies inside one
/// (the same rule [`scan`] applies, checked on every component).
pub fn is_protected_path(rel: &Path, names: &ProtectedNames) -> bool {
    names.protects_path(rel).is_some()
}

fn is_protected(parent: &OsStr, in_git: bool, name: &OsStr, names: &ProtectedNames) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    names
        .entry(parent.to_str().unwrap_or(""), in_git, name)
        .is_some()
}

/// Reads `core.hooksPath` from a repository's config; returns the directory it names, resolved
/// against the work tree.
fn hooks_path(worktree: &Path, git_dir: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(git_dir.join("config")).ok()?;
    let value = core_hooks_path(&text)?;
    let p = if let Some(rest) = value.strip_prefix("~/") {
        PathBuf::from(std::env::var_os("HOME")?).join(rest)
    } else {
        worktree.join(value)
    };
    Some(p)
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
mod path_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn protected_paths_by_component() {
        let names = ProtectedNames::new(false);
        let p = |s: &str| is_protected_path(Path::new(s), &names);
        assert!(p(".bashrc"));
        assert!(p("a/b/.bashrc"));
        assert!(p(".vscode/tasks.json"));
        assert!(p(".git/hooks/pre-commit"));
        assert!(p(".git/modules/m/config"));
        assert!(p("x/.claude/settings.json"));
        assert!(!p("src/main.rs"));
        assert!(!p("hooks/x"));
        assert!(!p(".claude/other.json"));
        assert!(!p(".git/HEAD"));
        assert!(p("a/.GIT/hooks/x"));
        assert!(ProtectedNames::new(true)
            .protects_path(Path::new(".git/config"))
            .is_none());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const NAMES: ProtectedNames = ProtectedNames::new(false);

    #[test]
    fn only_another_users_unsearchable_directory_is_out_of_reach() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("rf-reach-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("mine/sub")).unwrap();
        fs::write(base.join("mine/sub/.bashrc"), "").unwrap();
        // One's own directory can be chmod-ed back from inside: never skipped.
        fs::set_permissions(base.join("mine"), fs::Permissions::from_mode(0o000)).unwrap();
        assert!(!out_of_reach(&base.join("mine")));
        if crate::sys::getuid() != 0 {
            let r = scan(
                &base,
                &NAMES,
                &mut ScanCache::default(),
                &mut Found::default(),
            );
            assert_eq!(r.unwrap_err().path, base.join("mine"));
        }
        fs::set_permissions(base.join("mine"), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!out_of_reach(&base.join("mine")));
        assert!(!out_of_reach(&base.join("missing")));
        // A root-owned private directory, as an unprivileged user meets one in /tmp.
        if crate::sys::getuid() != 0 {
            let private = fs::read_dir("/tmp").unwrap().flatten().find(|e| {
                e.metadata()
                    .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o001 == 0)
                    && fs::read_dir(e.path()).is_err()
            });
            if let Some(e) = private {
                assert!(out_of_reach(&e.path()), "{}", e.path().display());
            }
        }
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn a_directory_that_vanishes_during_the_scan_is_skipped_but_the_root_is_not() {
        let base = std::env::temp_dir().join(format!("rf-vanish-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("kept")).unwrap();
        fs::write(base.join("kept/.bashrc"), "").unwrap();
        let mut cache = ScanCache {
            settle_secs: -1,
            ..ScanCache::default()
        };
        scan(&base, &NAMES, &mut cache, &mut Found::default()).unwrap();
        // The root's record (still current) lists a subdirectory that is gone by the time the
        // scan reaches it, as when something deletes it mid-scan.
        let mut rec = cache.record(&base).unwrap();
        rec.subdirs.push("gone".into());
        cache.replace(&base, &rec);
        let mut found = Found::default();
        scan(&base, &NAMES, &mut cache, &mut found).unwrap();
        assert_eq!(found.paths, [base.join("kept/.bashrc")]);
        // A root that does not exist is still an error.
        let missing = base.join("no-such-root");
        assert!(scan(
            &missing,
            &NAMES,
            &mut ScanCache::default(),
            &mut Found::default()
        )
        .is_err());
        let _ = fs::remove_dir_all(&base);
    }

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
        fs::create_dir_all(deep.join(".git/modules/sub/hooks")).unwrap();
        fs::write(deep.join(".git/modules/sub/commondir"), "../..").unwrap();
        let mut found = Found::default();
        scan(&base, &NAMES, &mut ScanCache::default(), &mut found).unwrap();
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
            "a/b/c/d/e/.git/modules/sub/commondir",
            "a/b/c/d/e/.git/modules/sub/hooks",
            "a/b/c/d/e/myhooks",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn cache_skips_unchanged_directories_and_sees_changes() {
        let base = std::env::temp_dir().join(format!("rf-protect-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("a/b/c")).unwrap();
        fs::create_dir_all(base.join("x/.git")).unwrap();
        fs::write(base.join("a/b/.bashrc"), "").unwrap();
        let file =
            std::env::temp_dir().join(format!("rf-protect-cache-{}.bin", std::process::id()));
        let run = |cache: &mut ScanCache| {
            let mut found = Found::default();
            scan(&base, &NAMES, cache, &mut found).unwrap();
            let mut p: Vec<_> = found
                .paths
                .iter()
                .map(|p| p.strip_prefix(&base).unwrap().to_path_buf())
                .collect();
            p.sort();
            p
        };
        let mut cache = ScanCache {
            settle_secs: -1,
            ..ScanCache::default()
        };
        let first = run(&mut cache);
        assert_eq!(first, vec![PathBuf::from("a/b/.bashrc")]);
        cache.save(&file).unwrap();

        let mut cache = ScanCache::load(&file);
        cache.settle_secs = -1;
        assert_eq!(run(&mut cache), first);
        assert_eq!(cache.reread, 0, "nothing changed, nothing read again");

        // A new protected entry deep down, and a hooks path configured in place.
        fs::create_dir(base.join("a/b/c/.vscode")).unwrap();
        fs::write(base.join("x/.git/config"), "[core]\nhooksPath = h\n").unwrap();
        fs::create_dir(base.join("x/h")).unwrap();
        let mut cache = ScanCache::load(&file);
        cache.settle_secs = -1;
        let mut got = run(&mut cache);
        got.sort();
        assert_eq!(
            got,
            vec![
                PathBuf::from("a/b/.bashrc"),
                PathBuf::from("a/b/c/.vscode"),
                PathBuf::from("x/.git/config"),
                PathBuf::from("x/h")
            ]
        );
        assert!(cache.reread >= 2 && cache.reread < 6, "{}", cache.reread);

        // A damaged cache file is an empty cache, not an error.
        fs::write(&file, b"garbage").unwrap();
        let mut cache = ScanCache::load(&file);
        assert_eq!(run(&mut cache).len(), 4);
        fs::remove_dir_all(&base).unwrap();
        fs::remove_file(&file).unwrap();
    }

    #[test]
    fn the_cache_keeps_only_visited_directories_and_compares_paths() {
        let base = std::env::temp_dir().join(format!("rf-protect-keep-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("a/b")).unwrap();
        fs::write(base.join("a/b/.bashrc"), "").unwrap();
        let file = base.with_extension("bin");
        let mut cache = ScanCache {
            settle_secs: -1,
            ..ScanCache::default()
        };
        scan(&base, &NAMES, &mut cache, &mut Found::default()).unwrap();
        cache.save(&file).unwrap();
        let cache = ScanCache::load(&file);
        let rec = cache.record(&base.join("a/b")).unwrap();
        assert_eq!(rec.protected, vec![OsString::from(".bashrc")]);
        // A record found under another path's key is not that path's.
        let (_, v) = cache
            .get(
                key(base.join("a").as_os_str().as_bytes()),
                base.join("a").as_os_str().as_bytes(),
            )
            .unwrap();
        assert_eq!(v.path, base.join("a").as_os_str().as_bytes());
        assert!(cache
            .get(
                key(base.join("a").as_os_str().as_bytes()),
                base.join("a/b").as_os_str().as_bytes()
            )
            .is_none());

        // a/b removed: its record is not written again.
        fs::remove_dir_all(base.join("a/b")).unwrap();
        let mut cache = ScanCache::load(&file);
        cache.settle_secs = -1;
        let mut found = Found::default();
        scan(&base, &NAMES, &mut cache, &mut found).unwrap();
        assert!(found.paths.is_empty());
        cache.save(&file).unwrap();
        let cache = ScanCache::load(&file);
        assert!(cache.record(&base.join("a/b")).is_none());
        assert!(cache.record(&base.join("a")).is_some());
        assert_eq!(cache.index.len(), 2);
        fs::remove_dir_all(&base).unwrap();
        fs::remove_file(&file).unwrap();
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
