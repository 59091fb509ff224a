//! Clients of a shared gateway, each with its own identity and network policy: a client names
//! itself with the proxy user name and proves it with a token as the password (HTTP
//! `Proxy-Authorization: Basic`, SOCKS5 RFC 1929), or is its TLS client certificate (mTLS,
//! see [`crate::mtls`]). Only the token's SHA-256 is kept; the comparison runs in constant
//! time over every client, so a wrong guess says nothing about which byte, or which client, it
//! missed. A certificate is known by the SHA-256 of its DER encoding, which is not a secret.

use std::sync::Arc;

use crate::policy::NetPolicy;

/// The shortest token accepted: 22 characters, 128 bits in base64.
pub const MIN_TOKEN_LEN: usize = 22;

/// How a client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The SHA-256 of its token (the proxy password).
    Token([u8; 32]),
    /// The SHA-256 of its TLS client certificate (DER), which must also chain to the
    /// gateway's client CA.
    Certificate([u8; 32]),
}

/// One client: its name, its credential and its policy.
pub struct Client {
    pub name: String,
    credential: Credential,
    pub policy: Arc<NetPolicy>,
}

impl Client {
    /// A client that authenticates with a token whose SHA-256 is `token_sha256`.
    pub fn new(name: String, token_sha256: [u8; 32], policy: NetPolicy) -> Client {
        Self::with_credential(name, Credential::Token(token_sha256), policy)
    }

    pub fn with_credential(name: String, credential: Credential, policy: NetPolicy) -> Client {
        Client {
            name,
            credential,
            policy: Arc::new(policy),
        }
    }

    pub fn credential(&self) -> Credential {
        self.credential
    }
}

/// The clients the gateway knows; anyone else is refused.
pub struct Clients {
    list: Vec<Client>,
}

/// The SHA-256 of a token, as the clients file holds it.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new token (256 random bits, unpadded base64url) and its SHA-256 in hex.
pub fn new_token() -> Result<(String, String), String> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            token.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        token.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok((token.clone(), hex(&token_hash(token.as_bytes()))))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits as a SHA-256 (as `openssl x509 -fingerprint -sha256` prints it, the pairs
/// may be separated by colons).
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let plain: String = if text.len() == 95 && text.bytes().skip(2).step_by(3).all(|b| b == b':') {
        text.chars().filter(|&c| c != ':').collect()
    } else {
        text.to_string()
    };
    let t = plain.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in t.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Equality of two byte strings in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Clients {
    pub fn new(list: Vec<Client>) -> Clients {
        Clients { list }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The client that `user` and `token` identify, if they match one. Every client is
    /// compared, in full, whatever matched before.
    pub fn authenticate(&self, user: &[u8], token: &[u8]) -> Option<&Client> {
        if token.len() < MIN_TOKEN_LEN {
            return None;
        }
        let hash = token_hash(token);
        let mut found = None;
        for c in &self.list {
            // A certificate's client has no token: it is compared against all zeros and
            // never matches, so that the time spent is the same.
            let (is_token, expected) = match &c.credential {
                Credential::Token(h) => (true, h),
                Credential::Certificate(_) => (false, &[0u8; 32]),
            };
            let name_ok = ct_eq(c.name.as_bytes(), user);
            let token_ok = ct_eq(expected, &hash);
            if name_ok & token_ok & is_token {
                found = Some(c);
            }
        }
        found
    }

    /// The client whose certificate has this SHA-256 (of its DER encoding).
    pub fn by_certificate(&self, cert_sha256: &[u8; 32]) -> Option<&Client> {
        self.list
            .iter()
            .find(|c| c.credential == Credential::Certificate(*cert_sha256))
    }

    /// Whether any client authenticates with a certificate.
    pub fn has_certificates(&self) -> bool {
        self.list
            .iter()
            .any(|c| matches!(c.credential, Credential::Certificate(_)))
    }

    /// The policy of the client named `name`.
    pub fn policy(&self, name: &str) -> Option<Arc<NetPolicy>> {
        self.list
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.policy.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn clients() -> Clients {
        let policy = NetPolicy::from_policy(&ringfence_policy::Policy::default()).unwrap();
        Clients::new(vec![
            Client::new(
                "agent-7".into(),
                token_hash(b"0123456789abcdefghijklmn"),
                policy.clone(),
            ),
            Client::new(
                "agent-8".into(),
                token_hash(b"nmlkjihgfedcba9876543210"),
                policy.clone(),
            ),
            Client::with_credential("pod-3".into(), Credential::Certificate([7; 32]), policy),
        ])
    }

    #[test]
    fn a_certificate_client_is_found_by_its_certificate_only() {
        let c = clients();
        assert_eq!(
            c.by_certificate(&[7; 32]).map(|c| c.name.as_str()),
            Some("pod-3")
        );
        assert!(c.by_certificate(&[8; 32]).is_none());
        assert!(c
            .by_certificate(&token_hash(b"0123456789abcdefghijklmn"))
            .is_none());
        // No token opens a certificate's client, not even the hash it is compared with.
        assert!(c.authenticate(b"pod-3", &[0u8; 32]).is_none());
        assert!(c
            .authenticate(b"pod-3", b"0123456789abcdefghijklmn")
            .is_none());
        assert!(c.has_certificates());
    }

    #[test]
    fn fingerprints_with_colons_are_read() {
        let h = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256(&h), Some([0xab; 32]));
        assert_eq!(parse_sha256(&colons), Some([0xab; 32]));
        assert!(parse_sha256(&colons.replace(':', "-")).is_none());
    }

    #[test]
    fn a_client_is_its_name_and_its_token() {
        let c = clients();
        let got = c.authenticate(b"agent-7", b"0123456789abcdefghijklmn");
        assert_eq!(got.map(|c| c.name.as_str()), Some("agent-7"));
        // Another client's token, a wrong byte, a prefix, a short token, no name: refused.
        assert!(c
            .authenticate(b"agent-7", b"nmlkjihgfedcba9876543210")
            .is_none());
        assert!(c
            .authenticate(b"agent-7", b"0123456789abcdefghijklmX")
            .is_none());
        assert!(c
            .authenticate(b"agent-7", b"0123456789abcdefghijklm")
            .is_none());
        assert!(c.authenticate(b"", b"0123456789abcdefghijklmn").is_none());
        assert!(c.authenticate(b"agent-9", b"short").is_none());
        assert!(c.policy("agent-8").is_some());
        assert!(c.policy("agent-9").is_none());
    }

    #[test]
    fn new_tokens_are_long_and_hashed() {
        let (t, h) = new_token().unwrap();
        assert_eq!(t.len(), 43);
        assert_eq!(parse_sha256(&h), Some(token_hash(t.as_bytes())));
        assert_ne!(new_token().unwrap().0, t);
        assert!(parse_sha256("00").is_none());
    }

    #[test]
    fn equality_is_exact() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }
}
