//! Destination hosts and srt's domain patterns, as every part of ringfence compares them: one
//! canonical spelling per destination, so that a policy entry cannot be bypassed by writing the
//! same host differently, and one matcher for `allowedDomains` / `deniedDomains` entries. The
//! proxy decides with these, and the shell analyser predicts the proxy with them. Pure functions.
//!
//! Host rules: lowercase; one trailing dot removed; internationalised names converted to punycode
//! (UTS 46); every IPv4 spelling that `inet_aton` accepts (`2130706433`, `0x7f.1`, `127.1`,
//! `0177.0.0.1`) read as the address it is; IPv4-mapped IPv6 literals read as IPv4. A name whose
//! last label looks numeric but is not a valid IPv4 address, or that has empty, oversized or
//! unusual labels, is malformed and denied.
//!
//! Pattern rules (srt's): `host` is that host only, `*.base` any strict subdomain of `base` but
//! not `base` itself, `*` every host (deny lists only), each with an optional `:port`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A destination host in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lowercase ASCII (punycode), no trailing dot.
    Name(String),
    /// An IP literal; IPv4-mapped IPv6 addresses are stored as IPv4.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// The canonical form of an IP address: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Normalises a host as a client wrote it (HTTP authority or SOCKS domain name), without a
/// port. IPv6 literals may be bracketed or not. Errors say why the name is refused.
pub fn normalize_host(raw: &str) -> Result<Host, String> {
    if raw.is_empty() {
        return Err("empty host name".into());
    }
    if raw.len() > 255 {
        return Err("host name longer than 255 bytes".into());
    }
    if let Some(b) = raw.bytes().find(|b| b.is_ascii_control() || *b == b' ') {
        return Err(format!("host name contains the byte 0x{b:02x}"));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "unbalanced '[' in host".to_string())?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(canonical_ip(IpAddr::V6(a))))
            .map_err(|_| format!("\"{inner}\" is not an IPv6 address"));
    }
    if raw.contains(':') {
        return raw
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(canonical_ip(IpAddr::V6(a))))
            .map_err(|_| "':' in a host name".to_string());
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() || trimmed.ends_with('.') {
        return Err("empty label in host name".into());
    }
    let ascii = if trimmed.is_ascii() && !has_punycode_label(trimmed) {
        trimmed.to_ascii_lowercase()
    } else {
        let a = idna::domain_to_ascii_strict(trimmed)
            .map_err(|_| "invalid internationalised host name".to_string())?;
        // The mapping can produce a trailing dot (e.g. a full-width one) or other oddities.
        if a.is_empty() || a.ends_with('.') || !a.is_ascii() {
            return Err("invalid internationalised host name".into());
        }
        a
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    let last = labels.last().copied().unwrap_or_default();
    if looks_numeric(last) {
        return parse_ipv4_any(&ascii)
            .map(|a| Host::Ip(IpAddr::V4(a)))
            .ok_or_else(|| format!("\"{raw}\" ends in a number but is not an IPv4 address"));
    }
    for label in &labels {
        if label.is_empty() {
            return Err("empty label in host name".into());
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes in host name".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("character {c:?} in host name"));
        }
    }
    if ascii.len() > 253 {
        return Err("host name longer than 253 bytes".into());
    }
    Ok(Host::Name(ascii))
}

fn has_punycode_label(host: &str) -> bool {
    host.split('.')
        .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"))
}

