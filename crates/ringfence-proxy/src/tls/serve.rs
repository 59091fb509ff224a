//! One terminated tunnel: check that it carries TLS, complete the client's handshake with the
//! leaf for the CONNECT target, open the verified upstream TLS connection (ALPN h2 or
//! HTTP/1.1, whichever the upstream picks), then carry each request with hyper, after checking that its server name,
//! Host and `:authority` name the CONNECT target (else 421).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Terminator;
use crate::host::{normalize_host, split_host_port, Host};
use crate::route::Stream;

type Body = BoxBody<Bytes, super::body::BoxError>;

/// How long a terminated connection may stay idle (no request in progress, no byte moved)
/// before it is closed, and how often that is looked at.
const IDLE: Duration = Duration::from_secs(30);
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// How a terminated tunnel ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub up: u64,
    pub down: u64,
    /// The tunnel was refused (not TLS): the reason.
    pub refused: Option<String>,
    /// An allowed tunnel that failed (handshake, upstream certificate, protocol).
    pub error: Option<String>,
}

/// Records a decision about one request inside a terminated tunnel: allowed by a request
/// rule, or refused (the rule if one decided, and the reason with the status).
pub(crate) type OnRefusal =
    Arc<dyn Fn(crate::Decision, Option<String>, Option<String>) + Send + Sync>;

/// Records each request refused inside a terminated tunnel to `host:port`, and each that a
/// request rule allowed, as a decision of its own (protocol `https`).
pub(crate) fn recorder(
    proxy: &crate::Proxy,
    host: &str,
    port: u16,
    client: Option<String>,
    peer: std::net::SocketAddr,
) -> OnRefusal {
    let hooks = proxy.hooks();
    let host = host.to_string();
    Arc::new(move |decision, rule, reason| {
        hooks.record(&crate::DecisionRecord {
            host: host.clone(),
            port,
            protocol: crate::Protocol::Https,
            decision,
            rule,
            reason,
            asked: None,
            client: client.clone(),
            peer: Some(peer),
            resolved: None,
            via: None,
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
        })
    })
}

