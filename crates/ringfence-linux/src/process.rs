//! The supervisor's calls about itself and the host: descriptors it inherited or hands out,
//! signals to processes it controls, its heap and its children's usage, and directories it
//! creates for a run. Each is a small safe function over one system call, so that the runtime
//! and the binary need no `unsafe` of their own.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstring(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether `fd` is an open descriptor of this process.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd gives EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes ownership of a descriptor this process inherited at exec for one purpose (a
/// `--control-fd`, a `--listen-fd`), after checking that it is open and above the standard
/// streams; it is made close-on-exec. Call once per descriptor, at startup, before anything else
/// could have taken it: the descriptor is closed when the result is dropped.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 || !is_open(fd) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_SETFD on an open descriptor with an integer flag.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open (checked above) and was inherited for this purpose only:
    // nothing else in this process owns it (the contract of this function).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec duplicate of `fd` numbered `min` or above.
pub fn dup_at_least(fd: &impl AsRawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC with integer arguments; the result is checked.
    let dup = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: dup is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Whether `fd` has data to read within `timeout` (false on timeout or error).
pub fn readable_within(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the length given.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// Sends `sig` to process `pid`; signal 0 checks that it exists and may be signalled.
pub fn signal(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill with integer arguments.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Restores the default action of SIGPIPE (a printing command ends when its reader goes away).
pub fn default_sigpipe() {
    // SAFETY: restoring the default disposition of one signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Gives free heap memory back to the system.
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
}

/// CPU time (milliseconds) and peak resident size (KiB) of this process's waited-for children.
pub fn children_usage() -> (i64, i64) {
    // SAFETY: rusage is plain data, filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage buffer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } < 0 {
        return (0, 0);
    }
    let cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000
        + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
    (cpu_ms, ru.ru_maxrss)
}

/// Raises the soft limit on open files to the hard limit.
pub fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A directory opened without following a symlink at its last component (`O_PATH`), and its
/// owner.
pub fn open_dir_nofollow(path: &Path) -> io::Result<(OwnedFd, u32)> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: c is a valid string; the result is checked before it is owned.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd is fresh and owned by nobody else.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: stat is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is a valid descriptor and st a valid buffer.
    check(unsafe { libc::fstat(dir.as_raw_fd(), &mut st) })?;
    Ok((dir, st.st_uid))
}

/// Creates the directory `name` in `dir` (never through a symlink at that name).
pub fn mkdir_in(dir: &impl AsRawFd, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let n = cstring(name)?;
    // SAFETY: n is a valid string and dir a directory descriptor.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) }).map(drop)
}

/// The directory of `path` and its last component, opened from `/` without following any
/// symlink on the way (a path the sandbox resolved has none left; one that appears meanwhile
/// makes this fail with ELOOP instead of leading elsewhere).
fn host_parent(path: &Path) -> io::Result<(OwnedFd, CString)> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    if !path.is_absolute() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let root = crate::layer::open_dir(Path::new("/"))?;
    let rel = parent.strip_prefix("/").unwrap_or(parent);
    let dir = crate::layer::open_dir_beneath(&root, rel)?;
    Ok((dir, cstring(name)?))
}

/// Opens `path` on the host for an approved write of the sandbox (`filesystem.ask`): with the
/// caller's `flags` and `mode`, never through a symlink, and only a regular file (a FIFO or a
/// device is refused with EACCES, without blocking on it).
pub fn open_on_host(path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let (dir, name) = host_parent(path)?;
    let open_flags =
        (flags & !libc::O_CLOEXEC) | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: name is a valid string and dir a directory descriptor; the result is checked.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), open_flags, mode) })?;
    // SAFETY: fd is fresh and owned by nobody else.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: stat is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: file is a valid descriptor and st a valid buffer.
    check(unsafe { libc::fstat(file.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_GETFL/F_SETFL on a descriptor we hold.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// Creates the directory `path` on the host for an approved mkdir of the sandbox, never
/// through a symlink.
pub fn mkdir_on_host(path: &Path, mode: u32) -> io::Result<()> {
    let (dir, name) = host_parent(path)?;
    // SAFETY: name is a valid string and dir a directory descriptor.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// Renames `old` to `new` on the host for an approved rename of the sandbox: each name in its
/// parent directory, reached without a symlink; the final names are never followed (as
/// rename(2) never does). `flags` may only be 0 or RENAME_NOREPLACE.
pub fn rename_on_host(old: &Path, new: &Path, flags: i32) -> io::Result<()> {
    if flags & !libc::RENAME_NOREPLACE as i32 != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (od, on) = host_parent(old)?;
    let (nd, nn) = host_parent(new)?;
    // SAFETY: both names are valid strings and both parents directory descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            od.as_raw_fd(),
            on.as_ptr(),
            nd.as_raw_fd(),
            nn.as_ptr(),
            flags as libc::c_uint,
        )
    };
    check(r as libc::c_int).map(drop)
}

/// Makes `new` a hard link of `old` on the host for an approved link of the sandbox; `old`
/// itself is linked, never what it points to when it is a symlink.
pub fn link_on_host(old: &Path, new: &Path) -> io::Result<()> {
    let (od, on) = host_parent(old)?;
    let (nd, nn) = host_parent(new)?;
    // SAFETY: both names are valid strings and both parents directory descriptors.
    check(unsafe { libc::linkat(od.as_raw_fd(), on.as_ptr(), nd.as_raw_fd(), nn.as_ptr(), 0) })
        .map(drop)
}

/// Creates the symlink `path` (to `target`, as written) on the host for an approved symlink
/// of the sandbox.
pub fn symlink_on_host(target: &Path, path: &Path) -> io::Result<()> {
    let (dir, name) = host_parent(path)?;
    let target = cstring(target.as_os_str())?;
    // SAFETY: both are valid strings and dir a directory descriptor.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Removes `path` on the host for an approved unlink (`dir`: rmdir) of the sandbox; a final
/// symlink is removed itself.
pub fn unlink_on_host(path: &Path, dir: bool) -> io::Result<()> {
    let (parent, name) = host_parent(path)?;
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: name is a valid string and parent a directory descriptor.
    check(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}
