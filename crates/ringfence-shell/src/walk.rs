//! From a command string to the list of simple commands it would run. The tree comes from
//! tree-sitter-bash; this module walks it, evaluates words as far as they are known before the
//! command runs, follows `cd`, and descends into every place a shell runs another command:
//! substitutions, here-documents fed to a shell, `bash -c`/`eval` strings and wrappers
//! (`wrappers.rs` says which arguments of a wrapper are the command it runs).

use std::ops::Range;
use std::path::PathBuf;

use ringfence_policy::normalize;
use tree_sitter::{Node, Parser};

use crate::wrappers::{self, Unwrap};
use crate::{Context, Finding, FindingKind, Level, Span};

/// How deep strings inside strings are followed (`bash -c "eval 'sh -c ...'"`).
const MAX_DEPTH: u32 = 8;
/// How many wrappers one command may sit in (`sudo env nice timeout ...`).
const MAX_HOPS: u32 = 16;
/// Upper bound on the simple commands of one analysis; past it the rest is not analysed.
const MAX_COMMANDS: usize = 4096;
/// How deeply syntax may nest (`((((...))))`, `$($($(...)))`) before the rest is not analysed;
/// the walk recurses once per level, so this bounds its stack.
const MAX_NESTING: u32 = 200;
/// Longest command string analysed.
pub(crate) const MAX_LEN: usize = 1 << 20;

/// One word of a command, evaluated as far as possible without running anything.
#[derive(Debug, Clone)]
pub(crate) struct Word {
    /// The value when `known`, else the source text.
    pub text: String,
    /// The value is known before the command runs.
    pub known: bool,
    /// The known part at the start of the value (the whole value when `known`).
    pub prefix: String,
    /// An unquoted `*`, `?` or `[` that the shell expands.
    pub glob: bool,
    pub span: Span,
    /// Commands run by substitutions inside this word (indices into the command list).
    pub subst: Range<usize>,
    /// Offset of `text` in the analysed string when `text` is a verbatim slice of it.
    pub exact: Option<usize>,
}

impl Word {
    pub(crate) fn synthetic(text: &str, known: bool, span: Span) -> Word {
        Word {
            text: text.to_string(),
            known,
            prefix: if known {
                text.to_string()
            } else {
                String::new()
            },
            glob: false,
            span,
            subst: 0..0,
            exact: None,
        }
    }
    pub(crate) fn is(&self, s: &str) -> bool {
        self.known && self.text == s
    }
}

/// One simple command found in the string.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub argv: Vec<Word>,
    pub span: Span,
    /// Working directory when it runs; `None` after a `cd` to a place not known before.
    pub cwd: Option<PathBuf>,
    /// Does nothing of its own but run the commands found inside it.
    pub wrapper: bool,
    pub via: Option<usize>,
    /// (pipeline id, stage) when it is part of a pipeline.
    pub pipe: Option<(u32, u32)>,
    pub remote: bool,
    /// Runs code read from its standard input (a shell or interpreter without a script).
    pub code_from_stdin: bool,
    /// The code it reads from the pipe was known and analysed (`echo 'ls' | sh`).
    pub stdin_analysed: bool,
    /// Its here-document or here-string, when known.
    stdin_text: Option<(String, Span, Option<usize>)>,
}

/// A redirection to or from a file.
#[derive(Debug, Clone)]
pub(crate) struct Redirect {
    pub op: String,
    pub target: Word,
    pub cwd: Option<PathBuf>,
}

pub(crate) struct Walked {
    pub cmds: Vec<Cmd>,
    pub redirects: Vec<Redirect>,
    pub findings: Vec<Finding>,
    pub incomplete: bool,
}

/// What feeds a command's standard input, when it is a here-document or here-string.
#[derive(Clone)]
enum Stdin {
    Text(String, Span, Option<usize>),
    Word(Word),
}

/// Where in the string we are.
#[derive(Clone, Copy)]
struct Frame<'s> {
    src: &'s str,
    /// Offset of `src` in the analysed string, if it is a verbatim slice of it.
    exact: Option<usize>,
    /// The span reported for anything inside when `exact` is `None`.
    base: Span,
    depth: u32,
    via: Option<usize>,
    remote: bool,
}

#[derive(Clone, Default)]
struct Scope {
    cwd: Option<PathBuf>,
    pipe: Option<(u32, u32)>,
}

