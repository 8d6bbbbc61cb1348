//! `signal`: signal-driven IO, the fifth of Stevens' models, which the notes leave out. Each
//! socket gets `O_ASYNC` and an owner (`F_SETOWN_EX`, this very thread): from then on the kernel
//! raises SIGIO whenever one becomes ready, and the process is free in phase 1 (it could
//! compute; here it waits for the signal with `sigtimedwait`, so no code runs in a handler).
//! Phase 2 is still a `recv`. SIGIO is a standard signal: several arrivals merge into one and it
//! does not say which socket, so on each signal every socket is asked (EAGAIN for the others).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};

use crate::server::{Limits, RECV_BUF, Stats, TICK, Table, accept_all, apply};

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    // Blocked in this thread, SIGIO stays pending until sigtimedwait takes it; it is directed
    // at this thread alone (F_OWNER_TID), so no other thread gets its default action (which
    // would end the process).
    let mut sigio = SigSet::empty();
    sigio.add(Signal::SIGIO);
    sigio.thread_block().context("pthread_sigmask(SIG_BLOCK, SIGIO)")?;
    let tid = common::threads::named::gettid();
    signal_driven(listener.as_raw_fd(), tid, stats)?;
    let mut table = Table::default();
    let mut buf = vec![0u8; RECV_BUF];
    // Whatever was ready before O_ASYNC was set raised no signal: look once.
    let mut look = true;
    loop {
        if !look {
            // The model's key call: wait for the kernel's signal.
            if stats.count_wait(|| wait_signal(&sigio, TICK)) {
                Stats::add(&stats.signals, 1);
            }
        }
        look = false;
        for fd in accept_all(listener, &mut table, limits, stats, |_| Ok(())) {
            signal_driven(fd, tid, stats)?;
            // Data that came before O_ASYNC was set raised no signal.
            look = true;
        }
        for fd in table.fds() {
            let Some(conn) = table.get_mut(fd) else { continue };
            let step = conn.on_ready(conn.wants_write(), &mut buf, limits, stats);
            apply(&mut table, fd, step, stats);
        }
        table.tick_if_due(limits, stats);
    }
}

/// `F_SETOWN_EX` and its `struct f_owner_ex` (`<fcntl.h>`; the libc crate lacks them).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// `fcntl(F_SETOWN_EX, thread)` then `fcntl(F_SETFL, O_ASYNC | O_NONBLOCK)`: the kernel now
/// signals this thread when `fd` becomes ready. (nix has no `F_SETOWN_EX`: libc it is.)
fn signal_driven(fd: RawFd, tid: i32, stats: &Stats) -> Result<()> {
    let owner = FOwnerEx { kind: F_OWNER_TID, pid: tid };
    Stats::add(&stats.syscalls, 3);
    // Safety: fcntl with F_SETOWN_EX reads the `f_owner_ex` it is given; the caller owns `fd`.
    if unsafe { libc::fcntl(fd, F_SETOWN_EX, &owner) } != 0 {
        bail!("fcntl(F_SETOWN_EX): {}", std::io::Error::last_os_error());
    }
    // Safety: F_GETFL / F_SETFL on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        bail!("fcntl(F_GETFL): {}", std::io::Error::last_os_error());
    }
    let flags = flags | libc::O_ASYNC | libc::O_NONBLOCK;
    // Safety: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } != 0 {
        bail!("fcntl(F_SETFL, O_ASYNC | O_NONBLOCK): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `sigtimedwait`: true when SIGIO came within `timeout`.
fn wait_signal(set: &SigSet, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let raw: &libc::sigset_t = set.as_ref();
    // Safety: sigtimedwait reads the set and the timeout, and may write the (unused) info.
    let signo = unsafe { libc::sigtimedwait(raw, std::ptr::null_mut(), &ts) };
    signo == libc::SIGIO
}
