//! Commands that run other commands: which of their arguments is that command (`sudo -u x CMD`,
//! `timeout 5 CMD`, `find -exec CMD ;`, `xargs CMD`), or a shell string (`bash -c STR`,
//! `ssh host STR`, `git -c core.pager=STR`). Option tables follow each program's manual;
//! an option that takes a value must be listed, or its value would be taken for the command.

use crate::walk::Word;
use crate::Span;

pub(crate) enum Unwrap {
    /// The wrapper runs this command and does nothing of its own worth a rule.
    Run(Vec<Word>),
    /// The command runs this one as well as doing its own work (`find -exec`).
    Also(Vec<Word>),
    /// A shell string. `own`: the command has work of its own besides (`git -c core.pager=`).
    Script {
        word: Word,
        remote: bool,
        own: bool,
    },
    /// `eval WORDS`: the words joined by spaces are a shell string.
    Eval(Vec<Word>),
    /// Reads code from standard input; `shell`: it is a shell (so a here-document is a script).
    Stdin {
        shell: bool,
    },
    /// Runs a script file (checked only when the file is a process substitution).
    ScriptFile(Word),
    Incomplete(String),
}

/// Index of the first operand: skips options (`-x`, `--long`, `-u VALUE`, `--user=V`) and `--`.
/// `short`: short options that take a value; `long`: long options that take a value.
fn operands(args: &[Word], short: &str, long: &[&str]) -> usize {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i].text;
        if a == "--" {
            return i + 1;
        }
        if !a.starts_with('-') || a == "-" {
            return i;
        }
        if let Some(l) = a.strip_prefix("--") {
            if !l.contains('=') && long.contains(&l) {
                i += 1;
            }
        } else {
            let flags: Vec<char> = a.chars().skip(1).collect();
            for (k, c) in flags.iter().enumerate() {
                if short.contains(*c) {
                    if k == flags.len() - 1 {
                        i += 1;
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    args.len()
}

fn has_flag(args: &[Word], short: char, long: &str) -> bool {
    args.iter().any(|w| {
        let a = &w.text;
        (a.starts_with('-') && !a.starts_with("--") && a.contains(short))
            || (!long.is_empty() && a == long)
    })
}

fn skip_assignments(args: &[Word]) -> &[Word] {
    let n = args
        .iter()
        .take_while(|w| {
            w.known
                && w.text.split_once('=').is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        })
        .count();
    &args[n..]
}

fn run(rest: &[Word]) -> Vec<Unwrap> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![Unwrap::Run(rest.to_vec())]
    }
}

fn join(words: &[Word], span: Span) -> Word {
    let known = words.iter().all(|w| w.known);
    let text = words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut w = Word::synthetic(&text, known, span);
    if words.len() == 1 {
        w.exact = words[0].exact;
        w.span = words[0].span;
    } else if let (Some(a), Some(b)) = (words.first(), words.last()) {
        w.span = Span {
            start: a.span.start,
            end: b.span.end,
        };
    }
    w.subst = words
        .iter()
        .map(|w| w.subst.clone())
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
        .unwrap_or(0..0);
    w
}

pub(crate) const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish"];

/// `input`: what the command reads on standard input, when known to be paths below a
/// directory (`find DIR ... | xargs CMD`): that directory.
pub(crate) fn unwrap(name: &str, args: &[Word], span: Span, input: Option<&str>) -> Vec<Unwrap> {
    match name {
        "sudo" => {
            let i = operands(
                args,
                "ugCDprtTUh",
                &[
                    "user",
                    "group",
                    "chdir",
                    "prompt",
                    "role",
                    "type",
                    "host",
                    "close-from",
                    "other-user",
                    "command-timeout",
                ],
            );
            run(skip_assignments(&args[i..]))
        }
        "doas" => run(&args[operands(args, "uC", &[])..]),
        "pkexec" => run(&args[operands(args, "", &["user"])..]),
        "su" | "runuser" => {
            // su [options] [-] [user [args]]; the command is `-c STRING`.
            let mut out = Vec::new();
            let mut i = 0;
            while i < args.len() {
                let a = &args[i].text;
                if a == "-c" || a == "--command" || a == "--session-command" {
                    if let Some(w) = args.get(i + 1) {
                        out.push(Unwrap::Script {
                            word: w.clone(),
                            remote: false,
                            own: false,
                        });
                    }
                    i += 1;
                } else if let Some(v) = a.strip_prefix("--command=") {
                    let mut w = args[i].clone();
                    w.text = v.to_string();
                    w.exact = None;
                    out.push(Unwrap::Script {
                        word: w,
                        remote: false,
                        own: false,
                    });
                } else if name == "runuser" && (a == "-u" || a == "--user") {
                    return run(&args[(i + 2).min(args.len())..]);
                }
                i += 1;
            }
            out
        }
        "env" => {
            let mut i = 0;
            while i < args.len() {
                let a = &args[i].text;
                if a == "--" {
                    i += 1;
                    break;
                }
                if a == "-S" || a == "--split-string" {
                    // `env -S 'cmd args'` splits the string into words.
                    return match args.get(i + 1) {
                        Some(w) => vec![Unwrap::Script {
                            word: join(&args[i + 1..], w.span),
                            remote: false,
                            own: false,
                        }],
                        None => Vec::new(),
                    };
                }
                if let Some(v) = a
                    .strip_prefix("--split-string=")
                    .or_else(|| a.strip_prefix("-S").filter(|v| !v.is_empty()))
                {
                    let mut w = args[i].clone();
                    w.text = v.to_string();
                    w.exact = None;
                    let mut all = vec![w];
                    all.extend_from_slice(&args[i + 1..]);
                    return vec![Unwrap::Script {
                        word: join(&all, span),
                        remote: false,
                        own: false,
                    }];
                }
                if !a.starts_with('-') || a == "-" {
                    break;
                }
                if matches!(a.as_str(), "-u" | "-C" | "-P" | "--unset" | "--chdir") {
                    i += 1;
                }
                i += 1;
            }
            run(skip_assignments(&args[i.min(args.len())..]))
        }
        "timeout" => {
            let i = operands(args, "sk", &["signal", "kill-after"]);
            run(args.get(i + 1..).unwrap_or(&[]))
        }
        "nice" => {
            let mut i = 0;
            while let Some(a) = args.get(i) {
                let t = &a.text;
                if t == "-n" || t == "--adjustment" {
                    i += 2;
                } else if t.starts_with('-') && t.len() > 1 {
                    i += 1;
                } else {
                    break;
                }
            }
            run(args.get(i..).unwrap_or(&[]))
        }
        "ionice" => {
            run(&args[operands(args, "cnpPu", &["class", "classdata", "pid", "pgid", "uid"])..])
        }
        "nohup" | "setsid" | "builtin" | "unbuffer" | "catchsegv" | "chronic" => {
            run(&args[operands(args, "", &[])..])
        }
        "time" => run(&args[operands(args, "fo", &["format", "output"])..]),
        "command" => {
            if has_flag(args, 'v', "") || has_flag(args, 'V', "") {
                Vec::new()
            } else {
                run(&args[operands(args, "", &[])..])
            }
        }
        "exec" => run(&args[operands(args, "a", &[])..]),
        "stdbuf" => run(&args[operands(args, "ioe", &["input", "output", "error"])..]),
        "taskset" => {
            let i = operands(args, "", &[]);
            // Without -p the first operand is the mask (with -c, the list).
            if has_flag(args, 'p', "--pid") {
                Vec::new()
            } else {
                run(args.get(i + 1..).unwrap_or(&[]))
            }
        }
        "chrt" => {
            let i = operands(
                args,
                "T P D",
                &["sched-runtime", "sched-period", "sched-deadline"],
            );
            run(args.get(i + 1..).unwrap_or(&[]))
        }
        "chroot" => {
            let i = operands(args, "", &["userspec", "groups"]);
            run(args.get(i + 1..).unwrap_or(&[]))
        }
        "flock" => {
            for (k, a) in args.iter().enumerate() {
                if a.is("-c") || a.is("--command") {
                    return match args.get(k + 1) {
                        Some(w) => vec![Unwrap::Script {
                            word: w.clone(),
                            remote: false,
                            own: false,
                        }],
                        None => Vec::new(),
                    };
                }
            }
            let i = operands(args, "wE", &["timeout", "wait", "conflict-exit-code"]);
            run(args.get(i + 1..).unwrap_or(&[]))
        }
        "watch" => {
            let i = operands(args, "nq", &["interval", "equexit"]);
            let rest = &args[i..];
            if rest.is_empty() {
                Vec::new()
            } else if has_flag(&args[..i], 'x', "--exec") {
                run(rest)
            } else {
                vec![Unwrap::Script {
                    word: join(rest, span),
                    remote: false,
                    own: false,
                }]
            }
        }
        "xargs" => {
            let i = operands(
                args,
                "adEeIiLlnPs",
                &[
                    "arg-file",
                    "delimiter",
                    "eof",
                    "replace",
                    "max-lines",
                    "max-args",
                    "max-procs",
                    "max-chars",
                    "process-slot-var",
                ],
            );
            let replace = args[..i].iter().any(|w| {
                w.text.starts_with("-I")
                    || w.text.starts_with("-i")
                    || w.text.starts_with("--replace")
            });
            let mut inner: Vec<Word> = if i < args.len() {
                args[i..].to_vec()
            } else {
                vec![Word::synthetic("echo", true, span)]
            };
            // The arguments come from standard input: unknown until it runs, unless they are
            // paths that `find DIR` prints.
            let from_input = match input {
                Some(each) => Word::synthetic(each, true, span),
                None => Word::synthetic("{stdin}", false, span),
            };
            if replace {
                for w in inner.iter_mut().skip(1) {
                    if w.text == "{}" {
                        *w = Word {
                            span: w.span,
                            ..from_input.clone()
                        };
                    }
                }
            } else {
                inner.push(from_input);
            }
            vec![Unwrap::Run(inner)]
        }
        "find" => find_exec(args),
        "git" => git_config_commands(args),
        "ssh" | "scp" | "sftp" => {
            let i = operands(args, "BbcDEeFIiJLlmOopQRSWw", &[]);
            // `-o ProxyCommand=CMD` / `LocalCommand=CMD` run CMD here, through the shell.
            let mut out: Vec<Unwrap> = args[..i]
                .windows(2)
                .filter(|w| w[0].is("-o"))
                .filter_map(|w| option_command(&w[1], &["proxycommand", "localcommand"]))
                .collect();
            if name == "ssh" && args.len() > i + 1 {
                out.push(Unwrap::Script {
                    word: join(&args[i + 1..], span),
                    remote: true,
                    own: false,
                });
            }
            out
        }
        "rsync" => args
            .windows(2)
            .filter(|w| w[0].is("-e") || w[0].is("--rsh"))
            .map(|w| Unwrap::Script {
                word: w[1].clone(),
                remote: false,
                own: true,
            })
            .chain(args.iter().filter_map(|w| option_command(w, &["--rsh"])))
            .collect(),
        "tar" => args
            .windows(2)
            .filter(|w| w[0].is("-I") || w[0].is("--use-compress-program"))
            .map(|w| Unwrap::Script {
                word: w[1].clone(),
                remote: false,
                own: true,
            })
            .chain(args.iter().filter_map(|w| {
                option_command(
                    w,
                    &[
                        "--to-command",
                        "--use-compress-program",
                        "--checkpoint-action",
                        "--info-script",
                        "--new-volume-script",
                    ],
                )
            }))
            .collect(),
        "eval" => {
            if args.is_empty() {
                Vec::new()
            } else {
                vec![Unwrap::Eval(args.to_vec())]
            }
        }
        "source" | "." => match args.first() {
            Some(w) => vec![Unwrap::ScriptFile(w.clone())],
            None => Vec::new(),
        },
        "busybox" => run(args),
        n if SHELLS.contains(&n) => shell(args),
        "python" | "python3" | "python2" | "perl" | "ruby" | "node" | "php" | "lua" => {
            if args.is_empty() || args.iter().all(|w| w.is("-")) {
                vec![Unwrap::Stdin { shell: false }]
            } else {
                match args.iter().find(|w| !w.text.starts_with('-')) {
                    Some(w) if !w.subst.is_empty() => vec![Unwrap::ScriptFile(w.clone())],
                    _ => Vec::new(),
                }
            }
        }
        _ => Vec::new(),
    }
}

/// `KEY=COMMAND` (or `--key=COMMAND`; `--checkpoint-action=exec=COMMAND`) where KEY is one of
/// `keys` (compared without case): the command, as a shell string.
fn option_command(w: &Word, keys: &[&str]) -> Option<Unwrap> {
    let (key, value) = w.text.split_once(['=', ' '])?;
    if !keys.contains(&key.to_ascii_lowercase().as_str()) {
        return None;
    }
    let value = value.strip_prefix("exec=").unwrap_or(value);
    let mut s = Word::synthetic(value, w.known, w.span);
    s.subst = w.subst.clone();
    Some(Unwrap::Script {
        word: s,
        remote: false,
        own: true,
    })
}

/// `bash [options] [-c STRING | FILE | -s] [args]`.
fn shell(args: &[Word]) -> Vec<Unwrap> {
    let mut i = 0;
    let mut dash_c = false;
    let mut dash_s = false;
    while let Some(a) = args.get(i) {
        let t = &a.text;
        if t == "--" {
            i += 1;
            break;
        }
        if t == "-" {
            dash_s = true;
            i += 1;
            break;
        }
        if let Some(l) = t.strip_prefix("--") {
            if matches!(l, "rcfile" | "init-file") {
                i += 1;
            }
        } else if t.starts_with('-') || t.starts_with('+') {
            let flags = &t[1..];
            if flags.contains('c') {
                dash_c = true;
            }
            if flags.contains('s') {
                dash_s = true;
            }
            if flags.ends_with('o') || flags.ends_with('O') {
                i += 1;
            }
        } else {
            break;
        }
        i += 1;
    }
    let rest = args.get(i..).unwrap_or(&[]);
    if dash_c {
        return match rest.first() {
            Some(w) => vec![Unwrap::Script {
                word: w.clone(),
                remote: false,
                own: false,
            }],
            None => vec![Unwrap::Incomplete("`-c` without a command string".into())],
        };
    }
    if dash_s || rest.is_empty() {
        return vec![Unwrap::Stdin { shell: true }];
    }
    vec![Unwrap::ScriptFile(rest[0].clone())]
}

/// `find PATHS ... -exec CMD {} ;` (also `-execdir`, `-ok`, `-okdir`, ending in `;` or `+`).
fn find_exec(args: &[Word]) -> Vec<Unwrap> {
    let start = args
        .iter()
        .find(|w| !w.text.starts_with('-') && w.text != "(" && w.text != "!")
        .filter(|_| {
            !args.first().is_some_and(|w| {
                w.text.starts_with('-')
                    && w.text.len() > 2
                    && !matches!(w.text.as_str(), "-H" | "-L" | "-P")
            })
        })
        .cloned();
    let each = start
        .as_ref()
        .filter(|s| s.known)
        .map(|s| find_output(s, args));
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if matches!(
            args[i].text.as_str(),
            "-exec" | "-execdir" | "-ok" | "-okdir"
        ) {
            let mut inner = Vec::new();
            let mut j = i + 1;
            while j < args.len() && !(args[j].is(";") || args[j].is("+")) {
                let mut w = args[j].clone();
                if w.text == "{}" {
                    // Each file find reports: a path below the starting point.
                    match &each {
                        Some(e) => {
                            w.text = e.clone();
                            w.prefix = w.text.clone();
                            w.glob = false;
                        }
                        _ => {
                            w.known = false;
                            w.prefix = String::new();
                        }
                    }
                }
                inner.push(w);
                j += 1;
            }
            if !inner.is_empty() {
                out.push(Unwrap::Also(inner));
            }
            i = j;
        }
        i += 1;
    }
    out
}

