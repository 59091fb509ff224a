//! Resource limits applied to every process of the sandbox as rlimits (inherited across fork and
//! exec, and lowered only: nothing inside can raise them again).

use std::io;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Processes,
    CpuSeconds,
    OpenFiles,
    FileSize,
    CoreSize,
}

impl Resource {
    fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Processes => libc::RLIMIT_NPROC,
            Resource::CpuSeconds => libc::RLIMIT_CPU,
            Resource::OpenFiles => libc::RLIMIT_NOFILE,
            Resource::FileSize => libc::RLIMIT_FSIZE,
            Resource::CoreSize => libc::RLIMIT_CORE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Processes => "RLIMIT_NPROC",
            Resource::CpuSeconds => "RLIMIT_CPU",
            Resource::OpenFiles => "RLIMIT_NOFILE",
            Resource::FileSize => "RLIMIT_FSIZE",
            Resource::CoreSize => "RLIMIT_CORE",
        }
    }
}

/// Sets soft and hard limit to `value`, or keeps the current hard limit when it is lower.
pub fn set(resource: Resource, value: u64) -> Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: cur is a valid rlimit to fill.
    if unsafe { libc::getrlimit(resource.raw(), &mut cur) } < 0 {
        return Err(Error::Syscall {
            step: "getrlimit",
            source: io::Error::last_os_error(),
        });
    }
    let v = value.min(cur.rlim_max);
    let new = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: new is a valid rlimit.
    if unsafe { libc::setrlimit(resource.raw(), &new) } < 0 {
        return Err(Error::Setup(format!(
            "setting {} to {value}: {}",
            resource.name(),
            io::Error::last_os_error()
        )));
    }
    Ok(())
}
