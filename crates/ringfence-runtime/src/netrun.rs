//! The supervisor's network side of a run: the egress proxy serving the listeners that the
//! sandbox handed over, its decisions written to the activity log, and the questions it asks
//! (on the host terminal, or through `--control-fd`). Where allowed connections leave through
//! ([`Egress`]: a parent proxy, or the user's own proxies in place of the built-in ones) is
//! settled before the sandbox exists, so a setting that cannot be used stops the run.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ringfence_linux::supervise::{Prompt, Prompts};
use ringfence_policy::ParentProxy;
use ringfence_proxy::control::Control;
use ringfence_proxy::{
    AskAnswer, AskQuery, Decision, DecisionRecord, Hooks, Limits, NetPolicy, Proxy, Relay,
};
use serde_json::{json, Value};

use crate::audit::Activity;

/// Where questions about unlisted hosts go.
pub enum Asking {
    /// Nobody to ask: unlisted hosts are denied.
    Nobody,
    /// The person at the host terminal, through the supervisor's terminal relay.
    Terminal(Arc<Prompts>),
    /// A program, through `--control-fd` (set up when the runtime starts).
    Control,
    /// The embedding program's own function (`Builder::asker`).
    Library(AskFn),
}

/// A question for the user: a host the policy neither allows nor denies, or (with
/// `filesystem.ask`) a write outside the writable roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskRequest {
    Connect {
        /// The host in canonical form (lowercase, punycode, IPv6 in brackets).
        host: String,
        port: u16,
        /// `http`, `https` (CONNECT) or `socks5`.
        protocol: &'static str,
        /// The program inside that opened the connection, when it could be named.
        client: Option<String>,
    },
    /// `Once` allows this path for this run; `Always` its directory, for this run and in the
    /// user's settings (`filesystem.allowWrite`).
    Write {
        /// `open` (for writing), `mkdir`, `rename`, `link`, `symlink`, `unlink` or `rmdir`.
        op: &'static str,
        path: PathBuf,
        /// The new name of a rename or a link; the target of a symlink (as written).
        to: Option<PathBuf>,
        /// The program inside that asked.
        client: Option<String>,
    },
    /// A hidden (denyRead) file to be read (`filesystem.askRead`): `Once` allows this file for
    /// this run, `Always` also in the user's settings (`filesystem.allowRead`).
    Read {
        path: PathBuf,
        client: Option<String>,
    },
    /// A unix socket not in `network.allowUnixSockets` (with `network.ask`): `Once` allows
    /// this connection, `Always` the socket, for this run and in the user's settings.
    Socket {
        path: PathBuf,
        client: Option<String>,
    },
}

/// The embedding program's answer to questions: called on a thread of its own, so it may block
/// (for at most `network.askTimeoutSeconds`; later answers count as "deny").
pub type AskFn = Arc<dyn Fn(AskRequest) -> AskAnswer + Send + Sync>;

#[derive(Clone)]
enum Asker {
    Nobody,
    Terminal(Arc<Prompts>, Duration),
    Control(Arc<Control>),
    Library(AskFn, Duration),
}

/// A denied connection, for the summary line and the violations report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDenial {
    pub host: String,
    pub port: u16,
    pub reason: String,
}

struct RunHooks {
    log: Arc<Mutex<Activity>>,
    asking: Asker,
    /// The user settings file that "always" answers are added to.
    user_settings: Option<PathBuf>,
    denied: Arc<Mutex<Vec<NetDenial>>>,
    /// The sandbox's PID 1 (host pid), whose descendants' connections are named.
    sandbox_pid: libc::pid_t,
}

impl Hooks for RunHooks {
    fn identify(&self, peer: SocketAddr, service: SocketAddr) -> Option<String> {
        crate::socket_owner::program(self.sandbox_pid, peer, service)
    }

    fn record(&self, d: &DecisionRecord) {
        let allowed = d.decision == Decision::Allowed;
        if let Asker::Control(c) = &self.asking {
            c.send_decision(d);
        }
        if !allowed {
            if let Ok(mut v) = self.denied.lock() {
                v.push(NetDenial {
                    host: d.host.clone(),
                    port: d.port,
                    reason: d.reason.clone().unwrap_or_default(),
                });
            }
        }
        if let Ok(mut log) = self.log.lock() {
            log.net(d.to_json(), allowed);
        }
    }