/// The client's side of the tunnel: the bytes the proxy read past the CONNECT head first, then
/// the socket; counts what passes each way.
struct ClientIo {
    early: Vec<u8>,
    pos: usize,
    s: TcpStream,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = &mut *self;
        if me.pos < me.early.len() {
            let n = buf.remaining().min(me.early.len() - me.pos);
            buf.put_slice(&me.early[me.pos..me.pos + n]);
            me.pos += n;
            me.up.fetch_add(n as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.s).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        me.up.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.s).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.s).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.s).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Counts a request as in progress while it lives (a cancelled one too).
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(n: Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Sender {
    H1(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Body>>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

struct State {
    host: Host,
    port: u16,
    /// Why every request is answered 421 (the TLS server name names another host).
    misdirected: Option<String>,
    /// The upstream connection, or why there is none (every request gets 502).
    upstream: Result<Sender, String>,
    client_h2: bool,
    on_refusal: OnRefusal,
    secrets: Arc<Vec<super::Secret>>,
    rules: Arc<super::rules::Rules>,
    refuse_ambiguous: bool,
    /// The terminator, for stripResponseHeaders.
    terminator: Arc<super::Terminator>,
    /// The two sides of an upgraded connection, joined: the tunnel lasts until it ends.
    upgraded: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Reverse proxy: the Host field every request gets (the upstream's authority); the
    /// client names the proxy's own address.
    reverse_host: Option<HeaderValue>,
}

/// Serves one CONNECT tunnel to `host:port` that the policy allowed and that is to be
/// terminated. `early` is what the client sent after its CONNECT head; `upstream` is the
/// connection to the target (or through the next hop to it).
pub(crate) async fn run(
    t: &Arc<Terminator>,
    host: &Host,
    port: u16,
    early: Vec<u8>,
    client: TcpStream,
    upstream: Stream,
    on_refusal: OnRefusal,
) -> Outcome {
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let counts = |o: Outcome| Outcome {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        ..o
    };
    // A TLS connection starts with a handshake record (content type 22).
    let first = match early.first() {
        Some(b) => Some(*b),
        None => {
            let mut b = [0u8; 1];
            match tokio::time::timeout(t.handshake_timeout, client.peek(&mut b)).await {
                Ok(Ok(1)) => Some(b[0]),
                _ => None,
            }
        }
    };
    if first != Some(0x16) {
        return counts(Outcome {
            refused: Some(format!(
                "the tunnel to {host}:{port} does not carry TLS, and the host is TLS-terminated \
                 (network.tlsTerminate); list it in excludeDomains to tunnel it opaquely"
            )),
            ..Outcome::default()
        });
    }
    let fail = |e: String| Outcome {
        error: Some(e),
        ..Outcome::default()
    };
    let config = match t.server_config(host) {
        Ok(c) => c,
        Err(e) => return counts(fail(format!("minting a certificate for {host}: {e}"))),
    };
    let io = ClientIo {
        early,
        pos: 0,
        s: client,
        up: up.clone(),
        down: down.clone(),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(t.handshake_timeout, acceptor.accept(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return counts(fail(format!("the client's TLS handshake: {e}"))),
        Err(_) => {
            return counts(fail(format!(
                "the client's TLS handshake did not finish within {} ms \
                 (network.tlsTerminate.handshakeTimeoutMs)",
                t.handshake_timeout.as_millis()
            )))
        }
    };
    let (sni, client_h2) = {
        let c = tls.get_ref().1;
        (
            c.server_name().map(str::to_string),
            c.alpn_protocol() == Some(b"h2"),
        )
    };
    let misdirected = match &sni {
        Some(name) if normalize_host(name).ok().as_ref() != Some(host) => Some(format!(
            "the TLS server name {name} does not name the CONNECT target {host}"
        )),
        _ => None,
    };
    let upstream = if misdirected.is_some() {
        Err("misdirected".to_string())
    } else {
        open_upstream(t, host, port, upstream).await
    };
    let upstream_error = upstream.as_ref().err().cloned();
    let state = Arc::new(State {
        host: host.clone(),
        port,
        misdirected,
        upstream,
        client_h2,
        on_refusal,
        secrets: t.secrets.clone(),
        rules: t.rules.clone(),
        refuse_ambiguous: t.refuse_ambiguous,
        terminator: t.clone(),
        upgraded: std::sync::Mutex::new(None),
        reverse_host: None,
    });
    serve_connection(state, TokioIo::new(tls), up, down, upstream_error).await
}

/// A connection from a client of the reverse proxy (`ringfence proxy --reverse`): plain
/// HTTP/1.1 in, each request handled as one inside a terminated tunnel to `host:port`, over
/// the verified TLS connection opened on `upstream`.
pub(crate) async fn reverse(
    t: &Arc<Terminator>,
    host: &Host,
    port: u16,
    client: TcpStream,
    upstream: Stream,
    on_refusal: OnRefusal,
) -> Outcome {
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let authority = if port == 443 {
        crate::route::authority(host, port)
            .trim_end_matches(":443")
            .to_string()
    } else {
        crate::route::authority(host, port)
    };
    let reverse_host = match HeaderValue::from_str(&authority) {
        Ok(v) => v,
        Err(_) => {
            return Outcome {
                error: Some(format!("{authority}: not a Host field value")),
                ..Outcome::default()
            }
        }
    };
    let upstream = open_upstream(t, host, port, upstream).await;
    let upstream_error = upstream.as_ref().err().cloned();
    let state = Arc::new(State {
        host: host.clone(),
        port,
        misdirected: None,
        upstream,
        client_h2: false,
        on_refusal,
        secrets: t.secrets.clone(),
        rules: t.rules.clone(),
        refuse_ambiguous: t.refuse_ambiguous,
        terminator: t.clone(),
        upgraded: std::sync::Mutex::new(None),
        reverse_host: Some(reverse_host),
    });
    let io = ClientIo {
        early: Vec::new(),
        pos: 0,
        s: client,
        up: up.clone(),
        down: down.clone(),
    };
    serve_connection(state, TokioIo::new(io), up, down, upstream_error).await
}

/// Answers every request on `client` with `status` and `message` (a reverse-proxy connection
/// the policy refused, or whose upstream could not be reached), then closes.
pub(crate) async fn answer_all(client: TcpStream, status: u16, message: String, blocked: bool) {
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let r = text(status, &message, blocked);
        async move { Ok::<_, Infallible>(r) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE)
        .keep_alive(false)
        .serve_connection(TokioIo::new(client), svc);
    let _ = conn.await;
}

/// Carries the requests of one client connection (`io`, HTTP/2 when the state says the
/// client chose it) until it ends or stays idle.
async fn serve_connection<I>(
    state: Arc<State>,
    io: TokioIo<I>,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    upstream_error: Option<String>,
) -> Outcome
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counts = |o: Outcome| Outcome {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        ..o
    };
    let client_h2 = state.client_h2;
    let after = state.clone();
    let inflight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = inflight.clone();
    let svc = hyper::service::service_fn(move |req| {
        let st = state.clone();
        let counter = counter.clone();
        async move {
            let _busy = InFlight::new(counter);
            Ok::<_, Infallible>(handle(&st, req).await)
        }
    });
    // A connection that moved no byte for IDLE and has no request in progress is closed
    // gracefully, so that an idle keep-alive tunnel gives its maxTunnels slot back.
    let idle = {
        let (up, down, inflight) = (up.clone(), down.clone(), inflight.clone());
        async move {
            let mut last = (u64::MAX, u64::MAX);
            let mut quiet = Duration::ZERO;
            loop {
                tokio::time::sleep(IDLE_CHECK).await;
                let now = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
                if now == last && inflight.load(Ordering::Relaxed) == 0 {
                    quiet += IDLE_CHECK;
                    if quiet >= IDLE {
                        return;
                    }
                } else {
                    quiet = Duration::ZERO;
                    last = now;
                }
            }
        }
    };
    let served = if client_h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = idle => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(IDLE)
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = idle => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    // An upgraded connection (WebSocket) goes on after hyper let go of it.
    let joined = after.upgraded.lock().ok().and_then(|mut j| j.take());
    if let Some(j) = joined {
        let _ = j.await;
    }
    let error = match (upstream_error, served) {
        (Some(e), _) if e != "misdirected" => Some(e),
        (_, Err(e)) if !e.is_incomplete_message() && !e.is_timeout() => {
            Some(format!("the terminated connection: {e}"))
        }
        _ => None,
    };
    counts(Outcome {
        error,
        ..Outcome::default()
    })
}

/// The verified TLS connection to the target, and hyper's client on it.
async fn open_upstream(
    t: &Terminator,
    host: &Host,
    port: u16,
    stream: Stream,
) -> Result<Sender, String> {
    let name = match host {
        Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| format!("{host}: {e}"))?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let connector = tokio_rustls::TlsConnector::from(t.upstream_config());
    let tls = match tokio::time::timeout(t.handshake_timeout, connector.connect(name, stream)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(format!(
                "TLS to {host}:{port} refused: {e} (the upstream certificate is checked \
                 against the host's trust store and SSL_CERT_FILE)"
            ))
        }
        Err(_) => return Err(format!("TLS to {host}:{port}: no handshake in time")),
    };
    let up_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if up_h2 {
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 to {host}:{port}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::H2(s))
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 to {host}:{port}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(Sender::H1(tokio::sync::Mutex::new(s)))
    }
}

fn text(status: u16, message: &str, blocked: bool) -> Response<Body> {
    let body = format!("{message}\n");
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if blocked {
        r.headers_mut().insert(
            "x-proxy-error",
            HeaderValue::from_static("blocked-by-ringfence"),
        );
    }
    r
}

/// `text` with every placeholder of `secrets` replaced by its real value, when each one found
/// may go to `host:port`; `Ok(None)` when there is none; the first that may not, as an error.
fn substitute<'a>(
    secrets: &'a [super::Secret],
    text: &str,
    host: &Host,
    port: u16,
) -> Result<Option<String>, &'a super::Secret> {
    let mut out: Option<String> = None;
    for s in secrets {
        let current = out.as_deref().unwrap_or(text);
        if !current.contains(&s.placeholder) {
            continue;
        }
        if !s.injects_at(host, port) {
            return Err(s);
        }
        out = Some(current.replace(&s.placeholder, s.value()));
    }
    Ok(out)
}

/// Whether an authority (`host[:port]`, as in Host or `:authority`) names `host:port`.
fn names_target(authority: &str, host: &Host, port: u16) -> bool {
    let Ok((h, p)) = split_host_port(authority) else {
        return false;
    };
    p.unwrap_or(443) == port && normalize_host(h).ok().as_ref() == Some(host)
}

/// Whether the Connection field lists `token`.
fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop fields (RFC 9110 7.6.1), and those the Connection field names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for n in named {
        h.remove(n.as_str());
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "transfer-encoding",
        "upgrade",
        "te",
    ] {
        h.remove(n);
    }
}

