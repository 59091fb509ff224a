//! TLS termination (`network.tlsTerminate`), end to end: a real sandbox, curl inside, and an
//! HTTPS server on the host's loopback whose certificate comes from a test CA that the host
//! side trusts through SSL_CERT_FILE (as a user's corporate CA would be). Checked: the sandbox
//! trusts the terminating CA through the bundle, HTTP/1.1 and HTTP/2 reach the upstream, a
//! server name or Host that names another host gets 421, a bad upstream certificate is
//! refused, a tunnel that carries no TLS is refused, excluded hosts stay opaque, and the CA's
//! private key cannot be read inside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{run, TestDir};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

fn need_curl() -> bool {
    if common::have("curl") {
        return true;
    }
    common::skip("curl is not installed");
    false
}

/// A CA for the test's upstream servers (or for `caCertPath`).
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A server certificate for the IP address `ip`, and its key.
    fn issue(&self, ip: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::IpAddress(ip.parse().unwrap())];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }
}

/// An HTTPS server on 127.0.0.1 with a certificate for `ip` from `ca`: each request is answered
/// with its own head and body as the response body, and kept in `seen`.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

fn upstream(ca: &TestCa, ip: &str) -> Upstream {
    upstream_on(ca, ip, "127.0.0.1")
}

/// [`upstream`] listening on the loopback address `bind`.
fn upstream_on(ca: &TestCa, ip: &str, bind: &str) -> Upstream {
    let (cert, key) = ca.issue(ip);
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let l = TcpListener::bind(format!("{bind}:0")).unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (config, log) = (config.clone(), log.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                answer_requests(rustls::StreamOwned::new(conn, s), &log);
            });
        }
    });
    Upstream { port, seen }
}

/// A plain HTTP server on 127.0.0.1 that answers as [`upstream`] does.
fn plain_upstream() -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let log = log.clone();
            std::thread::spawn(move || answer_requests(s, &log));
        }
    });
    Upstream { port, seen }
}

/// Answers each request on `s` with its own head and body (and keeps it in `log`).
fn answer_requests<S: Read + Write>(s: S, log: &Mutex<Vec<String>>) {
    let mut r = BufReader::new(s);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let mut body = vec![0u8; len];
        if chunked {
            body.clear();
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    let mut end = String::new();
                    let _ = r.read_line(&mut end);
                    break;
                }
                let mut chunk = vec![0u8; n + 2];
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if r.read_exact(&mut body).is_err() {
            return;
        }
        let text = format!("{head}{}", String::from_utf8_lossy(&body));
        log.lock().unwrap().push(text.clone());
        if head.to_ascii_lowercase().contains("upgrade: websocket") {
            // Switch protocols, then echo every byte back.
            let s = r.get_mut();
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                              Connection: Upgrade\r\n\r\n",
            );
            let _ = s.flush();
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if r.get_mut().write_all(&buf[..n]).is_err() {
                            return;
                        }
                        let _ = r.get_mut().flush();
                    }
                }
            }
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nSet-Cookie: session=upstream\r\nX-Upstream: yes\r\n\
                         Content-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if r.get_mut().write_all(answer.as_bytes()).is_err() {
            return;
        }
        let _ = r.get_mut().flush();
    }
}

/// A fixture whose host side trusts `ca` (SSL_CERT_FILE) and a settings file with `json`.
fn setup(tag: &str, ca: &TestCa, json: &str) -> (TestDir, String) {
    let (dir, settings) = common::with_settings(tag, json);
    dir.write("upstream-ca.pem", &ca.cert.pem());
    (dir, settings)
}

fn rf(dir: &TestDir) -> Command {
    let mut c = common::rf_in(dir);
    c.env("SSL_CERT_FILE", dir.s("upstream-ca.pem"));
    c
}

/// Runs `script` in a sandbox; returns the outcome and the run's name.
fn sandbox(dir: &TestDir, settings: &str, script: &str) -> (common::Outcome, String) {
    let name = format!("tls-{}", common::unique_number());
    let out = run(rf(dir).args([
        "run", "--name", &name, "-s", settings, "--", "sh", "-c", script,
    ]));
    (out, name)
}

/// The run's network decisions.
fn decisions(dir: &TestDir, name: &str) -> Vec<serde_json::Value> {
    common::log_events(common::rf_in(dir), name)
        .into_iter()
        .filter(|e| e["kind"] == "net.decision")
        .collect()
}

fn policy(port: u16, tls: &str) -> String {
    format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"], "tlsTerminate": {tls}}}}}"#)
}

// curl goes through the proxy even for 127.0.0.1 (--noproxy ''), as the network tests do; a
// loopback entry is otherwise also reachable as a host service, which carries plain TCP.
const CURL: &str = "curl --noproxy '' -sS";

#[test]
fn curl_inside_trusts_the_terminating_ca_over_http1_and_http2() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = upstream(&ca, "127.0.0.1");
    let port = up.port;
    let (dir, settings) = setup("tls-basic", &ca, &policy(port, "{}"));
    let (out, name) = sandbox(
        &dir,
        &settings,
        &format!(
            "{CURL} -v https://127.0.0.1:{port}/one 2>&1; echo; \
             {CURL} --http2 -o /dev/null -w 'version=%{{http_version}}\\n' https://127.0.0.1:{port}/two; \
             {CURL} -v -x socks5h://127.0.0.1:1080 https://127.0.0.1:{port}/three 2>&1; echo; \
             for v in SSL_CERT_FILE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS \
                      GIT_SSL_CAINFO PIP_CERT AWS_CA_BUNDLE CARGO_HTTP_CAINFO; do \
               eval \"echo $v=\\$$v\"; done; \
             grep -c 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\"; \
             grep -c 'PRIVATE KEY' \"$SSL_CERT_FILE\"; true"
        ),
    );
    let text = out.ok();
    // The certificate curl checked is the proxy's, from ringfence's CA, not the upstream's.
    // Through SOCKS5 too.
    assert_eq!(
        text.matches("issuer: O=ringfence; CN=ringfence TLS termination CA")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("GET /three HTTP/1.1"), "{text}");
    assert!(text.contains("GET /one HTTP/1.1"), "{text}");
    assert!(
        text.contains("version=2"),
        "HTTP/2 between curl and the proxy: {text}"
    );
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[1].starts_with("GET /two HTTP/1.1"), "{seen:?}");
    assert!(
        seen[1]
            .to_ascii_lowercase()
            .contains(&format!("host: 127.0.0.1:{port}")),
        "{seen:?}"
    );
    let bundle = dir.join("state/ringfence/tls");
    for v in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "AWS_CA_BUNDLE",
        "CARGO_HTTP_CAINFO",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{v}=")))
            .unwrap();
        assert!(line.contains(bundle.to_str().unwrap()), "{line}");
    }
    // The bundle: the CA, the host's roots (at least the test CA), no private key.
    let counts: Vec<&str> = text.lines().rev().take(2).collect();
    assert_eq!(counts[0], "0", "{text}");
    assert!(counts[1].parse::<u32>().unwrap() >= 2, "{text}");
    let net = decisions(&dir, &name);
    assert!(
        net.iter()
            .any(|e| e["protocol"] == "connect" && e["decision"] == "allow" && e["port"] == port),
        "{net:?}"
    );
}

#[test]
fn strip_response_headers_keeps_fields_from_the_sandbox() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = upstream(&ca, "127.0.0.1");
    let port = up.port;
    let (dir, settings) = setup(
        "tls-strip",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{port}"], "tlsTerminate": {{}},
                "stripResponseHeaders": ["SET_COOKIE"]}}}}"#
        ),
    );
    let (out, _) = sandbox(
        &dir,
        &settings,
        &format!("{CURL} -i https://127.0.0.1:{port}/"),
    );
    let text = out.ok().to_ascii_lowercase();
    assert!(text.contains("x-upstream: yes"), "{text}");
    assert!(!text.contains("set-cookie"), "{text}");
}

#[test]
fn a_server_name_or_host_for_another_host_gets_421() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = upstream(&ca, "127.0.0.1");
    let port = up.port;
    let (dir, settings) = setup("tls-421", &ca, &policy(port, "{}"));
    let (out, name) = sandbox(
        &dir,
        &settings,
        &format!(
            "{CURL} -k --connect-to evil.example:443:127.0.0.1:{port} -o /dev/null \
               -w 'sni=%{{http_code}}\\n' https://evil.example/; \
             {CURL} -H 'Host: evil.example' -o /dev/null -w 'host=%{{http_code}}\\n' \
               https://127.0.0.1:{port}/; \
             {CURL} --http2 -H 'Host: evil.example' -o /dev/null -w 'h2=%{{http_code}}\\n' \
               https://127.0.0.1:{port}/; \
             {CURL} -o /dev/null -w 'good=%{{http_code}}\\n' https://127.0.0.1:{port}/"
        ),
    );
    let text = out.ok();
    assert!(text.contains("sni=421"), "{text}");
    assert!(text.contains("host=421"), "{text}");
    assert!(text.contains("h2=421"), "{text}");
    assert!(text.contains("good=200"), "{text}");
    assert_eq!(
        up.seen.lock().unwrap().len(),
        1,
        "only the good request went on"
    );
    let refused: Vec<_> = decisions(&dir, &name)
        .into_iter()
        .filter(|e| e["protocol"] == "https" && e["decision"] == "deny")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused[0]["reason"]
        .as_str()
        .unwrap()
        .contains("evil.example"));
}