    fn ask(&self, q: AskQuery) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
        let via = match &self.asking {
            Asker::Nobody => "nobody",
            Asker::Terminal(..) => "terminal",
            Asker::Control(_) => "control-fd",
            Asker::Library(..) => "library",
        };
        if let Ok(mut log) = self.log.lock() {
            log.event(
                "ask",
                json!({"host": q.host, "port": q.port, "protocol": q.protocol.as_str(),
                       "client": q.client, "via": via}),
            );
        }
        let log = self.log.clone();
        let settings = self.user_settings.clone();
        let (host, port) = (q.host.clone(), q.port);
        let answered = move |a: AskAnswer| {
            if let Ok(mut log) = log.lock() {
                log.event(
                    "answer",
                    json!({"host": host, "port": port, "answer": a.as_str()}),
                );
            }
            if a == AskAnswer::Always {
                if let Some(file) = &settings {
                    // The entry the proxy now allows: this host and port.
                    let entry = format!("{host}:{port}");
                    match remember(file, &entry) {
                        Ok(()) => {
                            if let Ok(mut log) = log.lock() {
                                log.event(
                                    "policy.update",
                                    json!({"source": "answer", "allowed": entry, "file": file}),
                                );
                            }
                        }
                        Err(e) => eprintln!(
                            "ringfence: could not add {entry} to {}: {e:#}\r",
                            file.display()
                        ),
                    }
                }
            }
            a
        };
        match &self.asking {
            Asker::Nobody => Box::pin(async move { answered(AskAnswer::Deny) }),
            Asker::Library(f, timeout) => {
                let f = f.clone();
                let req = AskRequest::Connect {
                    host: q.host.clone(),
                    port: q.port,
                    protocol: q.protocol.as_str(),
                    client: q.client.clone(),
                };
                let timeout = *timeout;
                Box::pin(async move {
                    let asked = tokio::task::spawn_blocking(move || f(req));
                    let a = match tokio::time::timeout(timeout, asked).await {
                        Ok(Ok(a)) => a,
                        _ => AskAnswer::Deny,
                    };
                    answered(a)
                })
            }
            Asker::Control(c) => {
                let asked = c.ask(q);
                Box::pin(async move { answered(asked.await) })
            }
            Asker::Terminal(prompts, timeout) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                prompts.ask(Prompt {
                    text: format!(
                        "the sandbox wants to connect to {}:{} ({}); allow?",
                        q.host,
                        q.port,
                        q.protocol.as_str()
                    ),
                    keys: &[(b'o', "once"), (b'a', "always"), (b'd', "deny")],
                    cancel: b'd',
                    deadline: Instant::now() + *timeout,
                    answer: Box::new(move |key| {
                        let _ = tx.send(key);
                    }),
                });
                Box::pin(async move {
                    let a = match rx.await {
                        Ok(Some(b'o')) => AskAnswer::Once,
                        Ok(Some(b'a')) => AskAnswer::Always,
                        _ => AskAnswer::Deny,
                    };
                    answered(a)
                })
            }
        }
    }
}

/// Adds `host` to `network.allowedDomains` of the settings file `file` (created when missing),
/// replacing the file atomically.
pub fn remember(file: &std::path::Path, host: &str) -> Result<()> {
    remember_in(file, "network", "allowedDomains", host)
}

/// Adds `entry` to the list `section.key` of the settings file `file` (created when missing),
/// replacing the file atomically.
pub fn remember_in(file: &std::path::Path, section: &str, key: &str, entry: &str) -> Result<()> {
    // Answers arrive on several proxy threads: one read-modify-write at a time.
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut doc: Value = match std::fs::read_to_string(file) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("parsing {}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let obj = doc
        .as_object_mut()
        .context("the settings file is not a JSON object")?;
    let net = obj
        .entry(section)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .with_context(|| format!("`{section}` is not an object"))?;
    let list = net
        .entry(key)
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .with_context(|| format!("`{section}.{key}` is not a list"))?;
    if list.iter().any(|v| v.as_str() == Some(entry)) {
        return Ok(());
    }
    list.push(Value::String(entry.to_string()));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A fresh name, created exclusively and never through a symlink: the directory may be one
    // the sandbox can write to.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = file.with_extension(format!(
        "json.ringfence-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", tmp.display()));
        }
    }
    if let Err(e) = std::fs::rename(&tmp, file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("replacing {}", file.display()));
    }
    Ok(())
}

