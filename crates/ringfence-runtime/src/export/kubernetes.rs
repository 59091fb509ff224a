//! Kubernetes objects for the policy of a run: a hardened Pod (no capabilities, no privilege
//! escalation, read-only root, the run's seccomp filter as a Localhost profile, sized emptyDirs
//! for the writable roots and /tmp, the memory limit), a NetworkPolicy that lets it reach only
//! the gateway, and the gateway itself (`ringfence proxy` as a Deployment and Service, the policy
//! in a ConfigMap). The Pod is a client of the gateway with a token of its own, made here: the
//! token in a Secret that the Pod's proxy variables take it from, its SHA-256 alone in the
//! gateway's clients file. The objects are data built here; writing and applying them is the
//! caller's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ringfence_linux::plan::{MountPlan, Step};
use serde_json::{json, Value};

use super::Gap;
use crate::Prepared;

/// The port the gateway listens on in its Pod, and the Service's port.
pub const GATEWAY_PORT: u16 = 3128;

/// The Pod's variable holding its gateway token (from the Secret).
pub const TOKEN_VAR: &str = "RINGFENCE_GATEWAY_TOKEN";

/// A RuntimeClass for stronger isolation than the node's default runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeClass {
    Gvisor,
    Kata,
}

impl RuntimeClass {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeClass::Gvisor => "gvisor",
            RuntimeClass::Kata => "kata",
        }
    }
}

/// What the caller adds to the policy.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// The objects' base name (a DNS label): the Pod, `NAME-gateway`, `NAME-policy`, ...
    pub name: String,
    pub namespace: Option<String>,
    /// The sandbox's image.
    pub image: String,
    /// An image with the `ringfence` binary on its PATH.
    pub gateway_image: String,
    pub runtime_class: Option<RuntimeClass>,
    /// The command (default: the image's).
    pub args: Vec<String>,
    /// The policy file's text, given to the gateway as its ConfigMap.
    pub policy_text: String,
    /// The policy file (to tell its layer from others).
    pub policy_file: PathBuf,
}

pub struct Objects {
    /// In the order to apply them (the Service before the Pod, whose proxy variables come from
    /// the Service's environment variables).
    pub objects: Vec<Value>,
    /// The seccomp profile, to be installed on every node as `profile_name` under the
    /// kubelet's seccomp directory.
    pub profile: Value,
    pub profile_name: String,
    pub gaps: Vec<Gap>,
}

/// The keys of a client's settings file that `ringfence proxy --clients` refuses (they act on
/// all of the gateway's connections and stay in its -s file).
const GATEWAY_WIDE: [&str; 3] = ["parentProxy", "mitmProxy", "deniedResolvedAddresses"];

/// The gateway's clients file for the one client `name`, and the client's settings file:
/// `policy.json` itself, or (named `client.json`) the policy without the gateway-wide keys.
fn clients_file(
    name: &str,
    token_sha256: &str,
    policy_text: &str,
) -> Result<(Value, Option<String>)> {
    let mut doc: Value = serde_json::from_str(policy_text)
        .map_err(|e| anyhow::anyhow!("the policy file is not JSON: {e}"))?;
    let mut stripped = false;
    if let Some(net) = doc.get_mut("network").and_then(Value::as_object_mut) {
        for k in GATEWAY_WIDE {
            stripped |= net.remove(k).is_some();
        }
    }
    let client_text = stripped
        .then(|| serde_json::to_string_pretty(&doc))
        .transpose()?;
    let settings = if stripped {
        "client.json"
    } else {
        "policy.json"
    };
    let clients = json!({"clients": [
        {"name": name, "tokenSha256": token_sha256, "settings": settings}
    ]});
    Ok((clients, client_text))
}

/// A DNS-1035 label short enough for the longest derived name (`NAME-gateway-ingress`).
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63 - "-gateway-ingress".len()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "--name {name}: give a lowercase DNS label of at most {} characters (a-z, 0-9, '-', starting with a letter)",
            63 - "-gateway-ingress".len()
        );
    }
    Ok(())
}