#[test]
fn a_bad_upstream_certificate_is_refused() {
    if !need_curl() {
        return;
    }
    let trusted = TestCa::new("upstream test CA");
    let untrusted = TestCa::new("nobody trusts this CA");
    let stranger = upstream(&untrusted, "127.0.0.1");
    let wrong_name = upstream(&trusted, "127.0.0.2");
    let (a, b) = (stranger.port, wrong_name.port);
    let (dir, settings) = setup(
        "tls-badcert",
        &trusted,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}", "127.0.0.1:{b}"], "tlsTerminate": {{}}}}}}"#
        ),
    );
    let (out, name) = sandbox(
        &dir,
        &settings,
        &format!(
            "{CURL} -w '\\nstranger=%{{http_code}}\\n' https://127.0.0.1:{a}/; \
             {CURL} -w '\\nwrong=%{{http_code}}\\n' https://127.0.0.1:{b}/"
        ),
    );
    let text = out.ok();
    assert!(text.contains("stranger=502"), "{text}");
    assert!(text.contains("wrong=502"), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(stranger.seen.lock().unwrap().is_empty());
    assert!(wrong_name.seen.lock().unwrap().is_empty());
    let net = decisions(&dir, &name);
    let errors: Vec<_> = net
        .iter()
        .filter(|e| e["protocol"] == "connect" && e["error"].is_string())
        .collect();
    assert_eq!(errors.len(), 2, "{net:?}");
}

#[test]
fn a_tunnel_without_tls_is_refused_and_excluded_hosts_stay_opaque() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let terminated = upstream(&ca, "127.0.0.1");
    let excluded = upstream(&ca, "127.0.0.1");
    let (t, x) = (terminated.port, excluded.port);
    let plain = common::http_upstream(|_, path| format!("plain saw {path}\n"));
    let (dir, settings) = setup(
        "tls-opaque",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{t}", "127.0.0.1:{x}", "127.0.0.1:{plain}"],
                "tlsTerminate": {{"excludeDomains": ["127.0.0.1:{x}"]}}}}}}"#
        ),
    );
    let (out, name) = sandbox(
        &dir,
        &settings,
        &format!(
            "{CURL} -p http://127.0.0.1:{t}/plain-in-tunnel; echo opaque=$?; \
             {CURL} -p http://127.0.0.1:{plain}/plain-host; echo plain=$?; \
             {CURL} -v https://127.0.0.1:{x}/excluded 2>&1; echo excluded=$?"
        ),
    );
    let text = out.ok();
    assert!(!text.contains("opaque=0"), "{text}");
    assert!(terminated.seen.lock().unwrap().is_empty());
    // A non-TLS tunnel to a host that is terminated too: 127.0.0.1:{plain} is terminated
    // (not excluded), so it is refused as well.
    assert!(!text.contains("plain saw"), "{text}");
    // The excluded host's own certificate reached curl, which checked it itself against the
    // bundle (the host's SSL_CERT_FILE is part of it).
    assert!(text.contains("excluded=0"), "{text}");
    assert!(text.contains("issuer: CN=upstream test CA"), "{text}");
    assert_eq!(excluded.seen.lock().unwrap().len(), 1);
    let net = decisions(&dir, &name);
    let refused: Vec<_> = net
        .iter()
        .filter(|e| {
            e["decision"] == "deny"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("does not carry TLS"))
        })
        .collect();
    assert_eq!(refused.len(), 2, "{net:?}");

    // refuseOpaqueTunnels: the excluded host is refused too, and ambiguousRequestTarget
    // "refuse" answers 400 to a path that normalisation changes.
    let settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["127.0.0.1:{t}", "127.0.0.1:{x}"],
            "tlsTerminate": {{"excludeDomains": ["127.0.0.1:{x}"]}},
            "refuseOpaqueTunnels": true, "ambiguousRequestTarget": "refuse"}}}}"#
    ));
    let (out, name) = sandbox(
        &dir,
        &settings,
        &format!(
            "{CURL} -o /dev/null https://127.0.0.1:{x}/excluded; echo excluded=$?; \
             {CURL} --path-as-is -o /dev/null -w 'dots=%{{http_code}}\\n' https://127.0.0.1:{t}/a/../b; \
             {CURL} -o /dev/null -w 'fine=%{{http_code}}\\n' https://127.0.0.1:{t}/b"
        ),
    );
    let text = out.ok();
    assert!(!text.contains("excluded=0"), "{text}");
    assert!(text.contains("dots=400"), "{text}");
    assert!(text.contains("fine=200"), "{text}");
    assert_eq!(excluded.seen.lock().unwrap().len(), 1, "no second request");
    let net = decisions(&dir, &name);
    assert!(
        net.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("network.refuseOpaqueTunnels"))),
        "{net:?}"
    );
}

#[test]
fn the_ca_private_key_is_not_readable_inside() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = upstream(&ca, "127.0.0.1");
    let port = up.port;
    // The per-user CA, in the state directory.
    let (dir, settings) = setup("tls-cakey", &ca, &policy(port, "{}"));
    let ca_file = dir.join("state/ringfence/tls/ca.pem");
    let (out, _) = sandbox(
        &dir,
        &settings,
        &format!(
            "cat '{}'; echo cat=$?; ls '{}'; {CURL} -o /dev/null -w 'code=%{{http_code}}\\n' \
             https://127.0.0.1:{port}/",
            ca_file.display(),
            dir.join("state/ringfence/tls").display()
        ),
    );
    let text = out.ok();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(!text.contains("cat=0"), "{text}");
    assert!(text.contains("code=200"), "{text}");
    // On the host it exists, private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ca_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&ca_file)
        .unwrap()
        .contains("PRIVATE KEY"));

    // The user's own CA (caCertPath, caKeyPath): its key is hidden too, and it signs.
    let mine = TestCa::new("my own CA");
    let cert = dir.write("mine/ca.pem", &mine.cert.pem());
    let key = dir.write("mine/ca.key", &mine.key.serialize_pem());
    let settings = dir.settings(&policy(
        port,
        &format!(
            r#"{{"caCertPath": "{}", "caKeyPath": "{}"}}"#,
            cert.display(),
            key.display()
        ),
    ));
    let (out, _) = sandbox(
        &dir,
        &settings,
        &format!(
            "cat '{}'; echo size=$(wc -c < '{}'); {CURL} -v -o /dev/null https://127.0.0.1:{port}/ 2>&1",
            key.display(),
            key.display()
        ),
    );
    let text = out.ok();
    // Hidden as an empty file.
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(text.contains("size=0"), "{text}");
    assert!(text.contains("issuer: CN=my own CA"), "{text}");
}

