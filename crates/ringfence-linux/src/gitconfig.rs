//! Which git configuration a sandbox may put in place in a repository it created: nothing that
//! makes git run a program, load other configuration, or write outside the repository when
//! the user later runs git there on the host. Pure parsing; the creation guard calls it on the
//! content of a file renamed onto a `config` inside a new `.git` directory.

/// Why `text` (the content of a git config file) may not be put in place, or None when it may.
/// Anything that cannot be parsed is refused: git itself refuses such a file.
pub fn refusal(text: &[u8]) -> Option<String> {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let mut p = Parser { s: text, i: 0 };
    let mut section: Option<(String, Option<Vec<u8>>)> = None;
    p.skip_blank();
    while let Some(c) = p.peek() {
        match c {
            b'\n' => p.i += 1,
            b'#' | b';' => p.skip_line(),
            b'[' => match p.header() {
                Some(h) => section = Some(h),
                None => return Some(format!("line {}: invalid section header", p.line())),
            },
            c if c.is_ascii_alphabetic() => {
                let line = p.line();
                let Some((name, value)) = p.entry() else {
                    return Some(format!("line {line}: invalid entry"));
                };
                let Some((sec, sub)) = &section else {
                    return Some(format!("line {line}: entry outside any section"));
                };
                if let Some(why) = key_refusal(sec, sub.as_deref(), &name, value.as_deref()) {
                    let key = match sub {
                        Some(s) => format!("{sec}.{}.{name}", String::from_utf8_lossy(s)),
                        None => format!("{sec}.{name}"),
                    };
                    return Some(format!("{key}: {why}"));
                }
            }
            _ => return Some(format!("line {}: unexpected character", p.line())),
        }
        p.skip_blank();
    }
    None
}

