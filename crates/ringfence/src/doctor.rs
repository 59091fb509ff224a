//! `ringfence doctor`: the kernel features this machine offers and what ringfence does with them.

use anyhow::Result;
use ringfence_linux::probe;

fn line(ok: bool, what: &str, detail: &str) {
    println!("  [{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
}

pub fn main() -> Result<()> {
    println!("ringfence {}", env!("CARGO_PKG_VERSION"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: Linux {}", release.trim());
    println!(
        "user: uid {} gid {}",
        ringfence_linux::sys::getuid(),
        ringfence_linux::sys::getgid()
    );
    println!("features:");
    let mut required_ok = true;
    match probe::user_namespaces() {
        Ok(()) => line(
            true,
            "user namespaces",
            "available (with mount, PID and network namespaces)",
        ),
        Err(e) => {
            required_ok = false;
            line(false, "user namespaces", &format!("unavailable: {e}; ringfence cannot run here (check kernel.unprivileged_userns_clone / user.max_user_namespaces / AppArmor userns restrictions)"));
        }
    }
    match probe::mount_api() {
        Ok(()) => line(
            true,
            "mount API (open_tree, move_mount, mount_setattr)",
            "available",
        ),
        Err(e) => {
            required_ok = false;
            line(false, "mount API", &e);
        }
    }
    match probe::seccomp_actions() {
        Some(a) => line(
            true,
            "seccomp filters",
            &format!("available (actions: {a})"),
        ),
        None => {
            required_ok = false;
            line(
                false,
                "seccomp filters",
                "unavailable; ringfence refuses to run without them",
            );
        }
    }
    match probe::overlay_in_user_namespace() {
        Ok(()) => line(true, "overlayfs in a user namespace", "available"),
        Err(e) => line(
            false,
            "overlayfs in a user namespace",
            &format!("unavailable: {e} (only needed for overlay mode)"),
        ),
    }
    match ringfence_linux::tun::available() {
        Ok(()) => line(true, "TUN device", "available (for network.transparent)"),
        Err(e) => line(
            false,
            "TUN device",
            &format!("unavailable: {e} (only needed for network.transparent / --transparent)"),
        ),
    }
    let cg = probe::cgroups();
    if cg.is_empty() {
        line(false, "cgroups", "none mounted");
    }
    for m in cg {
        let ctl = if m.controllers.is_empty() {
            "no controllers".to_string()
        } else {
            m.controllers.join(",")
        };
        line(
            true,
            &format!("cgroup v{} at {}", m.version, m.path),
            &format!(
                "{ctl}; {}",
                if m.writable {
                    "this user can create groups"
                } else {
                    "not writable by this user"
                }
            ),
        );
    }
    let removed = ringfence_linux::cgroup::sweep(&ringfence_linux::cgroup::detect());
    if removed > 0 {
        println!("leftovers: removed {removed} cgroup(s) of runs whose supervisor was killed");
    }
    println!(
        "landlock: not used (mounts in a private mount namespace enforce the filesystem policy)"
    );
    println!("what ringfence will do here:");
    for (accel, r) in ringfence_runtime::vm::availability() {
        let what = format!("--isolation vm --vm-accel {}", accel.name());
        match r {
            Ok(()) => line(true, &what, "available (QEMU microvm, the Debian kernel)"),
            Err(e) => line(false, &what, &format!("unavailable: {e:#}")),
        }
    }
    if required_ok {
        println!(
            "  - run commands in new user, mount, PID, network, IPC, UTS and cgroup namespaces"
        );
        println!("  - filesystem: read-only host tree, writable binds, hidden denied paths, protected files read-only");
        println!("  - network: none (empty network namespace with its own loopback)");
        println!("  - seccomp filter, no capabilities, no_new_privs");
        let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        if ringfence_linux::sys::getuid() == 0 {
            println!(
                "  - nested user namespaces: refused (allowNestedUserNamespaces is refused for a \
                 root caller)"
            );
        } else {
            println!(
                "  - nested user namespaces: refused unless the policy sets \
                 allowNestedUserNamespaces (mounts stay refused inside them; \
                 user.max_user_namespaces here: {max})"
            );
        }
        let mech = ringfence_linux::cgroup::detect();
        match mech {
            ringfence_linux::cgroup::Mechanism::NoCgroup => {
                println!("  - memory: limits.memory for the whole sandbox, enforced by the supervisor: it sums the memory of the sandbox's processes (every {} ms near the limit) and stops the sandbox above it (no cgroup is writable by this user; no per-process memory limit)", ringfence_linux::memwatch::INTERVAL_MS);
                println!("  - processes and files: rlimits (RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CPU, RLIMIT_FSIZE) and a size-limited /tmp");
            }
            _ => {
                println!("  - memory: limits.memory for the whole sandbox, enforced by a memory cgroup ({}); a process killed for memory stops the sandbox (no per-process memory limit)", mech.describe());
                println!("  - processes: pids cgroup, plus rlimits (RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CPU, RLIMIT_FSIZE) and a size-limited /tmp");
            }
        }
        if let Ok(m) = crate::prepare::machine_memory() {
            println!(
                "  - default limits.memory here: {} (half of {}: the machine's memory, or the memory limit of the cgroup ringfence runs in when lower)",
                ringfence_policy::format_size(ringfence_policy::default_memory(m)),
                ringfence_policy::format_size(m / (1 << 20) * (1 << 20))
            );
        }
    } else {
        println!("  - nothing: a required feature is missing (see FAIL above); `ringfence run` exits 125");
    }
    Ok(())
}
