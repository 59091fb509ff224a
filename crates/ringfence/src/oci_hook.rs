//! The createRuntime hook of an OCI bundle exported with `--gateway`: the bundle's only way
//! out. The runtime runs it on the host with the container's state on stdin, after the
//! container's namespaces exist and before its command starts. It brings the container's
//! loopback up, listens on the proxy ports there (the sockets are made inside the container's
//! network namespace, from a thread that enters it), and leaves a small relay behind that
//! carries each connection to the gateway from the host's namespace, and ends with the
//! container. Anything that fails fails the hook, and the runtime then does not start the
//! container.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use ringfence_linux::netns;
use ringfence_runtime::netenv::{HTTP_PORT, SOCKS_PORT};

/// Set in the relay, which the hook leaves behind with its descriptors at these numbers.
const RELAY: &str = "RINGFENCE_OCI_RELAY";
const FD_HTTP: RawFd = 3;
const FD_SOCKS: RawFd = 4;
const FD_PIDFD: RawFd = 5;

/// Checks a `--gateway` value: HOST:PORT, nothing else (no scheme, no credentials).
pub fn check_address(to: &str) -> Result<()> {
    if to.contains("://") || to.contains('@') || to.contains('/') {
        bail!("expected HOST:PORT (no scheme, credentials or path)");
    }
    match ringfence_policy::domains::split_host_port(to) {
        Ok(("", _)) => bail!("expected HOST:PORT (the host is missing)"),
        Ok((_, None)) => bail!("expected HOST:PORT (the port is missing)"),
        Ok((_, Some(_))) => Ok(()),
        Err(e) => bail!("{e}"),
    }
}

pub fn main(to: &str) -> Result<i32> {
    check_address(to)?;
    if std::env::var_os(RELAY).is_some() {
        return relay(to);
    }
    hook(to)
}

fn hook(to: &str) -> Result<i32> {
    let mut state = String::new();
    std::io::stdin()
        .read_to_string(&mut state)
        .context("reading the container's state on stdin")?;
    let state: serde_json::Value =
        serde_json::from_str(&state).context("the container's state on stdin is not JSON")?;
    let pid = state["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .context("the container's state on stdin has no pid")?;
    // The process held at once: its namespace is entered through the pidfd, never by a pid
    // that could have been reused meanwhile.
    let pidfd = netns::pidfd_open(pid)
        .with_context(|| format!("pidfd_open of the container's process {pid}"))?;
    // The gateway must answer now: a bundle whose only way out is closed does not start. The
    // relay is given the address checked here.
    let gateway = resolve(to)?;
    TcpStream::connect_timeout(&gateway, Duration::from_secs(5))
        .with_context(|| format!("the gateway {to} ({gateway}) does not answer"))?;
    let (http, socks) = netns::in_netns(&pidfd, || {
        ringfence_linux::mounts::loopback_up().map_err(std::io::Error::other)?;
        Ok((
            TcpListener::bind(("127.0.0.1", HTTP_PORT))?,
            TcpListener::bind(("127.0.0.1", SOCKS_PORT))?,
        ))
    })
    .with_context(|| {
        format!(
            "listening on 127.0.0.1:{HTTP_PORT} and :{SOCKS_PORT} in the network namespace of \
             process {pid} (the hook runs as root, in the runtime's namespaces, and enters it \
             through a pidfd: Linux 5.8 or later)"
        )
    })?;
    let exe = std::env::current_exe().context("finding ringfence's own binary")?;
    let mut cmd = std::process::Command::new(exe);
    let checked = gateway.to_string();
    cmd.args([
        ringfence_runtime::export::oci::GATEWAY_HOOK,
        "--to",
        &checked,
    ])
    .env(RELAY, "1")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    netns::spawn_with_fds(
        &mut cmd,
        &[http.as_raw_fd(), socks.as_raw_fd(), pidfd.as_raw_fd()],
    )
    .context("starting the gateway relay")?;
    Ok(0)
}

fn resolve(to: &str) -> Result<SocketAddr> {
    to.to_socket_addrs()
        .with_context(|| format!("resolving the gateway {to}"))?
        .next()
        .with_context(|| format!("the gateway {to} has no address"))
}

/// Connections the relay carries at once; one more waits in the listener's queue.
const MAX_CONNECTIONS: usize = 256;

/// The relay: accepts on the container's proxy ports and carries each connection to the
/// gateway, until the container's process ends. It holds no privilege (as nobody, with
/// no_new_privs), and at most [`MAX_CONNECTIONS`] connections at once.
fn relay(to: &str) -> Result<i32> {
    let gateway: SocketAddr = to
        .parse()
        .with_context(|| format!("the relay's gateway {to} is not an address"))?;
    let take = |fd| netns::take_inherited(fd).context("the relay's descriptors");
    let http = TcpListener::from(take(FD_HTTP)?);
    let socks = TcpListener::from(take(FD_SOCKS)?);
    let pidfd = take(FD_PIDFD)?;
    netns::become_nobody().context("dropping privileges")?;
    for l in [&http, &socks] {
        l.set_nonblocking(true).context("the relay's listeners")?;
    }
    let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let ready = netns::wait_readable(&[http.as_fd(), socks.as_fd(), pidfd.as_fd()])
            .context("waiting for connections")?;
        // The container's process ended: so does its way out.
        if ready[2] {
            return Ok(0);
        }
        if active.load(std::sync::atomic::Ordering::Acquire) >= MAX_CONNECTIONS {
            // Full: the next connections wait in the queue until one ends.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        for (l, _) in [&http, &socks].into_iter().zip(&ready).filter(|(_, r)| **r) {
            let client = match l.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    // Out of descriptors or memory: wait rather than spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let _ = client.set_nonblocking(false);
            active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let count = active.clone();
            let spawned = std::thread::Builder::new().spawn(move || {
                carry(client, gateway);
                count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            });
            if spawned.is_err() {
                // The connection was dropped with the closure.
                active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Carries one connection to the gateway and back, byte for byte.
fn carry(client: TcpStream, gateway: SocketAddr) {
    let Ok(up) = TcpStream::connect_timeout(&gateway, Duration::from_secs(10)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (Ok(client2), Ok(up2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    let Ok(back) = std::thread::Builder::new().spawn(move || one_way(up2, client2)) else {
        return;
    };
    one_way(client, up);
    let _ = back.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_addresses() {
        assert!(check_address("127.0.0.1:3128").is_ok());
        assert!(check_address("gateway.internal:3128").is_ok());
        assert!(check_address("[::1]:3128").is_ok());
        for bad in [
            "http://127.0.0.1:3128",
            "user:token@127.0.0.1:3128",
            "127.0.0.1",
            ":3128",
            "127.0.0.1:0",
            "127.0.0.1:http",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
