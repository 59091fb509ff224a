//! The creation guard: protected names that do not exist yet cannot be created, at any depth of
//! a writable root, and nothing is created in the user's tree to reserve them.
//!
//! Every syscall that creates a name (open with O_CREAT, mkdir, mknod, symlink, link, rename)
//! stops on a seccomp user notification, answered by the sandbox's PID 1: it is inside the
//! sandbox (its mounts, root, uid, no capabilities), it is not itself under the guard, and as
//! the ancestor of every process there it may read their memory even under Yama's ptrace
//! restrictions. It copies the path strings out of the caller's memory once, resolves the
//! parent directory, checks the final name against the rules, and performs the operation itself
//! on the strings it copied; an opened file is injected into the caller
//! (SECCOMP_IOCTL_NOTIF_ADDFD). The caller's syscall is never simply continued, so a second
//! thread rewriting the path after the check changes nothing. Refusals are reported to the
//! supervisor, which lists them when the run ends.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use ringfence_policy::{is_git_dir, same_name};

use crate::sandbox::send_fds;

/// What may not be created inside the writable roots.
#[derive(Clone, Debug, Default)]
pub struct GuardRules {
    /// The protected-name rule (names, `(parent, name)` pairs such as `.git/hooks`, and the
    /// names refused anywhere inside a `.git` directory: `hooks`, `config`, `commondir`,
    /// `gitdir`, ..., also for submodules and worktrees).
    pub protected: ringfence_policy::ProtectedNames,
    /// Names that may be created as directories but not as files or symlinks, nor by renaming
    /// something to them (`.git`, `.claude`): a `.git` file or symlink could point git at hooks.
    pub parents: Vec<String>,
    /// Absolute paths (and everything under them) that may not be created: missing hook
    /// directories named by core.hooksPath, denyWrite paths that do not exist yet. Renaming or
    /// symlinking something onto one of their parents is refused too.
    pub paths: Vec<PathBuf>,
    /// The writable roots; outside them nothing is writable anyway (or it is private scratch).
    pub roots: Vec<PathBuf>,
    /// denyWrite paths that do not exist yet: they may not be created, and the refusal looks
    /// like a read-only file system (EROFS), as writing an existing denyWrite path does.
    pub deny_paths: Vec<PathBuf>,
    /// Writable single files (see [`WritableDir`]): each may be created, written and replaced
    /// by a rename from a temporary name beside it; nothing else in its directory.
    pub files: Vec<PathBuf>,
    /// `filesystem.ask`: an open for writing, a mkdir, a rename, a link, a symlink or an
    /// unlink that the read-only view refuses is asked about (`MSG_ASK_FS`); the supervisor
    /// performs an approved one on the host.
    /// `Some(seconds)`: how long PID 1 waits for the answer.
    pub ask: Option<u64>,
    /// `filesystem.askRead`: an open for reading of a file in `hidden` is asked about
    /// (`MSG_ASK_FS`, op `read`); the supervisor opens an approved one on the host. Every open
    /// then reaches the guard; all others continue as the caller's own. `Some(seconds)`: how
    /// long PID 1 waits for the answer.
    pub ask_read: Option<u64>,
    /// The hidden (denyRead) paths that may be asked about: masks of their own in the sandbox
    /// (an empty directory, an empty file), credential files left out.
    pub hidden: Vec<PathBuf>,
}

const OP_OPEN: u8 = 1;
const OP_MKDIR: u8 = 2;
const OP_MKNOD: u8 = 3;
const OP_SYMLINK: u8 = 4;
const OP_LINK: u8 = 5;
const OP_RENAME: u8 = 6;
const OP_BIND: u8 = 7;
/// chmod, chown and unlink of an existing name: see [`FILE_META`](crate::seccomp).
const OP_CHMOD: u8 = 8;
const OP_CHOWN: u8 = 9;
const OP_UNLINK: u8 = 10;
/// A question about reading a hidden file (`filesystem.askRead`); never a report.
const OP_READ: u8 = 13;
/// Open flags that make an open more than a read (as `seccomp::GUARDED_OPEN`).
const WRITING_OPEN: i32 = libc::O_CREAT | libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC;
/// Set on the op byte of a report when the kernel refused the write (a read-only mount: the
/// path is outside the writable roots) rather than a rule.
const READ_ONLY: u8 = 0x80;

/// One request from the supervisor to the agent.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    id: u64,
    /// The calling thread, in the sandbox's PID namespace.
    pid: u32,
    op: u8,
    flags: i32,
    mode: u32,
    umask: u32,
    dev: u64,
    /// chown's owner and group.
    owner: (u32, u32),
    path1: Vec<u8>,
    path2: Vec<u8>,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cstr(b: &[u8]) -> Result<CString, i32> {
    CString::new(b).map_err(|_| libc::EINVAL)
}

impl GuardRules {
    fn under_root(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// Whether creating `name` in the directory `parent` (its path in the sandbox) as `what`
    /// is refused, whatever the repository.
    #[cfg(test)]
    fn refuses(&self, parent: &Path, name: &[u8], what: Creation) -> bool {
        self.verdict(parent, name, what) != Verdict::Allow
    }

    /// What the rules say about creating `name` in the directory `parent` (its path in the
    /// sandbox) as `what`.
    fn verdict(&self, parent: &Path, name: &[u8], what: Creation) -> Verdict {
        let full = parent.join(OsStr::from_bytes(name));
        if !self.under_root(&full) {
            return Verdict::Allow;
        }
        if self.paths.iter().any(|p| full.starts_with(p)) {
            return Verdict::Refuse;
        }
        // A directory put in place whole (renamed or symlinked) could bring a protected path
        // below it into existence.
        if what.brings_content() && self.paths.iter().any(|p| p.starts_with(&full)) {
            return Verdict::Refuse;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return Verdict::Allow;
        };
        let parent_name = parent
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let in_git = parent
            .components()
            .any(|c| c.as_os_str().to_str().is_some_and(is_git_dir));
        let rule = self.protected.entry(parent_name, in_git, name);
        if rule.is_some_and(|r| r.is_git()) {
            // In a repository this run created, git may make its hooks directory (empty; only
            // samples may go in it) and put a checked configuration in place by renaming it
            // onto `config`: that is how git writes it.
            return match (name, what) {
                ("hooks", Creation::Dir) => Verdict::NewRepository,
                ("config" | "config.worktree", Creation::Rename | Creation::File) => {
                    Verdict::NewRepository
                }
                _ => Verdict::Refuse,
            };
        }
        if rule.is_some() {
            return Verdict::Refuse;
        }
        if in_git && same_name(parent_name, "hooks") {
            // Only a hooks directory of a new repository can be written (an existing one is
            // read-only); git runs a hook by its exact name, never a `*.sample`.
            return if name.ends_with(".sample") && what != Creation::Dir {
                Verdict::Allow
            } else {
                Verdict::Refuse
            };
        }
        if in_git && what == Creation::Symlink {
            // A symlink inside an existing git directory could make it take hooks or
            // configuration from anywhere. git itself makes one only to probe whether the file
            // system has symlinks, when it creates a repository.
            return Verdict::NewRepository;
        }
        if what != Creation::Dir && self.parents.iter().any(|p| same_name(name, p)) {
            return Verdict::Refuse;
        }
        Verdict::Allow
    }
}

/// The rules' answer for one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Refuse,
    /// Allowed only inside a `.git` directory that this run created (see `Agent::new_git`).
    NewRepository,
}

/// How a name comes into existence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Creation {
    /// A file, node or socket: nothing can be below it.
    File,
    /// An empty directory (mkdir).
    Dir,
    /// A hard link: whatever it holds appears there.
    Link,
    /// A symlink: whatever it points to appears there.
    Symlink,
    /// A rename target: whatever was renamed appears there.
    Rename,
}

impl Creation {
    /// Whether what appears could already hold something below it.
    fn brings_content(self) -> bool {
        matches!(self, Creation::Link | Creation::Symlink | Creation::Rename)
    }
}

/// The parent directory of `path` (relative to `dir`), opened, with its path and the final name.
fn resolve_parent(dir: RawFd, path: &[u8]) -> Result<(OwnedFd, PathBuf, Vec<u8>), i32> {
    let mut p = path;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    let (parent, name): (&[u8], &[u8]) = match p.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &p[1..]),
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (b".", p),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(libc::EEXIST);
    }
    let c = cstr(parent)?;
    // SAFETY: c is a valid string; the fd is checked before it is owned.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let where_ =
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| libc::EIO)?;
    Ok((fd, where_, name.to_vec()))
}

const RENAME_NOREPLACE: i32 = 1;
const RENAME_EXCHANGE: i32 = 2;

/// (device, inode) of an open file or directory.
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a descriptor and st a valid buffer.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn stat_at(dir: RawFd, name: &CString) -> Option<libc::stat> {
    // SAFETY: stat is plain data filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is a valid string and st a valid stat buffer.
    (unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0)
        .then_some(st)
}

/// (device, inode) of `name` in `dir`, not following a final symlink.
fn file_id_at(dir: RawFd, name: &CString) -> Option<(u64, u64)> {
    stat_at(dir, name).map(|st| (st.st_dev, st.st_ino))
}

/// The file type bits (S_IFDIR, ...) of `name` in `dir`, not following a final symlink.
fn file_type_at(dir: RawFd, name: &CString) -> Option<u32> {
    stat_at(dir, name).map(|st| st.st_mode & libc::S_IFMT)
}

/// Whether `name` in `dir` is /dev/tty (character device 5:0), not following a final symlink.
fn is_dev_tty(dir: RawFd, name: &CString) -> bool {
    stat_at(dir, name).is_some_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(5, 0)
    })
}

/// The path of `pid`'s controlling terminal when it is a pseudo-terminal (the only kind a
/// sandbox is given), from the `tty_nr` field of /proc/<pid>/stat.
fn caller_tty(pid: u32) -> Option<CString> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let tty_nr: u32 = rest.split_whitespace().nth(4)?.parse().ok()?;
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    // Unix98 pseudo-terminal slaves: majors 136-143.
    if !(136..=143).contains(&major) {
        return None;
    }
    CString::new(format!("/dev/pts/{}", (major - 136) * 256 + minor)).ok()
}

/// Whether `parent/name` is a hook sample inside a git directory's hooks.
fn is_hook_sample(parent: &Path, name: &[u8]) -> bool {
    parent.file_name().is_some_and(|n| n == "hooks")
        && git_dir_of(parent).is_some()
        && name.ends_with(b".sample")
}

/// The innermost `.git` directory that `dir` (a path in the sandbox) is, or is inside.
fn git_dir_of(dir: &Path) -> Option<PathBuf> {
    let mut p = dir;
    loop {
        if p.file_name().is_some_and(|n| n == ".git") {
            return Some(p.to_path_buf());
        }
        p = p.parent()?;
    }
}

fn on_procfs(fd: RawFd) -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    // SAFETY: statfs is plain data filled by fstatfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid descriptor and st a valid buffer.
    unsafe { libc::fstatfs(fd, &mut st) == 0 && st.f_type as i64 == PROC_SUPER_MAGIC }
}

/// When `parent/name` is one of PID 1's own /proc entries, the same entry of the caller.
fn own_proc_path(parent: &Path, name: &[u8], caller: u32) -> Option<Vec<u8>> {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let rest = parent.strip_prefix(format!("/proc/{me}")).ok()?;
    let rest = match rest.strip_prefix(format!("task/{me}")) {
        Ok(r) => r.to_path_buf(),
        Err(_) => rest.to_path_buf(),
    };
    let mut out = PathBuf::from(format!("/proc/{caller}")).join(rest);
    out.push(OsStr::from_bytes(name));
    Some(out.into_os_string().into_vec())
}

/// `/proc/<pid>/fd/<n>` of the caller itself: the descriptor number.
fn caller_fd(path: &[u8], pid: u32) -> Option<i32> {
    let prefix = format!("/proc/{pid}/fd/");
    let rest = path.strip_prefix(prefix.as_bytes())?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Whether `name` in `dir`, following symlinks (and /proc's magic links), is a FIFO or pipe.
fn follows_to_fifo(dir: RawFd, name: &CString) -> bool {
    // SAFETY: stat is plain data filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is a valid string and st a valid stat buffer.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, 0) };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
}

/// What is at `name` in `dir` now, without following a final symlink.
enum Existing {
    Nothing,
    Symlink(Vec<u8>),
    Fifo,
    Other,
}

fn existing(dir: RawFd, name: &CString) -> Existing {
    // SAFETY: stat is plain data filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is a valid string and st a valid stat buffer.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Existing::Nothing;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => Existing::Fifo,
        libc::S_IFLNK => {
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: buf is a valid writable buffer of the given length.
            let n = unsafe {
                libc::readlinkat(
                    dir,
                    name.as_ptr(),
                    buf.as_mut_ptr() as *mut libc::c_char,
                    buf.len(),
                )
            };
            if n < 0 {
                return Existing::Other;
            }
            buf.truncate(n as usize);
            Existing::Symlink(buf)
        }
        _ => Existing::Other,
    }
}

/// PID 1's side of the guard: answers notifications from `listener`, reports refusals on
/// `report` (the channel to the supervisor).
pub struct Agent<'a> {
    /// The creation guard's rules; None when nothing is writable (only exec reports).
    rules: Option<&'a GuardRules>,
    /// Writable handles on the directories of writable single files.
    file_dirs: &'a [WritableDir],
    listener: RawFd,
    report: RawFd,
    /// The path the last rule refusal was about.
    refused: std::cell::RefCell<Option<Vec<u8>>>,
    /// The noted refusal came from a read-only mount (EROFS), not from a rule.
    read_only: std::cell::Cell<bool>,
    /// Reports not sent because the channel to the supervisor was full.
    dropped: std::cell::Cell<u64>,
    /// Reports not sent yet (see `MSG_BATCH`), and when the first of them was queued.
    batch: std::cell::RefCell<Batch>,
    /// `.git` directories created by this run (device, inode): repositories the sandbox made
    /// itself, where git may write its hooks directory and a checked configuration.
    new_git: std::cell::RefCell<std::collections::HashSet<(u64, u64)>>,
    /// Configuration files of new repositories, put in place by the guard after their content
    /// was checked: nothing in the sandbox may open them for writing.
    sealed: std::cell::RefCell<std::collections::HashSet<(u64, u64)>>,
    /// Makes the names of the guard's own temporary files unique.
    temp_counter: std::cell::Cell<u64>,
    /// `network.allowUnixSockets` (see `with_unix_sockets`); None: no list.
    unix: Option<&'a UnixSocketRules>,
    /// Mount ids of the sandbox's scratch mounts, where every socket is reachable.
    scratch_mounts: Vec<u64>,
    /// Unix sockets this run bound (device, inode): reachable like the scratch ones.
    bound: std::cell::RefCell<std::collections::HashSet<(u64, u64)>>,
}

