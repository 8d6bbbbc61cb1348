//! Networking: what the IO-model demos and their benchmark share.
//!
//! - [`load`]: the load client (Linux: epoll): many connections on one thread, 127.0.0.1 only,
//!   every echoed byte checked; and the `/proc` readings around it (a process's CPU time,
//!   memory, the pid listening on a port).

#[cfg(target_os = "linux")]
pub mod load;
