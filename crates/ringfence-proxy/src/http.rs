//! HTTP/1.1 proxying: CONNECT tunnels and absolute-form `http://` requests, parsed strictly.
//! A request that could be read two ways (both Content-Length and Transfer-Encoding, repeated
//! Content-Length, bare LF line ends, obsolete line folding, bytes not allowed in a header, a
//! Host header that disagrees with the target) is refused with 400 and never forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::host::{normalize_host, split_host_port, Host};
use crate::proxy::{ConnectError, Decision, DecisionRecord, Limits, Protocol, Proxy};
use crate::route::{authority, ReadHalf, Route, WriteHalf};

/// Read buffer of each side of an HTTP connection. Small: large bodies bypass it (splice), and
/// a gateway holds thousands of connections.
const BUF: usize = 16 * 1024;

/// Header fields that concern one connection only (RFC 9110 7.6.1), plus the proxy's own.
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

/// A refusal before anything was forwarded.
struct Reject {
    status: u16,
    message: String,
    /// A status phrase of the user's own (a `deniedDomainReasons` text) instead of the standard one.
    phrase: Option<String>,
}

fn reject(status: u16, message: impl Into<String>) -> Reject {
    Reject {
        status,
        message: message.into(),
        phrase: None,
    }
}

/// The 403 of a policy refusal: its phrase is the user's reason where there is one.
fn forbidden(message: String, refused: &crate::proxy::Refused) -> Reject {
    Reject {
        status: 403,
        phrase: refused
            .own_reason
            .then(|| crate::refusal::status_phrase(&refused.reason, "Forbidden")),
        message,
    }
}

/// Methods whose response repeats the request back, headers included: through a proxy that
/// may one day add credentials to requests, and for any cookie or token a client sends, that
/// hands to the page what it should never read. Refused for every host.
fn reflects_request(method: &str) -> bool {
    method.eq_ignore_ascii_case("TRACE") || method.eq_ignore_ascii_case("TRACK")
}

struct Head {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    fn connection_has(&self, token: &str) -> bool {
        self.all("connection").any(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

/// Reads one message head (up to and including the empty line). `Ok(None)` at a clean end of
/// input before any byte of a head.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, Reject> {
    let mut head = Vec::with_capacity(1024);
    let mut skipped = 0;
    loop {
        let room = limits.max_head_bytes.saturating_sub(head.len()) as u64 + 1;
        let start = head.len();
        let n = (&mut *r)
            .take(room)
            .read_until(b'\n', &mut head)
            .await
            .map_err(|e| reject(400, format!("reading the request: {e}")))?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(reject(400, "connection closed inside the request head"));
        }
        if head.len() > limits.max_head_bytes {
            return Err(reject(
                431,
                format!("request head larger than {} bytes", limits.max_head_bytes),
            ));
        }
        let line = &head[start..];
        if !line.ends_with(b"\r\n") {
            return Err(reject(400, "line not ended by CRLF"));
        }
        if line == b"\r\n" {
            if start == 0 {
                // Tolerate a stray CRLF between requests (RFC 9112 2.2), a few times.
                head.clear();
                skipped += 1;
                if skipped > 4 {
                    return Err(reject(400, "empty lines instead of a request"));
                }
                continue;
            }
            return Ok(Some(head));
        }
        if line[..line.len() - 2].contains(&b'\r') {
            return Err(reject(400, "bare CR in the request head"));
        }
    }
}

fn parse_request(buf: &[u8], limits: &Limits) -> Result<Head, Reject> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() => {}
        Ok(_) => return Err(reject(400, "malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(
                431,
                format!("more than {} header fields", limits.max_headers),
            ))
        }
        Err(e) => return Err(reject(400, format!("malformed request: {e}"))),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(reject(400, "malformed request line"));
    };
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
    })
}

/// The body framing of a request or response, refusing ambiguous combinations.
fn framing(head: &Head, is_response: bool) -> Result<Framing, String> {
    let te: Vec<&[u8]> = head.all("transfer-encoding").collect();
    let cl: Vec<&[u8]> = head.all("content-length").collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if !te.is_empty() {
        if head.minor == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 message".into());
        }
        let value = String::from_utf8_lossy(te[te.len() - 1]).trim().to_string();
        if te.len() == 1 && value.eq_ignore_ascii_case("chunked") {
            return Ok(Framing::Chunked);
        }
        if is_response
            && value
                .rsplit(',')
                .next()
                .is_some_and(|last| !last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Close);
        }
        return Err("unsupported Transfer-Encoding (only \"chunked\" alone)".into());
    }
    match cl.as_slice() {
        [] => Ok(if is_response {
            Framing::Close
        } else {
            Framing::None
        }),
        [v] if !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit) => {
            let n: u64 = String::from_utf8_lossy(v)
                .parse()
                .map_err(|_| "invalid Content-Length".to_string())?;
            Ok(Framing::Length(n))
        }
        [_] => Err("invalid Content-Length".into()),
        _ => Err("more than one Content-Length".into()),
    }
}

/// The user name and password of `Proxy-Authorization: Basic ...`, if any.
fn basic_credentials(head: &Head) -> Option<(Vec<u8>, Vec<u8>)> {
    let v = head.all("proxy-authorization").next()?;
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, cred) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(cred.trim())?;
    let colon = raw.iter().position(|&b| b == b':')?;
    Some((raw[..colon].to_vec(), raw[colon + 1..].to_vec()))
}

