//! `ringfence check` and `ringfence run --check`: the policy's command permissions applied to a
//! shell string by `ringfence_shell::analyse`, printed (check) or enforced before the sandbox
//! starts (run --check: deny refuses, ask asks a person on the host terminal).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ringfence_shell::{analyse, Analysis, Context, Decision, Level};

use crate::prepare::{self, Sources};
use crate::PolicyArgs;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print the analysis as JSON.
    #[arg(long)]
    json: bool,
    /// The shell string to check.
    #[arg(short = 'c', value_name = "SHELL STRING", conflicts_with = "command")]
    shell: Option<String>,
    /// The shell string to check (several words are joined with spaces).
    #[arg(last = true, value_name = "COMMAND STRING")]
    command: Vec<String>,
}

/// Exit status of `check` for each decision.
fn status(d: Decision) -> i32 {
    match d {
        Decision::Allow => 0,
        Decision::Ask => 1,
        Decision::Deny => 2,
    }
}

/// The real path when it exists, so that the policy's paths and the working directory compare.
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn context(sources: &Sources) -> Result<Context> {
    let (policy, cwd) = prepare::load_policy(sources)?;
    let home = prepare::home()?;
    let mut ctx = Context::from_policy(&policy, &real(&cwd), &real(&home));
    for list in [
        &mut ctx.writable_roots,
        &mut ctx.deny_write,
        &mut ctx.deny_read,
        &mut ctx.allow_read,
        &mut ctx.secret_files,
    ] {
        for p in list.iter_mut() {
            *p = real(p);
        }
    }
    // Count the files a deletion in the workspace would remove (bounded; nothing else is read).
    ctx.disk = Some(std::sync::Arc::new(ringfence_shell::LocalDisk));
    Ok(ctx)
}

pub fn main(args: CheckArgs) -> Result<i32> {
    let script = match (&args.shell, args.command.is_empty()) {
        (Some(s), _) => s.clone(),
        (None, false) => args.command.join(" "),
        (None, true) => {
            bail!("no command given; use `ringfence check -- 'COMMAND STRING'` or `ringfence check -c 'COMMAND STRING'`")
        }
    };
    let ctx = context(&args.policy.sources())?;
    let a = analyse(&script, &ctx);
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::to_string_pretty(&a).context("encoding the analysis")?;
        writeln!(out, "{v}")?;
    } else {
        write!(out, "{}", report(&a))?;
    }
    Ok(status(a.decision))
}

/// The human-readable analysis: the decision, its reasons, the commands, and notes.
pub fn report(a: &Analysis) -> String {
    let mut s = format!("{}\n", a.decision.as_str());
    for r in a.reasons() {
        s.push_str(&format!("  reason: {r}\n"));
    }
    for f in a.findings.iter().filter(|f| f.level == Level::Info) {
        s.push_str(&format!("  note: {}\n", f.reason));
    }
    if !a.complete {
        s.push_str("  note: the command could not be analysed completely\n");
    }
    for (i, c) in a.commands.iter().enumerate() {
        let via = match c.via.and_then(|v| a.commands.get(v)) {
            Some(w) => format!(" (run by `{}`)", w.argv.first().map_or("", |s| s.as_str())),
            None => String::new(),
        };
        let remote = if c.remote { " (remote)" } else { "" };
        s.push_str(&format!(
            "  command {i}: {}{via}{remote}: {}\n",
            c.argv.join(" "),
            c.decision.as_str()
        ));
    }
    s
}

/// The `permissions` part of `explain`: each rule with its layer and file.
pub fn print_permissions(
    p: &ringfence_policy::Permissions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "permissions (defaultMode {}):", p.default_mode)?;
    for (list, rules) in [("deny", &p.deny), ("ask", &p.ask), ("allow", &p.allow)] {
        for r in rules.iter() {
            writeln!(
                out,
                "  {list:<6} {:<34} from {} ({})",
                r.text, r.layer, r.origin
            )?;
        }
    }
    Ok(())
}

