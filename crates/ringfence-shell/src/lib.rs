//! Static analysis of shell commands for ringfence: parse a command string with a real shell
//! grammar (tree-sitter-bash), split it into every simple command it would run (through
//! pipelines, lists, substitutions, here-documents, functions, `bash -c`/`eval` strings and
//! wrappers such as `sudo`, `xargs` or `find -exec`), match each against the policy's
//! `permissions` rules, and report what the sandbox would not contain.
//!
//! Pure: no process is run and no file is read; everything the analysis needs about the machine
//! (working directory, home, writable roots, ...) comes in a [`Context`]. The one exception is
//! opt-in: a [`Disk`] in the context lets it count the files a deletion would remove.

mod checks;
mod disk;
mod walk;
mod wrappers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use disk::{Disk, LocalDisk, Select};

use ringfence_policy::{
    normalize, CommandRule, CommandWord, DefaultMode, Permissions, Policy, RuleList,
};
use serde::Serialize;

/// What the caller should do with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

impl Decision {
    /// `allow`, `ask` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Ask => "ask",
            Decision::Deny => "deny",
        }
    }
}

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The sandbox contains it (the write or connection fails inside); reported, no prompt.
    Info,
    /// A person should decide.
    Ask,
    /// Never wanted (destroying the filesystem or home, a disk, a fork bomb).
    Deny,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    PrivilegeEscalation,
    Destructive,
    WriteOutside,
    ProtectedWrite,
    DownloadExecute,
    Obfuscation,
    Network,
    RemoteExecution,
    /// Publishes or changes something on a server the sandbox lets it reach (push, publish).
    Publish,
    ReadDenied,
    /// Reads a file that looks like a credential and sends data to a reachable host in the
    /// same command list.
    SecretSent,
    Persistence,
    ForkBomb,
    /// The command cannot be analysed completely (parse error, unknown command name, ...).
    Incomplete,
}

/// Byte range in the analysed command string. For commands found inside a quoted string
/// (`bash -c '...'`) it is the range inside the string when that maps one to one, else the
/// range of the whole string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// One thing the analysis found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub level: Level,
    pub reason: String,
    pub span: Span,
}

/// One simple command the string would run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    /// The words as the shell would pass them; a word known only at run time keeps its
    /// source text (`$X`).
    pub argv: Vec<String>,
    pub span: Span,
    /// Index of the command that runs this one (`sudo`, `xargs`, `bash -c`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<usize>,
    /// Runs on another machine (`ssh host CMD`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// This command's own decision from the rules and `defaultMode`.
    pub decision: Decision,
}

/// A rule that matched a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    pub rule: String,
    pub list: &'static str,
    /// The layer the rule came from (`managed`, `user`, `project`, `command line`).
    pub layer: String,
    /// Index into `commands`.
    pub command: usize,
    /// The rule matches only if a word known at run time takes a matching value.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
}

/// The result of [`analyse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub decision: Decision,
    pub commands: Vec<Command>,
    pub matched: Vec<RuleMatch>,
    pub findings: Vec<Finding>,
    /// No part of the string was left unanalysed.
    pub complete: bool,
}

impl Analysis {
    /// One line per reason for the decision, strongest first; empty for a plain allow.
    pub fn reasons(&self) -> Vec<String> {
        let mut out: Vec<(Decision, String)> = Vec::new();
        for m in &self.matched {
            let d = match (m.list, m.uncertain) {
                ("deny", false) => Decision::Deny,
                ("allow", _) => continue,
                _ => Decision::Ask,
            };
            let cmd = self
                .commands
                .get(m.command)
                .map(|c| c.argv.join(" "))
                .unwrap_or_default();
            let how = if m.uncertain { "may match" } else { "matches" };
            out.push((
                d,
                format!("`{cmd}` {how} {} rule {} ({})", m.list, m.rule, m.layer),
            ));
        }
        for f in &self.findings {
            let d = match f.level {
                Level::Deny => Decision::Deny,
                Level::Ask => Decision::Ask,
                Level::Info => continue,
            };
            out.push((d, f.reason.clone()));
        }
        for (i, c) in self.commands.iter().enumerate() {
            let ruled = self.matched.iter().any(|m| m.command == i);
            if c.decision > Decision::Allow && !ruled {
                out.push((
                    c.decision,
                    format!(
                        "`{}` matches no rule (defaultMode: {})",
                        c.argv.join(" "),
                        c.decision.as_str()
                    ),
                ));
            }
        }
        out.sort_by_key(|a| std::cmp::Reverse(a.0));
        out.dedup();
        out.into_iter().map(|(_, r)| r).collect()
    }
}

/// Everything the analysis needs to know about the policy and the machine.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Working directory the command starts in (absolute).
    pub cwd: PathBuf,
    /// Home directory, for `~` and `$HOME`.
    pub home: PathBuf,
    /// Paths the sandbox lets the command write (absolute, normalised).
    pub writable_roots: Vec<PathBuf>,
    /// Paths denied for writing even inside a writable root.
    pub deny_write: Vec<PathBuf>,
    /// Paths that cannot be read.
    pub deny_read: Vec<PathBuf>,
    /// Paths re-allowed for reading inside a denied area.
    pub allow_read: Vec<PathBuf>,
    /// The policy's `credentials.files`: secrets besides the names that look like one.
    pub secret_files: Vec<PathBuf>,
    /// Domain patterns the sandbox's proxy lets through (srt syntax: `example.com`, `*.example.com`).
    pub allowed_domains: Vec<String>,
    /// Domain patterns that are never reached.
    pub denied_domains: Vec<String>,
    /// `.git/config` is writable (`allowGitConfig`).
    pub allow_git_config: bool,
    /// Unix sockets can be connected to (`allowAllUnixSockets`): daemons outside the sandbox
    /// (Docker, systemd, ssh-agent) are then within reach.
    pub allow_unix_sockets: bool,
    /// The permission rules, `defaultMode` and `confirmDeletes`.
    pub permissions: Permissions,
    /// Where to count the files a deletion would remove; `None`: nothing is read, and a
    /// recursive deletion in the workspace whose size is unknown asks.
    pub disk: Option<Arc<dyn Disk>>,
}

