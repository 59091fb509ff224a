//! Kernel feature probes for `doctor` and for refusing early: each runs in a short-lived child
//! process so that nothing changes in the caller.

use std::fs;
use std::path::Path;

/// Runs `f` in a forked child and returns its exit code (0 = success).
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the caller is single-threaded (doctor runs before anything else); the child only
    // makes a few system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return 255;
    }
    if pid == 0 {
        let code = f();
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        255
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(255)
        & 0xff
}

/// Whether this user can create a user namespace (with mount, PID and network namespaces).
pub fn user_namespaces() -> Result<(), String> {
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET;
    let code = in_child(|| {
        // SAFETY: unshare with integer flags, in a throw-away child.
        if unsafe { libc::unshare(flags) } < 0 {
            errno()
        } else {
            0
        }
    });
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(code).to_string())
    }
}

/// Whether overlayfs can be mounted inside a user namespace, the way overlay mode mounts it.
pub fn overlay_in_user_namespace() -> Result<(), String> {
    let base = std::env::temp_dir().join(format!("ringfence-probe-{}", std::process::id()));
    let dirs = ["lower", "upper", "work", "merged"];
    for d in dirs {
        if let Err(e) = fs::create_dir_all(base.join(d)) {
            let _ = fs::remove_dir_all(&base);
            return Err(format!("creating {}: {e}", base.display()));
        }
    }
    let uid = crate::sys::getuid();
    let gid = crate::sys::getgid();
    let b = base.clone();
    let code = in_child(move || {
        // SAFETY: unshare with integer flags, in a throw-away child.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } < 0 {
            return errno();
        }
        let _ = fs::write("/proc/self/setgroups", "deny");
        if fs::write("/proc/self/uid_map", format!("0 {uid} 1")).is_err()
            || fs::write("/proc/self/gid_map", format!("0 {gid} 1")).is_err()
        {
            return 254;
        }
        match crate::mounts::mount_overlay(
            &b.join("lower"),
            &b.join("upper"),
            &b.join("work"),
            &b.join("merged"),
        ) {
            Ok(()) => 0,
            Err(crate::Error::Path { source, .. }) => source.raw_os_error().unwrap_or(255) & 0xff,
            Err(_) => 255,
        }
    });
    // overlayfs leaves work/work with mode 000.
    let _ = fs::set_permissions(
        base.join("work/work"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    );
    let _ = fs::remove_dir_all(&base);
    match code {
        0 => Ok(()),
        254 => Err("writing the uid/gid map failed".into()),
        c => Err(std::io::Error::from_raw_os_error(c).to_string()),
    }
}

/// The seccomp actions this kernel offers, or None without seccomp filter support.
pub fn seccomp_actions() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the new mount API (open_tree, move_mount, mount_setattr) is present.
pub fn mount_api() -> Result<(), String> {
    // open_tree with an invalid flag reaches the kernel (EINVAL) when the syscall exists.
    // SAFETY: an invalid-flag probe; no descriptor is created.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, -1, c"".as_ptr(), 0xffff_ffffu32) };
    let e = errno();
    if r >= 0 || e != libc::ENOSYS {
        Ok(())
    } else {
        Err("open_tree: not implemented by this kernel (Linux 5.12 or newer is needed)".into())
    }
}

/// One cgroup mount: its version and, for v1, its controllers; whether this user may create
/// groups in it.
#[derive(Debug)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub path: String,
    /// The group of the hierarchy that the mount shows at `path` (`/` for the whole tree).
    pub root: String,
    pub version: u8,
    pub controllers: Vec<String>,
    pub writable: bool,
}

/// The cgroup mounts of this process's mount namespace, read once per process: a run asks
/// several times (detection, the caller's memory limit, the freezer, the sweep), and what
/// is mounted at the cgroup mount points does not change under a supervisor. A group
/// directory that went away since fails when it is used, and the run stops there.
pub fn cgroups() -> &'static [CgroupMount] {
    static MOUNTS: std::sync::OnceLock<Vec<CgroupMount>> = std::sync::OnceLock::new();
    MOUNTS.get_or_init(read_cgroups)
}

fn read_cgroups() -> Vec<CgroupMount> {
    let Ok(info) = crate::sys::read_kernel_text("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let super_opts = r.next().unwrap_or("");
        let mut l = left.split_whitespace();
        let root = l.nth(3).unwrap_or("/").to_string();
        let path = l.next().unwrap_or("").to_string();
        let version = match fstype {
            "cgroup" => 1,
            "cgroup2" => 2,
            _ => continue,
        };
        let controllers = if version == 1 {
            super_opts
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                .map(String::from)
                .collect()
        } else {
            crate::sys::read_kernel_text(Path::new(&path).join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let c = crate::sys::cstring(&path).ok();
        // SAFETY: access with a valid path string.
        let writable = c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0);
        out.push(CgroupMount {
            path,
            root,
            version,
            controllers,
            writable,
        });
    }
    out
}
