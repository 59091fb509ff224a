//! The settings file: the serde types of one JSON document and its strict parsing.
//! Every key of srt's settings format is accepted; ringfence adds `env` and `limits`.
//! Checks that need more than one file (layers, paths on disk) live in `load`.

use std::collections::BTreeMap;
use std::fmt;

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Schema, SchemaObject, SubschemaValidation};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::limits::parse_size;
use crate::Error;

/// One settings file. Every key is optional; `{}` is a valid file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// URL or path of the JSON Schema of this file, for editors. Ignored.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    /// Network restrictions. Nothing is reachable unless allowed here.
    #[serde(default)]
    pub network: NetworkSettings,
    /// Filesystem restrictions: reads are allowed except what is denied; writes only where allowed.
    #[serde(default)]
    pub filesystem: FilesystemSettings,
    /// Credential files and environment variables to protect (srt). Mode "deny" hides them;
    /// "mask" shows placeholders that the proxy replaces toward injectHosts.
    pub credentials: Option<CredentialSettings>,
    /// srt: command patterns (a substring of the command, or "*" for every command) mapped to
    /// substrings of the violations not to report in `<sandbox_violations>`. The activity log
    /// keeps every event.
    pub ignore_violations: Option<BTreeMap<String, Vec<String>>>,
    /// srt: weaker sandbox for nested containers. ringfence never weakens the sandbox silently,
    /// so `true` is refused.
    pub enable_weaker_nested_sandbox: Option<bool>,
    /// srt: let the sandboxed command create user namespaces of its own (a browser sandbox,
    /// `unshare -U`, nested sandboxes). Default false. In ringfence the other namespaces are
    /// allowed only beside a new user namespace, and mounts, `setns` and `pivot_root` stay
    /// refused, so the filesystem policy's mounts cannot be undone from inside; tools that
    /// must mount (bubblewrap, rootless podman) still fail. Refused for a root caller.
    pub allow_nested_user_namespaces: Option<bool>,
    /// srt (macOS only): allow com.apple.trustd.agent. No effect in ringfence.
    pub enable_weaker_network_isolation: Option<bool>,
    /// srt (macOS only): allow sending Apple Events. No effect in ringfence.
    pub allow_apple_events: Option<bool>,
    /// srt: ripgrep command used to find protected files. ringfence needs no ripgrep; no effect.
    pub ripgrep: Option<RipgrepSettings>,
    /// srt: depth of the protected-file search (1-10). ringfence protects files at any depth; no effect.
    #[schemars(range(min = 1, max = 10))]
    pub mandatory_deny_search_depth: Option<u64>,
    /// srt (macOS only): allow pseudo-terminal operations. No effect in ringfence.
    pub allow_pty: Option<bool>,
    /// srt: paths of its seccomp helper binaries. No effect in ringfence.
    pub seccomp: Option<SeccompSettings>,
    /// srt: path of the bubblewrap binary. ringfence needs no bubblewrap; no effect.
    pub bwrap_path: Option<String>,
    /// srt: path of the socat binary. ringfence needs no socat; no effect.
    pub socat_path: Option<String>,
    /// srt: path of its JVM proxy agent. No effect in ringfence.
    pub java_agent_jar_path: Option<String>,
    /// srt: Windows-specific settings. No effect in ringfence.
    pub windows: Option<WindowsSettings>,
    /// srt: git configuration injected into the sandbox through `GIT_CONFIG_*` variables.
    pub git: Option<GitSettings>,
    /// Environment passed to the sandboxed command (ringfence).
    #[serde(default)]
    pub env: EnvSettings,
    /// Resource limits (ringfence). Managed values are maxima; a project file may only lower them.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Which shell commands may run without a prompt (`ringfence check`, `run --check`).
    #[serde(default)]
    pub permissions: PermissionSettings,
    /// How writable roots are written (ringfence): directly, or into a reviewable overlay.
    #[serde(default)]
    pub workspace: WorkspaceSettings,
    /// The boundary around the command (ringfence): "namespace" (default, Linux namespaces
    /// on the host's kernel) or "vm" (a virtual machine with its own kernel, the namespace
    /// sandbox inside it as well). "vm" in any layer wins.
    pub isolation: Option<Isolation>,
}

/// `isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Namespace,
    Vm,
}

/// The `permissions` section (ringfence). A rule is `Bash(WORDS)` (exactly these words) or
/// `Bash(WORDS:*)` (these words, then anything); `*` inside a word matches any characters.
/// Strength: deny > ask > allow, across all layers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PermissionSettings {
    /// Commands that run without a prompt, e.g. "Bash(npm run test:*)", "Bash(git diff)".
    /// Not allowed in a project file.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Commands that always need a person's approval, e.g. "Bash(git push:*)".
    #[serde(default)]
    pub ask: Vec<String>,
    /// Commands that are refused, e.g. "Bash(sudo:*)", "Bash(rm -rf /)".
    #[serde(default)]
    pub deny: Vec<String>,
    /// What happens when no rule matches: "ask" (default), "sandboxed" (allow when the
    /// analysis finds nothing the sandbox would not contain) or "deny". Lower layers may only
    /// make it stricter than the managed value; a project file only stricter than the user's.
    pub default_mode: Option<crate::DefaultMode>,
    /// A command that deletes more than this many files inside a writable root asks, naming
    /// the count where it can be known (`rm -rf DIR`, `find -delete`, `rsync --delete`, bulk
    /// `truncate`). Default: the value of workspace.confirmDeletes (10). Managed values are
    /// maxima; a project file may only lower it.
    pub confirm_deletes: Option<u64>,
}

/// The `workspace` section (ringfence).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkspaceSettings {
    /// "direct" (default): writes reach the real folders. "overlay": every writable root is a
    /// copy-on-write view; nothing reaches the real folder until `ringfence apply`. A managed
    /// "overlay" cannot be turned off by lower layers.
    pub mode: Option<WorkspaceMode>,
    /// An apply that deletes more than this many files asks for confirmation (default 10).
    /// Managed values are maxima; a project file may only lower it.
    pub confirm_deletes: Option<u64>,
    /// Whether `ringfence apply --yes` may answer a confirmation (default true). A project file
    /// may only set false; a managed false cannot be switched on.
    pub allow_yes: Option<bool>,
}

/// `workspace.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceMode {
    Direct,
    Overlay,
}

/// The `network` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSettings {
    /// Domains that may be reached, e.g. "github.com", "*.npmjs.org", "api.example.com:443".
    /// Empty means no network access.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Domains that are never reached; checked before allowedDomains. A bare "*" denies all.
    #[serde(default)]
    pub denied_domains: Vec<String>,
    /// srt: reason shown when a deniedDomains entry blocks a connection, keyed by that entry.
    pub denied_domain_reasons: Option<BTreeMap<String, String>>,
    /// srt: deny hosts outside allowedDomains without asking.
    pub strict_allowlist: Option<bool>,
    /// srt: IP addresses or CIDR ranges an allowed host name must not resolve to.
    pub denied_resolved_addresses: Option<Vec<String>>,
    /// Ask about hosts in neither list instead of denying them (ringfence; default false).
    /// strictAllowlist in any layer turns asking off; a project file cannot turn it on.
    pub ask: Option<bool>,
    /// Seconds a connection waits for an answer before it is denied (ringfence; default 60).
    pub ask_timeout_seconds: Option<u64>,
    /// Unix socket paths the command may connect and send to (`$NAME` at the start expands a
    /// host environment variable, e.g. `$SSH_AUTH_SOCK`). Sockets in the sandbox's own /tmp
    /// are always reachable; abstract sockets only inside the sandbox.
    pub allow_unix_sockets: Option<Vec<String>>,
    /// Allow connecting to any unix socket (default: false).
    pub allow_all_unix_sockets: Option<bool>,
    /// Allow binding to local ports (default: false).
    pub allow_local_binding: Option<bool>,
    /// Transparent capture (ringfence; default false): a TUN device in the sandbox's network
    /// namespace carries every TCP connection and DNS query to the supervisor, decided by the
    /// same policy as the proxy, so programs that ignore proxy variables are governed too.
    pub transparent: Option<bool>,
    /// srt (macOS only): XPC/Mach service names that may be looked up. No effect in ringfence.
    pub allow_mach_lookup: Option<Vec<String>>,
    /// srt: port of the user's own HTTP proxy on the host's 127.0.0.1, used instead of the
    /// built-in one: the sandbox's HTTP proxy port relays to it without a policy of its own.
    #[serde(default, deserialize_with = "port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_proxy_port: Option<u16>,
    /// srt: port of the user's own SOCKS proxy on the host's 127.0.0.1, used instead of the
    /// built-in one: the sandbox's SOCKS port relays to it without a policy of its own.
    #[serde(default, deserialize_with = "port")]
    #[schemars(range(min = 1, max = 65535))]
    pub socks_proxy_port: Option<u16>,
    /// srt: allowed connections to these domains go through the user's inspection proxy on a
    /// unix socket (HTTP CONNECT, or the absolute-form request for plain HTTP).
    pub mitm_proxy: Option<MitmProxySettings>,
    /// Rules for requests inside TLS-terminated tunnels (method, path glob, header fields;
    /// deny beats allow; a host with allow rules gets only what one of them matches).
    pub requests: Option<Vec<crate::RequestRuleSettings>>,
    /// srt: TLS termination of CONNECT tunnels by the proxy, with per-host certificates from
    /// a CA the sandbox trusts (ringfence's per-user CA unless caCertPath is given).
    pub tls_terminate: Option<TlsTerminateSettings>,
    /// srt: parent (corporate) HTTP proxy that allowed connections leave through; unset
    /// fields fall back to the host's HTTP_PROXY, HTTPS_PROXY and NO_PROXY.
    pub parent_proxy: Option<ParentProxySettings>,
    /// srt (library callers): a per-request filter function. Refused: not supported yet.
    pub filter_request: Option<serde_json::Value>,
    /// srt: let a request filter set headers on plain HTTP. Refused: not supported yet.
    pub allow_plaintext_header_set: Option<bool>,
    /// srt: response header fields never passed back to the sandbox, matched without case and
    /// with "-", "_" and "." ignored (needs tlsTerminate).
    pub strip_response_headers: Option<Vec<String>>,
    /// srt: refuse every tunnel that is not TLS-terminated (needs tlsTerminate).
    pub refuse_opaque_tunnels: Option<bool>,
    /// srt: answer 421 when Host or SNI names another host. ringfence always checks.
    pub require_host_match: Option<bool>,
    /// srt: a request path that normalisation changes: "refuse" (400), "normalize"
    /// (forwarded normalised, the default in ringfence) or "asSpelled" (forwarded as spelled,
    /// request rules judge both readings; needs tlsTerminate).
    pub ambiguous_request_target: Option<AmbiguousRequestTarget>,
}

