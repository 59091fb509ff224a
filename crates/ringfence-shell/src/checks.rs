//! Findings about the commands found by `walk`: what each would do that a person should see.
//!
//! The level says whether the sandbox contains it. `Info`: the sandbox stops it anyway (a write
//! outside the writable roots, a connection to a host not in allowedDomains, a read of a denied
//! path). `Ask`: its effect reaches past the sandbox (a push that rewrites remote history, a
//! command run on another machine, code downloaded and run) or destroys work inside a writable
//! root (`git reset --hard`, `rm -rf .`), or it reveals an intent a person should see even though
//! the sandbox stops it (privilege escalation, persistence, protected files). `Deny`: never
//! wanted (deleting `/` or the home directory, writing to a disk, a fork bomb).

use std::path::{Path, PathBuf};

use ringfence_policy::domains::{decide_domain, normalize_host, DomainVerdict, Host};
use ringfence_policy::{normalize, ProtectedNames};

use crate::walk::{is_downloader, words_text, Cmd, Walked, Word};
use crate::wrappers::SHELLS;
use crate::{Context, Finding, FindingKind, Level, Span};

struct Out<'a> {
    findings: &'a mut Vec<Finding>,
}

impl Out<'_> {
    fn add(&mut self, kind: FindingKind, level: Level, reason: String, span: Span) {
        self.findings.push(Finding {
            kind,
            level,
            reason,
            span,
        });
    }
}

pub(crate) fn check(w: &Walked, ctx: &Context, findings: &mut Vec<Finding>) {
    let mut out = Out { findings };
    for c in &w.cmds {
        command(c, ctx, &mut out);
    }
    for r in &w.redirects {
        let reads = r.op == "<";
        if reads {
            read_target(&r.target, r.cwd.as_deref(), ctx, &mut out);
        } else {
            write_target(
                &r.target,
                r.cwd.as_deref(),
                ctx,
                &mut out,
                "redirects output to",
            );
        }
    }
    pipelines(&w.cmds, &mut out);
    secrets_sent(w, ctx, &mut out);
}

fn name(c: &Cmd) -> &str {
    c.argv
        .first()
        .filter(|w| w.known)
        .map(|w| w.text.rsplit('/').next().unwrap_or(""))
        .unwrap_or("")
}

/// Non-option operands (everything after `--` counts).
fn operands(args: &[Word]) -> Vec<&Word> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        if rest || !a.known || !a.text.starts_with('-') || a.text == "-" {
            out.push(a);
        } else if a.text == "--" {
            rest = true;
        }
    }
    out
}

fn short_flag(args: &[Word], flag: char) -> bool {
    args.iter().any(|a| {
        a.known
            && a.text.starts_with('-')
            && !a.text.starts_with("--")
            && a.text[1..].contains(flag)
    })
}

fn long_flag(args: &[Word], flags: &[&str]) -> bool {
    args.iter().any(|a| {
        a.known
            && flags
                .iter()
                .any(|f| a.text == *f || a.text.starts_with(&format!("{f}=")))
    })
}

/// Resolves a path argument against the command's working directory.
fn resolve(w: &str, cwd: Option<&Path>) -> Option<PathBuf> {
    let p = Path::new(w);
    if p.is_absolute() {
        Some(normalize(p))
    } else {
        Some(normalize(&cwd?.join(p)))
    }
}

/// For a glob word (`build/*`, `*`): the directory whose contents it names.
fn glob_dir(text: &str) -> &str {
    let cut = text.find(['*', '?', '[']).unwrap_or(text.len());
    match text[..cut].rfind('/') {
        Some(0) => "/",
        Some(i) => &text[..i],
        None => ".",
    }
}

fn is_device(p: &Path) -> bool {
    let s = p.to_string_lossy();
    let Some(dev) = s.strip_prefix("/dev/") else {
        return false;
    };
    [
        "sd", "hd", "vd", "xvd", "nvme", "mmcblk", "md", "dm-", "loop", "mapper/", "disk/", "mem",
        "kmem", "port", "sr",
    ]
    .iter()
    .any(|p| dev.starts_with(p))
}

fn is_scratch(p: &Path) -> bool {
    // The sandbox's /tmp and /dev/shm are private and discarded; /dev/null and friends are harmless.
    p.starts_with("/tmp")
        || p.starts_with("/dev/shm")
        || p.starts_with("/dev/fd")
        || matches!(
            p.to_str(),
            Some(
                "/dev/null"
                    | "/dev/stdout"
                    | "/dev/stderr"
                    | "/dev/stdin"
                    | "/dev/tty"
                    | "/dev/zero"
            )
        )
}

fn writable(p: &Path, ctx: &Context) -> bool {
    ctx.writable_roots.iter().any(|r| p.starts_with(r))
        && !ctx.deny_write.iter().any(|d| p.starts_with(d))
}

/// A protected name anywhere in the path (the sandbox refuses these writes at any depth): the
/// same rule as the mount scan and the creation guard.
fn protected(p: &Path, ctx: &Context) -> Option<String> {
    ProtectedNames::new(ctx.allow_git_config)
        .protects_path(p)
        .map(|m| m.label())
}

fn persistence_path(p: &Path, ctx: &Context) -> bool {
    let h = &ctx.home;
    let under_home = [
        ".ssh",
        ".config/systemd",
        ".config/autostart",
        ".local/share/systemd",
        "Library/LaunchAgents",
        ".config/fish/config.fish",
        ".xprofile",
        ".xinitrc",
    ];
    under_home.iter().any(|d| p.starts_with(h.join(d)))
        || [
            "/etc/cron",
            "/var/spool/cron",
            "/etc/systemd",
            "/etc/init.d",
            "/etc/rc.local",
            "/etc/profile",
            "/etc/bash.bashrc",
            "/Library/LaunchAgents",
            "/Library/LaunchDaemons",
        ]
        .iter()
        .any(|d| p.to_string_lossy().starts_with(d))
}

