//! The seccomp filter, the last setup step before the command runs: it refuses the kernel
//! interfaces a sandboxed command has no use for and that could undo the other boundaries
//! (namespaces, mounts, ptrace, keyrings, bpf, io_uring, terminal injection, foreign socket
//! families). It is classic BPF written out here, so every decision can be read and unit-tested.

use std::io;

use libc::{c_long, sock_filter};

use crate::error::{Error, Result};

/// What the filter lets through beyond the fixed baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// Allow `socket(AF_UNIX, ..)` and datagram `socketpair(AF_UNIX, ..)`. Stream and
    /// seqpacket pairs are allowed either way: they reach nothing outside the pair (Rust's
    /// `Command::spawn` uses a `SOCK_SEQPACKET` pair); a datagram pair can send to any host
    /// datagram socket by address.
    pub allow_unix_sockets: bool,
    /// Allow `pidfd_getfd` and `process_vm_readv`: only for the sandbox's PID 1 when it answers
    /// the creation guard (it reads callers' path arguments and takes their directory and
    /// socket descriptors); the guard's own filter denies both to everything else in the
    /// sandbox.
    pub guard_pid1: bool,
    /// `allowNestedUserNamespaces`: allow `clone` and `unshare` that create a user namespace,
    /// with any other namespace flags beside it, and `chroot` (which only narrows the view,
    /// and which a process can use only inside a user namespace it made; Chromium's sandbox
    /// needs it). Namespace flags without a new user namespace, `setns` and every mount call
    /// stay refused, so the mounts that enforce the filesystem policy stay where they are.
    pub allow_user_namespaces: bool,
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use libc::c_long;

    /// AUDIT_ARCH_X86_64.
    pub const AUDIT_ARCH: u32 = 0xc000_003e;
    /// x32 system calls arrive under AUDIT_ARCH_X86_64 with this bit set in `nr`, so checking the
    /// architecture alone would let a second syscall table through.
    pub const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
    /// Refused outright, in addition to the common list.
    pub const DENIED: &[c_long] = &[
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS__sysctl,
        libc::SYS_kexec_file_load,
    ];
    /// Calls that set a file's mode, with the index of the mode argument.
    pub const MODE_SETTERS: &[(c_long, u32)] = &[
        (libc::SYS_chmod, 1),
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (super::SYS_FCHMODAT2, 2),
        (libc::SYS_creat, 1),
        (libc::SYS_mknod, 1),
        (libc::SYS_mknodat, 2),
    ];
    /// `open` and `openat` with the index of their flags and mode arguments.
    pub const OPENS: &[(c_long, u32, u32)] = &[(libc::SYS_open, 1, 2), (libc::SYS_openat, 2, 3)];
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use libc::c_long;

    /// AUDIT_ARCH_AARCH64.
    pub const AUDIT_ARCH: u32 = 0xc000_00b7;
    pub const X32_SYSCALL_BIT: Option<u32> = None;
    /// kexec_file_load, which libc does not name for every aarch64 C library.
    pub const DENIED: &[c_long] = &[294];
    /// Calls that set a file's mode, with the index of the mode argument.
    pub const MODE_SETTERS: &[(c_long, u32)] = &[
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (super::SYS_FCHMODAT2, 2),
        (libc::SYS_mknodat, 2),
    ];
    /// `openat` with the index of its flags and mode arguments.
    pub const OPENS: &[(c_long, u32, u32)] = &[(libc::SYS_openat, 2, 3)];
}

/// fchmodat2 (Linux 6.6), the same number on every architecture.
const SYS_FCHMODAT2: c_long = 452;