/// `network.ambiguousRequestTarget` (srt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AmbiguousRequestTarget {
    Refuse,
    AsSpelled,
    Normalize,
}

/// `network.mitmProxy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MitmProxySettings {
    /// Unix socket path of the MITM proxy.
    pub socket_path: String,
    /// Domains routed through it.
    pub domains: Vec<String>,
}

/// `network.tlsTerminate`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsTerminateSettings {
    /// PEM CA certificate used to sign per-host certificates.
    pub ca_cert_path: Option<String>,
    /// PEM private key of caCertPath.
    pub ca_key_path: Option<String>,
    /// Domains whose HTTPS connections are tunnelled instead of terminated.
    pub exclude_domains: Option<Vec<String>>,
    /// Extra CA certificates added to the sandbox's trust bundle.
    pub extra_ca_cert_paths: Option<Vec<String>>,
    /// At most this many tunnels terminated at once.
    pub max_tunnels: Option<u64>,
    /// Milliseconds a terminated tunnel has to finish its TLS handshake.
    pub handshake_timeout_ms: Option<u64>,
}

/// `network.parentProxy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentProxySettings {
    /// Upstream proxy URL for plain HTTP.
    pub http: Option<String>,
    /// Upstream proxy URL for HTTPS (CONNECT).
    pub https: Option<String>,
    /// Comma-separated NO_PROXY list.
    pub no_proxy: Option<String>,
}

/// The `filesystem` section. Paths may be absolute, relative to the working directory, or
/// start with `~`; `*`, `**`, `?` and `[...]` are expanded when the policy is loaded, unless the
/// entry is written `{"path": "...", "literal": true}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilesystemSettings {
    /// srt: turn off all filesystem enforcement. ringfence refuses `true`.
    pub disabled: Option<bool>,
    /// Paths that cannot be read (nor listed).
    #[serde(default)]
    pub deny_read: Vec<PathEntry>,
    /// More paths to hide by default, added to the built-in list of the home directory's
    /// credential stores (~/.ssh, ~/.aws, ~/.kube, ~/.docker/config.json, ~/.npmrc, browser
    /// profiles, ...), which applies to every run. No layer can shorten the list; allowRead
    /// re-opens one path of it (a managed layer that must keep a path hidden uses denyRead).
    #[serde(default)]
    pub default_deny_read: Vec<PathEntry>,
    /// Paths re-allowed for reading inside a denied area.
    #[serde(default)]
    pub allow_read: Vec<PathEntry>,
    /// Paths where writing is allowed. Everything else is read-only.
    #[serde(default)]
    pub allow_write: Vec<PathEntry>,
    /// Paths where writing is denied even inside allowWrite.
    #[serde(default)]
    pub deny_write: Vec<PathEntry>,
    /// Allow writing `.git/config` (default: false); `.git/hooks` stays protected.
    pub allow_git_config: Option<bool>,
    /// Ask (on the terminal, `--control-fd` or the embedding program's asker) before a write
    /// or a directory creation outside the writable roots is refused, instead of refusing it
    /// at once; an approved one is performed by the supervisor on the host. Protected names,
    /// denyWrite and hidden paths are never asked about. Not in a project file.
    pub ask: Option<bool>,
    /// Ask before a read of a hidden (denyRead) file is answered with the empty view; an
    /// approved one is opened by the supervisor on the host and handed to the caller.
    /// Credential files are never asked about. Not in a project file.
    pub ask_read: Option<bool>,
}

/// One entry of a filesystem list: a path as written, which is a pattern when it holds glob
/// characters, or (srt) `{"path": "...", "literal": true}`, which names that path and nothing
/// else, glob characters included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEntry {
    /// A path or a glob pattern.
    Written(String),
    /// A path taken literally.
    Literal(String),
}

impl PathEntry {
    /// The path as written.
    pub fn as_str(&self) -> &str {
        match self {
            PathEntry::Written(s) | PathEntry::Literal(s) => s,
        }
    }
}

impl From<&str> for PathEntry {
    fn from(s: &str) -> Self {
        PathEntry::Written(s.to_string())
    }
}

/// The object form of a filesystem list entry: a path taken literally.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only its schema and its checks are used
struct LiteralPath {
    /// The path; `~` and relative paths are resolved as for a string entry.
    path: String,
    /// Must be `true`: the path is never read as a pattern.
    literal: bool,
}

const PATH_ENTRY_EXPECTED: &str = "a path, or {\"path\": \"<path>\", \"literal\": true}";

impl<'de> Deserialize<'de> for PathEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> Visitor<'a> for V {
            type Value = PathEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PATH_ENTRY_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PathEntry, E> {
                Ok(PathEntry::Written(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'a>>(self, map: A) -> Result<PathEntry, A::Error> {
                let l = LiteralPath::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if !l.literal {
                    return Err(de::Error::custom(
                        "an object entry needs \"literal\": true; write a plain string for a path or pattern",
                    ));
                }
                Ok(PathEntry::Literal(l.path))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for PathEntry {
    fn schema_name() -> String {
        "PathEntry".to_string()
    }

    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        let text = SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            ..Default::default()
        };
        let mut schema = SchemaObject::default();
        schema.metadata().description = Some(
            "A path or glob pattern, or {\"path\": \"...\", \"literal\": true} for a path taken literally."
                .to_string(),
        );
        schema.subschemas = Some(Box::new(SubschemaValidation {
            any_of: Some(vec![text.into(), gen.subschema_for::<LiteralPath>()]),
            ..Default::default()
        }));
        schema.into()
    }
}

/// The `credentials` section (srt).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialSettings {
    /// Credential files or directories to protect.
    pub files: Option<Vec<CredentialFileSettings>>,
    /// Environment variables to protect.
    pub env_vars: Option<Vec<CredentialEnvVarSettings>>,
    /// srt: allow credential substitution over plain HTTP. `true` is refused; `false` (srt's
    /// default) is what ringfence does.
    pub allow_plaintext_inject: Option<bool>,
    /// srt: pairs of masked variables used for AWS SigV4 re-signing.
    pub aws_pairs: Option<Vec<AwsPairSettings>>,
    /// srt: policies for SigV4 request shapes that cannot be re-signed. No effect in ringfence.
    pub sigv4: Option<Sigv4Settings>,
    /// ringfence: header fields the proxy sets on requests to a host inside TLS-terminated
    /// tunnels, e.g. {"host": "api.example.com", "header": "Authorization", "value":
    /// "Bearer ${env:TOKEN}"}; `${env:NAME}` (a host variable, then removed from the sandbox)
    /// and `${file:PATH}` (its content, without a final newline) are read by the supervisor.
    pub inject: Option<Vec<HeaderInjectSettings>>,
}

