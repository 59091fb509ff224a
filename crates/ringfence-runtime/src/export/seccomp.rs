//! The run's seccomp filter as an OCI seccomp profile (runtime-spec 1.0.2 `linux.seccomp`),
//! from the same rules the BPF filter is built from (`ringfence_linux::seccomp::rules`).

use anyhow::{bail, Context, Result};
use libc::c_long;
use ringfence_linux::seccomp::{self, FilterOptions, Rule};
use serde_json::{json, Value};

/// The syscall names the rules use, by number on this architecture.
macro_rules! names {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name, strip(stringify!($name)))),*]
    };
}

const fn strip(s: &'static str) -> &'static str {
    // "SYS_mount" -> "mount"
    let (_, rest) = s.as_bytes().split_at(4);
    match std::str::from_utf8(rest) {
        Ok(r) => r,
        Err(_) => s,
    }
}

const COMMON: &[(c_long, &str)] = names![
    SYS_clone3,
    SYS_openat2,
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_move_mount,
    SYS_open_tree,
    SYS_mount_setattr,
    SYS_open_by_handle_at,
    SYS_setns,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_kcmp,
    SYS_pidfd_getfd,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_userfaultfd,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_fanotify_init,
    SYS_lookup_dcookie,
    SYS_nfsservctl,
    SYS_kexec_load,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_acct,
    SYS_swapon,
    SYS_swapoff,
    SYS_reboot,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_sethostname,
    SYS_setdomainname,
    SYS_syslog,
    SYS_quotactl,
    SYS_vhangup,
    SYS_clone,
    SYS_unshare,
    SYS_ioctl,
    SYS_socket,
    SYS_socketpair,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchmodat2,
    SYS_mknodat,
    SYS_openat,
    SYS_personality,
];

#[cfg(target_arch = "x86_64")]
const ARCH: &[(c_long, &str)] = names![
    SYS_iopl,
    SYS_ioperm,
    SYS_uselib,
    SYS__sysctl,
    SYS_kexec_file_load,
    SYS_chmod,
    SYS_creat,
    SYS_mknod,
    SYS_open,
];
#[cfg(target_arch = "aarch64")]
const ARCH: &[(c_long, &str)] = &[(294, "kexec_file_load")];

#[cfg(target_arch = "x86_64")]
pub const OCI_ARCH: &str = "SCMP_ARCH_X86_64";
#[cfg(target_arch = "aarch64")]
pub const OCI_ARCH: &str = "SCMP_ARCH_AARCH64";

/// The name of a syscall the rules use.
pub fn name(nr: c_long) -> Option<&'static str> {
    COMMON
        .iter()
        .chain(ARCH)
        .find(|(n, _)| *n == nr)
        .map(|(_, name)| *name)
}

/// The number of a named syscall (for checking a profile).
pub fn number(name: &str) -> Option<c_long> {
    COMMON
        .iter()
        .chain(ARCH)
        .find(|(_, n)| *n == name)
        .map(|(nr, _)| *nr)
}

/// The profile: allow by default, one entry per rule (unconditional rules with the same errno
/// grouped), every argument check a masked equality. Only the native architecture is listed,
/// so libseccomp kills on any other and on x32 system calls (the BPF filter kills on a foreign
/// architecture and answers x32 with EPERM: the profile is as strict or stricter).
pub fn profile(opts: &FilterOptions) -> Result<Value> {
    let rules = seccomp::rules(opts);
    let mut plain: Vec<(i32, Vec<&'static str>)> = Vec::new();
    let mut entries = Vec::new();
    for Rule {
        syscall,
        errno,
        args,
    } in &rules
    {
        let Some(n) = name(*syscall) else {
            bail!("seccomp: syscall {syscall} has no name for the OCI profile; the export cannot express the filter");
        };
        if args.is_empty() {
            match plain.iter_mut().find(|(e, _)| e == errno) {
                Some((_, names)) => names.push(n),
                None => plain.push((*errno, vec![n])),
            }
            continue;
        }
        let args: Vec<Value> = args
            .iter()
            .map(|c| {
                json!({
                    "index": c.index,
                    "value": c.mask,
                    "valueTwo": c.value,
                    "op": "SCMP_CMP_MASKED_EQ",
                })
            })
            .collect();
        entries.push(json!({
            "names": [n],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno,
            "args": args,
        }));
    }
    let mut syscalls: Vec<Value> = plain
        .into_iter()
        .map(
            |(errno, names)| json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}),
        )
        .collect();
    syscalls.extend(entries);
    Ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [OCI_ARCH],
        "syscalls": syscalls,
    }))
}