/// `407`: the gateway knows its clients, and this request named none of them.
async fn auth_required<W: AsyncWrite + Unpin>(w: &mut W) {
    let body = "ringfence: proxy authentication required: give your client name and token as the proxy user name and password\n";
    let head = format!(
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"ringfence\"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// The proxy user name from `Proxy-Authorization: Basic ...`, if any.
fn client_identity(head: &Head) -> Option<String> {
    let v = head.all("proxy-authorization").next()?;
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, cred) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(cred.trim())?;
    let text = String::from_utf8(raw).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.escape_debug().to_string())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Writes an error response and ends the connection. `blocked` marks a policy decision.
async fn respond<W: AsyncWrite + Unpin>(w: &mut W, status: u16, message: &str, blocked: bool) {
    respond_with(w, status, None, message, blocked).await;
}

/// [`respond`] with a status phrase of its own (already cleaned by `refusal::status_phrase`).
async fn respond_with<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    phrase: Option<&str>,
    message: &str,
    blocked: bool,
) {
    let body = format!("ringfence: {}\n", message.replace(['\r', '\n'], " "));
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        phrase.unwrap_or(reason_phrase(status)),
        body.len()
    );
    if blocked {
        head.push_str("X-Proxy-Error: blocked-by-ringfence\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// After a refusal on a connection that may still carry a body the client is sending: reads
/// and drops what comes for a while, so that closing with unread input does not reset the
/// connection before the client has read the answer.
async fn linger<R: AsyncRead + Unpin>(r: &mut R) {
    let drain = async {
        let mut buf = vec![0u8; BUF];
        let mut total = 0usize;
        while total < 8 << 20 {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

/// An upstream connection kept between requests of one client connection.
struct Upstream {
    key: (Host, u16, Route),
    addr: Option<SocketAddr>,
    r: BufReader<ReadHalf>,
    w: WriteHalf,
}

/// What the record of one request needs besides the counts.
struct Ctx<'a> {
    proxy: &'a Proxy,
    peer: SocketAddr,
    client: Option<String>,
    started: Instant,
    /// How the connection left, once it did (see [`Route::via`]).
    via: std::sync::Mutex<Option<String>>,
}

impl Ctx<'_> {
    fn set_via(&self, via: Option<String>) {
        if let Ok(mut v) = self.via.lock() {
            *v = via;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        host: String,
        port: u16,
        protocol: Protocol,
        decision: Decision,
        rule: Option<String>,
        reason: Option<String>,
        asked: Option<crate::AskAnswer>,
        resolved: Option<SocketAddr>,
        error: Option<String>,
        bytes: (u64, u64),
    ) {
        self.proxy.record(&DecisionRecord {
            host,
            port,
            protocol,
            decision,
            rule,
            reason,
            asked,
            client: self.client.clone(),
            peer: Some(self.peer),
            resolved,
            via: self.via.lock().ok().and_then(|v| v.clone()),
            error,
            bytes_up: bytes.0,
            bytes_down: bytes.1,
            duration: self.started.elapsed(),
        });
    }
}

/// Serves one client connection; `known` is its identity when the connection established it
/// (a TLS client certificate), and then no Proxy-Authorization is asked for.
pub(crate) async fn serve(
    proxy: &Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    known: Option<String>,
) {
    let limits = proxy.limits;
    let (r, mut cw) = stream.into_split();
    let mut cr = BufReader::with_capacity(BUF, r);
    let mut upstream: Option<Upstream> = None;
    loop {
        // Between requests a keep-alive connection may stay idle for a while, and then ends
        // quietly; once a request starts, its head must arrive in time.
        match tokio::time::timeout(limits.idle_timeout, cr.fill_buf()).await {
            Ok(Ok(b)) if !b.is_empty() => {}
            _ => return,
        }
        let head =
            match tokio::time::timeout(limits.head_timeout, read_head(&mut cr, &limits)).await {
                Ok(Ok(Some(h))) => h,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => return respond(&mut cw, e.status, &e.message, false).await,
                Err(_) => return respond(&mut cw, 400, "no complete request in time", false).await,
            };
        let head = match parse_request(&head, &limits) {
            Ok(h) => h,
            Err(e) => return respond(&mut cw, e.status, &e.message, false).await,
        };
        let client = match proxy.clients() {
            _ if known.is_some() => known.clone(),
            None => client_identity(&head),
            Some(clients) => {
                let named = basic_credentials(&head)
                    .and_then(|(u, p)| clients.authenticate(&u, &p).map(|c| c.name.clone()));
                match named {
                    Some(n) => Some(n),
                    None => {
                        let (host, port) = match split_host_port(&head.target) {
                            Ok((h, p)) if head.method == "CONNECT" => (h.to_string(), p),
                            _ => (head.target.clone(), None),
                        };
                        let protocol = if head.method == "CONNECT" {
                            Protocol::Connect
                        } else {
                            Protocol::Http
                        };
                        proxy.record(&crate::proxy::DecisionRecord::unauthenticated(
                            host.escape_debug().to_string(),
                            port.unwrap_or(0),
                            protocol,
                            peer,
                        ));
                        return auth_required(&mut cw).await;
                    }
                }
            }
        };
        let ctx = Ctx {
            proxy,
            peer,
            client,
            started: Instant::now(),
            via: std::sync::Mutex::new(None),
        };
        if head.method == "CONNECT" {
            drop(upstream.take());
            return connect(ctx, head, cr, cw).await;
        }
        match forward(&ctx, &head, &mut cr, &mut cw, &mut upstream).await {
            Ok(true) => continue,
            Ok(false) => return,
            Err(e) => {
                let blocked = e.status == 403 || e.status == 405;
                respond_with(&mut cw, e.status, e.phrase.as_deref(), &e.message, blocked).await;
                return linger(&mut cr).await;
            }
        }
    }
}

/// CONNECT: decide, connect, answer 200, then relay bytes both ways.
async fn connect(ctx: Ctx<'_>, head: Head, cr: BufReader<OwnedReadHalf>, mut cw: OwnedWriteHalf) {
    let (host, port) = match split_host_port(&head.target) {
        Ok((h, Some(p))) => (h.to_string(), p),
        _ => return respond(&mut cw, 400, "CONNECT needs host:port as its target", false).await,
    };
    if framing(&head, false) != Ok(Framing::None) {
        return respond(&mut cw, 400, "CONNECT with a body", false).await;
    }
    let p = Protocol::Connect;
    let allowed = match ctx
        .proxy
        .authorize(&host, port, p, ctx.client.as_deref())
        .await
    {
        Ok(a) => a,
        Err(r) => {
            let msg = format!("{}:{port} is not allowed: {}", r.host, r.reason);
            let e = forbidden(msg, &r);
            ctx.record(
                r.host,
                port,
                p,
                Decision::Denied,
                r.rule,
                Some(r.reason),
                r.asked,
                None,
                None,
                (0, 0),
            );
            return respond_with(&mut cw, 403, e.phrase.as_deref(), &e.message, true).await;
        }
    };
    let shown = allowed.host.to_string();
    // A host to be TLS-terminated takes a slot of tlsTerminate.maxTunnels first.
    let terminate = ctx
        .proxy
        .tls()
        .filter(|t| t.terminates(&allowed.host, port))
        .cloned();
    if let Some(reason) = ctx
        .proxy
        .tls()
        .filter(|_| terminate.is_none())
        .and_then(|t| t.opaque_refusal(&allowed.host, port))
    {
        let msg = format!("{shown}:{port} is not allowed: {reason}");
        ctx.record(
            shown,
            port,
            p,
            Decision::Denied,
            allowed.rule,
            Some(reason),
            allowed.asked,
            None,
            None,
            (0, 0),
        );
        return respond(&mut cw, 403, &msg, true).await;
    }
    let slot = match &terminate {
        Some(t) => match t.slot() {
            Some(s) => Some(s),
            None => {
                let reason = "too many TLS-terminated tunnels at once \
                              (network.tlsTerminate.maxTunnels)"
                    .to_string();
                ctx.record(
                    shown,
                    port,
                    p,
                    Decision::Denied,
                    allowed.rule,
                    Some(reason.clone()),
                    allowed.asked,
                    None,
                    None,
                    (0, 0),
                );
                let body = format!("{reason}\n");
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nX-Proxy-Error: too-many-tunnels\r\n\
                     Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = cw.write_all(answer.as_bytes()).await;
                return;
            }
        },
        None => None,
    };
    let route = ctx.proxy.route(&allowed.host, port, false);
    ctx.set_via(route.via());
    let mut opened = match ctx.proxy.open_tunnel(&allowed.host, port, &route).await {
        Ok(c) => c,
        Err(ConnectError::Refused(reason)) => {
            let msg = format!("{shown}:{port} is not allowed: {reason}");
            ctx.record(
                shown,
                port,
                p,
                Decision::Denied,
                allowed.rule,
                Some(reason),
                allowed.asked,
                None,
                None,
                (0, 0),
            );
            return respond(&mut cw, 403, &msg, true).await;
        }
        Err(ConnectError::Failed(e)) => {
            ctx.record(
                shown,
                port,
                p,
                Decision::Allowed,
                allowed.rule,
                None,
                allowed.asked,
                None,
                Some(e.clone()),
                (0, 0),
            );
            return respond(&mut cw, 502, &e, false).await;
        }
    };
    if cw
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if let Some(t) = terminate {
        let early = cr.buffer().to_vec();
        let Ok(client) = cr.into_inner().reunite(cw) else {
            return;
        };
        let on_refusal =
            crate::tls::serve::recorder(ctx.proxy, &shown, port, ctx.client.clone(), ctx.peer);
        let out = crate::tls::serve::run(
            &t,
            &allowed.host,
            port,
            early,
            client,
            opened.stream,
            on_refusal,
        )
        .await;
        drop(slot);
        let decision = if out.refused.is_some() {
            Decision::Denied
        } else {
            Decision::Allowed
        };
        ctx.record(
            shown,
            port,
            p,
            decision,
            allowed.rule,
            out.refused,
            allowed.asked,
            opened.resolved,
            out.error,
            (out.up, out.down),
        );
        return;
    }
    // What the next hop sent with its CONNECT answer (an SSH banner) goes to the client first.
    let down_early = opened.early.len() as u64;
    if down_early > 0 && cw.write_all(&opened.early).await.is_err() {
        return;
    }
    // Bytes the client sent after the head (e.g. a TLS ClientHello) go first.
    let early = cr.buffer().to_vec();
    let mut up_bytes = early.len() as u64;
    if !early.is_empty() && opened.stream.write_all(&early).await.is_err() {
        return;
    }
    let Ok(client) = cr.into_inner().reunite(cw) else {
        return;
    };
    let (a, b) = crate::splice::tunnel(&client, &opened.stream).await;
    up_bytes += a;
    let b = b + down_early;
    let addr = opened.resolved;
    ctx.record(
        shown,
        port,
        p,
        Decision::Allowed,
        allowed.rule,
        None,
        allowed.asked,
        addr,
        None,
        (up_bytes, b),
    );
}

/// Why a plain `http://` request is refused (and the `network.requests` rule that did), if it
/// is: a masked credential's placeholder toward a host outside its injectHosts, or a rule. A path that normalisation would change is refused for a host with rules: the rules
/// would judge another path than the upstream reads.
fn plain_request_refusal(
    t: &crate::tls::Terminator,
    host: &crate::host::Host,
    port: u16,
    head: &Head,
    target: &str,
) -> Option<(String, Option<String>)> {
    // A masked credential's placeholder is never replaced on plain HTTP, and seen on its way
    // to a host outside its injectHosts (in the URL or a header field) it stops the request,
    // as on a terminated tunnel.
    let leaked = |text: &[u8]| {
        t.secrets.iter().find(|s| {
            !s.injects_at(host, port)
                && text
                    .windows(s.placeholder.len().max(1))
                    .any(|w| w == s.placeholder.as_bytes())
        })
    };
    let leak = |name: &str, place: String| Some((leak_reason(name, host, port, &place), None));
    if !t.secrets.is_empty() {
        if let Some(s) = leaked(head.target.as_bytes()) {
            return leak(&s.name, "the URL".into());
        }
        for (k, v) in &head.headers {
            if let Some(s) = leaked(v) {
                return leak(&s.name, format!("the {} field", k.to_ascii_lowercase()));
            }
        }
    }
    if !t.rules.cover(host, port) {
        return None;
    }
    let path = target.split('?').next().unwrap_or("/");
    // The path goes on as it is: with asSpelled the rules judge both of its readings, else
    // one that normalisation would change is refused.
    let normal = match ringfence_policy::normalize_path(path) {
        Some(n) if n == path || t.as_spelled => n,
        _ => {
            return Some((
                format!(
                    "the path {path} is not in normal form, and network.requests has rules \
                     for {host}"
                ),
                None,
            ))
        }
    };
    let fields: Vec<(String, &str)> = head
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), std::str::from_utf8(v).ok()?)))
        .collect();
    let field = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .collect()
    };
    match t
        .rules
        .decide_readings(host, port, &head.method, path, &normal, &field)
    {
        crate::tls::rules::RuleVerdict::Denied { rule, reason } => Some((reason, rule)),
        _ => None,
    }
}

