//! The policy of a run exported for other engines: an OCI runtime bundle (`oci.rs`) or
//! Kubernetes objects (`kubernetes.rs`) with the same mounts, limits and seccomp filter
//! (`seccomp.rs`). What the exported objects cannot enforce is listed, never dropped in
//! silence; what would leave them materially weaker than `ringfence run` makes the export
//! refuse unless the caller accepts it by name.

use ringfence_linux::seccomp::FilterOptions;
use ringfence_policy::Policy;

use crate::Prepared;

pub mod kubernetes;
pub mod oci;
pub mod seccomp;

/// A policy feature the exported objects do not carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The policy key or feature, as the user knows it.
    pub feature: String,
    /// What happens instead in the exported objects.
    pub instead: String,
    /// Whether the exported objects are weaker than `ringfence run` because of it (then the
    /// export refuses without `--allow-weaker`).
    pub weaker: bool,
}

impl Gap {
    fn note(feature: impl Into<String>, instead: impl Into<String>) -> Gap {
        Gap {
            feature: feature.into(),
            instead: instead.into(),
            weaker: false,
        }
    }

    fn weaker(feature: impl Into<String>, instead: impl Into<String>) -> Gap {
        Gap {
            weaker: true,
            ..Gap::note(feature, instead)
        }
    }
}

/// The gaps every export has, whatever the engine: what `ringfence run` enforces from its own
/// PID 1, supervisor and log, none of which exists in a container engine.
pub fn policy_gaps(prepared: &Prepared) -> Vec<Gap> {
    let policy = &prepared.policy;
    let mut gaps = Vec::new();
    // The creation guard: names created later, renames of protecting parents, writes of
    // single files through PID 1. None of it exists in a container engine.
    if let Some(guard) = &prepared.guard {
        if !guard.roots.is_empty() {
            let roots: Vec<String> = guard
                .roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            gaps.push(Gap::weaker(
                "the creation guard (protected names that do not exist yet, at any depth of a writable root)",
                format!(
                    "not enforced: inside {} the sandbox can create .bashrc, .git/hooks/*, .vscode/ and the like, and rename .git or .claude away",
                    roots.join(", ")
                ),
            ));
        }
        for p in prepared.not_yet.iter().chain(&prepared.deny_not_yet) {
            gaps.push(Gap::weaker(
                format!(
                    "{} (protected or denyWrite, does not exist yet)",
                    p.display()
                ),
                "not enforced: the sandbox can create it",
            ));
        }
    }
    if policy.fs_ask {
        gaps.push(Gap::note(
            "filesystem.ask",
            "no questions: writes outside the writable roots are refused (stricter)",
        ));
    }
    if policy.fs_ask_read {
        gaps.push(Gap::note(
            "filesystem.askRead",
            "no questions: hidden files stay hidden (stricter)",
        ));
    }
    if prepared.unix_sockets.is_some() {
        gaps.push(Gap::note(
            "network.allowUnixSockets (checked by path)",
            "path checks cannot be expressed: socket(AF_UNIX) is refused (stricter)",
        ));
    }
    gaps.push(Gap::note(
        "the activity log (exec reports, denied writes, run records)",
        "not recorded: the engine keeps no ringfence log; network decisions are logged by the gateway",
    ));

    gaps
}

/// The seccomp filter of the sandboxed command, as `ringfence run` builds it for the policy
/// (without the PID 1 guard, which needs ringfence's own PID 1). A list of unix sockets is
/// checked by path in a run; an export cannot, so it refuses socket(AF_UNIX).
pub fn filter_options(policy: &Policy) -> FilterOptions {
    FilterOptions {
        allow_unix_sockets: policy.allow_all_unix_sockets,
        guard_pid1: false,
        allow_user_namespaces: policy.allow_nested_user_namespaces,
    }
}

/// Refuses when any gap weakens the boundary and the caller has not accepted it.
pub fn check_gaps(gaps: &[Gap], allow_weaker: bool) -> anyhow::Result<()> {
    let weaker: Vec<&Gap> = gaps.iter().filter(|g| g.weaker).collect();
    if weaker.is_empty() || allow_weaker {
        return Ok(());
    }
    let list: Vec<String> = weaker
        .iter()
        .map(|g| format!("  - {}: {}", g.feature, g.instead))
        .collect();
    anyhow::bail!(
        "the exported objects would be weaker than `ringfence run` for:\n{}\nchange the policy, or pass --allow-weaker to export it anyway",
        list.join("\n")
    )
}
