//! `network.tlsTerminate` (srt's form), resolved: which CA signs the per-host certificates,
//! which hosts are tunnelled instead of terminated, what the sandbox's trust bundle adds, and
//! the limits on terminated tunnels. Pure: no file is read here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::settings::TlsTerminateSettings;

/// At most this many tunnels are terminated at once unless `maxTunnels` says otherwise (srt).
pub const MAX_TUNNELS: usize = 256;
/// Milliseconds a terminated tunnel has for its TLS handshake unless `handshakeTimeoutMs` says
/// otherwise (srt).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The resolved `network.tlsTerminate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTerminate {
    /// `caCertPath` and `caKeyPath`: the user's own CA. `None`: ringfence's per-user CA,
    /// generated on first use in the state directory.
    pub ca: Option<(PathBuf, PathBuf)>,
    /// Domain patterns (allowedDomains syntax) whose CONNECTs stay opaque tunnels.
    pub exclude_domains: Vec<String>,
    /// PEM files whose certificates are appended to the sandbox's trust bundle.
    pub extra_ca_cert_paths: Vec<PathBuf>,
    pub max_tunnels: usize,
    pub handshake_timeout: Duration,
}

impl TlsTerminate {
    /// Resolves the paths of `s` (`~`, relative to `cwd`). Errors name the key.
    pub fn resolve(
        s: &TlsTerminateSettings,
        cwd: &Path,
        home: &Path,
    ) -> Result<TlsTerminate, (String, String)> {
        let path = |key: &str, p: &str| {
            crate::paths::resolve_path(p, cwd, home)
                .map_err(|m| (format!("network.tlsTerminate.{key}"), m))
        };
        let ca = match (&s.ca_cert_path, &s.ca_key_path) {
            (Some(c), Some(k)) => Some((path("caCertPath", c)?, path("caKeyPath", k)?)),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err((
                    "network.tlsTerminate".into(),
                    "caCertPath and caKeyPath must be given together".into(),
                ))
            }
        };
        let extra = s
            .extra_ca_cert_paths
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| path(&format!("extraCaCertPaths[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TlsTerminate {
            ca,
            exclude_domains: s.exclude_domains.clone().unwrap_or_default(),
            extra_ca_cert_paths: extra,
            max_tunnels: s
                .max_tunnels
                .map_or(MAX_TUNNELS, |n| usize::try_from(n).unwrap_or(MAX_TUNNELS)),
            handshake_timeout: Duration::from_millis(
                s.handshake_timeout_ms.unwrap_or(HANDSHAKE_TIMEOUT_MS),
            ),
        })
    }
}

/// The checks of `network.tlsTerminate` that need no file: ranges and the CA pair.
pub(crate) fn check(s: &TlsTerminateSettings) -> Result<(), (String, String)> {
    let key = |k: &str| format!("network.tlsTerminate.{k}");
    if s.ca_cert_path.is_some() != s.ca_key_path.is_some() {
        return Err((
            "network.tlsTerminate".into(),
            "caCertPath and caKeyPath must be given together".into(),
        ));
    }
    for (k, v) in [
        ("caCertPath", &s.ca_cert_path),
        ("caKeyPath", &s.ca_key_path),
    ] {
        if v.as_deref() == Some("") {
            return Err((key(k), "a path cannot be empty".into()));
        }
    }
    if let Some(n) = s.max_tunnels {
        if !(1..=65536).contains(&n) {
            return Err((key("maxTunnels"), format!("{n}: must be from 1 to 65536")));
        }
    }
    if let Some(n) = s.handshake_timeout_ms {
        if !(100..=600_000).contains(&n) {
            return Err((
                key("handshakeTimeoutMs"),
                format!("{n}: must be from 100 to 600000"),
            ));
        }
    }
    for (i, d) in s.exclude_domains.iter().flatten().enumerate() {
        crate::settings::check_domain(d, false)
            .map_err(|m| (format!("network.tlsTerminate.excludeDomains[{i}]"), m))?;
    }
    for (i, p) in s.extra_ca_cert_paths.iter().flatten().enumerate() {
        if p.is_empty() {
            return Err((
                format!("network.tlsTerminate.extraCaCertPaths[{i}]"),
                "a path cannot be empty".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(json: &str) -> TlsTerminateSettings {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_and_paths() {
        let t = TlsTerminate::resolve(
            &settings(r#"{"caCertPath": "~/ca.pem", "caKeyPath": "k.pem", "extraCaCertPaths": ["/x.pem"]}"#),
            Path::new("/work"),
            Path::new("/home/u"),
        )
        .unwrap();
        assert_eq!(
            t.ca,
            Some((
                PathBuf::from("/home/u/ca.pem"),
                PathBuf::from("/work/k.pem")
            ))
        );
        assert_eq!(t.extra_ca_cert_paths, vec![PathBuf::from("/x.pem")]);
        assert_eq!(t.max_tunnels, MAX_TUNNELS);
        assert_eq!(t.handshake_timeout, Duration::from_secs(10));
    }

    #[test]
    fn refusals_name_the_key() {
        for (json, key) in [
            (r#"{"caCertPath": "/ca.pem"}"#, "network.tlsTerminate"),
            (r#"{"maxTunnels": 0}"#, "network.tlsTerminate.maxTunnels"),
            (
                r#"{"maxTunnels": 65537}"#,
                "network.tlsTerminate.maxTunnels",
            ),
            (
                r#"{"handshakeTimeoutMs": 99}"#,
                "network.tlsTerminate.handshakeTimeoutMs",
            ),
            (
                r#"{"excludeDomains": ["a b"]}"#,
                "network.tlsTerminate.excludeDomains[0]",
            ),
        ] {
            assert_eq!(check(&settings(json)).unwrap_err().0, key, "{json}");
        }
        assert!(check(&settings(r#"{"maxTunnels": 1, "handshakeTimeoutMs": 100}"#)).is_ok());
    }
}
