//! The proxy's shared state and the steps every protocol goes through: decide (policy, then
//! asking), resolve once, drop refused addresses, connect, record.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use ringfence_policy::ParentProxy;

use crate::host::{normalize_host, Host};
use crate::policy::{NetPolicy, Verdict};
use crate::Error;

/// How a client reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// An absolute-form `http://` request, forwarded by the proxy.
    Http,
    /// An HTTP CONNECT tunnel.
    Connect,
    /// A SOCKS5 CONNECT tunnel.
    Socks5,
    /// A plain TCP connection to a host service's own address inside the sandbox, carried to
    /// the same address on the host (see [`Proxy::serve_host_service`]).
    Tcp,
    /// A request inside a TLS-terminated CONNECT tunnel (recorded when it is refused).
    Https,
    /// A TCP connection captured by transparent mode (see [`crate::transparent`]).
    Transparent,
    /// A name looked up through transparent mode's DNS server.
    Dns,
    /// A UDP datagram other than DNS that transparent mode received (always refused).
    Udp,
    /// An ICMP message that transparent mode received (always refused).
    Icmp,
    /// A connection to the reverse proxy (`ringfence proxy --reverse`), to its upstream.
    Reverse,
    /// A TLS connection to the gateway (`ringfence proxy --tls-cert`), refused before it
    /// sent a request.
    Tls,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Connect => "connect",
            Protocol::Socks5 => "socks5",
            Protocol::Tcp => "tcp",
            Protocol::Https => "https",
            Protocol::Transparent => "transparent",
            Protocol::Dns => "dns",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Reverse => "reverse",
            Protocol::Tls => "tls",
        }
    }
}

/// The answer to a question about a host in neither list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskAnswer {
    /// Allow this connection only.
    Once,
    /// Allow `host:port` from now on (the proxy adds the entry itself; writing it to a
    /// settings file is the caller's job).
    Always,
    Deny,
}

impl AskAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            AskAnswer::Once => "once",
            AskAnswer::Always => "always",
            AskAnswer::Deny => "deny",
        }
    }
}

/// A question about a host in neither list; the connection waits for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskQuery {
    /// The host in canonical form (lowercase, punycode, IPv6 in brackets).
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    /// The client's identity (proxy user name), if it gave one.
    pub client: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
}

/// One decision: reported when a request or tunnel ends, or at once when it is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Canonical host, or the name as written (escaped) when it was malformed.
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    pub decision: Decision,
    /// The policy entry that decided, if one did.
    pub rule: Option<String>,
    /// Why it was denied (one line).
    pub reason: Option<String>,
    /// The answer, when the user was asked.
    pub asked: Option<AskAnswer>,
    /// Proxy user name (SOCKS5 username or Proxy-Authorization user).
    pub client: Option<String>,
    /// The client's address as the proxy saw it.
    pub peer: Option<SocketAddr>,
    /// The address connected to (the parent proxy's, when the connection went through one).
    pub resolved: Option<SocketAddr>,
    /// The proxy the connection went through (`parent http://host:port`, `mitm unix:PATH`);
    /// `None` for a direct connection.
    pub via: Option<String>,
    /// An allowed connection that failed upstream (lookup, connect, protocol).
    pub error: Option<String>,
    /// Bytes from the client to the destination and back (bodies and tunnelled data).
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
}

impl DecisionRecord {
    /// The denial of a client that gave no known client token (`ringfence proxy --clients`).
    pub(crate) fn unauthenticated(
        host: String,
        port: u16,
        protocol: Protocol,
        peer: SocketAddr,
    ) -> DecisionRecord {
        DecisionRecord {
            host,
            port,
            protocol,
            decision: Decision::Denied,
            rule: None,
            reason: Some("proxy authentication required (no known client and token)".into()),
            asked: None,
            client: None,
            peer: Some(peer),
            resolved: None,
            via: None,
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
        }
    }

    /// The record as a JSON object (camelCase keys), for logs and the control channel.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol.as_str(),
            "decision": match self.decision { Decision::Allowed => "allow", Decision::Denied => "deny" },
            "bytesUp": self.bytes_up,
            "bytesDown": self.bytes_down,
            "durationMs": self.duration.as_millis() as u64,
        });
        let opt = [
            ("rule", self.rule.clone()),
            ("reason", self.reason.clone()),
            ("asked", self.asked.map(|a| a.as_str().to_string())),
            ("client", self.client.clone()),
            ("peer", self.peer.map(|p| p.to_string())),
            ("resolved", self.resolved.map(|p| p.to_string())),
            ("via", self.via.clone()),
            ("error", self.error.clone()),
        ];
        if let Value::Object(m) = &mut v {
            for (k, val) in opt {
                if let Some(val) = val {
                    m.insert(k.into(), val.into());
                }
            }
        }
        v
    }
}

