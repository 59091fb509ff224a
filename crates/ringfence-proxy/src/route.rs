//! Where an allowed connection goes, once the policy has said yes: the user's inspection proxy
//! on a unix socket (`network.mitmProxy`), a parent proxy (`network.parentProxy` or the host's
//! `HTTP(S)_PROXY`), or directly. The first two are asked with `CONNECT host:port` for tunnels
//! and get the absolute-form request for plain HTTP; they resolve the name themselves, so the
//! resolved-address check applies only to what this proxy resolves (direct connections).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use ringfence_policy::ProxyUrl;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

use crate::host::Host;
use crate::proxy::{ConnectError, Proxy};

/// The longest CONNECT answer head read from a parent or inspection proxy.
const MAX_ANSWER: usize = 16 * 1024;

/// The next hop of an allowed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Direct,
    Parent(ProxyUrl),
    Mitm(PathBuf),
}

impl Route {
    /// For the decision record: how the connection left (`None` for direct).
    pub(crate) fn via(&self) -> Option<String> {
        match self {
            Route::Direct => None,
            Route::Parent(u) => Some(format!("parent {}", u.shown())),
            Route::Mitm(p) => Some(format!("mitm unix:{}", p.display())),
        }
    }
}

/// A connection to the next hop.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A tunnel (or an HTTP connection) to the next hop, ready for the client's bytes.
pub(crate) struct Opened {
    pub stream: Stream,
    /// Bytes the next hop sent after its CONNECT answer (an SSH banner, say).
    pub early: Vec<u8>,
    /// The address connected to (the destination, or the parent proxy).
    pub resolved: Option<SocketAddr>,
}

/// `host:port` as a CONNECT target and in absolute-form URLs (IPv6 in brackets, as
/// [`Host`]'s display already writes it).
pub(crate) fn authority(host: &Host, port: u16) -> String {
    format!("{host}:{port}")
}

impl Proxy {
    /// The route for `host:port` under the policy in force. `plain_http` selects the parent
    /// for `http://` requests (only an HTTP proxy serves those).
    pub(crate) fn route(&self, host: &Host, port: u16, plain_http: bool) -> Route {
        if let Some(path) = self.policy().mitm_socket(host, port) {
            return Route::Mitm(path.to_path_buf());
        }
        let Some(parent) = self.parent() else {
            return Route::Direct;
        };
        // An allowed host-local literal (loopback, link-local, metadata, this host's own
        // address) means this host's service; at the parent it would name another one.
        if let Host::Ip(ip) = host {
            if self.is_host_local(*ip) {
                return Route::Direct;
            }
        }
        let name = host.to_string();
        let url = if plain_http {
            parent.for_http(&name)
        } else {
            parent.for_tunnel(&name)
        };
        match url {
            Some(u) => Route::Parent(u.clone()),
            None => Route::Direct,
        }
    }

    /// Opens a tunnel to `host:port` along `route`.
    pub(crate) async fn open_tunnel(
        &self,
        host: &Host,
        port: u16,
        route: &Route,
    ) -> Result<Opened, ConnectError> {
        let target = authority(host, port);
        let timeout = self.limits.connect_timeout;
        let fail = |e: String| ConnectError::Failed(e);
        match route {
            Route::Direct => {
                let (s, addr) = self.connect(host, port).await?;
                Ok(Opened {
                    stream: Stream::Tcp(s),
                    early: Vec::new(),
                    resolved: Some(addr),
                })
            }
            Route::Parent(url) => {
                let (mut s, addr) = connect_parent(url, timeout).await.map_err(fail)?;
                let early = tokio::time::timeout(
                    timeout,
                    handshake(&mut s, &target, url.authorization().as_deref()),
                )
                .await
                .map_err(|_| fail(format!("the parent proxy {} did not answer", url.shown())))?
                .map_err(|e| fail(format!("the parent proxy {}: {e}", url.shown())))?;
                Ok(Opened {
                    stream: Stream::Tcp(s),
                    early,
                    resolved: Some(addr),
                })
            }
            Route::Mitm(path) => {
                let mut s = connect_mitm(path, timeout).await.map_err(fail)?;
                let early = tokio::time::timeout(timeout, handshake(&mut s, &target, None))
                    .await
                    .map_err(|_| fail(format!("the mitmProxy {} did not answer", path.display())))?
                    .map_err(|e| fail(format!("the mitmProxy {}: {e}", path.display())))?;
                Ok(Opened {
                    stream: Stream::Unix(s),
                    early,
                    resolved: None,
                })
            }
        }
    }