/// One entry of `credentials.inject`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderInjectSettings {
    /// Host pattern (allowedDomains syntax).
    pub host: String,
    /// Header field name.
    pub header: String,
    /// The value, with `${env:NAME}` and `${file:PATH}` replaced.
    pub value: String,
}

/// Checks an `extract` pattern: it compiles (Rust's regex syntax, which has no look-around
/// or back-references; those are refused, not approximated) and has a group 1. Classes are
/// ASCII (regex-lite): `\d`, `\w` and `\b` as in srt's JavaScript patterns; `\s` is ASCII
/// whitespace only (JavaScript's takes Unicode spaces too); `(?i)` folds ASCII letters only;
/// Unicode classes (`\p{..}`) and class set operations (`--`, `&&`) are refused.
pub fn check_extract(pattern: &str) -> Result<(), String> {
    let re = regex_lite::Regex::new(pattern)
        .map_err(|e| format!("\"{pattern}\" is not a pattern ringfence can use: {e}"))?;
    if re.captures_len() < 2 {
        return Err(format!(
            "\"{pattern}\" has no capture group; group 1 must capture the value to mask"
        ));
    }
    Ok(())
}

/// How a declared credential is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CredentialMode {
    /// Not readable / not passed at all.
    Deny,
    /// A placeholder inside, the real value put back by the proxy.
    Mask,
}

/// What srt does when an `extract` pattern matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnExtractNoMatch {
    Warn,
    Deny,
    Error,
}

/// Encoded credential formats srt can look inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DecodeFormat {
    Jwt,
}

/// One entry of `credentials.files`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialFileSettings {
    /// Path of the credential file or directory (same forms as filesystem.denyRead).
    pub path: String,
    /// "deny" or "mask".
    pub mode: CredentialMode,
    /// srt: regex whose first group is the secret to mask.
    pub extract: Option<String>,
    /// srt: what to do when extract matches nothing.
    pub on_extract_no_match: Option<OnExtractNoMatch>,
    /// srt: decode the value before masking.
    pub decode: Option<DecodeFormat>,
    /// srt: JWT claims to mask.
    pub mask_claims: Option<Vec<String>>,
    /// srt: also mask verbatim copies of the secret.
    pub mask_duplicates: Option<bool>,
    /// srt: hosts the real value is sent to.
    pub inject_hosts: Option<Vec<String>>,
}

/// One entry of `credentials.envVars`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialEnvVarSettings {
    /// Name of the environment variable.
    pub name: String,
    /// "deny" removes the variable; "mask" gives the sandbox a placeholder instead, which the
    /// proxy replaces with the real value in requests to injectHosts (needs tlsTerminate).
    pub mode: CredentialMode,
    /// srt: regex whose first group is the secret to mask.
    pub extract: Option<String>,
    /// srt: what to do when extract matches nothing.
    pub on_extract_no_match: Option<OnExtractNoMatch>,
    /// srt: decode the value before masking.
    pub decode: Option<DecodeFormat>,
    /// srt: JWT claims to mask.
    pub mask_claims: Option<Vec<String>>,
    /// srt: hosts the real value is sent to.
    pub inject_hosts: Option<Vec<String>>,
}

/// One entry of `credentials.awsPairs`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsPairSettings {
    /// Variable holding the access key id.
    pub access_key_id_var: String,
    /// Variable holding the secret access key.
    pub secret_access_key_var: String,
    /// Variable holding the session token.
    pub session_token_var: Option<String>,
}

/// `credentials.sigv4`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sigv4Settings {
    /// Policy for the aws-chunked streaming uploads that are not re-signed (every form but
    /// STREAMING-AWS4-HMAC-SHA256-PAYLOAD).
    pub streaming: Option<Sigv4Policy>,
    /// Policy for presigned URLs that are not re-signed (no X-Amz-Date, X-Amz-SignedHeaders
    /// or whole credential scope).
    pub presigned: Option<Sigv4Policy>,
    /// Policy for SigV4A signatures.
    pub sigv4a: Option<Sigv4Policy>,
}

/// "deny" or "passthrough".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Sigv4Policy {
    Deny,
    Passthrough,
}

/// `ripgrep` (srt).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RipgrepSettings {
    /// The ripgrep command.
    pub command: String,
    /// Arguments passed before ripgrep's own.
    pub args: Option<Vec<String>>,
    /// argv[0] override.
    pub argv0: Option<String>,
}

/// `seccomp` (srt).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompSettings {
    /// Path of the apply-seccomp binary.
    pub apply_path: Option<String>,
    /// argv[0] for a multicall binary.
    pub argv0: Option<String>,
}

/// `windows` (srt).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowsSettings {
    /// The Windows enforcement back end.
    pub backend: Option<WindowsBackend>,
    /// Name of the sandbox user account.
    pub sandbox_user: Option<String>,
    /// WFP sublayer GUID.
    pub sublayer_guid: Option<String>,
    /// Deprecated alias of sublayerGuid.
    pub wfp_sublayer_guid: Option<String>,
    /// Inclusive [low, high] port range of the proxy listeners.
    pub proxy_port_range: Option<(u16, u16)>,
    /// How to find the srt-win helper.
    pub srt_win: Option<SrtWinSettings>,
}

/// `windows.backend` (srt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum WindowsBackend {
    #[serde(rename = "mxc")]
    Mxc,
    #[serde(rename = "srt-win")]
    SrtWin,
}

/// `windows.srtWin` (srt).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SrtWinSettings {
    /// Path of the srt-win binary.
    pub path: String,
}

/// `git` (srt).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitSettings {
    /// Directories git treats as `safe.directory` (as do the repositories below them), for a
    /// repository owned by another user. Grants no write access.
    pub safe_directories: Option<Vec<String>>,
}

/// The `env` section (ringfence). Patterns match variable names case-insensitively; `*` matches
/// any run of characters. Credential-looking variables are removed by default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvSettings {
    /// Patterns of variables to pass even though they look like credentials. Not allowed in a
    /// project file; an explicit deny (any layer) still wins.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Patterns of further variables to remove.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Variables to set inside the sandbox. Not allowed in a project file.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

/// The `limits` section (ringfence). Sizes are a number of bytes or a string like "512M", "4G".
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitSettings {
    /// Maximum number of processes and threads (default 1024).
    #[serde(default, deserialize_with = "positive")]
    #[schemars(range(min = 1))]
    pub pids: Option<u64>,
    /// Maximum memory of the whole sandbox, all processes together (default: half of the
    /// machine's memory).
    pub memory: Option<ByteSize>,
    /// CPU time in seconds (default: unlimited).
    #[serde(default, deserialize_with = "positive")]
    #[schemars(range(min = 1))]
    pub cpu_seconds: Option<u64>,
    /// Wall-clock time in seconds (default: unlimited).
    #[serde(default, deserialize_with = "positive")]
    #[schemars(range(min = 1))]
    pub wall_seconds: Option<u64>,
    /// Maximum open file descriptors per process (default 4096).
    #[serde(default, deserialize_with = "positive")]
    #[schemars(range(min = 1))]
    pub open_files: Option<u64>,
    /// Largest file a process may write (default: unlimited).
    pub file_size: Option<ByteSize>,
    /// Size of the scratch space /tmp (default "1G").
    pub tmp_size: Option<ByteSize>,
}

/// A byte count: a positive integer, or a string like "512M", "4G" (K, M, G, T are powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

