//! Command permission rules (`permissions.allow` / `ask` / `deny`): the `Bash(...)` pattern
//! syntax agent harnesses already use, parsed once when the policy loads and matched against the
//! words of one simple command. Splitting a shell string into simple commands is
//! `ringfence-shell`'s job; this module only compares words.

use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::Layer;

/// What happens to a command that no rule matches (`permissions.defaultMode`).
/// Ordered from the loosest to the strictest.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum DefaultMode {
    /// Allow it when the analysis finds nothing that the sandbox would not contain.
    Sandboxed,
    /// Ask a person (the default).
    #[default]
    Ask,
    /// Refuse it.
    Deny,
}

impl fmt::Display for DefaultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultMode::Sandboxed => "sandboxed",
            DefaultMode::Ask => "ask",
            DefaultMode::Deny => "deny",
        })
    }
}

/// The list a rule came from. Ordered by strength: deny > ask > allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleList {
    Allow,
    Ask,
    Deny,
}

impl fmt::Display for RuleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleList::Allow => "allow",
            RuleList::Ask => "ask",
            RuleList::Deny => "deny",
        })
    }
}

/// One word of a command as the matcher sees it: its value, or `None` when the value is only
/// known when the command runs (`$X`, `$(...)`, text read by `xargs`).
pub type CommandWord<'a> = Option<&'a str>;

/// One parsed rule: `Bash(git diff:*)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRule {
    /// The rule as written.
    pub text: String,
    /// The words to match, each a pattern where `*` matches any characters inside one word.
    pub words: Vec<String>,
    /// `:*` (or a final ` *`): any further words may follow.
    pub prefix: bool,
    /// Where the rule came from.
    pub layer: Layer,
    /// The file (or option) that holds it, for messages.
    pub origin: String,
}

impl CommandRule {
    /// Parses `Bash`, `Bash(*)`, `Bash(WORDS)` or `Bash(WORDS:*)`. The error says what is wrong
    /// with the rule; the caller adds the key path.
    pub fn parse(text: &str, layer: Layer, origin: &str) -> Result<CommandRule, String> {
        let rule = |words: Vec<String>, prefix: bool| CommandRule {
            text: text.to_string(),
            words,
            prefix,
            layer,
            origin: origin.to_string(),
        };
        let t = text.trim();
        if t == "Bash" {
            return Ok(rule(Vec::new(), true));
        }
        let inner = match t.strip_prefix("Bash(") {
            Some(rest) => rest.strip_suffix(')').ok_or_else(|| {
                format!("\"{text}\": a rule is Bash(COMMAND WORDS) and ends with \")\"")
            })?,
            None => {
                return Err(format!(
                    "\"{text}\": a rule is Bash(COMMAND WORDS), e.g. Bash(git diff:*); \
                     only shell command rules are understood"
                ))
            }
        };
        let (body, mut prefix) = match inner.strip_suffix(":*") {
            Some(b) => (b, true),
            None => (inner, false),
        };
        if body.contains(":*") {
            return Err(format!("\"{text}\": \":*\" may only end the pattern"));
        }
        let mut words = split_words(body).map_err(|m| format!("\"{text}\": {m}"))?;
        if !prefix && words.last().is_some_and(|w| w == "*") {
            words.pop();
            prefix = true;
        }
        if words.is_empty() && !prefix {
            return Err(format!(
                "\"{text}\": the pattern is empty; write Bash(*) for every command"
            ));
        }
        if words.first().is_some_and(|w| w.is_empty()) {
            return Err(format!("\"{text}\": the command name is empty"));
        }
        Ok(rule(words, prefix))
    }

    /// Whether this rule matches a command's words. A word whose value is unknown (`None`)
    /// matches a pattern word only if `unknown_matches` (ask and deny rules: it could be
    /// anything) or the pattern word is `*`.
    pub fn matches(&self, argv: &[CommandWord<'_>], unknown_matches: bool) -> bool {
        if argv.len() < self.words.len() || (!self.prefix && argv.len() != self.words.len()) {
            return false;
        }
        self.words.iter().zip(argv).enumerate().all(|(i, (p, w))| {
            let Some(w) = w else {
                return unknown_matches || p == "*";
            };
            if wildcard(p, w) {
                return true;
            }
            // `/usr/bin/sudo` is `sudo` to a rule that names no directory.
            i == 0 && !p.contains('/') && w.rsplit('/').next().is_some_and(|b| wildcard(p, b))
        })
    }
}

impl fmt::Display for CommandRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Default of `permissions.confirmDeletes` (and of `workspace.confirmDeletes`): a command that
/// deletes more than this many files in the workspace asks.
pub const CONFIRM_DELETES: u64 = 10;

/// The merged `permissions` of all layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub allow: Vec<CommandRule>,
    pub ask: Vec<CommandRule>,
    pub deny: Vec<CommandRule>,
    pub default_mode: DefaultMode,
    /// A command that deletes more than this many files inside a writable root asks.
    pub confirm_deletes: u64,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            allow: Vec::new(),
            ask: Vec::new(),
            deny: Vec::new(),
            default_mode: DefaultMode::default(),
            confirm_deletes: CONFIRM_DELETES,
        }
    }
}

impl Permissions {
    /// The rules of one list.
    pub fn list(&self, list: RuleList) -> &[CommandRule] {
        match list {
            RuleList::Allow => &self.allow,
            RuleList::Ask => &self.ask,
            RuleList::Deny => &self.deny,
        }
    }
}

