//! `ringfence connect HOST PORT`: a tunnel from stdin/stdout to HOST:PORT through the egress
//! proxy (HTTP CONNECT). Used as ssh's ProxyCommand inside the sandbox, so `git clone git@...`
//! works for allowed hosts without nc or socat.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::RawFd;

use anyhow::{bail, Context, Result};

/// The longest proxy response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Reads the proxy's response head; returns the status line, the whole head and any bytes of
/// the tunnel that arrived with it.
fn read_head(stream: &mut TcpStream) -> Result<(String, String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf[end + 4..].to_vec();
            let status = head.lines().next().unwrap_or("").to_string();
            return Ok((status, head, rest));
        }
        if buf.len() > MAX_HEAD {
            bail!("the proxy's response is longer than {MAX_HEAD} bytes");
        }
        let n = stream
            .read(&mut chunk)
            .context("reading the proxy's response")?;
        if n == 0 {
            bail!("the proxy closed the connection before answering");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Copies until end of input or an error, writing each chunk as soon as it is read.
/// A standard stream read and written without buffering.
struct RawStream(RawFd);

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        ringfence_linux::sys::read_some(self.0, buf)
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ringfence_linux::sys::write_all(&self.0, buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pump(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A host name as it goes into a CONNECT target: IPv6 literals in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub fn connect(host: &str, port: u16, proxy: &str) -> Result<i32> {
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        bail!("not a host name: {host:?}");
    }
    let mut stream =
        TcpStream::connect(proxy).with_context(|| format!("connecting to the proxy at {proxy}"))?;
    let target = authority(host, port);
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .context("writing to the proxy")?;
    let (status, head, rest) = read_head(&mut stream)?;
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        let mut body = Vec::new();
        let _ = (&mut stream).take(4096).read_to_end(&mut body);
        let mut why = String::from_utf8_lossy(&rest).into_owned();
        why.push_str(&String::from_utf8_lossy(&body));
        let blocked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("x-proxy-error:"));
        bail!(
            "{} {target}: {}{}",
            if blocked {
                "the sandbox's network policy does not allow"
            } else {
                "the proxy refused"
            },
            status.trim(),
            if why.trim().is_empty() {
                String::new()
            } else {
                format!(" ({})", why.trim())
            }
        );
    }
    // Plain reads and writes on the raw descriptors: std's stdout flushes only at newlines,
    // and a tunnel carries binary data in both directions at once.
    let mut out = RawStream(1);
    let mut input = RawStream(0);
    out.write_all(&rest).context("writing to stdout")?;
    let mut upstream = stream
        .try_clone()
        .context("duplicating the tunnel socket")?;
    // stdin -> tunnel on its own thread; the tunnel's end ends the process.
    std::thread::spawn(move || {
        pump(&mut input, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    pump(&mut stream, &mut out);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_ipv6_targets() {
        assert_eq!(authority("github.com", 22), "github.com:22");
        assert_eq!(authority("::1", 22), "[::1]:22");
        assert_eq!(authority("[::1]", 22), "[::1]:22");
    }
}
