//! Masked credentials in request bodies: the placeholder replaced by the real value toward
//! the credential's hosts, and a placeholder on its way anywhere else stopped. A body of known
//! small size is read whole first, so that a leak gets a clean 403; a larger one is scanned
//! as it streams (a placeholder split between two frames is still found), and a leak aborts it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};

use super::Secret;
use crate::host::Host;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bodies up to this size (by their Content-Length) are read whole before they are sent on.
pub(crate) const WHOLE: u64 = 1 << 20;

/// The secrets that may go to `host:port`, and those that may not.
pub(crate) struct Scan {
    secrets: Arc<Vec<Secret>>,
    host: Host,
    port: u16,
    /// The longest placeholder, less one: what is held back between frames.
    keep: usize,
}

impl Scan {
    pub(crate) fn new(secrets: Arc<Vec<Secret>>, host: Host, port: u16) -> Scan {
        let keep = secrets
            .iter()
            .map(|s| s.placeholder.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        Scan {
            secrets,
            host,
            port,
            keep,
        }
    }

    /// Whether some secret's value is put in at this host (then the length may change).
    pub(crate) fn injects(&self) -> bool {
        self.secrets
            .iter()
            .any(|s| s.injects_at(&self.host, self.port))
    }

    /// What a streaming check must hold back between reads: a placeholder may start in it.
    pub(crate) fn keep(&self) -> usize {
        self.keep
    }

    /// The name of a secret whose placeholder is in `buf` and may not go to this host. For
    /// plain HTTP, where nothing is put in: a placeholder toward one of its injectHosts goes on
    /// as it is.
    pub(crate) fn leak_in(&self, buf: &[u8]) -> Option<&str> {
        self.secrets
            .iter()
            .find(|s| {
                !s.injects_at(&self.host, self.port)
                    && find(buf, s.placeholder.as_bytes()).is_some()
            })
            .map(|s| s.name.as_str())
    }

    /// Replaces the placeholders in `buf` (all of it when `last`, else all but a tail that may
    /// hold the start of one); returns what may be sent and leaves the tail in `buf`. A
    /// placeholder that may not go here: the secret's name.
    pub(crate) fn step(&self, buf: &mut Vec<u8>, last: bool) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        loop {
            let next = self
                .secrets
                .iter()
                .filter_map(|s| find(&buf[i..], s.placeholder.as_bytes()).map(|p| (p, s)))
                .min_by_key(|(p, _)| *p);
            let Some((pos, s)) = next else { break };
            if !s.injects_at(&self.host, self.port) {
                return Err(s.name.clone());
            }
            out.extend_from_slice(&buf[i..i + pos]);
            out.extend_from_slice(s.value().as_bytes());
            i += pos + s.placeholder.len();
        }
        let rest = &buf[i..];
        let cut = if last {
            rest.len()
        } else {
            rest.len().saturating_sub(self.keep)
        };
        out.extend_from_slice(&rest[..cut]);
        let tail = rest[cut..].to_vec();
        *buf = tail;
        Ok(out)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request body scanned as it streams.
pub(crate) struct Scanned {
    inner: Incoming,
    scan: Scan,
    carry: Vec<u8>,
    /// Trailers that came while bytes were still held back.
    trailers: Option<Frame<Bytes>>,
    done: bool,
    on_leak: Box<dyn Fn(String) + Send + Sync>,
}

impl Scanned {
    pub(crate) fn new(
        inner: Incoming,
        scan: Scan,
        on_leak: Box<dyn Fn(String) + Send + Sync>,
    ) -> Scanned {
        Scanned {
            inner,
            scan,
            carry: Vec::new(),
            trailers: None,
            done: false,
            on_leak,
        }
    }

    fn leak(&self, name: String) -> BoxError {
        (self.on_leak)(name.clone());
        format!("the placeholder of the masked credential {name} in the body").into()
    }
}

impl Body for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = &mut *self;
        loop {
            if me.done {
                if !me.carry.is_empty() {
                    let mut carry = std::mem::take(&mut me.carry);
                    return Poll::Ready(Some(match me.scan.step(&mut carry, true) {
                        Ok(out) => Ok(Frame::data(Bytes::from(out))),
                        Err(name) => Err(me.leak(name)),
                    }));
                }
                return Poll::Ready(me.trailers.take().map(Ok));
            }
            match Pin::new(&mut me.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => me.done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        me.carry.extend_from_slice(&data);
                        let mut carry = std::mem::take(&mut me.carry);
                        let step = me.scan.step(&mut carry, false);
                        me.carry = carry;
                        match step {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                            Err(name) => return Poll::Ready(Some(Err(me.leak(name)))),
                        }
                    }
                    Err(trailers) => {
                        me.trailers = Some(trailers);
                        me.done = true;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_across_frames_and_leaks_stop() {
        let s = Secret::new(
            "t",
            "TOKEN",
            "the-real-value".into(),
            &["api.example.com".to_string()],
        )
        .unwrap();
        let ph = s.placeholder.clone();
        let secrets = Arc::new(vec![s]);
        let scan = Scan::new(secrets.clone(), Host::Name("api.example.com".into()), 443);
        let text = format!("a={ph}&b={ph}!");
        let (one, two) = text.as_bytes().split_at(10);
        let mut carry = one.to_vec();
        let mut out = scan.step(&mut carry, false).unwrap();
        carry.extend_from_slice(two);
        out.extend(scan.step(&mut carry, true).unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a=the-real-value&b=the-real-value!"
        );
        let other = Scan::new(secrets, Host::Name("evil.example".into()), 443);
        assert_eq!(other.leak_in(text.as_bytes()), Some("TOKEN"));
        assert_eq!(scan.leak_in(text.as_bytes()), None);
        assert_eq!(other.leak_in(&text.as_bytes()[..12]), None);
        let mut buf = text.into_bytes();
        assert_eq!(other.step(&mut buf, true).unwrap_err(), "TOKEN");
    }
}
