//! `ringfence proxy`: the egress proxy on its own, as a gateway for containers, VMs and pods
//! that point at it. Same policy layers as `run`; every decision is one JSON line (on stdout,
//! or in a hash-chained log with `--log`), with the client's proxy user name as its identity.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use ringfence_proxy::control::{self, Control};
use ringfence_proxy::{AskAnswer, AskQuery, DecisionRecord, Hooks, NetPolicy, Proxy};
use serde_json::Value;

use crate::prepare::{self, Sources};

#[derive(Args)]
pub struct ProxyArgs {
    /// Policy file (replaces the user settings layer); only its `network` section is used.
    #[arg(short = 's', long = "settings", value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Address to listen on (HTTP and SOCKS5 on the same port), e.g. 127.0.0.1:3128.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Accept on this inherited listening socket instead of --listen (with a decider: TCP or
    /// a unix socket).
    #[arg(long = "listen-fd", value_name = "N")]
    listen_fd: Option<i32>,
    /// srt's external decider on this inherited socket: every request is decided by it and
    /// nothing else (srt's proxy-only protocol; see the README).
    #[arg(long = "decider-fd", value_name = "N")]
    decider_fd: Option<i32>,
    /// The decider's stream to the proxy, with --decider-out (a pair of pipes).
    #[arg(long = "decider-in", value_name = "N")]
    decider_in: Option<i32>,
    /// The proxy's stream to the decider, with --decider-in.
    #[arg(long = "decider-out", value_name = "N")]
    decider_out: Option<i32>,
    /// With a decider: stop when this inherited stream ends.
    #[arg(long = "lifeline-fd", value_name = "N")]
    lifeline_fd: Option<i32>,
    /// With a decider: let allow verdicts set headers on plain-HTTP requests (cleartext).
    #[arg(long = "plaintext-header-set")]
    plaintext_header_set: bool,
    /// srt's TLS-termination CA for the decider mode; refused (see the README).
    #[arg(long = "ca-fd", value_name = "N")]
    ca_fd: Option<i32>,
    /// srt's response-header filter for the decider mode; refused (see the README).
    #[arg(long = "strip-response-header", value_name = "NAME")]
    strip_response_header: Vec<String>,
    /// Append decisions to this hash-chained log (a new file) instead of printing them.
    #[arg(long = "log", value_name = "FILE")]
    log: Option<PathBuf>,
    /// JSON-lines control channel on this inherited descriptor: questions about unlisted
    /// hosts, answers, live policy updates (see the README).
    #[arg(long = "control-fd", value_name = "N")]
    control_fd: Option<i32>,
    /// Reverse proxy to this https:// origin: clients send plain HTTP to --listen (a base
    /// URL such as ANTHROPIC_BASE_URL), requests go on over verified TLS with the policy's
    /// credentials and request rules applied.
    #[arg(long = "reverse", value_name = "URL")]
    reverse: Option<String>,
    /// With --reverse: allow a --listen address other than loopback (the clients' requests
    /// then cross the network in clear).
    #[arg(long = "allow-remote")]
    allow_remote: bool,
    /// Clients of a shared gateway, each with a token and a policy of its own (see the
    /// README); every connection must authenticate as one of them.
    #[arg(long = "clients", value_name = "FILE")]
    clients: Option<PathBuf>,
    /// Serve /healthz and Prometheus /metrics on this address (plain HTTP, separate from
    /// --listen).
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Listen with TLS: this server certificate chain (PEM), with --tls-key.
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// With --tls-cert and --clients: every client presents a certificate that chains to
    /// this CA (PEM) and is listed in the clients file by its certSha256.
    #[arg(long = "client-ca", value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Print a new client token and its SHA-256 (for a clients file), then exit.
    #[arg(long = "new-client-token")]
    new_client_token: bool,
}

/// Where decision lines go.
enum Sink {
    Stdout,
    Log(ringfence_audit::LogWriter),
}

struct GatewayHooks {
    lines: mpsc::SyncSender<Value>,
    control: Option<Arc<Control>>,
    metrics: Option<Arc<Metrics>>,
}

