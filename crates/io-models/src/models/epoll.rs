//! `epoll` (多路复用, Linux): the interest list is registered once with `epoll_ctl` and lives in
//! the kernel; `epoll_wait` returns only the ready sockets, so a call costs O(ready), not
//! O(all). Level-triggered: a socket with unread data is reported again at the next wait.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::server::{Limits, RECV_BUF, Stats, TICK, Table, accept_all, apply, set_nonblocking};

const LISTENER: u64 = u64::MAX;

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    set_nonblocking(listener.as_raw_fd(), true)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
    Stats::add(&stats.syscalls, 2);
    epoll.add(listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER)).context("epoll_ctl")?;
    let mut table = Table::default();
    let mut buf = vec![0u8; RECV_BUF];
    let mut events = vec![EpollEvent::empty(); 1024];
    loop {
        let timeout = EpollTimeout::from(TICK.as_millis() as u16);
        // The model's key call: the ready sockets, and only those.
        let n = match stats.count_wait(|| epoll.wait(&mut events, timeout)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for event in &events[..n] {
            if event.data() == LISTENER {
                for fd in accept_all(listener, &mut table, limits, stats, |_| Ok(())) {
                    Stats::add(&stats.syscalls, 1);
                    // Safety: the table owns the new descriptor.
                    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                    let interest = EpollEvent::new(EpollFlags::EPOLLIN, fd as u64);
                    epoll.add(borrowed, interest).context("epoll_ctl ADD")?;
                }
                continue;
            }
            let fd = event.data() as RawFd;
            let Some(conn) = table.get_mut(fd) else { continue };
            let was_writing = conn.wants_write();
            let step = conn.on_ready(
                event.events().contains(EpollFlags::EPOLLOUT),
                &mut buf,
                limits,
                stats,
            );
            // Closing the descriptor removes it from the interest list by itself.
            if let Some(wants_write) = apply(&mut table, fd, step, stats)
                && wants_write != was_writing
            {
                let flags = if wants_write { EpollFlags::EPOLLOUT } else { EpollFlags::EPOLLIN };
                Stats::add(&stats.syscalls, 1);
                // Safety: the table still owns the descriptor (the step kept it).
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                epoll
                    .modify(borrowed, &mut EpollEvent::new(flags, fd as u64))
                    .context("epoll_ctl MOD")?;
            }
        }
        table.tick_if_due(limits, stats);
    }
}
