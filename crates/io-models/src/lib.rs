//! The io-models demo's library: the load client ([`client`]: one thread, epoll, 127.0.0.1
//! only, every echoed byte checked) that drives the demo's servers in its `load`, `compare`,
//! `idle` and `explain` parts, and the servers of the bench suite `io`.

#[cfg(target_os = "linux")]
pub mod client;
