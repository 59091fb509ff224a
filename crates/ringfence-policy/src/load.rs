//! Loading and merging the policy layers: managed > user > project > command line.
//! Lists are unions that keep each rule's layer; this is where a project file is held to
//! restrictions only and where lower layers are stopped from loosening managed settings.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::env::wildcard_match;
use crate::limits::merge_limits;
use crate::paths::{is_within, resolve_rules, RuleKind, RuleSource};
use crate::settings::{parse_settings, PathEntry, Settings};
use crate::{CommandRule, EnvPolicy, Error, Layer, Limits, PathRule, Permissions};

/// Filesystem rules given on the command line (the lowest layer), as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliRules {
    pub allow_write: Vec<String>,
    pub deny_write: Vec<String>,
    pub deny_read: Vec<String>,
    pub allow_read: Vec<String>,
    /// `--ask-fs`: `filesystem.ask` for this run.
    pub ask_fs: bool,
}

/// Where to find the settings layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Working directory: base of relative paths and home of the project file.
    pub cwd: PathBuf,
    /// Home directory, for `~`.
    pub home: PathBuf,
    /// Managed settings; used if the file exists.
    pub managed: PathBuf,
    /// Candidate user settings files; the first that exists is used.
    pub user: Vec<PathBuf>,
    /// `-s FILE`: replaces the user layer; must exist, be readable and non-empty.
    pub settings: Option<PathBuf>,
    /// The project file; `None` means `cwd/.ringfence.json`. Used if it exists.
    pub project: Option<PathBuf>,
    /// Rules from the command line.
    pub cli: CliRules,
    /// The host environment, for `$NAME` entries of `network.allowUnixSockets`.
    pub host_env: HostEnv,
    /// The machine's memory in bytes (MemTotal), from which the default `limits.memory` is
    /// derived; `None` when the caller does not know it.
    pub machine_memory: Option<u64>,
    /// The caller sees requests in the clear without terminating TLS (`ringfence proxy
    /// --reverse`): credentials and request rules do not need `network.tlsTerminate`.
    pub clear_requests: bool,
}

impl LoadOptions {
    /// The default locations for a working directory and home directory.
    pub fn new(cwd: PathBuf, home: PathBuf) -> Self {
        LoadOptions {
            managed: PathBuf::from("/etc/ringfence/managed.json"),
            user: vec![
                home.join(".config/ringfence/settings.json"),
                home.join(".srt-settings.json"),
            ],
            settings: None,
            project: Some(cwd.join(".ringfence.json")),
            cli: CliRules::default(),
            host_env: HostEnv::from_process(),
            cwd,
            home,
            machine_memory: None,
            clear_requests: false,
        }
    }
}

/// Environment variables of the host, looked up by name. Its Debug output lists the names
/// only: values such as tokens must not reach a log through a printed `LoadOptions`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HostEnv(pub BTreeMap<String, String>);

impl HostEnv {
    /// The environment of this process (variables whose name and value are UTF-8).
    pub fn from_process() -> HostEnv {
        HostEnv(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl std::fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A variable the sandbox sees as a placeholder (`credentials.envVars`, mode "mask").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedEnv {
    /// The settings file that declared it, and the entry (`credentials.envVars[N]`).
    pub origin: String,
    pub key: String,
    pub name: String,
    /// Hosts (allowedDomains syntax) the real value goes to; `None`: every allowed host.
    pub inject_hosts: Option<Vec<String>>,
    /// `extract`: a regex whose group 1 is each part of the value to mask; `None`: the whole.
    pub extract: Option<String>,
    /// `onExtractNoMatch` (default "warn").
    pub on_no_match: crate::OnExtractNoMatch,
    /// `decode: "jwt"`: the value is a JWT, shown as a JWT-shaped placeholder.
    pub decode_jwt: bool,
    /// `maskClaims`: with decode, these payload claims get placeholders of their own.
    pub mask_claims: Vec<String>,
}

/// A file the sandbox sees with placeholders (`credentials.files`, mode "mask").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedFile {
    /// The settings file that declared it, and the entry (`credentials.files[N]`).
    pub origin: String,
    pub key: String,
    /// The file, resolved (`~`, relative to the working directory); one name, never a glob.
    pub path: PathBuf,
    /// `extract`: a regex whose group 1 is each value to mask; `None`: the whole file.
    pub extract: Option<String>,
    /// `onExtractNoMatch` (default "warn").
    pub on_no_match: crate::OnExtractNoMatch,
    /// `maskDuplicates`: verbatim copies of a captured value elsewhere are masked too.
    pub mask_duplicates: bool,
    /// `decode: "jwt"`: only captures that are JWTs are masked, by JWT-shaped placeholders
    /// (the pattern defaults to [`crate::JWT_PATTERN`]).
    pub decode_jwt: bool,
    /// `maskClaims`: with decode, these payload claims get placeholders of their own.
    pub mask_claims: Vec<String>,
    /// Hosts (allowedDomains syntax) the real value goes to; `None`: every allowed host.
    pub inject_hosts: Option<Vec<String>>,
}

/// A `credentials.awsPairs` entry: masked variables that make one AWS credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsPair {
    /// `FILE: credentials.awsPairs[N]`; empty for the implicit pair of the variables the AWS
    /// tools read (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    pub origin: String,
    pub access_key_id_var: String,
    pub secret_access_key_var: String,
    pub session_token_var: Option<String>,
}

impl AwsPair {
    /// The pair of the variables the AWS SDKs and CLI read, used as srt does when no
    /// `credentials.awsPairs` entry names any of them.
    pub fn conventional(pairs: &[AwsPair]) -> Option<AwsPair> {
        let names = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ];
        let claimed = pairs.iter().any(|a| {
            names.iter().any(|n| {
                a.access_key_id_var == *n
                    || a.secret_access_key_var == *n
                    || a.session_token_var.as_deref() == Some(n)
            })
        });
        (!claimed).then(|| AwsPair {
            origin: String::new(),
            access_key_id_var: names[0].into(),
            secret_access_key_var: names[1].into(),
            session_token_var: Some(names[2].into()),
        })
    }
}

/// `credentials.sigv4`: the request shapes that pass un-resigned (`"passthrough"` in some
/// layer) instead of being refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sigv4Passthrough {
    pub streaming: bool,
    pub presigned: bool,
    pub sigv4a: bool,
}

/// The merged policy of all layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Paths that cannot be read. Includes `credentials.files` entries (srt).
    pub deny_read: Vec<PathRule>,
    /// The home directory's credential stores hidden by default (the built-in list, layer
    /// `Default`) and each layer's `filesystem.defaultDenyRead`; `allowRead` re-opens them
    /// path by path, even those from the managed layer.
    pub default_deny_read: Vec<PathRule>,
    /// The `credentials.files` paths of every layer (also in `deny_read`): secrets to the
    /// shell analysis wherever they are.
    pub credential_files: Vec<std::path::PathBuf>,
    /// Paths re-allowed for reading inside denied areas.
    pub allow_read: Vec<PathRule>,
    /// Paths where writing is allowed.
    pub allow_write: Vec<PathRule>,
    /// Paths where writing is denied; beats `allow_write`.
    pub deny_write: Vec<PathRule>,
    pub allow_git_config: bool,
    /// `filesystem.ask`: writes outside the writable roots are asked about, not refused.
    pub fs_ask: bool,
    /// `filesystem.askRead`: reads of hidden files are asked about, not answered empty.
    pub fs_ask_read: bool,
    pub allow_all_unix_sockets: bool,
    /// `network.allowUnixSockets`: unix socket paths the command may connect and send to,
    /// `$NAME` entries expanded from the host environment, symlinks resolved where the path
    /// exists. Union of the managed and user layers (a project file may not list any).
    pub allow_unix_sockets: Vec<PathRule>,
    pub allow_local_binding: bool,
    /// `network.transparent` in any layer (the policy stays the same; more programs are held
    /// to it).
    pub transparent: bool,
    /// `isolation: "vm"` in any layer: the command runs in a virtual machine.
    pub isolation_vm: bool,
    /// `allowNestedUserNamespaces` (srt): the command may create user namespaces.
    pub allow_nested_user_namespaces: bool,
    /// Allowed domain patterns, srt syntax, union of all layers in layer order.
    pub allowed_domains: Vec<String>,
    /// Denied domain patterns, srt syntax; checked first.
    pub denied_domains: Vec<String>,
    /// Reasons shown for deniedDomains entries, keyed by the entry; a higher layer's wins.
    pub denied_domain_reasons: BTreeMap<String, String>,
    /// Addresses and CIDR ranges an allowed host name must not resolve to, all layers.
    pub denied_resolved_addresses: Vec<String>,
    /// `network.strictAllowlist` in some layer: never ask.
    pub strict_allowlist: bool,
    /// Ask about hosts in neither list (`network.ask`, and no layer sets strictAllowlist).
    pub ask: bool,
    /// Seconds a connection waits for an answer (`network.askTimeoutSeconds`; the lowest
    /// wins); `None` means [`ASK_TIMEOUT_SECONDS`].
    pub ask_timeout_seconds: Option<u64>,
    /// Where allowed connections leave through (srt's keys, managed over user; see
    /// [`merge_egress`]): `network.parentProxy`, `network.mitmProxy`, and the user's own
    /// proxies that replace the built-in ones (`network.httpProxyPort`, `socksProxyPort`).
    pub parent_proxy: Option<crate::ParentProxySettings>,
    pub mitm_proxy: Option<crate::MitmProxySettings>,
    /// `network.refuseOpaqueTunnels: true` in some layer: the first file that said so.
    pub refuse_opaque_tunnels: Option<String>,
    /// `network.ambiguousRequestTarget: "refuse"` in some layer: the first file that said so.
    pub refuse_ambiguous_paths: Option<String>,
    /// `network.ambiguousRequestTarget: "asSpelled"` in some layer (and "refuse" in none, which
    /// wins): paths are forwarded as spelled, and request rules judge both readings.
    pub spelled_paths: Option<String>,
    /// `network.stripResponseHeaders` of every layer, and the first file that set any.
    pub strip_response_headers: Vec<String>,
    pub strip_response_origin: Option<String>,
    /// `credentials.inject` of every layer, in layer order.
    pub header_injections: Vec<crate::HeaderInjection>,
    /// `network.requests` of every layer, in layer order.
    pub request_rules: Vec<crate::RequestRule>,
    /// `credentials.envVars` entries with mode "mask" (also in `env.deny`: the host value is
    /// never passed in), in layer order.
    pub masked_env: Vec<MaskedEnv>,
    /// `credentials.files` entries with mode "mask" (also in `deny_read`), in layer order.
    pub masked_files: Vec<MaskedFile>,
    /// `credentials.awsPairs` of every layer. The run adds the pair of the variables the AWS
    /// tools read unless one of these names one of them (see [`AwsPair::conventional`]).
    pub aws_pairs: Vec<AwsPair>,
    pub sigv4_passthrough: Sigv4Passthrough,
    /// `network.tlsTerminate` (managed over user, like mitmProxy; a project file may not set it).
    pub tls_terminate: Option<crate::TlsTerminate>,
    pub http_proxy_port: Option<u16>,
    pub socks_proxy_port: Option<u16>,
    pub env: EnvPolicy,
    pub limits: Limits,
    /// Command permission rules of every layer and the resulting `defaultMode`.
    pub permissions: Permissions,
    pub workspace: Workspace,
    /// The settings files that were loaded, in layer order.
    pub files: Vec<(Layer, PathBuf)>,
    /// `ignoreViolations` (srt) of every layer: command pattern (a substring of the command,
    /// or `*`) to substrings of the `<sandbox_violations>` lines not to report.
    pub ignore_violations: BTreeMap<String, Vec<String>>,
    /// `git.safeDirectories` (srt) of every layer, resolved to absolute paths.
    pub git_safe_directories: Vec<PathBuf>,
    /// Non-fatal remarks for the user (skipped paths, srt keys without effect).
    pub notes: Vec<String>,
}