#[test]
fn invalid_tls_settings_are_refused_naming_the_key() {
    let ca = TestCa::new("upstream test CA");
    let (dir, settings) = setup(
        "tls-invalid",
        &ca,
        r#"{"network": {"tlsTerminate": {"caCertPath": "/nonexistent/ca.pem", "caKeyPath": "/nonexistent/ca.key"}}}"#,
    );
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("network.tlsTerminate.caCertPath"),
        "{}",
        out.stderr
    );
    let settings = dir.settings(r#"{"network": {"tlsTerminate": {"maxTunnels": 0}}}"#);
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("network.tlsTerminate.maxTunnels"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_masked_credential_stays_outside_and_reaches_only_its_inject_hosts() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let other = upstream(&ca, "127.0.0.1");
    let (a, b) = (api.port, other.port);
    let plain = plain_upstream();
    let c = plain.port;
    let real = format!("real-secret-{}", common::unique_number());
    let (dir, settings) = setup(
        "tls-mask",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}", "127.0.0.1:{b}", "127.0.0.1:{c}"], "tlsTerminate": {{}}}},
                "credentials": {{"envVars": [{{"name": "RF_TEST_TOKEN", "mode": "mask",
                                               "injectHosts": ["127.0.0.1:{a}"]}}]}}}}"#
        ),
    );
    let name = format!("tls-{}", common::unique_number());
    let script = format!(
        "echo \"inside=$RF_TEST_TOKEN\"; env; cat /proc/self/environ; echo; \
         {CURL} -o /dev/null -w 'api=%{{http_code}}\\n' -H \"Authorization: Bearer $RF_TEST_TOKEN\" \
           https://127.0.0.1:{a}/api; \
         {CURL} -w '\\nheader=%{{http_code}}\\n' -H \"Authorization: Bearer $RF_TEST_TOKEN\" \
           https://127.0.0.1:{b}/steal; \
         {CURL} -o /dev/null -w 'cleartext=%{{http_code}}\\n' -H \"Authorization: Bearer $RF_TEST_TOKEN\" \
           http://127.0.0.1:{c}/steal; \
         {CURL} -o /dev/null -w 'cleartexturl=%{{http_code}}\\n' \"http://127.0.0.1:{c}/steal?t=$RF_TEST_TOKEN\"; \
         {CURL} -o /dev/null -w 'cleartextok=%{{http_code}}\\n' http://127.0.0.1:{c}/fine; \
         {CURL} -w '\\nurl=%{{http_code}}\\n' \"https://127.0.0.1:{b}/steal?t=$RF_TEST_TOKEN\"; \
         {CURL} -o /dev/null -w 'plain=%{{http_code}}\\n' https://127.0.0.1:{b}/fine; \
         {CURL} -o /dev/null -w 'body=%{{http_code}}\\n' -d \"t=$RF_TEST_TOKEN&x=1\" https://127.0.0.1:{a}/body; \
         {CURL} -w '\\nbodyleak=%{{http_code}}\\n' -d \"t=$RF_TEST_TOKEN\" https://127.0.0.1:{b}/body; \
         head -c 1500000 /dev/zero | tr '\\0' a > /tmp/big; printf %s \"$RF_TEST_TOKEN\" >> /tmp/big; \
         printf zzz >> /tmp/big; \
         {CURL} -o /dev/null -w 'big=%{{http_code}}\\n' --data-binary @/tmp/big https://127.0.0.1:{a}/big; \
         {CURL} -o /dev/null -w 'bigleak=%{{http_code}}\\n' --data-binary @/tmp/big https://127.0.0.1:{b}/big; \
         {CURL} -o /dev/null -w 'cleartextbody=%{{http_code}}\\n' -d \"t=$RF_TEST_TOKEN\" http://127.0.0.1:{c}/body; \
         {CURL} -o /dev/null -w 'cleartextbodyok=%{{http_code}}\\n' -d 'x=1' http://127.0.0.1:{c}/bodyok; \
         {CURL} -o /dev/null -w 'cleartextbig=%{{http_code}}\\n' --data-binary @/tmp/big http://127.0.0.1:{c}/big; \
         {CURL} -o /dev/null -w 'cleartextchunked=%{{http_code}}\\n' -H 'Transfer-Encoding: chunked' \
           --data-binary @/tmp/big http://127.0.0.1:{c}/chunked; \
         head -c 1500000 /dev/zero | tr '\\0' b > /tmp/bigok; printf zzz >> /tmp/bigok; \
         {CURL} -o /dev/null -w 'cleartextchunkedok=%{{http_code}}\\n' -H 'Transfer-Encoding: chunked' \
           --data-binary @/tmp/bigok http://127.0.0.1:{c}/chunkedok"
    );
    let out = run(rf(&dir).env("RF_TEST_TOKEN", &real).args([
        "run", "--name", &name, "-s", &settings, "--", "sh", "-c", &script,
    ]));
    let text = out.ok();
    assert!(
        !text.contains(&real),
        "the real value is visible inside: {text}"
    );
    let placeholder = text
        .lines()
        .find_map(|l| l.strip_prefix("inside="))
        .unwrap()
        .to_string();
    assert!(placeholder.starts_with("ringfence_placeholder_"), "{text}");
    assert!(text.contains("api=200"), "{text}");
    assert!(text.contains("header=403"), "{text}");
    assert!(text.contains("url=403"), "{text}");
    // On plain HTTP too, in a header field or the URL.
    assert!(text.contains("cleartext=403"), "{text}");
    assert!(text.contains("cleartexturl=403"), "{text}");
    assert!(text.contains("cleartextok=200"), "{text}");
    assert!(text.contains("plain=200"), "{text}");
    assert!(text.contains("body=200"), "{text}");
    assert!(text.contains("bodyleak=403"), "{text}");
    assert!(text.contains("big=200"), "{text}");
    assert!(!text.contains("bigleak=200"), "{text}");
    assert!(text.contains("attempted credential leak"), "{text}");
    // (Requests are shown cut short: one body is 1.5 MB.)
    let short =
        |v: &[String]| -> Vec<String> { v.iter().map(|s| s.chars().take(400).collect()).collect() };
    // In a plain request's body as well: small (read whole first), large, and chunked (both
    // checked as they stream); bodies without a placeholder reach the upstream unchanged.
    for want in [
        "cleartextbody=403",
        "cleartextbodyok=200",
        "cleartextbig=403",
        "cleartextchunked=403",
        "cleartextchunkedok=200",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let plain_seen = plain.seen.lock().unwrap().clone();
    assert!(
        plain_seen.iter().all(|s| !s.contains(&placeholder)),
        "a placeholder reached the plain upstream: {:?}",
        short(&plain_seen)
    );
    let paths: Vec<&str> = plain_seen
        .iter()
        .filter_map(|s| s.split_whitespace().nth(1))
        .collect();
    assert!(
        !paths.contains(&"/body") && !paths.contains(&"/big"),
        "{paths:?}"
    );
    assert!(!paths.contains(&"/chunked"), "{paths:?}");
    let ok = plain_seen
        .iter()
        .find(|s| s.starts_with("POST /bodyok "))
        .unwrap_or_else(|| panic!("{:?}", short(&plain_seen)));
    assert!(ok.ends_with("\r\n\r\nx=1"), "{ok}");
    let chunked_ok = plain_seen
        .iter()
        .find(|s| s.starts_with("POST /chunkedok "))
        .unwrap_or_else(|| panic!("{:?}", short(&plain_seen)));
    let body = chunked_ok.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body.len(), 1_500_003, "{:?}", short(&plain_seen));
    assert!(body.bytes().take(1_500_000).all(|b| b == b'b') && body.ends_with("zzz"));
    // The injectHost got the real value, in place of the placeholder.
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{:?}", short(&seen));
    assert!(
        seen[0].contains(&format!("authorization: Bearer {real}\r\n")),
        "{:?}",
        short(&seen)
    );
    assert!(seen.iter().all(|s| !s.contains(&placeholder)));
    // A small body with its Content-Length adjusted; a large one streamed (chunked).
    assert!(
        seen[1].ends_with(&format!("\r\n\r\nt={real}&x=1")),
        "{:?}",
        short(&seen)
    );
    let len = format!("t={real}&x=1").len();
    assert!(
        seen[1]
            .to_ascii_lowercase()
            .contains(&format!("content-length: {len}\r\n")),
        "{:?}",
        short(&seen)
    );
    assert!(seen[2].starts_with("POST /big "), "{:?}", short(&seen));
    assert!(
        seen[2].ends_with(&format!("a{real}zzz")),
        "{:?}",
        short(&seen)
    );
    // The other host got neither the value nor the placeholder.
    let seen = other.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only /fine: {:?}", short(&seen));
    assert!(seen[0].starts_with("GET /fine "), "{:?}", short(&seen));
    // Both leaks are in the log, which holds no real value.
    let log = common::log_events(common::rf_in(&dir), &name);
    let leaks: Vec<_> = log
        .iter()
        .filter(|e| {
            e["kind"] == "net.decision"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("credential leak"))
        })
        .collect();
    // (Six through the terminated tunnels and plain URL and header, three in plain bodies.)
    assert_eq!(leaks.len(), 9, "{log:?}");
    assert!(!serde_json::to_string(&log).unwrap().contains(&real));

    // Masking without TLS termination is refused, naming the entry.
    let settings = dir
        .settings(r#"{"credentials": {"envVars": [{"name": "RF_TEST_TOKEN", "mode": "mask"}]}}"#);
    let out = run(rf(&dir)
        .env("RF_TEST_TOKEN", &real)
        .args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("credentials.envVars[0].mode: \"mask\" needs network.tlsTerminate"),
        "{}",
        out.stderr
    );
}