impl Context {
    /// The context of a loaded policy for a command started in `cwd`.
    pub fn from_policy(policy: &Policy, cwd: &Path, home: &Path) -> Context {
        let paths = |rules: &[ringfence_policy::PathRule]| -> Vec<PathBuf> {
            rules.iter().map(|r| r.path.clone()).collect()
        };
        Context {
            cwd: normalize(cwd),
            home: normalize(home),
            writable_roots: paths(&policy.allow_write),
            deny_write: paths(&policy.deny_write),
            deny_read: paths(&policy.deny_read)
                .into_iter()
                .chain(paths(&policy.default_deny_read))
                .collect(),
            allow_read: paths(&policy.allow_read),
            secret_files: policy.credential_files.clone(),
            allowed_domains: policy.allowed_domains.clone(),
            denied_domains: policy.denied_domains.clone(),
            allow_git_config: policy.allow_git_config,
            allow_unix_sockets: policy.allow_all_unix_sockets,
            permissions: policy.permissions.clone(),
            disk: None,
        }
    }
}

/// Shell builtins that only change the shell's own state; they need no rule.
const BOOKKEEPING: &[&str] = &[
    "cd", "pushd", "popd", "export", "local", "declare", "typeset", "readonly", "unset", "set",
    "shift", "true", "false", ":", "test", "[", "[[", "wait", "return", "exit", "break",
    "continue", "shopt", "alias", "umask", "hash", "type",
];

/// Analyses one shell command string: the decision, the commands it would run, the rules that
/// matched and the findings. Never fails: what cannot be analysed is a finding of its own, at
/// least `ask`.
pub fn analyse(command: &str, ctx: &Context) -> Analysis {
    let mut walked = walk::walk(command, ctx);
    let mut findings = std::mem::take(&mut walked.findings);
    checks::check(&walked, ctx, &mut findings);
    findings.sort_by_key(|f| (std::cmp::Reverse(f.level), f.span.start));
    findings.dedup_by(|a, b| a.kind == b.kind && a.reason == b.reason);

    let perms = &ctx.permissions;
    let mut matched = Vec::new();
    let mut commands = Vec::with_capacity(walked.cmds.len());
    for (i, c) in walked.cmds.iter().enumerate() {
        let argv: Vec<CommandWord> = c
            .argv
            .iter()
            .map(|w| w.known.then_some(w.text.as_str()))
            .collect();
        let mut decision: Option<Decision> = None;
        // A command whose name is unknown already asks; rules could only "maybe" match it.
        let name_known = argv.first().is_some_and(|w| w.is_some());
        let mut note = |rule: &CommandRule, list: RuleList, uncertain: bool| {
            matched.push(RuleMatch {
                rule: rule.text.clone(),
                list: match list {
                    RuleList::Allow => "allow",
                    RuleList::Ask => "ask",
                    RuleList::Deny => "deny",
                },
                layer: rule.layer.to_string(),
                command: i,
                uncertain,
            });
        };
        for rule in &perms.deny {
            if rule.matches(&argv, false) {
                note(rule, RuleList::Deny, false);
                decision = decision.max(Some(Decision::Deny));
            } else if name_known && rule.matches(&argv, true) {
                note(rule, RuleList::Deny, true);
                decision = decision.max(Some(Decision::Ask));
            }
        }
        for rule in &perms.ask {
            if rule.matches(&argv, false) || (name_known && rule.matches(&argv, true)) {
                note(rule, RuleList::Ask, !rule.matches(&argv, false));
                decision = decision.max(Some(Decision::Ask));
            }
        }
        if decision.is_none() {
            if let Some(rule) = perms.allow.iter().find(|r| r.matches(&argv, false)) {
                note(rule, RuleList::Allow, false);
                decision = Some(Decision::Allow);
            }
        }
        let needs_no_rule = c.wrapper
            || c.argv
                .first()
                .is_some_and(|w| w.known && BOOKKEEPING.contains(&w.text.as_str()));
        let decision = match decision {
            Some(d) => d,
            None if needs_no_rule => Decision::Allow,
            None => match perms.default_mode {
                DefaultMode::Sandboxed => Decision::Allow,
                DefaultMode::Ask => Decision::Ask,
                DefaultMode::Deny => Decision::Deny,
            },
        };
        commands.push(Command {
            argv: c.argv.iter().map(|w| w.text.clone()).collect(),
            span: c.span,
            via: c.via,
            remote: c.remote,
            decision,
        });
    }
    let from_findings = findings
        .iter()
        .map(|f| match f.level {
            Level::Info => Decision::Allow,
            Level::Ask => Decision::Ask,
            Level::Deny => Decision::Deny,
        })
        .max()
        .unwrap_or(Decision::Allow);
    let decision = commands
        .iter()
        .map(|c| c.decision)
        .max()
        .unwrap_or(Decision::Allow)
        .max(from_findings);
    let complete = !walked.incomplete;
    Analysis {
        decision,
        commands,
        matched,
        findings,
        complete,
    }
}

#[cfg(test)]
mod tests;