/// A write to `w` (a file the command creates, changes or removes).
fn write_target(w: &Word, cwd: Option<&Path>, ctx: &Context, out: &mut Out, verb: &str) {
    let text = if w.known {
        w.text.as_str()
    } else {
        w.prefix.as_str()
    };
    if text.is_empty() || (!w.known && !text.contains('/')) {
        return;
    }
    let text = if w.glob { glob_dir(text) } else { text };
    let Some(p) = resolve(text, cwd) else {
        return;
    };
    let shown = p.display();
    if is_device(&p) {
        out.add(
            FindingKind::Destructive,
            Level::Deny,
            format!("{verb} the device {shown}: this overwrites a disk or memory"),
            w.span,
        );
    } else if is_scratch(&p) {
    } else if persistence_path(&p, ctx) && verb != "changes the mode or owner of" {
        out.add(
            FindingKind::Persistence,
            Level::Ask,
            format!("{verb} {shown}: a place that runs or admits code later (persistence)"),
            w.span,
        );
    } else if let Some(name) = protected(&p, ctx) {
        out.add(
            FindingKind::ProtectedWrite,
            Level::Ask,
            format!("{verb} {shown}: {name} is protected because code in it runs outside the sandbox later (the sandbox refuses the write)"),
            w.span,
        );
    } else if !writable(&p, ctx) {
        out.add(
            FindingKind::WriteOutside,
            Level::Info,
            format!("{verb} {shown}, outside the writable paths (the sandbox refuses the write)"),
            w.span,
        );
    }
}

fn read_denied(p: &Path, ctx: &Context) -> bool {
    ctx.deny_read.iter().any(|d| p.starts_with(d))
        && !ctx.allow_read.iter().any(|a| p.starts_with(a))
}

fn read_target(w: &Word, cwd: Option<&Path>, ctx: &Context, out: &mut Out) {
    if !w.known || ctx.deny_read.is_empty() {
        return;
    }
    let text = if w.glob { glob_dir(&w.text) } else { &w.text };
    if let Some(p) = resolve(text, cwd) {
        if read_denied(&p, ctx) {
            out.add(
                FindingKind::ReadDenied,
                Level::Info,
                format!(
                    "reads {}, which the policy denies (the sandbox hides it)",
                    p.display()
                ),
                w.span,
            );
        }
    }
}

/// Commands whose operands are all files they change.
const WRITES_OPERANDS: &[&str] = &[
    "touch", "mkdir", "rmdir", "truncate", "unlink", "shred", "tee",
];

