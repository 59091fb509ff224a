//! The Linux sandbox: namespaces, mounts, seccomp, capabilities and limits.
//! This is the only ringfence crate that makes raw system calls; everything here is a small safe
//! function over one syscall step. Files in the order the steps happen: `plan` (what to mount),
//! `protect` (finding protected entries), `sandbox` (clone and setup), `mounts`, `limits`,
//! `caps`, `seccomp`, `reaper` (PID 1), `supervise` (the host side while it runs), `cgroup`
//! and `memwatch` (the whole-sandbox limits, with or without a cgroup), `tun` (transparent
//! capture's device). `net` holds the few calls the egress proxy makes (splice, socket options,
//! interface addresses); `process` the supervisor's calls about itself (inherited descriptors,
//! signals, its heap), so that the runtime and the binary need no `unsafe` of their own.
#![cfg(target_os = "linux")]

pub mod caps;
pub mod cgroup;
pub mod error;
pub mod gitconfig;
pub mod guard;
pub mod layer;
pub mod limits;
pub mod memwatch;
pub mod mounts;
pub mod net;
pub mod netns;
pub mod plan;
pub mod probe;
pub mod process;
pub mod protect;
pub mod reaper;
pub mod sandbox;
pub mod seccomp;
pub mod supervise;
pub mod sys;
pub mod timing;
pub mod tun;
pub mod vmm;

pub use error::Error;
