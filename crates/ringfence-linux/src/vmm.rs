//! The few system calls of `--isolation vm`: the VMM child that dies with its parent, and the
//! guest's PID 1 powering the machine off.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Spawns `cmd` with `PR_SET_PDEATHSIG(SIGKILL)`: the VMM dies when the process that started
/// it does, even when that one is killed with SIGKILL and runs no teardown.
pub fn spawn_dying_with_parent(cmd: &mut Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe calls
    // (prctl, getppid, kill on itself); it touches no memory of the parent's allocator.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would kill us.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Powers the machine off (the guest's PID 1, after the command ended). Returns only on error.
pub fn power_off() -> io::Error {
    // SAFETY: sync takes no arguments; reboot takes an integer command.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    io::Error::last_os_error()
}