#[test]
fn request_rules_decide_on_the_normalised_path() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let git = upstream(&ca, "127.0.0.1");
    let api = upstream(&ca, "127.0.0.1");
    let mtls = upstream(&ca, "127.0.0.1");
    let (g, a, m) = (git.port, api.port, mtls.port);
    let (dir, settings) = setup(
        "tls-rules",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{g}", "127.0.0.1:{a}", "127.0.0.1:{m}"],
                "tlsTerminate": {{"excludeDomains": ["127.0.0.1:{m}"]}},
                "requests": [
                  {{"host": "127.0.0.1:{g}", "method": "POST", "path": "/*/git-receive-pack",
                    "action": "deny", "reason": "pushes are not allowed"}},
                  {{"host": "127.0.0.1:{a}", "method": "GET", "path": "/v1/**", "action": "allow"}},
                  {{"host": "127.0.0.1:{m}", "action": "deny"}}]}}}}"#
        ),
    );
    let c = |label: &str, args: &str| {
        format!("{CURL} --path-as-is -o /dev/null -w '{label}=%{{http_code}}\\n' {args}; ")
    };
    let script = [
        c(
            "push",
            &format!("-X POST https://127.0.0.1:{g}/org/git-receive-pack"),
        ),
        c(
            "fetch",
            &format!("-X POST https://127.0.0.1:{g}/org/git-upload-pack"),
        ),
        c(
            "dots",
            &format!("-X POST 'https://127.0.0.1:{g}/org/x/..//git-receive-pack'"),
        ),
        c(
            "escaped",
            &format!("-X POST https://127.0.0.1:{g}/org/%67it-receive-pack"),
        ),
        c("normal", &format!("'https://127.0.0.1:{g}/org/./y/../z'")),
        c("apiget", &format!("https://127.0.0.1:{a}/v1/items")),
        c(
            "apidelete",
            &format!("-X DELETE https://127.0.0.1:{a}/v1/items"),
        ),
        c("apiother", &format!("https://127.0.0.1:{a}/v2/items")),
        format!("{CURL} -o /dev/null https://127.0.0.1:{m}/; echo excluded=$?"),
    ]
    .concat();
    let (out, name) = sandbox(&dir, &settings, &script);
    let text = out.ok();
    for want in [
        "push=403",
        "fetch=200",
        "dots=403",
        "escaped=403",
        "normal=200",
        "apiget=200",
        "apidelete=403",
        "apiother=403",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("excluded=0"), "{text}");
    let seen = git.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("POST /org/git-upload-pack "),
        "{seen:?}"
    );
    // The normalised path is what the upstream gets.
    assert!(seen[1].starts_with("GET /org/z "), "{seen:?}");
    assert_eq!(api.seen.lock().unwrap().len(), 1);
    assert!(mtls.seen.lock().unwrap().is_empty());
    let net = decisions(&dir, &name);
    let denied: Vec<_> = net
        .iter()
        .filter(|e| e["protocol"] == "https" && e["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 5, "{net:?}");
    assert!(denied[0]["reason"]
        .as_str()
        .unwrap()
        .contains("pushes are not allowed"));
    assert!(denied[0]["rule"]
        .as_str()
        .unwrap()
        .contains("network.requests[0]"));
    assert!(
        net.iter().any(|e| e["protocol"] == "https"
            && e["decision"] == "allow"
            && e["rule"].as_str().unwrap().contains("network.requests[1]")),
        "{net:?}"
    );
    assert!(
        net.iter().any(|e| e["protocol"] == "connect"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("could not be checked"))),
        "{net:?}"
    );

    // Rules without TLS termination are refused.
    let settings =
        dir.settings(r#"{"network": {"requests": [{"host": "github.com", "action": "deny"}]}}"#);
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("network.requests[0]: needs network.tlsTerminate"),
        "{}",
        out.stderr
    );
}

/// An HTTPS server that speaks only HTTP/2 (ALPN h2): answers with what it saw.
fn h2_upstream(ca: &TestCa) -> Upstream {
    use http_body_util::Full;
    let (cert, key) = ca.issue("127.0.0.1");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let text = format!(
                                "h2 upstream saw {:?} {} {}",
                                req.version(),
                                req.method(),
                                req.uri()
                            );
                            log.lock().unwrap().push(text.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                    bytes::Bytes::from(text),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
    });
    Upstream { port, seen }
}

#[test]
fn an_http2_upstream_is_reached_from_http1_and_http2_clients() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = h2_upstream(&ca);
    let port = up.port;
    let (dir, settings) = setup("tls-h2", &ca, &policy(port, "{}"));
    let (out, _) = sandbox(
        &dir,
        &settings,
        &format!(
            "{CURL} --http1.1 https://127.0.0.1:{port}/one; echo; \
             {CURL} --http2 https://127.0.0.1:{port}/two?x=1; echo"
        ),
    );
    let text = out.ok();
    assert!(
        text.contains(&format!(
            "h2 upstream saw HTTP/2.0 GET https://127.0.0.1:{port}/one"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "h2 upstream saw HTTP/2.0 GET https://127.0.0.1:{port}/two?x=1"
        )),
        "{text}"
    );
    assert_eq!(up.seen.lock().unwrap().len(), 2);
}

#[test]
fn a_websocket_upgrade_passes_after_the_decision() {
    if !need_curl() {
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists() {
        common::skip("/usr/bin/python3 is not installed");
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = upstream(&ca, "127.0.0.1");
    let port = up.port;
    let (dir, settings) = setup("tls-ws", &ca, &policy(port, "{}"));
    // A client by hand: CONNECT, TLS against the sandbox's bundle, the upgrade, then bytes.
    let client = dir.write(
        "ws.py",
        &format!(
            r#"import os, socket, ssl
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
assert b" 200 " in s.recv(4096)
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
ctx.set_alpn_protocols(["http/1.1"])
t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
print("issuer=" + repr(t.getpeercert()["issuer"]))
t.sendall(b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += t.recv(4096)
print(head.split(b"\r\n")[0].decode())
t.sendall(b"frames after the upgrade")
print("echo=" + t.recv(4096).decode())
"#
        ),
    );
    let (out, _) = sandbox(
        &dir,
        &settings,
        &format!("/usr/bin/python3 '{}'", client.display()),
    );
    let text = out.ok();
    // Terminated: the certificate is the proxy's.
    assert!(text.contains("ringfence TLS termination CA"), "{text}");
    assert!(text.contains("HTTP/1.1 101"), "{text}");
    assert!(text.contains("echo=frames after the upgrade"), "{text}");
    let seen = up.seen.lock().unwrap().clone();
    assert!(
        seen[0].to_ascii_lowercase().contains("upgrade: websocket"),
        "{seen:?}"
    );
}

#[test]
fn credentials_inject_sets_a_header_only_toward_its_host() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let other = upstream(&ca, "127.0.0.1");
    let (a, b) = (api.port, other.port);
    let real = format!("injected-{}", common::unique_number());
    let (dir, settings) = setup(
        "tls-inject",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}", "127.0.0.1:{b}"], "tlsTerminate": {{}}}},
                "credentials": {{"inject": [{{"host": "127.0.0.1:{a}", "header": "Authorization",
                                              "value": "Bearer ${{env:RF_INJECT_TOKEN}}"}}]}}}}"#
        ),
    );
    let (out, _) = {
        let name = format!("tls-{}", common::unique_number());
        let script = format!(
            "env; {CURL} -o /dev/null -H 'Authorization: Bearer mine' https://127.0.0.1:{a}/; \
             {CURL} -o /dev/null https://127.0.0.1:{b}/"
        );
        let out = run(rf(&dir).env("RF_INJECT_TOKEN", &real).args([
            "run", "--name", &name, "-s", &settings, "--", "sh", "-c", &script,
        ]));
        (out, name)
    };
    let text = out.ok();
    assert!(!text.contains(&real), "the value is visible inside: {text}");
    assert!(
        !text.contains("RF_INJECT_TOKEN"),
        "the variable is passed in: {text}"
    );
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains(&format!("authorization: Bearer {real}\r\n")),
        "{seen:?}"
    );
    assert!(!seen[0].contains("Bearer mine"), "{seen:?}");
    let seen = other.seen.lock().unwrap().clone();
    assert!(
        !seen[0].to_ascii_lowercase().contains("authorization"),
        "{seen:?}"
    );

    // An unset variable stops the run, naming the entry.
    let out = run(rf(&dir)
        .env_remove("RF_INJECT_TOKEN")
        .args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("credentials.inject[0].value"),
        "{}",
        out.stderr
    );
}