struct Walker<'c> {
    ctx: &'c Context,
    parser: Option<Parser>,
    cmds: Vec<Cmd>,
    redirects: Vec<Redirect>,
    findings: Vec<Finding>,
    functions: Vec<String>,
    next_pipe: u32,
    incomplete: bool,
    nesting: u32,
    too_nested: bool,
}

thread_local! {
    /// A parser per thread, reused: creating one costs about as much as analysing a short command.
    static PARSER: std::cell::RefCell<Option<Parser>> = const { std::cell::RefCell::new(None) };
}

fn new_parser() -> Option<Parser> {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_bash::LANGUAGE.into())
        .ok()
        .map(|()| parser)
}

pub(crate) fn walk(command: &str, ctx: &Context) -> Walked {
    let parser = PARSER.with(|p| p.borrow_mut().take()).or_else(new_parser);
    let mut w = Walker {
        ctx,
        parser,
        cmds: Vec::new(),
        redirects: Vec::new(),
        findings: Vec::new(),
        functions: Vec::new(),
        next_pipe: 0,
        incomplete: false,
        nesting: 0,
        too_nested: false,
    };
    let whole = Span {
        start: 0,
        end: command.len(),
    };
    let frame = Frame {
        src: command,
        exact: Some(0),
        base: whole,
        depth: 0,
        via: None,
        remote: false,
    };
    let mut scope = Scope {
        cwd: Some(ctx.cwd.clone()),
        pipe: None,
    };
    w.script(frame, &mut scope);
    if let Some(mut p) = w.parser.take() {
        p.reset();
        PARSER.with(|slot| *slot.borrow_mut() = Some(p));
    }
    Walked {
        cmds: w.cmds,
        redirects: w.redirects,
        findings: w.findings,
        incomplete: w.incomplete,
    }
}

fn unescape_word(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\n') | None => {}
                Some(n) => out.push(n),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape_dquoted(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('"' | '\\' | '$' | '`') => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                Some('\n') => {
                    chars.next();
                }
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ansi_c(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('x') => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match chars.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            chars.next();
                            n += 1;
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).unwrap_or('?'));
            }
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

impl<'c> Walker<'c> {
    fn span(&self, f: &Frame, n: Node) -> Span {
        match f.exact {
            Some(off) => Span {
                start: off + n.start_byte(),
                end: off + n.end_byte(),
            },
            None => f.base,
        }
    }

