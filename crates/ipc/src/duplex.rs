//! Part 3: Python's `multiprocessing.Pipe()`: two connected ends, each of which can `send`
//! and `recv` (a `socketpair`); a ping-pong between two processes; and `Pipe(duplex=False)`,
//! a plain one-way pipe.

#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::predict::{self, Expect};
use common::process::{Role, Run};
use common::report;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kit::{self, close_inherited, fd, raw};
use crate::{Cli, inherited, join_all};

pub static PONG: Role = Role::of::<Pong>();

/// The largest message a connection accepts: checked before anything is allocated.
const MAX_MESSAGE: usize = 1 << 20;
/// How long to wait for a child whose end of the connection closed to be reaped.
const CHILD_GONE: std::time::Duration = std::time::Duration::from_secs(5);
/// Round trips shown one line each; beyond that only the summary.
const SHOWN: usize = 10;

/// One end of a `Pipe()`: messages framed as Python's `Connection` frames them, a 4-byte
/// big-endian length and then the bytes (JSON here, a pickle there).
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    fd: BorrowedFd<'a>,
}

impl<'a> Conn<'a> {
    pub fn new(fd: BorrowedFd<'a>) -> Conn<'a> {
        Conn { fd }
    }

    /// `conn.send(obj)`: the header and the message in one write(2).
    pub fn send(&self, message: &Value) -> Result<()> {
        let body = message.to_string();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        kit::write_all(self.fd, &frame).context("send: write()")
    }

    /// `conn.recv()`: `None` at end-of-file, when every other end is closed (Python raises
    /// `EOFError`).
    pub fn recv(&self) -> Result<Option<Value>> {
        let mut header = [0u8; 4];
        match kit::read_full(self.fd, &mut header).context("recv: read()")? {
            0 => return Ok(None),
            4 => {}
            n => bail!("recv: end-of-file after {n} bytes of a header"),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_MESSAGE {
            bail!("recv: a message of {len} bytes announced, more than {MAX_MESSAGE}");
        }
        let mut body = vec![0u8; len];
        if kit::read_full(self.fd, &mut body).context("recv: read()")? < len {
            bail!("recv: end-of-file in the middle of a message");
        }
        Ok(Some(serde_json::from_slice(&body).context("recv: the message is not JSON")?))
    }
}

/// The child's side: answers every `ping` with a `pong`, until end-of-file.
#[derive(Serialize, Deserialize)]
pub struct Pong {
    conn_fd: RawFd,
    close: Vec<RawFd>,
    show: bool,
}

impl Run for Pong {
    const ROLE: &'static str = "pong";
    fn run(self) -> Result<()> {
        close_inherited(&self.close);
        let me = report::who();
        let conn = Conn::new(fd(self.conn_fd));
        let mut answered = 0u64;
        while let Some(message) = conn.recv()? {
            let n = message["ping"].as_u64().context("a message without ping")?;
            conn.send(&json!({ "pong": n, "by": std::process::id() }))?;
            answered += 1;
            if self.show {
                common::event!("pong", { "n": n }, "{me}: recv() -> ping {n}; send(pong {n})");
            }
        }
        common::event!("pong_eof", { "answered": answered }, "{me}: recv() met end-of-file (Python: EOFError) after {answered} pings; ends");
        Ok(())
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("3. multiprocessing.Pipe(): two ends, each sends and receives (管道, duplex)");
    let me = std::process::id() as i32;
    // Pipe() is a socketpair: two connected sockets, one per end, each readable and writable.
    let (parent_end, child_end) =
        socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .context("socketpair(AF_UNIX, SOCK_STREAM)")?;
    let (a, b) = (kit::fd_link(me, raw(&parent_end)), kit::fd_link(me, raw(&child_end)));
    common::event!("pipe_ends", { "parent_end": { "fd": raw(&parent_end), "link": a },
                "child_end": { "fd": raw(&child_end), "link": b } }, "conn1, conn2 = Pipe(): fd {} -> {a} and fd {} -> {b}: two sockets joined to each \
             other (a pipe is one object with two ends: one inode, see part 1)",
            raw(&parent_end),
            raw(&child_end));
    let trips = cli.round_trips;
    let pong = Pong {
        conn_fd: raw(&child_end),
        close: inherited(cli, &[raw(&parent_end)]),
        show: trips <= SHOWN,
    };
    let mut children = vec![cli.common.child("pong", pong, &[raw(&child_end)])];
    children[0].start()?;
    // As with any pipe: the parent closes the child's end, or it would never see end-of-file.
    drop(child_end);
    let conn = Conn::new(parent_end.as_fd());
    let guess = predict::ask(
        &cli.common,
        "round-trip",
        "one round trip through Pipe(): send(ping), the child recv()s and send(pong)s, recv(): \
         how many microseconds does it take (the median)?",
        Expect::About { within: 0.5 },
    );
    let mut times = Vec::with_capacity(trips);
    for n in 1..=trips as u64 {
        let sent = Instant::now();
        let trip = conn.send(&json!({ "ping": n })).and_then(|()| conn.recv());
        let answer = match trip {
            Ok(Some(answer)) => answer,
            // The other end closed (end-of-file, EPIPE, ECONNRESET): the child is gone.
            failed => {
                let pong = &mut children[0];
                if pong.join_timeout(CHILD_GONE)?.is_some_and(|code| code != 0) {
                    return Err(common::processes::lost::report(pong, "pings", 1));
                }
                failed?.context("the pong child closed its end")?
            }
        };
        times.push(sent.elapsed().as_secs_f64() * 1e6);
        if answer["pong"].as_u64() != Some(n) {
            bail!("sent ping {n}, received {answer}");
        }
        if trips <= SHOWN {
            common::event!("ping", { "n": n, "answer": answer }, "parent: send(ping {n}); recv() -> pong {n} from pid {}", answer["by"]);
        }
    }
    let median = common::startcost::median(&times);
    guess.reveal(
        median,
        "no copy to disk, no lock: two writes and two wake-ups, each side asleep in read(2) \
         until the other writes; the scheduler's wake-up is most of it",
    );
    common::event!("duplex_summary", { "round_trips": trips, "median_us": median }, "{trips} round trips, both ways through one Pipe(); median {median:.1} µs each (two \
             wake-ups: each side sleeps in read(2) until the other writes)");
    drop(parent_end); // conn1.close(): the child's recv() meets end-of-file
    join_all(&mut children, "pings")?;
    one_way()
}

/// `Pipe(duplex=False)`: an `os.pipe()`; its read end cannot send.
fn one_way() -> Result<()> {
    let (r, w) = kit::pipe()?;
    let refused = nix::unistd::write(r.as_fd(), b"x").err();
    kit::write_all(w.as_fd(), b"one way\n")?;
    common::event!("one_way", { "write_on_read_end": refused.map(|e| e.desc()), "errno": refused.map(|e| e as i32) }, "Pipe(duplex=False) is a plain pipe: write(2) on its read end fails with {} (Python \
             refuses earlier: OSError \"connection is read-only\"); messages go one way only",
            refused.map_or("nothing?".to_string(), |e| format!("{e:?} ({})", e.desc())));
    if refused.is_none() {
        bail!("a pipe's read end accepted a write");
    }
    Ok(())
}