/// Why a request that carried the placeholder of a masked credential toward `host:port` (outside
/// its injectHosts) was stopped.
fn leak_reason(name: &str, host: &Host, port: u16, place: &str) -> String {
    format!(
        "the placeholder of the masked credential {name} was sent to {host}:{port} in {place}, \
         which is not one of its injectHosts: refused as an attempted credential leak"
    )
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue(head: &Head) -> bool {
    // An HTTP/1.0 client's expectation is ignored (RFC 9110 10.1.1): it gets no 1xx.
    head.minor >= 1
        && head
            .all("expect")
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
}

/// The parts of an absolute-form `http://` target.
fn absolute_target(target: &str) -> Result<(String, u16, String), Reject> {
    if target.starts_with('/') {
        return Err(reject(
            400,
            "origin-form request: this is a proxy; send absolute URLs (http://host/path) or use CONNECT",
        ));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(reject(400, "https:// URLs go through CONNECT"));
    }
    if !lower.starts_with("http://") {
        return Err(reject(400, "the request target must be an http:// URL"));
    }
    let rest = &target[7..];
    if rest.contains('#') {
        return Err(reject(400, "a fragment in the request target"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(reject(400, "user information in the request target"));
    }
    let (host, port) =
        split_host_port(authority).map_err(|e| reject(400, format!("request target: {e}")))?;
    if host.is_empty() {
        return Err(reject(400, "the request target has no host"));
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((host.to_string(), port.unwrap_or(80), path))
}

/// Checks the Host header against the target: the same host and port, one header only.
fn check_host_header(head: &Head, host: &str, port: u16) -> Result<(), Reject> {
    let values: Vec<&[u8]> = head.all("host").collect();
    let value = match values.as_slice() {
        [] if head.minor == 0 => return Ok(()),
        [] => return Err(reject(400, "no Host header")),
        [v] => std::str::from_utf8(v).map_err(|_| reject(400, "Host header is not ASCII"))?,
        _ => return Err(reject(400, "more than one Host header")),
    };
    let mismatch = || reject(400, "the Host header does not match the request target");
    let (h, p) = split_host_port(value.trim()).map_err(|_| mismatch())?;
    let same_host = match (normalize_host(h), normalize_host(host)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_host || p.unwrap_or(80) != port {
        return Err(mismatch());
    }
    Ok(())
}

/// The head to send on: hop-by-hop fields (and those named in Connection) removed.
fn forwarded_fields(head: &Head) -> Vec<(&str, &[u8])> {
    let named: Vec<String> = head
        .all("connection")
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    head.headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            // The fields the message is framed and routed by stay, whatever Connection names:
            // the proxy relays the body by them, and the next hop must read it the same way.
            let kept = matches!(n.as_str(), "content-length" | "transfer-encoding" | "host");
            !HOP_BY_HOP.contains(&n.as_str()) && (kept || !named.contains(&n))
        })
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect()
}

/// One absolute-form request: decide, forward, relay the response. `Ok(true)` when the client
/// connection can carry another request.
async fn forward(
    ctx: &Ctx<'_>,
    head: &Head,
    cr: &mut BufReader<OwnedReadHalf>,
    cw: &mut OwnedWriteHalf,
    upstream: &mut Option<Upstream>,
) -> Result<bool, Reject> {
    let limits = ctx.proxy.limits;
    let (host, port, path) = absolute_target(&head.target)?;
    check_host_header(head, &host, port)?;
    let body = framing(head, false).map_err(|m| reject(400, m))?;
    let p = Protocol::Http;
    let allowed = match ctx
        .proxy
        .authorize(&host, port, p, ctx.client.as_deref())
        .await
    {
        Ok(a) => a,
        Err(r) => {
            let msg = format!("{}:{port} is not allowed: {}", r.host, r.reason);
            let e = forbidden(msg, &r);
            ctx.record(
                r.host,
                port,
                p,
                Decision::Denied,
                r.rule,
                Some(r.reason),
                r.asked,
                None,
                None,
                (0, 0),
            );
            return Err(e);
        }
    };
    if reflects_request(&head.method) {
        let reason = format!(
            "{} echoes the request back, headers included; it is never forwarded",
            head.method.escape_debug()
        );
        ctx.record(
            allowed.host.to_string(),
            port,
            p,
            Decision::Denied,
            allowed.rule,
            Some(reason.clone()),
            allowed.asked,
            None,
            None,
            (0, 0),
        );
        return Err(reject(405, reason));
    }
    let shown = allowed.host.to_string();
    if let Some(t) = ctx.proxy.tls() {
        if let Some((reason, rule)) = plain_request_refusal(t, &allowed.host, port, head, &path) {
            ctx.record(
                shown,
                port,
                p,
                Decision::Denied,
                rule.or(allowed.rule),
                Some(reason.clone()),
                allowed.asked,
                None,
                None,
                (0, 0),
            );
            return Err(reject(403, reason));
        }
    }
    // A masked credential's placeholder in the body, on its way to a host outside its
    // injectHosts, stops the request as it does in the URL. A small body is read whole first,
    // so that the upstream hears nothing of it; a larger one is checked as it streams, the
    // bytes that may begin a placeholder held back, and stopped before one leaves.
    let watch = ctx
        .proxy
        .tls()
        .filter(|t| t.secrets.iter().any(|s| !s.injects_at(&allowed.host, port)))
        .map(|t| crate::tls::body::Scan::new(t.secrets.clone(), allowed.host.clone(), port));
    let mut read_first: Option<Vec<u8>> = None;
    if let (Some(scan), Framing::Length(n)) = (&watch, body) {
        if n <= crate::tls::body::WHOLE {
            let told = if expects_continue(head) {
                cw.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await
            } else {
                Ok(())
            };
            if told.is_err() {
                return Ok(false);
            }
            let mut whole = vec![0u8; n as usize];
            if cr.read_exact(&mut whole).await.is_err() {
                return Err(reject(400, "the request body ended early"));
            }
            if let Some(name) = scan.leak_in(&whole) {
                let reason = leak_reason(name, &allowed.host, port, "the body");
                ctx.record(
                    shown,
                    port,
                    p,
                    Decision::Denied,
                    allowed.rule,
                    Some(reason.clone()),
                    allowed.asked,
                    None,
                    None,
                    (0, 0),
                );
                return Err(reject(403, reason));
            }
            read_first = Some(whole);
        }
    }
    let route = ctx.proxy.route(&allowed.host, port, true);
    ctx.set_via(route.via());
    let key = (allowed.host.clone(), port, route.clone());
    if upstream.as_ref().is_some_and(|u| u.key != key) {
        *upstream = None;
    }
    if upstream.is_none() {
        match ctx.proxy.open_http(&allowed.host, port, &route).await {
            Ok(opened) => {
                let (r, w) = opened.stream.into_split();
                *upstream = Some(Upstream {
                    key,
                    addr: opened.resolved,
                    r: BufReader::with_capacity(BUF, r),
                    w,
                });
            }
            Err(ConnectError::Refused(reason)) => {
                let msg = format!("{shown}:{port} is not allowed: {reason}");
                ctx.record(
                    shown,
                    port,
                    p,
                    Decision::Denied,
                    allowed.rule,
                    Some(reason),
                    allowed.asked,
                    None,
                    None,
                    (0, 0),
                );
                return Err(reject(403, msg));
            }
            Err(ConnectError::Failed(e)) => {
                ctx.record(
                    shown,
                    port,
                    p,
                    Decision::Allowed,
                    allowed.rule,
                    None,
                    allowed.asked,
                    None,
                    Some(e.clone()),
                    (0, 0),
                );
                return Err(reject(502, e));
            }
        }
    }
    let Some(up) = upstream.as_mut() else {
        return Ok(false);
    };
    let addr = up.addr;
    let client_close =
        head.connection_has("close") || (head.minor == 0 && !head.connection_has("keep-alive"));

    let mut out = Vec::with_capacity(1024);
    // A next-hop proxy gets the absolute form, rebuilt from the host the policy judged.
    let target = match &route {
        Route::Direct => path,
        _ if port == 80 => format!("http://{}{path}", allowed.host),
        _ => format!("http://{}{path}", authority(&allowed.host, port)),
    };
    out.extend_from_slice(
        format!("{} {} HTTP/1.{}\r\n", head.method, target, head.minor).as_bytes(),
    );
    if let Route::Parent(url) = &route {
        if let Some(a) = url.authorization() {
            out.extend_from_slice(format!("Proxy-Authorization: {a}\r\n").as_bytes());
        }
    }
    // A client waiting for 100 Continue gets it from here once the request is decided and the
    // upstream connected (the body is relayed before any response is read, so the upstream's
    // own answer to the expectation would come only after it): the field is not sent on.
    let has_body = matches!(body, Framing::Chunked) || matches!(body, Framing::Length(n) if n > 0);
    let continue_first = read_first.is_none() && has_body && expects_continue(head);
    for (n, v) in forwarded_fields(head) {
        if (read_first.is_some() || continue_first) && n.eq_ignore_ascii_case("expect") {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let request_body = match read_first {
        Some(whole) => {
            out.extend_from_slice(&whole);
            RequestBody::Sent(whole.len() as u64)
        }
        None => RequestBody::Follows(body, watch.as_ref(), continue_first),
    };
    let tls = ctx.proxy.tls().cloned();
    let result = relay(
        up,
        &out,
        head,
        request_body,
        cr,
        cw,
        &limits,
        tls.as_deref(),
    )
    .await;
    match result {
        Ok((up_bytes, down_bytes, reuse_upstream, close_client)) => {
            if !reuse_upstream {
                *upstream = None;
            }
            ctx.record(
                shown,
                port,
                p,
                Decision::Allowed,
                allowed.rule,
                None,
                allowed.asked,
                addr,
                None,
                (up_bytes, down_bytes),
            );
            if close_client || client_close {
                let _ = cw.shutdown().await;
                return Ok(false);
            }
            Ok(true)
        }
        Err(RelayError::BeforeResponse(e)) => {
            *upstream = None;
            ctx.record(
                shown,
                port,
                p,
                Decision::Allowed,
                allowed.rule,
                None,
                allowed.asked,
                addr,
                Some(e.clone()),
                (0, 0),
            );
            Err(reject(502, e))
        }
        Err(RelayError::Leak(name, sent)) => {
            // The upstream has the head and part of the body: it is dropped unfinished.
            *upstream = None;
            let reason = leak_reason(&name, &allowed.host, port, "the body");
            ctx.record(
                shown,
                port,
                p,
                Decision::Denied,
                allowed.rule,
                Some(reason.clone()),
                allowed.asked,
                addr,
                None,
                (sent, 0),
            );
            Err(reject(403, reason))
        }
        Err(RelayError::Midway(e)) => {
            *upstream = None;
            ctx.record(
                shown,
                port,
                p,
                Decision::Allowed,
                allowed.rule,
                None,
                allowed.asked,
                addr,
                Some(e),
                (0, 0),
            );
            Ok(false)
        }
    }
}

enum RelayError {
    /// Nothing of the response was sent yet: the client gets a 502.
    BeforeResponse(String),
    /// Part of the response went out: the connection is closed.
    Midway(String),
    /// The body carried this masked credential's placeholder: the request was stopped before
    /// it left (after this many body bytes), and nothing of a response was sent.
    Leak(String, u64),
}

/// The request body, as [`relay`] is to send it.
enum RequestBody<'a> {
    /// Already sent with the head: this many bytes.
    Sent(u64),
    /// Still with the client, framed so, checked with the scan when there is one; the client
    /// is told 100 Continue first when it waits for that.
    Follows(Framing, Option<&'a crate::tls::body::Scan>, bool),
}

/// Sends the request head and body, then relays the response. Returns the body bytes each
/// way, whether the upstream connection can be reused, and whether the client connection
/// must be closed.
#[allow(clippy::too_many_arguments)]
async fn relay(
    up: &mut Upstream,
    out: &[u8],
    head: &Head,
    body: RequestBody<'_>,
    cr: &mut BufReader<OwnedReadHalf>,
    cw: &mut OwnedWriteHalf,
    limits: &Limits,
    tls: Option<&crate::tls::Terminator>,
) -> Result<(u64, u64, bool, bool), RelayError> {
    let before = |e: std::io::Error| RelayError::BeforeResponse(format!("upstream: {e}"));
    up.w.write_all(out).await.map_err(before)?;
    let request_body = |e: std::io::Error| RelayError::Midway(format!("request body: {e}"));
    if let RequestBody::Follows(_, _, true) = body {
        cw.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|e| RelayError::Midway(format!("client: {e}")))?;
    }
    let up_bytes = match body {
        RequestBody::Sent(n) => n,
        RequestBody::Follows(Framing::None | Framing::Close, _, _) => 0,
        RequestBody::Follows(Framing::Length(n), None, _) => {
            copy_exact(cr, &mut up.w, n).await.map_err(request_body)?
        }
        RequestBody::Follows(Framing::Chunked, None, _) => copy_chunked(cr, &mut up.w, limits)
            .await
            .map_err(request_body)?,
        RequestBody::Follows(framing, Some(scan), _) => {
            match copy_watched(cr, &mut up.w, framing, scan, limits).await {
                Ok(n) => n,
                Err(Watched::Io(e)) => return Err(request_body(e)),
                Err(Watched::Leak(name, sent)) => return Err(RelayError::Leak(name, sent)),
            }
        }
    };
    loop {
        let raw = match read_head(&mut up.r, limits).await {
            Ok(Some(h)) => h,
            Ok(None) => {
                return Err(RelayError::BeforeResponse(
                    "the server closed the connection without a response".into(),
                ))
            }
            Err(e) => {
                return Err(RelayError::BeforeResponse(format!(
                    "malformed response: {}",
                    e.message
                )))
            }
        };
        let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut resp = httparse::Response::new(&mut fields);
        match resp.parse(&raw) {
            Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
            _ => return Err(RelayError::BeforeResponse("malformed response head".into())),
        }
        let code = resp.code.unwrap_or(0);
        let resp_head = Head {
            method: String::new(),
            target: resp.reason.unwrap_or("").to_string(),
            minor: resp.version.unwrap_or(1),
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
        };
        if code == 101 {
            return Err(RelayError::BeforeResponse(
                "the server switched protocols, which this proxy does not relay for http:// requests"
                    .into(),
            ));
        }
        let interim = (100..200).contains(&code);
        let framing = if interim || head.method == "HEAD" || code == 204 || code == 304 {
            Framing::None
        } else {
            framing(&resp_head, true)
                .map_err(|m| RelayError::BeforeResponse(format!("response: {m}")))?
        };
        let close_client = framing == Framing::Close;
        let mut h = Vec::with_capacity(raw.len());
        h.extend_from_slice(
            format!(
                "HTTP/1.{} {} {}\r\n",
                resp_head.minor, code, resp_head.target
            )
            .as_bytes(),
        );
        for (n, v) in forwarded_fields(&resp_head) {
            if tls.is_some_and(|t| t.strips(n)) {
                continue;
            }
            h.extend_from_slice(n.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(v);
            h.extend_from_slice(b"\r\n");
        }
        if close_client {
            h.extend_from_slice(b"Connection: close\r\n");
        }
        h.extend_from_slice(b"\r\n");
        let mid = |e: std::io::Error| RelayError::Midway(format!("response: {e}"));
        // A small body that has already arrived goes out with the head, in one write.
        if let Framing::Length(n) = framing {
            if n <= BUF as u64 && up.r.buffer().len() as u64 >= n {
                h.extend_from_slice(&up.r.buffer()[..n as usize]);
                up.r.consume(n as usize);
                cw.write_all(&h).await.map_err(mid)?;
                let reuse = !resp_head.connection_has("close")
                    && (resp_head.minor == 1 || resp_head.connection_has("keep-alive"));
                return Ok((up_bytes, n, reuse, false));
            }
        }
        cw.write_all(&h).await.map_err(mid)?;
        if interim {
            continue;
        }
        let down = match framing {
            Framing::None => 0,
            Framing::Length(n) if n >= SPLICE_FROM => {
                copy_spliced(&mut up.r, cw, Some(n)).await.map_err(mid)?
            }
            Framing::Length(n) => copy_exact(&mut up.r, cw, n).await.map_err(mid)?,
            Framing::Chunked => copy_chunked(&mut up.r, cw, limits).await.map_err(mid)?,
            Framing::Close => copy_spliced(&mut up.r, cw, None).await.map_err(mid)?,
        };
        let reuse = framing != Framing::Close
            && !resp_head.connection_has("close")
            && (resp_head.minor == 1 || resp_head.connection_has("keep-alive"));
        return Ok((up_bytes, down, reuse, close_client));
    }
}

/// Bodies from this size on are moved with splice(2).
const SPLICE_FROM: u64 = 256 * 1024;

/// Copies `n` bytes (or everything until the end, with `None`): first what the reader has
/// buffered, then the rest socket to socket with splice(2).
async fn copy_spliced(
    r: &mut BufReader<ReadHalf>,
    w: &mut OwnedWriteHalf,
    n: Option<u64>,
) -> std::io::Result<u64> {
    let buffered = r.buffer();
    let take = n.map_or(buffered.len(), |n| (buffered.len() as u64).min(n) as usize);
    w.write_all(&buffered[..take]).await?;
    r.consume(take);
    let rest = n.map(|n| n - take as u64);
    let moved = std::sync::atomic::AtomicU64::new(0);
    let sent = crate::splice::copy(r.get_ref(), w.as_ref(), rest, &moved).await?;
    if let Some(rest) = rest {
        if sent != rest {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("body ended {} bytes short", rest - sent),
            ));
        }
    }
    Ok(take as u64 + sent)
}

async fn copy_exact<R, W>(r: &mut BufReader<R>, w: &mut W, n: u64) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let copied = tokio::io::copy_buf(&mut (&mut *r).take(n), w).await?;
    if copied != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("body ended after {copied} of {n} bytes"),
        ));
    }
    Ok(copied)
}

