//! The load client of the io-models demo and of the bench suite `io`: many connections driven
//! by one thread with `epoll`, each sending lines and checking every echoed byte.
//!
//! It always talks to 127.0.0.1: [`Spec`] has a port and no host, so nothing built on it can
//! be aimed at another machine. Every loop is bounded in count (connections, requests) and in
//! time ([`Spec::time_limit`]); past the limit it stops and says how far it got.
//!
//! A request is one line of `size` bytes (the last one `\n`), random bytes that include a NUL,
//! an invalid UTF-8 byte (0xFF) and a `\r` before the `\n`, so a server that treats the bytes as
//! text, or strips the line end, fails the check. Each connection keeps exactly one request in
//! flight (a round trip), so a request's latency is the time from its first byte sent to its
//! last byte echoed.
//!
//! A server that refuses a client answers one line starting with `error: ` and closes; the
//! client records that line as a refusal (a payload never starts with `e`, so an echo cannot be
//! mistaken for one).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{MsgFlags, recv, send};
use serde::Serialize;

/// Most connections one run may open (also bounded by the open-file limit).
pub const MAX_CONNECTIONS: usize = 10_000;
/// Most requests one connection may send in a run.
pub const MAX_REQUESTS: usize = 1_000_000;
/// Most requests one run may send in all (connections × requests).
pub const MAX_TOTAL: u64 = 5_000_000;
/// Longest request line, in bytes, `\n` included.
pub const MAX_SIZE: usize = 65_536;
/// Longest a run may last, in seconds.
pub const MAX_SECONDS: u64 = 600;
/// How long one `connect` may take before the run gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to send. The address is always 127.0.0.1: only the port is a choice.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// Connections opened at the start and driven at once.
    pub connections: usize,
    /// Round trips on each connection.
    pub requests: usize,
    /// Bytes per request line, `\n` included (from 5 bytes on, a NUL, 0xFF and `\r\n`).
    pub size: usize,
    /// Each request's length drawn at random from 1 to `size` instead of exactly `size`.
    pub varied: bool,
    /// The whole run stops after this long, finished or not.
    pub time_limit: Duration,
    /// Seed of the payload bytes (each connection derives its own).
    pub seed: u64,
    /// Keep the connections open at the end and hand them back ([`Report::kept`]), for
    /// measuring what idle connections cost a server.
    pub keep_open: bool,
}

impl Spec {
    /// Checks every bound; the error names the field and its limit.
    pub fn check(&self) -> Result<()> {
        if self.port == 0 {
            bail!("port 0 is not a server's port");
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            bail!("connections must be from 1 to {MAX_CONNECTIONS}");
        }
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            bail!("requests must be from 1 to {MAX_REQUESTS}");
        }
        if self.connections as u64 * self.requests as u64 > MAX_TOTAL {
            bail!("connections × requests must be at most {MAX_TOTAL}");
        }
        if !(1..=MAX_SIZE).contains(&self.size) {
            bail!("size must be from 1 to {MAX_SIZE} bytes");
        }
        if self.time_limit.is_zero() || self.time_limit > Duration::from_secs(MAX_SECONDS) {
            bail!("the time limit must be from 1 ms to {MAX_SECONDS} s");
        }
        Ok(())
    }
}

/// Latency percentiles of the completed round trips.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// A connection the server ended before its requests were done.
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    /// The connection's number, from 0 in the order they were opened.
    pub conn: usize,
    /// Round trips it completed first.
    pub completed: usize,
    /// The server's `error: ...` line, or why the client stopped (EOF, reset, wrong bytes).
    pub why: String,
    /// True when the server sent an `error: ` line (a refusal, not a fault).
    pub refused: bool,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Round trips completed with every byte right.
    pub completed: u64,
    /// Round trips asked for (connections × requests).
    pub expected: u64,
    /// Connections that received bytes other than their own echo.
    pub mismatches: u64,
    /// Connections the server ended early, with the reason.
    pub ended: Vec<Ended>,
    /// From the first connect to the last echo.
    pub elapsed: Duration,
    /// How long opening all the connections took.
    pub connect_time: Duration,
    pub latency: Latency,
    /// CPU time of the client's own thread (user + system) during the run.
    pub client_cpu: Duration,
    /// True when the run stopped at its time limit.
    pub timed_out: bool,
    /// The open connections, with [`Spec::keep_open`].
    #[serde(skip)]
    pub kept: Vec<TcpStream>,
}