/// Where the sandbox's connections leave through, besides the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// `network.parentProxy`, else the host's HTTP_PROXY / HTTPS_PROXY / NO_PROXY.
    pub parent: Option<ParentProxy>,
    /// `network.httpProxyPort`: the sandbox's HTTP proxy port relays to this port on the
    /// host's 127.0.0.1, where the user's own proxy listens and decides.
    pub http_port: Option<u16>,
    /// `network.socksProxyPort`: the same for the sandbox's SOCKS port.
    pub socks_port: Option<u16>,
    /// The `network.parentProxy` setting as written, which control lines may not change.
    parent_setting: Option<ringfence_policy::ParentProxySettings>,
    /// `network.tlsTerminate`, set up by `prepare` (see `crate::tlsrun::setup`).
    pub tls: Option<Arc<ringfence_proxy::tls::Terminator>>,
}

impl Egress {
    /// Reads the egress settings of the merged policy and the host's proxy variables (read by
    /// the supervisor only; the sandbox gets its own). A value that cannot be used is an error
    /// naming the key or variable.
    pub fn from_policy(p: &ringfence_policy::Policy) -> Result<Egress> {
        let parent = ParentProxy::resolve(p.parent_proxy.as_ref(), |k| std::env::var(k).ok())
            .map_err(|e| {
                if e.key.contains('.') {
                    anyhow::anyhow!("{}: {}", e.key, e.message)
                } else {
                    // The host's variable: it is used as srt uses it, so it must be usable.
                    anyhow::anyhow!(
                        "{} (the host's proxy variable, which ringfence's proxy uses as its parent): {}; \
                         or set network.parentProxy, or unset {} for ringfence",
                        e.key,
                        e.message,
                        e.key
                    )
                }
            })?;
        Ok(Egress {
            parent,
            http_port: p.http_proxy_port,
            socks_port: p.socks_proxy_port,
            parent_setting: p.parent_proxy.clone(),
            tls: None,
        })
    }
}

