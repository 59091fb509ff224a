//! SOCKS5 (RFC 1928) CONNECT with domain, IPv4 and IPv6 destinations. Username/password
//! authentication (RFC 1929) is accepted with any password and only names the client. BIND and
//! UDP ASSOCIATE get "command not supported"; a policy refusal gets "connection not allowed by
//! ruleset", except for SSH (port 22): there the request succeeds and an SSH disconnect carries
//! the reason, because ssh prints only "connection closed" for a SOCKS error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{ConnectError, Decision, DecisionRecord, Protocol, Proxy};

const SUCCEEDED: u8 = 0x00;
const GENERAL_FAILURE: u8 = 0x01;
const NOT_ALLOWED: u8 = 0x02;
const HOST_UNREACHABLE: u8 = 0x04;
const CONNECTION_REFUSED: u8 = 0x05;
const COMMAND_NOT_SUPPORTED: u8 = 0x07;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;

struct Request {
    host: String,
    port: u16,
    client: Option<String>,
}

/// Greeting, authentication and request. `Err(Some(code))` asks for a reply first.
async fn handshake(
    s: &mut TcpStream,
    clients: Option<&crate::clients::Clients>,
    auth_failed: &mut bool,
) -> Result<Request, Option<u8>> {
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.map_err(|_| None)?;
    if b[0] != 5 || b[1] == 0 {
        return Err(None);
    }
    let mut methods = vec![0u8; usize::from(b[1])];
    s.read_exact(&mut methods).await.map_err(|_| None)?;
    let method = if methods.contains(&0x02) {
        0x02
    } else if methods.contains(&0x00) && clients.is_none() {
        0x00
    } else {
        *auth_failed = clients.is_some();
        let _ = s.write_all(&[5, 0xff]).await;
        return Err(None);
    };
    s.write_all(&[5, method]).await.map_err(|_| None)?;
    let mut client = None;
    if method == 0x02 {
        let mut v = [0u8; 2];
        s.read_exact(&mut v).await.map_err(|_| None)?;
        if v[0] != 1 {
            return Err(None);
        }
        let mut user = vec![0u8; usize::from(v[1])];
        s.read_exact(&mut user).await.map_err(|_| None)?;
        let mut plen = [0u8; 1];
        s.read_exact(&mut plen).await.map_err(|_| None)?;
        let mut pass = vec![0u8; usize::from(plen[0])];
        s.read_exact(&mut pass).await.map_err(|_| None)?;
        if let Some(clients) = clients {
            let Some(c) = clients.authenticate(&user, &pass) else {
                // RFC 1929: a status other than 0 is a failure, and the connection closes.
                *auth_failed = true;
                let _ = s.write_all(&[1, 1]).await;
                return Err(None);
            };
            s.write_all(&[1, 0]).await.map_err(|_| None)?;
            client = Some(c.name.clone());
        } else {
            s.write_all(&[1, 0]).await.map_err(|_| None)?;
            if !user.is_empty() {
                client = Some(String::from_utf8_lossy(&user).escape_debug().to_string());
            }
        }
    }
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await.map_err(|_| None)?;
    if req[0] != 5 {
        return Err(None);
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await.map_err(|_| None)?;
            Ipv4Addr::from(a).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.map_err(|_| None)?;
            let mut name = vec![0u8; usize::from(len[0])];
            s.read_exact(&mut name).await.map_err(|_| None)?;
            // Not UTF-8: kept lossy; the NUL and control bytes fail normalisation later.
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await.map_err(|_| None)?;
            format!("[{}]", Ipv6Addr::from(a))
        }
        _ => return Err(Some(ADDRESS_TYPE_NOT_SUPPORTED)),
    };
    let mut port = [0u8; 2];
    s.read_exact(&mut port).await.map_err(|_| None)?;
    if req[1] != 1 {
        return Err(Some(COMMAND_NOT_SUPPORTED));
    }
    let port = u16::from_be_bytes(port);
    if port == 0 {
        return Err(Some(NOT_ALLOWED));
    }
    Ok(Request { host, port, client })
}