/// What an engine answers for `profile` under OCI/libseccomp semantics: `None` for a kill (a
/// foreign architecture or an x32 call), else the seccomp return value. Entries that match the
/// same call must agree (the rules of one syscall are disjoint).
pub fn evaluate(
    profile: &Value,
    arch_native: bool,
    nr: u32,
    args: &[u64; 6],
) -> Result<Option<u32>> {
    if !arch_native || seccomp::X32_SYSCALL_BIT.is_some_and(|bit| nr >= bit) {
        return Ok(None);
    }
    let mut answer: Option<u32> = None;
    for entry in profile["syscalls"].as_array().into_iter().flatten() {
        let names = entry["names"].as_array().into_iter().flatten();
        let named = names
            .filter_map(Value::as_str)
            .any(|n| number(n) == Some(c_long::from(nr)));
        if !named {
            continue;
        }
        let holds = entry["args"].as_array().into_iter().flatten().all(|a| {
            let i = a["index"].as_u64().unwrap_or(99) as usize;
            let (mask, value) = (a["value"].as_u64(), a["valueTwo"].as_u64());
            a["op"] == "SCMP_CMP_MASKED_EQ"
                && args
                    .get(i)
                    .zip(mask)
                    .zip(value)
                    .is_some_and(|((x, m), v)| x & m == v)
        });
        if !holds {
            continue;
        }
        if entry["action"] != "SCMP_ACT_ERRNO" {
            bail!("unexpected action {}", entry["action"]);
        }
        let errno = entry["errnoRet"].as_u64().unwrap_or(libc::EPERM as u64) as u32;
        let ret = libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA);
        if answer.is_some_and(|a| a != ret) {
            bail!("syscall {nr}: entries disagree");
        }
        answer = Some(ret);
    }
    Ok(Some(answer.unwrap_or(libc::SECCOMP_RET_ALLOW)))
}

/// Argument values at and around the boundaries the rules test (flags, modes, ioctl numbers,
/// the high half of a 64-bit argument).
fn probe_values() -> Vec<u64> {
    let mut v: Vec<u64> = (0..=20).collect();
    v.extend([
        0o4755,
        0o2000,
        0o755,
        u64::from(libc::TIOCSTI as u32),
        u64::from(libc::TIOCLINUX as u32),
        u64::from(libc::O_CREAT as u32 | libc::O_WRONLY as u32),
        u64::from(libc::O_TMPFILE as u32 | libc::O_RDWR as u32),
        u64::from(libc::CLONE_NEWUSER as u32),
        u64::from(libc::CLONE_NEWNS as u32),
        u64::from(libc::CLONE_NEWNET as u32 | libc::CLONE_NEWUSER as u32),
        u64::from(libc::CLONE_NEWTIME as u32),
        u64::from(libc::SIGCHLD as u32),
        40,
        0x2_0008,
        0x4_0000,
        0xffff_ffff,
        u64::MAX,
    ]);
    let high: Vec<u64> = v.iter().map(|x| x | (1 << 32)).collect();
    v.extend(high);
    v
}

