//! `ringfence`: run a command inside OS-level boundaries it cannot leave.
//! The binary is glue: command-line parsing, the srt-compatible entry point, and output.

// System calls live in ringfence-linux, behind safe functions.
#![forbid(unsafe_code)]

mod activity;
mod check;
mod connect;
mod doctor;
mod mcp;
mod oci_hook;
mod proxy_cmd;
mod srt;
mod timeline;
mod watch;

use ringfence_runtime::{control, netrun, overlay, prepare, runs};

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ringfence_policy::CliRules;
use ringfence_runtime::{Outcome, RunOutcome, Sandbox};

use prepare::{Prepared, Sources};

/// Our own failures (bad policy, missing kernel feature, setup failure).
pub const EXIT_OWN_ERROR: u8 = 125;

#[derive(Parser)]
#[command(
    name = "ringfence",
    version,
    about = "Run a command inside OS-level boundaries it and its children cannot leave"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a sandbox: ringfence run [OPTIONS] -- COMMAND [ARGS...] | -c 'SHELL STRING'
    Run(RunArgs),
    /// Decide whether a shell string may run under the policy's permissions: exit 0 allow,
    /// 1 ask, 2 deny. ringfence check [-s FILE] [--json] -- 'COMMAND STRING' | -c 'COMMAND STRING'
    Check(check::CheckArgs),
    /// Show the kernel features found and what ringfence will do on this machine.
    Doctor,
    /// The host side of a VM run (the command of its host-side sandbox).
    #[command(name = "__vm-host", hide = true)]
    VmHost { job: String },
    /// PID 1 of a VM run's guest.
    #[command(name = "__vm-guest", hide = true)]
    VmGuest,
    /// The createRuntime hook of an OCI bundle exported with --gateway.
    #[command(name = "__oci-gateway", hide = true)]
    OciGateway {
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
    },
    /// Print the JSON Schema of the policy file (or, with --events, of activity log events).
    Schema {
        /// The schema of the activity log's events instead.
        #[arg(long)]
        events: bool,
    },
    /// Print the merged policy, the layer each rule came from, and the mount plan it produces.
    Explain(PolicyArgs),
    /// A Model Context Protocol server on stdin/stdout: tools `run`, `read_file`,
    /// `write_file`, `list_dir` and `violations`, each call in a fresh sandbox of the policy.
    Mcp(PolicyArgs),
    /// List runs (newest first), show a run's activity log, or verify its hash chain.
    Log(LogArgs),
    /// List the sandboxes running now.
    Ps,
    /// End a running sandbox (SIGTERM to its command, SIGKILL after 5 seconds).
    Stop {
        /// The run's name.
        run: String,
    },
    /// Freeze every process of a running sandbox.
    Pause {
        /// The run's name.
        run: String,
    },
    /// Thaw a paused sandbox.
    Resume {
        /// The run's name.
        run: String,
    },
    /// Full-screen view of the live sandboxes and their events; pause or stop one with a key.
    Watch,
    /// Tunnel stdin/stdout to HOST:PORT through the egress proxy (ssh's ProxyCommand in the
    /// sandbox).
    Connect {
        host: String,
        port: u16,
        /// The proxy's address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3128")]
        proxy: String,
    },
    /// Run the egress proxy on its own: ringfence proxy [-s FILE] --listen ADDR
    Proxy(proxy_cmd::ProxyArgs),
    /// Export the policy for another engine: ringfence export oci|kubernetes ... OUT/
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Show what an overlay run changed: a unified diff for text, sizes for binary files.
    Diff {
        /// The run's name.
        run: String,
        /// Only changes at or under these paths.
        paths: Vec<PathBuf>,
        /// One line per changed path.
        #[arg(long)]
        stat: bool,
        /// The changes as JSON.
        #[arg(long, conflicts_with = "stat")]
        json: bool,
    },
    /// Apply an overlay run's changes to the real folders (all, or those at or under PATHs).
    Apply {
        /// The run's name.
        run: String,
        /// Only changes at or under these paths.
        paths: Vec<PathBuf>,
        /// Answer confirmations for large deletions (where workspace.allowYes permits).
        #[arg(long)]
        yes: bool,
        /// Also apply this protected path (repeatable; always confirmed on the terminal).
        #[arg(long = "include-protected", value_name = "PATH")]
        include_protected: Vec<PathBuf>,
    },
    /// Restore what an apply replaced or deleted.
    Undo {
        /// The run's name.
        run: String,
    },
    /// Remove an overlay run's layer without applying it.
    Discard {
        /// The run's name.
        run: String,
    },
}

