//! The activity log of a run: one JSON event per line, each carrying the hash of the line before
//! it, so that an edited, removed, reordered or truncated line is detected by [`verify`]. The
//! writer is used by the supervisor, outside the sandbox; nothing here knows about sandboxes.

use std::fs;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Version of the event format; `ringfence schema --events` documents it.
pub const FORMAT_VERSION: u32 = 1;

/// JSON Schema of one line of the activity log (`ringfence schema --events`).
pub fn events_schema() -> Value {
    let common = serde_json::json!({
        "kind": {"type": "string", "description": "run.start, exec, fs.denied, net.decision, ask, answer, policy.update, policy.invalid, events.dropped or run.end; in an overlay run's review log (runs/NAME/review.jsonl, whose chain starts from the activity log's final hash): overlay.apply, overlay.undo or overlay.discard"},
        "ts": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"},
        "run": {"type": "string", "description": "the run's name"},
        "seq": {"type": "integer", "minimum": 0, "description": "0 for the first line, then +1"},
        "prev": {"type": "string", "description": "hash of the previous line (64 zeros on the first)"},
        "hash": {"type": "string", "description": "SHA-256 of prev, a newline, and this line's JSON without hash (keys sorted)"}
    });
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "ringfence activity log event",
        "version": FORMAT_VERSION,
        "type": "object",
        "required": ["kind", "ts", "run", "seq", "prev", "hash"],
        "properties": common,
        "oneOf": [
            {"properties": {"kind": {"const": "run.start"}, "version": {"type": "integer"},
                "argv": {"type": "array", "items": {"type": "string"}}, "cwd": {"type": "string"},
                "uid": {"type": "integer"}, "policyDigest": {"type": "string"},
                "policy": {"type": "object"}, "protections": {"type": "object"}},
             "required": ["argv", "cwd", "uid", "policyDigest", "policy", "protections"]},
            {"properties": {"kind": {"const": "exec"}, "pid": {"type": "integer"},
                "path": {"type": "string"}, "argv": {"type": "array", "items": {"type": "string"}}},
             "required": ["pid", "path", "argv"]},
            {"properties": {"kind": {"const": "fs.denied"},
                "op": {"enum": ["open", "mkdir", "mknod", "symlink", "link", "rename", "bind", "create"]},
                "path": {"type": "string"}, "pid": {"type": "integer"}, "program": {"type": "string"},
                "reason": {"type": "string"}},
             "required": ["op", "path", "pid", "program", "reason"]},
            {"properties": {"kind": {"const": "net.decision"}, "host": {"type": "string"},
                "port": {"type": "integer"},
                "protocol": {"enum": ["http", "connect", "socks5", "tcp", "https", "transparent", "dns", "udp",
                    "icmp", "reverse", "tls"]},
                "decision": {"enum": ["allow", "deny"]},
                "rule": {"type": "string", "description": "the policy entry that decided"},
                "reason": {"type": "string", "description": "why a connection was denied"},
                "asked": {"enum": ["once", "always", "deny"], "description": "the answer, when the user was asked"},
                "client": {"type": "string", "description": "the program that connected, when known"},
                "peer": {"type": "string", "description": "the client's address inside the sandbox"},
                "resolved": {"type": "string", "description": "the address connected to"},
                "bytesUp": {"type": "integer"}, "bytesDown": {"type": "integer"},
                "durationMs": {"type": "integer"},
                "error": {"type": "string", "description": "why an allowed connection failed"}},
             "required": ["host", "port", "protocol", "decision", "bytesUp", "bytesDown", "durationMs"]},
            {"properties": {"kind": {"const": "ask"}, "host": {"type": "string"},
                "port": {"type": "integer"}, "protocol": {"enum": ["http", "connect", "socks5", "tcp", "transparent"]},
                "client": {"type": "string"},
                "via": {"enum": ["terminal", "control-fd", "nobody"], "description": "who was asked"}},
             "required": ["host", "port", "protocol", "via"]},
            {"properties": {"kind": {"const": "answer"}, "host": {"type": "string"},
                "port": {"type": "integer"}, "answer": {"enum": ["once", "always", "deny"]}},
             "required": ["host", "port", "answer"]},
            {"properties": {"kind": {"const": "policy.update"},
                "source": {"enum": ["answer", "control-fd"], "description": "an \"always\" answer, or a line on --control-fd"},
                "allowed": {"type": "string", "description": "answer: the host:port entry added"},
                "file": {"type": "string", "description": "answer: the settings file it was added to"},
                "update": {"type": "object", "description": "control-fd: the line that took effect"}},
             "required": ["source"]},
            {"properties": {"kind": {"const": "policy.invalid"},
                "error": {"type": "string", "description": "why a policy update on --control-fd was refused"}},
             "required": ["error"]},
            {"properties": {"kind": {"const": "events.dropped"},
                "count": {"type": "integer", "description": "reports from the sandbox dropped because the supervisor fell behind"}},
             "required": ["count"]},
            {"properties": {"kind": {"const": "run.end"}, "exit": {"type": "integer"},
                "signal": {"type": "integer"}, "timedOut": {"type": "boolean"},
                "lost": {"type": "boolean"}, "setupFailed": {"type": "boolean"},
                "limit": {"enum": ["memory"], "description": "the limit that ended the run (the sandbox was killed: signal 9)"},
                "memoryLimit": {"type": "integer", "description": "limits.memory in bytes"},
                "memoryUsed": {"type": "integer", "description": "bytes the sandbox used when the memory limit ended it"},
                "wallMs": {"type": "integer"}, "cpuMs": {"type": "integer"},
                "peakMemoryKiB": {"type": "integer"},
                "counts": {"type": "object", "properties": {"fs.denied": {"type": "integer"},
                    "exec": {"type": "integer"}, "net.allowed": {"type": "integer"},
                    "net.denied": {"type": "integer"}, "dropped": {"type": "integer"}}}},
             "required": ["wallMs", "cpuMs", "peakMemoryKiB", "counts"]},
            {"properties": {"kind": {"enum": ["overlay.apply", "overlay.undo", "overlay.discard"]},
                "roots": {"type": "array", "items": {"type": "string"}},
                "applied": {"type": "integer", "description": "paths changed in the real folders"},
                "conflicts": {"type": "array", "items": {"type": "string"}},
                "heldBack": {"type": "array", "items": {"type": "string"}, "description": "protected paths not applied"},
                "refused": {"type": "array", "items": {"type": "string"}, "description": "undo: paths changed again since the apply"}},
             "required": ["roots"]}
        ]
    })
}