async fn reply(s: &mut TcpStream, code: u8, bound: Option<SocketAddr>) {
    let mut msg = vec![5, code, 0];
    match bound.map(|a| (a.ip(), a.port())) {
        Some((IpAddr::V6(ip), port)) => {
            msg.push(4);
            msg.extend_from_slice(&ip.octets());
            msg.extend_from_slice(&port.to_be_bytes());
        }
        Some((IpAddr::V4(ip), port)) => {
            msg.push(1);
            msg.extend_from_slice(&ip.octets());
            msg.extend_from_slice(&port.to_be_bytes());
        }
        None => msg.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]),
    }
    let _ = s.write_all(&msg).await;
}

/// Refuses an SSH connection in SSH's own terms: a server identification, then a disconnect
/// message before key exchange whose description OpenSSH prints ("Received disconnect from
/// ...: REASON").
async fn refuse_ssh(s: &mut TcpStream, reason: &str) {
    reply(s, SUCCEEDED, None).await;
    let mut out = crate::refusal::SSH_IDENTIFICATION.to_vec();
    out.extend_from_slice(&crate::refusal::ssh_disconnect(reason));
    if s.write_all(&out).await.is_err() {
        return;
    }
    let _ = s.shutdown().await;
    // Take what the client still sends (its own identification) until it closes: closing
    // with unread bytes would reset the connection, and the reason could be lost with it.
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut sink).await {
            total += n;
            if n == 0 || total > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}

/// What an SSH client is told when the policy refuses it.
fn ssh_reason(host: &str, port: u16, reason: &str, own: bool) -> String {
    if own {
        reason.to_string()
    } else {
        format!("ringfence: {host}:{port} is not allowed: {reason}")
    }
}