fn command(c: &Cmd, ctx: &Context, out: &mut Out) {
    let n = name(c);
    if n.is_empty() {
        return;
    }
    let args = &c.argv[1..];
    let cwd = c.cwd.as_deref();
    let text = words_text(&c.argv);
    match n {
        "sudo" | "su" | "doas" | "pkexec" | "runuser" | "sudoedit" | "machinectl" => {
            out.add(
                FindingKind::PrivilegeEscalation,
                Level::Ask,
                format!("`{text}` asks for another user's privileges (the sandbox grants none)"),
                c.span,
            );
        }
        "rm" => rm(c, ctx, out),
        "find" => {
            let exec_rm = args.windows(2).any(|a| {
                (a[0].is("-exec") || a[0].is("-execdir"))
                    && a[1].known
                    && matches!(
                        a[1].text.rsplit('/').next(),
                        Some("rm" | "unlink" | "shred")
                    )
            });
            if exec_rm && !args.iter().any(|a| a.is("-delete")) {
                let end = args
                    .iter()
                    .position(|a| a.is("-exec") || a.is("-execdir"))
                    .unwrap_or(args.len());
                mass_deletion(c, find_deletions(&args[..end], cwd), "deletes", ctx, out);
            }
            if args.iter().any(|a| a.is("-delete")) {
                let mut dels = find_deletions(args, cwd);
                let quiet = [
                    "-delete",
                    "-depth",
                    "-xdev",
                    "-mount",
                    "-print",
                    "-mindepth",
                    "-maxdepth",
                ];
                let filtered = args.iter().any(|a| {
                    a.known && a.text.starts_with('-') && !quiet.contains(&a.text.as_str())
                });
                if !filtered {
                    for p in args.iter().take_while(|a| !a.text.starts_with('-')) {
                        delete_target(p, cwd, ctx, out, &text, c.span);
                    }
                    for d in &mut dels {
                        d.whole = true;
                    }
                }
                mass_deletion(c, dels, "deletes", ctx, out);
            }
            for a in args.windows(2) {
                if matches!(
                    a[0].text.as_str(),
                    "-fprint" | "-fprint0" | "-fprintf" | "-fls"
                ) {
                    write_target(&a[1], cwd, ctx, out, "writes");
                }
            }
        }
        "dd" => {
            for a in args {
                if let Some(v) = a.text.strip_prefix("of=") {
                    let mut w = a.clone();
                    w.text = v.to_string();
                    w.prefix = v.to_string();
                    write_target(&w, cwd, ctx, out, "writes");
                }
                if let Some(v) = a.text.strip_prefix("if=") {
                    let mut w = a.clone();
                    w.text = v.to_string();
                    read_target(&w, cwd, ctx, out);
                }
            }
        }
        _ if n.starts_with("mkfs")
            || matches!(
                n,
                "mke2fs"
                    | "mkswap"
                    | "wipefs"
                    | "fdisk"
                    | "sfdisk"
                    | "parted"
                    | "gdisk"
                    | "sgdisk"
                    | "blkdiscard"
                    | "cfdisk"
            ) =>
        {
            for a in operands(args) {
                if resolve(&a.text, cwd).is_some_and(|p| is_device(&p)) {
                    out.add(
                        FindingKind::Destructive,
                        Level::Deny,
                        format!("`{text}` formats or repartitions the device {}", a.text),
                        c.span,
                    );
                }
            }
        }
        "cp" | "mv" | "install" | "ln" | "rsync" => {
            let ops = operands(args);
            let target_dir = args
                .windows(2)
                .find(|a| a[0].is("-t") || a[0].is("--target-directory"))
                .map(|a| &a[1]);
            let target = target_dir.or_else(|| {
                if ops.len() >= 2 {
                    ops.last().copied()
                } else {
                    None
                }
            });
            if let Some(t) = target {
                if !(n == "rsync" && is_remote_path(&t.text)) {
                    write_target(t, cwd, ctx, out, "writes");
                }
            }
            if n == "mv" {
                for s in ops.iter().take(ops.len().saturating_sub(1)) {
                    write_target(s, cwd, ctx, out, "moves");
                }
            }
            for s in ops.iter().take(ops.len().saturating_sub(1)) {
                read_target(s, cwd, ctx, out);
            }
            if n == "rsync" {
                let mut dels = Vec::new();
                let dry = long_flag(args, &["--dry-run"]) || short_flag(args, 'n');
                let deletes = !dry
                    && args
                        .iter()
                        .any(|a| a.known && (a.text == "--del" || a.text.starts_with("--delete")));
                if let Some(t) = target.filter(|t| deletes && !is_remote_path(&t.text)) {
                    dels.extend(Deletion::of_word(t, cwd, true).map(|mut d| {
                        d.upper_bound = true;
                        d.whole = false;
                        d
                    }));
                }
                if !dry && long_flag(args, &["--remove-source-files"]) {
                    for s in ops.iter().take(ops.len().saturating_sub(1)) {
                        if !is_remote_path(&s.text) {
                            dels.extend(Deletion::of_word(s, cwd, true));
                        }
                    }
                }
                mass_deletion(c, dels, "may delete", ctx, out);
                network_hosts(
                    c,
                    ctx,
                    out,
                    ops.iter().filter_map(|w| remote_host(&w.text)).collect(),
                );
            }
        }
        "sed" | "perl" => {
            let in_place = args.iter().any(|a| {
                a.known
                    && (a.text.starts_with("-i")
                        || a.text.starts_with("--in-place")
                        || (n == "perl" && a.text.starts_with("-p") && a.text.contains('i')))
            });
            if in_place {
                let scripted = args
                    .iter()
                    .any(|a| a.is("-e") || a.is("-f") || a.text.starts_with("--expression"));
                let ops = operands(args);
                let files = if scripted {
                    &ops[..]
                } else {
                    ops.get(1..).unwrap_or(&[])
                };
                for f in files {
                    write_target(f, cwd, ctx, out, "edits");
                }
            }
        }
        "chmod" | "chown" | "chgrp" => {
            let ops = operands(args);
            let recursive = short_flag(args, 'R') || long_flag(args, &["--recursive"]);
            for t in ops.iter().skip(1) {
                if recursive {
                    if let Some(p) = resolve(&t.text, cwd) {
                        if p == Path::new("/") || ctx.home.starts_with(&p) {
                            out.add(
                                FindingKind::Destructive,
                                Level::Ask,
                                format!(
                                    "`{text}` changes the owner or mode of everything under {}",
                                    p.display()
                                ),
                                c.span,
                            );
                            continue;
                        }
                    }
                }
                write_target(t, cwd, ctx, out, "changes the mode or owner of");
            }
        }
        "curl" | "wget" | "http" | "https" | "xh" | "aria2c" => {
            let hosts = url_hosts(args);
            network_hosts(c, ctx, out, hosts);
            for a in args.windows(2) {
                if matches!(
                    a[0].text.as_str(),
                    "-o" | "--output"
                        | "-O"
                        | "--output-document"
                        | "-D"
                        | "--dump-header"
                        | "-c"
                        | "--cookie-jar"
                ) && !(n == "curl" && a[0].is("-O"))
                    && !(n == "wget" && a[0].is("-c"))
                {
                    write_target(&a[1], cwd, ctx, out, "writes");
                }
            }
        }
        "git" => git(c, ctx, out),
        "gh" => {
            let ops = operands(args);
            let sub = ops.first().map(|w| w.text.as_str()).unwrap_or("");
            let action = ops.get(1).map(|w| w.text.as_str()).unwrap_or("");
            let changes = matches!(
                action,
                "create"
                    | "merge"
                    | "close"
                    | "delete"
                    | "edit"
                    | "comment"
                    | "review"
                    | "reopen"
                    | "ready"
                    | "upload"
                    | "set"
                    | "fork"
                    | "rename"
                    | "archive"
                    | "run"
                    | "cancel"
                    | "rerun"
                    | "enable"
                    | "disable"
                    | "lock"
                    | "transfer"
                    | "sync"
            ) && sub != "api"
                || sub == "api"
                    && args.iter().any(|a| {
                        a.is("-X")
                            || a.is("--method")
                            || a.is("-f")
                            || a.is("-F")
                            || a.text.starts_with("--field")
                            || a.text.starts_with("--raw-field")
                    });
            if changes {
                publish(
                    c,
                    ctx,
                    out,
                    Some("api.github.com"),
                    "changes state on GitHub",
                );
            }
        }
        "docker" | "podman" | "nerdctl" | "ctr" | "systemd-run" | "busctl" | "dbus-send"
            if ctx.allow_unix_sockets
                && !args
                    .iter()
                    .any(|a| a.is("--version") || a.is("version") || a.is("--help")) =>
        {
            out.add(
                FindingKind::PrivilegeEscalation,
                Level::Ask,
                format!("`{text}` asks a daemon outside the sandbox to act (unix sockets are allowed), with its privileges"),
                c.span,
            );
        }
        "npm" | "pnpm" | "yarn" | "cargo" | "twine" | "poetry" | "gem" | "docker" | "podman" => {
            let ops = operands(args);
            let sub = ops.first().map(|w| w.text.as_str()).unwrap_or("");
            let host = match (n, sub) {
                ("npm" | "pnpm" | "yarn", "publish" | "unpublish" | "deprecate") => {
                    Some("registry.npmjs.org")
                }
                ("cargo", "publish" | "yank" | "owner") => Some("crates.io"),
                ("twine", "upload") | ("poetry", "publish") => Some("upload.pypi.org"),
                ("gem", "push" | "yank") => Some("rubygems.org"),
                ("docker" | "podman", "push") => None,
                _ => None,
            };
            if matches!((n, sub), ("docker" | "podman", "push")) || host.is_some() {
                publish(c, ctx, out, host, "publishes a package or image");
            }
        }
        "ssh" | "scp" | "sftp" | "mosh" => {
            let ops = operands_with_values(args, "BbcDEeFIiJLlmOopQRSWwPS");
            let hosts: Vec<String> = if n == "ssh" || n == "mosh" || n == "sftp" {
                ops.first()
                    .map(|w| host_of_destination(&w.text))
                    .into_iter()
                    .collect()
            } else {
                ops.iter().filter_map(|w| remote_host(&w.text)).collect()
            };
            let allowed: Vec<&String> = hosts.iter().filter(|h| domain_allowed(h, ctx)).collect();
            if n == "ssh" && !allowed.is_empty() {
                let what = if ops.len() > 1 {
                    "runs a command"
                } else {
                    "opens a shell"
                };
                out.add(
                    FindingKind::RemoteExecution,
                    Level::Ask,
                    format!("`{text}` {what} on {}, outside the sandbox", allowed[0]),
                    c.span,
                );
            }
            if n == "scp" {
                let ops_local: Vec<&&Word> =
                    ops.iter().filter(|w| !is_remote_path(&w.text)).collect();
                if let Some(last) = ops.last() {
                    if !is_remote_path(&last.text) {
                        write_target(last, cwd, ctx, out, "writes");
                    }
                }
                for w in ops_local {
                    read_target(w, cwd, ctx, out);
                }
            }
            network_hosts(c, ctx, out, hosts);
        }
        "nc" | "ncat" | "netcat" | "telnet" | "ftp" | "socat" if !short_flag(args, 'l') => {
            let ops = operands_with_values(args, "pswiqWIOTXx");
            let hosts: Vec<String> = ops
                .first()
                .map(|w| host_of_destination(&w.text))
                .into_iter()
                .collect();
            network_hosts(c, ctx, out, hosts);
        }
        "crontab" if !short_flag(args, 'l') => {
            out.add(FindingKind::Persistence, Level::Ask, format!("`{text}` installs scheduled commands that run later, outside the sandbox (persistence)"), c.span);
        }
        "at" | "batch" if !args.iter().any(|a| a.is("-l") || a.is("-d") || a.is("-r")) => {
            out.add(
                FindingKind::Persistence,
                Level::Ask,
                format!("`{text}` schedules a command to run later (persistence)"),
                c.span,
            );
        }
        "systemctl" | "launchctl" | "loginctl" => {
            let verbs = [
                "enable",
                "link",
                "edit",
                "set-default",
                "mask",
                "preset",
                "add-wants",
                "reenable",
                "load",
                "bootstrap",
                "submit",
                "enable-linger",
                "revert",
            ];
            if let Some(v) = operands(args)
                .into_iter()
                .find(|a| verbs.contains(&a.text.as_str()))
            {
                out.add(FindingKind::Persistence, Level::Ask, format!("`{text}` ({}) makes a service start later, outside the sandbox (persistence)", v.text), c.span);
            }
        }
        "update-rc.d" | "chkconfig" => {
            out.add(
                FindingKind::Persistence,
                Level::Ask,
                format!("`{text}` registers a service to start later (persistence)"),
                c.span,
            );
        }
        _ => {}
    }
    if WRITES_OPERANDS.contains(&n) {
        let ops = operands(args);
        let ops = if n == "truncate" {
            operands_with_values(args, "sr")
        } else {
            ops
        };
        let empties = n == "truncate"
            || (n == "tee" && !short_flag(args, 'a') && !long_flag(args, &["--append"]));
        let mut dels = Vec::new();
        for t in ops {
            write_target(
                t,
                cwd,
                ctx,
                out,
                if n == "tee" { "writes" } else { "changes" },
            );
            if empties {
                dels.extend(Deletion::of_word(t, cwd, false));
            }
        }
        mass_deletion(c, dels, "empties or overwrites", ctx, out);
    }
    // Reads of denied paths by any command: arguments that look like paths.
    if !ctx.deny_read.is_empty()
        && !matches!(n, "cp" | "mv" | "install" | "ln" | "rsync" | "scp" | "dd")
    {
        for a in args {
            if a.known
                && (a.text.contains('/') || a.text.starts_with('.') || a.text.starts_with('~'))
                && !a.text.contains("://")
            {
                let t = a
                    .text
                    .split_once('=')
                    .map(|(_, v)| v)
                    .filter(|_| a.text.starts_with('-'))
                    .unwrap_or(&a.text);
                let mut w = a.clone();
                w.text = t.to_string();
                read_target(&w, cwd, ctx, out);
            }
        }
    }
}

