//! `uring` (异步IO for real): io_uring. The process puts requests (accept, recv, send) in a
//! submission ring shared with the kernel and collects completions from a second ring; the
//! kernel waits for the data *and* copies it into the buffer (both phases), and one
//! `io_uring_enter` submits a whole batch and waits for the next ones, so the system calls per
//! request fall far below one. Where io_uring is refused (`EPERM` under Docker's default seccomp
//! profile, or `kernel.io_uring_disabled`), the model says why and is skipped.
//!
//! (glibc's POSIX aio, `aio_read`, is threads in disguise: its reads run in helper threads that
//! block. io_uring is the kernel's own.)

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use io_uring::{IoUring, opcode, squeue, types};
use nix::sys::socket::{Shutdown, shutdown};

use crate::server::{
    Limits, Lines, RECV_BUF, REFUSE_GRACE, Reason, Stats, TooLong, error_line, idle_too_long,
    next_conn_id, no_delay, report_accepted, report_closed, report_refused, server_full, too_long,
};

const ENTRIES: u32 = 1024;
const TICK: Duration = Duration::from_millis(100);
/// How long the kernel may hold back a first completion to gather more (microseconds): the
/// latency traded for fewer system calls.
const MIN_WAIT_US: u32 = 50;
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

/// Why io_uring cannot be used here, or `None` when it can (a ring is set up and dropped).
pub fn refused() -> Option<String> {
    match IoUring::new(8) {
        Ok(_) => None,
        Err(e) => Some(why_refused(&e)),
    }
}

fn why_refused(e: &std::io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring_setup: EPERM (kernel.io_uring_disabled = {sysctl}; containers often \
             forbid io_uring in their seccomp profile)"
        ),
        Some(libc::ENOSYS) => "io_uring_setup: ENOSYS (this kernel has no io_uring)".into(),
        _ => format!("io_uring_setup: {e} (kernel.io_uring_disabled = {sysctl})"),
    }
}

/// One connection: its buffers stay put while the kernel reads into or sends from them. A recv
/// and a send may be in flight at once (into `inbuf`, from `out`), so an echo and the wait for
/// the next line go to the kernel in the same batch.
struct UConn {
    fd: OwnedFd,
    id: u64,
    lines: Lines,
    inbuf: Box<[u8]>,
    /// The bytes of the send in flight (untouched until it completes).
    out: Vec<u8>,
    sent: usize,
    /// Echo bytes produced while a send was in flight: sent next.
    queued: Vec<u8>,
    recv_armed: bool,
    sending: bool,
    /// The connection is over (EOF, error): closed once nothing is in flight.
    ended: Option<Reason>,
    last_active: Instant,
    /// The error line was sent: the connection is read until EOF, then closed.
    closing: Option<Reason>,
    requests: u64,
    counted: bool,
}

/// Echo bytes a client may have waiting before its reads pause (it sends without reading).
const MAX_QUEUED: usize = 1024 * 1024;

fn user_data(fd: RawFd, op: u64) -> u64 {
    ((fd as u64) << 8) | op
}

