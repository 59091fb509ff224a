//! The network policy as the proxy applies it: compiled allow and deny patterns (srt's syntax
//! and semantics: deny wins, `*.x` is any subdomain but not `x`, optional `:port`), the reasons
//! for deny entries, and the addresses a host name must not resolve to. Pure logic.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ringfence_policy::domains::{DomainPattern as Pattern, HostPattern};
use ringfence_policy::Policy;

use crate::host::{canonical_ip, normalize_host, Host};
use crate::Error;

/// What the policy says about one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An allowedDomains entry matched (and no deny entry did).
    Allow { rule: String },
    /// A deniedDomains entry matched (`rule`), or the host is malformed (`rule` is `None`).
    Deny {
        rule: Option<String>,
        reason: String,
    },
    /// In neither list: denied unless asking is enabled.
    Unlisted,
}

/// A list of domain patterns in allowedDomains syntax (for lists other than the allow and deny
/// lists, e.g. `tlsTerminate.excludeDomains`), matched exactly as those are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DomainList(Vec<Pattern>);

impl DomainList {
    pub(crate) fn parse(key: &'static str, entries: &[String]) -> Result<DomainList, Error> {
        entries
            .iter()
            .map(|e| {
                Pattern::parse(e, false).map_err(|message| Error::Entry {
                    key,
                    entry: e.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(DomainList)
    }

    pub(crate) fn matches(&self, host: &Host, port: u16) -> bool {
        self.0.iter().any(|p| p.matches(host, port))
    }
}

/// An address range (`10.0.0.0/8`), compared on canonical addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddrRange {
    pub(crate) entry: String,
    addr: IpAddr,
    prefix: u8,
}

impl AddrRange {
    pub(crate) fn parse(entry: &str) -> Result<AddrRange, String> {
        let (a, len) = match entry.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (entry, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| "not an IP address or CIDR range".to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length above {max}"))?,
            Some(_) => return Err("the prefix length must be a number".into()),
        };
        Ok(AddrRange {
            entry: entry.to_string(),
            addr: canonical_ip(addr),
            prefix: if addr.is_ipv6() && canonical_ip(addr).is_ipv4() {
                prefix.saturating_sub(96)
            } else {
                prefix
            },
        })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// The compiled network policy. Cheap to clone; replaced as a whole on a live update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetPolicy {
    allowed: Vec<Pattern>,
    denied: Vec<Pattern>,
    reasons: BTreeMap<String, String>,
    denied_addresses: Vec<AddrRange>,
    ask: bool,
    ask_timeout: Duration,
    /// `network.mitmProxy`: allowed connections to these hosts go to this unix socket.
    mitm: Option<Mitm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mitm {
    socket: std::path::PathBuf,
    domains: Vec<Pattern>,
}

impl NetPolicy {
    /// Compiles the network part of a merged policy. Errors name the key and the entry.
    pub fn from_policy(p: &Policy) -> Result<NetPolicy, Error> {
        Self::build(
            &p.allowed_domains,
            &p.denied_domains,
            &p.denied_domain_reasons,
            &p.denied_resolved_addresses,
            p.ask,
            p.ask_timeout_seconds
                .unwrap_or(ringfence_policy::ASK_TIMEOUT_SECONDS),
            p.mitm_proxy.as_ref(),
        )
    }

    /// Compiles the lists of one `network` section (srt's control-fd updates carry these).
    pub fn from_network(
        n: &ringfence_policy::NetworkSettings,
        ask: bool,
        ask_timeout: Duration,
    ) -> Result<NetPolicy, Error> {
        let mut p = Self::build(
            &n.allowed_domains,
            &n.denied_domains,
            &n.denied_domain_reasons.clone().unwrap_or_default(),
            n.denied_resolved_addresses.as_deref().unwrap_or_default(),
            ask && n.strict_allowlist != Some(true),
            0,
            n.mitm_proxy.as_ref(),
        )?;
        p.ask_timeout = ask_timeout;
        Ok(p)
    }

    fn build(
        allowed: &[String],
        denied: &[String],
        reasons: &BTreeMap<String, String>,
        addresses: &[String],
        ask: bool,
        ask_timeout_seconds: u64,
        mitm: Option<&ringfence_policy::MitmProxySettings>,
    ) -> Result<NetPolicy, Error> {
        let compile = |key: &'static str, list: &[String], any: bool| {
            list.iter()
                .map(|e| {
                    Pattern::parse(e, any).map_err(|message| Error::Entry {
                        key,
                        entry: e.clone(),
                        message,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let denied_addresses = addresses
            .iter()
            .map(|e| {
                AddrRange::parse(e).map_err(|message| Error::Entry {
                    key: "network.deniedResolvedAddresses",
                    entry: e.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mitm = match mitm {
            Some(m) => Some(Mitm {
                socket: m.socket_path.clone().into(),
                domains: compile("network.mitmProxy.domains", &m.domains, false)?,
            }),
            None => None,
        };
        Ok(NetPolicy {
            mitm,
            allowed: compile("network.allowedDomains", allowed, false)?,
            denied: compile("network.deniedDomains", denied, true)?,
            reasons: reasons.clone(),
            denied_addresses,
            ask,
            ask_timeout: Duration::from_secs(ask_timeout_seconds),
        })
    }

    /// The `deniedDomainReasons` text of a deniedDomains entry, if it has one.
    pub fn denied_domain_reason(&self, entry: &str) -> Option<&str> {
        if !self.denied.iter().any(|p| p.entry == entry) {
            return None;
        }
        self.reasons.get(entry).map(String::as_str)
    }

    /// The `network.mitmProxy` socket that connections to `host:port` go through, if any.
    /// Matched like allowedDomains entries (a `:port` in an entry limits it to that port).
    pub fn mitm_socket(&self, host: &Host, port: u16) -> Option<&std::path::Path> {
        let m = self.mitm.as_ref()?;
        m.domains
            .iter()
            .any(|p| p.matches(host, port))
            .then_some(m.socket.as_path())
    }

    /// Whether hosts in neither list are asked about (else they are denied).
    pub fn ask_enabled(&self) -> bool {
        self.ask
    }

    /// How long a connection waits for an answer before it is denied.
    pub fn ask_timeout(&self) -> Duration {
        self.ask_timeout
    }

    /// The same policy with another ask timeout.
    pub fn with_ask_timeout(mut self, timeout: Duration) -> NetPolicy {
        self.ask_timeout = timeout;
        self
    }

    /// Adds an allow entry (`host` or `host:port`), as after an "always" answer.
    pub fn allow(&mut self, host: &str, port: Option<u16>) -> Result<(), Error> {
        let entry = match (port, host.contains(':') && !host.starts_with('[')) {
            (Some(p), true) => format!("[{host}]:{p}"),
            (Some(p), false) => format!("{host}:{p}"),
            (None, true) => format!("[{host}]"),
            (None, false) => host.to_string(),
        };
        let p = Pattern::parse(&entry, false).map_err(|message| Error::Entry {
            key: "allow",
            entry: entry.clone(),
            message,
        })?;
        if !self.allowed.contains(&p) {
            self.allowed.push(p);
        }
        Ok(())
    }

    /// The policy's answer for a host as a client wrote it, before any resolution.
    pub fn decide(&self, host: &str, port: u16) -> Verdict {
        match normalize_host(host) {
            Ok(h) => self.decide_host(&h, port),
            Err(reason) => Verdict::Deny {
                rule: None,
                reason: format!("malformed host: {reason}"),
            },
        }
    }

    /// [`NetPolicy::decide`] for an already normalised host.
    pub fn decide_host(&self, host: &Host, port: u16) -> Verdict {
        if let Some(p) = self.denied.iter().find(|p| p.matches(host, port)) {
            let reason = self
                .reasons
                .get(&p.entry)
                .cloned()
                .unwrap_or_else(|| "host is on the deny list".to_string());
            return Verdict::Deny {
                rule: Some(p.entry.clone()),
                reason,
            };
        }
        if let Host::Ip(ip) = host {
            if let Some(r) = self.denied_addresses.iter().find(|r| r.contains(*ip)) {
                return Verdict::Deny {
                    rule: Some(r.entry.clone()),
                    reason: "address is in network.deniedResolvedAddresses".into(),
                };
            }
        }
        match self.allowed.iter().find(|p| p.matches(host, port)) {
            Some(p) => {
                // Host services (loopback, metadata, ...) only by an IP literal with its port.
                if let Host::Ip(ip) = host {
                    if local_kind(*ip).is_some() && p.port.is_none() {
                        return Verdict::Deny {
                            rule: Some(p.entry.clone()),
                            reason: format!(
                                "{} is a {}; allow it only with an explicit port, e.g. \"{}:{port}\"",
                                host,
                                local_kind(*ip).unwrap_or_default(),
                                host
                            ),
                        };
                    }
                }
                Verdict::Allow {
                    rule: p.entry.clone(),
                }
            }
            None => Verdict::Unlisted,
        }
    }

    /// The policy's answer for a name looked up through transparent capture's DNS server,
    /// which knows no port yet: denied only when a deny entry covers every port, allowed when
    /// an allow entry names the host on some port. The connection is decided again, with its
    /// port, when it is made.
    pub fn decide_name(&self, host: &Host) -> Verdict {
        if let Some(p) = self
            .denied
            .iter()
            .find(|p| p.port.is_none() && p.matches(host, 0))
        {
            let reason = self
                .reasons
                .get(&p.entry)
                .cloned()
                .unwrap_or_else(|| "host is on the deny list".to_string());
            return Verdict::Deny {
                rule: Some(p.entry.clone()),
                reason,
            };
        }
        match self
            .allowed
            .iter()
            .find(|p| p.matches(host, p.port.unwrap_or(0)))
        {
            Some(p) => Verdict::Allow {
                rule: p.entry.clone(),
            },
            None => Verdict::Unlisted,
        }
    }

    /// The host services the sandbox reaches at their own address: every allowedDomains
    /// entry that is a loopback IP literal with a port (`127.0.0.1:8080`, `[::1]:5432`) and
    /// that the policy allows as a whole (no deny entry overrides it), each address once, with
    /// the entry that names it. A name (`localhost:3000`) is not one: names that resolve to
    /// loopback are refused.
    pub fn host_services(&self) -> Vec<(SocketAddr, String)> {
        let mut out: Vec<(SocketAddr, String)> = Vec::new();
        for p in &self.allowed {
            let (HostPattern::Exact(Host::Ip(ip)), Some(port)) = (&p.host, p.port) else {
                continue;
            };
            if !ip.is_loopback() {
                continue;
            }
            let addr = SocketAddr::new(*ip, port);
            if out.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            if matches!(
                self.decide_host(&Host::Ip(*ip), port),
                Verdict::Allow { .. }
            ) {
                out.push((addr, p.entry.clone()));
            }
        }
        out
    }

    /// allowedDomains entries that name `localhost` (or a name under it): a name, which the
    /// proxy resolves and then refuses as loopback, and which gets no listener inside.
    pub fn localhost_entries(&self) -> Vec<String> {
        self.allowed
            .iter()
            .filter(|p| {
                matches!(&p.host, HostPattern::Exact(Host::Name(n))
                    if n == "localhost" || n.ends_with(".localhost"))
            })
            .map(|p| p.entry.clone())
            .collect()
    }

    /// Why a resolved address of an allowed host name must not be connected to, or `None`.
    /// `own` are this host's interface addresses.
    pub fn refuse_resolved(&self, ip: IpAddr, own: &[IpAddr]) -> Option<String> {
        let ip = canonical_ip(ip);
        if let Some(kind) = local_kind(ip) {
            return Some(kind.to_string());
        }
        if own.iter().any(|o| canonical_ip(*o) == ip) {
            return Some("address of this host".into());
        }
        if let Some(embedded) = embedded_ipv4(ip) {
            if let Some(kind) = local_kind(IpAddr::V4(embedded)) {
                return Some(format!("{kind} embedded in an IPv6 address"));
            }
            if own.iter().any(|o| canonical_ip(*o) == IpAddr::V4(embedded)) {
                return Some("address of this host embedded in an IPv6 address".into());
            }
        }
        if let Some(r) = self.denied_addresses.iter().find(|r| {
            r.contains(ip) || embedded_ipv4(ip).is_some_and(|v4| r.contains(IpAddr::V4(v4)))
        }) {
            return Some(format!("in network.deniedResolvedAddresses ({})", r.entry));
        }
        let as_host = Host::Ip(ip);
        if let Some(p) = self
            .denied
            .iter()
            .find(|p| matches!(p.host, HostPattern::Exact(_)) && p.matches(&as_host, 0))
        {
            return Some(format!("denied by network.deniedDomains ({})", p.entry));
        }
        None
    }
}

/// The kind of host-local or special address `ip` is, if it is one, also when it is carried
/// inside an IPv6 address (IPv4-mapped, -compatible, NAT64, 6to4).
pub fn local_kind(ip: IpAddr) -> Option<&'static str> {
    match canonical_ip(ip) {
        IpAddr::V4(a) => local_kind_v4(a),
        IpAddr::V6(a) => {
            local_kind_v6(a).or_else(|| embedded_ipv4(IpAddr::V6(a)).and_then(local_kind_v4))
        }
    }
}

fn local_kind_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback address")
    } else if o[0] == 0 {
        Some("unspecified address")
    } else if a == Ipv4Addr::new(169, 254, 169, 254)
        || a == Ipv4Addr::new(100, 100, 100, 200)
        || a == Ipv4Addr::new(192, 0, 0, 192)
    {
        Some("cloud metadata endpoint")
    } else if a.is_link_local() {
        Some("link-local address")
    } else if a.is_broadcast() {
        Some("broadcast address")
    } else if a.is_multicast() {
        Some("multicast address")
    } else if o[0] >= 240 {
        Some("reserved address")
    } else {
        None
    }
}

fn local_kind_v6(a: Ipv6Addr) -> Option<&'static str> {
    let seg = a.segments();
    if a.is_loopback() {
        Some("loopback address")
    } else if a.is_unspecified() {
        Some("unspecified address")
    } else if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("cloud metadata endpoint")
    } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
        Some("link-local address")
    } else if a.is_multicast() {
        Some("multicast address")
    } else {
        None
    }
}

/// The IPv4 address carried by an IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`,
/// `64:ff9b:1::/48`) or 6to4 (`2002::/16`) address. IPv4-mapped addresses are already IPv4
/// after [`canonical_ip`].
pub fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(a) = ip else { return None };
    let s = a.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn policy(allowed: &[&str], denied: &[&str]) -> NetPolicy {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NetPolicy::build(
            &s(allowed),
            &s(denied),
            &BTreeMap::new(),
            &[],
            false,
            60,
            None,
        )
        .unwrap()
    }

    fn short(v: &Verdict) -> &'static str {
        match v {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::Unlisted => "unlisted",
        }
    }

    #[test]
    fn names_are_decided_without_a_port_for_dns() {
        let p = NetPolicy::from_policy(&ringfence_policy::Policy {
            allowed_domains: vec!["*.ok.example".into(), "db.example:5432".into()],
            denied_domains: vec!["bad.ok.example".into(), "x.ok.example:443".into()],
            ..Default::default()
        })
        .unwrap();
        let name = |n: &str| normalize_host(n).unwrap();
        assert!(matches!(
            p.decide_name(&name("a.ok.example")),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            p.decide_name(&name("db.example")),
            Verdict::Allow { .. }
        ));
        // A deny entry with a port leaves the name resolvable (other ports may be allowed).
        assert!(matches!(
            p.decide_name(&name("x.ok.example")),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            p.decide_name(&name("bad.ok.example")),
            Verdict::Deny { .. }
        ));
        assert_eq!(p.decide_name(&name("other.example")), Verdict::Unlisted);
    }

    #[test]
    fn host_services_are_allowed_loopback_literals_with_a_port() {
        let p = policy(
            &[
                "127.0.0.1:8080",
                "127.1:8080",
                "[::1]:5432",
                "[::ffff:127.0.0.2]:9000",
                "127.0.0.1",
                "localhost:3000",
                "10.0.0.1:80",
                "127.0.0.1:7000",
                "example.com:443",
            ],
            &["127.0.0.1:7000"],
        );
        let got: Vec<(String, String)> = p
            .host_services()
            .into_iter()
            .map(|(a, e)| (a.to_string(), e))
            .collect();
        assert_eq!(p.localhost_entries(), ["localhost:3000"]);
        let want = [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:5432", "[::1]:5432"),
            ("127.0.0.2:9000", "[::ffff:127.0.0.2]:9000"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, e)| (a.to_string(), e.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn matching_table() {
        let p = policy(
            &[
                "allowed.com",
                "*.wild.org",
                "api.port.net:443",
                "1.2.3.4",
                "[2001:db8::1]:8443",
                "münchen.de",
                "127.0.0.1:8080",
                "127.0.0.2",
                "[::ffff:a9fe:a9fe]",
                "[64:ff9b::7f00:1]",
            ],
            &["bad.wild.org", "*:22"],
        );
        let table: &[(&str, u16, &str)] = &[
            ("allowed.com", 443, "allow"),
            ("ALLOWED.COM.", 80, "allow"),
            ("allowed.com.evil.com", 443, "unlisted"),
            ("evilallowed.com", 443, "unlisted"),
            ("sub.allowed.com", 443, "unlisted"),
            ("allowed.com@evil.com", 443, "deny"),
            ("allowed.com\0.evil.com", 443, "deny"),
            ("allowed.com", 22, "deny"),
            ("wild.org", 443, "unlisted"),
            ("a.wild.org", 443, "allow"),
            ("a.b.wild.org", 443, "allow"),
            ("A.WILD.ORG.", 443, "allow"),
            ("xwild.org", 443, "unlisted"),
            ("bad.wild.org", 443, "deny"),
            ("api.port.net", 443, "allow"),
            ("api.port.net", 80, "unlisted"),
            ("1.2.3.4", 80, "allow"),
            ("16909060", 80, "allow"),
            ("0x1020304", 80, "allow"),
            ("01.02.03.04", 80, "allow"),
            ("1.2.772", 80, "allow"),
            ("[2001:db8::1]", 8443, "allow"),
            ("[2001:DB8:0::1]", 8443, "allow"),
            ("[2001:db8::1]", 443, "unlisted"),
            ("xn--mnchen-3ya.de", 443, "allow"),
            ("MÜNCHEN.de", 443, "allow"),
            // Cyrillic 'а' in place of the Latin one.
            ("аllowed.com", 443, "unlisted"),
            ("127.0.0.1", 8080, "allow"),
            ("127.1", 8080, "allow"),
            ("2130706433", 8080, "allow"),
            ("[::ffff:127.0.0.1]", 8080, "allow"),
            ("127.0.0.1", 8081, "unlisted"),
            // A loopback literal allowed without a port stays refused, in every spelling.
            ("127.0.0.2", 80, "deny"),
            ("[::ffff:127.0.0.2]", 80, "deny"),
            ("169.254.169.254", 80, "deny"),
            ("2852039166", 80, "deny"),
            ("[64:ff9b::7f00:1]", 80, "deny"),
            ("[::127.0.0.2]", 80, "unlisted"),
        ];
        for (host, port, want) in table {
            assert_eq!(short(&p.decide(host, *port)), *want, "{host:?}:{port}");
        }
    }

    #[test]
    fn mitm_domains_route_by_pattern() {
        let m = ringfence_policy::MitmProxySettings {
            socket_path: "/run/m.sock".into(),
            domains: vec!["api.example.com".into(), "*.corp.test:8443".into()],
        };
        let p = NetPolicy::build(&[], &[], &BTreeMap::new(), &[], false, 1, Some(&m)).unwrap();
        let h = |s: &str| normalize_host(s).unwrap();
        let sock = Some(std::path::Path::new("/run/m.sock"));
        assert_eq!(p.mitm_socket(&h("API.example.com."), 443), sock);
        assert_eq!(p.mitm_socket(&h("x.corp.test"), 8443), sock);
        assert_eq!(p.mitm_socket(&h("x.corp.test"), 443), None);
        assert_eq!(p.mitm_socket(&h("corp.test"), 8443), None);
        assert_eq!(p.mitm_socket(&h("example.com"), 443), None);
        let bad = ringfence_policy::MitmProxySettings {
            socket_path: "/m".into(),
            domains: vec!["*".into()],
        };
        let e = NetPolicy::build(&[], &[], &BTreeMap::new(), &[], false, 1, Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("network.mitmProxy.domains"), "{e}");
    }

    #[test]
    fn deny_wins_and_reasons() {
        let mut reasons = BTreeMap::new();
        reasons.insert("evil.com".to_string(), "use the mirror".to_string());
        let p = NetPolicy::build(
            &["evil.com".into(), "*.ok.com".into()],
            &["evil.com".into(), "*".into()],
            &reasons,
            &[],
            false,
            60,
            None,
        )
        .unwrap();
        assert_eq!(
            p.decide("EVIL.com", 443),
            Verdict::Deny {
                rule: Some("evil.com".into()),
                reason: "use the mirror".into()
            }
        );
        assert_eq!(
            p.decide("a.ok.com", 443),
            Verdict::Deny {
                rule: Some("*".into()),
                reason: "host is on the deny list".into()
            }
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (allowed, denied, addrs, want) in [
            (vec!["*"], vec![], vec![], "network.allowedDomains: \"*\""),
            (
                vec!["a.com:0"],
                vec![],
                vec![],
                "network.allowedDomains: \"a.com:0\"",
            ),
            (vec!["*.1.2.3.4"], vec![], vec![], "\"*.1.2.3.4\""),
            (vec!["a*.com"], vec![], vec![], "\"a*.com\""),
            (
                vec![],
                vec!["x..com"],
                vec![],
                "network.deniedDomains: \"x..com\"",
            ),
            (
                vec![],
                vec![],
                vec!["10.0.0.0/40"],
                "network.deniedResolvedAddresses: \"10.0.0.0/40\"",
            ),
        ] {
            let e = NetPolicy::build(
                &s(&allowed),
                &s(&denied),
                &BTreeMap::new(),
                &s(&addrs),
                false,
                1,
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn resolved_addresses() {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = NetPolicy::build(
            &s(&["ok.com"]),
            &s(&["203.0.113.9"]),
            &BTreeMap::new(),
            &s(&["10.0.0.0/8", "fd12::/16"]),
            false,
            1,
            None,
        )
        .unwrap();
        let own: Vec<IpAddr> = vec!["192.168.1.5".parse().unwrap()];
        let refused = [
            "127.0.0.1",
            "127.5.6.7",
            "0.0.0.0",
            "169.254.169.254",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "192.168.1.5",
            "::ffff:192.168.1.5",
            "2002:c0a8:105::",
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "fd12:3456::1",
            "203.0.113.9",
        ];
        for a in refused {
            assert!(
                p.refuse_resolved(a.parse().unwrap(), &own).is_some(),
                "{a} was not refused"
            );
        }
        for a in [
            "93.184.215.14",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "192.168.1.6",
            "11.0.0.1",
        ] {
            assert_eq!(p.refuse_resolved(a.parse().unwrap(), &own), None, "{a}");
        }
    }

    #[test]
    fn allow_adds_an_entry() {
        let mut p = policy(&[], &[]);
        assert_eq!(p.decide("new.com", 443), Verdict::Unlisted);
        p.allow("new.com", Some(443)).unwrap();
        assert!(matches!(p.decide("new.com", 443), Verdict::Allow { .. }));
        assert_eq!(p.decide("new.com", 80), Verdict::Unlisted);
        p.allow("2001:db8::2", None).unwrap();
        assert!(matches!(
            p.decide("[2001:db8::2]", 1),
            Verdict::Allow { .. }
        ));
    }
}
