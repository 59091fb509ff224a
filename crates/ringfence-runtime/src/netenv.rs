//! The environment that points the sandbox's clients at the egress proxy. The proxy listens on
//! 127.0.0.1 inside the sandbox's own network namespace, so fixed ports cannot collide with
//! anything on the host.

use std::path::Path;

/// The proxy's HTTP port inside the sandbox (HTTP CONNECT and absolute-form requests).
pub const HTTP_PORT: u16 = 3128;
/// The proxy's SOCKS5 port inside the sandbox. Both ports speak both protocols.
pub const SOCKS_PORT: u16 = 1080;

/// Hosts that clients reach directly: the sandbox's own loopback, nothing else.
const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Variables that select a proxy; the host's values are replaced, never passed in.
const REPLACED: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "ftp_proxy",
    "npm_config_proxy",
    "npm_config_https_proxy",
    "npm_config_noproxy",
    "yarn_http_proxy",
    "yarn_https_proxy",
    "pip_proxy",
    "docker_http_proxy",
    "docker_https_proxy",
    "docker_no_proxy",
    "cloudsdk_proxy_type",
    "cloudsdk_proxy_address",
    "cloudsdk_proxy_port",
    "node_use_env_proxy",
];

/// True for a host variable that the proxy environment replaces (compared without case, as
/// most clients read both spellings).
pub fn replaced(name: &str) -> bool {
    REPLACED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The proxy variables. `exe` is ringfence's own binary (used for ssh's ProxyCommand);
/// `java_opts` and `git_ssh` are the host's JAVA_TOOL_OPTIONS and GIT_SSH_COMMAND, extended.
pub fn proxy_env(
    exe: &Path,
    java_opts: Option<&str>,
    git_ssh: Option<&str>,
) -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{HTTP_PORT}");
    let socks = format!("socks5h://127.0.0.1:{SOCKS_PORT}");
    let mut v: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, val: &str| v.push((k.to_string(), val.to_string()));
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        set(k, &http);
    }
    for k in ["ALL_PROXY", "all_proxy"] {
        set(k, &socks);
    }
    for k in ["NO_PROXY", "no_proxy"] {
        set(k, NO_PROXY);
    }
    for k in [
        "npm_config_proxy",
        "npm_config_https_proxy",
        "YARN_HTTP_PROXY",
        "YARN_HTTPS_PROXY",
        "PIP_PROXY",
        "DOCKER_HTTP_PROXY",
        "DOCKER_HTTPS_PROXY",
    ] {
        set(k, &http);
    }
    // Node's own fetch and https module read the variables above only with this (Node 24
    // and later; older versions ignore it and connect directly).
    set("NODE_USE_ENV_PROXY", "1");
    set("npm_config_noproxy", NO_PROXY);
    set("DOCKER_NO_PROXY", NO_PROXY);
    set("CLOUDSDK_PROXY_TYPE", "http");
    set("CLOUDSDK_PROXY_ADDRESS", "127.0.0.1");
    set("CLOUDSDK_PROXY_PORT", &HTTP_PORT.to_string());
    let java = format!(
        "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={HTTP_PORT} \
         -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={HTTP_PORT} \
         -Dhttp.nonProxyHosts=localhost|127.0.0.1"
    );
    match java_opts.filter(|j| !j.trim().is_empty()) {
        Some(j) => set("JAVA_TOOL_OPTIONS", &format!("{j} {java}")),
        None => set("JAVA_TOOL_OPTIONS", &java),
    }
    // ssh runs ProxyCommand with the user's shell after expanding %h and %p.
    let proxy_command = format!("{} connect %h %p", sh_quote(&exe.to_string_lossy()));
    let option = sh_quote(&format!("ProxyCommand={proxy_command}"));
    match git_ssh.filter(|g| !g.trim().is_empty()) {
        Some(g) => set("GIT_SSH_COMMAND", &format!("{g} -o {option}")),
        None => set("GIT_SSH_COMMAND", &format!("ssh -o {option}")),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(v: &'a [(String, String)], k: &str) -> &'a str {
        v.iter()
            .find(|(n, _)| n == k)
            .map(|(_, val)| val.as_str())
            .unwrap_or("")
    }

    #[test]
    fn points_every_client_at_the_proxy() {
        let v = proxy_env(Path::new("/usr/bin/ringfence"), None, None);
        assert_eq!(get(&v, "HTTPS_PROXY"), "http://127.0.0.1:3128");
        assert_eq!(get(&v, "https_proxy"), "http://127.0.0.1:3128");
        assert_eq!(get(&v, "ALL_PROXY"), "socks5h://127.0.0.1:1080");
        assert_eq!(get(&v, "NO_PROXY"), "localhost,127.0.0.1,::1");
        assert_eq!(get(&v, "CLOUDSDK_PROXY_PORT"), "3128");
        assert_eq!(get(&v, "NODE_USE_ENV_PROXY"), "1");
        assert_eq!(
            get(&v, "GIT_SSH_COMMAND"),
            "ssh -o 'ProxyCommand='\\''/usr/bin/ringfence'\\'' connect %h %p'"
        );
        assert!(get(&v, "JAVA_TOOL_OPTIONS").starts_with("-Dhttp.proxyHost=127.0.0.1"));
        for (k, _) in &v {
            if k != "JAVA_TOOL_OPTIONS" && k != "GIT_SSH_COMMAND" {
                assert!(
                    replaced(k),
                    "{k} is set but a host value would not be removed"
                );
            }
        }
    }

    #[test]
    fn extends_the_hosts_java_and_ssh_options() {
        let v = proxy_env(
            Path::new("/opt/my tools/ringfence"),
            Some("-Xmx1g"),
            Some("ssh -i ~/.ssh/deploy"),
        );
        assert!(get(&v, "JAVA_TOOL_OPTIONS").starts_with("-Xmx1g -Dhttp.proxyHost"));
        assert_eq!(
            get(&v, "GIT_SSH_COMMAND"),
            "ssh -i ~/.ssh/deploy -o 'ProxyCommand='\\''/opt/my tools/ringfence'\\'' connect %h %p'"
        );
        assert!(replaced("Http_Proxy"));
        assert!(!replaced("PATH"));
    }
}
