//! AWS Signature Version 4 re-signing (`credentials.awsPairs`): a request signed inside the
//! sandbox with a masked access key id carries a signature over the placeholder secret; the
//! proxy recognises the placeholder key id in the credential scope and signs the request
//! again, as it goes upstream, with the real key. Scope, signed-header list and x-amz-date
//! are the client's. Presigned URLs (the signature in the query) are signed again the same
//! way, in the query. An aws-chunked upload (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) is read
//! whole and sent as one signed chunk and the final one, each signature chained from the new
//! request signature. Shapes that cannot be re-signed here (the other aws-chunked forms,
//! SigV4A, a presigned URL without its date or signed-header list) are refused unless
//! `credentials.sigv4` lets them pass as they are.

use http::HeaderMap;
use ring::{digest, hmac};

use crate::host::Host;
use crate::policy::DomainList;
use crate::Error;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const ALGORITHM_A: &str = "AWS4-ECDSA-P256-SHA256";
pub(crate) const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
/// aws-chunked with a signature on each chunk, chained from the request's signature.
const STREAMING: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// The largest body buffered to hash it for a new signature (as srt).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// One masked AWS credential: the placeholder access key id the sandbox signs with, and the
/// real key.
pub struct AwsPair {
    placeholder_key_id: String,
    key_id: String,
    secret: String,
    session_token: Option<String>,
    inject: DomainList,
}

impl std::fmt::Debug for AwsPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsPair").finish_non_exhaustive()
    }
}

impl AwsPair {
    pub fn new(
        placeholder_key_id: &str,
        key_id: String,
        secret: String,
        session_token: Option<String>,
        inject_hosts: &[String],
    ) -> Result<AwsPair, Error> {
        Ok(AwsPair {
            placeholder_key_id: placeholder_key_id.to_string(),
            key_id,
            secret,
            session_token,
            inject: DomainList::parse("credentials.envVars.injectHosts", inject_hosts)?,
        })
    }
}

/// `credentials.sigv4`: whether each shape that cannot be re-signed passes unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough {
    pub streaming: bool,
    pub presigned: bool,
    pub sigv4a: bool,
}

/// What to do with one request.
#[derive(Debug)]
pub(crate) enum Plan<'a> {
    Refuse(String),
    Resign {
        pair: &'a AwsPair,
        auth: Authorization,
        amz_date: String,
        /// The client signed UNSIGNED-PAYLOAD (the body is not hashed).
        unsigned: bool,
        /// aws-chunked (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`): the body the caller hands to
        /// [`resign`] is the decoded payload ([`dechunk`]), which it frames again.
        streaming: bool,
    },
    /// A presigned URL: `X-Amz-Credential`, `X-Amz-Security-Token` and `X-Amz-Signature` of
    /// the query are replaced.
    Presign {
        pair: &'a AwsPair,
        auth: Authorization,
        amz_date: String,
        /// `X-Amz-Content-Sha256` of the query, if the client put one there.
        payload: Option<String>,
    },
}

/// The parts of an `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    key_id: String,
    date: String,
    region: String,
    service: String,
    signed: Vec<String>,
}

fn field<'a>(auth: &'a str, name: &str) -> Option<&'a str> {
    let at = auth.find(&format!("{name}="))? + name.len() + 1;
    let rest = &auth[at..];
    let end = rest
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|v| !v.is_empty())
}

