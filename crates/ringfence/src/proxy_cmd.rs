//! `ringfence proxy`: the egress proxy on its own, as a gateway for containers, VMs and pods
//! that point at it. Same policy layers as `run`; every decision is one JSON line (on stdout,
//! or in a hash-chained log with `--log`), with the client's proxy user name as its identity.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
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
    listen: SocketAddr,
    /// Append decisions to this hash-chained log (a new file) instead of printing them.
    #[arg(long = "log", value_name = "FILE")]
    log: Option<PathBuf>,
    /// JSON-lines control channel on this inherited descriptor: questions about unlisted
    /// hosts, answers, live policy updates (see the README).
    #[arg(long = "control-fd", value_name = "N")]
    control_fd: Option<i32>,
}

/// Where decision lines go.
enum Sink {
    Stdout,
    Log(ringfence_audit::LogWriter),
}

struct GatewayHooks {
    lines: mpsc::SyncSender<Value>,
    control: Option<Arc<Control>>,
}

impl Hooks for GatewayHooks {
    fn record(&self, d: &DecisionRecord) {
        let _ = self.lines.send(d.to_json());
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
    if fd < 3 {
        bail!("--control-fd {fd}: use a descriptor of 3 or above (0-2 are stdio)");
    }
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("--control-fd {fd}: the descriptor is not open; pass it from the calling program");
    }
    // SAFETY: the descriptor is open, was inherited for this purpose, and nothing else in
    // this process uses it; from here it is owned (and closed) by the control channel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A gateway holds two sockets per connection (and pipes while data moves): raise the soft
/// limit on open files to the hard one.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn main(args: ProxyArgs) -> Result<i32> {
    let (policy, _cwd) = prepare::load_policy(&Sources {
        settings: args.settings.clone(),
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
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
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
        let hooks = Arc::new(GatewayHooks {
            lines: start_writer(sink),
            control: control.clone(),
        });
        let proxy = Proxy::with_parent(net, hooks, ringfence_proxy::Limits::default(), parent);
        if let (Some(reader), Some(control)) = (reader, control) {
            let p = proxy.clone();
            tokio::spawn(control.run_reader(reader, p, |_| {}, |e| {
                eprintln!("ringfence proxy: control channel: {e}; the policy in force is unchanged")
            }));
        }
        let local = listener.local_addr().unwrap_or(args.listen);
        eprintln!(
            "ringfence proxy: listening on {local} (HTTP and SOCKS5){}",
            if local.ip().is_loopback() {
                ""
            } else {
                "; this address is reachable from other machines"
            }
        );
        proxy
            .serve(listener)
            .await
            .with_context(|| format!("accepting on {local}"))?;
        Ok(0)
    })
}
