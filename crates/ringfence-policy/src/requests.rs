//! Request rules (`network.requests`) for requests inside TLS-terminated tunnels: which
//! method, path and header fields a request to a host may have. Pure: the host part of a rule
//! is matched by the proxy (allowedDomains syntax); this module normalises paths once and
//! matches the rest.
//!
//! A request is denied when a deny rule matches it; otherwise, when its host has allow rules,
//! one of them must match it; a host without rules is not restricted.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RequestAction {
    Allow,
    Deny,
}

/// One entry of `network.requests`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRuleSettings {
    /// Host pattern, allowedDomains syntax ("github.com", "*.example.com", "api.example.com:8443").
    pub host: String,
    /// HTTP method ("POST"); any when absent or "*".
    pub method: Option<String>,
    /// Path glob on the normalised path, without the query: `*` within one segment, `**` across
    /// segments ("/*/git-receive-pack", "/api/**"); any when absent.
    pub path: Option<String>,
    /// Header fields that must be present with a value matching the glob (`*` any run of
    /// characters); names without case.
    pub headers: Option<BTreeMap<String, String>>,
    /// "allow" or "deny".
    pub action: RequestAction,
    /// Shown to the client and in the activity log when the rule denies.
    pub reason: Option<String>,
}

/// A request rule of the merged policy, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRule {
    /// `FILE: network.requests[N]`.
    pub origin: String,
    pub host: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub headers: Vec<(String, String)>,
    pub action: RequestAction,
    pub reason: Option<String>,
}

impl RequestRule {
    /// The rule of one settings entry; `origin` names it in logs (`FILE: network.requests[N]`).
    pub fn from_settings(s: &RequestRuleSettings, origin: String) -> RequestRule {
        RequestRule {
            origin,
            host: s.host.clone(),
            method: s
                .method
                .clone()
                .filter(|m| m != "*")
                .map(|m| m.to_ascii_uppercase()),
            path: s.path.clone(),
            headers: s
                .headers
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            action: s.action,
            reason: s.reason.clone(),
        }
    }

    /// Whether the method, path and fields of a request (its host matched already) match.
    /// `path` is normalised ([`normalize_path`]); `header` gives a field's values by
    /// lowercase name.
    pub fn matches<'a>(
        &self,
        method: &str,
        path: &str,
        header: &dyn Fn(&str) -> Vec<&'a str>,
    ) -> bool {
        if self
            .method
            .as_deref()
            .is_some_and(|m| !m.eq_ignore_ascii_case(method))
        {
            return false;
        }
        if self.path.as_deref().is_some_and(|p| !path_matches(p, path)) {
            return false;
        }
        self.headers.iter().all(|(k, v)| {
            header(k)
                .iter()
                .any(|have| glob(v.as_bytes(), have.as_bytes()))
        })
    }

    /// The rule as the log names it.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} {} {}{})",
            self.origin,
            match self.action {
                RequestAction::Allow => "allow",
                RequestAction::Deny => "deny",
            },
            self.method.as_deref().unwrap_or("*"),
            self.host,
            self.path.as_deref().unwrap_or("")
        )
    }
}