/// `ringfence proxy --reverse URL --listen 127.0.0.1:0` with `settings`, started; returns the
/// child and the address it listens on (from its "listening on" line).
// The caller kills and waits for the child.
#[allow(clippy::zombie_processes)]
fn reverse_proxy(dir: &TestDir, settings: &str, url: &str) -> (std::process::Child, String) {
    let mut child = rf(dir)
        .env("RF_REV_TOKEN", "token-outside")
        .env("RF_REV_KEY", "key-outside")
        .args([
            "proxy",
            "--reverse",
            url,
            "--listen",
            "127.0.0.1:0",
            "-s",
            settings,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut lines = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("the proxy stopped: {lines}");
        }
        lines.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            // The rest of stderr is drained so that the proxy never blocks on it.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut err, &mut std::io::sink());
            });
            // The masked variable's placeholder was printed before.
            return (child, format!("{addr} {lines}"));
        }
    }
}

#[test]
fn the_reverse_proxy_adds_credentials_and_applies_request_rules() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let a = api.port;
    let (dir, settings) = setup(
        "tls-reverse",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}"],
                "requests": [{{"host": "127.0.0.1:{a}", "method": "POST", "path": "/push/**",
                               "action": "deny", "reason": "no pushes here"}}]}},
                "credentials": {{
                  "inject": [{{"host": "127.0.0.1:{a}", "header": "Authorization",
                               "value": "Bearer ${{env:RF_REV_TOKEN}}"}}],
                  "envVars": [{{"name": "RF_REV_KEY", "mode": "mask",
                                "injectHosts": ["127.0.0.1:{a}"]}}]}}}}"#
        ),
    );
    let (mut child, started) = reverse_proxy(&dir, &settings, &format!("https://127.0.0.1:{a}"));
    let (addr, lines) = started.split_once(' ').unwrap();
    let placeholder = lines
        .split("RF_REV_KEY=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_string();
    assert!(placeholder.starts_with("ringfence_placeholder_"), "{lines}");
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["--noproxy", "*", "-sS", "-w", "\ncode=%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let got = curl(&[
        "-H",
        "Authorization: Bearer mine",
        &format!("http://{addr}/v1/models"),
    ]);
    assert!(got.ends_with("code=200"), "{got}");
    let got = curl(&[
        "-H",
        &format!("x-api-key: {placeholder}"),
        &format!("http://{addr}/v1/messages"),
    ]);
    assert!(got.ends_with("code=200"), "{got}");
    let got = curl(&["-X", "POST", &format!("http://{addr}/push/x")]);
    assert!(got.ends_with("code=403"), "{got}");
    assert!(got.contains("no pushes here"), "{got}");
    // A forward-proxy request (absolute form) is not redirected to the upstream.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    child.kill().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let _ = child.wait();

    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("GET /v1/models HTTP/1.1"), "{seen:?}");
    let first = seen[0].to_ascii_lowercase();
    assert!(
        first.contains(&format!("host: 127.0.0.1:{a}\r\n")),
        "{seen:?}"
    );
    assert!(
        seen[0].contains("authorization: Bearer token-outside\r\n"),
        "{seen:?}"
    );
    assert!(!seen[0].contains("Bearer mine"), "{seen:?}");
    assert!(seen[1].contains("x-api-key: key-outside\r\n"), "{seen:?}");
    assert!(seen.iter().all(|s| !s.contains(&placeholder)), "{seen:?}");
    // Every connection and the rule's refusal are decision lines; no value is in them.
    assert!(stdout.contains("\"protocol\":\"reverse\""), "{stdout}");
    assert!(stdout.contains("no pushes here"), "{stdout}");
    assert!(!stdout.contains("token-outside") && !stdout.contains("key-outside"));
}

#[test]
fn the_reverse_proxy_refuses_a_bad_upstream_certificate_and_bad_options() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let other = TestCa::new("a CA nobody trusts");
    let bad = upstream(&other, "127.0.0.1");
    let b = bad.port;
    let (dir, settings) = setup(
        "tls-reverse-bad",
        &ca,
        &format!(r#"{{"network": {{"allowedDomains": ["127.0.0.1:{b}"]}}}}"#),
    );
    let (mut child, started) = reverse_proxy(&dir, &settings, &format!("https://127.0.0.1:{b}"));
    let addr = started.split_once(' ').unwrap().0.to_string();
    let out = Command::new("curl")
        .args(["--noproxy", "*", "-sS", "-w", "\ncode=%{http_code}"])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(got.ends_with("code=502"), "{got}");
    assert!(got.contains("refused"), "{got}");
    child.kill().unwrap();
    let _ = child.wait();
    assert!(bad.seen.lock().unwrap().is_empty());

    // An upstream the policy does not allow gets 403.
    let (dir2, denied) = setup(
        "tls-reverse-deny",
        &ca,
        r#"{"network": {"allowedDomains": ["example.org"]}}"#,
    );
    let (mut child, started) = reverse_proxy(&dir2, &denied, &format!("https://127.0.0.1:{b}"));
    let addr = started.split_once(' ').unwrap().0.to_string();
    let out = Command::new("curl")
        .args(["--noproxy", "*", "-sS", "-w", "\ncode=%{http_code}"])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(got.ends_with("code=403"), "{got}");
    child.kill().unwrap();
    let _ = child.wait();

    for (args, named) in [
        (
            vec!["--reverse", "http://127.0.0.1:1", "--listen", "127.0.0.1:0"],
            "--reverse",
        ),
        (
            vec![
                "--reverse",
                "https://127.0.0.1:1/v1",
                "--listen",
                "127.0.0.1:0",
            ],
            "--reverse",
        ),
        (
            vec!["--reverse", "https://127.0.0.1:1", "--listen", "0.0.0.0:0"],
            "--listen",
        ),
        (
            vec!["--allow-remote", "--listen", "127.0.0.1:0"],
            "--allow-remote",
        ),
    ] {
        let out = run(rf(&dir).arg("proxy").args(&args).args(["-s", &settings]));
        assert_eq!(out.code(), 125, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{args:?}: {}", out.stderr);
    }
    // TLS termination has no meaning for a reverse proxy: refused, not ignored.
    let tls = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["127.0.0.1:{b}"], "tlsTerminate": {{}}}}}}"#
    ));
    let out = run(rf(&dir).args([
        "proxy",
        "--reverse",
        &format!("https://127.0.0.1:{b}"),
        "--listen",
        "127.0.0.1:0",
        "-s",
        &tls,
    ]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("network.tlsTerminate"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_masked_file_shows_placeholders_that_reach_only_its_inject_hosts() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let other = upstream(&ca, "127.0.0.1");
    let (a, b) = (api.port, other.port);
    let n = common::unique_number();
    let (token, pass) = (format!("tok-{n}-real"), format!("pw-{n}-real"));
    let (dir, _) = setup("tls-maskfile", &ca, "{}");
    dir.write("home/token", &format!("{token}\n"));
    dir.write(
        "home/netrc",
        &format!("machine x login me password {pass}\n# copy: {pass}\n"),
    );
    dir.write("home/empty-match", "nothing to see\n");
    dir.write("home/strict", "nothing either\n");
    // In a credential store that is hidden by default: shown alone in the emptied directory.
    dir.mkdir("home/.aws");
    dir.write(
        "home/.aws/credentials",
        &format!("[default]\nkey = {pass}\n"),
    );
    dir.write("home/.aws/config", "other\n");
    let settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}", "127.0.0.1:{b}"], "tlsTerminate": {{}}}},
            "credentials": {{"files": [
              {{"path": "{home}/token", "mode": "mask", "injectHosts": ["127.0.0.1:{a}"]}},
              {{"path": "{home}/netrc", "mode": "mask", "extract": "password (\\S+)",
                "maskDuplicates": true, "injectHosts": ["127.0.0.1:{a}"]}},
              {{"path": "{home}/empty-match", "mode": "mask", "extract": "password (\\S+)"}},
              {{"path": "{home}/strict", "mode": "mask", "extract": "password (\\S+)",
                "onExtractNoMatch": "deny"}},
              {{"path": "{home}/.aws/credentials", "mode": "mask", "extract": "key = (\\S+)"}}]}}}}"#,
        home = dir.s("home"),
    ));
    let home = dir.s("home");
    let script = format!(
        "cat {home}/token {home}/netrc; echo; cat {home}/empty-match; \
         echo strict=$(cat {home}/strict | wc -c); cat {home}/.aws/credentials; \
         ls {home}/.aws; \
         echo writes=$(echo x 2>/dev/null > {home}/token && echo yes || echo no); \
         {CURL} -o /dev/null -w 'api=%{{http_code}}\\n' -H \"Authorization: Bearer $(cat {home}/token)\" \
           https://127.0.0.1:{a}/api; \
         {CURL} -o /dev/null -w 'netrc=%{{http_code}}\\n' --data-binary @{home}/netrc https://127.0.0.1:{a}/netrc; \
         {CURL} -o /dev/null -w 'leak=%{{http_code}}\\n' -H \"Authorization: Bearer $(cat {home}/token)\" \
           https://127.0.0.1:{b}/steal"
    );
    let name = format!("tls-{n}");
    let out = run(rf(&dir).args([
        "run", "--name", &name, "-s", &settings, "--", "sh", "-c", &script,
    ]));
    let text = out.ok();
    assert!(!text.contains(&token) && !text.contains(&pass), "{text}");
    assert!(
        text.contains("machine x login me password ringfence_placeholder_"),
        "{text}"
    );
    assert!(text.contains("# copy: ringfence_placeholder_"), "{text}");
    // No match with "warn" (the default): left as it is, with a warning; with "deny": hidden.
    assert!(text.contains("nothing to see"), "{text}");
    assert!(out.stderr.contains("UNPROTECTED"), "{}", out.stderr);
    assert!(text.contains("strict=0"), "{text}");
    assert!(
        text.contains("[default]\nkey = ringfence_placeholder_"),
        "{text}"
    );
    assert!(!text.contains("config"), "{text}");
    assert!(text.contains("writes=no"), "{text}");
    assert!(text.contains("api=200"), "{text}");
    assert!(text.contains("netrc=200"), "{text}");
    assert!(text.contains("leak=403"), "{text}");
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains(&format!("authorization: Bearer {token}\r\n")),
        "{seen:?}"
    );
    assert!(
        seen[1].ends_with(&format!("password {pass}\n# copy: {pass}\n")),
        "{seen:?}"
    );
    assert!(other.seen.lock().unwrap().is_empty());
    // The real files are untouched on the host.
    assert_eq!(
        std::fs::read_to_string(dir.join("home/token")).unwrap(),
        format!("{token}\n")
    );

    // "error" stops the run, naming the entry.
    let settings = dir.settings(&format!(
        r#"{{"network": {{"tlsTerminate": {{}}}},
            "credentials": {{"files": [{{"path": "{home}/strict", "mode": "mask",
              "extract": "password (\\S+)", "onExtractNoMatch": "error"}}]}}}}"#
    ));
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("credentials.files[0].extract matched nothing"),
        "{}",
        out.stderr
    );
}