/// The set-user-ID and set-group-ID bits of a mode.
const SET_ID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// Open flags under which the mode argument applies: O_CREAT, and O_TMPFILE's own bit.
const MODE_USED: u32 = (libc::O_CREAT | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u32;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the ringfence seccomp filter is written for x86_64 and aarch64 only");

/// Refused with EPERM on every architecture. Docker's default profile refuses these too, most of
/// them unless the container holds a capability ringfence never grants; it allows `ptrace`,
/// `process_vm_readv`/`writev` and (with its default capabilities) `chroot`, which stay refused
/// here for the reasons in docs/seccomp-audit.md.
const DENIED: &[c_long] = &[
    // mounts and the filesystem namespace
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // Opening by handle bypasses every mount in the sandbox's view. name_to_handle_at stays
    // allowed (systemd uses its mount ID); a handle opens nothing without this one.
    libc::SYS_open_by_handle_at,
    // other namespaces and other processes
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    // kernel keyrings
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // kernel attack surface
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_fanotify_init,
    libc::SYS_lookup_dcookie,
    libc::SYS_nfsservctl,
    // the machine as a whole
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    // adjtimex and clock_adjtime stay allowed, as in Docker's profile: reading the clock's
    // state (ntp_gettime, ntpstat, chrony status) needs them, and the kernel refuses
    // every change without CAP_SYS_TIME in the initial user namespace.
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_vhangup,
];

/// Every flag that creates a namespace through `clone`; all of them live in the low 32 bits, and
/// the kernel reads only the low 32 bits of the legacy `clone` flags.
const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
/// `unshare` also creates time namespaces (0x80 is the exit signal field for `clone`).
const UNSHARE_NAMESPACES: u32 = CLONE_NAMESPACES | libc::CLONE_NEWTIME as u32;

/// Docker's allowed `personality` values: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32
/// and the query 0xffffffff. Everything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) weakens
/// the process's own hardening.
const PERSONALITIES: &[u32] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const NETLINK_ROUTE: u32 = 0;
/// SOCK_TYPE_MASK: the socket type without SOCK_NONBLOCK and SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u32 = 0xf;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

const fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// Offsets into `struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// The low 32 bits of `args[i]`. Arguments declared `int` or `unsigned int` (socket family,
/// ioctl request, personality) are truncated by the kernel, so the high half must not matter.
const fn arg_low(i: u32) -> u32 {
    let low_half = if cfg!(target_endian = "big") { 4 } else { 0 };
    16 + 8 * i + low_half
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;

/// Builds the filter. Pure: the same options always give the same program.
///
/// Order: foreign architecture -> kill; x32 -> EPERM; `clone3` -> ENOSYS; the outright denials
/// -> EPERM; the syscalls whose arguments are checked; everything else is allowed.
pub fn build(opts: &FilterOptions) -> Vec<sock_filter> {
    let eperm = ret_errno(libc::EPERM);
    let eafnosupport = ret_errno(libc::EAFNOSUPPORT);
    let mut a = Assembler::default();

    a.load(OFFSET_ARCH);
    a.ret_unless(JEQ_K, arch::AUDIT_ARCH, RET_KILL_PROCESS);

    a.load(OFFSET_NR);
    if let Some(bit) = arch::X32_SYSCALL_BIT {
        a.ret_if(JGE_K, bit, eperm);
    }
    let mut d = Dispatch::default();
    // The busiest calls, which no rule below concerns, are allowed whatever follows.
    for &syscall in HOT {
        d.ret(syscall, RET_ALLOW);
    }
    // ENOSYS makes glibc and musl fall back to `clone`, whose flags are in a register the filter
    // can read; `clone3` keeps them in memory it cannot.
    d.ret(libc::SYS_clone3, ret_errno(libc::ENOSYS));
    // Likewise `openat2` hides its flags and mode in memory: libc falls back to `openat`, whose
    // mode the set-ID rule below can read.
    d.ret(libc::SYS_openat2, ret_errno(libc::ENOSYS));
    for &syscall in DENIED.iter().chain(arch::DENIED) {
        if opts.guard_pid1 && GUARD_PID1.contains(&syscall) {
            continue;
        }
        if opts.allow_user_namespaces && syscall == libc::SYS_chroot {
            continue;
        }
        d.ret(syscall, eperm);
    }

    for (syscall, namespaces) in [
        (libc::SYS_clone, CLONE_NAMESPACES),
        (libc::SYS_unshare, UNSHARE_NAMESPACES),
    ] {
        d.on_syscall(syscall, move |a| {
            a.load(arg_low(0));
            if opts.allow_user_namespaces {
                // The other namespaces a process can make only with the capabilities a new
                // user namespace gives it; asked for beside one, they belong to it.
                a.ret_if(JSET_K, libc::CLONE_NEWUSER as u32, RET_ALLOW);
            }
            a.ret_if(JSET_K, namespaces, eperm);
            a.ret(RET_ALLOW);
        });
    }
    d.on_syscall(libc::SYS_ioctl, |a| {
        a.load(arg_low(1));
        a.ret_if(JEQ_K, libc::TIOCSTI as u32, eperm);
        a.ret_if(JEQ_K, libc::TIOCLINUX as u32, eperm);
        a.ret(RET_ALLOW);
    });
    d.on_syscall(libc::SYS_socket, move |a| {
        let inet = a.label();
        let netlink = a.label();
        a.load(arg_low(0));
        a.jump(JEQ_K, libc::AF_INET as u32, Target::To(inet), Target::Next);
        a.jump(JEQ_K, libc::AF_INET6 as u32, Target::To(inet), Target::Next);
        a.jump(
            JEQ_K,
            libc::AF_NETLINK as u32,
            Target::To(netlink),
            Target::Next,
        );
        if opts.allow_unix_sockets {
            a.ret_if(JEQ_K, libc::AF_UNIX as u32, RET_ALLOW);
        }
        a.ret(eafnosupport);

        // Only stream and datagram: SOCK_RAW is packet crafting, and the kernel turns
        // AF_INET + SOCK_PACKET into an AF_PACKET socket. EPERM is what a missing CAP_NET_RAW
        // gives, which tools such as ping already handle.
        a.bind(inet);
        a.load(arg_low(1));
        a.and(SOCK_TYPE_MASK);
        a.ret_if(JEQ_K, libc::SOCK_STREAM as u32, RET_ALLOW);
        a.ret_if(JEQ_K, libc::SOCK_DGRAM as u32, RET_ALLOW);
        a.ret(eperm);

        a.bind(netlink);
        a.load(arg_low(2));
        a.ret_if(JEQ_K, NETLINK_ROUTE, RET_ALLOW);
        a.ret(eafnosupport);
    });
    // A stream or seqpacket pair is connected only to itself and cannot be connected again
    // (EISCONN), so it reaches nothing outside: Rust's `Command::spawn` uses a seqpacket pair.
    // A datagram pair (SOCK_RAW is one too for AF_UNIX) is different: `sendto` with an address
    // and `connect` reach any host datagram socket on the read-only tree (syslog, journald,
    // notify sockets). It is allowed only where unix sockets are (everything, or a list whose
    // addressed calls PID 1 checks); elsewhere EPERM, as before.
    d.on_syscall(libc::SYS_socketpair, move |a| {
        let unix = a.label();
        a.load(arg_low(0));
        a.jump(JEQ_K, libc::AF_UNIX as u32, Target::To(unix), Target::Next);
        a.ret(eafnosupport);
        a.bind(unix);
        if opts.allow_unix_sockets {
            a.ret(RET_ALLOW);
        } else {
            a.load(arg_low(1));
            a.and(SOCK_TYPE_MASK);
            a.ret_if(JEQ_K, libc::SOCK_STREAM as u32, RET_ALLOW);
            a.ret_if(JEQ_K, libc::SOCK_SEQPACKET as u32, RET_ALLOW);
            a.ret(eperm);
        }
    });
    // No set-user-ID or set-group-ID file may come out of the sandbox: for a root caller the
    // files it writes belong to root on the host, where such a bit would make them run as
    // root. Setting either bit (chmod family, or a mode given when creating) is refused, with
    // EPERM (what chmod gives a user who may not set the bit), not EROFS: the file itself is
    // writable, and tools that fall back on a read-only file system should not here.
    for &(syscall, mode) in arch::MODE_SETTERS {
        d.on_syscall(syscall, move |a| {
            a.load(arg_low(mode));
            a.ret_if(JSET_K, SET_ID_BITS, eperm);
            a.ret(RET_ALLOW);
        });
    }
    for &(syscall, flags, mode) in arch::OPENS {
        d.on_syscall(syscall, move |a| {
            let creating = a.label();
            a.load(arg_low(flags));
            a.jump(JSET_K, MODE_USED, Target::To(creating), Target::Next);
            a.ret(RET_ALLOW);
            a.bind(creating);
            a.load(arg_low(mode));
            a.ret_if(JSET_K, SET_ID_BITS, eperm);
            a.ret(RET_ALLOW);
        });
    }
    d.on_syscall(libc::SYS_personality, |a| {
        a.load(arg_low(0));
        for &persona in PERSONALITIES {
            a.ret_if(JEQ_K, persona, RET_ALLOW);
        }
        a.ret(eperm);
    });

    d.emit(&mut a, RET_ALLOW);
    a.finish()
}

// ---------------------------------------------------------------------------------------------
// The same filter as data, for engines that take a declarative profile (an OCI seccomp profile
// for crun, runc, runsc, Kubernetes). Every rule here is an errno answer for one syscall when
// each of its argument checks holds; a syscall no rule matches is allowed. The rules of one
// syscall are disjoint, so the order in which an engine tries them cannot matter, and every
// check is a masked equality, which compares the low 32 bits exactly where the filter does
// (libseccomp's SCMP_CMP_MASKED_EQ). `rules_match_the_filter` below runs both on the same
// probes.
// ---------------------------------------------------------------------------------------------

/// The native architecture's AUDIT_ARCH value, which the filter requires.
pub const AUDIT_ARCH: u32 = arch::AUDIT_ARCH;
/// The x32 bit, refused on x86_64 (None on architectures without it).
pub const X32_SYSCALL_BIT: Option<u32> = arch::X32_SYSCALL_BIT;

/// `(args[index] & mask) == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCheck {
    pub index: u32,
    pub mask: u64,
    pub value: u64,
}

/// `syscall` answers `errno` when every check holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub syscall: c_long,
    pub errno: i32,
    pub args: Vec<ArgCheck>,
}

/// One argument's condition: any one of these checks (they are disjoint).
type Alternatives = Vec<ArgCheck>;

/// The low 32 bits of `args[index]` equal `value`.
fn low_eq(index: u32, value: u32) -> Alternatives {
    vec![ArgCheck {
        index,
        mask: 0xffff_ffff,
        value: u64::from(value),
    }]
}

/// At least one bit of `bits` is set while every bit of `clear` is clear, as disjoint checks:
/// the first set bit of `bits`, and the lower bits of `bits` clear.
fn any_bit(index: u32, bits: u32, clear: u32) -> Alternatives {
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|b| bits & b != 0)
        .map(|b| ArgCheck {
            index,
            mask: u64::from(b | (bits & (b - 1)) | clear),
            value: u64::from(b),
        })
        .collect()
}

/// The low `width` bits of `args[index]` hold a value outside `set`: the complement of `set`
/// as aligned blocks, each one masked equality.
fn not_in(index: u32, width: u32, set: &[u32]) -> Alternatives {
    fn cover(prefix: u64, level: u32, full: u64, set: &[u64], index: u32, out: &mut Alternatives) {
        let size = 1u64 << level;
        if !set.iter().any(|&v| v >= prefix && v < prefix + size) {
            out.push(ArgCheck {
                index,
                mask: full & !(size - 1),
                value: prefix,
            });
        } else if level > 0 {
            cover(prefix, level - 1, full, set, index, out);
            cover(prefix + size / 2, level - 1, full, set, index, out);
        }
    }
    let full = (1u64 << width) - 1;
    let set: Vec<u64> = set.iter().map(|&v| u64::from(v) & full).collect();
    let mut out = Vec::new();
    cover(0, width, full, &set, index, &mut out);
    out
}

