//! ipc — how isolated processes share data (IPC机制): a pipe, a duplex pipe, shared memory and
//! a file, and why a queue is a pipe plus a lock (进程queue=管道+锁).
//!
//! The notes: "进程间的内存空间存在物理级别隔离" (processes' memories are isolated), so data
//! goes through a third object: a queue ("内部实现了锁"), a pipe ("没有实现锁，无法保证数据的
//! 安全"), shared data ("没有实现锁"), or a file ("效率更低，安全性更差"). Five parts, each a
//! subcommand (no subcommand runs them all, in a few seconds):
//! 1. `pipe`: a pipe from parent to child, one way. End-of-file comes only when *every* write
//!    end is closed: a reader that still holds a write end itself (a forked child has a copy of
//!    each) waits for ever; shown with a deadline, then fixed by closing it. Then the notes'
//!    `ps aux | grep`, run as two children: both `/proc/PID/fd` point at one `pipe:[inode]`.
//! 2. `torn`: why the notes say a pipe has no lock. Two readers of one pipe, each reading a
//!    message's header, then its body, in two `read(2)` calls: without a lock, messages are
//!    split between them ("200 of 200 messages torn"); with a lock around each message, none.
//!    Two writers of messages bigger than the pipe: their bytes interleave; with a lock around
//!    each write, they do not. That lock is what makes `Queue` a pipe *plus a lock*.
//! 3. `duplex`: `multiprocessing.Pipe()`: two connected ends that both `send` and `recv` (a
//!    `socketpair`), a ping-pong between two processes, and `Pipe(duplex=False)`, a plain pipe
//!    whose read end cannot send.
//! 4. `shared-memory`: a counter in shared memory (a memfd mapped `MAP_SHARED`, so spawn works
//!    too) that four processes increment: updates lost without a lock, exact with a
//!    process-shared lock or an atomic `fetch_add` (Python's `Value('i')` and its lock);
//!    `/proc/PID/maps` of each shows the same memfd at its own address.
//! 5. `file`: the same counter in a file, read-modify-write under `flock`: correct and far
//!    slower; without the lock, lost updates and torn reads. A table of the same counter by
//!    pipe, shared memory and file: the notes' "效率更低，安全性更差", measured.
//!
//! **What to watch for**
//! - part 1: the hung reader is `S`, asleep in `read(2)`, and its own `/proc/PID/fd` still has
//!   the pipe's write end; once it closes that copy, `read` returns 0 (end-of-file);
//! - part 1: `ls -l /proc/PID/fd` of the two children: the same `pipe:[inode]`, a write end in
//!   one, a read end in the other, and nothing else of the pipe anywhere;
//! - part 2: "torn" counts above zero without the lock and exactly zero with it; the writer
//!   waiting for the lock sleeps in `flock(2)`, the other in `write(2)` with the pipe full;
//! - part 4: the counter short of 4 × N without a lock, exact with one; the same
//!   `/memfd:ipc-counter` line at different addresses in the children's `/proc/PID/maps`;
//! - part 5: the file is right under `flock`, and slower per increment than shared memory.
//!
//! **Run it**
//! ```text
//! make demo-ipc                                  # the five parts, a few seconds
//! make demo-ipc ARGS='pipe --hold 20'            # pauses; in a second terminal:
//! ls -l /proc/PID/fd                             # for the pids it prints: one pipe:[inode]
//! make demo-ipc ARGS='torn --hold 20'            # then: ps -o pid,stat,wchan:20,comm -p PIDS
//! make demo-ipc ARGS='shared-memory --start-method spawn'
//! ```
//!
//! Expected output (abridged; pids, times and counts differ):
//! ```text
//! == 1. A pipe, one way: parent -> child (管道) ==
//!   0.309s [ 16988 ipc] reader-1 has received everything and still waits, 300ms later: S (asleep in read(2) on fd 4); its own fd [5] is the pipe's write end, so end-of-file never comes (it would wait for ever)
//!   0.311s [ 17032 reader-2] reader-2: read() returned 0: end-of-file (every write end is closed); 3 line(s) received
//!   0.316s [ 16988 ipc] ps-aux (pid 17033) holds fd 5 (write) and grep (pid 17034) holds fd 4 (read) of pipe:[178694]: one pipe, one inode, ...
//! == 2. A pipe has no lock: torn messages, interleaved writes (管道没有实现锁) ==
//!   0.327s [ 16988 ipc] without a lock: 200 of 200 messages torn between 2 readers: ...
//!   0.336s [ 16988 ipc] with a lock around each message: 0 of 200 torn
//!   0.440s [ 16988 ipc] 8 of 8 messages hold bytes of both writers (431 switches), e.g. A×69632 B×4096 A×4096 B×4096 ...
//! == 4. Shared memory: a counter four processes increment (共享数据) ==
//!   0.418s [ 16988 ipc] shared memory, no lock          counter =    2000, expected 4 × 2000 = 8000: 6000 updates LOST (2.82 M/s)
//!   0.425s [ 16988 ipc] shared memory + lock            counter =    8000, expected 4 × 2000 = 8000: exact (1.88 M/s)
//! == 5. A file: the same counter, read-modify-write under flock (文件共享数据) ==
//!   0.634s [ 16988 ipc] file, no lock                   counter =     357, expected 4 × 200 = 800: 443 updates LOST; 37 read(s) found the file empty ...
//! ```
//!
//! Platform notes: Linux only. The parts read `/proc/PID/fd`, `/proc/PID/syscall` and
//! `/proc/PID/maps`, make anonymous files with `memfd_create`, and use robust process-shared
//! mutexes and futexes; on other systems this program says so and exits 1.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]
// Elsewhere `main` only says the demo needs Linux, which leaves the rest unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