async fn handle(st: &State, mut req: Request<Incoming>) -> Response<Body> {
    let refuse_by = |status: u16, rule: Option<String>, why: String| {
        (st.on_refusal)(
            crate::Decision::Denied,
            rule,
            Some(format!("{status}: {why}")),
        );
        text(status, &why, true)
    };
    let refuse = |status: u16, why: String| refuse_by(status, None, why);
    if let Some(h) = &st.reverse_host {
        // The reverse proxy goes to one upstream: a request that names a target of its own
        // (a client that takes it for a forward proxy) is refused rather than redirected.
        if req.uri().authority().is_some() || req.method() == http::Method::CONNECT {
            return refuse(
                400,
                "this is a reverse proxy: send requests with a path only (origin form)".into(),
            );
        }
        req.headers_mut().remove(header::HOST);
        req.headers_mut().insert(header::HOST, h.clone());
    }
    if let Some(why) = &st.misdirected {
        return refuse(421, why.clone());
    }
    // A tunnel inside the tunnel would carry what no rule sees.
    if req.method() == http::Method::CONNECT {
        return refuse(
            405,
            "CONNECT inside a TLS-terminated tunnel is not forwarded".into(),
        );
    }
    // Every name the request gives for its target must be the CONNECT target.
    let target = format!("{}:{}", st.host, st.port);
    let mut names: Vec<String> = Vec::new();
    if let Some(a) = req.uri().authority() {
        names.push(a.as_str().to_string());
    }
    for v in req.headers().get_all(header::HOST) {
        match v.to_str() {
            Ok(v) => names.push(v.to_string()),
            Err(_) => return refuse(400, "a Host field that is not text".into()),
        }
    }
    let Some(authority) = names.first().cloned() else {
        return refuse(400, "a request without Host or :authority".into());
    };
    if let Some(bad) = names.iter().find(|n| !names_target(n, &st.host, st.port)) {
        return refuse(
            421,
            format!("the request names {bad}, but the tunnel goes to {target}"),
        );
    }
    // Request rules see the path normalised once, and that path is what is forwarded.
    let (path, query) = match req.uri().path_and_query() {
        Some(pq) => (pq.path().to_string(), pq.query().map(str::to_string)),
        None => ("/".to_string(), None),
    };
    let Some(normal) = ringfence_policy::normalize_path(&path) else {
        return refuse(400, "a malformed percent-escape in the path".into());
    };
    if st.refuse_ambiguous && normal != path {
        return refuse(
            400,
            format!(
                "the path {path} names {normal} once normalised \
                 (network.ambiguousRequestTarget: \"refuse\")"
            ),
        );
    }
    // asSpelled: forwarded as the client wrote it, judged on both readings.
    let as_spelled = st.terminator.as_spelled && !st.refuse_ambiguous;
    let (path, normal) = if as_spelled {
        (path, normal)
    } else {
        (normal.clone(), normal)
    };
    let verdict = {
        let headers = req.headers();
        let field = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        st.rules.decide_readings(
            &st.host,
            st.port,
            req.method().as_str(),
            &path,
            &normal,
            &field,
        )
    };
    match verdict {
        super::rules::RuleVerdict::Unrestricted => {}
        super::rules::RuleVerdict::Allowed(rule) => {
            (st.on_refusal)(crate::Decision::Allowed, Some(rule), None)
        }
        super::rules::RuleVerdict::Denied { rule, reason } => return refuse_by(403, rule, reason),
    }
    let sender = match &st.upstream {
        Ok(s) => s,
        Err(e) => {
            let mut r = text(502, e, false);
            if st.reverse_host.is_some() {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
    };
    // A WebSocket (or other HTTP/1.1) upgrade passes once the request was allowed: the
    // upgrade fields go on, and after a 101 both sides are joined byte for byte.
    let upgrade = (!st.client_h2)
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
        .filter(|_| connection_has(req.headers(), "upgrade"));
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    if upgrade.is_some() && matches!(sender, Sender::H2(_)) {
        return text(
            502,
            &format!("{target} speaks HTTP/2; an HTTP/1.1 upgrade cannot be carried to it"),
            false,
        );
    }
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = &upgrade {
        parts.headers.insert(header::UPGRADE, u.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut pq = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    // AWS SigV4 by a masked key: judged on the request as the client signed it (the
    // placeholder key id is the trigger), signed again once it is what goes upstream.
    let sig_plan = super::sigv4::plan(
        &st.terminator.aws,
        st.terminator.sigv4_pass,
        &parts.headers,
        &pq,
        &st.host,
        st.port,
    );
    if let Some(super::sigv4::Plan::Refuse(why)) = sig_plan {
        return refuse(403, why);
    }
    // Masked credentials: the real value in place of the placeholder toward the credential's
    // own hosts; a placeholder on its way anywhere else stops the request.
    if !st.secrets.is_empty() {
        let leak = |s: &super::Secret, place: &str| {
            format!(
                "the placeholder of the masked credential {} was sent to {target} in {place}, \
                 which is not one of its injectHosts: refused as an attempted credential leak",
                s.name
            )
        };
        match substitute(&st.secrets, &pq, &st.host, st.port) {
            Ok(Some(new)) => pq = new,
            Ok(None) => {}
            Err(s) => return refuse(403, leak(s, "the URL")),
        }
        let mut changed = Vec::new();
        for (name, value) in parts.headers.iter() {
            let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                continue;
            };
            match substitute(&st.secrets, text, &st.host, st.port) {
                Ok(Some(new)) => changed.push((name.clone(), value.clone(), new)),
                Ok(None) => {}
                Err(s) => return refuse(403, leak(s, &format!("the {name} field"))),
            }
        }
        for (name, old, new) in changed {
            let Ok(new) = HeaderValue::from_str(&new) else {
                return refuse(
                    400,
                    format!("the {name} field with the credential is not a valid field value"),
                );
            };
            let values: Vec<HeaderValue> = parts
                .headers
                .get_all(&name)
                .iter()
                .map(|v| if *v == old { new.clone() } else { v.clone() })
                .collect();
            parts.headers.remove(&name);
            for v in values {
                parts.headers.append(name.clone(), v);
            }
        }
    }
    let uri = match sender {
        Sender::H1(_) => pq.parse(),
        Sender::H2(_) => format!("https://{authority}{pq}").parse(),
    };
    parts.uri = match uri {
        Ok(u) => u,
        Err(e) => return refuse(400, format!("the request target: {e}")),
    };
    match sender {
        Sender::H1(_) => {
            parts.version = Version::HTTP_11;
            if !parts.headers.contains_key(header::HOST) {
                match HeaderValue::from_str(&authority) {
                    Ok(v) => {
                        parts.headers.insert(header::HOST, v);
                    }
                    Err(_) => return refuse(400, "an authority that is not a header value".into()),
                }
            }
        }
        Sender::H2(_) => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
    }
    // credentials.inject: the proxy's own value, whatever the client sent in that field.
    for j in st
        .terminator
        .injections
        .iter()
        .filter(|j| j.applies(&st.host, st.port))
    {
        parts.headers.insert(j.name.clone(), j.value.clone());
    }
    let body: Body = if let Some(plan) = &sig_plan {
        let whole = match http_body_util::Limited::new(body, super::sigv4::MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return refuse(
                    403,
                    format!(
                        "an AWS SigV4 request signed with a masked credential is re-signed over \
                         its whole body, which could not be read within {} bytes: {e}",
                        super::sigv4::MAX_BODY
                    ),
                )
            }
        };
        let mut buf = whole.to_vec();
        if plan.streaming() {
            buf = match super::sigv4::dechunk(&buf) {
                Ok(b) => b,
                Err(e) => {
                    return refuse(
                        400,
                        format!("an AWS SigV4 streaming upload that cannot be read: {e}"),
                    )
                }
            };
        }
        if !st.secrets.is_empty() {
            let scan = super::body::Scan::new(st.secrets.clone(), st.host.clone(), st.port);
            match scan.step(&mut buf, true) {
                Ok(out) => buf = out,
                Err(name) => {
                    return refuse(
                        403,
                        format!(
                            "the placeholder of the masked credential {name} was sent to \
                             {target} in the body, which is not one of its injectHosts: \
                             refused as an attempted credential leak"
                        ),
                    )
                }
            }
        }
        let host = match parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
        {
            Some(h) => h.to_string(),
            None => authority.clone(),
        };
        match super::sigv4::resign(
            plan,
            parts.method.as_str(),
            &pq,
            &host,
            &mut parts.headers,
            &mut buf,
        ) {
            Ok(None) => {}
            // A presigned URL: the signature is in the query.
            Ok(Some(signed)) => {
                let uri = match sender {
                    Sender::H1(_) => signed.parse(),
                    Sender::H2(_) => format!("https://{authority}{signed}").parse(),
                };
                parts.uri = match uri {
                    Ok(u) => u,
                    Err(e) => return refuse(400, format!("the re-signed request target: {e}")),
                };
            }
            Err(e) => return refuse(403, format!("AWS SigV4 re-signing failed: {e}")),
        }
        if !buf.is_empty() || parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(buf.len()));
        }
        Full::new(Bytes::from(buf))
            .map_err(|never: Infallible| match never {})
            .boxed()
    } else if st.secrets.is_empty() || body.is_end_stream() {
        body.map_err(Into::into).boxed()
    } else {
        let scan = super::body::Scan::new(st.secrets.clone(), st.host.clone(), st.port);
        let small = body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= super::body::WHOLE);
        if small {
            let whole = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(400, &format!("reading the request body: {e}"), false),
            };
            let mut buf = whole.to_vec();
            let out = match scan.step(&mut buf, true) {
                Ok(out) => out,
                Err(name) => {
                    return refuse(
                        403,
                        format!(
                            "the placeholder of the masked credential {name} was sent to \
                             {target} in the body, which is not one of its injectHosts: \
                             refused as an attempted credential leak"
                        ),
                    )
                }
            };
            if parts.headers.contains_key(header::CONTENT_LENGTH) {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            }
            Full::new(Bytes::from(out))
                .map_err(|never: Infallible| match never {})
                .boxed()
        } else {
            // Streamed: a value put in changes the length, so the upstream gets it chunked.
            if scan.injects() {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let on_refusal = st.on_refusal.clone();
            let shown = target.clone();
            let on_leak = Box::new(move |name: String| {
                on_refusal(
                    crate::Decision::Denied,
                    None,
                    Some(format!(
                        "the placeholder of the masked credential {name} was sent to {shown} \
                         in the body, which is not one of its injectHosts: the request was \
                         cut off as an attempted credential leak"
                    )),
                )
            });
            super::body::Scanned::new(body, scan, on_leak).boxed()
        }
    };
    let req = Request::from_parts(parts, body);
    let resp = match sender {
        Sender::H1(m) => {
            let mut s = m.lock().await;
            match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            }
        }
        Sender::H2(s) => {
            let mut s = s.clone();
            match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            }
        }
    };
    match resp {
        Ok(mut r) => {
            let upgraded = match (client_upgrade, r.status()) {
                (Some(client), StatusCode::SWITCHING_PROTOCOLS) => {
                    Some((client, hyper::upgrade::on(&mut r)))
                }
                _ => None,
            };
            let (mut p, b) = r.into_parts();
            let upgrade_field = p.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut p.headers);
            if let Some((client, upstream)) = upgraded {
                if let Some(u) = upgrade_field {
                    p.headers.insert(header::UPGRADE, u);
                }
                p.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                let joined = tokio::spawn(async move {
                    if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                });
                if let Ok(mut j) = st.upgraded.lock() {
                    *j = Some(joined);
                }
            }
            let names: Vec<header::HeaderName> = p
                .headers
                .keys()
                .filter(|n| st.terminator.strips(n.as_str()))
                .cloned()
                .collect();
            for n in names {
                p.headers.remove(n);
            }
            p.version = if st.client_h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            Response::from_parts(p, b.map_err(Into::into).boxed())
        }
        Err(e) => {
            let mut r = text(502, &format!("{target}: {e}"), false);
            // The reverse proxy's client connection has one upstream connection: once that
            // failed, the client is told to connect again (and gets a new one).
            if st.reverse_host.is_some() {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn authorities_must_name_the_target() {
        let h = Host::Name("api.example.com".into());
        assert!(names_target("api.example.com", &h, 443));
        assert!(names_target("API.example.com.:443", &h, 443));
        assert!(!names_target("api.example.com:8443", &h, 443));
        assert!(names_target("api.example.com:8443", &h, 8443));
        assert!(!names_target("other.example.com", &h, 443));
        let ip = Host::Ip("127.0.0.1".parse().unwrap());
        assert!(names_target("127.0.0.1:9000", &ip, 9000));
        assert!(!names_target("localhost:9000", &ip, 9000));
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-drop"));
        h.insert("x-drop", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("2"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }
}