/// `run --check`: refuses a denied command, asks a person about an `ask`, returns to let the
/// sandbox start otherwise.
pub fn before_run(sources: &Sources, script: &str, control_fd: Option<i32>) -> Result<()> {
    let ctx = context(sources)?;
    let a = analyse(script, &ctx);
    let reasons = a.reasons().join("; ");
    match a.decision {
        Decision::Allow => Ok(()),
        Decision::Deny => bail!("--check: refused: {reasons}"),
        Decision::Ask => {
            // The command's text must not drive the terminal: control characters are escaped.
            let question = format!(
                "ringfence: the command needs your approval:\n  {}\n{}Run it in the sandbox? [y/N] ",
                script.escape_debug(),
                a.reasons()
                    .iter()
                    .map(|r| format!("  - {}\n", r.escape_debug()))
                    .collect::<String>()
            );
            let answer = match control_fd {
                Some(fd) => {
                    let (policy, _) = prepare::load_policy(sources)?;
                    let timeout = std::time::Duration::from_secs(
                        policy
                            .ask_timeout_seconds
                            .unwrap_or(ringfence_policy::ASK_TIMEOUT_SECONDS),
                    );
                    ask_control(fd, script, &a.reasons(), timeout)?
                }
                None => ask_approval(&question)?,
            };
            match answer {
                Some(true) => Ok(()),
                Some(false) => bail!("--check: not approved: {reasons}"),
                None => bail!(
                    "--check: the command needs approval and there is no terminal to ask on: {reasons}; \
                     add an allow rule to permissions.allow or run it from a terminal"
                ),
            }
        }
    }
}

/// Asks the program on `--control-fd` to approve a command, before the sandbox (and the
/// channel's reader) starts: writes `{"type":"approve","id":0,"command":...,"reasons":[...]}`
/// and waits up to `timeout` for `{"type":"answer","id":0,"answer":"once"|"deny"}`. Reads one
/// byte at a time so that nothing after the answer line is taken from the channel. No answer
/// in time: not approved.
pub fn ask_control(
    fd: i32,
    script: &str,
    reasons: &[String],
    timeout: std::time::Duration,
) -> Result<Option<bool>> {
    let line = serde_json::json!({
        "type": "approve", "id": 0, "command": script, "decision": "ask", "reasons": reasons,
    })
    .to_string()
        + "\n";
    ringfence_linux::sys::write_all(&fd, line.as_bytes())
        .context("--control-fd: writing the approval question")?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(Some(false));
            }
            if !ringfence_linux::process::readable_within(fd, left) {
                continue;
            }
            let mut b = [0u8; 1];
            let n = ringfence_linux::sys::read_some(fd, &mut b).unwrap_or(0);
            if n == 0 {
                // The channel closed: nobody will answer.
                return Ok(Some(false));
            }
            if b[0] == b'\n' {
                break;
            }
            if got.len() > 64 * 1024 {
                bail!("--control-fd: a line longer than 64 KiB while waiting for the approval");
            }
            got.push(b[0]);
        }
        let v: serde_json::Value = match serde_json::from_slice(&got) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["type"] == "answer" && v["id"] == 0 {
            return Ok(Some(matches!(
                v["answer"].as_str(),
                Some("once") | Some("always") | Some("allow") | Some("yes")
            )));
        }
    }
}

/// Asks a person to approve a command: `Some(answer)`, or `None` when nobody can be asked.
/// Asks on the host terminal (`/dev/tty`, never stdin, which belongs to the command); a control
/// channel (`--control-fd`) is the other place an answer can come from.
pub fn ask_approval(question: &str) -> Result<Option<bool>> {
    let tty = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let mut w = &tty;
    w.write_all(question.as_bytes())
        .and_then(|()| w.flush())
        .context("writing the question to /dev/tty")?;
    let mut line = String::new();
    BufReader::new(&tty)
        .read_line(&mut line)
        .context("reading the answer from /dev/tty")?;
    let answer = line.trim().to_ascii_lowercase();
    Ok(Some(answer == "y" || answer == "yes"))
}