const SIZE_EXPECTED: &str = "expected a positive byte count or a size like \"512M\" or \"4G\"";

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                if v == 0 {
                    return Err(E::custom(SIZE_EXPECTED));
                }
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ByteSize, E> {
                Err(E::custom(SIZE_EXPECTED))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ByteSize, E> {
                Err(E::custom(SIZE_EXPECTED))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> String {
        "ByteSize".to_string()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut number = SchemaObject {
            instance_type: Some(InstanceType::Integer.into()),
            ..Default::default()
        };
        number.number().minimum = Some(1.0);
        let mut text = SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            ..Default::default()
        };
        text.string().pattern = Some("^[0-9]+([KkMmGgTt]([iI]?[bB])?|[bB])?$".to_string());
        let mut schema = SchemaObject::default();
        schema.metadata().description = Some(
            "A number of bytes, or a string like \"512M\" or \"4G\" (powers of 1024).".to_string(),
        );
        schema.subschemas = Some(Box::new(SubschemaValidation {
            any_of: Some(vec![number.into(), text.into()]),
            ..Default::default()
        }));
        schema.into()
    }
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    const EXPECTED: &str = "expected a positive integer";
    impl<'a> Visitor<'a> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            if v == 0 {
                return Err(E::custom(EXPECTED));
            }
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<u64>, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<u64>, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<u64>, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<u64>, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_seq<A: de::SeqAccess<'a>>(self, _: A) -> Result<Option<u64>, A::Error> {
            Err(de::Error::custom(EXPECTED))
        }
        fn visit_map<A: de::MapAccess<'a>>(self, _: A) -> Result<Option<u64>, A::Error> {
            Err(de::Error::custom(EXPECTED))
        }
    }
    d.deserialize_any(V)
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    const EXPECTED: &str = "expected a port number from 1 to 65535";
    match positive(d) {
        Ok(Some(v)) => u16::try_from(v)
            .map(Some)
            .map_err(|_| de::Error::custom(EXPECTED)),
        Ok(None) => Ok(None),
        Err(_) => Err(de::Error::custom(EXPECTED)),
    }
}

/// Parses one settings file strictly. `origin` names the file in error messages.
pub fn parse_settings(text: &str, origin: &str) -> Result<Settings, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let settings: Settings = match serde_path_to_error::deserialize(&mut de) {
        Ok(s) => s,
        Err(e) => return Err(convert_error(e, origin)),
    };
    if let Err(e) = de.end() {
        return Err(Error::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        });
    }
    settings.validate(origin)?;
    Ok(settings)
}

fn convert_error(e: serde_path_to_error::Error<serde_json::Error>, origin: &str) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return Error::Syntax {
            origin: origin.to_string(),
            message: inner.to_string(),
        };
    }
    let mut message = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    if let Some(stripped) = message.strip_suffix(&position) {
        message = stripped.to_string();
    }
    let mut key = if path == "." { String::new() } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde's text: unknown field `x`, expected one of `a`, `b` (or: there are no fields)
        let mut parts = rest.splitn(2, '`');
        let field = parts.next().unwrap_or_default().to_string();
        let expected: Vec<&str> = parts
            .next()
            .unwrap_or_default()
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        if key.rsplit('.').next() != Some(field.as_str()) {
            key = if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
        }
        message = match closest(&field, &expected) {
            Some(s) => format!("unknown key (did you mean \"{s}\"?)"),
            None => "unknown key".to_string(),
        };
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        let mut parts = rest.splitn(2, '`');
        let found = parts.next().unwrap_or_default();
        let expected: Vec<&str> = parts
            .next()
            .unwrap_or_default()
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        message = format!("\"{found}\" is not one of \"{}\"", expected.join("\", \""));
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        message = format!("missing required key \"{field}\"");
    }
    if key.is_empty() {
        if message.contains("expected struct Settings") {
            message = "the file must hold a JSON object".to_string();
        }
        key = "(top level)".to_string();
    }
    Error::Invalid {
        origin: origin.to_string(),
        key,
        message,
    }
}

/// The expected key closest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'a>(found: &str, expected: &[&'a str]) -> Option<&'a str> {
    let found = found.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (edit_distance(&found, &e.to_ascii_lowercase()), *e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Light validation of a domain pattern: what a proxy can match, not a URL.
pub(crate) fn check_domain(entry: &str, allow_any: bool) -> Result<(), String> {
    if entry.is_empty() {
        return Err("a domain cannot be empty".to_string());
    }
    if entry.chars().any(char::is_whitespace) {
        return Err(format!("\"{entry}\" contains whitespace"));
    }
    if entry.contains("://") {
        return Err(format!(
            "\"{entry}\" is a URL; write only the host name, e.g. \"example.com\""
        ));
    }
    if entry.contains('/') || entry.contains('@') {
        return Err(format!(
            "\"{entry}\" is not a domain; write only the host name, e.g. \"example.com\""
        ));
    }
    let host = if entry.starts_with('[') {
        entry
    } else {
        entry.rsplit_once(':').map_or(entry, |(h, _)| h)
    };
    if host == "*" && !allow_any {
        return Err(format!(
            "\"{entry}\" would allow every domain; list the domains instead"
        ));
    }
    Ok(())
}

/// An entry with two or more colons is an IPv6 address and must be bracketed (`[::1]`,
/// `[2001:db8::1]:443`): unbracketed, its last group could be read as a port (srt refuses it too).
pub(crate) fn check_bracketed(entry: &str) -> Result<(), String> {
    if entry.matches(':').count() >= 2 && !entry.starts_with('[') {
        return Err(format!(
            "\"{entry}\": write an IPv6 address in brackets, \"[{entry}]\", or with a port \
             \"[ADDRESS]:PORT\" (unbracketed, its last group could be read as a port)"
        ));
    }
    Ok(())
}

/// An allowedDomains wildcard must stop below a public suffix: `*.test`, `*.com` or `*.co.uk`
/// would allow every domain anyone can register there. The list is the Public Suffix List
/// built into the `psl` crate; a top-level name it does not know counts as a suffix too.
pub(crate) fn check_not_public_suffix(entry: &str) -> Result<(), String> {
    let host = if entry.starts_with('[') {
        return Ok(());
    } else {
        entry.rsplit_once(':').map_or(entry, |(h, _)| h)
    };
    let Some(base) = host.strip_prefix("*.") else {
        return Ok(());
    };
    // Read as the proxy reads hosts (case, a trailing dot, UTS 46), so that `*.ＣＯ.ＵＫ` or
    // `*.co.uk.` is the suffix it matches; a base the proxy cannot read is refused there.
    let base = match crate::domains::normalize_host(base) {
        Ok(crate::domains::Host::Name(n)) => n,
        _ => return Ok(()),
    };
    let public = !base.contains('.')
        || psl::suffix(base.as_bytes()).is_some_and(|s| s.as_bytes() == base.as_bytes());
    if public {
        return Err(format!(
            "\"{entry}\" would allow every domain registered under the public suffix \
             \"{base}\"; list the domains themselves, e.g. \"*.example.{base}\""
        ));
    }
    Ok(())
}

/// An IP address or a CIDR range (`10.0.0.0/8`, `fd00::/8`).
pub(crate) fn check_address_range(entry: &str) -> Result<(), String> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("\"{entry}\" is not an IP address or CIDR range"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match len.map(|l| l.parse::<u8>()) {
        None => Ok(()),
        Some(Ok(l)) if l <= max && len.is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit())) => {
            Ok(())
        }
        Some(_) => Err(format!(
            "\"{entry}\": the prefix length must be a number from 0 to {max}"
        )),
    }
}

fn check_env_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        Err("a variable name pattern cannot be empty".to_string())
    } else if p.contains('=') || p.contains('\0') {
        Err(format!("\"{p}\" is not a variable name pattern"))
    } else {
        Ok(())
    }
}

fn check_env_name(p: &str) -> Result<(), String> {
    let mut chars = p.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "\"{p}\" is not a variable name (letters, digits and _, not starting with a digit)"
        ))
    }
}

