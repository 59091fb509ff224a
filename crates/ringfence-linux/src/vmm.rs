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

/// The rate of this CPU's time-stamp counter in kHz, measured against CLOCK_MONOTONIC over
/// `window`. A guest under QEMU's TCG reads the host's counter, and its kernel's own
/// calibration against the emulated PIT fails on a loaded host (the boot then hangs): the
/// guest is told this rate instead (`tsc_early_khz=`). None where the CPU has no invariant
/// counter (`constant_tsc` and `nonstop_tsc` in /proc/cpuinfo).
#[cfg(target_arch = "x86_64")]
pub fn tsc_khz(window: std::time::Duration) -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if !has("constant_tsc") || !has("nonstop_tsc") {
        return None;
    }
    let read = || {
        // SAFETY: RDTSC has no operands and no side effects; every x86_64 CPU has it (the
        // flags above say it is invariant).
        unsafe { core::arch::x86_64::_rdtsc() }
    };
    // The largest of three windows: a preemption between a clock read and a counter read
    // only lowers the figure.
    let mut best: Option<u64> = None;
    for _ in 0..3 {
        let (t0, c0) = (std::time::Instant::now(), read());
        std::thread::sleep(window);
        let (c1, t1) = (read(), std::time::Instant::now());
        let ns = t1.duration_since(t0).as_nanos() as u64;
        if ns == 0 {
            continue;
        }
        let khz = (c1.wrapping_sub(c0) as u128 * 1_000_000 / ns as u128) as u64;
        best = Some(best.map_or(khz, |b| b.max(khz)));
    }
    best.filter(|k| *k > 0)
}

/// Elsewhere the guest's kernel calibrates its own clock.
#[cfg(not(target_arch = "x86_64"))]
pub fn tsc_khz(_window: std::time::Duration) -> Option<u64> {
    None
}
