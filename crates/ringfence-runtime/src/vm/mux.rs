//! TCP streams over one byte channel (the guest's virtio-serial port): a frame is a kind, a
//! stream number and a length, then that many bytes. The guest opens streams (to a port of
//! the supervisor's proxy), both sides send data and close their half; PID 1 ends with the
//! command's exit status. No flow control beyond the channel's own: a stalled reader stalls
//! the channel, which is good enough for a proxy's few connections.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

pub const OPEN: u8 = 1;
pub const DATA: u8 = 2;
pub const CLOSE: u8 = 3;
pub const EXIT: u8 = 4;
pub const TIMING: u8 = 5;
/// PID 1 is about to start the inner run: the guest booted.
pub const STARTED: u8 = 6;
/// The command's stdin, from the host side; an empty payload is its end.
pub const STDIN: u8 = 7;

const HEADER: usize = 9;
const MAX_FRAME: usize = 1 << 20;

/// The channel's sending half, shared by every stream.
#[derive(Clone)]
pub struct Sender(Arc<Mutex<Box<dyn Write + Send>>>);

impl Sender {
    pub fn new(w: impl Write + Send + 'static) -> Sender {
        Sender(Arc::new(Mutex::new(Box::new(w))))
    }

    pub fn send(&self, kind: u8, id: u32, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.push(kind);
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        let mut w = self
            .0
            .lock()
            .map_err(|_| io::Error::other("the channel's lock is poisoned"))?;
        w.write_all(&frame)?;
        w.flush()
    }
}

/// The next frame, `None` at the channel's end.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, u32, Vec<u8>)>> {
    let mut h = [0u8; HEADER];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let id = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], id, payload)))
}

/// The open streams of one side, by number.
#[derive(Clone, Default)]
pub struct Streams(Arc<Mutex<HashMap<u32, TcpStream>>>);

impl Streams {
    /// Registers `stream` and copies what it reads into DATA frames until its end (then CLOSE).
    pub fn attach(&self, id: u32, stream: TcpStream, tx: Sender) {
        let Ok(mut reading) = stream.try_clone() else {
            let _ = tx.send(CLOSE, id, b"");
            return;
        };
        if let Ok(mut m) = self.0.lock() {
            m.insert(id, stream);
        }
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reading.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(DATA, id, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(CLOSE, id, b"");
        });
    }

    fn data(&self, id: u32, bytes: &[u8]) {
        let s = self
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&id).and_then(|s| s.try_clone().ok()));
        if let Some(mut s) = s {
            if s.write_all(bytes).is_err() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    fn close(&self, id: u32) {
        if let Some(s) = self.0.lock().ok().and_then(|mut m| m.remove(&id)) {
            let _ = s.shutdown(Shutdown::Write);
        }
    }
}

/// What the receiving loop hands to its side.
pub enum Event {
    Open { id: u32, port: u16 },
    Exit(i32),
    Timing(String),
    Started,
    Stdin(Vec<u8>),
}

/// Reads frames until the channel ends, delivering data and closes to `streams` and the rest
/// to `on`.
pub fn receive(mut r: impl Read, streams: &Streams, mut on: impl FnMut(Event)) -> io::Result<()> {
    while let Some((kind, id, payload)) = read_frame(&mut r)? {
        match kind {
            DATA => streams.data(id, &payload),
            CLOSE => streams.close(id),
            OPEN if payload.len() == 2 => on(Event::Open {
                id,
                port: u16::from_be_bytes([payload[0], payload[1]]),
            }),
            EXIT if payload.len() == 4 => on(Event::Exit(i32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ]))),
            STARTED => on(Event::Started),
            STDIN => on(Event::Stdin(payload)),
            TIMING => on(Event::Timing(
                String::from_utf8_lossy(&payload).into_owned(),
            )),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an unknown frame (kind {kind}, {} bytes)", payload.len()),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let tx = Sender::new(W(buf.clone()));
        tx.send(OPEN, 7, &3128u16.to_be_bytes()).unwrap();
        tx.send(STARTED, 0, b"").unwrap();
        tx.send(STDIN, 0, b"in").unwrap();
        tx.send(STDIN, 0, b"").unwrap();
        tx.send(EXIT, 0, &42i32.to_be_bytes()).unwrap();
        let bytes = buf.lock().unwrap().clone();
        let mut seen = Vec::new();
        receive(&bytes[..], &Streams::default(), |e| match e {
            Event::Open { id, port } => seen.push(format!("open {id} {port}")),
            Event::Exit(c) => seen.push(format!("exit {c}")),
            Event::Timing(t) => seen.push(t),
            Event::Started => seen.push("started".into()),
            Event::Stdin(b) => seen.push(format!("stdin {b:?}")),
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "open 7 3128",
                "started",
                "stdin [105, 110]",
                "stdin []",
                "exit 42"
            ]
        );
        assert!(receive(
            &[9u8, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &Streams::default(),
            |_| {}
        )
        .is_err());
    }
}
