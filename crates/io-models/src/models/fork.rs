//! `fork`: a process per connection, as socketserver's `ForkingTCPServer`. The parent blocks in
//! `accept` and forks a child (`conn-N` in `ps`) that serves the client with blocking calls and
//! exits; the parent reaps its children (`waitpid`) between accepts, so none stays a zombie for
//! long. Python's ForkingMixIn stops accepting at 40 children (`max_children`) and makes the
//! 41st client wait unserved; here a client past `--max-connections` is told so and closed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::socket::{SockFlag, accept4, setsockopt, sockopt};

use common::process::{Process, StartMethod};

use super::accepted;
use crate::server::{
    Limits, Stats, next_conn_id, quiet, refuse_blocking, report_accepted, report_refused,
    serve_blocking_conn, server_full,
};

/// How often the parent wakes from `accept` to reap children (Python's `poll_interval` is 0.5 s).
const REAP_EVERY: Duration = Duration::from_millis(100);

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &'static Stats) -> Result<()> {
    // accept on a listener with SO_RCVTIMEO returns EAGAIN when the time passes: the parent
    // gets a moment to reap even while nobody connects.
    let every = nix::sys::time::TimeVal::new(0, REAP_EVERY.as_micros() as i64);
    setsockopt(listener, sockopt::ReceiveTimeout, &every).context("setsockopt(SO_RCVTIMEO)")?;
    let listener_fd = listener.as_raw_fd();
    let mut children: Vec<(u64, Process)> = Vec::new();
    loop {
        reap(&mut children, stats);
        // The parent blocks in accept until a client comes, or the reaping time is up.
        let got = accept4(listener_fd, SockFlag::SOCK_CLOEXEC);
        let Some(fd) = accepted(got, stats)? else { continue };
        if children.len() >= limits.max_connections {
            let why = server_full(limits);
            Stats::add(&stats.refused, 1);
            report_refused(&why);
            refuse_blocking(fd.as_raw_fd(), &why, stats);
            continue;
        }
        let conn = next_conn_id();
        let open = stats.opened();
        report_accepted(conn, fd.as_raw_fd(), open);
        let limits = *limits;
        // The model's key call: fork. The child has its copy of the connection and of the
        // listener; it closes the listener, serves, and exits (the counters page is shared).
        let mut child = Process::from_fn(format!("conn-{conn}"), move || {
            let _ = nix::unistd::close(listener_fd);
            serve_blocking_conn(&fd, conn, &limits, stats);
            Ok(())
        })
        .start_method(StartMethod::Fork);
        Stats::add(&stats.syscalls, 1);
        child.start().with_context(|| format!("forking the child of connection {conn}"))?;
        // The parent's copy of the connection was closed when the closure was dropped.
        if !quiet() {
            let pid = child.pid().unwrap_or(0);
            common::event!("forked", { "conn": conn, "pid": pid }, "forked pid {pid} for connection {conn}");
        }
        children.push((conn, child));
    }
}

/// `waitpid(pid, WNOHANG)` on every child (`is_alive`): the ended ones are reaped.
fn reap(children: &mut Vec<(u64, Process)>, stats: &Stats) {
    children.retain_mut(|(conn, child)| {
        Stats::add(&stats.syscalls, 1);
        if child.is_alive() {
            return true;
        }
        stats.closed();
        Stats::add(&stats.reaped, 1);
        if !quiet() {
            let pid = child.pid().unwrap_or(0);
            common::event!("reaped", { "conn": *conn, "pid": pid, "exitcode": child.exitcode() }, "reaped pid {pid} (connection {conn})");
        }
        false
    });
}
