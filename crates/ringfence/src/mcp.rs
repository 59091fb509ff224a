//! `ringfence mcp`: a Model Context Protocol server on stdin/stdout whose tools run inside the
//! sandbox. Every tool call is a fresh sandbox of the configured policy: `run` (a shell command,
//! the permission check first), `read_file`, `write_file` and `list_dir` (a small program run
//! inside, so the sandbox's own view decides what is readable and writable), and `violations`
//! (what the calls so far were refused). JSON-RPC 2.0, one message per line.

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context as _, Result};
use ringfence_runtime::{Outcome, RunOutcome, Sandbox, Sources, Stdio};
use ringfence_shell::{analyse, Decision};
use serde_json::{json, Value};

/// The protocol versions this server speaks, newest first.
const VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];
/// Output kept per stream and per call; the rest is counted and dropped.
const OUTPUT_LIMIT: usize = 256 * 1024;
/// Violation lines kept for the `violations` tool.
const VIOLATIONS_KEPT: usize = 500;

struct Server {
    sources: Sources,
    violations: VecDeque<String>,
    input: Box<dyn BufRead>,
    /// Messages read while waiting for the answer to a question, handled after it.
    pending: VecDeque<Value>,
    /// The client can ask its user (`elicitation`, protocol 2025-06-18).
    can_ask: bool,
    asked: u64,
}

pub fn main(sources: Sources) -> Result<i32> {
    // The policy is checked once at start: a server that cannot run anything says so now.
    crate::prepare::load_policy(&sources)?;
    let mut server = Server {
        sources,
        violations: VecDeque::new(),
        input: Box::new(std::io::BufReader::new(std::io::stdin())),
        pending: VecDeque::new(),
        can_ask: false,
        asked: 0,
    };
    loop {
        let msg = match server.pending.pop_front() {
            Some(m) => m,
            None => match server.read()? {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    send(&error_reply(
                        Value::Null,
                        -32700,
                        &format!("parse error: {e}"),
                    ))?;
                    continue;
                }
                None => return Ok(0),
            },
        };
        if let Some(r) = server.handle(&msg) {
            send(&r)?;
        }
    }
}

fn send(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").context("writing stdout")?;
    out.flush().context("writing stdout")
}

