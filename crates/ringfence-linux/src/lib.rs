//! The Linux sandbox: namespaces, mounts, seccomp, capabilities and limits.
//! This is the only ringfence crate that makes raw system calls; everything here is a small safe
//! function over one syscall step, named in the order the steps happen.
#![cfg(target_os = "linux")]

pub mod error;
pub mod seccomp;

pub use error::Error;