/// The filter [`build`] assembles, as rules (the architecture checks aside: see [`AUDIT_ARCH`]
/// and [`X32_SYSCALL_BIT`]).
pub fn rules(opts: &FilterOptions) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut add = |syscall: c_long, errno: i32, conds: Vec<Alternatives>| {
        // The cartesian product of the arguments' alternatives.
        let mut combos: Vec<Vec<ArgCheck>> = vec![Vec::new()];
        for alternatives in conds {
            combos = combos
                .iter()
                .flat_map(|c| {
                    alternatives.iter().map(move |a| {
                        let mut c = c.clone();
                        c.push(*a);
                        c
                    })
                })
                .collect();
        }
        out.extend(combos.into_iter().map(|args| Rule {
            syscall,
            errno,
            args,
        }));
    };
    let (eperm, eafnosupport) = (libc::EPERM, libc::EAFNOSUPPORT);
    add(libc::SYS_clone3, libc::ENOSYS, vec![]);
    add(libc::SYS_openat2, libc::ENOSYS, vec![]);
    for &syscall in DENIED.iter().chain(arch::DENIED) {
        if opts.guard_pid1 && GUARD_PID1.contains(&syscall) {
            continue;
        }
        if opts.allow_user_namespaces && syscall == libc::SYS_chroot {
            continue;
        }
        add(syscall, eperm, vec![]);
    }
    for (syscall, namespaces) in [
        (libc::SYS_clone, CLONE_NAMESPACES),
        (libc::SYS_unshare, UNSHARE_NAMESPACES),
    ] {
        let newuser = libc::CLONE_NEWUSER as u32;
        let flags = if opts.allow_user_namespaces {
            any_bit(0, namespaces & !newuser, newuser)
        } else {
            any_bit(0, namespaces, 0)
        };
        add(syscall, eperm, vec![flags]);
    }
    add(
        libc::SYS_ioctl,
        eperm,
        vec![low_eq(1, libc::TIOCSTI as u32)],
    );
    add(
        libc::SYS_ioctl,
        eperm,
        vec![low_eq(1, libc::TIOCLINUX as u32)],
    );
    let (stream, dgram) = (libc::SOCK_STREAM as u32, libc::SOCK_DGRAM as u32);
    for family in [libc::AF_INET, libc::AF_INET6] {
        let types = not_in(1, 4, &[stream, dgram]);
        add(
            libc::SYS_socket,
            eperm,
            vec![low_eq(0, family as u32), types],
        );
    }
    let netlink = libc::AF_NETLINK as u32;
    let protocols = not_in(2, 32, &[NETLINK_ROUTE]);
    add(
        libc::SYS_socket,
        eafnosupport,
        vec![low_eq(0, netlink), protocols],
    );
    let mut families = vec![libc::AF_INET as u32, libc::AF_INET6 as u32, netlink];
    if opts.allow_unix_sockets {
        families.push(libc::AF_UNIX as u32);
    }
    add(
        libc::SYS_socket,
        eafnosupport,
        vec![not_in(0, 32, &families)],
    );
    let unix = libc::AF_UNIX as u32;
    add(
        libc::SYS_socketpair,
        eafnosupport,
        vec![not_in(0, 32, &[unix])],
    );
    if !opts.allow_unix_sockets {
        let types = not_in(1, 4, &[stream, libc::SOCK_SEQPACKET as u32]);
        add(libc::SYS_socketpair, eperm, vec![low_eq(0, unix), types]);
    }
    for &(syscall, mode) in arch::MODE_SETTERS {
        add(syscall, eperm, vec![any_bit(mode, SET_ID_BITS, 0)]);
    }
    for &(syscall, flags, mode) in arch::OPENS {
        let conds = vec![any_bit(flags, MODE_USED, 0), any_bit(mode, SET_ID_BITS, 0)];
        add(syscall, eperm, conds);
    }
    add(
        libc::SYS_personality,
        eperm,
        vec![not_in(0, 32, PERSONALITIES)],
    );
    out
}

/// Runs a classic BPF program the way the kernel runs a seccomp filter, for the opcodes
/// [`build`] emits (None for any other, or a program that runs off its end). For tests and for
/// checking exported profiles against the filter a run installs.
pub fn evaluate(prog: &[sock_filter], arch: u32, nr: u32, args: &[u64; 6]) -> Option<u32> {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, arg) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = prog.get(pc)?;
        pc += 1;
        let branch = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
        match insn.code {
            LD_W_ABS => {
                let k = insn.k as usize;
                let word = data.get(k..k + 4).filter(|_| k & 3 == 0)?;
                acc = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
            }
            ALU_AND_K => acc &= insn.k,
            JEQ_K => pc += branch(acc == insn.k),
            JGE_K => pc += branch(acc >= insn.k),
            JSET_K => pc += branch(acc & insn.k != 0),
            JA => pc += insn.k as usize,
            RET_K => return Some(insn.k),
            _ => return None,
        }
    }
}

/// The most frequent system calls, allowed first by both filters. None of them may appear in a
/// rule of either filter (a unit test checks this).
const HOT: &[c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_pread64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
];

/// What the main filter lets PID 1 do when it answers the creation guard.
const GUARD_PID1: &[c_long] = &[libc::SYS_pidfd_getfd, libc::SYS_process_vm_readv];

/// Syscalls that create a name in the filesystem, sent to the supervisor's creation guard.
/// `open`/`openat` only when O_CREAT is set; `openat2` hides its flags in memory the filter
/// cannot read, so it answers ENOSYS and libc falls back to `openat`.
#[cfg(target_arch = "x86_64")]
const CREATING: &[c_long] = &[
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_creat,
];
#[cfg(target_arch = "aarch64")]
const CREATING: &[c_long] = &[
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
];

/// Open flags that send an open to the creation guard: creating a name, and opening for
/// writing (a git configuration the guard put in place in a new repository is sealed against
/// that; the guard tells it by the file it opened, whatever the path).
const GUARDED_OPEN: u32 = (libc::O_CREAT | libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC) as u32;

/// Path-based changes of an existing name (chmod, chown, unlink) that the guard performs for a
/// writable single file and the temporary names beside it (see `guard::WritableDir`); every
/// other one it lets the kernel continue as the caller's own call.
#[cfg(target_arch = "x86_64")]
const FILE_META: &[c_long] = &[
    libc::SYS_chmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];
#[cfg(target_arch = "aarch64")]
const FILE_META: &[c_long] = &[
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_fchownat,
    libc::SYS_unlinkat,
];

/// Removals of a name (unlink, rmdir), which `filesystem.ask` asks about outside the writable
/// roots: sent to the guard only with it (see `guard::Agent::ask_unlink`), which lets every
/// other one continue as the caller's own call.
#[cfg(target_arch = "x86_64")]
const REMOVING: &[c_long] = &[libc::SYS_unlink, libc::SYS_unlinkat, libc::SYS_rmdir];
#[cfg(target_arch = "aarch64")]
const REMOVING: &[c_long] = &[libc::SYS_unlinkat];

/// The filter PID 1 answers: every `execve` is reported (observation only, for the activity
/// log) and, with `creation`, every syscall that could create a protected name goes to the
/// creation guard; with `file_meta` (there are writable single files) the calls of
/// [`FILE_META`] too; with `removals` (`filesystem.ask`) those of [`REMOVING`]. Everything else
/// is allowed (the main filter still applies); with `reads` (`filesystem.askRead`) every open.
pub fn build_guard(
    creation: bool,
    file_meta: bool,
    unix_paths: bool,
    removals: bool,
    reads: bool,
) -> Vec<sock_filter> {
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let mut a = Assembler::default();
    a.load(OFFSET_ARCH);
    a.ret_unless(JEQ_K, arch::AUDIT_ARCH, RET_KILL_PROCESS);
    a.load(OFFSET_NR);
    let mut d = Dispatch::default();
    // Only PID 1 (which answers this filter) may take descriptors from other processes or read
    // their memory.
    for &syscall in GUARD_PID1 {
        d.ret(syscall, ret_errno(libc::EPERM));
    }
    for &syscall in HOT {
        d.ret(syscall, RET_ALLOW);
    }
    d.ret(libc::SYS_execve, notify);
    d.ret(libc::SYS_execveat, notify);
    if unix_paths {
        unix_address_rules(&mut d);
    }
    if !creation {
        d.emit(&mut a, RET_ALLOW);
        return a.finish();
    }
    d.ret(libc::SYS_openat2, ret_errno(libc::ENOSYS));
    // bind can create a unix socket file; the filter cannot see the address, so every bind
    // goes to the guard, which binds a duplicate of the caller's socket itself.
    d.ret(libc::SYS_bind, notify);
    for &syscall in CREATING {
        d.ret(syscall, notify);
    }
    if file_meta {
        for &syscall in FILE_META {
            d.ret(syscall, notify);
        }
    }
    if removals {
        for &syscall in REMOVING {
            d.ret(syscall, notify);
        }
    }
    if reads {
        d.ret(libc::SYS_openat, notify);
        #[cfg(target_arch = "x86_64")]
        d.ret(libc::SYS_open, notify);
    }
    d.on_syscall(libc::SYS_openat, |a| {
        a.load(arg_low(2));
        a.ret_if(JSET_K, GUARDED_OPEN, notify);
        a.ret(RET_ALLOW);
    });
    #[cfg(target_arch = "x86_64")]
    d.on_syscall(libc::SYS_open, |a| {
        a.load(arg_low(1));
        a.ret_if(JSET_K, GUARDED_OPEN, notify);
        a.ret(RET_ALLOW);
    });
    d.emit(&mut a, RET_ALLOW);
    a.finish()
}

