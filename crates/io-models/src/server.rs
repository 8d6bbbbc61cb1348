//! What every model's server shares: the listening socket (127.0.0.1 only), the bounds a client
//! cannot exceed, the line echo itself, the counters each model keeps of its own system calls
//! and of the two phases, and the connection state machine of the readiness-based models.
//!
//! The system calls stay visible: `socket`, `bind`, `listen`, `recv`, `send`, `setsockopt`,
//! `shutdown` are called here and in the models' own files through `nix`.

#![cfg(target_os = "linux")]

use std::net::Ipv4Addr;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, SockaddrIn, bind, listen, recv,
    send, setsockopt, shutdown, socket, sockopt,
};

use common::report;

/// The listen queue: connections the kernel completes before the server accepts them.
pub const BACKLOG: i32 = 1024;
/// The buffer one `recv` fills.
pub const RECV_BUF: usize = 16 * 1024;
/// How long a refused client has to read its error line before the server closes for good.
pub const REFUSE_GRACE: Duration = Duration::from_millis(500);

/// What a client cannot exceed. Each is a flag of `serve` with a default and a cap.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Connections open at once; the next client gets one error line and is closed.
    pub max_connections: usize,
    /// Bytes in one line, `\n` included; a longer line gets its client an error line.
    pub max_line: usize,
    /// A client silent for this long gets an error line and is closed.
    pub idle: Duration,
}

/// Counters a server keeps of itself, in a page shared with the processes it forks (the fork
/// model's children count into it too) and with a parent that forked the server (`compare`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines echoed.
    pub requests: AtomicU64,
    /// System calls made for the IO (accept, recv, send, the waits, fcntl, epoll_ctl, ...).
    pub syscalls: AtomicU64,
    /// Calls that answered EAGAIN: nothing was ready.
    pub eagain: AtomicU64,
    /// Returns from the waiting call (select, poll, epoll_wait, sigtimedwait, io_uring_enter).
    pub wakeups: AtomicU64,
    /// SIGIO signals taken (the signal model).
    pub signals: AtomicU64,
    /// Phase 1 seen by the process: nanoseconds spent waiting for readiness (blocked in the
    /// waiting call, or spinning on EAGAIN).
    pub wait_ns: AtomicU64,
    /// Phase 2: nanoseconds in `recv` calls that copied data, once the data was ready.
    pub copy_ns: AtomicU64,
    /// Both phases in one blocking call: nanoseconds in `recv` on a blocking socket.
    pub both_ns: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub open: AtomicU64,
    pub max_open: AtomicU64,
    /// Children of the fork model reaped.
    pub reaped: AtomicU64,
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Snapshot {
    pub requests: u64,
    pub syscalls: u64,
    pub eagain: u64,
    pub wakeups: u64,
    pub signals: u64,
    pub wait_ns: u64,
    pub copy_ns: u64,
    pub both_ns: u64,
    pub accepted: u64,
    pub refused: u64,
    pub open: u64,
    pub max_open: u64,
    pub reaped: u64,
}

impl Snapshot {
    /// Per request, or 0 before the first request.
    pub fn per_request(&self, value: u64) -> f64 {
        if self.requests == 0 { 0.0 } else { value as f64 / self.requests as f64 }
    }

    /// The difference since `before`.
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests - before.requests,
            syscalls: self.syscalls - before.syscalls,
            eagain: self.eagain - before.eagain,
            wakeups: self.wakeups - before.wakeups,
            signals: self.signals - before.signals,
            wait_ns: self.wait_ns - before.wait_ns,
            copy_ns: self.copy_ns - before.copy_ns,
            both_ns: self.both_ns - before.both_ns,
            accepted: self.accepted - before.accepted,
            refused: self.refused - before.refused,
            open: self.open,
            max_open: self.max_open,
            reaped: self.reaped - before.reaped,
        }
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            requests: g(&self.requests),
            syscalls: g(&self.syscalls),
            eagain: g(&self.eagain),
            wakeups: g(&self.wakeups),
            signals: g(&self.signals),
            wait_ns: g(&self.wait_ns),
            copy_ns: g(&self.copy_ns),
            both_ns: g(&self.both_ns),
            accepted: g(&self.accepted),
            refused: g(&self.refused),
            open: g(&self.open),
            max_open: g(&self.max_open),
            reaped: g(&self.reaped),
        }
    }

    /// One more connection open: returns how many are open now.
    pub fn opened(&self) -> u64 {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_open.fetch_max(open, Ordering::Relaxed);
        Stats::add(&self.accepted, 1);
        open
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Relaxed) as usize
    }

    /// Makes a model's waiting call (select, poll, epoll_wait, sigtimedwait, io_uring_enter)
    /// and counts it: one system call, the time it waited (phase 1), one wakeup.
    pub fn count_wait<T>(&self, wait: impl FnOnce() -> T) -> T {
        Stats::add(&self.syscalls, 1);
        let began = Instant::now();
        let got = wait();
        Stats::add(&self.wait_ns, began.elapsed().as_nanos() as u64);
        Stats::add(&self.wakeups, 1);
        got
    }
}

