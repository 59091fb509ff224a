//! ringfence's egress proxy. It speaks HTTP/1.1 (CONNECT and absolute-form requests) and
//! SOCKS5 on the same port, decides every destination against the network policy, resolves
//! allowed host names once and connects only to addresses that pass the resolved-address check,
//! and reports each decision through [`Hooks`]. It runs inside the sandbox's supervisor (on
//! listeners created in the sandbox's network namespace) or standalone as a gateway.
//!
//! What it never does: forward a request it could not parse strictly, connect to a host-local
//! address (loopback, link-local, metadata endpoints, this host's own addresses, ...) that an
//! allowed host name resolves to, or look a name up twice.
//!
//! The `--control-fd` protocol is in [`control`]; the standalone proxy with an external
//! decider (srt's proxy-only mode) in [`decided`] and [`decider`].

pub mod clients;
pub mod control;
pub mod decided;
pub mod decider;
pub mod host;
mod http;
pub mod mtls;
mod policy;
mod proxy;
mod refusal;
mod relay;
mod reverse;
mod route;
mod service;
mod socks;
mod splice;
pub mod tls;
pub mod transparent;

pub use policy::{embedded_ipv4, local_kind, NetPolicy, Verdict};
pub use proxy::{AskAnswer, AskQuery, Decision, DecisionRecord, Hooks, Limits, Protocol, Proxy};
pub use relay::{Relay, RelayRecord};
pub use reverse::Upstream;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy entry that cannot be compiled.
    #[error("{key}: \"{entry}\": {message}")]
    Entry {
        key: &'static str,
        entry: String,
        message: String,
    },
    /// A line on the control channel that is not understood.
    #[error("control line: {0}")]
    Control(String),
    /// TLS termination cannot be set up (its CA, the trust stores).
    #[error("{0}")]
    Tls(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
