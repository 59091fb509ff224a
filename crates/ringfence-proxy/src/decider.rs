//! An external request decider, as srt's standalone proxy speaks to one: each frame is a 4-byte
//! big-endian length and one UTF-8 JSON object whose `t` names it. The proxy says
//! `{"t":"hello","proto":1}`; the decider answers with its hello and the host lists; then each
//! request goes out as `req` (with an id that only increases) and comes back as one `verdict`:
//! `allow` (with header edits or a credential), `deny` (a status and a reason), or `need_body`
//! (then the proxy sends `body`, base64, and waits for the final verdict).
//!
//! Fail closed: a request is refused unless a well-formed allow for its id arrives in time. A
//! frame that is not understood (bad JSON, a duplicate key, a null, an unknown field, a verdict
//! for an id nothing waits on, a second need_body), an oversized frame, or the decider closing
//! the stream kills the link: every pending and later request is refused and
//! [`Decider::dead`] completes, after which the gateway stops.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// The protocol version both ends speak.
pub const PROTO: u64 = 1;
/// The largest frame read from the decider.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest body a `need_body` may ask for.
pub const MAX_BODY: u64 = 32 << 20;
const MAX_REASON_BYTES: usize = 1 << 10;
/// Late verdicts for ids this far below the newest are dropped without a second look.
const ID_WINDOW: u64 = 4096;

/// The decider's hello: the hosts the gateway may reach at all (deny wins).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hello {
    t: String,
    proto: u64,
    pub allowed_domains: Vec<String>,
    pub denied_domains: Vec<String>,
}

/// One verdict of the decider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        set_headers: BTreeMap<String, Vec<String>>,
        remove_headers: Vec<String>,
        /// (class, value) of a credential to place for this one request.
        credential: Option<(String, String)>,
    },
    Deny {
        status: u16,
        reason: Option<String>,
    },
    NeedBody {
        max: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AllowFrame {
    t: String,
    id: u64,
    /// Matched before this is parsed.
    #[allow(dead_code)]
    action: String,
    set_headers: Option<BTreeMap<String, Vec<String>>>,
    remove_headers: Option<Vec<String>>,
    cred: Option<String>,
    credential: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyFrame {
    t: String,
    id: u64,
    #[allow(dead_code)]
    action: String,
    status: u16,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NeedBodyFrame {
    t: String,
    id: u64,
    #[allow(dead_code)]
    action: String,
    max: u64,
}

/// Header names an allow may not set (framing, and credentials, which only `cred` places) or
/// remove (framing), compared after [`fold_header`].
const FRAMING: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];
/// Headers a credential travels in; all are removed before one is placed.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// A header name as the edits compare it: lower case, with `-`, `_` and `.` as one character.
pub fn fold_header(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn lower_token(s: &str) -> bool {
    is_token(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// A C0 control other than tab, DEL, or a C1 control.
pub fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| (c < ' ' && c != '\t') || ('\u{7f}'..='\u{9f}').contains(&c))
}

fn no_nulls(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => a.iter().all(no_nulls),
        Value::Object(o) => o.values().all(no_nulls),
        _ => true,
    }
}

/// Parses one frame body strictly: one JSON object, no null anywhere; typed parsing below
/// refuses duplicate and unknown keys.
fn object(frame: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(frame).map_err(|_| "frame is not UTF-8".to_string())?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) if no_nulls(&Value::Object(o.clone())) => Ok(o),
        Ok(Value::Object(_)) => Err("null in frame".into()),
        Ok(_) => Err("frame is not one JSON object".into()),
        Err(_) => Err("frame is not valid JSON".into()),
    }
}

/// The decider's hello, checked.
pub fn parse_hello(frame: &[u8]) -> Result<Hello, String> {
    object(frame)?;
    let h: Hello = serde_json::from_slice(frame).map_err(|e| format!("bad hello: {e}"))?;
    if h.t != "hello" || h.proto != PROTO {
        return Err("bad hello: not a hello of protocol 1".into());
    }
    for list in [&h.allowed_domains, &h.denied_domains] {
        let unique: HashSet<&String> = list.iter().collect();
        if unique.len() != list.len() {
            return Err("bad hello: an entry is listed twice".into());
        }
    }
    Ok(h)
}