/// Counters for `/metrics`: decisions by client and outcome, bytes each way.
#[derive(Default)]
struct Metrics {
    decisions: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
    bytes_up: std::sync::atomic::AtomicU64,
    bytes_down: std::sync::atomic::AtomicU64,
}

impl Metrics {
    fn count(&self, v: &Value) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let mut key = (s("client"), s("decision"));
        let mut map = self
            .decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Without --clients a client names itself: past this many series, one bucket.
        if map.len() >= 1000 && !map.contains_key(&key) {
            key.0 = "(other)".into();
        }
        *map.entry(key).or_default() += 1;
        drop(map);
        self.bytes_up
            .fetch_add(v["bytesUp"].as_u64().unwrap_or(0), Relaxed);
        self.bytes_down
            .fetch_add(v["bytesDown"].as_u64().unwrap_or(0), Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    fn render(&self, proxy: &Proxy) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let label = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ringfence_proxy_decisions_total Requests and tunnels decided, by client and decision.");
        let _ = writeln!(out, "# TYPE ringfence_proxy_decisions_total counter");
        for ((client, decision), n) in self
            .decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "ringfence_proxy_decisions_total{{client=\"{}\",decision=\"{}\"}} {n}",
                label(client),
                label(decision)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringfence_proxy_bytes_total Bytes relayed, by direction."
        );
        let _ = writeln!(out, "# TYPE ringfence_proxy_bytes_total counter");
        let _ = writeln!(
            out,
            "ringfence_proxy_bytes_total{{direction=\"up\"}} {}",
            self.bytes_up.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "ringfence_proxy_bytes_total{{direction=\"down\"}} {}",
            self.bytes_down.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ringfence_proxy_active_connections Client connections being served."
        );
        let _ = writeln!(out, "# TYPE ringfence_proxy_active_connections gauge");
        let _ = writeln!(
            out,
            "ringfence_proxy_active_connections {}",
            proxy.active_connections()
        );
        out
    }
}

/// `--metrics ADDR`: `GET /healthz` (200 `ok` while the proxy serves) and `GET /metrics`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let proxy = proxy.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let line = head.lines().next().unwrap_or("");
            let (status, ctype, body) = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
                ["GET", "/healthz"] => ("200 OK", "text/plain", "ok\n".to_string()),
                ["GET", "/metrics"] => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    metrics.render(&proxy),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /healthz or /metrics\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

impl Hooks for GatewayHooks {
    fn record(&self, d: &DecisionRecord) {
        let v = d.to_json();
        if let Some(m) = &self.metrics {
            m.count(&v);
        }
        let _ = self.lines.send(v);
    }

    fn ask(&self, q: AskQuery) -> Pin<Box<dyn std::future::Future<Output = AskAnswer> + Send>> {
        match &self.control {
            Some(c) => c.ask(q),
            None => Box::pin(async { AskAnswer::Deny }),
        }
    }
}

