//! Policy for ringfence: the settings file format (a strict superset of srt's), layered loading
//! (managed > user > project > command line), validation, and the environment filter.
//! Pure logic: no syscalls and no async; the filesystem is only read to load files and expand globs.

mod commands;
pub mod domains;
mod egress;
mod env;
mod error;
mod inject;
mod limits;
mod load;
mod mask;
mod paths;
mod protected;
mod requests;
mod secrets;
mod settings;
mod tls;

use std::fmt;

pub use commands::{CommandRule, CommandWord, DefaultMode, Permissions, RuleList, CONFIRM_DELETES};
pub use egress::{redact, NoProxy, ParentProxy, ParentProxyError, ProxyUrl};
pub use env::{EnvPolicy, DEFAULT_ENV_DENY};
pub use error::Error;
pub use inject::{parse_template, HeaderInjection, TemplatePart};
pub use limits::{default_memory, format_size, parse_size, Limits};
pub use load::{
    load, AwsPair, CliRules, HostEnv, LoadOptions, MaskedEnv, MaskedFile, Policy, Sigv4Passthrough,
    Workspace, ASK_TIMEOUT_SECONDS,
};
pub use mask::{fake_jwt, is_jwt, mask_jwt_claims, mask_spans, MaskError, Masked, JWT_PATTERN};
pub use paths::{expand_glob, is_glob, is_within, normalize, resolve_path, PathRule};
pub use protected::{is_git_dir, same_name, ProtectedNames, Protection};
pub use requests::{normalize_path, RequestAction, RequestRule, RequestRuleSettings};
pub use secrets::{
    is_secret_name, is_secret_path, DEFAULT_DENY_READ, NOT_SECRET_NAMES, SECRET_FILE_NAMES,
};
pub use settings::{
    parse_settings, AmbiguousRequestTarget, AwsPairSettings, ByteSize, CredentialEnvVarSettings,
    CredentialFileSettings, CredentialMode, CredentialSettings, DecodeFormat, EnvSettings,
    FilesystemSettings, GitSettings, HeaderInjectSettings, LimitSettings, MitmProxySettings,
    NetworkSettings, OnExtractNoMatch, ParentProxySettings, PathEntry, PermissionSettings,
    RipgrepSettings, SeccompSettings, Settings, Sigv4Policy, Sigv4Settings, SrtWinSettings,
    TlsTerminateSettings, WindowsBackend, WindowsSettings, WorkspaceMode, WorkspaceSettings,
};
pub use tls::{TlsTerminate, HANDSHAKE_TIMEOUT_MS, MAX_TUNNELS};

/// File names that are never writable inside a writable root, at any depth, existing or not:
/// a compromised agent could use them to run code outside the sandbox later.
pub const PROTECTED_FILE_NAMES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".zshrc",
    ".zprofile",
    ".profile",
    ".gitconfig",
    ".gitmodules",
    ".ripgreprc",
    ".mcp.json",
    ".envrc",
    ".ringfence.json",
    ".srt-settings.json",
];

/// Directory names whose whole subtree is never writable (editor configuration that can run tasks).
pub const PROTECTED_DIR_NAMES: &[&str] = &[".vscode", ".idea", ".cursor", ".codex"];

/// `(parent, child)` pairs protected wherever the parent directory occurs; `.git/config` is
/// released by `allowGitConfig`.
pub const PROTECTED_NESTED: &[(&str, &str)] = &[
    (".claude", "commands"),
    (".claude", "agents"),
    (".claude", "settings.json"),
    (".claude", "settings.local.json"),
    (".git", "hooks"),
    (".git", "config"),
];

/// Names protected anywhere inside a `.git` directory, at any depth (submodules live in
/// `.git/modules/<name>/`, worktrees in `.git/worktrees/<name>/`): they decide what git runs or
/// where it takes its configuration from. `config` and `config.worktree` are released by
/// `allowGitConfig`.
pub const GIT_INTERNAL_NAMES: &[&str] =
    &["hooks", "config", "config.worktree", "commondir", "gitdir"];

/// Where a setting came from. Earlier variants take precedence over later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Administrator settings (`/etc/ringfence/managed.json`); lower layers cannot loosen them.
    Managed,
    /// The user's own settings (`~/.config/ringfence/settings.json`, `~/.srt-settings.json` or `-s FILE`).
    User,
    /// `.ringfence.json` in the working directory; may only add restrictions.
    Project,
    /// Options given on the command line (`--allow-write` and friends).
    CommandLine,
    /// Built into ringfence (`filesystem.defaultDenyRead`'s list).
    Default,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Managed => "managed",
            Layer::User => "user",
            Layer::Project => "project",
            Layer::CommandLine => "command line",
            Layer::Default => "built-in",
        })
    }
}

/// JSON Schema of one settings file, generated from the Rust types (for `ringfence schema` and
/// editors).
pub fn schema() -> serde_json::Value {
    let root = schemars::schema_for!(Settings);
    serde_json::to_value(root).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn layer_display() {
        assert_eq!(Layer::Managed.to_string(), "managed");
        assert_eq!(Layer::User.to_string(), "user");
        assert_eq!(Layer::Project.to_string(), "project");
        assert_eq!(Layer::CommandLine.to_string(), "command line");
        assert!(Layer::Managed < Layer::User && Layer::Project < Layer::CommandLine);
    }

    #[test]
    fn schema_is_strict_and_documented() {
        let s = schema();
        assert_eq!(s["additionalProperties"], serde_json::json!(false));
        let fs = &s["definitions"]["FilesystemSettings"];
        assert_eq!(fs["additionalProperties"], serde_json::json!(false));
        assert!(fs["properties"]["allowWrite"]["description"]
            .as_str()
            .unwrap()
            .contains("writ"));
        assert!(s["properties"]["limits"].is_object());
        assert!(s["properties"]["env"].is_object());
        let perms = &s["definitions"]["PermissionSettings"];
        assert_eq!(perms["additionalProperties"], serde_json::json!(false));
        assert!(perms["properties"]["allow"]["description"]
            .as_str()
            .unwrap()
            .contains("Bash(npm run test:*)"));
        assert!(s["definitions"]["DefaultMode"].is_object());
        assert!(s["definitions"]["ByteSize"]["anyOf"].is_array());
    }
}
