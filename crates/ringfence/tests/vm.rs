//! `--isolation vm`: the refusals that must hold everywhere, `doctor`'s report, the VMM's end
//! when the supervisor is killed, and commands that really run in the guest (its own kernel,
//! the policy's files, no network but the proxy, no host processes, stdio and exit status).
//! Each guest boot costs seconds (tens of seconds under TCG on a loaded host), so one run
//! checks many things at once.

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

/// `--vm-accel` for the runs in a guest: kvm where it can boot the Debian kernel, else tcg;
/// `None` (after a skip) when neither can.
fn accel() -> Option<&'static str> {
    let doctor = std::process::Command::new(common::bin())
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    if text.contains("[ ok ] --isolation vm --vm-accel kvm") {
        return Some("kvm");
    }
    if text.contains("[ ok ] --isolation vm --vm-accel tcg") {
        eprintln!("--isolation vm: KVM cannot boot the Debian kernel here; the guest runs under TCG (slow)");
        return Some("tcg");
    }
    common::skip("--isolation vm --vm-accel tcg: QEMU, linux-image-amd64 or busybox-static missing (see ringfence doctor)");
    None
}

/// The guest's memory follows `limits.memory` (by default half the machine's), and a large
/// guest boots seconds slower under TCG (its kernel initialises every page's record): the
/// tests' guests are small.
const SMALL_GUEST: &str = r#""limits": {"memory": "1G"}"#;

/// A guest boot under TCG on a loaded 2-core machine takes well over a minute at worst.
const VM_TIMEOUT: Duration = Duration::from_secs(420);

fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_command_in_the_guest_sees_its_own_kernel_and_only_the_policy() {
    let Some(accel) = accel() else {
        return;
    };
    let dir = common::TestDir::new("vm-run");
    let secret_text = common::unique("vm-secret");
    let secret = dir.write("secret/key", &secret_text);
    let ro = dir.write("ro/file", "host original\n");
    dir.mkdir("rw");
    let settings = dir.settings(&format!(
        r#"{{"filesystem": {{"denyRead": ["{}"], "allowWrite": ["{}"]}}, {SMALL_GUEST}}}"#,
        dir.s("secret"),
        dir.s("rw")
    ));
    // A host process the guest must not see.
    let marker = common::unique("vm-host-proc");
    let mut host_proc = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg0(&marker)
            .arg("600")
            .spawn()
            .unwrap()
    };
    let seen = Instant::now();
    while common::host_process_with(&marker).is_empty() {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "the host process is not visible on the host"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = format!(
        r#"echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "release=$(uname -r)"
read line; echo "stdin=$line"
cat {secret} 2>/dev/null; echo "secret_read=$?"
echo "secret_dir=[$(ls -A {secretdir} 2>/dev/null)]"
(echo changed > {ro}) 2>/dev/null; echo "ro_write=$?"
echo guest-wrote > {rw}/out; echo "rw_write=$?"
m1='[{m1}]'; m2={m2}
for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\0' ' '; echo; done | grep -c "$m1$m2"; echo "procs_seen=$?"
echo "netdevs=$(ls /sys/class/net | tr '\n' ' ')"
echo "cwd=$(pwd)"
echo to-stderr >&2
exit 7"#,
        secret = secret.display(),
        secretdir = dir.s("secret"),
        ro = ro.display(),
        rw = dir.s("rw"),
        // Split, so that this script's own command line does not hold the marker, and its first
        // letter bracketed, so that grep's own command line (a process the loop may list) does
        // not match the pattern it holds.
        m1 = &marker[..1],
        m2 = &marker[1..],
    );
    let mut cmd = common::ringfence(&[
        "--isolation",
        "vm",
        "--vm-accel",
        accel,
        "-s",
        &settings,
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    cmd.current_dir(dir.join("rw")).stdin(Stdio::piped());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"given on stdin\n").unwrap();
    }
    let out = common::wait(child, VM_TIMEOUT);
    let _ = host_proc.kill();
    let _ = host_proc.wait();
    let o = &out.stdout;
    let field = |k: &str| -> String {
        o.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in the guest's output: {out:#?}"))
            .to_string()
    };
    assert_eq!(out.code(), 7, "the command's exit status: {out:#?}");
    // A kernel of its own: another boot (and the Debian guest kernel's release).
    let guest_boot = field("boot_id");
    assert!(!guest_boot.is_empty(), "{out:#?}");
    assert_ne!(
        guest_boot,
        host_boot_id(),
        "the guest shares the host's kernel: {out:#?}"
    );
    let release = field("release");
    assert!(
        std::path::Path::new(&format!("/boot/vmlinuz-{release}")).exists(),
        "the guest's kernel {release} is not a Debian kernel of /boot: {out:#?}"
    );
    assert_eq!(field("stdin"), "given on stdin", "{out:#?}");
    assert!(out.stderr.contains("to-stderr"), "{out:#?}");
    assert_eq!(field("cwd"), dir.s("rw"), "{out:#?}");
    // The policy's files.
    assert!(
        !o.contains(&secret_text),
        "the secret reached the guest: {out:#?}"
    );
    assert_ne!(field("secret_read"), "0", "{out:#?}");
    // A denied directory is empty, as in the namespace mode.
    assert_eq!(field("secret_dir"), "[]", "{out:#?}");
    assert_ne!(field("ro_write"), "0", "{out:#?}");
    assert_eq!(dir.read("ro/file"), "host original\n");
    assert_eq!(field("rw_write"), "0", "{out:#?}");
    assert_eq!(dir.read("rw/out"), "guest-wrote\n");
    // No host process, and no network device but loopback.
    assert_eq!(
        field("procs_seen"),
        "1",
        "a host process is visible: {out:#?}"
    );
    assert_eq!(field("netdevs").trim(), "lo", "{out:#?}");
}

