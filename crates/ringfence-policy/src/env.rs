//! The environment filter: which host variables reach the sandboxed command. Credential-looking
//! names are removed by default; `env.allow` keeps them, `env.deny` removes more, `env.set` sets.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Name patterns removed by default (matched case-insensitively; `*` is any run of characters).
pub const DEFAULT_ENV_DENY: &[&str] = &[
    "*_TOKEN",
    "*_TOKEN_*",
    "*_SECRET*",
    "*SECRET_KEY*",
    "*_PASSWORD",
    "*_PASSWD",
    "*_PWD",
    "PGPASSWORD",
    "*_API_KEY",
    "*_APIKEY",
    "*_ACCESS_KEY*",
    "*_PRIVATE_KEY*",
    "*_CREDENTIALS*",
    "AWS_*",
    "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITLAB_TOKEN",
    "NPM_TOKEN",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "SSH_AUTH_SOCK",
    "GPG_AGENT_INFO",
    "KUBECONFIG",
    "DOCKER_AUTH_CONFIG",
    "VAULT_TOKEN",
];

/// Which environment variables the sandboxed command receives.
///
/// A variable is removed when its name matches a `deny` pattern, or matches
/// [`DEFAULT_ENV_DENY`] and no `allow` pattern. An explicit deny always wins over allow, so a
/// deny from the managed layer cannot be undone by any other layer. `set` is applied last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    /// Patterns that keep a variable the defaults would remove.
    pub allow: Vec<String>,
    /// Patterns of variables to remove.
    pub deny: Vec<String>,
    /// Variables set inside the sandbox, replacing any host value.
    pub set: BTreeMap<String, String>,
}

/// Case-insensitive match of `name` against `pattern`, where `*` matches any run of characters.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    // Every run checks each host variable against every pattern: ASCII (nearly every name)
    // is matched in place, without the two allocations of the general case.
    if pattern.is_ascii() && name.is_ascii() {
        return match_lowered(pattern.as_bytes(), name.as_bytes(), |c| {
            c.to_ascii_lowercase()
        });
    }
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    match_lowered(&p, &n, |c| c)
}

/// `*` matching of `n` against `p` after `lower` is applied to both: iterative, with
/// backtracking to the last '*'.
fn match_lowered<T: Copy + PartialEq + From<u8>>(p: &[T], n: &[T], lower: impl Fn(T) -> T) -> bool {
    let star_char = T::from(b'*');
    let p_at = |i: usize| lower(p[i]);
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p_at(pi) == star_char {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p_at(pi) == lower(n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| lower(c) == star_char)
}

impl EnvPolicy {
    /// Whether a host variable of this name is withheld from the sandbox.
    pub fn removes(&self, name: &str) -> bool {
        let matches = |p: &str| wildcard_match(p, name);
        if self.deny.iter().any(|p| matches(p)) {
            return true;
        }
        DEFAULT_ENV_DENY.iter().any(|p| matches(p)) && !self.allow.iter().any(|p| matches(p))
    }

    /// Filters the host environment: returns the variables to pass (kept ones in their original
    /// order, then `set`) and the names of the host variables that were removed.
    pub fn filter(
        &self,
        vars: Vec<(OsString, OsString)>,
    ) -> (Vec<(OsString, OsString)>, Vec<String>) {
        let mut kept = Vec::with_capacity(vars.len() + self.set.len());
        let mut removed = Vec::new();
        for (name, value) in vars {
            let text = name.to_string_lossy();
            if self.removes(&text) {
                removed.push(text.into_owned());
            } else if !self.set.contains_key(text.as_ref()) {
                kept.push((name, value));
            }
        }
        kept.extend(
            self.set
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        (kept, removed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn vars(names: &[&str]) -> Vec<(OsString, OsString)> {
        names
            .iter()
            .map(|n| (OsString::from(n), OsString::from("v")))
            .collect()
    }

    fn names(v: &[(OsString, OsString)]) -> Vec<String> {
        v.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*_TOKEN", "GITHUB_TOKEN"));
        assert!(wildcard_match("*_TOKEN", "github_token"));
        assert!(!wildcard_match("*_TOKEN", "TOKEN"));
        assert!(!wildcard_match("*_TOKEN", "GITHUB_TOKENS"));
        assert!(wildcard_match("*_TOKEN_*", "A_TOKEN_FILE"));
        assert!(wildcard_match("AWS_*", "AWS_"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("PATH", "path"));
        assert!(!wildcard_match("PATH", "PATHS"));
        // Outside ASCII, the general path: Unicode lowercase on both sides.
        assert!(wildcard_match("*_TÖKEN", "my_tökEN"));
        assert!(wildcard_match("*_TOKEN", "ÄPFEL_TOKEN"));
        assert!(!wildcard_match("*_TÖKEN", "my_token"));
    }

    #[test]
    fn defaults_remove_credentials() {
        let policy = EnvPolicy::default();
        let secret = [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "NPM_TOKEN",
            "MY_TOKEN",
            "SOME_TOKEN_FILE",
            "DB_PASSWORD",
            "CLIENT_SECRET",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_PROFILE",
            "AZURE_CLIENT_ID",
            "STRIPE_API_KEY",
            "X_APIKEY",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "SSH_AUTH_SOCK",
            "GPG_AGENT_INFO",
            "KUBECONFIG",
            "VAULT_TOKEN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "DOCKER_AUTH_CONFIG",
            "my_private_key_path",
            "PGPASSWORD",
            "MYSQL_PWD",
            "APP_SECRET_KEY_BASE",
            "SERVICE_CREDENTIALS_JSON",
        ];
        let plain = [
            "PATH",
            "HOME",
            "LANG",
            "TERM",
            "USER",
            "PWD",
            "OLDPWD",
            "SHELL",
            "TOKENIZERS_PARALLELISM",
        ];
        let mut all: Vec<&str> = secret.to_vec();
        all.extend(plain);
        let (kept, removed) = policy.filter(vars(&all));
        assert_eq!(names(&kept), plain);
        assert_eq!(removed, secret);
    }

    #[test]
    fn allow_deny_set() {
        let policy = EnvPolicy {
            allow: vec!["AWS_PROFILE".into(), "aws_region".into()],
            deny: vec!["CORP_*".into(), "AWS_REGION".into()],
            set: BTreeMap::from([
                ("LANG".into(), "C.UTF-8".into()),
                ("NEW".into(), "1".into()),
            ]),
        };
        let (kept, removed) = policy.filter(vec![
            ("AWS_PROFILE".into(), "dev".into()),
            ("AWS_REGION".into(), "eu".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
            ("CORP_PROXY".into(), "p".into()),
            ("LANG".into(), "de_DE".into()),
            ("PATH".into(), "/bin".into()),
        ]);
        assert_eq!(
            kept,
            vec![
                ("AWS_PROFILE".into(), "dev".into()),
                ("PATH".into(), "/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("NEW".into(), "1".into()),
            ]
        );
        // deny beats allow: AWS_REGION is allowed and denied.
        assert_eq!(
            removed,
            ["AWS_REGION", "AWS_SECRET_ACCESS_KEY", "CORP_PROXY"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_filtered_by_their_lossy_form() {
        use std::os::unix::ffi::OsStringExt;
        let name = OsString::from_vec(b"X\xff_TOKEN".to_vec());
        let (kept, removed) = EnvPolicy::default().filter(vec![(name, "v".into())]);
        assert!(kept.is_empty());
        assert_eq!(removed.len(), 1);
    }
}