fn error_reply(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn tools() -> Value {
    let path = json!({"type": "string", "description": "A path as the sandbox sees it (relative paths start at the server's working directory)"});
    json!([
        {
            "name": "run",
            "description": "Run a shell command in a fresh sandbox. Returns its exit status, output and what the sandbox refused (files, network).",
            "inputSchema": {"type": "object", "properties": {
                "command": {"type": "string", "description": "The shell command line (bash -c)"}
            }, "required": ["command"]}
        },
        {
            "name": "read_file",
            "description": "Read a text file, as the sandbox may read it.",
            "inputSchema": {"type": "object", "properties": {"path": path}, "required": ["path"]}
        },
        {
            "name": "write_file",
            "description": "Write (create or replace) a file where the sandbox may write.",
            "inputSchema": {"type": "object", "properties": {
                "path": path,
                "content": {"type": "string"}
            }, "required": ["path", "content"]}
        },
        {
            "name": "list_dir",
            "description": "List a directory, as the sandbox sees it.",
            "inputSchema": {"type": "object", "properties": {"path": path}, "required": ["path"]}
        },
        {
            "name": "violations",
            "description": "What the sandbox refused in this session's calls, newest last.",
            "inputSchema": {"type": "object", "properties": {}}
        }
    ])
}

/// The text result of a tool call.
fn result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// What one sandboxed program did.
struct Ran {
    outcome: RunOutcome,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: u64,
}

impl Server {
    /// The next message from the client; `None` at the end of input.
    fn read(&mut self) -> Result<Option<Result<Value, serde_json::Error>>> {
        loop {
            let mut line = String::new();
            if self.input.read_line(&mut line).context("reading stdin")? == 0 {
                return Ok(None);
            }
            if !line.trim().is_empty() {
                return Ok(Some(serde_json::from_str(&line)));
            }
        }
    }

    /// Asks the client's user (`elicitation/create`); true only for an explicit approval.
    fn ask_user(&mut self, question: &str) -> Result<bool, ToolError> {
        self.asked += 1;
        let id = format!("ringfence-ask-{}", self.asked);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "elicitation/create", "params": {
            "message": question,
            "requestedSchema": {"type": "object", "properties": {
                "approve": {"type": "boolean", "title": "Run it in the sandbox?"}
            }, "required": ["approve"]}
        }});
        send(&request).map_err(|e| ToolError::Failed(format!("{e:#}")))?;
        loop {
            let msg = match self.read() {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(_))) => continue,
                Ok(None) | Err(_) => return Ok(false),
            };
            let is_answer = msg.get("id").and_then(Value::as_str) == Some(id.as_str())
                && msg.get("method").is_none();
            if !is_answer {
                self.pending.push_back(msg);
                continue;
            }
            let r = &msg["result"];
            return Ok(r["action"] == "accept" && r["content"]["approve"] == true);
        }
    }

    fn handle(&mut self, msg: &Value) -> Option<Value> {
        let method = msg.get("method").and_then(Value::as_str);
        let id = msg.get("id").cloned();
        let (Some(method), Some(id)) = (method, id) else {
            // Notifications (`notifications/initialized`, cancellations) and stray responses
            // get no reply.
            return None;
        };
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let reply = match method {
            "initialize" => {
                self.can_ask = params
                    .pointer("/capabilities/elicitation")
                    .is_some_and(Value::is_object);
                let asked = params.get("protocolVersion").and_then(Value::as_str);
                let version = asked
                    .filter(|v| VERSIONS.contains(v))
                    .unwrap_or(VERSIONS[0]);
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "ringfence", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Every tool runs in a fresh ringfence sandbox: files outside the writable roots are read-only, secrets are hidden, and the network is limited to the policy's hosts."
                })
            }
            "ping" => json!({}),
            "tools/list" => json!({"tools": tools()}),
            "tools/call" => {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                let args = params.get("arguments").cloned().unwrap_or(json!({}));
                match self.call(name, &args) {
                    Ok(v) => v,
                    Err(ToolError::Protocol(m)) => return Some(error_reply(id, -32602, &m)),
                    Err(ToolError::Failed(m)) => result(m, true),
                }
            }
            _ => return Some(error_reply(id, -32601, &format!("unknown method {method}"))),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": reply}))
    }

    fn call(&mut self, name: &str, args: &Value) -> Result<Value, ToolError> {
        let text = |key: &str| -> Result<String, ToolError> {
            args.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    ToolError::Protocol(format!("{name}: \"{key}\" (a string) is required"))
                })
        };
        match name {
            "run" => {
                let command = text("command")?;
                self.check(&command)?;
                let ran = self.sandboxed(ringfence_runtime::shell_argv(&command), None)?;
                Ok(result(ran.describe(), false))
            }
            "read_file" => {
                let path = text("path")?;
                let ran = self.sandboxed(argv(&["cat", "--", &path]), None)?;
                ran.output_or_error("read_file", &path)
            }
            "list_dir" => {
                let path = text("path")?;
                let ran = self.sandboxed(argv(&["ls", "-la", "--", &path]), None)?;
                ran.output_or_error("list_dir", &path)
            }
            "write_file" => {
                let path = text("path")?;
                let content = text("content")?;
                let ran = self.sandboxed(
                    argv(&["/bin/sh", "-c", "cat > \"$1\"", "sh", &path]),
                    Some(content.into_bytes()),
                )?;
                match ran.outcome.status {
                    Outcome::Exited(0) => Ok(result(format!("wrote {path}"), false)),
                    _ => Err(ToolError::Failed(format!(
                        "write_file {path}: refused or failed: {}{}",
                        String::from_utf8_lossy(&ran.stderr).trim(),
                        ran.violations_text()
                    ))),
                }
            }
            "violations" => {
                let lines: Vec<&str> = self.violations.iter().map(String::as_str).collect();
                Ok(result(
                    if lines.is_empty() {
                        "nothing was refused".to_string()
                    } else {
                        lines.join("\n")
                    },
                    false,
                ))
            }
            _ => Err(ToolError::Protocol(format!("unknown tool {name}"))),
        }
    }

    /// The policy's command permissions: deny refuses; ask asks the client's user where the
    /// client can (elicitation), else refuses, saying which rule would allow it.
    fn check(&mut self, command: &str) -> Result<(), ToolError> {
        let ctx = crate::check::context(&self.sources)
            .map_err(|e| ToolError::Failed(format!("{e:#}")))?;
        let a = analyse(command, &ctx);
        let reasons = a.reasons().join("; ");
        match a.decision {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(ToolError::Failed(format!("refused by the policy's permissions: {reasons}"))),
            Decision::Ask if self.can_ask => {
                let question = format!("The agent wants to run:\n  {command}\n{reasons}");
                if self.ask_user(&question)? {
                    Ok(())
                } else {
                    Err(ToolError::Failed(format!("not approved: {reasons}")))
                }
            }
            Decision::Ask => Err(ToolError::Failed(format!(
                "the command needs approval, and this client cannot ask its user: {reasons}; add a rule to permissions.allow to let it run"
            ))),
        }
    }

    /// Runs `argv` in a fresh sandbox with `input` on its stdin; collects its output.
    fn sandboxed(&mut self, argv: Vec<Vec<u8>>, input: Option<Vec<u8>>) -> Result<Ran, ToolError> {
        let mut running = Sandbox::builder(self.sources.clone())
            .command(argv.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .stdio(Stdio::Piped)
            .spawn()
            .map_err(|e| ToolError::Failed(format!("the sandbox did not start: {e}")))?;
        let stdin = running.stdin.take();
        let writer = std::thread::spawn(move || {
            if let (Some(mut w), Some(data)) = (stdin, input) {
                let _ = w.write_all(&data);
            }
        });
        let out = capped(running.stdout.take());
        let err = capped(running.stderr.take());
        let outcome = running.wait();
        let _ = writer.join();
        let (stdout, d1) = out.join().unwrap_or_default();
        let (stderr, d2) = err.join().unwrap_or_default();
        let outcome = outcome.map_err(|e| ToolError::Failed(format!("the sandbox failed: {e}")))?;
        for v in &outcome.violations {
            if self.violations.len() == VIOLATIONS_KEPT {
                self.violations.pop_front();
            }
            self.violations.push_back(format!("{}: {v}", outcome.name));
        }
        Ok(Ran {
            outcome,
            stdout,
            stderr,
            dropped: d1 + d2,
        })
    }
}