impl Report {
    /// Completed round trips per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The client's own CPU per completed round trip, in microseconds.
    pub fn client_cpu_us_per_request(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / (self.completed.max(1) as f64)
    }

    /// True when every round trip completed and every byte was right.
    pub fn all_good(&self) -> bool {
        self.completed == self.expected && self.mismatches == 0 && !self.timed_out
    }
}

/// A small xorshift generator: payloads need variety, not quality.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Fills `line` with one request of `len` bytes: random bytes without `\n`, never starting with
/// `e`, with a NUL, a 0xFF and `\r\n` where the length allows, ending in `\n`.
fn make_request(rng: &mut Rng, len: usize, line: &mut Vec<u8>) {
    line.clear();
    for _ in 0..len.saturating_sub(1) {
        let mut b = rng.next() as u8;
        if b == b'\n' {
            b = b'n';
        }
        line.push(b);
    }
    if let Some(first) = line.first_mut()
        && *first == b'e'
    {
        *first = b'E';
    }
    if len >= 5 {
        line[1] = 0;
        line[2] = 0xFF;
        line[len - 2] = b'\r';
    }
    line.push(b'\n');
}

struct Conn {
    stream: TcpStream,
    rng: Rng,
    request: Vec<u8>,
    sent: usize,
    got: usize,
    started: Instant,
    completed: usize,
    /// Bytes received that were not the echo (kept to show the server's line).
    wrong: Vec<u8>,
    done: bool,
}

/// Opens the connections, drives them to the end (or the time limit), and reports.
pub fn run(spec: &Spec) -> Result<Report> {
    spec.check()?;
    let started = Instant::now();
    let deadline = started + spec.time_limit;
    let cpu_before = thread_cpu();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, spec.port));
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
    let mut conns = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        if Instant::now() >= deadline {
            bail!("the time limit passed while opening connection {i}");
        }
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {addr} (connection {i})"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream.set_nonblocking(true).context("O_NONBLOCK")?;
        let event = EpollEvent::new(EpollFlags::EPOLLIN, i as u64);
        epoll.add(stream.as_fd(), event).context("epoll_ctl ADD")?;
        conns.push(Conn {
            stream,
            rng: Rng::new(spec.seed ^ ((i as u64 + 1) << 20)),
            request: Vec::with_capacity(spec.size),
            sent: 0,
            got: 0,
            started,
            completed: 0,
            wrong: Vec::new(),
            done: false,
        });
    }
    let connect_time = started.elapsed();
    let mut latencies: Vec<u64> =
        Vec::with_capacity((spec.connections * spec.requests).min(2_000_000));
    let mut ended = Vec::new();
    let mut mismatches = 0;
    let mut live = conns.len();
    for (i, conn) in conns.iter_mut().enumerate() {
        next_request(spec, conn);
        if let Some(end) = push(conn, i) {
            finish(spec.keep_open, conn, &epoll, end, &mut ended, &mut mismatches, &mut live);
        }
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 64 * 1024];
    let mut timed_out = false;
    while live > 0 {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let wait_ms = (deadline - now).as_millis().clamp(1, 100) as u16;
        let n = match epoll.wait(&mut events, EpollTimeout::from(wait_ms)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for event in &events[..n] {
            let i = event.data() as usize;
            let conn = &mut conns[i];
            if conn.done {
                continue;
            }
            if let Some(end) = on_readable(spec, conn, i, &mut buf, &mut latencies) {
                finish(spec.keep_open, conn, &epoll, end, &mut ended, &mut mismatches, &mut live);
            }
        }
    }
    let elapsed = started.elapsed();
    let client_cpu = thread_cpu().saturating_sub(cpu_before);
    let completed = latencies.len() as u64;
    let latency = percentiles(&mut latencies);
    let kept = if spec.keep_open && !timed_out {
        conns.into_iter().filter(|c| c.done && c.wrong.is_empty()).map(|c| c.stream).collect()
    } else {
        Vec::new()
    };
    Ok(Report {
        completed,
        expected: (spec.connections * spec.requests) as u64,
        mismatches,
        ended,
        elapsed,
        connect_time,
        latency,
        client_cpu,
        timed_out,
        kept,
    })
}