impl Policy {
    /// Whether a `<sandbox_violations>` line is left out of the report by `ignoreViolations`:
    /// a `*` entry's substrings apply to every command, another entry's when the command
    /// contains its key (as srt matches them). The activity log records the event anyway.
    pub fn ignores_violation(&self, line: &str, command: &str) -> bool {
        self.ignore_violations.iter().any(|(pattern, parts)| {
            (pattern == "*" || command.contains(pattern.as_str()))
                && parts.iter().any(|p| line.contains(p.as_str()))
        })
    }

    /// `GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` pairs for `git.safeDirectories`: each directory
    /// and the repositories directly below it (`DIR/*`, git 2.46 and later); above eight
    /// directories, every repository, as srt does.
    pub fn git_safe_directory_config(&self) -> Vec<(String, String)> {
        let dirs = &self.git_safe_directories;
        if dirs.len() > 8 {
            return vec![("safe.directory".into(), "*".into())];
        }
        let mut out = Vec::new();
        for d in dirs {
            let d = d.display().to_string();
            let glob = if d.ends_with('/') {
                format!("{d}*")
            } else {
                format!("{d}/*")
            };
            out.push(("safe.directory".to_string(), d));
            out.push(("safe.directory".to_string(), glob));
        }
        out
    }
}

/// The merged `workspace` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Writable roots are copy-on-write overlays reviewed with `ringfence apply`.
    pub overlay: bool,
    /// Deletions above this many files ask for confirmation at apply.
    pub confirm_deletes: u64,
    /// `apply --yes` may answer confirmations.
    pub allow_yes: bool,
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace {
            overlay: false,
            confirm_deletes: 10,
            allow_yes: true,
        }
    }
}

/// Reads a settings file. `Ok(None)` only when it does not exist and is optional.
fn read_settings(path: &Path, required: bool) -> Result<Option<Settings>, Error> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    parse_settings(&text, &path.display().to_string()).map(Some)
}

/// Loads, validates and merges every layer. Any error means nothing may run.
pub fn load(opts: &LoadOptions) -> Result<Policy, Error> {
    let mut layers: Vec<(Layer, PathBuf, Settings)> = Vec::new();
    if let Some(s) = read_settings(&opts.managed, false)? {
        layers.push((Layer::Managed, opts.managed.clone(), s));
    }
    if let Some(path) = &opts.settings {
        if let Some(s) = read_settings(path, true)? {
            layers.push((Layer::User, path.clone(), s));
        }
    } else {
        for path in &opts.user {
            if let Some(s) = read_settings(path, false)? {
                layers.push((Layer::User, path.clone(), s));
                break;
            }
        }
    }
    let project = opts
        .project
        .clone()
        .unwrap_or_else(|| opts.cwd.join(".ringfence.json"));
    let mut notes = Vec::new();
    if layers.iter().any(|(_, p, _)| same_file(p, &project)) {
        notes.push(format!(
            "{}: already loaded as a higher layer; not read again as the project file",
            project.display()
        ));
    } else if let Some(s) = read_settings(&project, false)? {
        layers.push((Layer::Project, project, s));
    }
    let mut merge = Merge::new(opts);
    merge.policy.notes = notes;
    merge.policy.default_deny_read = crate::DEFAULT_DENY_READ
        .iter()
        .map(|d| PathRule {
            path: crate::normalize(&opts.home.join(d)),
            pattern: format!("~/{d}"),
            layer: Layer::Default,
            origin: "filesystem.defaultDenyRead".to_string(),
        })
        .collect();
    for (layer, path, settings) in &layers {
        merge.apply(*layer, path, settings)?;
    }
    merge.apply_cli(&opts.cli)?;
    // Unset, it follows the overlay's threshold: one number for "this deletes a lot".
    merge.policy.permissions.confirm_deletes = merge
        .confirm_deletes
        .0
        .unwrap_or(merge.policy.workspace.confirm_deletes);
    check_unix_sockets_readable(&merge.policy)?;
    check_aws_pairs(&merge.policy)?;
    if !opts.clear_requests {
        for (origin, key) in [
            (
                &merge.policy.refuse_opaque_tunnels,
                "network.refuseOpaqueTunnels",
            ),
            (
                &merge.policy.refuse_ambiguous_paths,
                "network.ambiguousRequestTarget",
            ),
            (
                &merge.policy.spelled_paths,
                "network.ambiguousRequestTarget",
            ),
            (
                &merge.policy.strip_response_origin,
                "network.stripResponseHeaders",
            ),
        ] {
            if let (Some(origin), None) = (origin, &merge.policy.tls_terminate) {
                return Err(Error::invalid(
                    origin,
                    key,
                    "needs network.tlsTerminate in ringfence (it applies to terminated tunnels); \
                     add network.tlsTerminate",
                ));
            }
        }
        if let (Some(j), None) = (
            merge.policy.header_injections.first(),
            &merge.policy.tls_terminate,
        ) {
            let (file, key) = j.origin.rsplit_once(": ").unwrap_or(("", &j.origin));
            return Err(Error::invalid(
                file,
                key,
                "needs network.tlsTerminate (the value is added only inside a verified TLS \
                 connection); add network.tlsTerminate",
            ));
        }
        if let (Some(r), None) = (
            merge.policy.request_rules.first(),
            &merge.policy.tls_terminate,
        ) {
            let (file, key) = r.origin.rsplit_once(": ").unwrap_or(("", &r.origin));
            return Err(Error::invalid(
                file,
                key,
                "needs network.tlsTerminate (rules see requests only inside terminated tunnels); \
                 add network.tlsTerminate",
            ));
        }
        if let (Some(m), None) = (
            merge.policy.masked_files.first(),
            &merge.policy.tls_terminate,
        ) {
            return Err(Error::invalid(
                &m.origin,
                format!("{}.mode", m.key),
                "\"mask\" needs network.tlsTerminate (the real value is put back only inside a \
                 verified TLS connection); add network.tlsTerminate or use \"deny\"",
            ));
        }
        if let (Some(m), None) = (merge.policy.masked_env.first(), &merge.policy.tls_terminate) {
            return Err(Error::invalid(
                &m.origin,
                format!("{}.mode", m.key),
                "\"mask\" needs network.tlsTerminate (the real value is put back only inside a \
                 verified TLS connection); add network.tlsTerminate or use \"deny\"",
            ));
        }
    }
    Ok(merge.policy)
}

