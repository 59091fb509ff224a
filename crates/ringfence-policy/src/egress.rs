//! Where allowed connections leave through: a parent (corporate) proxy from
//! `network.parentProxy` or the host's own `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`, and the
//! `NO_PROXY` rules that send some hosts direct. Pure logic: the environment is passed in.
//! The policy is always decided before any of this is consulted.

use std::net::IpAddr;

use crate::settings::ParentProxySettings;

/// A parent proxy's address and credentials, from `http://[user:pass@]host[:port]`. Its
/// `Debug` form shows no credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
    /// `user:password`, percent-decoded, when the URL carries them.
    credentials: Option<String>,
}

impl ProxyUrl {
    /// Parses a proxy URL as curl reads `HTTP_PROXY`: the scheme may be left out (`host:port`
    /// means `http://host:port`), the port defaults to 80. `https://` (TLS to the proxy) is
    /// refused: ringfence has no TLS client. Messages never repeat the credentials.
    pub fn parse(url: &str) -> Result<ProxyUrl, String> {
        let url = url.trim();
        let rest = match url.find("://") {
            Some(i) => {
                let scheme = url[..i].to_ascii_lowercase();
                match scheme.as_str() {
                    "http" => &url[i + 3..],
                    "https" => {
                        return Err(format!(
                            "\"{}\": a TLS connection to the parent proxy (https://) is not \
                             supported; use its http:// address",
                            redact(url)
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "\"{}\": only http:// parent proxies are supported",
                            redact(url)
                        ))
                    }
                }
            }
            None => url,
        };
        let authority = match rest.find(['/', '?', '#']) {
            Some(i) if rest[i..] == *"/" => &rest[..i],
            Some(_) => {
                return Err(format!(
                    "\"{}\": a proxy URL has no path; write http://host:port",
                    redact(url)
                ))
            }
            None => rest,
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("\"{}\": unclosed '['", redact(url)))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("\"{}\": expected ':' after ']'", redact(url)))?,
                ),
            };
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("\"{}\": not an IPv6 address in brackets", redact(url)))?;
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port =
            match port {
                None => 80,
                Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("\"{}\": the port must be from 1 to 65535", redact(url))
                })?,
            };
        if host.is_empty() {
            return Err(format!("\"{}\": no host", redact(url)));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        {
            return Err(format!("\"{}\": not a host name", redact(url)));
        }
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)
                    .ok_or_else(|| format!("\"{}\": bad %-escape in the user", redact(url)))?;
                let pass = percent_decode(pass)
                    .ok_or_else(|| format!("\"{}\": bad %-escape in the password", redact(url)))?;
                (!user.is_empty() || !pass.is_empty()).then(|| format!("{user}:{pass}"))
            }
        };
        Ok(ProxyUrl {
            host: host.to_ascii_lowercase(),
            port,
            credentials,
        })
    }

    /// The `Proxy-Authorization` value (`Basic ...`) when the URL carries credentials.
    pub fn authorization(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|c| format!("Basic {}", base64(c.as_bytes())))
    }

    /// `host:port` as it goes into a connect call (IPv6 bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL for logs and messages: credentials replaced by `***`.
    pub fn shown(&self) -> String {
        match self.credentials {
            Some(_) => format!("http://***@{}", self.authority()),
            None => format!("http://{}", self.authority()),
        }
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// `url` with any user information replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(char::from(T[((v >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `NO_PROXY` rules: `*`, host suffixes (`example.com` is the host and its subdomains,
/// `.example.com` and `*.example.com` the same), IP addresses and CIDR ranges. Ports in
/// entries are ignored, as srt and Go's httpproxy do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    suffixes: Vec<String>,
    ranges: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    pub fn parse(list: &str) -> NoProxy {
        let mut n = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                n.all = true;
                continue;
            }
            if let Some((a, len)) = entry.split_once('/') {
                // A malformed range matches nothing (a host name never contains '/').
                if let (Ok(a), Ok(len)) = (a.parse::<IpAddr>(), len.parse::<u8>()) {
                    if len <= if a.is_ipv4() { 32 } else { 128 } {
                        n.ranges.push((a, len));
                    }
                }
                continue;
            }
            let mut v = entry.to_ascii_lowercase();
            if let Some(inner) = v.strip_prefix('[') {
                if let Some((h, _)) = inner.split_once(']') {
                    v = h.to_string();
                }
            }
            if let Ok(ip) = v.parse::<IpAddr>() {
                n.ranges.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
                continue;
            }
            if let Some((h, p)) = v.rsplit_once(':') {
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    v = h.to_string();
                }
            }
            let v = v.strip_prefix('*').unwrap_or(&v).to_string();
            if !v.is_empty() && v != "." {
                n.suffixes.push(v);
            }
        }
        n
    }

    /// Whether `host` (a canonical host name or IP literal, IPv6 with or without brackets)
    /// is connected to directly. Loopback names and addresses always are.
    pub fn bypass(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        let h = h
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(&h);
        if h == "localhost" || h.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = h.parse::<IpAddr>() {
            let ip = canonical(ip);
            return ip.is_loopback()
                || self.all
                || self.ranges.iter().any(|(a, len)| in_range(ip, *a, *len));
        }
        if self.all {
            return true;
        }
        self.suffixes.iter().any(|s| match s.strip_prefix('.') {
            Some(base) => h == base || h.ends_with(s.as_str()),
            None => h == s || (h.ends_with(s.as_str()) && h[..h.len() - s.len()].ends_with('.')),
        })
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_range(ip: IpAddr, base: IpAddr, len: u8) -> bool {
    match (ip, canonical(base)) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The parent proxy a run uses, resolved from `network.parentProxy` and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProxy {
    /// For plain `http://` requests.
    pub http: Option<ProxyUrl>,
    /// For tunnels: CONNECT, SOCKS5 (any TCP). Falls back to `http`.
    pub https: Option<ProxyUrl>,
    pub no_proxy: NoProxy,
}

/// A parent proxy setting that cannot be used: `key` is the settings key or the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProxyError {
    pub key: String,
    pub message: String,
}

impl ParentProxy {
    /// srt's order: each field of `network.parentProxy`, else `HTTP_PROXY`/`http_proxy`
    /// (`HTTPS_PROXY`/`https_proxy`, then the HTTP proxy, for tunnels; `NO_PROXY`/`no_proxy`).
    /// Empty values count as unset. `None` when no proxy is configured at all. A value that
    /// cannot be used is an error naming where it came from, never skipped.
    pub fn resolve(
        cfg: Option<&ParentProxySettings>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ParentProxy>, ParentProxyError> {
        let pick = |set: Option<&String>, key: &str, vars: &[&str]| -> Option<(String, String)> {
            if let Some(v) = set {
                return Some((format!("network.parentProxy.{key}"), v.clone()));
            }
            vars.iter().find_map(|name| {
                env(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| ((*name).to_string(), v))
            })
        };
        let http = pick(
            cfg.and_then(|c| c.http.as_ref()),
            "http",
            &["HTTP_PROXY", "http_proxy"],
        );
        let https = pick(
            cfg.and_then(|c| c.https.as_ref()),
            "https",
            &["HTTPS_PROXY", "https_proxy"],
        );
        let no_proxy = pick(
            cfg.and_then(|c| c.no_proxy.as_ref()),
            "noProxy",
            &["NO_PROXY", "no_proxy"],
        );
        let parse = |v: Option<(String, String)>| -> Result<Option<ProxyUrl>, ParentProxyError> {
            match v {
                None => Ok(None),
                // An empty setting means "none" and does not fall back to the environment.
                Some((_, value)) if value.trim().is_empty() => Ok(None),
                Some((key, value)) => ProxyUrl::parse(&value)
                    .map(Some)
                    .map_err(|message| ParentProxyError { key, message }),
            }
        };
        let http = parse(http)?;
        let https = parse(https)?.or_else(|| http.clone());
        if http.is_none() && https.is_none() {
            return Ok(None);
        }
        Ok(Some(ParentProxy {
            http,
            https,
            no_proxy: NoProxy::parse(&no_proxy.map(|(_, v)| v).unwrap_or_default()),
        }))
    }

    /// The parent for a tunnel to `host`, or `None` to connect directly.
    pub fn for_tunnel(&self, host: &str) -> Option<&ProxyUrl> {
        if self.no_proxy.bypass(host) {
            return None;
        }
        self.https.as_ref()
    }

    /// The parent for a plain `http://` request to `host`, or `None` to connect directly.
    /// Only an HTTP proxy serves these (as curl does, HTTPS_PROXY alone leaves them direct).
    pub fn for_http(&self, host: &str) -> Option<&ProxyUrl> {
        if self.no_proxy.bypass(host) {
            return None;
        }
        self.http.as_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn proxy_urls() {
        let u = ProxyUrl::parse("http://proxy.corp:3128").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("proxy.corp", 3128));
        assert_eq!(u.authorization(), None);
        let u = ProxyUrl::parse("proxy.corp:8080").unwrap();
        assert_eq!(u.authority(), "proxy.corp:8080");
        assert_eq!(ProxyUrl::parse("http://p/").unwrap().port, 80);
        let u = ProxyUrl::parse("http://al%40ice:s%3Acret@[::1]:3128").unwrap();
        assert_eq!(u.authority(), "[::1]:3128");
        // base64("al@ice:s:cret")
        assert_eq!(u.authorization().unwrap(), "Basic YWxAaWNlOnM6Y3JldA==");
        assert_eq!(u.shown(), "http://***@[::1]:3128");
        assert_eq!(format!("{u:?}"), "http://***@[::1]:3128");
        assert_eq!(
            ProxyUrl::parse("http://u:p@h:1").unwrap().authorization(),
            Some("Basic dTpw".into())
        );
        for bad in [
            "https://proxy:3128",
            "socks5://proxy:1080",
            "http://proxy:0",
            "http://proxy:99999",
            "http://:3128",
            "http://proxy:3128/path",
            "http://pro xy:1",
            "http://u:%zz@h:1",
        ] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
        let e = ProxyUrl::parse("https://bob:hunter2@proxy:443").unwrap_err();
        assert!(e.contains("https://***@proxy:443"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn no_proxy_rules() {
        let n = NoProxy::parse(
            " corp.example, .internal ,*.dev.test:8080,10.0.0.0/8,[fd00::1],192.0.2.7, bad/x",
        );
        for direct in [
            "corp.example",
            "a.corp.example",
            "internal",
            "x.internal",
            "b.dev.test",
            "10.1.2.3",
            "[fd00::1]",
            "192.0.2.7",
            "localhost",
            "127.0.0.5",
            "[::1]",
            "CORP.example.",
        ] {
            assert!(n.bypass(direct), "{direct}");
        }
        for via in [
            "notcorp.example",
            "example",
            "11.0.0.1",
            "192.0.2.8",
            "github.com",
        ] {
            assert!(!n.bypass(via), "{via}");
        }
        assert!(NoProxy::parse("*").bypass("github.com"));
        assert!(!NoProxy::default().bypass("github.com"));
    }

    #[test]
    fn resolution_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(ParentProxy::resolve(None, env(&[])).unwrap(), None);
        assert_eq!(
            ParentProxy::resolve(None, env(&[("HTTP_PROXY", "")])).unwrap(),
            None
        );
        let p = ParentProxy::resolve(None, env(&[("http_proxy", "http://a:1")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.for_tunnel("x.com").unwrap().authority(), "a:1");
        assert_eq!(p.for_http("x.com").unwrap().authority(), "a:1");
        // HTTPS_PROXY alone: plain HTTP goes direct.
        let p = ParentProxy::resolve(None, env(&[("HTTPS_PROXY", "b:2"), ("NO_PROXY", "y.com")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.for_tunnel("x.com").unwrap().authority(), "b:2");
        assert_eq!(p.for_http("x.com"), None);
        assert_eq!(p.for_tunnel("y.com"), None);
        // The settings win field by field over the environment.
        let cfg = ParentProxySettings {
            http: None,
            https: Some("http://c:3".into()),
            no_proxy: Some("".into()),
        };
        let p = ParentProxy::resolve(
            Some(&cfg),
            env(&[("HTTP_PROXY", "http://a:1"), ("NO_PROXY", "x.com")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.for_tunnel("x.com").unwrap().authority(), "c:3");
        assert_eq!(p.for_http("x.com").unwrap().authority(), "a:1");
        // An unusable value names its source.
        let e = ParentProxy::resolve(None, env(&[("HTTPS_PROXY", "https://p:443")])).unwrap_err();
        assert_eq!(e.key, "HTTPS_PROXY");
        let cfg = ParentProxySettings {
            http: Some("ftp://p".into()),
            https: None,
            no_proxy: None,
        };
        let e = ParentProxy::resolve(Some(&cfg), env(&[])).unwrap_err();
        assert_eq!(e.key, "network.parentProxy.http");
    }
}