// Each part is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod counter;
mod duplex;
mod file;
mod kit;
mod pipe;
mod shared;
mod torn;

/// Lines the parent sends down the pipe in part 1.
const PIPE_MESSAGES: usize = 3;
/// How long part 1 waits for a reader that can never see end-of-file, in milliseconds.
const EOF_DEADLINE_MS: u64 = 300;
/// Messages the two readers of part 2 share, and the readers.
const TORN_MESSAGES: usize = 200;
const READERS: usize = 2;
/// Big messages each writer of part 2 writes (each four times the pipe's capacity).
const BIG_MESSAGES: usize = 4;
/// Round trips of the duplex ping-pong.
const ROUND_TRIPS: usize = 5;
/// Processes that increment the shared counter, and how many times each (parts 4 and 5).
const PROCESSES: usize = 4;
const SHM_INCREMENTS: usize = 2000;
const FILE_INCREMENTS: usize = 200;
/// Part 2's readers meet between header and body at every message; the counters' processes
/// meet between read and write once every this many increments.
const TORN_MEET_EVERY: usize = 1;
const COUNTER_MEET_EVERY: usize = 20;

/// Caps of the count flags (said in `--help` and in the error).
const MAX_MESSAGES: usize = 1000;
const MAX_READERS: usize = 8;
const MAX_BIG: usize = 64;
const MAX_ROUND_TRIPS: usize = 100_000;
const MAX_PROCESSES: usize = 16;
const MAX_INCREMENTS: usize = 1_000_000;
const MAX_DEADLINE_MS: u64 = 10_000;