/// The egress lines of `ringfence explain`.
pub fn print_egress(
    p: &ringfence_policy::Policy,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    match Egress::from_policy(p) {
        Err(e) => writeln!(out, "egress: unusable ({e:#}); a run refuses to start")?,
        Ok(eg) => {
            match &eg.parent {
                None => writeln!(out, "egress: direct (no parent proxy)")?,
                Some(pp) => writeln!(
                    out,
                    "egress: parent proxy for tunnels {}, for http:// {} (noProxy hosts and loopback direct)",
                    pp.https.as_ref().map_or("none".into(), |u| u.shown()),
                    pp.http.as_ref().map_or("none".into(), |u| u.shown()),
                )?,
            }
            if let Ok(np) = NetPolicy::from_policy(p) {
                let mut notes = Vec::new();
                if let Ok(services) = host_services(
                    &np,
                    &[crate::netenv::HTTP_PORT, crate::netenv::SOCKS_PORT],
                    &mut notes,
                ) {
                    for a in services {
                        writeln!(
                            out,
                            "egress: host service {a} reachable inside at its own address"
                        )?;
                    }
                }
                for n in notes {
                    writeln!(out, "note: {n}")?;
                }
            }
            if p.transparent {
                writeln!(
                    out,
                    "egress: transparent capture (network.transparent): every TCP connection and \
                     DNS query goes through the TUN device rf0 to this policy"
                )?;
            }
            if let Some(t) = &p.tls_terminate {
                let ca = match &t.ca {
                    Some((cert, _)) => cert.display().to_string(),
                    None => "the per-user CA in the state directory".to_string(),
                };
                writeln!(
                    out,
                    "egress: TLS terminated (CA: {ca}){}; {} request rule(s), {} masked variable(s), {} masked file(s), {} AWS pair(s)",
                    if t.exclude_domains.is_empty() {
                        String::new()
                    } else {
                        format!(" except {}", t.exclude_domains.join(", "))
                    },
                    p.request_rules.len(),
                    p.masked_env.len(),
                    p.masked_files.len(),
                    p.aws_pairs.len()
                )?;
            }
            if let Some(m) = &p.mitm_proxy {
                writeln!(
                    out,
                    "egress: mitmProxy {} for {}",
                    m.socket_path,
                    m.domains.join(", ")
                )?;
            }
            for (key, port, what) in [
                ("httpProxyPort", eg.http_port, "HTTP"),
                ("socksProxyPort", eg.socks_port, "SOCKS"),
            ] {
                if let Some(port) = port {
                    writeln!(
                        out,
                        "egress: the sandbox's {what} proxy port relays to 127.0.0.1:{port} \
                         (network.{key}: your proxy decides, not this policy)"
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The host services the sandbox reaches at their own address (allowed loopback literals with
/// a port, see [`NetPolicy::host_services`]), minus those that would take one of the proxy's
/// own ports inside (`in_use`), which stay reachable through the proxy only: each is a note.
/// More than the setup channel can hand over is refused, naming the key.
pub fn host_services(
    policy: &NetPolicy,
    in_use: &[u16],
    notes: &mut Vec<String>,
) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for (addr, entry) in policy.host_services() {
        if addr.ip() == std::net::IpAddr::from([127, 0, 0, 1]) && in_use.contains(&addr.port()) {
            notes.push(format!(
                "network.allowedDomains \"{entry}\": {addr} is the sandbox's own proxy port; \
                 the host's service there is reachable through the proxy only"
            ));
            continue;
        }
        out.push(addr);
    }
    for entry in policy.localhost_entries() {
        let port = entry.rsplit_once(':').map_or("PORT", |(_, p)| p);
        notes.push(format!(
            "network.allowedDomains \"{entry}\": a name that resolves to loopback is refused; \
             to reach a host service, allow its address (\"127.0.0.1:{port}\" or \"[::1]:{port}\")"
        ));
    }
    // The pty master and the proxy's listeners travel in the same message.
    let room = ringfence_linux::sandbox::MAX_FDS - 1 - in_use.len();
    if out.len() > room {
        anyhow::bail!(
            "network.allowedDomains: {} loopback services with a port (at most {room}); \
             remove some, or reach them through the proxy with a host name",
            out.len()
        );
    }
    Ok(out)
}

/// How a write outside the writable roots was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAnswer {
    /// This path, for this run.
    File,
    /// Its directory (and everything under it), for this run.
    Directory,
    /// Its directory, for this run and in the user's settings.
    Always,
    Deny,
}

impl WriteAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteAnswer::File => "file",
            WriteAnswer::Directory => "directory",
            WriteAnswer::Always => "always",
            WriteAnswer::Deny => "deny",
        }
    }
}

/// Asks about writes (`filesystem.ask`) through the run's asker: the same one, and the same
/// channel, as the questions about hosts.
#[derive(Clone)]
pub struct WriteAsker {
    asker: Asker,
    /// Present whenever the asker is `--control-fd`, whose runtime starts at once.
    runtime: Option<tokio::runtime::Handle>,
}

impl WriteAsker {
    /// Blocks until the question is answered or `timeout` passes (deny).
    pub fn ask(
        &self,
        op: &'static str,
        path: &std::path::Path,
        to: Option<&std::path::Path>,
        client: Option<String>,
        timeout: Duration,
    ) -> WriteAnswer {
        let once_always = |a: AskAnswer| match a {
            AskAnswer::Once => WriteAnswer::File,
            AskAnswer::Always => WriteAnswer::Always,
            AskAnswer::Deny => WriteAnswer::Deny,
        };
        match &self.asker {
            Asker::Nobody => WriteAnswer::Deny,
            Asker::Library(f, _) => {
                let f = f.clone();
                let req = if op == "connect" {
                    AskRequest::Socket {
                        path: path.to_path_buf(),
                        client,
                    }
                } else if op == "read" {
                    AskRequest::Read {
                        path: path.to_path_buf(),
                        client,
                    }
                } else {
                    AskRequest::Write {
                        op,
                        path: path.to_path_buf(),
                        to: to.map(|t| t.to_path_buf()),
                        client,
                    }
                };
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(f(req));
                });
                rx.recv_timeout(timeout)
                    .map_or(WriteAnswer::Deny, once_always)
            }
            Asker::Control(c) => {
                let kind = match op {
                    "connect" => "socket",
                    "read" => "read",
                    _ => "write",
                };
                let to = to.map(|t| t.to_string_lossy());
                let asked = c.ask_path(kind, op, &path.to_string_lossy(), to.as_deref(), client);
                match &self.runtime {
                    Some(rt) => once_always(rt.block_on(asked)),
                    None => WriteAnswer::Deny,
                }
            }
            Asker::Terminal(prompts, _) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let client = client.as_deref().unwrap_or("a program");
                let (text, keys): (String, &'static [(u8, &'static str)]) = match op {
                    "connect" => (
                        format!(
                            "the sandbox wants to connect to the unix socket {}, not in network.allowUnixSockets ({client}); allow?",
                            path.display()
                        ),
                        &[
                            (b'o', "once"),
                            (b'r', "for this run"),
                            (b'a', "always"),
                            (b'd', "deny"),
                        ],
                    ),
                    "read" => (
                        format!(
                            "the sandbox wants to read {}, which is hidden (denyRead) ({client}); allow?",
                            path.display()
                        ),
                        &[
                            (b'o', "this file for this run"),
                            (b'a', "this file always"),
                            (b'd', "deny"),
                        ],
                    ),
                    _ => (
                        format!(
                            "the sandbox wants to {}, outside the writable folders ({client}); allow?",
                            match (op, to) {
                                ("mkdir", _) => format!("create the directory {}", path.display()),
                                ("rename", Some(to)) => {
                                    format!("rename {} to {}", path.display(), to.display())
                                }
                                ("link", Some(to)) => {
                                    format!("link {} as {}", path.display(), to.display())
                                }
                                ("symlink", Some(to)) => format!(
                                    "create the symlink {} (to {})",
                                    path.display(),
                                    to.display()
                                ),
                                ("unlink", _) => format!("remove {}", path.display()),
                                ("rmdir", _) => {
                                    format!("remove the directory {}", path.display())
                                }
                                _ => format!("write {}", path.display()),
                            }
                        ),
                        &[
                            (b'o', "this file once"),
                            (b'r', "its folder for this run"),
                            (b'a', "its folder always"),
                            (b'd', "deny"),
                        ],
                    ),
                };
                prompts.ask(Prompt {
                    text,
                    keys,
                    cancel: b'd',
                    deadline: Instant::now() + timeout,
                    answer: Box::new(move |key| {
                        let _ = tx.send(key);
                    }),
                });
                match rx.recv_timeout(timeout + Duration::from_secs(1)) {
                    Ok(Some(b'o')) => WriteAnswer::File,
                    Ok(Some(b'r')) => WriteAnswer::Directory,
                    Ok(Some(b'a')) => WriteAnswer::Always,
                    _ => WriteAnswer::Deny,
                }
            }
        }
    }

    /// Who is asked, as the `ask` event names it.
    pub fn via(&self) -> &'static str {
        match &self.asker {
            Asker::Nobody => "nobody",
            Asker::Terminal(..) => "terminal",
            Asker::Control(_) => "control-fd",
            Asker::Library(..) => "library",
        }
    }
}