pub fn serve(listener: &OwnedFd, limits: &Limits, stats: &Stats) -> Result<()> {
    let mut ring = IoUring::new(ENTRIES).map_err(|e| anyhow!(why_refused(&e)))?;
    let mut conns: HashMap<RawFd, UConn> = HashMap::new();
    let mut queue: Vec<squeue::Entry> = Vec::new();
    let listen_fd = types::Fd(listener.as_raw_fd());
    queue.push(accept_entry(listen_fd));
    let batching = ring.params().is_feature_min_timeout();
    let mut last_tick = Instant::now();
    let timeout = types::Timespec::new().nsec(TICK.as_nanos() as u32);
    loop {
        let mut pending = queue.drain(..).peekable();
        while pending.peek().is_some() {
            {
                let mut sq = ring.submission();
                while let Some(entry) = pending.peek() {
                    // Safety: every buffer an entry points to lives in a `UConn` that stays in
                    // `conns` (boxed, never moved or resized) until its completion comes back.
                    if unsafe { sq.push(entry) }.is_err() {
                        break;
                    }
                    pending.next();
                }
            }
            if pending.peek().is_some() {
                // The ring is full (a burst of new clients): hand this batch over first.
                Stats::add(&stats.syscalls, 1);
                ring.submit().context("io_uring_enter")?;
            }
        }
        drop(pending);
        // The model's key call: submit the batch and wait for completions (or the tick). Where
        // the kernel can (6.12+), it waits for up to half the connections' completions but no
        // more than MIN_WAIT after the first one: bigger batches, fewer enters.
        let (want, args) = if batching {
            let want = (conns.len() / 2).clamp(1, 64);
            (want, types::SubmitArgs::new().timespec(&timeout).min_wait_usec(MIN_WAIT_US))
        } else {
            (1, types::SubmitArgs::new().timespec(&timeout))
        };
        match stats.count_wait(|| ring.submitter().submit_with_args(want, &args)) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e).context("io_uring_enter"),
        }
        // Completions keep arriving while these are handled: take them too before entering
        // again, so that one io_uring_enter serves as many as possible.
        loop {
            let completions: Vec<(u64, i32)> =
                ring.completion().map(|c| (c.user_data(), c.result())).collect();
            if completions.is_empty() {
                break;
            }
            for (data, result) in completions {
                let op = data & 0xff;
                let fd = (data >> 8) as RawFd;
                match op {
                    ACCEPT => {
                        queue.push(accept_entry(listen_fd));
                        if result < 0 {
                            continue;
                        }
                        // Safety: the accept completion's result is a new descriptor we own.
                        let fd = unsafe { OwnedFd::from_raw_fd(result) };
                        no_delay(&fd, stats);
                        let raw = fd.as_raw_fd();
                        let full = stats.open_now() >= limits.max_connections;
                        let mut conn = UConn {
                            fd,
                            id: next_conn_id(),
                            lines: Lines::default(),
                            inbuf: vec![0u8; RECV_BUF].into_boxed_slice(),
                            out: Vec::new(),
                            sent: 0,
                            queued: Vec::new(),
                            recv_armed: false,
                            sending: false,
                            ended: None,
                            last_active: Instant::now(),
                            closing: None,
                            requests: 0,
                            counted: !full,
                        };
                        if full {
                            let why = server_full(limits);
                            Stats::add(&stats.refused, 1);
                            report_refused(&why);
                            start_closing(&mut conn, why, stats);
                        } else {
                            let open = stats.opened();
                            report_accepted(conn.id, raw, open);
                        }
                        arm_recv(&mut conn, &mut queue);
                        conns.insert(raw, conn);
                    }
                    RECV => {
                        let Some(conn) = conns.get_mut(&fd) else { continue };
                        conn.recv_armed = false;
                        on_recv(conn, result, limits, stats, &mut queue);
                        if done(conn) {
                            close(&mut conns, fd, stats);
                        }
                    }
                    SEND => {
                        let Some(conn) = conns.get_mut(&fd) else { continue };
                        conn.sending = false;
                        on_send(conn, result, stats, &mut queue);
                        if done(conn) {
                            close(&mut conns, fd, stats);
                        }
                    }
                    _ => {}
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            let now = Instant::now();
            let mut finished = Vec::new();
            for (&fd, conn) in conns.iter_mut() {
                if conn.ended.is_some() {
                    continue;
                }
                let quiet_for = now.duration_since(conn.last_active);
                let idle = conn.closing.is_none() && quiet_for >= limits.idle;
                let drained = conn.closing.is_some() && quiet_for >= REFUSE_GRACE;
                if idle {
                    start_closing(conn, idle_too_long(limits), stats);
                }
                if (idle || drained) && conn.recv_armed {
                    // Its recv is in flight: shutting the read side makes it complete with 0.
                    Stats::add(&stats.syscalls, 1);
                    let _ = shutdown(conn.fd.as_raw_fd(), Shutdown::Read);
                } else if idle || drained {
                    conn.ended = conn.closing.take();
                    if done(conn) {
                        finished.push(fd);
                    }
                }
            }
            for fd in finished {
                close(&mut conns, fd, stats);
            }
            last_tick = now;
        }
    }
}