/// Serves one SOCKS5 connection; `known` is its identity when the connection established it
/// (a TLS client certificate), and then no user name and password are asked for.
pub(crate) async fn serve(
    proxy: &Arc<Proxy>,
    mut stream: TcpStream,
    peer: SocketAddr,
    known: Option<String>,
) {
    let clients = proxy.clients();
    let mut auth_failed = false;
    let shake = handshake(
        &mut stream,
        clients.as_deref().filter(|_| known.is_none()),
        &mut auth_failed,
    );
    let req = match tokio::time::timeout(proxy.limits.head_timeout, shake).await {
        Ok(Ok(r)) if known.is_some() => Request { client: known, ..r },
        Ok(Ok(r)) => r,
        Ok(Err(Some(code))) => return reply(&mut stream, code, None).await,
        _ => {
            if auth_failed {
                // Refused before the client named a destination.
                proxy.record(&DecisionRecord::unauthenticated(
                    String::new(),
                    0,
                    Protocol::Socks5,
                    peer,
                ));
            }
            return;
        }
    };
    let started = Instant::now();
    let p = Protocol::Socks5;
    let via = std::sync::Mutex::new(None::<String>);
    let record =
        |host: String, decision, rule, reason, asked, resolved, error, bytes: (u64, u64)| {
            proxy.record(&DecisionRecord {
                host,
                port: req.port,
                protocol: p,
                decision,
                rule,
                reason,
                asked,
                client: req.client.clone(),
                peer: Some(peer),
                resolved,
                via: via.lock().ok().and_then(|v| v.clone()),
                error,
                bytes_up: bytes.0,
                bytes_down: bytes.1,
                duration: started.elapsed(),
            })
        };
    let allowed = match proxy
        .authorize(&req.host, req.port, p, req.client.as_deref())
        .await
    {
        Ok(a) => a,
        Err(r) => {
            let told = ssh_reason(&r.host, req.port, &r.reason, r.own_reason);
            record(
                r.host,
                Decision::Denied,
                r.rule,
                Some(r.reason),
                r.asked,
                None,
                None,
                (0, 0),
            );
            if req.port == 22 {
                return refuse_ssh(&mut stream, &told).await;
            }
            return reply(&mut stream, NOT_ALLOWED, None).await;
        }
    };
    let shown = allowed.host.to_string();
    // A host to be TLS-terminated is terminated through SOCKS too, with a slot of maxTunnels.
    let terminate = proxy
        .tls()
        .filter(|t| t.terminates(&allowed.host, req.port))
        .cloned();
    if let Some(reason) = proxy
        .tls()
        .filter(|_| terminate.is_none())
        .and_then(|t| t.opaque_refusal(&allowed.host, req.port))
    {
        record(
            shown,
            Decision::Denied,
            allowed.rule,
            Some(reason),
            allowed.asked,
            None,
            None,
            (0, 0),
        );
        return reply(&mut stream, NOT_ALLOWED, None).await;
    }
    let slot = match &terminate {
        Some(t) => match t.slot() {
            Some(s) => Some(s),
            None => {
                record(
                    shown,
                    Decision::Denied,
                    allowed.rule,
                    Some(
                        "too many TLS-terminated tunnels at once (network.tlsTerminate.maxTunnels)"
                            .into(),
                    ),
                    allowed.asked,
                    None,
                    None,
                    (0, 0),
                );
                return reply(&mut stream, GENERAL_FAILURE, None).await;
            }
        },
        None => None,
    };
    let route = proxy.route(&allowed.host, req.port, false);
    if let Ok(mut v) = via.lock() {
        *v = route.via();
    }
    let opened = match proxy.open_tunnel(&allowed.host, req.port, &route).await {
        Ok(c) => c,
        Err(ConnectError::Refused(reason)) => {
            let told = ssh_reason(&shown, req.port, &reason, false);
            record(
                shown,
                Decision::Denied,
                allowed.rule,
                Some(reason),
                allowed.asked,
                None,
                None,
                (0, 0),
            );
            if req.port == 22 {
                return refuse_ssh(&mut stream, &told).await;
            }
            return reply(&mut stream, NOT_ALLOWED, None).await;
        }
        Err(ConnectError::Failed(e)) => {
            let code = if e.contains("refused") {
                CONNECTION_REFUSED
            } else if e.contains("resolve") || e.contains("no addresses") {
                HOST_UNREACHABLE
            } else {
                GENERAL_FAILURE
            };
            record(
                shown,
                Decision::Allowed,
                allowed.rule,
                None,
                allowed.asked,
                None,
                Some(e),
                (0, 0),
            );
            return reply(&mut stream, code, None).await;
        }
    };
    reply(&mut stream, SUCCEEDED, opened.stream.local_addr()).await;
    if let Some(t) = terminate {
        let on_refusal =
            crate::tls::serve::recorder(proxy, &shown, req.port, req.client.clone(), peer);
        let out = crate::tls::serve::run(
            &t,
            &allowed.host,
            req.port,
            Vec::new(),
            stream,
            opened.stream,
            on_refusal,
        )
        .await;
        drop(slot);
        let decision = if out.refused.is_some() {
            Decision::Denied
        } else {
            Decision::Allowed
        };
        return record(
            shown,
            decision,
            allowed.rule,
            out.refused,
            allowed.asked,
            opened.resolved,
            out.error,
            (out.up, out.down),
        );
    }
    // What the next hop sent with its CONNECT answer goes first.
    let early = opened.early.len() as u64;
    if early > 0 && stream.write_all(&opened.early).await.is_err() {
        return;
    }
    let (a, b) = crate::splice::tunnel(&stream, &opened.stream).await;
    record(
        shown,
        Decision::Allowed,
        allowed.rule,
        None,
        allowed.asked,
        opened.resolved,
        None,
        (a, b + early),
    );
}