/// A task of the proxy's runtime.
type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The proxy's runtime (two worker threads) and the tasks it serves. With `--control-fd` or
/// transparent capture it starts with the run; otherwise when the sandbox first connects to
/// one of its listeners, so that a run that never uses the network starts no threads for it
/// (on two CPUs they slowed the command's own start).
struct Lazy {
    runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
    tasks: Mutex<Vec<Task>>,
}

impl Lazy {
    fn build() -> Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ringfence-proxy")
            .enable_all()
            .build()
            .context("starting the proxy's runtime")
    }

    /// Starts the runtime if it is not running yet, and spawns the tasks not yet spawned.
    fn start(&self) -> Result<&tokio::runtime::Runtime> {
        let rt = match self.runtime.get() {
            Some(rt) => rt,
            None => {
                let built = Self::build()?;
                self.runtime.get_or_init(|| built)
            }
        };
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            rt.spawn(t);
        }
        Ok(rt)
    }
}

/// The running proxy of one sandbox.
pub struct Network {
    runtime: Arc<Lazy>,
    /// The waiter of a lazy start, and the pipe that ends its wait.
    waiter: Option<(std::thread::JoinHandle<()>, OwnedFd)>,
    proxy: Arc<Proxy>,
    updates: Arc<Control>,
    log: Arc<Mutex<Activity>>,
    writes: WriteAsker,
    relays: Vec<Arc<Relay>>,
    pub denied: Arc<Mutex<Vec<NetDenial>>>,
}

