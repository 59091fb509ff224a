//! The run's activity log as the binary uses it: what goes into `run.start`, `fs.denied` and
//! `run.end`, and the `ringfence log` command that lists runs, shows a run's events and
//! verifies a log's hash chain against the run index.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ringfence_audit::{LogWriter, Verdict};
use ringfence_linux::guard::{Denial, Exec};
use ringfence_linux::supervise::Outcome;
use serde_json::{json, Map, Value};

use crate::prepare::Prepared;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The effective policy as recorded in `run.start` (and digested).
pub fn policy_json(p: &Prepared) -> Value {
    let pol = &p.policy;
    let rules = |r: &[ringfence_policy::PathRule]| -> Vec<Value> {
        r.iter()
            .map(|r| json!({"path": r.path, "layer": r.layer.to_string(), "origin": r.origin}))
            .collect()
    };
    let l = &pol.limits;
    json!({
        "files": pol.files.iter().map(|(layer, f)| json!({"layer": layer.to_string(), "path": f})).collect::<Vec<_>>(),
        "denyRead": rules(&pol.deny_read),
        "allowRead": rules(&pol.allow_read),
        "allowWrite": rules(&pol.allow_write),
        "denyWrite": rules(&pol.deny_write),
        "allowGitConfig": pol.allow_git_config,
        "allowAllUnixSockets": pol.allow_all_unix_sockets,
        "limits": {
            "pids": l.pids, "memory": l.memory, "cpuSeconds": l.cpu_seconds,
            "wallSeconds": l.wall_seconds, "openFiles": l.open_files, "fileSize": l.file_size,
            "tmpSize": l.tmp_size,
        },
        "envRemoved": p.env_removed,
        "mountPlan": p.plan.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    })
}

/// An open activity log for one run.
pub struct Activity {
    log: LogWriter,
    pub path: PathBuf,
    started: Instant,
    denied: u64,
    execs: u64,
    net_allowed: u64,
    net_denied: u64,
    dropped: u64,
    ended: bool,
    /// A write error is reported once at the end; the run is never stopped for it.
    failed: Option<String>,
}

impl Activity {
    pub fn start(path: PathBuf, run: &str, argv: &[Vec<u8>], p: &Prepared) -> Result<Activity> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut log = LogWriter::create(&path, run)
            .map_err(|e| anyhow::anyhow!("creating the activity log: {e}"))?;
        let policy = policy_json(p);
        let digest = ringfence_audit::digest(policy.to_string().as_bytes());
        let fields = json!({
            "version": ringfence_audit::FORMAT_VERSION,
            "argv": argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
            "cwd": p.cwd,
            "uid": ringfence_linux::sys::getuid(),
            "policyDigest": digest,
            "policy": policy,
            "protections": {
                "namespaces": ["user", "mount", "pid", "network", "ipc", "uts", "cgroup"],
                "seccomp": true,
                "creationGuard": p.guard.is_some(),
                "limits": p.mechanism.describe(),
            },
        });
        log.write("run.start", obj(fields))
            .map_err(|e| anyhow::anyhow!("writing the activity log: {e}"))?;
        log.flush()
            .map_err(|e| anyhow::anyhow!("writing the activity log: {e}"))?;
        Ok(Activity {
            log,
            path,
            started: Instant::now(),
            denied: 0,
            execs: 0,
            net_allowed: 0,
            net_denied: 0,
            dropped: 0,
            ended: false,
            failed: None,
        })
    }

    pub fn exec(&mut self, e: &Exec) {
        self.execs += 1;
        let fields = json!({"pid": e.pid, "path": e.path, "argv": e.argv});
        if let Err(err) = self.log.write("exec", obj(fields)) {
            self.failed.get_or_insert(err.to_string());
        }
    }

    pub fn denied(&mut self, d: &Denial) {
        self.denied += 1;
        let fields = json!({
            "op": d.op,
            "path": d.path,
            "pid": d.pid,
            "program": d.program,
            "reason": if d.read_only {
                "outside the writable roots (read-only)"
            } else {
                "protected name inside a writable root"
            },
        });
        if let Err(e) = self.log.write("fs.denied", obj(fields)) {
            self.failed.get_or_insert(e.to_string());
        }
    }

    /// Reports the sandbox could not deliver (the supervisor fell behind): counted, never
    /// silently lost.
    pub fn dropped(&mut self, n: u64) {
        self.dropped += n;
        self.event("events.dropped", json!({ "count": n }));
    }

    /// One decision of the egress proxy (`net.decision`).
    pub fn net(&mut self, fields: Value, allowed: bool) {
        if allowed {
            self.net_allowed += 1;
        } else {
            self.net_denied += 1;
        }
        self.event("net.decision", fields);
    }

    /// Any other event (`ask`, `answer`, `policy.update`).
    pub fn event(&mut self, kind: &str, fields: Value) {
        if self.ended {
            return;
        }
        let fields = match fields {
            Value::Object(m) => m,
            other => obj(json!({ "value": other })),
        };
        if let Err(e) = self.log.write(kind, fields) {
            self.failed.get_or_insert(e.to_string());
        }
    }

    /// Closes the chain with `run.end`; returns the final hash for the run index and the number
    /// of denials. Later events are not written.
    pub fn end(&mut self, outcome: Option<Outcome>) -> (Option<String>, u64) {
        if self.ended {
            return (None, self.denied + self.net_denied);
        }
        self.ended = true;
        // SAFETY: getrusage fills a plain struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: ru is a valid rusage buffer.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        let cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000
            + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
        let mut fields = json!({
            "wallMs": self.started.elapsed().as_millis() as u64,
            "cpuMs": cpu_ms,
            "peakMemoryKiB": ru.ru_maxrss,
            "counts": {
                "fs.denied": self.denied,
                "exec": self.execs,
                "net.allowed": self.net_allowed,
                "net.denied": self.net_denied,
                "dropped": self.dropped,
            },
        });
        match outcome {
            Some(Outcome::Exited(c)) => fields["exit"] = c.into(),
            Some(Outcome::Signaled(s)) => fields["signal"] = s.into(),
            Some(Outcome::TimedOut) => fields["timedOut"] = true.into(),
            Some(Outcome::Lost) => fields["lost"] = true.into(),
            None => fields["setupFailed"] = true.into(),
        }
        let hash = self
            .log
            .write("run.end", obj(fields))
            .and_then(|h| self.log.flush().map(|()| h));
        let denied = self.denied + self.net_denied;
        match (hash, self.failed.take()) {
            (Ok(h), None) => (Some(h), denied),
            (Ok(_), Some(e)) | (Err(_), Some(e)) => {
                eprintln!(
                    "ringfence: the activity log {} is incomplete: {e}",
                    self.path.display()
                );
                (None, denied)
            }
            (Err(e), None) => {
                eprintln!(
                    "ringfence: the activity log {} is incomplete: {e}",
                    self.path.display()
                );
                (None, denied)
            }
        }
    }
}

