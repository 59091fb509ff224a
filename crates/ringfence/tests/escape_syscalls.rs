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
fn open_by_handle_denied() {
    // name_to_handle_at is allowed (see clock_reads_and_file_handle_names_reach_the_kernel).
    expect("sys-handles", &[], &["open_by_handle_at"], EPERM);
}

#[test]
fn x32_syscalls_denied() {
    if !cfg!(target_arch = "x86_64") {
        common::not_here("x32 exists only on x86_64");
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
fn unix_socketpair_of_stream_and_seqpacket_works() {
    // A connected pair reaches nothing outside it; Rust's Command::spawn needs SOCK_SEQPACKET.
    expect(
        "sys-socketpair",
        &[],
        &["socketpair_unix_stream", "socketpair_unix_seqpacket"],
        0,
    );
    // A datagram pair could send to any host datagram socket by address.
    expect(
        "sys-socketpair-dgram",
        &[],
        &["socketpair_unix_dgram"],
        libc::EPERM,
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
        common::not_here("allowAllUnixSockets is refused for root (see the test above)");
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

#[test]
fn nested_user_namespaces_refused_unless_allowed() {
    if !common::have("unshare") {
        common::skip("no unshare(1)");
        return;
    }
    let dir = TestDir::new("sys-nested-off");
    // Absent (the default) and an explicit false mean the same.
    for settings in ["{}", r#"{"allowNestedUserNamespaces": false}"#] {
        let settings = dir.settings(settings);
        let out = common::sh(&["-s", &settings], "unshare -U true; echo rc=$?");
        assert_eq!(out.ok(), "rc=1\n", "{out:#?}");
        assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
    }
}

#[test]
fn nested_user_namespaces_when_allowed() {
    if !common::have("unshare") {
        common::skip("no unshare(1)");
        return;
    }
    let dir = TestDir::new("sys-nested-on");
    let settings = dir.settings(r#"{"allowNestedUserNamespaces": true}"#);
    if common::is_root() {
        let out = common::run(&mut common::ringfence(&["-s", &settings, "--", "true"]));
        assert_eq!(out.code(), 125, "{out:#?}");
        assert!(
            out.stderr
                .contains("allowNestedUserNamespaces: refused for a root caller"),
            "{out:#?}"
        );
        return;
    }
    dir.write("secret/key", "s3cret\n");
    dir.write("ro/file", "original\n");
    let secret = dir.s("secret");
    let ro = dir.s("ro/file");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    // Each probe in a process of its own: a successful unshare_user moves the probe.
    for (name, errno) in [
        ("unshare_user", 0),
        ("clone_newuser", 0),
        ("unshare_mount", EPERM),
        ("unshare_net", EPERM),
        ("clone_newpid", EPERM),
        ("clone3", ENOSYS),
        ("setns", EPERM),
    ] {
        let out = run_probe(&["-s", &settings], &probe, &[name]);
        assert_eq!(out.errno(name), errno, "{name}: {out:#?}");
    }
    // As root of a user namespace of its own, the command still cannot mount, unmount, read
    // what is denied or write what is read-only.
    let script = format!(
        "unshare -U true; echo user=$?
         unshare -Ur id -u
         unshare -Urn true; echo net=$?
         unshare -Ur /usr/sbin/chroot / true; echo chroot=$?
         unshare -Ur sh -c '
           r() {{ if \"$@\" 2>/dev/null; then echo ok; else echo no; fi; }}
           echo mount=$(r mount -t tmpfs none /tmp)
           echo umount=$(r umount -l {secret})
           echo read=$(r cat {secret}/key)
           echo write=$(r sh -c \"echo changed > {ro}\")
           echo inner-mount-ns=$(r unshare -m true)'
         cat {ro}"
    );
    let out = common::sh(&["-s", &settings, "--deny-read", &secret], &script);
    let stdout = out.ok();
    let expected = "user=0\n0\nnet=0\nchroot=0\nmount=no\numount=no\nread=no\nwrite=no\n\
                    inner-mount-ns=no\noriginal\n";
    if std::path::Path::new("/usr/sbin/chroot").exists() {
        assert_eq!(stdout, expected, "{out:#?}");
    } else {
        common::skip("no /usr/sbin/chroot; the chroot line is not checked");
        let stdout = stdout.replace("chroot=127\n", "chroot=0\n");
        assert_eq!(stdout, expected, "{out:#?}");
    }
    assert_eq!(dir.read("ro/file"), "original\n");
}

// The refusals below are the ones Docker's default profile does not make; each is kept for
// the reason given in docs/seccomp-audit.md, beside a test that the allowed form still works.

#[test]
fn clock_reads_and_file_handle_names_reach_the_kernel() {
    let dir = TestDir::new("sys-docker-allowed");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let probes = [
        "adjtimex_read",
        "clock_adjtime_read",
        "adjtimex_set",
        "name_to_handle_at",
        "open_by_handle_at",
    ];
    let out = run_probe(&[], &probe, &probes);
    assert_eq!(out.errno("adjtimex_read"), 0, "{out:#?}");
    assert_eq!(out.errno("clock_adjtime_read"), 0, "{out:#?}");
    // The kernel refuses the change: no CAP_SYS_TIME in the initial user namespace.
    assert_eq!(out.errno("adjtimex_set"), EPERM, "{out:#?}");
    let handle = out.errno("name_to_handle_at");
    assert!(handle != EPERM && handle != ENOSYS, "{out:#?}");
    // A handle opens nothing: open_by_handle_at stays refused.
    assert_eq!(out.errno("open_by_handle_at"), EPERM, "{out:#?}");
}

#[test]
fn ptrace_family_refused_in_every_form() {
    // Docker allows ptrace and process_vm_* on Linux 4.8 and later; ringfence keeps them
    // refused (PID 1 answers the creation guard and must not be traced or written).
    expect(
        "sys-ptrace-forms",
        &[],
        &["ptrace_traceme_child", "process_vm_writev", "kcmp_self"],
        EPERM,
    );
}

#[test]
fn openat2_answers_enosys_and_openat_works() {
    let dir = TestDir::new("sys-openat2");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let out = run_probe(&[], &probe, &["openat2", "openat_root"]);
    assert_eq!(out.errno("openat2"), ENOSYS, "{out:#?}");
    assert_eq!(out.errno("openat_root"), 0, "{out:#?}");
}

#[test]
fn icmp_datagram_sockets_reach_the_kernel() {
    // The allowed form beside the SOCK_RAW refusal: ping's datagram socket is the kernel's
    // to answer (EACCES outside net.ipv4.ping_group_range).
    let dir = TestDir::new("sys-icmp");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let out = run_probe(&[], &probe, &["socket_inet_icmp"]);
    let errno = out.errno("socket_inet_icmp");
    assert!(errno == 0 || errno == libc::EACCES, "{out:#?}");
}

#[test]
fn other_socket_families_and_netlink_protocols_denied() {
    let dir = TestDir::new("sys-families-more");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let probes = [
        "socket_can",
        "socket_tipc",
        "socket_rds",
        "socket_netlink_generic",
        "socket_netlink_sock_diag",
        "socket_netlink_uevent",
    ];
    let out = run_probe(&[], &probe, &probes);
    // The host's answers show which of them the kernel would give (the netlink ones always):
    // the sandbox's EAFNOSUPPORT for those is the filter's.
    let host = common::run(std::process::Command::new(&probe).args(probes));
    let mut reached = 0;
    for p in probes {
        assert_eq!(out.errno(p), EAFNOSUPPORT, "{p}: {out:#?}");
        if host.errno(p) != EAFNOSUPPORT {
            reached += 1;
        }
    }
    assert!(reached >= 3, "the host kernel answered none: {host:#?}");
}

#[test]
fn i386_syscalls_kill_the_process() {
    if !cfg!(target_arch = "x86_64") {
        common::not_here("the int 0x80 entry exists only on x86_64");
        return;
    }
    let dir = TestDir::new("sys-i386");
    let Some(probe) = common::probe(&dir) else {
        return;
    };
    let host = common::run(std::process::Command::new(&probe).arg("int80_getpid"));
    if !host.stdout.contains("int80_getpid errno=0") {
        common::not_here("this kernel has no 32-bit entry (IA32 emulation)");
        return;
    }
    let out = common::sh(&[], &format!("{probe} int80_getpid; echo rc=$?"));
    // 128 + SIGSYS: the filter's kill, not an errno the probe could print.
    assert!(out.ok().contains("rc=159"), "{out:#?}");
    assert!(!out.stdout.contains("int80_getpid errno="), "{out:#?}");
}

#[test]
fn a_host_datagram_socket_receives_nothing_from_the_sandbox() {
    // syslog, journald and notify sockets are datagram sockets on the read-only host tree: a
    // datagram socket or pair inside must not reach them by address.
    if !std::path::Path::new("/usr/bin/python3").is_file() {
        common::skip("no /usr/bin/python3");
        return;
    }
    let dir = common::TestDir::new("sys-dgram-host");
    let path = dir.join("host.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server.set_nonblocking(true).unwrap();
    let script = format!(
        r#"
import socket
p = "{}"
for name, make in (("pair", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)[0]),
                   ("socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))):
    try:
        s = make()
        s.sendto(b"escape", p)
        print(name, "sent")
    except OSError as e:
        print(name, "refused", e.errno)
"#,
        path.display()
    );
    let out = common::run(common::ringfence(&[]).args(["--", "/usr/bin/python3", "-c", &script]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(!out.stdout.contains("sent"), "{out:#?}");
    let mut buf = [0u8; 64];
    assert!(
        server.recv(&mut buf).is_err(),
        "the host socket received a datagram: {out:#?}"
    );
}