fn parse_authorization(auth: &str) -> Option<Authorization> {
    let rest = auth.strip_prefix(ALGORITHM)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let cred = field(rest, "Credential")?;
    let signed = field(rest, "SignedHeaders")?;
    let sig = field(rest, "Signature")?;
    if !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[..4].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(Authorization {
        key_id: parts[0].into(),
        date: parts[1].into(),
        region: parts[2].into(),
        service: parts[3].into(),
        signed: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
    })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The query's parameters, decoded, in their order.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A presigned URL's signature: the key id of its `X-Amz-Credential`, and the credential,
/// date, signed-header list and payload hash as far as present.
#[derive(Debug, Default)]
struct Presigned {
    key_id: String,
    credential: String,
    amz_date: Option<String>,
    signed: Option<String>,
    payload: Option<String>,
}

/// The presigned signature of `query`, when it is a SigV4 one.
fn presigned(query: &str) -> Option<Presigned> {
    let mut algorithm = None;
    let mut signature = false;
    let mut p = Presigned::default();
    for (k, v) in query_params(query) {
        match k.as_str() {
            "X-Amz-Algorithm" => algorithm = Some(v),
            "X-Amz-Credential" => p.credential = v,
            "X-Amz-Signature" => signature = true,
            "X-Amz-Date" => p.amz_date = Some(v),
            "X-Amz-SignedHeaders" => p.signed = Some(v),
            "X-Amz-Content-Sha256" => p.payload = Some(v),
            _ => {}
        }
    }
    if algorithm.as_deref() != Some(ALGORITHM) || !signature {
        return None;
    }
    p.key_id = p
        .credential
        .split('/')
        .next()
        .filter(|k| !k.is_empty())?
        .to_string();
    Some(p)
}

#[cfg(test)]
fn presigned_key_id(query: &str) -> Option<String> {
    presigned(query).map(|p| p.key_id)
}

/// Decides a request to `host:port` with `headers` (before substitution) and `target` (path
/// and query): `None` when it carries no SigV4 signature by a masked key id for this host.
pub(crate) fn plan<'a>(
    pairs: &'a [AwsPair],
    pass: Passthrough,
    headers: &HeaderMap,
    target: &str,
    host: &Host,
    port: u16,
) -> Option<Plan<'a>> {
    if pairs.is_empty() {
        return None;
    }
    let find = |key_id: &str| {
        pairs
            .iter()
            .find(|p| p.placeholder_key_id == key_id)
            .filter(|p| p.inject.matches(host, port))
    };
    let auth = header(headers, "authorization");
    // `what` names the shape as the request spells it, so the logged reason says which.
    let cannot = |kind: &str, what: &str, pass: bool| {
        (!pass).then(|| {
            Plan::Refuse(format!(
                "an AWS SigV4 {kind} request ({what}) signed with a masked credential cannot \
                 be re-signed by the proxy; refused (credentials.sigv4.{kind}: \"passthrough\" \
                 forwards it as it is, and it then fails upstream)"
            ))
        })
    };
    if let Some(a) = auth {
        if a.starts_with(ALGORITHM_A) {
            let key = field(a, "Credential")?.split('/').next()?;
            find(key)?;
            return cannot("sigv4a", ALGORITHM_A, pass.sigv4a);
        }
        if a.starts_with(ALGORITHM) {
            let key = field(a, "Credential")?.split('/').next()?;
            let pair = find(key)?;
            let sha = header(headers, "x-amz-content-sha256");
            if let Some(s) = sha.filter(|s| s.starts_with("STREAMING-") && *s != STREAMING) {
                // Trailers, unsigned chunks and ECDSA chunk signatures are not implemented.
                return cannot(
                    "streaming",
                    &format!("x-amz-content-sha256: {s}"),
                    pass.streaming,
                );
            }
            let Some(parsed) = parse_authorization(a) else {
                return Some(Plan::Refuse(
                    "an AWS SigV4 request signed with a masked credential has a malformed \
                     Authorization field; it cannot be re-signed"
                        .into(),
                ));
            };
            let Some(amz_date) = header(headers, "x-amz-date") else {
                return Some(Plan::Refuse(
                    "an AWS SigV4 request signed with a masked credential has no x-amz-date; \
                     it cannot be re-signed"
                        .into(),
                ));
            };
            for name in &parsed.signed {
                let supplied = name == "host"
                    || (name == "x-amz-security-token" && pair.session_token.is_some());
                if !supplied && !headers.contains_key(name.as_str()) {
                    return Some(Plan::Refuse(format!(
                        "an AWS SigV4 request signed with a masked credential signs the \
                         field {name}, which it does not carry; it cannot be re-signed"
                    )));
                }
            }
            return Some(Plan::Resign {
                pair,
                auth: parsed,
                amz_date: amz_date.to_string(),
                unsigned: sha == Some(UNSIGNED),
                streaming: sha == Some(STREAMING),
            });
        }
    }
    let query = target.split_once('?')?.1;
    let p = presigned(query)?;
    let pair = find(&p.key_id)?;
    if let Some(s) = p.payload.as_deref().filter(|s| s.starts_with("STREAMING-")) {
        return cannot(
            "streaming",
            &format!("X-Amz-Content-Sha256={s}"),
            pass.streaming,
        );
    }
    let auth = match (&p.amz_date, &p.signed) {
        (Some(_), Some(signed)) => parse_authorization(&format!(
            "{ALGORITHM} Credential={}, SignedHeaders={signed}, Signature=0",
            p.credential
        )),
        _ => None,
    };
    let (Some(auth), Some(amz_date)) = (auth, p.amz_date) else {
        return cannot(
            "presigned",
            "a presigned URL without X-Amz-Date, X-Amz-SignedHeaders or a whole \
             X-Amz-Credential",
            pass.presigned,
        );
    };
    for name in &auth.signed {
        if name != "host" && !headers.contains_key(name.as_str()) {
            return Some(Plan::Refuse(format!(
                "an AWS SigV4 presigned URL made with a masked credential signs the field \
                 {name}, which the request does not carry; it cannot be re-signed"
            )));
        }
    }
    Some(Plan::Presign {
        pair,
        auth,
        amz_date,
        payload: p.payload,
    })
}