/// Operands when every short option in `with_value` takes a value.
fn operands_with_values<'a>(args: &'a [Word], with_value: &str) -> Vec<&'a Word> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let t = &args[i].text;
        if t == "--" {
            out.extend(args[i + 1..].iter());
            break;
        }
        if t.starts_with('-') && t.len() > 1 && args[i].known {
            // In a cluster (`-fL`), an option that takes a value takes the next word if it is last.
            if !t.starts_with("--") && t.ends_with(|c| with_value.contains(c)) {
                i += 1;
            }
        } else {
            out.push(&args[i]);
        }
        i += 1;
    }
    out
}

fn rm(c: &Cmd, ctx: &Context, out: &mut Out) {
    let args = &c.argv[1..];
    let recursive =
        short_flag(args, 'r') || short_flag(args, 'R') || long_flag(args, &["--recursive"]);
    let text = words_text(&c.argv);
    if long_flag(args, &["--no-preserve-root"]) {
        out.add(
            FindingKind::Destructive,
            Level::Deny,
            format!("`{text}` turns off rm's protection of /"),
            c.span,
        );
    }
    let mut dels = Vec::new();
    for t in operands(args) {
        if recursive {
            delete_target(t, c.cwd.as_deref(), ctx, out, &text, c.span);
        } else {
            write_target(t, c.cwd.as_deref(), ctx, out, "deletes");
        }
        dels.extend(Deletion::of_word(t, c.cwd.as_deref(), recursive));
    }
    mass_deletion(c, dels, "deletes", ctx, out);
}

/// A recursive delete of `w`.
fn delete_target(
    w: &Word,
    cwd: Option<&Path>,
    ctx: &Context,
    out: &mut Out,
    text: &str,
    span: Span,
) {
    if !w.known {
        let known_dir = w
            .prefix
            .rfind('/')
            .map(|i| &w.prefix[..=i])
            .filter(|p| !p.is_empty() && *p != "/");
        match known_dir.and_then(|d| resolve(d, cwd)) {
            Some(p)
                if p != Path::new("/")
                    && !ctx.home.starts_with(&p)
                    && writable(&p, ctx)
                    && !is_root_or_above(&p, ctx) => {}
            Some(p) if !writable(&p, ctx) && p != Path::new("/") && !ctx.home.starts_with(&p) => {}
            _ => out.add(
                FindingKind::Destructive,
                Level::Ask,
                format!(
                    "`{text}` deletes recursively a path known only when it runs (`{}`)",
                    w.text
                ),
                w.span,
            ),
        }
        return;
    }
    let written = if w.glob {
        glob_dir(&w.text)
    } else {
        w.text.as_str()
    };
    let Some(p) = resolve(written, cwd) else {
        if matches!(written, "." | ".." | "*") || written.starts_with("../") {
            out.add(
                FindingKind::Destructive,
                Level::Ask,
                format!(
                    "`{text}` deletes recursively {written} in a directory known only when it runs"
                ),
                w.span,
            );
        }
        return;
    };
    let shown = p.display();
    if p == Path::new("/") {
        out.add(
            FindingKind::Destructive,
            Level::Deny,
            format!("`{text}` deletes the whole filesystem"),
            span,
        );
    } else if ctx.home.starts_with(&p) {
        out.add(
            FindingKind::Destructive,
            Level::Deny,
            format!("`{text}` deletes the home directory {}", ctx.home.display()),
            span,
        );
    } else if is_root_or_above(&p, ctx) {
        out.add(FindingKind::Destructive, Level::Ask, format!("`{text}` deletes all of {shown}, which holds a whole writable root (the repository)"), w.span);
    } else if p.file_name().is_some_and(|n| n == ".git") {
        out.add(
            FindingKind::Destructive,
            Level::Ask,
            format!("`{text}` deletes the repository's history ({shown})"),
            w.span,
        );
    } else {
        write_target(w, cwd, ctx, out, "deletes");
    }
}