/// The Pod's volumes and mounts for the mount plan, in the plan's order, and what they do not
/// carry. Pure: `empty_map` names the ConfigMap whose key `empty` is bound over hidden files.
pub fn volumes(plan: &MountPlan, size: u64, empty_map: &str) -> (Vec<Value>, Vec<Value>, Vec<Gap>) {
    let mut vols = Vec::new();
    let mut mounts = Vec::new();
    let mut gaps = Vec::new();
    let mut file_hidden = false;
    let mut writable_roots = Vec::new();
    for step in &plan.steps {
        let n = vols.len();
        match step {
            // readOnlyRootFilesystem, the runtime's /dev and /proc (masked and read-only
            // kernel paths are the runtime's defaults for a Pod that is not privileged).
            Step::RootReadOnly | Step::Dev | Step::Proc => {}
            Step::Tmp { size } => {
                vols.push(json!({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": size.to_string()}}));
                mounts.push(json!({"name": "tmp", "mountPath": "/tmp"}));
            }
            Step::Writable { path } => {
                let v = format!("writable-{n}");
                vols.push(json!({"name": v, "emptyDir": {"sizeLimit": size.to_string()}}));
                mounts.push(json!({"name": v, "mountPath": path}));
                writable_roots.push(path.display().to_string());
            }
            Step::Overlay { path, .. } => {
                let v = format!("writable-{n}");
                vols.push(json!({"name": v, "emptyDir": {"sizeLimit": size.to_string()}}));
                mounts.push(json!({"name": v, "mountPath": path}));
                gaps.push(Gap::weaker(
                    format!("overlay of {}", path.display()),
                    "an emptyDir: changes are kept nowhere for review (`ringfence diff`/`apply` need the run's layer)",
                ));
            }
            Step::WritableFile { path } => gaps.push(Gap::note(
                format!("allowWrite {} (a single file)", path.display()),
                "not writable: a Pod cannot make one file of a read-only root writable (stricter)",
            )),
            Step::HideDir { path } => {
                let v = format!("hidden-{n}");
                vols.push(json!({"name": v, "emptyDir": {"medium": "Memory", "sizeLimit": "4Ki"}}));
                mounts.push(json!({"name": v, "mountPath": path, "readOnly": true}));
            }
            Step::HideFile { path } | Step::MaskFile { path, .. } => {
                if matches!(step, Step::MaskFile { .. }) {
                    gaps.push(Gap::note(
                        format!("credentials.files mask {}", path.display()),
                        "hidden (an empty file): the placeholder copy needs the run's proxy",
                    ));
                }
                file_hidden = true;
                mounts.push(json!({"name": "empty-file", "mountPath": path,
                    "subPath": "empty", "readOnly": true}));
            }
            Step::Reopen { path, .. } => gaps.push(Gap::note(
                format!("allowRead {} (inside a denyRead path)", path.display()),
                "stays hidden: the host's files are not in the Pod (stricter)",
            )),
            // A mount point cannot be renamed or removed; the emptyDir of a writable root is one.
            Step::Pin { .. } => {}
            // Read-only already (the root), or inside a writable root, whose emptyDir starts
            // empty: the host file is not there, and the creation guard's gap names the rest.
            Step::ReadOnly { .. } => {}
        }
    }
    if file_hidden {
        vols.push(
            json!({"name": "empty-file", "configMap": {"name": empty_map,
            "items": [{"key": "empty", "path": "empty"}]}}),
        );
    }
    if !writable_roots.is_empty() {
        gaps.push(Gap::note(
            format!("allowWrite {}", writable_roots.join(", ")),
            format!("each an emptyDir of at most limits.tmpSize ({size} bytes) that starts empty: the host's folder is not in the Pod (bring the files in with a volume or an init container of your own)"),
        ));
    }
    (vols, mounts, gaps)
}

/// denyRead paths that the plan has no step for, because they are not on this host: the image
/// may have them, and the export cannot tell a file from a directory to hide them.
fn missing_hidden(prepared: &Prepared) -> Vec<PathBuf> {
    let hidden: Vec<&Path> = prepared
        .plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::HideDir { path } | Step::HideFile { path } | Step::MaskFile { path, .. } => {
                Some(path.as_path())
            }
            _ => None,
        })
        .collect();
    let policy = &prepared.policy;
    let mut out: Vec<PathBuf> = Vec::new();
    for rule in policy.deny_read.iter().chain(&policy.default_deny_read) {
        let covered = hidden.iter().any(|h| rule.path.starts_with(h));
        if !covered && !out.contains(&rule.path) {
            out.push(rule.path.clone());
        }
    }
    out
}

fn labels(name: &str, component: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
           "app.kubernetes.io/managed-by": "ringfence"})
}

fn metadata(name: &str, namespace: &Option<String>, labels: &Value) -> Value {
    let mut m = json!({"name": name, "labels": labels});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// The container hardening both Pods get.
fn container_security(uid: u32, gid: u32, seccomp: Value) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": gid,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": seccomp,
    })
}

