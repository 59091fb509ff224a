//! The stack's loop: packets from the TUN device into smoltcp, a listening socket made for
//! each new connection's first SYN (after the policy had its first say), bytes moved between
//! smoltcp's sockets and each connection's task, DNS answered in place.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{
    HardwareAddress, Icmpv4Packet, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet,
    TcpPacket, UdpPacket,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Notify};

use super::conn::{self, Cmd, Downstream, Link};
use super::dns::{self, Answer};
use super::{Addresses, Pool};
use crate::host::{normalize_host, Host};
use crate::policy::Verdict;
use crate::proxy::{ActiveGuard, Decision, DecisionRecord, Protocol, Proxy};

/// Socket buffers of one captured connection: towards the sandbox (downloads, where a larger
/// window keeps more 64 KiB segments in flight) and from it.
const TO_SANDBOX: usize = 1024 * 1024;
const FROM_SANDBOX: usize = 256 * 1024;
/// Largest chunk handed to a connection's task at once.
const CHUNK: usize = 64 * 1024;
/// Packets read from the device before the stack runs.
const BATCH: usize = 256;
/// Egress polls (each at most one segment per socket) in one wakeup.
const EGRESS_ROUNDS: usize = 64;
/// Most captured connections at once (each holds two socket buffers in the supervisor); a
/// SYN beyond that is reset and recorded.
const MAX_CONNS: usize = 1024;
/// A connection still not established after this long (its SYN lost, or never completed) is
/// forgotten.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Refused UDP and ICMP destinations remembered so that each is recorded once (a client
/// sends again and again); past this many the memory starts afresh.
const MAX_REFUSED_DATAGRAMS: usize = 4096;

struct Tun {
    fd: RawFd,
    queue: VecDeque<Vec<u8>>,
    mtu: usize,
    /// One packet's room, reused for every read and write.
    scratch: Vec<u8>,
}

/// The `virtio_net_hdr` before every packet on the device (see the device's set-up in
/// ringfence-linux). What the stack writes is marked `VIRTIO_NET_HDR_F_NEEDS_CSUM` with the
/// TCP or UDP checksum field's place: the kernel takes such a packet as checksummed by the
/// sender (a partial checksum, as from a local socket) and does not verify it.
const VNET_HDR_LEN: usize = ringfence_linux::tun::VNET_HDR_LEN;
const VNET_HDR_F_NEEDS_CSUM: u8 = 1;

/// The header for one IPv4 packet the stack wrote.
fn vnet_header(packet: &[u8], hdr: &mut [u8]) {
    hdr.fill(0);
    let (Some(&v), Some(&proto)) = (packet.first(), packet.get(9)) else {
        return;
    };
    let start = usize::from(v & 0x0f) * 4;
    let offset = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    if v >> 4 != 4 || packet.len() < start + offset + 2 {
        return;
    }
    hdr[0] = VNET_HDR_F_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&(start as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&(offset as u16).to_le_bytes());
}

struct Rx(Vec<u8>);
struct Tx<'a> {
    fd: RawFd,
    scratch: &'a mut Vec<u8>,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let total = VNET_HDR_LEN + len;
        if self.scratch.len() < total {
            self.scratch.resize(total, 0);
        }
        let buf = &mut self.scratch[..total];
        let r = f(&mut buf[VNET_HDR_LEN..]);
        let (hdr, packet) = buf.split_at_mut(VNET_HDR_LEN);
        vnet_header(packet, hdr);
        // A packet the device cannot take now is dropped; TCP sends it again.
        // SAFETY: write from a live buffer of `total` bytes to the device's descriptor.
        let _ = unsafe { libc::write(self.fd, buf.as_ptr().cast(), total) };
        r
    }
}