/// What the proxy's owner provides: a sink for decisions and someone to ask.
pub trait Hooks: Send + Sync + 'static {
    /// Called once per request or tunnel when it ends, or when it is denied.
    fn record(&self, d: &DecisionRecord);
    /// Called for a host in neither list when asking is enabled. The proxy denies when the
    /// answer does not come within the policy's ask timeout. Concurrent connections to the
    /// same host and port share one question.
    fn ask(&self, q: AskQuery) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>>;
    /// Names the program that opened a connection to a host service (`peer` is its end,
    /// `service` the address it connected to), when the owner can tell; it becomes the
    /// record's `client`. Runs on a blocking thread while the upstream connection is made.
    fn identify(&self, peer: SocketAddr, service: SocketAddr) -> Option<String> {
        let _ = (peer, service);
        None
    }
}

/// Parsing limits and timeouts. Anything beyond a limit is refused, never truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request or response head (request line + headers), bytes.
    pub max_head_bytes: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Longest chunk-size line of a chunked body, bytes.
    pub max_chunk_line: usize,
    /// Time a client has to send a complete request head (and a SOCKS5 client its request).
    pub head_timeout: Duration,
    /// Time to establish the upstream TCP connection.
    pub connect_timeout: Duration,
    /// Time a client connection may sit idle between HTTP requests.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_chunk_line: 4096,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

type Waiting = Vec<oneshot::Sender<AskAnswer>>;

/// The egress proxy. Shared by all its connections; the policy can be replaced while it runs.
pub struct Proxy {
    policy: RwLock<Arc<NetPolicy>>,
    hooks: Arc<dyn Hooks>,
    /// The parent proxy allowed connections leave through, fixed for the proxy's life.
    parent: Option<ParentProxy>,
    /// This host's interface addresses, listed when a decision first needs them (a run whose
    /// sandbox never connects does not pay for the listing).
    own_addrs: std::sync::OnceLock<Vec<IpAddr>>,
    pub(crate) limits: Limits,
    /// Questions in flight, with the connections waiting for the same answer.
    asking: Mutex<HashMap<(Host, u16), Waiting>>,
    /// Connections being served (each is recorded when it ends).
    active: std::sync::atomic::AtomicUsize,
    /// `network.tlsTerminate`: set once, before the proxy serves (see [`Proxy::terminate_tls`]).
    tls: std::sync::OnceLock<Arc<crate::tls::Terminator>>,
    /// With clients, every connection must authenticate as one, and its policy decides.
    clients: RwLock<Option<Arc<crate::clients::Clients>>>,
}

/// Counts a connection as active for as long as it is served.
pub(crate) struct ActiveGuard(pub(crate) Arc<Proxy>);

impl ActiveGuard {
    pub(crate) fn new(proxy: Arc<Proxy>) -> ActiveGuard {
        proxy
            .active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ActiveGuard(proxy)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A destination the policy allowed.
pub(crate) struct Allowed {
    pub host: Host,
    pub rule: Option<String>,
    pub asked: Option<AskAnswer>,
}

/// A refusal, with what the record needs.
pub(crate) struct Refused {
    pub host: String,
    pub rule: Option<String>,
    pub reason: String,
    pub asked: Option<AskAnswer>,
    /// The reason is the user's own (`deniedDomainReasons`), to be shown to the client as is.
    pub own_reason: bool,
}

/// Why no upstream connection was made for an allowed destination.
pub(crate) enum ConnectError {
    /// Every address the name resolved to is refused: a policy block.
    Refused(String),
    /// Lookup or connect failed: a network error.
    Failed(String),
}

impl Proxy {
    /// A proxy with the default [`Limits`]. This host's interface addresses are read once, when
    /// the first decision needs them.
    pub fn new(policy: NetPolicy, hooks: Arc<dyn Hooks>) -> Arc<Proxy> {
        Self::with_limits(policy, hooks, Limits::default())
    }

    pub fn with_limits(policy: NetPolicy, hooks: Arc<dyn Hooks>, limits: Limits) -> Arc<Proxy> {
        Self::with_parent(policy, hooks, limits, None)
    }

    /// A proxy whose allowed connections leave through `parent` (except its `noProxy` hosts
    /// and those of `network.mitmProxy`). The policy is decided first, as without one.
    pub fn with_parent(
        policy: NetPolicy,
        hooks: Arc<dyn Hooks>,
        limits: Limits,
        parent: Option<ParentProxy>,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            policy: RwLock::new(Arc::new(policy)),
            hooks,
            parent,
            own_addrs: std::sync::OnceLock::new(),
            limits,
            asking: Mutex::new(HashMap::new()),
            active: std::sync::atomic::AtomicUsize::new(0),
            tls: std::sync::OnceLock::new(),
            clients: RwLock::new(None),
        })
    }

