//! Run records: every run has a name, unique on this machine, and a small JSON record under the
//! state directory (`$XDG_STATE_HOME/ringfence/runs/NAME.json`) that later commands refer to.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ringfence_linux::supervise::Outcome;

pub fn state_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => crate::prepare::home()?.join(".local/state"),
    };
    Ok(base.join("ringfence"))
}

pub struct Record {
    path: PathBuf,
    value: serde_json::Value,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Record {
    /// Claims the run's name; refuses a name that is already taken. The record names the
    /// activity log: `log`, or `runs/NAME.jsonl` in the state directory.
    pub fn start(
        name: Option<&str>,
        argv: &[Vec<u8>],
        cwd: &Path,
        log: Option<&Path>,
    ) -> Result<Record> {
        let dir = state_dir()?.join("runs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let generated;
        let name = match name {
            Some(n) => {
                if !valid_name(n) {
                    bail!("--name {n:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'");
                }
                n
            }
            None => {
                // A process that runs several sandboxes (an embedding program) numbers them.
                static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                generated = match RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                    0 => format!("run-{}-{}", now(), std::process::id()),
                    n => format!("run-{}-{}-{n}", now(), std::process::id()),
                };
                &generated
            }
        };
        let path = dir.join(format!("{name}.json"));
        let log = match log {
            Some(l) => l.to_path_buf(),
            None => dir.join(format!("{name}.jsonl")),
        };
        let value = serde_json::json!({
            "log": log.display().to_string(),
            "name": name,
            "argv": argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
            "cwd": cwd.display().to_string(),
            "supervisorPid": std::process::id(),
            "started": now(),
        });
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!(
                        "--name {name}: a run with this name already exists ({})",
                        path.display()
                    )
                } else {
                    anyhow::anyhow!("creating {}: {e}", path.display())
                }
            })?;
        f.write_all(value.to_string().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Record { path, value })
    }

    /// Adds `key` to the record now.
    pub fn set(&mut self, key: &str, value: serde_json::Value) {
        self.value[key] = value;
        self.save();
    }

    /// Where this run's activity log goes.
    pub fn log_path(&self) -> PathBuf {
        PathBuf::from(self.value["log"].as_str().unwrap_or_default())
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        if fs::write(&tmp, self.value.to_string()).is_ok() {
            let _ = fs::rename(&tmp, &self.path);
        }
    }

    pub fn name(&self) -> &str {
        self.value["name"].as_str().unwrap_or_default()
    }

    /// Records how the run ended (`None`: it never started).
    pub fn finish(self, outcome: Option<Outcome>) {
        self.finish_with(outcome, serde_json::Map::new())
    }

    /// As `finish`, adding `extra` fields (the activity log's path and final hash).
    pub fn finish_with(
        mut self,
        outcome: Option<Outcome>,
        extra: serde_json::Map<String, serde_json::Value>,
    ) {
        for (k, v) in extra {
            self.value[k] = v;
        }
        let status = match outcome {
            None => serde_json::json!({"setupFailed": true}),
            Some(Outcome::Exited(c)) => serde_json::json!({"exit": c}),
            Some(Outcome::Signaled(s)) => serde_json::json!({"signal": s}),
            Some(Outcome::TimedOut) => serde_json::json!({"timedOut": true}),
            Some(Outcome::MemoryLimit(used)) => {
                serde_json::json!({"limit": "memory", "signal": libc::SIGKILL, "memoryUsed": used})
            }
            Some(Outcome::Lost) => serde_json::json!({"lost": true}),
        };
        self.value["ended"] = now().into();
        self.value["status"] = status;
        self.save();
    }
}

/// Whether the run `name` may still be using its resources: its record exists, has not ended,
/// and its supervisor process is alive.
pub fn is_live(name: &str) -> bool {
    let Ok(dir) = state_dir() else {
        return true;
    };
    let Ok(text) = fs::read_to_string(dir.join("runs").join(format!("{name}.json"))) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return true;
    };
    if v.get("ended").is_some() {
        return false;
    }
    match v.get("supervisorPid").and_then(|p| p.as_u64()) {
        Some(pid) => ringfence_linux::process::signal(pid as libc::pid_t, 0).is_ok(),
        None => true,
    }
}

/// The record of run `name`.
pub fn load(name: &str) -> Result<serde_json::Value> {
    let p = state_dir()?.join("runs").join(format!("{name}.json"));
    let text =
        fs::read_to_string(&p).with_context(|| format!("no run named {name} ({})", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a run record", p.display()))
}

/// Every run record, newest first.
pub fn all() -> Result<Vec<serde_json::Value>> {
    let dir = state_dir()?.join("runs");
    let mut runs: Vec<serde_json::Value> = match fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    runs.sort_by_key(|r| std::cmp::Reverse(r["started"].as_u64().unwrap_or(0)));
    Ok(runs)
}