/// ipc: how isolated processes share data (IPC机制): a pipe, a duplex pipe, shared memory, a
/// file; and why a queue is a pipe plus a lock (进程queue=管道+锁).
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Messages: lines down the pipe (pipe) or messages the readers share (torn) [default: 3
    /// in pipe, 200 in torn; at most 1000]
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(1..=MAX_MESSAGES))]
    messages: Option<usize>,

    /// How long the pipe part waits for the reader that can never see end-of-file, in ms
    /// [10 to 10000]
    #[arg(long, global = true, value_name = "MS", default_value_t = EOF_DEADLINE_MS,
          value_parser = clap::value_parser!(u64).range(10..=MAX_DEADLINE_MS))]
    deadline_ms: u64,

    /// Reader processes of one pipe in the torn part [2 to 8]
    #[arg(long, global = true, value_name = "N", default_value_t = READERS,
          value_parser = count_in(2..=MAX_READERS))]
    readers: usize,

    /// Big messages (4 times the pipe's capacity each) per writer in the torn part [1 to 64]
    #[arg(long, global = true, value_name = "N", default_value_t = BIG_MESSAGES,
          value_parser = count_in(1..=MAX_BIG))]
    big: usize,

    /// Round trips of the duplex ping-pong [1 to 100000]
    #[arg(long, global = true, value_name = "N", default_value_t = ROUND_TRIPS,
          value_parser = count_in(1..=MAX_ROUND_TRIPS))]
    round_trips: usize,

    /// Processes incrementing the shared counter (shared-memory, file) [2 to 16]
    #[arg(long, global = true, value_name = "N", default_value_t = PROCESSES,
          value_parser = count_in(2..=MAX_PROCESSES))]
    processes: usize,

    /// Increments per process [default: 2000 in shared-memory, 200 in file; at most 1000000]
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(1..=MAX_INCREMENTS))]
    increments: Option<usize>,

    /// Make the race certain: the processes meet at the worst moment once every N operations
    /// (0: never, leave the race to chance) [default: 1 in torn, 20 in the counters; at most
    /// 1000000]
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(0..=MAX_INCREMENTS))]
    meet_every: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. A pipe, one way: end-of-file only when every write end is closed; ps aux | grep
    Pipe,
    /// 2. A pipe has no lock: torn messages between two readers, interleaved big writes
    Torn,
    /// 3. multiprocessing.Pipe(): a socketpair, both ends send and recv; a ping-pong
    Duplex,
    /// 4. A counter in shared memory: lost updates without a lock, exact with a lock or atomic
    SharedMemory,
    /// 5. The counter in a file under flock, and pipe, shared memory and file side by side
    File,
}

common::demo_cli!(Cli, Cmd);

impl Cli {
    fn messages(&self, default: usize) -> usize {
        self.messages.unwrap_or(default)
    }
    fn increments(&self, default: usize) -> usize {
        self.increments.unwrap_or(default)
    }
    fn meet_every(&self, default: usize) -> usize {
        self.meet_every.unwrap_or(default)
    }
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    common::demo::main_parts(
        &[
            &pipe::READER,
            &pipe::PS_AUX,
            &pipe::GREP,
            &torn::READER,
            &torn::WRITER,
            &duplex::PONG,
            &counter::INCREMENTER,
        ],
        &[
            (Cmd::Pipe, pipe::run),
            (Cmd::Torn, torn::run),
            (Cmd::Duplex, duplex::run),
            (Cmd::SharedMemory, shared::run),
            (Cmd::File, file::run),
        ],
    )
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    common::demo::linux_only::<Cli>(
        "ipc: this demo needs Linux (/proc, memfd_create, robust mutexes and futexes)",
    )
}

/// What a forked child must close of the descriptors it inherits (a spawned child, or one of
/// the fork server's, never had them: it has only those passed to it, so nothing).
#[cfg(target_os = "linux")]
fn inherited(cli: &Cli, fds: &[i32]) -> Vec<i32> {
    if cli.common.start_method == common::process::StartMethod::Fork {
        fds.to_vec()
    } else {
        Vec::new()
    }
}

/// Joins every child, watching them: one that fails is reported (`child_lost`) and the others,
/// which may be waiting for it, are stopped; the demo then exits 1.
#[cfg(target_os = "linux")]
fn join_all(children: &mut [common::process::Process], what: &str) -> anyhow::Result<()> {
    match common::processes::lost::join_all(children)? {
        None => Ok(()),
        Some(index) => Err(common::processes::lost::report(&children[index], what, 0)),
    }
}
