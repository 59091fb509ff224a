//! The wire format of the DNS server that transparent capture runs for the sandbox: one
//! question in, one answer out, built from the policy alone. Nothing here forwards a query.

use std::net::Ipv4Addr;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Seconds a synthetic answer may be cached (the mapping holds for the whole run).
const TTL: u32 = 60;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    id: u16,
    /// Recursion desired, echoed back.
    rd: bool,
    /// The name as asked (dot-separated, without the final dot).
    pub name: String,
    pub qtype: u16,
    qclass: u16,
    /// The question section as received, echoed in the answer.
    question: Vec<u8>,
}

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The name exists: its synthetic address for an A question, no records for any other.
    Address(Ipv4Addr),
    /// The name does not exist (denied).
    NxDomain,
    /// The server cannot answer (the address pool is exhausted).
    ServFail,
}

/// Parses a query with exactly one question. `None` for anything else (responses, other
/// opcodes, truncated or malformed messages, compression in the question).
pub(crate) fn parse(msg: &[u8]) -> Option<Query> {
    if msg.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if qr || opcode != 0 || qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        // No compression pointers in a question; labels at most 63 bytes.
        if len > 63 {
            return None;
        }
        let label = msg.get(i..i + len)?;
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let tail = msg.get(i..i + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    let name = labels.join(".");
    if name.len() > 253 {
        return None;
    }
    Some(Query {
        id,
        rd: flags & 0x0100 != 0,
        name,
        qtype,
        qclass,
        question: msg[12..i + 4].to_vec(),
    })
}

/// The response to `q`.
pub(crate) fn respond(q: &Query, a: Answer) -> Vec<u8> {
    let rcode: u16 = match a {
        Answer::Address(_) => 0,
        Answer::NxDomain => 3,
        Answer::ServFail => 2,
    };
    let record = match a {
        Answer::Address(ip) if q.qtype == TYPE_A && q.qclass == CLASS_IN => Some(ip),
        _ => None,
    };
    // QR, AA, RA; RD echoed.
    let flags: u16 = 0x8000 | 0x0400 | 0x0080 | if q.rd { 0x0100 } else { 0 } | rcode;
    let mut out = Vec::with_capacity(12 + q.question.len() + 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::from(record.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&q.question);
    if let Some(ip) = record {
        // A pointer to the name at offset 12, type A, class IN, TTL, 4 bytes of address.
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// A FORMERR answer for a message that has at least a header, else nothing.
pub(crate) fn format_error(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[0..2].copy_from_slice(&msg[0..2]);
    out[2] = 0x80;
    out[3] = 0x01;
    Some(out)
}

#[cfg(test)]
pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn an_a_question_gets_its_address_and_others_no_records() {
        let q = parse(&query(0x1234, "Api.Example.com", 1)).unwrap();
        assert_eq!(q.name, "api.example.com");
        let r = respond(&q, Answer::Address(Ipv4Addr::new(198, 18, 1, 7)));
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[198, 18, 1, 7]);
        let q6 = parse(&query(7, "api.example.com", 28)).unwrap();
        let r6 = respond(&q6, Answer::Address(Ipv4Addr::new(198, 18, 1, 7)));
        assert_eq!(r6[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r6[6], r6[7]]), 0, "no AAAA record");
    }

    #[test]
    fn a_denied_name_is_nxdomain() {
        let q = parse(&query(9, "evil.example", 1)).unwrap();
        let r = respond(&q, Answer::NxDomain);
        assert_eq!(r[3] & 0x0f, 3);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
    }

    #[test]
    fn malformed_queries_are_not_parsed() {
        assert!(parse(&[0; 5]).is_none());
        let mut m = query(1, "a.example", 1);
        m[2] |= 0x80; // a response
        assert!(parse(&m).is_none());
        let mut m = query(1, "a.example", 1);
        m[12] = 0xc0; // a compression pointer in the question
        assert!(parse(&m).is_none());
        let m = query(1, "a.example", 1);
        assert!(parse(&m[..m.len() - 2]).is_none());
        assert!(parse(&query(1, "a b.example", 1)).is_none());
    }
}
