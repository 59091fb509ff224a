//! Carrying out a [`MountPlan`] inside the sandbox's new mount namespace: a private tmpfs as the
//! staging root, the host tree reachable at `/oldroot`, the sandbox's view assembled at `/newroot`,
//! then pivot into it and detach the host tree. Binds use the new mount API so that attributes are
//! set on the detached copy before it is attached, and targets are opened without following a
//! final symlink.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::guard::WritableDir;
use crate::plan::{Kind, MountPlan, Step};
use crate::sys::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

const STAGE: &str = "/tmp";
const NEWROOT: &str = "/newroot";
const OLDROOT: &str = "/oldroot";
const EMPTY_FILE: &str = "/empty";

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Device nodes bound from the host into the sandbox's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Kernel knobs under /proc that stay read-only, and files hidden outright.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];
const PROC_HIDDEN: &[&str] = &["kcore", "keys", "timer_list", "sched_debug", "kallsyms"];

fn path_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Path {
        step,
        path: path.to_path_buf(),
        source,
    }
}

fn in_new(p: &Path) -> PathBuf {
    join_abs(Path::new(NEWROOT), p)
}

fn in_old(p: &Path) -> PathBuf {
    join_abs(Path::new(OLDROOT), p)
}

fn join_abs(base: &Path, p: &Path) -> PathBuf {
    base.join(p.strip_prefix("/").unwrap_or(p))
}

/// A detached copy of the mount tree at `src` (`AT_RECURSIVE` for the whole subtree).
fn clone_tree(src: &Path, recursive: bool) -> Result<OwnedFd> {
    let c = sys::cstring(src).map_err(path_err("open_tree", src))?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: c is a valid string; the returned fd is checked before it is owned.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(path_err(
            "open_tree (new mount API, Linux 5.12 or newer)",
            src,
        )(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn setattr_fd(fd: &OwnedFd, recursive: bool, set: u64, clear: u64, what: &Path) -> Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: fd is valid, the empty path is a NUL-terminated string and attr is a valid
    // mount_attr whose size is passed alongside.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(path_err("mount_setattr", what)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Attaches the detached tree `tree` onto the object `target` refers to.
fn attach(tree: &OwnedFd, target: &OwnedFd, what: &Path) -> Result<()> {
    // SAFETY: both fds are valid; empty paths are NUL-terminated strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(path_err("move_mount", what)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Binds `src` onto `dst` (not following a final symlink at `dst`), with `set`/`clear` mount
/// attributes applied to the copy before it becomes visible.
fn bind(src: &Path, dst: &Path, recursive: bool, set: u64, clear: u64) -> Result<()> {
    let tree = clone_tree(src, recursive)?;
    setattr_fd(&tree, recursive, set, clear, dst)?;
    let target = sys::open_path_nofollow(dst).map_err(path_err("open", dst))?;
    attach(&tree, &target, dst)
}

fn mount_tmpfs(dst: &Path, options: &str, flags: libc::c_ulong) -> Result<()> {
    sys::mount(
        Some(Path::new("tmpfs")),
        dst,
        Some("tmpfs"),
        flags | libc::MS_NOSUID | libc::MS_NODEV,
        Some(options),
    )
    .map_err(path_err("mount tmpfs", dst))
}

/// Makes the mount whose root is at `path` read-only (not its submounts).
fn make_read_only(path: &Path) -> Result<()> {
    let fd = sys::open_path_nofollow(path).map_err(path_err("open", path))?;
    setattr_fd(&fd, false, MOUNT_ATTR_RDONLY, 0, path)
}

/// Creates an empty mount point for `kind` at `path` and its missing parents (only ever inside a
/// tmpfs of the sandbox's own).
fn make_mount_point(path: &Path, kind: Kind) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(path_err("mkdir", parent))?;
    }
    match kind {
        Kind::Dir => fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .map_err(path_err("mkdir", path)),
        Kind::File => fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map(drop)
            .map_err(path_err("create", path)),
    }
}

fn kind_of(p: &Path) -> Kind {
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => Kind::Dir,
        _ => Kind::File,
    }
}

/// Stage 1: private propagation, staging tmpfs, pivot into it. Afterwards the host tree is at
/// /oldroot and the sandbox's view is built at /newroot.
pub fn stage() -> Result<()> {
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(path_err("make private", Path::new("/")))?;
    mount_tmpfs(Path::new(STAGE), "mode=0755,size=1m", 0)?;
    for d in ["newroot", "oldroot"] {
        let p = Path::new(STAGE).join(d);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&p)
            .map_err(path_err("mkdir", &p))?;
    }
    // The stand-in for hidden files. Writable by its mode but only ever bound read-only, so
    // writing a hidden file fails with EROFS, as writing anything else read-only does (with
    // mode 0444 the permission check would come first and answer EACCES).
    let empty = Path::new(STAGE).join("empty");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&empty)
        .map_err(path_err("create", &empty))?;
    let old = Path::new(STAGE).join("oldroot");
    sys::pivot_root(Path::new(STAGE), &old).map_err(path_err("pivot_root", Path::new(STAGE)))?;
    std::env::set_current_dir("/").map_err(path_err("chdir", Path::new("/")))?;
    Ok(())
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// Where overlays are assembled in the staging tmpfs before they are bound into /newroot.
const OVERLAYS: &str = "/overlays";