/// Message tag of a refusal report on the supervisor channel.
pub const MSG_REFUSED: u8 = b'D';
/// A question from PID 1 (`filesystem.ask`): op, flags (i32), mode (u32), pid (u32), the path,
/// and for a rename, a link or a symlink a NUL and the second path (see [`FsQuestion::other`]).
pub const MSG_ASK_FS: u8 = b'Q';
/// The supervisor's answer: the result (i32: >= 0, or -errno), with the opened file attached
/// for an open.
pub const MSG_FS_ANSWER: u8 = b'A';

/// What a `MSG_ASK_FS` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsQuestion {
    /// `open`, `mkdir`, `rename`, `link`, `symlink`, `unlink`, `rmdir` (or `connect`).
    pub op: &'static str,
    pub flags: i32,
    pub mode: u32,
    /// The calling thread, in the sandbox's PID namespace.
    pub pid: u32,
    /// The path as the sandbox resolved it (its parent has no symlinks left); for a rename or
    /// a link the existing name, for a symlink the link to create.
    pub path: PathBuf,
    /// For a rename or a link: the new name, resolved likewise. For a symlink: its target, as
    /// written (never resolved).
    pub other: Option<PathBuf>,
}

impl FsQuestion {
    pub fn decode(b: &[u8]) -> Option<FsQuestion> {
        let num = |i: usize| -> Option<[u8; 4]> { b.get(i..i + 4)?.try_into().ok() };
        let flags = i32::from_ne_bytes(num(1)?);
        let (op, two) = match *b.first()? {
            OP_OPEN => ("open", false),
            OP_MKDIR => ("mkdir", false),
            OP_CONNECT => ("connect", false),
            OP_RENAME => ("rename", true),
            OP_LINK => ("link", true),
            OP_SYMLINK => ("symlink", true),
            OP_READ => ("read", false),
            OP_UNLINK if flags & libc::AT_REMOVEDIR != 0 => ("rmdir", false),
            OP_UNLINK => ("unlink", false),
            _ => return None,
        };
        let rest = b.get(13..)?;
        let (path, other) = match rest.iter().position(|&c| c == 0) {
            Some(i) if two => (&rest[..i], Some(&rest[i + 1..])),
            None if !two => (rest, None),
            _ => return None,
        };
        Some(FsQuestion {
            op,
            flags,
            mode: u32::from_ne_bytes(num(5)?),
            pid: u32::from_ne_bytes(num(9)?),
            path: PathBuf::from(OsStr::from_bytes(path)),
            other: other.map(|o| PathBuf::from(OsStr::from_bytes(o))),
        })
    }
}

/// The caller's result of a question: 0 when approved and done, the host's errno when approved
/// and failed, `refused` when not approved.
fn asked(r: Option<Result<Option<OwnedFd>, i32>>, refused: i32) -> Result<i32, i32> {
    match r {
        Some(Ok(_)) => Ok(0),
        Some(Err(e)) => Err(e),
        None => Err(refused),
    }
}

/// Answers a [`FsQuestion`] on `channel` (the supervisor's end): `result` is >= 0 or -errno;
/// `file` is the opened file for an approved open.
pub fn answer_fs(channel: &OwnedFd, result: i32, file: Option<&OwnedFd>) -> io::Result<()> {
    let mut msg = vec![MSG_FS_ANSWER];
    msg.extend_from_slice(&result.to_ne_bytes());
    crate::sandbox::send_with_fd(channel.as_raw_fd(), &msg, file.map(|f| f.as_raw_fd()))
}

