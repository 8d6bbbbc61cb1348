//! `threads`: a thread per connection, as socketserver's `ThreadingTCPServer`. The main thread
//! blocks in `accept`; each client gets a named thread (`conn-N` in `ps -L`) that blocks in
//! its own `recv`. Simple and fair, and each thread costs a stack and a kernel task.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::sys::socket::{SockFlag, accept4};

use common::threads::named;

use super::accepted;
use crate::server::{
    Limits, Stats, next_conn_id, refuse_blocking, report_accepted, report_refused,
    serve_blocking_conn, server_full,
};

pub fn serve(listener: &OwnedFd, limits: Limits, stats: &'static Stats) -> Result<()> {
    loop {
        // The main thread blocks in accept until a client comes; each client's thread then
        // blocks in its own recv (`serve_blocking_conn`).
        let got = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC);
        let Some(fd) = accepted(got, stats)? else { continue };
        if stats.open_now() >= limits.max_connections {
            let why = server_full(&limits);
            Stats::add(&stats.refused, 1);
            report_refused(&why);
            // The refusal drains the client for a moment: not in the accept loop.
            named::spawn("refuse", move || refuse_blocking(fd.as_raw_fd(), &why, stats))
                .context("starting a refusing thread")?;
            continue;
        }
        let conn = next_conn_id();
        let open = stats.opened();
        report_accepted(conn, fd.as_raw_fd(), open);
        // The model's key step: one thread per connection.
        named::spawn(&format!("conn-{conn}"), move || {
            serve_blocking_conn(&fd, conn, &limits, stats);
            drop(fd);
            stats.closed();
        })
        .with_context(|| format!("starting the thread of connection {conn}"))?;
    }
}