/// The path is the starting directory, a writable root, or above one.
fn is_root_or_above(p: &Path, ctx: &Context) -> bool {
    ctx.cwd.starts_with(p) || ctx.writable_roots.iter().any(|r| r.starts_with(p))
}

fn git(c: &Cmd, ctx: &Context, out: &mut Out) {
    let args = &c.argv[1..];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i].text;
        if !a.starts_with('-') {
            break;
        }
        if matches!(
            a.as_str(),
            "-c" | "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--config-env"
        ) {
            i += 1;
        }
        i += 1;
    }
    let Some(sub) = args.get(i) else { return };
    let rest = &args[i + 1..];
    let text = words_text(&c.argv);
    let mut ask = |reason: &str| {
        out.add(
            FindingKind::Destructive,
            Level::Ask,
            format!("`{text}` {reason}"),
            c.span,
        );
    };
    match sub.text.as_str() {
        "reset" if long_flag(rest, &["--hard", "--merge"]) => ask("discards uncommitted changes"),
        "clean"
            if (short_flag(rest, 'f') || long_flag(rest, &["--force"]))
                && !short_flag(rest, 'n')
                && !long_flag(rest, &["--dry-run"]) =>
        {
            ask("deletes untracked files, which git cannot restore")
        }
        "push" => {
            let forced = long_flag(
                rest,
                &[
                    "--force",
                    "--force-with-lease",
                    "--force-if-includes",
                    "--mirror",
                    "--delete",
                    "--prune",
                ],
            ) || short_flag(rest, 'f')
                || short_flag(rest, 'd')
                || operands(rest).iter().any(|w| {
                    w.text.starts_with('+') || (w.text.starts_with(':') && w.text.len() > 1)
                });
            if forced {
                ask("rewrites or deletes history on the remote, outside the sandbox");
            }
        }
        "checkout" | "restore" => {
            let whole = operands(rest)
                .iter()
                .any(|w| matches!(w.text.as_str(), "." | ":/" | "*"));
            let force =
                sub.text == "checkout" && (short_flag(rest, 'f') || long_flag(rest, &["--force"]));
            let staged_only = sub.text == "restore"
                && long_flag(rest, &["--staged"])
                && !long_flag(rest, &["--worktree"]);
            if (whole || force) && !staged_only {
                ask("discards uncommitted changes in the whole tree");
            }
        }
        "stash" if rest.first().is_some_and(|w| w.is("clear") || w.is("drop")) => {
            ask("deletes stashed changes")
        }
        "branch"
            if short_flag(rest, 'D')
                || (long_flag(rest, &["--delete"]) && long_flag(rest, &["--force"])) =>
        {
            ask("deletes a branch even if it is not merged")
        }
        "filter-branch" | "filter-repo" => ask("rewrites the repository's history"),
        "config" => {
            let ops = operands(rest);
            let reading = long_flag(
                rest,
                &["--get", "--get-all", "--list", "--get-regexp", "-l"],
            ) || ops.len() < 2;
            let key = ops
                .first()
                .map(|w| w.text.to_ascii_lowercase())
                .unwrap_or_default();
            let runs = key.starts_with("alias.")
                || key.starts_with("pager.")
                || matches!(
                    key.as_str(),
                    "core.pager"
                        | "core.sshcommand"
                        | "core.editor"
                        | "core.hookspath"
                        | "core.fsmonitor"
                        | "credential.helper"
                        | "diff.external"
                        | "gpg.program"
                        | "sequence.editor"
                );
            if !reading && runs {
                out.add(
                    FindingKind::Persistence,
                    Level::Ask,
                    format!(
                        "`{text}` sets a command that git runs later, possibly outside the sandbox"
                    ),
                    c.span,
                );
            }
        }
        "clone" | "fetch" | "pull" | "ls-remote" | "submodule" | "remote" => {
            let hosts: Vec<String> = operands(rest)
                .iter()
                .filter_map(|w| git_url_host(&w.text))
                .collect();
            network_hosts(c, ctx, out, hosts);
        }
        _ => {}
    }
    if sub.is("push") && !long_flag(rest, &["--dry-run"]) && !short_flag(rest, 'n') {
        let hosts: Vec<String> = operands(rest)
            .iter()
            .filter_map(|w| git_url_host(&w.text))
            .collect();
        // The remote is usually a name (`origin`) whose address is in .git/config: unknown here.
        match hosts.first() {
            Some(h) => publish(c, ctx, out, Some(h), "pushes commits"),
            None => publish(c, ctx, out, None, "pushes commits to a remote"),
        }
    }
}

/// Publishing leaves the sandbox when the destination is reachable (or not known).
fn publish(c: &Cmd, ctx: &Context, out: &mut Out, host: Option<&str>, what: &str) {
    let text = words_text(&c.argv);
    match host {
        Some(h) if !domain_allowed(h, ctx) => out.add(
            FindingKind::Network,
            Level::Info,
            format!(
                "`{text}` {what} on {h}, which is not in allowedDomains (the sandbox blocks it)"
            ),
            c.span,
        ),
        _ => out.add(
            FindingKind::Publish,
            Level::Ask,
            format!("`{text}` {what}, outside the sandbox"),
            c.span,
        ),
    }
}

fn network_hosts(c: &Cmd, ctx: &Context, out: &mut Out, hosts: Vec<String>) {
    for h in hosts {
        // Placeholders (`%h` in a ProxyCommand, `{}`) are no host.
        let plausible = !h.is_empty()
            && h.chars().all(|c| {
                // Internationalised names too: the proxy reads them (UTS 46), so must this.
                c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
            });
        if plausible && !domain_allowed(&h, ctx) {
            out.add(
                FindingKind::Network,
                Level::Info,
                format!("connects to {h}, which is not in allowedDomains (the sandbox blocks it)"),
                c.span,
            );
        }
    }
}

