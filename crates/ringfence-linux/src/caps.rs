//! Dropping every capability: bounding set, ambient set, then effective, permitted and
//! inheritable, so nothing the sandbox runs can regain one (no_new_privs does the rest).

use std::io;

use crate::error::{Error, Result};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// From <linux/capability.h>.
pub const CAP_SYS_PTRACE: u32 = 19;

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Drops every capability.
pub fn drop_all() -> Result<()> {
    drop_all_but(None)
}

/// Drops every capability from the bounding and ambient sets, and all but `keep` from the
/// effective and permitted sets (nothing inheritable). A kept capability does not survive an
/// exec: the bounding set is empty and the ids inside are not 0.
pub fn drop_all_but(keep: Option<u32>) -> Result<()> {
    let err = |step| move |source| Error::Syscall { step, source };
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            // EINVAL: a capability number this kernel does not know; nothing to drop.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(err("drop bounding capability")(e));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(err("clear ambient capabilities")(io::Error::last_os_error()));
    }
    let mut data = [CapData::default(); 2];
    if let Some(cap) = keep {
        let (i, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[i].effective = bit;
        data[i].permitted = bit;
    }
    capset(&data)
}

fn capset(data: &[CapData; 2]) -> Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and data are valid capset arguments for version 3 (two data elements).
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } < 0
    {
        return Err(Error::Syscall {
            step: "set capabilities",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Clears the effective, permitted and inheritable sets (no bounding-set change, which would
/// need CAP_SETPCAP).
pub fn clear() -> Result<()> {
    capset(&[CapData::default(); 2])
}
