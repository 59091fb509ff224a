//! The standalone proxy with an external decider (`ringfence proxy --listen-fd N
//! --decider-fd M`), for hosts that run the workload elsewhere and swap srt's proxy-only mode
//! for ringfence's. Every request is decided by the decider ([`crate::decider`]); there is no
//! other policy source: the hosts that may be reached at all come from the decider's hello
//! (deny wins), and nothing goes upstream without an allow verdict for it.
//!
//! Plain-HTTP requests in absolute form only, one per connection: a CONNECT would be a tunnel
//! the decider cannot see into, so it is refused, as srt refuses tunnels it cannot terminate.
//! Each refusal carries `X-Deny-Reason` (`host_not_allowed`, `opaque_tunnel`, `misdirected`,
//! `bad_request`, `address_not_allowed`, `plaintext_header_set`, `decider`,
//! `decider_unavailable`). A request body goes upstream exactly as its framing says
//! (`Content-Length`, or one `chunked` encoding, relayed after its syntax is checked); nothing
//! the client sends after it.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use ringfence_policy::domains::{normalize_host, split_host_port, DomainPattern, Host};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::decider::{fold_header, has_control, Decider, Hello, Verdict, CREDENTIAL_HEADERS};
use crate::policy::{local_kind, AddrRange};

/// Private and shared address space a name is never followed to (as in srt's proxy-only mode);
/// an IP literal in the hello's allowlist is reached as written.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// The largest request head read.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 190;
const MAX_HOST_PATH: usize = 8 << 10;
/// Request-body bytes held for the decider at once, across all requests (as srt: two bodies of
/// the largest size a need_body may ask for); a need_body past it is refused.
const MAX_HELD: u64 = 2 * crate::decider::MAX_BODY;
/// How long a client may take to send its request head, or the part of a body the decider
/// asked for.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

static HELD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A reservation of body bytes under [`MAX_HELD`], given back when dropped.
struct Held(u64);