fn host_of_destination(d: &str) -> String {
    let d = d.strip_prefix("ssh://").unwrap_or(d);
    let d = d.rsplit('@').next().unwrap_or(d);
    let d = d.split(['/', ':']).next().unwrap_or(d);
    d.to_ascii_lowercase()
}

fn is_remote_path(s: &str) -> bool {
    remote_host(s).is_some()
}

/// `host:path` or `user@host:path` (scp, rsync); not `./a:b` or `/x:y`.
fn remote_host(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix("rsync://") {
        return Some(host_of_destination(rest));
    }
    let (before, _) = s.split_once(':')?;
    if before.is_empty() || before.contains('/') {
        return None;
    }
    Some(host_of_destination(before))
}

fn git_url_host(s: &str) -> Option<String> {
    if let Some((scheme, rest)) = s.split_once("://") {
        if scheme == "file" {
            return None;
        }
        return Some(host_of_destination(rest));
    }
    let (before, _) = s.split_once(':')?;
    (before.contains('@') || before.contains('.')).then(|| host_of_destination(before))
}

/// Hosts of the URL-looking operands of curl/wget.
fn url_hosts(args: &[Word]) -> Vec<String> {
    const TAKES_VALUE: &[&str] = &[
        "-o",
        "-d",
        "-H",
        "-X",
        "-u",
        "-A",
        "-e",
        "-T",
        "-F",
        "-x",
        "-b",
        "-c",
        "-w",
        "-m",
        "-K",
        "-E",
        "-r",
        "-C",
        "-D",
        "-U",
        "-O",
        "--output",
        "--data",
        "--data-raw",
        "--data-binary",
        "--data-urlencode",
        "--header",
        "--request",
        "--user",
        "--user-agent",
        "--referer",
        "--upload-file",
        "--form",
        "--proxy",
        "--cookie",
        "--cookie-jar",
        "--write-out",
        "--max-time",
        "--config",
        "--cert",
        "--range",
        "--output-document",
        "--post-data",
        "--post-file",
        "--directory-prefix",
        "-P",
        "--connect-timeout",
        "--retry",
        "--resolve",
        "--cacert",
        "--key",
        "--header-file",
        "--oauth2-bearer",
        "--json",
    ];
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a.known && a.text.starts_with('-') {
            skip = TAKES_VALUE.contains(&a.text.as_str());
            continue;
        }
        let t = if a.known {
            a.text.as_str()
        } else {
            a.prefix.as_str()
        };
        let rest = match t.split_once("://") {
            Some((_, r)) => r,
            None if looks_like_host(t) => t,
            None => continue,
        };
        let host = host_of_destination(rest.split('/').next().unwrap_or(rest));
        if !host.is_empty() {
            out.push(host);
        }
    }
    out
}

fn looks_like_host(t: &str) -> bool {
    let h = t.split('/').next().unwrap_or(t);
    let h = h.split(':').next().unwrap_or(h);
    h.contains('.')
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && h.rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
        || h == "localhost"
}

/// Whether the proxy would let a connection to `host` through (on some port: the command's
/// port is often not known here): the proxy's own host reading and pattern matching
/// (`ringfence_policy::domains`), so case, trailing dots, internationalised names and `*.`
/// patterns mean the same in both. Loopback is the sandbox's own and always reachable.
pub(crate) fn domain_allowed(host: &str, ctx: &Context) -> bool {
    let Ok(h) = normalize_host(host) else {
        return false;
    };
    match &h {
        Host::Name(n) if n == "localhost" => return true,
        Host::Ip(ip) if ip.is_loopback() => return true,
        _ => {}
    }
    matches!(
        decide_domain(&ctx.allowed_domains, &ctx.denied_domains, &h, None),
        DomainVerdict::Allowed(_)
    )
}

/// Download-and-execute and decode-and-execute through a pipe.
fn pipelines(cmds: &[Cmd], out: &mut Out) {
    for (i, c) in cmds.iter().enumerate() {
        let Some((id, stage)) = c.pipe else { continue };
        if !c.code_from_stdin || c.stdin_analysed {
            continue;
        }
        // The first command of each earlier stage (wrapped commands share the stage).
        for e in &cmds[..i] {
            let Some((eid, estage)) = e.pipe else {
                continue;
            };
            if eid != id || estage >= stage {
                continue;
            }
            let n = name(e);
            let runner = words_text(&c.argv);
            if is_downloader(n) {
                out.add(
                    FindingKind::DownloadExecute,
                    Level::Ask,
                    format!(
                        "runs code downloaded by `{}` (piped into `{runner}`)",
                        words_text(&e.argv)
                    ),
                    c.span,
                );
            } else if is_decoder(e) {
                out.add(
                    FindingKind::Obfuscation,
                    Level::Ask,
                    format!("runs code decoded by `{}` (piped into `{runner}`): it cannot be checked before it runs", words_text(&e.argv)),
                    c.span,
                );
            } else if SHELLS.contains(&name(c))
                && matches!(n, "echo" | "printf")
                && estage + 1 == stage
            {
                out.add(
                    FindingKind::Obfuscation,
                    Level::Ask,
                    format!("runs shell code that `{}` writes to the pipe; write the command itself so it can be checked", words_text(&e.argv)),
                    c.span,
                );
            }
        }
    }
}

fn is_decoder(c: &Cmd) -> bool {
    let args = &c.argv[1..];
    match name(c) {
        "base64" | "base32" | "basenc" => {
            short_flag(args, 'd') || short_flag(args, 'D') || long_flag(args, &["--decode"])
        }
        "xxd" => short_flag(args, 'r'),
        "openssl" => short_flag(args, 'd') || args.iter().any(|a| a.is("base64")),
        "uudecode" | "rev" | "gunzip" | "zcat" | "bunzip2" | "xz" | "unxz" => true,
        "printf" | "echo" => args
            .iter()
            .any(|a| a.text.contains("\\x") || a.text.contains("\\0")),
        _ => false,
    }
}

/// Names of directories whose content a build or package manager recreates, and of files that
/// are build products: deleting them asks nothing, however many files they hold.
const REGENERABLE_DIRS: &[&str] = &[
    "node_modules",
    "target",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    ".next",
    ".nuxt",
    ".turbo",
    ".parcel-cache",
    ".svelte-kit",
    ".gradle",
    ".cache",
    "coverage",
    "htmlcov",
    ".eggs",
    ".venv",
    "venv",
];
const REGENERABLE_FILES: &[&str] = &[
    "*.o",
    "*.obj",
    "*.a",
    "*.so",
    "*.dylib",
    "*.pyc",
    "*.pyo",
    "*.class",
    "*.log",
    "*.tmp",
    "*.egg-info",
];