#[derive(Subcommand)]
enum ExportFormat {
    /// An OCI runtime bundle (OUT/config.json) for crun, runc or runsc.
    Oci {
        /// The bundle's root file system (mounted read-only).
        #[arg(long, value_name = "DIR")]
        rootfs: PathBuf,
        /// Bind this host directory read-only at the same path (repeatable), e.g. /usr.
        #[arg(long = "host-read-only", value_name = "PATH")]
        host_read_only: Vec<PathBuf>,
        /// Export even where the bundle is weaker than `ringfence run` (each such gap is named).
        #[arg(long)]
        allow_weaker: bool,
        /// Carry the bundle's egress to this `ringfence proxy` gateway (HOST:PORT as the host
        /// reaches it), through a createRuntime hook; otherwise it has no egress at all.
        #[arg(long, value_name = "HOST:PORT")]
        gateway: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// The bundle's directory.
        out: PathBuf,
        /// The command (default /bin/sh).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Kubernetes objects (OUT/kubernetes.yaml) and the seccomp profile for the nodes.
    Kubernetes {
        /// Policy file (also the gateway's policy, in a ConfigMap).
        #[arg(short = 's', long = "settings", value_name = "FILE")]
        settings: PathBuf,
        /// The sandbox Pod's image.
        #[arg(long, value_name = "IMG")]
        image: String,
        /// An image with the ringfence binary on its PATH, for the gateway.
        #[arg(long = "gateway-image", value_name = "IMG", default_value = concat!("ringfence:", env!("CARGO_PKG_VERSION")))]
        gateway_image: String,
        /// The Pod's RuntimeClass (one of that name must exist in the cluster).
        #[arg(long = "runtime-class", value_name = "CLASS")]
        runtime_class: Option<RuntimeClassArg>,
        /// The objects' base name: the Pod NAME, NAME-gateway, NAME-policy, ...
        #[arg(long, value_name = "NAME", default_value = "ringfence")]
        name: String,
        /// The objects' namespace (default: kubectl's).
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Export even where the objects are weaker than `ringfence run` (each such gap is named).
        #[arg(long)]
        allow_weaker: bool,
        /// The output directory.
        out: PathBuf,
        /// The command (default: the image's).
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RuntimeClassArg {
    Gvisor,
    Kata,
}

#[derive(Args)]
struct LogArgs {
    #[command(subcommand)]
    action: Option<LogAction>,
}

#[derive(Subcommand)]
enum LogAction {
    /// Print a run's events.
    Show {
        /// The run's name.
        run: String,
        /// Only events of this kind: net, fs, exec, run or ask (a prefix of the kind).
        #[arg(long)]
        kind: Option<String>,
        /// JSON lines instead of a readable timeline.
        #[arg(long)]
        json: bool,
        /// Colour the timeline: auto (a terminal, and NO_COLOR unset), always or never.
        #[arg(long, value_enum, default_value = "auto")]
        color: activity::ColorChoice,
    },
    /// Check a run's log: exit 0 when intact, 1 naming the first broken line.
    Verify {
        /// The run's name.
        run: String,
    },
    /// Print a live run's events as they happen (the newest live run when none is named).
    Follow {
        /// The run's name.
        run: Option<String>,
        /// Only events of this kind: net, fs, exec, run or ask (a prefix of the kind).
        #[arg(long)]
        kind: Option<String>,
        /// JSON lines instead of a readable timeline.
        #[arg(long)]
        json: bool,
        /// Colour the timeline: auto (a terminal, and NO_COLOR unset), always or never.
        #[arg(long, value_enum, default_value = "auto")]
        color: activity::ColorChoice,
    },
}

#[derive(Args, Clone, Default)]
pub struct PolicyArgs {
    /// Policy file (replaces the user settings layer).
    #[arg(short = 's', long = "settings", value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Allow writing PATH (repeatable).
    #[arg(long = "allow-write", value_name = "PATH")]
    allow_write: Vec<String>,
    /// Deny writing PATH, even inside an allowed one (repeatable).
    #[arg(long = "deny-write", value_name = "PATH")]
    deny_write: Vec<String>,
    /// Deny reading PATH (repeatable).
    #[arg(long = "deny-read", value_name = "PATH")]
    deny_read: Vec<String>,
    /// Re-allow reading PATH inside a denied one (repeatable).
    #[arg(long = "allow-read", value_name = "PATH")]
    allow_read: Vec<String>,
}

impl PolicyArgs {
    fn sources(&self) -> Sources {
        Sources {
            settings: self.settings.clone(),
            cli: CliRules {
                allow_write: self.allow_write.clone(),
                deny_write: self.deny_write.clone(),
                deny_read: self.deny_read.clone(),
                allow_read: self.allow_read.clone(),
                ask_fs: false,
            },
            srt: false,
            cwd: None,
            clear_requests: false,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print the effective policy and the mount plan to stderr.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
    /// Ask before refusing a write outside the writable roots (also `filesystem.ask: true`);
    /// an approved one is made on the host.
    #[arg(long = "ask-fs")]
    ask_fs: bool,
    /// Writes go to a private copy-on-write layer, reviewed afterwards with `ringfence diff`,
    /// `apply` or `discard` (also `workspace.mode: "overlay"`).
    #[arg(long)]
    overlay: bool,
    /// Capture every TCP connection and DNS query of the sandbox (also for programs that
    /// ignore proxy variables) and decide it by the network policy (also
    /// `network.transparent: true`). Needs /dev/net/tun.
    #[arg(long)]
    transparent: bool,
    /// The boundary around the command: "namespace" (default) or "vm", a virtual machine with
    /// a kernel of its own and the namespace sandbox inside it (also `"isolation": "vm"`).
    #[arg(long, value_name = "MODE", value_parser = ["namespace", "vm"])]
    isolation: Option<String>,
    /// How the VM is accelerated: "kvm" (default; refused where /dev/kvm cannot boot the guest)
    /// or "tcg" (QEMU's binary translation, no hardware virtualization, many times slower).
    #[arg(long = "vm-accel", value_name = "ACCEL", value_parser = ["kvm", "tcg"], default_value = "kvm")]
    vm_accel: String,
    /// The run's name (unique on this machine); generated when absent.
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
    /// Write the activity log here instead of the state directory.
    #[arg(long = "log", value_name = "FILE")]
    log: Option<PathBuf>,
    /// After the command, append what was denied to stderr as srt-compatible
    /// <sandbox_violations> lines (for agents that show stderr to the model).
    #[arg(long = "violations-report", value_name = "WHERE", value_parser = ["stderr"])]
    violations_report: Option<String>,
    /// Ask questions about unlisted hosts and take live policy updates as JSON lines on this
    /// open file descriptor (a socket or a pair of pipes joined as one fd).
    #[arg(long = "control-fd", value_name = "N")]
    control_fd: Option<i32>,
    /// Run this string with /bin/bash -c (or /bin/sh -c where bash is missing).
    #[arg(short = 'c', value_name = "SHELL STRING", conflicts_with = "command")]
    shell: Option<String>,
    /// Check the -c string against the policy's permissions first: deny refuses, ask asks on
    /// the terminal (refused without one).
    #[arg(long = "check", requires = "shell")]
    check: bool,
    /// The command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// What `run` needs, whichever command line it came from.
pub struct RunRequest {
    pub sources: Sources,
    pub debug: bool,
    pub name: Option<String>,
    pub log: Option<PathBuf>,
    pub violations_to_stderr: bool,
    pub control_fd: Option<i32>,
    pub overlay: bool,
    pub transparent: bool,
    pub argv: Vec<Vec<u8>>,
    /// How a VM run would be made (`--isolation`, `--vm-accel`, the arguments for the guest).
    pub vm: Option<ringfence_runtime::VmRequest>,
}

pub use ringfence_runtime::shell_argv;

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f.to_os_string()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("srt")) {
        return finish(srt::main());
    }
    // A usage error is our own error (125), never a status the command or `check` could give.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_OWN_ERROR } else { 0 });
        }
    };
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Proxy(_) | Command::Mcp(_)
    ) {
        // Printing commands end quietly when their reader goes away (`doctor | head`), like
        // other command-line tools; `run` keeps SIGPIPE ignored so that a closed stdout never
        // kills the supervisor of a running sandbox.
        ringfence_linux::process::default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(args) => {
            let argv = match (&args.shell, args.command.is_empty()) {
                (Some(s), _) => shell_argv(s),
                (None, false) => args.command.iter().map(|a| a.as_bytes().to_vec()).collect(),
                (None, true) => {
                    eprintln!(
                        "ringfence: no command given; use `ringfence run -- COMMAND [ARGS...]` or `ringfence run -c 'SHELL STRING'`"
                    );
                    return ExitCode::from(EXIT_OWN_ERROR);
                }
            };
            if let Some(fd) = args.control_fd {
                // Checked before anything reads or writes it (`--check` may ask on it).
                if let Err(e) = netrun::check_fd(fd) {
                    return finish(Err(e));
                }
            }
            if let (true, Some(script)) = (args.check, &args.shell) {
                if let Err(e) = check::before_run(&args.policy.sources(), script, args.control_fd) {
                    return finish(Err(e));
                }
            }
            let mut sources = args.policy.sources();
            sources.cli.ask_fs = args.ask_fs;
            run(RunRequest {
                sources,
                debug: args.debug,
                name: args.name,
                log: args.log,
                violations_to_stderr: args.violations_report.is_some(),
                control_fd: args.control_fd,
                overlay: args.overlay,
                transparent: args.transparent,
                argv,
                vm: Some(ringfence_runtime::VmRequest {
                    forced: args.isolation.as_deref() == Some("vm"),
                    accel: if args.vm_accel == "tcg" {
                        ringfence_runtime::vm::Accel::Tcg
                    } else {
                        ringfence_runtime::vm::Accel::Kvm
                    },
                    run_args: guest_run_args(std::env::args().collect()),
                }),
            })
        }
        Command::Check(args) => check::main(args),
        Command::Doctor => doctor::main().map(|()| 0),
        Command::VmHost { job } => ringfence_runtime::vm::host::main(&job),
        Command::VmGuest => ringfence_runtime::vm::guest::main(),
        Command::OciGateway { to } => oci_hook::main(&to),
        Command::Schema { events } => {
            let schema = if events {
                ringfence_audit::events_schema()
            } else {
                ringfence_policy::schema()
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Explain(p) => explain(&p.sources()).map(|()| 0),
        Command::Export { format } => export(format).map(|()| 0),
        Command::Mcp(p) => mcp::main(p.sources()),
        Command::Log(l) => match l.action {
            None => activity::list().map(|()| 0),
            Some(LogAction::Show {
                run,
                kind,
                json,
                color,
            }) => activity::show(&run, kind.as_deref(), json, color).map(|()| 0),
            Some(LogAction::Verify { run }) => activity::verify(&run),
            Some(LogAction::Follow {
                run,
                kind,
                json,
                color,
            }) => activity::follow(run.as_deref(), kind.as_deref(), json, color).map(|()| 0),
        },
        Command::Ps => control::ps().map(|t| {
            print!("{t}");
            0
        }),
        Command::Watch => watch::main().map(|()| 0),
        Command::Stop { run } => control::stop(&run).map(said),
        Command::Pause { run } => control::pause(&run, true).map(said),
        Command::Resume { run } => control::pause(&run, false).map(said),
        Command::Connect { host, port, proxy } => connect::connect(&host, port, &proxy),
        Command::Proxy(args) => proxy_cmd::main(args),
        Command::Diff {
            run,
            paths,
            stat,
            json,
        } => overlay::diff::diff(&run, &overlay::diff::DiffOptions { paths, stat, json }),
        Command::Apply {
            run,
            paths,
            yes,
            include_protected,
        } => overlay::apply::apply(
            &run,
            &overlay::apply::ApplyOptions {
                paths,
                yes,
                include_protected,
            },
        ),
        Command::Undo { run } => overlay::apply::undo(&run),
        Command::Discard { run } => overlay::discard(&run),
    };
    finish(result)
}

/// Prints a control command's line; exit status 0.
fn said(line: String) -> i32 {
    println!("{line}");
    0
}

fn finish(result: Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("ringfence: {e:#}");
            ExitCode::from(EXIT_OWN_ERROR)
        }
    }
}

fn print_policy(p: &Prepared, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let pol = &p.policy;
    writeln!(out, "settings files:")?;
    if pol.files.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for (layer, f) in &pol.files {
        writeln!(out, "  {layer:<12} {}", f.display())?;
    }
    for (title, rules) in [
        ("denyRead", &pol.deny_read),
        ("defaultDenyRead", &pol.default_deny_read),
        ("allowRead", &pol.allow_read),
        ("allowWrite", &pol.allow_write),
        ("denyWrite", &pol.deny_write),
    ] {
        writeln!(out, "{title}:")?;
        for r in rules.iter() {
            writeln!(
                out,
                "  {:<40} from {} ({}){}",
                r.path.display(),
                r.layer,
                r.origin,
                if r.pattern != r.path.to_string_lossy() {
                    format!(", written {}", r.pattern)
                } else {
                    String::new()
                }
            )?;
        }
    }
    writeln!(out, "allowGitConfig: {}", pol.allow_git_config)?;
    check::print_permissions(&pol.permissions, out)?;
    let ws = &pol.workspace;
    writeln!(
        out,
        "workspace: {} (confirmDeletes {}, allowYes {}){}",
        if ws.overlay { "overlay" } else { "direct" },
        ws.confirm_deletes,
        ws.allow_yes,
        if ws.overlay {
            "; writable roots become copy-on-write overlays at run time"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "unix sockets: {}",
        if pol.allow_all_unix_sockets {
            "allowed (network.allowAllUnixSockets)"
        } else {
            "blocked"
        }
    )?;
    writeln!(
        out,
        "nested user namespaces: {}",
        if pol.allow_nested_user_namespaces {
            "allowed (allowNestedUserNamespaces; mounts stay refused inside them)"
        } else {
            "refused"
        }
    )?;
    writeln!(
        out,
        "network: none (an empty network namespace with its own loopback)"
    )?;
    netrun::print_egress(pol, out)?;
    let l = &pol.limits;
    writeln!(out, "limits enforced by: {}", p.mechanism.describe())?;
    writeln!(
        out,
        "limits: pids {}, memory {}, openFiles {}, tmpSize {}, cpuSeconds {}, wallSeconds {}, fileSize {}",
        l.pids,
        ringfence_policy::format_size(l.memory),
        l.open_files,
        ringfence_policy::format_size(l.tmp_size),
        l.cpu_seconds.map_or("none".into(), |v| v.to_string()),
        l.wall_seconds.map_or("none".into(), |v| v.to_string()),
        l.file_size.map_or("none".into(), ringfence_policy::format_size),
    )?;
    writeln!(
        out,
        "environment removed: {}",
        if p.env_removed.is_empty() {
            "(nothing)".to_string()
        } else {
            p.env_removed.join(", ")
        }
    )?;
    if p.caches.env.is_empty() {
        writeln!(
            out,
            "package caches: the host's (read-only unless writable by policy)"
        )?;
    } else {
        writeln!(
            out,
            "package caches: the sandbox's own in {} ({})",
            p.caches.root.display(),
            p.caches
                .env
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(
        out,
        "protected entries found: {} (scanned {} directories, {} read again, {} entries in {} ms)",
        p.protected.len(),
        p.scan.dirs,
        p.scan.reread,
        p.scan.entries,
        p.scan.micros / 1000
    )?;
    match &p.guard {
        Some(g) => writeln!(
            out,
            "creation guard: on ({} names, {} nested names, {} paths not yet created) in {} writable roots",
            g.protected.names().len(),
            g.protected.nested().len(),
            g.paths.len(),
            g.roots.len()
        )?,
        None => writeln!(out, "creation guard: off (nothing is writable but private scratch)")?,
    }
    for n in &p.not_yet {
        writeln!(out, "  may not be created: {}", n.display())?;
    }
    for n in &p.deny_not_yet {
        writeln!(out, "  may not be created (denyWrite): {}", n.display())?;
    }
    writeln!(out, "mount plan:")?;
    write!(out, "{}", p.plan)?;
    for n in &pol.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

fn explain(sources: &Sources) -> Result<()> {
    let p = prepare::prepare(sources)?;
    print_policy(&p, &mut std::io::stdout().lock()).context("writing to stdout")
}

/// `ringfence run`'s arguments for the run inside a VM's guest: the same policy sources and
/// command, without what only the host side has (the isolation options, the control fd, the
/// log file, the run's name, `--check`, which was answered here).
fn guest_run_args(all: Vec<String>) -> Vec<String> {
    let Some(start) = all.iter().position(|a| a == "run") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut it = all.into_iter().skip(start + 1);
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a);
            out.extend(it);
            break;
        }
        let with_value = [
            "--isolation",
            "--vm-accel",
            "--control-fd",
            "--log",
            "--name",
        ];
        if with_value.contains(&a.as_str()) {
            it.next();
            continue;
        }
        if with_value.iter().any(|k| a.starts_with(&format!("{k}="))) || a == "--check" {
            continue;
        }
        out.push(a);
    }
    out
}

pub fn run(req: RunRequest) -> Result<i32> {
    ringfence_linux::timing::init();
    let control_fd = match req.control_fd {
        Some(fd) => Some(netrun::take_fd(fd)?),
        None => None,
    };
    let debug = req.debug;
    let mut builder = Sandbox::builder(req.sources)
        .command(req.argv.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .overlay(req.overlay)
        .transparent(req.transparent)
        .terminal(true)
        .on_prepared(move |p| {
            if debug {
                let _ = print_policy(p, &mut std::io::stderr().lock());
            }
        });
    if let Some(n) = &req.name {
        builder = builder.name(n);
    }
    if let Some(l) = req.log {
        builder = builder.log_file(l);
    }
    if let Some(fd) = control_fd {
        builder = builder.control_fd(fd);
    }
    if let Some(v) = req.vm {
        builder = builder.vm(v);
    }
    let running = builder.spawn()?;
    if !debug {
        for n in &running.notes {
            eprintln!("ringfence: note: {n}");
        }
    }
    let outcome = running.wait()?;
    ringfence_linux::timing::report("supervisor");
    report(&outcome, req.violations_to_stderr);
    if outcome.status == Outcome::Lost {
        bail!("the sandbox ended without reporting the command's status");
    }
    Ok(outcome.code())
}

/// What the run refused and how it ended, on stderr after the command.
fn report(o: &RunOutcome, violations_to_stderr: bool) {
    let run_name = &o.name;
    let net_denied = &o.net_denied;
    if !net_denied.is_empty() {
        let mut hosts: Vec<String> = Vec::new();
        for d in net_denied {
            let h = format!("{}:{}", d.host.escape_debug(), d.port);
            if !hosts.contains(&h) && hosts.len() < 5 {
                hosts.push(h);
            }
        }
        eprintln!(
            "ringfence: denied {} network connection{} ({}{}); see `ringfence log show {run_name} --kind net`",
            net_denied.len(),
            if net_denied.len() == 1 { "" } else { "s" },
            hosts.join(", "),
            if net_denied.len() > hosts.len() { ", ..." } else { "" }
        );
    }
    let refused = &o.refused;
    if refused.refused > 0 {
        let examples: Vec<String> = refused
            .examples
            .iter()
            // Paths come from the sandbox: escape control characters before they reach the
            // user's terminal.
            .map(|p| p.display().to_string().escape_debug().to_string())
            .collect();
        eprintln!(
            "ringfence: refused to create {} protected path{} ({}{}); protected names cannot be created inside writable roots; see `ringfence log show {run_name}`",
            refused.refused,
            if refused.refused == 1 { "" } else { "s" },
            examples.join(", "),
            if refused.refused as usize > examples.len() { ", ..." } else { "" }
        );
    }
    if refused.sockets > 0 {
        let examples: Vec<String> = refused
            .socket_examples
            .iter()
            .map(|p| p.display().to_string().escape_debug().to_string())
            .collect();
        eprintln!(
            "ringfence: refused {} connection{} to unix sockets not in network.allowUnixSockets ({}{}); see `ringfence log show {run_name} --kind fs`",
            refused.sockets,
            if refused.sockets == 1 { "" } else { "s" },
            examples.join(", "),
            if refused.sockets as usize > examples.len() { ", ..." } else { "" }
        );
    }
    if refused.read_only > 0 {
        eprintln!(
            "ringfence: refused {} write{} outside the writable roots (read-only); see `ringfence log show {run_name} --kind fs`",
            refused.read_only,
            if refused.read_only == 1 { "" } else { "s" },
        );
    }
    match &o.overlay {
        Some(Ok(text)) => eprint!("{text}"),
        Some(Err(e)) => eprintln!("ringfence: {e}"),
        None => {}
    }
    if violations_to_stderr && !o.violations.is_empty() {
        let mut block = String::from("\n<sandbox_violations>\n");
        for v in &o.violations {
            block.push_str(v);
            block.push('\n');
        }
        if o.unreported > 0 {
            block.push_str(&format!(
                "... and {} more (ringfence log show {run_name})\n",
                o.unreported
            ));
        }
        block.push_str("</sandbox_violations>");
        eprintln!("{block}");
    }
    match o.status {
        Outcome::TimedOut => eprintln!(
            "ringfence: limits.wallSeconds ({} s) reached; the sandbox was killed",
            o.wall_seconds.unwrap_or(0)
        ),
        Outcome::MemoryLimit(used) => {
            let limit = o.memory_limit;
            if used >= limit / 16 * 15 {
                eprintln!(
                    "ringfence: memory limit of {} reached (limits.memory; the sandbox used {}); the sandbox was stopped",
                    ringfence_policy::format_size(limit),
                    format_bytes(used)
                )
            } else {
                // Killed below its own limit: a limit of the cgroup ringfence runs in.
                eprintln!(
                    "ringfence: memory limit reached: the kernel killed a process of the sandbox for memory at {} used, below limits.memory ({}), so the limit of a cgroup ringfence runs in; the sandbox was stopped",
                    format_bytes(used),
                    ringfence_policy::format_size(limit)
                )
            }
        }
        _ => {}
    }
}

/// A byte count for people: "312 MiB".
fn format_bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 30 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n => format!("{} KiB", n >> 10),
    }
}

/// `ringfence export`: the policy compiled as for a run, then written for another engine; every
/// gap is printed, and a weakening one refuses without --allow-weaker.
fn export(format: ExportFormat) -> anyhow::Result<()> {
    use ringfence_runtime::export::{self, oci};
    let (rootfs, host_read_only, allow_weaker, gateway, policy, out, command) = match format {
        ExportFormat::Oci {
            rootfs,
            host_read_only,
            allow_weaker,
            gateway,
            policy,
            out,
            command,
        } => (
            rootfs,
            host_read_only,
            allow_weaker,
            gateway,
            policy,
            out,
            command,
        ),
        ExportFormat::Kubernetes {
            settings,
            image,
            gateway_image,
            runtime_class,
            name,
            namespace,
            allow_weaker,
            out,
            command,
        } => {
            return export_kubernetes(
                export::kubernetes::KubeOptions {
                    name,
                    namespace,
                    image,
                    gateway_image,
                    runtime_class: runtime_class.map(|r| match r {
                        RuntimeClassArg::Gvisor => export::kubernetes::RuntimeClass::Gvisor,
                        RuntimeClassArg::Kata => export::kubernetes::RuntimeClass::Kata,
                    }),
                    args: command,
                    policy_text: String::new(),
                    policy_file: settings,
                },
                allow_weaker,
                &out,
            )
        }
    };
    let gateway = match gateway {
        None => None,
        Some(to) => {
            oci_hook::check_address(&to).map_err(|e| anyhow::anyhow!("--gateway {to}: {e}"))?;
            let hook = std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .map_err(|e| anyhow::anyhow!("--gateway: finding ringfence's own binary: {e}"))?;
            Some(oci::GatewayPath { to, hook })
        }
    };
    let prepared = ringfence_runtime::prepare::prepare(&policy.sources())?;
    std::fs::create_dir_all(&out)?;
    let out = std::fs::canonicalize(&out)?;
    let opts = oci::OciOptions {
        rootfs,
        args: command,
        host_read_only,
        empty_file: out.join("empty"),
        gateway,
    };
    let bundle = oci::bundle(&prepared, &opts)?;
    export::check_gaps(&bundle.gaps, allow_weaker)?;
    let file = oci::write(&out, &bundle)?;
    println!("wrote {}", file.display());
    println!("not enforced by the bundle:");
    print_gaps(&bundle.gaps);
    Ok(())
}

fn print_gaps(gaps: &[ringfence_runtime::export::Gap]) {
    for g in gaps {
        let mark = if g.weaker {
            " (weaker, accepted by --allow-weaker)"
        } else {
            ""
        };
        println!("  - {}: {}{mark}", g.feature, g.instead);
    }
}

/// `ringfence export kubernetes`: the objects and the seccomp profile, written into `out`.
fn export_kubernetes(
    mut opts: ringfence_runtime::export::kubernetes::KubeOptions,
    allow_weaker: bool,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use ringfence_runtime::export::{self, kubernetes};
    let file = std::fs::canonicalize(&opts.policy_file)
        .with_context(|| format!("-s {}", opts.policy_file.display()))?;
    opts.policy_text =
        std::fs::read_to_string(&file).with_context(|| format!("reading -s {}", file.display()))?;
    opts.policy_file = file.clone();
    let prepared = ringfence_runtime::prepare::prepare(&ringfence_runtime::prepare::Sources {
        settings: Some(file),
        ..Default::default()
    })?;
    let objects = kubernetes::objects(&prepared, &opts)?;
    export::check_gaps(&objects.gaps, allow_weaker)?;
    let (yaml, profile) = kubernetes::write(out, &objects)?;
    println!("wrote {} and {}", yaml.display(), profile.display());
    println!(
        "install {} on every node as /var/lib/kubelet/seccomp/{} (without it the Pod does not start), then: kubectl apply -f {}",
        profile.display(),
        objects.profile_name,
        yaml.display()
    );
    println!("not enforced by the objects:");
    print_gaps(&objects.gaps);
    Ok(())
}