/// The hash a chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The hash of one event: SHA-256 over the previous hash and the event's canonical JSON
/// (keys sorted, without its own `hash`).
pub fn event_hash(prev: &str, event: &Map<String, Value>) -> String {
    let mut body = event.clone();
    body.remove("hash");
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(Value::Object(body).to_string().as_bytes());
    hex(&h.finalize())
}

/// SHA-256 of any bytes, hex (for policy digests).
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 3339 UTC timestamp with milliseconds, from the system clock.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian, UTC.
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Appends events to a run's log, chaining their hashes.
pub struct LogWriter {
    out: BufWriter<fs::File>,
    path: PathBuf,
    run: String,
    seq: u64,
    prev: String,
}

impl LogWriter {
    /// Creates the log file (it must not exist yet), readable by its owner only.
    pub fn create(path: &Path, run: &str) -> Result<LogWriter, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        Ok(LogWriter {
            out: BufWriter::new(f),
            path: path.to_path_buf(),
            run: run.to_string(),
            seq: 0,
            prev: GENESIS.to_string(),
        })
    }

    /// Opens a log to add events to it, continuing its chain; a log that does not exist yet is
    /// created with its chain starting from `genesis` (a review log starts from the final hash
    /// of the run's activity log, so the two stay linked).
    pub fn append(path: &Path, run: &str, genesis: &str) -> Result<LogWriter, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let (seq, prev) = match fs::metadata(path) {
            Ok(_) => {
                let events = read(path)?;
                match events.last() {
                    Some(e) => (
                        e.get("seq").and_then(Value::as_u64).unwrap_or(0) + 1,
                        e.get("hash")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    None => (0, genesis.to_string()),
                }
            }
            Err(_) => (0, genesis.to_string()),
        };
        let f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        Ok(LogWriter {
            out: BufWriter::new(f),
            path: path.to_path_buf(),
            run: run.to_string(),
            seq,
            prev,
        })
    }

    /// Writes one event of `kind` with `fields`; returns its hash.
    pub fn write(&mut self, kind: &str, fields: Map<String, Value>) -> Result<String, Error> {
        let mut e = fields;
        e.insert("kind".into(), kind.into());
        e.insert("ts".into(), now_rfc3339().into());
        e.insert("run".into(), self.run.clone().into());
        e.insert("seq".into(), self.seq.into());
        e.insert("prev".into(), self.prev.clone().into());
        let hash = event_hash(&self.prev, &e);
        e.insert("hash".into(), hash.clone().into());
        let line = Value::Object(e).to_string();
        writeln!(self.out, "{line}").map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        self.seq += 1;
        self.prev = hash.clone();
        Ok(hash)
    }

    /// Flushes buffered events to the file. (Not to the disk: a run's start and end would each
    /// wait for the device; the chain still shows a log cut short by a crash.)
    pub fn flush(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The hash of the last event written.
    pub fn last_hash(&self) -> &str {
        &self.prev
    }
}