/// The objects for a prepared run.
pub fn objects(prepared: &Prepared, opts: &KubeOptions) -> Result<Objects> {
    check_name(&opts.name)?;
    if opts.image.is_empty() || opts.gateway_image.is_empty() {
        bail!("--image and --gateway-image: give an image reference");
    }
    let policy = &prepared.policy;
    let name = opts.name.as_str();
    let ns = &opts.namespace;
    // The gateway is `ringfence proxy`, which refuses these keys (it is the proxy itself and
    // does not terminate TLS): the Deployment would never start.
    for (key, set) in [
        ("network.httpProxyPort", policy.http_proxy_port.is_some()),
        ("network.socksProxyPort", policy.socks_proxy_port.is_some()),
        ("network.tlsTerminate", policy.tls_terminate.is_some()),
    ] {
        if set {
            bail!("{key}: the gateway (`ringfence proxy`) refuses it; remove {key} from the policy to export it for Kubernetes");
        }
    }

    let mut gaps = super::policy_gaps(prepared);
    let empty_map = format!("{name}-empty");
    let (volumes, mounts, vol_gaps) = volumes(&prepared.plan, policy.limits.tmp_size, &empty_map);
    gaps.extend(vol_gaps);
    let missing = missing_hidden(prepared);
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(6)
            .map(|p| p.display().to_string())
            .collect();
        let more = if missing.len() > 6 {
            format!(" and {} more", missing.len() - 6)
        } else {
            String::new()
        };
        gaps.push(Gap::weaker(
            "hidden paths inside the image (denyRead paths that are not on this host)",
            format!(
                "not hidden: {}{more}; the export cannot tell a file from a directory there, so if the image has them the Pod can read them",
                shown.join(", ")
            ),
        ));
    }
    for (layer, file) in &policy.files {
        if file != &opts.policy_file {
            gaps.push(Gap::weaker(
                format!("the policy layer {} ({layer:?})", file.display()),
                "not in the gateway's ConfigMap, which holds only the -s file: its network rules are not applied by the gateway",
            ));
        }
    }
    gaps.push(Gap::note(
        "network (allowedDomains, deniedDomains, credentials, request rules)",
        format!("enforced by the gateway `{name}-gateway` (`ringfence proxy` with the -s file), which the Pod reaches through HTTP(S)_PROXY and ALL_PROXY as the client `{name}` with the token of the Secret `{name}-gateway-token` (the gateway's clients file holds only its SHA-256; connections without it are refused); the NetworkPolicy `{name}-egress` allows nothing else, DNS included, and works only where the cluster's network plugin enforces NetworkPolicy"),
    ));
    if policy.ask {
        gaps.push(Gap::note(
            "network.ask",
            "no questions: the gateway has no control channel, so unlisted hosts are denied (stricter)",
        ));
    }
    gaps.push(Gap::note(
        "limits.pids, limits.openFiles, limits.cpuSeconds, limits.fileSize",
        "a Pod cannot set them: the node's podPidsLimit and the runtime's rlimits apply",
    ));
    gaps.push(Gap::note(
        "environment",
        "the image's environment, with HOME, the proxy variables and RINGFENCE_SANDBOX=1 (env.passthrough has no host environment to pass)",
    ));
    if opts.runtime_class == Some(RuntimeClass::Gvisor) {
        gaps.push(Gap::note(
            "the seccomp filter under gVisor",
            "runsc applies the Pod's seccomp profile only when its containerd shim runs it with --oci-seccomp",
        ));
    }

    let profile = super::seccomp::profile(&super::filter_options(policy))?;
    let profile_name = format!("ringfence-{name}.json");
    let (uid, gid) = ringfence_linux::sandbox::inside_ids();
    let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());

    let sandbox_labels = labels(name, "sandbox");
    let gateway_labels = labels(name, "gateway");
    let service = format!("{name}-gateway");
    // Kubernetes sets NAME_SERVICE_HOST/PORT in a Pod for each Service that exists when the Pod
    // starts, and `$(VAR)` expands them: the Pod needs no DNS to find the gateway. Without the
    // Service the reference stays unexpanded, the proxy address is invalid and nothing leaves.
    let var = service.to_uppercase().replace('-', "_");
    // The credentials come from the Secret through a variable defined before the ones that
    // use it, so the Pod's spec never holds the token.
    let token_secret = format!("{name}-gateway-token");
    let auth = format!("{name}:$({TOKEN_VAR})");
    let proxy_url = format!("http://{auth}@$({var}_SERVICE_HOST):$({var}_SERVICE_PORT)");
    let socks_url = format!("socks5h://{auth}@$({var}_SERVICE_HOST):$({var}_SERVICE_PORT)");
    let (token, token_sha256) =
        ringfence_proxy::clients::new_token().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut env = vec![
        json!({"name": "HOME", "value": home}),
        json!({"name": "RINGFENCE_SANDBOX", "value": "1"}),
        json!({"name": TOKEN_VAR, "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}}}),
    ];
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.push(json!({"name": v, "value": proxy_url}));
    }
    for v in ["ALL_PROXY", "all_proxy"] {
        env.push(json!({"name": v, "value": socks_url}));
    }
    let visible_cwd = prepared.plan.steps.iter().any(
        |s| matches!(s, Step::Writable { path } | Step::Overlay { path, .. } if prepared.cwd.starts_with(path)),
    );
    let mut container = json!({
        "name": "sandbox",
        "image": opts.image,
        "env": env,
        "securityContext": container_security(uid, gid, json!({"type": "Localhost", "localhostProfile": profile_name})),
        "resources": {"limits": {"memory": policy.limits.memory.to_string()}},
        "volumeMounts": mounts,
    });
    if visible_cwd {
        container["workingDir"] = json!(prepared.cwd);
    }
    if !opts.args.is_empty() {
        container["command"] = json!(opts.args);
    }
    let not_enforced: Vec<String> = gaps
        .iter()
        .map(|g| format!("{}: {}", g.feature, g.instead))
        .collect();
    let mut pod_meta = metadata(name, ns, &sandbox_labels);
    pod_meta["annotations"] = json!({"ringfence.dev/not-enforced": not_enforced.join("\n")});
    let mut pod_spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": true,
        "hostNetwork": false,
        "hostPID": false,
        "hostIPC": false,
        // No resolver: the gateway is found by its Service variables and resolves names
        // itself, so DNS (a channel out of the cluster) stays closed, as in `ringfence run`.
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["127.0.0.1"]},
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": uid,
            "runAsGroup": gid,
            "seccompProfile": {"type": "Localhost", "localhostProfile": profile_name},
        },
        "containers": [container],
        "volumes": volumes,
    });
    if let Some(rc) = opts.runtime_class {
        pod_spec["runtimeClassName"] = json!(rc.name());
    }
    if let Some(w) = policy.limits.wall_seconds {
        pod_spec["activeDeadlineSeconds"] = json!(w);
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec});

    let (clients, client_text) = clients_file(name, &token_sha256, &opts.policy_text)?;
    let mut data = json!({
        "policy.json": opts.policy_text,
        "clients.json": serde_json::to_string_pretty(&clients)?,
    });
    if let Some(t) = client_text {
        data["client.json"] = json!(t);
    }
    let policy_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(&format!("{name}-policy"), ns, &gateway_labels),
        "data": data,
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": metadata(&token_secret, ns, &sandbox_labels),
        "type": "Opaque",
        "stringData": {"token": token},
    });
    let empty = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(&empty_map, ns, &sandbox_labels),
        "data": {"empty": ""},
    });
    let port = GATEWAY_PORT;
    let gateway_container = json!({
        "name": "gateway",
        "image": opts.gateway_image,
        "command": ["ringfence", "proxy", "-s", "/etc/ringfence/policy.json",
                    "--listen", format!("0.0.0.0:{port}"),
                    "--clients", "/etc/ringfence/clients.json"],
        "ports": [{"name": "proxy", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 5},
        "securityContext": container_security(65534, 65534, json!({"type": "RuntimeDefault"})),
        "volumeMounts": [{"name": "policy", "mountPath": "/etc/ringfence", "readOnly": true}],
    });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(&service, ns, &gateway_labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": gateway_labels},
            "template": {
                "metadata": {"labels": gateway_labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {"runAsNonRoot": true,
                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [gateway_container],
                    "volumes": [{"name": "policy", "configMap": {"name": format!("{name}-policy")}}],
                },
            },
        },
    });
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(&service, ns, &gateway_labels),
        "spec": {
            "type": "ClusterIP",
            "selector": gateway_labels,
            "ports": [{"name": "proxy", "port": port, "targetPort": "proxy", "protocol": "TCP"}],
        },
    });
    let egress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(&format!("{name}-egress"), ns, &sandbox_labels),
        "spec": {
            "podSelector": {"matchLabels": sandbox_labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{
                "to": [{"podSelector": {"matchLabels": gateway_labels}}],
                "ports": [{"protocol": "TCP", "port": port}],
            }],
        },
    });
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(&format!("{name}-gateway-ingress"), ns, &gateway_labels),
        "spec": {
            "podSelector": {"matchLabels": gateway_labels},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": sandbox_labels}}],
                "ports": [{"protocol": "TCP", "port": port}],
            }],
        },
    });
    Ok(Objects {
        objects: vec![
            policy_map, empty, secret, deployment, svc, ingress, egress, pod,
        ],
        profile,
        profile_name,
        gaps,
    })
}

