//! `ringfence export oci`: the exported bundle really runs under an OCI runtime (crun, runc)
//! and keeps a subset of the escape checks: a denyRead secret hidden, host files read-only,
//! no network device but loopback, no new privileges and no capabilities.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;

const SCRIPT: &str = r#"grep -E '^(NoNewPrivs|CapEff|CapPrm):' /proc/self/status
cat "$SECRET"; echo "read=$?"
echo x > /etc/ringfence-oci-probe; echo "etc=$?"
echo ok > "$HOMEDIR/written"; echo "home=$?"
echo "netdev=$(wc -l < /proc/net/dev)"
/bin/busybox unshare -U /bin/busybox true; echo "unshare=$?"
"#;

fn run_under(runtime: &str) {
    let Some(busybox) = find_in_path("busybox") else {
        skip("oci: busybox is not installed (Debian package busybox-static)");
        return;
    };
    let Some(rt) = find_in_path(runtime) else {
        skip(&format!(
            "oci: {runtime} is not installed (Debian package {runtime})"
        ));
        return;
    };
    if runtime == "runc" && !is_root() {
        not_here("oci: runc needs a mapping for the container's root, which an unprivileged user cannot give");
        return;
    }
    if runtime == "runsc" && !is_root() {
        not_here("oci: runsc runs bundles as root here (its rootless mode is not tested)");
        return;
    }
    let (dir, settings) = with_settings(&format!("oci-{runtime}"), "{}");
    let home = dir.mkdir("work");
    let secret = dir.write("work/secret.txt", "topsecret-oci\n");
    let settings_json = format!(
        r#"{{"filesystem":{{"allowWrite":["{}"],"denyRead":["{}"]}}}}"#,
        home.display(),
        secret.display()
    );
    std::fs::write(&settings, settings_json).unwrap();
    dir.mkdir("rootfs/bin");
    std::fs::copy(&busybox, dir.join("rootfs/bin/busybox")).unwrap();
    for applet in ["sh", "cat", "grep", "wc", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join(format!("rootfs/bin/{applet}"))).unwrap();
    }
    let script = format!(
        "SECRET={} HOMEDIR={}\n{SCRIPT}",
        secret.display(),
        home.display()
    );
    // Without --allow-weaker the export refuses, naming the creation guard.
    let refused = run(rf_in(&dir)
        .args(["export", "oci", "--rootfs"])
        .arg(dir.join("rootfs"))
        .args(["-s", &settings])
        .arg(dir.join("out")));
    assert_eq!(refused.status.code(), Some(125), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("creation guard"),
        "{}",
        refused.stderr
    );

    let out = run(rf_in(&dir)
        .args([
            "export",
            "oci",
            "--allow-weaker",
            "--host-read-only",
            "/etc",
            "--rootfs",
        ])
        .arg(dir.join("rootfs"))
        .args(["-s", &settings])
        .arg(dir.join("out"))
        .args(["--", "/bin/sh", "-c", &script]));
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("not enforced by the bundle"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("ringfence proxy"), "{}", out.stdout);

    let name = unique(&format!("rf-oci-{runtime}"));
    let mut cmd = Command::new(rt);
    if runtime == "runsc" {
        // runsc applies a bundle's seccomp profile only when asked.
        cmd.args(["--network=none", "--oci-seccomp"]);
    }
    if !is_root() {
        cmd.arg("--root").arg(dir.join("state"));
    }
    cmd.args(["run", "--bundle"])
        .arg(dir.join("out"))
        .arg(&name);
    let got = run(&mut cmd);
    if got.stderr.contains("cgroups in hybrid mode not supported") {
        not_here(&format!(
            "oci: {runtime} does not support this machine's hybrid cgroup layout"
        ));
        return;
    }
    assert!(
        got.status.success(),
        "{runtime}: {}{}",
        got.stdout,
        got.stderr
    );
    let o = &got.stdout;
    // gVisor's /proc/self/status has no NoNewPrivs line.
    if runtime != "runsc" {
        assert!(o.contains("NoNewPrivs:\t1"), "{o}");
    }
    assert!(o.contains("CapEff:\t0000000000000000"), "{o}");
    assert!(o.contains("CapPrm:\t0000000000000000"), "{o}");
    assert!(
        !o.contains("topsecret-oci"),
        "the denyRead secret was read: {o}"
    );
    assert!(o.contains("etc=1"), "a host file was writable: {o}");
    assert!(
        o.contains("home=0"),
        "the writable root was not writable: {o}"
    );
    assert_eq!(dir.read("work/written"), "ok\n");
    // The header (2 lines) and loopback: no other network device.
    assert!(o.contains("netdev=3"), "{o}");
    // The seccomp profile: no new user namespace (allowed without it, as root here).
    assert!(o.contains("unshare=1"), "{o}");
    assert!(
        got.stderr.contains("Operation not permitted"),
        "{}",
        got.stderr
    );
}

#[test]
fn bundle_runs_under_crun() {
    run_under("crun");
}

#[test]
fn bundle_runs_under_runc() {
    run_under("runc");
}

#[test]
fn bundle_runs_under_runsc() {
    run_under("runsc");
}