// ---------------------------------------------------------------------------------------------
// Unix sockets by path (`network.allowUnixSockets`): the filter cannot read an address, so
// every call that takes one goes to PID 1 (`guard::Agent::unix_address_call`), which checks a
// unix path and performs the call on a duplicate of the caller's socket. Only with a list:
// without one, socket(AF_UNIX) is refused (or, with allowAllUnixSockets, nothing is checked).
// ---------------------------------------------------------------------------------------------

/// connect, sendto with an address, and sendmsg (whose address is in memory) go to the agent;
/// sendmmsg answers ENOSYS, so that libc and resolvers fall back to sendmsg or sendto, one
/// message at a time, which the agent can check.
fn unix_address_rules(d: &mut Dispatch<'_>) {
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    d.ret(libc::SYS_connect, notify);
    d.ret(libc::SYS_sendmsg, notify);
    d.ret(libc::SYS_sendmmsg, ret_errno(libc::ENOSYS));
    // send(2) is sendto with a null address: it stays a plain syscall.
    d.on_syscall(libc::SYS_sendto, move |a| {
        a.load(arg_low(4));
        a.ret_unless(JEQ_K, 0, notify);
        a.load(arg_high(4));
        a.ret_unless(JEQ_K, 0, notify);
        a.ret(RET_ALLOW);
    });
}

/// The high 32 bits of `args[i]` (a pointer is null only if both halves are).
const fn arg_high(i: u32) -> u32 {
    let high_half = if cfg!(target_endian = "big") { 0 } else { 4 };
    16 + 8 * i + high_half
}