#[test]
fn the_guests_only_way_out_is_the_supervisors_proxy() {
    let Some(accel) = accel() else {
        return;
    };
    if !common::have("curl") {
        common::skip("curl is not installed");
        return;
    }
    let allowed = common::http_upstream(|_, path| format!("upstream saw {path}\n"));
    let other = common::http_upstream(|_, path| format!("upstream saw {path}\n"));
    let (dir, settings) = common::with_settings(
        "vm-net",
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{allowed}"]}}, {SMALL_GUEST}}}"#),
    );
    let name = format!("vm-net-{}", common::unique_number());
    let script = format!(
        "curl -sS --max-time 60 --noproxy '' http://127.0.0.1:{allowed}/via-proxy; \
         curl -sS --max-time 60 --noproxy '' -x socks5h://127.0.0.1:1080 http://127.0.0.1:{allowed}/via-socks; \
         curl -sS -i --max-time 60 --noproxy '' http://127.0.0.1:{other}/denied; echo; \
         curl -sS --max-time 10 --noproxy '*' http://127.0.0.1:{allowed}/direct; echo direct=$?"
    );
    let out = common::run_for(
        common::rf_in(&dir).args([
            "run",
            "--isolation",
            "vm",
            "--vm-accel",
            accel,
            "--name",
            &name,
            "-s",
            &settings,
            "--",
            "/bin/sh",
            "-c",
            &script,
        ]),
        VM_TIMEOUT,
    );
    let o = out.ok();
    assert!(o.contains("upstream saw /via-proxy\n"), "{out:#?}");
    assert!(o.contains("upstream saw /via-socks\n"), "{out:#?}");
    assert!(!o.contains("upstream saw /denied"), "{out:#?}");
    assert!(!o.contains("upstream saw /direct"), "{out:#?}");
    assert!(!o.contains("direct=0"), "{out:#?}");
    // The supervisor's proxy decided, and its log says so.
    let ev = common::log_events(common::rf_in(&dir), &name);
    let decided = |d: &str, port: u16| {
        ev.iter()
            .any(|e| e["kind"] == "net.decision" && e["decision"] == d && e["port"] == port)
    };
    assert!(decided("allow", allowed), "{ev:#?}");
    assert!(decided("deny", other), "{ev:#?}");
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
