//! An OCI runtime bundle (runtime-spec 1.0.2 `config.json`) for the policy of a run: the
//! compiled mount plan on a read-only root file system, no capabilities, no_new_privs, the
//! run's rlimits and cgroup limits, the run's user, PID, network, IPC, UTS, mount and cgroup
//! namespaces with the same id mapping, and the same seccomp filter as a profile.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ringfence_linux::limits::Resource;
use ringfence_linux::plan::{Kind, MountPlan, Step};
use serde_json::{json, Value};

use super::Gap;
use crate::Prepared;

/// What the caller adds to the policy.
#[derive(Clone, Debug, Default)]
pub struct OciOptions {
    /// The bundle's root file system (made read-only).
    pub rootfs: PathBuf,
    /// The command (default `/bin/sh`).
    pub args: Vec<String>,
    /// Host directories bound read-only at the same path (e.g. /usr when the root file system
    /// is nearly empty), before the policy's own mounts.
    pub host_read_only: Vec<PathBuf>,
    /// The bundle's empty file (`OUT/empty`, absolute), bound over hidden files: masked paths
    /// alone are not enough, gVisor's runsc ignores them for files.
    pub empty_file: PathBuf,
    /// A `ringfence proxy` gateway to carry the bundle's egress to, through a createRuntime
    /// hook that listens on the proxy ports inside the bundle's network namespace.
    pub gateway: Option<GatewayPath>,
}

/// The bundle's path to a gateway.
#[derive(Clone, Debug)]
pub struct GatewayPath {
    /// The gateway's address (HOST:PORT), as the host reaches it.
    pub to: String,
    /// The ringfence binary the runtime runs as the hook (absolute).
    pub hook: PathBuf,
}

/// The hidden subcommand the hook runs.
pub const GATEWAY_HOOK: &str = "__oci-gateway";

pub struct Bundle {
    pub config: Value,
    pub gaps: Vec<Gap>,
}

/// The mounts the sandbox always gets (`Step::Dev`): a minimal /dev.
fn dev_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ]
}

fn bind(path: &Path, writable: bool) -> Value {
    let rw = if writable { "rw" } else { "ro" };
    json!({"destination": path, "type": "bind", "source": path,
           "options": ["bind", rw, "nosuid", "nodev"]})
}