/// Each `credentials.awsPairs` variable fills one slot and is a masked variable (srt's rule).
fn check_aws_pairs(p: &Policy) -> Result<(), Error> {
    let mut seen: Vec<&str> = Vec::new();
    for a in &p.aws_pairs {
        let (file, key) = a.origin.rsplit_once(": ").unwrap_or(("", &a.origin));
        let slots = [
            ("accessKeyIdVar", Some(&a.access_key_id_var)),
            ("secretAccessKeyVar", Some(&a.secret_access_key_var)),
            ("sessionTokenVar", a.session_token_var.as_ref()),
        ];
        for (slot, name) in slots {
            let Some(name) = name else { continue };
            if seen.contains(&name.as_str()) {
                return Err(Error::invalid(
                    file,
                    format!("{key}.{slot}"),
                    format!(
                        "\"{name}\" fills more than one awsPairs slot; each variable fills one"
                    ),
                ));
            }
            seen.push(name);
            if p.masked_env
                .iter()
                .any(|m| &m.name == name && (m.extract.is_some() || m.decode_jwt))
            {
                return Err(Error::invalid(
                    file,
                    format!("{key}.{slot}"),
                    format!(
                        "\"{name}\" is masked with extract or decode; an AWS pair member must be \
                         masked whole (the placeholder is the whole value)"
                    ),
                ));
            }
            if !p.masked_env.iter().any(|m| &m.name == name) {
                return Err(Error::invalid(
                    file,
                    format!("{key}.{slot}"),
                    format!(
                        "\"{name}\" is not a credentials.envVars entry with mode \"mask\"; an \
                         AWS pair links masked variables, so add that entry"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `$NAME` or `$NAME/rest` at the start of an allowUnixSockets entry, replaced by the
/// variable's value. `Ok(None)`: the variable is unset or empty (the entry is skipped: an
/// entry that allows nothing cannot weaken anything). Only the leading variable is expanded.
pub(crate) fn expand_leading_var(written: &str, env: &HostEnv) -> Result<Option<String>, String> {
    let Some(rest) = written.strip_prefix('$') else {
        return Ok(Some(written.to_string()));
    };
    let (name, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let name = name
        .strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        return Err(format!(
            "\"{written}\": write a path, or $NAME (optionally followed by /...) for an environment variable"
        ));
    }
    Ok(env
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| format!("{v}{tail}")))
}

/// A listed socket inside a denyRead area would be reachable only by undoing the deny (the
/// sandbox's view hides it); the user must choose, so the run is refused.
fn check_unix_sockets_readable(p: &Policy) -> Result<(), Error> {
    for s in &p.allow_unix_sockets {
        let deny = p.deny_read.iter().find(|d| is_within(&s.path, &d.path));
        let reopened = p.allow_read.iter().any(|a| {
            is_within(&s.path, &a.path) && deny.is_some_and(|d| is_within(&a.path, &d.path))
        });
        if let (Some(d), false) = (deny, reopened) {
            return Err(Error::invalid(
                &s.origin,
                "network.allowUnixSockets".to_string(),
                format!(
                    "{} (from \"{}\") lies inside {}, which {} denies for reading; move the socket or allowRead it",
                    s.path.display(),
                    s.pattern,
                    d.path.display(),
                    d.origin
                ),
            ));
        }
    }
    Ok(())
}

/// Default of `network.askTimeoutSeconds`.
pub const ASK_TIMEOUT_SECONDS: u64 = 60;

/// The network keys beyond the domain lists. `strictAllowlist` in any layer switches asking
/// off for good (srt: it makes the allow list the whole answer).
fn merge_network_extras(p: &mut Policy, n: &crate::settings::NetworkSettings) {
    for (entry, reason) in n.denied_domain_reasons.iter().flatten() {
        p.denied_domain_reasons
            .entry(entry.clone())
            .or_insert_with(|| reason.clone());
    }
    union(
        &mut p.denied_resolved_addresses,
        n.denied_resolved_addresses.as_deref().unwrap_or_default(),
    );
    if n.strict_allowlist == Some(true) {
        p.strict_allowlist = true;
    }
    p.ask = (p.ask || n.ask == Some(true)) && !p.strict_allowlist;
    if let Some(t) = n.ask_timeout_seconds {
        p.ask_timeout_seconds = Some(p.ask_timeout_seconds.map_or(t, |old| old.min(t)));
    }
}

/// The egress keys are single values: the first layer that sets one keeps it. Only the
/// managed and user layers can (a project file may not redirect traffic), so a value already
/// present came from the managed file, and a different one below it is refused.
fn merge_egress(
    p: &mut Policy,
    layer: Layer,
    origin: &str,
    managed: &str,
    n: &crate::settings::NetworkSettings,
) -> Result<(), Error> {
    fn one<T: Clone + PartialEq>(
        have: &mut Option<T>,
        new: &Option<T>,
        key: &str,
        origin: &str,
        managed: &str,
    ) -> Result<(), Error> {
        match (have.as_ref(), new) {
            (_, None) => Ok(()),
            (None, Some(v)) => {
                *have = Some(v.clone());
                Ok(())
            }
            (Some(old), Some(v)) if old == v => Ok(()),
            (Some(_), Some(_)) => Err(Error::ManagedConflict {
                origin: origin.to_string(),
                key: key.to_string(),
                message: format!("{managed} sets another value"),
            }),
        }
    }
    one(
        &mut p.parent_proxy,
        &n.parent_proxy,
        "network.parentProxy",
        origin,
        managed,
    )?;
    one(
        &mut p.mitm_proxy,
        &n.mitm_proxy,
        "network.mitmProxy",
        origin,
        managed,
    )?;
    // A port handed to the user's own proxy is not under the policy at all, so below a managed
    // file only the managed file may hand it over.
    let managed_loaded = p.files.iter().any(|(l, _)| *l == Layer::Managed);
    if layer != Layer::Managed && managed_loaded {
        for (key, have, new) in [
            (
                "network.httpProxyPort",
                p.http_proxy_port,
                n.http_proxy_port,
            ),
            (
                "network.socksProxyPort",
                p.socks_proxy_port,
                n.socks_proxy_port,
            ),
        ] {
            if new.is_some() && have != new {
                return Err(Error::ManagedConflict {
                    origin: origin.to_string(),
                    key: key.to_string(),
                    message: format!(
                        "that port would bypass the network policy of {managed}; only the managed file can set it"
                    ),
                });
            }
        }
    }
    one(
        &mut p.http_proxy_port,
        &n.http_proxy_port,
        "network.httpProxyPort",
        origin,
        managed,
    )?;
    one(
        &mut p.socks_proxy_port,
        &n.socks_proxy_port,
        "network.socksProxyPort",
        origin,
        managed,
    )
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The booleans that lower layers may switch on unless the managed layer says `false`.
const SWITCHES: [&str; 6] = [
    "filesystem.allowGitConfig",
    "network.allowAllUnixSockets",
    "network.allowLocalBinding",
    "allowNestedUserNamespaces",
    "filesystem.ask",
    "filesystem.askRead",
];

struct Merge<'a> {
    opts: &'a LoadOptions,
    policy: Policy,
    /// Switches the managed layer set to `false` explicitly.
    managed_off: [bool; SWITCHES.len()],
    /// Limits the managed layer set (maxima for the others).
    managed_limits: [Option<u64>; 7],
    /// `env.deny` patterns of the managed layer.
    managed_env_deny: Vec<String>,
    /// `env.set` of the managed layer.
    managed_env_set: BTreeMap<String, String>,
    /// Origin of the managed file, for messages.
    managed_origin: String,
    /// Layer and origin of the `permissions.defaultMode` in force, if a file set it.
    default_mode_from: Option<(Layer, String)>,
    /// What the managed layer fixed in `workspace`: overlay mode, the deletion threshold,
    /// allowYes false.
    managed_workspace: (bool, Option<u64>, bool),
    /// `permissions.confirmDeletes` as set by some layer, and the managed maximum.
    confirm_deletes: (Option<u64>, Option<u64>),
}

impl<'a> Merge<'a> {
    fn new(opts: &'a LoadOptions) -> Self {
        Merge {
            opts,
            policy: Policy {
                limits: crate::Limits::for_machine(opts.machine_memory),
                ..Policy::default()
            },
            managed_off: [false; SWITCHES.len()],
            managed_limits: [None; 7],
            managed_env_deny: Vec::new(),
            managed_env_set: BTreeMap::new(),
            managed_origin: opts.managed.display().to_string(),
            default_mode_from: None,
            managed_workspace: (false, None, false),
            confirm_deletes: (None, None),
        }
    }

    fn source<'b>(&'b self, layer: Layer, origin: &'b str, key: &'b str) -> RuleSource<'b> {
        RuleSource {
            layer,
            origin,
            key,
            cwd: &self.opts.cwd,
            home: &self.opts.home,
        }
    }

    fn apply(&mut self, layer: Layer, path: &Path, s: &Settings) -> Result<(), Error> {
        let origin = path.display().to_string();
        let origin = origin.as_str();
        if layer == Layer::Project {
            if let Some(key) = s.widening_keys().first() {
                let hint = match *key {
                    "filesystem.allowWrite" => {
                        "move this to ~/.config/ringfence/settings.json or pass --allow-write"
                    }
                    "filesystem.allowRead" => {
                        "move this to ~/.config/ringfence/settings.json or pass --allow-read"
                    }
                    _ => "move this to ~/.config/ringfence/settings.json",
                };
                return Err(Error::ProjectWidens {
                    origin: origin.to_string(),
                    key: key.to_string(),
                    hint: hint.to_string(),
                });
            }
        }
        self.policy.files.push((layer, path.to_path_buf()));

        let fs = &s.filesystem;
        let mut notes = Vec::new();
        let deny_read = resolve_rules(
            &fs.deny_read,
            RuleKind::Deny,
            &self.source(layer, origin, "filesystem.denyRead"),
            &mut notes,
        )?;
        let default_deny_read = resolve_rules(
            &fs.default_deny_read,
            RuleKind::Deny,
            &self.source(layer, origin, "filesystem.defaultDenyRead"),
            &mut notes,
        )?;
        self.policy.default_deny_read.extend(default_deny_read);
        let allow_read = resolve_rules(
            &fs.allow_read,
            RuleKind::Allow,
            &self.source(layer, origin, "filesystem.allowRead"),
            &mut notes,
        )?;
        let allow_write = resolve_rules(
            &fs.allow_write,
            RuleKind::Write,
            &self.source(layer, origin, "filesystem.allowWrite"),
            &mut notes,
        )?;
        let deny_write = resolve_rules(
            &fs.deny_write,
            RuleKind::Deny,
            &self.source(layer, origin, "filesystem.denyWrite"),
            &mut notes,
        )?;
        let mut cred_deny = Vec::new();
        if let Some(c) = &s.credentials {
            for (i, f) in c.files.iter().flatten().enumerate() {
                let key = format!("credentials.files[{i}].path");
                if f.mode == crate::CredentialMode::Mask {
                    let path = crate::paths::resolve_path(&f.path, &self.opts.cwd, &self.opts.home)
                        .map_err(|m| Error::invalid(origin, key.clone(), m))?;
                    self.policy.masked_files.push(MaskedFile {
                        origin: origin.to_string(),
                        key: format!("credentials.files[{i}]"),
                        path,
                        extract: f.extract.clone(),
                        on_no_match: f
                            .on_extract_no_match
                            .unwrap_or(crate::OnExtractNoMatch::Warn),
                        mask_duplicates: f.mask_duplicates == Some(true),
                        decode_jwt: f.decode == Some(crate::DecodeFormat::Jwt),
                        mask_claims: f.mask_claims.clone().unwrap_or_default(),
                        inject_hosts: f.inject_hosts.clone(),
                    });
                }
                let src = self.source(layer, origin, &key);
                let mut rules = resolve_rules(
                    &[PathEntry::Written(f.path.clone())],
                    RuleKind::Deny,
                    &src,
                    &mut notes,
                )?;
                cred_deny.append(&mut rules);
            }
            for (i, j) in c.inject.iter().flatten().enumerate() {
                let key = format!("credentials.inject[{i}]");
                let value = crate::parse_template(&j.value)
                    .map_err(|m| Error::invalid(origin, format!("{key}.value"), m))?;
                let mut resolved = Vec::with_capacity(value.len());
                for part in value {
                    resolved.push(match part {
                        crate::TemplatePart::Env(name) => {
                            // The variable is for the proxy, not for the sandbox.
                            self.policy.env.deny.push(name.clone());
                            crate::TemplatePart::Env(name)
                        }
                        crate::TemplatePart::File(p) => {
                            let path =
                                crate::paths::resolve_path(&p, &self.opts.cwd, &self.opts.home)
                                    .map_err(|m| {
                                        Error::invalid(origin, format!("{key}.value"), m)
                                    })?;
                            crate::TemplatePart::File(path.to_string_lossy().into_owned())
                        }
                        t => t,
                    });
                }
                self.policy.header_injections.push(crate::HeaderInjection {
                    origin: format!("{origin}: {key}"),
                    host: j.host.clone(),
                    header: j.header.clone(),
                    value: resolved,
                });
            }
            for (i, a) in c.aws_pairs.iter().flatten().enumerate() {
                self.policy.aws_pairs.push(AwsPair {
                    origin: format!("{origin}: credentials.awsPairs[{i}]"),
                    access_key_id_var: a.access_key_id_var.clone(),
                    secret_access_key_var: a.secret_access_key_var.clone(),
                    session_token_var: a.session_token_var.clone(),
                });
            }
            if let Some(s) = &c.sigv4 {
                let pass =
                    |v: Option<crate::Sigv4Policy>| v == Some(crate::Sigv4Policy::Passthrough);
                let t = &mut self.policy.sigv4_passthrough;
                t.streaming |= pass(s.streaming);
                t.presigned |= pass(s.presigned);
                t.sigv4a |= pass(s.sigv4a);
            }
            for (i, v) in c.env_vars.iter().flatten().enumerate() {
                self.policy.env.deny.push(v.name.clone());
                if v.mode == crate::CredentialMode::Mask {
                    self.policy.masked_env.push(MaskedEnv {
                        origin: origin.to_string(),
                        key: format!("credentials.envVars[{i}]"),
                        name: v.name.clone(),
                        inject_hosts: v.inject_hosts.clone(),
                        extract: v.extract.clone(),
                        on_no_match: v
                            .on_extract_no_match
                            .unwrap_or(crate::OnExtractNoMatch::Warn),
                        decode_jwt: v.decode == Some(crate::DecodeFormat::Jwt),
                        mask_claims: v.mask_claims.clone().unwrap_or_default(),
                    });
                }
            }
        }
        if layer != Layer::Managed {
            self.check_managed_read(origin, "filesystem.allowRead", &allow_read)?;
        }
        self.policy.deny_read.extend(deny_read);
        self.policy
            .credential_files
            .extend(cred_deny.iter().map(|r| r.path.clone()));
        self.policy.deny_read.extend(cred_deny);
        self.policy.allow_read.extend(allow_read);
        self.policy.allow_write.extend(allow_write);
        self.policy.deny_write.extend(deny_write);

        let values = [
            fs.allow_git_config,
            s.network.allow_all_unix_sockets,
            s.network.allow_local_binding,
            s.allow_nested_user_namespaces,
            fs.ask,
            fs.ask_read,
        ];
        for (i, v) in values.into_iter().enumerate() {
            match (layer, v) {
                (Layer::Managed, Some(false)) => self.managed_off[i] = true,
                (_, Some(true)) if self.managed_off[i] => {
                    return Err(Error::ManagedConflict {
                        origin: origin.to_string(),
                        key: SWITCHES[i].to_string(),
                        message: format!("{} sets it to false", self.managed_origin),
                    })
                }
                _ => {}
            }
        }
        self.policy.allow_git_config |= values[0] == Some(true);
        self.policy.allow_all_unix_sockets |= values[1] == Some(true);
        self.merge_unix_sockets(layer, origin, s, &mut notes)?;
        self.policy.allow_local_binding |= values[2] == Some(true);
        self.policy.transparent |= s.network.transparent == Some(true);
        self.policy.isolation_vm |= s.isolation == Some(crate::settings::Isolation::Vm);
        self.policy.allow_nested_user_namespaces |= values[3] == Some(true);
        self.policy.fs_ask |= values[4] == Some(true);
        self.policy.fs_ask_read |= values[5] == Some(true);

        for (pattern, parts) in s.ignore_violations.iter().flatten() {
            union(
                self.policy
                    .ignore_violations
                    .entry(pattern.clone())
                    .or_default(),
                parts,
            );
        }
        for (i, d) in s
            .git
            .iter()
            .flat_map(|g| g.safe_directories.iter().flatten())
            .enumerate()
        {
            let path = crate::paths::resolve_path(d, &self.opts.cwd, &self.opts.home)
                .map_err(|m| Error::invalid(origin, format!("git.safeDirectories[{i}]"), m))?;
            if !self.policy.git_safe_directories.contains(&path) {
                self.policy.git_safe_directories.push(path);
            }
        }

        union(&mut self.policy.allowed_domains, &s.network.allowed_domains);
        union(&mut self.policy.denied_domains, &s.network.denied_domains);
        merge_network_extras(&mut self.policy, &s.network);
        merge_egress(
            &mut self.policy,
            layer,
            origin,
            &self.managed_origin,
            &s.network,
        )?;
        if s.network.refuse_opaque_tunnels == Some(true)
            && self.policy.refuse_opaque_tunnels.is_none()
        {
            self.policy.refuse_opaque_tunnels = Some(origin.to_string());
        }
        if s.network.ambiguous_request_target == Some(crate::AmbiguousRequestTarget::Refuse)
            && self.policy.refuse_ambiguous_paths.is_none()
        {
            self.policy.refuse_ambiguous_paths = Some(origin.to_string());
        }
        if s.network.ambiguous_request_target == Some(crate::AmbiguousRequestTarget::AsSpelled)
            && self.policy.spelled_paths.is_none()
        {
            self.policy.spelled_paths = Some(origin.to_string());
        }
        if let Some(list) = &s.network.strip_response_headers {
            union(&mut self.policy.strip_response_headers, list);
            if self.policy.strip_response_origin.is_none() {
                self.policy.strip_response_origin = Some(origin.to_string());
            }
        }
        for (i, r) in s.network.requests.iter().flatten().enumerate() {
            self.policy
                .request_rules
                .push(crate::RequestRule::from_settings(
                    r,
                    format!("{origin}: network.requests[{i}]"),
                ));
        }
        if let Some(t) = &s.network.tls_terminate {
            let t = crate::TlsTerminate::resolve(t, &self.opts.cwd, &self.opts.home)
                .map_err(|(k, m)| Error::invalid(origin, k, m))?;
            match &self.policy.tls_terminate {
                None => self.policy.tls_terminate = Some(t),
                Some(old) if *old == t => {}
                Some(_) => {
                    return Err(Error::ManagedConflict {
                        origin: origin.to_string(),
                        key: "network.tlsTerminate".into(),
                        message: format!("{} sets another value", self.managed_origin),
                    })
                }
            }
        }

        self.merge_env(layer, origin, s)?;
        self.merge_permissions(layer, origin, s)?;
        merge_limits(
            &mut self.policy.limits,
            &mut self.managed_limits,
            layer,
            origin,
            &s.limits,
        )?;
        self.merge_workspace(layer, origin, &s.workspace)?;

        for key in s.inert_keys() {
            notes.push(format!(
                "{origin}: {key}: accepted for srt compatibility; no effect in ringfence"
            ));
        }
        self.policy.notes.append(&mut notes);
        Ok(())
    }

    /// Overlay mode, once set, stays on; the deletion threshold only goes down below the
    /// managed layer; a managed allowYes false stays false.
    fn merge_workspace(
        &mut self,
        layer: Layer,
        origin: &str,
        w: &crate::settings::WorkspaceSettings,
    ) -> Result<(), Error> {
        use crate::settings::WorkspaceMode;
        let ws = &mut self.policy.workspace;
        let conflict = |key: &str, message: String| Error::ManagedConflict {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        match w.mode {
            Some(WorkspaceMode::Overlay) => {
                ws.overlay = true;
                if layer == Layer::Managed {
                    self.managed_workspace.0 = true;
                }
            }
            Some(WorkspaceMode::Direct) if self.managed_workspace.0 => {
                return Err(conflict(
                    "workspace.mode",
                    format!("{} sets \"overlay\"", self.managed_origin),
                ))
            }
            Some(WorkspaceMode::Direct) if ws.overlay && layer == Layer::Project => {
                return Err(Error::ProjectWidens {
                    origin: origin.to_string(),
                    key: "workspace.mode".into(),
                    hint: "\"direct\" would turn off the overlay a higher layer set".into(),
                })
            }
            Some(WorkspaceMode::Direct) => ws.overlay = false,
            None => {}
        }
        if let Some(n) = w.confirm_deletes {
            match (layer, self.managed_workspace.1) {
                (Layer::Managed, _) => self.managed_workspace.1 = Some(n),
                (_, Some(max)) if n > max => {
                    return Err(conflict(
                        "workspace.confirmDeletes",
                        format!("{n} is above the managed maximum {max}"),
                    ))
                }
                (Layer::Project, _) if n > ws.confirm_deletes => {
                    return Err(Error::ProjectWidens {
                        origin: origin.to_string(),
                        key: "workspace.confirmDeletes".into(),
                        hint: format!("{n} would raise the threshold of {}", ws.confirm_deletes),
                    })
                }
                _ => {}
            }
            ws.confirm_deletes = n;
        }
        match (layer, w.allow_yes) {
            (Layer::Managed, Some(false)) => self.managed_workspace.2 = true,
            (_, Some(true)) if self.managed_workspace.2 => {
                return Err(conflict(
                    "workspace.allowYes",
                    format!("{} sets it to false", self.managed_origin),
                ))
            }
            _ => {}
        }
        if let Some(y) = w.allow_yes {
            ws.allow_yes = y;
        }
        Ok(())
    }

    fn merge_env(&mut self, layer: Layer, origin: &str, s: &Settings) -> Result<(), Error> {
        if layer == Layer::Managed {
            self.managed_env_set.extend(s.env.set.clone());
        }
        for (name, value) in &s.env.set {
            if layer == Layer::Managed {
                break;
            }
            let conflict = |message: String| Error::ManagedConflict {
                origin: origin.to_string(),
                key: format!("env.set.{name}"),
                message,
            };
            if let Some(p) = self
                .managed_env_deny
                .iter()
                .find(|p| wildcard_match(p, name))
            {
                return Err(conflict(format!(
                    "{} denies variables matching \"{p}\"",
                    self.managed_origin
                )));
            }
            if let Some(managed) = self.managed_env_set.get(name) {
                if managed != value {
                    return Err(conflict(format!(
                        "{} sets it to \"{managed}\"",
                        self.managed_origin
                    )));
                }
            }
        }
        let env = &mut self.policy.env;
        for (name, value) in &s.env.set {
            env.set.entry(name.clone()).or_insert_with(|| value.clone());
        }
        union(&mut env.allow, &s.env.allow);
        union(&mut env.deny, &s.env.deny);
        if layer == Layer::Managed {
            self.managed_env_deny = env.deny.clone();
        }
        Ok(())
    }

    /// Rules are a union (deny > ask > allow whatever the layer, so no lower layer can beat a
    /// managed ask or deny); a project file may add no allow (refused as widening above).
    /// `defaultMode` may only get stricter than the managed value, and in a project file only
    /// stricter than the value in force.
    fn merge_permissions(&mut self, layer: Layer, origin: &str, s: &Settings) -> Result<(), Error> {
        let p = &s.permissions;
        let lists = [
            ("allow", &p.allow, &mut self.policy.permissions.allow),
            ("ask", &p.ask, &mut self.policy.permissions.ask),
            ("deny", &p.deny, &mut self.policy.permissions.deny),
        ];
        for (name, texts, target) in lists {
            for (i, text) in texts.iter().enumerate() {
                let rule = CommandRule::parse(text, layer, origin)
                    .map_err(|m| Error::invalid(origin, format!("permissions.{name}[{i}]"), m))?;
                if !target.iter().any(|r| r.text == rule.text) {
                    target.push(rule);
                }
            }
        }
        if let Some(n) = p.confirm_deletes {
            let key = "permissions.confirmDeletes";
            let current = self
                .confirm_deletes
                .0
                .unwrap_or(self.policy.workspace.confirm_deletes);
            match (layer, self.confirm_deletes.1) {
                (Layer::Managed, _) => self.confirm_deletes.1 = Some(n),
                (_, Some(max)) if n > max => {
                    return Err(Error::ManagedConflict {
                        origin: origin.to_string(),
                        key: key.into(),
                        message: format!("{n} is above the managed maximum {max}"),
                    })
                }
                (Layer::Project, _) if n > current => {
                    return Err(Error::ProjectWidens {
                        origin: origin.to_string(),
                        key: key.into(),
                        hint: format!("{n} would raise the threshold of {current}"),
                    })
                }
                _ => {}
            }
            self.confirm_deletes.0 = Some(n);
        }
        let Some(mode) = p.default_mode else {
            return Ok(());
        };
        let current = self.policy.permissions.default_mode;
        if let Some((from, from_origin)) = &self.default_mode_from {
            if mode < current && (*from == Layer::Managed || layer == Layer::Project) {
                let message = format!("{mode} is looser than \"{current}\" set by {from_origin}");
                return Err(if *from == Layer::Managed {
                    Error::ManagedConflict {
                        origin: origin.to_string(),
                        key: "permissions.defaultMode".into(),
                        message,
                    }
                } else {
                    Error::ProjectWidens {
                        origin: origin.to_string(),
                        key: "permissions.defaultMode".into(),
                        hint: message,
                    }
                });
            }
        } else if layer == Layer::Project && mode < current {
            return Err(Error::ProjectWidens {
                origin: origin.to_string(),
                key: "permissions.defaultMode".into(),
                hint: format!("{mode} is looser than the default \"{current}\""),
            });
        }
        self.policy.permissions.default_mode = mode;
        self.default_mode_from = Some((layer, origin.to_string()));
        Ok(())
    }

    /// `network.allowUnixSockets` of one layer. A project file never gets here with entries
    /// (`widening_keys`).
    fn merge_unix_sockets(
        &mut self,
        layer: Layer,
        origin: &str,
        s: &Settings,
        notes: &mut Vec<String>,
    ) -> Result<(), Error> {
        for (i, w) in s.network.allow_unix_sockets.iter().flatten().enumerate() {
            let key = format!("network.allowUnixSockets[{i}]");
            let Some(expanded) = expand_leading_var(w, &self.opts.host_env)
                .map_err(|m| Error::invalid(origin, key.clone(), m))?
            else {
                notes.push(format!(
                    "{origin}: {key}: {w} is not set in the environment; entry skipped"
                ));
                continue;
            };
            let path = crate::paths::resolve_path(&expanded, &self.opts.cwd, &self.opts.home)
                .map_err(|m| Error::invalid(origin, key.clone(), m))?;
            // connect(2) follows symlinks; the agent compares the path it resolved.
            let path = fs::canonicalize(&path).unwrap_or(path);
            if !self
                .policy
                .allow_unix_sockets
                .iter()
                .any(|r| r.path == path)
            {
                self.policy.allow_unix_sockets.push(PathRule {
                    path,
                    pattern: w.clone(),
                    layer,
                    origin: origin.to_string(),
                });
            }
        }
        Ok(())
    }

    /// An allowRead from a lower layer must not re-open what the managed layer denies.
    fn check_managed_read(&self, origin: &str, key: &str, rules: &[PathRule]) -> Result<(), Error> {
        for rule in rules {
            let managed = self
                .policy
                .deny_read
                .iter()
                .filter(|d| d.layer == Layer::Managed)
                .find(|d| is_within(&rule.path, &d.path));
            if let Some(d) = managed {
                let key = if rule.layer == Layer::CommandLine {
                    rule.pattern.clone()
                } else {
                    key.to_string()
                };
                return Err(Error::ManagedConflict {
                    origin: origin.to_string(),
                    key,
                    message: format!(
                        "{} (from \"{}\") lies inside {}, which {} denies for reading (\"{}\")",
                        rule.path.display(),
                        rule.pattern,
                        d.path.display(),
                        d.origin,
                        d.pattern
                    ),
                });
            }
        }
        Ok(())
    }

    fn apply_cli(&mut self, cli: &CliRules) -> Result<(), Error> {
        if cli.ask_fs {
            // A managed layer that sets filesystem.ask to false has the last word.
            if self.managed_off[4] {
                return Err(Error::ManagedConflict {
                    origin: "--ask-fs".to_string(),
                    key: SWITCHES[4].to_string(),
                    message: format!("{} sets it to false", self.managed_origin),
                });
            }
            self.policy.fs_ask = true;
        }
        let mut notes = Vec::new();
        let lists: [(&str, &[String], RuleKind); 4] = [
            ("--deny-read", &cli.deny_read, RuleKind::Deny),
            ("--allow-read", &cli.allow_read, RuleKind::Allow),
            ("--allow-write", &cli.allow_write, RuleKind::Write),
            ("--deny-write", &cli.deny_write, RuleKind::Deny),
        ];
        for (option, list, kind) in lists {
            // Each entry gets its own call so a message names the option alone.
            let mut rules = Vec::new();
            for w in list {
                let src = self.source(Layer::CommandLine, option, option);
                rules.extend(resolve_rules(
                    &[PathEntry::Written(w.clone())],
                    kind,
                    &src,
                    &mut notes,
                )?);
            }
            let target = match option {
                "--deny-read" => &mut self.policy.deny_read,
                "--allow-read" => {
                    self.check_managed_read(option, option, &rules)?;
                    &mut self.policy.allow_read
                }
                "--allow-write" => &mut self.policy.allow_write,
                _ => &mut self.policy.deny_write,
            };
            target.extend(rules);
        }
        self.policy.notes.append(&mut notes);
        Ok(())
    }
}

/// Appends the entries of `new` that `list` does not hold yet.
fn union(list: &mut Vec<String>, new: &[String]) {
    for n in new {
        if !list.contains(n) {
            list.push(n.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::paths::tests::{running_as_root, TempDir};

    /// A home, a project directory and a managed file location inside one temp dir.
    struct Env {
        t: TempDir,
        opts: LoadOptions,
    }

    impl Env {
        fn new() -> Self {
            let t = TempDir::new();
            let home = t.mkdir("home");
            let cwd = t.mkdir("home/proj");
            let mut opts = LoadOptions::new(cwd, home);
            opts.managed = t.0.join("etc/managed.json");
            Env { t, opts }
        }
        fn managed(&self, text: &str) -> &Self {
            self.write(&self.opts.managed, text)
        }
        fn user(&self, text: &str) -> &Self {
            self.write(&self.opts.user[0], text)
        }
        fn project(&self, text: &str) -> &Self {
            self.write(&self.opts.cwd.join(".ringfence.json"), text)
        }
        fn write(&self, path: &Path, text: &str) -> &Self {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
            self
        }
        fn load(&self) -> Result<Policy, Error> {
            load(&self.opts)
        }
        fn err(&self) -> String {
            self.load().unwrap_err().to_string()
        }
    }

    fn paths(rules: &[PathRule]) -> Vec<PathBuf> {
        rules.iter().map(|r| r.path.clone()).collect()
    }

    #[test]
    fn credential_stores_are_hidden_by_default_and_reopened_per_path() {
        let e = Env::new();
        let home = e.opts.home.clone();
        let p = e.load().unwrap();
        let hidden = paths(&p.default_deny_read);
        for d in [
            ".ssh",
            ".aws",
            ".kube",
            ".docker/config.json",
            ".npmrc",
            ".mozilla",
        ] {
            assert!(hidden.contains(&home.join(d)), "{d}");
        }
        assert!(p
            .default_deny_read
            .iter()
            .all(|r| r.layer == Layer::Default));
        assert_eq!(p.default_deny_read[0].pattern, "~/.ssh");
        // The managed layer extends the list; the user re-opens one path of it, even a managed one.
        e.managed(r#"{"filesystem": {"defaultDenyRead": ["~/.config/rclone"]}}"#);
        e.write(&home.join(".npmrc"), "");
        e.write(&home.join(".config/rclone/rclone.conf"), "");
        e.user(r#"{"filesystem": {"allowRead": ["~/.npmrc", "~/.config/rclone"]}}"#);
        let p = e.load().unwrap();
        let managed = p.default_deny_read.last().unwrap();
        assert_eq!(
            (managed.path.clone(), managed.layer),
            (home.join(".config/rclone"), Layer::Managed)
        );
        assert_eq!(
            paths(&p.allow_read),
            [home.join(".npmrc"), home.join(".config/rclone")]
        );
        // A project file may add to it, not re-open.
        e.project(r#"{"filesystem": {"defaultDenyRead": ["~/.config/op"]}}"#);
        assert!(paths(&e.load().unwrap().default_deny_read).contains(&home.join(".config/op")));
        e.project(r#"{"filesystem": {"allowRead": ["~/.ssh"]}}"#);
        assert!(e.err().contains("filesystem.allowRead"), "{}", e.err());
    }

    #[test]
    fn no_files_gives_defaults() {
        let e = Env::new();
        let mut p = e.load().unwrap();
        assert_eq!(p.default_deny_read.len(), crate::DEFAULT_DENY_READ.len());
        p.default_deny_read.clear();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn empty_and_unreadable_files_are_errors() {
        let e = Env::new();
        e.user("  \n");
        assert!(matches!(e.load(), Err(Error::Empty { .. })));
        assert!(e.err().contains("settings.json: the file is empty"));
        e.user("{}");
        e.project("\n");
        assert!(matches!(e.load(), Err(Error::Empty { .. })));
        e.project("{}");
        e.managed("");
        assert!(matches!(e.load(), Err(Error::Empty { .. })));
        fs::remove_file(&e.opts.managed).unwrap();
        // A directory where the file should be cannot be read.
        fs::create_dir_all(&e.opts.managed).unwrap();
        assert!(matches!(e.load(), Err(Error::Read { .. })));
        fs::remove_dir(&e.opts.managed).unwrap();
        e.load().unwrap();
        if running_as_root() {
            println!("skipped: running as root (unreadable-file check)");
        } else {
            use std::os::unix::fs::PermissionsExt;
            let f = e.opts.cwd.join(".ringfence.json");
            fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
            let msg = e.err();
            assert!(msg.starts_with("cannot read settings file"), "{msg}");
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }

    #[test]
    fn settings_option_replaces_user_layer_and_must_exist() {
        let mut e = Env::new();
        e.user(r#"{"filesystem": {"allowWrite": ["."]}}"#);
        let s = e.t.0.join("other.json");
        e.opts.settings = Some(s.clone());
        assert!(matches!(e.load(), Err(Error::Read { .. })));
        e.write(&s, "");
        assert!(matches!(e.load(), Err(Error::Empty { .. })));
        e.write(&s, r#"{"filesystem": {"denyWrite": ["x"]}}"#);
        let p = e.load().unwrap();
        assert!(p.allow_write.is_empty());
        assert_eq!(p.files, vec![(Layer::User, s)]);
    }

    #[test]
    fn egress_keys_managed_over_user_and_not_from_a_project() {
        let e = Env::new();
        e.user(
            r#"{"network": {"parentProxy": {"http": "http://p:3128"}, "httpProxyPort": 8080,
                "mitmProxy": {"socketPath": "/run/m.sock", "domains": ["a.com"]}}}"#,
        );
        let p = e.load().unwrap();
        assert_eq!(
            p.parent_proxy.as_ref().unwrap().http.as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(p.http_proxy_port, Some(8080));
        assert_eq!(p.socks_proxy_port, None);
        assert_eq!(p.mitm_proxy.as_ref().unwrap().socket_path, "/run/m.sock");
        // No note calls them without effect.
        assert!(
            !p.notes.iter().any(|n| n.contains("Proxy")),
            "{:?}",
            p.notes
        );
        // The same value in the managed file is fine; another one is refused.
        e.managed(r#"{"network": {"httpProxyPort": 8080}}"#);
        e.load().unwrap();
        // Below a managed file, the user cannot hand a port to a proxy of its own.
        e.managed(r#"{"network": {"allowedDomains": ["a.com"]}}"#);
        let msg = e.err();
        assert!(
            msg.contains("network.httpProxyPort") && msg.contains("bypass"),
            "{msg}"
        );
        e.managed(r#"{"network": {"parentProxy": {"http": "http://corp:3128"}}}"#);
        let msg = e.err();
        assert!(msg.contains("network.parentProxy"), "{msg}");
        assert!(matches!(e.load(), Err(Error::ManagedConflict { .. })));
        fs::remove_file(&e.opts.managed).unwrap();
        e.user("{}");
        for key in [
            r#"{"network": {"parentProxy": {"http": "http://p:1"}}}"#,
            r#"{"network": {"socksProxyPort": 1080}}"#,
            r#"{"network": {"mitmProxy": {"socketPath": "/m", "domains": ["a.com"]}}}"#,
        ] {
            e.project(key);
            assert!(
                matches!(e.load(), Err(Error::ProjectWidens { .. })),
                "{key}"
            );
        }
    }

    #[test]
    fn first_existing_user_file_is_used() {
        let e = Env::new();
        e.write(
            &e.opts.user[1],
            r#"{"network": {"allowedDomains": ["srt.example.com"]}}"#,
        );
        let p = e.load().unwrap();
        assert_eq!(p.allowed_domains, ["srt.example.com"]);
        assert_eq!(p.files, vec![(Layer::User, e.opts.user[1].clone())]);
        e.user(r#"{"network": {"allowedDomains": ["rf.example.com"]}}"#);
        let p = e.load().unwrap();
        assert_eq!(p.allowed_domains, ["rf.example.com"]);
    }

    #[test]
    fn layers_merge_in_order_and_keep_their_origin() {
        let mut e = Env::new();
        let home = e.opts.home.clone();
        let cwd = e.opts.cwd.clone();
        fs::create_dir_all(home.join("cache")).unwrap();
        e.managed(r#"{"filesystem": {"denyRead": ["~/.ssh"]}, "network": {"deniedDomains": ["evil.com"]}}"#);
        e.user(r#"{"filesystem": {"allowWrite": [".", "~/cache", "~/gone/x"], "denyRead": ["~/.aws"]},
                   "network": {"allowedDomains": ["github.com"], "deniedDomains": ["evil.com", "bad.com"]}}"#);
        e.project(
            r#"{"filesystem": {"denyWrite": ["secrets", "../proj/./keys"], "denyRead": [".env"]},
                      "network": {"deniedDomains": ["x.com"]}}"#,
        );
        e.opts.cli.allow_write = vec!["/tmp".into()];
        e.opts.cli.deny_read = vec!["~/.netrc".into()];
        let p = e.load().unwrap();
        assert_eq!(
            paths(&p.allow_write),
            [cwd.clone(), home.join("cache"), PathBuf::from("/tmp")]
        );
        assert_eq!(
            p.allow_write.iter().map(|r| r.layer).collect::<Vec<_>>(),
            [Layer::User, Layer::User, Layer::CommandLine]
        );
        assert_eq!(p.allow_write[2].origin, "--allow-write");
        assert_eq!(p.allow_write[0].pattern, ".");
        assert_eq!(
            paths(&p.deny_read),
            [
                home.join(".ssh"),
                home.join(".aws"),
                cwd.join(".env"),
                home.join(".netrc")
            ]
        );
        assert_eq!(p.deny_read[0].layer, Layer::Managed);
        assert_eq!(p.deny_read[0].origin, e.opts.managed.display().to_string());
        assert_eq!(p.deny_read[3].layer, Layer::CommandLine);
        assert_eq!(
            paths(&p.deny_write),
            [cwd.join("secrets"), cwd.join("keys")]
        );
        assert_eq!(p.deny_write[0].layer, Layer::Project);
        assert_eq!(p.denied_domains, ["evil.com", "bad.com", "x.com"]);
        assert_eq!(p.allowed_domains, ["github.com"]);
        assert_eq!(
            p.files.iter().map(|f| f.0).collect::<Vec<_>>(),
            [Layer::Managed, Layer::User, Layer::Project]
        );
        assert!(p
            .notes
            .iter()
            .any(|n| n.contains("filesystem.allowWrite[2]")
                && n.contains("gone/x does not exist; skipped")));
    }

    #[test]
    fn globs_expand_within_a_layer() {
        let e = Env::new();
        let cwd = e.opts.cwd.clone();
        for f in [".env", ".env.local", "src/.env", "README"] {
            fs::create_dir_all(cwd.join(f).parent().unwrap()).unwrap();
            fs::write(cwd.join(f), "x").unwrap();
        }
        e.project(r#"{"filesystem": {"denyRead": ["**/.env*", "*.nothing"]}}"#);
        let p = e.load().unwrap();
        assert_eq!(
            paths(&p.deny_read),
            [
                cwd.join(".env"),
                cwd.join(".env.local"),
                cwd.join("src/.env")
            ]
        );
        assert!(p.deny_read.iter().all(|r| r.pattern == "**/.env*"));
        assert!(p
            .notes
            .iter()
            .any(|n| n.contains("filesystem.denyRead[1]: \"*.nothing\" matches nothing")));
    }

    #[test]
    fn unreadable_dir_in_a_glob_fails_the_load() {
        use std::os::unix::fs::PermissionsExt;
        if running_as_root() {
            println!("skipped: running as root (root can read any directory)");
            return;
        }
        let e = Env::new();
        let closed = e.opts.cwd.join("closed");
        fs::create_dir_all(&closed).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
        e.project(r#"{"filesystem": {"denyRead": ["**/*.pem"]}}"#);
        let msg = e.err();
        assert!(
            msg.contains(".ringfence.json: filesystem.denyRead[0]: cannot expand **/*.pem:"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("{} cannot be read", closed.display())),
            "{msg}"
        );
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn project_may_only_restrict() {
        let e = Env::new();
        let cases = [
            (r#"{"filesystem": {"allowWrite": ["."]}}"#, "filesystem.allowWrite: a project file may only add restrictions; move this to ~/.config/ringfence/settings.json or pass --allow-write"),
            (r#"{"filesystem": {"allowRead": ["."]}}"#, "filesystem.allowRead: a project file may only add restrictions; move this to ~/.config/ringfence/settings.json or pass --allow-read"),
            (r#"{"filesystem": {"allowGitConfig": true}}"#, "filesystem.allowGitConfig: a project file"),
            (r#"{"network": {"allowedDomains": ["a.com"]}}"#, "network.allowedDomains: a project file"),
            (r#"{"network": {"allowAllUnixSockets": true}}"#, "network.allowAllUnixSockets: a project file"),
            (r#"{"network": {"allowLocalBinding": true}}"#, "network.allowLocalBinding: a project file"),
            (r#"{"allowNestedUserNamespaces": true}"#, "allowNestedUserNamespaces: a project file"),
            (r#"{"network": {"allowUnixSockets": ["/run/x.sock"]}}"#, "network.allowUnixSockets: a project file"),
            (r#"{"git": {"safeDirectories": ["/repo"]}}"#, "git.safeDirectories: a project file"),
            (r#"{"env": {"allow": ["AWS_*"]}}"#, "env.allow: a project file"),
            (r#"{"env": {"set": {"A": "b"}}}"#, "env.set: a project file"),
            (r#"{"limits": {"pids": 2048}}"#, "limits.pids: a project file may only add restrictions; 2048 would raise the limit of 1024"),
            (r#"{"limits": {"memory": "16G"}}"#, "limits.memory: a project file may only add restrictions; 16G would raise the limit of 8G"),
        ];
        for (text, expected) in cases {
            e.project(text);
            let msg = e.err();
            let project = e.opts.cwd.join(".ringfence.json");
            assert!(
                msg.starts_with(&format!("{}: ", project.display())),
                "{msg}"
            );
            assert!(msg.contains(expected), "{text}: {msg}");
            assert!(matches!(e.load(), Err(Error::ProjectWidens { .. })));
        }
        // Restrictions, explicit false and empty srt lists are fine.
        e.project(r#"{"network": {"allowedDomains": [], "deniedDomains": ["a.com"], "allowLocalBinding": false},
                      "filesystem": {"denyRead": [], "allowWrite": [], "denyWrite": [], "allowGitConfig": false},
                      "env": {"deny": ["MY_*"]},
                      "limits": {"pids": 100, "memory": "1G", "cpuSeconds": 999999, "tmpSize": "1G"}}"#);
        let p = e.load().unwrap();
        assert_eq!(p.limits.pids, 100);
        assert_eq!(p.limits.memory, 1 << 30);
        assert_eq!(p.limits.cpu_seconds, Some(999999));
        assert_eq!(p.env.deny, ["MY_*"]);
    }

    #[test]
    fn memory_default_follows_the_machine() {
        let mut e = Env::new();
        e.opts.machine_memory = Some(8 << 30);
        assert_eq!(e.load().unwrap().limits.memory, 4 << 30);
        e.project(r#"{"limits": {"memory": "5G"}}"#);
        assert!(e.err().contains("limits.memory: a project file may only add restrictions; 5G would raise the limit of 4G"), "{}", e.err());
        e.user(r#"{"limits": {"memory": "6G"}}"#);
        assert_eq!(e.load().unwrap().limits.memory, 5 << 30);
    }

    #[test]
    fn project_limits_compare_with_the_layers_above() {
        let e = Env::new();
        e.user(r#"{"limits": {"pids": 4096, "cpuSeconds": 60}}"#);
        e.project(r#"{"limits": {"pids": 2048}}"#);
        assert_eq!(e.load().unwrap().limits.pids, 2048);
        e.project(r#"{"limits": {"cpuSeconds": 61}}"#);
        assert!(e.err().contains("limits.cpuSeconds: a project file may only add restrictions; 61 would raise the limit of 60"));
        e.project(r#"{"limits": {"cpuSeconds": 30}}"#);
        assert_eq!(e.load().unwrap().limits.cpu_seconds, Some(30));
    }

    #[test]
    fn vm_isolation_is_on_if_any_layer_asks_for_it() {
        let e = Env::new();
        assert!(!e.load().unwrap().isolation_vm);
        e.project(r#"{"isolation": "vm"}"#);
        assert!(e.load().unwrap().isolation_vm);
        e.project(r#"{"isolation": "namespace"}"#);
        e.user(r#"{"isolation": "vm"}"#);
        assert!(e.load().unwrap().isolation_vm);
        e.project(r#"{"isolation": "container"}"#);
        assert!(e.load().is_err());
    }

    #[test]
    fn transparent_capture_is_on_if_any_layer_asks_for_it() {
        let e = Env::new();
        assert!(!e.load().unwrap().transparent);
        // It holds more programs to the same policy, so a project file may ask for it too.
        e.project(r#"{"network": {"transparent": true}}"#);
        assert!(e.load().unwrap().transparent);
        e.project(r#"{"network": {"transparent": false}}"#);
        e.user(r#"{"network": {"transparent": true}}"#);
        assert!(e.load().unwrap().transparent);
    }

    #[test]
    fn booleans_are_true_if_any_allowed_layer_says_so() {
        let e = Env::new();
        e.user(
            r#"{"filesystem": {"allowGitConfig": true}, "network": {"allowLocalBinding": true}}"#,
        );
        let p = e.load().unwrap();
        assert!(p.allow_git_config && p.allow_local_binding && !p.allow_all_unix_sockets);
        e.managed(r#"{"network": {"allowAllUnixSockets": true}}"#);
        let p = e.load().unwrap();
        assert!(p.allow_all_unix_sockets);
    }

    #[test]
    fn managed_false_cannot_be_switched_on() {
        let e = Env::new();
        e.managed(r#"{"filesystem": {"allowGitConfig": false}}"#);
        e.user(r#"{"filesystem": {"allowGitConfig": true}}"#);
        let msg = e.err();
        assert!(
            msg.contains("settings.json: filesystem.allowGitConfig: "),
            "{msg}"
        );
        assert!(
            msg.contains("managed.json sets it to false; managed settings cannot be loosened"),
            "{msg}"
        );
        assert!(matches!(e.load(), Err(Error::ManagedConflict { .. })));
        e.managed(r#"{"network": {"allowLocalBinding": false}}"#);
        let p = e.load().unwrap();
        assert!(p.allow_git_config);
        e.user(r#"{"network": {"allowLocalBinding": true}}"#);
        assert!(e.err().contains("network.allowLocalBinding"));

        e.managed(r#"{"allowNestedUserNamespaces": false}"#);
        e.user(r#"{"allowNestedUserNamespaces": true}"#);
        let msg = e.err();
        assert!(
            msg.contains("settings.json: allowNestedUserNamespaces: ")
                && msg.contains("managed.json sets it to false"),
            "{msg}"
        );
        e.user(r#"{"allowNestedUserNamespaces": false}"#);
        assert!(!e.load().unwrap().allow_nested_user_namespaces);
        e.managed("{}");
        e.user(r#"{"allowNestedUserNamespaces": true}"#);
        assert!(e.load().unwrap().allow_nested_user_namespaces);
        e.user("{}");
        assert!(!e.load().unwrap().allow_nested_user_namespaces);
    }

    #[test]
    fn managed_deny_read_cannot_be_reopened() {
        let mut e = Env::new();
        let ssh = e.opts.home.join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::write(ssh.join("config"), "x").unwrap();
        e.managed(r#"{"filesystem": {"denyRead": ["~/.ssh"], "allowRead": ["~/.ssh/config"]}}"#);
        // The managed layer may re-allow inside its own deny.
        assert_eq!(e.load().unwrap().allow_read.len(), 1);
        e.user(r#"{"filesystem": {"allowRead": ["~/.ssh/config"]}}"#);
        let msg = e.err();
        assert!(
            msg.contains("settings.json: filesystem.allowRead: "),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "{} (from \"~/.ssh/config\") lies inside {}",
                ssh.join("config").display(),
                ssh.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("managed settings cannot be loosened"), "{msg}");
        e.user(r#"{"filesystem": {"allowRead": ["~/.ssh"]}}"#);
        assert!(matches!(e.load(), Err(Error::ManagedConflict { .. })));
        e.user("{}");
        e.opts.cli.allow_read = vec!["~/.ssh/config".into()];
        let msg = e.err();
        assert!(msg.starts_with("--allow-read: ~/.ssh/config: "), "{msg}");
        // An allowRead of a parent of the denied path is not inside it.
        e.opts.cli.allow_read = vec!["~".into()];
        e.load().unwrap();
        e.opts.cli.allow_write = vec!["nowhere/deeper".into()];
        let p = e.load().unwrap();
        let want = format!(
            "--allow-write: nowhere/deeper: {} does not exist; skipped",
            e.opts.cwd.join("nowhere/deeper").display()
        );
        assert!(p.notes.contains(&want), "{:?}", p.notes);
        // A missing name in a directory that exists is kept: the mount plan makes it.
        e.opts.cli.allow_write = vec!["nowhere".into()];
        let p = e.load().unwrap();
        assert_eq!(paths(&p.allow_write), [e.opts.cwd.join("nowhere")]);
    }

    #[test]
    fn permissions_confirm_deletes_follows_the_workspace_and_only_lowers() {
        let e = Env::new();
        assert_eq!(e.load().unwrap().permissions.confirm_deletes, 10);
        e.user(r#"{"workspace": {"confirmDeletes": 40}}"#);
        assert_eq!(e.load().unwrap().permissions.confirm_deletes, 40);
        e.user(r#"{"permissions": {"confirmDeletes": 25}}"#);
        assert_eq!(e.load().unwrap().permissions.confirm_deletes, 25);
        e.project(r#"{"permissions": {"confirmDeletes": 5}}"#);
        assert_eq!(e.load().unwrap().permissions.confirm_deletes, 5);
        e.project(r#"{"permissions": {"confirmDeletes": 26}}"#);
        assert!(e
            .err()
            .contains("permissions.confirmDeletes: a project file may only add restrictions"));
        e.project("{}");
        e.managed(r#"{"permissions": {"confirmDeletes": 20}}"#);
        e.user(r#"{"permissions": {"confirmDeletes": 21}}"#);
        assert!(
            e.err().contains("21 is above the managed maximum 20"),
            "{}",
            e.err()
        );
    }

    #[test]
    fn workspace_overlay_and_confirmation() {
        let e = Env::new();
        let p = e.load().unwrap();
        assert_eq!(p.workspace, Workspace::default());
        e.user(r#"{"workspace": {"mode": "overlay", "confirmDeletes": 50}}"#);
        let p = e.load().unwrap();
        assert!(p.workspace.overlay);
        assert_eq!(p.workspace.confirm_deletes, 50);
        // A project may lower the threshold and switch --yes off, not the reverse.
        e.project(r#"{"workspace": {"confirmDeletes": 5, "allowYes": false}}"#);
        let p = e.load().unwrap();
        assert_eq!(
            (p.workspace.confirm_deletes, p.workspace.allow_yes),
            (5, false)
        );
        e.project(r#"{"workspace": {"confirmDeletes": 51}}"#);
        assert!(
            e.err()
                .contains("workspace.confirmDeletes: a project file may only add restrictions"),
            "{}",
            e.err()
        );
        e.project(r#"{"workspace": {"mode": "direct"}}"#);
        assert!(
            e.err()
                .contains("workspace.mode: a project file may only add restrictions"),
            "{}",
            e.err()
        );
        e.project(r#"{"workspace": {"allowYes": true}}"#);
        assert!(
            e.err()
                .contains("workspace.allowYes: a project file may only add restrictions"),
            "{}",
            e.err()
        );
        e.project("{}");
        // A managed overlay cannot be turned off, nor its threshold raised, nor --yes allowed.
        e.managed(r#"{"workspace": {"mode": "overlay", "confirmDeletes": 20, "allowYes": false}}"#);
        e.user(r#"{"workspace": {"mode": "direct"}}"#);
        assert!(e.err().contains("workspace.mode: /"), "{}", e.err());
        assert!(e.err().contains("managed settings cannot be loosened"));
        e.user(r#"{"workspace": {"confirmDeletes": 21}}"#);
        assert!(
            e.err().contains("21 is above the managed maximum 20"),
            "{}",
            e.err()
        );
        e.user(r#"{"workspace": {"allowYes": true}}"#);
        assert!(e.err().contains("workspace.allowYes"), "{}", e.err());
        e.user(r#"{"workspace": {"confirmDeletes": 3}}"#);
        let p = e.load().unwrap();
        assert_eq!(
            p.workspace,
            Workspace {
                overlay: true,
                confirm_deletes: 3,
                allow_yes: false
            }
        );
        e.user(r#"{"workspace": {"mode": "sideways"}}"#);
        assert!(e.err().contains("workspace.mode"), "{}", e.err());
    }

    #[test]
    fn unix_sockets_expand_variables_and_refuse_denied_paths() {
        let mut e = Env::new();
        let home = e.opts.home.clone();
        fs::create_dir_all(home.join("run")).unwrap();
        e.opts.host_env = HostEnv(
            [(
                "AGENT_SOCK".to_string(),
                home.join("run/agent.sock").display().to_string(),
            )]
            .into_iter()
            .collect(),
        );
        e.user(r#"{"network": {"allowUnixSockets": ["$AGENT_SOCK", "${AGENT_SOCK}", "~/run/db.sock", "$UNSET_HERE"]}}"#);
        let p = e.load().unwrap();
        let canon = fs::canonicalize(home.join("run")).unwrap();
        assert_eq!(
            paths(&p.allow_unix_sockets),
            [canon.join("agent.sock"), canon.join("db.sock")]
        );
        assert!(
            p.notes.iter().any(|n| n.ends_with(
                "network.allowUnixSockets[3]: $UNSET_HERE is not set in the environment; entry skipped"
            )),
            "{:?}",
            p.notes
        );
        e.user(r#"{"network": {"allowUnixSockets": ["$"]}}"#);
        assert!(
            e.err().contains("network.allowUnixSockets[0]"),
            "{}",
            e.err()
        );
        e.user(r#"{"filesystem": {"denyRead": ["~/run"]}, "network": {"allowUnixSockets": ["~/run/db.sock"]}}"#);
        let msg = e.err();
        assert!(msg.contains(": network.allowUnixSockets: "), "{msg}");
        assert!(msg.contains("denies for reading"), "{msg}");
        // Re-allowed for reading inside the denied area: reachable, so accepted.
        fs::write(home.join("run/db.sock"), "").unwrap();
        e.user(r#"{"filesystem": {"denyRead": ["~/run"], "allowRead": ["~/run/db.sock"]}, "network": {"allowUnixSockets": ["~/run/db.sock"]}}"#);
        assert!(e.load().is_ok());
        // The key's Debug output names variables, never their values.
        assert_eq!(format!("{:?}", e.opts.host_env), r#"{"AGENT_SOCK"}"#);
    }

    #[test]
    fn managed_limits_are_maxima() {
        let e = Env::new();
        e.managed(r#"{"limits": {"memory": "4G", "cpuSeconds": 600}}"#);
        e.user(r#"{"limits": {"memory": "2G"}}"#);
        let p = e.load().unwrap();
        assert_eq!(p.limits.memory, 2 << 30);
        assert_eq!(p.limits.cpu_seconds, Some(600));
        e.user(r#"{"limits": {"memory": "16G"}}"#);
        let msg = e.err();
        assert!(msg.contains("settings.json: limits.memory: 16G is above the managed maximum 4G; managed settings cannot be loosened"), "{msg}");
        e.user(r#"{"limits": {"cpuSeconds": 601}}"#);
        assert!(e
            .err()
            .contains("limits.cpuSeconds: 601 is above the managed maximum 600"));
        // The user may raise a default the managed layer left alone.
        e.user(r#"{"limits": {"pids": 9999}}"#);
        assert_eq!(e.load().unwrap().limits.pids, 9999);
    }

    #[test]
    fn env_merge_and_managed_deny() {
        let e = Env::new();
        e.managed(r#"{"env": {"deny": ["CORP_*"], "set": {"CORP_MODE": "x", "LANG": "C"}}}"#);
        e.user(r#"{"env": {"allow": ["CORP_TOKEN", "AWS_PROFILE"], "set": {"EDITOR": "vi", "LANG": "C"}}}"#);
        e.project(r#"{"env": {"deny": ["PROJ_*"]}}"#);
        let p = e.load().unwrap();
        assert_eq!(p.env.deny, ["CORP_*", "PROJ_*"]);
        assert_eq!(p.env.allow, ["CORP_TOKEN", "AWS_PROFILE"]);
        assert_eq!(p.env.set.len(), 3);
        let (kept, removed) = p.env.filter(vec![
            ("CORP_TOKEN".into(), "t".into()),
            ("AWS_PROFILE".into(), "dev".into()),
            ("PROJ_X".into(), "1".into()),
            ("HOME".into(), "/h".into()),
        ]);
        assert_eq!(removed, ["CORP_TOKEN", "PROJ_X"]);
        assert_eq!(kept.len(), 5); // AWS_PROFILE, HOME + 3 set
        e.user(r#"{"env": {"set": {"corp_x": "1"}}}"#);
        let msg = e.err();
        assert!(msg.contains("env.set.corp_x: "), "{msg}");
        assert!(
            msg.contains(
                "denies variables matching \"CORP_*\"; managed settings cannot be loosened"
            ),
            "{msg}"
        );
        e.user(r#"{"env": {"set": {"LANG": "de_DE"}}}"#);
        assert!(e.err().contains("env.set.LANG: "));
    }

    #[test]
    fn srt_file_loads_with_notes() {
        let e = Env::new();
        fs::create_dir_all(e.opts.home.join(".ssh")).unwrap();
        fs::write(e.opts.home.join(".ssh/config"), "x").unwrap();
        e.write(&e.opts.user[1], crate::settings::tests::SRT_EVERY_KEY);
        let p = e.load().unwrap();
        let home = &e.opts.home;
        assert_eq!(
            paths(&p.deny_read),
            [
                home.join(".ssh"),
                home.join("*.key"),
                home.join(".netrc"),
                home.join(".aws")
            ]
        );
        assert_eq!(paths(&p.allow_read), [home.join(".ssh/config")]);
        assert_eq!(paths(&p.allow_write), vec![e.opts.cwd.clone()]);
        assert!(p.allow_git_config && p.allow_local_binding && !p.allow_all_unix_sockets);
        assert!(p.env.deny.contains(&"MY_SERVICE".to_string()));
        let origin = e.opts.user[1].display().to_string();
        assert_eq!(p.git_safe_directories, [PathBuf::from("/repo")]);
        assert!(p.ignores_violation("deny write /usr/bin/x", "true"));
        assert!(p.ignores_violation("deny write /tmp/x", "git push origin"));
        assert!(!p.ignores_violation("deny write /tmp/x", "git pull"));
        for key in ["ripgrep", "mandatoryDenySearchDepth", "allowPty", "windows"] {
            let want =
                format!("{origin}: {key}: accepted for srt compatibility; no effect in ringfence");
            assert!(
                p.notes.contains(&want),
                "missing note {want}: {:?}",
                p.notes
            );
        }
        assert!(!p.notes.iter().any(|n| n.contains("ignoreViolations")));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = Env::new();
        e.user(r#"{"filesystem": {"allowWrtie": ["."]}}"#);
        let want = format!(
            "{}: filesystem.allowWrtie: unknown key",
            e.opts.user[0].display()
        );
        assert!(e.err().starts_with(&want), "{}", e.err());
        e.user(r#"{"filesystem": {"allowWrite": ["~bob/x"]}}"#);
        assert!(e
            .err()
            .contains("filesystem.allowWrite[0]: \"~bob/x\": only"));
    }

    #[test]
    fn project_given_as_settings_is_read_once() {
        let mut e = Env::new();
        e.project(r#"{"filesystem": {"allowWrite": ["."]}}"#);
        e.opts.settings = Some(e.opts.cwd.join(".ringfence.json"));
        let p = e.load().unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.allow_write.len(), 1);
    }

    #[test]
    fn network_extras_merge() {
        let e = Env::new();
        let p = e.load().unwrap();
        assert!(!p.ask && !p.strict_allowlist);
        assert_eq!(p.ask_timeout_seconds, None);
        e.managed(
            r#"{"network": {"deniedDomains": ["evil.com"], "deniedDomainReasons": {"evil.com": "managed"},
                "deniedResolvedAddresses": ["10.0.0.0/8"], "askTimeoutSeconds": 30}}"#,
        );
        e.user(
            r#"{"network": {"ask": true, "askTimeoutSeconds": 90, "deniedDomainReasons": {"evil.com": "user", "x.com": "x"},
                "deniedResolvedAddresses": ["192.168.0.0/16", "10.0.0.0/8"]}}"#,
        );
        let p = e.load().unwrap();
        assert!(p.ask);
        assert_eq!(p.ask_timeout_seconds, Some(30));
        assert_eq!(p.denied_domain_reasons["evil.com"], "managed");
        assert_eq!(p.denied_domain_reasons["x.com"], "x");
        assert_eq!(
            p.denied_resolved_addresses,
            ["10.0.0.0/8", "192.168.0.0/16"]
        );
        // strictAllowlist anywhere means never ask.
        e.project(r#"{"network": {"strictAllowlist": true}}"#);
        let p = e.load().unwrap();
        assert!(!p.ask && p.strict_allowlist);
        // A project file cannot turn asking on.
        e.project(r#"{"network": {"ask": true}}"#);
        assert!(e.err().contains("network.ask"), "{}", e.err());
    }

    #[test]
    fn permissions_merge_and_errors_name_the_rule() {
        use crate::{DefaultMode, RuleList};
        let e = Env::new();
        e.managed(r#"{"permissions": {"deny": ["Bash(sudo:*)"], "ask": ["Bash(git push:*)"]}}"#);
        e.user(r#"{"permissions": {"allow": ["Bash(git push:*)", "Bash(npm test)"], "defaultMode": "sandboxed"}}"#);
        e.project(r#"{"permissions": {"deny": ["Bash(curl:*)"], "ask": ["Bash(npm publish:*)"]}}"#);
        let p = e.load().unwrap().permissions;
        let texts =
            |l: RuleList| -> Vec<String> { p.list(l).iter().map(|r| r.text.clone()).collect() };
        assert_eq!(texts(RuleList::Deny), ["Bash(sudo:*)", "Bash(curl:*)"]);
        assert_eq!(
            texts(RuleList::Ask),
            ["Bash(git push:*)", "Bash(npm publish:*)"]
        );
        assert_eq!(
            texts(RuleList::Allow),
            ["Bash(git push:*)", "Bash(npm test)"]
        );
        assert_eq!(p.deny[0].layer, Layer::Managed);
        assert_eq!(p.deny[1].layer, Layer::Project);
        assert_eq!(p.default_mode, DefaultMode::Sandboxed);

        e.user(r#"{"permissions": {"allow": ["Bash(ls)", "Bash(git diff", "x"]}}"#);
        let msg = e.err();
        assert!(
            msg.contains("settings.json: permissions.allow[1]: \"Bash(git diff\""),
            "{msg}"
        );
        e.user(r#"{"permissions": {"defaultMode": "sometimes"}}"#);
        assert!(e.err().contains("permissions.defaultMode"), "{}", e.err());
    }

    #[test]
    fn permissions_cannot_be_loosened_below_managed_or_by_a_project() {
        use crate::DefaultMode;
        let e = Env::new();
        e.project(r#"{"permissions": {"allow": ["Bash(make:*)"]}}"#);
        let msg = e.err();
        assert!(
            msg.contains(
                ".ringfence.json: permissions.allow: a project file may only add restrictions"
            ),
            "{msg}"
        );
        e.project(r#"{"permissions": {"defaultMode": "sandboxed"}}"#);
        let msg = e.err();
        assert!(msg.contains("permissions.defaultMode: a project file may only add restrictions; sandboxed is looser than the default \"ask\""), "{msg}");
        e.project(r#"{"permissions": {"defaultMode": "deny"}}"#);
        assert_eq!(
            e.load().unwrap().permissions.default_mode,
            DefaultMode::Deny
        );
        e.user(r#"{"permissions": {"defaultMode": "sandboxed"}}"#);
        e.project(r#"{"permissions": {"defaultMode": "ask"}}"#);
        assert_eq!(e.load().unwrap().permissions.default_mode, DefaultMode::Ask);
        e.project("{}");
        assert_eq!(
            e.load().unwrap().permissions.default_mode,
            DefaultMode::Sandboxed
        );
        e.managed(r#"{"permissions": {"defaultMode": "ask"}}"#);
        let msg = e.err();
        assert!(
            msg.contains(
                "settings.json: permissions.defaultMode: sandboxed is looser than \"ask\" set by"
            ),
            "{msg}"
        );
        assert!(matches!(e.load(), Err(Error::ManagedConflict { .. })));
        e.user(r#"{"permissions": {"defaultMode": "deny"}}"#);
        assert_eq!(
            e.load().unwrap().permissions.default_mode,
            DefaultMode::Deny
        );
        e.project(r#"{"permissions": {"defaultMode": "ask"}}"#);
        assert!(matches!(e.load(), Err(Error::ProjectWidens { .. })));
    }
}