/// The WHATWG URL "ends in a number" test: a last label of decimal digits or `0x` + hex.
fn looks_numeric(label: &str) -> bool {
    if !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Every spelling `inet_aton` accepts: 1 to 4 parts, each decimal, octal (leading 0) or hex
/// (0x); the last part fills the remaining bytes. `None` for anything else, including the
/// bare `0x` that some parsers read as 0.
pub fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_ipv4_part(p)?);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if rest_bits < 32 && *last >= 1u64 << rest_bits {
        return None;
    }
    if *last > u64::from(u32::MAX) {
        return None;
    }
    let mut value: u32 = 0;
    for (i, &n) in head.iter().enumerate() {
        value |= (n as u32) << (24 - 8 * i as u32);
    }
    value |= *last as u32;
    Some(Ipv4Addr::from(value))
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 12 {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Splits `host:port`, `[v6]:port`, `[v6]` or `host` into the host and an optional port.
/// A port is 1 to 65535 in decimal without leading zeros. An unbracketed string with more
/// than one ':' is taken whole as the host (an IPv6 literal without a port).
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if s.starts_with('[') {
        let close = s
            .find(']')
            .ok_or_else(|| format!("\"{s}\": unbalanced '['"))?;
        let rest = &s[close + 1..];
        if rest.is_empty() {
            return Ok((&s[..=close], None));
        }
        let port = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("\"{s}\": unexpected text after ']'"))?;
        return Ok((&s[..=close], Some(parse_port(port)?)));
    }
    match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Ok((s, None)),
        Some((h, p)) => Ok((h, Some(parse_port(p)?))),
        None => Ok((s, None)),
    }
}

/// A decimal port from 1 to 65535, no sign, no leading zeros.
pub fn parse_port(p: &str) -> Result<u16, String> {
    let ok = !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && !p.starts_with('0');
    match p.parse::<u32>() {
        Ok(n) if ok && n <= 65535 => Ok(n as u16),
        _ => Err(format!("\"{p}\" is not a port number from 1 to 65535")),
    }
}

/// The host part of a domain pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every host (deny lists only).
    Any,
    /// `*.base`: strict subdomains of `base`.
    Subdomains(String),
    Exact(Host),
}

/// One compiled `allowedDomains` / `deniedDomains` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    /// The entry as written.
    pub entry: String,
    pub host: HostPattern,
    pub port: Option<u16>,
}

impl DomainPattern {
    /// Compiles an entry; `allow_any` permits `*` (deny lists). Errors say what is wrong.
    pub fn parse(entry: &str, allow_any: bool) -> Result<DomainPattern, String> {
        let (host, port) = split_host_port(entry)?;
        let host = if host == "*" {
            if !allow_any {
                return Err("\"*\" would allow every domain".into());
            }
            HostPattern::Any
        } else if let Some(base) = host.strip_prefix("*.") {
            match normalize_host(base)? {
                Host::Name(n) => HostPattern::Subdomains(n),
                Host::Ip(_) => return Err("a wildcard cannot apply to an IP address".into()),
            }
        } else {
            if host.contains('*') {
                return Err("'*' may only stand alone or start the entry as \"*.\"".into());
            }
            HostPattern::Exact(normalize_host(host)?)
        };
        Ok(DomainPattern {
            entry: entry.to_string(),
            host,
            port,
        })
    }

    /// Whether the pattern's host part matches `host` (any port).
    pub fn matches_host(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Subdomains(base), Host::Name(n)) => n
                .strip_suffix(base.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Subdomains(_), Host::Ip(_)) => false,
            (HostPattern::Exact(h), other) => h == other,
        }
    }

    /// Whether the pattern matches `host` on `port`.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.matches_host(host)
    }
}

/// What a pair of allow and deny lists says about a destination: deny wins, then allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainVerdict {
    Allowed(String),
    Denied(String),
    Unlisted,
}

