//! The run's audit sink: what goes into `run.start`, `fs.denied`, `net.decision` and `run.end`
//! of the activity log, and the observer that sees each event as it is written.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ringfence_audit::LogWriter;
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
        "allowUnixSockets": rules(&pol.allow_unix_sockets),
        "allowNestedUserNamespaces": pol.allow_nested_user_namespaces,
        "limits": {
            "pids": l.pids, "memory": l.memory, "cpuSeconds": l.cpu_seconds,
            "wallSeconds": l.wall_seconds, "openFiles": l.open_files, "fileSize": l.file_size,
            "tmpSize": l.tmp_size,
        },
        "envRemoved": p.env_removed,
        "packageCaches": {
            "root": p.caches.root,
            "variables": p.caches.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        },
        "workspace": {
            "mode": if pol.workspace.overlay { "overlay" } else { "direct" },
            "confirmDeletes": pol.workspace.confirm_deletes,
            "allowYes": pol.workspace.allow_yes,
        },
        "mountPlan": p.plan.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    })
}

/// One activity event as the log records it: `kind` (`run.start`, `exec`, `fs.denied`,
/// `net.decision`, `ask`, `answer`, `policy.update`, `run.end`, ...) and its fields, as listed
/// by `ringfence schema --events`. The log adds the time, the run's name and the hash chain.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub kind: &'a str,
    pub fields: &'a Map<String, Value>,
}

/// Sees every event of a run as it is written to the log (from the supervisor's threads).
pub type Observer = std::sync::Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// An open activity log for one run.
pub struct Activity {
    log: LogWriter,
    observer: Option<Observer>,
    pub path: PathBuf,
    started: Instant,
    denied: u64,
    execs: u64,
    net_allowed: u64,
    net_denied: u64,
    dropped: u64,
    /// `limits.memory`, recorded in `run.end` when it ended the run.
    memory_limit: u64,
    ended: bool,
    /// A write error is reported once at the end; the run is never stopped for it.
    failed: Option<String>,
}

impl Activity {
    pub fn start(
        path: PathBuf,
        run: &str,
        argv: &[Vec<u8>],
        p: &Prepared,
        observer: Option<Observer>,
    ) -> Result<Activity> {
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
                // What the command itself may create (allowNestedUserNamespaces).
                "nestedUserNamespaces": p.policy.allow_nested_user_namespaces,
                "creationGuard": p.guard.is_some(),
                "limits": p.mechanism.describe(),
            },
        });
        let fields = obj(fields);
        if let Some(o) = &observer {
            o(&Event {
                kind: "run.start",
                fields: &fields,
            });
        }
        log.write("run.start", fields)
            .map_err(|e| anyhow::anyhow!("writing the activity log: {e}"))?;
        log.flush()
            .map_err(|e| anyhow::anyhow!("writing the activity log: {e}"))?;
        Ok(Activity {
            log,
            observer,
            path,
            started: Instant::now(),
            denied: 0,
            execs: 0,
            net_allowed: 0,
            net_denied: 0,
            dropped: 0,
            memory_limit: p.policy.limits.memory,
            ended: false,
            failed: None,
        })
    }

    /// Shows the event to the observer, then writes it.
    fn write(
        &mut self,
        kind: &str,
        fields: Map<String, Value>,
    ) -> std::result::Result<String, ringfence_audit::Error> {
        if let Some(o) = &self.observer {
            o(&Event {
                kind,
                fields: &fields,
            });
        }
        self.log.write(kind, fields)
    }

    pub fn exec(&mut self, e: &Exec) {
        self.execs += 1;
        let fields = json!({"pid": e.pid, "path": e.path, "argv": e.argv});
        if let Err(err) = self.write("exec", obj(fields)) {
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
            "reason": if matches!(d.op, "connect" | "send") {
                "unix socket not in network.allowUnixSockets"
            } else if d.read_only {
                "outside the writable roots (read-only)"
            } else {
                "protected name inside a writable root"
            },
        });
        if let Err(e) = self.write("fs.denied", obj(fields)) {
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
        if let Err(e) = self.write(kind, fields) {
            self.failed.get_or_insert(e.to_string());
        }
    }

    /// What happened so far, as `run.end` and the run record count it.
    pub fn counts(&self) -> Value {
        json!({
            "fs.denied": self.denied,
            "exec": self.execs,
            "net.allowed": self.net_allowed,
            "net.denied": self.net_denied,
            "dropped": self.dropped,
        })
    }

    /// Closes the chain with `run.end`; returns the final hash for the run index and the number
    /// of denials. Later events are not written.
    pub fn end(&mut self, outcome: Option<Outcome>) -> (Option<String>, u64) {
        if self.ended {
            return (None, self.denied + self.net_denied);
        }
        self.ended = true;
        let (cpu_ms, peak_kib) = ringfence_linux::process::children_usage();
        let mut fields = json!({
            "wallMs": self.started.elapsed().as_millis() as u64,
            "cpuMs": cpu_ms,
            "peakMemoryKiB": peak_kib,
            "counts": self.counts(),
        });
        match outcome {
            Some(Outcome::Exited(c)) => fields["exit"] = c.into(),
            Some(Outcome::Signaled(s)) => fields["signal"] = s.into(),
            Some(Outcome::TimedOut) => fields["timedOut"] = true.into(),
            Some(Outcome::MemoryLimit(used)) => {
                fields["limit"] = "memory".into();
                fields["signal"] = libc::SIGKILL.into();
                fields["memoryLimit"] = self.memory_limit.into();
                fields["memoryUsed"] = used.into();
            }
            Some(Outcome::Lost) => fields["lost"] = true.into(),
            None => fields["setupFailed"] = true.into(),
        }
        let hash = self
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

#[cfg(test)]
mod schema_tests {
    #![allow(clippy::expect_used)]
    use ringfence_proxy::Protocol;

    /// Every protocol the proxy records is one the documented event schema allows (the match
    /// makes a new variant a compile error here until it is listed).
    #[test]
    fn the_schema_lists_every_protocol_the_proxy_records() {
        let all = [
            Protocol::Http,
            Protocol::Connect,
            Protocol::Socks5,
            Protocol::Tcp,
            Protocol::Https,
            Protocol::Transparent,
            Protocol::Dns,
            Protocol::Udp,
            Protocol::Icmp,
            Protocol::Reverse,
            Protocol::Tls,
        ];
        for p in all {
            match p {
                Protocol::Http
                | Protocol::Connect
                | Protocol::Socks5
                | Protocol::Tcp
                | Protocol::Https
                | Protocol::Transparent
                | Protocol::Dns
                | Protocol::Udp
                | Protocol::Icmp
                | Protocol::Reverse
                | Protocol::Tls => {}
            }
        }
        let schema = ringfence_audit::events_schema();
        let decision = schema["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .find(|k| k["properties"]["kind"]["const"] == "net.decision")
            .expect("net.decision in the schema");
        let listed: Vec<&str> = decision["properties"]["protocol"]["enum"]
            .as_array()
            .expect("protocol enum")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for p in all {
            assert!(
                listed.contains(&p.as_str()),
                "{} missing from the schema",
                p.as_str()
            );
        }
    }
}
