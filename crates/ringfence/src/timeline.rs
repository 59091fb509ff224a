//! Activity log events as lines a person reads: which events a filter keeps, the text of each
//! line and how serious it is. Pure functions shared by `ringfence log show` and
//! `ringfence watch`; colour is applied by the caller (ANSI codes here, styles in the TUI).

use serde_json::{Map, Value};

/// How an event is coloured: denials red, questions yellow, allowed connections green, execs
/// dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something was refused (fs.denied, a denied connection, a "deny" answer).
    Denied,
    /// Something went wrong outside the sandbox (an invalid policy update).
    Error,
    /// A question to the user, or an answer that allowed something.
    Ask,
    /// An allowed connection.
    Allowed,
    /// A program started inside.
    Exec,
    /// The run's start and end.
    Info,
}

/// Which events a timeline shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    /// Events whose kind starts with this (`net`, `fs`, `exec`, `run`); `ask` also keeps the
    /// answers, which belong to their questions.
    Kind(String),
    /// Refusals only: fs.denied, denied connections, "deny" answers, invalid policy updates.
    Denied,
}

impl Filter {
    pub fn keeps(&self, e: &Map<String, Value>) -> bool {
        let kind = kind_of(e);
        match self {
            Filter::All => true,
            Filter::Kind(k) if k == "ask" => kind == "ask" || kind == "answer",
            Filter::Kind(k) => kind.starts_with(k.as_str()),
            Filter::Denied => matches!(severity(e), Severity::Denied | Severity::Error),
        }
    }

    /// The label shown in the TUI's title.
    pub fn label(&self) -> &str {
        match self {
            Filter::All => "all",
            Filter::Kind(k) => k,
            Filter::Denied => "denied",
        }
    }

    /// The next filter of the TUI's `f` key: all, fs, net, exec, denied, all, ...
    pub fn next(&self) -> Filter {
        match self {
            Filter::All => Filter::Kind("fs".into()),
            Filter::Kind(k) if k == "fs" => Filter::Kind("net".into()),
            Filter::Kind(k) if k == "net" => Filter::Kind("exec".into()),
            Filter::Kind(k) if k == "exec" => Filter::Denied,
            _ => Filter::All,
        }
    }
}

fn kind_of(e: &Map<String, Value>) -> &str {
    e.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn text<'a>(e: &'a Map<String, Value>, key: &str) -> &'a str {
    e.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num(e: &Map<String, Value>, key: &str) -> String {
    match e.get(key) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "?".into(),
    }
}

pub fn severity(e: &Map<String, Value>) -> Severity {
    match kind_of(e) {
        "fs.denied" => Severity::Denied,
        "net.decision" if text(e, "decision") == "allow" => Severity::Allowed,
        "net.decision" => Severity::Denied,
        "answer" if text(e, "answer") == "deny" => Severity::Denied,
        "ask" | "answer" => Severity::Ask,
        "policy.invalid" | "events.dropped" => Severity::Error,
        "exec" => Severity::Exec,
        // Killed by a signal, timed out, lost or never started.
        "run.end" if e.get("exit").is_none() => Severity::Error,
        _ => Severity::Info,
    }
}

/// Text from the sandbox, made safe for a terminal: control characters, bidirectional
/// overrides and backslashes are written as escapes, so a path cannot move the cursor, change
/// colours or pretend to be another line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A JSON array of strings joined with spaces (an argv for display).
pub fn joined(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp as the log writes them
/// (`2026-11-22T03:29:46.378Z`).
pub fn parse_ts(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let millis = match ts.get(19..20) {
        Some(".") => {
            let frac: String = ts[20..].chars().take_while(char::is_ascii_digit).collect();
            let mut f = frac.chars().take(3).collect::<String>();
            while f.len() < 3 {
                f.push('0');
            }
            f.parse::<i64>().ok()?
        }
        _ => 0,
    };
    // Days from civil (Howard Hinnant's algorithm), the inverse of the writer's.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis)
}

/// `+MM:SS.mmm` (or `+H:MM:SS.mmm`) after the run's start.
pub fn offset(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    let ms = ms.unsigned_abs();
    let (h, m, s, frac) = (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    );
    if h > 0 {
        format!("{sign}{h}:{m:02}:{s:02}.{frac:03}")
    } else {
        format!("{sign}{m:02}:{s:02}.{frac:03}")
    }
}

/// One event as a line: when, what, and the details (already escaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Time after the run's start (`+00:01.250`), or the raw timestamp when that is unknown.
    pub when: String,
    pub kind: String,
    pub detail: String,
    pub severity: Severity,
}

impl Line {
    /// The line without colour.
    pub fn plain(&self) -> String {
        format!("{:<11} {:<14} {}", self.when, self.kind, self.detail)
    }

