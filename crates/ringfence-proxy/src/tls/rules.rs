//! `network.requests` compiled for the proxy: each rule's host as a domain pattern (matched
//! like allowedDomains), the rest matched by `ringfence_policy::RequestRule`.

use ringfence_policy::{RequestAction, RequestRule};

use crate::host::Host;
use crate::policy::DomainList;
use crate::Error;

/// What the rules say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleVerdict {
    /// No rule for this host.
    Unrestricted,
    /// An allow rule matched (and no deny rule): the rule.
    Allowed(String),
    /// A deny rule matched, or the host has allow rules and none matched.
    Denied {
        rule: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Rules(Vec<(DomainList, RequestRule)>);

impl Rules {
    pub(crate) fn compile(rules: &[RequestRule]) -> Result<Rules, Error> {
        rules
            .iter()
            .map(|r| {
                DomainList::parse("network.requests.host", std::slice::from_ref(&r.host))
                    .map(|d| (d, r.clone()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Rules)
    }

    /// Whether some rule names `host:port`.
    pub(crate) fn cover(&self, host: &Host, port: u16) -> bool {
        self.0.iter().any(|(d, _)| d.matches(host, port))
    }

    /// [`Rules::decide`] for a path forwarded as spelled (`ambiguousRequestTarget:
    /// "asSpelled"`): the rules must hold for both readings of it, so a deny of either wins.
    pub(crate) fn decide_readings<'a>(
        &self,
        host: &Host,
        port: u16,
        method: &str,
        spelled: &str,
        normal: &str,
        header: &dyn Fn(&str) -> Vec<&'a str>,
    ) -> RuleVerdict {
        let first = self.decide(host, port, method, normal, header);
        if spelled == normal || matches!(first, RuleVerdict::Denied { .. }) {
            return first;
        }
        match self.decide(host, port, method, spelled, header) {
            denied @ RuleVerdict::Denied { .. } => denied,
            _ => first,
        }
    }

    /// Deny beats allow; a host with allow rules gets only what one of them allows.
    pub(crate) fn decide<'a>(
        &self,
        host: &Host,
        port: u16,
        method: &str,
        path: &str,
        header: &dyn Fn(&str) -> Vec<&'a str>,
    ) -> RuleVerdict {
        let mine: Vec<&RequestRule> = self
            .0
            .iter()
            .filter(|(d, _)| d.matches(host, port))
            .map(|(_, r)| r)
            .collect();
        if mine.is_empty() {
            return RuleVerdict::Unrestricted;
        }
        let matching = |a: RequestAction| {
            mine.iter()
                .find(|r| r.action == a && r.matches(method, path, header))
        };
        if let Some(r) = matching(RequestAction::Deny) {
            return RuleVerdict::Denied {
                rule: Some(r.describe()),
                reason: r
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("{method} {path} is denied by a request rule")),
            };
        }
        if let Some(r) = matching(RequestAction::Allow) {
            return RuleVerdict::Allowed(r.describe());
        }
        if mine.iter().any(|r| r.action == RequestAction::Allow) {
            return RuleVerdict::Denied {
                rule: None,
                reason: format!(
                    "{method} {path} matches none of the allow rules for {host} (network.requests)"
                ),
            };
        }
        RuleVerdict::Unrestricted
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Rules {
        let s: Vec<ringfence_policy::RequestRuleSettings> = serde_json::from_str(json).unwrap();
        let r: Vec<RequestRule> = s
            .iter()
            .enumerate()
            .map(|(i, s)| RequestRule::from_settings(s, format!("t: network.requests[{i}]")))
            .collect();
        Rules::compile(&r).unwrap()
    }

    #[test]
    fn deny_beats_allow_and_allow_rules_restrict_their_host() {
        let r = rules(
            r#"[{"host": "github.com", "method": "POST", "path": "/*/git-receive-pack", "action": "deny", "reason": "no pushes"},
                {"host": "github.com", "path": "/**", "action": "allow"},
                {"host": "api.example.com", "method": "GET", "action": "allow"}]"#,
        );
        let none = |_: &str| Vec::new();
        let gh = Host::Name("github.com".into());
        let api = Host::Name("api.example.com".into());
        assert!(matches!(
            r.decide(&gh, 443, "POST", "/o/git-receive-pack", &none),
            RuleVerdict::Denied { reason, .. } if reason == "no pushes"
        ));
        assert!(matches!(
            r.decide(&gh, 443, "POST", "/o/git-upload-pack", &none),
            RuleVerdict::Allowed(_)
        ));
        assert!(matches!(
            r.decide(&api, 443, "DELETE", "/x", &none),
            RuleVerdict::Denied { rule: None, .. }
        ));
        assert_eq!(
            r.decide(&Host::Name("other.com".into()), 443, "DELETE", "/", &none),
            RuleVerdict::Unrestricted
        );
        // Both readings of a path forwarded as spelled: a deny of either wins.
        let r2 = rules(
            r#"[{"host": "github.com", "path": "/admin/**", "action": "deny"},
                {"host": "github.com", "path": "/public/**", "action": "allow"}]"#,
        );
        assert!(matches!(
            r2.decide_readings(&gh, 443, "GET", "/public/%2e%2e/admin/x", "/admin/x", &none),
            RuleVerdict::Denied { .. }
        ));
        assert!(matches!(
            r2.decide_readings(&gh, 443, "GET", "/public/a/../b", "/public/b", &none),
            RuleVerdict::Allowed(_)
        ));
        assert!(matches!(
            r2.decide_readings(&gh, 443, "GET", "/admin/../public/b", "/public/b", &none),
            RuleVerdict::Denied { .. }
        ));
        assert!(r.cover(&gh, 443));
        assert!(!r.cover(&Host::Name("other.com".into()), 443));
    }
}
