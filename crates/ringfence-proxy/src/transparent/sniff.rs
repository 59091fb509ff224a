//! The host a connection's first bytes name, if they name one: the server name of a TLS
//! ClientHello, or the Host header of an HTTP/1 request. Transparent capture refuses a
//! connection whose first bytes name another host than the one it was decided for.

/// What the first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Named {
    /// The bytes name this host (as written; the caller normalises it).
    Host(String),
    /// The bytes are not TLS or HTTP, or name no host.
    Nothing,
    /// A ClientHello or a request head has begun but is not complete yet.
    NeedMore,
    /// A ClientHello or request head that cannot be read: refused.
    Malformed,
}

/// The most bytes read before deciding (a ClientHello with post-quantum key shares spans
/// several segments; a request head is at most this).
pub(crate) const MAX_SNIFF: usize = 16 * 1024 + 5;

pub(crate) fn named_host(b: &[u8]) -> Named {
    if b.first() == Some(&0x16) {
        return client_hello(b);
    }
    if looks_like_http(b) {
        return http_host(b);
    }
    Named::Nothing
}

fn looks_like_http(b: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS
        .iter()
        .any(|m| b.starts_with(m) || (b.len() < m.len() && m.starts_with(b)))
}

fn http_host(b: &[u8]) -> Named {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if b.len() >= MAX_SNIFF {
            Named::Malformed
        } else {
            Named::NeedMore
        };
    };
    let head = &b[..end];
    let mut hosts = head.split(|&c| c == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&c| c == b':')?;
        line[..colon].eq_ignore_ascii_case(b"host").then(|| {
            String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string()
        })
    });
    let Some(host) = hosts.next() else {
        return Named::Nothing;
    };
    if hosts.next().is_some() {
        // Two Host headers: which one the server believes is not ours to guess.
        return Named::Malformed;
    }
    Named::Host(strip_port(&host).to_string())
}

/// `host:port` → `host`, `[v6]:port` → `[v6]`.
fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return match h.find(']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|c| c.is_ascii_digit()) => host,
        _ => h,
    }
}

fn client_hello(b: &[u8]) -> Named {
    if b.len() < 5 {
        return Named::NeedMore;
    }
    if b[1] != 3 {
        return Named::Malformed;
    }
    let record_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    // The handshake message may span records; the first record carries the SNI in practice,
    // but a large hello is read across records up to MAX_SNIFF.
    let mut hs = Vec::new();
    let mut i = 0;
    while i + 5 <= b.len() && b[i] == 0x16 {
        let len = usize::from(u16::from_be_bytes([b[i + 3], b[i + 4]]));
        let end = (i + 5 + len).min(b.len());
        hs.extend_from_slice(&b[i + 5..end]);
        if i + 5 + len > b.len() {
            break;
        }
        i += 5 + len;
        if hs.len() >= 4 {
            let need =
                4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if hs.len() >= need {
                break;
            }
        }
    }
    let _ = record_len;
    if hs.len() < 4 {
        return Named::NeedMore;
    }
    if hs[0] != 1 {
        return Named::Malformed;
    }
    let need = 4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
    if hs.len() < need {
        return if b.len() >= MAX_SNIFF {
            Named::Malformed
        } else {
            Named::NeedMore
        };
    }
    match server_name(&hs[4..need]) {
        Some(Some(name)) => Named::Host(name),
        Some(None) => Named::Nothing,
        None => Named::Malformed,
    }
}

/// The server_name extension of a ClientHello body: `Some(None)` when it has none, `None`
/// when the body cannot be read.
fn server_name(h: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(h);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let comp = usize::from(r.u8()?);
    r.take(comp)?;
    if r.0.is_empty() {
        return Some(None);
    }
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader(r.take(ext_len)?);
    let mut found = None;
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let body = exts.take(len)?;
        if typ == 0 {
            if found.is_some() {
                return None;
            }
            let mut e = Reader(body);
            let list = usize::from(e.u16()?);
            let mut list = Reader(e.take(list)?);
            while !list.0.is_empty() {
                let kind = list.u8()?;
                let n = usize::from(list.u16()?);
                let name = list.take(n)?;
                if kind == 0 {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(String::from_utf8(name.to_vec()).ok()?);
                }
            }
        }
    }
    Some(found)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
pub(crate) fn hello(sni: Option<&str>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let n = name.len() as u16;
        exts.extend_from_slice(&[0, 0]);
        exts.extend_from_slice(&(n + 5).to_be_bytes());
        exts.extend_from_slice(&(n + 3).to_be_bytes());
        exts.push(0);
        exts.extend_from_slice(&n.to_be_bytes());
        exts.extend_from_slice(name.as_bytes());
    }
    exts.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1, 0];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_server_name_of_a_client_hello() {
        let h = hello(Some("api.example.com"));
        assert_eq!(named_host(&h), Named::Host("api.example.com".into()));
        assert_eq!(named_host(&hello(None)), Named::Nothing);
        for cut in [1, 4, 9, h.len() - 1] {
            assert_eq!(named_host(&h[..cut]), Named::NeedMore, "cut at {cut}");
        }
        // The same hello split over two records.
        let hs = &h[5..];
        let (a, b) = hs.split_at(20);
        let mut two = vec![0x16, 3, 1, 0, a.len() as u8];
        two.extend_from_slice(a);
        two.extend_from_slice(&[0x16, 3, 1, 0, b.len() as u8]);
        two.extend_from_slice(b);
        assert_eq!(named_host(&two), Named::Host("api.example.com".into()));
        let mut bad = h.clone();
        bad[5] = 2; // not a ClientHello
        assert_eq!(named_host(&bad), Named::Malformed);
    }

    #[test]
    fn the_host_header_of_a_request() {
        let r = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: Api.Example.com:8080\r\n\r\n";
        assert_eq!(named_host(r), Named::Host("Api.Example.com".into()));
        assert_eq!(named_host(b"GET / HTTP/1.1\r\nHost: a"), Named::NeedMore);
        assert_eq!(named_host(b"GE"), Named::NeedMore);
        assert_eq!(
            named_host(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Named::Malformed
        );
        assert_eq!(named_host(b"SSH-2.0-OpenSSH_9\r\n"), Named::Nothing);
        assert_eq!(
            named_host(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Named::Host("[::1]".into())
        );
    }
}