    /// Terminates TLS on CONNECT tunnels as `t` says, for the proxy's whole life. Call it
    /// before serving: connections accepted before it are tunnelled opaquely.
    pub fn terminate_tls(&self, t: Arc<crate::tls::Terminator>) {
        let _ = self.tls.set(t);
    }

    /// The TLS termination in force, if any.
    pub(crate) fn tls(&self) -> Option<&Arc<crate::tls::Terminator>> {
        self.tls.get()
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<NetPolicy> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This host's interface addresses, listed once, at the first decision that needs them.
    fn own_addrs(&self) -> &[IpAddr] {
        self.own_addrs.get_or_init(interface_addresses)
    }

    /// Whether `ip` is an address of this host or a host-local kind (loopback, link-local,
    /// metadata endpoint, ...), which only a direct connection reaches as meant.
    pub(crate) fn is_host_local(&self, ip: IpAddr) -> bool {
        crate::policy::local_kind(ip).is_some()
            || self
                .own_addrs()
                .iter()
                .any(|o| crate::host::canonical_ip(*o) == crate::host::canonical_ip(ip))
    }

    /// The parent proxy, if one is configured.
    pub fn parent(&self) -> Option<&ParentProxy> {
        self.parent.as_ref()
    }

    /// Requires every connection from now on to authenticate as one of `clients`, whose own
    /// policy then decides for it (`None`: no authentication, the proxy's policy for all).
    /// Connections already open keep going.
    pub fn set_clients(&self, clients: Option<crate::clients::Clients>) {
        *self.clients.write().unwrap_or_else(PoisonError::into_inner) = clients.map(Arc::new);
    }

    /// The clients in force, if authentication is required.
    pub(crate) fn clients(&self) -> Option<Arc<crate::clients::Clients>> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the policy; connections already open keep going, new ones use it.
    pub fn set_policy(&self, policy: NetPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }

    /// Allows `host` (on `port`, or any port) from now on.
    pub fn allow_host(&self, host: &str, port: Option<u16>) -> Result<(), Error> {
        let mut guard = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        let mut p = NetPolicy::clone(&guard);
        p.allow(host, port)?;
        *guard = Arc::new(p);
        Ok(())
    }

    pub(crate) fn hooks(&self) -> Arc<dyn Hooks> {
        self.hooks.clone()
    }

    pub(crate) fn record(&self, d: &DecisionRecord) {
        self.hooks.record(d);
    }

    /// Accepts on an already-bound listener until accepting fails or the future is dropped.
    /// The first byte of a connection picks the protocol: 0x05 is SOCKS5, anything else HTTP.
    /// Must be called within a tokio runtime.
    pub async fn serve(self: Arc<Self>, listener: std::net::TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                // Out of descriptors or a client gone before accept: keep serving.
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let proxy = self.clone();
            let guard = ActiveGuard::new(proxy.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let _ = stream.set_nodelay(true);
                proxy.dispatch(stream, peer, None).await;
            });
        }
    }

    /// Serves one client connection: the first byte picks the protocol, 0x05 is SOCKS5,
    /// anything else HTTP. `known` is the client's identity when the connection already
    /// established it (a TLS client certificate); otherwise the clients in force, if any,
    /// authenticate it by its token.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        known: Option<String>,
    ) {
        let mut first = [0u8; 1];
        let n = match tokio::time::timeout(self.limits.head_timeout, stream.peek(&mut first)).await
        {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        if first[0] == 0x05 {
            crate::socks::serve(self, stream, peer, known).await;
        } else {
            crate::http::serve(self, stream, peer, known).await;
        }
    }

    /// Connections being served now. An owner that stops the proxy waits for this to reach
    /// zero (bounded), so that every connection's decision is recorded.
    pub fn active_connections(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The policy's decision for a destination, asking when the policy says so.
    pub(crate) async fn authorize(
        &self,
        raw_host: &str,
        port: u16,
        protocol: Protocol,
        client: Option<&str>,
    ) -> Result<Allowed, Refused> {
        let host = match normalize_host(raw_host) {
            Ok(h) => h,
            Err(reason) => {
                return Err(Refused {
                    host: raw_host.escape_debug().to_string(),
                    rule: None,
                    reason: format!("malformed host: {reason}"),
                    asked: None,
                    own_reason: false,
                })
            }
        };
        let policy = match self.clients() {
            None => self.policy(),
            Some(clients) => match client.and_then(|c| clients.policy(c)) {
                Some(p) => p,
                // Authenticated at the handshake, gone since (a reload removed it).
                None => {
                    return Err(Refused {
                        host: host.to_string(),
                        rule: None,
                        reason: "the client is not in the clients file".into(),
                        asked: None,
                        own_reason: false,
                    })
                }
            },
        };
        match policy.decide_host(&host, port) {
            Verdict::Allow { rule } => Ok(Allowed {
                host,
                rule: Some(rule),
                asked: None,
            }),
            Verdict::Deny { rule, reason } => Err(Refused {
                own_reason: rule
                    .as_deref()
                    .is_some_and(|r| policy.denied_domain_reason(r).is_some()),
                host: host.to_string(),
                rule,
                reason,
                asked: None,
            }),
            Verdict::Unlisted if !policy.ask_enabled() => Err(Refused {
                host: host.to_string(),
                rule: None,
                reason: "host is not on the allow list".into(),
                asked: None,
                own_reason: false,
            }),
            // Host services are reached only through an explicit entry, never by a click.
            Verdict::Unlisted if matches!(&host, Host::Ip(ip) if policy.refuse_resolved(*ip, self.own_addrs()).is_some()) =>
            {
                let why = match &host {
                    Host::Ip(ip) => policy.refuse_resolved(*ip, self.own_addrs()),
                    Host::Name(_) => None,
                };
                Err(Refused {
                    reason: format!(
                        "{host}: {}; only an allowedDomains entry with its port reaches it",
                        why.unwrap_or_default()
                    ),
                    host: host.to_string(),
                    rule: None,
                    asked: None,
                    own_reason: false,
                })
            }
            Verdict::Unlisted => {
                let answer = self
                    .ask(&host, port, protocol, client, policy.ask_timeout())
                    .await;
                match answer {
                    AskAnswer::Once | AskAnswer::Always => Ok(Allowed {
                        host,
                        rule: None,
                        asked: Some(answer),
                    }),
                    AskAnswer::Deny => Err(Refused {
                        host: host.to_string(),
                        rule: None,
                        reason: "not allowed when asked (or no answer in time)".into(),
                        asked: Some(answer),
                        own_reason: false,
                    }),
                }
            }
        }
    }

    async fn ask(
        &self,
        host: &Host,
        port: u16,
        protocol: Protocol,
        client: Option<&str>,
        timeout: Duration,
    ) -> AskAnswer {
        let key = (host.clone(), port);
        let waiter = {
            let mut asking = self.asking.lock().unwrap_or_else(PoisonError::into_inner);
            match asking.get_mut(&key) {
                Some(list) => {
                    let (tx, rx) = oneshot::channel();
                    list.push(tx);
                    Some(rx)
                }
                None => {
                    asking.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiter {
            return rx.await.unwrap_or(AskAnswer::Deny);
        }
        let q = AskQuery {
            host: host.to_string(),
            port,
            protocol,
            client: client.map(str::to_string),
        };
        let answer = tokio::time::timeout(timeout, self.hooks.ask(q))
            .await
            .unwrap_or(AskAnswer::Deny);
        if answer == AskAnswer::Always {
            let name = match host {
                Host::Name(n) => n.clone(),
                Host::Ip(ip) => ip.to_string(),
            };
            // The host was normalised already, so this cannot fail; if it did, the answer
            // still holds for this connection.
            let _ = self.allow_host(&name, Some(port));
        }
        let waiting = self
            .asking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
            .unwrap_or_default();
        for tx in waiting {
            let _ = tx.send(answer);
        }
        answer
    }

    /// Resolves once (names only), drops refused addresses, connects to the first address that
    /// passed and answers.
    pub(crate) async fn connect(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), ConnectError> {
        let candidates: Vec<SocketAddr> = match host {
            // A literal was judged by the policy itself (host services need an explicit
            // IP-and-port entry there).
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|e| ConnectError::Failed(format!("cannot resolve {name}: {e}")))?
                    .collect();
                if found.is_empty() {
                    return Err(ConnectError::Failed(format!("{name} has no addresses")));
                }
                let policy = self.policy();
                let mut passed = Vec::new();
                let mut refused = Vec::new();
                for a in found {
                    match policy.refuse_resolved(a.ip(), self.own_addrs()) {
                        None => passed.push(a),
                        Some(why) => refused.push(format!("{} ({why})", a.ip())),
                    }
                }
                if passed.is_empty() {
                    return Err(ConnectError::Refused(format!(
                        "{name} resolves only to refused addresses: {}",
                        refused.join(", ")
                    )));
                }
                passed
            }
        };
        let mut last = String::new();
        for a in candidates {
            match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, a));
                }
                Ok(Err(e)) => last = format!("connecting to {a}: {e}"),
                Err(_) => last = format!("connecting to {a}: timed out"),
            }
        }
        Err(ConnectError::Failed(last))
    }
}

pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    ) || e.kind() == io::ErrorKind::ConnectionAborted
}

/// This host's interface addresses; empty if they cannot be read.
fn interface_addresses() -> Vec<IpAddr> {
    ringfence_linux::net::interface_addresses()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    struct CountingHooks {
        asked: std::sync::atomic::AtomicUsize,
        answer: AskAnswer,
    }
    impl Hooks for CountingHooks {
        fn record(&self, _: &DecisionRecord) {}
        fn ask(&self, _: AskQuery) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let a = self.answer;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                a
            })
        }
    }

    fn asking_policy() -> NetPolicy {
        let mut p = ringfence_policy::Policy {
            ask: true,
            ..Default::default()
        };
        p.ask_timeout_seconds = Some(5);
        NetPolicy::from_policy(&p).unwrap()
    }

    #[tokio::test]
    async fn one_question_for_concurrent_connections_and_always_sticks() {
        let hooks = Arc::new(CountingHooks {
            asked: Default::default(),
            answer: AskAnswer::Always,
        });
        let proxy = Proxy::new(asking_policy(), hooks.clone());
        let (a, b) = tokio::join!(
            proxy.authorize("New.example", 443, Protocol::Connect, None),
            proxy.authorize("new.example.", 443, Protocol::Socks5, Some("x")),
        );
        assert_eq!(a.ok().unwrap().asked, Some(AskAnswer::Always));
        assert_eq!(b.ok().unwrap().asked, Some(AskAnswer::Always));
        assert_eq!(hooks.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Now an entry: no question, allowed by the rule.
        let c = proxy
            .authorize("new.example", 443, Protocol::Http, None)
            .await
            .ok()
            .unwrap();
        assert_eq!(c.rule.as_deref(), Some("new.example:443"));
        assert_eq!(hooks.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another port is asked about again.
        let _ = proxy
            .authorize("new.example", 80, Protocol::Http, None)
            .await;
        assert_eq!(hooks.asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_answer_in_time_is_deny() {
        let hooks = Arc::new(CountingHooks {
            asked: Default::default(),
            answer: AskAnswer::Once,
        });
        let mut p = ringfence_policy::Policy {
            ask: true,
            ..Default::default()
        };
        p.ask_timeout_seconds = Some(1);
        // 100 ms answers against a 50 ms timeout.
        let policy = NetPolicy::from_policy(&p)
            .unwrap()
            .with_ask_timeout(Duration::from_millis(50));
        let proxy = Proxy::new(policy, hooks);
        let r = proxy
            .authorize("slow.example", 443, Protocol::Connect, None)
            .await;
        assert!(r.is_err());
        // Without asking enabled, an unlisted host is denied without a question.
        let hooks = Arc::new(CountingHooks {
            asked: Default::default(),
            answer: AskAnswer::Once,
        });
        let proxy = Proxy::new(NetPolicy::default(), hooks.clone());
        let r = proxy
            .authorize("x.example", 443, Protocol::Connect, None)
            .await;
        assert_eq!(r.err().unwrap().reason, "host is not on the allow list");
        assert_eq!(hooks.asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn interface_addresses_include_loopback() {
        let a = interface_addresses();
        assert!(a.iter().any(|ip| ip.is_loopback()), "{a:?}");
    }
}
