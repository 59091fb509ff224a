//! Syscall-level escapes tried from inside a real sandbox with a compiled probe. Each probe uses a
//! harmless bad argument where it can, so the errno tells whether the filter stopped the call
//! (EPERM, ENOSYS, EAFNOSUPPORT) or the kernel saw it (EBADF, EFAULT, EINVAL, ESRCH).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run_probe, TestDir};
use libc::{EAFNOSUPPORT, EBADF, ENOSYS, EPERM};

/// Runs `probes` in a default sandbox and asserts each reports `errno`.
fn expect(name: &str, args: &[&str], probes: &[&str], errno: i32) {
    let dir = TestDir::new(name);
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let out = run_probe(args, &probe, probes);
    for p in probes {
        assert_eq!(out.errno(p), errno, "{p}: {out:#?}");
    }
}

#[test]
fn probe_reaches_kernel_for_allowed_calls() {
    // Without this, a probe that always failed with EPERM would make every other test pass.
    let dir = TestDir::new("sys-control");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let out = run_probe(
        &[],
        &probe,
        &[
            "fork",
            "ioctl_other",
            "socket_inet",
            "socket_inet6",
            "socket_netlink_route",
        ],
    );
    assert_eq!(out.errno("fork"), 0, "{out:#?}");
    assert_eq!(out.errno("ioctl_other"), EBADF, "{out:#?}");
    assert_eq!(out.errno("socket_inet"), 0, "{out:#?}");
    assert_eq!(out.errno("socket_inet6"), 0, "{out:#?}");
    assert_eq!(out.errno("socket_netlink_route"), 0, "{out:#?}");
}

#[test]
fn unshare_namespaces_denied() {
    expect(
        "sys-unshare",
        &[],
        &[
            "unshare_user",
            "unshare_mount",
            "unshare_net",
            "unshare_user_high",
        ],
        EPERM,
    );
}

#[test]
fn unshare_command_fails() {
    if !common::have("unshare") {
        common::skip("no unshare(1)");
        return;
    }
    let out = common::sh(
        &[],
        "unshare -U true; echo rc=$?; unshare -r -m true; echo rc=$?",
    );
    assert_eq!(out.ok(), "rc=1\nrc=1\n", "{out:#?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
}

#[test]
fn clone_with_namespace_flags_denied() {
    expect("sys-clone", &[], &["clone_newuser", "clone_newpid"], EPERM);
}

#[test]
fn clone3_answers_enosys() {
    expect("sys-clone3", &[], &["clone3"], ENOSYS);
}

#[test]
fn setns_denied() {
    expect("sys-setns", &[], &["setns"], EPERM);
}

#[test]
fn mount_family_denied() {
    expect(
        "sys-mount",
        &[],
        &["mount", "umount2", "pivot_root", "chroot"],
        EPERM,
    );
}

#[test]
fn mount_command_fails() {
    let out = common::sh(
        &[],
        "mount -t tmpfs none /mnt; echo rc=$?; grep -c ' /mnt ' /proc/self/mountinfo; true",
    );
    let stdout = out.ok();
    assert!(!stdout.contains("rc=0"), "{out:#?}");
    assert!(stdout.ends_with("\n0\n"), "{out:#?}");
}

#[test]
fn ptrace_denied() {
    expect(
        "sys-ptrace",
        &[],
        &[
            "ptrace_attach_1",
            "ptrace_attach_none",
            "process_vm_readv",
            "pidfd_getfd",
        ],
        EPERM,
    );
}

#[test]
fn keyring_denied() {
    expect(
        "sys-keyctl",
        &[],
        &["keyctl", "add_key", "request_key"],
        EPERM,
    );
}

#[test]
fn bpf_denied() {
    expect("sys-bpf", &[], &["bpf"], EPERM);
}

#[test]
fn io_uring_denied() {
    expect(
        "sys-io-uring",
        &[],
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        EPERM,
    );
}

#[test]
fn perf_event_open_and_userfaultfd_denied() {
    expect("sys-perf", &[], &["perf_event_open", "userfaultfd"], EPERM);
}

#[test]
fn file_handles_denied() {
    expect(
        "sys-handles",
        &[],
        &["open_by_handle_at", "name_to_handle_at"],
        EPERM,
    );
}

#[test]
fn x32_syscalls_denied() {
    if !cfg!(target_arch = "x86_64") {
        common::skip("x32 exists only on x86_64");
        return;
    }
    expect("sys-x32", &[], &["x32_getpid", "x32_unshare"], EPERM);
}

#[test]
fn tiocsti_denied_including_high_bits() {
    expect("sys-tiocsti", &[], &["tiocsti", "tiocsti_high"], EPERM);
}

#[test]
fn tioclinux_denied_including_high_bits() {
    expect(
        "sys-tioclinux",
        &[],
        &["tioclinux", "tioclinux_high"],
        EPERM,
    );
}

#[test]
fn unix_sockets_denied_by_default_including_high_bits() {
    expect(
        "sys-unix",
        &[],
        &["socket_unix", "socket_unix_high", "socket_unix_dgram"],
        EAFNOSUPPORT,
    );
}

#[test]
fn unix_socketpair_of_every_type_works() {
    // An anonymous pair reaches nothing outside it; Rust's Command::spawn needs SOCK_SEQPACKET.
    expect(
        "sys-socketpair",
        &[],
        &[
            "socketpair_unix_stream",
            "socketpair_unix_dgram",
            "socketpair_unix_seqpacket",
        ],
        0,
    );
    expect(
        "sys-socketpair-inet",
        &[],
        &["socketpair_inet"],
        EAFNOSUPPORT,
    );
}

/// Not a test of its own: `rust_command_spawn_works` runs this test executable inside a
/// sandbox with RINGFENCE_SPAWN_PROBE set, and this reports how std's Command::spawn fared.
#[test]
fn spawn_probe_inside() {
    if std::env::var_os("RINGFENCE_SPAWN_PROBE").is_none() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "exit 7"]);
    // A pre_exec hook takes std's fork path (as cargo's jobserver does), where the child's
    // pidfd and errors come back over a SOCK_SEQPACKET pair; without it std may posix_spawn.
    // SAFETY: the hook does nothing, so nothing unsafe runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    match cmd.status() {
        Ok(status) => println!("spawn-result status={:?}", status.code()),
        Err(e) => println!("spawn-result error={e}"),
    }
}