impl Agent<'_> {
    /// Refuses creating `name` in `parent` (held open as `dir`) when a rule says so, noting
    /// the path. `Ok(Verdict::NewRepository)` when it is allowed only because the parent is
    /// inside a `.git` directory this run created.
    ///
    /// The errno tells the two kinds of refusal apart, as programs see them: a denyWrite path
    /// gets EROFS, what writing an existing one (a read-only bind) or anything outside the
    /// writable roots (the read-only host tree) gives, so tools fall back as they do on a
    /// read-only file system; a protected name gets EACCES, since its directory is writable
    /// and only that name is refused (a permission on the name, not a read-only file system).
    fn check(
        &self,
        dir: RawFd,
        parent: &Path,
        name: &[u8],
        what: Creation,
    ) -> Result<Verdict, i32> {
        if self
            .rules
            .is_some_and(|r| r.denies_write(parent, name, what))
        {
            let mut p = parent.as_os_str().as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            *self.refused.borrow_mut() = Some(p);
            self.read_only.set(true);
            return Err(libc::EROFS);
        }
        // Without rules the filter sends no creating call here; refuse if one comes anyway.
        let verdict = self
            .rules
            .map_or(Verdict::Refuse, |r| r.verdict(parent, name, what));
        match verdict {
            Verdict::Allow => Ok(Verdict::Allow),
            Verdict::NewRepository if self.in_new_repository(dir) => Ok(Verdict::NewRepository),
            _ => Err(self.refuse(parent, name)),
        }
    }

    /// Notes a rule refusal of `parent/name` for the report; the errno to answer.
    fn refuse(&self, parent: &Path, name: &[u8]) -> i32 {
        let mut p = parent.as_os_str().as_bytes().to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        *self.refused.borrow_mut() = Some(p);
        self.read_only.set(false);
        libc::EACCES
    }

    /// Whether the directory `dir` is a `.git` directory this run created, or inside one. The
    /// walk goes up through the directories themselves (`..`), not through a path that a
    /// rename could change meanwhile.
    fn in_new_repository(&self, dir: RawFd) -> bool {
        let new_git = self.new_git.borrow();
        if new_git.is_empty() {
            return false;
        }
        let mut held: Option<OwnedFd> = None;
        let mut last = None;
        for _ in 0..256 {
            let cur = held.as_ref().map_or(dir, |f| f.as_raw_fd());
            let Some(id) = file_id(cur) else { return false };
            if new_git.contains(&id) {
                return true;
            }
            if last == Some(id) {
                return false; // the root
            }
            last = Some(id);
            // SAFETY: a constant name relative to a directory fd we hold; checked before owned.
            let up = unsafe {
                libc::openat(
                    cur,
                    c"..".as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if up < 0 {
                return false;
            }
            // SAFETY: up is fresh and owned by nobody else.
            held = Some(unsafe { OwnedFd::from_raw_fd(up) });
        }
        false
    }

    /// `filesystem.ask`: asks the supervisor about `parent/name`, which the read-only view
    /// refused; `None` when there is nothing to ask (no ask, or not a read-only refusal), else
    /// the supervisor's result and, for an open, the file it opened on the host. PID 1 waits for
    /// the answer (other calls wait meanwhile), at most the ask timeout.
    fn ask_host(
        &self,
        op: u8,
        req: &Request,
        parent: &Path,
        name: &[u8],
        mode: u32,
    ) -> Option<Result<Option<OwnedFd>, i32>> {
        let path = parent.join(OsStr::from_bytes(name));
        self.ask_host_two(op, req, path.as_os_str().as_bytes(), None, mode)
    }

    /// [`ask_host`](Self::ask_host) for a path already joined, with the second path of a
    /// rename, a link or a symlink.
    fn ask_host_two(
        &self,
        op: u8,
        req: &Request,
        path: &[u8],
        other: Option<&[u8]>,
        mode: u32,
    ) -> Option<Result<Option<OwnedFd>, i32>> {
        let wait = self.rules.and_then(|r| r.ask)?;
        let mode = mode & !req.umask;
        if !self.read_only.get() || self.refused.borrow().is_none() {
            return None;
        }
        let mut msg = path.to_vec();
        if let Some(o) = other {
            if path.contains(&0) || o.contains(&0) {
                return None;
            }
            msg.push(0);
            msg.extend_from_slice(o);
        }
        self.ask_supervisor(op, req.flags, mode, req.pid, &msg, wait)
    }

    /// Sends a question (`MSG_ASK_FS`) and waits up to `wait` seconds (and a margin) for its
    /// answer. `None`: refused (or no answer); else the supervisor's result, with the file it
    /// opened for an approved open. The noted refusal is dropped unless refused.
    fn ask_supervisor(
        &self,
        op: u8,
        flags: i32,
        mode: u32,
        pid: u32,
        path: &[u8],
        wait: u64,
    ) -> Option<Result<Option<OwnedFd>, i32>> {
        let mut msg = vec![MSG_ASK_FS, op];
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&mode.to_ne_bytes());
        msg.extend_from_slice(&pid.to_ne_bytes());
        msg.extend_from_slice(path);
        if crate::sandbox::send_with_fd(self.report, &msg, None).is_err() {
            return None;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait + 5);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !crate::process::readable_within(self.report, left) {
                return None;
            }
            let mut buf = [0u8; 16];
            let Ok((n, fd)) = crate::sandbox::recv_with_fd(self.report, &mut buf) else {
                return None;
            };
            if n != 5 || buf[0] != MSG_FS_ANSWER {
                continue;
            }
            let result = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
            if result == -libc::EROFS {
                // Refused: reported as the read-only refusal it was.
                return None;
            }
            self.refused.borrow_mut().take();
            self.read_only.set(false);
            if result < 0 {
                // Approved, and the host's own call failed (EEXIST, ENOENT, ...).
                return Some(Err(-result));
            }
            return Some(Ok(fd));
        }
    }

    /// Whether `filesystem.ask` is on.
    fn asking(&self) -> bool {
        self.rules.is_some_and(|r| r.ask.is_some())
    }

    /// `filesystem.ask` for a symlink the read-only view refused: the link's path, and its
    /// target as written.
    fn ask_symlink(&self, req: &Request, dir: RawFd) -> Result<i32, i32> {
        let (_, where_, name) = self.parent_of(dir, &req.path2)?;
        let path = where_.join(OsStr::from_bytes(&name));
        let r = self.ask_host_two(
            OP_SYMLINK,
            req,
            path.as_os_str().as_bytes(),
            Some(&req.path1),
            0,
        );
        asked(r, libc::EROFS)
    }

    /// `filesystem.ask` for a link or a rename the read-only view refused: both names, each
    /// as the sandbox resolved its parent.
    fn ask_two(&self, op: u8, req: &Request, dir1: RawFd, dir2: RawFd) -> Result<i32, i32> {
        let (_, old_where, old_name) = self.parent_of(dir1, &req.path1)?;
        let (_, new_where, new_name) = self.parent_of(dir2, &req.path2)?;
        let old = old_where.join(OsStr::from_bytes(&old_name));
        let new = new_where.join(OsStr::from_bytes(&new_name));
        let r = self.ask_host_two(
            op,
            req,
            old.as_os_str().as_bytes(),
            Some(new.as_os_str().as_bytes()),
            0,
        );
        asked(r, libc::EROFS)
    }

    /// `filesystem.ask` for an unlink or rmdir that did not reach a writable single file: when
    /// the name's directory is on a read-only mount (outside the writable roots), it is asked
    /// about; `None` otherwise (the caller's own call goes on).
    fn ask_unlink(&self, req: &Request, dir: RawFd) -> Option<Result<i32, i32>> {
        self.rules?.ask?;
        let (parent, where_, name) = self.parent_of(dir, &req.path1).ok()?;
        // SAFETY: statvfs is plain data filled by fstatvfs.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: parent is a valid descriptor and st a valid buffer.
        if unsafe { libc::fstatvfs(parent.as_raw_fd(), &mut st) } < 0
            || st.f_flag & libc::ST_RDONLY == 0
        {
            return None;
        }
        let mut p = where_.as_os_str().as_bytes().to_vec();
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(&name);
        *self.refused.borrow_mut() = Some(p.clone());
        self.read_only.set(true);
        Some(asked(
            self.ask_host_two(OP_UNLINK, req, &p, None, 0),
            libc::EROFS,
        ))
    }

    /// `filesystem.ask` for a mkdir the read-only view refused.
    fn ask_mkdir(&self, req: &Request, dir: RawFd) -> Option<Result<i32, i32>> {
        let (_, where_, name) = self.parent_of(dir, &req.path1).ok()?;
        let mode = req.mode & !req.umask;
        self.ask_host(OP_MKDIR, req, &where_, &name, mode)
            .map(|r| r.map(|_| 0))
    }

    /// The errno of a failed creation; EROFS (the path is outside the writable roots) is noted
    /// for the activity log. The mount already refused it: this only reports.
    fn failed(&self, parent: &Path, name: &[u8]) -> i32 {
        let e = errno();
        if e == libc::EROFS && self.refused.borrow().is_none() {
            let mut p = parent.as_os_str().as_bytes().to_vec();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            *self.refused.borrow_mut() = Some(p);
            self.read_only.set(true);
        }
        e
    }

    /// Completes the caller's syscall: with `fd` installed in the caller, or with `result`
    /// (>= 0, or -errno).
    fn answer(&self, req: &Request, result: i64, fd: Option<&OwnedFd>) {
        if let Some(path) = self.refused.borrow_mut().take() {
            let program = fs::read(format!("/proc/{}/comm", req.pid)).unwrap_or_default();
            let program = program.strip_suffix(b"\n").unwrap_or(&program);
            let op = if self.read_only.take() {
                req.op | READ_ONLY
            } else {
                req.op
            };
            let mut msg = vec![MSG_REFUSED, op];
            msg.extend_from_slice(&req.pid.to_ne_bytes());
            let mut comm = [0u8; 16];
            for (d, s) in comm.iter_mut().zip(program) {
                *d = *s;
            }
            msg.extend_from_slice(&comm);
            msg.extend_from_slice(&path);
            self.send_report(&msg);
        }
        match fd {
            Some(fd) if result >= 0 => {
                let newfd_flags = if req.flags & libc::O_CLOEXEC != 0 {
                    libc::O_CLOEXEC as u32
                } else {
                    0
                };
                let addfd = libc::seccomp_notif_addfd {
                    id: req.id,
                    flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
                    srcfd: fd.as_raw_fd() as u32,
                    newfd: 0,
                    newfd_flags,
                };
                // SAFETY: addfd is a valid seccomp_notif_addfd; with FLAG_SEND the kernel
                // installs the fd in the caller and completes its syscall with the fd number.
                // A failure means the caller is gone.
                unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) };
            }
            _ => respond(self.listener, req.id, result),
        }
    }

    fn serve(&self, req: &Request, dir1: RawFd, dir2: RawFd) {
        // SAFETY: umask only changes this process's file creation mask.
        unsafe { libc::umask(req.umask as libc::mode_t) };
        let r = match req.op {
            OP_OPEN => return self.open(req, dir1),
            OP_MKDIR => {
                let r = self.simple(dir1, &req.path1, Creation::Dir, |d, n| {
                    // SAFETY: n is a valid string; d a directory fd.
                    unsafe { libc::mkdirat(d, n.as_ptr(), req.mode as libc::mode_t) }
                });
                match r {
                    Err(libc::EROFS) => self.ask_mkdir(req, dir1).unwrap_or(r),
                    r => r,
                }
            }
            OP_MKNOD => self.simple(dir1, &req.path1, Creation::File, |d, n| {
                // SAFETY: n is a valid string; d a directory fd.
                unsafe { libc::mknodat(d, n.as_ptr(), req.mode as libc::mode_t, req.dev) }
            }),
            OP_SYMLINK => match cstr(&req.path1) {
                Ok(target) => {
                    let r = self.simple(dir2, &req.path2, Creation::Symlink, |d, n| {
                        // SAFETY: target and n are valid strings; d a directory fd.
                        unsafe { libc::symlinkat(target.as_ptr(), d, n.as_ptr()) }
                    });
                    match r {
                        Err(libc::EROFS) if self.asking() => self.ask_symlink(req, dir2),
                        r => r,
                    }
                }
                Err(e) => Err(e),
            },
            OP_LINK => match cstr(&req.path1) {
                Ok(old) => {
                    let r = self.simple(dir2, &req.path2, Creation::Link, |d, n| {
                        // SAFETY: old and n are valid strings; dir1 and d are directory fds.
                        unsafe { libc::linkat(dir1, old.as_ptr(), d, n.as_ptr(), req.flags) }
                    });
                    match r {
                        // Only a link of the name itself (no AT_SYMLINK_FOLLOW, no
                        // AT_EMPTY_PATH) is asked about.
                        Err(libc::EROFS) if req.flags == 0 && self.asking() => {
                            self.ask_two(OP_LINK, req, dir1, dir2)
                        }
                        r => r,
                    }
                }
                Err(e) => Err(e),
            },
            OP_RENAME => self.rename(req, dir1, dir2),
            _ => Err(libc::ENOSYS),
        };
        self.answer(req, r.map_or_else(|e| -(e as i64), |v| v as i64), None);
    }

    fn simple(
        &self,
        dir: RawFd,
        path: &[u8],
        what: Creation,
        f: impl FnOnce(RawFd, &CString) -> libc::c_int,
    ) -> Result<i32, i32> {
        let (parent, where_, name) = self.parent_of(dir, path)?;
        let n = cstr(&name)?;
        if let Err(e) = self.check(parent.as_raw_fd(), &where_, &name, what) {
            // These calls never replace a name: when it exists the kernel's answer is EEXIST,
            // and nothing was refused (libgit2 links a lock file onto `config` before it
            // renames it; `mkdir -p` meets existing directories).
            if file_type_at(parent.as_raw_fd(), &n).is_some() {
                self.refused.borrow_mut().take();
                return Err(libc::EEXIST);
            }
            return Err(e);
        }
        if f(parent.as_raw_fd(), &n) < 0 {
            return Err(self.failed(&where_, &name));
        }
        if what == Creation::Dir && name == b".git" {
            // A repository this run creates: remembered by the directory itself, so that a
            // rename of anything above it changes nothing.
            if let Some(id) = file_id_at(parent.as_raw_fd(), &n) {
                self.new_git.borrow_mut().insert(id);
            }
        }
        Ok(0)
    }

    /// bind(2) on a duplicate of the caller's socket. A unix socket path is a new name: its
    /// parent is resolved once and the bind happens inside it by the final name alone.
    fn bind(&self, req: &Request, sock: RawFd) {
        let r = self.bind_inner(req, sock);
        self.answer(req, r.map_or_else(|e| -(e as i64), |v| v as i64), None);
    }

    fn bind_inner(&self, req: &Request, sock: RawFd) -> Result<i32, i32> {
        let addr = &req.path1;
        let family = addr
            .get(..2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]) as i32)
            .ok_or(libc::EINVAL)?;
        let path = addr.get(2..).unwrap_or_default();
        let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
        let do_bind = |ptr: *const libc::sockaddr, len: usize| {
            // SAFETY: ptr points to `len` readable bytes of a socket address we own.
            if unsafe { libc::bind(sock, ptr, len as libc::socklen_t) } < 0 {
                Err(errno())
            } else {
                Ok(0)
            }
        };
        if family != libc::AF_UNIX || path.is_empty() {
            // Not a path: an inet address, an abstract or an autobound unix address.
            return do_bind(addr.as_ptr() as *const libc::sockaddr, addr.len());
        }
        let (parent, where_, name) = self.parent_of(libc::AT_FDCWD, path)?;
        self.check(parent.as_raw_fd(), &where_, &name, Creation::File)?;
        // SAFETY: sockaddr_un is plain data; zeroed is valid.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        if name.len() >= sun.sun_path.len() {
            return Err(libc::ENAMETOOLONG);
        }
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in sun.sun_path.iter_mut().zip(&name) {
            *d = *s as libc::c_char;
        }
        // SAFETY: fchdir to the parent directory we resolved and hold.
        if unsafe { libc::fchdir(parent.as_raw_fd()) } < 0 {
            return Err(errno());
        }
        let r = do_bind(
            &sun as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sa_family_t>() + name.len() + 1,
        )?;
        // A socket the sandbox made itself stays reachable by path (`allowed_socket`).
        if let Some(id) = cstr(&name)
            .ok()
            .and_then(|n| file_id_at(parent.as_raw_fd(), &n))
        {
            self.bound.borrow_mut().insert(id);
        }
        Ok(r)
    }

    fn rename(&self, req: &Request, dir1: RawFd, dir2: RawFd) -> Result<i32, i32> {
        let (old_parent, old_where, old_name) = self.parent_of(dir1, &req.path1)?;
        let (new_parent, new_where, new_name) = self.parent_of(dir2, &req.path2)?;
        // Neither a protected name, nor a name that would make one appear (a directory renamed
        // to `.git` with a `hooks` inside), may be the target; with RENAME_EXCHANGE both are.
        let verdict = self.check(
            new_parent.as_raw_fd(),
            &new_where,
            &new_name,
            Creation::Rename,
        )?;
        self.check(
            old_parent.as_raw_fd(),
            &old_where,
            &old_name,
            Creation::File,
        )?;
        let (o, n) = (cstr(&old_name)?, cstr(&new_name)?);
        if self.rules.is_some() && git_dir_of(&new_where).is_some() {
            // A directory brought into a git directory from elsewhere could carry hooks or a
            // configuration below it that no rule saw being created.
            let is_dir = file_type_at(old_parent.as_raw_fd(), &o) == Some(libc::S_IFDIR);
            if is_dir && git_dir_of(&old_where) != git_dir_of(&new_where) {
                return Err(self.refuse(&new_where, &new_name));
            }
        }
        if verdict == Verdict::NewRepository {
            return self.put_config_in_place(req, &old_parent, &o, &new_parent, &n, &new_where);
        }
        // A temporary file renamed onto a writable single file goes through PID 1's writable
        // handle on their directory; every other rename in it meets the read-only view.
        let (old_dir, new_dir) = match self.file_rename(
            (&old_where, old_parent.as_raw_fd(), &old_name),
            (&new_where, new_parent.as_raw_fd(), &new_name),
            req.flags,
        ) {
            Some(d) => (d, d),
            None => (old_parent.as_raw_fd(), new_parent.as_raw_fd()),
        };
        // SAFETY: both names are valid strings and both parents directory fds.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                old_dir,
                o.as_ptr(),
                new_dir,
                n.as_ptr(),
                req.flags as libc::c_uint,
            )
        };
        if r < 0 {
            let e = self.failed(&new_where, &new_name);
            // RENAME_EXCHANGE and RENAME_WHITEOUT are never asked about.
            if e == libc::EROFS && req.flags & !RENAME_NOREPLACE == 0 && self.asking() {
                return self.ask_two(OP_RENAME, req, dir1, dir2);
            }
            return Err(e);
        }
        Ok(0)
    }

    /// A rename onto `config` in a new repository (how git writes its configuration): the
    /// content is read once and checked, then written by the guard into a file of its own that
    /// replaces `config`, and the caller's file is removed. The caller never holds a
    /// descriptor of what is put in place, and nothing in the sandbox may open it for writing
    /// later (`sealed`), so what was checked is what git on the host will read.
    fn put_config_in_place(
        &self,
        req: &Request,
        old_parent: &OwnedFd,
        old: &CString,
        new_parent: &OwnedFd,
        new: &CString,
        new_where: &Path,
    ) -> Result<i32, i32> {
        const MAX: u64 = 1 << 20;
        if req.flags & RENAME_EXCHANGE != 0 {
            return Err(self.refuse(new_where, new.as_bytes()));
        }
        // SAFETY: old is a valid string, old_parent a directory fd; checked before owned.
        let src = unsafe {
            libc::openat(
                old_parent.as_raw_fd(),
                old.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if src < 0 {
            return Err(errno());
        }
        // SAFETY: src is fresh and owned by nobody else.
        let src = fs::File::from(unsafe { OwnedFd::from_raw_fd(src) });
        let meta = src
            .metadata()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if !meta.is_file() || meta.len() > MAX {
            return Err(self.refuse(new_where, new.as_bytes()));
        }
        let mut text = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(&src, MAX + 1), &mut text)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if text.len() as u64 > MAX {
            return Err(self.refuse(new_where, new.as_bytes()));
        }
        if let Some(why) = crate::gitconfig::refusal(&text) {
            let e = self.refuse(new_where, new.as_bytes());
            let mut noted = self.refused.borrow_mut();
            if let Some(p) = noted.as_mut() {
                p.extend_from_slice(format!(" ({why})").as_bytes());
            }
            return Err(e);
        }
        if req.flags & RENAME_NOREPLACE != 0 && file_type_at(new_parent.as_raw_fd(), new).is_some()
        {
            return Err(libc::EEXIST);
        }
        let replaced = file_id_at(new_parent.as_raw_fd(), new);
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o666;
        let (tmp, file) = self.create_temp_beside(new_parent.as_raw_fd(), mode)?;
        let written = io::Write::write_all(&mut &file, &text);
        let id = file_id(file.as_raw_fd());
        let fail = |e: i32| {
            // SAFETY: tmp is a valid string, new_parent a directory fd.
            unsafe { libc::unlinkat(new_parent.as_raw_fd(), tmp.as_ptr(), 0) };
            e
        };
        written.map_err(|e| fail(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let Some(id) = id else {
            return Err(fail(libc::EIO));
        };
        // Sealed before it appears under its name.
        self.sealed.borrow_mut().insert(id);
        // SAFETY: both names are valid strings, new_parent a directory fd.
        let r = unsafe {
            libc::renameat(
                new_parent.as_raw_fd(),
                tmp.as_ptr(),
                new_parent.as_raw_fd(),
                new.as_ptr(),
            )
        };
        if r < 0 {
            let e = errno();
            self.sealed.borrow_mut().remove(&id);
            return Err(fail(e));
        }
        if let Some(old_id) = replaced {
            self.sealed.borrow_mut().remove(&old_id);
        }
        // SAFETY: old is a valid string, old_parent a directory fd.
        unsafe { libc::unlinkat(old_parent.as_raw_fd(), old.as_ptr(), 0) };
        Ok(0)
    }

    /// A new, empty file with a name of its own in `dir`, for the guard to fill.
    fn create_temp_beside(&self, dir: RawFd, mode: u32) -> Result<(CString, fs::File), i32> {
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        for attempt in 0..100u32 {
            let n = self.temp_counter.get().wrapping_add(1);
            self.temp_counter.set(n);
            let name = cstr(format!(".ringfence-config-{me}-{n}-{attempt}").as_bytes())?;
            // SAFETY: name is a valid string, dir a directory fd; checked before owned.
            let fd = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    mode as libc::c_uint,
                )
            };
            if fd >= 0 {
                // SAFETY: fd is fresh and owned by nobody else.
                return Ok((name, fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })));
            }
            if errno() != libc::EEXIST {
                return Err(errno());
            }
        }
        Err(libc::EEXIST)
    }

    /// An open that only reads (it reaches the guard with `filesystem.askRead` alone): a
    /// hidden file is asked about; an approved one is the file the supervisor opened on the
    /// host; everything else, a denied one included, continues as the caller's own open (of
    /// the view, where a hidden file is empty or absent).
    fn read_open(&self, req: &Request, dir: RawFd) {
        match self.ask_read(req, dir) {
            Some(Ok(fd)) => self.answer(req, 0, Some(&fd)),
            Some(Err(e)) => self.answer(req, -(e as i64), None),
            None => continue_call(self.listener, req.id),
        }
    }

    fn ask_read(&self, req: &Request, dir: RawFd) -> Option<Result<OwnedFd, i32>> {
        let rules = self.rules?;
        let wait = rules.ask_read?;
        if rules.hidden.is_empty() || req.flags & (libc::O_DIRECTORY | libc::O_PATH) != 0 {
            return None;
        }
        let (parent, where_, name) = self.parent_of(dir, &req.path1).ok()?;
        let full = where_.join(OsStr::from_bytes(&name));
        if !rules.hidden.iter().any(|h| full.starts_with(h)) {
            return None;
        }
        // Only a file: absent from the view (inside a hidden directory) or the empty file that
        // stands for a hidden one. A directory is listed as the view shows it.
        let n = cstr(&name).ok()?;
        if !matches!(
            file_type_at(parent.as_raw_fd(), &n),
            None | Some(libc::S_IFREG)
        ) {
            return None;
        }
        let asked = self.ask_supervisor(
            OP_READ,
            req.flags,
            0,
            req.pid,
            full.as_os_str().as_bytes(),
            wait,
        );
        match asked? {
            Ok(Some(fd)) => Some(Ok(fd)),
            Ok(None) => Some(Err(libc::EIO)),
            Err(e) => Some(Err(e)),
        }
    }

    fn open(&self, req: &Request, dir: RawFd) {
        if req.flags & WRITING_OPEN == 0 {
            return self.read_open(req, dir);
        }
        let mut result = self.open_inner(req, dir);
        if let Ok(Some(fd)) = &result {
            // Whatever name or magic link led here: a sealed configuration is never opened for
            // writing.
            // SAFETY: F_GETFL on a descriptor we hold.
            let got = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            let writes = got < 0 || got & libc::O_ACCMODE != libc::O_RDONLY;
            if writes
                && file_id(fd.as_raw_fd()).is_some_and(|id| self.sealed.borrow().contains(&id))
            {
                let path =
                    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
                let (parent, name) = (
                    path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                    path.file_name().unwrap_or_default().as_bytes().to_vec(),
                );
                result = Err(self.refuse(&parent, &name));
            }
        }
        match result {
            Ok(Some(fd)) => self.answer(req, 0, Some(&fd)),
            Ok(None) => {} // answered by a child
            Err(e) => self.answer(req, -(e as i64), None),
        }
    }

    /// Opening a FIFO blocks until the other end opens: do it in a child so that PID 1 keeps
    /// serving. The child answers the caller itself.
    fn open_in_child(
        &self,
        req: &Request,
        dir: RawFd,
        name: &CString,
        flags: i32,
    ) -> Result<Option<OwnedFd>, i32> {
        // SAFETY: PID 1 is single-threaded; the child only opens, answers and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: name is a valid string, dir a directory fd (or AT_FDCWD).
            let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, req.mode) };
            if fd < 0 {
                self.answer(req, -(errno() as i64), None);
            } else {
                // SAFETY: fd is fresh and owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                self.answer(req, 0, Some(&fd));
            }
            // SAFETY: _exit ends the child.
            unsafe { libc::_exit(0) }
        }
        if pid < 0 {
            return Err(errno());
        }
        Ok(None)
    }

    fn open_inner(&self, req: &Request, dir: RawFd) -> Result<Option<OwnedFd>, i32> {
        let mut path = req.path1.clone();
        let mut base: Option<OwnedFd> = None;
        // Follow a final symlink ourselves (as open would without O_EXCL), so that the name that
        // is checked is the name that gets created.
        for _ in 0..40 {
            if let Some(n) = caller_fd(&path, req.pid) {
                // The caller's own descriptor (/dev/stdout and the like): reopen a duplicate
                // through PID 1's /proc/self, which works whatever the caller's dumpability.
                let fd = take_fd(req.pid, n)?;
                let own = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
                let fifo =
                    req.flags & libc::O_NONBLOCK == 0 && follows_to_fifo(libc::AT_FDCWD, &own);
                if fifo {
                    return self.open_in_child(
                        req,
                        libc::AT_FDCWD,
                        &own,
                        req.flags | libc::O_CLOEXEC,
                    );
                }
                // SAFETY: own is a valid path string.
                let r = unsafe { libc::open(own.as_ptr(), req.flags | libc::O_CLOEXEC, req.mode) };
                if r < 0 {
                    return Err(errno());
                }
                // SAFETY: r is a fresh descriptor owned by nobody else.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(r) }));
            }
            let start = base.as_ref().map_or(dir, |b| b.as_raw_fd());
            let (parent, where_, name) = self.parent_of(start, &path)?;
            let n = cstr(&name)?;
            let (flags, fifo) = if on_procfs(parent.as_raw_fd()) {
                // Reached through /proc/self, /proc/thread-self or /dev/fd, which the kernel
                // resolved in PID 1's context: they stand for the caller.
                if let Some(own) = own_proc_path(&where_, &name, req.pid) {
                    path = own;
                    base = None;
                    continue;
                }
                // PID 1 may read every process in the sandbox (it holds CAP_SYS_PTRACE there);
                // on a caller's behalf it opens only the caller's own entries. EACCES is what
                // the caller's own open of another process's entry would give.
                if !where_.starts_with(format!("/proc/{}", req.pid)) {
                    return Err(libc::EACCES);
                }
                // Nothing can be created in /proc; its magic links (fd/N) must be followed by
                // the kernel, as the caller's own open would.
                let fifo =
                    req.flags & libc::O_NONBLOCK == 0 && follows_to_fifo(parent.as_raw_fd(), &n);
                (req.flags | libc::O_CLOEXEC, fifo)
            } else {
                let verdict = self.check(parent.as_raw_fd(), &where_, &name, Creation::File)?;
                let excl = req.flags & libc::O_EXCL != 0;
                let nofollow = req.flags & libc::O_NOFOLLOW != 0;
                let there = existing(parent.as_raw_fd(), &n);
                if verdict == Verdict::NewRepository {
                    return self.create_empty_config(req, &parent, &where_, &name, &there);
                }
                if let (Existing::Symlink(target), false, false) = (&there, excl, nofollow) {
                    path = target.clone();
                    base = Some(parent);
                    continue;
                }
                let fifo = req.flags & libc::O_NONBLOCK == 0 && matches!(there, Existing::Fifo);
                (
                    (req.flags | libc::O_NOFOLLOW) & !libc::O_CLOEXEC | libc::O_CLOEXEC,
                    fifo,
                )
            };
            // A writable single file (or a temporary name beside it) is opened through PID 1's
            // writable handle on its directory; the sandbox's view of that directory is
            // read-only.
            let dir = self
                .file_open(&where_, parent.as_raw_fd(), &name, req.flags)
                .unwrap_or(parent.as_raw_fd());
            if fifo {
                return self.open_in_child(req, dir, &n, flags);
            }
            if req.flags & libc::O_CREAT == 0 && is_dev_tty(parent.as_raw_fd(), &n) {
                // /dev/tty means the opener's controlling terminal, and PID 1 has none: open
                // the caller's own terminal by its device instead.
                let tty = caller_tty(req.pid).ok_or(libc::ENXIO)?;
                // SAFETY: tty is a valid path string.
                let fd = unsafe { libc::open(tty.as_ptr(), flags | libc::O_NOCTTY, 0) };
                if fd < 0 {
                    return Err(errno());
                }
                // SAFETY: fd is fresh and owned by nobody else.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            // A hook sample is never executable (git would not run it anyway).
            let mode = if is_hook_sample(&where_, &name) {
                req.mode & !0o111
            } else {
                req.mode
            };
            // SAFETY: n is a valid string, dir a directory fd.
            let fd = unsafe { libc::openat(dir, n.as_ptr(), flags, mode) };
            if fd < 0 {
                let e = self.failed(&where_, &name);
                if e == libc::EROFS {
                    if let Some(r) = self.ask_host(OP_OPEN, req, &where_, &name, mode) {
                        return r.and_then(|fd| fd.ok_or(libc::EIO).map(Some));
                    }
                }
                return Err(e);
            }
            // SAFETY: fd is fresh and owned by nobody else.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        Err(libc::ELOOP)
    }
}

impl Agent<'_> {
    /// An open with O_CREAT of a new repository's missing `config` (libgit2 creates the file
    /// before it writes it through a lock file): the guard creates it empty and sealed, and
    /// the caller gets a read-only descriptor. Content only arrives by a checked rename.
    fn create_empty_config(
        &self,
        req: &Request,
        parent: &OwnedFd,
        where_: &Path,
        name: &[u8],
        there: &Existing,
    ) -> Result<Option<OwnedFd>, i32> {
        if req.flags & libc::O_CREAT == 0 || !matches!(there, Existing::Nothing) {
            return Err(self.refuse(where_, name));
        }
        let n = cstr(name)?;
        // SAFETY: n is a valid string, parent a directory fd; checked before owned.
        let fd = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                n.as_ptr(),
                libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                (req.mode & 0o666) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(self.failed(where_, name));
        }
        // SAFETY: fd is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Some(id) = file_id(fd.as_raw_fd()) {
            self.sealed.borrow_mut().insert(id);
        }
        Ok(Some(fd))
    }
}