/// The lists' answer for `host` on `port` (`None`: a port not known yet, which a deny entry
/// with a port does not cover and an allow entry with one does). Entries that do not compile
/// match nothing; the loaders refuse them before anything runs.
pub fn decide_domain(
    allowed: &[String],
    denied: &[String],
    host: &Host,
    port: Option<u16>,
) -> DomainVerdict {
    let hit = |list: &[String], any: bool, deny: bool| {
        list.iter()
            .filter_map(|e| DomainPattern::parse(e, any).ok())
            .find(|p| match port {
                Some(port) => p.matches(host, port),
                None => (!deny || p.port.is_none()) && p.matches_host(host),
            })
            .map(|p| p.entry)
    };
    if let Some(e) = hit(denied, true, true) {
        return DomainVerdict::Denied(e);
    }
    match hit(allowed, false, false) {
        Some(e) => DomainVerdict::Allowed(e),
        None => DomainVerdict::Unlisted,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }
    fn v4(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn canonical_forms() {
        let table: &[(&str, Host)] = &[
            ("example.com", name("example.com")),
            ("EXAMPLE.Com", name("example.com")),
            ("ALLOWED.COM.", name("allowed.com")),
            ("münchen.de", name("xn--mnchen-3ya.de")),
            ("XN--MNCHEN-3YA.de", name("xn--mnchen-3ya.de")),
            // Full-width letters map to ASCII under UTS 46.
            ("ｅｘａｍｐｌｅ.com", name("example.com")),
            // A Cyrillic 'а' look-alike is a different name, in punycode.
            ("аllowed.com", name("xn--llowed-2nf.com")),
            ("_srv.example.com", name("_srv.example.com")),
            ("127.0.0.1", v4("127.0.0.1")),
            ("2130706433", v4("127.0.0.1")),
            ("0x7f.1", v4("127.0.0.1")),
            ("0x7F000001", v4("127.0.0.1")),
            ("127.1", v4("127.0.0.1")),
            ("127.0.1", v4("127.0.0.1")),
            ("0177.0.0.1", v4("127.0.0.1")),
            ("0177.0.0.01", v4("127.0.0.1")),
            ("127.0.0.1.", v4("127.0.0.1")),
            ("2852039166", v4("169.254.169.254")),
            ("0xa9.0xfe.0xa9.0xfe", v4("169.254.169.254")),
            ("0251.0376.0251.0376", v4("169.254.169.254")),
            ("169.254.43518", v4("169.254.169.254")),
            ("0", v4("0.0.0.0")),
            ("[::1]", Host::Ip("::1".parse().unwrap())),
            ("::1", Host::Ip("::1".parse().unwrap())),
            ("[::ffff:127.0.0.1]", v4("127.0.0.1")),
            ("[::ffff:7f00:1]", v4("127.0.0.1")),
            ("[::ffff:169.254.169.254]", v4("169.254.169.254")),
            ("[2001:DB8::1]", Host::Ip("2001:db8::1".parse().unwrap())),
        ];
        for (raw, want) in table {
            assert_eq!(&normalize_host(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn malformed_and_ambiguous_names_are_refused() {
        for raw in [
            "",
            ".",
            "example.com..",
            "a..b",
            ".example.com",
            "allowed.com@evil.com",
            "evil.com/allowed.com",
            "evil.com\0.allowed.com",
            "evil.com allowed.com",
            "evil.com\tallowed.com",
            "evil.com%00.allowed.com",
            "evil.com\\allowed.com",
            "256.0.0.1",
            "1.2.3.4.5",
            "4294967296",
            "0x",
            "08.0.0.1",
            "1.2.3.0x",
            "example.123",
            "[::1",
            "[fe80::1%25eth0]",
            "[127.0.0.1]",
            "a:b",
            "xn--zz.com",
            "exa mple.com",
        ] {
            assert!(normalize_host(raw).is_err(), "{raw:?} was accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(normalize_host(&long).is_err());
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.com:443").unwrap(), ("a.com", Some(443)));
        assert_eq!(split_host_port("a.com").unwrap(), ("a.com", None));
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("[::1]", Some(80)));
        assert_eq!(split_host_port("[::1]").unwrap(), ("[::1]", None));
        assert_eq!(split_host_port("::1").unwrap(), ("::1", None));
        for bad in [
            "a.com:0",
            "a.com:65536",
            "a.com:080",
            "a.com:+80",
            "a.com:",
            "[::1]x",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
        // A port smuggled in front of another name is not a port.
        assert!(split_host_port("evil.com:443.allowed.com").is_err());
    }
}
