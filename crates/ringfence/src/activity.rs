//! The `ringfence log` command: lists runs, shows a run's events and verifies a log's hash
//! chain against the run index. The log itself is written by `ringfence_runtime::audit`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ringfence_audit::Verdict;
use serde_json::{json, Map, Value};
fn record(name: &str) -> Result<Value> {
    crate::runs::load(name)
}

fn log_path(name: &str, rec: &Value) -> Result<PathBuf> {
    match rec.get("log").and_then(Value::as_str) {
        Some(p) => Ok(PathBuf::from(p)),
        None => bail!("run {name} has no activity log"),
    }
}

/// How a run ended, in a word or two (`running` while its supervisor lives).
pub fn status_of(r: &Value) -> String {
    match &r["status"] {
        Value::Null if crate::runs::is_live(r["name"].as_str().unwrap_or("")) => "running".into(),
        Value::Null => "killed".into(),
        s if s.get("limit").and_then(Value::as_str) == Some("memory") => "memory limit".into(),
        s if s.get("exit").is_some() => format!("exit {}", s["exit"]),
        s if s.get("signal").is_some() => format!("signal {}", s["signal"]),
        s if s.get("timedOut").is_some() => "timed out".into(),
        _ => "failed".into(),
    }
}

/// `12s`, `3m04s`, `2h05m`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The counts of `run.end` (exec, fs.denied, net.allowed, net.denied): from the run record
/// when it kept them, else from the log (counted so far for a live run).
pub fn counts_of(r: &Value) -> Option<Value> {
    if r["counts"].is_object() {
        return Some(r["counts"].clone());
    }
    let events = ringfence_audit::read(std::path::Path::new(r["log"].as_str()?)).ok()?;
    if let Some(end) = events.iter().rev().find(|e| e["kind"] == "run.end") {
        return end.get("counts").cloned();
    }
    let n = |f: &dyn Fn(&Map<String, Value>) -> bool| events.iter().filter(|e| f(e)).count();
    Some(json!({
        "exec": n(&|e| e["kind"] == "exec"),
        "fs.denied": n(&|e| e["kind"] == "fs.denied"),
        "net.allowed": n(&|e| e["kind"] == "net.decision" && e["decision"] == "allow"),
        "net.denied": n(&|e| e["kind"] == "net.decision" && e["decision"] != "allow"),
    }))
}

/// A run's command line for a table: escaped and cut to `max` characters.
pub fn command_of(r: &Value, max: usize) -> String {
    let cmd = crate::timeline::escape(&crate::timeline::joined(r.get("argv")));
    if cmd.chars().count() > max {
        format!(
            "{}...",
            cmd.chars().take(max.saturating_sub(3)).collect::<String>()
        )
    } else {
        cmd
    }
}

/// `ringfence log`: runs, newest first, with how they ended, how long they took and what
/// happened in them.
pub fn list() -> Result<()> {
    let runs = crate::runs::all()?;
    println!(
        "{:<32} {:<10} {:>8} {:>6} {:>9} {:>9} {:>10}  {:<10} COMMAND",
        "RUN", "STATUS", "DURATION", "EXEC", "FS-DENIED", "NET-ALLOW", "NET-DENIED", "OVERLAY"
    );
    for r in runs {
        let status = status_of(&r);
        let secs = match (r["started"].as_u64(), r["ended"].as_u64()) {
            (Some(a), Some(b)) => duration(b.saturating_sub(a)),
            (Some(a), None) if status == "running" => duration(now_secs().saturating_sub(a)),
            _ => "-".into(),
        };
        let counts = counts_of(&r);
        let count = |k: &str| {
            counts
                .as_ref()
                .and_then(|c| c[k].as_u64())
                .map_or("-".into(), |n| n.to_string())
        };
        let name = r["name"].as_str().unwrap_or("?");
        println!(
            "{:<32} {:<10} {:>8} {:>6} {:>9} {:>9} {:>10}  {:<10} {}",
            name,
            status,
            secs,
            count("exec"),
            count("fs.denied"),
            count("net.allowed"),
            count("net.denied"),
            crate::overlay::state_label(name).unwrap_or_else(|| "-".into()),
            command_of(&r, 60)
        );
    }
    Ok(())
}

/// When `log show` colours its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty());
                !no_color && ringfence_linux::supervise::is_tty(1)
            }
        }
    }
}