/// A verdict frame, checked: `(id, verdict)`.
pub fn parse_verdict(frame: &[u8]) -> Result<(u64, Verdict), String> {
    let o = object(frame)?;
    let bad = |e: serde_json::Error| format!("bad verdict: {e}");
    let (t, id, verdict) = match o.get("action").and_then(Value::as_str) {
        Some("allow") => {
            let a: AllowFrame = serde_json::from_slice(frame).map_err(bad)?;
            let set = a.set_headers.unwrap_or_default();
            let remove = a.remove_headers.unwrap_or_default();
            let given_empty = o.get("setHeaders").is_some() && set.is_empty()
                || o.get("removeHeaders").is_some() && remove.is_empty();
            if given_empty {
                return Err("bad verdict: an empty optional field".into());
            }
            for (name, values) in &set {
                if !lower_token(name)
                    || FRAMING
                        .iter()
                        .chain(CREDENTIAL_HEADERS)
                        .any(|n| fold_header(n) == fold_header(name))
                    || values.iter().any(|v| has_control(v))
                {
                    return Err(format!("bad verdict: setHeaders {name:?}"));
                }
            }
            let unique: HashSet<&String> = remove.iter().collect();
            if unique.len() != remove.len()
                || remove.iter().any(|n| {
                    !lower_token(n) || FRAMING.iter().any(|f| fold_header(f) == fold_header(n))
                })
            {
                return Err("bad verdict: removeHeaders".into());
            }
            let credential = match (a.cred, a.credential) {
                (None, None) => None,
                (Some(c), Some(v))
                    if !c.is_empty()
                        && (1..=8192).contains(&v.len())
                        && v.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
                {
                    Some((c, v))
                }
                _ => return Err("bad verdict: cred and credential go together".into()),
            };
            (
                a.t,
                a.id,
                Verdict::Allow {
                    set_headers: set,
                    remove_headers: remove,
                    credential,
                },
            )
        }
        Some("deny") => {
            let d: DenyFrame = serde_json::from_slice(frame).map_err(bad)?;
            if !(400..=599).contains(&d.status) {
                return Err("bad verdict: a deny status is 400 to 599".into());
            }
            if let Some(r) = &d.reason {
                if r.is_empty() || r.len() > MAX_REASON_BYTES || has_control(r) {
                    return Err("bad verdict: reason".into());
                }
            }
            (
                d.t,
                d.id,
                Verdict::Deny {
                    status: d.status,
                    reason: d.reason,
                },
            )
        }
        Some("need_body") => {
            let n: NeedBodyFrame = serde_json::from_slice(frame).map_err(bad)?;
            if !(1..=MAX_BODY).contains(&n.max) {
                return Err("bad verdict: need_body max is 1 to 32 MiB".into());
            }
            (n.t, n.id, Verdict::NeedBody { max: n.max })
        }
        _ => return Err("bad verdict frame".into()),
    };
    if t != "verdict" || id == 0 {
        return Err("bad verdict frame".into());
    }
    Ok((id, verdict))
}

