//! Structured masking of a credential file (`credentials.files` with `extract`): the regex's
//! group 1 picks each value; only those spans are replaced by placeholders, so that the file
//! still parses inside. Pure: the caller makes the placeholders and keeps the real values.

/// `content` with every span of `pattern`'s group 1 replaced by the placeholder `placeholder`
/// gives for its value (called once per distinct value, in first-seen order), and the values
/// with their placeholders. With `duplicates`, verbatim copies of a value outside the matched
/// spans are replaced too (longest value first, spans against the original text, so that a
/// placeholder is never matched again). `Ok(None)`: the pattern matched no non-empty value.
/// An error: a match without group 1 (an optional group that did not take part).
pub fn mask_spans<E>(
    content: &str,
    pattern: &str,
    duplicates: bool,
    placeholder: &mut dyn FnMut(&str) -> Result<String, E>,
) -> Result<Option<Masked>, MaskError<E>> {
    let pattern = regex_lite::Regex::new(pattern).map_err(|e| MaskError::Pattern(e.to_string()))?;
    let mut values: Vec<(String, String)> = Vec::new();
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for c in pattern.captures_iter(content) {
        let Some(m) = c.get(1) else {
            let at = c.get(0).map_or(0, |m| m.start());
            return Err(MaskError::NoGroup(at));
        };
        if m.as_str().is_empty() {
            continue;
        }
        let i = match values.iter().position(|(v, _)| v == m.as_str()) {
            Some(i) => i,
            None => {
                let p = placeholder(m.as_str()).map_err(MaskError::Placeholder)?;
                values.push((m.as_str().to_string(), p));
                values.len() - 1
            }
        };
        spans.push((m.start(), m.end(), i));
    }
    // A value the caller declined (its "placeholder" is itself: a JWT candidate that is not
    // one) is no masking.
    if values.iter().all(|(v, p)| v == p) {
        return Ok(None);
    }
    if duplicates {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|a, b| values[*b].0.len().cmp(&values[*a].0.len()));
        for i in order {
            let v = values[i].0.as_str();
            if values[i].1 == v {
                continue;
            }
            let mut from = 0;
            while let Some(off) = content[from..].find(v) {
                let (start, end) = (from + off, from + off + v.len());
                if !spans.iter().any(|&(s, e, _)| start < e && s < end) {
                    spans.push((start, end, i));
                }
                // The next occurrence may start inside this one.
                from = start + content[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        spans.sort_by_key(|&(s, _, _)| s);
    }
    let mut out = String::with_capacity(content.len());
    let mut pos = 0;
    for (s, e, i) in spans {
        out.push_str(&content[pos..s]);
        out.push_str(&values[i].1);
        pos = e;
    }
    out.push_str(&content[pos..]);
    Ok(Some(Masked { text: out, values }))
}

/// What [`mask_spans`] made of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The text with placeholders, as the sandbox reads it.
    pub text: String,
    /// Each distinct value and its placeholder.
    pub values: Vec<(String, String)>,
}

/// Why [`mask_spans`] failed.
#[derive(Debug)]
pub enum MaskError<E> {
    /// A match at this byte offset without group 1.
    NoGroup(usize),
    /// The pattern does not compile (checked at load already).
    Pattern(String),
    Placeholder(E),
}

/// What `decode: "jwt"` looks for when no `extract` is given: three base64url segments, the
/// first starting like a JSON object.
pub const JWT_PATTERN: &str = r"(eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..=c.len() {
            out.push(B64[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in s.bytes() {
        let v = B64.iter().position(|&b| b == ch)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

fn segment(s: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&b64url_decode(s)?).ok()
}

/// Whether `s` has the form of a JWT: three segments, a JSON header with `alg`, a JSON
/// payload (the signature is not checked: only the proxy's own placeholder replaces it).
pub fn is_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && segment(parts[0]).is_some_and(|h| h.get("alg").is_some())
        && segment(parts[1]).is_some()
}

/// The fixed, invalid signature of the JWTs the sandbox is shown.
const FAKE_SIGNATURE: &str = "cmluZ2ZlbmNlLWZha2U";

/// A JWT-shaped placeholder (so that parsers inside still work) whose subject is `marker`.
pub fn fake_jwt(marker: &str) -> String {
    let header = b64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url_encode(
        serde_json::json!({"sub": marker, "exp": 9_999_999_999u64})
            .to_string()
            .as_bytes(),
    );
    format!("{header}.{payload}.{FAKE_SIGNATURE}")
}

/// `token` with each of `claims` that its payload holds as a string replaced by the
/// placeholder `placeholder(claim, value)` gives, re-encoded with the fake signature; `None`
/// when none of them is there.
pub fn mask_jwt_claims<E>(
    token: &str,
    claims: &[String],
    placeholder: &mut dyn FnMut(&str, &str) -> Result<String, E>,
) -> Result<Option<String>, E> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let Some(serde_json::Value::Object(mut map)) = segment(payload) else {
        return Ok(None);
    };
    let mut any = false;
    for c in claims {
        if let Some(serde_json::Value::String(v)) = map.get(c) {
            let p = placeholder(c, v)?;
            map.insert(c.clone(), serde_json::Value::String(p));
            any = true;
        }
    }
    if !any {
        return Ok(None);
    }
    let payload = b64url_encode(serde_json::Value::Object(map).to_string().as_bytes());
    Ok(Some(format!("{header}.{payload}.{FAKE_SIGNATURE}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(content: &str, pattern: &str, dupes: bool) -> Option<(String, Vec<(String, String)>)> {
        let mut n = 0;
        mask_spans::<()>(content, pattern, dupes, &mut |_| {
            n += 1;
            Ok(format!("P{n}"))
        })
        .unwrap()
        .map(|m| (m.text, m.values))
    }

    #[test]
    fn only_captured_spans_are_replaced() {
        let text = "machine a login me password s3cret\nmachine b password other\nnote s3cret\n";
        let (out, values) = run(text, r"password (\S+)", false).unwrap();
        assert_eq!(
            out,
            "machine a login me password P1\nmachine b password P2\nnote s3cret\n"
        );
        assert_eq!(values[0], ("s3cret".to_string(), "P1".to_string()));
        // The same value twice has one placeholder.
        let (out, values) = run("k=x k=x", r"k=(\w)", false).unwrap();
        assert_eq!((out.as_str(), values.len()), ("k=P1 k=P1", 1));
        assert!(run("nothing here", r"password (\S+)", false).is_none());
        assert!(run("password ", r"password (\S*)", false).is_none());
    }

    #[test]
    fn duplicates_are_masked_longest_first() {
        let text = "password s3cret\nnote s3cret and s3\npassword s3\n";
        let (out, _) = run(text, r"password (\S+)", true).unwrap();
        assert_eq!(out, "password P1\nnote P1 and P2\npassword P2\n");
    }

    #[test]
    fn classes_are_ascii_as_in_srt_and_unicode_properties_are_refused() {
        // As in srt's (JavaScript) patterns: `\d` and `\w` are ASCII, `.` is any character.
        let (out, values) = run("pin=12\u{663}4 tok=h\u{e9}llo", r"pin=(\d+)", false).unwrap();
        assert_eq!(
            (out.as_str(), values[0].0.as_str()),
            ("pin=P1\u{663}4 tok=h\u{e9}llo", "12")
        );
        let (_, values) = run("tok=h\u{e9}llo;", r"tok=(\w+)", false).unwrap();
        assert_eq!(values[0].0, "h");
        let (_, values) = run("tok=h\u{e9}llo;", r"tok=([^;]+)", false).unwrap();
        assert_eq!(values[0].0, "h\u{e9}llo");
        let r = mask_spans::<()>("x", r"(\p{L}+)", false, &mut |_| Ok("P".into()));
        assert!(matches!(r, Err(MaskError::Pattern(_))));
    }

    #[test]
    fn a_match_without_group_one_is_an_error() {
        let r = mask_spans::<()>("ac", r"a(b)?", false, &mut |_| Ok("P".into()));
        assert!(matches!(r, Err(MaskError::NoGroup(0))));
    }

    #[test]
    fn jwts_are_recognised_faked_and_masked_by_claim() {
        let token = format!(
            "{}.{}.sig",
            b64url_encode(br#"{"alg":"RS256"}"#),
            b64url_encode(br#"{"sub":"me","email":"a@b.c","n":1}"#)
        );
        assert!(is_jwt(&token));
        assert!(!is_jwt("eyJhbGciOi.x.y"));
        assert!(!is_jwt("a.b"));
        let fake = fake_jwt("P1");
        assert!(is_jwt(&fake));
        assert_eq!(
            segment(fake.split('.').nth(1).unwrap()).unwrap()["sub"],
            "P1"
        );
        let masked = mask_jwt_claims::<()>(&token, &["email".into(), "n".into()], &mut |c, v| {
            Ok(format!("P-{c}-{}", v.len()))
        })
        .unwrap()
        .unwrap();
        let payload = segment(masked.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(payload["email"], "P-email-5");
        assert_eq!(payload["n"], 1);
        assert_eq!(payload["sub"], "me");
        assert!(
            mask_jwt_claims::<()>(&token, &["x".into()], &mut |_, _| Ok(String::new()))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            b64url_decode(&b64url_encode(b"hello!?")).unwrap(),
            b"hello!?"
        );
        // A capture the caller declines is left, and is no match.
        let r = mask_spans::<()>("a=eyJx b=eyJy", r"=(eyJ\w)", false, &mut |v| {
            Ok(v.to_string())
        });
        assert!(r.unwrap().is_none());
    }
}