/// `ringfence log show RUN`: the run's events as a timeline (time after the start, kind,
/// details; coloured by severity), or as JSON lines.
pub fn show(name: &str, kind: Option<&str>, as_json: bool, color: ColorChoice) -> Result<()> {
    let rec = record(name)?;
    let path = log_path(name, &rec)?;
    let mut events = ringfence_audit::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    // An overlay run's review log (apply, undo, discard) follows its activity log.
    let review = crate::overlay::run_dir(name)?.join("review.jsonl");
    if review.exists() {
        events.extend(ringfence_audit::read(&review).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let filter = match kind {
        Some(k) => crate::timeline::Filter::Kind(k.to_string()),
        None => crate::timeline::Filter::All,
    };
    let start = crate::timeline::start_of(&events);
    let color = !as_json && color.enabled();
    let mut out = std::io::stdout().lock();
    for e in events.iter().filter(|e| filter.keeps(e)) {
        let line = if as_json {
            Value::Object(e.clone()).to_string()
        } else if color {
            crate::timeline::render(e, start).ansi()
        } else {
            crate::timeline::render(e, start).plain()
        };
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    Ok(())
}

/// `ringfence log verify RUN`: 0 when intact, 1 (with the line and problem) otherwise.
pub fn verify(name: &str) -> Result<i32> {
    let rec = record(name)?;
    let path = log_path(name, &rec)?;
    let expected = rec.get("logHash").and_then(Value::as_str);
    if expected.is_none() {
        eprintln!("ringfence: run {name} has no final hash in its record (it did not end normally); checking the chain only");
    }
    match ringfence_audit::verify(&path, expected).map_err(|e| anyhow::anyhow!("{e}"))? {
        Verdict::Intact { events } => {
            println!("{}: intact ({events} events)", path.display());
            Ok(0)
        }
        Verdict::Broken { line, problem } => {
            println!("{}: line {line}: {problem}", path.display());
            Ok(1)
        }
    }
}

/// A run's log read as it grows: each `read` returns the whole lines appended since the last
/// (a line still being written waits for the next call).
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    pub fn read(&mut self) -> Result<Vec<Map<String, Value>>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut buf = Vec::new();
        // At most 4 MiB at a time, so a huge log is shown while it is read.
        let n = f
            .take(4 << 20)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", self.path.display()))?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        Ok(complete
            .split(|&b| b == b'\n')
            .filter_map(|l| match serde_json::from_slice::<Value>(l) {
                Ok(Value::Object(e)) => Some(e),
                _ => None,
            })
            .collect())
    }
}

/// `ringfence log follow [RUN]`: prints a live run's events as they are written (the newest
/// live run when none is named), until its `run.end`; as a timeline like `log show`, or JSON.
pub fn follow(
    name: Option<&str>,
    kind: Option<&str>,
    as_json: bool,
    color: ColorChoice,
) -> Result<()> {
    let name = match name {
        Some(n) => n.to_string(),
        None => crate::runs::all()?
            .into_iter()
            .find(|r| {
                r["status"].is_null() && crate::runs::is_live(r["name"].as_str().unwrap_or(""))
            })
            .and_then(|r| r["name"].as_str().map(String::from))
            .context("no live run to follow")?,
    };
    let rec = record(&name)?;
    let mut tail = Tail::new(log_path(&name, &rec)?);
    let filter = match kind {
        Some(k) => crate::timeline::Filter::Kind(k.to_string()),
        None => crate::timeline::Filter::All,
    };
    let color = !as_json && color.enabled();
    let mut start = None;
    let mut out = std::io::stdout().lock();
    let mut gone = false;
    loop {
        for e in tail.read()? {
            if start.is_none() && e.get("kind").and_then(Value::as_str) == Some("run.start") {
                start = e
                    .get("ts")
                    .and_then(Value::as_str)
                    .and_then(crate::timeline::parse_ts);
            }
            if filter.keeps(&e) {
                let line = if as_json {
                    Value::Object(e.clone()).to_string()
                } else if color {
                    crate::timeline::render(&e, start).ansi()
                } else {
                    crate::timeline::render(&e, start).plain()
                };
                writeln!(out, "{line}").context("writing to stdout")?;
                out.flush().context("writing to stdout")?;
            }
            if e.get("kind").and_then(Value::as_str) == Some("run.end") {
                return Ok(());
            }
        }
        if gone {
            // The supervisor is gone without closing the log.
            bail!("run {name} ended without run.end (its supervisor was killed)");
        }
        // One more read after the supervisor is gone: it writes run.end just before.
        gone = !crate::runs::is_live(&name);
        if !gone {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