/// Checks that `profile` (as read back from its JSON) answers as the BPF filter `prog` does,
/// by evaluating both on every syscall number up to 460 with boundary values in one and two
/// arguments, on x32 and on a foreign architecture (where the profile kills and the filter
/// answers EPERM or kills). Returns the number of probes; the first difference is an error.
pub fn compare_with_filter(profile: &Value, prog: &[libc::sock_filter]) -> Result<usize> {
    let values = probe_values();
    let mut probes = 0;
    for nr in 0..=460u32 {
        // The entries naming this syscall, found once.
        let own: Vec<Value> = profile["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n.as_str().and_then(number) == Some(c_long::from(nr)))
            })
            .cloned()
            .collect();
        let own = json!({"syscalls": own});
        let mut sets: Vec<[u64; 6]> = vec![[0; 6], [u64::MAX; 6]];
        for i in 0..4 {
            for &a in &values {
                let mut args = [0; 6];
                args[i] = a;
                sets.push(args);
            }
        }
        if name(c_long::from(nr)).is_some() {
            for (i, j) in [(0, 1), (0, 2), (1, 2), (2, 3), (1, 3)] {
                for &a in &values {
                    for &b in &values {
                        let mut args = [0; 6];
                        args[i] = a;
                        args[j] = b;
                        sets.push(args);
                    }
                }
            }
        }
        for args in sets {
            probes += 1;
            let bpf = seccomp::evaluate(prog, seccomp::AUDIT_ARCH, nr, &args)
                .context("the filter returned no verdict")?;
            let oci = evaluate(&own, true, nr, &args)?;
            if oci != Some(bpf) {
                bail!("syscall {nr} {args:x?}: the profile answers {oci:?}, the filter {bpf}");
            }
        }
    }
    // x32 and foreign architectures: refused by both (EPERM or kill by the filter, libseccomp's
    // kill by the profile).
    if let Some(bit) = seccomp::X32_SYSCALL_BIT {
        let bpf = seccomp::evaluate(prog, seccomp::AUDIT_ARCH, bit, &[0; 6])
            .context("the filter returned no verdict")?;
        if bpf != libc::SECCOMP_RET_ERRNO | libc::EPERM as u32 {
            bail!("x32: the filter answers {bpf}");
        }
        if evaluate(profile, true, bit, &[0; 6])?.is_some() {
            bail!("x32: the profile does not kill");
        }
    }
    let foreign = seccomp::evaluate(prog, 0x4000_0003, 0, &[0; 6])
        .context("the filter returned no verdict")?;
    if foreign != libc::SECCOMP_RET_KILL_PROCESS {
        bail!("a foreign architecture: the filter answers {foreign}");
    }
    if evaluate(profile, false, 0, &[0; 6])?.is_some() {
        bail!("a foreign architecture: the profile does not kill");
    }
    if profile["architectures"] != json!([OCI_ARCH]) {
        bail!(
            "architectures: {} (expected [{OCI_ARCH}])",
            profile["architectures"]
        );
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The profile, read back from its JSON, answers every probe as the filter `ringfence run`
    /// installs for the command does (kill for x32 where the filter answers EPERM).
    #[test]
    fn profile_matches_the_filter_rule_by_rule() {
        for (unix, userns) in [(false, false), (true, true)] {
            let opts = FilterOptions {
                allow_unix_sockets: unix,
                guard_pid1: false,
                allow_user_namespaces: userns,
            };
            let text = serde_json::to_string(&profile(&opts).unwrap()).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            let probes = compare_with_filter(&back, &seccomp::build(&opts)).unwrap();
            assert!(probes > 50_000);
            // Another option set's filter differs from this profile, and the check says so.
            let other = FilterOptions {
                allow_unix_sockets: !unix,
                ..opts
            };
            assert!(compare_with_filter(&back, &seccomp::build(&other)).is_err());
        }
    }

    #[test]
    fn every_ruled_syscall_is_named() {
        let opts = FilterOptions::default();
        for r in seccomp::rules(&opts) {
            assert!(name(r.syscall).is_some(), "{}", r.syscall);
        }
        assert_eq!(name(libc::SYS_mount), Some("mount"));
        assert_eq!(number("fchmodat2"), Some(libc::SYS_fchmodat2));
    }
}