/// Signs the request again: sets the session token and the body hash the pair and the body
/// call for, then the Authorization field, or for a presigned URL the query; returns the new
/// target (path and query) when it changed. `authority` is the Host the upstream sees.
pub(crate) fn resign(
    plan: &Plan<'_>,
    method: &str,
    target: &str,
    authority: &str,
    headers: &mut HeaderMap,
    body: &mut Vec<u8>,
) -> Result<Option<String>, String> {
    let (pair, auth, amz_date, unsigned, streaming) = match plan {
        Plan::Resign {
            pair,
            auth,
            amz_date,
            unsigned,
            streaming,
        } => (pair, auth, amz_date, unsigned, *streaming),
        Plan::Presign {
            pair,
            auth,
            amz_date,
            payload,
        } => {
            return presign(
                pair,
                auth,
                amz_date,
                payload.as_deref(),
                method,
                target,
                authority,
                headers,
                body,
            )
            .map(Some)
        }
        Plan::Refuse(_) => return Err("not a re-signing plan".into()),
    };
    let value = |s: &str| http::HeaderValue::from_str(s).map_err(|e| format!("{s:?}: {e}"));
    let mut signed = auth.signed.clone();
    if let Some(t) = &pair.session_token {
        headers.insert("x-amz-security-token", value(t)?);
        if !signed.iter().any(|s| s == "x-amz-security-token") {
            signed.push("x-amz-security-token".into());
        }
    }
    let payload = if streaming {
        headers.insert(
            "x-amz-decoded-content-length",
            http::HeaderValue::from(body.len()),
        );
        STREAMING.to_string()
    } else if *unsigned {
        UNSIGNED.to_string()
    } else {
        hex(digest::digest(&digest::SHA256, body).as_ref())
    };
    if !streaming && !*unsigned && headers.contains_key("x-amz-content-sha256") {
        headers.insert("x-amz-content-sha256", value(&payload)?);
    }
    let scope = Scope {
        date: &auth.date,
        region: &auth.region,
        service: &auth.service,
    };
    let field = sign(
        method,
        target,
        authority,
        headers,
        &signed,
        &payload,
        amz_date,
        &scope,
        &pair.key_id,
        &pair.secret,
    )?;
    if streaming {
        let seed = field.rsplit("Signature=").next().unwrap_or_default();
        *body = chunked(body, seed, amz_date, &scope, &pair.secret);
    }
    let mut v = value(&field)?;
    v.set_sensitive(true);
    headers.insert(http::header::AUTHORIZATION, v);
    Ok(None)
}