/// What `{}` stands for in `find START ...`: without a test that selects files, every path
/// under START and START itself, which for a delete is the same as START; else paths below it.
pub(crate) fn find_output(start: &Word, args: &[Word]) -> String {
    const NOT_TESTS: &[&str] = &[
        "-exec",
        "-execdir",
        "-ok",
        "-okdir",
        "-maxdepth",
        "-mindepth",
        "-depth",
        "-xdev",
        "-mount",
        "-follow",
        "-print",
        "-print0",
        "-delete",
        "-H",
        "-L",
        "-P",
        "-d",
    ];
    let mut in_exec = false;
    let mut filtered = false;
    for a in args {
        if matches!(a.text.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
            in_exec = true;
        } else if in_exec && (a.is(";") || a.is("+")) {
            in_exec = false;
        } else if !in_exec && a.text.starts_with('-') && !NOT_TESTS.contains(&a.text.as_str()) {
            filtered = true;
        }
    }
    if filtered {
        format!("{}/{{}}", start.text.trim_end_matches('/'))
    } else {
        start.text.clone()
    }
}

/// `git -c KEY=VALUE`: configuration values that git runs as shell commands.
fn git_config_commands(args: &[Word]) -> Vec<Unwrap> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < args.len() {
        let a = &args[i].text;
        if !a.starts_with('-') {
            break;
        }
        if a == "-c" {
            let w = &args[i + 1];
            if let Some((key, value)) = w.text.split_once('=') {
                let key = key.to_ascii_lowercase();
                let runs = matches!(
                    key.as_str(),
                    "core.pager"
                        | "core.sshcommand"
                        | "core.editor"
                        | "core.fsmonitor"
                        | "core.askpass"
                        | "sequence.editor"
                        | "diff.external"
                        | "gpg.program"
                        | "credential.helper"
                        | "uploadpack.packobjectshook"
                ) || key.starts_with("pager.")
                    || key.starts_with("alias.")
                    || (key.starts_with("difftool.") || key.starts_with("mergetool."))
                        && key.ends_with(".cmd");
                if runs {
                    let script = value.strip_prefix('!').unwrap_or(value);
                    let mut s = Word::synthetic(script, w.known, w.span);
                    s.subst = w.subst.clone();
                    if !w.known || !script.is_empty() {
                        out.push(Unwrap::Script {
                            word: s,
                            remote: false,
                            own: true,
                        });
                    }
                }
            }
            i += 2;
            continue;
        }
        if matches!(
            a.as_str(),
            "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--config-env"
        ) {
            i += 2;
            continue;
        }
        i += 1;
    }
    out
}