fn record(name: &str) -> Result<Value> {
    crate::runs::load(name)
}

fn log_path(name: &str, rec: &Value) -> Result<PathBuf> {
    match rec.get("log").and_then(Value::as_str) {
        Some(p) => Ok(PathBuf::from(p)),
        None => bail!("run {name} has no activity log"),
    }
}

/// `ringfence log`: runs, newest first.
pub fn list() -> Result<()> {
    let runs = crate::runs::all()?;
    println!(
        "{:<32} {:<10} {:>8} {:>7}  COMMAND",
        "RUN", "STATUS", "SECONDS", "DENIED"
    );
    for r in runs {
        let status = match &r["status"] {
            Value::Null if crate::runs::is_live(r["name"].as_str().unwrap_or("")) => {
                "running".into()
            }
            Value::Null => "killed".into(),
            s if s.get("exit").is_some() => format!("exit {}", s["exit"]),
            s if s.get("signal").is_some() => format!("signal {}", s["signal"]),
            s if s.get("timedOut").is_some() => "timed out".into(),
            _ => "failed".into(),
        };
        let secs = match (r["started"].as_u64(), r["ended"].as_u64()) {
            (Some(a), Some(b)) => (b.saturating_sub(a)).to_string(),
            _ => "-".into(),
        };
        let argv: Vec<String> = r["argv"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<32} {:<10} {:>8} {:>7}  {}",
            r["name"].as_str().unwrap_or("?"),
            status,
            secs,
            r["denied"].as_u64().map_or("-".into(), |d| d.to_string()),
            {
                let cmd = argv.join(" ").escape_debug().to_string();
                if cmd.chars().count() > 60 {
                    format!("{}...", cmd.chars().take(57).collect::<String>())
                } else {
                    cmd
                }
            }
        );
    }
    Ok(())
}

/// `ringfence log show RUN`: the run's events, readable or as JSON lines.
pub fn show(name: &str, kind: Option<&str>, as_json: bool) -> Result<()> {
    let rec = record(name)?;
    let path = log_path(name, &rec)?;
    let events = ringfence_audit::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for e in events {
        let k = e.get("kind").and_then(Value::as_str).unwrap_or("");
        if let Some(want) = kind {
            if !k.starts_with(want) {
                continue;
            }
        }
        if as_json {
            println!("{}", Value::Object(e.clone()));
            continue;
        }
        let ts = e.get("ts").and_then(Value::as_str).unwrap_or("");
        let detail = match k {
            "run.start" => format!(
                "{} (cwd {}, policy {})",
                joined(&e["argv"]),
                e["cwd"].as_str().unwrap_or(""),
                e["policyDigest"]
                    .as_str()
                    .and_then(|d| d.get(..12))
                    .unwrap_or("")
            ),
            "fs.denied" => format!(
                "{} {} by {} (pid {}): {}",
                e["op"].as_str().unwrap_or(""),
                e["path"].as_str().unwrap_or(""),
                e["program"].as_str().unwrap_or(""),
                e["pid"],
                e["reason"].as_str().unwrap_or("")
            ),
            "exec" => format!(
                "{} (pid {}): {}",
                e["path"].as_str().unwrap_or(""),
                e["pid"],
                joined(&e["argv"])
            ),
            "run.end" => format!(
                "{} after {} ms, cpu {} ms, peak {} KiB, {} denied",
                if e.get("exit").is_some() {
                    format!("exit {}", e["exit"])
                } else if e.get("signal").is_some() {
                    format!("signal {}", e["signal"])
                } else {
                    "ended".into()
                },
                e["wallMs"],
                e["cpuMs"],
                e["peakMemoryKiB"],
                e["counts"]["fs.denied"]
            ),
            _ => String::new(),
        };
        println!("{ts}  {k:<10} {}", detail.escape_debug());
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

/// `ringfence log follow [RUN]`: prints a live run's events as they are written (the newest
/// live run when none is named), until its `run.end`.
pub fn follow(name: Option<&str>) -> Result<()> {
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
    let path = log_path(&name, &rec)?;
    let mut shown = 0usize;
    loop {
        let events = ringfence_audit::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        for e in &events[shown.min(events.len())..] {
            println!("{}", Value::Object(e.clone()));
            if e.get("kind").and_then(Value::as_str) == Some("run.end") {
                return Ok(());
            }
        }
        shown = events.len();
        if !crate::runs::is_live(&name) {
            // The supervisor is gone without closing the log.
            bail!("run {name} ended without run.end (its supervisor was killed)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A JSON array of strings, joined with spaces (an argv for display).
fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
