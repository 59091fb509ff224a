//! Transparent capture's device: a TUN interface created inside the sandbox's own network
//! namespace during setup (the setup stage holds CAP_NET_ADMIN over that namespace only), given
//! an address and the default route, and handed to the supervisor, whose user-space TCP stack
//! answers every packet. Everything here runs before the seccomp filter and before the
//! capabilities are dropped; the command afterwards cannot reconfigure the interface.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// The interface's name inside the sandbox.
pub const NAME: &str = "rf0";
/// The sandbox's own address on the interface.
pub const SANDBOX_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The supervisor's end: the DNS server the sandbox's resolv.conf names.
pub const RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The prefix of both, and of the synthetic addresses names are given (198.18.0.0/15, the
/// benchmarking range of RFC 2544, which no real service uses).
pub const PREFIX_LEN: u8 = 15;
/// The interface's MTU; the supervisor's stack uses the same. No packet crosses a real link,
/// so it is as large as IPv4 allows (64 KiB segments: far fewer packets per byte).
pub const MTU: usize = 65520;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// The supervisor takes packets whose TCP or UDP checksum is left partial (the header before
/// each says so), as a virtio NIC would: the sandbox's kernel does not checksum what it sends.
const TUN_F_CSUM: libc::c_uint = 0x01;
/// Every packet read from or written to the device starts with a `virtio_net_hdr` of this
/// many bytes (the kernel's default size for it). The supervisor's stack marks the packets it
/// writes as carrying a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), as a local socket's
/// are: they cross no wire, so neither side spends time on TCP checksums.
pub const VNET_HDR_LEN: usize = 10;

fn name_into(ifr: &mut libc::ifreq) {
    for (d, s) in ifr.ifr_name.iter_mut().zip(NAME.bytes().chain([0])) {
        *d = s as libc::c_char;
    }
}

/// Opens `/dev/net/tun` (from the host's /dev, so before the sandbox's root replaces it) and
/// creates the interface in the current network namespace. The descriptor is non-blocking;
/// packets on it carry a [`VNET_HDR_LEN`]-byte header.
pub fn create() -> Result<OwnedFd> {
    let unavailable = |what: &str, source: io::Error| {
        Error::Setup(format!(
            "network.transparent needs a TUN device (/dev/net/tun) in the sandbox's network \
             namespace: {what}: {source}; turn network.transparent off, or make /dev/net/tun \
             usable (mode 0666, module tun)"
        ))
    };
    // SAFETY: a constant NUL-terminated path; the result is checked before it is owned.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(unavailable("open", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let tun = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    name_into(&mut ifr);
    ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads an ifreq, which ifr is.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &ifr) } < 0 {
        return Err(unavailable("TUNSETIFF", io::Error::last_os_error()));
    }
    // SAFETY: TUNSETOFFLOAD takes an integer argument.
    if unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            TUNSETOFFLOAD as _,
            TUN_F_CSUM as libc::c_ulong,
        )
    } < 0
    {
        return Err(unavailable("TUNSETOFFLOAD", io::Error::last_os_error()));
    }
    // Persistent within the namespace: the supervisor's close at the end of the run does not
    // unregister the device itself (tens of milliseconds of waiting for RCU on the run's exit
    // path); the kernel removes it with the namespace, in the background, once the last
    // reference to the namespace (this descriptor's) is gone.
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
        return Err(unavailable("TUNSETPERSIST", io::Error::last_os_error()));
    }
    Ok(tun)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the bytes are copied as they are.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Gives the interface its address, brings it up and makes it the default route.
pub fn configure() -> Result<()> {
    let err = |step: &'static str| {
        let source = io::Error::last_os_error();
        Error::Syscall { step, source }
    };
    // SAFETY: socket with integer arguments; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket for configuring rf0"));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(PREFIX_LEN)));
    let set = |req: libc::c_ulong, addr: Option<Ipv4Addr>, flags: bool| {
        // SAFETY: ifreq is plain old data; zeroed is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        name_into(&mut ifr);
        if let Some(a) = addr {
            ifr.ifr_ifru.ifru_addr = sockaddr(a);
        }
        if flags {
            ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: ifr is a valid ifreq for the SIOCSIF* request.
        unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &ifr) }
    };
    if set(libc::SIOCSIFADDR, Some(SANDBOX_ADDR), false) < 0 {
        return Err(err("set the address of rf0"));
    }
    if set(libc::SIOCSIFNETMASK, Some(mask), false) < 0 {
        return Err(err("set the netmask of rf0"));
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    name_into(&mut ifr);
    ifr.ifr_ifru.ifru_mtu = MTU as libc::c_int;
    // SAFETY: ifr is a valid ifreq for SIOCSIFMTU.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU as _, &ifr) } < 0 {
        return Err(err("set the MTU of rf0"));
    }
    if set(libc::SIOCSIFFLAGS, None, true) < 0 {
        return Err(err("bring up rf0"));
    }
    // The default route: everything not on lo goes to the supervisor.
    let mut dev = *b"rf0\0";
    // SAFETY: rtentry is plain old data; zeroed is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_flags = libc::RTF_UP;
    rt.rt_dev = dev.as_mut_ptr().cast();
    // SAFETY: SIOCADDRT reads an rtentry whose rt_dev points to a NUL-terminated name that
    // lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &rt) } < 0 {
        return Err(err("add the default route through rf0"));
    }
    Ok(())
}

/// The resolv.conf the sandbox sees in transparent mode.
pub fn resolv_conf() -> String {
    format!(
        "# ringfence: names are answered by the sandbox's supervisor\nnameserver {RESOLVER_ADDR}\n"
    )
}

/// Whether this user can open `/dev/net/tun`, which transparent capture needs (`doctor`). The
/// sandbox opens it with the same ids, so this answers for a run too.
pub fn available() -> std::result::Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(drop)
        .map_err(|e| format!("/dev/net/tun: {e}"))
}
