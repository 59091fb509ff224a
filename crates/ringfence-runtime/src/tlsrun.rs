//! The run's side of TLS termination: read what the proxy needs from the host (the trust
//! store, masked variables, injected values) before the sandbox is built, and hand it to
//! `ringfence_proxy::tls::setup`, which creates the CA and writes the sandbox's bundle.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Sets `network.tlsTerminate` up before the sandbox is built: the CA and the trust bundle
/// (in the state directory), against the host's trust store and SSL_CERT_FILE.
pub fn setup(p: &ringfence_policy::Policy) -> Result<Option<ringfence_proxy::tls::Setup>> {
    // Policy loading refuses masked variables without tlsTerminate.
    let Some(t) = &p.tls_terminate else {
        return Ok(None);
    };
    let vars = masked_secrets(p)?;
    let mut secrets = vars.secrets;
    let aws = aws_pairs(p, &secrets)?;
    let files = masked_files(p)?;
    secrets.extend(files.secrets);
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
    let creds = ringfence_proxy::tls::Credentials {
        secrets,
        injections,
        aws,
    };
    let mut setup = ringfence_proxy::tls::setup(t, &state, ssl_cert_file.as_deref(), creds, p)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    setup.masked_files = write_fakes(&state.join("tls"), &files.fakes)?;
    setup.unmasked = files.unmasked;
    setup.env.extend(vars.env);
    setup.env.extend(vars.unprotected);
    Ok(Some(setup))
}

/// The masked files of a run: the values the proxy puts back, the text each file shows
/// inside, and the files left as they are.
struct MaskedFiles {
    secrets: Vec<ringfence_proxy::tls::Secret>,
    /// Each real path (resolved through symlinks) and what the sandbox reads there.
    fakes: Vec<(PathBuf, String)>,
    unmasked: Vec<PathBuf>,
}

/// Reads each `credentials.files` entry with mode "mask" as srt does: a file that is missing,
/// unreadable, a directory or not UTF-8 has nothing to mask (it stays hidden, as the entry is
/// also denied). Without `extract` the whole content is one value (less one final newline,
/// which the shown file keeps, so that `$(cat FILE)` sends the placeholder); with it, each
/// distinct value of group 1. A pattern that matches nothing: "warn" leaves the file as it is
/// with a warning, "deny" hides it, "error" stops the run.
fn masked_files(p: &ringfence_policy::Policy) -> Result<MaskedFiles> {
    use ringfence_policy::OnExtractNoMatch;
    let mut out = MaskedFiles {
        secrets: Vec::new(),
        fakes: Vec::new(),
        unmasked: Vec::new(),
    };
    for m in &p.masked_files {
        let Ok(real) = std::fs::canonicalize(&m.path) else {
            continue;
        };
        if !real.is_file() {
            continue;
        }
        let Ok(content) = std::fs::read(&real).map(String::from_utf8) else {
            continue;
        };
        let Ok(content) = content else {
            continue;
        };
        let hosts = m.inject_hosts.as_ref().unwrap_or(&p.allowed_domains);
        let name = format!("{} ({}: {})", m.path.display(), m.origin, m.key);
        let err = |e: ringfence_proxy::Error| anyhow::anyhow!("{}: {}: {e}", m.origin, m.key);
        let pattern = m
            .extract
            .as_deref()
            .or(m.decode_jwt.then_some(ringfence_policy::JWT_PATTERN));
        let fake = match pattern {
            None => {
                let (value, end) = match content.strip_suffix('\n') {
                    Some(v) => (v, "\n"),
                    None => (content.as_str(), ""),
                };
                let s = ringfence_proxy::tls::Secret::from_file(&name, value.to_string(), hosts)
                    .map_err(err)?;
                let fake = format!("{}{end}", s.placeholder);
                out.secrets.push(s);
                fake
            }
            Some(pattern) => {
                let mut made = Vec::new();
                let masked = ringfence_policy::mask_spans(
                    &content,
                    pattern,
                    m.mask_duplicates,
                    &mut |value| {
                        let new = |v: &str, label: &str| {
                            ringfence_proxy::tls::Secret::from_file(
                                &format!("{name}{label}"),
                                v.to_string(),
                                hosts,
                            )
                        };
                        let mut s = new(value, "")?;
                        if m.decode_jwt {
                            // A candidate that is not a JWT is left as it is.
                            if !ringfence_policy::is_jwt(value) {
                                return Ok(value.to_string());
                            }
                            if m.mask_claims.is_empty() {
                                s.placeholder = ringfence_policy::fake_jwt(&s.placeholder);
                            } else {
                                let mut claims = Vec::new();
                                let fake = ringfence_policy::mask_jwt_claims(
                                    value,
                                    &m.mask_claims,
                                    &mut |c, v| {
                                        let c = new(v, &format!(" claim {c}"))?;
                                        let p = c.placeholder.clone();
                                        claims.push(c);
                                        Ok(p)
                                    },
                                )?;
                                let Some(fake) = fake else {
                                    return Ok(value.to_string());
                                };
                                s.placeholder = fake;
                                made.extend(claims);
                            }
                        }
                        let placeholder = s.placeholder.clone();
                        made.push(s);
                        Ok(placeholder)
                    },
                )
                .map_err(|e| match e {
                    ringfence_policy::MaskError::NoGroup(at) => anyhow::anyhow!(
                        "{}: {}.extract: the pattern matched at byte {at} of {} without group 1; \
                         group 1 must capture the value on every match",
                        m.origin,
                        m.key,
                        real.display()
                    ),
                    ringfence_policy::MaskError::Pattern(e) => {
                        anyhow::anyhow!("{}: {}.extract: {e}", m.origin, m.key)
                    }
                    ringfence_policy::MaskError::Placeholder(e) => err(e),
                })?;
                match masked {
                    Some(masked) => {
                        out.secrets.extend(made);
                        masked.text
                    }
                    None => {
                        let cause = format!(
                            "{}: {}.extract matched nothing in {}",
                            m.origin,
                            m.key,
                            real.display()
                        );
                        match m.on_no_match {
                            OnExtractNoMatch::Error => anyhow::bail!(
                                "{cause} (onExtractNoMatch: \"error\"); fix the pattern, set \
                                 onExtractNoMatch to \"deny\" or \"warn\", or remove the entry"
                            ),
                            OnExtractNoMatch::Deny => continue,
                            OnExtractNoMatch::Warn => {
                                eprintln!(
                                    "ringfence: warning: {cause}; the file is left UNPROTECTED \
                                     (readable as it is inside). Fix the pattern, or set \
                                     onExtractNoMatch to \"deny\" or \"error\""
                                );
                                out.unmasked.push(real);
                                continue;
                            }
                        }
                    }
                }
            }
        };
        out.fakes.push((real, fake));
    }
    Ok(out)
}