impl Device for Tun {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.queue.pop_front()?;
        Some((
            Rx(p),
            Tx {
                fd: self.fd,
                scratch: &mut self.scratch,
            },
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx {
            fd: self.fd,
            scratch: &mut self.scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        // Every packet that arrives was made by the sandbox's own kernel (nothing inside can
        // send raw packets) and crossed no wire: checksums are not verified. TCP and UDP ones
        // are not computed either: the header before each packet tells the kernel they are
        // valid. The IPv4 header's is (the kernel always checks it).
        c.checksum.ipv4 = phy::Checksum::Tx;
        c.checksum.tcp = phy::Checksum::None;
        c.checksum.udp = phy::Checksum::None;
        c
    }
}

impl Tun {
    /// Reads up to [`BATCH`] packets; `Ok(true)` when the device had no more.
    fn read(&mut self) -> io::Result<bool> {
        if self.scratch.len() < VNET_HDR_LEN + self.mtu {
            self.scratch.resize(VNET_HDR_LEN + self.mtu, 0);
        }
        for _ in 0..BATCH {
            let buf = &mut self.scratch;
            // SAFETY: read into a live buffer of the length passed.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(true),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Ok(true);
            }
            let n = n as usize;
            if n > VNET_HDR_LEN {
                self.queue.push_back(buf[VNET_HDR_LEN..n].to_vec());
            }
        }
        Ok(false)
    }
}

/// One captured connection, seen from the stack.
struct Conn {
    /// Bytes from the sandbox to the task; `None` once the sandbox's side has ended.
    to_task: Option<mpsc::Sender<Vec<u8>>>,
    from_task: mpsc::Receiver<Cmd>,
    pending: Vec<u8>,
    sent: usize,
    /// The upstream, once its task handed it over; `ready` while a read may find data.
    up: Option<Arc<Downstream>>,
    up_ready: bool,
    tuple: (SocketAddrV4, SocketAddrV4),
    created: Instant,
}

/// The first SYN of a connection: source and destination.
fn syn_of(p: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    if !tcp.syn() || tcp.ack() {
        return None;
    }
    let src: Ipv4Addr = ip.src_addr();
    let dst: Ipv4Addr = ip.dst_addr();
    Some((
        SocketAddrV4::new(src, tcp.src_port()),
        SocketAddrV4::new(dst, tcp.dst_port()),
    ))
}

/// What the stack does with a datagram that is neither TCP nor DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refused {
    /// UDP to a port other than 53: smoltcp answers it with ICMP port unreachable (a
    /// connected socket gets `ECONNREFUSED`, QUIC falls back to TCP).
    Udp,
    /// An ICMP message the sandbox's program asked for (an echo request, say): dropped
    /// unanswered.
    Icmp,
    /// An ICMP error the sandbox's kernel made itself (port unreachable for a DNS answer that
    /// came after its client had gone): dropped, and not the program's doing.
    IcmpError,
}

/// The kind, source and destination of a UDP datagram other than DNS, or of an ICMP message.
fn refused_datagram(p: &[u8]) -> Option<(Refused, SocketAddrV4, SocketAddrV4)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (ip.src_addr(), ip.dst_addr());
    match ip.next_header() {
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(ip.payload()).ok()?;
            (u.dst_port() != 53).then(|| {
                (
                    Refused::Udp,
                    SocketAddrV4::new(src, u.src_port()),
                    SocketAddrV4::new(dst, u.dst_port()),
                )
            })
        }
        IpProtocol::Icmp => {
            // Destination unreachable, source quench, redirect, time exceeded, parameter
            // problem: errors about other packets.
            let error = Icmpv4Packet::new_checked(ip.payload())
                .is_ok_and(|m| matches!(u8::from(m.msg_type()), 3 | 4 | 5 | 11 | 12));
            let kind = if error {
                Refused::IcmpError
            } else {
                Refused::Icmp
            };
            Some((kind, SocketAddrV4::new(src, 0), SocketAddrV4::new(dst, 0)))
        }
        _ => None,
    }
}

struct State {
    proxy: Arc<Proxy>,
    pool: Pool,
    addrs: Addresses,
    notify: Arc<Notify>,
    conns: HashMap<SocketHandle, Conn>,
    tuples: HashSet<(SocketAddrV4, SocketAddrV4)>,
    /// Names already recorded as denied lookups (a resolver asks for A and AAAA, and again).
    denied_names: HashSet<String>,
    /// Refused UDP and ICMP destinations already recorded.
    refused: HashSet<(Refused, SocketAddrV4)>,
}

