//! The control channel (`--control-fd N`): JSON lines both ways between the proxy and a
//! program that embeds ringfence. Reading applies policy updates and answers; writing sends
//! questions. One JSON object per line, UTF-8, `\n`-terminated.
//!
//! To ringfence:
//! - `{"type":"answer","id":7,"answer":"once"}`: answers question 7 (`once`, `always`, `deny`).
//! - `{"type":"allow","host":"api.example.com","port":443}`: allows a host (`port` optional).
//! - `{"type":"policy","network":{...}}`: replaces the network policy with this `network`
//!   section (the settings file's syntax: allowedDomains, deniedDomains, deniedDomainReasons,
//!   deniedResolvedAddresses, strictAllowlist, ask, askTimeoutSeconds).
//! - srt's format: a line that is a whole settings document (no `type` key) is read like a
//!   settings file; its `network` section replaces the network policy as above. Other sections
//!   take effect only in a new run.
//!
//! From ringfence:
//! - `{"type":"ask","id":7,"host":"x.com","port":443,"protocol":"connect","client":null}`:
//!   the connection waits for the answer; no answer within the ask timeout means deny, and
//!   `{"type":"expired","id":7}` follows.
//! - `{"type":"error","message":"..."}`: a line that was not understood; the policy in force
//!   stays as it was.
//! - `{"type":"decision",...}`: a decision record, when the owner forwards them
//!   ([`Control::send_decision`]).
//!
//! An invalid line never changes the policy. End of input leaves the last policy in force.
//! `network.mitmProxy` follows the lines like the lists do. `network.parentProxy`,
//! `httpProxyPort` and `socksProxyPort` are fixed when the proxy starts (as in srt): a line
//! may repeat them, and a line that sets another value is refused as a whole.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::proxy::{AskAnswer, AskQuery, DecisionRecord, Proxy};
use crate::{Error, NetPolicy};

/// The read side of a control channel.
pub type ControlReader = Box<dyn AsyncRead + Send + Unpin>;
/// The write side of a control channel.
pub type ControlWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Longest line accepted from the channel, bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Opens an inherited descriptor as a control channel. A socket is read and written; a pipe
/// or file only in the direction it was opened for (a read-only channel can update the policy
/// but questions cannot be sent over it, so they are denied).
pub fn open_fd(fd: OwnedFd) -> Result<(Option<ControlReader>, Option<ControlWriter>), Error> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| Error::Io { what, source }
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io("inspecting the control fd"))?;
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_socket() {
        let sock = std::os::unix::net::UnixStream::from(OwnedFd::from(file));
        sock.set_nonblocking(true)
            .map_err(io("setting the control socket non-blocking"))?;
        let sock =
            tokio::net::UnixStream::from_std(sock).map_err(io("registering the control socket"))?;
        let (r, w) = sock.into_split();
        return Ok((Some(Box::new(r)), Some(Box::new(w))));
    }
    let (readable, writable) = ringfence_linux::net::access_mode(std::os::fd::AsFd::as_fd(&file))
        .map_err(io("reading the control fd's flags"))?;
    let writer: Option<ControlWriter> = if writable {
        let dup = file.try_clone().map_err(io("duplicating the control fd"))?;
        Some(Box::new(tokio::fs::File::from_std(dup)))
    } else {
        None
    };
    let reader: Option<ControlReader> = if readable {
        Some(Box::new(tokio::fs::File::from_std(file)))
    } else {
        None
    };
    Ok((reader, writer))
}

/// A question that has been sent; `expired` follows unless it was answered.
struct OpenQuestion {
    control: Arc<Control>,
    id: u64,
}

impl Drop for OpenQuestion {
    fn drop(&mut self) {
        let unanswered = self
            .control
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id)
            .is_some();
        if unanswered {
            self.control.send(json!({"type": "expired", "id": self.id}));
        }
    }
}