/// The error an overlayfs context explains in its log (read from the context fd), or `e`.
fn fs_context_error(fsfd: &OwnedFd, e: io::Error) -> io::Error {
    let mut buf = [0u8; 512];
    let mut text = String::new();
    loop {
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(fsfd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n as usize]));
        text.push(';');
    }
    if text.is_empty() {
        e
    } else {
        io::Error::new(e.kind(), format!("{e} ({})", text.trim_end_matches(';')))
    }
}

/// Mounts an overlay of the directory `lower` with `upper` and `work` (on one filesystem) at
/// `dst`. `userxattr`: the kernel keeps its whiteout and opaque marks in `user.overlay.*`
/// xattrs, the only ones a user namespace may set. Layers are passed one by one
/// (`lowerdir+`), so no path needs escaping.
pub(crate) fn mount_overlay(lower: &Path, upper: &Path, work: &Path, dst: &Path) -> Result<()> {
    let fail = |e: io::Error| Error::Path {
        step: "mount overlay (overlayfs in a user namespace, Linux 6.8 or newer)",
        path: lower.to_path_buf(),
        source: e,
    };
    // SAFETY: a constant NUL-terminated file system name; the fd is checked before it is owned.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |cmd: libc::c_uint, key: &CString, value: Option<&CString>| -> Result<()> {
        let v = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: fsfd is a valid fs context; key and value are NUL-terminated strings (or null
        // where the command takes no value).
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                cmd,
                key.as_ptr(),
                v,
                0,
            )
        };
        if r < 0 {
            return Err(fail(fs_context_error(&fsfd, io::Error::last_os_error())));
        }
        Ok(())
    };
    let c = |s: &str| CString::new(s).map_err(|_| fail(io::Error::from_raw_os_error(libc::EINVAL)));
    let p = |p: &Path| sys::cstring(p).map_err(fail);
    set(FSCONFIG_SET_STRING, &c("lowerdir+")?, Some(&p(lower)?))?;
    set(FSCONFIG_SET_STRING, &c("upperdir")?, Some(&p(upper)?))?;
    set(FSCONFIG_SET_STRING, &c("workdir")?, Some(&p(work)?))?;
    set(FSCONFIG_SET_FLAG, &c("userxattr")?, None)?;
    // SAFETY: fsfd is a valid fs context; the command takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if r < 0 {
        return Err(fail(fs_context_error(&fsfd, io::Error::last_os_error())));
    }
    // SAFETY: fsfd is a created fs context; the mount fd is checked before it is owned.
    let m = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) as libc::c_uint,
        )
    };
    if m < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    // SAFETY: m is a fresh descriptor owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(m as i32) };
    make_mount_point(dst, Kind::Dir)?;
    let target = sys::open_path_nofollow(dst).map_err(path_err("open", dst))?;
    attach(&tree, &target, dst)
}

/// Where `path` comes from: the staged overlay that covers it, or the host tree.
fn source_of(path: &Path, overlays: &[(PathBuf, PathBuf)]) -> PathBuf {
    overlays
        .iter()
        .filter(|(root, _)| path.starts_with(root))
        .max_by_key(|(root, _)| root.components().count())
        .map(|(root, staged)| match path.strip_prefix(root) {
            Ok(rel) if !rel.as_os_str().is_empty() => staged.join(rel),
            _ => staged.clone(),
        })
        .unwrap_or_else(|| in_old(path))
}

