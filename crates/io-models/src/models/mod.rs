//! The models, one file each; each keeps its key system calls in its own code. `main.rs`
//! (`serve_with`) hands each its listener.

#![cfg(target_os = "linux")]

pub mod asynchronous;
pub mod blocking;
pub mod epoll;
pub mod fork;
pub mod nonblocking;
pub mod poll;
pub mod select;
pub mod signal;
pub mod threads;
pub mod uring;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::Result;
use nix::errno::Errno;

use crate::server::Stats;

/// What a blocking model's `accept4` returned, counted as one system call: the new connection,
/// or `None` to call again (interrupted, a client gone before it was accepted, `SO_RCVTIMEO` run
/// out on the fork model's listener, or out of descriptors for a moment).
fn accepted(result: nix::Result<RawFd>, stats: &Stats) -> Result<Option<OwnedFd>> {
    Stats::add(&stats.syscalls, 1);
    match result {
        // Safety: accept4 returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EAGAIN) => Ok(None),
        Err(Errno::EMFILE | Errno::ENFILE) => {
            // Out of descriptors: leave the client in the backlog for a moment.
            std::thread::sleep(Duration::from_millis(10));
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::from(e).context("accept4")),
    }
}