/// A fresh [`Stats`] page: `mmap(MAP_SHARED | MAP_ANONYMOUS)`, so that a `fork` shares it
/// instead of copying it. It is never unmapped: a server keeps its counters to the end.
pub fn shared_stats() -> Result<&'static Stats> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    let len = NonZeroUsize::new(std::mem::size_of::<Stats>()).expect("Stats is not empty");
    // Safety: a fresh anonymous mapping aliases nothing; it is zero-filled, and all-zero bytes
    // are a valid `Stats` (every field is an AtomicU64 at 0). It is never unmapped, so the
    // reference stays valid for the rest of the process (and of its forked children).
    let page = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .context("mmap(MAP_SHARED | MAP_ANONYMOUS) for the counters")?;
    let page: NonNull<Stats> = page.cast();
    // Safety: see above; the page is valid, initialized and lives forever.
    Ok(unsafe { page.as_ref() })
}

/// `socket`, `SO_REUSEADDR`, `bind` to 127.0.0.1:`port` (0: the kernel picks one), `listen`.
/// There is no other address: a demo server is reachable from this machine only.
pub fn listen_localhost(port: u16) -> Result<(OwnedFd, u16)> {
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .context("socket(AF_INET, SOCK_STREAM)")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("setsockopt(SO_REUSEADDR)")?;
    let [a, b, c, d] = Ipv4Addr::LOCALHOST.octets();
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, port))
        .with_context(|| format!("bind(127.0.0.1:{port})"))?;
    listen(&fd, Backlog::new(BACKLOG).context("the listen backlog")?).context("listen")?;
    let local: SockaddrIn = nix::sys::socket::getsockname(fd.as_raw_fd()).context("getsockname")?;
    Ok((fd, local.port()))
}