impl Held {
    fn take(n: u64) -> Option<Held> {
        use std::sync::atomic::Ordering;
        let mut cur = HELD.load(Ordering::SeqCst);
        loop {
            if cur + n > MAX_HELD {
                return None;
            }
            match HELD.compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(Held(n)),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Options of the gateway.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Let allow verdicts set headers on plain-HTTP requests (they travel in cleartext).
    pub plaintext_header_set: bool,
}

/// The hosts of the decider's hello, compiled.
pub struct Lists {
    allowed: Vec<DomainPattern>,
    denied: Vec<DomainPattern>,
}

impl Lists {
    /// Compiles the hello's lists; an entry ringfence cannot read is an error naming it.
    pub fn from_hello(h: &Hello) -> Result<Lists, String> {
        let compile = |list: &[String], any: bool| {
            list.iter()
                .map(|e| {
                    DomainPattern::parse(e, any).map_err(|m| format!("hello entry \"{e}\": {m}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Lists {
            allowed: compile(&h.allowed_domains, false)?,
            denied: compile(&h.denied_domains, true)?,
        })
    }

    fn allows(&self, host: &Host, port: u16) -> bool {
        !self.denied.iter().any(|p| p.matches(host, port))
            && self.allowed.iter().any(|p| p.matches(host, port))
    }
}

/// A listener handed in as a descriptor: TCP or a unix socket.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Takes over a listening socket (non-blocking from here on).
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Listener> {
        let tcp = std::net::TcpListener::from(fd);
        if tcp.local_addr().is_ok() {
            tcp.set_nonblocking(true)?;
            return Ok(Listener::Tcp(tokio::net::TcpListener::from_std(tcp)?));
        }
        let unix = std::os::unix::net::UnixListener::from(OwnedFd::from(tcp));
        unix.local_addr()?;
        unix.set_nonblocking(true)?;
        Ok(Listener::Unix(tokio::net::UnixListener::from_std(unix)?))
    }

    pub fn from_tcp(l: std::net::TcpListener) -> std::io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
    }
}

/// Serves until the decider's link dies; returns why.
pub async fn serve(listener: Listener, decider: Decider, lists: Lists, opts: Options) -> String {
    let ctx = Arc::new((decider.clone(), lists, opts));
    let accept = async {
        loop {
            let ctx = ctx.clone();
            match &listener {
                Listener::Tcp(l) => match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(async move { handle(s, &ctx.0, &ctx.1, &ctx.2).await });
                    }
                    Err(e) if crate::proxy::is_transient(&e) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    Err(e) => return format!("accepting: {e}"),
                },
                Listener::Unix(l) => match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(async move { handle(s, &ctx.0, &ctx.1, &ctx.2).await });
                    }
                    Err(e) if crate::proxy::is_transient(&e) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    Err(e) => return format!("accepting: {e}"),
                },
            }
        }
    };
    tokio::select! {
        why = decider.dead() => {
            // Requests in flight have their refusals; give them a moment to be written.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            format!("decider: {why}")
        }
        why = accept => why,
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Refused",
    }
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, status: u16, mark: &str, reason: &str) {
    let body = format!("{}\n", reason.replace(['\r', '\n'], " "));
    let head = format!(
        "HTTP/1.1 {status} {}\r\nX-Deny-Reason: {mark}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.write_all(body.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// One parsed request head.
struct Head {
    method: String,
    target: String,
    /// Header (name as sent, value), in order.
    headers: Vec<(String, String)>,
    /// Bytes after the head already read.
    rest: Vec<u8>,
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Head, (u16, String)> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err((431, "request head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| (400, format!("reading the request: {e}")))?;
        if n == 0 {
            return Err((400, "connection closed inside the request head".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err((400, "malformed request head".into())),
    }
    if req.version != Some(1) {
        return Err((400, "only HTTP/1.1 is served".into()));
    }
    let mut out = Vec::new();
    for h in req.headers.iter() {
        let v = std::str::from_utf8(h.value).map_err(|_| {
            (
                400,
                "request header the decider cannot be asked about".to_string(),
            )
        })?;
        if has_control(v) {
            return Err((
                400,
                "request header the decider cannot be asked about".into(),
            ));
        }
        out.push((h.name.to_string(), v.to_string()));
    }
    Ok(Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        headers: out,
        rest: buf[end..].to_vec(),
    })
}

/// `http://authority/path?query` → (authority, path-and-query).
fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let scheme = target.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &target[7..];
    let i = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(i);
    Some((authority, path))
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    decider: &Decider,
    lists: &Lists,
    opts: &Options,
) {
    let mut s = BufReader::new(s);
    let head = match tokio::time::timeout(CLIENT_TIMEOUT, read_head(&mut s)).await {
        Ok(Ok(h)) => h,
        Ok(Err((status, why))) => return refuse(&mut s, status, "bad_request", &why).await,
        Err(_) => {
            return refuse(&mut s, 408, "bad_request", "the request head took too long").await
        }
    };
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return refuse(
            &mut s,
            403,
            "opaque_tunnel",
            "this proxy does not tunnel CONNECTs it cannot inspect",
        )
        .await;
    }
    let Some((authority, target_rest)) = split_absolute(&head.target) else {
        return refuse(
            &mut s,
            400,
            "bad_request",
            "the request target must be an absolute http:// URI",
        )
        .await;
    };
    // Origin form: `?q` alone is `/?q`.
    let path_query = if target_rest.starts_with('/') {
        target_rest.to_string()
    } else {
        format!("/{target_rest}")
    };
    let path_query = path_query.as_str();
    if authority.contains('@') || !authority.is_ascii() {
        return refuse(
            &mut s,
            400,
            "bad_request",
            "the request target's host is not a plain ASCII host",
        )
        .await;
    }
    let Ok((raw_host, port)) = split_host_port(authority) else {
        return refuse(
            &mut s,
            400,
            "bad_request",
            "malformed host in the request target",
        )
        .await;
    };
    let port = port.unwrap_or(80);
    let host = match normalize_host(raw_host) {
        Ok(h) => h,
        Err(why) => {
            return refuse(
                &mut s,
                400,
                "bad_request",
                &format!("malformed host: {why}"),
            )
            .await
        }
    };
    // The Host header must name the same destination as the target.
    let host_headers: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str())
        .collect();
    let host_header = match host_headers.as_slice() {
        [one] => *one,
        [] => {
            return refuse(
                &mut s,
                400,
                "bad_request",
                "HTTP/1.1 request without a Host header",
            )
            .await
        }
        _ => return refuse(&mut s, 400, "bad_request", "more than one Host header").await,
    };
    let same = split_host_port(host_header)
        .ok()
        .and_then(|(h, p)| Some((normalize_host(h).ok()?, p.unwrap_or(80))))
        .is_some_and(|(h, p)| h == host && p == port);
    if !same {
        return refuse(
            &mut s,
            421,
            "misdirected",
            "the Host header names another host than the request target",
        )
        .await;
    }
    if !lists.allows(&host, port) {
        return refuse(
            &mut s,
            403,
            "host_not_allowed",
            "Connection blocked by network allowlist",
        )
        .await;
    }
    let encodings: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let chunked = match encodings.as_slice() {
        [] => false,
        [one] if one.trim().eq_ignore_ascii_case("chunked") => true,
        _ => {
            return refuse(
                &mut s,
                400,
                "bad_request",
                "a Transfer-Encoding other than one \"chunked\"",
            )
            .await
        }
    };
    let lengths: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let length: u64 = match lengths.as_slice() {
        [] => 0,
        [one] => match one.trim().parse() {
            Ok(n) => n,
            Err(_) => return refuse(&mut s, 400, "bad_request", "malformed Content-Length").await,
        },
        _ => return refuse(&mut s, 400, "bad_request", "more than one Content-Length").await,
    };
    if chunked && !lengths.is_empty() {
        return refuse(
            &mut s,
            400,
            "bad_request",
            "both Content-Length and Transfer-Encoding",
        )
        .await;
    }

    // The req frame.
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_query, ""),
    };
    let host_str = match &host {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    };
    if host_str.len() > MAX_HOST_PATH
        || host_header.len() > MAX_HOST_PATH
        || path.len() > MAX_HOST_PATH
    {
        return refuse(&mut s, 400, "bad_request", "request target too large").await;
    }
    let mut fields = Map::new();
    fields.insert("method".into(), head.method.clone().into());
    fields.insert("host".into(), host_str.into());
    fields.insert("port".into(), port.into());
    fields.insert("hostHeader".into(), host_header.into());
    fields.insert("path".into(), path.into());
    if !query.is_empty() {
        fields.insert("query".into(), query.into());
    }
    let mut hdrs = Map::new();
    for (n, v) in &head.headers {
        let n = n.to_ascii_lowercase();
        if n == "host" {
            continue;
        }
        let entry = hdrs.entry(n).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(v.clone().into());
        }
    }
    if !hdrs.is_empty() {
        fields.insert("headers".into(), Value::Object(hdrs));
    }

    let mut pre = Pre {
        buf: head.rest.clone(),
        at: 0,
    };
    // What of the body has been read already (framing included, for a chunked one), to go
    // upstream first; and where a chunked body stands.
    let mut raw = Vec::new();
    let mut chunks = ChunkState::default();
    let (id, mut verdict) = match decider.ask(fields).await {
        Ok(v) => v,
        Err(u) => return refuse(&mut s, 503, "decider_unavailable", &u.0).await,
    };
    if let Verdict::NeedBody { max } = verdict {
        let rx = match decider.expect_final(id) {
            Ok(rx) => rx,
            Err(u) => return refuse(&mut s, 503, "decider_unavailable", &u.0).await,
        };
        let want = if chunked { max } else { length.min(max) };
        let Some(_held) = Held::take(want) else {
            return refuse(
                &mut s,
                503,
                "decider_unavailable",
                "too many request bodies held for inspection",
            )
            .await;
        };
        let shown = if chunked {
            read_chunked_upto(&mut pre, &mut s, &mut chunks, &mut raw, max as usize).await
        } else {
            read_exact(&mut pre, &mut s, want as usize).await.map(|d| {
                raw.extend_from_slice(&d);
                (d, length > max)
            })
        };
        let (shown, cut) = match shown {
            Ok(v) => v,
            Err(e) => {
                return refuse(
                    &mut s,
                    400,
                    "bad_request",
                    &format!("reading the request body: {e}"),
                )
                .await
            }
        };
        verdict = match decider.body(id, rx, &shown, cut).await {
            Ok(v) => v,
            Err(u) => return refuse(&mut s, 503, "decider_unavailable", &u.0).await,
        };
    }
    let (set_headers, remove_headers, credential) = match verdict {
        Verdict::Deny { status, reason } => {
            let reason = reason.unwrap_or_else(|| "denied by the request decider".into());
            return refuse(&mut s, status, "decider", &reason).await;
        }
        Verdict::NeedBody { .. } => {
            return refuse(
                &mut s,
                503,
                "decider_unavailable",
                "request decider broke the protocol",
            )
            .await
        }
        Verdict::Allow {
            set_headers,
            remove_headers,
            credential,
        } => (set_headers, remove_headers, credential),
    };
    if !opts.plaintext_header_set && (!set_headers.is_empty() || credential.is_some()) {
        return refuse(
            &mut s,
            403,
            "plaintext_header_set",
            "the allow decision sets headers, and headers are not set on plain-HTTP requests unless --plaintext-header-set is given; nothing was forwarded",
        )
        .await;
    }

    // The headers that go upstream.
    let mut removed: Vec<String> = remove_headers.iter().map(|n| fold_header(n)).collect();
    removed.extend(HOP_BY_HOP.iter().map(|n| fold_header(n)));
    // And the ones the client's Connection header names (RFC 9110 7.6.1).
    for (n, v) in &head.headers {
        if n.eq_ignore_ascii_case("connection") {
            removed.extend(
                v.split(',')
                    .map(|t| fold_header(t.trim()))
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    removed.extend(set_headers.keys().map(|n| fold_header(n)));
    if credential.is_some() {
        removed.extend(CREDENTIAL_HEADERS.iter().map(|n| fold_header(n)));
    }
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, path_query);
    for (n, v) in &head.headers {
        if !removed.contains(&fold_header(n)) {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    for (n, values) in &set_headers {
        for v in values {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    if let Some((class, value)) = &credential {
        let github = class == "github" && matches!(&host, Host::Name(n) if n == "github.com");
        if github {
            out.push_str(&format!(
                "authorization: Basic {}\r\n",
                crate::decider::base64(format!("x-access-token:{value}").as_bytes())
            ));
        } else {
            out.push_str(&format!("authorization: Bearer {value}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");

    let mut upstream = match connect(&host, port).await {
        Ok(u) => u,
        Err((mark, why)) => return refuse(&mut s, 502, mark, &why).await,
    };
    if upstream.write_all(out.as_bytes()).await.is_err() {
        return refuse(&mut s, 502, "upstream", "writing to the upstream failed").await;
    }
    // Exactly the body its framing says; nothing the client sends after it.
    if upstream.write_all(&raw).await.is_err() {
        return;
    }
    if chunked {
        while !chunks.done {
            let mut piece = Vec::new();
            let r = chunk_piece(&mut pre, &mut s, &mut chunks, &mut piece, 64 << 10).await;
            if r.is_err() || upstream.write_all(&piece).await.is_err() {
                return;
            }
        }
    } else {
        let mut left = length - raw.len() as u64;
        while left > 0 {
            let n = left.min(64 << 10) as usize;
            let Ok(d) = read_exact(&mut pre, &mut s, n).await else {
                return;
            };
            if upstream.write_all(&d).await.is_err() {
                return;
            }
            left -= n as u64;
        }
    }
    let _ = tokio::io::copy(&mut upstream, s.get_mut()).await;
    let _ = s.get_mut().shutdown().await;
}

/// Body bytes read along with the request head, served before the client's stream.
struct Pre {
    buf: Vec<u8>,
    at: usize,
}

async fn read_some<S: AsyncRead + Unpin>(
    pre: &mut Pre,
    s: &mut BufReader<S>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    if pre.at < pre.buf.len() {
        let n = buf.len().min(pre.buf.len() - pre.at);
        buf[..n].copy_from_slice(&pre.buf[pre.at..pre.at + n]);
        pre.at += n;
        return Ok(n);
    }
    match tokio::time::timeout(CLIENT_TIMEOUT, s.read(buf)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client sent nothing for 30 s",
        )),
    }
}

/// Exactly `n` bytes of the body.
async fn read_exact<S: AsyncRead + Unpin>(
    pre: &mut Pre,
    s: &mut BufReader<S>,
    n: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match read_some(pre, s, &mut out[got..]).await? {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the body ended early",
                ))
            }
            k => got += k,
        }
    }
    Ok(out)
}

/// One CRLF-ended line of chunk framing, of at most `max` bytes.
async fn read_line<S: AsyncRead + Unpin>(
    pre: &mut Pre,
    s: &mut BufReader<S>,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if read_some(pre, s, &mut b).await? == 0 {
            return Err(bad("the body ended inside its chunk framing"));
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
        if line.len() > max {
            return Err(bad("chunk framing line too long"));
        }
    }
    if !line.ends_with(b"\r\n") || line[..line.len() - 2].contains(&b'\r') {
        return Err(bad("malformed line in a chunked body"));
    }
    Ok(line)
}

/// Where a chunked body stands: data bytes left in the current chunk, and whether the last
/// chunk and the trailers have been read.
#[derive(Default)]
struct ChunkState {
    left: u64,
    done: bool,
}

/// At a chunk boundary, reads the size line (and, for the last chunk, the trailers) into `raw`.
async fn chunk_boundary<S: AsyncRead + Unpin>(
    pre: &mut Pre,
    s: &mut BufReader<S>,
    st: &mut ChunkState,
    raw: &mut Vec<u8>,
) -> std::io::Result<()> {
    if st.done || st.left > 0 {
        return Ok(());
    }
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let line = read_line(pre, s, 4096).await?;
    raw.extend_from_slice(&line);
    let text = &line[..line.len() - 2];
    let size = text.split(|&b| b == b';').next().unwrap_or_default();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad("malformed chunk size"));
    }
    let size = u64::from_str_radix(&String::from_utf8_lossy(size), 16)
        .map_err(|_| bad("malformed chunk size"))?;
    if size > 0 {
        st.left = size;
        return Ok(());
    }
    let mut trailers = 0;
    loop {
        let line = read_line(pre, s, 4096).await?;
        trailers += line.len();
        if trailers > MAX_HEAD {
            return Err(bad("trailer section too large"));
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" {
            st.done = true;
            return Ok(());
        }
    }
}

