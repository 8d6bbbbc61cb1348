//! `select` (多路复用): one `select(2)` call waits for many sockets at once, and says which are
//! ready; then `recv` copies (phase 2). The process copies the whole descriptor set into the
//! kernel and back on every call, and the kernel scans every descriptor up to the highest:
//! O(all connections) per call. A set holds only descriptors below `FD_SETSIZE` (1024): a
//! client whose descriptor is 1024 or more cannot be watched and is turned away.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::select::{FdSet, select};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::server::{Limits, RECV_BUF, Stats, TICK, Table, accept_all, apply, set_nonblocking};

/// The size of an `fd_set`: descriptors 0 to 1023.
pub const FD_SETSIZE: RawFd = libc::FD_SETSIZE as RawFd;

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    set_nonblocking(listener.as_raw_fd(), true)?;
    let mut table = Table::default();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        // The sets are rebuilt before every call: select overwrites them with the answer.
        let (listener_ready, ready) = {
            let mut read = FdSet::new();
            let mut write = FdSet::new();
            read.insert(listener.as_fd());
            for conn in table.iter() {
                // Safety: the table owns the descriptor and keeps it open while the sets live.
                let fd = unsafe { BorrowedFd::borrow_raw(conn.raw()) };
                if conn.wants_write() { write.insert(fd) } else { read.insert(fd) }
            }
            let mut timeout = TimeVal::milliseconds(TICK.as_millis() as i64);
            // The model's key call: wait for any of them.
            match stats.count_wait(|| select(None, &mut read, &mut write, None, &mut timeout)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("select"),
            }
            let listener_ready = read.contains(listener.as_fd());
            let ready: Vec<(RawFd, bool, bool)> = table
                .iter()
                .map(|c| {
                    // Safety: as above.
                    let fd = unsafe { BorrowedFd::borrow_raw(c.raw()) };
                    (c.raw(), read.contains(fd), write.contains(fd))
                })
                .filter(|&(_, r, w)| r || w)
                .collect();
            (listener_ready, ready)
        };
        for (fd, _readable, writable) in ready {
            let Some(conn) = table.get_mut(fd) else { continue };
            let step = conn.on_ready(writable, &mut buf, limits, stats);
            apply(&mut table, fd, step, stats);
        }
        if listener_ready {
            accept_all(listener, &mut table, limits, stats, |fd| {
                if fd >= FD_SETSIZE {
                    Err(format!("fd {fd} is beyond select's FD_SETSIZE ({FD_SETSIZE})"))
                } else {
                    Ok(())
                }
            });
        }
        table.tick_if_due(limits, stats);
    }
}