/// Relays a chunked body unchanged while checking its syntax; returns the data bytes.
async fn copy_chunked<R, W>(
    r: &mut BufReader<R>,
    w: &mut W,
    limits: &Limits,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut total = 0u64;
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        read_crlf_line(r, &mut line, limits.max_chunk_line).await?;
        let size = chunk_size(&line)?;
        w.write_all(&line).await?;
        if size == 0 {
            w.write_all(&read_trailers(r, limits).await?).await?;
            return Ok(total);
        }
        total += copy_exact(r, w, size).await?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk data not followed by CRLF"));
        }
        w.write_all(&crlf).await?;
    }
}

/// The trailer section after a chunked body's last chunk, up to and with its empty line (at
/// most `max_head_bytes`).
async fn read_trailers<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    limits: &Limits,
) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        read_crlf_line(r, &mut line, limits.max_chunk_line).await?;
        all.extend_from_slice(&line);
        if all.len() > limits.max_head_bytes {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "trailer section too large",
            ));
        }
        if line == b"\r\n" {
            return Ok(all);
        }
    }
}

/// The size of a chunk, from its size line (CRLF included; extensions ignored).
fn chunk_size(line: &[u8]) -> std::io::Result<u64> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed chunk size");
    let text = &line[..line.len().saturating_sub(2)];
    let size_part = text.split(|&b| b == b';').next().unwrap_or_default();
    if size_part.is_empty() || size_part.len() > 15 || !size_part.iter().all(u8::is_ascii_hexdigit)
    {
        return Err(bad());
    }
    u64::from_str_radix(&String::from_utf8_lossy(size_part), 16).map_err(|_| bad())
}

