//! `poll` (多路复用): like select, without the 1024 cap: an array of `pollfd` (descriptor,
//! events wanted, events that happened) goes into the kernel and back on every call, and the
//! kernel looks at each of them: still O(all connections) per call.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::server::{Limits, RECV_BUF, Stats, TICK, Table, accept_all, apply, set_nonblocking};

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    set_nonblocking(listener.as_raw_fd(), true)?;
    let mut table = Table::default();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let ready: Vec<(RawFd, PollFlags)> = {
            let mut fds = Vec::with_capacity(table.len() + 1);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            for conn in table.iter() {
                // Safety: the table owns the descriptor and keeps it open while `fds` lives.
                let fd = unsafe { BorrowedFd::borrow_raw(conn.raw()) };
                let wanted =
                    if conn.wants_write() { PollFlags::POLLOUT } else { PollFlags::POLLIN };
                fds.push(PollFd::new(fd, wanted));
            }
            let timeout = PollTimeout::from(TICK.as_millis() as u16);
            // The model's key call: wait for any of them.
            match stats.count_wait(|| poll(&mut fds, timeout)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            fds.iter()
                .filter_map(|p| {
                    let got = p.revents().unwrap_or(PollFlags::empty());
                    (!got.is_empty()).then(|| (p.as_fd().as_raw_fd(), got))
                })
                .collect()
        };
        for (fd, got) in ready {
            if fd == listener.as_raw_fd() {
                accept_all(listener, &mut table, limits, stats, |_| Ok(()));
                continue;
            }
            let Some(conn) = table.get_mut(fd) else { continue };
            // POLLIN, POLLHUP or POLLERR: recv tells which.
            let step = conn.on_ready(got.contains(PollFlags::POLLOUT), &mut buf, limits, stats);
            apply(&mut table, fd, step, stats);
        }
        table.tick_if_due(limits, stats);
    }
}
