//! `nonblocking` (非阻塞IO): every socket `O_NONBLOCK`, and one loop that asks each of them
//! again and again. A `recv` with nothing to read answers EAGAIN at once, so the process never
//! sleeps: phase 1 becomes a busy loop that burns a whole CPU while nobody talks (the `eagain`
//! counter and the CPU time show it). Phase 2 still happens inside `recv`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use anyhow::Result;

use crate::server::{Limits, RECV_BUF, Stats, Table, accept_all, apply, set_nonblocking};

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    set_nonblocking(listener.as_raw_fd(), true)?;
    let mut table = Table::default();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let pass = Instant::now();
        let copied_before = stats.copy_ns.load(std::sync::atomic::Ordering::Relaxed);
        accept_all(listener, &mut table, limits, stats, |_| Ok(()));
        for fd in table.fds() {
            let Some(conn) = table.get_mut(fd) else { continue };
            // Ask every socket, ready or not: most answers are EAGAIN.
            let step = conn.on_ready(conn.wants_write(), &mut buf, limits, stats);
            apply(&mut table, fd, step, stats);
        }
        // A pass that copied nothing was spent waiting for data: phase 1, on the CPU.
        if stats.copy_ns.load(std::sync::atomic::Ordering::Relaxed) == copied_before {
            Stats::add(&stats.wait_ns, pass.elapsed().as_nanos() as u64);
        }
        table.tick_if_due(limits, stats);
    }
}
