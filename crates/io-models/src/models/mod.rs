//! The models, one file each; each keeps its key system calls in its own code.

#![cfg(target_os = "linux")]

mod asynchronous;
mod blocking;
mod epoll;
mod fork;
mod nonblocking;
mod poll;
mod select;
mod signal;
mod threads;
pub mod uring;

use std::os::fd::OwnedFd;

use anyhow::Result;

pub use crate::model::Model;
use crate::server::{Limits, Stats};

/// Serves on `listener` with `model` until the process is stopped.
pub fn serve(model: Model, listener: OwnedFd, limits: Limits, stats: &'static Stats) -> Result<()> {
    match model {
        Model::Blocking => blocking::serve(&listener, &limits, stats),
        Model::Threads => threads::serve(&listener, limits, stats),
        Model::Fork => fork::serve(&listener, &limits, stats),
        Model::Nonblocking => nonblocking::serve(&listener, &limits, stats),
        Model::Select => select::serve(&listener, &limits, stats),
        Model::Poll => poll::serve(&listener, &limits, stats),
        Model::Epoll => epoll::serve(&listener, &limits, stats),
        Model::Signal => signal::serve(&listener, &limits, stats),
        Model::Async => asynchronous::serve(listener, limits, stats),
        Model::Uring => uring::serve(&listener, &limits, stats),
    }
}

/// `accept4` on a blocking listener, retried on EINTR; `None` when `SO_RCVTIMEO` on the
/// listener ran out (the fork model uses it to reap its children).
fn accept_blocking(listener: &OwnedFd, stats: &Stats) -> Result<Option<OwnedFd>> {
    use nix::errno::Errno;
    use nix::sys::socket::{SockFlag, accept4};
    use std::os::fd::{AsRawFd, FromRawFd};
    loop {
        Stats::add(&stats.syscalls, 1);
        match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // Safety: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EMFILE | Errno::ENFILE) => {
                // Out of descriptors: leave the client in the backlog for a moment.
                std::thread::sleep(std::time::Duration::from_millis(10));
                return Ok(None);
            }
            Err(e) => return Err(anyhow::Error::from(e).context("accept4")),
        }
    }
}