/// Writes decision lines on a thread of its own; a line is written within about 5 ms.
fn start_writer(mut sink: Sink) -> mpsc::SyncSender<Value> {
    // Bounded: when the log falls behind, connections wait rather than memory growing.
    let (tx, rx) = mpsc::sync_channel::<Value>(1024);
    std::thread::spawn(move || {
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut failed = false;
        // Stdout is line-buffered: a batch goes out in one write.
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(v) = next {
                let ok = match &mut sink {
                    Sink::Stdout => {
                        let mut obj = match v {
                            Value::Object(m) => m,
                            _ => serde_json::Map::new(),
                        };
                        obj.insert("kind".into(), "net.decision".into());
                        obj.insert("ts".into(), ringfence_audit::now_rfc3339().into());
                        writeln!(batch, "{}", Value::Object(obj)).is_ok()
                    }
                    Sink::Log(w) => match v {
                        Value::Object(m) => w.write("net.decision", m).is_ok(),
                        _ => true,
                    },
                };
                if !ok && !failed {
                    eprintln!("ringfence proxy: writing a decision failed; later ones may be lost");
                    failed = true;
                }
                next = rx.try_recv().ok();
            }
            let _ = match &mut sink {
                Sink::Stdout => {
                    let mut out = stdout.lock();
                    let ok = out.write_all(&batch).is_ok() && out.flush().is_ok();
                    batch.clear();
                    ok
                }
                Sink::Log(w) => w.flush().is_ok(),
            };
            // Under load, gather lines for a moment instead of waking for each one.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    tx
}

/// Takes over an inherited descriptor given with `--control-fd`.
fn inherited_fd(fd: i32) -> Result<OwnedFd> {
    inherited("--control-fd", fd)
}

/// Takes over an inherited descriptor given with the option `opt`.
fn inherited(opt: &str, fd: i32) -> Result<OwnedFd> {
    if fd < 3 {
        bail!("{opt} {fd}: use a descriptor of 3 or above (0-2 are stdio)");
    }
    if !ringfence_linux::process::is_open(fd) {
        bail!("{opt} {fd}: the descriptor is not open; pass it from the calling program");
    }
    ringfence_linux::process::take_inherited(fd).with_context(|| format!("{opt} {fd}"))
}

/// A gateway holds two sockets per connection (and pipes while data moves): raise the soft
/// limit on open files to the hard one.
fn raise_open_files() {
    ringfence_linux::process::raise_open_files();
}

/// The policy of `-s FILE` (or the layered files) for the gateway, with the keys that have no
/// meaning for it refused.
fn gateway_policy(settings: Option<PathBuf>) -> Result<(ringfence_policy::Policy, NetPolicy)> {
    let (policy, _cwd) = prepare::load_policy(&Sources {
        settings,
        ..Sources::default()
    })?;
    let net = NetPolicy::from_policy(&policy).context("network policy")?;
    // The gateway is the proxy: a setting that replaces it with another one has no meaning
    // here, and is refused rather than skipped.
    for (key, set) in [
        ("network.httpProxyPort", policy.http_proxy_port.is_some()),
        ("network.socksProxyPort", policy.socks_proxy_port.is_some()),
    ] {
        if set {
            bail!(
                "{key}: `ringfence proxy` is the proxy itself and cannot hand its port to another; \
                 remove {key}, or point the clients at your own proxy directly"
            );
        }
    }
    if policy.tls_terminate.is_some() {
        bail!(
            "network.tlsTerminate: `ringfence proxy` does not terminate TLS yet; remove the key \
             (`ringfence run` does)"
        );
    }
    Ok((policy, net))
}

/// `--clients FILE`: `{"clients": [{"name": N, "tokenSha256": HEX, "settings": FILE}]}` (or
/// `certSha256` instead of `tokenSha256` with `--client-ca`), each settings file (relative to
/// the clients file) a policy whose network section decides for that client. Returns the
/// clients and every file read (for the reload watch).
fn load_clients(
    file: &std::path::Path,
    client_ca: bool,
) -> Result<(ringfence_proxy::clients::Clients, Vec<PathBuf>)> {
    use ringfence_proxy::clients::{parse_sha256, Client, Clients, Credential};
    let what = |k: &str| format!("--clients {}: {k}", file.display());
    let text = std::fs::read_to_string(file).with_context(|| what("reading"))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| what("not JSON"))?;
    let Some(obj) = doc.as_object() else {
        bail!("{}", what("give an object {\"clients\": [...]}"));
    };
    if let Some(k) = obj.keys().find(|k| *k != "clients") {
        bail!("{}", what(&format!("unknown key {k}")));
    }
    let Some(list) = obj.get("clients").and_then(Value::as_array) else {
        bail!("{}", what("clients: give a list"));
    };
    let dir = file.parent().unwrap_or(std::path::Path::new("/"));
    let mut out = Vec::new();
    let mut files = vec![file.to_path_buf()];
    for (i, c) in list.iter().enumerate() {
        let at = |k: &str| what(&format!("clients[{i}].{k}"));
        let Some(c) = c.as_object() else {
            bail!("{}", what(&format!("clients[{i}]: give an object")));
        };
        if let Some(k) = c
            .keys()
            .find(|k| !["name", "tokenSha256", "certSha256", "settings"].contains(&k.as_str()))
        {
            bail!(
                "{}",
                at(&format!(
                    "{k}: unknown key (name, tokenSha256, certSha256, settings)"
                ))
            );
        }
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            bail!(
                "{}",
                at("name: give a non-empty printable name without ':'")
            );
        }
        if out.iter().any(|o: &Client| o.name == name) {
            bail!("{}", at(&format!("name: {name} is listed twice")));
        }
        let credential = match (c.get("tokenSha256"), c.get("certSha256")) {
            (Some(_), Some(_)) => bail!("{}", at("give one of tokenSha256 and certSha256")),
            (Some(_), None) if client_ca => bail!(
                "{}",
                at("tokenSha256: with --client-ca every client is its certificate; give certSha256")
            ),
            (None, Some(_)) if !client_ca => bail!(
                "{}",
                at("certSha256: a client known by its certificate needs --tls-cert, --tls-key and --client-ca")
            ),
            (Some(t), None) => match t.as_str().and_then(parse_sha256) {
                Some(h) => Credential::Token(h),
                None => bail!("{}", at("tokenSha256: give the token's SHA-256 as 64 hex digits (`ringfence proxy --new-client-token` prints both)")),
            },
            (None, Some(t)) => match t.as_str().and_then(parse_sha256) {
                Some(h) => Credential::Certificate(h),
                None => bail!("{}", at("certSha256: give the SHA-256 of the certificate's DER encoding as 64 hex digits (`openssl x509 -noout -fingerprint -sha256 -in CERT`)")),
            },
            (None, None) => bail!(
                "{}",
                at(if client_ca {
                    "certSha256: give the SHA-256 of the client's certificate"
                } else {
                    "tokenSha256: give the token's SHA-256 as 64 hex digits (`ringfence proxy --new-client-token` prints both)"
                })
            ),
        };
        let Some(settings) = c.get("settings").and_then(Value::as_str) else {
            bail!("{}", at("settings: give the client's policy file"));
        };
        let settings = dir.join(settings);
        let (policy, net) = gateway_policy(Some(settings.clone()))
            .with_context(|| at(&format!("settings {}", settings.display())))?;
        // These act on every connection the gateway makes, whoever asked: they belong in -s.
        for (key, set) in [
            ("network.parentProxy", policy.parent_proxy.is_some()),
            ("network.mitmProxy", policy.mitm_proxy.is_some()),
            (
                "network.deniedResolvedAddresses",
                !policy.denied_resolved_addresses.is_empty(),
            ),
        ] {
            if set {
                bail!(
                    "{}: {key} applies to all of the gateway's connections; set it in the -s file",
                    at(&format!("settings {}", settings.display()))
                );
            }
        }
        files.push(settings);
        out.push(Client::with_credential(name.to_string(), credential, net));
    }
    if out.is_empty() {
        bail!(
            "{}",
            what("clients: the list is empty, so no one could connect")
        );
    }
    Ok((Clients::new(out), files))
}