/// Checks the SigV4 signature of a request the upstream fixture recorded (head and body)
/// against `secret`, as AWS does for simple requests (no path escapes, plain query); returns
/// the key id it names, or why it does not verify.
fn verify_sigv4(request: &str, secret: &str) -> Result<String, String> {
    use ring::{digest, hmac};
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mac = |k: &[u8], d: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), d.as_bytes())
            .as_ref()
            .to_vec()
    };
    let (head, body) = request.split_once("\r\n\r\n").ok_or("no head")?;
    let mut lines = head.split("\r\n");
    let start: Vec<&str> = lines.next().ok_or("empty")?.split(' ').collect();
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .ok_or(format!("no {n}"))
    };
    let auth = get("authorization")?;
    let part = |name: &str| -> Result<String, String> {
        let at = auth.find(&format!("{name}=")).ok_or(name.to_string())? + name.len() + 1;
        Ok(auth[at..].split([',', ' ']).next().unwrap().to_string())
    };
    let cred = part("Credential")?;
    let scope: Vec<&str> = cred.split('/').collect();
    let signed = part("SignedHeaders")?;
    let (path, query) = start[1].split_once('?').unwrap_or((start[1], ""));
    let mut q: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    q.sort();
    let header_lines: String = signed
        .split(';')
        .map(|n| format!("{n}:{}\n", get(n).unwrap_or_default()))
        .collect();
    // aws-chunked: the request signs the STREAMING- value; each chunk signs its data in a
    // chain from the request's signature (checked below).
    let streaming = get("x-amz-content-sha256")
        .ok()
        .filter(|v| v == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
    let payload = match &streaming {
        Some(v) => v.clone(),
        None => hex(digest::digest(&digest::SHA256, body.as_bytes()).as_ref()),
    };
    let canonical = format!(
        "{}\n{path}\n{}\n{header_lines}\n{signed}\n{payload}",
        start[0],
        q.join("&")
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        get("x-amz-date")?,
        scope[1..].join("/"),
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut k = mac(format!("AWS4{secret}").as_bytes(), scope[1]);
    for s in &scope[2..] {
        k = mac(&k, s);
    }
    let want = hex(&mac(&k, &to_sign));
    if part("Signature")? != want {
        return Err(format!("the signature does not verify: {canonical:?}"));
    }
    if streaming.is_some() {
        let empty = hex(digest::digest(&digest::SHA256, b"").as_ref());
        let mut previous = want;
        let mut rest = body;
        loop {
            let (head, after) = rest.split_once("\r\n").ok_or("a chunk head")?;
            let (size, sig) = head
                .split_once(";chunk-signature=")
                .ok_or("a chunk signature")?;
            let size = usize::from_str_radix(size, 16).map_err(|e| e.to_string())?;
            let data = &after[..size];
            let to_sign = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous}\n{empty}\n{}",
                get("x-amz-date")?,
                scope[1..].join("/"),
                hex(digest::digest(&digest::SHA256, data.as_bytes()).as_ref())
            );
            previous = hex(&mac(&k, &to_sign));
            if sig != previous {
                return Err(format!("chunk signature {sig} does not verify"));
            }
            rest = &after[size + 2..];
            if size == 0 {
                break;
            }
        }
        if get("x-amz-decoded-content-length")? != "11" {
            return Err("x-amz-decoded-content-length".into());
        }
    }
    Ok(scope[0].to_string())
}

/// Checks the SigV4 signature in the query of a presigned S3 URL the upstream fixture recorded
/// against `secret` (UNSIGNED-PAYLOAD, only `host` signed, plain values); returns the key id.
fn verify_presigned(request: &str, secret: &str) -> Result<String, String> {
    use ring::{digest, hmac};
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mac = |k: &[u8], d: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), d.as_bytes())
            .as_ref()
            .to_vec()
    };
    let line = request.lines().next().ok_or("empty")?;
    let target = line.split(' ').nth(1).ok_or("no target")?;
    let host = request
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .ok_or("no host")?;
    let (path, query) = target.split_once('?').ok_or("no query")?;
    let mut sig = None;
    let mut q: Vec<&str> = Vec::new();
    for p in query.split('&') {
        match p.strip_prefix("X-Amz-Signature=") {
            Some(s) => sig = Some(s),
            None => q.push(p),
        }
    }
    q.sort();
    let param = |n: &str| {
        q.iter()
            .find_map(|p| p.strip_prefix(&format!("{n}=")))
            .ok_or(format!("no {n}"))
    };
    let cred = param("X-Amz-Credential")?.replace("%2F", "/");
    let scope: Vec<&str> = cred.split('/').collect();
    let canonical = format!(
        "GET\n{path}\n{}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        q.join("&")
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        param("X-Amz-Date")?,
        scope[1..].join("/"),
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut k = mac(format!("AWS4{secret}").as_bytes(), scope[1]);
    for s in &scope[2..] {
        k = mac(&k, s);
    }
    if sig == Some(hex(&mac(&k, &to_sign)).as_str()) {
        Ok(scope[0].to_string())
    } else {
        Err(format!("the signature does not verify: {canonical:?}"))
    }
}