/// One frame: the length, then the JSON.
pub fn encode(msg: &Value) -> Vec<u8> {
    let body = msg.to_string().into_bytes();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Standard base64 with padding, for `body` frames.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(T[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads one frame; `Ok(None)` at a clean end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read error: {e}")),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err("oversized frame".into());
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)
        .await
        .map_err(|_| "the stream ended inside a frame".to_string())?;
    Ok(Some(buf))
}

type Waiter = oneshot::Sender<Verdict>;

struct State {
    waiters: HashMap<u64, Waiter>,
    /// Ids given up on (timed out); a late verdict for one is dropped.
    late: HashSet<u64>,
    /// Ids whose need_body was answered; a second one is a violation.
    shown: HashSet<u64>,
    dead: Option<String>,
}

/// The link to a decider. Cheap to clone.
#[derive(Clone)]
pub struct Decider {
    state: Arc<Mutex<State>>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    last_id: Arc<AtomicU64>,
    dead_tx: Arc<watch::Sender<Option<String>>>,
    timeout: Duration,
}

/// Why a request got no verdict: the proxy answers 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl Decider {
    /// Says hello over `r`/`w`, waits for the decider's, and starts reading its verdicts.
    pub async fn start<R, W>(
        mut r: R,
        mut w: W,
        timeout: Duration,
    ) -> Result<(Decider, Hello), String>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        w.write_all(&encode(&json!({"t": "hello", "proto": PROTO})))
            .await
            .map_err(|e| format!("write error: {e}"))?;
        w.flush().await.map_err(|e| format!("write error: {e}"))?;
        let hello = match read_frame(&mut r).await? {
            Some(f) => parse_hello(&f)?,
            None => return Err("the decider closed the stream before its hello".into()),
        };
        let (out, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (dead_tx, _) = watch::channel(None);
        let d = Decider {
            state: Arc::new(Mutex::new(State {
                waiters: HashMap::new(),
                late: HashSet::new(),
                shown: HashSet::new(),
                dead: None,
            })),
            out,
            last_id: Arc::new(AtomicU64::new(0)),
            dead_tx: Arc::new(dead_tx),
            timeout,
        };
        let writer = d.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if let Err(e) = w.write_all(&frame).await {
                    writer.die(format!("write error: {e}"));
                    return;
                }
                if let Err(e) = w.flush().await {
                    writer.die(format!("write error: {e}"));
                    return;
                }
            }
        });
        let reader = d.clone();
        tokio::spawn(async move {
            loop {
                match read_frame(&mut r).await {
                    Ok(Some(f)) => {
                        if let Err(why) = reader.on_frame(&f) {
                            reader.die(why);
                            return;
                        }
                    }
                    Ok(None) => {
                        reader.die("decider closed the stream".into());
                        return;
                    }
                    Err(why) => {
                        reader.die(why);
                        return;
                    }
                }
            }
        });
        Ok((d, hello))
    }

    fn on_frame(&self, frame: &[u8]) -> Result<(), String> {
        let (id, v) = parse_verdict(frame)?;
        let mut s = self.state.lock().map_err(|_| "lock poisoned".to_string())?;
        if let Some(w) = s.waiters.remove(&id) {
            if matches!(v, Verdict::NeedBody { .. }) && !s.shown.insert(id) {
                return Err("a second need_body".into());
            }
            // The request may have given up meanwhile; nothing else to do then.
            let _ = w.send(v);
            return Ok(());
        }
        if s.late.contains(&id) {
            if !matches!(v, Verdict::NeedBody { .. }) {
                s.late.remove(&id);
            }
            return Ok(());
        }
        let last = self.last_id.load(Ordering::SeqCst);
        if id < last && last - id >= ID_WINDOW {
            return Ok(());
        }
        Err(format!("verdict for id {id}, which nothing waits on"))
    }

    fn die(&self, why: String) {
        if let Ok(mut s) = self.state.lock() {
            if s.dead.is_some() {
                return;
            }
            s.dead = Some(why.clone());
            // Dropping the senders wakes every waiting request with a refusal.
            s.waiters.clear();
        }
        // Stored even while nobody watches yet: `dead` reads it when it starts.
        self.dead_tx.send_replace(Some(why));
    }

    /// Completes with the reason once the link is dead.
    pub async fn dead(&self) -> String {
        let mut rx = self.dead_tx.subscribe();
        loop {
            if let Some(why) = rx.borrow().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "closed".into();
            }
        }
    }

    /// A new request id, and the start of waiting for its verdict.
    fn wait(&self, id: u64) -> Result<oneshot::Receiver<Verdict>, Unavailable> {
        let (tx, rx) = oneshot::channel();
        let mut s = self
            .state
            .lock()
            .map_err(|_| Unavailable("request decider unavailable".into()))?;
        if let Some(why) = &s.dead {
            return Err(Unavailable(format!("request decider unavailable: {why}")));
        }
        s.waiters.insert(id, tx);
        Ok(rx)
    }

    async fn verdict(
        &self,
        id: u64,
        rx: oneshot::Receiver<Verdict>,
    ) -> Result<Verdict, Unavailable> {
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(Unavailable(format!(
                "request decider unavailable: {}",
                self.state
                    .lock()
                    .ok()
                    .and_then(|s| s.dead.clone())
                    .unwrap_or_default()
            ))),
            Err(_) => {
                if let Ok(mut s) = self.state.lock() {
                    s.waiters.remove(&id);
                    s.late.insert(id);
                    let last = self.last_id.load(Ordering::SeqCst);
                    s.late.retain(|k| last - k < ID_WINDOW);
                }
                Err(Unavailable("request decider timed out".into()))
            }
        }
    }

    /// Asks about one request (`fields`: everything of the `req` frame but `t` and `id`).
    pub async fn ask(&self, fields: Map<String, Value>) -> Result<(u64, Verdict), Unavailable> {
        let id = self.last_id.fetch_add(1, Ordering::SeqCst) + 1;
        let rx = self.wait(id)?;
        let mut msg = Map::new();
        msg.insert("t".into(), "req".into());
        msg.insert("id".into(), id.into());
        msg.extend(fields);
        let frame = encode(&Value::Object(msg));
        if frame.len() > MAX_FRAME {
            if let Ok(mut s) = self.state.lock() {
                s.waiters.remove(&id);
            }
            return Err(Unavailable("request too large for the decider".into()));
        }
        if self.out.send(frame).is_err() {
            return Err(Unavailable("request decider unavailable".into()));
        }
        Ok((id, self.verdict(id, rx).await?))
    }

    /// After a need_body: starts waiting for the final verdict, so that a deny sent while the
    /// body is read is caught (anything else before the body is sent is a violation).
    pub fn expect_final(&self, id: u64) -> Result<oneshot::Receiver<Verdict>, Unavailable> {
        self.wait(id)
    }

    /// Sends the body after a need_body and waits for the final verdict.
    pub async fn body(
        &self,
        id: u64,
        mut rx: oneshot::Receiver<Verdict>,
        data: &[u8],
        cut: bool,
    ) -> Result<Verdict, Unavailable> {
        match rx.try_recv() {
            Ok(v @ Verdict::Deny { .. }) => return Ok(v),
            Ok(_) => {
                self.die("a verdict other than deny while the body was read".into());
                return Err(Unavailable("request decider broke the protocol".into()));
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                return Err(Unavailable("request decider unavailable".into()))
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let mut msg = json!({"t": "body", "id": id, "data": base64(data)});
        if cut {
            msg["cut"] = true.into();
        }
        if self.out.send(encode(&msg)).is_err() {
            return Err(Unavailable("request decider unavailable".into()));
        }
        self.verdict(id, rx).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn verdicts_parse_strictly() {
        let ok = |s: &str| parse_verdict(s.as_bytes());
        assert_eq!(
            ok(r#"{"t":"verdict","id":1,"action":"deny","status":451,"reason":"no"}"#).unwrap(),
            (
                1,
                Verdict::Deny {
                    status: 451,
                    reason: Some("no".into())
                }
            )
        );
        assert_eq!(
            ok(r#"{"t":"verdict","id":2,"action":"need_body","max":10}"#).unwrap(),
            (2, Verdict::NeedBody { max: 10 })
        );
        assert!(ok(r#"{"t":"verdict","id":3,"action":"allow","removeHeaders":["x-a"]}"#).is_ok());
        for bad in [
            r#"{"t":"verdict","id":1,"action":"deny","status":200}"#,
            r#"{"t":"verdict","id":1,"action":"deny","status":403,"status":403}"#,
            r#"{"t":"verdict","id":1,"action":"deny","status":403,"reason":null}"#,
            r#"{"t":"verdict","id":1,"action":"deny","status":403,"reason":""}"#,
            r#"{"t":"verdict","id":1,"action":"deny","status":403,"extra":1}"#,
            r#"{"t":"verdict","id":0,"action":"allow"}"#,
            r#"{"t":"verdict","id":1,"action":"allow","setHeaders":{}}"#,
            r#"{"t":"verdict","id":1,"action":"allow","setHeaders":{"Host":["x"]}}"#,
            r#"{"t":"verdict","id":1,"action":"allow","setHeaders":{"authorization":["x"]}}"#,
            r#"{"t":"verdict","id":1,"action":"allow","removeHeaders":["content_length"]}"#,
            r#"{"t":"verdict","id":1,"action":"allow","cred":"gh"}"#,
            r#"{"t":"verdict","id":1,"action":"need_body","max":0}"#,
            r#"{"t":"verdict","id":1,"action":"maybe"}"#,
            r#"{"t":"req","id":1,"action":"allow"}"#,
            r#"[1]"#,
            "not json",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hello_and_base64() {
        let h = parse_hello(
            br#"{"t":"hello","proto":1,"allowedDomains":["a.com"],"deniedDomains":[]}"#,
        )
        .unwrap();
        assert_eq!(h.allowed_domains, vec!["a.com".to_string()]);
        assert!(
            parse_hello(br#"{"t":"hello","proto":2,"allowedDomains":[],"deniedDomains":[]}"#)
                .is_err()
        );
        assert!(parse_hello(br#"{"t":"hello","proto":1,"allowedDomains":[]}"#).is_err());
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(fold_header("Content_Length"), "content-length");
    }
}
