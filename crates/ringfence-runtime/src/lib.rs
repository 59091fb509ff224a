//! A ringfence run as a library: the policy compiled into a sandbox spec, the sandbox started and
//! supervised, its egress proxy wired to the listeners inside, every event written to the
//! activity log, the run's state directory, and overlay mode's review. The `ringfence` binary is
//! a command line over this crate; policy types live in `ringfence-policy`, system calls in
//! `ringfence-linux`.
//!
//! ```no_run
//! use ringfence_runtime::{Sandbox, Sources, Stdio};
//!
//! let outcome = Sandbox::builder(Sources::settings_file("agent.json"))
//!     .shell("cargo test")
//!     .cwd("/home/me/project")
//!     .stdio(Stdio::Inherit)
//!     .observer(|e| {
//!         if e.kind == "fs.denied" || e.kind == "net.decision" {
//!             eprintln!("{} {:?}", e.kind, e.fields);
//!         }
//!     })
//!     .run()?;
//! std::process::exit(outcome.code());
//! # Ok::<(), ringfence_runtime::Error>(())
//! ```
//!
//! One sandbox is created at a time per process: the sandbox is cloned from the calling process,
//! which must then have a single thread (`Builder::spawn` refuses otherwise), because the child
//! runs the whole setup before `execve`. The threads a run starts (its proxy, its supervisor)
//! end when its `wait` returns. A program that needs several sandboxes at once runs the
//! `ringfence` binary for each.
//!
//! The steps of a run, with the function of each, are listed in the `run` module.

// System calls live in ringfence-linux, behind safe functions.
#![forbid(unsafe_code)]

pub mod audit;
pub mod caches;
pub mod control;
pub mod export;
mod fsask;
pub mod netenv;
pub mod netrun;
pub mod overlay;
pub mod prepare;
mod run;
pub mod runs;
mod socket_owner;
pub mod tlsrun;
pub mod vm;

pub use audit::{Event, Observer};
pub use netrun::{AskRequest, NetDenial, WriteAnswer};
pub use prepare::{Prepared, Sources};
pub use ringfence_linux::supervise::Outcome;
pub use ringfence_proxy::AskAnswer as Answer;
pub use run::{read_all, shell_argv, Builder, RunOutcome, Running, Sandbox, Stdio, VmRequest};

/// What can go wrong before or around a run (the command's own failures are its exit status).
/// `ringfence run` exits 125 for each of them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy could not be loaded, merged or compiled: an unknown key, an invalid value, a
    /// file that cannot be read. Nothing was created.
    #[error("{0:#}")]
    Policy(anyhow::Error),
    /// The sandbox could not be set up (namespaces, mounts, seccomp, ...): the step and the
    /// object are named.
    #[error("setting up the sandbox: {0}")]
    Setup(#[from] ringfence_linux::Error),
    /// The run's cgroups could not be created.
    #[error("creating the run's cgroups ({mechanism}): {source}")]
    Cgroups {
        mechanism: String,
        #[source]
        source: ringfence_linux::Error,
    },
    /// The run's record, log, overlay or proxy could not be set up, or a control request
    /// failed.
    #[error("{0:#}")]
    Run(anyhow::Error),
    #[error("no command given")]
    NoCommand,
    #[error("a command argument contains a NUL byte")]
    NulInArgument,
    /// The run has ended (or is ending): there is nothing to control.
    #[error("the run has ended")]
    Ended,
}