/// The checks of one `network.requests` entry; the message names what is wrong.
pub(crate) fn check(r: &RequestRuleSettings) -> Result<(), (String, String)> {
    crate::settings::check_domain(&r.host, false).map_err(|m| ("host".to_string(), m))?;
    if let Some(m) = &r.method {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if m.is_empty() || !m.bytes().all(token) {
            return Err(("method".into(), format!("\"{m}\" is not an HTTP method")));
        }
    }
    if let Some(p) = &r.path {
        if !p.starts_with('/') {
            return Err(("path".into(), format!("\"{p}\" must start with \"/\"")));
        }
        if p.contains('?') {
            return Err((
                "path".into(),
                "the query is not matched; write the path only".into(),
            ));
        }
    }
    for name in r.headers.iter().flatten().map(|(k, _)| k) {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err((format!("headers.{name}"), "not a header field name".into()));
        }
    }
    Ok(())
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path as rules see it and as it is forwarded: percent-escapes of unreserved characters
/// decoded (`%2e` is `.`, `%41` is `A`), the others in upper case (`%2F` stays escaped: it is
/// not a separator), runs of `/` collapsed, `.` and `..` segments resolved (RFC 3986 5.2.4).
/// `None` for a malformed escape.
pub fn normalize_path(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
            let c = h * 16 + l;
            if unreserved(c) {
                decoded.push(c as char);
            } else {
                decoded.push_str(&format!("%{c:02X}"));
            }
            i += 3;
        } else {
            // A path is ASCII in HTTP; other bytes are kept as they are.
            let ch = path[i..].chars().next()?;
            decoded.push(ch);
            i += ch.len_utf8();
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let trailing = matches!(segments.last(), Some(&"") | Some(&".") | Some(&".."));
    for s in &segments {
        match *s {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut n = String::with_capacity(decoded.len());
    for s in &out {
        n.push('/');
        n.push_str(s);
    }
    if n.is_empty() || (trailing && !out.is_empty()) {
        n.push('/');
    }
    Some(n)
}

/// A path glob against a normalised path: `**` matches any run (slashes included), `*` a run
/// within one segment, everything else itself.
fn path_matches(pattern: &str, path: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                (0..=s.len()).any(|i| m(rest, &s[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                let seg = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=seg).any(|i| m(rest, &s[i..]))
            }
            Some(&c) => s.first() == Some(&c) && m(&p[1..], &s[1..]),
        }
    }
    m(pattern.as_bytes(), path.as_bytes())
}

/// `*` matches any run of bytes; the rest matches itself.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_once() {
        for (raw, want) in [
            ("/", "/"),
            ("", "/"),
            ("/a//b/", "/a/b/"),
            ("/a/./b/../c", "/a/c"),
            ("/a/%2e%2E/b", "/b"),
            ("/%61pi/x%2Fy", "/api/x%2Fy"),
            ("/a/%2f", "/a/%2F"),
            ("/../../etc", "/etc"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("//x", "/x"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(normalize_path("/a%zz"), None);
        assert_eq!(normalize_path("/a%2"), None);
    }

    #[test]
    fn rules_match_method_path_and_fields() {
        let s: RequestRuleSettings = serde_json::from_str(
            r#"{"host": "github.com", "method": "post", "path": "/*/git-receive-pack",
                "headers": {"Content-Type": "application/x-git-*"}, "action": "deny"}"#,
        )
        .unwrap();
        let r = RequestRule::from_settings(&s, "x".into());
        let ct = |n: &str| {
            if n == "content-type" {
                vec!["application/x-git-receive-pack-request"]
            } else {
                vec![]
            }
        };
        assert!(r.matches("POST", "/o/git-receive-pack", &ct));
        assert!(!r.matches("GET", "/o/git-receive-pack", &ct));
        assert!(!r.matches("POST", "/o/r/git-receive-pack", &ct));
        assert!(!r.matches("POST", "/o/git-receive-pack", &|_| vec![]));
        assert!(path_matches("/api/**", "/api/a/b"));
        assert!(path_matches("/**/x", "/a/b/x"));
        assert!(!path_matches("/api/*", "/api/a/b"));
    }

    #[test]
    fn invalid_rules_name_the_field() {
        for (json, field) in [
            (r#"{"host": "a b", "action": "deny"}"#, "host"),
            (
                r#"{"host": "a.com", "method": "GE T", "action": "deny"}"#,
                "method",
            ),
            (
                r#"{"host": "a.com", "path": "x", "action": "deny"}"#,
                "path",
            ),
            (
                r#"{"host": "a.com", "path": "/x?y", "action": "deny"}"#,
                "path",
            ),
        ] {
            let s: RequestRuleSettings = serde_json::from_str(json).unwrap();
            assert_eq!(check(&s).unwrap_err().0, field, "{json}");
        }
    }
}