/// The next piece of a chunked body: its framing and at most `cap` data bytes go to `raw`;
/// returns the data bytes. Empty once the body has ended.
async fn chunk_piece<S: AsyncRead + Unpin>(
    pre: &mut Pre,
    s: &mut BufReader<S>,
    st: &mut ChunkState,
    raw: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Vec<u8>> {
    chunk_boundary(pre, s, st, raw).await?;
    if st.done {
        return Ok(Vec::new());
    }
    let n = st.left.min(cap as u64) as usize;
    let data = read_exact(pre, s, n).await?;
    raw.extend_from_slice(&data);
    st.left -= n as u64;
    if st.left == 0 {
        let crlf = read_exact(pre, s, 2).await?;
        if crlf != b"\r\n" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "chunk data not followed by CRLF",
            ));
        }
        raw.extend_from_slice(&crlf);
    }
    Ok(data)
}

/// Up to `max` decoded bytes of a chunked body for the decider, and whether there was more.
async fn read_chunked_upto<S: AsyncRead + Unpin>(
    pre: &mut Pre,
    s: &mut BufReader<S>,
    st: &mut ChunkState,
    raw: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut shown = Vec::new();
    while !st.done && shown.len() < max {
        let cap = (max - shown.len()).min(64 << 10);
        shown.extend(chunk_piece(pre, s, st, raw, cap).await?);
    }
    // Full: more data follows unless the next chunk is the last.
    chunk_boundary(pre, s, st, raw).await?;
    Ok((shown, !st.done))
}

