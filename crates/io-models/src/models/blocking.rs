//! `blocking` (阻塞IO): one connection at a time. `accept` blocks until a client comes, then
//! `recv` blocks through both phases until that client leaves; a second client waits in the
//! listen queue meanwhile, and one idle client stalls everybody (until the idle limit).

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::Result;
use nix::sys::socket::{SockFlag, accept4};

use super::accepted;
use crate::server::{Limits, Stats, next_conn_id, report_accepted, serve_blocking_conn};

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    loop {
        // accept blocks until a client comes: phase 1 of a connection.
        let got = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC);
        let Some(fd) = accepted(got, stats)? else { continue };
        let conn = next_conn_id();
        let open = stats.opened();
        report_accepted(conn, fd.as_raw_fd(), open);
        // Everything else waits until this client leaves.
        serve_blocking_conn(&fd, conn, limits, stats);
        drop(fd);
        stats.closed();
    }
}