impl Plan<'_> {
    /// The body is aws-chunked: hand [`resign`] the decoded payload.
    pub(crate) fn streaming(&self) -> bool {
        matches!(
            self,
            Plan::Resign {
                streaming: true,
                ..
            }
        )
    }
}

/// The payload of an aws-chunked body (`SIZE;chunk-signature=SIG\r\nDATA\r\n`..., ending with a
/// chunk of size 0); the signatures are not checked (they are over the placeholder secret).
pub(crate) fn dechunk(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("an aws-chunked body with a chunk head that does not end")?;
        let head =
            std::str::from_utf8(&rest[..end]).map_err(|_| "a chunk head that is not text")?;
        let size = head.split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| format!("a chunk size that is not hexadecimal: {size:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            // Only the final CRLF may follow (trailers are not signed this way).
            return if rest == b"\r\n" || rest.is_empty() {
                Ok(out)
            } else {
                Err("bytes after the final aws-chunked chunk".into())
            };
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err("an aws-chunked chunk shorter than its size".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `data` framed as aws-chunked: one chunk with it (if any) and the final empty one, each
/// signed in a chain that starts from the request's signature `seed`.
fn chunked(data: &[u8], seed: &str, amz_date: &str, scope: &Scope<'_>, secret: &str) -> Vec<u8> {
    let key = signing_key(secret, scope);
    let scope_text = format!(
        "{}/{}/{}/aws4_request",
        scope.date, scope.region, scope.service
    );
    let empty = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let mut out = Vec::with_capacity(data.len() + 200);
    let mut previous = seed.to_string();
    let chunks: &[&[u8]] = if data.is_empty() {
        &[b""]
    } else {
        &[data, b""]
    };
    for chunk in chunks {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope_text}\n{previous}\n{empty}\n{}",
            hex(digest::digest(&digest::SHA256, chunk).as_ref())
        );
        previous = hex(mac(&key, &to_sign).as_ref());
        out.extend_from_slice(
            format!("{:x};chunk-signature={previous}\r\n", chunk.len()).as_bytes(),
        );
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The SigV4 signing key of `secret` for `scope`.
fn signing_key(secret: &str, scope: &Scope<'_>) -> Vec<u8> {
    let k = mac(format!("AWS4{secret}").as_bytes(), scope.date);
    let k = mac(k.as_ref(), scope.region);
    let k = mac(k.as_ref(), scope.service);
    mac(k.as_ref(), "aws4_request").as_ref().to_vec()
}

/// A presigned URL signed again: the real key id in `X-Amz-Credential`, the real session
/// token in `X-Amz-Security-Token` (added if the pair has one), a new `X-Amz-Signature` over
/// the rest of the query. The payload hash is `X-Amz-Content-Sha256` of the query if present,
/// else UNSIGNED-PAYLOAD for S3 (as its presigned URLs are made) and the body's for other
/// services.
#[allow(clippy::too_many_arguments)]
fn presign(
    pair: &AwsPair,
    auth: &Authorization,
    amz_date: &str,
    payload: Option<&str>,
    method: &str,
    target: &str,
    authority: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let scope = Scope {
        date: &auth.date,
        region: &auth.region,
        service: &auth.service,
    };
    let scope_text = format!(
        "{}/{}/{}/aws4_request",
        scope.date, scope.region, scope.service
    );
    let mut params: Vec<(String, String)> = query_params(query)
        .into_iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .collect();
    let mut set = |name: &str, v: String| match params.iter_mut().find(|(k, _)| k == name) {
        Some(p) => p.1 = v,
        None => params.push((name.to_string(), v)),
    };
    set("X-Amz-Credential", format!("{}/{scope_text}", pair.key_id));
    if let Some(t) = &pair.session_token {
        set("X-Amz-Security-Token", t.clone());
    }
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k, false), encode(v, false)))
        .collect::<Vec<_>>()
        .join("&");
    let payload = match payload {
        Some(p) => p.to_string(),
        None if auth.service == "s3" => UNSIGNED.to_string(),
        None => hex(digest::digest(&digest::SHA256, body).as_ref()),
    };
    let (_, sig) = signature(
        method,
        &format!("{path}?{query}"),
        authority,
        headers,
        &auth.signed,
        &payload,
        amz_date,
        &scope,
        &pair.secret,
    )?;
    Ok(format!("{path}?{query}&X-Amz-Signature={sig}"))
}