impl Network {
    /// Sets up the proxy and serves every listener from its async runtime, which starts now
    /// (the sandbox was cloned from a single thread) or at the first connection ([`Lazy`]): `listeners` are the HTTP and the SOCKS port, in that order; one
    /// that `egress` gives to the user's own proxy relays there instead. `services` are the
    /// host services' listeners inside with the address each one carries connections to.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        sandbox_pid: libc::pid_t,
        listeners: Vec<TcpListener>,
        services: Vec<(TcpListener, SocketAddr)>,
        policy: NetPolicy,
        egress: Egress,
        log: Arc<Mutex<Activity>>,
        asking: Asking,
        user_settings: Option<PathBuf>,
        control_fd: Option<OwnedFd>,
        tun: Option<OwnedFd>,
    ) -> Result<Network> {
        // Lazily only where nothing needs the runtime before the first connection.
        let eager = control_fd.is_some() || tun.is_some();
        let runtime = Arc::new(Lazy {
            runtime: std::sync::OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let handle = if eager {
            Some(runtime.start()?.handle().clone())
        } else {
            None
        };
        let _entered = handle.as_ref().map(|h| h.enter());
        let mut tasks: Vec<Task> = Vec::new();
        // The listeners a lazy start waits on (copies; the tasks own the originals).
        let mut watched: Vec<TcpListener> = Vec::new();
        let denied = Arc::new(Mutex::new(Vec::new()));
        let timeout = policy.ask_timeout();
        let (reader, control) = match control_fd {
            Some(fd) => {
                let (reader, writer) = ringfence_proxy::control::open_fd(fd)
                    .map_err(|e| anyhow::anyhow!("--control-fd: {e}"))?;
                let c = Control::start(writer, timeout);
                c.fix_egress(
                    egress.parent_setting.clone(),
                    egress.http_port,
                    egress.socks_port,
                );
                (reader, Some(c))
            }
            None => (None, None),
        };
        let asker = match (asking, &control) {
            (Asking::Control, Some(c)) => Asker::Control(c.clone()),
            (Asking::Terminal(p), _) => Asker::Terminal(p, timeout),
            (Asking::Library(f), _) => Asker::Library(f, timeout),
            _ => Asker::Nobody,
        };
        // Live updates from the embedding program are checked like --control-fd lines.
        let updates = Control::start(None, timeout);
        updates.fix_egress(
            egress.parent_setting.clone(),
            egress.http_port,
            egress.socks_port,
        );
        let writes = WriteAsker {
            asker: asker.clone(),
            runtime: handle.clone(),
        };
        let hooks = Arc::new(RunHooks {
            log: log.clone(),
            asking: asker,
            user_settings,
            denied: denied.clone(),
            sandbox_pid,
        });
        if let Some(parent) = &egress.parent {
            if let Ok(mut l) = log.lock() {
                l.event(
                    "net.parent",
                    json!({
                        "http": parent.http.as_ref().map(|u| u.shown()),
                        "https": parent.https.as_ref().map(|u| u.shown()),
                    }),
                );
            }
        }
        let proxy = Proxy::with_parent(policy, hooks, Limits::default(), egress.parent.clone());
        let update_log = log.clone();
        if let Some(t) = &egress.tls {
            proxy.terminate_tls(t.clone());
        }
        let mut relays = Vec::new();
        let external = [
            ("network.httpProxyPort", egress.http_port),
            ("network.socksProxyPort", egress.socks_port),
        ];
        if !eager {
            for l in listeners.iter().chain(services.iter().map(|(l, _)| l)) {
                watched.push(
                    l.try_clone()
                        .context("copying a proxy listener for the lazy start")?,
                );
            }
        }
        for (i, l) in listeners.into_iter().enumerate() {
            if let Some((key, Some(port))) = external.get(i).copied() {
                let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let in_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                let relay_log = log.clone();
                let relay = Relay::new(target, move |r| {
                    if let Ok(mut l) = relay_log.lock() {
                        l.event(
                            "net.relay",
                            json!({
                                "key": key,
                                "port": in_port,
                                "target": r.target.to_string(),
                                "peer": r.peer.map(|p| p.to_string()),
                                "error": r.error,
                                "bytesUp": r.bytes_up,
                                "bytesDown": r.bytes_down,
                                "durationMs": r.duration.as_millis() as u64,
                            }),
                        );
                    }
                });
                relays.push(relay.clone());
                tasks.push(Box::pin(async move {
                    if let Err(e) = relay.serve(l).await {
                        eprintln!("ringfence: the relay to {target} ({key}) stopped: {e}\r");
                    }
                }));
                continue;
            }
            let p = proxy.clone();
            tasks.push(Box::pin(async move {
                if let Err(e) = p.serve(l).await {
                    eprintln!("ringfence: the egress proxy stopped: {e}\r");
                }
            }));
        }
        if let Some(fd) = tun {
            let p = proxy.clone();
            let addrs = ringfence_proxy::transparent::Addresses {
                sandbox: ringfence_linux::tun::SANDBOX_ADDR,
                resolver: ringfence_linux::tun::RESOLVER_ADDR,
                prefix_len: ringfence_linux::tun::PREFIX_LEN,
                mtu: ringfence_linux::tun::MTU,
            };
            tasks.push(Box::pin(async move {
                if let Err(e) = ringfence_proxy::transparent::serve(p, fd, addrs).await {
                    eprintln!("ringfence: transparent capture stopped: {e}\r");
                }
            }));
        }
        let served: Vec<SocketAddr> = services.iter().map(|(_, a)| *a).collect();
        for (l, target) in services {
            let p = proxy.clone();
            tasks.push(Box::pin(async move {
                if let Err(e) = p.serve_host_service(l, target).await {
                    eprintln!("ringfence: the host service at {target} stopped: {e}\r");
                }
            }));
        }
        if let (Some(c), Some(reader)) = (control, reader) {
            let p = proxy.clone();
            let updated = proxy.clone();
            let noted = Mutex::new(Vec::<String>::new());
            tasks.push(Box::pin(async move {
                let applied_log = log.clone();
                let result = c
                    .run_reader(
                        reader,
                        p,
                        move |line| {
                            // Answers are logged as `answer`; everything else changed the policy.
                            let mut v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                            if v.get("type").and_then(Value::as_str) == Some("answer") {
                                return;
                            }
                            redact_parent_proxy(&mut v);
                            // Listeners exist only for the services allowed at start: one
                            // added now is reachable through the proxy, not at its address.
                            let unserved: Vec<String> = updated
                                .policy()
                                .host_services()
                                .into_iter()
                                .filter(|(a, _)| !served.contains(a))
                                .map(|(a, _)| a.to_string())
                                .collect();
                            let mut noted = noted.lock().unwrap_or_else(PoisonError::into_inner);
                            for a in unserved.iter().filter(|a| !noted.contains(a)) {
                                eprintln!(
                                    "ringfence: note: --control-fd allowed {a}, but only host services \
                                     allowed when the run started are reachable at their own address; \
                                     this one only through the proxy\r"
                                );
                            }
                            noted.extend(unserved.iter().cloned());
                            let mut event = json!({"source": "control-fd", "update": v});
                            if !unserved.is_empty() {
                                event["unserved"] = json!(unserved);
                            }
                            if let Ok(mut l) = applied_log.lock() {
                                l.event("policy.update", event);
                            }
                        },
                        move |e| {
                            if let Ok(mut l) = log.lock() {
                                l.event("policy.invalid", json!({"error": e.to_string()}));
                            }
                        },
                    )
                    .await;
                if let Err(e) = result {
                    eprintln!("ringfence: --control-fd: {e}\r");
                }
            }));
        }
        *runtime.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        let waiter = if eager {
            runtime.start()?;
            None
        } else {
            Some(Self::wait_for_first(runtime.clone(), watched)?)
        };
        Ok(Network {
            runtime,
            waiter,
            proxy: proxy.clone(),
            updates,
            log: update_log,
            writes,
            relays,
            denied,
        })
    }

    /// Replaces the network policy while the sandbox runs, from one line in the form that
    /// `--control-fd` takes (`{"type": "policy", "network": {...}}`, `{"type": "allow", ...}`,
    /// or a settings document): checked the same way (the egress keys fixed at start cannot
    /// change), applied to new connections, recorded as `policy.update`.
    pub fn update(&self, line: &str) -> Result<()> {
        match self.updates.apply(line, &self.proxy) {
            Ok(()) => {
                let mut v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                redact_parent_proxy(&mut v);
                if let Ok(mut l) = self.log.lock() {
                    l.event("policy.update", json!({"source": "library", "update": v}));
                }
                Ok(())
            }
            Err(e) => {
                if let Ok(mut l) = self.log.lock() {
                    l.event("policy.invalid", json!({"error": e.to_string()}));
                }
                Err(anyhow::anyhow!("policy update: {e}"))
            }
        }
    }

    /// The asker for `filesystem.ask`.
    pub fn write_asker(&self) -> WriteAsker {
        self.writes.clone()
    }

    /// Stops serving. The sandbox is gone, so its connections end; each is recorded when it
    /// does: wait for that (at most a second, for a tunnel whose far end stays open), then stop.
    pub fn stop(mut self) {
        if let Some((waiter, wake)) = self.waiter.take() {
            drop(wake);
            let _ = waiter.join();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let busy = |n: &Network| {
            n.proxy.active_connections() > 0 || n.relays.iter().any(|r| r.active_connections() > 0)
        };
        while busy(&self) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(rt) = Arc::try_unwrap(self.runtime)
            .ok()
            .and_then(|l| l.runtime.into_inner())
        {
            rt.shutdown_timeout(Duration::from_millis(200));
        }
    }

    /// A lazy start: a thread that waits, without spinning, until one of `listeners` has a
    /// connection waiting (then starts the runtime, whose tasks accept it) or the returned pipe
    /// is written to or closed (the run is over).
    fn wait_for_first(
        lazy: Arc<Lazy>,
        listeners: Vec<TcpListener>,
    ) -> Result<(std::thread::JoinHandle<()>, OwnedFd)> {
        use std::os::fd::AsFd;
        let (wake_r, wake_w) =
            ringfence_linux::sys::pipe().context("creating the proxy's wake-up pipe")?;
        let waiter = std::thread::Builder::new()
            .name("ringfence-proxy".into())
            .spawn(move || {
                let mut fds: Vec<std::os::fd::BorrowedFd<'_>> =
                    listeners.iter().map(|l| l.as_fd()).collect();
                fds.push(wake_r.as_fd());
                let ready = ringfence_linux::netns::wait_readable(&fds);
                let connection = match &ready {
                    Ok(r) => r.last() == Some(&false),
                    Err(_) => true,
                };
                if connection {
                    if let Err(e) = lazy.start() {
                        // The listeners close with their tasks: connections inside are refused
                        // instead of waiting for a proxy that is not coming.
                        lazy.tasks
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clear();
                        eprintln!(
                            "ringfence: the egress proxy could not start ({e:#}); nothing inside \
                             reaches the network\r"
                        );
                    }
                }
            })
            .context("starting the proxy's waiting thread")?;
        Ok((waiter, wake_w))
    }
}

/// Replaces credentials in a line's `network.parentProxy` URLs before the line is logged.
fn redact_parent_proxy(v: &mut Value) {
    if let Some(pp) = v
        .pointer_mut("/network/parentProxy")
        .and_then(Value::as_object_mut)
    {
        for key in ["http", "https"] {
            if let Some(Value::String(url)) = pp.get_mut(key) {
                *url = ringfence_policy::redact(url);
            }
        }
    }
}

/// Checks that `fd` (`--control-fd`) is open and is not one of the standard streams.
pub fn check_fd(fd: i32) -> Result<()> {
    if fd < 3 {
        anyhow::bail!("--control-fd {fd}: use a descriptor other than stdin, stdout and stderr");
    }
    if !ringfence_linux::process::is_open(fd) {
        anyhow::bail!("--control-fd {fd}: not an open file descriptor");
    }
    Ok(())
}

/// Takes ownership of the inherited descriptor `fd` (`--control-fd`), after checking that it
/// is open and is not one of the standard streams.
pub fn take_fd(fd: i32) -> Result<OwnedFd> {
    check_fd(fd)?;
    ringfence_linux::process::take_inherited(fd).with_context(|| format!("--control-fd {fd}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn logged_control_lines_carry_no_proxy_credentials() {
        let mut v = json!({"type": "policy", "network": {"allowedDomains": ["a.com"],
            "parentProxy": {"http": "http://bob:hunter2@p:3128", "https": "http://p:3129"}}});
        redact_parent_proxy(&mut v);
        assert_eq!(
            v["network"]["parentProxy"],
            json!({"http": "http://***@p:3128", "https": "http://p:3129"})
        );
        assert_eq!(v["network"]["allowedDomains"], json!(["a.com"]));
    }
}