#[test]
fn sigv4_requests_signed_with_a_masked_key_are_signed_again_with_the_real_one() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let aws = upstream(&ca, "127.0.0.1");
    let a = aws.port;
    let n = common::unique_number();
    let (key_id, secret, token) = (
        format!("AKIAREAL{n}"),
        format!("real/secret+{n}"),
        format!("token-{n}"),
    );
    let (dir, settings) = setup(
        "tls-sigv4",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}"], "tlsTerminate": {{}}}},
                "credentials": {{"envVars": [
                  {{"name": "MY_KEY_ID", "mode": "mask"}},
                  {{"name": "MY_SECRET", "mode": "mask"}},
                  {{"name": "MY_TOKEN", "mode": "mask"}}],
                  "awsPairs": [{{"accessKeyIdVar": "MY_KEY_ID", "secretAccessKeyVar": "MY_SECRET",
                                 "sessionTokenVar": "MY_TOKEN"}}]}}}}"#
        ),
    );
    let sig = "--aws-sigv4 aws:amz:us-east-1:execute-api --user \"$MY_KEY_ID:$MY_SECRET\"";
    let script = format!(
        "echo id=$MY_KEY_ID; \
         {CURL} -o /dev/null -w 'get=%{{http_code}}\\n' {sig} 'https://127.0.0.1:{a}/v1/items?b=2&a=1'; \
         {CURL} -o /dev/null -w 'post=%{{http_code}}\\n' {sig} -d 'x=1' https://127.0.0.1:{a}/v1/items; \
         {CURL} -o /dev/null -w 'presigned=%{{http_code}}\\n' \
           \"https://127.0.0.1:{a}/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=$MY_KEY_ID%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Security-Token=$MY_TOKEN&X-Amz-Signature=00\"; \
         {CURL} -o /dev/null -w 'undated=%{{http_code}}\\n' \
           \"https://127.0.0.1:{a}/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=$MY_KEY_ID%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-SignedHeaders=host&X-Amz-Signature=00\"; \
         printf 'b;chunk-signature=%064d\\r\\nhello world\\r\\n0;chunk-signature=%064d\\r\\n\\r\\n' 0 0 >/tmp/chunked; \
         {CURL} --http1.1 -o /dev/null -w 'streaming=%{{http_code}}\\n' {sig} -H 'x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD' \
           -H 'Content-Encoding: aws-chunked' -H 'x-amz-decoded-content-length: 11' --data-binary @/tmp/chunked https://127.0.0.1:{a}/up; \
         {CURL} --http1.1 -o /dev/null -w 'trailer=%{{http_code}}\\n' {sig} -H 'x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER' -d 'x' https://127.0.0.1:{a}/up"
    );
    let name = format!("tls-{}", common::unique_number());
    let out = run(rf(&dir)
        .env("MY_KEY_ID", &key_id)
        .env("MY_SECRET", &secret)
        .env("MY_TOKEN", &token)
        .args([
            "run", "--name", &name, "-s", &settings, "--", "sh", "-c", &script,
        ]));
    let text = out.ok();
    assert!(!text.contains(&key_id), "{text}");
    assert!(text.contains("id=ringfence_placeholder_"), "{text}");
    assert!(text.contains("get=200"), "{text}");
    assert!(text.contains("post=200"), "{text}");
    // A presigned URL is signed again in its query.
    assert!(text.contains("presigned=200"), "{text}");
    // An aws-chunked upload is framed again, every chunk signed.
    assert!(text.contains("streaming=200"), "{text}");
    // Shapes that cannot be re-signed are refused by default (srt's "deny"), and the log
    // says which. The trailer upload goes over HTTP/1.1: over HTTP/2 a refusal that arrives
    // while curl still sends its body can reach it as a stream reset instead of the 403 (the
    // request is refused either way; the upstream's record below shows it never arrived).
    assert!(text.contains("undated=403"), "{text}");
    assert!(text.contains("trailer=403"), "{text}");
    let reasons: Vec<String> = decisions(&dir, &name)
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(
            "streaming request (x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER)"
        )),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("presigned URL without X-Amz-Date")),
        "{reasons:?}"
    );
    let mut seen = aws.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let presigned = seen.remove(2);
    assert_eq!(
        verify_presigned(&presigned, &secret).as_deref(),
        Ok(key_id.as_str()),
        "{presigned}"
    );
    assert!(verify_presigned(&presigned, "placeholder").is_err());
    assert!(
        presigned.contains(&format!("X-Amz-Security-Token={token}&")),
        "{presigned}"
    );
    assert!(!presigned.contains("ringfence_placeholder_"), "{presigned}");
    for req in &seen {
        assert_eq!(
            verify_sigv4(req, &secret).as_deref(),
            Ok(key_id.as_str()),
            "{req}"
        );
        // The placeholder secret does not verify it: the signature is really the real key's.
        assert!(verify_sigv4(req, "placeholder").is_err());
        assert!(
            req.contains(&format!("x-amz-security-token: {token}\r\n")),
            "{req}"
        );
        assert!(!req.contains("ringfence_placeholder_"), "{req}");
    }
    assert!(seen[1].ends_with("\r\n\r\nx=1"), "{seen:?}");
    assert!(
        seen[2].contains("\r\n\r\nb;chunk-signature=") && seen[2].contains("\r\nhello world\r\n0;"),
        "{seen:?}"
    );

    // A pair member that is not a masked variable is refused, naming the slot.
    let bad = dir.settings(
        r#"{"network": {"tlsTerminate": {}}, "credentials": {
             "envVars": [{"name": "K", "mode": "mask"}],
             "awsPairs": [{"accessKeyIdVar": "K", "secretAccessKeyVar": "S"}]}}"#,
    );
    let out = run(rf(&dir).args(["run", "-s", &bad, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("credentials.awsPairs[0].secretAccessKeyVar"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_variable_masked_by_extract_keeps_its_text_around_the_placeholder() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let other = upstream(&ca, "127.0.0.1");
    let (a, b) = (api.port, other.port);
    let n = common::unique_number();
    let dsn = format!("postgres://me:pw{n}secret@db.internal/app");
    let (dir, settings) = setup(
        "tls-mask-extract",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}", "127.0.0.1:{b}"], "tlsTerminate": {{}}}},
                "credentials": {{"envVars": [
                  {{"name": "RF_DSN", "mode": "mask", "extract": "://[^:]+:([^@]+)@",
                    "injectHosts": ["127.0.0.1:{a}"]}},
                  {{"name": "RF_NOMATCH", "mode": "mask", "extract": "token=(\\w+)"}},
                  {{"name": "RF_STRICT", "mode": "mask", "extract": "token=(\\w+)",
                    "onExtractNoMatch": "deny"}}]}}}}"#
        ),
    );
    let script = format!(
        "echo \"dsn=$RF_DSN\"; echo \"nomatch=$RF_NOMATCH\"; echo \"strict=${{RF_STRICT-unset}}\"; \
         {CURL} -o /dev/null -w 'api=%{{http_code}}\\n' -H \"X-Dsn: $RF_DSN\" https://127.0.0.1:{a}/; \
         {CURL} -o /dev/null -w 'leak=%{{http_code}}\\n' -H \"X-Dsn: $RF_DSN\" https://127.0.0.1:{b}/"
    );
    let out = run(rf(&dir)
        .env("RF_DSN", &dsn)
        .env("RF_NOMATCH", "plain")
        .env("RF_STRICT", "plain")
        .args(["run", "-s", &settings, "--", "sh", "-c", &script]));
    let text = out.ok();
    assert!(!text.contains(&format!("pw{n}secret")), "{text}");
    assert!(
        text.contains("dsn=postgres://me:ringfence_placeholder_"),
        "{text}"
    );
    assert!(text.contains("@db.internal/app"), "{text}");
    assert!(text.contains("nomatch=plain"), "{text}");
    assert!(out.stderr.contains("UNPROTECTED"), "{}", out.stderr);
    assert!(text.contains("strict=unset"), "{text}");
    assert!(text.contains("api=200"), "{text}");
    assert!(text.contains("leak=403"), "{text}");
    let seen = api.seen.lock().unwrap().clone();
    assert!(seen[0].contains(&format!("x-dsn: {dsn}\r\n")), "{seen:?}");
    assert!(other.seen.lock().unwrap().is_empty());
}

#[test]
fn decoded_jwts_are_shown_as_jwt_shaped_placeholders() {
    if !need_curl() {
        return;
    }
    const REAL: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                        eyJzdWIiOiJ1c2VyLTEiLCJlbWFpbCI6InJlYWxAZXhhbXBsZS5jb20ifQ.cmVhbHNpZw";
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let a = api.port;
    let (dir, _) = setup("tls-jwt", &ca, "{}");
    dir.write(
        "home/token.json",
        &format!("{{\"access_token\": \"{REAL}\", \"n\": 1}}\n"),
    );
    let home = dir.s("home");
    let settings = dir.settings(&format!(
        r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}"], "tlsTerminate": {{}}}},
            "credentials": {{
              "envVars": [{{"name": "RF_JWT", "mode": "mask", "decode": "jwt"}},
                          {{"name": "RF_NOT_JWT", "mode": "mask", "decode": "jwt"}}],
              "files": [{{"path": "{home}/token.json", "mode": "mask", "decode": "jwt",
                          "maskClaims": ["email"]}}]}}}}"#
    ));
    let script = format!(
        "echo \"env=$RF_JWT\"; echo \"notjwt=$RF_NOT_JWT\"; cat {home}/token.json; \
         T=$(sed 's/.*\"access_token\": \"\\([^\"]*\\)\".*/\\1/' {home}/token.json); \
         {CURL} -o /dev/null -w 'env=%{{http_code}}\\n' -H \"Authorization: Bearer $RF_JWT\" https://127.0.0.1:{a}/e; \
         {CURL} -o /dev/null -w 'file=%{{http_code}}\\n' -H \"Authorization: Bearer $T\" https://127.0.0.1:{a}/f"
    );
    let out = run(rf(&dir)
        .env("RF_JWT", REAL)
        .env("RF_NOT_JWT", "plain")
        .args(["run", "-s", &settings, "--", "sh", "-c", &script]));
    let text = out.ok();
    let payload = REAL.split('.').nth(1).unwrap();
    assert!(!text.contains(payload), "{text}");
    let env = text
        .lines()
        .find_map(|l| l.strip_prefix("env=eyJ"))
        .unwrap();
    assert_eq!(env.split('.').count(), 3, "{text}");
    assert!(text.contains("notjwt=plain"), "{text}");
    assert!(out.stderr.contains("UNPROTECTED"), "{}", out.stderr);
    // The file keeps its form and the token's header; its payload is another.
    assert!(
        text.contains("{\"access_token\": \"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
        "{text}"
    );
    assert!(text.contains("\", \"n\": 1}"), "{text}");
    assert!(
        text.contains("env=200") && text.contains("file=200"),
        "{text}"
    );
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert!(
            s.contains(&format!("authorization: Bearer {REAL}\r\n")),
            "{seen:?}"
        );
    }
}

