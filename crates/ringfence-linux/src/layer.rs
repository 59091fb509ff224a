//! Reading an overlay's upper layer and changing the real folder safely, host side: whiteouts
//! and opaque directories as the kernel writes them with the `userxattr` option, directories
//! opened beneath a root without following any symlink, and one sync for many files.

use std::ffi::CString;
use std::fs::Metadata;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The xattr an overlay mounted with `userxattr` sets on a directory that hides everything of
/// the same name in the lower layer (`trusted.overlay.opaque` without that option).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// A whiteout: a character device 0/0 that stands for a deleted lower entry.
pub fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether the upper-layer directory `dir` is opaque (value "y"; "x" only marks lower layers
/// that hold xattr whiteouts, which an upper layer never does).
pub fn is_opaque(dir: &Path) -> io::Result<bool> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let name =
        CString::new(OPAQUE_XATTR).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = [0u8; 8];
    // SAFETY: both strings are NUL-terminated; buf is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(n == 1 && buf[0] == b'y')
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Opens the directory `rel` beneath the directory `root` (`rel` empty: `root` itself) without
/// following any symlink on the way and without leaving `root`.
pub fn open_dir_beneath(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_RDONLY) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: root is a valid fd, c a NUL-terminated string and how a valid open_how whose size
    // is passed alongside; the result is checked before it is owned.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens a directory by its absolute path, refusing a symlink as the final component.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is NUL-terminated; the result is checked before it is owned.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_RDONLY | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes out every dirty page of the filesystem that holds `fd` (one sync for a batch of
/// files written aside, before they are renamed into place).
pub fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fd is a valid descriptor.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn beneath_refuses_symlinks_and_escapes() {
        let base = std::env::temp_dir().join(format!("rf-layer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("a/link")).unwrap();
        let root = open_dir(&base).unwrap();
        assert!(open_dir_beneath(&root, Path::new("a/b")).is_ok());
        assert!(open_dir_beneath(&root, Path::new("")).is_ok());
        assert!(open_dir_beneath(&root, Path::new("a/link")).is_err());
        assert!(open_dir_beneath(&root, Path::new("../")).is_err());
        assert!(open_dir(&base.join("a/link")).is_err());
        assert!(!is_opaque(&base.join("a")).unwrap());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
