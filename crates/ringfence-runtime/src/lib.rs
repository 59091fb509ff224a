//! A ringfence run as a library.

pub mod audit;
pub mod caches;
pub mod netenv;
pub mod netrun;
pub mod overlay;
pub mod prepare;
pub mod runs;
mod socket_owner;