/// Writes `OUT/kubernetes.yaml` (the objects as a multi-document YAML stream, each document in
/// JSON form, which is YAML too; mode 0600, as it holds the Pod's gateway token) and the
/// seccomp profile `OUT/ringfence-NAME.json`.
pub fn write(out: &Path, objects: &Objects) -> Result<(PathBuf, PathBuf)> {
    use anyhow::Context;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut text = String::new();
    for o in &objects.objects {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string_pretty(o).context("serialising an object")?);
        text.push('\n');
    }
    let yaml = out.join("kubernetes.yaml");
    // The Secret holds the Pod's gateway token: readable by its owner only.
    {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&yaml)
            .with_context(|| format!("writing {}", yaml.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("writing {}", yaml.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", yaml.display()))?;
    }
    let profile = out.join(&objects.profile_name);
    let ptext =
        serde_json::to_string_pretty(&objects.profile).context("serialising the profile")?;
    std::fs::write(&profile, ptext + "\n")
        .with_context(|| format!("writing {}", profile.display()))?;
    Ok((yaml, profile))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ringfence_linux::plan::{Kind, Reason};

    #[test]
    fn plan_steps_become_volumes() {
        let p = PathBuf::from;
        let plan = MountPlan {
            steps: vec![
                Step::RootReadOnly,
                Step::Dev,
                Step::Proc,
                Step::Tmp { size: 1 << 20 },
                Step::Writable { path: p("/w") },
                Step::HideDir {
                    path: p("/w/secret"),
                },
                Step::Reopen {
                    path: p("/w/secret/ok"),
                    kind: Kind::Dir,
                    writable: false,
                },
                Step::HideFile { path: p("/w/.env") },
                Step::ReadOnly {
                    path: p("/w/.bashrc"),
                    reason: Reason::Protected,
                },
            ],
            ..MountPlan::default()
        };
        let (vols, mounts, gaps) = volumes(&plan, 4096, "x-empty");
        let names: Vec<&str> = vols.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["tmp", "writable-1", "hidden-2", "empty-file"]);
        assert_eq!(vols[0]["emptyDir"]["medium"], "Memory");
        assert_eq!(vols[0]["emptyDir"]["sizeLimit"], "1048576");
        assert_eq!(vols[1]["emptyDir"]["sizeLimit"], "4096");
        assert_eq!(vols[3]["configMap"]["name"], "x-empty");
        let paths: Vec<&str> = mounts
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["/tmp", "/w", "/w/secret", "/w/.env"]);
        assert_eq!(mounts[2]["readOnly"], true);
        assert_eq!(mounts[3]["subPath"], "empty");
        assert!(gaps.iter().all(|g| !g.weaker));
        assert!(gaps.iter().any(|g| g.feature.contains("/w/secret/ok")));
    }

    #[test]
    fn an_overlay_is_weaker() {
        let plan = MountPlan {
            steps: vec![Step::Overlay {
                path: PathBuf::from("/p"),
                upper: PathBuf::from("/u"),
                work: PathBuf::from("/k"),
            }],
            ..MountPlan::default()
        };
        let (_, _, gaps) = volumes(&plan, 1, "e");
        assert!(gaps.iter().any(|g| g.weaker));
    }

    #[test]
    fn the_client_settings_leave_the_gateway_wide_keys_to_the_gateway() {
        let (c, t) = clients_file(
            "a",
            "00",
            r#"{"network": {"allowedDomains": ["x.example"]}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            json!({"clients": [{"name": "a", "tokenSha256": "00", "settings": "policy.json"}]})
        );
        assert!(t.is_none());
        let text = r#"{"network": {"allowedDomains": ["x.example"], "deniedResolvedAddresses": ["10.0.0.0/8"]}, "limits": {"memory": "1G"}}"#;
        let (c, t) = clients_file("a", "00", text).unwrap();
        assert_eq!(c["clients"][0]["settings"], "client.json");
        let t: Value = serde_json::from_str(&t.unwrap()).unwrap();
        assert_eq!(
            t,
            json!({"network": {"allowedDomains": ["x.example"]}, "limits": {"memory": "1G"}})
        );
        assert!(clients_file("a", "00", "not json").is_err());
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(check_name("agent-7").is_ok());
        for bad in ["", "Agent", "7agent", "agent-", "a_b", &"a".repeat(48)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