impl<'a> Agent<'a> {
    pub fn new(
        rules: Option<&'a GuardRules>,
        listener: &OwnedFd,
        report: RawFd,
        file_dirs: &'a [WritableDir],
    ) -> Agent<'a> {
        // Wake the caller on the CPU that answers it (Linux 6.6+): a notification is a round
        // trip, and this shortens it. Older kernels refuse; nothing depends on it.
        const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
        // SAFETY: the ioctl takes the flags by value.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        Agent {
            rules,
            file_dirs,
            listener: listener.as_raw_fd(),
            report,
            refused: std::cell::RefCell::new(None),
            read_only: std::cell::Cell::new(false),
            dropped: std::cell::Cell::new(0),
            batch: Default::default(),
            new_git: Default::default(),
            sealed: Default::default(),
            temp_counter: std::cell::Cell::new(0),
            unix: None,
            scratch_mounts: Vec::new(),
            bound: Default::default(),
        }
    }

    /// Takes one notification from the kernel and answers it.
    pub fn handle_one(&self) {
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: n is a valid buffer for SECCOMP_IOCTL_NOTIF_RECV.
        if unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) } < 0 {
            return;
        }
        let nr = n.data.nr as libc::c_long;
        if nr == libc::SYS_execve || nr == libc::SYS_execveat {
            self.report_exec(&n);
            return;
        }
        // No signal handler runs while any other notification is answered: the agent's calls
        // (an ADDFD waits for the caller to take the descriptor) are not interrupted half way.
        // Signals that arrive meanwhile are delivered right after. (An exec report only copies
        // strings, and the caller waits for it: it goes without the two calls.)
        // SAFETY: a full set, blocking this thread's signals; the old mask is restored.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
            old
        };
        self.handle_call(&n, nr);
        // SAFETY: restoring the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }

    /// Answers a notification other than an exec.
    fn handle_call(&self, n: &libc::seccomp_notif, nr: libc::c_long) {
        let n = *n;
        if self.unix.is_some() && is_unix_address_call(nr) {
            self.unix_address_call(&n);
            return;
        }
        match build(&n) {
            Ok((req, fds, cwd)) => {
                // The pid could have been reused while its memory was read: check the
                // notification is still the caller's before acting on what was read.
                if !id_valid(self.listener, n.id) {
                    return;
                }
                let d1 = fds.first().map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
                let d2 = fds.get(1).map_or(d1, |f| f.as_raw_fd());
                // Work from the caller's directory, so that paths the kernel resolves through
                // /proc/self/cwd land where the caller's own call would.
                // SAFETY: fchdir to a directory descriptor we hold.
                unsafe { libc::fchdir(cwd.as_raw_fd()) };
                if req.op == OP_BIND {
                    self.bind(&req, d1);
                } else if matches!(req.op, OP_CHMOD | OP_CHOWN | OP_UNLINK) {
                    self.file_meta(&req, d1);
                } else {
                    self.serve(&req, d1, d2);
                }
                // SAFETY: a constant path.
                unsafe { libc::chdir(c"/".as_ptr()) };
            }
            Err(e) => respond(self.listener, n.id, -(e as i64)),
        }
    }
}

/// Message tag of an exec report on the supervisor channel.
pub const MSG_EXEC: u8 = b'C';

/// Message tag of several reports in one message: each is its length (u32, native order) and
/// the report. PID 1 gathers them for up to `BATCH_DELAY` (or `BATCH_BYTES`): one message, and
/// one wake-up of the supervisor, for a burst of execs instead of one each.
pub const MSG_BATCH: u8 = b'B';

/// The longest a report waits in a batch.
pub const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// A batch goes out before it grows past this (the supervisor reads messages of 32 KiB).
const BATCH_BYTES: usize = 24 * 1024;

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    count: u64,
    since: Option<std::time::Instant>,
}

/// Calls `each` with every report of a `MSG_BATCH` message's body; false when it is malformed.
pub fn split_batch(mut body: &[u8], each: &mut dyn FnMut(&[u8])) -> bool {
    while !body.is_empty() {
        let Some(len) = body.get(..4) else {
            return false;
        };
        let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(msg) = body.get(4..4 + len) else {
            return false;
        };
        each(msg);
        body = &body[4 + len..];
    }
    true
}

/// Message tag of a count of reports that were dropped (a u64 follows).
pub const MSG_DROPPED: u8 = b'L';

/// Sends one report without waiting: a full channel (the supervisor is behind) must never
/// hold up the sandboxed program.
fn send_now(fd: RawFd, msg: &[u8]) -> bool {
    // SAFETY: msg is a valid buffer of msg.len() bytes.
    unsafe {
        libc::send(
            fd,
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        ) >= 0
    }
}

/// At most this many arguments of an exec are recorded.
const EXEC_ARGS: usize = 64;

impl Agent<'_> {
    /// Records an exec for the activity log and lets it proceed. This is observation only:
    /// the mounts and the main filter enforce, and a racing thread could make the recorded
    /// strings differ from what the kernel then runs. The caller waits only while its strings
    /// are copied; the report is put together and sent after it was let go.
    fn report_exec(&self, n: &libc::seccomp_notif) {
        let a = n.data.args;
        let (path, argv) = if n.data.nr as libc::c_long == libc::SYS_execveat {
            (a[1], a[2])
        } else {
            (a[0], a[1])
        };
        let (file, args) = read_exec(n.pid, path, argv);
        // A shell's PATH search tries directories until one works: record only the program
        // that exists and is executable. A relative path is looked up through the caller's
        // directory, which is gone once a short program has run: checked before the caller
        // goes on. An absolute one is checked after, so that the caller waits only for the
        // copy of its strings.
        let relative = !file.starts_with(b"/");
        let runnable = |file: &[u8]| {
            // A relative one beneath the caller's directory, opened as the guard opens it.
            let dir = if relative {
                match open_cwd_of(n.pid) {
                    Ok(d) => Some(d),
                    Err(_) => return false,
                }
            } else {
                None
            };
            let dirfd = dir.as_ref().map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
            // With the effective credentials (AT_EACCESS), as for every check of the guard.
            // SAFETY: faccessat with a valid directory fd and a NUL-terminated path.
            cstr(file).is_ok_and(|c| unsafe {
                libc::faccessat(dirfd, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) == 0
            })
        };
        let checked_first = relative && !file.is_empty() && runnable(&file);
        let resp = libc::seccomp_notif_resp {
            id: n.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: resp is a valid seccomp_notif_resp.
        unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
        crate::timing::mark("an exec answered");
        if checked_first || (!relative && !file.is_empty() && runnable(&file)) {
            let mut msg = Vec::with_capacity(
                5 + file.len() + args.iter().map(|s| s.len() + 1).sum::<usize>(),
            );
            msg.push(MSG_EXEC);
            msg.extend_from_slice(&n.pid.to_ne_bytes());
            msg.extend_from_slice(&file);
            for arg in &args {
                msg.push(0);
                msg.extend_from_slice(arg);
            }
            self.send_report(&msg);
        }
    }

    /// Queues a report for the next batch; sends the batch when it is full.
    fn send_report(&self, msg: &[u8]) {
        let full = {
            let Ok(mut b) = self.batch.try_borrow_mut() else {
                return self.send_one(msg);
            };
            if msg.len() + 4 + 1 > BATCH_BYTES {
                drop(b);
                self.flush_reports();
                return self.send_one(msg);
            }
            if b.bytes.is_empty() {
                b.bytes.push(MSG_BATCH);
                b.since = Some(std::time::Instant::now());
            }
            b.bytes.extend_from_slice(&(msg.len() as u32).to_ne_bytes());
            b.bytes.extend_from_slice(msg);
            b.count += 1;
            b.bytes.len() + 4 * 1024 > BATCH_BYTES
        };
        if full {
            self.flush_reports();
        }
    }

    /// How long until the queued reports must go out (`None`: nothing is queued).
    pub fn reports_due_in(&self) -> Option<std::time::Duration> {
        let since = self.batch.try_borrow().ok()?.since?;
        Some(BATCH_DELAY.saturating_sub(since.elapsed()))
    }

    /// Sends the queued reports if they waited long enough.
    pub fn flush_reports_if_due(&self) {
        if self.reports_due_in().is_some_and(|d| d.is_zero()) {
            self.flush_reports();
        }
    }

    /// Sends the queued reports now (if the channel is full, they are counted as dropped).
    pub fn flush_reports(&self) {
        let Ok(mut b) = self.batch.try_borrow_mut() else {
            return;
        };
        let batch = std::mem::take(&mut *b);
        drop(b);
        if batch.count > 0 && !self.send_counting_drops(&batch.bytes) {
            self.dropped.set(self.dropped.get() + batch.count);
        }
    }

    fn send_one(&self, msg: &[u8]) {
        if !self.send_counting_drops(msg) {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Sends a message if the channel has room (false: it had none); a count of dropped
    /// reports goes out first, with the next message that fits, and at the end
    /// (`flush_dropped`).
    fn send_counting_drops(&self, msg: &[u8]) -> bool {
        let dropped = self.dropped.get();
        if dropped > 0 {
            let mut m = vec![MSG_DROPPED];
            m.extend_from_slice(&dropped.to_ne_bytes());
            if !send_now(self.report, &m) {
                return false;
            }
            self.dropped.set(0);
        }
        send_now(self.report, msg)
    }

    /// Sends the queued reports, waiting for room, then the count of the reports that were
    /// dropped and not yet counted: the last messages before the command's status.
    pub fn flush_dropped(&self) {
        if let Ok(mut b) = self.batch.try_borrow_mut() {
            let batch = std::mem::take(&mut *b);
            if batch.count > 0 && send_fds(self.report, &batch.bytes, &[]).is_err() {
                self.dropped.set(self.dropped.get() + batch.count);
            }
        }
        let dropped = self.dropped.replace(0);
        if dropped > 0 {
            let mut m = vec![MSG_DROPPED];
            m.extend_from_slice(&dropped.to_ne_bytes());
            let _ = send_fds(self.report, &m, &[]);
        }
    }
}

/// An exec seen in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub pid: u32,
    pub path: String,
    pub argv: Vec<String>,
}

impl Exec {
    pub fn decode(b: &[u8]) -> Option<Exec> {
        let pid = u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?);
        let mut parts = b.get(4..)?.split(|&c| c == 0);
        let path = String::from_utf8_lossy(parts.next()?).into_owned();
        Some(Exec {
            pid,
            path,
            argv: parts
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
        })
    }
}