/// `--tls-cert`, `--tls-key`, `--client-ca`: the TLS side of the listener, if asked for.
fn tls_listener(args: &ProxyArgs) -> Result<Option<ringfence_proxy::mtls::TlsListener>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            if args.client_ca.is_some() {
                bail!(
                    "--client-ca: give --tls-cert and --tls-key too (the gateway listens with TLS)"
                );
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => bail!("--tls-cert: give --tls-key FILE too (its private key)"),
        (None, Some(_)) => bail!("--tls-key: give --tls-cert FILE too (its certificate)"),
    };
    if args.client_ca.is_some() && args.clients.is_none() {
        bail!("--client-ca: give --clients FILE too, listing each client's certSha256 and policy");
    }
    let read = |opt: &str, f: &std::path::Path| {
        std::fs::read_to_string(f).with_context(|| format!("{opt} {}", f.display()))
    };
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    let ca_pem = args
        .client_ca
        .as_deref()
        .map(|f| read("--client-ca", f))
        .transpose()?;
    let names = (
        format!("--tls-cert {}", cert.display()),
        format!("--tls-key {}", key.display()),
        format!(
            "--client-ca {}",
            args.client_ca
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
    );
    let t = ringfence_proxy::mtls::TlsListener::new(
        &cert_pem,
        &key_pem,
        ca_pem.as_deref(),
        (&names.0, &names.1, &names.2),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(t))
}