/// What `verify` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every line chains to the one before, the log ends with `run.end`, and its last hash is
    /// the one the run index recorded.
    Intact { events: u64 },
    /// The first problem, with the 1-based line it was found on.
    Broken { line: u64, problem: String },
}

/// Reads a log and checks its chain; `expected_last` is the final hash the run index kept.
pub fn verify(path: &Path, expected_last: Option<&str>) -> Result<Verdict, Error> {
    let f = fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    let mut last_kind = String::new();
    for line in io::BufReader::new(f).lines() {
        let line = line.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        n += 1;
        let broken = |problem: String| Ok(Verdict::Broken { line: n, problem });
        let Ok(Value::Object(e)) = serde_json::from_str::<Value>(&line) else {
            return broken("not a JSON object".into());
        };
        if e.get("seq").and_then(Value::as_u64) != Some(n - 1) {
            return broken(format!(
                "sequence number {} where {} was expected (a line was removed, added or moved)",
                e.get("seq").map(|v| v.to_string()).unwrap_or_default(),
                n - 1
            ));
        }
        if e.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return broken("does not chain to the line before it".into());
        }
        let recorded = e.get("hash").and_then(Value::as_str).unwrap_or_default();
        if event_hash(&prev, &e) != recorded {
            return broken("its content does not match its hash (the line was edited)".into());
        }
        prev = recorded.to_string();
        last_kind = e
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    if n == 0 {
        return Ok(Verdict::Broken {
            line: 0,
            problem: "the log is empty".into(),
        });
    }
    if last_kind != "run.end" {
        return Ok(Verdict::Broken {
            line: n,
            problem: "the log does not end with run.end (truncated, or the run is still going)"
                .into(),
        });
    }
    if let Some(x) = expected_last {
        if x != prev {
            return Ok(Verdict::Broken {
                line: n,
                problem: "the last hash differs from the one the run index recorded (lines were removed from the end)".into(),
            });
        }
    }
    Ok(Verdict::Intact { events: n })
}