/// One refused creation, as reported to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The operation: open, mkdir, mknod, symlink, link, rename, bind.
    pub op: &'static str,
    /// Refused by a read-only mount (outside the writable roots), not by a protection rule.
    pub read_only: bool,
    /// The caller, in the sandbox's PID namespace.
    pub pid: u32,
    /// The caller's program name (its `comm`).
    pub program: String,
    /// The path as the sandbox saw it.
    pub path: PathBuf,
}

impl Denial {
    /// Decodes a refusal report (the message after its tag byte).
    pub fn decode(b: &[u8]) -> Option<Denial> {
        let read_only = b.first()? & READ_ONLY != 0;
        let op = match b.first()? & !READ_ONLY {
            OP_OPEN => "open",
            OP_MKDIR => "mkdir",
            OP_MKNOD => "mknod",
            OP_SYMLINK => "symlink",
            OP_LINK => "link",
            OP_RENAME => "rename",
            OP_BIND => "bind",
            OP_UNLINK => "unlink",
            OP_CONNECT => "connect",
            OP_SEND => "send",
            _ => "create",
        };
        let pid = u32::from_ne_bytes(b.get(1..5)?.try_into().ok()?);
        let comm = b.get(5..21)?;
        let comm = &comm[..comm.iter().position(|&c| c == 0).unwrap_or(comm.len())];
        Some(Denial {
            op,
            read_only,
            pid,
            program: String::from_utf8_lossy(comm).into_owned(),
            path: PathBuf::from(OsStr::from_bytes(b.get(21..)?)),
        })
    }
}

/// What the guard refused during a run.
#[derive(Debug, Default, Clone)]
pub struct GuardReport {
    /// Protected names refused.
    pub refused: u64,
    /// Creations refused by read-only mounts.
    pub read_only: u64,
    /// The first few refused paths, as the sandbox saw them.
    pub examples: Vec<PathBuf>,
    /// Connections and sends to unix sockets not in `network.allowUnixSockets`.
    pub sockets: u64,
    /// The first few of those sockets.
    pub socket_examples: Vec<PathBuf>,
}

impl GuardReport {
    pub fn add(&mut self, d: &Denial) {
        if matches!(d.op, "connect" | "send") {
            self.sockets += 1;
            if self.socket_examples.len() < 5 && !self.socket_examples.contains(&d.path) {
                self.socket_examples.push(d.path.clone());
            }
            return;
        }
        if d.read_only {
            self.read_only += 1;
            return;
        }
        self.refused += 1;
        if self.examples.len() < 5 {
            self.examples.push(d.path.clone());
        }
    }
}

fn id_valid(listener: RawFd, id: u64) -> bool {
    // SAFETY: the ioctl reads a u64 id.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

fn respond(listener: RawFd, id: u64, result: i64) {
    let resp = libc::seccomp_notif_resp {
        id,
        val: if result >= 0 { result } else { 0 },
        error: if result >= 0 { 0 } else { result as i32 },
        flags: 0,
    };
    // SAFETY: resp is a valid seccomp_notif_resp; failure means the caller is gone.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
}

/// Reads the caller's memory at `addr` into `buf` (process_vm_readv: no /proc file to open,
/// and it works for callers that made themselves non-dumpable, PID 1 holding CAP_SYS_PTRACE,
/// and for the command before its first exec, whose memory is PID 1's own).
fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> Result<usize, i32> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local describes our own writable buffer; the kernel checks the remote range
    // against the caller's mappings.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n <= 0 {
        return Err(libc::EFAULT);
    }
    Ok(n as usize)
}

/// How many bytes from `addr` to read in one piece: at most `max`, never past the end of its
/// page (the next page may be unmapped).
fn piece(addr: u64, max: usize) -> usize {
    max.min(4096 - (addr % 4096) as usize)
}

/// Reads several pieces of the caller's memory, each within one page, in one call: `buf` is
/// filled piece after piece. Returns how many pieces were read whole; the kernel stops at the
/// first piece it cannot read.
fn read_pieces(pid: u32, pieces: &[(u64, usize)], buf: &mut [u8]) -> usize {
    let mut local = Vec::with_capacity(pieces.len());
    let mut remote = Vec::with_capacity(pieces.len());
    let mut rest = &mut buf[..];
    for &(addr, len) in pieces {
        let (this, after) = rest.split_at_mut(len);
        local.push(libc::iovec {
            iov_base: this.as_mut_ptr() as *mut libc::c_void,
            iov_len: len,
        });
        remote.push(libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        });
        rest = after;
    }
    // SAFETY: every local iovec describes a distinct part of our own writable buffer; the
    // kernel checks the remote ranges against the caller's mappings.
    let n = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    let mut left = n.max(0) as usize;
    let mut whole = 0;
    for &(_, len) in pieces {
        if left < len {
            break;
        }
        left -= len;
        whole += 1;
    }
    whole
}

/// The first bytes of each string read, at most: most paths and arguments fit, so an exec
/// is usually read in two calls (the path with the argv array, then every argument).
const EXEC_PIECE: usize = 256;

/// The program path at `path` and the first `EXEC_ARGS` strings of the argv array at `argv`
/// (about 16 KiB at most) of an exec the caller is waiting in. Each string whose first piece
/// holds its end costs nothing more; a longer one, or one in memory the kernel cannot read,
/// is read on its own.
fn read_exec(pid: u32, path: u64, argv: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut first = [0u8; EXEC_PIECE + 8 * EXEC_ARGS];
    let mut pieces = Vec::with_capacity(2);
    if path != 0 {
        pieces.push((path, piece(path, EXEC_PIECE)));
    }
    if argv != 0 {
        pieces.push((argv, piece(argv, 8 * EXEC_ARGS)));
    }
    let whole = read_pieces(pid, &pieces, &mut first);
    // The path, from its piece or read on its own.
    let (file, ptr_at) = match pieces.first() {
        Some(&(addr, len)) if addr == path => {
            let s = if whole >= 1 {
                string_from(pid, addr, &first[..len])
            } else {
                read_string(pid, addr).unwrap_or_default()
            };
            (s, len)
        }
        _ => (Vec::new(), 0),
    };
    // The argv pointers: those read with the path, then on.
    let mut ptrs: Vec<u64> = Vec::new();
    let mut ended = argv == 0;
    if argv != 0 && whole == pieces.len() {
        let len = pieces[pieces.len() - 1].1;
        for c in first[ptr_at..ptr_at + len].chunks_exact(8) {
            let p = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            if p == 0 {
                ended = true;
                break;
            }
            ptrs.push(p);
            if ptrs.len() == EXEC_ARGS {
                break;
            }
        }
    }
    let mut at = argv + 8 * ptrs.len() as u64;
    while !ended && ptrs.len() < EXEC_ARGS {
        let mut b = [0u8; 8 * EXEC_ARGS];
        let want = piece(at, 8 * (EXEC_ARGS - ptrs.len()));
        let Ok(k) = read_mem(pid, at, &mut b[..want]) else {
            break;
        };
        for c in b[..k - k % 8].chunks_exact(8) {
            let p = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            if p == 0 {
                ended = true;
                break;
            }
            ptrs.push(p);
        }
        if k < 8 {
            break;
        }
        at += (k - k % 8) as u64;
    }
    // Every argument's first piece in one call.
    let pieces: Vec<(u64, usize)> = ptrs.iter().map(|&p| (p, piece(p, EXEC_PIECE))).collect();
    let mut buf = vec![0u8; pieces.iter().map(|p| p.1).sum()];
    let whole = read_pieces(pid, &pieces, &mut buf);
    let mut args = Vec::with_capacity(ptrs.len());
    let mut size = 0;
    let mut off = 0;
    for (i, &(addr, len)) in pieces.iter().enumerate() {
        if size > 16 * 1024 {
            break;
        }
        let arg = if i < whole {
            string_from(pid, addr, &buf[off..off + len])
        } else {
            read_string(pid, addr).unwrap_or_default()
        };
        off += len;
        size += arg.len() + 1;
        args.push(arg);
    }
    (file, args)
}

/// The string at `addr` whose first piece is `first`: up to its NUL, or read on from where
/// the piece ends.
fn string_from(pid: u32, addr: u64, first: &[u8]) -> Vec<u8> {
    if let Some(z) = first.iter().position(|&b| b == 0) {
        return first[..z].to_vec();
    }
    // As `read_string`: a string that cannot be read to its end is not taken.
    match read_string(pid, addr + first.len() as u64) {
        Ok(rest) if first.len() + rest.len() < libc::PATH_MAX as usize => [first, &rest].concat(),
        _ => Vec::new(),
    }
}

/// Copies a NUL-terminated string out of the caller's memory.
fn read_string(pid: u32, addr: u64) -> Result<Vec<u8>, i32> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    let mut chunk = [0u8; 512];
    while out.len() < libc::PATH_MAX as usize {
        // Never read across a page boundary in one go: the next page may be unmapped.
        let to_page_end = 4096 - (at % 4096) as usize;
        let want = chunk.len().min(to_page_end);
        let n = read_mem(pid, at, &mut chunk[..want])?;
        if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..z]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Opens the caller's working directory (O_PATH): `/proc/PID/cwd`, except for the command
/// before its first exec. It runs in PID 1's memory until then (see `reaper::Launch`), memory
/// that PID 1 made non-dumpable and that belongs to the host's user namespace, so the kernel
/// refuses PID 1 its /proc links; its directory is PID 1's own then. After an exec PID 1 may
/// always open them (it keeps CAP_SYS_PTRACE in the sandbox's user namespace), so a refusal
/// for the command's pid means the command has not exec'd yet. One open on the usual path.
fn open_cwd_of(pid: u32) -> Result<OwnedFd, i32> {
    let open = |path: &[u8]| -> Result<OwnedFd, i32> {
        let c = cstr(path)?;
        // SAFETY: c is a valid string; the fd is checked before it is owned.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ESRCH));
        }
        // SAFETY: fd is fresh and owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    match open(format!("/proc/{pid}/cwd").as_bytes()) {
        Err(libc::EACCES | libc::EPERM) if pid == crate::reaper::command_pid() => {
            open(b"/proc/self/cwd")
        }
        r => r,
    }
}

/// The directory a path argument is relative to: the caller's cwd for AT_FDCWD, else a
/// duplicate of its descriptor.
fn open_dir_of(pid: u32, dirfd: i32) -> Result<OwnedFd, i32> {
    if dirfd != libc::AT_FDCWD {
        return take_fd(pid, dirfd);
    }
    open_cwd_of(pid).map_err(|_| libc::ESRCH)
}

/// The caller's umask, read with one read(2) (the file is generated on each read).
fn umask_of(pid: u32) -> Result<u32, i32> {
    let c = cstr(format!("/proc/{pid}/status").as_bytes())?;
    // SAFETY: c is a valid string; the fd is checked and owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(libc::ESRCH);
    }
    // SAFETY: fd was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = [0u8; 4096];
    let n = crate::sys::read_some(fd.as_raw_fd(), &mut buf).map_err(|_| libc::ESRCH)?;
    let status = std::str::from_utf8(&buf[..n]).map_err(|_| libc::EIO)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or(libc::EIO)
}

/// `/proc/self/...` and `/proc/thread-self/...` mean the caller, not PID 1: name it.
fn for_caller(path: Vec<u8>, pid: u32) -> Vec<u8> {
    for prefix in [&b"/proc/self"[..], b"/proc/thread-self"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with(b"/") {
                let mut v = format!("/proc/{pid}").into_bytes();
                v.extend_from_slice(rest);
                return v;
            }
        }
    }
    path
}

/// A duplicate of descriptor `fd` of thread `tid` (pidfd_getfd, allowed to PID 1 only).
pub(crate) fn take_fd(tid: u32, fd: i32) -> Result<OwnedFd, i32> {
    const PIDFD_THREAD: libc::c_int = libc::O_EXCL;
    // SAFETY: pidfd_open with integer arguments; the result is checked.
    let mut pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if pidfd < 0 {
        // SAFETY: as above, for kernels without PIDFD_THREAD (a thread-group leader only).
        pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, 0) };
    }
    if pidfd < 0 {
        return Err(libc::ESRCH);
    }
    // SAFETY: pidfd is a fresh descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd with integer arguments; the result is checked.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        let e = errno();
        return Err(if e == libc::EBADF {
            libc::EBADF
        } else {
            libc::EPERM
        });
    }
    // SAFETY: got is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}

/// Reads `len` bytes of the caller's memory at `addr`.
fn read_bytes(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        done += read_mem(pid, addr + done as u64, &mut buf[done..])?;
    }
    Ok(buf)
}