/// How a connection ended.
enum End {
    /// All its requests completed.
    Done,
    /// The server ended it or sent other bytes.
    Early(String),
}

fn next_request(spec: &Spec, conn: &mut Conn) {
    let len =
        if spec.varied { 1 + (conn.rng.next() % spec.size as u64) as usize } else { spec.size };
    let mut request = std::mem::take(&mut conn.request);
    make_request(&mut conn.rng, len, &mut request);
    conn.request = request;
    conn.sent = 0;
    conn.got = 0;
    conn.started = Instant::now();
}

/// Sends what is left of the current request; a full socket buffer leaves the rest for later
/// (the echo coming back frees it).
fn push(conn: &mut Conn, i: usize) -> Option<End> {
    while conn.sent < conn.request.len() {
        match send(conn.stream.as_raw_fd(), &conn.request[conn.sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => conn.sent += n,
            Err(Errno::EAGAIN) => return None,
            Err(Errno::EINTR) => continue,
            Err(e) => return Some(End::Early(format!("connection {i}: send: {e}"))),
        }
    }
    None
}

fn on_readable(
    spec: &Spec,
    conn: &mut Conn,
    i: usize,
    buf: &mut [u8],
    latencies: &mut Vec<u64>,
) -> Option<End> {
    loop {
        let n = match recv(conn.stream.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(0) => {
                let why = if conn.wrong.is_empty() {
                    "the server closed the connection".to_string()
                } else {
                    String::from_utf8_lossy(&conn.wrong).trim_end().to_string()
                };
                return Some(End::Early(why));
            }
            Ok(n) => n,
            Err(Errno::EAGAIN) => return None,
            Err(Errno::EINTR) => continue,
            Err(e) if conn.wrong.is_empty() => return Some(End::Early(format!("recv: {e}"))),
            Err(_) => {
                return Some(End::Early(String::from_utf8_lossy(&conn.wrong).trim_end().into()));
            }
        };
        let data = &buf[..n];
        if !conn.wrong.is_empty() {
            conn.wrong.extend_from_slice(data);
            continue;
        }
        let expected = &conn.request[conn.got..conn.sent.max(conn.got)];
        let matches = data.len() <= expected.len() && data == &expected[..data.len()];
        if !matches {
            // Whatever came first (the echo so far) then the stray bytes: keep them for the
            // report; a server's refusal line arrives before any echo.
            conn.wrong.extend_from_slice(&conn.request[..conn.got]);
            conn.wrong.extend_from_slice(data);
            continue;
        }
        conn.got += n;
        if conn.got == conn.request.len() {
            latencies.push(conn.started.elapsed().as_nanos() as u64);
            conn.completed += 1;
            if conn.completed == spec.requests {
                return Some(End::Done);
            }
            next_request(spec, conn);
        }
        if let Some(end) = push(conn, i) {
            return Some(end);
        }
    }
}

fn finish(
    keep_open: bool,
    conn: &mut Conn,
    epoll: &Epoll,
    end: End,
    ended: &mut Vec<Ended>,
    mismatches: &mut u64,
    live: &mut usize,
) {
    conn.done = true;
    *live -= 1;
    let _ = epoll.delete(conn.stream.as_fd());
    // A finished client leaves at once (a one-at-a-time server is waiting for that), unless it
    // is kept open on purpose; one the server ended is closed too.
    let early = matches!(end, End::Early(_));
    if early || !keep_open {
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }
    if let End::Early(why) = end {
        let refused = why.starts_with("error: ");
        if !refused && !conn.wrong.is_empty() {
            *mismatches += 1;
        }
        ended.push(Ended { conn: ended.len(), completed: conn.completed, why, refused });
        // Keep the wrong bytes only as the sign of an early end.
        if conn.wrong.is_empty() {
            conn.wrong.push(b'!');
        }
    }
}

fn percentiles(latencies: &mut [u64]) -> Latency {
    if latencies.is_empty() {
        return Latency::default();
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let idx = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[idx] as f64 / 1000.0
    };
    Latency { p50_us: at(0.50), p99_us: at(0.99), max_us: at(1.0) }
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// CPU time of a process from `/proc/PID/stat`: user and system, its live and exited threads
/// and its reaped children included (a forking server's work is done by its children).
pub fn process_cpu(pid: i32) -> Option<(Duration, Duration)> {
    let s = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    let ticks = common::ps::ticks_to_duration;
    let (cutime, cstime) = (s.cutime.max(0) as u64, s.cstime.max(0) as u64);
    Some((ticks(s.utime + cutime), ticks(s.stime + cstime)))
}

/// The pid of the process that listens on 127.0.0.1:`port` (from `/proc/net/tcp` and the
/// `socket:[inode]` links in `/proc/*/fd`), if this user can see it. With several holders (a
/// forking server's children inherit the socket) the one whose parent is not a holder.
pub fn listener_pid(port: u16) -> Option<i32> {
    let wanted = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let inode = procfs::net::tcp().ok()?.into_iter().find_map(|entry| {
        let listening =
            entry.local_address == wanted && entry.state == procfs::net::TcpState::Listen;
        listening.then_some(entry.inode)
    })?;
    let mut holders = Vec::new();
    for process in procfs::process::all_processes().ok()?.flatten() {
        let Ok(fds) = process.fd() else { continue };
        if fds
            .flatten()
            .any(|fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if i == inode))
        {
            holders.push(process.pid);
        }
    }
    holders
        .iter()
        .copied()
        .find(|&pid| common::ps::stat(pid).is_none_or(|p| !holders.contains(&p.ppid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_nul_invalid_utf8_and_crlf_and_ends_in_one_newline() {
        let mut rng = Rng::new(7);
        let mut line = Vec::new();
        for len in [1, 2, 4, 5, 64, 1000] {
            make_request(&mut rng, len, &mut line);
            assert_eq!(line.len(), len);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_ne!(line[0], b'e');
            if len >= 5 {
                assert_eq!((line[1], line[2], line[len - 2]), (0, 0xFF, b'\r'));
            }
        }
    }

    #[test]
    fn bounds_are_checked_by_name() {
        let spec = Spec {
            port: 1,
            connections: 1,
            requests: 1,
            size: 64,
            varied: false,
            time_limit: Duration::from_secs(1),
            seed: 1,
            keep_open: false,
        };
        assert!(spec.check().is_ok());
        let e = Spec { connections: MAX_CONNECTIONS + 1, ..spec.clone() }.check().unwrap_err();
        assert!(e.to_string().contains("connections"));
        let e = Spec { size: 0, ..spec.clone() }.check().unwrap_err();
        assert!(e.to_string().contains("size"));
    }

    #[test]
    fn percentiles_of_known_values() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let l = percentiles(&mut v);
        assert_eq!(l.max_us, 100.0);
        assert!((l.p50_us - 50.0).abs() <= 1.0);
        assert!((l.p99_us - 99.0).abs() <= 1.0);
    }
}