impl State {
    /// Records a refused UDP datagram or ICMP message, once per kind and destination.
    fn refuse_datagram(&mut self, kind: Refused, src: SocketAddrV4, dst: SocketAddrV4) {
        let (protocol, reason) = match kind {
            Refused::Udp => (
                Protocol::Udp,
                "UDP other than DNS is not carried (QUIC falls back to TCP)",
            ),
            Refused::Icmp => (Protocol::Icmp, "ICMP is not carried"),
            Refused::IcmpError => return,
        };
        if self.refused.len() >= MAX_REFUSED_DATAGRAMS {
            self.refused.clear();
        }
        if !self.refused.insert((kind, dst)) {
            return;
        }
        self.refuse(
            dst.ip().to_string(),
            dst.port(),
            src,
            protocol,
            Verdict::Deny {
                rule: None,
                reason: reason.into(),
            },
        );
    }

    fn refuse(&self, host: String, port: u16, peer: SocketAddrV4, p: Protocol, v: Verdict) {
        let (rule, reason) = match v {
            Verdict::Deny { rule, reason } => (rule, reason),
            _ => (None, "host is not on the allow list".to_string()),
        };
        self.proxy.record(&DecisionRecord {
            host,
            port,
            protocol: p,
            decision: Decision::Denied,
            rule,
            reason: Some(reason),
            asked: None,
            client: None,
            peer: Some(SocketAddr::V4(peer)),
            resolved: None,
            via: None,
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
        });
    }