/// The request a notification stands for, the caller's directories (and, for bind, its
/// socket), and the caller's working directory.
fn build(n: &libc::seccomp_notif) -> Result<(Request, Vec<OwnedFd>, OwnedFd), i32> {
    let pid = n.pid;
    let a = n.data.args;
    let umask = umask_of(pid)?;
    let s = |addr: u64| read_string(pid, addr);
    let fd = |v: u64| v as u32 as i32;
    let nr = n.data.nr as libc::c_long;
    let mut req = Request {
        id: n.id,
        pid,
        umask,
        ..Request::default()
    };
    let dirs: Vec<i32>;
    #[cfg(target_arch = "x86_64")]
    let legacy = true;
    #[cfg(not(target_arch = "x86_64"))]
    let legacy = false;
    let cwd = open_dir_of(pid, libc::AT_FDCWD)?;
    if nr == libc::SYS_bind {
        let len = (a[2] as u32 as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        req.op = OP_BIND;
        req.path1 = read_bytes(pid, a[1], len)?;
        let sock = take_fd(pid, fd(a[0]))?;
        return Ok((req, vec![sock], cwd));
    }
    match nr {
        libc::SYS_openat => {
            req.op = OP_OPEN;
            req.path1 = s(a[1])?;
            req.flags = a[2] as i32;
            req.mode = a[3] as u32;
            dirs = vec![fd(a[0])];
        }
        libc::SYS_mkdirat => {
            req.op = OP_MKDIR;
            req.path1 = s(a[1])?;
            req.mode = a[2] as u32;
            dirs = vec![fd(a[0])];
        }
        libc::SYS_mknodat => {
            req.op = OP_MKNOD;
            req.path1 = s(a[1])?;
            req.mode = a[2] as u32;
            req.dev = a[3];
            dirs = vec![fd(a[0])];
        }
        libc::SYS_symlinkat => {
            req.op = OP_SYMLINK;
            req.path1 = s(a[0])?;
            req.path2 = s(a[2])?;
            dirs = vec![libc::AT_FDCWD, fd(a[1])];
        }
        libc::SYS_linkat => {
            req.op = OP_LINK;
            req.path1 = s(a[1])?;
            req.path2 = s(a[3])?;
            req.flags = a[4] as i32;
            dirs = vec![fd(a[0]), fd(a[2])];
        }
        libc::SYS_fchmodat | libc::SYS_fchmodat2 => {
            req.op = OP_CHMOD;
            req.path1 = s(a[1])?;
            req.mode = a[2] as u32;
            req.flags = if nr == libc::SYS_fchmodat2 {
                a[3] as i32
            } else {
                0
            };
            dirs = vec![fd(a[0])];
        }
        libc::SYS_fchownat => {
            req.op = OP_CHOWN;
            req.path1 = s(a[1])?;
            req.owner = (a[2] as u32, a[3] as u32);
            req.flags = a[4] as i32;
            dirs = vec![fd(a[0])];
        }
        libc::SYS_unlinkat => {
            req.op = OP_UNLINK;
            req.path1 = s(a[1])?;
            req.flags = a[2] as i32;
            dirs = vec![fd(a[0])];
        }
        libc::SYS_renameat | libc::SYS_renameat2 => {
            req.op = OP_RENAME;
            req.path1 = s(a[1])?;
            req.path2 = s(a[3])?;
            req.flags = if nr == libc::SYS_renameat2 {
                a[4] as i32
            } else {
                0
            };
            dirs = vec![fd(a[0]), fd(a[2])];
        }
        _ if legacy => {
            #[cfg(target_arch = "x86_64")]
            match nr {
                libc::SYS_open => {
                    req.op = OP_OPEN;
                    req.path1 = s(a[0])?;
                    req.flags = a[1] as i32;
                    req.mode = a[2] as u32;
                }
                libc::SYS_creat => {
                    req.op = OP_OPEN;
                    req.path1 = s(a[0])?;
                    req.flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
                    req.mode = a[1] as u32;
                }
                libc::SYS_mkdir => {
                    req.op = OP_MKDIR;
                    req.path1 = s(a[0])?;
                    req.mode = a[1] as u32;
                }
                libc::SYS_mknod => {
                    req.op = OP_MKNOD;
                    req.path1 = s(a[0])?;
                    req.mode = a[1] as u32;
                    req.dev = a[2];
                }
                libc::SYS_symlink => {
                    req.op = OP_SYMLINK;
                    req.path1 = s(a[0])?;
                    req.path2 = s(a[1])?;
                }
                libc::SYS_link => {
                    req.op = OP_LINK;
                    req.path1 = s(a[0])?;
                    req.path2 = s(a[1])?;
                }
                libc::SYS_rename => {
                    req.op = OP_RENAME;
                    req.path1 = s(a[0])?;
                    req.path2 = s(a[1])?;
                }
                libc::SYS_chmod => {
                    req.op = OP_CHMOD;
                    req.path1 = s(a[0])?;
                    req.mode = a[1] as u32;
                }
                libc::SYS_chown | libc::SYS_lchown => {
                    req.op = OP_CHOWN;
                    req.path1 = s(a[0])?;
                    req.owner = (a[1] as u32, a[2] as u32);
                    if nr == libc::SYS_lchown {
                        req.flags = libc::AT_SYMLINK_NOFOLLOW;
                    }
                }
                libc::SYS_unlink => {
                    req.op = OP_UNLINK;
                    req.path1 = s(a[0])?;
                }
                libc::SYS_rmdir => {
                    req.op = OP_UNLINK;
                    req.path1 = s(a[0])?;
                    req.flags = libc::AT_REMOVEDIR;
                }
                _ => return Err(libc::ENOSYS),
            }
            dirs = vec![libc::AT_FDCWD, libc::AT_FDCWD];
        }
        _ => return Err(libc::ENOSYS),
    }
    // A symlink's target is stored as written, never rewritten.
    if req.op != OP_SYMLINK {
        req.path1 = for_caller(std::mem::take(&mut req.path1), pid);
    }
    req.path2 = for_caller(std::mem::take(&mut req.path2), pid);
    // The directory each path is relative to. An absolute path ignores it (as the kernel
    // does, even when the descriptor is not valid), and a symlink's target is never
    // resolved, so the caller's cwd stands in for those.
    let resolved: [Option<&[u8]>; 2] = match req.op {
        OP_SYMLINK => [None, Some(&req.path2)],
        OP_LINK | OP_RENAME => [Some(&req.path1), Some(&req.path2)],
        _ => [Some(&req.path1), None],
    };
    let mut fds = Vec::with_capacity(2);
    for (d, p) in dirs.into_iter().zip(resolved) {
        let d = match p {
            Some(p) if !p.starts_with(b"/") => d,
            _ => libc::AT_FDCWD,
        };
        fds.push(open_dir_of(pid, d)?);
    }
    Ok((req, fds, cwd))
}

// ---------------------------------------------------------------------------------------------
// Writable single files and denyWrite paths not yet created.
//
// A writable single file is not bind-mounted (a mount point cannot be renamed onto, so no
// atomic save could work, and a missing file could not be bound at all). Its directory stays
// read-only in the sandbox's view, and PID 1 alone holds a writable handle on it: a detached
// clone of the directory's mount, never attached anywhere the sandbox can reach, closed in
// every process PID 1 starts. Through it the guard performs exactly these operations, which
// it already performs itself for every creating syscall:
// - opening the file's own name (create, truncate, append);
// - creating (or re-opening with O_CREAT, as node's `writeFile` does) a temporary name beside
//   it, a regular file (the open never follows a symlink there): names derived from the file's (`NAME.xxx`, `.NAME.xxx`, `NAME~`) and the usual mkstemp forms
//   (`sedXXXXXX` of `sed -i`, `tmpXXXXXXXX` of Python's tempfile, `.tmpXXXXXX` of Rust's);
// - renaming such a temporary name onto the file;
// - chmod, chown and unlink by path of those names (regular files only), which arrive here
//   only when the policy has writable single files (`seccomp::FILE_META`); on other paths
//   they continue as the caller's own calls.
// Everything else in that directory (other names, other renames, mkdir, links, symlinks, and
// calls the guard does not see: truncate, utimes, an open for writing without O_CREAT) meets
// the read-only view and fails with EROFS. The directory is recognised by its path and its device and inode both, so
// a denyRead mask or a later mount over the path does not inherit the handle. Creating a name
// this way needs no mount point and leaves nothing in the user's tree but what the program
// itself wrote.
// ---------------------------------------------------------------------------------------------

/// PID 1's writable handle on the directory of one or more writable single files.
pub struct WritableDir {
    /// The directory, as the sandbox sees it.
    pub path: PathBuf,
    /// A detached writable clone of the directory's mount, rooted at the directory.
    pub fd: OwnedFd,
    dev: u64,
    ino: u64,
    /// The detached mount's id: a path that resolves onto it went through PID 1's own
    /// descriptor (`/proc/1/fd/N/...`) and is refused.
    mnt_id: u64,
}

fn mount_id(fd: RawFd) -> Option<u64> {
    // SAFETY: statx is plain data filled by the kernel.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH names fd itself; stx is a valid buffer.
    let r = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    (r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

fn dev_ino(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid descriptor and st a valid buffer.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

impl WritableDir {
    /// `fd` is the writable handle on `path`; `view` the same directory opened in the sandbox's
    /// view, whose identity the guard compares parents with.
    pub fn new(path: PathBuf, fd: OwnedFd, view: RawFd) -> io::Result<WritableDir> {
        let (dev, ino) = dev_ino(view).ok_or_else(io::Error::last_os_error)?;
        let mnt_id = mount_id(fd.as_raw_fd()).ok_or_else(|| {
            io::Error::other("statx cannot report mount ids (STATX_MNT_ID, Linux 5.8 or newer)")
        })?;
        Ok(WritableDir {
            path,
            fd,
            dev,
            ino,
            mnt_id,
        })
    }
}

/// How a name in the directory of a writable single file relates to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileName {
    Own,
    Temporary,
}

/// Whether `name` is a temporary name a tool writes beside `file` before renaming it over.
fn temporary_name(file: &[u8], name: &[u8]) -> bool {
    let random = |rest: &[u8], n: usize, extra: &[u8]| {
        rest.len() == n
            && rest
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(b))
    };
    let derived = |prefix: &[u8]| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(b"."))
            .is_some_and(|r| !r.is_empty())
    };
    let mut dotted = b".".to_vec();
    dotted.extend_from_slice(file);
    derived(file)
        || derived(&dotted)
        || name.strip_suffix(b"~") == Some(file)
        || name.strip_prefix(b"sed").is_some_and(|r| random(r, 6, b""))
        || name
            .strip_prefix(b"tmp")
            .is_some_and(|r| random(r, 8, b"_"))
        || name
            .strip_prefix(b".tmp")
            .is_some_and(|r| random(r, 6, b""))
}

impl GuardRules {
    /// Whether creating `name` in `parent` as `what` would create a denyWrite path (or bring
    /// one into existence with what is renamed or linked there).
    fn denies_write(&self, parent: &Path, name: &[u8], what: Creation) -> bool {
        let full = parent.join(OsStr::from_bytes(name));
        self.deny_paths.iter().any(|p| full.starts_with(p))
            || (what.brings_content() && self.deny_paths.iter().any(|p| p.starts_with(&full)))
    }

    /// What `name` in `dir` is to a writable single file there, if anything.
    fn file_name(&self, dir: &Path, name: &[u8]) -> Option<FileName> {
        let protected = std::str::from_utf8(name).is_ok_and(|n| {
            matches!(
                self.protected.entry("", false, n),
                Some(ringfence_policy::Protection::Name(_))
            )
        });
        let mut best = None;
        for f in &self.files {
            let (Some(d), Some(own)) = (f.parent(), f.file_name()) else {
                continue;
            };
            if d != dir {
                continue;
            }
            if own.as_bytes() == name {
                return Some(FileName::Own);
            }
            if !protected && temporary_name(own.as_bytes(), name) {
                best = Some(FileName::Temporary);
            }
        }
        best
    }
}