/// Why one key may not be set. `section` and `name` are lower case; `value` is None for a
/// bare key (boolean true).
fn key_refusal(
    section: &str,
    sub: Option<&[u8]>,
    name: &str,
    value: Option<&[u8]>,
) -> Option<&'static str> {
    let value_starts_with_bang =
        || value.is_some_and(|v| v.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'!'));
    match section {
        // Other configuration files, content filters run on checkout and add, per-command
        // pagers, trace output written to any path, a web server started by git.
        "include" | "includeif" => return Some("loads other configuration"),
        "filter" => return Some("runs a program (content filter)"),
        "pager" => return Some("runs a program (pager)"),
        "trace2" => return Some("writes trace output to a path"),
        "instaweb" => return Some("runs a program"),
        _ => {}
    }
    // Keys whose value is a command line or a program to run.
    for suffix in ["cmd", "command", "program", "helper"] {
        if name.ends_with(suffix) {
            return Some("runs a program");
        }
    }
    if name == "path" && section != "submodule" {
        // include.path, mergetool.*.path, difftool.*.path, browser.*.path,
        // lfs.customtransfer.*.path: a file to load or a program to run.
        return Some("names a program or a file to load");
    }
    let exact: &[(&str, &str, &str)] = &[
        (
            "core",
            "hookspath",
            "makes git run hooks from another directory",
        ),
        ("core", "fsmonitor", "runs a program (file system monitor)"),
        ("core", "pager", "runs a program (pager)"),
        ("core", "editor", "runs a program (editor)"),
        ("core", "askpass", "runs a program (password prompt)"),
        ("core", "gitproxy", "runs a program (git:// proxy)"),
        (
            "core",
            "worktree",
            "makes git write the work tree outside the repository",
        ),
        ("sequence", "editor", "runs a program (editor)"),
        ("diff", "external", "runs a program (external diff)"),
        ("diff", "textconv", "runs a program (text conversion)"),
        ("merge", "driver", "runs a program (merge driver)"),
        ("remote", "uploadpack", "runs a program on fetch"),
        ("remote", "receivepack", "runs a program on push"),
        ("uploadpack", "packobjectshook", "runs a program on fetch"),
        ("interactive", "difffilter", "runs a program (diff filter)"),
        ("sendemail", "smtpserver", "may name a program to run"),
    ];
    for &(s, n, why) in exact {
        if section == s && name == n {
            return Some(why);
        }
    }
    if section == "alias" && value_starts_with_bang() {
        return Some("a shell alias runs a program");
    }
    if section == "submodule" && sub.is_some() && name == "update" && value_starts_with_bang() {
        return Some("runs a program on submodule update");
    }
    if section == "protocol"
        && name == "allow"
        && value.is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"always"))
    {
        return Some("allows transports that run programs (ext::)");
    }
    None
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn line(&self) -> usize {
        1 + self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == b'\n' {
                break;
            }
        }
    }

    /// `[name]`, `[name "sub"]` or the old `[name.sub]`; the rest of the line may hold an entry.
    fn header(&mut self) -> Option<(String, Option<Vec<u8>>)> {
        self.i += 1; // '['
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' {
                self.i += 1;
            } else {
                break;
            }
        }
        let raw = std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .to_ascii_lowercase();
        if raw.is_empty() {
            return None;
        }
        self.skip_blank();
        let (name, sub) = if self.peek() == Some(b'"') {
            if raw.contains('.') {
                return None;
            }
            self.i += 1;
            let mut sub = Vec::new();
            loop {
                match self.peek()? {
                    b'"' => {
                        self.i += 1;
                        break;
                    }
                    b'\n' => return None,
                    b'\\' => {
                        self.i += 1;
                        let c = self.peek()?;
                        if c == b'\n' {
                            return None;
                        }
                        sub.push(c);
                        self.i += 1;
                    }
                    c => {
                        sub.push(c);
                        self.i += 1;
                    }
                }
            }
            (raw, Some(sub))
        } else {
            match raw.split_once('.') {
                Some((n, s)) => (n.to_string(), Some(s.as_bytes().to_vec())),
                None => (raw, None),
            }
        };
        if self.peek() != Some(b']') || name.is_empty() {
            return None;
        }
        self.i += 1;
        Some((name, sub))
    }

    /// `name`, `name = value`: the lower-case name and the value with quotes, escapes,
    /// comments and line continuations resolved.
    fn entry(&mut self) -> Option<(String, Option<Vec<u8>>)> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' {
                self.i += 1;
            } else {
                break;
            }
        }
        let name = std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .to_ascii_lowercase();
        self.skip_blank();
        match self.peek() {
            None | Some(b'\n') => return Some((name, None)),
            Some(b'#' | b';') => {
                self.skip_line();
                return Some((name, None));
            }
            Some(b'=') => self.i += 1,
            Some(_) => return None,
        }
        let mut value = Vec::new();
        let mut quoted = false;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'\n' if !quoted => break,
                b'\n' => return None,
                b'"' => quoted = !quoted,
                b'#' | b';' if !quoted => {
                    self.skip_line();
                    break;
                }
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'\n' => {}
                        b'\r' if self.peek() == Some(b'\n') => self.i += 1,
                        b'n' => value.push(b'\n'),
                        b't' => value.push(b'\t'),
                        b'b' => {
                            value.pop();
                        }
                        b'"' | b'\\' => value.push(e),
                        _ => return None,
                    }
                }
                c => value.push(c),
            }
        }
        if quoted {
            return None;
        }
        Some((name, Some(value)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn what_git_writes_in_a_new_repository_passes() {
        let cfg = b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\
            \tlogallrefupdates = true\n[remote \"origin\"]\n\turl = /src/repo\n\
            \tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch \"main\"]\n\tremote = origin\n\
            \tmerge = refs/heads/main\n[user]\n\tname = A \"quoted\" name ; comment\n\
            [alias]\n\tst = status\n[color]\n\tpager = false\n[submodule \"lib\"]\n\tpath = lib\n\
            \turl = ../lib\n\tupdate = rebase\n[protocol \"file\"]\n\tallow = user\n";
        assert_eq!(refusal(cfg), None);
        assert_eq!(refusal(b""), None);
        assert_eq!(refusal(b"\xef\xbb\xbf# only a comment\n"), None);
        assert_eq!(refusal(b"[core]\n\tbare\n"), None);
    }

    #[test]
    fn every_key_that_runs_a_program_or_loads_configuration_is_refused() {
        let refused = [
            "[core]\n\thooksPath = /tmp/h\n",
            "[core]\n\tfsmonitor = ./x\n",
            "[core]\n\tsshCommand = sh -c x\n",
            "[core]\n\tpager = x\n",
            "[core]\n\teditor = x\n",
            "[core]\n\taskPass = x\n",
            "[core]\n\tgitProxy = x\n",
            "[core]\n\tworktree = /home/u\n",
            "[core]\n\talternateRefsCommand = x\n",
            "[sequence]\n\teditor = x\n",
            "[diff]\n\texternal = x\n",
            "[diff \"bin\"]\n\ttextconv = x\n",
            "[diff \"bin\"]\n\tcommand = x\n",
            "[filter \"lfs\"]\n\tclean = x\n",
            "[filter \"lfs\"]\n\tsmudge = x\n",
            "[filter \"lfs\"]\n\tprocess = x\n",
            "[merge \"m\"]\n\tdriver = x\n",
            "[credential]\n\thelper = x\n",
            "[credential \"https://h\"]\n\thelper = x\n",
            "[gpg]\n\tprogram = x\n",
            "[gpg \"ssh\"]\n\tprogram = x\n",
            "[include]\n\tpath = ../x\n",
            "[includeIf \"gitdir:/\"]\n\tpath = ../x\n",
            "[alias]\n\tst = !sh -c x\n",
            "[alias]\n\tst = \"  !x\"\n",
            "[remote \"o\"]\n\tuploadpack = x\n",
            "[remote \"o\"]\n\treceivepack = x\n",
            "[uploadpack]\n\tpackObjectsHook = x\n",
            "[protocol \"ext\"]\n\tallow = always\n",
            "[protocol]\n\tallow = ALWAYS\n",
            "[submodule \"s\"]\n\tupdate = !x\n",
            "[pager]\n\tlog = x\n",
            "[difftool \"t\"]\n\tcmd = x\n",
            "[mergetool \"t\"]\n\tpath = x\n",
            "[lfs \"customtransfer.t\"]\n\tpath = x\n",
            "[tar \"tgz\"]\n\tcommand = x\n",
            "[interactive]\n\tdiffFilter = x\n",
            "[trace2]\n\teventTarget = /home/u/.bashrc\n",
            // Spellings git accepts: case, the old dotted subsection, an entry on the header's
            // line, a continued line, a header-only section followed by a key.
            "[CORE]\n\tHOOKSPATH = x\n",
            "[core] hooksPath = x\n",
            "[diff.bin]\n\ttextconv = x\n",
            "[core]\n\tsshCommand = a\\\n b\n",
            "[core]\n[core]\n\tfsmonitor\n",
        ];
        for cfg in refused {
            assert!(refusal(cfg.as_bytes()).is_some(), "not refused: {cfg:?}");
        }
        let why = refusal(b"[core]\n\thooksPath = h\n").unwrap();
        assert!(why.starts_with("core.hookspath:"), "{why}");
    }

    #[test]
    fn what_cannot_be_parsed_is_refused() {
        for cfg in [
            "hooksPath = x\n",
            "[core\n",
            "[core \"x]\n",
            "[core]\n\tkey = \"open\n",
            "[core]\n\t=x\n",
            "[core]\n\tkey = bad\\q\n",
            "[]\n",
            "\x00",
        ] {
            assert!(refusal(cfg.as_bytes()).is_some(), "not refused: {cfg:?}");
        }
    }
}