/// The installed srt (`RINGFENCE_SRT_DIR`, which scripts/test sets) and what its sandbox needs,
/// or a counted skip.
fn srt() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("RINGFENCE_SRT_DIR").map(std::path::PathBuf::from) {
        Some(d) if d.join("dist/cli.js").is_file() => d,
        _ => {
            common::skip("RINGFENCE_SRT_DIR does not name an installed srt (dist/cli.js)");
            return None;
        }
    };
    for tool in ["node", "bwrap", "socat", "rg"] {
        if !common::have(tool) {
            common::skip(&format!("{tool} is not installed (srt's sandbox needs it)"));
            return None;
        }
    }
    Some(dir)
}

/// One srt 0.0.83 settings file with `tlsTerminate` and a masked variable, run under srt and
/// under ringfence against the same two HTTPS upstreams (their own test CA, which each host
/// side trusts: srt's Node through NODE_EXTRA_CA_CERTS, ringfence through SSL_CERT_FILE).
/// Alike: the sandbox holds a placeholder, never the value, and the injectHost receives the
/// real value in its place. Different on purpose (README, "TLS termination"): srt sends the
/// placeholder on to a host outside injectHosts as it is (its `fake_value_...` reaches that
/// host, in the header and the URL), where ringfence refuses the request with 403 and logs it
/// as an attempted credential leak, so the other host receives nothing.
#[test]
fn an_srt_settings_file_with_tls_terminate_and_a_mask_behaves_as_under_srt() {
    if !need_curl() {
        return;
    }
    let Some(srt) = srt() else { return };
    let ca = TestCa::new("upstream test CA");
    let api = upstream(&ca, "127.0.0.1");
    let other = upstream_on(&ca, "127.0.0.2", "127.0.0.2");
    let (a, b) = (api.port, other.port);
    let real = format!("real-secret-{}", common::unique_number());
    // srt's own form: injectHosts are host patterns without a port; srt wants the filesystem
    // lists present.
    let (dir, settings) = setup(
        "tls-srt-side",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{a}", "127.0.0.2:{b}"], "deniedDomains": [],
                              "tlsTerminate": {{}}}},
                "filesystem": {{"denyRead": [], "allowWrite": [], "denyWrite": []}},
                "credentials": {{"envVars": [{{"name": "RF_TEST_TOKEN", "mode": "mask",
                                               "injectHosts": ["127.0.0.1"]}}]}}}}"#
        ),
    );
    let script = format!(
        "echo \"inside=$RF_TEST_TOKEN\"; \
         {CURL} -o /dev/null -w 'api=%{{http_code}}\\n' -H \"Authorization: Bearer $RF_TEST_TOKEN\" \
           https://127.0.0.1:{a}/api; \
         {CURL} -o /dev/null -w 'other=%{{http_code}}\\n' -H \"Authorization: Bearer $RF_TEST_TOKEN\" \
           \"https://127.0.0.2:{b}/other?t=$RF_TEST_TOKEN\""
    );
    let ca_file = dir.s("upstream-ca.pem");
    let check_api = |who: &str, text: &str| -> String {
        assert!(
            !text.contains(&real),
            "{who}: the real value is visible inside: {text}"
        );
        assert!(text.contains("api=200"), "{who}: {text}");
        let seen = std::mem::take(&mut *api.seen.lock().unwrap());
        assert_eq!(seen.len(), 1, "{who}: {seen:?}");
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains(&format!("authorization: bearer {real}\r\n")),
            "{who}: {seen:?}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix("inside="))
            .unwrap()
            .to_string()
    };

    // srt.
    let out = run(Command::new("node")
        .arg(srt.join("dist/cli.js"))
        .args(["-s", &settings, "--", "/bin/sh", "-c", &script])
        .current_dir(&dir.path)
        .env("HOME", dir.s("home"))
        .env("RF_TEST_TOKEN", &real)
        .env("NODE_EXTRA_CA_CERTS", &ca_file)
        .stdin(std::process::Stdio::null()));
    let text = out.ok().to_string();
    let sentinel = check_api("srt", &text);
    assert!(sentinel.starts_with("fake_value_"), "srt: {text}");
    assert!(text.contains("other=200"), "srt: {text}");
    let seen = std::mem::take(&mut *other.seen.lock().unwrap());
    assert_eq!(seen.len(), 1, "srt: {seen:?}");
    assert!(
        seen[0].starts_with(&format!("GET /other?t={sentinel} ")),
        "srt: {seen:?}"
    );
    assert!(
        seen[0].contains(&format!("Bearer {sentinel}\r\n")),
        "srt: {seen:?}"
    );
    assert!(!seen[0].contains(&real), "srt: {seen:?}");

    // ringfence, the same file.
    let name = format!("tls-{}", common::unique_number());
    let out = run(rf(&dir)
        .env("RF_TEST_TOKEN", &real)
        .env("NODE_EXTRA_CA_CERTS", &ca_file)
        .args([
            "run", "--name", &name, "-s", &settings, "--", "/bin/sh", "-c", &script,
        ]));
    let text = out.ok().to_string();
    let placeholder = check_api("ringfence", &text);
    assert!(
        placeholder.starts_with("ringfence_placeholder_"),
        "ringfence: {text}"
    );
    assert!(text.contains("other=403"), "ringfence: {text}");
    assert!(
        other.seen.lock().unwrap().is_empty(),
        "ringfence: the other host was reached"
    );
    let leaks = decisions(&dir, &name)
        .into_iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("credential leak"))
        })
        .count();
    assert_eq!(leaks, 1, "ringfence: {text}");
}

/// `network.ambiguousRequestTarget: "asSpelled"` (srt's meaning): a path goes upstream as the
/// client spelled it, and the request rules must hold for that spelling and for its
/// normalised form, so a deny of either reading refuses it.
#[test]
fn as_spelled_paths_are_forwarded_as_spelled_and_judged_on_both_readings() {
    if !need_curl() {
        return;
    }
    let ca = TestCa::new("upstream test CA");
    let up = upstream(&ca, "127.0.0.1");
    let g = up.port;
    let (dir, settings) = setup(
        "tls-spelled",
        &ca,
        &format!(
            r#"{{"network": {{"allowedDomains": ["127.0.0.1:{g}"], "tlsTerminate": {{}},
                "ambiguousRequestTarget": "asSpelled",
                "requests": [{{"host": "127.0.0.1:{g}", "path": "/admin/**", "action": "deny",
                               "reason": "no admin"}}]}}}}"#
        ),
    );
    let c = |label: &str, path: &str| {
        format!(
            "{CURL} --path-as-is -o /dev/null -w '{label}=%{{http_code}}\\n' 'https://127.0.0.1:{g}{path}'; "
        )
    };
    let script = [
        c("dotted", "/public/./b"),
        c("normalised", "/public/%2e%2e/admin/x"),
        c("spelled", "/admin/../public/b"),
        c("plain", "/public/b"),
    ]
    .concat();
    let (out, name) = sandbox(&dir, &settings, &script);
    let text = out.ok();
    for want in ["dotted=200", "normalised=403", "spelled=403", "plain=200"] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // As spelled, not normalised.
    assert!(seen[0].starts_with("GET /public/./b "), "{seen:?}");
    assert!(seen[1].starts_with("GET /public/b "), "{seen:?}");
    let denied = decisions(&dir, &name)
        .into_iter()
        .filter(|e| e["protocol"] == "https" && e["decision"] == "deny")
        .count();
    assert_eq!(denied, 2, "{text}");

    // Without tlsTerminate the key is refused, naming it.
    let settings = dir.settings(r#"{"network": {"ambiguousRequestTarget": "asSpelled"}}"#);
    let out = run(rf(&dir).args(["run", "-s", &settings, "--", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("network.ambiguousRequestTarget: needs network.tlsTerminate"),
        "{}",
        out.stderr
    );
}