impl Agent<'_> {
    /// [`resolve_parent`], refusing (EACCES) a parent on one of PID 1's writable handles:
    /// paths are resolved in PID 1's context, where `/proc/1/fd/N` names its own descriptors.
    fn parent_of(&self, dir: RawFd, path: &[u8]) -> Result<(OwnedFd, PathBuf, Vec<u8>), i32> {
        let r = resolve_parent(dir, path)?;
        if !self.file_dirs.is_empty() {
            let id = mount_id(r.0.as_raw_fd()).ok_or(libc::EACCES)?;
            if self.file_dirs.iter().any(|d| d.mnt_id == id) {
                return Err(libc::EACCES);
            }
        }
        Ok(r)
    }

    /// The writable handle on `where_`, when the directory `parent` (opened in the sandbox's
    /// view) is the directory of a writable single file.
    fn file_dir(&self, where_: &Path, parent: RawFd) -> Option<RawFd> {
        let d = self.file_dirs.iter().find(|d| d.path == where_)?;
        (dev_ino(parent)? == (d.dev, d.ino)).then_some(d.fd.as_raw_fd())
    }

    /// The directory to open `name` in through the writable handle, when allowed: the file's
    /// own name or a temporary name beside it. Only opens that may create reach the guard, and
    /// the open never follows a symlink at the name (the guard follows one itself, checking
    /// where it leads).
    fn file_open(&self, where_: &Path, parent: RawFd, name: &[u8], flags: i32) -> Option<RawFd> {
        self.rules?.file_name(where_, name)?;
        if flags & libc::O_CREAT == 0 {
            return None;
        }
        self.file_dir(where_, parent)
    }

    /// The directory to rename in through the writable handle, when `old` is a temporary name
    /// beside the writable file `new` (same directory; no exchange or whiteout).
    fn file_rename(
        &self,
        old: (&Path, RawFd, &[u8]),
        new: (&Path, RawFd, &[u8]),
        flags: i32,
    ) -> Option<RawFd> {
        let rules = self.rules?;
        if flags & !(libc::RENAME_NOREPLACE as i32) != 0 || old.0 != new.0 {
            return None;
        }
        if rules.file_name(new.0, new.2)? != FileName::Own
            || rules.file_name(old.0, old.2)? != FileName::Temporary
        {
            return None;
        }
        let d = self.file_dir(new.0, new.1)?;
        if self.file_dir(old.0, old.1)? != d {
            return None;
        }
        // Only a regular file is put in the file's place (not a symlink or directory that
        // happened to be there under a temporary-looking name).
        let name = cstr(old.2).ok()?;
        // SAFETY: stat is plain data filled by fstatat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: name is a valid string, d a directory descriptor and st a valid buffer.
        let r = unsafe { libc::fstatat(d, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        (r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(d)
    }
}

/// Lets the kernel carry out the caller's own syscall, unchanged.
fn continue_call(listener: RawFd, id: u64) {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: resp is a valid seccomp_notif_resp; failure means the caller is gone.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
}

impl Agent<'_> {
    /// chmod, chown or unlink by path. On a writable single file or a temporary name beside
    /// it (a regular file, never through a symlink) PID 1 performs it through its writable
    /// handle, as write-file-atomic's chown and chmod of its temporary file need; any other
    /// call continues as the caller's own. Continuing is safe here, unlike for a creation:
    /// the caller's own call reaches only what the caller can reach, and PID 1's handle is not
    /// among it whatever the path says by then.
    fn file_meta(&self, req: &Request, dir: RawFd) {
        let mut r = self.file_meta_inner(req, dir);
        if r.is_none() && req.op == OP_UNLINK {
            r = self.ask_unlink(req, dir);
        }
        match r {
            Some(r) => self.answer(req, r.map_or_else(|e| -(e as i64), |v| v as i64), None),
            None => continue_call(self.listener, req.id),
        }
    }

    fn file_meta_inner(&self, req: &Request, dir: RawFd) -> Option<Result<i32, i32>> {
        let (parent, where_, name) = self.parent_of(dir, &req.path1).ok()?;
        self.rules?.file_name(&where_, &name)?;
        let handle = self.file_dir(&where_, parent.as_raw_fd())?;
        let n = cstr(&name).ok()?;
        // SAFETY: n is a valid string and handle a directory descriptor; the fd is checked.
        let fd = unsafe {
            libc::openat(
                handle,
                n.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: stat is plain data filled by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is a valid descriptor and st a valid buffer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0
            || st.st_mode & libc::S_IFMT != libc::S_IFREG
        {
            return None;
        }
        let r = match req.op {
            OP_CHMOD => {
                // The main filter refuses set-ID bits before this filter is asked; refuse them
                // here too rather than rely on the order.
                if req.mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
                    return Some(Err(libc::EPERM));
                }
                let own = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes()).ok()?;
                // SAFETY: own is a valid path string (PID 1's own descriptor of the file).
                unsafe { libc::chmod(own.as_ptr(), req.mode as libc::mode_t) }
            }
            OP_CHOWN => {
                // SAFETY: an empty path with AT_EMPTY_PATH names fd itself.
                unsafe {
                    libc::fchownat(
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        req.owner.0,
                        req.owner.1,
                        libc::AT_EMPTY_PATH,
                    )
                }
            }
            OP_UNLINK if req.flags & libc::AT_REMOVEDIR == 0 => {
                // SAFETY: n is a valid string and handle a directory descriptor.
                unsafe { libc::unlinkat(handle, n.as_ptr(), 0) }
            }
            _ => return None,
        };
        Some(if r < 0 { Err(errno()) } else { Ok(0) })
    }
}

// ---------------------------------------------------------------------------------------------
// Unix sockets by path (`network.allowUnixSockets`).
//
// With a list, the command may create AF_UNIX sockets, and every connect(2), every sendto(2)
// with an address and every sendmsg(2) stops here: the filter cannot read an address. PID 1
// copies the address out of the caller's memory once and, for a unix socket given a path,
// opens that path (O_PATH, following symlinks as connect does, from the caller's working
// directory) and checks what it reached: a listed socket, a socket on the sandbox's own
// scratch mounts (private /tmp, /dev/shm), or one the sandbox bound itself. The call is then
// performed on a duplicate of the caller's socket (pidfd_getfd) with the address
// `/proc/self/fd/N` of the descriptor that was checked, so neither a second thread rewriting
// the address nor a rename of the path can change what is connected. Everything else
// (abstract and unnamed unix addresses, which reach only the sandbox's own network namespace;
// inet addresses) is performed as given, on the duplicate too: continuing the caller's own
// call would let a racing thread swap the descriptor or the address after the check.
//
// The duplicate shares the caller's open file description, so O_NONBLOCK and its
// EINPROGRESS/EAGAIN answers carry over. A call that may block (a blocking stream connect, a
// send that would wait for room) runs in a short-lived child of PID 1, which answers the
// caller itself, so that PID 1 keeps serving the rest of the sandbox.
// ---------------------------------------------------------------------------------------------

/// Which unix sockets the sandbox may reach by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixSocketRules {
    /// Listed sockets: real paths, as the sandbox sees them (the host tree at the same paths).
    pub allowed: Vec<PathBuf>,
    /// The sandbox's own scratch mounts (its private /tmp, /dev/shm): any socket there is
    /// reachable, since only the sandbox can have made it.
    pub scratch: Vec<PathBuf>,
    /// `network.ask`: a connect or send to a socket not listed is asked about
    /// (`MSG_ASK_FS` with op `connect`); `Some(seconds)`: how long PID 1 waits.
    pub ask: Option<u64>,
}

/// Refused connect and send, in the refusal reports.
const OP_CONNECT: u8 = 11;
const OP_SEND: u8 = 12;

/// At most this much data of one send is copied and sent (a stream socket takes the rest
/// with the caller's next call; a larger datagram gets EMSGSIZE, as it would from a socket
/// buffer of this size).
const SEND_MAX: usize = 1 << 20;
/// Ancillary data of one sendmsg, at most (the kernel's optmem limit is of this order).
const CONTROL_MAX: usize = 64 << 10;
/// UIO_MAXIOV.
const IOV_MAX: usize = 1024;

/// The syscalls the guard filter sends here when there is a list (see
/// `seccomp::unix_address_rules`).
pub fn is_unix_address_call(nr: libc::c_long) -> bool {
    nr == libc::SYS_connect || nr == libc::SYS_sendto || nr == libc::SYS_sendmsg
}

/// What the caller asked for, copied out of its memory.
enum AddressCall {
    Connect,
    /// sendto and sendmsg: the data, the ancillary data (fds already duplicated) and flags.
    Send {
        data: Vec<u8>,
        control: Vec<u8>,
        /// Keeps the duplicated SCM_RIGHTS descriptors open until the send is done.
        _fds: Vec<OwnedFd>,
        flags: i32,
    },
}

fn sockopt_int(sock: RawFd, opt: libc::c_int) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid buffers for an int option.
    let r = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// The path of a pathname unix address (`sun_path` up to its NUL); None for an abstract or
/// unnamed address, or another family.
fn unix_path(addr: &[u8]) -> Option<&[u8]> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]) as i32;
    let path = addr.get(2..)?;
    if family != libc::AF_UNIX || path.first().is_none_or(|&b| b == 0) {
        return None;
    }
    Some(&path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_ne_bytes(v)
}

/// Gathers the caller's iovecs, at most SEND_MAX bytes; `Err(EMSGSIZE)` when a datagram
/// would be cut.
fn gather(pid: u32, iov: u64, iovlen: u64, stream: bool) -> Result<Vec<u8>, i32> {
    if iovlen as usize > IOV_MAX {
        return Err(libc::EMSGSIZE);
    }
    let vecs = read_bytes(pid, iov, iovlen as usize * 16)?;
    let mut data = Vec::new();
    for i in 0..iovlen as usize {
        let (base, len) = (u64_at(&vecs, 16 * i), u64_at(&vecs, 16 * i + 8) as usize);
        let room = SEND_MAX - data.len();
        if len > room && !stream {
            return Err(libc::EMSGSIZE);
        }
        data.extend_from_slice(&read_bytes(pid, base, len.min(room))?);
        if data.len() == SEND_MAX {
            break;
        }
    }
    Ok(data)
}

/// Copies ancillary data, duplicating SCM_RIGHTS descriptors into PID 1. SCM_CREDENTIALS is
/// refused: PID 1 would vouch for credentials the caller chose.
fn copy_control(pid: u32, ptr: u64, len: usize) -> Result<(Vec<u8>, Vec<OwnedFd>), i32> {
    if ptr == 0 || len == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if len > CONTROL_MAX {
        return Err(libc::ENOBUFS);
    }
    let mut control = read_bytes(pid, ptr, len)?;
    let mut fds = Vec::new();
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let align = |n: usize| (n + 7) & !7;
    let mut at = 0;
    while at + hdr <= control.len() {
        let clen = u64_at(&control, at) as usize;
        let level = i32::from_ne_bytes(
            control[at + 8..at + 12]
                .try_into()
                .map_err(|_| libc::EINVAL)?,
        );
        let kind = i32::from_ne_bytes(
            control[at + 12..at + 16]
                .try_into()
                .map_err(|_| libc::EINVAL)?,
        );
        if clen < hdr || at + clen > control.len() {
            return Err(libc::EINVAL);
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
            return Err(libc::EPERM);
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            for slot in (at + hdr..at + clen).step_by(4) {
                let Some(b) = control.get(slot..slot + 4) else {
                    break;
                };
                let theirs = i32::from_ne_bytes(b.try_into().map_err(|_| libc::EINVAL)?);
                let ours = take_fd(pid, theirs)?;
                control[slot..slot + 4].copy_from_slice(&ours.as_raw_fd().to_ne_bytes());
                fds.push(ours);
            }
        }
        at += align(clen);
    }
    Ok((control, fds))
}

impl<'a> Agent<'a> {
    /// Turns on the unix socket checks (PID 1, after the mounts): the scratch mounts are
    /// recognised by their mount ids, which a path cannot fake.
    pub fn with_unix_sockets(mut self, rules: Option<&'a UnixSocketRules>) -> Agent<'a> {
        self.unix = rules;
        self.scratch_mounts = rules
            .map(|r| {
                r.scratch
                    .iter()
                    .filter_map(|p| fs::File::open(p).ok())
                    .filter_map(|f| mount_id(f.as_raw_fd()))
                    .collect()
            })
            .unwrap_or_default();
        self
    }

    /// Answers a connect, sendto or sendmsg (see the section comment).
    fn unix_address_call(&self, n: &libc::seccomp_notif) {
        let nr = n.data.nr as libc::c_long;
        let req = Request {
            id: n.id,
            pid: n.pid,
            op: if nr == libc::SYS_connect {
                OP_CONNECT
            } else {
                OP_SEND
            },
            ..Request::default()
        };
        match self.unix_address_inner(n) {
            Ok(Some(v)) => self.answer(&req, v, None),
            Ok(None) => {} // answered by a child
            Err(e) => self.answer(&req, -(e as i64), None),
        }
    }

    fn unix_address_inner(&self, n: &libc::seccomp_notif) -> Result<Option<i64>, i32> {
        let (pid, a) = (n.pid, n.data.args);
        let nr = n.data.nr as libc::c_long;
        let sock = take_fd(pid, a[0] as u32 as i32)?;
        let sock_type = sockopt_int(sock.as_raw_fd(), libc::SO_TYPE).unwrap_or(0);
        let stream = sock_type == libc::SOCK_STREAM;
        let storage = std::mem::size_of::<libc::sockaddr_storage>();
        let (addr, call) = if nr == libc::SYS_connect {
            let len = a[2] as u32 as usize;
            if len > storage {
                return Err(libc::EINVAL);
            }
            (read_bytes(pid, a[1], len)?, AddressCall::Connect)
        } else if nr == libc::SYS_sendto {
            let len = a[5] as u32 as usize;
            if len > storage {
                return Err(libc::EINVAL);
            }
            let addr = if a[4] == 0 {
                Vec::new()
            } else {
                read_bytes(pid, a[4], len)?
            };
            let want = a[2] as usize;
            if want > SEND_MAX && !stream {
                return Err(libc::EMSGSIZE);
            }
            let data = read_bytes(pid, a[1], want.min(SEND_MAX))?;
            let call = AddressCall::Send {
                data,
                control: Vec::new(),
                _fds: Vec::new(),
                flags: a[3] as i32,
            };
            (addr, call)
        } else {
            // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags.
            let m = read_bytes(pid, a[1], std::mem::size_of::<libc::msghdr>())?;
            let (name, namelen) = (u64_at(&m, 0), (u64_at(&m, 8) as u32 as usize).min(storage));
            let addr = if name == 0 {
                Vec::new()
            } else {
                read_bytes(pid, name, namelen)?
            };
            let data = gather(pid, u64_at(&m, 16), u64_at(&m, 24), stream)?;
            let (control, fds) = copy_control(pid, u64_at(&m, 32), u64_at(&m, 40) as usize)?;
            let call = AddressCall::Send {
                data,
                control,
                _fds: fds,
                flags: a[2] as i32,
            };
            (addr, call)
        };
        // The pid could have been reused while its memory was read.
        if !id_valid(self.listener, n.id) {
            return Ok(None);
        }
        let unix = sockopt_int(sock.as_raw_fd(), libc::SO_DOMAIN) == Some(libc::AF_UNIX);
        let mut checked: Option<OwnedFd> = None;
        let mut target = addr;
        if let (true, Some(path)) = (unix, unix_path(&target)) {
            let fd = self.allowed_socket(pid, path)?;
            // SAFETY: sockaddr_un is plain data; zeroed is valid.
            let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let own = format!("/proc/self/fd/{}", fd.as_raw_fd());
            for (d, s) in sun.sun_path.iter_mut().zip(own.as_bytes()) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>() + own.len() + 1;
            // SAFETY: sun is plain data of at least `len` bytes.
            target = unsafe {
                std::slice::from_raw_parts(&sun as *const libc::sockaddr_un as *const u8, len)
            }
            .to_vec();
            checked = Some(fd);
        }
        // SAFETY: F_GETFL on a descriptor we hold.
        let blocking =
            unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) } & libc::O_NONBLOCK == 0;
        let r = match &call {
            AddressCall::Connect => {
                // A datagram connect only sets the default peer; a stream connect may wait for
                // the listener (a full backlog) or the handshake.
                if blocking && sock_type != libc::SOCK_DGRAM {
                    return self.address_call_in_child(n, pid, &sock, &target, &call);
                }
                perform(sock.as_raw_fd(), &target, &call, 0)
            }
            AddressCall::Send { flags, .. } => {
                let r = perform(sock.as_raw_fd(), &target, &call, libc::MSG_DONTWAIT);
                if r == -(libc::EAGAIN as i64) && blocking && flags & libc::MSG_DONTWAIT == 0 {
                    return self.address_call_in_child(n, pid, &sock, &target, &call);
                }
                r
            }
        };
        drop(checked);
        deliver_sigpipe(pid, &call, r);
        Ok(Some(r))
    }

    /// A call that may block, performed by a child of PID 1 that answers the caller itself.
    fn address_call_in_child(
        &self,
        n: &libc::seccomp_notif,
        pid: u32,
        sock: &OwnedFd,
        target: &[u8],
        call: &AddressCall,
    ) -> Result<Option<i64>, i32> {
        // SAFETY: PID 1 is single-threaded; the child only performs the call, answers and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let r = perform(sock.as_raw_fd(), target, call, 0);
            deliver_sigpipe(pid, call, r);
            respond(self.listener, n.id, r);
            // SAFETY: _exit ends the child.
            unsafe { libc::_exit(0) }
        }
        if child < 0 {
            return Err(errno());
        }
        Ok(None)
    }

    /// Opens the socket at `path` as the caller would reach it and checks it against the
    /// rules; the descriptor that was checked, or EACCES (noted for the report).
    fn allowed_socket(&self, pid: u32, path: &[u8]) -> Result<OwnedFd, i32> {
        let path = for_caller(path.to_vec(), pid);
        let cwd = open_dir_of(pid, libc::AT_FDCWD)?;
        let c = cstr(&path)?;
        // SAFETY: c is a valid string, cwd a directory descriptor; checked before owned.
        let fd =
            unsafe { libc::openat(cwd.as_raw_fd(), c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: fd is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
        let rules = self.unix.map(|r| r.allowed.as_slice()).unwrap_or_default();
        let allowed = rules.contains(&real)
            || mount_id(fd.as_raw_fd()).is_some_and(|m| self.scratch_mounts.contains(&m))
            || dev_ino(fd.as_raw_fd()).is_some_and(|id| self.bound.borrow().contains(&id));
        if allowed {
            return Ok(fd);
        }
        let resolved = !real.as_os_str().is_empty();
        let shown = if resolved {
            real.into_os_string().into_vec()
        } else {
            path
        };
        *self.refused.borrow_mut() = Some(shown.clone());
        self.read_only.set(false);
        // `network.ask`: the supervisor asks about a socket the list does not name (by its
        // real path); a yes connects on the socket file opened above, whatever the path's
        // components do meanwhile.
        if let Some(wait) = self.unix.and_then(|r| r.ask) {
            if resolved {
                if let Some(Ok(_)) = self.ask_supervisor(OP_CONNECT, 0, 0, pid, &shown, wait) {
                    return Ok(fd);
                }
                // ask_supervisor dropped the note on any answer; a refusal is reported.
                *self.refused.borrow_mut() = Some(shown);
            }
        }
        Err(libc::EACCES)
    }
}

/// Performs `call` on `sock` to `target` (empty: no address), with `extra` send flags.
/// MSG_NOSIGNAL always: a SIGPIPE would hit PID 1 or its child, not the caller.
fn perform(sock: RawFd, target: &[u8], call: &AddressCall, extra: i32) -> i64 {
    let (ptr, len) = if target.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (
            target.as_ptr() as *const libc::sockaddr,
            target.len() as libc::socklen_t,
        )
    };
    let r = match call {
        // SAFETY: ptr is null with len 0, or points to `len` bytes of an address we own.
        AddressCall::Connect => i64::from(unsafe { libc::connect(sock, ptr, len) }),
        AddressCall::Send {
            data,
            control,
            flags,
            ..
        } => {
            let mut iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            // SAFETY: msghdr is plain data; zeroed is valid.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = ptr as *mut libc::c_void;
            msg.msg_namelen = len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if !control.is_empty() {
                msg.msg_control = control.as_ptr() as *mut libc::c_void;
                msg.msg_controllen = control.len();
            }
            // SAFETY: every pointer in msg refers to buffers we own that outlive the call; the
            // kernel only reads them.
            unsafe { libc::sendmsg(sock, &msg, flags | extra | libc::MSG_NOSIGNAL) as i64 }
        }
    };
    if r < 0 {
        -(errno() as i64)
    } else {
        r
    }
}

