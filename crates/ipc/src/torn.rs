//! Part 2: a pipe has no lock (管道没有实现锁). Two readers of one pipe split messages between
//! them; two writers of messages bigger than the pipe interleave their bytes. With a lock around
//! each message, neither happens: a queue is a pipe plus a lock.

#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::predict::{self, Expect};
use common::process::{Process, Role, Run};
use common::report;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kit::{self, LockFile, Meeting, close_inherited, fd, raw};
use crate::{Cli, TORN_MEET_EVERY, TORN_MESSAGES, inherited, join_all};

pub static READER: Role = Role::of::<Reader>();
pub static WRITER: Role = Role::of::<Writer>();

/// A message of part 2a: a header of 8 bytes (`H000123:`) naming the message, then its body
/// of 56 bytes. The parent writes each message in one write(2) of 64 bytes: at most PIPE_BUF,
/// so no other write ever comes between its bytes. The readers read each in two calls.
const HEADER: usize = 8;
const BODY: usize = 56;
/// How long the demo waits for a child to reach the moment it shows (a slow spawn included).
const REACH: Duration = Duration::from_secs(30);

fn header(seq: usize) -> String {
    format!("H{seq:06}:")
}

fn body(seq: usize) -> String {
    let letter = char::from(b'a' + (seq % 26) as u8);
    let text = format!("body of message {seq:06} ");
    let mut body: String = text.chars().chain(std::iter::repeat(letter)).take(BODY - 1).collect();
    body.push('\n');
    body
}

/// The message number if `head` and `body` are one whole message, `None` if torn.
fn whole(head: &[u8], rest: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    let seq: usize = head.strip_prefix('H')?.strip_suffix(':')?.parse().ok()?;
    (rest == body(seq).as_bytes()).then_some(seq)
}

/// A reader of part 2a: reads `rounds` messages, each as a header then a body.
#[derive(Serialize, Deserialize)]
pub struct Reader {
    read_fd: RawFd,
    close: Vec<RawFd>,
    rounds: usize,
    meeting: Meeting,
    meet_every: usize,
    /// `Some`: a lock around each message (the fix).
    lock: Option<LockFile>,
    results_fd: RawFd,
}

