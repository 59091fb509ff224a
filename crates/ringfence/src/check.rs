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

fn context(sources: &Sources) -> Result<Context> {
    let (policy, cwd) = prepare::load_policy(sources)?;
    let home = prepare::home()?;
    let mut ctx = Context::from_policy(&policy, &real(&cwd), &real(&home));
    for list in [
        &mut ctx.writable_roots,
        &mut ctx.deny_write,
        &mut ctx.deny_read,
        &mut ctx.allow_read,
    ] {
        for p in list.iter_mut() {
            *p = real(p);
        }
    }
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
pub fn before_run(sources: &Sources, script: &str) -> Result<()> {
    let ctx = context(sources)?;
    let a = analyse(script, &ctx);
    let reasons = a.reasons().join("; ");
    match a.decision {
        Decision::Allow => Ok(()),
        Decision::Deny => bail!("--check: refused: {reasons}"),
        Decision::Ask => {
            let question = format!(
                "ringfence: the command needs your approval:\n  {script}\n{}Run it in the sandbox? [y/N] ",
                a.reasons()
                    .iter()
                    .map(|r| format!("  - {r}\n"))
                    .collect::<String>()
            );
            match ask_approval(&question)? {
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