/// The caller's own send would have raised SIGPIPE on a closed stream unless it asked not to.
fn deliver_sigpipe(pid: u32, call: &AddressCall, r: i64) {
    if let AddressCall::Send { flags, .. } = call {
        if r == -(libc::EPIPE as i64) && flags & libc::MSG_NOSIGNAL == 0 {
            // SAFETY: kill with integer arguments; the caller is waiting in its syscall.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGPIPE) };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn batches_split_into_their_reports() {
        let mut body = Vec::new();
        for m in [&b"Cabc"[..], &b""[..], &b"D\x01\x02"[..]] {
            body.extend_from_slice(&(m.len() as u32).to_ne_bytes());
            body.extend_from_slice(m);
        }
        let mut seen: Vec<Vec<u8>> = Vec::new();
        assert!(split_batch(&body, &mut |m| seen.push(m.to_vec())));
        assert_eq!(
            seen,
            vec![b"Cabc".to_vec(), Vec::new(), b"D\x01\x02".to_vec()]
        );
        // A length past the end is malformed; what came before it was passed on.
        body.extend_from_slice(&9u32.to_ne_bytes());
        body.push(b'C');
        seen.clear();
        assert!(!split_batch(&body, &mut |m| seen.push(m.to_vec())));
        assert_eq!(seen.len(), 3);
        assert!(!split_batch(&[1, 0], &mut |_| panic!(
            "no report in a torn length"
        )));
    }

    #[test]
    fn questions_carry_a_second_path_for_renames_links_and_symlinks() {
        let msg = |op: u8, flags: i32, rest: &[u8]| {
            let mut m = vec![op];
            m.extend_from_slice(&flags.to_ne_bytes());
            m.extend_from_slice(&0o644u32.to_ne_bytes());
            m.extend_from_slice(&7u32.to_ne_bytes());
            m.extend_from_slice(rest);
            m
        };
        let q = FsQuestion::decode(&msg(OP_RENAME, 1, b"/o/a\0/o/b")).unwrap();
        assert_eq!((q.op, q.flags, q.pid), ("rename", 1, 7));
        assert_eq!(q.path, Path::new("/o/a"));
        assert_eq!(q.other.as_deref(), Some(Path::new("/o/b")));
        let q = FsQuestion::decode(&msg(OP_SYMLINK, 0, b"/o/l\0rel/target")).unwrap();
        assert_eq!(q.other.as_deref(), Some(Path::new("rel/target")));
        let q = FsQuestion::decode(&msg(OP_UNLINK, libc::AT_REMOVEDIR, b"/o/d")).unwrap();
        assert_eq!((q.op, q.other), ("rmdir", None));
        assert_eq!(
            FsQuestion::decode(&msg(OP_UNLINK, 0, b"/o/f")).unwrap().op,
            "unlink"
        );
        // A two-path question without its second path, or a one-path question with two, is
        // malformed.
        assert_eq!(FsQuestion::decode(&msg(OP_LINK, 0, b"/o/a")), None);
        assert_eq!(FsQuestion::decode(&msg(OP_OPEN, 0, b"/o/a\0/o/b")), None);
        assert_eq!(FsQuestion::decode(&msg(OP_CHMOD, 0, b"/o/a")), None);
    }

    #[test]
    fn unix_addresses_with_a_path() {
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        let addr = |rest: &[u8]| [&unix[..], rest].concat();
        assert_eq!(
            unix_path(&addr(b"/run/a.sock\0junk")),
            Some(&b"/run/a.sock"[..])
        );
        assert_eq!(unix_path(&addr(b"rel.sock")), Some(&b"rel.sock"[..]));
        // Abstract and unnamed addresses, other families and short buffers have no path.
        assert_eq!(unix_path(&addr(b"\0abstract")), None);
        assert_eq!(unix_path(&addr(b"")), None);
        let inet = (libc::AF_INET as u16).to_ne_bytes();
        assert_eq!(unix_path(&[&inet[..], b"/x"].concat()), None);
        assert_eq!(unix_path(&unix[..1]), None);
    }

    fn rules() -> GuardRules {
        GuardRules {
            // `config` released, as allowGitConfig does: the tests that need it protected say so.
            protected: ringfence_policy::ProtectedNames::new(true),
            parents: vec![".git".into()],
            paths: vec![
                PathBuf::from("/w/repo/myhooks"),
                PathBuf::from("/w/a/b/key"),
            ],
            roots: vec![PathBuf::from("/w")],
            ..GuardRules::default()
        }
    }

    #[test]
    fn temporary_names_beside_a_writable_file() {
        let f = b".claude.json";
        for ok in [
            &b".claude.json.tmp"[..],
            b".claude.json.4f2a9c1d",
            b".claude.json.tmp.123.1700000000",
            b"..claude.json.swp",
            b".claude.json~",
            b"sedAb12Cd",
            b"tmpk2j_h4l5",
            b".tmpAbC123",
        ] {
            assert!(temporary_name(f, ok), "{}", String::from_utf8_lossy(ok));
        }
        for no in [
            &b".claude.json"[..],
            b".claude.json.",
            b".claude.jsonx",
            b".bashrc",
            b"sed",
            b"sedAb12C",
            b"sedAb12Cd/x",
            b"tmpk2j_h4l",
            b"x.claude.json.tmp",
        ] {
            assert!(!temporary_name(f, no), "{}", String::from_utf8_lossy(no));
        }
        let g = GuardRules {
            files: vec![PathBuf::from("/h/.claude.json"), PathBuf::from("/h/.mcp")],
            ..GuardRules::default()
        };
        let h = Path::new("/h");
        assert_eq!(g.file_name(h, b".claude.json"), Some(FileName::Own));
        assert_eq!(
            g.file_name(h, b".claude.json.x1"),
            Some(FileName::Temporary)
        );
        assert_eq!(g.file_name(h, b"other"), None);
        assert_eq!(g.file_name(Path::new("/h/sub"), b".claude.json"), None);
        assert_eq!(
            g.file_name(h, b".mcp.json"),
            None,
            "a protected name is never a temporary"
        );
    }

    #[test]
    fn deny_write_paths_not_yet_created() {
        use Creation::{Dir, File, Link};
        let g = GuardRules {
            deny_paths: vec![PathBuf::from("/w/p/locked")],
            ..GuardRules::default()
        };
        assert!(g.denies_write(Path::new("/w/p"), b"locked", Dir));
        assert!(g.denies_write(Path::new("/w/p/locked"), b"x", File));
        assert!(g.denies_write(Path::new("/w"), b"p", Link));
        assert!(!g.denies_write(Path::new("/w"), b"p", Dir));
        assert!(!g.denies_write(Path::new("/w/p"), b"open", File));
    }

    #[test]
    fn refusals() {
        use Creation::{Dir, File, Link};
        let g = rules();
        let w = Path::new("/w/x/y");
        assert!(g.refuses(w, b".bashrc", File));
        assert!(g.refuses(w, b".vscode", Dir));
        assert!(!g.refuses(w, b"bashrc", File));
        assert!(g.refuses(Path::new("/w/p/.git"), b"hooks", Dir));
        assert!(!g.refuses(Path::new("/w/p/git"), b"hooks", Dir));
        assert!(
            !g.refuses(w, b".git", Dir),
            "git init makes .git directories"
        );
        assert!(
            g.refuses(w, b".git", File),
            "a .git file or symlink could point at hooks"
        );
        assert!(g.refuses(w, b".git", Link));
        assert!(g.refuses(Path::new("/w/repo"), b"myhooks", Dir));
        assert!(g.refuses(Path::new("/w/repo/myhooks"), b"pre-commit", File));
        // Anywhere inside a git directory: submodules, worktrees, commondir redirection.
        assert!(g.refuses(Path::new("/w/p/.git/modules/sub"), b"hooks", Dir));
        assert!(g.refuses(Path::new("/w/p/.git"), b"commondir", File));
        assert!(g.refuses(Path::new("/w/p/.git/worktrees/t"), b"commondir", File));
        assert!(!g.refuses(Path::new("/w/p/.git/objects"), b"ab", Dir));
        // Parents of a protected path that does not exist yet: mkdir is fine (empty), a
        // rename or symlink could bring the protected path with it.
        assert!(!g.refuses(Path::new("/w/a"), b"b", Dir));
        assert!(g.refuses(Path::new("/w/a"), b"b", Link));
        assert!(g.refuses(Path::new("/w"), b"a", Link));
        assert!(g.refuses(Path::new("/w/a/b"), b"key", File));
        assert!(!g.refuses(Path::new("/w/a"), b"bb", Link));
        assert!(
            !g.refuses(Path::new("/tmp"), b".bashrc", File),
            "outside the writable roots"
        );
    }

    #[test]
    fn refuses_what_the_protected_name_rule_protects() {
        let g = GuardRules {
            protected: ringfence_policy::ProtectedNames::new(false),
            roots: vec![PathBuf::from("/w")],
            ..GuardRules::default()
        };
        for path in [
            "/w/.bashrc",
            "/w/a/b/c/d/.BASHRC",
            "/w/x.bashrc",
            "/w/r/.git/modules/m/hooks",
            "/w/r/.git/worktrees/t/gitdir",
            "/w/r/.GIT/config",
            "/w/r/.git/hoo\u{212A}s",
            "/w/r/.git/objects",
            "/w/.claude/settings.json",
            "/w/.claude/notes.md",
            "/w/deep/.vscode",
            "/w/src/main.rs",
        ] {
            let p = Path::new(path);
            let want = g
                .protected
                .protects_path(p.strip_prefix("/w").unwrap())
                .is_some();
            let name = p.file_name().unwrap().as_bytes();
            assert_eq!(
                g.refuses(p.parent().unwrap(), name, Creation::File),
                want,
                "{path}"
            );
        }
    }

    #[test]
    fn new_repositories_may_have_a_hooks_directory_samples_and_a_checked_config() {
        use Creation::{Dir, File, Link, Rename, Symlink};
        let mut g = rules();
        g.protected = ringfence_policy::ProtectedNames::new(false);
        let git = Path::new("/w/p/.git");
        assert_eq!(g.verdict(git, b"hooks", Dir), Verdict::NewRepository);
        assert_eq!(g.verdict(git, b"hooks", File), Verdict::Refuse);
        assert_eq!(g.verdict(git, b"hooks", Rename), Verdict::Refuse);
        assert_eq!(g.verdict(git, b"config", Rename), Verdict::NewRepository);
        assert_eq!(g.verdict(git, b"config", File), Verdict::NewRepository);
        assert_eq!(g.verdict(git, b"config", Link), Verdict::Refuse);
        assert_eq!(g.verdict(git, b"config", Symlink), Verdict::Refuse);
        let sub = Path::new("/w/p/.git/modules/s");
        assert_eq!(g.verdict(sub, b"config", Rename), Verdict::NewRepository);
        assert_eq!(g.verdict(git, b"commondir", Rename), Verdict::Refuse);
        let hooks = Path::new("/w/p/.git/hooks");
        assert_eq!(g.verdict(hooks, b"pre-commit.sample", File), Verdict::Allow);
        assert_eq!(
            g.verdict(hooks, b"pre-commit.sample", Rename),
            Verdict::Allow
        );
        assert_eq!(g.verdict(hooks, b"pre-commit", File), Verdict::Refuse);
        assert_eq!(g.verdict(hooks, b"pre-commit", Rename), Verdict::Refuse);
        assert_eq!(g.verdict(hooks, b"x.sample", Dir), Verdict::Refuse);
        assert_eq!(g.verdict(git, b"probe", Symlink), Verdict::NewRepository);
        assert_eq!(
            g.verdict(Path::new("/w/p"), b"link", Symlink),
            Verdict::Allow
        );
        assert_eq!(
            g.verdict(Path::new("/w/p/hooks"), b"pre-commit", File),
            Verdict::Allow
        );
        assert!(is_hook_sample(hooks, b"pre-commit.sample"));
        assert!(!is_hook_sample(Path::new("/w/p/hooks"), b"a.sample"));
        assert_eq!(
            git_dir_of(Path::new("/w/p/.git/modules/s")),
            Some(git.to_path_buf())
        );
        assert_eq!(git_dir_of(Path::new("/w/p")), None);
    }
}