/// Writes the files shown in place of masked ones into `dir/masked-PID` (placeholders only,
/// readable; the directory is left behind by a run that was killed and removed by the next
/// one), and returns each real path with its file.
fn write_fakes(
    dir: &std::path::Path,
    fakes: &[(PathBuf, String)],
) -> Result<Vec<(PathBuf, PathBuf)>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if fakes.is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("masked-") {
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let own = dir.join(format!("masked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&own);
    std::fs::create_dir(&own).with_context(|| format!("creating {}", own.display()))?;
    let mut out = Vec::new();
    for (i, (real, text)) in fakes.iter().enumerate() {
        let path = own.join(format!("{i}.fake"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        out.push((real.clone(), path));
    }
    Ok(out)
}

/// The masked variables (`credentials.envVars`, mode "mask") that the host sets, each with its
/// real value and a new placeholder.
pub fn masked_secrets(p: &ringfence_policy::Policy) -> Result<MaskedVars> {
    use ringfence_policy::OnExtractNoMatch;
    let mut out = MaskedVars::default();
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
        let err = |e: ringfence_proxy::Error| anyhow::anyhow!("{}: {}: {e}", m.origin, m.key);
        if m.decode_jwt {
            let unprotected = |why: &str| {
                eprintln!(
                    "ringfence: warning: {}: {}: {why}; the variable {} is left UNPROTECTED (its \
                     value is visible inside). Fix the entry or remove it",
                    m.origin, m.key, m.name
                );
            };
            if !ringfence_policy::is_jwt(&value) {
                unprotected("decode \"jwt\", but the value is not a JWT");
                out.unprotected.push((m.name.clone(), value));
                continue;
            }
            let mut whole = ringfence_proxy::tls::Secret::new(
                "credentials.envVars.injectHosts",
                &m.name,
                value.clone(),
                hosts,
            )
            .map_err(err)?;
            if m.mask_claims.is_empty() {
                whole.placeholder = ringfence_policy::fake_jwt(&whole.placeholder);
                out.secrets.push(whole);
                continue;
            }
            let mut claims = Vec::new();
            let fake = ringfence_policy::mask_jwt_claims(&value, &m.mask_claims, &mut |c, v| {
                let mut s = ringfence_proxy::tls::Secret::new(
                    "credentials.envVars.injectHosts",
                    &format!("{} (claim {c})", m.name),
                    v.to_string(),
                    hosts,
                )?;
                s.in_env = false;
                let placeholder = s.placeholder.clone();
                claims.push(s);
                Ok(placeholder)
            })
            .map_err(err)?;
            let Some(fake) = fake else {
                unprotected("none of maskClaims is a string claim of its JWT");
                out.unprotected.push((m.name.clone(), value));
                continue;
            };
            whole.placeholder = fake;
            out.secrets.push(whole);
            out.secrets.extend(claims);
            continue;
        }
        let Some(pattern) = &m.extract else {
            let s = ringfence_proxy::tls::Secret::new(
                "credentials.envVars.injectHosts",
                &m.name,
                value,
                hosts,
            )
            .map_err(err)?;
            out.secrets.push(s);
            continue;
        };
        // Structured: the variable keeps its text, each captured part a placeholder.
        let mut made = Vec::new();
        let masked = ringfence_policy::mask_spans(&value, pattern, false, &mut |part| {
            let mut s = ringfence_proxy::tls::Secret::new(
                "credentials.envVars.injectHosts",
                &m.name,
                part.to_string(),
                hosts,
            )?;
            s.in_env = false;
            let placeholder = s.placeholder.clone();
            made.push(s);
            Ok(placeholder)
        })
        .map_err(|e| match e {
            ringfence_policy::MaskError::NoGroup(at) => anyhow::anyhow!(
                "{}: {}.extract: the pattern matched at byte {at} of {} without group 1; group 1 \
                 must capture the value on every match",
                m.origin,
                m.key,
                m.name
            ),
            ringfence_policy::MaskError::Pattern(e) => {
                anyhow::anyhow!("{}: {}.extract: {e}", m.origin, m.key)
            }
            ringfence_policy::MaskError::Placeholder(e) => err(e),
        })?;
        match masked {
            Some(masked) => {
                out.secrets.extend(made);
                out.env.push((m.name.clone(), masked.text));
            }
            None => {
                let cause = format!(
                    "{}: {}.extract matched nothing in the value of {}",
                    m.origin, m.key, m.name
                );
                match m.on_no_match {
                    OnExtractNoMatch::Error => anyhow::bail!(
                        "{cause} (onExtractNoMatch: \"error\"); fix the pattern, set \
                         onExtractNoMatch to \"deny\" or \"warn\", or remove the entry"
                    ),
                    // The variable is not passed in (it is in env.deny).
                    OnExtractNoMatch::Deny => {}
                    OnExtractNoMatch::Warn => {
                        eprintln!(
                            "ringfence: warning: {cause}; the variable is left UNPROTECTED (its \
                             value is visible inside). Fix the pattern, or set onExtractNoMatch \
                             to \"deny\" or \"error\""
                        );
                        out.unprotected.push((m.name.clone(), value));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The masked variables of a run.
#[derive(Default)]
pub struct MaskedVars {
    /// The values the proxy puts back; those masked whole are variables set to their
    /// placeholder (`in_env`).
    pub secrets: Vec<ringfence_proxy::tls::Secret>,
    /// Variables masked by `extract`, with the text the sandbox sees (placeholders in it).
    pub env: Vec<(String, String)>,
    /// Variables whose extract matched nothing, with onExtractNoMatch "warn": passed in as
    /// they are (srt's meaning).
    pub unprotected: Vec<(String, String)>,
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

/// The AWS credentials whose SigV4 signatures the proxy makes again: each `credentials.awsPairs`
/// entry (and the conventional AWS_* trio unless an entry names one of them) whose key id and
/// secret variables were both masked (set on the host). The session token joins when masked.
pub fn aws_pairs(
    p: &ringfence_policy::Policy,
    secrets: &[ringfence_proxy::tls::Secret],
) -> Result<Vec<ringfence_proxy::tls::sigv4::AwsPair>> {
    let specs = p
        .aws_pairs
        .iter()
        .cloned()
        .chain(ringfence_policy::AwsPair::conventional(&p.aws_pairs));
    let masked = |name: &str| secrets.iter().find(|s| s.in_env && s.name == name);
    let mut out = Vec::new();
    for a in specs {
        let (Some(key), Some(_)) = (
            masked(&a.access_key_id_var),
            masked(&a.secret_access_key_var),
        ) else {
            if masked(&a.secret_access_key_var).is_some() {
                eprintln!(
                    "ringfence: warning: {} is masked but {} is not: requests signed with the \
                     placeholder secret cannot be re-signed and will fail upstream; mask both",
                    a.secret_access_key_var, a.access_key_id_var
                );
            }
            continue;
        };
        let (Ok(key_id), Ok(secret)) = (
            std::env::var(&a.access_key_id_var),
            std::env::var(&a.secret_access_key_var),
        ) else {
            continue;
        };
        let token = a
            .session_token_var
            .as_deref()
            .filter(|t| masked(t).is_some())
            .and_then(|t| std::env::var(t).ok());
        let hosts = p
            .masked_env
            .iter()
            .find(|m| m.name == a.access_key_id_var)
            .and_then(|m| m.inject_hosts.as_ref())
            .unwrap_or(&p.allowed_domains);
        out.push(
            ringfence_proxy::tls::sigv4::AwsPair::new(
                &key.placeholder,
                key_id,
                secret,
                token,
                hosts,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.access_key_id_var))?,
        );
    }
    Ok(out)
}