#[test]
fn rust_command_spawn_works() {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    if exe.starts_with("/tmp/") {
        common::skip("the test executable is under /tmp, which is private inside the sandbox");
        return;
    }
    let out = common::run(common::ringfence(&[]).args([
        "--",
        "/usr/bin/env",
        "RINGFENCE_SPAWN_PROBE=1",
        exe,
        "--exact",
        "spawn_probe_inside",
        "--nocapture",
        "--test-threads=1",
    ]));
    assert!(out.ok().contains("spawn-result status=Some(7)"), "{out:#?}");
}

#[test]
fn python_socketpair_seqpacket_works() {
    if !common::have("python3") {
        common::skip("no python3");
        return;
    }
    let out = common::sh(
        &[],
        "python3 -c 'import socket; a, b = socket.socketpair(socket.AF_UNIX, \
         socket.SOCK_SEQPACKET); a.send(b\"x\"); print(b.recv(1))'",
    );
    assert_eq!(out.ok(), "b'x'\n", "{out:#?}");
}

#[test]
fn unix_sockets_allowed_with_allow_all_unix_sockets() {
    let dir = TestDir::new("sys-unix-allowed");
    let settings = dir.settings(r#"{"network":{"allowAllUnixSockets":true}}"#);
    if common::is_root() {
        // Root keeps its host identity for file access: unix sockets would reach host
        // services as root, so the policy is refused.
        let out = common::run(&mut common::ringfence(&["-s", &settings, "--", "true"]));
        assert_eq!(out.code(), 125, "{out:#?}");
        assert!(
            out.stderr
                .contains("network.allowAllUnixSockets: refused for a root caller"),
            "{out:#?}"
        );
        return;
    }
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let probes = ["socket_unix", "socket_unix_high", "socket_unix_dgram"];
    let out = run_probe(&["-s", &settings], &probe, &probes);
    for p in probes {
        assert_eq!(out.errno(p), 0, "{p}: {out:#?}");
    }
    // Other families stay denied.
    let out = run_probe(&["-s", &settings], &probe, &["socket_packet"]);
    assert_eq!(out.errno("socket_packet"), EAFNOSUPPORT, "{out:#?}");
}

#[test]
fn host_abstract_unix_socket_unreachable_even_when_unix_allowed() {
    let dir = TestDir::new("sys-abstract");
    if common::is_root() {
        common::skip("allowAllUnixSockets is refused for root (see the test above)");
        return;
    }
    let settings = dir.settings(r#"{"network":{"allowAllUnixSockets":true}}"#);
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    use std::os::linux::net::SocketAddrExt;
    let name = common::unique("rf-test-abstract-");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    // The socket is reachable from the host.
    let host =
        common::run(std::process::Command::new(&probe).arg(format!("connect_abstract={name}")));
    assert!(host.stdout.contains("errno=0"), "{host:#?}");
    let _ = listener.accept();

    let p = format!("connect_abstract={name}");
    let out = run_probe(&["-s", &settings], &probe, &[&p]);
    assert_eq!(out.errno(&p), libc::ECONNREFUSED, "{out:#?}");
    assert!(
        listener.accept().is_err(),
        "a connection arrived from inside"
    );
}

#[test]
fn packet_vsock_alg_and_netlink_audit_denied() {
    expect(
        "sys-families",
        &[],
        &[
            "socket_packet",
            "socket_packet_high",
            "socket_vsock",
            "socket_alg",
            "socket_netlink_audit",
        ],
        EAFNOSUPPORT,
    );
}

#[test]
fn raw_inet_sockets_denied() {
    expect(
        "sys-raw",
        &[],
        &["socket_inet_raw", "socket_inet_packet"],
        EPERM,
    );
}