/// Stage 2: carries out every step of the plan at /newroot. Returns the writable handles on
/// the directories of writable single files, for PID 1 (see `guard::WritableDir`).
pub fn apply(plan: &MountPlan) -> Result<Vec<WritableDir>> {
    let mut hidden_dirs: Vec<OwnedFd> = Vec::new();
    let mut file_dirs: Vec<WritableDir> = Vec::new();
    // Overlay roots and where each is assembled, for the steps that bind from them.
    let mut overlays: Vec<(PathBuf, PathBuf)> = Vec::new();
    for step in &plan.steps {
        match step {
            Step::Overlay { path, upper, work } => {
                let staged = Path::new(OVERLAYS).join(overlays.len().to_string());
                mount_overlay(&in_old(path), &in_old(upper), &in_old(work), &staged)?;
                let dst = in_new(path);
                make_mount_point(&dst, Kind::Dir)?;
                bind(
                    &staged,
                    &dst,
                    true,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    MOUNT_ATTR_RDONLY,
                )?;
                overlays.push((path.clone(), staged));
            }
            Step::RootReadOnly => {
                let tree = clone_tree(Path::new(OLDROOT), true)?;
                setattr_fd(
                    &tree,
                    true,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    0,
                    Path::new("/"),
                )?;
                let target = sys::open_path_nofollow(Path::new(NEWROOT))
                    .map_err(path_err("open", Path::new(NEWROOT)))?;
                attach(&tree, &target, Path::new("/"))?;
            }
            Step::Dev => dev()?,
            Step::Proc => proc_fs()?,
            Step::Tmp { size } => {
                let dst = in_new(Path::new("/tmp"));
                mount_tmpfs(&dst, &format!("mode=1777,size={size}"), 0)?;
            }
            Step::Writable { path } => {
                let dst = in_new(path);
                make_mount_point(&dst, kind_of(&in_old(path)))?;
                bind(
                    &in_old(path),
                    &dst,
                    true,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    MOUNT_ATTR_RDONLY,
                )?;
            }
            Step::WritableFile { path } => {
                let Some(dir) = path.parent() else {
                    continue;
                };
                if file_dirs.iter().any(|d| d.path == dir) {
                    continue;
                }
                // A detached clone of the directory's mount, made writable and never attached:
                // only the descriptor reaches it.
                let tree = clone_tree(&in_old(dir), false)?;
                setattr_fd(
                    &tree,
                    false,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    MOUNT_ATTR_RDONLY,
                    dir,
                )?;
                let view = in_new(dir);
                let view_fd = sys::open_path_nofollow(&view).map_err(path_err("open", &view))?;
                file_dirs.push(
                    WritableDir::new(dir.to_path_buf(), tree, view_fd.as_raw_fd())
                        .map_err(path_err("stat", &view))?,
                );
            }
            Step::HideDir { path } => {
                let dst = in_new(path);
                mount_tmpfs(&dst, "mode=0755,size=64k", libc::MS_NOEXEC)?;
                hidden_dirs.push(sys::open_path_nofollow(&dst).map_err(path_err("open", &dst))?);
            }
            Step::HideFile { path } => {
                bind(
                    Path::new(EMPTY_FILE),
                    &in_new(path),
                    false,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                    0,
                )?;
            }
            Step::MaskFile { path, fake } => {
                let dst = in_new(path);
                make_mount_point(&dst, Kind::File)?;
                bind(
                    &in_old(fake),
                    &dst,
                    false,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                    0,
                )?;
            }
            Step::Reopen {
                path,
                kind,
                writable,
            } => {
                let dst = in_new(path);
                make_mount_point(&dst, *kind)?;
                let (set, clear) = if *writable {
                    (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MOUNT_ATTR_RDONLY)
                } else {
                    (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0)
                };
                // A writable path in overlay mode is re-opened from its overlay, never from the
                // real folder.
                let src = if *writable {
                    source_of(path, &overlays)
                } else {
                    in_old(path)
                };
                bind(&src, &dst, true, set, clear)?;
            }
            Step::Pin { path } => {
                let dst = in_new(path);
                bind(&dst, &dst, true, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0)?;
            }
            Step::ReadOnly { path, .. } => {
                let dst = in_new(path);
                let is_symlink = dst
                    .symlink_metadata()
                    .map(|m| m.file_type().is_symlink())
                    .map_err(path_err("lstat", &dst))?;
                let src = if is_symlink {
                    PathBuf::from(EMPTY_FILE)
                } else {
                    dst.clone()
                };
                bind(
                    &src,
                    &dst,
                    true,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    0,
                )?;
            }
        }
    }
    for fd in &hidden_dirs {
        setattr_fd(
            fd,
            false,
            MOUNT_ATTR_RDONLY,
            0,
            Path::new("(hidden directory)"),
        )?;
    }
    Ok(file_dirs)
}