pub fn main(args: ProxyArgs) -> Result<i32> {
    if args.new_client_token {
        let (token, hash) =
            ringfence_proxy::clients::new_token().map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("token: {token}");
        println!("tokenSha256: {hash}");
        return Ok(0);
    }
    if (args.clients.is_some()
        || args.tls_cert.is_some()
        || args.tls_key.is_some()
        || args.client_ca.is_some())
        && (args.reverse.is_some() || args.decider_fd.is_some() || args.decider_in.is_some())
    {
        bail!("--clients, --metrics, --tls-cert, --tls-key, --client-ca: only for the forward proxy (not with --reverse or a decider)");
    }
    if args.reverse.is_some() {
        return reverse(args);
    }
    if args.allow_remote {
        bail!("--allow-remote: only with --reverse");
    }
    if args.decider_fd.is_some() || args.decider_in.is_some() || args.decider_out.is_some() {
        return decided(args);
    }
    for (opt, set) in [
        ("--lifeline-fd", args.lifeline_fd.is_some()),
        ("--plaintext-header-set", args.plaintext_header_set),
        ("--ca-fd", args.ca_fd.is_some()),
        (
            "--strip-response-header",
            !args.strip_response_header.is_empty(),
        ),
    ] {
        if set {
            bail!("{opt}: only with a decider (--decider-fd, or --decider-in and --decider-out)");
        }
    }
    let (policy, net) = gateway_policy(args.settings.clone())?;
    let policy_files: Vec<PathBuf> = policy.files.iter().map(|(_, f)| f.clone()).collect();
    let fixed_parent_for_watch = policy.parent_proxy.clone();
    let has_control = args.control_fd.is_some();
    let tls = tls_listener(&args)?;
    let client_ca = args.client_ca.is_some();
    let clients = args
        .clients
        .as_deref()
        .map(|f| load_clients(f, client_ca).map(|(c, _)| c))
        .transpose()?;
    let parent = crate::netrun::Egress::from_policy(&policy)?.parent;
    let fixed_parent = policy.parent_proxy.clone();
    let sink = match &args.log {
        Some(path) => Sink::Log(
            ringfence_audit::LogWriter::create(path, &format!("proxy-{}", std::process::id()))
                .map_err(|e| anyhow::anyhow!("creating the decision log: {e}"))?,
        ),
        None => Sink::Stdout,
    };
    let control_fd = args.control_fd.map(inherited_fd).transpose()?;
    raise_open_files();
    let listener = match (args.listen_fd, args.listen) {
        (Some(fd), None) => std::net::TcpListener::from(inherited("--listen-fd", fd)?),
        (None, Some(addr)) => {
            std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?
        }
        _ => bail!("give one of --listen ADDR and --listen-fd N"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ask_timeout = net.ask_timeout();
    let asks = net.ask_enabled();
    runtime.block_on(async move {
        let (reader, control) = match control_fd {
            Some(fd) => {
                let (r, w) = control::open_fd(fd).context("--control-fd")?;
                let c = Control::start(w, ask_timeout);
                c.fix_egress(fixed_parent, None, None);
                (r, Some(c))
            }
            None => (None, None),
        };
        if asks && control.is_none() {
            eprintln!(
                "ringfence proxy: note: network.ask is on but there is no --control-fd to ask over; unlisted hosts are denied"
            );
        }
        let metrics = args.metrics.map(|_| Arc::new(Metrics::default()));
        let hooks = Arc::new(GatewayHooks {
            lines: start_writer(sink),
            control: control.clone(),
            metrics: metrics.clone(),
        });
        let proxy = Proxy::with_parent(net, hooks, ringfence_proxy::Limits::default(), parent);
        let mut who = match &clients {
            Some(c) => format!("; {} clients, each must authenticate", c.len()),
            None => String::new(),
        };
        if let Some(c) = clients {
            proxy.set_clients(Some(c));
        }
        if let Some(file) = args.clients.clone() {
            tokio::spawn(watch_clients(proxy.clone(), file, client_ca));
        }
        if !has_control {
            tokio::spawn(watch_policy(
                proxy.clone(),
                args.settings.clone(),
                policy_files,
                fixed_parent_for_watch,
            ));
        }
        if let (Some(addr), Some(m)) = (args.metrics, metrics) {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics {addr}"))?;
            if let Ok(a) = l.local_addr() {
                who.push_str(&format!("; /healthz and /metrics on {a}"));
            }
            tokio::spawn(serve_metrics(l, proxy.clone(), m));
        }
        if let (Some(reader), Some(control)) = (reader, control) {
            let p = proxy.clone();
            tokio::spawn(control.run_reader(reader, p, |_| {}, |e| {
                eprintln!("ringfence proxy: control channel: {e}; the policy in force is unchanged")
            }));
        }
        let local = listener
            .local_addr()
            .context("--listen-fd: not a TCP listening socket")?;
        eprintln!(
            "ringfence proxy: listening on {local} (HTTP and SOCKS5{}){}{who}",
            match &tls {
                Some(t) if t.client_certs() => " over TLS, clients known by their certificates",
                Some(_) => " over TLS",
                None => "",
            },
            if local.ip().is_loopback() {
                ""
            } else {
                "; this address is reachable from other machines"
            }
        );
        match tls {
            Some(t) => proxy.serve_tls(listener, t).await,
            None => proxy.serve(listener).await,
        }
        .with_context(|| format!("accepting on {local}"))?;
        Ok(0)
    })
}

/// The modification time and size of each file, to notice a change.
fn stamps(files: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Reloads the clients file and the clients' policies when one of them changes (checked every
/// second). New connections use the new clients; open tunnels keep going. A file that does not
/// load leaves the clients in force unchanged.
async fn watch_clients(proxy: Arc<Proxy>, file: PathBuf, client_ca: bool) {
    let mut files = match load_clients(&file, client_ca) {
        Ok((_, f)) => f,
        Err(_) => vec![file.clone()],
    };
    let mut seen = stamps(&files);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        let loaded = tokio::task::block_in_place(|| load_clients(&file, client_ca));
        match loaded {
            Ok((clients, f)) => {
                eprintln!(
                    "ringfence proxy: reloaded {} ({} clients)",
                    file.display(),
                    clients.len()
                );
                proxy.set_clients(Some(clients));
                files = f;
                seen = stamps(&files);
            }
            Err(e) => {
                eprintln!("ringfence proxy: {e:#}; the clients in force are unchanged");
                seen = now;
            }
        }
    }
}

/// Reloads the policy (`-s` or the layered files) when one of its files changes (checked every
/// second), for new connections; open tunnels keep going. A policy that does not load, or that
/// changes `network.parentProxy` (fixed when the gateway starts), leaves the one in force.
async fn watch_policy(
    proxy: Arc<Proxy>,
    settings: Option<PathBuf>,
    mut files: Vec<PathBuf>,
    parent: Option<ringfence_policy::ParentProxySettings>,
) {
    let mut seen = stamps(&files);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = tokio::task::block_in_place(|| gateway_policy(settings.clone()));
        match loaded {
            Ok((policy, _)) if policy.parent_proxy != parent => eprintln!(
                "ringfence proxy: network.parentProxy changed; it is fixed while the gateway runs (restart it); the policy in force is unchanged"
            ),
            Ok((policy, net)) => {
                eprintln!("ringfence proxy: reloaded the policy");
                proxy.set_policy(net);
                files = policy.files.iter().map(|(_, f)| f.clone()).collect();
                seen = stamps(&files);
            }
            Err(e) => {
                eprintln!("ringfence proxy: {e:#}; the policy in force is unchanged")
            }
        }
    }
}

/// The origin of `--reverse URL`: `https://host[:port]`, with no path, query or user name.
fn reverse_origin(url: &str) -> Result<(String, u16)> {
    let Some(rest) = url.strip_prefix("https://") else {
        bail!("--reverse {url}: give an https:// URL (the upstream is reached over verified TLS)");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        bail!("--reverse {url}: give the origin only, https://host[:port] (no path or user name)");
    }
    let (host, port) = ringfence_proxy::host::split_host_port(rest)
        .map_err(|e| anyhow::anyhow!("--reverse {url}: {e}"))?;
    let host = ringfence_proxy::host::normalize_host(host)
        .map_err(|e| anyhow::anyhow!("--reverse {url}: {e}"))?;
    Ok((host.to_string(), port.unwrap_or(443)))
}

/// `ringfence proxy --reverse https://host --listen ADDR`: the reverse proxy
/// (ringfence_proxy::Proxy::serve_reverse).
fn reverse(args: ProxyArgs) -> Result<i32> {
    let url = args.reverse.clone().unwrap_or_default();
    let (host, port) = reverse_origin(&url)?;
    for (opt, set) in [
        ("--decider-fd", args.decider_fd.is_some()),
        ("--decider-in", args.decider_in.is_some()),
        ("--decider-out", args.decider_out.is_some()),
        ("--lifeline-fd", args.lifeline_fd.is_some()),
        ("--plaintext-header-set", args.plaintext_header_set),
        ("--ca-fd", args.ca_fd.is_some()),
        (
            "--strip-response-header",
            !args.strip_response_header.is_empty(),
        ),
        ("--control-fd", args.control_fd.is_some()),
    ] {
        if set {
            bail!("{opt}: not available with --reverse; remove it");
        }
    }
    let listener = match (args.listen_fd, args.listen) {
        (Some(fd), None) => std::net::TcpListener::from(inherited("--listen-fd", fd)?),
        (None, Some(addr)) => {
            if !addr.ip().is_loopback() && !args.allow_remote {
                bail!(
                    "--listen {addr}: not a loopback address; the reverse proxy takes requests \
                     in clear and adds credentials to them. Listen on 127.0.0.1, or add \
                     --allow-remote"
                );
            }
            std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?
        }
        _ => bail!("give one of --listen ADDR and --listen-fd N"),
    };
    let local = listener
        .local_addr()
        .context("--listen-fd: not a TCP listening socket")?;
    if !local.ip().is_loopback() && !args.allow_remote {
        bail!("--listen-fd: the socket is bound to {local}, not loopback; add --allow-remote");
    }
    let (policy, _cwd) = prepare::load_policy(&Sources {
        settings: args.settings.clone(),
        clear_requests: true,
        ..Sources::default()
    })?;
    for (key, set) in [
        ("network.httpProxyPort", policy.http_proxy_port.is_some()),
        ("network.socksProxyPort", policy.socks_proxy_port.is_some()),
        ("network.tlsTerminate", policy.tls_terminate.is_some()),
        (
            "credentials.files (mode \"mask\")",
            !policy.masked_files.is_empty(),
        ),
    ] {
        if set {
            bail!(
                "{key}: has no meaning for `ringfence proxy --reverse` (its clients send plain \
                 HTTP to it; it opens the TLS connection itself); remove {key}"
            );
        }
    }
    let net = NetPolicy::from_policy(&policy).context("network policy")?;
    let parent = crate::netrun::Egress::from_policy(&policy)?.parent;
    let vars = ringfence_runtime::tlsrun::masked_secrets(&policy)?;
    let secrets = vars.secrets;
    let injections = ringfence_runtime::tlsrun::header_injections(&policy)?;
    let shown: Vec<(String, String)> = secrets
        .iter()
        .filter(|s| s.in_env)
        .map(|s| (s.name.clone(), s.placeholder.clone()))
        .chain(vars.env)
        .collect();
    let ssl_cert_file = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let aws = ringfence_runtime::tlsrun::aws_pairs(&policy, &secrets)?;
    let terminator = ringfence_proxy::tls::reverse_setup(
        ssl_cert_file.as_deref(),
        ringfence_proxy::tls::Credentials {
            secrets,
            injections,
            aws,
        },
        &policy,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sink = match &args.log {
        Some(path) => Sink::Log(
            ringfence_audit::LogWriter::create(path, &format!("proxy-{}", std::process::id()))
                .map_err(|e| anyhow::anyhow!("creating the decision log: {e}"))?,
        ),
        None => Sink::Stdout,
    };
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let hooks = Arc::new(GatewayHooks {
            lines: start_writer(sink),
            control: None,
            metrics: None,
        });
        let proxy = Proxy::with_parent(net, hooks, ringfence_proxy::Limits::default(), parent);
        for (name, placeholder) in &shown {
            eprintln!(
                "ringfence proxy: masked {name}: give clients {name}={placeholder}; the real \
                 value is put in toward its injectHosts"
            );
        }
        eprintln!("ringfence proxy: listening on {local} (plain HTTP), reverse proxy to {url}");
        proxy
            .serve_reverse(
                listener,
                ringfence_proxy::Upstream { host, port },
                terminator,
            )
            .await
            .with_context(|| format!("accepting on {local}"))?;
        Ok(0)
    })
}

