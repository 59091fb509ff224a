//! `ringfence export kubernetes`: every object passes the Kubernetes OpenAPI schemas
//! (`kubernetes-validate --strict`, PyPI, which ships the schemas), the fields that carry the
//! policy are checked one by one, the seccomp profile written for the nodes answers as the
//! filter `ringfence run` installs, and the gateway's command line really starts the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `kubernetes-validate`: RINGFENCE_K8S_VALIDATE, or the venv scripts/test installs it into.
fn validator() -> Option<PathBuf> {
    let from_env = std::env::var_os("RINGFENCE_K8S_VALIDATE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    from_env
        .or_else(|| {
            Some(PathBuf::from(
                "/var/cache/ringfence-test/k8s-venv/bin/kubernetes-validate",
            ))
        })
        .filter(|p| p.is_file())
}

fn kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn exported_objects_validate_and_carry_the_policy() {
    let Some(validate) = validator() else {
        skip("kubernetes: kubernetes-validate is not installed (PyPI package kubernetes-validate; scripts/test installs it)");
        return;
    };
    let (dir, settings) = with_settings("k8s", "{}");
    let work = dir.mkdir("work");
    let secret_dir = dir.mkdir("work/private");
    dir.write("work/private/key", "k\n");
    let secret_file = dir.write("work/token.txt", "topsecret\n");
    let text = format!(
        r#"{{"filesystem":{{"allowWrite":["{}"],"denyRead":["{}","{}"]}},
"network":{{"allowedDomains":["example.com"]}},
"limits":{{"memory":"512M","wallSeconds":600,"tmpSize":"64M"}}}}"#,
        work.display(),
        secret_dir.display(),
        secret_file.display()
    );
    std::fs::write(&settings, &text).unwrap();
    let out = dir.join("out");

    // Without --allow-weaker: refused, each weakening gap named.
    let refused = run(rf_in(&dir)
        .args([
            "export",
            "kubernetes",
            "-s",
            &settings,
            "--image",
            "busybox:1.36",
        ])
        .arg(&out));
    assert_eq!(refused.status.code(), Some(125), "{refused:?}");
    assert!(
        refused.stderr.contains("creation guard"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("hidden paths inside the image"),
        "{}",
        refused.stderr
    );
    assert!(!out.join("kubernetes.yaml").exists());

    let got = run(rf_in(&dir)
        .args([
            "export",
            "kubernetes",
            "--allow-weaker",
            "-s",
            &settings,
            "--image",
            "busybox:1.36",
            "--gateway-image",
            "registry.example/ringfence:1",
            "--runtime-class",
            "gvisor",
            "--name",
            "agent-7",
            "--namespace",
            "agents",
        ])
        .arg(&out)
        .args(["--", "/bin/sh", "-c", "echo hi"]));
    assert!(got.success(), "{got:?}");
    assert!(
        got.stdout.contains("not enforced by the objects"),
        "{}",
        got.stdout
    );

    // The schemas: every object, unknown fields refused.
    let yaml = out.join("kubernetes.yaml");
    let v = run(Command::new(&validate).arg("--strict").arg(&yaml));
    assert!(v.success(), "{}{}", v.stdout, v.stderr);
    assert_eq!(
        v.stdout.matches(" passed for resource ").count(),
        8,
        "{}",
        v.stdout
    );
    // The validator can fail: a field the schema does not know is refused.
    let text_yaml = std::fs::read_to_string(&yaml).unwrap();
    let bad = dir.write(
        "bad.yaml",
        &text_yaml.replace(
            "\"automountServiceAccountToken\"",
            "\"automountServiceAccountTokn\"",
        ),
    );
    let v = run(Command::new(&validate).arg("--strict").arg(&bad));
    assert!(!v.success(), "{}{}", v.stdout, v.stderr);

    let docs: Vec<Value> = text_yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 8);
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "agents"));

    // The Pod.
    let pod = kind(&docs, "Pod", "agent-7");
    let spec = &pod["spec"];
    assert_eq!(spec["runtimeClassName"], "gvisor");
    assert_eq!(spec["activeDeadlineSeconds"], 600);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["dnsPolicy"], "None");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let profile_name = "ringfence-agent-7.json";
    assert_eq!(
        spec["securityContext"]["seccompProfile"],
        json!({"type": "Localhost", "localhostProfile": profile_name})
    );
    let c = &spec["containers"][0];
    assert_eq!(c["image"], "busybox:1.36");
    assert_eq!(c["command"], json!(["/bin/sh", "-c", "echo hi"]));
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_ne!(sc["runAsUser"], 0);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"]["localhostProfile"], profile_name);
    assert_eq!(
        c["resources"]["limits"]["memory"],
        (512u64 << 20).to_string()
    );
    let env_list = c["env"].as_array().unwrap();
    let env: Vec<(String, String)> = env_list
        .iter()
        .filter(|e| e.get("valueFrom").is_none())
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The proxy variables carry the Pod's client name and, by reference, its token from the
    // Secret, defined before them so that Kubernetes expands it.
    let proxy = "http://agent-7:$(RINGFENCE_GATEWAY_TOKEN)@$(AGENT_7_GATEWAY_SERVICE_HOST):$(AGENT_7_GATEWAY_SERVICE_PORT)";
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert!(env.contains(&(name.into(), proxy.into())), "{env:?}");
    }
    let socks = proxy.replace("http://", "socks5h://");
    assert!(env.contains(&("ALL_PROXY".into(), socks)), "{env:?}");
    let at_env = |n: &str| env_list.iter().position(|e| e["name"] == n).unwrap();
    assert!(at_env("RINGFENCE_GATEWAY_TOKEN") < at_env("HTTP_PROXY"));
    assert_eq!(
        env_list[at_env("RINGFENCE_GATEWAY_TOKEN")]["valueFrom"],
        json!({"secretKeyRef": {"name": "agent-7-gateway-token", "key": "token"}})
    );
    let secret = kind(&docs, "Secret", "agent-7-gateway-token");
    let token = secret["stringData"]["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 43, "{token}");
    assert!(!text_yaml.contains(&format!("{token}@")));
    assert_eq!(
        text_yaml.matches(token.as_str()).count(),
        1,
        "the token is in the Secret only"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&yaml).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Volumes: /tmp in memory at limits.tmpSize, the writable root an emptyDir, the hidden
    // directory a read-only emptyDir, the hidden file the empty ConfigMap key.
    let vols = spec["volumes"].as_array().unwrap();
    let vol = |n: &str| vols.iter().find(|v| v["name"] == n).unwrap().clone();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount = |p: &std::path::Path| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == p.to_str().unwrap())
            .unwrap_or_else(|| panic!("no mount at {}: {mounts:?}", p.display()))
            .clone()
    };
    assert_eq!(
        vol("tmp")["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": (64u64 << 20).to_string()})
    );
    let w = mount(&work);
    assert_eq!(
        vol(w["name"].as_str().unwrap())["emptyDir"]["sizeLimit"],
        (64u64 << 20).to_string()
    );
    assert!(w.get("readOnly").is_none());
    let h = mount(&secret_dir);
    assert_eq!(h["readOnly"], true);
    assert!(vol(h["name"].as_str().unwrap())["emptyDir"].is_object());
    let f = mount(&secret_file);
    assert_eq!(f["subPath"], "empty");
    assert_eq!(f["readOnly"], true);
    let empty = kind(&docs, "ConfigMap", "agent-7-empty");
    assert_eq!(empty["data"], json!({"empty": ""}));
    assert_eq!(vol("empty-file")["configMap"]["name"], "agent-7-empty");

    // The NetworkPolicy: no ingress, egress only to the gateway's pods on its port, no DNS.
    let np = kind(&docs, "NetworkPolicy", "agent-7-egress");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"], json!([]));
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 1);
    let dep = kind(&docs, "Deployment", "agent-7-gateway");
    let gw_labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        egress[0]["to"],
        json!([{"podSelector": {"matchLabels": gw_labels}}])
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"protocol": "TCP", "port": 3128}])
    );
    let ingress = kind(&docs, "NetworkPolicy", "agent-7-gateway-ingress");
    assert_eq!(
        ingress["spec"]["ingress"][0]["from"],
        json!([{"podSelector": {"matchLabels": pod["metadata"]["labels"]}}])
    );

    // The gateway: the policy file verbatim, the Service in front of the Deployment's pods.
    let cm = kind(&docs, "ConfigMap", "agent-7-policy");
    assert_eq!(cm["data"]["policy.json"], text.as_str());
    // The clients file: the Pod as the one client, with the token's SHA-256 only.
    let clients: Value =
        serde_json::from_str(cm["data"]["clients.json"].as_str().unwrap()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        clients,
        json!({"clients": [{"name": "agent-7", "tokenSha256": hash, "settings": "policy.json"}]})
    );
    let svc = kind(&docs, "Service", "agent-7-gateway");
    assert_eq!(svc["spec"]["selector"], *gw_labels);
    assert_eq!(svc["spec"]["ports"][0]["port"], 3128);
    let gw = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(gw["image"], "registry.example/ringfence:1");
    let cmd: Vec<String> = gw["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cmd,
        [
            "ringfence",
            "proxy",
            "-s",
            "/etc/ringfence/policy.json",
            "--listen",
            "0.0.0.0:3128",
            "--clients",
            "/etc/ringfence/clients.json"
        ]
    );
    assert_eq!(gw["volumeMounts"][0]["mountPath"], "/etc/ringfence");
    assert_eq!(gw["securityContext"]["readOnlyRootFilesystem"], true);
    let order: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    let at = |k: &str| order.iter().position(|o| *o == k).unwrap();
    assert!(
        at("Service") < at("Pod"),
        "the Service must come first: {order:?}"
    );

    // That command line starts the gateway with the ConfigMap's files (on loopback here), and
    // the Pod's credentials, as its variables expand, are the only ones it takes.
    let policy_json = dir.write(
        "gateway/policy.json",
        cm["data"]["policy.json"].as_str().unwrap(),
    );
    let clients_json = dir.write(
        "gateway/clients.json",
        cm["data"]["clients.json"].as_str().unwrap(),
    );
    let mut args = cmd[1..].to_vec();
    args[2] = policy_json.to_str().unwrap().to_string();
    args[4] = "127.0.0.1:0".into();
    args[6] = clients_json.to_str().unwrap().to_string();
    let mut child = Command::new(bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let ask = |auth: Option<&str>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let auth = auth
            .map(|a| format!("Proxy-Authorization: Basic {}\r\n", base64(a)))
            .unwrap_or_default();
        write!(
            s,
            "GET http://denied.example/ HTTP/1.1\r\nHost: denied.example\r\n{auth}\r\n"
        )
        .unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got.lines().next().unwrap_or("").to_string()
    };
    let mine = ask(Some(&format!("agent-7:{token}")));
    let none = ask(None);
    let other = ask(Some(&format!("agent-8:{token}")));
    let _ = child.kill();
    let _ = child.wait();
    // Known: decided by the policy (denied.example is not allowed); unknown: 407.
    assert!(mine.starts_with("HTTP/1.1 403"), "{mine}");
    assert!(none.starts_with("HTTP/1.1 407"), "{none}");
    assert!(other.starts_with("HTTP/1.1 407"), "{other}");

    // The profile for the nodes, compared with the filter `ringfence run` installs.
    let profile: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(profile_name)).unwrap()).unwrap();
    let filter = ringfence_linux::seccomp::build(&ringfence_linux::seccomp::FilterOptions {
        allow_unix_sockets: false,
        guard_pid1: false,
        allow_user_namespaces: false,
    });
    let probes =
        ringfence_runtime::export::seccomp::compare_with_filter(&profile, &filter).unwrap();
    assert!(probes > 50_000, "{probes}");
}

#[test]
fn a_key_the_gateway_refuses_is_refused() {
    let (dir, settings) = with_settings("k8s-port", r#"{"network":{"httpProxyPort":8080}}"#);
    let got = run(rf_in(&dir)
        .args([
            "export",
            "kubernetes",
            "--allow-weaker",
            "-s",
            &settings,
            "--image",
            "x",
        ])
        .arg(dir.join("out")));
    assert_eq!(got.status.code(), Some(125), "{got:?}");
    assert!(
        got.stderr.contains("network.httpProxyPort"),
        "{}",
        got.stderr
    );
}

fn base64(text: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in text.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