enum Watched {
    Io(std::io::Error),
    /// The placeholder of this masked credential was about to be sent; the body bytes sent
    /// before it.
    Leak(String, u64),
}

impl From<std::io::Error> for Watched {
    fn from(e: std::io::Error) -> Watched {
        Watched::Io(e)
    }
}

/// Relays a request body of a length or chunked, with `scan` looking for placeholders that may
/// not go this way: what may begin one is held back until the next bytes show it does not, so
/// that no placeholder leaves, even split between reads or chunks. A chunked body is framed
/// again in chunks of what is let through (chunk extensions are not kept); its trailer fields
/// are checked too. Returns the data bytes.
async fn copy_watched<R, W>(
    r: &mut BufReader<R>,
    w: &mut W,
    framing: Framing,
    scan: &crate::tls::body::Scan,
    limits: &Limits,
) -> Result<u64, Watched>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let chunked = framing == Framing::Chunked;
    let keep = scan.keep();
    let mut carry: Vec<u8> = Vec::with_capacity(BUF + keep);
    let mut total = 0u64;
    let mut sent = 0u64;
    // Sends what of `carry` cannot be the start of a placeholder (all of it when `last`).
    async fn let_through<W: AsyncWrite + Unpin>(
        w: &mut W,
        carry: &mut Vec<u8>,
        keep: usize,
        last: bool,
        chunked: bool,
    ) -> std::io::Result<u64> {
        let cut = if last {
            carry.len()
        } else {
            carry.len().saturating_sub(keep)
        };
        if cut == 0 {
            return Ok(0);
        }
        if chunked {
            w.write_all(format!("{cut:x}\r\n").as_bytes()).await?;
            w.write_all(&carry[..cut]).await?;
            w.write_all(b"\r\n").await?;
        } else {
            w.write_all(&carry[..cut]).await?;
        }
        carry.drain(..cut);
        Ok(cut as u64)
    }
    let mut line = Vec::with_capacity(64);
    loop {
        let mut left = match framing {
            // Read once: the loop ends below.
            Framing::Length(n) => n,
            Framing::Chunked => {
                line.clear();
                read_crlf_line(r, &mut line, limits.max_chunk_line).await?;
                chunk_size(&line)?
            }
            Framing::None | Framing::Close => 0,
        };
        let last_part = left == 0;
        while left > 0 {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                return Err(Watched::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("body ended {left} bytes short"),
                )));
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            carry.extend_from_slice(&buf[..n]);
            r.consume(n);
            left -= n as u64;
            total += n as u64;
            if let Some(name) = scan.leak_in(&carry) {
                return Err(Watched::Leak(name.to_string(), sent));
            }
            sent += let_through(w, &mut carry, keep, false, chunked).await?;
        }
        if chunked && !last_part {
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).await?;
            if &crlf != b"\r\n" {
                return Err(Watched::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "chunk data not followed by CRLF",
                )));
            }
            continue;
        }
        // The end: what was held back goes, then (chunked) the last chunk and the trailers.
        sent += let_through(w, &mut carry, keep, true, chunked).await?;
        if chunked {
            let trailers = read_trailers(r, limits).await?;
            if let Some(name) = scan.leak_in(&trailers) {
                return Err(Watched::Leak(name.to_string(), sent));
            }
            w.write_all(b"0\r\n").await?;
            w.write_all(&trailers).await?;
        }
        return Ok(total);
    }
}