/// `ringfence proxy --listen-fd N --decider-fd M`: srt's proxy-only mode, every request decided
/// by the external decider (ringfence_proxy::decided).
fn decided(args: ProxyArgs) -> Result<i32> {
    for (opt, set, why) in [
        (
            "-s",
            args.settings.is_some(),
            "the decider is the only policy source",
        ),
        (
            "--control-fd",
            args.control_fd.is_some(),
            "the decider answers every request",
        ),
        (
            "--log",
            args.log.is_some(),
            "the decider sees every request and keeps its own record",
        ),
        (
            "--ca-fd",
            args.ca_fd.is_some(),
            "ringfence does not terminate TLS for a decider; without it CONNECTs are refused",
        ),
        (
            "--strip-response-header",
            !args.strip_response_header.is_empty(),
            "responses pass through unchanged here",
        ),
    ] {
        if set {
            bail!("{opt}: not available with a decider ({why}); remove it");
        }
    }
    let listen_fd = args
        .listen_fd
        .map(|fd| inherited("--listen-fd", fd))
        .transpose()?;
    enum Link {
        Socket(OwnedFd),
        Pipes(OwnedFd, OwnedFd),
    }
    let link = match (args.decider_fd, args.decider_in, args.decider_out) {
        (Some(fd), None, None) => Link::Socket(inherited("--decider-fd", fd)?),
        (None, Some(i), Some(o)) => Link::Pipes(
            inherited("--decider-in", i)?,
            inherited("--decider-out", o)?,
        ),
        _ => bail!("give --decider-fd, or both --decider-in and --decider-out"),
    };
    let lifeline = args
        .lifeline_fd
        .map(|fd| inherited("--lifeline-fd", fd))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        use ringfence_proxy::decided::{self, Listener, Lists, Options};
        let listener = match (listen_fd, args.listen) {
            (Some(fd), None) => {
                Listener::from_fd(fd).context("--listen-fd: not a listening socket")?
            }
            (None, Some(addr)) => Listener::from_tcp(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("listening on {addr}"))?,
            )
            .with_context(|| format!("listening on {addr}"))?,
            _ => bail!("give one of --listen ADDR and --listen-fd N"),
        };
        use ringfence_proxy::decider::Decider;
        let timeout = std::time::Duration::from_secs(5);
        let started = match link {
            Link::Socket(fd) => {
                let sock = std::os::unix::net::UnixStream::from(fd);
                sock.set_nonblocking(true).context("--decider-fd")?;
                let sock = tokio::net::UnixStream::from_std(sock)
                    .context("--decider-fd: not a unix socket")?;
                let (r, w) = sock.into_split();
                Decider::start(r, w, timeout).await
            }
            Link::Pipes(i, o) => {
                use tokio::net::unix::pipe;
                let r = pipe::Receiver::from_owned_fd(i).context("--decider-in: not a pipe")?;
                let w = pipe::Sender::from_owned_fd(o).context("--decider-out: not a pipe")?;
                Decider::start(r, w, timeout).await
            }
        };
        let (decider, hello) = started.map_err(|e| anyhow::anyhow!("decider: {e}"))?;
        let lists = Lists::from_hello(&hello).map_err(|e| anyhow::anyhow!("decider: {e}"))?;
        eprintln!("ringfence proxy: serving; every request is decided by the decider");
        let serve = decided::serve(
            listener,
            decider,
            lists,
            Options {
                plaintext_header_set: args.plaintext_header_set,
            },
        );
        let why = match lifeline {
            Some(fd) => {
                let life = async move {
                    let mut f = tokio::fs::File::from_std(std::fs::File::from(fd));
                    let mut buf = [0u8; 256];
                    use tokio::io::AsyncReadExt;
                    while matches!(f.read(&mut buf).await, Ok(n) if n > 0) {}
                    "lifeline closed".to_string()
                };
                tokio::select! { w = serve => w, w = life => w }
            }
            None => serve.await,
        };
        eprintln!("ringfence proxy: stopped ({why})");
        Ok(0)
    })
}
