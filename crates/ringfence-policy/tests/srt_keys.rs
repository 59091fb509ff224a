//! Every key of srt's settings schema is known to ringfence: it acts, it is refused with a
//! message naming it, or (macOS and Windows keys, srt's own helper programs) it is accepted
//! with a note saying it has no effect. The list of keys comes from the installed srt itself
//! (`RINGFENCE_SRT_DIR`, the package directory of `@anthropic-ai/sandbox-runtime`, read with
//! `node` through tests/srt-keys.mjs), so this fails when srt gains a key ringfence does not
//! know. scripts/test installs srt 0.0.83 with npm and sets the variable; without it the
//! comparison is skipped visibly (and fails under RINGFENCE_TEST_STRICT=1), while each key's
//! behaviour below is checked in every run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../ringfence/tests/common/skip.rs"]
mod skip;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ringfence_policy::{load, LoadOptions};

/// What ringfence does with one srt key.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// It takes effect (or, like `allowLocalBinding`, means on Linux what srt means there).
    Acts,
    /// Accepted with one note naming this key path and saying it has no effect.
    NoEffect(&'static str),
    /// The file is refused with a message that starts with this key path.
    Refused(&'static str),
}
use Kind::*;

/// srt's key paths (as tests/srt-keys.mjs prints them), what ringfence does with each, and a
/// settings file that uses the key.
const KEYS: &[(&str, Kind, &str)] = &[
    (
        "allowAppleEvents",
        NoEffect("allowAppleEvents"),
        r#"{"allowAppleEvents": true}"#,
    ),
    (
        "allowNestedUserNamespaces",
        Acts,
        r#"{"allowNestedUserNamespaces": false}"#,
    ),
    ("allowPty", NoEffect("allowPty"), r#"{"allowPty": true}"#),
    (
        "bwrapPath",
        NoEffect("bwrapPath"),
        r#"{"bwrapPath": "/usr/bin/bwrap"}"#,
    ),
    ("credentials", Acts, r#"{"credentials": {}}"#),
    (
        "credentials.allowPlaintextInject",
        Refused("credentials.allowPlaintextInject"),
        r#"{"credentials": {"allowPlaintextInject": true}}"#,
    ),
    (
        "credentials.awsPairs",
        Acts,
        r#"{"credentials": {"awsPairs": []}}"#,
    ),
    (
        "credentials.awsPairs[].accessKeyIdVar",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "A", "mode": "mask"}, {"name": "B", "mode": "mask"}, {"name": "C", "mode": "mask"}], "awsPairs": [{"accessKeyIdVar": "A", "secretAccessKeyVar": "B", "sessionTokenVar": "C"}]}}"#,
    ),
    (
        "credentials.awsPairs[].secretAccessKeyVar",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "A", "mode": "mask"}, {"name": "B", "mode": "mask"}, {"name": "C", "mode": "mask"}], "awsPairs": [{"accessKeyIdVar": "A", "secretAccessKeyVar": "B", "sessionTokenVar": "C"}]}}"#,
    ),
    (
        "credentials.awsPairs[].sessionTokenVar",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "A", "mode": "mask"}, {"name": "B", "mode": "mask"}, {"name": "C", "mode": "mask"}], "awsPairs": [{"accessKeyIdVar": "A", "secretAccessKeyVar": "B", "sessionTokenVar": "C"}]}}"#,
    ),
    (
        "credentials.envVars",
        Acts,
        r#"{"credentials": {"envVars": []}}"#,
    ),
    (
        "credentials.envVars[].decode",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "T", "mode": "mask", "decode": "jwt"}]}}"#,
    ),
    (
        "credentials.envVars[].extract",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "T", "mode": "mask", "extract": "(.*)"}]}}"#,
    ),
    (
        "credentials.envVars[].injectHosts",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "T", "mode": "mask", "injectHosts": ["api.example.com"]}]}}"#,
    ),
    (
        "credentials.envVars[].maskClaims",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "T", "mode": "mask", "decode": "jwt", "maskClaims": ["sub"]}]}}"#,
    ),
    (
        "credentials.envVars[].mode",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "T", "mode": "mask"}]}}"#,
    ),
    (
        "credentials.envVars[].name",
        Acts,
        r#"{"credentials": {"envVars": [{"name": "T", "mode": "deny"}]}}"#,
    ),
    (
        "credentials.envVars[].onExtractNoMatch",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"envVars": [{"name": "T", "mode": "mask", "extract": "(.*)", "onExtractNoMatch": "deny"}]}}"#,
    ),
    (
        "credentials.files",
        Acts,
        r#"{"credentials": {"files": []}}"#,
    ),
    (
        "credentials.files[].decode",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "decode": "jwt"}]}}"#,
    ),
    (
        "credentials.files[].extract",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "extract": "password (\\S+)"}]}}"#,
    ),
    (
        "credentials.files[].injectHosts",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "injectHosts": ["api.example.com"]}]}}"#,
    ),
    (
        "credentials.files[].maskClaims",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "decode": "jwt", "maskClaims": ["sub"]}]}}"#,
    ),
    (
        "credentials.files[].maskDuplicates",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "extract": "(x)", "maskDuplicates": true}]}}"#,
    ),
    (
        "credentials.files[].mode",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask"}]}}"#,
    ),
    (
        "credentials.files[].onExtractNoMatch",
        Acts,
        r#"{"network": {"tlsTerminate": {}}, "credentials": {"files": [{"path": "~/.netrc", "mode": "mask", "extract": "(x)", "onExtractNoMatch": "deny"}]}}"#,
    ),
    (
        "credentials.files[].path",
        Acts,
        r#"{"credentials": {"files": [{"path": "~/.netrc", "mode": "deny"}]}}"#,
    ),
    (
        "credentials.sigv4",
        Acts,
        r#"{"credentials": {"sigv4": {}}}"#,
    ),
    (
        "credentials.sigv4.presigned",
        Acts,
        r#"{"credentials": {"sigv4": {"presigned": "deny"}}}"#,
    ),
    (
        "credentials.sigv4.sigv4a",
        Acts,
        r#"{"credentials": {"sigv4": {"sigv4a": "deny"}}}"#,
    ),
    (
        "credentials.sigv4.streaming",
        Acts,
        r#"{"credentials": {"sigv4": {"streaming": "passthrough"}}}"#,
    ),
    (
        "enableWeakerNestedSandbox",
        Acts,
        r#"{"enableWeakerNestedSandbox": false}"#,
    ),
    (
        "enableWeakerNetworkIsolation",
        NoEffect("enableWeakerNetworkIsolation"),
        r#"{"enableWeakerNetworkIsolation": true}"#,
    ),
    ("filesystem", Acts, r#"{"filesystem": {}}"#),
    (
        "filesystem.allowGitConfig",
        Acts,
        r#"{"filesystem": {"allowGitConfig": true}}"#,
    ),
    (
        "filesystem.allowRead",
        Acts,
        r#"{"filesystem": {"allowRead": ["."]}}"#,
    ),
    (
        "filesystem.allowRead[].literal",
        Acts,
        r#"{"filesystem": {"allowRead": [{"path": ".", "literal": true}]}}"#,
    ),
    (
        "filesystem.allowRead[].path",
        Acts,
        r#"{"filesystem": {"allowRead": [{"path": ".", "literal": true}]}}"#,
    ),
    (
        "filesystem.allowWrite",
        Acts,
        r#"{"filesystem": {"allowWrite": ["."]}}"#,
    ),
    (
        "filesystem.allowWrite[].literal",
        Acts,
        r#"{"filesystem": {"allowWrite": [{"path": ".", "literal": true}]}}"#,
    ),
    (
        "filesystem.allowWrite[].path",
        Acts,
        r#"{"filesystem": {"allowWrite": [{"path": ".", "literal": true}]}}"#,
    ),
    (
        "filesystem.denyRead",
        Acts,
        r#"{"filesystem": {"denyRead": ["~/.ssh"]}}"#,
    ),
    (
        "filesystem.denyRead[].literal",
        Acts,
        r#"{"filesystem": {"denyRead": [{"path": "~/*.pem", "literal": true}]}}"#,
    ),
    (
        "filesystem.denyRead[].path",
        Acts,
        r#"{"filesystem": {"denyRead": [{"path": "~/*.pem", "literal": true}]}}"#,
    ),
    (
        "filesystem.denyWrite",
        Acts,
        r#"{"filesystem": {"denyWrite": ["./.env"]}}"#,
    ),
    (
        "filesystem.denyWrite[].literal",
        Acts,
        r#"{"filesystem": {"denyWrite": [{"path": "./[x]", "literal": true}]}}"#,
    ),
    (
        "filesystem.denyWrite[].path",
        Acts,
        r#"{"filesystem": {"denyWrite": [{"path": "./[x]", "literal": true}]}}"#,
    ),
    (
        "filesystem.disabled",
        Acts,
        r#"{"filesystem": {"disabled": false}}"#,
    ),
    ("git", Acts, r#"{"git": {}}"#),
    (
        "git.safeDirectories",
        Acts,
        r#"{"git": {"safeDirectories": ["/repo"]}}"#,
    ),
    (
        "ignoreViolations",
        Acts,
        r#"{"ignoreViolations": {"*": ["/usr/bin"], "npm": ["/tmp"]}}"#,
    ),
    (
        "javaAgentJarPath",
        NoEffect("javaAgentJarPath"),
        r#"{"javaAgentJarPath": "/opt/srt-proxy-agent.jar"}"#,
    ),
    (
        "mandatoryDenySearchDepth",
        NoEffect("mandatoryDenySearchDepth"),
        r#"{"mandatoryDenySearchDepth": 3}"#,
    ),
    ("network", Acts, r#"{"network": {}}"#),
    (
        "network.allowAllUnixSockets",
        Acts,
        r#"{"network": {"allowAllUnixSockets": true}}"#,
    ),
    (
        "network.allowLocalBinding",
        Acts,
        r#"{"network": {"allowLocalBinding": true}}"#,
    ),
    (
        "network.allowMachLookup",
        NoEffect("network.allowMachLookup"),
        r#"{"network": {"allowMachLookup": ["com.apple.x"]}}"#,
    ),
    (
        "network.allowPlaintextHeaderSet",
        Refused("network.allowPlaintextHeaderSet"),
        r#"{"network": {"allowPlaintextHeaderSet": true}}"#,
    ),
    (
        "network.allowUnixSockets",
        Acts,
        r#"{"network": {"allowUnixSockets": ["/var/run/docker.sock"]}}"#,
    ),
    (
        "network.allowedDomains",
        Acts,
        r#"{"network": {"allowedDomains": ["github.com", "*.npmjs.org", "[::1]:3000"]}}"#,
    ),
    (
        "network.ambiguousRequestTarget",
        Acts,
        r#"{"network": {"tlsTerminate": {}, "ambiguousRequestTarget": "refuse"}}"#,
    ),
    (
        "network.deniedDomainReasons",
        Acts,
        r#"{"network": {"deniedDomains": ["github.com:22"], "deniedDomainReasons": {"github.com:22": "use an https:// remote"}}}"#,
    ),
    (
        "network.deniedDomains",
        Acts,
        r#"{"network": {"deniedDomains": ["*:22", "evil.example.com"]}}"#,
    ),
    (
        "network.deniedResolvedAddresses",
        Acts,
        r#"{"network": {"deniedResolvedAddresses": ["10.0.0.0/8"]}}"#,
    ),
    (
        "network.filterRequest",
        Refused("network.filterRequest"),
        r#"{"network": {"filterRequest": {}}}"#,
    ),
    (
        "network.httpProxyPort",
        Acts,
        r#"{"network": {"httpProxyPort": 3128}}"#,
    ),
    (
        "network.mitmProxy",
        Acts,
        r#"{"network": {"mitmProxy": {"socketPath": "/run/mitm.sock", "domains": ["api.example.com"]}}}"#,
    ),
    (
        "network.mitmProxy.domains",
        Acts,
        r#"{"network": {"mitmProxy": {"socketPath": "/run/mitm.sock", "domains": ["api.example.com"]}}}"#,
    ),
    (
        "network.mitmProxy.socketPath",
        Acts,
        r#"{"network": {"mitmProxy": {"socketPath": "/run/mitm.sock", "domains": ["api.example.com"]}}}"#,
    ),
    (
        "network.parentProxy",
        Acts,
        r#"{"network": {"parentProxy": {}}}"#,
    ),
    (
        "network.parentProxy.http",
        Acts,
        r#"{"network": {"parentProxy": {"http": "http://proxy.example.com:3128"}}}"#,
    ),
    (
        "network.parentProxy.https",
        Acts,
        r#"{"network": {"parentProxy": {"https": "http://proxy.example.com:3128"}}}"#,
    ),
    (
        "network.parentProxy.noProxy",
        Acts,
        r#"{"network": {"parentProxy": {"http": "http://proxy.example.com:3128", "noProxy": "localhost"}}}"#,
    ),
    (
        "network.refuseOpaqueTunnels",
        Acts,
        r#"{"network": {"tlsTerminate": {}, "refuseOpaqueTunnels": true}}"#,
    ),
    (
        "network.requireHostMatch",
        Acts,
        r#"{"network": {"requireHostMatch": true}}"#,
    ),
    (
        "network.socksProxyPort",
        Acts,
        r#"{"network": {"socksProxyPort": 1080}}"#,
    ),
    (
        "network.strictAllowlist",
        Acts,
        r#"{"network": {"strictAllowlist": true}}"#,
    ),
    (
        "network.stripResponseHeaders",
        Acts,
        r#"{"network": {"tlsTerminate": {}, "stripResponseHeaders": ["set-cookie"]}}"#,
    ),
    (
        "network.tlsTerminate",
        Acts,
        r#"{"network": {"tlsTerminate": {}}}"#,
    ),
    (
        "network.tlsTerminate.caCertPath",
        Acts,
        r#"{"network": {"tlsTerminate": {"caCertPath": "/ca.pem", "caKeyPath": "/ca.key"}}}"#,
    ),
    (
        "network.tlsTerminate.caKeyPath",
        Acts,
        r#"{"network": {"tlsTerminate": {"caCertPath": "/ca.pem", "caKeyPath": "/ca.key"}}}"#,
    ),
    (
        "network.tlsTerminate.excludeDomains",
        Acts,
        r#"{"network": {"tlsTerminate": {"excludeDomains": ["mtls.example.com"]}}}"#,
    ),
    (
        "network.tlsTerminate.extraCaCertPaths",
        Acts,
        r#"{"network": {"tlsTerminate": {"extraCaCertPaths": ["/extra.pem"]}}}"#,
    ),
    (
        "network.tlsTerminate.handshakeTimeoutMs",
        Acts,
        r#"{"network": {"tlsTerminate": {"handshakeTimeoutMs": 10000}}}"#,
    ),
    (
        "network.tlsTerminate.maxTunnels",
        Acts,
        r#"{"network": {"tlsTerminate": {"maxTunnels": 256}}}"#,
    ),
    (
        "ripgrep",
        NoEffect("ripgrep"),
        r#"{"ripgrep": {"command": "rg"}}"#,
    ),
    (
        "ripgrep.args",
        NoEffect("ripgrep"),
        r#"{"ripgrep": {"command": "rg", "args": ["--hidden"]}}"#,
    ),
    (
        "ripgrep.argv0",
        NoEffect("ripgrep"),
        r#"{"ripgrep": {"command": "rg", "argv0": "rg"}}"#,
    ),
    (
        "ripgrep.command",
        NoEffect("ripgrep"),
        r#"{"ripgrep": {"command": "rg"}}"#,
    ),
    ("seccomp", NoEffect("seccomp"), r#"{"seccomp": {}}"#),
    (
        "seccomp.applyPath",
        NoEffect("seccomp"),
        r#"{"seccomp": {"applyPath": "/usr/lib/apply-seccomp"}}"#,
    ),
    (
        "seccomp.argv0",
        NoEffect("seccomp"),
        r#"{"seccomp": {"argv0": "apply-seccomp"}}"#,
    ),
    (
        "socatPath",
        NoEffect("socatPath"),
        r#"{"socatPath": "/usr/bin/socat"}"#,
    ),
    ("windows", NoEffect("windows"), r#"{"windows": {}}"#),
    (
        "windows.backend",
        NoEffect("windows"),
        r#"{"windows": {"backend": "mxc"}}"#,
    ),
    (
        "windows.proxyPortRange",
        NoEffect("windows"),
        r#"{"windows": {"proxyPortRange": [60080, 60089]}}"#,
    ),
    (
        "windows.sandboxUser",
        NoEffect("windows"),
        r#"{"windows": {"sandboxUser": "srt-sandbox"}}"#,
    ),
    (
        "windows.srtWin",
        NoEffect("windows"),
        r#"{"windows": {"srtWin": {"path": "C:\\srt-win.exe"}}}"#,
    ),
    (
        "windows.srtWin.path",
        NoEffect("windows"),
        r#"{"windows": {"srtWin": {"path": "C:\\srt-win.exe"}}}"#,
    ),
    (
        "windows.sublayerGuid",
        NoEffect("windows"),
        r#"{"windows": {"sublayerGuid": "6f9b1c2e-0000-4000-8000-000000000001"}}"#,
    ),
    (
        "windows.wfpSublayerGuid",
        NoEffect("windows"),
        r#"{"windows": {"wfpSublayerGuid": "6f9b1c2e-0000-4000-8000-000000000001"}}"#,
    ),
];

/// A fresh directory (home and working directory in one), removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("ringfence-srt-keys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d.canonicalize().unwrap())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `text` as the only settings file: Ok(notes) or Err(message).
fn load_text(dir: &Path, text: &str) -> Result<Vec<String>, String> {
    let file = dir.join("settings.json");
    std::fs::write(&file, text).unwrap();
    let mut opts = LoadOptions::new(dir.to_path_buf(), dir.to_path_buf());
    opts.managed = dir.join("no-managed.json");
    opts.user = Vec::new();
    opts.settings = Some(file);
    opts.project = Some(dir.join("no-project.json"));
    load(&opts).map(|p| p.notes).map_err(|e| e.to_string())
}

#[test]
fn every_listed_key_acts_is_refused_or_says_it_has_no_effect() {
    let dir = Dir::new("each");
    let origin = dir.0.join("settings.json").display().to_string();
    for (key, kind, text) in KEYS {
        let result = load_text(&dir.0, text);
        match (kind, result) {
            (Acts, Ok(notes)) => {
                let quiet = notes.iter().all(|n| !n.contains("no effect"));
                assert!(quiet, "{key}: acts, yet a note says otherwise: {notes:?}");
            }
            (NoEffect(k), Ok(notes)) => {
                let want = format!(
                    "{origin}: {k}: accepted for srt compatibility; no effect in ringfence"
                );
                let n = notes.iter().filter(|n| **n == want).count();
                assert_eq!(n, 1, "{key}: expected the note {want:?} once: {notes:?}");
            }
            (Refused(k), Err(message)) => {
                let prefix = format!("{origin}: {k}: ");
                assert!(message.starts_with(&prefix), "{key}: {message}");
                assert!(!message.contains("unknown key"), "{key}: {message}");
                assert!(
                    message.contains("remove") || message.contains("use \"deny\""),
                    "{key}: says what to do: {message}"
                );
            }
            (kind, result) => panic!("{key}: expected {kind:?}, got {result:?}"),
        }
    }
}

/// The package directory of the installed srt, or a visible skip (a failure in CI).
fn srt_dir() -> Option<PathBuf> {
    let skip = |why: String| {
        skip::skip(&why);
        None
    };
    let Some(dir) = std::env::var_os("RINGFENCE_SRT_DIR").map(PathBuf::from) else {
        return skip("RINGFENCE_SRT_DIR is not set (the directory of an installed @anthropic-ai/sandbox-runtime)".into());
    };
    if !dir.join("dist/sandbox/sandbox-config.js").is_file() {
        return skip(format!(
            "{}: no dist/sandbox/sandbox-config.js",
            dir.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return skip("node is not installed".into());
    }
    Some(dir)
}

#[test]
fn every_key_of_the_installed_srt_is_known() {
    let Some(dir) = srt_dir() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/srt-keys.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let srt: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let version = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    let known: BTreeSet<String> = KEYS.iter().map(|(k, _, _)| k.to_string()).collect();
    let unknown: Vec<&String> = srt.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "srt ({}) has keys ringfence does not know: {unknown:?}; make each act, or refuse it \
         naming it, then list it in KEYS",
        dir.display()
    );
    let gone: Vec<&String> = known.difference(&srt).collect();
    if !gone.is_empty() {
        eprintln!("note: keys listed here that this srt does not have: {gone:?}");
    }
    eprintln!(
        "{} srt keys, all known ({})",
        srt.len(),
        version
            .lines()
            .find(|l| l.contains("\"version\""))
            .unwrap_or("")
            .trim()
    );
}