/// Connects to the destination: an IP literal as given (the hello allowed it by that literal),
/// a name only at addresses that are not this host's or a private network's.
async fn connect(host: &Host, port: u16) -> Result<TcpStream, (&'static str, String)> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(n) => tokio::net::lookup_host((n.as_str(), port))
            .await
            .map_err(|e| ("upstream", format!("resolving {n}: {e}")))?
            .collect(),
    };
    if let Host::Name(n) = host {
        let private: Vec<AddrRange> = PRIVATE
            .iter()
            .filter_map(|r| AddrRange::parse(r).ok())
            .collect();
        let refused = |ip: IpAddr| {
            let ip = canonical(ip);
            local_kind(ip).is_some() || private.iter().any(|r| r.contains(ip))
        };
        if let Some(a) = addrs.iter().find(|a| refused(a.ip())) {
            return Err((
                "address_not_allowed",
                format!(
                    "{n} resolves to {}, a host-local or private address",
                    a.ip()
                ),
            ));
        }
    }
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    Err(("upstream", last))
}

fn canonical(ip: IpAddr) -> IpAddr {
    ringfence_policy::domains::canonical_ip(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets() {
        assert_eq!(split_absolute("http://a.com/x?y"), Some(("a.com", "/x?y")));
        assert_eq!(split_absolute("HTTP://a.com:81"), Some(("a.com:81", "")));
        assert_eq!(split_absolute("http://a.com?q"), Some(("a.com", "?q")));
        assert_eq!(split_absolute("/x"), None);
        assert_eq!(split_absolute("https://a.com/"), None);
    }
}
