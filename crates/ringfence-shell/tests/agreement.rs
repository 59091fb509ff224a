//! The shell analyser predicts what the sandbox will do, so it must read hosts and protected
//! names exactly as the proxy and the filesystem rules do: each tricky case below is put to the
//! analyser, to the proxy's policy (`NetPolicy::decide`) and to the mount scan's rule
//! (`protect::is_protected_path`, the rule the creation guard applies too), and all must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use ringfence_policy::{NetworkSettings, Permissions};
use ringfence_proxy::{NetPolicy, Verdict};
use ringfence_shell::{analyse, Context, FindingKind};

fn ctx(allowed: &[&str], denied: &[&str], allow_git_config: bool) -> Context {
    Context {
        cwd: "/w".into(),
        home: "/home/u".into(),
        writable_roots: vec!["/w".into(), "/home/u".into()],
        deny_write: vec![],
        deny_read: vec![],
        allow_read: vec![],
        secret_files: vec![],
        allowed_domains: allowed.iter().map(|s| s.to_string()).collect(),
        denied_domains: denied.iter().map(|s| s.to_string()).collect(),
        allow_git_config,
        allow_unix_sockets: false,
        permissions: Permissions::default(),
        disk: None,
    }
}

fn proxy_allows(allowed: &[&str], denied: &[&str], host: &str) -> bool {
    let n = NetworkSettings {
        allowed_domains: allowed.iter().map(|s| s.to_string()).collect(),
        denied_domains: denied.iter().map(|s| s.to_string()).collect(),
        ..NetworkSettings::default()
    };
    let p = NetPolicy::from_network(&n, false, Duration::from_secs(1)).unwrap();
    matches!(p.decide(host, 443), Verdict::Allow { .. })
}

fn shell_allows(allowed: &[&str], denied: &[&str], host: &str) -> bool {
    let a = analyse(
        &format!("curl -sS https://{host}/x"),
        &ctx(allowed, denied, false),
    );
    !a.findings.iter().any(|f| f.kind == FindingKind::Network)
}

#[test]
fn shell_and_proxy_agree_on_hosts() {
    let allowed = &[
        "example.com",
        "*.Npmjs.ORG",
        "xn--bcher-kva.example",
        "allowed.test.",
        "api.port.net:443",
        "*.deny-inside.com",
    ];
    let denied = &["bad.deny-inside.com", "*.worse.deny-inside.com"];
    let cases = [
        "example.com",
        "EXAMPLE.com",
        "example.com.",
        "example.com..",
        "sub.example.com",
        "registry.npmjs.org",
        "REGISTRY.NPMJS.org.",
        "npmjs.org",
        "evilnpmjs.org",
        "a.b.npmjs.org",
        "bücher.example",
        "BÜCHER.example",
        "xn--bcher-kva.example",
        "allowed.test",
        "api.port.net",
        "ok.deny-inside.com",
        "bad.deny-inside.com",
        "BAD.deny-inside.com.",
        "x.worse.deny-inside.com",
        "worse.deny-inside.com",
        "exa_mple.com",
        "example.com.evil.org",
    ];
    for host in cases {
        assert_eq!(
            shell_allows(allowed, denied, host),
            proxy_allows(allowed, denied, host),
            "{host}"
        );
    }
    // The old, looser matcher said yes to these; the proxy says no.
    assert!(!shell_allows(allowed, denied, "example.com.."));
    assert!(!shell_allows(allowed, denied, "npmjs.org"));
    // ... and no to these, which the proxy allows.
    assert!(shell_allows(allowed, denied, "bücher.example"));
    assert!(proxy_allows(allowed, denied, "bücher.example"));
    assert!(!shell_allows(allowed, denied, "bücher.other"));
    assert!(!shell_allows(allowed, denied, "bad.deny-inside.com"));
}

fn shell_protects(path: &str, allow_git_config: bool) -> bool {
    let a = analyse(
        &format!("echo x > '{path}'"),
        &ctx(&[], &[], allow_git_config),
    );
    a.findings
        .iter()
        .any(|f| f.kind == FindingKind::ProtectedWrite)
}

#[test]
fn shell_and_filesystem_rules_agree_on_protected_names() {
    let cases = [
        "/w/.bashrc",
        "/w/a/b/c/d/e/f/.bashrc",
        "/w/.BASHRC",
        "/w/x.bashrc",
        "/w/.bashrc.bak",
        "/home/u/.zshrc",
        "/w/.vscode/tasks.json",
        "/w/deep/er/.idea/workspace.xml",
        "/w/.git/hooks/pre-commit",
        "/w/sub/.git/hooks/post-checkout",
        "/w/.git/modules/m/hooks/pre-push",
        "/w/.git/worktrees/t/commondir",
        "/w/.GIT/HOOKS/pre-commit",
        "/w/.git/hoo\u{212A}s/pre-commit",
        "/w/.git/config",
        "/w/.git/modules/m/config",
        "/w/.git/objects/ab/cd",
        "/w/hooks/pre-commit",
        "/w/config",
        "/w/.claude/settings.json",
        "/w/.claude/notes.md",
        "/w/p/.mcp.json",
        "/w/.envrc",
        "/w/src/main.rs",
    ];
    for allow_git_config in [false, true] {
        let rule = ringfence_policy::ProtectedNames::new(allow_git_config);
        for path in cases {
            let rel = Path::new(path)
                .strip_prefix("/w")
                .unwrap_or(Path::new(path));
            let fs = ringfence_linux::protect::is_protected_path(rel, &rule);
            assert_eq!(
                shell_protects(path, allow_git_config),
                fs,
                "{path} (allowGitConfig {allow_git_config})"
            );
        }
    }
    assert!(shell_protects("/w/.git/config", false));
    assert!(!shell_protects("/w/.git/config", true));
    assert!(shell_protects("/w/.git/modules/m/hooks/x", true));
    assert!(shell_protects("/w/.BASHRC", false));
}