    /// Opens the connection a plain `http://` request is sent on along `route`.
    pub(crate) async fn open_http(
        &self,
        host: &Host,
        port: u16,
        route: &Route,
    ) -> Result<Opened, ConnectError> {
        let timeout = self.limits.connect_timeout;
        match route {
            Route::Direct => self.open_tunnel(host, port, route).await,
            Route::Parent(url) => {
                let (s, addr) = connect_parent(url, timeout)
                    .await
                    .map_err(ConnectError::Failed)?;
                Ok(Opened {
                    stream: Stream::Tcp(s),
                    early: Vec::new(),
                    resolved: Some(addr),
                })
            }
            Route::Mitm(path) => Ok(Opened {
                stream: Stream::Unix(
                    connect_mitm(path, timeout)
                        .await
                        .map_err(ConnectError::Failed)?,
                ),
                early: Vec::new(),
                resolved: None,
            }),
        }
    }
}

/// Connects to the parent proxy. Its address is the user's configuration, not the sandbox's
/// choice, so it is not held to the resolved-address check (it is often on loopback).
async fn connect_parent(
    url: &ProxyUrl,
    timeout: std::time::Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot resolve the parent proxy {}: {e}", url.shown()))?
        .collect();
    let mut last = format!("the parent proxy {} has no addresses", url.shown());
    for a in found {
        match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, a));
            }
            Ok(Err(e)) => last = format!("connecting to the parent proxy {}: {e}", url.shown()),
            Err(_) => last = format!("connecting to the parent proxy {}: timed out", url.shown()),
        }
    }
    Err(last)
}

async fn connect_mitm(
    path: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<UnixStream, String> {
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!(
            "connecting to the mitmProxy {}: {e}",
            path.display()
        )),
        Err(_) => Err(format!(
            "connecting to the mitmProxy {}: timed out",
            path.display()
        )),
    }
}

/// Sends `CONNECT target` and reads the answer head; a 2xx opens the tunnel. Returns the bytes
/// that followed the head.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    target: &str,
    authorization: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&buf[..end])
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let b = status.as_bytes();
            let ok = (status.starts_with("HTTP/1.1 2") || status.starts_with("HTTP/1.0 2"))
                && b.len() >= 12
                && b[10..12].iter().all(u8::is_ascii_digit)
                && b.get(12).is_none_or(|c| *c == b' ');
            if !ok {
                let shown: String = status
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                return Err(format!("CONNECT {target} refused: {shown}"));
            }
            return Ok(buf[end + 4..].to_vec());
        }
        if buf.len() > MAX_ANSWER {
            return Err(format!(
                "an answer to CONNECT longer than {MAX_ANSWER} bytes"
            ));
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer to CONNECT: {e}"))?;
        if n == 0 {
            return Err("closed the connection instead of answering CONNECT".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Stream {
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }

    pub(crate) async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b).await,
            Stream::Unix(s) => s.write_all(b).await,
        }
    }
}

/// The read side of a [`Stream`].
pub(crate) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The write side of a [`Stream`].
pub(crate) enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl ReadHalf {
    /// Waits until a read may find data (or the end, or an error).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(r) => r.readable().await,
            ReadHalf::Unix(r) => r.readable().await,
        }
    }

    /// Reads what is there without waiting (`WouldBlock` when nothing is).
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.try_read(buf),
            ReadHalf::Unix(r) => r.try_read(buf),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Unix(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// A socket that splice(2) can move bytes from or to, with tokio's readiness.
pub(crate) trait Sock {
    fn fd(&self) -> BorrowedFd<'_>;
    async fn wait_readable(&self) -> io::Result<()>;
    async fn io<R>(&self, interest: Interest, f: impl FnMut() -> io::Result<R>) -> io::Result<R>;
    /// `f` once if the socket is ready now (WouldBlock when it is not, clearing the
    /// readiness), without waiting.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Sock for TcpStream {
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    async fn wait_readable(&self) -> io::Result<()> {
        self.readable().await
    }
    async fn io<R>(&self, interest: Interest, f: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.async_io(interest, f).await
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(interest, f)
    }
}

impl Sock for UnixStream {
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    async fn wait_readable(&self) -> io::Result<()> {
        self.readable().await
    }
    async fn io<R>(&self, interest: Interest, f: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.async_io(interest, f).await
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(interest, f)
    }
}

impl Sock for Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
    async fn wait_readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    }
    async fn io<R>(&self, interest: Interest, f: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        match self {
            Stream::Tcp(s) => s.async_io(interest, f).await,
            Stream::Unix(s) => s.async_io(interest, f).await,
        }
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Stream::Tcp(s) => s.try_io(interest, f),
            Stream::Unix(s) => s.try_io(interest, f),
        }
    }
}