/// Sets or clears `O_NONBLOCK` with `fcntl`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    // Safety: the caller owns `fd` and keeps it open during the call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = OFlag::from_bits_truncate(fcntl(borrowed, FcntlArg::F_GETFL)?);
    let flags = if on { flags | OFlag::O_NONBLOCK } else { flags & !OFlag::O_NONBLOCK };
    fcntl(borrowed, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// The line echo: bytes in, whole lines out, unchanged (NULs, invalid UTF-8, `\r\n` and all).
/// A line is kept until its `\n` arrives, and may be at most `max_line` bytes.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

/// A line grew past the limit.
#[derive(Debug)]
pub struct TooLong;

impl Lines {
    /// Appends the complete lines of `pending + data` to `out` (returns how many) and keeps the
    /// unfinished rest.
    pub fn feed(
        &mut self,
        data: &[u8],
        max_line: usize,
        out: &mut Vec<u8>,
    ) -> Result<u64, TooLong> {
        let mut lines = 0;
        let mut start = 0;
        while let Some(pos) = data[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            if self.pending.len() + (end - start) > max_line {
                return Err(TooLong);
            }
            out.extend_from_slice(&self.pending);
            out.extend_from_slice(&data[start..end]);
            self.pending.clear();
            lines += 1;
            start = end;
        }
        let rest = &data[start..];
        if self.pending.len() + rest.len() >= max_line {
            return Err(TooLong);
        }
        self.pending.extend_from_slice(rest);
        Ok(lines)
    }

    /// The unfinished line, for a client that leaves without its `\n` (it is echoed too).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The client closed its side.
    Left,
    /// An error line was sent first.
    Error(String),
    /// The connection failed (reset, ...).
    Failed(String),
}

impl Reason {
    pub fn text(&self) -> String {
        match self {
            Reason::Left => "the client left".to_string(),
            Reason::Error(why) => format!("error line sent: {why}"),
            Reason::Failed(why) => format!("failed: {why}"),
        }
    }
}

pub fn too_long(limits: &Limits) -> String {
    format!("line longer than {} bytes", limits.max_line)
}

pub fn idle_too_long(limits: &Limits) -> String {
    format!("idle for {} ms", limits.idle.as_millis())
}

pub fn server_full(limits: &Limits) -> String {
    format!("server full ({} connections)", limits.max_connections)
}

/// The line a refused or closed client gets.
pub fn error_line(why: &str) -> Vec<u8> {
    format!("error: {why}: closing\n").into_bytes()
}

/// Who is talking: a number per connection, for the events.
pub fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether this server prints an event per connection (`serve` does; the children that
/// `compare` and `idle` measure do not).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

pub fn report_accepted(conn: u64, fd: RawFd, open: u64) {
    if !quiet() {
        common::event!("accepted", { "conn": conn, "fd": fd, "open": open }, "accepted connection {conn} (fd {fd}); {open} open");
    }
}

pub fn report_closed(conn: u64, reason: &Reason, requests: u64) {
    if !quiet() {
        common::event!("closed", { "conn": conn, "reason": reason.text(), "requests": requests }, "closed connection {conn} after {requests} line(s): {}", reason.text());
    }
}

pub fn report_refused(why: &str) {
    if !quiet() {
        common::event!("refused", { "reason": why }, "refused a client: {why}");
    }
}

/// Sends all of `bytes` on a blocking socket (a short `send` is followed by another).
pub fn send_all(fd: RawFd, mut bytes: &[u8], stats: &Stats) -> Result<(), Errno> {
    while !bytes.is_empty() {
        Stats::add(&stats.syscalls, 1);
        match send(fd, bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends the error line on a blocking socket, `shutdown(SHUT_WR)` (the client reads the line,
/// then EOF), and reads what the client still sends for a moment before the caller closes:
/// closing with unread bytes would send a reset, which can destroy the error line before the
/// client reads it.
pub fn refuse_blocking(fd: RawFd, why: &str, stats: &Stats) {
    let _ = send_all(fd, &error_line(why), stats);
    let _ = shutdown(fd, Shutdown::Write);
    // Safety: the caller owns `fd` and keeps it open during the call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let timeout = nix::sys::time::TimeVal::new(0, 100_000);
    let _ = setsockopt(&borrowed, sockopt::ReceiveTimeout, &timeout);
    let until = Instant::now() + REFUSE_GRACE;
    let mut scratch = [0u8; 4096];
    while Instant::now() < until {
        match recv(fd, &mut scratch, MsgFlags::empty()) {
            Ok(0) => break,
            Ok(_) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) => break,
        }
    }
}

/// One connection of a blocking model (`blocking`, `threads`, `fork`): `recv` blocks through
/// both phases, the echo is sent with `send`; `SO_RCVTIMEO` bounds the idle time (the blocked
/// `recv` returns EAGAIN when it passes).
pub fn serve_blocking_conn(fd: &OwnedFd, conn: u64, limits: &Limits, stats: &Stats) -> Reason {
    let raw = fd.as_raw_fd();
    let timeout = nix::sys::time::TimeVal::new(
        limits.idle.as_secs() as i64,
        limits.idle.subsec_micros() as i64,
    );
    Stats::add(&stats.syscalls, 2);
    let _ = setsockopt(fd, sockopt::ReceiveTimeout, &timeout);
    let _ = setsockopt(fd, sockopt::TcpNoDelay, &true);
    let mut lines = Lines::default();
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    let mut requests = 0;
    let reason = loop {
        let began = Instant::now();
        Stats::add(&stats.syscalls, 1);
        // The model's key call: both phases happen inside this one blocking recv.
        let got = recv(raw, &mut buf, MsgFlags::empty());
        Stats::add(&stats.both_ns, began.elapsed().as_nanos() as u64);
        let n = match got {
            Ok(0) => {
                let rest = lines.take_rest();
                let _ = send_all(raw, &rest, stats);
                break Reason::Left;
            }
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let why = idle_too_long(limits);
                refuse_blocking(raw, &why, stats);
                break Reason::Error(why);
            }
            Err(e) => break Reason::Failed(format!("recv: {e}")),
        };
        out.clear();
        match lines.feed(&buf[..n], limits.max_line, &mut out) {
            Ok(count) => {
                if let Err(e) = send_all(raw, &out, stats) {
                    break Reason::Failed(format!("send: {e}"));
                }
                requests += count;
                Stats::add(&stats.requests, count);
            }
            Err(TooLong) => {
                let why = too_long(limits);
                refuse_blocking(raw, &why, stats);
                break Reason::Error(why);
            }
        }
    };
    report_closed(conn, &reason, requests);
    reason
}

/// One connection of a readiness model (`nonblocking`, `select`, `poll`, `epoll`, `signal`):
/// the socket is non-blocking; the model calls [`Conn::on_readable`] when the data is ready.
#[derive(Debug)]
pub struct Conn {
    pub fd: OwnedFd,
    pub id: u64,
    lines: Lines,
    /// Echo bytes not yet sent (the client's receive buffer was full).
    out: Vec<u8>,
    sent: usize,
    pub last_active: Instant,
    /// Set once the error line is sent: the connection is drained until EOF or this moment.
    pub closing_until: Option<Instant>,
    /// Why it is closing, once it is.
    closing_reason: Option<Reason>,
    pub requests: u64,
    /// Counted among the open connections (false for a refused client being drained).
    pub counted: bool,
}

/// What the model does with a connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep it; `true` when it waits to write (watch for writability).
    Keep { wants_write: bool },
    /// Close it (its fd is dropped by the model).
    Close(Reason),
}

impl Conn {
    pub fn new(fd: OwnedFd) -> Conn {
        Conn {
            fd,
            id: next_conn_id(),
            lines: Lines::default(),
            out: Vec::new(),
            sent: 0,
            last_active: Instant::now(),
            closing_until: None,
            closing_reason: None,
            requests: 0,
            counted: true,
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wants_write(&self) -> bool {
        self.sent < self.out.len()
    }

    /// The data is ready (phase 1 is over): `recv` copies it (phase 2), the complete lines go
    /// back with `send`. One `recv` per readiness unless it filled the whole buffer.
    pub fn on_readable(&mut self, buf: &mut [u8], limits: &Limits, stats: &Stats) -> Step {
        loop {
            let began = Instant::now();
            Stats::add(&stats.syscalls, 1);
            let got = recv(self.raw(), buf, MsgFlags::empty());
            let n = match got {
                Ok(0) => {
                    if self.closing_until.is_none() {
                        let rest = self.lines.take_rest();
                        let _ = send_all(self.raw(), &rest, stats);
                    }
                    return Step::Close(self.closing_reason.take().unwrap_or(Reason::Left));
                }
                Ok(n) => n,
                Err(Errno::EAGAIN) => {
                    Stats::add(&stats.eagain, 1);
                    return self.keep();
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Step::Close(Reason::Failed(format!("recv: {e}"))),
            };
            Stats::add(&stats.copy_ns, began.elapsed().as_nanos() as u64);
            self.last_active = Instant::now();
            if self.closing_until.is_some() {
                // Draining a refused client: its bytes are read and dropped.
                if n < buf.len() {
                    return self.keep();
                }
                continue;
            }
            let mut out = std::mem::take(&mut self.out);
            out.drain(..self.sent);
            self.sent = 0;
            match self.lines.feed(&buf[..n], limits.max_line, &mut out) {
                Ok(count) => {
                    self.requests += count;
                    Stats::add(&stats.requests, count);
                    self.out = out;
                    if let Some(step) = self.flush(stats) {
                        return step;
                    }
                }
                Err(TooLong) => {
                    self.out = out;
                    return self.start_closing(too_long(limits), stats);
                }
            }
            if n < buf.len() || self.wants_write() {
                return self.keep();
            }
        }
    }

    /// The socket can take more: send what is waiting.
    /// The step a ready connection takes: write what is pending when `writable`, else read.
    pub fn on_ready(
        &mut self,
        writable: bool,
        buf: &mut [u8],
        limits: &Limits,
        stats: &Stats,
    ) -> Step {
        if writable { self.on_writable(stats) } else { self.on_readable(buf, limits, stats) }
    }

    pub fn on_writable(&mut self, stats: &Stats) -> Step {
        self.flush(stats).unwrap_or_else(|| self.keep())
    }

    fn keep(&self) -> Step {
        Step::Keep { wants_write: self.wants_write() }
    }

    /// Sends what is waiting; `None` means all is well (some may still wait).
    fn flush(&mut self, stats: &Stats) -> Option<Step> {
        while self.sent < self.out.len() {
            Stats::add(&stats.syscalls, 1);
            match send(self.raw(), &self.out[self.sent..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => self.sent += n,
                Err(Errno::EAGAIN) => {
                    Stats::add(&stats.eagain, 1);
                    return None;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Some(Step::Close(Reason::Failed(format!("send: {e}")))),
            }
        }
        self.out.clear();
        self.sent = 0;
        None
    }

    /// Sends the error line (best effort: a few dozen bytes fit any socket buffer),
    /// `shutdown(SHUT_WR)`, and drains the client until EOF or [`REFUSE_GRACE`].
    pub fn start_closing(&mut self, why: String, stats: &Stats) -> Step {
        let line = error_line(&why);
        Stats::add(&stats.syscalls, 2);
        let _ = send(self.raw(), &line, MsgFlags::MSG_NOSIGNAL);
        let _ = shutdown(self.raw(), Shutdown::Write);
        self.out.clear();
        self.sent = 0;
        self.closing_until = Some(Instant::now() + REFUSE_GRACE);
        self.closing_reason = Some(Reason::Error(why));
        Step::Keep { wants_write: false }
    }

    /// Called on the model's periodic tick: an idle client is told and closed; a refused one
    /// past its grace is closed.
    pub fn check_time(&mut self, now: Instant, limits: &Limits, stats: &Stats) -> Option<Step> {
        match self.closing_until {
            Some(until) if now >= until => {
                Some(Step::Close(self.closing_reason.take().unwrap_or(Reason::Left)))
            }
            Some(_) => None,
            None if now.duration_since(self.last_active) >= limits.idle => {
                Some(self.start_closing(idle_too_long(limits), stats))
            }
            None => None,
        }
    }
}

/// A freshly accepted connection over the limit: told, then drained by the model like any
/// closing connection.
pub fn refuse_conn(fd: OwnedFd, why: String, stats: &Stats) -> Conn {
    Stats::add(&stats.refused, 1);
    report_refused(&why);
    let mut conn = Conn::new(fd);
    conn.counted = false;
    let _ = conn.start_closing(why, stats);
    conn
}

/// `setsockopt(TCP_NODELAY)`: each echo leaves at once (no Nagle delay on small lines).
pub fn no_delay(fd: &impl AsFd, stats: &Stats) {
    Stats::add(&stats.syscalls, 1);
    let _ = setsockopt(fd, sockopt::TcpNoDelay, &true);
}

/// The open connections of a readiness model, found by their file descriptor number.
#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Option<Conn>>,
    len: usize,
    /// When [`Table::tick_if_due`] last ran the tick.
    last_tick: Option<Instant>,
}

/// How often the event loops look for idle clients, and the longest they wait in one call.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

impl Table {
    pub fn insert(&mut self, conn: Conn) {
        let fd = conn.raw() as usize;
        if self.slots.len() <= fd {
            self.slots.resize_with(fd + 1, || None);
        }
        if self.slots[fd].replace(conn).is_none() {
            self.len += 1;
        }
    }

    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut Conn> {
        self.slots.get_mut(fd as usize)?.as_mut()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.slots.iter().flatten()
    }

    /// The descriptors of every connection, for a model that scans them all.
    pub fn fds(&self) -> Vec<RawFd> {
        self.iter().map(Conn::raw).collect()
    }

    /// Removes and closes a connection (dropping its `OwnedFd` calls `close`), and says why.
    pub fn close(&mut self, fd: RawFd, reason: Reason, stats: &Stats) -> Option<Conn> {
        let conn = self.slots.get_mut(fd as usize)?.take()?;
        self.len -= 1;
        Stats::add(&stats.syscalls, 1);
        if conn.counted {
            stats.closed();
            report_closed(conn.id, &reason, conn.requests);
        }
        Some(conn)
    }

    /// The tick, once every [`TICK`] (a loop calls this on every turn).
    pub fn tick_if_due(&mut self, limits: &Limits, stats: &Stats) {
        let last = *self.last_tick.get_or_insert_with(Instant::now);
        if last.elapsed() >= TICK {
            self.tick(limits, stats);
            self.last_tick = Some(Instant::now());
        }
    }

    /// The periodic tick: idle clients told and closed, refused ones past their grace closed.
    /// Returns the descriptors closed.
    pub fn tick(&mut self, limits: &Limits, stats: &Stats) -> Vec<RawFd> {
        let now = Instant::now();
        let mut closed = Vec::new();
        for fd in self.fds() {
            let Some(conn) = self.get_mut(fd) else { continue };
            if let Some(Step::Close(reason)) = conn.check_time(now, limits, stats) {
                self.close(fd, reason, stats);
                closed.push(fd);
            }
        }
        closed
    }
}

/// What happened to one connection: the model applies it (close, or watch for writing).
pub fn apply(table: &mut Table, fd: RawFd, step: Step, stats: &Stats) -> Option<bool> {
    match step {
        Step::Keep { wants_write } => Some(wants_write),
        Step::Close(reason) => {
            table.close(fd, reason, stats);
            None
        }
    }
}

/// Accepts every connection waiting on a non-blocking listener (`accept4` until EAGAIN), each
/// made non-blocking; over the limit a client is refused (and drained like a closing one).
/// Returns the new descriptors; `accept_fd` may turn a descriptor down (select's FD_SETSIZE).
pub fn accept_all(
    listener: &OwnedFd,
    table: &mut Table,
    limits: &Limits,
    stats: &Stats,
    accept_fd: impl Fn(RawFd) -> Result<(), String>,
) -> Vec<RawFd> {
    use std::os::fd::FromRawFd;
    let mut new = Vec::new();
    loop {
        Stats::add(&stats.syscalls, 1);
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = match nix::sys::socket::accept4(listener.as_raw_fd(), flags) {
            // Safety: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::EAGAIN) => {
                Stats::add(&stats.eagain, 1);
                return new;
            }
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => {
                // EMFILE and the like: the client waits in the backlog; try again later.
                if !quiet() {
                    report::say(format!("accept4: {e}: leaving the client in the backlog"));
                }
                return new;
            }
        };
        no_delay(&fd, stats);
        if let Err(why) = accept_fd(fd.as_raw_fd()) {
            Stats::add(&stats.refused, 1);
            report_refused(&why);
            let _ = send(fd.as_raw_fd(), &error_line(&why), MsgFlags::MSG_NOSIGNAL);
            continue;
        }
        if stats.open_now() >= limits.max_connections {
            let conn = refuse_conn(fd, server_full(limits), stats);
            new.push(conn.raw());
            table.insert(conn);
            continue;
        }
        let conn = Conn::new(fd);
        let open = stats.opened();
        report_accepted(conn.id, conn.raw(), open);
        new.push(conn.raw());
        table.insert(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_echoed_whole_and_bytes_unchanged() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        assert_eq!(lines.feed(b"ab\x00\xff", 10, &mut out).unwrap(), 0);
        assert!(out.is_empty());
        assert_eq!(lines.feed(b"\r\ncd\nef", 10, &mut out).unwrap(), 2);
        assert_eq!(out, b"ab\x00\xff\r\ncd\n");
        assert_eq!(lines.take_rest(), b"ef");
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused() {
        let mut out = Vec::new();
        assert!(Lines::default().feed(b"123456\n", 7, &mut out).is_ok());
        assert!(Lines::default().feed(b"1234567\n", 7, &mut out).is_err());
        assert!(Lines::default().feed(b"1234567", 7, &mut out).is_err());
    }
}