    /// The line with ANSI colours by severity.
    pub fn ansi(&self) -> String {
        let (on, kind_on) = match self.severity {
            Severity::Denied => ("\x1b[31m", "\x1b[1;31m"),
            Severity::Error => ("\x1b[1;31m", "\x1b[1;31m"),
            Severity::Ask => ("\x1b[33m", "\x1b[1;33m"),
            Severity::Allowed => ("\x1b[32m", "\x1b[32m"),
            Severity::Exec => ("\x1b[2m", "\x1b[2m"),
            Severity::Info => ("", "\x1b[1m"),
        };
        format!(
            "\x1b[2m{:<11}\x1b[0m {kind_on}{:<14}\x1b[0m {on}{}\x1b[0m",
            self.when, self.kind, self.detail
        )
    }
}

/// The line for event `e`; `start` is the run's start in milliseconds since the epoch (from
/// `run.start`).
pub fn render(e: &Map<String, Value>, start: Option<i64>) -> Line {
    let kind = kind_of(e);
    let ts = text(e, "ts");
    let when = match (parse_ts(ts), start) {
        (Some(t), Some(s)) => offset(t - s),
        _ => ts.to_string(),
    };
    let detail = match kind {
        "run.start" => format!(
            "{} (cwd {}, policy {})",
            joined(e.get("argv")),
            text(e, "cwd"),
            text(e, "policyDigest").get(..12).unwrap_or("")
        ),
        "exec" => format!(
            "{}  [{}, pid {}]",
            joined(e.get("argv")),
            text(e, "path"),
            num(e, "pid")
        ),
        "fs.denied" => format!(
            "{} {} by {} (pid {}): {}",
            text(e, "op"),
            text(e, "path"),
            text(e, "program"),
            num(e, "pid"),
            text(e, "reason")
        ),
        "net.decision" => net_decision(e),
        "ask" => format!(
            "{}:{} ({}{}) asked via {}",
            text(e, "host"),
            num(e, "port"),
            text(e, "protocol"),
            match text(e, "client") {
                "" => String::new(),
                c => format!(", {c}"),
            },
            text(e, "via")
        ),
        "answer" => format!(
            "{}:{} answered {}",
            text(e, "host"),
            num(e, "port"),
            text(e, "answer")
        ),
        "policy.invalid" => format!("policy update refused: {}", text(e, "error")),
        "policy.update" => match text(e, "source") {
            "answer" => format!(
                "allowed {} from now on (added to {})",
                text(e, "allowed"),
                text(e, "file")
            ),
            source => format!(
                "from {source}: {}",
                e.get("update").map(Value::to_string).unwrap_or_default()
            ),
        },
        "overlay.apply" => format!(
            "{} applied, {} conflicts, {} held back (protected)",
            num(e, "applied"),
            e.get("conflicts")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            e.get("heldBack")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        "overlay.undo" => format!(
            "{} restored, {} refused (changed again)",
            num(e, "restored"),
            e.get("refused")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        "overlay.discard" => format!("layer removed (was {})", text(e, "was")),
        "events.dropped" => format!(
            "{} reports dropped: the supervisor fell behind",
            num(e, "count")
        ),
        "run.end" => run_end(e),
        _ => {
            // A kind this version does not know: show its own fields.
            let mut rest = e.clone();
            for k in ["kind", "ts", "run", "seq", "prev", "hash"] {
                rest.remove(k);
            }
            Value::Object(rest).to_string()
        }
    };
    Line {
        when: escape(&when),
        kind: escape(kind),
        detail: escape(&detail),
        severity: severity(e),
    }
}

fn net_decision(e: &Map<String, Value>) -> String {
    let allowed = text(e, "decision") == "allow";
    let mut s = format!(
        "{} {}:{} ({})",
        if allowed { "allow" } else { "deny" },
        text(e, "host"),
        num(e, "port"),
        text(e, "protocol")
    );
    let mut extra = Vec::new();
    match (text(e, "rule"), text(e, "reason")) {
        ("", "") => {}
        (r, "") => extra.push(format!("rule {r}")),
        ("", why) => extra.push(why.to_string()),
        (r, why) => extra.push(format!("rule {r}: {why}")),
    }
    if let Some(a) = e.get("asked").and_then(Value::as_str) {
        extra.push(format!("asked: {a}"));
    }
    if let Some(c) = e.get("client").and_then(Value::as_str) {
        extra.push(c.to_string());
    }
    if allowed {
        if let Some(r) = e.get("resolved").and_then(Value::as_str) {
            extra.push(format!("to {r}"));
        }
        extra.push(format!(
            "{} B up, {} B down, {} ms",
            num(e, "bytesUp"),
            num(e, "bytesDown"),
            num(e, "durationMs")
        ));
    }
    if let Some(err) = e.get("error").and_then(Value::as_str) {
        extra.push(format!("error: {err}"));
    }
    if !extra.is_empty() {
        s.push_str(": ");
        s.push_str(&extra.join(", "));
    }
    s
}

fn run_end(e: &Map<String, Value>) -> String {
    let how = if e.get("limit").and_then(Value::as_str) == Some("memory") {
        let mib = |k: &str| e.get(k).and_then(Value::as_u64).unwrap_or(0) >> 20;
        format!(
            "memory limit reached (limits.memory {} MiB, used {} MiB)",
            mib("memoryLimit"),
            mib("memoryUsed")
        )
    } else if e.get("exit").is_some() {
        format!("exit {}", num(e, "exit"))
    } else if e.get("signal").is_some() {
        format!("signal {}", num(e, "signal"))
    } else if e.get("timedOut").is_some() {
        "timed out (limits.wallSeconds)".into()
    } else if e.get("setupFailed").is_some() {
        "setup failed".into()
    } else if e.get("lost").is_some() {
        "lost".into()
    } else {
        "ended".into()
    };
    let c = e.get("counts");
    let count = |k: &str| {
        c.and_then(|c| c.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    format!(
        "{how} after {} ms, cpu {} ms, peak {} KiB; {} exec, {} fs denied, {} net allowed, {} net denied",
        num(e, "wallMs"),
        num(e, "cpuMs"),
        num(e, "peakMemoryKiB"),
        count("exec"),
        count("fs.denied"),
        count("net.allowed"),
        count("net.denied"),
    )
}

/// The run's start time (ms since the epoch) from its events: the `run.start` line's stamp.
pub fn start_of(events: &[Map<String, Value>]) -> Option<i64> {
    events
        .iter()
        .find(|e| kind_of(e) == "run.start")
        .and_then(|e| parse_ts(text(e, "ts")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    const T0: &str = "2026-11-22T03:29:46.378Z";

    #[test]
    fn timestamps_parse_to_the_writers_epoch_milliseconds() {
        assert_eq!(parse_ts("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_ts(T0), Some(1_795_318_186_378));
        assert_eq!(parse_ts("2000-02-29T00:00:00.005Z"), Some(951_782_400_005));
        assert_eq!(parse_ts("2000-02-29T00:00:01Z"), Some(951_782_401_000));
        assert_eq!(parse_ts("yesterday"), None);
        assert_eq!(offset(1_250), "+00:01.250");
        assert_eq!(offset(3_725_004), "+1:02:05.004");
        assert_eq!(offset(-5), "-00:00.005");
    }

    #[test]
    fn every_kind_has_a_readable_line_with_its_severity() {
        let start = parse_ts(T0);
        let cases = [
            (
                json!({"kind": "run.start", "ts": T0, "argv": ["sh", "-c", "x"], "cwd": "/w",
                       "policyDigest": "0123456789abcdef"}),
                "+00:00.000  run.start      sh -c x (cwd /w, policy 0123456789ab)",
                Severity::Info,
            ),
            (
                json!({"kind": "exec", "ts": "2026-11-22T03:29:46.500Z", "pid": 3,
                       "path": "/usr/bin/touch", "argv": ["touch", "/w/.bashrc"]}),
                "+00:00.122  exec           touch /w/.bashrc  [/usr/bin/touch, pid 3]",
                Severity::Exec,
            ),
            (
                json!({"kind": "fs.denied", "ts": "2026-11-22T03:29:47.000Z", "op": "open",
                       "path": "/w/.bashrc", "pid": 3, "program": "touch",
                       "reason": "protected name inside a writable root"}),
                "+00:00.622  fs.denied      open /w/.bashrc by touch (pid 3): protected name inside a writable root",
                Severity::Denied,
            ),
            (
                json!({"kind": "net.decision", "ts": "2026-11-22T03:30:46.378Z", "host": "example.com",
                       "port": 443, "protocol": "connect", "decision": "allow",
                       "rule": "example.com", "client": "curl", "resolved": "93.184.216.34:443",
                       "bytesUp": 10, "bytesDown": 20, "durationMs": 30}),
                "+01:00.000  net.decision   allow example.com:443 (connect): rule example.com, curl, to 93.184.216.34:443, 10 B up, 20 B down, 30 ms",
                Severity::Allowed,
            ),
            (
                json!({"kind": "net.decision", "ts": T0, "host": "evil.test", "port": 80,
                       "protocol": "http", "decision": "deny", "reason": "not in allowedDomains",
                       "asked": "deny", "bytesUp": 0, "bytesDown": 0, "durationMs": 0}),
                "+00:00.000  net.decision   deny evil.test:80 (http): not in allowedDomains, asked: deny",
                Severity::Denied,
            ),
            (
                json!({"kind": "ask", "ts": T0, "host": "new.test", "port": 443,
                       "protocol": "socks5", "client": "git", "via": "terminal"}),
                "+00:00.000  ask            new.test:443 (socks5, git) asked via terminal",
                Severity::Ask,
            ),
            (
                json!({"kind": "answer", "ts": T0, "host": "new.test", "port": 443, "answer": "once"}),
                "+00:00.000  answer         new.test:443 answered once",
                Severity::Ask,
            ),
            (
                json!({"kind": "answer", "ts": T0, "host": "new.test", "port": 443, "answer": "deny"}),
                "+00:00.000  answer         new.test:443 answered deny",
                Severity::Denied,
            ),
            (
                json!({"kind": "policy.invalid", "ts": T0, "error": "unknown key x"}),
                "+00:00.000  policy.invalid policy update refused: unknown key x",
                Severity::Error,
            ),
            (
                json!({"kind": "run.end", "ts": T0, "exit": 0, "wallMs": 5, "cpuMs": 1,
                       "peakMemoryKiB": 900, "counts": {"fs.denied": 2, "exec": 4,
                       "net.allowed": 1, "net.denied": 3}}),
                "+00:00.000  run.end        exit 0 after 5 ms, cpu 1 ms, peak 900 KiB; 4 exec, 2 fs denied, 1 net allowed, 3 net denied",
                Severity::Info,
            ),
            (
                json!({"kind": "run.end", "ts": T0, "signal": 9, "wallMs": 5, "cpuMs": 1,
                       "peakMemoryKiB": 900, "counts": {}}),
                "+00:00.000  run.end        signal 9 after 5 ms, cpu 1 ms, peak 900 KiB; 0 exec, 0 fs denied, 0 net allowed, 0 net denied",
                Severity::Error,
            ),
        ];
        for (e, want, sev) in cases {
            let line = render(&ev(e), start);
            assert_eq!(line.plain(), want);
            assert_eq!(line.severity, sev, "{want}");
        }
    }

    #[test]
    fn control_characters_from_the_sandbox_are_escaped() {
        let e = ev(json!({"kind": "fs.denied", "ts": T0, "op": "open",
            "path": "/w/\u{1b}[2J\rx\n+00:00.000  run.end fake\u{202e}", "pid": 3,
            "program": "a\u{7}b\\", "reason": "r"}));
        let line = render(&e, None);
        for s in [line.plain(), line.ansi()] {
            assert!(
                !s.contains('\n') && !s.contains('\r') && !s.contains('\u{7}'),
                "{s:?}"
            );
            assert!(!s.contains('\u{202e}'), "{s:?}");
        }
        assert!(
            line.detail.contains("/w/\\u{1b}[2J\\rx\\n+00:00.000"),
            "{line:?}"
        );
        assert!(line.detail.contains("a\\u{7}b\\\\"), "{line:?}");
        // The only escape sequences in the coloured line are ours.
        let ours = line.ansi().matches('\u{1b}').count();
        assert_eq!(ours, 6, "{:?}", line.ansi());
        // Without a run.start, the raw timestamp stands.
        assert_eq!(line.when, T0);
    }

    #[test]
    fn filters_keep_what_they_name() {
        let kinds = [
            json!({"kind": "run.start"}),
            json!({"kind": "exec"}),
            json!({"kind": "fs.denied"}),
            json!({"kind": "net.decision", "decision": "allow"}),
            json!({"kind": "net.decision", "decision": "deny"}),
            json!({"kind": "ask"}),
            json!({"kind": "answer", "answer": "always"}),
            json!({"kind": "answer", "answer": "deny"}),
            json!({"kind": "policy.invalid"}),
            json!({"kind": "run.end", "exit": 1}),
        ]
        .map(ev);
        let kept = |f: &Filter| -> Vec<usize> {
            (0..kinds.len()).filter(|&i| f.keeps(&kinds[i])).collect()
        };
        assert_eq!(kept(&Filter::All), (0..10).collect::<Vec<_>>());
        assert_eq!(kept(&Filter::Kind("fs".into())), [2]);
        assert_eq!(kept(&Filter::Kind("net".into())), [3, 4]);
        assert_eq!(kept(&Filter::Kind("exec".into())), [1]);
        assert_eq!(kept(&Filter::Kind("run".into())), [0, 9]);
        assert_eq!(kept(&Filter::Kind("ask".into())), [5, 6, 7]);
        assert_eq!(kept(&Filter::Denied), [2, 4, 7, 8]);
        // The TUI's key cycles through every filter and back.
        let mut f = Filter::All;
        let mut seen = Vec::new();
        for _ in 0..5 {
            f = f.next();
            seen.push(f.label().to_string());
        }
        assert_eq!(seen, ["fs", "net", "exec", "denied", "all"]);
    }
}