    fn text<'s>(f: &Frame<'s>, n: Node) -> &'s str {
        f.src.get(n.byte_range()).unwrap_or("")
    }

    fn finding(&mut self, kind: FindingKind, level: Level, reason: String, span: Span) {
        if kind == FindingKind::Incomplete {
            self.incomplete = true;
        }
        self.findings.push(Finding {
            kind,
            level,
            reason,
            span,
        });
    }

    fn incomplete(&mut self, reason: String, span: Span) {
        self.finding(FindingKind::Incomplete, Level::Ask, reason, span);
    }

    /// Parses and walks one script (the whole string, or a string found inside it).
    fn script(&mut self, f: Frame, scope: &mut Scope) {
        if f.src.len() > MAX_LEN {
            self.incomplete(
                format!("the command is longer than {MAX_LEN} bytes; not analysed"),
                f.base,
            );
            return;
        }
        let tree = match self.parser.as_mut().and_then(|p| p.parse(f.src, None)) {
            Some(t) => t,
            None => {
                self.incomplete("the shell parser is not available".into(), f.base);
                return;
            }
        };
        let root = tree.root_node();
        if root.has_error() {
            let near = first_error(root)
                .map(|n| {
                    let t = Self::text(&f, n);
                    let t: String = t.chars().take(40).collect();
                    (self.span(&f, n), t)
                })
                .unwrap_or((f.base, String::new()));
            self.incomplete(
                format!("the shell grammar cannot parse this (near `{}`)", near.1),
                near.0,
            );
        }
        self.stmt(&f, root, scope);
    }

    /// Enters one level of syntax; false (and a finding, once) when that is too deep.
    fn enter(&mut self, f: &Frame, n: Node) -> bool {
        if self.nesting >= MAX_NESTING {
            if !self.too_nested {
                self.too_nested = true;
                self.incomplete(
                    format!("the command nests more than {MAX_NESTING} levels deep; the inside is not analysed"),
                    self.span(f, n),
                );
            }
            return false;
        }
        self.nesting += 1;
        true
    }

    fn stmt(&mut self, f: &Frame, n: Node, scope: &mut Scope) {
        if self.enter(f, n) {
            self.stmt_inner(f, n, scope);
            self.nesting -= 1;
        }
    }

    fn stmt_inner(&mut self, f: &Frame, n: Node, scope: &mut Scope) {
        if self.cmds.len() >= MAX_COMMANDS {
            if !self.incomplete {
                self.incomplete(
                    format!("more than {MAX_COMMANDS} commands; the rest is not analysed"),
                    self.span(f, n),
                );
            }
            return;
        }
        match n.kind() {
            "command" => self.command(f, n, scope, None),
            "redirected_statement" => self.redirected(f, n, scope),
            "pipeline" => {
                let id = self.next_pipe;
                self.next_pipe += 1;
                let mut c = n.walk();
                let first = self.cmds.len();
                for (stage, child) in n.named_children(&mut c).enumerate() {
                    let mut s = scope.clone();
                    s.pipe = Some((id, stage as u32));
                    self.stmt(f, child, &mut s);
                }
                self.piped_scripts(f, id, first, scope);
            }
            "subshell" | "command_substitution" | "process_substitution" => {
                let mut s = scope.clone();
                s.pipe = None;
                self.children(f, n, &mut s);
            }
            "function_definition" => self.function(f, n, scope),
            "declaration_command" | "unset_command" => {
                let mut argv = Vec::new();
                let mut c = n.walk();
                for (i, child) in n.children(&mut c).enumerate() {
                    if i == 0 && !child.is_named() {
                        argv.push(Word::synthetic(
                            Self::text(f, child),
                            true,
                            self.span(f, child),
                        ));
                    } else if child.is_named() {
                        argv.push(self.word(f, child, scope));
                    }
                }
                if !argv.is_empty() {
                    let span = self.span(f, n);
                    self.run(f, argv, span, scope, None, f.via, 0);
                }
            }
            "file_redirect" | "heredoc_redirect" | "herestring_redirect" => {
                let mut stdin = None;
                self.redirect(f, n, scope, &mut stdin);
            }
            "comment" | "heredoc_start" | "heredoc_end" | "heredoc_content" => {}
            "word"
            | "string"
            | "raw_string"
            | "concatenation"
            | "simple_expansion"
            | "expansion"
            | "number"
            | "ansi_c_string"
            | "arithmetic_expansion"
            | "translated_string"
            | "array" => {
                self.word(f, n, scope);
            }
            _ => self.children(f, n, scope),
        }
    }

    fn children(&mut self, f: &Frame, n: Node, scope: &mut Scope) {
        let mut c = n.walk();
        for child in n.named_children(&mut c) {
            self.stmt(f, child, scope);
        }
    }

    fn function(&mut self, f: &Frame, n: Node, scope: &mut Scope) {
        let name = n
            .child_by_field_name("name")
            .map(|x| Self::text(f, x).to_string())
            .unwrap_or_default();
        self.functions.push(name.clone());
        let before = self.cmds.len();
        if let Some(body) = n.child_by_field_name("body") {
            let mut s = scope.clone();
            self.stmt(f, body, &mut s);
            let calls = self.cmds[before..]
                .iter()
                .filter(|c| c.argv.first().is_some_and(|w| w.is(&name)))
                .count();
            let body_text = Self::text(f, body);
            let background = body_text.contains('&') && !body_text.contains("&&");
            if calls >= 2 || (calls >= 1 && background) {
                self.finding(
                    FindingKind::ForkBomb,
                    Level::Deny,
                    format!("function `{name}` calls itself repeatedly or in the background: a fork bomb"),
                    self.span(f, n),
                );
            }
        }
    }

    /// Handles one redirection node; a here-document or here-string becomes `stdin`.
    fn redirect(&mut self, f: &Frame, n: Node, scope: &mut Scope, stdin: &mut Option<Stdin>) {
        match n.kind() {
            "file_redirect" => {
                let mut op = String::new();
                let mut c = n.walk();
                for child in n.children(&mut c) {
                    if !child.is_named() {
                        op.push_str(Self::text(f, child));
                    }
                }
                if let Some(dest) = n.child_by_field_name("destination") {
                    // `2>&1`, `>&-`: a descriptor, not a file.
                    if op.contains('&') && dest.kind() == "number" || op.ends_with('&') {
                        return;
                    }
                    let target = self.word(f, dest, scope);
                    self.redirects.push(Redirect {
                        op,
                        target,
                        cwd: scope.cwd.clone(),
                    });
                }
            }
            "heredoc_redirect" => {
                let mut c = n.walk();
                for child in n.named_children(&mut c) {
                    match child.kind() {
                        "heredoc_body" => {
                            let text = Self::text(f, child).to_string();
                            let exact = f.exact.map(|o| o + child.start_byte());
                            *stdin = Some(Stdin::Text(text, self.span(f, child), exact));
                            // Substitutions in an unquoted here-document run first.
                            self.children(f, child, &mut scope.clone());
                        }
                        // Walked by `redirected`, as the later stages of a pipeline.
                        "pipeline" => {}
                        "file_redirect" | "herestring_redirect" => {
                            self.redirect(f, child, scope, &mut None)
                        }
                        "heredoc_start" | "heredoc_end" => {}
                        _ => self.stmt(f, child, scope),
                    }
                }
            }
            "herestring_redirect" => {
                let mut c = n.walk();
                if let Some(child) = n.named_children(&mut c).last() {
                    *stdin = Some(Stdin::Word(self.word(f, child, scope)));
                }
            }
            _ => self.stmt(f, n, scope),
        }
    }

    fn redirected(&mut self, f: &Frame, n: Node, scope: &mut Scope) {
        let body = n.child_by_field_name("body");
        let mut stdin = None;
        // `cmd <<EOF | next` puts `| next` inside the here-document node.
        let mut pipe_stages: Vec<Node> = Vec::new();
        let mut c = n.walk();
        for child in n.named_children(&mut c) {
            if Some(child) == body {
                continue;
            }
            if child.kind() == "heredoc_redirect" {
                let mut c2 = child.walk();
                for g in child.named_children(&mut c2) {
                    if g.kind() == "pipeline" {
                        let mut c3 = g.walk();
                        pipe_stages.extend(g.named_children(&mut c3));
                    }
                }
            }
            self.redirect(f, child, scope, &mut stdin);
        }
        let body_start = self.cmds.len();
        let mut body_scope = scope.clone();
        let id = (!pipe_stages.is_empty()).then(|| {
            self.next_pipe += 1;
            self.next_pipe - 1
        });
        if let Some(id) = id {
            body_scope.pipe = Some((id, 0));
        }
        if let Some(b) = body {
            if b.kind() == "command" {
                self.command(f, b, &mut body_scope, stdin);
            } else {
                self.stmt(f, b, &mut body_scope);
            }
        }
        if id.is_none() {
            scope.cwd = body_scope.cwd;
        }
        for (i, stage) in pipe_stages.into_iter().enumerate() {
            let mut s = scope.clone();
            s.pipe = id.map(|id| (id, i as u32 + 1));
            self.stmt(f, stage, &mut s);
        }
        if let Some(id) = id {
            self.piped_scripts(f, id, body_start, scope);
        }
    }

    /// `echo 'cmd' | sh`, `printf 'cmd' | bash`, `cat <<EOF | sh`: the code a shell reads from
    /// the pipe is known, so it is analysed like `sh -c`.
    fn piped_scripts(&mut self, f: &Frame, id: u32, from: usize, scope: &Scope) {
        let mut k = from.min(self.cmds.len());
        while k < self.cmds.len() {
            let c = &self.cmds[k];
            let consumer = match c.pipe {
                Some((pid, stage)) if pid == id && stage > 0 && c.code_from_stdin => stage,
                _ => {
                    k += 1;
                    continue;
                }
            };
            let is_shell = c.argv.first().is_some_and(|w| {
                wrappers::SHELLS.contains(&w.text.rsplit('/').next().unwrap_or(""))
            });
            let producer = self.cmds[from..k]
                .iter()
                .rev()
                .find(|p| p.pipe == Some((id, consumer - 1)) && p.via.is_none_or(|v| v < from));
            let code = producer.and_then(|p| {
                let name = p.argv.first().map(|w| w.text.as_str()).unwrap_or("");
                let args = &p.argv[1..];
                match name {
                    "echo" if args.iter().all(|w| w.known && !w.text.starts_with('-')) => Some(
                        args.iter()
                            .map(|w| w.text.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    "printf"
                        if args.len() == 1
                            && args[0].known
                            && !args[0].text.contains(['%', '\\']) =>
                    {
                        Some(args[0].text.clone())
                    }
                    "cat" if args.is_empty() => p.stdin_text.as_ref().map(|t| t.0.clone()),
                    _ => None,
                }
            });
            if let (true, Some(code)) = (is_shell, code) {
                self.cmds[k].stdin_analysed = true;
                self.cmds[k].wrapper = true;
                let w = Word::synthetic(&code, true, self.cmds[k].span);
                self.string(f, &w, k, f.remote, scope);
            }
            k += 1;
        }
    }

    fn command(&mut self, f: &Frame, n: Node, scope: &mut Scope, mut stdin: Option<Stdin>) {
        let mut argv = Vec::new();
        let mut c = n.walk();
        for (i, child) in n.children(&mut c).enumerate() {
            match n.field_name_for_child(i as u32) {
                Some("name") => {
                    let inner = child.named_child(0).unwrap_or(child);
                    argv.push(self.word(f, inner, scope));
                }
                Some("argument") => argv.push(self.word(f, child, scope)),
                Some("redirect") => self.redirect(f, child, scope, &mut stdin),
                _ if child.is_named() => self.stmt(f, child, scope),
                _ => {}
            }
        }
        if argv.is_empty() {
            return;
        }
        let span = self.span(f, n);
        self.run(f, argv, span, scope, stdin, f.via, 0);
    }

    /// Records one command and follows whatever it runs.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        f: &Frame,
        argv: Vec<Word>,
        span: Span,
        scope: &mut Scope,
        stdin: Option<Stdin>,
        via: Option<usize>,
        hops: u32,
    ) {
        let Some(first) = argv.first().cloned() else {
            return;
        };
        let idx = self.cmds.len();
        self.cmds.push(Cmd {
            argv: argv.clone(),
            span,
            cwd: scope.cwd.clone(),
            wrapper: false,
            via,
            pipe: scope.pipe,
            remote: f.remote,
            code_from_stdin: false,
            stdin_analysed: false,
            stdin_text: match &stdin {
                Some(Stdin::Text(t, sp, ex)) => Some((t.clone(), *sp, *ex)),
                Some(Stdin::Word(w)) if w.known => Some((w.text.clone(), w.span, w.exact)),
                _ => None,
            },
        });
        if !first.known {
            if !first.subst.is_empty() {
                self.finding(
                    FindingKind::Obfuscation,
                    Level::Ask,
                    format!(
                        "the command name `{}` is the output of another command",
                        first.text
                    ),
                    first.span,
                );
                self.incomplete = true;
            } else {
                self.incomplete(
                    format!(
                        "the command name `{}` is known only when it runs",
                        first.text
                    ),
                    first.span,
                );
            }
            return;
        }
        let name = first.text.rsplit('/').next().unwrap_or("").to_string();
        if name == "cd" || name == "pushd" {
            scope.cwd = self.cd(argv.get(1), scope.cwd.as_ref());
            return;
        }
        if self.functions.contains(&name) {
            self.cmds[idx].wrapper = true;
            return;
        }
        if hops > MAX_HOPS {
            self.incomplete(
                format!("more than {MAX_HOPS} nested wrapper commands"),
                span,
            );
            return;
        }
        let input = if name == "xargs" {
            self.find_input(scope.pipe)
        } else {
            None
        };
        for u in wrappers::unwrap(&name, &argv[1..], span, input.as_deref()) {
            match u {
                Unwrap::Run(inner) => {
                    self.cmds[idx].wrapper = true;
                    let mut s = scope.clone();
                    self.run(f, inner, span, &mut s, stdin.clone(), Some(idx), hops + 1);
                }
                Unwrap::Also(inner) => {
                    let mut s = scope.clone();
                    s.pipe = None;
                    self.run(f, inner, span, &mut s, None, Some(idx), hops + 1);
                }
                Unwrap::Script { word, remote, own } => {
                    if !own {
                        self.cmds[idx].wrapper = true;
                    }
                    self.string(f, &word, idx, remote || f.remote, scope);
                }
                Unwrap::Eval(words) => {
                    self.cmds[idx].wrapper = true;
                    if words.iter().all(|w| w.known) {
                        let text = words
                            .iter()
                            .map(|w| w.text.as_str())
                            .collect::<Vec<_>>()
                            .join(" ");
                        let mut w = Word::synthetic(&text, true, span);
                        w.exact = if words.len() == 1 {
                            words[0].exact
                        } else {
                            None
                        };
                        w.span = match (words.first(), words.last()) {
                            (Some(a), Some(b)) => Span {
                                start: a.span.start,
                                end: b.span.end,
                            },
                            _ => span,
                        };
                        self.string(f, &w, idx, f.remote, scope);
                    } else {
                        let mut w = Word::synthetic(
                            &words
                                .iter()
                                .map(|w| w.text.as_str())
                                .collect::<Vec<_>>()
                                .join(" "),
                            false,
                            span,
                        );
                        // `eval sudo "$CMD"`: the known words before the first unknown one.
                        let mut prefix = String::new();
                        for x in &words {
                            if !prefix.is_empty() {
                                prefix.push(' ');
                            }
                            prefix.push_str(&x.prefix);
                            if !x.known {
                                break;
                            }
                        }
                        w.prefix = prefix;
                        w.subst = words
                            .iter()
                            .map(|w| w.subst.clone())
                            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
                            .unwrap_or(0..0);
                        self.string(f, &w, idx, f.remote, scope);
                    }
                }
                Unwrap::Stdin { shell } => {
                    self.cmds[idx].code_from_stdin = true;
                    match (&stdin, shell) {
                        (Some(Stdin::Text(text, tspan, exact)), true) => {
                            self.cmds[idx].wrapper = true;
                            let frame = Frame {
                                src: text,
                                exact: *exact,
                                base: *tspan,
                                depth: f.depth + 1,
                                via: Some(idx),
                                remote: f.remote,
                            };
                            if frame.depth > MAX_DEPTH {
                                self.too_deep(*tspan);
                            } else {
                                let mut s = scope.clone();
                                s.pipe = None;
                                self.script(frame, &mut s);
                            }
                        }
                        (Some(Stdin::Word(w)), true) => {
                            self.cmds[idx].wrapper = true;
                            let w = w.clone();
                            self.string(f, &w, idx, f.remote, scope);
                        }
                        _ => {}
                    }
                }
                Unwrap::ScriptFile(w) => {
                    if !w.subst.is_empty() {
                        self.generated_script(&w, idx);
                    }
                }
                Unwrap::Incomplete(reason) => self.incomplete(reason, span),
            }
        }
    }

    /// The starting directory of a `find` in the previous stage of this pipeline.
    fn find_input(&self, pipe: Option<(u32, u32)>) -> Option<String> {
        let (id, stage) = pipe?;
        let before = stage.checked_sub(1)?;
        let prev = self
            .cmds
            .iter()
            .rev()
            .find(|c| c.pipe == Some((id, before)) && c.via.is_none())?;
        let args = prev.argv.get(1..)?;
        if !prev.argv.first()?.is("find") {
            return None;
        }
        let start = match args.first() {
            // `find` without a path searches the working directory.
            Some(a) if a.text.starts_with('-') => Word::synthetic(".", true, a.span),
            None => Word::synthetic(".", true, prev.span),
            Some(a) if a.known && !a.glob => a.clone(),
            Some(_) => return None,
        };
        Some(wrappers::find_output(&start, args))
    }

    fn too_deep(&mut self, span: Span) {
        self.incomplete(
            format!("strings inside strings nested more than {MAX_DEPTH} levels deep"),
            span,
        );
    }

    /// A script that is the output of other commands (`bash <(curl ...)`, `eval "$(...)"`).
    fn generated_script(&mut self, w: &Word, idx: usize) {
        let downloader = self.cmds[w.subst.clone()]
            .iter()
            .find(|c| c.argv.first().is_some_and(|n| is_downloader(&n.text)))
            .map(|c| words_text(&c.argv));
        let runner = words_text(&self.cmds[idx].argv);
        match downloader {
            Some(d) => self.finding(
                FindingKind::DownloadExecute,
                Level::Ask,
                format!("runs code downloaded by `{d}` (`{runner}`)"),
                w.span,
            ),
            None => {
                self.finding(
                    FindingKind::Obfuscation,
                    Level::Ask,
                    format!(
                        "runs code that another command produces (`{}`): it cannot be checked before it runs",
                        w.text
                    ),
                    w.span,
                );
                self.incomplete = true;
            }
        }
    }

    /// A shell string run by `bash -c`, `eval`, `ssh host ...`: analysed like the whole command.
    fn string(&mut self, f: &Frame, w: &Word, idx: usize, remote: bool, scope: &Scope) {
        if !w.known {
            self.known_prefix(f, w, idx, remote, scope);
            if !w.subst.is_empty() {
                self.generated_script(w, idx);
            } else {
                self.finding(
                    FindingKind::Obfuscation,
                    Level::Ask,
                    format!("runs a shell string known only when it runs (`{}`)", w.text),
                    w.span,
                );
                self.incomplete = true;
            }
            return;
        }
        if f.depth + 1 > MAX_DEPTH {
            self.too_deep(w.span);
            return;
        }
        let text = w.text.clone();
        let frame = Frame {
            src: &text,
            exact: w.exact,
            base: w.span,
            depth: f.depth + 1,
            via: Some(idx),
            remote,
        };
        let mut s = scope.clone();
        s.pipe = None;
        self.script(frame, &mut s);
    }

    /// The start of a shell string known only when it runs (`bash -c "sudo chown $USER /x"`):
    /// the commands its known prefix already names run whatever follows, so they are walked
    /// with one more word whose value is unknown. The prefix is cut back to its last
    /// unquoted blank (what follows could still extend the last word) and used only when it
    /// parses cleanly (an open quote or here-document could make it data, not commands).
    fn known_prefix(&mut self, f: &Frame, w: &Word, idx: usize, remote: bool, scope: &Scope) {
        let Some(cut) = last_blank(&w.prefix) else {
            return;
        };
        let head = &w.prefix[..cut];
        if head.trim().is_empty() || f.depth + 1 > MAX_DEPTH {
            return;
        }
        let text = format!("{head} {RUNTIME_REST}");
        let clean = self
            .parser
            .as_mut()
            .and_then(|p| p.parse(&text, None))
            .is_some_and(|t| !t.root_node().has_error());
        if !clean {
            return;
        }
        let rest = w.text.get(cut..).unwrap_or("").trim_start().to_string();
        let before = self.cmds.len();
        let findings_before = self.findings.len();
        let frame = Frame {
            src: &text,
            exact: None,
            base: w.span,
            depth: f.depth + 1,
            via: Some(idx),
            remote,
        };
        let mut s = scope.clone();
        s.pipe = None;
        self.script(frame, &mut s);
        // Show the unknown rest as it was written.
        for c in &mut self.cmds[before..] {
            for a in &mut c.argv {
                if a.text.contains(RUNTIME_REST) {
                    a.text = a.text.replace(RUNTIME_REST, &rest);
                    a.known = false;
                }
            }
        }
        for x in &mut self.findings[findings_before..] {
            x.reason = x.reason.replace(RUNTIME_REST, &rest);
        }
    }

    fn cd(&self, arg: Option<&Word>, cwd: Option<&PathBuf>) -> Option<PathBuf> {
        let Some(arg) = arg else {
            return Some(self.ctx.home.clone());
        };
        if !arg.known || arg.text == "-" || arg.glob {
            return None;
        }
        Some(normalize(&cwd?.join(&arg.text)))
    }

    /// Evaluates a word node; walks the commands of any substitution inside it.
    fn word(&mut self, f: &Frame, n: Node, scope: &Scope) -> Word {
        let before = self.cmds.len();
        let span = self.span(f, n);
        let mut w = Word {
            text: String::new(),
            known: true,
            prefix: String::new(),
            glob: false,
            span,
            subst: before..before,
            exact: None,
        };
        self.word_part(f, n, scope, &mut w, true);
        w.subst = before..self.cmds.len();
        if w.known {
            w.prefix = w.text.clone();
        }
        let raw = Self::text(f, n);
        w.exact = match (n.kind(), f.exact) {
            ("word", Some(o)) if w.known && w.text == raw => Some(o + n.start_byte()),
            ("raw_string", Some(o)) => Some(o + n.start_byte() + 1),
            ("string", Some(o))
                if w.known && raw.get(1..raw.len().saturating_sub(1)) == Some(w.text.as_str()) =>
            {
                Some(o + n.start_byte() + 1)
            }
            _ => None,
        };
        w
    }

    fn push_known(w: &mut Word, s: &str) {
        w.text.push_str(s);
        if w.known {
            w.prefix.push_str(s);
        }
    }

    fn push_unknown(w: &mut Word, s: &str) {
        if w.known {
            w.prefix = w.text.clone();
        }
        w.known = false;
        w.text.push_str(s);
    }

    fn word_part(&mut self, f: &Frame, n: Node, scope: &Scope, w: &mut Word, first: bool) {
        if self.enter(f, n) {
            self.word_part_inner(f, n, scope, w, first);
            self.nesting -= 1;
        } else {
            Self::push_unknown(w, Self::text(f, n));
        }
    }

    fn word_part_inner(&mut self, f: &Frame, n: Node, scope: &Scope, w: &mut Word, first: bool) {
        let raw = Self::text(f, n);
        match n.kind() {
            "word" => {
                let mut v = unescape_word(raw);
                if first && (v == "~" || v.starts_with("~/")) {
                    v = format!("{}{}", self.ctx.home.display(), &v[1..]);
                } else if first && raw.starts_with('~') {
                    // `~bob`, `~+`: another user's home or the shell's state; not known here.
                    Self::push_unknown(w, raw);
                    return;
                }
                if has_glob(raw) {
                    w.glob = true;
                }
                Self::push_known(w, &v);
            }
            "number" | "heredoc_content" | "string_content" | "regex" | "extglob_pattern" => {
                if n.named_child_count() > 0 {
                    let mut c = n.walk();
                    for child in n.named_children(&mut c) {
                        self.word_part(f, child, scope, w, false);
                    }
                } else {
                    Self::push_known(w, &unescape_dquoted(raw));
                }
            }
            "raw_string" => {
                let inner = raw
                    .strip_prefix('\'')
                    .and_then(|r| r.strip_suffix('\''))
                    .unwrap_or(raw);
                Self::push_known(w, inner);
            }
            "ansi_c_string" => {
                let inner = raw
                    .strip_prefix("$'")
                    .and_then(|r| r.strip_suffix('\''))
                    .unwrap_or(raw);
                Self::push_known(w, &ansi_c(inner));
            }
            "string" | "concatenation" => {
                let mut c = n.walk();
                for (i, child) in n.named_children(&mut c).enumerate() {
                    self.word_part(
                        f,
                        child,
                        scope,
                        w,
                        first && i == 0 && n.kind() == "concatenation",
                    );
                }
                if n.kind() == "concatenation" {
                    // Pieces between named children (`=`, quotes) are not named nodes.
                    let named: usize = {
                        let mut c = n.walk();
                        n.named_children(&mut c).map(|x| x.byte_range().len()).sum()
                    };
                    if named < raw.len() && w.known {
                        // Rare (`a"b"` is named); keep the raw text to stay honest.
                        w.text = unescape_word(raw);
                        w.prefix = w.text.clone();
                    }
                }
            }
            "simple_expansion" | "expansion" => {
                let var = raw
                    .trim_start_matches('$')
                    .trim_matches(|c| c == '{' || c == '}');
                match var {
                    "HOME" => Self::push_known(w, &self.ctx.home.display().to_string()),
                    "PWD" if scope.cwd.is_some() => {
                        let cwd = scope.cwd.clone().unwrap_or_default();
                        Self::push_known(w, &cwd.display().to_string())
                    }
                    _ => {
                        let mut c = n.walk();
                        for child in n.named_children(&mut c) {
                            if !matches!(child.kind(), "variable_name" | "special_variable_name") {
                                self.stmt(f, child, &mut scope.clone());
                            }
                        }
                        Self::push_unknown(w, raw)
                    }
                }
            }
            "command_substitution" | "process_substitution" => {
                self.stmt(f, n, &mut scope.clone());
                Self::push_unknown(w, raw);
            }
            _ => {
                let mut c = n.walk();
                for child in n.named_children(&mut c) {
                    self.stmt(f, child, &mut scope.clone());
                }
                Self::push_unknown(w, raw);
            }
        }
    }
}

