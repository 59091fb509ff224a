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

/// The runtime's command line. This machine mounts a cgroup v2 hierarchy (holding only
/// hugetlb, which no bundle limit uses) beside its v1 controllers, which crun refuses as a
/// hybrid layout ("drop all controllers from cgroupv2"); as root, crun then runs in a mount
/// namespace of its own without that mount, as on a host with cgroup v1 only. Nothing else
/// changes: the bundle, its v1 limits (pids, memory), the checks.
fn runtime_command(runtime: &str, rt: &std::path::Path) -> Command {
    let hybrid = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.contains(" /sys/fs/cgroup/unified ") && l.contains(" - cgroup2 "))
    });
    if runtime == "crun" && is_root() && hybrid {
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/cgroup/unified && exec \"$0\" \"$@\"",
        ])
        .arg(rt);
        return c;
    }
    Command::new(rt)
}

/// busybox and the runtime's binary, or a skip naming the package that is missing.
fn tools(runtime: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let Some(busybox) = find_in_path("busybox") else {
        skip("oci: busybox is not installed (Debian package busybox-static)");
        return None;
    };
    let Some(rt) = find_in_path(runtime) else {
        skip(&format!(
            "oci: {runtime} is not installed (Debian package {runtime})"
        ));
        return None;
    };
    Some((busybox, rt))
}

fn run_under(runtime: &str) {
    let Some((busybox, rt)) = tools(runtime) else {
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
    let mut cmd = runtime_command(runtime, &rt);
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

/// `ringfence proxy` on loopback with `settings`; its address.
fn gateway(dir: &TestDir, settings: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = rf_in(dir)
        .args(["proxy", "-s", settings, "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut err, &mut std::io::sink());
            });
            return (child, addr);
        }
    }
    let _ = child.wait();
    panic!("the gateway stopped: {line}");
}

/// With `--gateway`, the bundle's only way out is the gateway: an allowed host is reached
/// through the proxy variables, a host the gateway's policy does not allow is refused, a direct
/// connection finds nothing, the relay the hook leaves behind ends with the container, and a
/// bundle whose gateway does not answer does not start.
fn gateway_under(runtime: &str) {
    let Some((busybox, rt)) = tools(runtime) else {
        return;
    };
    if !is_root() {
        not_here(
            "oci: the gateway hook enters the container's network namespace, which it does as root",
        );
        return;
    }
    let allowed = http_upstream(|_, path| format!("upstream saw {path}\n"));
    let other = http_upstream(|_, path| format!("upstream saw {path}\n"));
    let (dir, settings) = with_settings("oci-gateway", "{}");
    let gw_settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["127.0.0.1:{allowed}"]}}}}"#
    ));
    let (mut gw, addr) = gateway(&dir, &gw_settings);
    dir.mkdir("rootfs/bin");
    std::fs::copy(&busybox, dir.join("rootfs/bin/busybox")).unwrap();
    for applet in ["sh", "cat", "wget", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join(format!("rootfs/bin/{applet}"))).unwrap();
    }
    let script = format!(
        "wget -q -O - http://127.0.0.1:{allowed}/through-gateway; echo allowed=$?; \
         wget -q -O - http://127.0.0.1:{other}/other; echo other=$?; \
         http_proxy= wget -q -O - http://127.0.0.1:{allowed}/direct; echo direct=$?"
    );
    let export = |gateway: &str| {
        run(rf_in(&dir)
            .args(["export", "oci", "--allow-weaker", "--gateway", gateway])
            .arg("--rootfs")
            .arg(dir.join("rootfs"))
            .args(["-s", &settings])
            .arg(dir.join("out"))
            .args(["--", "/bin/sh", "-c", &script]))
    };
    let out = export(&addr);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("decided by the gateway at"),
        "{}",
        out.stdout
    );
    let bad = export("http://127.0.0.1:3128");
    assert_eq!(bad.status.code(), Some(125), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--gateway http://127.0.0.1:3128"),
        "{}",
        bad.stderr
    );

    let name = unique("rf-oci-gw");
    let got = run(runtime_command(runtime, &rt)
        .args(["run", "--bundle"])
        .arg(dir.join("out"))
        .arg(&name));
    assert!(
        got.status.success(),
        "{runtime}: {}{}",
        got.stdout,
        got.stderr
    );
    let o = &got.stdout;
    assert!(
        o.contains("upstream saw /through-gateway"),
        "{o}{}",
        got.stderr
    );
    assert!(o.contains("allowed=0"), "{o}");
    assert!(
        !o.contains("upstream saw /other") && !o.contains("other=0"),
        "{o}"
    );
    assert!(got.stderr.contains("403"), "{}", got.stderr);
    assert!(
        !o.contains("upstream saw /direct") && !o.contains("direct=0"),
        "{o}"
    );
    // The relay ended with the container.
    let needle = format!("__oci-gateway --to {addr}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !host_process_with(&needle).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay outlived the container"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Without its gateway the bundle does not start.
    let _ = gw.kill();
    let _ = gw.wait();
    let name = unique("rf-oci-gw-down");
    let got = run(runtime_command(runtime, &rt)
        .args(["run", "--bundle"])
        .arg(dir.join("out"))
        .arg(&name));
    assert!(!got.status.success(), "{}{}", got.stdout, got.stderr);
    assert!(!got.stdout.contains("allowed="), "{}", got.stdout);
    // runc shows the hook's message; crun only its exit status.
    assert!(
        got.stderr.contains("does not answer") || got.stderr.contains("(exit code: 125)"),
        "{}",
        got.stderr
    );
    let _ = runtime_command(runtime, &rt)
        .args(["delete", "-f", &name])
        .output();
}

#[test]
fn bundle_reaches_only_the_gateway_under_runc() {
    gateway_under("runc");
}

#[test]
fn bundle_reaches_only_the_gateway_under_crun() {
    gateway_under("crun");
}