/// A recv completed: the kernel already waited and copied; the bytes are in `inbuf`.
fn on_recv(
    conn: &mut UConn,
    result: i32,
    limits: &Limits,
    stats: &Stats,
    queue: &mut Vec<squeue::Entry>,
) {
    if result < 0 {
        let why = std::io::Error::from_raw_os_error(-result);
        let failed = Reason::Failed(format!("recv: {why}"));
        conn.ended = Some(conn.closing.take().unwrap_or(failed));
        return;
    }
    if result == 0 {
        conn.ended = Some(match conn.closing.take() {
            Some(reason) => reason,
            None => {
                // A last line without its newline is echoed too.
                let rest = conn.lines.take_rest();
                conn.queued.extend_from_slice(&rest);
                kick_send(conn, queue);
                Reason::Left
            }
        });
        return;
    }
    conn.last_active = Instant::now();
    if conn.closing.is_none() {
        let n = result as usize;
        match conn.lines.feed(&conn.inbuf[..n], limits.max_line, &mut conn.queued) {
            Ok(count) => {
                conn.requests += count;
                Stats::add(&stats.requests, count);
                kick_send(conn, queue);
            }
            Err(TooLong) => start_closing(conn, too_long(limits), stats),
        }
    }
    if conn.queued.len() < MAX_QUEUED {
        arm_recv(conn, queue);
    }
}

/// A send completed: the rest of it, or the next echo; reads resume if they had paused.
fn on_send(conn: &mut UConn, result: i32, stats: &Stats, queue: &mut Vec<squeue::Entry>) {
    if result < 0 {
        let why = std::io::Error::from_raw_os_error(-result);
        conn.ended.get_or_insert(Reason::Failed(format!("send: {why}")));
        if conn.recv_armed {
            // Make the pending recv complete, so the connection can be closed.
            Stats::add(&stats.syscalls, 1);
            let _ = shutdown(conn.fd.as_raw_fd(), Shutdown::Both);
        }
        return;
    }
    conn.sent += result as usize;
    if conn.sent < conn.out.len() {
        push_send(conn, queue);
        return;
    }
    conn.out.clear();
    conn.sent = 0;
    kick_send(conn, queue);
    if conn.ended.is_none() && conn.queued.len() < MAX_QUEUED {
        arm_recv(conn, queue);
    }
}

/// Nothing in flight and the connection over: it can be closed.
fn done(conn: &UConn) -> bool {
    conn.ended.is_some() && !conn.sending && !conn.recv_armed
}

fn arm_recv(conn: &mut UConn, queue: &mut Vec<squeue::Entry>) {
    if conn.recv_armed {
        return;
    }
    conn.recv_armed = true;
    let fd = conn.fd.as_raw_fd();
    let entry = opcode::Recv::new(types::Fd(fd), conn.inbuf.as_mut_ptr(), conn.inbuf.len() as u32)
        .build()
        .user_data(user_data(fd, RECV));
    queue.push(entry);
}

/// Starts sending the queued echo bytes, unless a send is already in flight.
fn kick_send(conn: &mut UConn, queue: &mut Vec<squeue::Entry>) {
    if conn.sending || conn.queued.is_empty() {
        return;
    }
    std::mem::swap(&mut conn.out, &mut conn.queued);
    conn.sent = 0;
    push_send(conn, queue);
}

fn push_send(conn: &mut UConn, queue: &mut Vec<squeue::Entry>) {
    conn.sending = true;
    let fd = conn.fd.as_raw_fd();
    let rest = &conn.out[conn.sent..];
    let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(fd, SEND));
    queue.push(entry);
}

/// The error line (a plain `send`: it is rare), `shutdown(SHUT_WR)`; the connection is read
/// until EOF and closed.
fn start_closing(conn: &mut UConn, why: String, stats: &Stats) {
    conn.queued.clear();
    let _ = crate::server::send_all(conn.fd.as_raw_fd(), &error_line(&why), stats);
    Stats::add(&stats.syscalls, 1);
    let _ = shutdown(conn.fd.as_raw_fd(), Shutdown::Write);
    conn.closing = Some(Reason::Error(why));
    conn.last_active = Instant::now();
}

fn close(conns: &mut HashMap<RawFd, UConn>, fd: RawFd, stats: &Stats) {
    if let Some(mut conn) = conns.remove(&fd) {
        Stats::add(&stats.syscalls, 1);
        if conn.counted {
            stats.closed();
            let reason = conn.ended.take().unwrap_or(Reason::Left);
            report_closed(conn.id, &reason, conn.requests);
        }
    }
}

fn accept_entry(listen_fd: types::Fd) -> squeue::Entry {
    opcode::Accept::new(listen_fd, std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT)
}