/// Stands for the part of a shell string known only at run time while its known prefix is
/// walked; an expansion, so that it is an unknown word.
const RUNTIME_REST: &str = "${__RINGFENCE_RUNTIME_REST}";

/// Byte offset of the last blank in `s` that is neither escaped nor quoted, if any.
fn last_blank(s: &str) -> Option<usize> {
    let (mut esc, mut single, mut double) = (false, false, false);
    let mut last = None;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if !single => esc = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            ' ' | '\t' | '\n' if !single && !double => last = Some(i),
            _ => {}
        }
    }
    last
}

fn has_glob(raw: &str) -> bool {
    let mut esc = false;
    for c in raw.chars() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// The first error or missing node, descending without recursion (trees can be very deep).
fn first_error(root: Node) -> Option<Node> {
    let mut n = root;
    loop {
        if n.is_error() || n.is_missing() {
            return Some(n);
        }
        let mut c = n.walk();
        let next = n.children(&mut c).find(|ch| ch.has_error());
        n = next?;
    }
}

pub(crate) fn words_text(argv: &[Word]) -> String {
    let mut s = argv
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub(crate) fn is_downloader(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    matches!(
        base,
        "curl" | "wget" | "fetch" | "aria2c" | "http" | "https" | "xh" | "lwp-download" | "lynx"
    )
}