/// The mount plan as OCI mounts and masked paths, in the plan's order. Pure: `exists` says
/// what is on the host.
pub fn mounts(
    plan: &MountPlan,
    exists: &dyn Fn(&Path) -> bool,
    empty_file: &Path,
    in_rootfs: &dyn Fn(&Path) -> bool,
) -> (Vec<Value>, Vec<String>, Vec<Gap>) {
    // A hidden path matters only where the container sees it: under a host path bound into
    // it, or in the root file system; a mount point elsewhere would have to be created.
    let bound: Vec<&Path> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Writable { path } | Step::Pin { path } | Step::Reopen { path, .. } => {
                Some(path.as_path())
            }
            _ => None,
        })
        .collect();
    let seen = |p: &Path| bound.iter().any(|b| p.starts_with(b)) || in_rootfs(p);
    let mut mounts = Vec::new();
    let mut masked: Vec<String> = Vec::new();
    let mut gaps = Vec::new();
    for step in &plan.steps {
        match step {
            // The bundle's root is read-only (`root.readonly`); nosuid and nodev come from the
            // empty capability sets and the user namespace.
            Step::RootReadOnly => {}
            Step::Dev => mounts.extend(dev_mounts()),
            Step::Proc => mounts.push(json!({"destination": "/proc", "type": "proc",
                "source": "proc", "options": ["nosuid", "noexec", "nodev"]})),
            Step::Tmp { size } => mounts.push(json!({"destination": "/tmp", "type": "tmpfs",
                "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={size}")]})),
            Step::Writable { path } => mounts.push(bind(path, true)),
            Step::WritableFile { path } if exists(path) => {
                mounts.push(bind(path, true));
                gaps.push(Gap::note(
                    format!("allowWrite {} (a single file)", path.display()),
                    "bound read-write as a mount point: writing it works, replacing it by rename (atomic save) fails with EBUSY",
                ));
            }
            Step::WritableFile { path } => gaps.push(Gap::note(
                format!("allowWrite {} (a file that does not exist yet)", path.display()),
                "not bound: the sandbox cannot create it (stricter)",
            )),
            Step::Overlay { path, .. } => {
                mounts.push(bind(path, true));
                gaps.push(Gap::weaker(
                    format!("overlay of {}", path.display()),
                    "bound read-write: changes reach the folder directly, without review",
                ));
            }
            Step::HideDir { path } | Step::HideFile { path } if !seen(path) => {}
            Step::HideDir { path } => {
                let reopened = plan.steps.iter().any(|s| {
                    matches!(s, Step::Reopen { path: p, .. } if p.starts_with(path) && p != path)
                });
                if reopened {
                    // Masked paths are applied after every mount, so a directory with paths
                    // re-opened inside is hidden by an empty tmpfs in the mount order instead.
                    mounts.push(json!({"destination": path, "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "noexec", "mode=0755", "size=4k"]}));
                    gaps.push(Gap::note(
                        format!("denyRead {}", path.display()),
                        "hidden by an empty tmpfs of 4 KiB that the sandbox can write to (ringfence run: read-only), so that the allowRead paths inside can be bound",
                    ));
                } else {
                    mounts.push(json!({"destination": path, "type": "tmpfs", "source": "tmpfs",
                        "options": ["ro", "nosuid", "nodev", "noexec", "mode=0555", "size=4k"]}));
                    masked.push(path.display().to_string());
                }
            }
            Step::HideFile { path } => {
                mounts.push(json!({"destination": path, "type": "bind", "source": empty_file,
                    "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}));
                masked.push(path.display().to_string());
            }
            // A masked credential file shows placeholders that only the run's proxy turns back
            // into the real value: the bundle hides the file instead (stricter).
            Step::MaskFile { path, .. } => {
                gaps.push(Gap::note(
                    format!("credentials.files mask {}", path.display()),
                    "hidden (an empty file): the placeholder copy needs the run's proxy",
                ));
                if seen(path) {
                    mounts.push(json!({"destination": path, "type": "bind", "source": empty_file,
                        "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}));
                    masked.push(path.display().to_string());
                }
            }
            Step::Reopen { path, kind, writable } => {
                let _ = kind == &Kind::Dir;
                mounts.push(bind(path, *writable));
            }
            Step::Pin { path } => mounts.push(bind(path, true)),
            Step::ReadOnly { path, .. } => mounts.push(bind(path, false)),
        }
    }
    (mounts, masked, gaps)
}

fn rlimit(resource: Resource) -> &'static str {
    resource.name()
}

/// The bundle for a prepared run.
pub fn bundle(prepared: &Prepared, opts: &OciOptions) -> Result<Bundle> {
    let policy = &prepared.policy;
    let rootfs = std::fs::canonicalize(&opts.rootfs)
        .with_context(|| format!("--rootfs {}", opts.rootfs.display()))?;
    if !rootfs.is_dir() {
        bail!("--rootfs {}: not a directory", rootfs.display());
    }
    let mut gaps = Vec::new();
    let mut all_mounts = Vec::new();
    for p in &opts.host_read_only {
        if !p.is_absolute() || !p.exists() {
            bail!(
                "--host-read-only {}: not an existing absolute path",
                p.display()
            );
        }
        all_mounts.push(json!({"destination": p, "type": "bind", "source": p,
            "options": ["rbind", "ro", "nosuid", "nodev"]}));
    }
    let (mounts, plan_masked, plan_gaps) =
        mounts(&prepared.plan, &|p| p.exists(), &opts.empty_file, &|p| {
            opts.host_read_only.iter().any(|h| p.starts_with(h))
                || p.strip_prefix("/")
                    .is_ok_and(|rel| rootfs.join(rel).symlink_metadata().is_ok())
        });
    all_mounts.extend(mounts);
    gaps.extend(plan_gaps);

    gaps.extend(super::policy_gaps(prepared));
    match &opts.gateway {
        None => gaps.push(Gap::note(
            "network (allowedDomains, deniedDomains, ask, TLS termination, credentials)",
            "the bundle has a network namespace of its own with no device but loopback: no egress at all (a unix socket bound in would not help: the seccomp profile refuses socket(AF_UNIX)). Give it a path to a `ringfence proxy` gateway with `--gateway HOST:PORT`, or attach the namespace to a network whose only route is one; the gateway enforces the domain policy and logs the decisions",
        )),
        Some(g) => gaps.push(Gap::note(
            "network (allowedDomains, deniedDomains, ask, TLS termination, credentials)",
            format!(
                "decided by the gateway at {} (its own policy and log), the bundle's only way out: its network namespace has no device but loopback, where a createRuntime hook ({} {GATEWAY_HOOK}) listens on 127.0.0.1:{} and :{} and carries each connection to the gateway; the proxy variables point there. runc and crun run the hook; gVisor's runsc does not reach it (its network stack is its own)",
                g.to,
                g.hook.display(),
                crate::netenv::HTTP_PORT,
                crate::netenv::SOCKS_PORT,
            ),
        )),
    }
    gaps.push(Gap::note(
        "the seccomp filter under gVisor",
        "runsc applies the bundle's seccomp profile only with `runsc --oci-seccomp`",
    ));
    if let Some(w) = policy.limits.wall_seconds {
        gaps.push(Gap::note(
            format!("limits.wallSeconds ({w})"),
            "not enforced: the engine or the orchestrator must stop the container",
        ));
    }
    gaps.push(Gap::note(
        "environment",
        "only PATH, HOME, TERM and RINGFENCE_SANDBOX=1 are set, and with --gateway the proxy variables (stricter than env.passthrough)",
    ));

    let filter = super::filter_options(policy);
    let seccomp = super::seccomp::profile(&filter)?;

    let (in_uid, in_gid) = ringfence_linux::sandbox::inside_ids();
    let (uid, gid) = (
        ringfence_linux::sys::getuid(),
        ringfence_linux::sys::getgid(),
    );
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
    let visible_cwd = prepared.plan.steps.iter().any(|s| match s {
        Step::Writable { path } | Step::Reopen { path, .. } | Step::Pin { path } => {
            prepared.cwd.starts_with(path)
        }
        _ => false,
    }) || opts
        .host_read_only
        .iter()
        .any(|p| prepared.cwd.starts_with(p));
    let cwd = if visible_cwd {
        prepared.cwd.display().to_string()
    } else {
        "/".to_string()
    };
    let args = if opts.args.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        opts.args.clone()
    };
    let rlimits: Vec<Value> = prepared
        .limits
        .iter()
        .map(|(r, v)| json!({"type": rlimit(*r), "hard": v, "soft": v}))
        .collect();
    let limits = &prepared.cgroup_limits;
    let mut masked: Vec<String> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/kallsyms",
        "/proc/acpi",
        "/proc/latency_stats",
        "/proc/scsi",
        "/sys/firmware",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    masked.extend(plan_masked);
    let not_enforced: Vec<String> = gaps
        .iter()
        .map(|g| format!("{}: {}", g.feature, g.instead))
        .collect();
    let empty: Vec<&str> = Vec::new();
    let mut env: Vec<String> = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into(),
        format!("HOME={home}"),
        "TERM=xterm".into(),
        "RINGFENCE_SANDBOX=1".into(),
    ];
    let mut hooks = json!({});
    let mut egress = "no network device and no path to a gateway: attach the namespace to a network whose only route is `ringfence proxy`".to_string();
    if let Some(g) = &opts.gateway {
        // As in a run, less ssh's ProxyCommand: `ringfence connect` is not in the bundle.
        env.extend(
            crate::netenv::proxy_env(&g.hook, None, None)
                .into_iter()
                .filter(|(k, _)| k != "GIT_SSH_COMMAND")
                .map(|(k, v)| format!("{k}={v}")),
        );
        hooks = json!({"createRuntime": [{
            "path": g.hook,
            "args": ["ringfence", GATEWAY_HOOK, "--to", g.to],
            "timeout": 10,
        }]});
        egress = format!(
            "only through the gateway at {}: loopback's ports {} and {} are carried there by the createRuntime hook",
            g.to,
            crate::netenv::HTTP_PORT,
            crate::netenv::SOCKS_PORT
        );
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": true},
        "hostname": "ringfence",
        "process": {
            "terminal": false,
            "user": {"uid": in_uid, "gid": in_gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": empty, "effective": empty, "inheritable": empty,
                "permitted": empty, "ambient": empty,
            },
            "noNewPrivileges": true,
            "rlimits": rlimits,
        },
        "mounts": all_mounts,
        "hooks": hooks,
        "linux": {
            "namespaces": [
                {"type": "user"}, {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
            ],
            "uidMappings": mappings(in_uid, uid),
            "gidMappings": mappings(in_gid, gid),
            "resources": {
                "pids": {"limit": limits.pids},
                "memory": {"limit": limits.memory, "swap": limits.memory},
            },
            "maskedPaths": masked,
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"],
            "seccomp": seccomp,
        },
        "annotations": {
            "org.ringfence.egress": egress,
            "org.ringfence.not-enforced": not_enforced.join("\n"),
        },
    });
    Ok(Bundle { config, gaps })
}

/// The run's mapping (the caller's id inside, or nobody for root). For a root caller the
/// container's root is mapped too, to the host's nobody, because runc requires a mapping for
/// the container's root; nothing runs as it.
fn mappings(inside: u32, host: u32) -> Value {
    if host == 0 && inside != 0 {
        json!([
            {"containerID": inside, "hostID": host, "size": 1},
            {"containerID": 0, "hostID": 65534, "size": 1},
        ])
    } else {
        json!([{"containerID": inside, "hostID": host, "size": 1}])
    }
}

/// Writes `config.json` into `out` (created if missing).
pub fn write(out: &Path, bundle: &Bundle) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let empty = out.join("empty");
    std::fs::write(&empty, b"").with_context(|| format!("writing {}", empty.display()))?;
    let file = out.join("config.json");
    let text = serde_json::to_string_pretty(&bundle.config).context("serialising config.json")?;
    std::fs::write(&file, text + "\n").with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ringfence_linux::plan::Reason;

    #[test]
    fn plan_steps_become_mounts_in_order() {
        let p = PathBuf::from;
        let plan = MountPlan {
            steps: vec![
                Step::RootReadOnly,
                Step::Dev,
                Step::Proc,
                Step::Tmp { size: 1 << 20 },
                Step::Writable { path: p("/w") },
                Step::HideDir {
                    path: p("/w/secret"),
                },
                Step::HideDir { path: p("/h") },
                Step::Reopen {
                    path: p("/h/ok"),
                    kind: Kind::Dir,
                    writable: false,
                },
                Step::HideFile { path: p("/w/.env") },
                Step::ReadOnly {
                    path: p("/w/.bashrc"),
                    reason: Reason::Protected,
                },
                Step::WritableFile {
                    path: p("/missing.txt"),
                },
            ],
            ..MountPlan::default()
        };
        let (m, masked, gaps) = mounts(&plan, &|_| false, Path::new("/b/empty"), &|p| {
            p.starts_with("/h")
        });
        let dests: Vec<&str> = m
            .iter()
            .map(|v| v["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/proc",
                "/tmp",
                "/w",
                "/w/secret",
                "/h",
                "/h/ok",
                "/w/.env",
                "/w/.bashrc"
            ]
        );
        assert_eq!(m[4]["options"][3], "size=1048576");
        assert_eq!(m[5]["options"][1], "rw");
        assert_eq!(m[6]["options"][0], "ro");
        assert_eq!(m[7]["type"], "tmpfs");
        assert_eq!(m[8]["options"][1], "ro");
        assert_eq!(m[9]["source"], "/b/empty");
        assert_eq!(m[10]["options"][1], "ro");
        assert_eq!(masked, ["/w/secret", "/w/.env"]);
        assert_eq!(gaps.len(), 2);
        assert!(gaps.iter().all(|g| !g.weaker));
    }

    #[test]
    fn an_overlay_is_weaker() {
        let plan = MountPlan {
            steps: vec![Step::Overlay {
                path: PathBuf::from("/p"),
                upper: PathBuf::from("/u"),
                work: PathBuf::from("/k"),
            }],
            ..MountPlan::default()
        };
        let (_, _, gaps) = mounts(&plan, &|_| true, Path::new("/b/empty"), &|_| false);
        assert!(gaps[0].weaker);
        assert!(super::super::check_gaps(&gaps, false).is_err());
        assert!(super::super::check_gaps(&gaps, true).is_ok());
    }
}
