//! How a refusal reaches a client that shows only what its protocol carries: the reason as the
//! status phrase of an HTTP response (what `git`, curl and most HTTP clients print for a failed
//! CONNECT), and, for SSH through SOCKS, as an SSH disconnect message sent before key exchange,
//! which OpenSSH prints as it is. Pure byte formatting.

/// The longest status phrase sent.
pub(crate) const MAX_PHRASE: usize = 500;

/// `reason` as an HTTP status phrase: printable ASCII only (control characters become spaces,
/// every other character `?`, since clients disagree on how to read one), trimmed, at most
/// [`MAX_PHRASE`] characters; `fallback` when nothing is left.
pub(crate) fn status_phrase(reason: &str, fallback: &str) -> String {
    let cleaned: String = reason
        .chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_control() => ' ',
            _ => '?',
        })
        .take(MAX_PHRASE)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        fallback.to_string()
    } else {
        cleaned.to_string()
    }
}

/// The SSH server identification line sent before the disconnect.
pub(crate) const SSH_IDENTIFICATION: &[u8] = b"SSH-2.0-ringfence_policy\r\n";

/// An SSH binary packet (RFC 4253 6) holding `SSH_MSG_DISCONNECT` with reason code 1
/// (`SSH_DISCONNECT_HOST_NOT_ALLOWED_TO_CONNECT`) and `reason` as its description, cleaned like
/// a status phrase. Before key exchange a packet has no MAC and no encryption, and its length
/// plus the length field must be a multiple of 8 with at least 4 bytes of padding.
pub(crate) fn ssh_disconnect(reason: &str) -> Vec<u8> {
    let description = status_phrase(reason, "the network policy does not allow this host");
    let mut payload = vec![1u8]; // SSH_MSG_DISCONNECT
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&(description.len() as u32).to_be_bytes());
    payload.extend_from_slice(description.as_bytes());
    payload.extend_from_slice(&0u32.to_be_bytes()); // language tag: empty
    let unpadded = 4 + 1 + payload.len();
    let mut padding = 8 - unpadded % 8;
    if padding < 4 {
        padding += 8;
    }
    let mut packet = Vec::with_capacity(unpadded + padding);
    packet.extend_from_slice(&((1 + payload.len() + padding) as u32).to_be_bytes());
    packet.push(padding as u8);
    packet.extend_from_slice(&payload);
    packet.resize(packet.len() + padding, 0);
    packet
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn phrases_are_printable_ascii_and_bounded() {
        assert_eq!(status_phrase("use https", "Forbidden"), "use https");
        assert_eq!(
            status_phrase("a\r\nX-Injected: 1\tb", "Forbidden"),
            "a  X-Injected: 1 b"
        );
        assert_eq!(status_phrase("grüße ✓", "Forbidden"), "gr??e ?");
        assert_eq!(status_phrase(" \r\n ", "Forbidden"), "Forbidden");
        let long = "x".repeat(800);
        assert_eq!(status_phrase(&long, "F").len(), MAX_PHRASE);
    }

    #[test]
    fn disconnect_packet_layout() {
        let p = ssh_disconnect("SSH is blocked; use an https:// remote");
        let len = u32::from_be_bytes(p[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, p.len());
        assert_eq!(p.len() % 8, 0);
        let padding = usize::from(p[4]);
        assert!(padding >= 4);
        let payload = &p[5..p.len() - padding];
        assert_eq!(payload[0], 1);
        assert_eq!(&payload[1..5], &[0, 0, 0, 1]);
        let dlen = u32::from_be_bytes(payload[5..9].try_into().unwrap()) as usize;
        assert_eq!(
            &payload[9..9 + dlen],
            b"SSH is blocked; use an https:// remote"
        );
        assert_eq!(&payload[9 + dlen..], &[0, 0, 0, 0]);
        assert!(p[p.len() - padding..].iter().all(|b| *b == 0));
        // Lengths around every padding boundary keep the layout.
        for n in 0..20 {
            let p = ssh_disconnect(&"r".repeat(n + 1));
            assert_eq!(p.len() % 8, 0);
            assert!(p[4] >= 4);
        }
    }
}