/// Splits a pattern into words at blanks; `'...'` and `"..."` quote, `\` escapes one character
/// (so `\*` is a literal star, kept as `\*` for the word matcher).
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('*') => cur.push_str("\\*"),
                        Some('\\') if c == '"' => match chars.next() {
                            Some('*') => cur.push_str("\\*"),
                            Some(n) => cur.push(n),
                            None => return Err("unbalanced quote".into()),
                        },
                        Some(q) => cur.push(q),
                        None => return Err("unbalanced quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('*') => cur.push_str("\\*"),
                    Some(n) => cur.push(n),
                    None => return Err("a trailing \\ escapes nothing".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `*` matches any run of characters; `\*` is a literal star.
fn wildcard(pattern: &str, text: &str) -> bool {
    // Pattern tokens: Some(c) a literal character, None a star.
    let mut toks: Vec<Option<char>> = Vec::with_capacity(pattern.len());
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(n) => toks.push(Some(n)),
                None => toks.push(Some('\\')),
            },
            '*' => toks.push(None),
            c => toks.push(Some(c)),
        }
    }
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer glob match with backtracking to the last star.
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < t.len() {
        match toks.get(p) {
            Some(Some(c)) if *c == t[s] => {
                p += 1;
                s += 1;
            }
            Some(None) => {
                star = Some((p, s));
                p += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    p = sp + 1;
                    s = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| t.is_none())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rule(s: &str) -> CommandRule {
        CommandRule::parse(s, Layer::User, "test").unwrap()
    }

    fn m(r: &str, cmd: &str) -> bool {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let argv: Vec<CommandWord> = words.iter().map(|w| Some(*w)).collect();
        rule(r).matches(&argv, false)
    }

    #[test]
    fn parse_forms() {
        let r = rule("Bash(npm run test:*)");
        assert_eq!(r.words, ["npm", "run", "test"]);
        assert!(r.prefix);
        let r = rule("Bash(git diff)");
        assert_eq!(r.words, ["git", "diff"]);
        assert!(!r.prefix);
        assert!(rule("Bash").prefix && rule("Bash").words.is_empty());
        assert!(rule("Bash(*)").prefix && rule("Bash(*)").words.is_empty());
        assert_eq!(rule("Bash(git log *)").words, ["git", "log"]);
        assert!(rule("Bash(git log *)").prefix);
        assert_eq!(
            rule(r#"Bash(git commit -m "a b":*)"#).words,
            ["git", "commit", "-m", "a b"]
        );
        assert_eq!(rule("Bash(echo '*')").words, ["echo", "\\*"]);
    }

    #[test]
    fn parse_errors() {
        for (text, want) in [
            ("Read(./x)", "only shell command rules"),
            ("Bash(git diff", "ends with \")\""),
            ("Bash()", "the pattern is empty"),
            ("Bash(a:*b)", "may only end"),
            ("Bash(a:* b:*)", "may only end"),
            ("Bash(echo 'x)", "unbalanced quote"),
            ("bash(ls)", "a rule is Bash(COMMAND WORDS)"),
            ("Bash('' x)", "command name is empty"),
        ] {
            let e = CommandRule::parse(text, Layer::User, "t").unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn matching_table() {
        for (r, cmd, want) in [
            ("Bash(npm run test:*)", "npm run test", true),
            ("Bash(npm run test:*)", "npm run test --watch", true),
            ("Bash(npm run test:*)", "npm run testing", false),
            ("Bash(npm run test:*)", "npm run", false),
            ("Bash(npm run test*)", "npm run test:unit", true),
            ("Bash(git diff)", "git diff", true),
            ("Bash(git diff)", "git diff HEAD", false),
            ("Bash(sudo:*)", "sudo rm -rf /", true),
            ("Bash(sudo:*)", "/usr/bin/sudo ls", true),
            ("Bash(/usr/bin/sudo:*)", "sudo ls", false),
            ("Bash(git push * main)", "git push origin main", true),
            ("Bash(git push * main)", "git push origin dev", false),
            ("Bash(rm *.o)", "rm main.o", true),
            ("Bash(rm *.o)", "rm main.c", false),
            ("Bash(*)", "anything at all", true),
            ("Bash", "ls", true),
            ("Bash(echo '*')", "echo *", true),
            ("Bash(echo '*')", "echo x", false),
            ("Bash(git log *)", "git log", true),
            ("Bash(a*b*c)", "aXbYc", true),
            ("Bash(a*b*c)", "aXbY", false),
        ] {
            assert_eq!(m(r, cmd), want, "{r} vs {cmd}");
        }
    }

    #[test]
    fn unknown_words() {
        let argv = [Some("git"), Some("push"), None];
        assert!(rule("Bash(git push --force:*)").matches(&argv, true));
        assert!(!rule("Bash(git push --force:*)").matches(&argv, false));
        assert!(rule("Bash(git push:*)").matches(&argv, false));
        assert!(rule("Bash(git push *)").matches(&argv, false));
        assert!(!rule("Bash(git push origin)").matches(&argv, false));
    }

    #[test]
    fn strength_order() {
        assert!(RuleList::Deny > RuleList::Ask && RuleList::Ask > RuleList::Allow);
        assert!(DefaultMode::Deny > DefaultMode::Ask && DefaultMode::Ask > DefaultMode::Sandboxed);
        assert_eq!(DefaultMode::default(), DefaultMode::Ask);
    }
}