impl Settings {
    /// Checks values that the types alone cannot express.
    fn validate(&self, origin: &str) -> Result<(), Error> {
        let inv = |key: String, message: String| Error::invalid(origin, key, message);
        if self.enable_weaker_nested_sandbox == Some(true) {
            return Err(inv(
                "enableWeakerNestedSandbox".into(),
                "ringfence never runs a weaker sandbox; remove this key (nested use needs \
                 unprivileged user namespaces inside the container)"
                    .into(),
            ));
        }
        let fs = &self.filesystem;
        if fs.disabled == Some(true) {
            return Err(inv(
                "filesystem.disabled".into(),
                "ringfence never turns filesystem enforcement off; remove this key and allow \
                 the paths the command needs with filesystem.allowWrite"
                    .into(),
            ));
        }
        for (name, list) in [
            ("denyRead", &fs.deny_read),
            ("defaultDenyRead", &fs.default_deny_read),
            ("allowRead", &fs.allow_read),
            ("allowWrite", &fs.allow_write),
            ("denyWrite", &fs.deny_write),
        ] {
            for (i, p) in list.iter().enumerate() {
                if p.as_str().is_empty() {
                    return Err(inv(
                        format!("filesystem.{name}[{i}]"),
                        "a path cannot be empty".into(),
                    ));
                }
            }
        }
        let net = &self.network;
        let domain_lists: [(&str, &[String], bool); 2] = [
            ("network.allowedDomains", &net.allowed_domains, false),
            ("network.deniedDomains", &net.denied_domains, true),
        ];
        for (key, list, any) in domain_lists {
            for (i, d) in list.iter().enumerate() {
                check_domain(d, any)
                    .and_then(|()| check_bracketed(d))
                    .and_then(|()| {
                        if any {
                            Ok(())
                        } else {
                            check_not_public_suffix(d)
                        }
                    })
                    .map_err(|m| inv(format!("{key}[{i}]"), m))?;
            }
        }
        if let Some(t) = &net.tls_terminate {
            crate::tls::check(t).map_err(|(k, m)| inv(k, m))?;
        }
        for (i, h) in net.strip_response_headers.iter().flatten().enumerate() {
            if h.is_empty() {
                return Err(inv(
                    format!("network.stripResponseHeaders[{i}]"),
                    "a header name cannot be empty".into(),
                ));
            }
        }
        for (i, j) in self
            .credentials
            .iter()
            .flat_map(|c| c.inject.iter().flatten())
            .enumerate()
        {
            let key = |k: &str| format!("credentials.inject[{i}].{k}");
            check_domain(&j.host, false).map_err(|m| inv(key("host"), m))?;
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if j.header.is_empty() || !j.header.bytes().all(token) {
                return Err(inv(key("header"), "not a header field name".into()));
            }
            crate::inject::parse_template(&j.value).map_err(|m| inv(key("value"), m))?;
        }
        for (i, r) in net.requests.iter().flatten().enumerate() {
            crate::requests::check(r)
                .map_err(|(k, m)| inv(format!("network.requests[{i}].{k}"), m))?;
        }
        for (i, a) in net.denied_resolved_addresses.iter().flatten().enumerate() {
            check_address_range(a)
                .map_err(|m| inv(format!("network.deniedResolvedAddresses[{i}]"), m))?;
        }
        if net.ask_timeout_seconds == Some(0) {
            return Err(inv(
                "network.askTimeoutSeconds".into(),
                "expected a number of seconds above 0".into(),
            ));
        }
        if let Some(m) = &net.mitm_proxy {
            if !m.socket_path.starts_with('/') {
                return Err(inv(
                    "network.mitmProxy.socketPath".into(),
                    format!("\"{}\" is not an absolute path", m.socket_path),
                ));
            }
            if m.domains.is_empty() {
                return Err(inv(
                    "network.mitmProxy.domains".into(),
                    "list at least one domain".into(),
                ));
            }
            for (i, d) in m.domains.iter().enumerate() {
                check_domain(d, false)
                    .map_err(|msg| inv(format!("network.mitmProxy.domains[{i}]"), msg))?;
            }
        }
        if let Some(pp) = &net.parent_proxy {
            for (key, url) in [("http", &pp.http), ("https", &pp.https)] {
                if let Some(url) = url.as_deref().filter(|u| !u.trim().is_empty()) {
                    crate::egress::ProxyUrl::parse(url)
                        .map_err(|m| inv(format!("network.parentProxy.{key}"), m))?;
                }
            }
        }
        if let Some(t) = &net.tls_terminate {
            for (i, d) in t.exclude_domains.iter().flatten().enumerate() {
                check_domain(d, false)
                    .map_err(|m| inv(format!("network.tlsTerminate.excludeDomains[{i}]"), m))?;
            }
        }
        if let Some(d) = self.mandatory_deny_search_depth {
            if !(1..=10).contains(&d) {
                return Err(inv(
                    "mandatoryDenySearchDepth".into(),
                    "expected an integer from 1 to 10".into(),
                ));
            }
        }
        if let Some(c) = &self.credentials {
            for (i, f) in c.files.iter().flatten().enumerate() {
                if f.path.is_empty() {
                    return Err(inv(
                        format!("credentials.files[{i}].path"),
                        "a path cannot be empty".into(),
                    ));
                }
                for (j, d) in f.inject_hosts.iter().flatten().enumerate() {
                    check_domain(d, false)
                        .map_err(|m| inv(format!("credentials.files[{i}].injectHosts[{j}]"), m))?;
                }
                if let Some(x) = &f.extract {
                    check_extract(x)
                        .map_err(|m| inv(format!("credentials.files[{i}].extract"), m))?;
                }
            }
            for (i, v) in c.env_vars.iter().flatten().enumerate() {
                check_env_name(&v.name)
                    .map_err(|m| inv(format!("credentials.envVars[{i}].name"), m))?;
                for (j, d) in v.inject_hosts.iter().flatten().enumerate() {
                    check_domain(d, false).map_err(|m| {
                        inv(format!("credentials.envVars[{i}].injectHosts[{j}]"), m)
                    })?;
                }
                if let Some(x) = &v.extract {
                    check_extract(x)
                        .map_err(|m| inv(format!("credentials.envVars[{i}].extract"), m))?;
                }
            }
        }
        for (key, list) in [("env.allow", &self.env.allow), ("env.deny", &self.env.deny)] {
            for (i, p) in list.iter().enumerate() {
                check_env_pattern(p).map_err(|m| inv(format!("{key}[{i}]"), m))?;
            }
        }
        for name in self.env.set.keys() {
            check_env_name(name).map_err(|m| inv(format!("env.set.{name}"), m))?;
        }
        for (name, value) in &self.env.set {
            if value.contains('\0') {
                return Err(inv(
                    format!("env.set.{name}"),
                    "a value cannot contain a NUL character".into(),
                ));
            }
        }
        if let Some((key, message)) = self.unsupported_key() {
            return Err(inv(key, message));
        }
        Ok(())
    }

    /// The first srt key present that ringfence does not implement yet, with what to do. Each of
    /// them would redirect, inspect or rewrite traffic, or hand out credentials, so none is
    /// ever ignored: the file is refused.
    fn unsupported_key(&self) -> Option<(String, String)> {
        const FILTER: &str = "is a request callback of srt's library (a function), which a \
                              settings file cannot hold; remove it and write the rules as network.requests";
        const HEADER_SET: &str = "only changes what a network.filterRequest callback may do on \
                                  plain http:// requests, and there is no such callback here; \
                                  remove this key";
        const INJECT: &str = "credentials are put into requests only inside verified TLS \
                              connections; injecting into plain http:// requests is not \
                              supported, remove this key";
        const MASK_ONLY: &str = "belongs to mode \"mask\"; use that mode or remove it";
        let n = &self.network;
        let found = |present: bool, key: &str, message: &str| {
            present.then(|| (key.to_string(), message.to_string()))
        };
        let network = [
            found(n.filter_request.is_some(), "network.filterRequest", FILTER),
            found(
                n.allow_plaintext_header_set.is_some(),
                "network.allowPlaintextHeaderSet",
                HEADER_SET,
            ),
        ];
        if let Some(hit) = network.into_iter().flatten().next() {
            return Some(hit);
        }
        let c = self.credentials.as_ref()?;
        // `false` is srt's default and what ringfence does: never on plain http://.
        let top = [found(
            c.allow_plaintext_inject == Some(true),
            "credentials.allowPlaintextInject",
            INJECT,
        )];
        if let Some(hit) = top.into_iter().flatten().next() {
            return Some(hit);
        }
        const NEEDS_DECODE: &str = "names claims inside a decoded value; add decode: \"jwt\" \
                                    or remove it";
        for (i, f) in c.files.iter().flatten().enumerate() {
            if f.mode == CredentialMode::Mask {
                if f.mask_claims.is_some() && f.decode.is_none() {
                    return found(
                        true,
                        &format!("credentials.files[{i}].maskClaims"),
                        NEEDS_DECODE,
                    );
                }
                continue;
            }
            let keys = [
                (f.extract.is_some(), "extract"),
                (f.on_extract_no_match.is_some(), "onExtractNoMatch"),
                (f.decode.is_some(), "decode"),
                (f.mask_claims.is_some(), "maskClaims"),
                (f.mask_duplicates.is_some(), "maskDuplicates"),
                (f.inject_hosts.is_some(), "injectHosts"),
            ];
            if let Some((_, k)) = keys.iter().find(|(present, _)| *present) {
                return found(true, &format!("credentials.files[{i}].{k}"), MASK_ONLY);
            }
        }
        for (i, v) in c.env_vars.iter().flatten().enumerate() {
            let mask = v.mode == CredentialMode::Mask;
            if mask && v.mask_claims.is_some() && v.decode.is_none() {
                return found(
                    true,
                    &format!("credentials.envVars[{i}].maskClaims"),
                    NEEDS_DECODE,
                );
            }
            if mask && v.extract.is_some() && v.decode.is_some() {
                return found(
                    true,
                    &format!("credentials.envVars[{i}].extract"),
                    "cannot be combined with decode for a variable (the value is the JWT); \
                     remove one",
                );
            }
            let keys = [
                (v.extract.is_some() && !mask, "extract"),
                (v.on_extract_no_match.is_some() && !mask, "onExtractNoMatch"),
                (v.decode.is_some() && !mask, "decode"),
                (v.mask_claims.is_some() && !mask, "maskClaims"),
            ];
            if let Some((_, k)) = keys.iter().find(|(present, _)| *present) {
                return found(true, &format!("credentials.envVars[{i}].{k}"), MASK_ONLY);
            }
            if v.mode == CredentialMode::Deny && v.inject_hosts.is_some() {
                return found(
                    true,
                    &format!("credentials.envVars[{i}].injectHosts"),
                    MASK_ONLY,
                );
            }
        }
        None
    }

