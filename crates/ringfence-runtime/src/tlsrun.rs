//! The run's side of TLS termination: read what the proxy needs from the host (the trust
//! store, masked variables, injected values) before the sandbox is built, and hand it to
//! `ringfence_proxy::tls::setup`, which creates the CA and writes the sandbox's bundle.

use std::path::PathBuf;

use anyhow::Result;

/// Sets `network.tlsTerminate` up before the sandbox is built: the CA and the trust bundle
/// (in the state directory), against the host's trust store and SSL_CERT_FILE.
pub fn setup(p: &ringfence_policy::Policy) -> Result<Option<ringfence_proxy::tls::Setup>> {
    // Policy loading refuses masked variables without tlsTerminate.
    let Some(t) = &p.tls_terminate else {
        return Ok(None);
    };
    let secrets = masked_secrets(p)?;
    if p.http_proxy_port.is_some() || p.socks_proxy_port.is_some() {
        anyhow::bail!(
            "network.tlsTerminate: cannot be combined with network.httpProxyPort or \
             network.socksProxyPort (your own proxy decides there); remove one of them"
        );
    }
    let ssl_cert_file = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let injections = header_injections(p)?;
    let state = crate::runs::state_dir()?;
    ringfence_proxy::tls::setup(t, &state, ssl_cert_file.as_deref(), secrets, injections, p)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The masked variables (`credentials.envVars`, mode "mask") that the host sets, each with its
/// real value and a new placeholder.
pub fn masked_secrets(p: &ringfence_policy::Policy) -> Result<Vec<ringfence_proxy::tls::Secret>> {
    let mut secrets = Vec::new();
    for m in &p.masked_env {
        // A masked variable the host does not set has nothing to protect (as in srt).
        let Some(value) = std::env::var_os(&m.name) else {
            continue;
        };
        let value = value.into_string().map_err(|_| {
            anyhow::anyhow!(
                "{}: {}: the value of {} is not UTF-8; it cannot be masked",
                m.origin,
                m.key,
                m.name
            )
        })?;
        let hosts = m.inject_hosts.as_ref().unwrap_or(&p.allowed_domains);
        let s = ringfence_proxy::tls::Secret::new(
            "credentials.envVars.injectHosts",
            &m.name,
            value,
            hosts,
        )
        .map_err(|e| anyhow::anyhow!("{}: {}: {e}", m.origin, m.key))?;
        secrets.push(s);
    }
    Ok(secrets)
}

/// `credentials.inject` with the values read from the host's environment and files.
pub fn header_injections(
    p: &ringfence_policy::Policy,
) -> Result<Vec<ringfence_proxy::tls::Injection>> {
    let mut injections = Vec::new();
    for j in &p.header_injections {
        let mut value = String::new();
        for part in &j.value {
            match part {
                ringfence_policy::TemplatePart::Text(t) => value.push_str(t),
                ringfence_policy::TemplatePart::Env(name) => {
                    let v = std::env::var(name).map_err(|_| {
                        anyhow::anyhow!(
                            "{}.value: ${{env:{name}}} is not set (or not UTF-8) on the host",
                            j.origin
                        )
                    })?;
                    value.push_str(&v);
                }
                ringfence_policy::TemplatePart::File(path) => {
                    let v = std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("{}.value: ${{file:{path}}}: {e}", j.origin)
                    })?;
                    value.push_str(v.strip_suffix('\n').unwrap_or(&v));
                }
            }
        }
        injections.push(
            ringfence_proxy::tls::Injection::new(&j.host, &j.header, &value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", j.origin))?,
        );
    }
    Ok(injections)
}