/// Installs `prog` with a user-notification listener and returns the listener.
pub fn install_with_listener(prog: &[sock_filter]) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let len = u16::try_from(prog.len()).map_err(|_| Error::Seccomp {
        step: "filter length",
        source: io::Error::from_raw_os_error(libc::E2BIG),
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` initialized instructions that outlive the call; the
    // kernel copies the program and returns a new descriptor, checked before it is owned.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            // WAIT_KILLABLE_RECV: once the supervisor has taken a notification, only a fatal
            // signal interrupts the caller, so an operation the agent performed is never
            // restarted and performed twice.
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(Error::Seccomp {
            step: "install the guard filter (seccomp user notification with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, Linux 5.19 or newer)",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: rc is a fresh listener descriptor owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) })
}

/// Sets no_new_privs (which lets an unprivileged process install a filter, and keeps setuid
/// binaries from gaining privileges the filter was not written for), then installs `prog` for
/// the calling thread and every process it starts from now on.
///
/// Allocation-free, so it may run between fork and exec.
pub fn install(prog: &[sock_filter]) -> Result<()> {
    let len = u16::try_from(prog.len()).map_err(|_| Error::Seccomp {
        step: "filter length",
        source: io::Error::from_raw_os_error(libc::E2BIG),
    })?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads through this pointer (it copies the program in).
        filter: prog.as_ptr().cast_mut(),
    };

    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::Seccomp {
            step: "set no_new_privs",
            source: io::Error::last_os_error(),
        });
    }

    // SAFETY: `fprog` is a valid sock_fprog whose `filter` points to `len` initialized
    // instructions borrowed from `prog`; both outlive the call, and the kernel copies the program
    // before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            0 as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(Error::Seccomp {
            step: "install filter",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Syscall numbers on x86_64 and aarch64 are small and non-negative.
fn nr(syscall: c_long) -> u32 {
    syscall as u32
}

/// A forward-only classic BPF assembler with labels, so that no jump offset is counted by hand.
/// Conditional jumps have 8-bit offsets; every jump here stays inside one syscall's block or
/// skips one block, which keeps them short however long the lists grow.
#[derive(Default)]
struct Assembler {
    insns: Vec<Pending>,
    /// The instruction index each label is bound to.
    labels: Vec<Option<usize>>,
}

#[derive(Clone, Copy)]
struct Label(usize);

#[derive(Clone, Copy)]
enum Target {
    Next,
    To(Label),
}

struct Pending {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
    /// A `JA`'s destination, whose offset (in `k`) has 32 bits.
    far: Option<Label>,
}

impl Assembler {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.jump(code, k, Target::Next, Target::Next);
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Pending {
            code,
            k,
            jt,
            jf,
            far: None,
        });
    }

    /// Jumps to `label`, however far ahead.
    fn goto(&mut self, label: Label) {
        self.insns.push(Pending {
            code: JA,
            k: 0,
            jt: Target::Next,
            jf: Target::Next,
            far: Some(label),
        });
    }

    /// With A holding `nr`: jumps to the label of the case equal to A, else to `default`.
    /// `cases` is sorted by number, each once. A balanced tree of `JGE` with a few `JEQ` at each
    /// leaf: every syscall takes about 2 log2(n) instructions, where a chain of `JEQ` took up
    /// to 2n. That matters twice: an argument-checked call (`openat`, `ioctl`) runs the filter
    /// on every call, and installing the filter costs the kernel a run for each syscall number
    /// (to learn which are always allowed), which for a chain was 0.3 ms of every start.
    fn dispatch(&mut self, cases: &[(u32, Label)], default: Label) {
        if cases.len() <= 3 {
            for &(k, label) in cases {
                let other = self.label();
                self.jump(JEQ_K, k, Target::Next, Target::To(other));
                self.goto(label);
                self.bind(other);
            }
            self.goto(default);
            return;
        }
        let mid = cases.len() / 2;
        let (upper, lower) = (self.label(), self.label());
        self.jump(JGE_K, cases[mid].0, Target::Next, Target::To(lower));
        self.goto(upper);
        self.bind(lower);
        self.dispatch(&cases[..mid], default);
        self.bind(upper);
        self.dispatch(&cases[mid..], default);
    }

    fn load(&mut self, offset: u32) {
        self.stmt(LD_W_ABS, offset);
    }

    fn and(&mut self, mask: u32) {
        self.stmt(ALU_AND_K, mask);
    }

    fn ret(&mut self, action: u32) {
        self.stmt(RET_K, action);
    }

    /// If the condition holds, return `action`; otherwise go on.
    fn ret_if(&mut self, cond: u16, k: u32, action: u32) {
        let after = self.label();
        self.jump(cond, k, Target::Next, Target::To(after));
        self.ret(action);
        self.bind(after);
    }

    /// Unless the condition holds, return `action`.
    fn ret_unless(&mut self, cond: u16, k: u32, action: u32) {
        let after = self.label();
        self.jump(cond, k, Target::To(after), Target::Next);
        self.ret(action);
        self.bind(after);
    }

    /// Resolves labels into relative offsets. A label left unbound or a jump too far for 8 bits
    /// is a bug in `build`, whose output is fixed for each option set and covered by the tests.
    fn finish(self) -> Vec<sock_filter> {
        let offset = |at: usize, target: Target| -> u8 {
            let Target::To(label) = target else {
                return 0;
            };
            let Some(Some(dest)) = self.labels.get(label.0).copied() else {
                panic!("seccomp filter: jump to an unbound label");
            };
            match dest.checked_sub(at + 1).map(u8::try_from) {
                Some(Ok(offset)) => offset,
                _ => panic!("seccomp filter: jump from {at} to {dest} does not fit a BPF offset"),
            }
        };
        let far = |at: usize, label: Label| -> u32 {
            let Some(Some(dest)) = self.labels.get(label.0).copied() else {
                panic!("seccomp filter: jump to an unbound label");
            };
            match dest.checked_sub(at + 1).map(u32::try_from) {
                Some(Ok(offset)) => offset,
                _ => panic!("seccomp filter: jump from {at} back to {dest}"),
            }
        };
        self.insns
            .iter()
            .enumerate()
            .map(|(at, insn)| sock_filter {
                code: insn.code,
                jt: offset(at, insn.jt),
                jf: offset(at, insn.jf),
                k: insn.far.map_or(insn.k, |l| far(at, l)),
            })
            .collect()
    }
}

/// What each syscall number gets, gathered in order of precedence (the first given for a
/// syscall is the one it keeps, as in a chain of tests) and then emitted behind one
/// [`Assembler::dispatch`]: a return shared by every syscall with the same answer, or a block
/// of its own that checks arguments.
#[derive(Default)]
struct Dispatch<'a> {
    cases: Vec<(u32, Case<'a>)>,
}

enum Case<'a> {
    Ret(u32),
    /// Must return on every path (it overwrites A).
    Block(Box<dyn FnOnce(&mut Assembler) + 'a>),
}

impl<'a> Dispatch<'a> {
    fn ret(&mut self, syscall: c_long, action: u32) {
        self.add(syscall, Case::Ret(action));
    }

    fn on_syscall(&mut self, syscall: c_long, block: impl FnOnce(&mut Assembler) + 'a) {
        self.add(syscall, Case::Block(Box::new(block)));
    }

    fn add(&mut self, syscall: c_long, case: Case<'a>) {
        let n = nr(syscall);
        if !self.cases.iter().any(|(k, _)| *k == n) {
            self.cases.push((n, case));
        }
    }

    /// The tree, then the blocks, then the shared returns; a syscall with no case gets
    /// `default`.
    fn emit(self, a: &mut Assembler, default: u32) {
        let mut returns: Vec<(u32, Label)> = Vec::new();
        let mut blocks = Vec::new();
        let mut keyed = Vec::new();
        for (n, case) in self.cases {
            let label = match case {
                Case::Ret(action) if action == default => continue,
                Case::Ret(action) => match returns.iter().find(|(r, _)| *r == action) {
                    Some(&(_, l)) => l,
                    None => {
                        let l = a.label();
                        returns.push((action, l));
                        l
                    }
                },
                Case::Block(f) => {
                    let l = a.label();
                    blocks.push((l, f));
                    l
                }
            };
            keyed.push((n, label));
        }
        keyed.sort_by_key(|&(n, _)| n);
        let fallback = a.label();
        a.dispatch(&keyed, fallback);
        for (l, f) in blocks {
            a.bind(l);
            f(a);
            debug_assert!(a.insns.last().is_some_and(|insn| insn.code == RET_K));
        }
        for (action, l) in returns {
            a.bind(l);
            a.ret(action);
        }
        a.bind(fallback);
        a.ret(default);
    }
}

/// The test suite's counted skips (a failure under RINGFENCE_TEST_STRICT=1).
#[cfg(test)]
#[path = "../../ringfence/tests/common/skip.rs"]
mod test_skip;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const AF_VSOCK: u64 = 40;
    const NETLINK_AUDIT: u64 = 9;
    const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
    /// The obsolete packet socket type; libc marks it deprecated.
    const SOCK_PACKET: i32 = 10;

    const STRICT: FilterOptions = FilterOptions {
        allow_unix_sockets: false,
        guard_pid1: false,
        allow_user_namespaces: false,
    };
    const WITH_UNIX: FilterOptions = FilterOptions {
        allow_unix_sockets: true,
        guard_pid1: false,
        allow_user_namespaces: false,
    };
    const WITH_USERNS: FilterOptions = FilterOptions {
        allow_unix_sockets: false,
        guard_pid1: true,
        allow_user_namespaces: true,
    };

    /// The classic BPF subset `build` emits, run the way the kernel runs a seccomp filter.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: &[u64]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = prog.get(pc).expect("fell off the end of the program");
            pc += 1;
            let branch = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
            match insn.code {
                LD_W_ABS => {
                    let k = insn.k as usize;
                    assert!(k & 3 == 0 && k + 4 <= data.len(), "bad load offset {k}");
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= insn.k,
                JEQ_K => pc += branch(acc == insn.k),
                JGE_K => pc += branch(acc >= insn.k),
                JSET_K => pc += branch(acc & insn.k != 0),
                JA => pc += insn.k as usize,
                RET_K => return insn.k,
                code => panic!("unexpected opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    fn decide(opts: &FilterOptions, syscall: c_long, args: &[u64]) -> u32 {
        run(&build(opts), arch::AUDIT_ARCH, nr(syscall), args)
    }

    const EPERM: u32 = ret_errno(libc::EPERM);
    const EAFNOSUPPORT: u32 = ret_errno(libc::EAFNOSUPPORT);

    fn c(value: i32) -> u64 {
        u64::from(value as u32)
    }

    /// What a declarative engine answers for `rules`: the errno of the matching rules (which
    /// must agree), else allow.
    pub(super) fn decide_rules(rules: &[Rule], nr: c_long, args: &[u64; 6]) -> u32 {
        let mut answers = rules
            .iter()
            .filter(|r| r.syscall == nr)
            .filter(|r| {
                r.args
                    .iter()
                    .all(|c| args[c.index as usize] & c.mask == c.value)
            })
            .map(|r| r.errno);
        let Some(first) = answers.next() else {
            return RET_ALLOW;
        };
        for other in answers {
            assert_eq!(
                first, other,
                "rules of syscall {nr} overlap with different answers"
            );
        }
        ret_errno(first)
    }

    /// Argument values that sit on either side of every boundary the filter draws.
    pub(super) fn probe_values() -> Vec<u64> {
        let mut v: Vec<u64> = (0..=48).collect();
        v.extend([
            0o4755,
            0o2755,
            0o6000,
            0o1777,
            0o0755,
            0o104755,
            u64::from(libc::TIOCSTI as u32),
            u64::from(libc::TIOCLINUX as u32),
            u64::from(libc::TCGETS as u32),
            u64::from(libc::O_CREAT as u32 | libc::O_WRONLY as u32),
            u64::from(libc::O_TMPFILE as u32 | libc::O_RDWR as u32),
            u64::from(libc::O_DIRECTORY as u32),
            0x2_0000,
            0x2_0008,
            0x4_0000,
            0x40_0000,
            0x0400_0000,
            0xffff_ffff,
            0xffff_fffe,
            0x8000_0000,
            u64::MAX,
        ]);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWTIME,
        ] {
            let ns = u64::from(ns as u32);
            v.push(ns);
            v.push(ns | u64::from(libc::SIGCHLD as u32));
            v.push(ns | u64::from(libc::CLONE_NEWUSER as u32));
            v.push(ns << 32);
        }
        let highs: Vec<u64> = v.iter().map(|x| (1 << 32) | x).collect();
        v.extend(highs);
        v.extend([0xdead_beef_0000_0001, 0x0000_0002_0000_0010]);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The syscalls the filter has rules for, plus a spread of others.
    pub(super) fn probe_syscalls() -> Vec<c_long> {
        let mut s: Vec<c_long> = (0..=460).collect();
        s.extend([511, 512, 1000]);
        s
    }

    #[test]
    fn rules_match_the_filter() {
        for opts in [
            STRICT,
            WITH_UNIX,
            WITH_USERNS,
            FilterOptions::default(),
            FilterOptions {
                allow_unix_sockets: true,
                guard_pid1: false,
                allow_user_namespaces: true,
            },
        ] {
            let prog = build(&opts);
            let rules = rules(&opts);
            let values = probe_values();
            let mut probes = 0usize;
            for nr in probe_syscalls() {
                let own: Vec<Rule> = rules.iter().filter(|r| r.syscall == nr).cloned().collect();
                let mut check = |args: [u64; 6]| {
                    probes += 1;
                    let bpf = evaluate(&prog, AUDIT_ARCH, nr as u32, &args).unwrap();
                    let declared = decide_rules(&own, nr, &args);
                    assert_eq!(bpf, declared, "syscall {nr} args {args:x?} ({opts:?})");
                };
                check([0; 6]);
                check([u64::MAX; 6]);
                // The arguments the filter looks at for this syscall, alone and in pairs.
                let mut checked: Vec<usize> = (0..4).collect();
                if !own.is_empty() {
                    checked = own
                        .iter()
                        .flat_map(|r| r.args.iter().map(|c| c.index as usize))
                        .collect();
                    checked.sort_unstable();
                    checked.dedup();
                }
                for &i in &checked {
                    for &a in &values {
                        let mut args = [0; 6];
                        args[i] = a;
                        check(args);
                    }
                }
                let pairs = if own.is_empty() {
                    &[][..]
                } else {
                    &checked[..]
                };
                for (n, &i) in pairs.iter().enumerate() {
                    for &j in &pairs[n + 1..] {
                        for &a in &values {
                            for &b in &values {
                                let mut args = [0; 6];
                                args[i] = a;
                                args[j] = b;
                                check(args);
                            }
                        }
                    }
                }
            }
            assert!(probes > 100_000, "{probes} probes");
        }
    }

    #[test]
    fn file_meta_calls_reach_the_guard_only_with_writable_files() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let with = build_guard(true, true, false, false, false);
        let without = build_guard(true, false, false, false, false);
        for &syscall in FILE_META {
            assert_eq!(run(&with, arch::AUDIT_ARCH, nr(syscall), &[0; 6]), notify);
            assert_eq!(
                run(&without, arch::AUDIT_ARCH, nr(syscall), &[0; 6]),
                RET_ALLOW
            );
        }
    }

    #[test]
    fn removals_reach_the_guard_only_when_asked_about() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let asking = build_guard(true, false, false, true, false);
        let not = build_guard(true, false, false, false, false);
        for &syscall in REMOVING {
            assert_eq!(run(&asking, arch::AUDIT_ARCH, nr(syscall), &[0; 6]), notify);
            assert_eq!(run(&not, arch::AUDIT_ARCH, nr(syscall), &[0; 6]), RET_ALLOW);
        }
        #[cfg(target_arch = "x86_64")]
        assert!(REMOVING.contains(&libc::SYS_rmdir));
        // chmod and chown stay plain calls.
        assert_eq!(
            run(&asking, arch::AUDIT_ARCH, nr(libc::SYS_fchmodat), &[0; 6]),
            RET_ALLOW
        );
    }

    #[test]
    fn every_open_reaches_the_guard_only_when_reads_are_asked_about() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let reading = build_guard(true, false, false, false, true);
        let not = build_guard(true, false, false, false, false);
        let read_only = [3, 0x1000, libc::O_RDONLY as u64, 0, 0, 0];
        let o = nr(libc::SYS_openat);
        assert_eq!(run(&reading, arch::AUDIT_ARCH, o, &read_only), notify);
        assert_eq!(run(&not, arch::AUDIT_ARCH, o, &read_only), RET_ALLOW);
        let creating = [3, 0x1000, libc::O_CREAT as u64, 0, 0, 0];
        assert_eq!(run(&not, arch::AUDIT_ARCH, o, &creating), notify);
    }

    #[test]
    fn hot_calls_are_in_no_rule() {
        let mut ruled: Vec<c_long> = DENIED.iter().chain(arch::DENIED).copied().collect();
        ruled.extend(GUARD_PID1);
        ruled.extend(CREATING);
        ruled.extend(FILE_META);
        ruled.extend(REMOVING);
        ruled.extend(arch::MODE_SETTERS.iter().map(|(s, _)| *s));
        ruled.extend(arch::OPENS.iter().map(|(s, _, _)| *s));
        ruled.extend([
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_unshare,
            libc::SYS_ioctl,
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_personality,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_bind,
            libc::SYS_connect,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
        ]);
        for h in HOT {
            assert!(!ruled.contains(h), "syscall {h} is hot and has a rule");
        }
        // And the fast path really allows them.
        for &h in HOT {
            assert_eq!(decide(&STRICT, h, &[0; 6]), RET_ALLOW, "syscall {h}");
        }
    }

    #[test]
    fn unix_paths_send_addressed_calls_to_the_agent() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let arch = arch::AUDIT_ARCH;
        for creation in [false, true] {
            let with = build_guard(creation, false, true, false, false);
            let d = |nr: c_long, args: &[u64]| run(&with, arch, nr as u32, args);
            assert_eq!(d(libc::SYS_connect, &[3, 0, 0]), notify);
            assert_eq!(d(libc::SYS_sendmsg, &[3, 0, 0]), notify);
            assert_eq!(d(libc::SYS_sendmmsg, &[3, 0, 1]), ret_errno(libc::ENOSYS));
            // send(2) is sendto without an address: no round trip.
            assert_eq!(d(libc::SYS_sendto, &[3, 1, 1, 0, 0, 0]), RET_ALLOW);
            assert_eq!(d(libc::SYS_sendto, &[3, 1, 1, 0, 0x1000, 16]), notify);
            // A pointer whose low half is zero is still an address.
            assert_eq!(d(libc::SYS_sendto, &[3, 1, 1, 0, 1 << 32, 16]), notify);
            let without = build_guard(creation, false, false, false, false);
            for nr in [libc::SYS_connect, libc::SYS_sendmsg, libc::SYS_sendto] {
                assert_eq!(
                    run(&without, arch, nr as u32, &[3, 0, 0, 0, 0x1000, 16]),
                    RET_ALLOW
                );
            }
        }
    }

    #[test]
    fn set_id_bits_are_refused() {
        let o = STRICT;
        let creat = u64::from(libc::O_CREAT as u32 | libc::O_WRONLY as u32);
        assert_eq!(decide(&o, libc::SYS_fchmod, &[3, 0o4755]), EPERM);
        assert_eq!(decide(&o, libc::SYS_fchmod, &[3, 0o2755]), EPERM);
        assert_eq!(decide(&o, libc::SYS_fchmod, &[3, 0o0755]), RET_ALLOW);
        // High bits above the low 32 do not hide the mode.
        assert_eq!(
            decide(&o, libc::SYS_fchmod, &[3, 0x1_0000_0000 | 0o4755]),
            EPERM
        );
        assert_eq!(decide(&o, libc::SYS_fchmodat, &[3, 0, 0o6755]), EPERM);
        assert_eq!(decide(&o, SYS_FCHMODAT2, &[3, 0, 0o4700, 0]), EPERM);
        assert_eq!(decide(&o, libc::SYS_fchmodat, &[3, 0, 0o1777]), RET_ALLOW);
        assert_eq!(decide(&o, libc::SYS_mknodat, &[3, 0, 0o104755, 0]), EPERM);
        assert_eq!(decide(&o, libc::SYS_openat, &[3, 0, creat, 0o4755]), EPERM);
        assert_eq!(
            decide(&o, libc::SYS_openat, &[3, 0, creat, 0o644]),
            RET_ALLOW
        );
        let tmpfile = u64::from(libc::O_TMPFILE as u32 | libc::O_WRONLY as u32);
        assert_eq!(
            decide(&o, libc::SYS_openat, &[3, 0, tmpfile, 0o2755]),
            EPERM
        );
        assert_eq!(
            decide(&o, libc::SYS_openat2, &[3, 0, 0, 24]),
            ret_errno(libc::ENOSYS)
        );
        // Without O_CREAT or O_TMPFILE the mode argument is ignored by the kernel.
        assert_eq!(decide(&o, libc::SYS_openat, &[3, 0, 0, 0o4755]), RET_ALLOW);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(decide(&o, libc::SYS_chmod, &[0, 0o4755]), EPERM);
            assert_eq!(decide(&o, libc::SYS_creat, &[0, 0o4755]), EPERM);
            assert_eq!(decide(&o, libc::SYS_open, &[0, creat, 0o4755]), EPERM);
            assert_eq!(decide(&o, libc::SYS_open, &[0, creat, 0o755]), RET_ALLOW);
        }
    }

    #[test]
    fn program_is_well_formed() {
        for opts in [STRICT, WITH_UNIX, WITH_USERNS] {
            let prog = build(&opts);
            assert!(prog.len() < 4096, "BPF_MAXINSNS exceeded: {}", prog.len());
            for (at, insn) in prog.iter().enumerate() {
                if insn.code == RET_K {
                    continue;
                }
                let end = at + 1 + usize::from(insn.jt.max(insn.jf));
                assert!(end < prog.len(), "jump out of the program at {at}");
            }
            assert_eq!(prog.last().map(|i| i.code), Some(RET_K));
        }
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        for syscall in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_seccomp,
            libc::SYS_landlock_create_ruleset,
            libc::SYS_quotactl_fd,
            // Docker's default profile allows these, and so does ringfence (docs/seccomp-audit.md):
            // the kernel itself refuses a clock change without CAP_SYS_TIME in the initial user
            // namespace, and a handle is of no use without open_by_handle_at, which stays refused.
            libc::SYS_adjtimex,
            libc::SYS_clock_adjtime,
            libc::SYS_name_to_handle_at,
        ] {
            assert_eq!(
                decide(&STRICT, syscall, &[]),
                RET_ALLOW,
                "syscall {syscall}"
            );
        }
    }

    #[test]
    fn foreign_architecture_is_killed() {
        let prog = build(&STRICT);
        // AUDIT_ARCH_I386: the int 0x80 entry on x86_64; AUDIT_ARCH_ARM: compat on aarch64.
        for foreign in [0x4000_0003, 0x4000_0028, 0xc000_003e, 0xc000_00b7] {
            if foreign == arch::AUDIT_ARCH {
                continue;
            }
            let read = nr(libc::SYS_read);
            assert_eq!(run(&prog, foreign, read, &[]), RET_KILL_PROCESS);
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x32_syscalls_are_denied() {
        let prog = build(&STRICT);
        for syscall in [libc::SYS_read, libc::SYS_unshare, 512] {
            let x32 = nr(syscall) | 0x4000_0000;
            assert_eq!(run(&prog, arch::AUDIT_ARCH, x32, &[]), EPERM);
        }
    }

    #[test]
    fn clone3_answers_enosys() {
        let flags = c(libc::CLONE_NEWUSER);
        assert_eq!(
            decide(&STRICT, libc::SYS_clone3, &[flags]),
            ret_errno(libc::ENOSYS)
        );
    }

    #[test]
    fn clone_flags() {
        let fork = c(libc::SIGCHLD | libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID);
        assert_eq!(decide(&STRICT, libc::SYS_clone, &[fork]), RET_ALLOW);
        let thread = c(libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID);
        assert_eq!(decide(&STRICT, libc::SYS_clone, &[thread]), RET_ALLOW);
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = fork | c(ns);
            assert_eq!(decide(&STRICT, libc::SYS_clone, &[flags]), EPERM, "{ns:#x}");
        }
        // Only the low 32 bits of the legacy clone flags reach the kernel.
        let high = fork | (c(libc::CLONE_NEWUSER) << 32);
        assert_eq!(decide(&STRICT, libc::SYS_clone, &[high]), RET_ALLOW);
    }

    #[test]
    fn unshare_flags() {
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWTIME,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                decide(&STRICT, libc::SYS_unshare, &[c(ns)]),
                EPERM,
                "{ns:#x}"
            );
        }
        for harmless in [libc::CLONE_FILES, libc::CLONE_FS, libc::CLONE_SYSVSEM] {
            assert_eq!(
                decide(&STRICT, libc::SYS_unshare, &[c(harmless)]),
                RET_ALLOW
            );
        }
    }

    #[test]
    fn nested_user_namespaces_when_allowed() {
        let fork = c(libc::SIGCHLD);
        let newuser = c(libc::CLONE_NEWUSER);
        // bwrap's and Chromium's sets: everything beside a new user namespace.
        let others = [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ];
        let all = others.iter().fold(newuser, |acc, &ns| acc | c(ns));
        let o = WITH_USERNS;
        assert_eq!(decide(&o, libc::SYS_clone, &[fork | newuser]), RET_ALLOW);
        assert_eq!(decide(&o, libc::SYS_clone, &[fork | all]), RET_ALLOW);
        assert_eq!(decide(&o, libc::SYS_unshare, &[newuser]), RET_ALLOW);
        let time = c(libc::CLONE_NEWTIME);
        assert_eq!(decide(&o, libc::SYS_unshare, &[all | time]), RET_ALLOW);
        assert_eq!(decide(&o, libc::SYS_chroot, &[0]), RET_ALLOW);
        // Without a new user namespace beside them, the other flags stay refused.
        for ns in others {
            assert_eq!(
                decide(&o, libc::SYS_clone, &[fork | c(ns)]),
                EPERM,
                "{ns:#x}"
            );
            assert_eq!(decide(&o, libc::SYS_unshare, &[c(ns)]), EPERM, "{ns:#x}");
        }
        assert_eq!(decide(&o, libc::SYS_unshare, &[time]), EPERM);
        // High bits are not flags: CLONE_NEWUSER there creates nothing and allows nothing.
        let high = (newuser << 32) | c(libc::CLONE_NEWNS);
        assert_eq!(decide(&o, libc::SYS_unshare, &[high]), EPERM);
        assert_eq!(
            decide(&o, libc::SYS_clone3, &[newuser]),
            ret_errno(libc::ENOSYS)
        );
        // Joining namespaces and every mount call stay refused.
        for syscall in [
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_fsopen,
            libc::SYS_mount_setattr,
        ] {
            assert_eq!(decide(&o, syscall, &[]), EPERM, "syscall {syscall}");
        }
        // And without the option, none of it.
        assert_eq!(decide(&STRICT, libc::SYS_unshare, &[newuser]), EPERM);
        assert_eq!(decide(&STRICT, libc::SYS_chroot, &[0]), EPERM);
    }

    #[test]
    fn ioctl_terminal_injection() {
        let tiocsti = u64::from(libc::TIOCSTI as u32);
        let tioclinux = u64::from(libc::TIOCLINUX as u32);
        let tcgets = u64::from(libc::TCGETS as u32);
        assert_eq!(decide(&STRICT, libc::SYS_ioctl, &[0, tiocsti]), EPERM);
        assert_eq!(decide(&STRICT, libc::SYS_ioctl, &[0, tioclinux]), EPERM);
        // The kernel truncates the request to unsigned int.
        let high = (1 << 32) | tiocsti;
        assert_eq!(decide(&STRICT, libc::SYS_ioctl, &[0, high]), EPERM);
        let high = (0xdead_beef << 32) | tioclinux;
        assert_eq!(decide(&STRICT, libc::SYS_ioctl, &[0, high]), EPERM);
        assert_eq!(decide(&STRICT, libc::SYS_ioctl, &[0, tcgets]), RET_ALLOW);
    }

    fn socket(opts: &FilterOptions, family: u64, ty: i32, protocol: u64) -> u32 {
        decide(opts, libc::SYS_socket, &[family, c(ty), protocol])
    }

    #[test]
    fn socket_families() {
        let stream = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        let dgram = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK;
        for opts in [STRICT, WITH_UNIX] {
            for family in [libc::AF_INET, libc::AF_INET6] {
                assert_eq!(socket(&opts, c(family), stream, 0), RET_ALLOW);
                assert_eq!(socket(&opts, c(family), dgram, 0), RET_ALLOW);
                assert_eq!(socket(&opts, c(family), libc::SOCK_RAW, 0), EPERM);
                assert_eq!(socket(&opts, c(family), SOCK_PACKET, 0), EPERM);
            }
            let netlink = c(libc::AF_NETLINK);
            assert_eq!(socket(&opts, netlink, libc::SOCK_RAW, 0), RET_ALLOW);
            let audit = socket(&opts, netlink, libc::SOCK_RAW, NETLINK_AUDIT);
            assert_eq!(audit, EAFNOSUPPORT);
            for family in [c(libc::AF_PACKET), c(libc::AF_ALG), AF_VSOCK, 0, 0xffff] {
                assert_eq!(socket(&opts, family, stream, 0), EAFNOSUPPORT, "{family}");
            }
        }
        let unix = c(libc::AF_UNIX);
        assert_eq!(socket(&STRICT, unix, stream, 0), EAFNOSUPPORT);
        assert_eq!(socket(&STRICT, (1 << 32) | unix, stream, 0), EAFNOSUPPORT);
        assert_eq!(socket(&WITH_UNIX, unix, stream, 0), RET_ALLOW);
        assert_eq!(socket(&WITH_UNIX, unix, libc::SOCK_DGRAM, 0), RET_ALLOW);
        // High bits do not disguise a denied family as an allowed one either way.
        let packet = (c(libc::AF_INET) << 32) | c(libc::AF_PACKET);
        assert_eq!(socket(&WITH_UNIX, packet, stream, 0), EAFNOSUPPORT);
    }

    fn socketpair(opts: &FilterOptions, family: i32, ty: i32) -> u32 {
        decide(opts, libc::SYS_socketpair, &[c(family), c(ty), 0, 0])
    }

    #[test]
    fn socketpair_types() {
        for opts in [STRICT, WITH_UNIX] {
            for ty in [
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                libc::SOCK_DGRAM,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                libc::SOCK_RAW,
            ] {
                let datagram = ty == libc::SOCK_DGRAM || ty == libc::SOCK_RAW;
                let want = if datagram && !opts.allow_unix_sockets {
                    EPERM
                } else {
                    RET_ALLOW
                };
                assert_eq!(socketpair(&opts, libc::AF_UNIX, ty), want, "{ty}");
                assert_eq!(socketpair(&opts, libc::AF_INET, ty), EAFNOSUPPORT, "{ty}");
            }
            let nonblocking_dgram = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            let want = if opts.allow_unix_sockets {
                RET_ALLOW
            } else {
                EPERM
            };
            assert_eq!(socketpair(&opts, libc::AF_UNIX, nonblocking_dgram), want);
            // The family is an int: high bits neither hide AF_UNIX nor disguise another family.
            let high = (1 << 32) | c(libc::AF_UNIX);
            let args = [high, c(libc::SOCK_SEQPACKET), 0, 0];
            assert_eq!(decide(&opts, libc::SYS_socketpair, &args), RET_ALLOW);
            let disguised = (c(libc::AF_UNIX) << 32) | c(libc::AF_INET);
            let args = [disguised, c(libc::SOCK_STREAM), 0, 0];
            assert_eq!(decide(&opts, libc::SYS_socketpair, &args), EAFNOSUPPORT);
        }
    }

    #[test]
    fn personality_values() {
        for allowed in [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
            assert_eq!(
                decide(&STRICT, libc::SYS_personality, &[allowed]),
                RET_ALLOW
            );
        }
        for denied in [ADDR_NO_RANDOMIZE, 0x0400_0000, 0x40_0000] {
            assert_eq!(decide(&STRICT, libc::SYS_personality, &[denied]), EPERM);
        }
    }

    #[test]
    fn denied_syscalls_answer_eperm() {
        let mut denied = vec![
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_setns,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_acct,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_reboot,
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_sethostname,
            libc::SYS_setdomainname,
            libc::SYS_syslog,
            libc::SYS_quotactl,
            libc::SYS_open_by_handle_at,
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_move_mount,
            libc::SYS_open_tree,
            libc::SYS_mount_setattr,
            libc::SYS_lookup_dcookie,
            libc::SYS_vhangup,
            libc::SYS_nfsservctl,
            libc::SYS_fanotify_init,
        ];
        #[cfg(target_arch = "x86_64")]
        denied.extend([
            libc::SYS_iopl,
            libc::SYS_ioperm,
            libc::SYS_uselib,
            libc::SYS__sysctl,
            libc::SYS_kexec_file_load,
        ]);
        #[cfg(target_arch = "aarch64")]
        denied.push(294); // kexec_file_load
        for opts in [STRICT, WITH_UNIX] {
            for &syscall in &denied {
                assert_eq!(decide(&opts, syscall, &[]), EPERM, "syscall {syscall}");
            }
        }
    }

    /// Installs the real filter in a forked child and probes it. Each probe is chosen so that
    /// the answer without the filter differs from the filter's (bubblewrap's try-syscall idea).
    #[test]
    fn installed_filter_enforces() {
        const PROBES: usize = 12;
        let prog = build(&STRICT);
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let [read_end, write_end] = fds;

        // SAFETY: the child below only makes raw system calls and exits with _exit; it does not
        // allocate or take locks another thread of the test harness could hold.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let mut results = [0i32; PROBES + 1];
            match install(&prog) {
                // SAFETY: only raw syscalls with integer arguments or pointers to live locals.
                Ok(()) => unsafe { probe(write_end, &mut results[1..]) },
                Err(Error::Seccomp { source, .. }) => {
                    results[0] = source.raw_os_error().unwrap_or(-1);
                }
                Err(_) => results[0] = -1,
            }
            // SAFETY: writing a live local array to our own pipe, then leaving without running
            // the parent's atexit handlers or destructors.
            unsafe {
                libc::write(
                    write_end,
                    results.as_ptr().cast(),
                    std::mem::size_of_val(&results),
                );
                libc::_exit(0);
            }
        }

        // SAFETY: closing our copy of the write end so the read sees end of file.
        unsafe { libc::close(write_end) };
        let mut bytes = [0u8; 4 * (PROBES + 1)];
        // SAFETY: reading into a live local buffer of the stated size.
        let n = unsafe { libc::read(read_end, bytes.as_mut_ptr().cast(), bytes.len()) };
        let mut status = 0;
        // SAFETY: waiting for the child we forked, with a valid status pointer.
        unsafe {
            libc::close(read_end);
            libc::waitpid(pid, &mut status, 0);
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(n, bytes.len() as isize, "short report from the child");
        let got: Vec<i32> = bytes
            .chunks_exact(4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
            .collect();
        if got[0] == libc::ENOSYS {
            super::test_skip::skip("installed_filter_enforces: the kernel has no seccomp filters");
            return;
        }
        assert_eq!(got[0], 0, "install failed: errno {}", got[0]);
        let expected = [
            libc::EPERM,        // unshare(CLONE_NEWUSER)
            libc::EPERM,        // clone(CLONE_NEWUSER|SIGCHLD)
            0,                  // clone(SIGCHLD): a plain fork
            libc::ENOSYS,       // clone3
            libc::EAFNOSUPPORT, // socket(AF_PACKET)
            libc::EAFNOSUPPORT, // socket(AF_UNIX)
            libc::EPERM,        // socket(AF_INET, SOCK_PACKET)
            0,                  // socket(AF_INET, SOCK_STREAM)
            0,                  // socketpair(AF_UNIX, SOCK_STREAM)
            libc::EPERM,        // socketpair(AF_UNIX, SOCK_DGRAM): could send to host sockets
            libc::EPERM,        // ioctl(pipe, TIOCSTI)
            0,                  // socketpair(AF_UNIX, SOCK_SEQPACKET), as Rust's spawn makes
        ];
        assert_eq!(&got[1..], &expected[..]);
    }

    /// Runs in the forked child: raw syscalls only, results as errno (0 for success).
    ///
    /// # Safety
    /// Call only in a single-threaded child of `fork`, after the filter is installed.
    unsafe fn probe(pipe: libc::c_int, results: &mut [i32]) {
        fn errno(rc: c_long) -> i32 {
            if rc < 0 {
                io::Error::last_os_error().raw_os_error().unwrap_or(-1)
            } else {
                0
            }
        }
        let mut sv = [-1; 2];
        let byte = b'x';
        // SAFETY: the caller guarantees the context; every pointer passed is to a live local.
        unsafe {
            results[0] = errno(libc::syscall(
                libc::SYS_unshare,
                libc::CLONE_NEWUSER as libc::c_ulong,
            ));
            let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
            let rc = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
            if rc == 0 {
                libc::_exit(0);
            }
            results[1] = errno(rc);
            let rc = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
            if rc == 0 {
                libc::_exit(0);
            }
            results[2] = errno(rc);
            if rc > 0 {
                libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0);
            }
            results[3] = errno(libc::syscall(libc::SYS_clone3, 0, 0));
            results[4] = errno(libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).into());
            results[5] = errno(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).into());
            results[6] = errno(libc::socket(libc::AF_INET, SOCK_PACKET, 0).into());
            results[7] = errno(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0).into());
            let pair = libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr());
            results[8] = errno(pair.into());
            let pair = libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, sv.as_mut_ptr());
            results[9] = errno(pair.into());
            results[10] = errno(libc::ioctl(pipe, libc::TIOCSTI, &byte).into());
            let ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
            let pair = libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr());
            results[11] = errno(pair.into());
        }
    }
}
