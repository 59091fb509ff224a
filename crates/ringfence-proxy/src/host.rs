//! Host names as the proxy compares them; the rules live in `ringfence_policy::domains`, which
//! the shell analyser uses too, so that both read a host the same way.

pub use ringfence_policy::domains::{
    canonical_ip, normalize_host, parse_ipv4_any, parse_port, split_host_port, Host,
};