fn regenerable_name(name: &str) -> bool {
    REGENERABLE_DIRS.contains(&name)
        || REGENERABLE_FILES
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches(name)))
        || REGENERABLE_FILES.contains(&name)
}

/// Some component of `p` below its writable root is regenerable (or `pattern` names build products).
fn regenerable(p: &Path, pattern: Option<&str>, ctx: &Context) -> bool {
    let root = ctx
        .writable_roots
        .iter()
        .filter(|r| p.starts_with(r))
        .max_by_key(|r| r.as_os_str().len());
    let below = root.and_then(|r| p.strip_prefix(r).ok()).unwrap_or(p);
    below
        .components()
        .any(|c| regenerable_name(&c.as_os_str().to_string_lossy()))
        || pattern.is_some_and(regenerable_name)
}

/// One place a command deletes or empties files.
pub(crate) struct Deletion {
    path: PathBuf,
    select: Sel,
    /// The count is an upper bound (`find` with filters, `rsync --delete`).
    upper_bound: bool,
    /// Everything under the path goes (`rm -r`, `find` without tests).
    whole: bool,
    /// The name every deleted thing has (`find -name`), for the build-product exemption.
    name: Option<String>,
}

#[derive(Clone)]
enum Sel {
    File,
    Tree,
    Glob(String, bool),
    Named(Option<String>),
}

impl Deletion {
    /// A path argument (`rm`, `truncate`) when it is known; `None` for anything else (the
    /// other checks report those).
    fn of_word(w: &Word, cwd: Option<&Path>, recursive: bool) -> Option<Deletion> {
        // `{}` (find -exec) and `{stdin}` (xargs) stand for names another command supplies;
        // the command that supplies them is counted instead.
        if !w.known || w.text.contains("{}") || w.text.contains("{stdin}") {
            return None;
        }
        let (path, select) = if w.glob {
            let dir = glob_dir(&w.text);
            let rest = if dir == "." && !w.text.starts_with("./") {
                w.text.as_str()
            } else {
                w.text.get(dir.len()..)?.trim_start_matches('/')
            };
            if rest.contains('/') || rest.is_empty() {
                return None;
            }
            (resolve(dir, cwd)?, Sel::Glob(rest.to_string(), recursive))
        } else if recursive {
            (resolve(&w.text, cwd)?, Sel::Tree)
        } else {
            (resolve(&w.text, cwd)?, Sel::File)
        };
        Some(Deletion {
            whole: matches!(select, Sel::Tree | Sel::Glob(_, true)),
            name: None,
            path,
            select,
            upper_bound: false,
        })
    }
}

/// Adds up the files of `dels` inside the workspace and asks when they are more than
/// `permissions.confirmDeletes` or cannot be counted.
fn mass_deletion(c: &Cmd, dels: Vec<Deletion>, verb: &str, ctx: &Context, out: &mut Out) {
    let threshold = ctx.permissions.confirm_deletes;
    let limit = threshold.saturating_add(1).max(10_000);
    let (mut total, mut uncounted, mut upper) = (0u64, Vec::new(), false);
    let mut places = Vec::new();
    for d in dels {
        let pattern = match &d.select {
            Sel::Glob(p, _) => Some(p.as_str()),
            Sel::Named(p) => p.as_deref().or(d.name.as_deref()),
            _ => None,
        };
        if !writable(&d.path, ctx)
            || is_scratch(&d.path)
            // `rm -r`/`find -delete` of a writable root or above already asks (`delete_target`).
            || (d.whole && is_root_or_above(&d.path, ctx))
            || d.path.file_name().is_some_and(|n| n == ".git")
            || regenerable(&d.path, pattern, ctx)
        {
            continue;
        }
        let select = match &d.select {
            Sel::File => crate::Select::File,
            Sel::Tree => crate::Select::Tree,
            Sel::Glob(p, r) => crate::Select::Glob {
                pattern: p,
                recursive: *r,
            },
            Sel::Named(p) => crate::Select::Named(p.as_deref()),
        };
        let n = match &ctx.disk {
            Some(disk) => disk.count_files(&d.path, select, limit),
            // Without the disk a plain file argument is at most one file; a non-recursive
            // glob is not counted and not asked about.
            None => match d.select {
                Sel::File => Some(1),
                Sel::Glob(_, false) => continue,
                _ => None,
            },
        };
        let shown = match pattern {
            Some(p) if matches!(d.select, Sel::Glob(..)) => format!("{}/{p}", d.path.display()),
            _ => d.path.display().to_string(),
        };
        match n {
            Some(0) => {}
            Some(n) => {
                total = total.saturating_add(n);
                upper |= d.upper_bound;
                places.push(shown);
            }
            None => uncounted.push(shown),
        }
    }
    let text = words_text(&c.argv);
    if !uncounted.is_empty() {
        out.add(
            FindingKind::Destructive,
            Level::Ask,
            format!(
                "`{text}` {verb} {} inside the workspace; the files were not counted",
                uncounted.join(", ")
            ),
            c.span,
        );
    } else if total > threshold {
        let how_many = match (total >= limit, upper) {
            (true, _) => format!("at least {total}"),
            (false, true) => format!("up to {total}"),
            (false, false) => total.to_string(),
        };
        let places = if places.len() > 3 {
            format!("{} and {} more", places[..3].join(", "), places.len() - 3)
        } else {
            places.join(", ")
        };
        out.add(
            FindingKind::Destructive,
            Level::Ask,
            format!(
                "`{text}` {verb} {how_many} files ({places}), more than permissions.confirmDeletes ({threshold})"
            ),
            c.span,
        );
    }
}

