//! The policy of a run exported for other engines: an OCI runtime bundle (`oci.rs`) with the
//! same mounts, limits, namespaces and seccomp filter (`seccomp.rs`). What the bundle cannot
//! enforce is listed, never dropped in silence; what would leave it materially weaker than
//! `ringfence run` makes the export refuse unless the caller accepts it by name.

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
        "the exported bundle would be weaker than `ringfence run` for:\n{}\nchange the policy, or pass --allow-weaker to export it anyway",
        list.join("\n")
    )
}