impl Run for Reader {
    const ROLE: &'static str = "torn-reader";
    fn run(self) -> Result<()> {
        close_inherited(&self.close);
        let me = report::who();
        let lock = self.lock.map(|l| l.open()).transpose()?;
        let (mut whole_count, mut torn) = (0usize, 0usize);
        let mut example: Option<Value> = None;
        let mut head = [0u8; HEADER];
        let mut rest = [0u8; BODY];
        for i in 0..self.rounds {
            let meet = self.meet_every > 0 && i % self.meet_every == 0;
            // With the lock: the readers all start a message together, then race for the lock;
            // the winner has the pipe to itself for a whole message.
            let guard = match &lock {
                Some(lock) => {
                    if meet {
                        self.meeting.wait()?;
                    }
                    Some(lock.lock()?)
                }
                None => None,
            };
            let got = kit::read_full(fd(self.read_fd), &mut head).context("reading a header")?;
            // Without the lock: every reader stops between its two reads until all are there,
            // as if the scheduler had preempted each of them right after the header. (With the
            // lock this would deadlock, and there is nothing to race for: nobody else may read.)
            if guard.is_none() && meet {
                self.meeting.wait()?;
            }
            let got =
                got + kit::read_full(fd(self.read_fd), &mut rest).context("reading a body")?;
            drop(guard);
            if got < HEADER + BODY {
                bail!("end-of-file after {i} messages: the pipe held fewer than expected");
            }
            match whole(&head, &rest) {
                Some(_) => whole_count += 1,
                None => {
                    torn += 1;
                    example.get_or_insert_with(|| {
                        json!({ "header": String::from_utf8_lossy(&head),
                                "body": String::from_utf8_lossy(&rest).trim_end() })
                    });
                }
            }
        }
        let locked = lock.is_some();
        report::event(
            "reader_done",
            json!({ "reader": me, "lock": locked, "whole": whole_count, "torn": torn,
                    "example": example }),
            match &example {
                Some(e) => format!(
                    "{me}: {whole_count} whole, {torn} torn; e.g. header {} with body {}",
                    e["header"], e["body"]
                ),
                None => format!("{me}: {whole_count} whole, {torn} torn"),
            },
        );
        kit::send_result(
            self.results_fd,
            &json!({ "reader": me, "whole": whole_count, "torn": torn, "example": example }),
        )
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("2. A pipe has no lock: torn messages, interleaved writes (管道没有实现锁)");
    report::say(
        "a pipe is a stream of bytes with no message boundaries and no lock: a read(2) returns \
         whatever bytes come next, whoever wrote them, and whoever else reads",
    );
    let guess = predict::ask(
        &cli.common,
        "torn",
        format!(
            "{} readers of one pipe, no lock, {} messages, each read as a header then a body: \
             how many messages are torn (管道没有实现锁)?",
            cli.readers,
            cli.messages(TORN_MESSAGES)
        ),
        Expect::Count,
    );
    let torn = two_readers(cli, false)?;
    guess.reveal(
        torn,
        "a read(2) returns whatever bytes come next, whoever reads: another reader's read \
         between a header and its body tears the message",
    );
    two_readers(cli, true)?;
    let mixed = two_writers(cli, false)?;
    two_writers(cli, true)?;
    common::event!("torn_lesson", { "torn_without_lock": torn, "interleaved_without_lock": mixed }, "a lock around each read of a whole message, and around each write bigger than \
         PIPE_BUF (4096 bytes), is what the notes' queue adds to the pipe (进程queue=管道+锁); \
         py_multiprocessing::queue, which joinable-queue uses, takes exactly these two locks, and writes a \
         small message in one write(2) with no lock at all");
    Ok(())
}

/// Part 2a: the parent writes the messages, `--readers` children read them. Returns how many
/// were torn.
fn two_readers(cli: &Cli, locked: bool) -> Result<usize> {
    let readers = cli.readers;
    let rounds = (cli.messages(TORN_MESSAGES) / readers).max(1);
    let total = rounds * readers;
    let meet_every = cli.meet_every(TORN_MEET_EVERY);
    let (r, w) = kit::pipe()?;
    let (results_r, results_w) = kit::pipe()?;
    let (meetings, meeting_fds) = Meeting::group(readers)?;
    let lock = if locked { Some(LockFile::new("ipc-reader-lock")?) } else { None };
    let mut fds = vec![raw(&r), raw(&results_w)];
    fds.extend(&meeting_fds);
    fds.extend(lock.as_ref().map(|(_, owned)| raw(owned)));
    let mut children: Vec<Process> = meetings
        .into_iter()
        .enumerate()
        .map(|(i, meeting)| {
            let reader = Reader {
                read_fd: raw(&r),
                close: inherited(cli, &[raw(&w), raw(&results_r)]),
                rounds,
                meeting,
                meet_every,
                lock: lock.as_ref().map(|(l, _)| *l),
                results_fd: raw(&results_w),
            };
            cli.common.child(format!("reader-{}", i + 1), reader, &fds)
        })
        .collect();
    for c in &mut children {
        c.start()?;
    }
    Meeting::close_group(&meeting_fds);
    let pids: Vec<i32> = children.iter().filter_map(Process::pid).collect();
    common::event!("readers", { "lock": locked, "readers": readers, "pids": pids, "messages": total,
        "meet_every": meet_every }, "{} readers of one pipe, {} lock; {total} messages of {HEADER}+{BODY} bytes, each \
     written in one write(2); each reader reads a header, then a body, in two read(2) \
     calls{}",
    readers,
    if locked { "WITH a" } else { "no" },
    match (meet_every, locked) {
        (0, _) => String::new(),
        (_, false) => format!(
            "; once every {meet_every} message(s) the readers meet between the two \
             reads, which makes the race certain"
        ),
        (_, true) => format!(
            "; once every {meet_every} message(s) they meet before the lock and race \
             for it"
        ),
    });
    for seq in 1..=total {
        let message = format!("{}{}", header(seq), body(seq));
        kit::write_all(w.as_fd(), message.as_bytes()).context("write() of a message")?;
    }
    drop(w);
    join_all(&mut children, "messages")?;
    let results = kit::take_results(results_r.as_fd())?;
    let sum = |key: &str| results.iter().filter_map(|r| r[key].as_u64()).sum::<u64>() as usize;
    let (whole, torn) = (sum("whole"), sum("torn"));
    if whole + torn != total {
        bail!("{} messages read of {total}", whole + torn);
    }
    let example = results.iter().find_map(|r| r["example"].as_object().cloned());
    report::event(
        "torn_summary",
        json!({ "lock": locked, "readers": readers, "messages": total, "whole": whole,
                "torn": torn, "meet_every": meet_every, "example": example }),
        if locked {
            format!("with a lock around each message: {torn} of {total} torn")
        } else {
            format!(
                "without a lock: {torn} of {total} messages torn between {readers} readers: a \
                 reader's header and body were two read(2) calls, and another reader's read \
                 came between them"
            )
        },
    );
    if locked && torn > 0 {
        bail!("the lock failed: {torn} messages torn while each reader held it for a message");
    }
    if !locked && torn == 0 {
        report::say("no message was torn this time: the race was left to chance and it won");
    }
    Ok(torn)
}

/// A writer of part 2b: writes `messages` messages of `size` bytes, all its `letter`.
#[derive(Serialize, Deserialize)]
pub struct Writer {
    write_fd: RawFd,
    close: Vec<RawFd>,
    letter: u8,
    messages: usize,
    size: usize,
    lock: Option<LockFile>,
}

impl Run for Writer {
    const ROLE: &'static str = "big-writer";
    fn run(self) -> Result<()> {
        close_inherited(&self.close);
        let lock = self.lock.map(|l| l.open()).transpose()?;
        let message = vec![self.letter; self.size];
        for _ in 0..self.messages {
            let guard = lock.as_ref().map(|l| l.lock()).transpose()?; // the fix: one writer at a time
            // One write(2) of the whole message: more than PIPE_BUF, so the kernel may put it
            // into the pipe in pieces, as room is made, and another writer's pieces between.
            kit::write_all(fd(self.write_fd), &message).context("write() of a big message")?;
            drop(guard);
        }
        Ok(())
    }
}

/// The writers never reached the moment the demo shows: says which died (`child_lost`), or
/// what was expected, after stopping them all (nobody will read their pipe).
fn stop<T>(children: &mut [Process], expected: String) -> Result<T> {
    let dead = common::processes::lost::first_dead(children);
    for c in children.iter_mut() {
        c.kill()?;
        c.join()?;
    }
    match dead {
        Some(i) => Err(common::processes::lost::report(&children[i], "bytes", 0)),
        None => bail!("expected {expected}"),
    }
}

/// What the reader of part 2b sees: fixed-size messages, and which ones mix both letters.
#[derive(Default)]
struct Mixing {
    size: usize,
    at: usize,
    letters: [bool; 2],
    runs: Vec<(u8, usize)>,
    messages: usize,
    mixed: usize,
    switches: usize,
    example: Option<String>,
}

impl Mixing {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.letters[usize::from(b == b'B')] = true;
            match self.runs.last_mut() {
                Some((letter, n)) if *letter == b => *n += 1,
                _ => self.runs.push((b, 1)),
            }
            self.at += 1;
            if self.at == self.size {
                self.end_message();
            }
        }
    }

    fn end_message(&mut self) {
        self.messages += 1;
        if self.letters[0] && self.letters[1] {
            self.mixed += 1;
            self.switches += self.runs.len() - 1;
            self.example.get_or_insert_with(|| {
                let mut text: Vec<String> = self
                    .runs
                    .iter()
                    .take(6)
                    .map(|(l, n)| format!("{}×{n}", char::from(*l)))
                    .collect();
                if self.runs.len() > 6 {
                    text.push(format!("… ({} runs)", self.runs.len()));
                }
                text.join(" ")
            });
        }
        self.at = 0;
        self.letters = [false; 2];
        self.runs.clear();
    }
}