fn dev() -> Result<()> {
    let dev = in_new(Path::new("/dev"));
    mount_tmpfs(&dev, "mode=0755,size=64k", libc::MS_NOEXEC)?;
    for name in DEVICES {
        let dst = dev.join(name);
        make_mount_point(&dst, Kind::File)?;
        let src = in_old(&Path::new("/dev").join(name));
        // Device nodes keep their host mount's flags (no nodev), but never become executable.
        let tree = clone_tree(&src, false)?;
        setattr_fd(&tree, false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, 0, &dst)?;
        let target = sys::open_path_nofollow(&dst).map_err(path_err("open", &dst))?;
        attach(&tree, &target, &dst)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(target, &p).map_err(path_err("symlink", &p))?;
    }
    let pts = dev.join("pts");
    make_mount_point(&pts, Kind::Dir)?;
    sys::mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(path_err("mount devpts", &pts))?;
    let shm = dev.join("shm");
    make_mount_point(&shm, Kind::Dir)?;
    mount_tmpfs(&shm, "mode=1777,size=64m", 0)?;
    make_read_only(&dev)
}

/// A procfs of the sandbox's PID namespace in the staging tmpfs (after `stage`), for PID 1's
/// own use while it sets up: the thread that makes the network namespace names it through
/// this, and PID 1 sets `ns_last_pid` through it. Gone with the staging tmpfs at `enter`.
pub(crate) fn stage_proc() -> Result<OwnedFd> {
    let dir = Path::new("/setup-proc");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(path_err("mkdir", dir))?;
    sys::mount(
        Some(Path::new("proc")),
        dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(path_err("mount proc", dir))?;
    sys::open_path_nofollow(dir).map_err(path_err("open", dir))
}

fn proc_fs() -> Result<()> {
    let proc_dir = in_new(Path::new("/proc"));
    sys::mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(path_err("mount proc", &proc_dir))?;
    for name in PROC_READ_ONLY {
        let p = proc_dir.join(name);
        if p.symlink_metadata().is_err() {
            continue;
        }
        bind(
            &p,
            &p,
            true,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            0,
        )?;
    }
    for name in PROC_HIDDEN {
        let p = proc_dir.join(name);
        match p.symlink_metadata() {
            Err(_) => continue,
            Ok(m) if m.is_dir() => mount_tmpfs(&p, "mode=0555,size=4k", libc::MS_RDONLY)?,
            Ok(_) => bind(
                Path::new(EMPTY_FILE),
                &p,
                false,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                0,
            )?,
        }
    }
    Ok(())
}

/// Binds a read-only file with `content` over the sandbox's /etc/resolv.conf (before `enter`;
/// the file lives in the staging tmpfs). A symlinked resolv.conf is replaced where it points.
pub fn resolv_conf(content: &str) -> Result<()> {
    let src = Path::new("/resolv.conf");
    fs::write(src, content).map_err(path_err("write", src))?;
    let mut dst = in_new(Path::new("/etc/resolv.conf"));
    for _ in 0..8 {
        match fs::read_link(&dst) {
            Ok(target) if target.is_absolute() => dst = in_new(&target),
            Ok(target) => dst = dst.parent().unwrap_or(Path::new(NEWROOT)).join(target),
            Err(_) => break,
        }
    }
    if dst.symlink_metadata().is_err() {
        return Err(Error::Setup(format!(
            "network.transparent: {} does not exist in the sandbox's view, so the resolver \
             cannot be named there",
            dst.display()
        )));
    }
    bind(
        src,
        &dst,
        false,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        0,
    )
}

/// Stage 3: make /newroot the root and drop the host tree and the staging tmpfs.
pub fn enter() -> Result<()> {
    let new = Path::new(NEWROOT);
    std::env::set_current_dir(new).map_err(path_err("chdir", new))?;
    sys::pivot_root(Path::new("."), Path::new(".")).map_err(path_err("pivot_root", new))?;
    sys::umount_detach(Path::new(".")).map_err(path_err("detach old root", Path::new("/")))?;
    std::env::set_current_dir("/").map_err(path_err("chdir", Path::new("/")))?;
    Ok(())
}

/// Brings the loopback interface of the new network namespace up.
pub fn loopback_up() -> Result<()> {
    let err = |source| Error::Syscall {
        step: "bring up lo",
        source,
    };
    // SAFETY: socket with integer arguments; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: ifr is a valid ifreq for SIOCSIFFLAGS.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Opens a new pseudo-terminal in the sandbox's own devpts (after `enter`). Returns the master
/// and the path of the slave.
pub fn open_pty() -> Result<(OwnedFd, CString)> {
    let err = |source| Error::Syscall {
        step: "open pseudo-terminal",
        source,
    };
    let master = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/pts/ptmx")
        .map_err(err)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty number to an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let slave = CString::new(format!("/dev/pts/{n}"))
        .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
    Ok((OwnedFd::from(master), slave))
}