    /// A new connection's SYN: refused at once (a reset) when the policy denies it without a
    /// question, else a listening socket for it and a task that decides and dials.
    fn on_syn(&mut self, sockets: &mut SocketSet<'_>, src: SocketAddrV4, dst: SocketAddrV4) {
        // A SYN sent again for a connection that has its socket already. A refused one is not
        // remembered: its reset cannot be lost on the way, so a second SYN is a new attempt.
        if self.tuples.contains(&(src, dst)) {
            return;
        }
        let ip = *dst.ip();
        let host = if self.pool.contains(ip) {
            match self.pool.name(ip) {
                Some(n) => n.to_string(),
                None => {
                    self.refuse(
                        ip.to_string(),
                        dst.port(),
                        src,
                        Protocol::Transparent,
                        Verdict::Deny {
                            rule: None,
                            reason: "a synthetic address that no name was given".into(),
                        },
                    );
                    return;
                }
            }
        } else {
            ip.to_string()
        };
        let policy = self.proxy.policy();
        let verdict = match normalize_host(&host) {
            Ok(h) => policy.decide_host(&h, dst.port()),
            Err(reason) => Verdict::Deny {
                rule: None,
                reason: format!("malformed host: {reason}"),
            },
        };
        match verdict {
            Verdict::Allow { .. } => {}
            Verdict::Unlisted if policy.ask_enabled() => {}
            v => return self.refuse(host, dst.port(), src, Protocol::Transparent, v),
        }
        if self.conns.len() >= MAX_CONNS {
            let reason = format!("more than {MAX_CONNS} captured connections at once");
            return self.refuse(
                host,
                dst.port(),
                src,
                Protocol::Transparent,
                Verdict::Deny { rule: None, reason },
            );
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; FROM_SANDBOX]),
            tcp::SocketBuffer::new(vec![0; TO_SANDBOX]),
        );
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(ip)),
            port: dst.port(),
        };
        if s.listen(endpoint).is_err() {
            return;
        }
        s.set_nagle_enabled(false);
        self.tuples.insert((src, dst));
        let handle = sockets.add(s);
        let (to_task, rx) = mpsc::channel(8);
        let (tx, from_task) = mpsc::channel(8);
        self.conns.insert(
            handle,
            Conn {
                to_task: Some(to_task),
                from_task,
                pending: Vec::new(),
                sent: 0,
                up: None,
                up_ready: false,
                tuple: (src, dst),
                created: Instant::now(),
            },
        );
        let link = Link {
            rx,
            tx,
            notify: self.notify.clone(),
        };
        let guard = ActiveGuard::new(self.proxy.clone());
        tokio::spawn(conn::run(guard, host, dst, src, link));
    }

    /// Moves bytes between the sockets and the tasks; forgets connections that are over.
    fn service(&mut self, sockets: &mut SocketSet<'_>) {
        let mut over = Vec::new();
        for (&h, c) in self.conns.iter_mut() {
            let s = sockets.get_mut::<tcp::Socket>(h);
            if let Some(tx) = c.to_task.clone() {
                while s.can_recv() {
                    match tx.try_reserve() {
                        Ok(permit) => {
                            let data = s.recv(|b| {
                                let n = b.len().min(CHUNK);
                                (n, b[..n].to_vec())
                            });
                            match data {
                                Ok(d) => permit.send(d),
                                Err(_) => break,
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(())) => break,
                        Err(mpsc::error::TrySendError::Closed(())) => {
                            c.to_task = None;
                            break;
                        }
                    }
                }
            }
            let ended = matches!(
                s.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
                    | tcp::State::Closed
            );
            if ended && !s.can_recv() {
                // The sandbox closed its side (or the connection is gone): end of stream.
                c.to_task = None;
            }
            loop {
                if c.sent == c.pending.len() {
                    if c.up.is_some() {
                        break;
                    }
                    match c.from_task.try_recv() {
                        Ok(Cmd::Data(v)) => {
                            c.pending = v;
                            c.sent = 0;
                        }
                        Ok(Cmd::Upstream(d)) => {
                            c.up = Some(d);
                            c.up_ready = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            s.close();
                            break;
                        }
                        Ok(Cmd::Abort) => {
                            s.abort();
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                    }
                }
                if !s.can_send() {
                    break;
                }
                match s.send_slice(&c.pending[c.sent..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c.sent += n,
                }
            }
            if let Some(d) = c.up.clone() {
                if d.readable.swap(false, Ordering::AcqRel) {
                    c.up_ready = true;
                }
                // Straight from the upstream into the send buffer, while it has room.
                while c.up_ready && s.can_send() {
                    let read = s.send(|room| match d.read.try_read(room) {
                        Ok(n) => (n, Ok(n)),
                        Err(e) => (0, Err(e)),
                    });
                    match read {
                        Ok(Ok(0)) => {
                            s.close();
                            c.up = None;
                            d.finish();
                        }
                        Ok(Ok(n)) => {
                            d.bytes.fetch_add(n as u64, Ordering::Relaxed);
                            continue;
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            c.up_ready = false;
                            d.drained.notify_one();
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Ok(Err(_)) => {
                            s.abort();
                            c.up = None;
                            d.finish();
                        }
                        Err(_) => {}
                    }
                    break;
                }
                // Commands after the hand-over: only an abort (a failed wait for readiness).
                if let Ok(Cmd::Abort) = c.from_task.try_recv() {
                    s.abort();
                    c.up = None;
                    d.finish();
                }
            }
            let stuck = matches!(s.state(), tcp::State::Listen | tcp::State::SynReceived)
                && c.created.elapsed() > HANDSHAKE_TIMEOUT;
            if stuck || matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                over.push(h);
            }
        }
        for h in over {
            if let Some(c) = self.conns.remove(&h) {
                self.tuples.remove(&c.tuple);
                if let Some(d) = c.up {
                    d.finish();
                }
            }
            sockets.remove(h);
        }
    }

    /// The answer to one DNS message.
    fn answer(&mut self, msg: &[u8], peer: SocketAddrV4) -> Option<Vec<u8>> {
        let Some(q) = dns::parse(msg) else {
            return dns::format_error(msg);
        };
        let policy = self.proxy.policy();
        let host = match normalize_host(&q.name) {
            Ok(h @ Host::Name(_)) => h,
            _ => return Some(dns::respond(&q, Answer::NxDomain)),
        };
        let verdict = policy.decide_name(&host);
        let name = host.to_string();
        let a = match verdict {
            Verdict::Allow { .. } => self.pool.assign(&name),
            Verdict::Unlisted if policy.ask_enabled() => self.pool.assign(&name),
            v => {
                if self.denied_names.insert(name.clone()) {
                    self.refuse(name, 53, peer, Protocol::Dns, v);
                }
                return Some(dns::respond(&q, Answer::NxDomain));
            }
        };
        Some(dns::respond(
            &q,
            match a {
                Some(ip) => Answer::Address(ip),
                None => Answer::ServFail,
            },
        ))
    }

    fn dns(&mut self, sockets: &mut SocketSet<'_>, h: SocketHandle) {
        let mut replies = Vec::new();
        {
            let s = sockets.get_mut::<udp::Socket>(h);
            while let Ok((data, meta)) = s.recv() {
                let peer = match meta.endpoint.addr {
                    IpAddress::Ipv4(a) => SocketAddrV4::new(a, meta.endpoint.port),
                };
                let data = data.to_vec();
                replies.push((data, peer, meta));
            }
        }
        for (data, peer, meta) in replies {
            if let Some(r) = self.answer(&data, peer) {
                let s = sockets.get_mut::<udp::Socket>(h);
                let _ = s.send_slice(&r, meta);
            }
        }
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most the 8 bytes of a live buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }
}

/// Serves the sandbox's TUN device `tun` (non-blocking) until it fails or the future is
/// dropped. Must be called within a tokio runtime.
pub async fn serve(proxy: Arc<Proxy>, tun: OwnedFd, addrs: Addresses) -> io::Result<()> {
    // SAFETY: the OwnedFd is a valid open descriptor moved into the AsyncFd, which owns it
    // (and nothing else closes it) for the AsyncFd's whole life.
    let afd = unsafe { AsyncFd::register_with_interest(tun, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    let mut dev = Tun {
        fd: afd.get_ref().as_raw_fd(),
        queue: VecDeque::new(),
        mtu: addrs.mtu,
        scratch: vec![0; VNET_HDR_LEN + addrs.mtu],
    };
    let start = Instant::now();
    let now = || smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64);
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = seed();
    let mut iface = Interface::new(config, &mut dev, now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(
            IpAddress::Ipv4(addrs.resolver),
            addrs.prefix_len,
        ));
    });
    // Every destination is this stack's own (any-IP through a default route via itself).
    iface
        .routes_mut()
        .add_default_ipv4_route(addrs.resolver)
        .map_err(|_| io::Error::other("the transparent stack's route table is full"))?;
    iface.set_any_ip(true);
    let mut sockets = SocketSet::new(Vec::new());
    let mut udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
    );
    udp_socket
        .bind(53)
        .map_err(|_| io::Error::other("binding the transparent DNS server"))?;
    let dns_handle = sockets.add(udp_socket);
    let mut st = State {
        pool: Pool::new(&addrs),
        addrs,
        proxy,
        notify: Arc::new(Notify::new()),
        conns: HashMap::new(),
        tuples: HashSet::new(),
        denied_names: HashSet::new(),
        refused: HashSet::new(),
    };
    let _ = st.addrs;
    loop {
        // One packet at a time, so that a new connection's socket exists before its SYN is
        // processed.
        while let Some(p) = dev.queue.front() {
            if let Some((src, dst)) = syn_of(p) {
                st.on_syn(&mut sockets, src, dst);
            } else if let Some((kind, src, dst)) = refused_datagram(p) {
                st.refuse_datagram(kind, src, dst);
                if kind != Refused::Udp {
                    dev.queue.pop_front();
                    continue;
                }
            }
            iface.poll_ingress_single(now(), &mut dev, &mut sockets);
        }
        st.dns(&mut sockets, dns_handle);
        // smoltcp sends at most one segment per socket per egress poll: poll until nothing
        // more goes out (bounded), refilling the sockets from the tasks in between, so that a
        // whole window leaves in one wakeup instead of one segment per wakeup.
        let mut more = true;
        for _ in 0..EGRESS_ROUNDS {
            st.service(&mut sockets);
            if matches!(
                iface.poll_egress(now(), &mut dev, &mut sockets),
                PollResult::None
            ) {
                more = false;
                break;
            }
        }
        st.service(&mut sockets);
        let delay = iface
            .poll_delay(now(), &sockets)
            .map_or(Duration::from_secs(1), |d| {
                Duration::from_micros(d.total_micros())
            });
        if more && delay.is_zero() {
            // More to send at once (the egress rounds ran out): take in what the device has
            // (acks open the window) and go round again, letting the tasks run first.
            dev.read()?;
            tokio::task::yield_now().await;
            continue;
        }
        let notify = st.notify.clone();
        tokio::select! {
            r = afd.readable() => {
                let mut guard = r?;
                if dev.read()? {
                    guard.clear_ready();
                }
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::proxy::{AskAnswer, AskQuery, Hooks};
    use crate::NetPolicy;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<DecisionRecord>>);
    impl Hooks for Recorded {
        fn record(&self, d: &DecisionRecord) {
            self.0.lock().unwrap().push(d.clone());
        }
        fn ask(&self, _: AskQuery) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
            Box::pin(async { AskAnswer::Deny })
        }
    }

    fn state(ask: bool) -> (State, Arc<Recorded>) {
        let p = ringfence_policy::Policy {
            allowed_domains: vec!["*.ok.example".into()],
            denied_domains: vec!["bad.ok.example".into()],
            ask,
            ..Default::default()
        };
        let hooks = Arc::new(Recorded::default());
        let addrs = Addresses {
            sandbox: Ipv4Addr::new(198, 18, 0, 1),
            resolver: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 15,
            mtu: 1500,
        };
        let st = State {
            proxy: Proxy::new(NetPolicy::from_policy(&p).unwrap(), hooks.clone()),
            pool: Pool::new(&addrs),
            addrs,
            notify: Arc::new(Notify::new()),
            conns: HashMap::new(),
            tuples: HashSet::new(),
            denied_names: HashSet::new(),
            refused: HashSet::new(),
        };
        (st, hooks)
    }

    #[test]
    fn written_packets_say_where_their_checksum_is() {
        let mut hdr = [0xffu8; VNET_HDR_LEN];
        let mut tcp = vec![0u8; 40];
        tcp[0] = 0x45;
        tcp[9] = 6;
        vnet_header(&tcp, &mut hdr);
        assert_eq!(hdr, [1, 0, 0, 0, 0, 0, 20, 0, 16, 0]);
        let mut udp = vec![0u8; 28];
        udp[0] = 0x45;
        udp[9] = 17;
        vnet_header(&udp, &mut hdr);
        assert_eq!(hdr, [1, 0, 0, 0, 0, 0, 20, 0, 6, 0]);
        // Too short for its own header, or another protocol: no checksum offload claimed.
        vnet_header(&tcp[..30], &mut hdr);
        assert_eq!(hdr, [0; VNET_HDR_LEN]);
        tcp[9] = 1;
        vnet_header(&tcp, &mut hdr);
        assert_eq!(hdr, [0; VNET_HDR_LEN]);
    }

    /// An IPv4 packet from 198.18.0.1 to 192.0.2.7 with `payload` of protocol `proto`.
    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[198, 18, 0, 1, 192, 0, 2, 7]);
        p.extend_from_slice(payload);
        let len = (p.len() as u16).to_be_bytes();
        p[2..4].copy_from_slice(&len);
        p
    }

    #[test]
    fn udp_other_than_dns_and_icmp_are_refused_and_recorded_once() {
        // UDP 40000 -> 443 (QUIC, say), and 40000 -> 53 (DNS, served).
        let quic = ipv4(17, &[0x9c, 0x40, 0x01, 0xbb, 0, 12, 0, 0, 1, 2, 3, 4]);
        let dns = ipv4(17, &[0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        let echo = ipv4(1, &[8, 0, 0, 0, 0, 1, 0, 1]);
        let unreachable = ipv4(1, &[3, 3, 0, 0, 0, 0, 0, 0]);
        let (kind, src, dst) = refused_datagram(&quic).unwrap();
        assert_eq!(kind, Refused::Udp);
        assert_eq!(src, "198.18.0.1:40000".parse().unwrap());
        assert_eq!(dst, "192.0.2.7:443".parse().unwrap());
        assert_eq!(refused_datagram(&dns), None);
        assert_eq!(refused_datagram(&echo).unwrap().0, Refused::Icmp);
        assert_eq!(
            refused_datagram(&unreachable).unwrap().0,
            Refused::IcmpError
        );
        let (mut st, hooks) = state(false);
        for p in [&quic, &quic, &echo, &unreachable, &echo] {
            let (kind, src, dst) = refused_datagram(p).unwrap();
            st.refuse_datagram(kind, src, dst);
        }
        let rec = hooks.0.lock().unwrap();
        assert_eq!(rec.len(), 2, "{rec:?}");
        assert_eq!(rec[0].protocol, Protocol::Udp);
        assert_eq!((rec[0].host.as_str(), rec[0].port), ("192.0.2.7", 443));
        assert_eq!(rec[1].protocol, Protocol::Icmp);
        assert!(rec.iter().all(|d| d.decision == Decision::Denied));
    }

    fn rcode(r: &[u8]) -> u8 {
        r[3] & 0x0f
    }

    #[test]
    fn dns_answers_from_the_policy_and_records_each_denied_name_once() {
        let (mut st, hooks) = state(false);
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 5353);
        let a = st
            .answer(&dns::query(1, "api.ok.example", 1), peer)
            .unwrap();
        assert_eq!(rcode(&a), 0);
        assert_eq!(&a[a.len() - 4..], &[198, 18, 1, 0]);
        assert_eq!(
            st.pool.name(Ipv4Addr::new(198, 18, 1, 0)),
            Some("api.ok.example")
        );
        for qtype in [1, 28, 1] {
            let r = st
                .answer(&dns::query(2, "bad.ok.example", qtype), peer)
                .unwrap();
            assert_eq!(rcode(&r), 3, "NXDOMAIN");
            let r = st
                .answer(&dns::query(3, "unlisted.example", qtype), peer)
                .unwrap();
            assert_eq!(rcode(&r), 3, "NXDOMAIN without asking enabled");
        }
        let rec = hooks.0.lock().unwrap();
        assert_eq!(rec.len(), 2, "{rec:?}");
        assert!(rec
            .iter()
            .all(|d| d.protocol == Protocol::Dns && d.decision == Decision::Denied));
        assert_eq!(rec[0].host, "bad.ok.example");
        assert_eq!(rec[0].rule.as_deref(), Some("bad.ok.example"));
    }

    #[test]
    fn with_asking_an_unlisted_name_gets_an_address_but_a_denied_one_does_not() {
        let (mut st, hooks) = state(true);
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 5353);
        let r = st.answer(&dns::query(1, "new.example", 1), peer).unwrap();
        assert_eq!(rcode(&r), 0);
        assert!(hooks.0.lock().unwrap().is_empty());
        let r = st
            .answer(&dns::query(1, "bad.ok.example", 1), peer)
            .unwrap();
        assert_eq!(rcode(&r), 3, "a denied name is never askable");
    }

    #[test]
    fn a_syn_the_policy_refuses_gets_no_socket_and_one_record() {
        let (mut st, hooks) = state(false);
        let mut sockets = SocketSet::new(Vec::new());
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 40000);
        // An address no name was given, and a literal the policy does not list.
        st.on_syn(
            &mut sockets,
            src,
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 9, 9), 443),
        );
        st.on_syn(
            &mut sockets,
            src,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80),
        );
        assert!(st.conns.is_empty() && st.tuples.is_empty());
        let rec = hooks.0.lock().unwrap();
        assert_eq!(rec.len(), 2);
        assert_eq!(rec[0].host, "198.18.9.9");
        assert_eq!(rec[1].host, "192.0.2.1");
        assert!(rec.iter().all(|d| d.protocol == Protocol::Transparent));
    }
}