impl Sock for ReadHalf {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            ReadHalf::Tcp(r) => r.as_ref().as_fd(),
            ReadHalf::Unix(r) => r.as_ref().as_fd(),
        }
    }
    async fn wait_readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(r) => r.as_ref().readable().await,
            ReadHalf::Unix(r) => r.as_ref().readable().await,
        }
    }
    async fn io<R>(&self, interest: Interest, f: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        match self {
            ReadHalf::Tcp(r) => r.as_ref().async_io(interest, f).await,
            ReadHalf::Unix(r) => r.as_ref().async_io(interest, f).await,
        }
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            ReadHalf::Tcp(r) => r.as_ref().try_io(interest, f),
            ReadHalf::Unix(r) => r.as_ref().try_io(interest, f),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    struct NoHooks;
    impl crate::Hooks for NoHooks {
        fn record(&self, _: &crate::DecisionRecord) {}
        fn ask(
            &self,
            _: crate::AskQuery,
        ) -> Pin<Box<dyn std::future::Future<Output = crate::AskAnswer> + Send>> {
            Box::pin(async { crate::AskAnswer::Deny })
        }
    }

    #[test]
    fn routes() {
        let cfg = ringfence_policy::ParentProxySettings {
            http: Some("http://u:p@web.corp:8080".into()),
            https: Some("http://tun.corp:3128".into()),
            no_proxy: Some("direct.test,10.0.0.0/8".into()),
        };
        let parent = ringfence_policy::ParentProxy::resolve(Some(&cfg), |_| None).unwrap();
        let p = ringfence_policy::Policy {
            mitm_proxy: Some(ringfence_policy::MitmProxySettings {
                socket_path: "/run/m.sock".into(),
                domains: vec!["*.inspect.test".into()],
            }),
            ..Default::default()
        };
        let net = crate::NetPolicy::from_policy(&p).unwrap();
        let proxy = Proxy::with_parent(
            net,
            std::sync::Arc::new(NoHooks),
            crate::Limits::default(),
            parent,
        );
        let h = |s: &str| crate::host::normalize_host(s).unwrap();
        let via = |host: &str, http: bool| proxy.route(&h(host), 80, http).via();
        assert_eq!(via("a.com", false).unwrap(), "parent http://tun.corp:3128");
        assert_eq!(
            via("a.com", true).unwrap(),
            "parent http://***@web.corp:8080"
        );
        assert_eq!(
            via("[2001:db8::1]", false).unwrap(),
            "parent http://tun.corp:3128"
        );
        for direct in [
            "direct.test",
            "x.direct.test",
            "10.1.2.3",
            "localhost",
            "127.0.0.1",
            "169.254.169.254",
            "[::1]",
            "[fe80::1]",
        ] {
            assert_eq!(
                proxy.route(&h(direct), 80, false),
                Route::Direct,
                "{direct}"
            );
        }
        // The inspection proxy comes first, for tunnels and plain HTTP alike.
        for http in [false, true] {
            assert_eq!(
                proxy.route(&h("api.inspect.test"), 443, http),
                Route::Mitm("/run/m.sock".into())
            );
        }
        // Without a parent everything else is direct.
        let alone = Proxy::new(crate::NetPolicy::default(), std::sync::Arc::new(NoHooks));
        assert_eq!(alone.route(&h("a.com"), 443, false), Route::Direct);
    }

    #[tokio::test]
    async fn connect_handshake_keeps_early_bytes_and_refuses_non_2xx() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let t =
            tokio::spawn(async move { handshake(&mut a, "x.com:22", Some("Basic dTpw")).await });
        let mut got = vec![0u8; 1024];
        let n = b.read(&mut got).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&got[..n]).unwrap(),
            "CONNECT x.com:22 HTTP/1.1\r\nHost: x.com:22\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        b.write_all(b"HTTP/1.1 200 OK\r\nVia: p\r\n\r\nSSH-2.0-x\r\n")
            .await
            .unwrap();
        assert_eq!(t.await.unwrap().unwrap(), b"SSH-2.0-x\r\n");
        for answer in [
            &b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"[..],
            b"HTTP/1.1 2000 x\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
        ] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let t = tokio::spawn(async move { handshake(&mut a, "x.com:443", None).await });
            let _ = b.read(&mut [0u8; 512]).await.unwrap();
            b.write_all(answer).await.unwrap();
            assert!(t.await.unwrap().is_err(), "{answer:?}");
        }
    }
}