/// Part 2b: two writers, `A` and `B`, of messages four times the pipe's capacity; the parent
/// reads. Returns how many messages were mixed.
fn two_writers(cli: &Cli, locked: bool) -> Result<usize> {
    let (r, w) = kit::pipe()?;
    let capacity = kit::pipe_capacity(r.as_fd())?;
    let size = 4 * capacity;
    let per_writer = cli.big;
    let lock = if locked { Some(LockFile::new("ipc-writer-lock")?) } else { None };
    let mut fds = vec![raw(&w)];
    fds.extend(lock.as_ref().map(|(_, owned)| raw(owned)));
    let writer = |letter: u8| Writer {
        write_fd: raw(&w),
        close: inherited(cli, &[raw(&r)]),
        letter,
        messages: per_writer,
        size,
        lock: lock.as_ref().map(|(l, _)| *l),
    };
    // The race made certain: A is started first and fills the pipe, and sleeps in write(2) with
    // three quarters of its first message still to write; then B is started and sleeps too
    // (in write(2) on the full pipe, or in flock(2) on the lock A holds). Only then does the
    // parent read, a page at a time, making room a page at a time.
    let mut children = vec![cli.common.child("writer-A", writer(b'A'), &fds)];
    children[0].start()?;
    let a = children[0].pid().unwrap_or(0);
    let full = || kit::bytes_in_pipe(r.as_fd()) >= capacity;
    let (a_doing, ok) =
        kit::wait_doing(a, REACH, |d| d.asleep_in("write", Some(raw(&w))) && full());
    if !ok {
        return stop(&mut children, format!("writer-A asleep in write(2), but it is {a_doing:?}"));
    }
    children.push(cli.common.child("writer-B", writer(b'B'), &fds));
    children[1].start()?;
    let b = children[1].pid().unwrap_or(0);
    let b_call = if locked { "flock" } else { "write" };
    let (b_doing, ok) = kit::wait_doing(b, REACH, |d| d.asleep_in(b_call, None));
    if !ok {
        return stop(
            &mut children,
            format!("writer-B asleep in {b_call}(2), but it is {b_doing:?}"),
        );
    }
    let (a_doing, b_doing) = (kit::doing(a), b_doing.expect("read when asleep"));
    let in_pipe = kit::bytes_in_pipe(r.as_fd());
    common::event!("writers_blocked", { "lock": locked, "size": size, "capacity": capacity, "in_pipe": in_pipe,
                "a": { "pid": a, "doing": a_doing }, "b": { "pid": b, "doing": b_doing } }, "two writers of {} messages of {} KiB each (4 × the pipe's {} KiB), {}: writer-A is \
             {} with {} KiB in the pipe; writer-B is {}",
            per_writer,
            size / 1024,
            capacity / 1024,
            if locked { "WITH a lock around each write" } else { "no lock" },
            a_doing.as_ref().map_or("?".into(), kit::Doing::describe),
            in_pipe / 1024,
            b_doing.describe());
    cli.common.hold("two writers asleep on one pipe (ps -o pid,stat,wchan:20,comm)", &[a, b]);
    drop(w);
    let mut mixing = Mixing { size, ..Mixing::default() };
    let mut page = vec![0u8; 4096];
    loop {
        let n = match nix::unistd::read(r.as_fd(), &mut page) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("read() of the writers' pipe"),
        };
        if n == 0 {
            break; // both writers have ended
        }
        mixing.feed(&page[..n]);
        if mixing.messages > 2 * per_writer {
            bail!("more bytes in the pipe than the writers wrote");
        }
    }
    join_all(&mut children, "bytes")?;
    if mixing.messages != 2 * per_writer || mixing.at != 0 {
        bail!("{} whole messages' worth of bytes read of {}", mixing.messages, 2 * per_writer);
    }
    report::event(
        "interleaved_summary",
        json!({ "lock": locked, "messages": mixing.messages, "size": size,
                "interleaved": mixing.mixed, "switches": mixing.switches,
                "example": mixing.example }),
        match &mixing.example {
            Some(example) => format!(
                "{} of {} messages hold bytes of both writers ({} switches), e.g. {example}: one \
                 write(2) of more than PIPE_BUF is not atomic",
                mixing.mixed, mixing.messages, mixing.switches
            ),
            None => format!(
                "{} of {} messages interleaved{}",
                mixing.mixed,
                mixing.messages,
                if locked { ": with the lock, one writer at a time" } else { "" }
            ),
        },
    );
    if locked && mixing.mixed > 0 {
        bail!("the lock failed: {} messages interleaved", mixing.mixed);
    }
    Ok(mixing.mixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_message_is_recognised_and_a_torn_one_is_not() {
        let (h, b) = (header(7), body(7));
        assert_eq!(h.len() + b.len(), HEADER + BODY);
        assert_eq!(whole(h.as_bytes(), b.as_bytes()), Some(7));
        assert_eq!(whole(header(8).as_bytes(), b.as_bytes()), None);
        assert_eq!(whole(&b.as_bytes()[..HEADER], b.as_bytes()), None);
    }

    #[test]
    fn a_message_with_bytes_of_both_writers_counts_as_interleaved() {
        let mut m = Mixing { size: 4, ..Mixing::default() };
        m.feed(b"AAAABBAB");
        assert_eq!((m.messages, m.mixed, m.switches), (2, 1, 2));
        assert_eq!(m.example.as_deref(), Some("B×2 A×1 B×1"));
    }
}