/// `find PATH... [TESTS] -delete`: what it deletes, counted by name where the only tests are
/// `-name`/`-iname` and `-type f`; an upper bound with any other test.
fn find_deletions(args: &[Word], cwd: Option<&Path>) -> Vec<Deletion> {
    let starts: Vec<&Word> = args
        .iter()
        .take_while(|a| !(a.known && (a.text.starts_with('-') || a.text == "!" || a.text == "(")))
        .collect();
    let tests = &args[starts.len()..];
    let quiet = [
        "-delete",
        "-depth",
        "-xdev",
        "-mount",
        "-print",
        "-mindepth",
        "-maxdepth",
    ];
    let mut name: Option<String> = None;
    let mut exact = true;
    let mut i = 0;
    while i < tests.len() {
        let t = &tests[i];
        match t.text.as_str() {
            "-name" | "-iname" if name.is_none() && tests.get(i + 1).is_some_and(|v| v.known) => {
                name = tests.get(i + 1).map(|v| v.text.clone());
                i += 1;
            }
            "-type" if tests.get(i + 1).is_some_and(|v| v.is("f")) => i += 1,
            "-mindepth" | "-maxdepth" => {
                exact = false;
                i += 1;
            }
            s if quiet.contains(&s) => {}
            _ => exact = false,
        }
        i += 1;
    }
    // Every match has that name unless a test is negated or an alternative.
    let alternatives = tests
        .iter()
        .any(|t| matches!(t.text.as_str(), "-o" | "-or" | "!" | "-not" | ","));
    let hint = name.clone().filter(|_| !alternatives);
    // Other tests (`-o`, `-newer`, ...) may select more or fewer: count every file.
    let name = name.filter(|_| exact);
    let starts: Vec<Word> = if starts.is_empty() {
        vec![Word::synthetic(".", true, Span { start: 0, end: 0 })]
    } else {
        starts.into_iter().cloned().collect()
    };
    starts
        .iter()
        .filter(|w| w.known && !w.glob)
        .filter_map(|w| {
            Some(Deletion {
                path: resolve(&w.text, cwd)?,
                select: Sel::Named(name.clone()),
                upper_bound: !exact,
                whole: false,
                name: hint.clone(),
            })
        })
        .collect()
}

/// Options whose value is a file used to authenticate the connection itself (an identity, a
/// client certificate), not data sent.
const AUTH_FILE_OPTIONS: &[&str] = &[
    "-i",
    "--cert",
    "--key",
    "--cacert",
    "--capath",
    "-E",
    "--certificate",
    "--private-key",
    "--ca-certificate",
    "--proxy-cert",
    "--proxy-key",
];

/// The files a command reads that look like credentials (and that the sandbox lets it read).
fn secrets_read(c: &Cmd, ctx: &Context) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let args = c.argv.get(1..).unwrap_or(&[]);
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) || !a.known {
            continue;
        }
        if AUTH_FILE_OPTIONS.contains(&a.text.as_str()) {
            skip = true;
            continue;
        }
        // `@.env` (curl -d), `file=@key.pem` (curl -F), `--data-binary=@x`, `-T.env`.
        let t = a.text.as_str();
        let t = match t.rsplit_once('@') {
            Some((before, after)) if before.is_empty() || before.ends_with('=') => after,
            _ => t.rsplit_once('=').map_or(t, |(_, v)| v),
        };
        let t = t.trim_start_matches('<');
        if t.is_empty() || t.contains("://") {
            continue;
        }
        if let Some(p) = resolve(t, c.cwd.as_deref()) {
            if is_secret(&p, ctx) {
                found.push(p);
            }
        }
    }
    found
}

fn is_secret(p: &Path, ctx: &Context) -> bool {
    let hidden = read_denied(p, ctx);
    !hidden
        && (ringfence_policy::is_secret_path(p, &ctx.home)
            || ctx.secret_files.iter().any(|s| p.starts_with(s)))
}

/// Where a command sends data over the network: `Some(hosts)` (empty when the destination is
/// not known here, as for `git push origin`), `None` for a command that sends nothing.
fn sends_to(c: &Cmd) -> Option<Vec<String>> {
    let args = c.argv.get(1..).unwrap_or(&[]);
    let n = name(c);
    match n {
        "curl" | "wget" | "http" | "https" | "xh" | "aria2c" => Some(url_hosts(args)),
        "ssh" | "sftp" | "mosh" => Some(
            operands_with_values(args, "BbcDEeFIiJLlmOopQRSWwPS")
                .first()
                .map(|w| host_of_destination(&w.text))
                .into_iter()
                .collect(),
        ),
        "scp" | "rsync" => {
            let hosts: Vec<String> = operands_with_values(args, "BbcDEeFIiJLlmOopQRSWwPS")
                .iter()
                .filter_map(|w| remote_host(&w.text))
                .collect();
            (!hosts.is_empty()).then_some(hosts)
        }
        "nc" | "ncat" | "netcat" | "telnet" | "ftp" | "socat" | "sftp-server" => Some(
            operands_with_values(args, "pswiqWIOTXx")
                .first()
                .map(|w| host_of_destination(&w.text))
                .into_iter()
                .collect(),
        ),
        "git" => {
            let mut i = 0;
            while args.get(i).is_some_and(|a| a.text.starts_with('-')) {
                if matches!(
                    args[i].text.as_str(),
                    "-c" | "-C" | "--git-dir" | "--work-tree" | "--namespace"
                ) {
                    i += 1;
                }
                i += 1;
            }
            args.get(i)?.is("push").then(|| {
                operands(args)
                    .iter()
                    .filter_map(|w| git_url_host(&w.text))
                    .collect()
            })
        }
        _ => None,
    }
}

/// A command list that reads a credential and sends data to a host the sandbox lets it reach:
/// the sandbox cannot tell the secret from the work, so a person should.
fn secrets_sent(w: &Walked, ctx: &Context, out: &mut Out) {
    let mut secrets: Vec<PathBuf> = Vec::new();
    for c in w.cmds.iter().filter(|c| !c.remote) {
        for p in secrets_read(c, ctx) {
            if !secrets.contains(&p) {
                secrets.push(p);
            }
        }
    }
    for r in w.redirects.iter().filter(|r| r.op == "<" && r.target.known) {
        if let Some(p) = resolve(&r.target.text, r.cwd.as_deref()) {
            if is_secret(&p, ctx) && !secrets.contains(&p) {
                secrets.push(p);
            }
        }
    }
    let Some(first) = secrets.first() else {
        return;
    };
    let files = if secrets.len() > 1 {
        format!("{} and {} more", first.display(), secrets.len() - 1)
    } else {
        first.display().to_string()
    };
    for c in &w.cmds {
        let Some(hosts) = sends_to(c) else { continue };
        let reachable: Vec<&String> = hosts.iter().filter(|h| domain_allowed(h, ctx)).collect();
        let to = match (hosts.is_empty(), reachable.first()) {
            (true, _) => "a destination not known before it runs".to_string(),
            (false, Some(h)) => h.to_string(),
            // Every destination is blocked by the sandbox.
            (false, None) => continue,
        };
        out.add(
            FindingKind::SecretSent,
            Level::Ask,
            format!(
                "reads {files}, which looks like a credential, and `{}` sends data to {to}",
                words_text(&c.argv)
            ),
            c.span,
        );
        return;
    }
}