/// Reads every event of a log (for display; use [`verify`] to check it).
pub fn read(path: &Path) -> Result<Vec<Map<String, Value>>, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn sample(dir: &Path) -> (PathBuf, String) {
        let path = dir.join("run.jsonl");
        let mut w = LogWriter::create(&path, "r1").unwrap();
        w.write("run.start", fields(json!({"argv": ["true"]})))
            .unwrap();
        w.write(
            "fs.denied",
            fields(json!({"op": "open", "path": "/w/.bashrc", "pid": 2})),
        )
        .unwrap();
        w.write(
            "fs.denied",
            fields(json!({"op": "mkdir", "path": "/w/.vscode", "pid": 2})),
        )
        .unwrap();
        let last = w.write("run.end", fields(json!({"exit": 0}))).unwrap();
        w.flush().unwrap();
        (path, last)
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rf-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn lines(p: &Path) -> Vec<String> {
        fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn rewrite(p: &Path, l: &[String]) {
        fs::write(p, l.iter().map(|s| format!("{s}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn append_continues_the_chain() {
        let dir = std::env::temp_dir().join(format!("rf-audit-append-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("review.jsonl");
        let genesis = "ab".repeat(32);
        let mut w = LogWriter::append(&path, "r1", &genesis).unwrap();
        w.write("overlay.apply", fields(json!({"roots": []})))
            .unwrap();
        w.flush().unwrap();
        drop(w);
        let mut w = LogWriter::append(&path, "r1", &genesis).unwrap();
        let last = w
            .write("overlay.undo", fields(json!({"roots": []})))
            .unwrap();
        w.flush().unwrap();
        let events = read(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["prev"], genesis.as_str());
        assert_eq!(events[1]["seq"], 1);
        assert_eq!(events[1]["prev"], events[0]["hash"]);
        assert_eq!(
            event_hash(events[0]["hash"].as_str().unwrap(), &events[1]),
            last
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn intact_log_verifies() {
        let d = tempdir("intact");
        let (p, last) = sample(&d);
        assert_eq!(
            verify(&p, Some(&last)).unwrap(),
            Verdict::Intact { events: 4 }
        );
        let events = read(&p).unwrap();
        assert_eq!(events[1]["kind"], "fs.denied");
        assert_eq!(events[0]["prev"], GENESIS);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn each_kind_of_tampering_is_found_and_located() {
        let d = tempdir("tamper");
        let (p, last) = sample(&d);
        let orig = lines(&p);

        let mut edited = orig.clone();
        edited[1] = edited[1].replace(".bashrc", ".bashrX");
        rewrite(&p, &edited);
        assert!(matches!(verify(&p, Some(&last)).unwrap(),
            Verdict::Broken { line: 2, problem } if problem.contains("edited")));

        let mut removed = orig.clone();
        removed.remove(1);
        rewrite(&p, &removed);
        assert!(matches!(verify(&p, Some(&last)).unwrap(),
            Verdict::Broken { line: 2, problem } if problem.contains("sequence")));

        let mut swapped = orig.clone();
        swapped.swap(1, 2);
        rewrite(&p, &swapped);
        assert!(matches!(
            verify(&p, Some(&last)).unwrap(),
            Verdict::Broken { line: 2, .. }
        ));

        let truncated = orig[..3].to_vec();
        rewrite(&p, &truncated);
        assert!(matches!(verify(&p, Some(&last)).unwrap(),
            Verdict::Broken { line: 3, problem } if problem.contains("run.end")));

        // A whole new chain written from scratch does not end where the index says.
        let forged = d.join("forged.jsonl");
        let mut w = LogWriter::create(&forged, "r1").unwrap();
        w.write("run.start", Map::new()).unwrap();
        w.write("run.end", Map::new()).unwrap();
        w.flush().unwrap();
        assert!(matches!(verify(&forged, Some(&last)).unwrap(),
            Verdict::Broken { problem, .. } if problem.contains("run index")));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_schema_describes_every_kind_written() {
        let schema = events_schema();
        let kinds: Vec<&str> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|k| {
                let kind = &k["properties"]["kind"];
                match kind["const"].as_str() {
                    Some(c) => vec![c],
                    None => kind["enum"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap())
                        .collect(),
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "run.start",
                "exec",
                "fs.denied",
                "net.decision",
                "ask",
                "answer",
                "policy.update",
                "policy.invalid",
                "events.dropped",
                "run.end",
                "overlay.apply",
                "overlay.undo",
                "overlay.discard"
            ]
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_318_186, 378), "2026-11-22T03:29:46.378Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }
}