/// Questions out, answers and updates in.
pub struct Control {
    out: Option<mpsc::UnboundedSender<String>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<AskAnswer>>>,
    next_id: AtomicU64,
    timeout: Duration,
    /// The egress settings the proxy started with, which lines cannot change.
    fixed: Mutex<FixedEgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FixedEgress {
    parent_proxy: Option<ringfence_policy::ParentProxySettings>,
    http_proxy_port: Option<u16>,
    socks_proxy_port: Option<u16>,
}

impl Control {
    /// Starts the writer task (call within a tokio runtime). `timeout` bounds each question.
    pub fn start(writer: Option<ControlWriter>, timeout: Duration) -> Arc<Control> {
        let out = writer.map(|mut w| {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    if w.write_all(line.as_bytes()).await.is_err() || w.flush().await.is_err() {
                        break;
                    }
                }
            });
            tx
        });
        Arc::new(Control {
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            timeout,
            fixed: Mutex::new(FixedEgress::default()),
        })
    }

    /// The egress settings in force from the start (the merged policy's), which a line may
    /// repeat but not change.
    pub fn fix_egress(
        &self,
        parent_proxy: Option<ringfence_policy::ParentProxySettings>,
        http_proxy_port: Option<u16>,
        socks_proxy_port: Option<u16>,
    ) {
        *self.fixed.lock().unwrap_or_else(PoisonError::into_inner) = FixedEgress {
            parent_proxy,
            http_proxy_port,
            socks_proxy_port,
        };
    }

    fn check_fixed(&self, n: &ringfence_policy::NetworkSettings) -> Result<(), Error> {
        let f = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = [
            (
                "network.parentProxy",
                n.parent_proxy.is_some() && n.parent_proxy != f.parent_proxy,
            ),
            (
                "network.httpProxyPort",
                n.http_proxy_port.is_some() && n.http_proxy_port != f.http_proxy_port,
            ),
            (
                "network.socksProxyPort",
                n.socks_proxy_port.is_some() && n.socks_proxy_port != f.socks_proxy_port,
            ),
        ];
        match changed.iter().find(|(_, c)| *c) {
            Some((key, _)) => Err(Error::Control(format!(
                "{key}: fixed when the run starts; a line cannot change it (the line is not applied)"
            ))),
            None => Ok(()),
        }
    }

    fn send(&self, v: Value) -> bool {
        match &self.out {
            Some(tx) => tx.send(format!("{v}\n")).is_ok(),
            None => false,
        }
    }

    /// Forwards a decision record as a `decision` line.
    pub fn send_decision(&self, d: &DecisionRecord) {
        let mut v = d.to_json();
        if let Value::Object(m) = &mut v {
            m.insert("type".into(), "decision".into());
        }
        self.send(v);
    }

    /// Asks over the channel; `Deny` when it cannot be written, is closed, or stays silent
    /// for the timeout. Fits [`crate::Hooks::ask`].
    pub fn ask(self: &Arc<Self>, q: AskQuery) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
        self.ask_line(json!({
            "type": "ask", "host": q.host, "port": q.port,
            "protocol": q.protocol.as_str(), "client": q.client,
        }))
    }

    /// Asks about a path: a write outside the writable roots (`filesystem.ask`, kind `write`,
    /// op `open`, `mkdir`, `rename`, `link`, `symlink`, `unlink` or `rmdir`) or a unix socket
    /// not listed (`network.ask`, kind `socket`, op `connect`):
    /// `{"type":"ask","id":N,"kind":...,"op":...,"path":...,"client":...}`, with `"to"` for
    /// the new name of a rename or a link and the target of a symlink,
    /// answered like a host question (`once`: this path, `always`: from now on and in the
    /// user's settings, `deny`).
    pub fn ask_path(
        self: &Arc<Self>,
        kind: &str,
        op: &str,
        path: &str,
        to: Option<&str>,
        client: Option<String>,
    ) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
        let mut q = json!({
            "type": "ask", "kind": kind, "op": op, "path": path, "client": client,
        });
        if let Some(to) = to {
            q["to"] = to.into();
        }
        self.ask_line(q)
    }

    /// Sends `question` with a fresh `id` and waits for its answer.
    fn ask_line(
        self: &Arc<Self>,
        mut question: Value,
    ) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let id = this.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            this.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, tx);
            // Withdraws the question however this future ends (answered, timed out, or
            // dropped because the connection went away).
            let _open = OpenQuestion {
                control: this.clone(),
                id,
            };
            question["id"] = id.into();
            let sent = this.send(question);
            if !sent {
                return AskAnswer::Deny;
            }
            match tokio::time::timeout(this.timeout, rx).await {
                Ok(Ok(a)) => a,
                _ => AskAnswer::Deny,
            }
        })
    }

    /// Reads lines until end of input, applying each to `proxy`. Each line that took effect is
    /// passed to `on_applied` (answers too); invalid lines are reported on the channel and to
    /// `on_invalid`, and change nothing.
    pub async fn run_reader(
        self: Arc<Self>,
        reader: ControlReader,
        proxy: Arc<Proxy>,
        on_applied: impl Fn(&str) + Send,
        on_invalid: impl Fn(&Error) + Send,
    ) -> Result<(), Error> {
        let mut lines = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut lines)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|source| Error::Io {
                    what: "reading the control channel".into(),
                    source,
                })?;
            if n == 0 {
                return Ok(());
            }
            let result = if buf.len() > MAX_LINE {
                // Skip the rest of the line.
                let mut rest = Vec::new();
                let _ = lines.read_until(b'\n', &mut rest).await;
                Err(Error::Control(format!("line longer than {MAX_LINE} bytes")))
            } else {
                match std::str::from_utf8(&buf) {
                    Ok(text) if text.trim().is_empty() => Ok(()),
                    Ok(text) => self
                        .apply(text.trim(), &proxy)
                        .map(|()| on_applied(text.trim())),
                    Err(_) => Err(Error::Control("not UTF-8".into())),
                }
            };
            if let Err(e) = result {
                self.send(json!({"type": "error", "message": e.to_string()}));
                on_invalid(&e);
            }
        }
    }

    /// Applies one line.
    pub fn apply(&self, line: &str, proxy: &Proxy) -> Result<(), Error> {
        let bad = |m: String| Error::Control(m);
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let current = proxy.policy();
        match obj.get("type").map(|t| t.as_str()) {
            None => {
                let settings = ringfence_policy::parse_settings(line, "control line")
                    .map_err(|e| bad(e.to_string()))?;
                self.check_fixed(&settings.network)?;
                let p = NetPolicy::from_network(
                    &settings.network,
                    settings.network.ask.unwrap_or(current.ask_enabled()),
                    current.ask_timeout(),
                )?;
                proxy.set_policy(p);
                Ok(())
            }
            Some(Some("policy")) => {
                let network = obj
                    .get("network")
                    .ok_or_else(|| bad("\"policy\" needs a \"network\" object".into()))?;
                let doc = json!({"network": network}).to_string();
                let settings = ringfence_policy::parse_settings(&doc, "control line")
                    .map_err(|e| bad(e.to_string()))?;
                let n = &settings.network;
                self.check_fixed(n)?;
                let timeout = n
                    .ask_timeout_seconds
                    .map_or(current.ask_timeout(), Duration::from_secs);
                let p =
                    NetPolicy::from_network(n, n.ask.unwrap_or(current.ask_enabled()), timeout)?;
                proxy.set_policy(p);
                Ok(())
            }
            Some(Some("allow")) => {
                let host = obj
                    .get("host")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("\"allow\" needs a \"host\" string".into()))?;
                let port = match obj.get("port") {
                    None | Some(Value::Null) => None,
                    Some(p) => Some(
                        p.as_u64()
                            .filter(|p| (1..=65535).contains(p))
                            .ok_or_else(|| bad("\"port\" must be from 1 to 65535".into()))?
                            as u16,
                    ),
                };
                proxy.allow_host(host, port)
            }
            Some(Some("answer")) => {
                let id = obj
                    .get("id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("\"answer\" needs a numeric \"id\"".into()))?;
                let answer = match obj.get("answer").and_then(Value::as_str) {
                    Some("once") => AskAnswer::Once,
                    Some("always") => AskAnswer::Always,
                    Some("deny") => AskAnswer::Deny,
                    _ => {
                        return Err(bad(
                            "\"answer\" must be \"once\", \"always\" or \"deny\"".into()
                        ))
                    }
                };
                let tx = self
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id)
                    .ok_or_else(|| bad(format!("no open question with id {id}")))?;
                let _ = tx.send(answer);
                Ok(())
            }
            Some(other) => Err(bad(format!(
                "unknown type {}",
                other.map_or("(not a string)".to_string(), |s| format!("\"{s}\""))
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{AskQuery, Hooks, Protocol, Verdict};

    struct NoHooks;
    impl Hooks for NoHooks {
        fn record(&self, _: &DecisionRecord) {}
        fn ask(&self, _: AskQuery) -> Pin<Box<dyn Future<Output = AskAnswer> + Send>> {
            Box::pin(async { AskAnswer::Deny })
        }
    }

    fn allowed(proxy: &Proxy, host: &str, port: u16) -> bool {
        matches!(proxy.policy().decide(host, port), Verdict::Allow { .. })
    }

    #[test]
    fn lines_update_the_policy() {
        let proxy = Proxy::new(NetPolicy::default(), Arc::new(NoHooks));
        let c = Control::start(None, Duration::from_secs(1));
        assert!(!allowed(&proxy, "a.com", 443));
        c.apply(r#"{"type":"allow","host":"a.com","port":443}"#, &proxy)
            .unwrap();
        assert!(allowed(&proxy, "a.com", 443) && !allowed(&proxy, "a.com", 80));
        c.apply(
            r#"{"type":"policy","network":{"allowedDomains":["*.b.com"],"ask":true,"askTimeoutSeconds":7}}"#,
            &proxy,
        )
        .unwrap();
        assert!(allowed(&proxy, "x.b.com", 1) && !allowed(&proxy, "a.com", 443));
        assert!(proxy.policy().ask_enabled());
        assert_eq!(proxy.policy().ask_timeout(), Duration::from_secs(7));
        // srt's line: a whole settings document.
        c.apply(
            r#"{"network":{"allowedDomains":["c.com"],"deniedDomains":[]},"filesystem":{"denyRead":[],"allowWrite":[],"denyWrite":[]}}"#,
            &proxy,
        )
        .unwrap();
        assert!(allowed(&proxy, "c.com", 1) && !allowed(&proxy, "x.b.com", 1));
        assert!(proxy.policy().ask_enabled(), "asking stays as it was");
        // Invalid lines change nothing.
        for bad in [
            "not json",
            "[1]",
            r#"{"type":"nope"}"#,
            r#"{"type":"allow"}"#,
            r#"{"type":"allow","host":"a..b"}"#,
            r#"{"type":"allow","host":"a.com","port":70000}"#,
            r#"{"type":"policy"}"#,
            r#"{"type":"policy","network":{"allowedDomains":["*"]}}"#,
            r#"{"type":"policy","network":{"allowedDomainz":[]}}"#,
            r#"{"network":{"allowedDomains":["https://x.com"]}}"#,
            r#"{"type":"answer","id":99,"answer":"once"}"#,
            r#"{"type":"answer","id":1,"answer":"maybe"}"#,
        ] {
            assert!(c.apply(bad, &proxy).is_err(), "{bad}");
        }
        assert!(allowed(&proxy, "c.com", 1));
        // The egress settings of the start may be repeated, not changed; mitmProxy follows.
        c.fix_egress(None, Some(8080), None);
        c.apply(
            r#"{"network":{"allowedDomains":["m.com"],"httpProxyPort":8080,"mitmProxy":{"socketPath":"/m.sock","domains":["m.com"]}}}"#,
            &proxy,
        )
        .unwrap();
        let m = crate::host::normalize_host("m.com").unwrap();
        assert!(proxy.policy().mitm_socket(&m, 443).is_some());
        for changed in [
            r#"{"network":{"allowedDomains":["z.com"],"httpProxyPort":8081}}"#,
            r#"{"network":{"allowedDomains":["z.com"],"socksProxyPort":1080}}"#,
            r#"{"type":"policy","network":{"allowedDomains":["z.com"],"parentProxy":{"http":"http://p:1"}}}"#,
        ] {
            let e = c.apply(changed, &proxy).unwrap_err().to_string();
            assert!(e.contains("fixed when the run starts"), "{e}");
        }
        assert!(allowed(&proxy, "m.com", 1) && !allowed(&proxy, "z.com", 1));
    }

    #[tokio::test]
    async fn questions_are_answered_by_id_and_expire() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (r, w) = theirs.into_split();
        let c = Control::start(Some(Box::new(w)), Duration::from_millis(300));
        let proxy = Proxy::new(NetPolicy::default(), Arc::new(NoHooks));
        tokio::spawn(c.clone().run_reader(Box::new(r), proxy, |_| {}, |_| {}));
        let q = |host: &str| AskQuery {
            host: host.into(),
            port: 443,
            protocol: Protocol::Connect,
            client: Some("agent".into()),
        };
        let (our_r, mut our_w) = ours.into_split();
        let mut lines = BufReader::new(our_r).lines();
        let pending = tokio::spawn(c.ask(q("a.com")));
        let line: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(line["type"], "ask");
        assert_eq!(line["host"], "a.com");
        assert_eq!(line["client"], "agent");
        let id = line["id"].as_u64().unwrap();
        our_w
            .write_all(
                format!("{{\"type\":\"answer\",\"id\":{id},\"answer\":\"always\"}}\n").as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(pending.await.unwrap(), AskAnswer::Always);
        // Unanswered: denied after the timeout, then withdrawn.
        assert_eq!(c.ask(q("b.com")).await, AskAnswer::Deny);
        let ask: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let expired: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(expired["type"], "expired");
        assert_eq!(expired["id"], ask["id"]);
    }
}
