//! Which program inside the sandbox opened a TCP connection, for the activity log: the
//! connection is found in the sandbox's own socket table (`/proc/PID1/net/tcp`, `tcp6`) by its
//! two addresses, and its socket among the descriptors of the sandbox's processes (PID 1 and
//! its descendants). A report only: a program that exits, or hands the socket on, is named
//! wrongly or not at all.

use std::net::{IpAddr, SocketAddr};

/// Most processes looked at; a sandbox with more is not searched further.
const MAX_PROCESSES: usize = 4096;

/// The name (`comm`) of the sandbox process holding the socket whose local end is `local` and
/// remote end `remote`, looked up from the sandbox's PID 1 (`pid1`, a host pid).
pub fn program(pid1: i32, local: SocketAddr, remote: SocketAddr) -> Option<String> {
    let inode = inode(pid1, local, remote)?;
    let wanted = format!("socket:[{inode}]");
    for pid in processes(pid1) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                return Some(comm.trim_end().escape_debug().to_string());
            }
        }
    }
    None
}

/// The inode of the socket `local` -> `remote` in the sandbox's network namespace.
fn inode(pid1: i32, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let mut forms = vec![("tcp6", hex6(local), hex6(remote))];
    if local.is_ipv4() {
        forms.insert(0, ("tcp", hex4(local), hex4(remote)));
    }
    for (file, l, r) in forms {
        let (Some(l), Some(r)) = (l, r) else { continue };
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid1}/net/{file}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1] == l && f[2] == r {
                return f[9].parse().ok().filter(|&i| i != 0);
            }
        }
    }
    None
}

/// `/proc/net/tcp`'s form of an IPv4 address and port: the address as the kernel's
/// native-order word, the port as a number.
fn hex4(a: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = a.ip() else { return None };
    Some(format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        a.port()
    ))
}

/// `/proc/net/tcp6`'s form: four native-order words; an IPv4 address as IPv4-mapped.
fn hex6(a: SocketAddr) -> Option<String> {
    let octets = match a.ip() {
        IpAddr::V6(ip) => ip.octets(),
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
    };
    let mut s = String::with_capacity(37);
    for w in octets.chunks_exact(4) {
        s.push_str(&format!(
            "{:08X}",
            u32::from_ne_bytes([w[0], w[1], w[2], w[3]])
        ));
    }
    s.push_str(&format!(":{:04X}", a.port()));
    Some(s)
}

/// PID 1 and its descendants, children before their own children (breadth first).
fn processes(pid1: i32) -> Vec<i32> {
    let mut out = vec![pid1];
    let mut next = 0;
    while next < out.len() && out.len() < MAX_PROCESSES {
        let pid = out[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    // The command is more likely the client than PID 1: look at PID 1 last.
    out.rotate_left(1);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn finds_this_process_by_its_own_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let name = program(
            std::process::id() as i32,
            c.local_addr().unwrap(),
            c.peer_addr().unwrap(),
        );
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(name.as_deref(), Some(comm.trim_end()));
        // No such connection: nobody.
        let gone = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            program(std::process::id() as i32, gone, c.peer_addr().unwrap()),
            None
        );
    }

    #[test]
    fn the_kernels_address_forms() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(hex4(a).unwrap(), "0100007F:1F90");
            assert_eq!(hex6(a).unwrap(), "0000000000000000FFFF00000100007F:1F90");
            let v6: SocketAddr = "[::1]:5432".parse().unwrap();
            assert_eq!(hex6(v6).unwrap(), "00000000000000000000000001000000:1538");
        }
    }
}