async fn read_crlf_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<()> {
    (&mut *r).take(max as u64).read_until(b'\n', line).await?;
    if !line.ends_with(b"\r\n") || line[..line.len() - 2].contains(&b'\r') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed line in a chunked body",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn head(text: &str) -> Result<Head, Reject> {
        parse_request(text.as_bytes(), &Limits::default())
    }

    /// Runs [`copy_watched`] over `input` toward a host outside the secret's injectHosts, with
    /// a small read buffer so that reads split it.
    async fn watched(
        secrets: &Arc<Vec<crate::tls::Secret>>,
        input: &[u8],
        framing: Framing,
    ) -> (Result<u64, Watched>, Vec<u8>) {
        let scan =
            crate::tls::body::Scan::new(secrets.clone(), Host::Name("evil.example".into()), 80);
        let mut r = BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        let res = copy_watched(&mut r, &mut out, framing, &scan, &Limits::default()).await;
        (res, out)
    }

    fn secrets() -> (Arc<Vec<crate::tls::Secret>>, String) {
        let s = crate::tls::Secret::new(
            "t",
            "TOKEN",
            "the-real-value".into(),
            &["api.example.com".to_string()],
        )
        .unwrap();
        let ph = s.placeholder.clone();
        (Arc::new(vec![s]), ph)
    }

    #[tokio::test]
    async fn watched_bodies_stop_before_a_placeholder_leaves() {
        let (secrets, ph) = secrets();
        // Split between chunks (and reads): stopped, and no byte of it was sent.
        let (a, b) = ph.split_at(9);
        let chunked = format!(
            "5\r\nx=1&t\r\n{:x}\r\n={a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len() + 1,
            b.len()
        );
        let (res, out) = watched(&secrets, chunked.as_bytes(), Framing::Chunked).await;
        assert!(matches!(res, Err(Watched::Leak(ref n, _)) if n == "TOKEN"));
        assert!(!String::from_utf8_lossy(&out).contains(&ph[..4]), "{out:?}");
        // At the very end of a body of a length.
        let body = format!("{}{ph}", "a".repeat(100));
        let (res, out) = watched(
            &secrets,
            body.as_bytes(),
            Framing::Length(body.len() as u64),
        )
        .await;
        assert!(matches!(res, Err(Watched::Leak(..))));
        assert!(out.len() < 100 && out.iter().all(|&c| c == b'a'), "{out:?}");
        // In a trailer field.
        let trailer = format!("3\r\nabc\r\n0\r\nX-T: {ph}\r\n\r\n");
        let (res, _) = watched(&secrets, trailer.as_bytes(), Framing::Chunked).await;
        assert!(matches!(res, Err(Watched::Leak(..))));
    }

    #[tokio::test]
    async fn watched_bodies_without_a_placeholder_arrive_whole() {
        let (secrets, _) = secrets();
        let data = "0123456789".repeat(20);
        let chunked = format!(
            "{:x}\r\n{}\r\n{:x};ext=1\r\n{}\r\n0\r\nX-T: ok\r\n\r\n",
            150,
            &data[..150],
            50,
            &data[150..]
        );
        let (res, out) = watched(&secrets, chunked.as_bytes(), Framing::Chunked).await;
        assert_eq!(res.ok(), Some(200));
        // Framed again: decoding gives the same data and trailer.
        let mut decoded = Vec::new();
        let mut rest = &out[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
            rest = &rest[end + 2..];
            if n == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..n]);
            assert_eq!(&rest[n..n + 2], b"\r\n");
            rest = &rest[n + 2..];
        }
        assert_eq!(decoded, data.as_bytes());
        assert_eq!(rest, b"X-T: ok\r\n\r\n");
        let (res, out) = watched(&secrets, data.as_bytes(), Framing::Length(200)).await;
        assert_eq!(res.ok(), Some(200));
        assert_eq!(out, data.as_bytes());
        // Short of its length: an error, not a success.
        let (res, _) = watched(&secrets, &data.as_bytes()[..150], Framing::Length(200)).await;
        assert!(matches!(res, Err(Watched::Io(_))));
    }

    #[test]
    fn framing_rules() {
        let f = |t: &str| framing(&head(t).ok().unwrap(), false);
        assert_eq!(
            f("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            f("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        for bad in [
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(f(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHo\x01st: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n",
            "GET  http://a/ HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/2.0\r\n\r\n",
            "G@T http://a/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_and_host_headers() {
        assert_eq!(
            absolute_target("http://Example.com:8080/x?y").ok().unwrap(),
            ("Example.com".into(), 8080, "/x?y".into())
        );
        assert_eq!(
            absolute_target("http://a.com?q").ok().unwrap(),
            ("a.com".into(), 80, "/?q".into())
        );
        assert_eq!(absolute_target("/x").err().unwrap().status, 400);
        assert!(absolute_target("http://allowed.com@evil.com/").is_err());
        assert!(absolute_target("https://a.com/").is_err());
        assert!(absolute_target("ftp://a.com/").is_err());
        let h = head("GET http://a.com/ HTTP/1.1\r\nHost: A.COM.:80\r\n\r\n")
            .ok()
            .unwrap();
        assert!(check_host_header(&h, "a.com", 80).is_ok());
        assert!(check_host_header(&h, "b.com", 80).is_err());
        assert!(check_host_header(&h, "a.com", 8080).is_err());
        let two = head("GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nHost: a.com\r\n\r\n")
            .ok()
            .unwrap();
        assert!(check_host_header(&two, "a.com", 80).is_err());
    }

    #[test]
    fn identity_and_hop_by_hop() {
        // "agent-7:secret"
        let h = head(
            "GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic YWdlbnQtNzpzZWNyZXQ=\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nX-Keep: 2\r\n\r\n",
        )
        .ok()
        .unwrap();
        assert_eq!(client_identity(&h).as_deref(), Some("agent-7"));
        let names: Vec<&str> = forwarded_fields(&h).iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["X-Keep"]);
        // Connection cannot take away what the body is framed or routed by (else the next
        // hop would read the body as another request).
        let h = head(
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: content-length, host, x-drop\r\nX-Drop: 1\r\n\r\n",
        )
        .ok()
        .unwrap();
        let names: Vec<&str> = forwarded_fields(&h).iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["Host", "Content-Length"]);
        let h = head(
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n",
        )
        .ok()
        .unwrap();
        let names: Vec<&str> = forwarded_fields(&h).iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["Host", "Transfer-Encoding"]);
    }

    #[test]
    fn only_http_1_1_clients_get_100_continue() {
        let h = |v: u8| {
            head(&format!(
                "POST http://a/ HTTP/1.{v}\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
            ))
            .ok()
            .unwrap()
        };
        assert!(expects_continue(&h(1)));
        assert!(!expects_continue(&h(0)));
    }
}
