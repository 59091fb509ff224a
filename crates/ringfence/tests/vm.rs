//! `--isolation vm`: the refusals that must hold everywhere, `doctor`'s report, and the VMM's
//! end when the supervisor is killed. (A full run inside the guest does not pass yet: see
//! README, "Isolation in a VM".)

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn unknown_isolation_value_is_refused_by_name() {
    let dir = common::TestDir::new("vm-bad-isolation");
    let f = dir.write("settings.json", r#"{"isolation": "container"}"#);
    let out = common::ringfence(&["-s", f.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("isolation"), "{err}");
}

#[test]
fn unusable_kvm_is_refused_by_name_not_replaced() {
    if ringfence_kvm_usable() {
        common::not_here("KVM can boot the Debian kernel here: nothing to refuse");
        return;
    }
    let out = common::ringfence(&["--isolation", "vm", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("KVM") || err.contains("/dev/kvm"), "{err}");
    assert!(err.contains("--vm-accel tcg"), "{err}");
}

fn ringfence_kvm_usable() -> bool {
    let out = std::process::Command::new(common::bin())
        .arg("doctor")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("[ ok ] --isolation vm --vm-accel kvm")
}

#[test]
fn doctor_reports_both_accelerators() {
    let out = std::process::Command::new(common::bin())
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--isolation vm --vm-accel kvm"), "{text}");
    assert!(text.contains("--isolation vm --vm-accel tcg"), "{text}");
}

/// The pids of the processes whose parent is `pid`, recursively.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let ppid = after.split_whitespace().nth(1).and_then(|v| v.parse().ok());
            if ppid == Some(p) {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                out.push((child, comm.trim().to_string()));
                todo.push(child);
            }
        }
    }
    out
}

#[test]
fn no_vmm_is_left_after_the_supervisor_is_killed() {
    let doctor = std::process::Command::new(common::bin())
        .arg("doctor")
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&doctor.stdout).contains("[ ok ] --isolation vm --vm-accel tcg") {
        common::skip("--isolation vm --vm-accel tcg: QEMU, linux-image-amd64 or busybox-static missing (see ringfence doctor)");
        return;
    }
    let mut child = common::ringfence(&[
        "--isolation",
        "vm",
        "--vm-accel",
        "tcg",
        "--",
        "sleep",
        "120",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let qemu = loop {
        let q: Vec<u32> = descendants(child.id())
            .into_iter()
            .filter(|(_, c)| c.starts_with("qemu-system"))
            .map(|(p, _)| p)
            .collect();
        if let Some(p) = q.first() {
            break *p;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the run ended before its VMM started: {s}");
        }
        assert!(Instant::now() < deadline, "no VMM within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let it boot a little, then kill the supervisor without a chance to clean up.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{qemu}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{qemu}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the VMM {qemu} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