pub(crate) struct Scope<'a> {
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(key: &[u8], data: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
}

/// Percent-decoding (bytes that do not form an escape stay as they are).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 encoding of everything but the unreserved characters.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_uri(path: &str, service: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    // S3 signs the path as sent; other services its normalised form, encoded once more.
    if service == "s3" {
        return path.to_string();
    }
    let mut segs: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let slash = if !segs.is_empty() && path.ends_with('/') {
        "/"
    } else {
        ""
    };
    encode(&format!("/{}{slash}", segs.join("/")), true)
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k), false), encode(&decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The Authorization field of a SigV4 signature over the request.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign(
    method: &str,
    target: &str,
    authority: &str,
    headers: &HeaderMap,
    signed: &[String],
    payload: &str,
    amz_date: &str,
    scope: &Scope<'_>,
    key_id: &str,
    secret: &str,
) -> Result<String, String> {
    let (signed_list, sig) = signature(
        method, target, authority, headers, signed, payload, amz_date, scope, secret,
    )?;
    Ok(format!(
        "{ALGORITHM} Credential={key_id}/{}/{}/{}/aws4_request, SignedHeaders={signed_list}, \
         Signature={sig}",
        scope.date, scope.region, scope.service
    ))
}

/// The signed-header list and the signature of a SigV4 signature over the request.
#[allow(clippy::too_many_arguments)]
fn signature(
    method: &str,
    target: &str,
    authority: &str,
    headers: &HeaderMap,
    signed: &[String],
    payload: &str,
    amz_date: &str,
    scope: &Scope<'_>,
    secret: &str,
) -> Result<(String, String), String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut names: Vec<String> = signed.iter().map(|s| s.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut lines = String::new();
    for n in &names {
        let values: Vec<String> = if n == "host" {
            vec![authority.to_string()]
        } else {
            headers
                .get_all(n.as_str())
                .iter()
                .map(|v| {
                    v.to_str()
                        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                        .map_err(|_| format!("the signed field {n} is not text"))
                })
                .collect::<Result<_, _>>()?
        };
        if values.is_empty() {
            return Err(format!("the signed field {n} is missing"));
        }
        lines.push_str(&format!("{n}:{}\n", values.join(",")));
    }
    let signed_list = names.join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{lines}\n{signed_list}\n{payload}",
        method.to_ascii_uppercase(),
        canonical_uri(path, scope.service),
        canonical_query(query),
    );
    let scope_text = format!(
        "{}/{}/{}/aws4_request",
        scope.date, scope.region, scope.service
    );
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope_text}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let sig = hex(mac(&signing_key(secret, scope), &to_sign).as_ref());
    Ok((signed_list, sig))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The "get-vanilla" case of AWS's SigV4 test suite.
    #[test]
    fn signs_the_aws_test_suite_request() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let empty = hex(digest::digest(&digest::SHA256, b"").as_ref());
        let field = sign(
            "GET",
            "/",
            "example.amazonaws.com",
            &h,
            &["host".into(), "x-amz-date".into()],
            &empty,
            "20150830T123600Z",
            &Scope {
                date: "20150830",
                region: "us-east-1",
                service: "service",
            },
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .unwrap();
        assert_eq!(
            field,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// A presigned S3 URL made with a placeholder key is made again with the real key: the
    /// same as signing it with the real key in the first place (the query's signature over
    /// the canonical request with UNSIGNED-PAYLOAD).
    #[test]
    fn presigned_urls_are_signed_again_in_the_query() {
        let pair = AwsPair::new(
            "PLACEHOLDER",
            "AKIAIOSFODNN7EXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            None,
            &["examplebucket.s3.amazonaws.com".into()],
        )
        .unwrap();
        let host = Host::Name("examplebucket.s3.amazonaws.com".into());
        let query = |key: &str, sig: &str| {
            format!(
                "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={key}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
                 &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
            )
        };
        let h = HeaderMap::new();
        let pairs = [pair];
        let plan = plan(
            &pairs,
            Passthrough::default(),
            &h,
            &query("PLACEHOLDER", "00"),
            &host,
            443,
        )
        .unwrap();
        assert!(matches!(plan, Plan::Presign { .. }), "{plan:?}");
        let mut h2 = h.clone();
        let signed = resign(
            &plan,
            "GET",
            &query("PLACEHOLDER", "00"),
            "examplebucket.s3.amazonaws.com",
            &mut h2,
            &mut Vec::new(),
        )
        .unwrap()
        .unwrap();
        // The example of AWS's S3 documentation ("Authenticating Requests: Using Query
        // Parameters").
        assert_eq!(
            signed,
            query(
                "AKIAIOSFODNN7EXAMPLE",
                "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            )
        );
        // Without its date the URL cannot be signed again: refused, by name.
        let bare = "/t?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=PLACEHOLDER%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        match plan_of(&pairs, bare, &host) {
            Some(Plan::Refuse(why)) => assert!(why.contains("X-Amz-Date"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aws_chunked_bodies_are_read_and_framed_again() {
        let zeros = "0".repeat(64);
        let body = format!(
            "5;chunk-signature={zeros}\r\nhello\r\n6;chunk-signature={zeros}\r\n world\r\n\
             0;chunk-signature={zeros}\r\n\r\n"
        );
        assert_eq!(dechunk(body.as_bytes()).unwrap(), b"hello world");
        assert!(dechunk(b"5;chunk-signature=0\r\nhel").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        let scope = Scope {
            date: "20130524",
            region: "us-east-1",
            service: "s3",
        };
        let framed = chunked(b"hello world", "seed", "20130524T000000Z", &scope, "secret");
        let text = String::from_utf8(framed.clone()).unwrap();
        assert!(text.starts_with("b;chunk-signature="), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert_eq!(dechunk(&framed).unwrap(), b"hello world");
    }

    fn plan_of<'a>(pairs: &'a [AwsPair], target: &str, host: &Host) -> Option<Plan<'a>> {
        plan(
            pairs,
            Passthrough::default(),
            &HeaderMap::new(),
            target,
            host,
            443,
        )
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_uri("/a/./b/../c d", "service"), "/a/c%20d");
        assert_eq!(canonical_uri("/a//b/", "s3"), "/a//b/");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a%20b+c"), "k=a%20b%2Bc");
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/s3/aws4_request, \
             SignedHeaders=Host;x-amz-date, Signature=abc123",
        )
        .unwrap();
        assert_eq!(a.key_id, "K");
        assert_eq!(a.signed, vec!["host", "x-amz-date"]);
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=K/x, SignedHeaders=h, Signature=0"
        )
        .is_none());
        assert_eq!(
            presigned_key_id("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F2015%2Fr%2Fs%2Faws4_request&X-Amz-Signature=00"),
            Some("K".into())
        );
    }
}
