//! Transparent capture: the supervisor's end of the sandbox's TUN device. A user-space TCP/IP
//! stack (smoltcp) answers every packet the sandbox sends past its loopback: DNS queries on
//! port 53 are answered from the policy alone (an allowed or askable name gets a synthetic
//! address from a private pool, a denied one NXDOMAIN; nothing is forwarded to a resolver),
//! and each TCP connection is decided by name and port like a proxy request, dialled by the
//! proxy's own dialer (route, parent proxy, resolved-address check), and recorded. A TLS
//! server name or HTTP Host in the first bytes must name the host the connection was decided
//! for. UDP other than DNS and ICMP are refused and recorded; IPv6 is not routed to the
//! device at all.

mod conn;
mod dns;
mod sniff;
mod stack;

use std::collections::HashMap;
use std::net::Ipv4Addr;

pub use stack::serve;

/// Where the sandbox's end and the supervisor's end of the device are.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The sandbox's address on the device.
    pub sandbox: Ipv4Addr,
    /// The supervisor's address (the DNS server resolv.conf names).
    pub resolver: Ipv4Addr,
    /// The prefix both are in; synthetic addresses are taken from the rest of it.
    pub prefix_len: u8,
    pub mtu: usize,
}

/// Names and the synthetic addresses they were given, both ways; stable for the run.
#[derive(Debug)]
pub(crate) struct Pool {
    first: u32,
    last: u32,
    next: u32,
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl Pool {
    /// Addresses of `a`'s prefix above its first 256 (which hold the two ends of the device),
    /// without the broadcast address.
    pub(crate) fn new(a: &Addresses) -> Pool {
        let mask = u32::MAX << (32 - u32::from(a.prefix_len));
        let base = u32::from(a.sandbox) & mask;
        Pool {
            first: base + 256,
            last: (base | !mask) - 1,
            next: base + 256,
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
        }
    }

    /// The address of `name`, given one now if it has none; `None` when the pool is used up.
    pub(crate) fn assign(&mut self, name: &str) -> Option<Ipv4Addr> {
        if let Some(a) = self.by_name.get(name) {
            return Some(*a);
        }
        if self.next > self.last {
            return None;
        }
        let a = Ipv4Addr::from(self.next);
        self.next += 1;
        self.by_name.insert(name.to_string(), a);
        self.by_addr.insert(a, name.to_string());
        Some(a)
    }

    pub(crate) fn name(&self, a: Ipv4Addr) -> Option<&str> {
        self.by_addr.get(&a).map(String::as_str)
    }

    /// Whether `a` is in the synthetic range (given out or not).
    pub(crate) fn contains(&self, a: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(a))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_keep_their_address_and_the_pool_ends() {
        let a = Addresses {
            sandbox: Ipv4Addr::new(198, 18, 0, 1),
            resolver: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 23,
            mtu: 1500,
        };
        let mut p = Pool::new(&a);
        let x = p.assign("x.example").unwrap();
        assert_eq!(x, Ipv4Addr::new(198, 18, 1, 0));
        assert_eq!(p.assign("y.example").unwrap(), Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(p.assign("x.example").unwrap(), x);
        assert_eq!(p.name(x), Some("x.example"));
        assert!(p.contains(x) && !p.contains(a.resolver));
        for i in 0..253 {
            assert!(p.assign(&format!("n{i}.example")).is_some());
        }
        assert_eq!(p.assign("full.example"), None);
    }
}