fn argv(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// Reads a stream on a thread of its own, keeping the first `OUTPUT_LIMIT` bytes and counting
/// the rest (read to the end, so that the command never blocks on a full pipe).
fn capped(f: Option<std::fs::File>) -> std::thread::JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        let Some(mut f) = f else {
            return (Vec::new(), 0);
        };
        let mut kept = Vec::new();
        let mut dropped = 0u64;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                    dropped += (n - room) as u64;
                }
            }
        }
        (kept, dropped)
    })
}

enum ToolError {
    /// Bad arguments: a JSON-RPC error.
    Protocol(String),
    /// The tool ran and failed (or was refused): a result with `isError`.
    Failed(String),
}

impl Ran {
    fn violations_text(&self) -> String {
        if self.outcome.violations.is_empty() {
            return String::new();
        }
        let mut s = String::from("\n<sandbox_violations>\n");
        for v in &self.outcome.violations {
            s.push_str(v);
            s.push('\n');
        }
        s.push_str("</sandbox_violations>");
        s
    }

    fn describe(&self) -> String {
        let status = match self.outcome.status {
            Outcome::Exited(c) => format!("exit status {c}"),
            Outcome::Signaled(s) => format!("killed by signal {s}"),
            Outcome::TimedOut => "killed: limits.wallSeconds reached".into(),
            Outcome::MemoryLimit(_) => "killed: limits.memory reached".into(),
            Outcome::Lost => "the sandbox ended without reporting a status".into(),
        };
        let mut s = format!("{status}\n");
        if !self.stdout.is_empty() {
            s.push_str("--- stdout ---\n");
            s.push_str(&String::from_utf8_lossy(&self.stdout));
            if !s.ends_with('\n') {
                s.push('\n');
            }
        }
        if !self.stderr.is_empty() {
            s.push_str("--- stderr ---\n");
            s.push_str(&String::from_utf8_lossy(&self.stderr));
            if !s.ends_with('\n') {
                s.push('\n');
            }
        }
        if self.dropped > 0 {
            s.push_str(&format!("({} bytes of output not shown)\n", self.dropped));
        }
        s.push_str(&self.violations_text());
        s.push_str(&format!("\n(run {})", self.outcome.name));
        s
    }

    /// The program's output, or a tool error with its stderr and the violations.
    fn output_or_error(&self, tool: &str, path: &str) -> Result<Value, ToolError> {
        match self.outcome.status {
            Outcome::Exited(0) => {
                let mut text = String::from_utf8_lossy(&self.stdout).into_owned();
                if self.dropped > 0 {
                    text.push_str(&format!("\n({} bytes not shown)", self.dropped));
                }
                Ok(result(text, false))
            }
            _ => Err(ToolError::Failed(format!(
                "{tool} {path}: {}{}",
                String::from_utf8_lossy(&self.stderr).trim(),
                self.violations_text()
            ))),
        }
    }
}