    /// Key paths present in this file that srt knows but that have no effect in ringfence:
    /// macOS and Windows settings, and srt's own helper programs (ringfence needs none).
    pub(crate) fn inert_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut add = |present: bool, key: &'static str| {
            if present {
                keys.push(key);
            }
        };
        let n = &self.network;
        add(n.allow_mach_lookup.is_some(), "network.allowMachLookup");
        add(
            self.enable_weaker_network_isolation.is_some(),
            "enableWeakerNetworkIsolation",
        );
        add(self.allow_apple_events.is_some(), "allowAppleEvents");
        add(self.ripgrep.is_some(), "ripgrep");
        add(
            self.mandatory_deny_search_depth.is_some(),
            "mandatoryDenySearchDepth",
        );
        add(self.allow_pty.is_some(), "allowPty");
        add(self.seccomp.is_some(), "seccomp");
        add(self.bwrap_path.is_some(), "bwrapPath");
        add(self.socat_path.is_some(), "socatPath");
        add(self.java_agent_jar_path.is_some(), "javaAgentJarPath");
        add(self.windows.is_some(), "windows");
        keys
    }

    /// Key paths present in this file that would widen access; a project file may not use them.
    pub(crate) fn widening_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut add = |present: bool, key: &'static str| {
            if present {
                keys.push(key);
            }
        };
        let fs = &self.filesystem;
        add(!fs.allow_write.is_empty(), "filesystem.allowWrite");
        add(!fs.allow_read.is_empty(), "filesystem.allowRead");
        add(
            fs.allow_git_config == Some(true),
            "filesystem.allowGitConfig",
        );
        add(fs.ask == Some(true), "filesystem.ask");
        add(fs.ask_read == Some(true), "filesystem.askRead");
        let n = &self.network;
        add(!n.allowed_domains.is_empty(), "network.allowedDomains");
        add(
            n.allow_unix_sockets.as_ref().is_some_and(|v| !v.is_empty()),
            "network.allowUnixSockets",
        );
        add(
            n.allow_all_unix_sockets == Some(true),
            "network.allowAllUnixSockets",
        );
        add(
            n.allow_local_binding == Some(true),
            "network.allowLocalBinding",
        );
        add(
            n.allow_mach_lookup.as_ref().is_some_and(|v| !v.is_empty()),
            "network.allowMachLookup",
        );
        add(!self.permissions.allow.is_empty(), "permissions.allow");
        add(n.http_proxy_port.is_some(), "network.httpProxyPort");
        add(n.socks_proxy_port.is_some(), "network.socksProxyPort");
        add(n.mitm_proxy.is_some(), "network.mitmProxy");
        add(n.tls_terminate.is_some(), "network.tlsTerminate");
        add(
            self.credentials
                .as_ref()
                .is_some_and(|c| c.inject.is_some()),
            "credentials.inject",
        );
        add(
            n.requests
                .iter()
                .flatten()
                .any(|r| r.action == crate::RequestAction::Allow),
            "network.requests (action \"allow\")",
        );
        // A masked value is sent on to hosts: more than removing it.
        add(
            self.credentials
                .iter()
                .flat_map(|c| c.files.iter().flatten())
                .any(|f| f.mode == CredentialMode::Mask),
            "credentials.files (mode \"mask\")",
        );
        add(
            self.credentials
                .iter()
                .flat_map(|c| c.env_vars.iter().flatten())
                .any(|v| v.mode == CredentialMode::Mask),
            "credentials.envVars (mode \"mask\")",
        );
        add(n.parent_proxy.is_some(), "network.parentProxy");
        add(n.ask == Some(true), "network.ask");
        add(
            self.git
                .as_ref()
                .is_some_and(|g| g.safe_directories.as_ref().is_some_and(|d| !d.is_empty())),
            "git.safeDirectories",
        );
        add(
            self.credentials
                .as_ref()
                .is_some_and(|c| c.allow_plaintext_inject == Some(true)),
            "credentials.allowPlaintextInject",
        );
        add(
            self.enable_weaker_network_isolation == Some(true),
            "enableWeakerNetworkIsolation",
        );
        add(
            self.allow_nested_user_namespaces == Some(true),
            "allowNestedUserNamespaces",
        );
        add(self.allow_apple_events == Some(true), "allowAppleEvents");
        add(self.allow_pty == Some(true), "allowPty");
        add(!self.env.allow.is_empty(), "env.allow");
        add(self.workspace.allow_yes == Some(true), "workspace.allowYes");
        add(!self.env.set.is_empty(), "env.set");
        keys
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn err(text: &str) -> String {
        parse_settings(text, "/home/u/x.json")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_object_is_fine() {
        assert_eq!(parse_settings("{}", "x").unwrap(), Settings::default());
        assert_eq!(
            parse_settings(" {\n} \n", "x").unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn unknown_keys_name_the_full_path() {
        assert_eq!(
            err(r#"{"filesystem": {"allowWrtie": []}}"#),
            "/home/u/x.json: filesystem.allowWrtie: unknown key (did you mean \"allowWrite\"?)"
        );
        assert_eq!(err(r#"{"bogus": 1}"#), "/home/u/x.json: bogus: unknown key");
        assert_eq!(
            err(r#"{"network": {"mitmProxy": {"socketPath": "/s", "domains": [], "x": 1}}}"#),
            "/home/u/x.json: network.mitmProxy.x: unknown key"
        );
        assert_eq!(
            err(r#"{"credentials": {"files": [{"path": "a", "mode": "deny", "injectHost": []}]}}"#),
            "/home/u/x.json: credentials.files[0].injectHost: unknown key (did you mean \"injectHosts\"?)"
        );
        assert_eq!(
            err(r#"{"limits": {"pid": 3}}"#),
            "/home/u/x.json: limits.pid: unknown key (did you mean \"pids\"?)"
        );
        assert_eq!(
            err(r#"{"env": {"allow": [], "sets": {}}}"#),
            "/home/u/x.json: env.sets: unknown key (did you mean \"set\"?)"
        );
    }

    #[test]
    fn wrong_types_name_the_path() {
        assert_eq!(
            err(r#"{"limits": {"pids": "many"}}"#),
            "/home/u/x.json: limits.pids: expected a positive integer"
        );
        assert_eq!(
            err(r#"{"limits": {"pids": 0}}"#),
            "/home/u/x.json: limits.pids: expected a positive integer"
        );
        assert_eq!(
            err(r#"{"limits": {"openFiles": -3}}"#),
            "/home/u/x.json: limits.openFiles: expected a positive integer"
        );
        assert_eq!(
            err(r#"{"limits": {"cpuSeconds": 1.5}}"#),
            "/home/u/x.json: limits.cpuSeconds: expected a positive integer"
        );
        assert!(err(r#"{"limits": {"memory": "lots"}}"#)
            .starts_with("/home/u/x.json: limits.memory: expected a size like"));
        assert!(err(r#"{"limits": {"memory": true}}"#)
            .starts_with("/home/u/x.json: limits.memory: invalid type: boolean `true`"));
        assert!(err(r#"{"filesystem": {"allowGitConfig": "yes"}}"#).starts_with(
            "/home/u/x.json: filesystem.allowGitConfig: invalid type: string \"yes\", expected a boolean"
        ));
        assert!(err(r#"{"filesystem": {"denyRead": "/x"}}"#)
            .starts_with("/home/u/x.json: filesystem.denyRead: invalid type: string"));
        assert!(err(r#"{"filesystem": {"denyRead": ["/x", 3]}}"#)
            .starts_with("/home/u/x.json: filesystem.denyRead[1]: invalid type: integer"));
        assert_eq!(
            err(r#"{"network": {"httpProxyPort": 70000}}"#),
            "/home/u/x.json: network.httpProxyPort: expected a port number from 1 to 65535"
        );
        assert_eq!(
            err(r#"{"credentials": {"files": [{"path": "a", "mode": "hide"}]}}"#),
            "/home/u/x.json: credentials.files[0].mode: \"hide\" is not one of \"deny\", \"mask\""
        );
        assert_eq!(
            err(r#"{"ripgrep": {}}"#),
            "/home/u/x.json: ripgrep: missing required key \"command\""
        );
        assert_eq!(
            err("[]"),
            "/home/u/x.json: (top level): the file must hold a JSON object"
        );
    }

    #[test]
    fn syntax_errors_and_duplicates() {
        assert!(err("{").starts_with("/home/u/x.json: not valid JSON: EOF"));
        assert!(err("{} {}").starts_with("/home/u/x.json: not valid JSON: trailing characters"));
        assert!(err(r#"{"env": {}, "env": {}}"#).contains("duplicate field `env`"));
    }

    #[test]
    fn weakening_options_are_refused() {
        let e = err(r#"{"enableWeakerNestedSandbox": true}"#);
        assert!(
            e.starts_with(
                "/home/u/x.json: enableWeakerNestedSandbox: ringfence never runs a weaker sandbox"
            ),
            "{e}"
        );
        parse_settings(r#"{"enableWeakerNestedSandbox": false}"#, "x").unwrap();
        assert!(err(r#"{"filesystem": {"disabled": true}}"#)
            .starts_with("/home/u/x.json: filesystem.disabled: ringfence never turns"));
    }

    #[test]
    fn sizes_and_limits() {
        let s = parse_settings(
            r#"{"limits": {"pids": 10, "memory": "512M", "cpuSeconds": 60, "wallSeconds": 600,
                "openFiles": 100, "fileSize": 1048576, "tmpSize": "2G"}}"#,
            "x",
        )
        .unwrap();
        let l = s.limits;
        assert_eq!(l.pids, Some(10));
        assert_eq!(l.memory, Some(ByteSize(512 << 20)));
        assert_eq!(l.file_size, Some(ByteSize(1 << 20)));
        assert_eq!(l.tmp_size, Some(ByteSize(2 << 30)));
        assert_eq!(
            (l.cpu_seconds, l.wall_seconds, l.open_files),
            (Some(60), Some(600), Some(100))
        );
        assert!(err(r#"{"limits": {"tmpSize": 0}}"#)
            .contains("limits.tmpSize: expected a positive byte count"));
        assert!(
            err(r#"{"limits": {"fileSize": "1.5G"}}"#).contains("limits.fileSize: expected a size")
        );
    }

    #[test]
    fn domains_are_checked_lightly() {
        parse_settings(
            r#"{"network": {"allowedDomains": ["github.com", "*.npmjs.org", "api.example.com:443", "[::1]:8080", "localhost"],
                "deniedDomains": ["*", "*:22", "evil.com"]}}"#,
            "x",
        )
        .unwrap();
        assert!(
            err(r#"{"network": {"allowedDomains": ["https://github.com"]}}"#).starts_with(
                "/home/u/x.json: network.allowedDomains[0]: \"https://github.com\" is a URL"
            )
        );
        assert!(
            err(r#"{"network": {"allowedDomains": ["ok.com", "github.com/x"]}}"#)
                .starts_with("/home/u/x.json: network.allowedDomains[1]:")
        );
        assert!(err(r#"{"network": {"allowedDomains": ["a b.com"]}}"#).contains("whitespace"));
        assert!(err(r#"{"network": {"allowedDomains": [""]}}"#).contains("cannot be empty"));
        assert!(err(r#"{"network": {"allowedDomains": ["*"]}}"#).contains("every domain"));
        assert!(err(
            r#"{"network": {"mitmProxy": {"socketPath": "/s", "domains": ["http://x"]}}}"#
        )
        .contains("network.mitmProxy.domains[0]"));
    }

    #[test]
    fn env_section_is_checked() {
        let s = parse_settings(
            r#"{"env": {"allow": ["AWS_PROFILE"], "deny": ["FOO_*"], "set": {"LANG": "C.UTF-8"}}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(s.env.allow, ["AWS_PROFILE"]);
        assert_eq!(s.env.set["LANG"], "C.UTF-8");
        assert!(
            err(r#"{"env": {"set": {"A=B": "x"}}}"#).starts_with("/home/u/x.json: env.set.A=B:")
        );
        assert!(err(r#"{"env": {"deny": [""]}}"#).starts_with("/home/u/x.json: env.deny[0]:"));
        assert!(
            err(r#"{"credentials": {"envVars": [{"name": "1X", "mode": "deny"}]}}"#)
                .starts_with("/home/u/x.json: credentials.envVars[0].name:")
        );
    }

    #[test]
    fn egress_keys_are_checked() {
        assert!(err(r#"{"network": {"parentProxy": {"https": "https://u:secret@proxy:443"}}}"#)
            .starts_with("/home/u/x.json: network.parentProxy.https: \"https://***@proxy:443\": a TLS connection to the parent proxy"));
        assert!(
            !err(r#"{"network": {"parentProxy": {"https": "https://u:secret@proxy:443"}}}"#)
                .contains("secret")
        );
        assert!(
            err(r#"{"network": {"parentProxy": {"http": "socks5://p:1080"}}}"#)
                .starts_with("/home/u/x.json: network.parentProxy.http:")
        );
        assert!(
            err(r#"{"network": {"parentProxy": {"http": "http://p:3128", "x": 1}}}"#)
                .contains("network.parentProxy.x: unknown key")
        );
        let ok = parse_settings(
            r#"{"network": {"parentProxy": {"http": "proxy:3128", "https": "", "noProxy": "a,b"}}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(
            ok.network.parent_proxy.unwrap().http.as_deref(),
            Some("proxy:3128")
        );
        assert!(err(
            r#"{"network": {"mitmProxy": {"socketPath": "mitm.sock", "domains": ["a.com"]}}}"#
        )
        .starts_with("/home/u/x.json: network.mitmProxy.socketPath:"));
        assert!(
            err(r#"{"network": {"mitmProxy": {"socketPath": "/m.sock", "domains": []}}}"#)
                .starts_with("/home/u/x.json: network.mitmProxy.domains:")
        );
        assert!(err(r#"{"network": {"socksProxyPort": 0}}"#)
            .starts_with("/home/u/x.json: network.socksProxyPort:"));
    }

    /// An srt settings file that uses every key srt knows that ringfence accepts (the keys it
    /// refuses are in `srt_keys_not_supported_yet_are_refused`).
    pub(crate) const SRT_EVERY_KEY: &str = r#"{
      "network": {
        "allowedDomains": ["github.com", "*.npmjs.org", "api.example.com:443", "[::1]:3000"],
        "deniedDomains": ["evil.example.com", "*:22"],
        "deniedDomainReasons": {"*:22": "no ssh"},
        "strictAllowlist": true,
        "deniedResolvedAddresses": ["10.0.0.0/8"],
        "allowUnixSockets": ["/var/run/docker.sock"],
        "allowAllUnixSockets": false,
        "allowLocalBinding": true,
        "allowMachLookup": ["com.example.*"]
      },
      "filesystem": {
        "disabled": false,
        "denyRead": ["~/.ssh", {"path": "~/*.key", "literal": true}],
        "allowRead": ["~/.ssh/config"],
        "allowWrite": ["."],
        "denyWrite": ["./secrets"],
        "allowGitConfig": true
      },
      "credentials": {
        "files": [{"path": "~/.netrc", "mode": "deny"}, {"path": "~/.aws", "mode": "deny"}],
        "envVars": [{"name": "MY_SERVICE", "mode": "deny"}]
      },
      "ignoreViolations": {"*": ["/usr/bin"], "git push": ["/tmp"]},
      "enableWeakerNestedSandbox": false,
      "allowNestedUserNamespaces": false,
      "enableWeakerNetworkIsolation": false,
      "allowAppleEvents": false,
      "ripgrep": {"command": "rg", "args": ["--hidden"], "argv0": "rg"},
      "mandatoryDenySearchDepth": 3,
      "allowPty": false,
      "seccomp": {"applyPath": "/usr/lib/apply-seccomp", "argv0": "apply-seccomp"},
      "bwrapPath": "/usr/bin/bwrap",
      "socatPath": "/usr/bin/socat",
      "javaAgentJarPath": "/opt/srt-proxy-agent.jar",
      "windows": {"backend": "srt-win", "sandboxUser": "srt-sandbox", "sublayerGuid": "6f9b1c2e-0000-4000-8000-000000000001",
                  "wfpSublayerGuid": "6f9b1c2e-0000-4000-8000-000000000001",
                  "proxyPortRange": [60080, 60089], "srtWin": {"path": "C:\\srt-win.exe"}},
      "git": {"safeDirectories": ["/repo"]}
    }"#;

    #[test]
    fn srt_file_with_every_key_parses() {
        let s = parse_settings(SRT_EVERY_KEY, "srt.json").unwrap();
        assert_eq!(s.network.allowed_domains.len(), 4);
        assert_eq!(s.filesystem.allow_git_config, Some(true));
        assert_eq!(
            s.filesystem.deny_read[1],
            PathEntry::Literal("~/*.key".into())
        );
        assert_eq!(
            s.windows.as_ref().unwrap().proxy_port_range,
            Some((60080, 60089))
        );
        let inert = s.inert_keys();
        for k in ["ripgrep", "mandatoryDenySearchDepth", "allowPty", "windows"] {
            assert!(inert.contains(&k), "{k} missing from {inert:?}");
        }
        for k in [
            "ignoreViolations",
            "git",
            "network.deniedDomainReasons",
            "network.allowUnixSockets",
        ] {
            assert!(!inert.contains(&k), "{k} acts: {inert:?}");
        }
    }

    #[test]
    fn srt_keys_not_supported_yet_are_refused() {
        let cases = [
            (r#"{"network": {"filterRequest": {}}}"#, "network.filterRequest: is a request callback of srt's library"),
            (r#"{"network": {"allowPlaintextHeaderSet": false}}"#, "network.allowPlaintextHeaderSet: only changes what a network.filterRequest callback"),
            (r#"{"credentials": {"allowPlaintextInject": true}}"#, "credentials.allowPlaintextInject: credentials are put into requests only inside verified TLS"),
            (r#"{"credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "maskClaims": ["sub"]}]}}"#, "credentials.files[0].maskClaims: names claims inside a decoded value"),
            (r#"{"credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "extract": "x"}]}}"#, "credentials.files[0].extract: \"x\" has no capture group"),
            (r#"{"credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "extract": "(?=a)(b)"}]}}"#, "credentials.files[0].extract: \"(?=a)(b)\" is not a pattern ringfence can use"),
            (r#"{"credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "extract": "(\\p{L}+)"}]}}"#, "credentials.files[0].extract: \"(\\p{L}+)\" is not a pattern ringfence can use"),
            (r#"{"credentials": {"files": [{"path": "~/.netrc", "mode": "deny", "extract": "(x)"}]}}"#, "credentials.files[0].extract: belongs to mode \"mask\""),
            (r#"{"credentials": {"envVars": [{"name": "T", "mode": "mask", "decode": "jwt", "extract": "(x)"}]}}"#, "credentials.envVars[0].extract: cannot be combined with decode"),
            (r#"{"credentials": {"envVars": [{"name": "T", "mode": "mask", "extract": "x"}]}}"#, "credentials.envVars[0].extract: \"x\" has no capture group"),
            (r#"{"credentials": {"files": [{"path": "x", "mode": "deny", "injectHosts": ["a.example.com"]}]}}"#, "credentials.files[0].injectHosts: belongs to mode \"mask\""),
            (r#"{"credentials": {"envVars": [{"name": "A", "mode": "deny", "extract": "(.*)"}]}}"#, "credentials.envVars[0].extract: belongs to mode \"mask\""),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(
                e.starts_with(&format!("/home/u/x.json: {want}")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn allow_plaintext_inject_false_is_srt_default_and_accepted() {
        let s = parse_settings(r#"{"credentials": {"allowPlaintextInject": false}}"#, "x").unwrap();
        assert_eq!(
            s.credentials
                .as_ref()
                .and_then(|c| c.allow_plaintext_inject),
            Some(false)
        );
        assert!(!s.inert_keys().contains(&"credentials.allowPlaintextInject"));
    }

    #[test]
    fn literal_path_entries() {
        let s = parse_settings(
            r#"{"filesystem": {"allowWrite": [{"path": "/w/[a]", "literal": true}, "/w/*"]}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(
            s.filesystem.allow_write,
            [
                PathEntry::Literal("/w/[a]".into()),
                PathEntry::Written("/w/*".into())
            ]
        );
        assert_eq!(
            err(r#"{"filesystem": {"denyRead": [{"path": "/x", "literal": false}]}}"#),
            "/home/u/x.json: filesystem.denyRead[0]: an object entry needs \"literal\": true; write a plain string for a path or pattern"
        );
        assert_eq!(
            err(r#"{"filesystem": {"denyRead": [{"path": "/x"}]}}"#),
            "/home/u/x.json: filesystem.denyRead[0]: missing required key \"literal\""
        );
        assert!(err(
            r#"{"filesystem": {"denyWrite": [{"path": "/x", "literal": true, "glob": 1}]}}"#
        )
        .starts_with("/home/u/x.json: filesystem.denyWrite[0].glob: unknown key"),);
        assert_eq!(
            err(r#"{"filesystem": {"allowRead": [{"path": "", "literal": true}]}}"#),
            "/home/u/x.json: filesystem.allowRead[0]: a path cannot be empty"
        );
        assert!(err(r#"{"filesystem": {"allowRead": [3]}}"#).contains(
            "filesystem.allowRead[0]: invalid type: integer `3`, expected a path, or {\"path\""
        ));
    }

    #[test]
    fn unbracketed_ipv6_and_public_suffix_wildcards_are_refused() {
        for list in ["allowedDomains", "deniedDomains"] {
            for bad in ["::1", "2001:db8::1:443", "fe80::1%eth0"] {
                let e = err(&format!(r#"{{"network": {{"{list}": ["{bad}"]}}}}"#));
                assert!(
                    e.starts_with(&format!("/home/u/x.json: network.{list}[0]: \"{bad}\": write an IPv6 address in brackets")),
                    "{e}"
                );
            }
        }
        parse_settings(
            r#"{"network": {"allowedDomains": ["[::1]:8080", "[2001:db8::1]", "*.example.co.uk", "*.github.com:443", "a.b.test", "co.uk"],
                "deniedDomains": ["*.com", "*.test", "[::1]"]}}"#,
            "x",
        )
        .unwrap();
        for bad in [
            "*.test",
            "*.com",
            "*.co.uk",
            "*.github.io",
            "*.localhost",
            "*.uk:443",
            "*.CO.UK",
            "*.co.uk.",
            "*.\u{FF23}\u{FF2F}.\u{FF35}\u{FF2B}",
            "*.\u{0440}\u{0444}",
        ] {
            let e = err(&format!(
                r#"{{"network": {{"allowedDomains": ["{bad}"]}}}}"#
            ));
            assert!(
                e.starts_with(&format!("/home/u/x.json: network.allowedDomains[0]: \"{bad}\" would allow every domain registered under the public suffix")),
                "{e}"
            );
        }
    }

    #[test]
    fn srt_minimal_file_parses() {
        let s = parse_settings(
            r#"{"network": {"allowedDomains": [], "deniedDomains": []},
                "filesystem": {"denyRead": [], "allowWrite": [], "denyWrite": []}}"#,
            "x",
        )
        .unwrap();
        assert!(s.widening_keys().is_empty());
    }

    #[test]
    fn schema_has_byte_size_and_ranges() {
        let v = crate::schema();
        assert_eq!(
            v["definitions"]["LimitSettings"]["properties"]["pids"]["minimum"],
            1.0
        );
        assert!(v["properties"]["$schema"].is_object());
    }

    #[test]
    fn closest_key() {
        assert_eq!(
            closest("allowwrite", &["allowWrite", "denyWrite"]),
            Some("allowWrite")
        );
        assert_eq!(closest("zzzzzz", &["allowWrite"]), None);
    }

    #[test]
    fn network_ask_and_resolved_addresses_are_checked() {
        let s = parse_settings(
            r#"{"network": {"ask": true, "askTimeoutSeconds": 5,
                "deniedResolvedAddresses": ["10.0.0.0/8", "fd00::/8", "192.0.2.1"]}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(s.network.ask, Some(true));
        assert_eq!(s.network.ask_timeout_seconds, Some(5));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "fd00::/129",
            "example.com",
            "10.0.0/8",
        ] {
            let text = format!(r#"{{"network": {{"deniedResolvedAddresses": ["{bad}"]}}}}"#);
            assert!(
                err(&text).starts_with("/home/u/x.json: network.deniedResolvedAddresses[0]: "),
                "{bad}: {}",
                err(&text)
            );
        }
        assert!(err(r#"{"network": {"askTimeoutSeconds": 0}}"#)
            .contains("network.askTimeoutSeconds: expected a number of seconds above 0"));
    }
}
