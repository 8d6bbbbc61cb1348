//! joinable-queue — the notes' `Queue` and `JoinableQueue` across processes (进程queue=管道+锁),
//! and the producer/consumer model (生产者消费者模型) built on them.
//!
//! Four parts, each a subcommand (no subcommand runs them all):
//! 1. `basics`: `Queue(3)`, three puts, `full()`; a fourth `put_nowait` is `Full`; three gets,
//!    `empty()`; a fourth `get_nowait` is `Empty`. What the queue is made of, seen in
//!    `/proc/self/fd`: a pipe and a block of shared memory holding
//!    the locks and counts. An item beyond `max_message` is refused; `task_done` once too often
//!    is an error.
//! 2. `sentinel`: three producers (生产者) make 包子 (buns), two consumers (消费者) eat them
//!    through a plain `Queue`; the main process joins the producers and then puts one `None` per
//!    consumer so that each stops. It works, and it is clumsy ("相当low").
//! 3. `joinable`: the `JoinableQueue` version: producers `join()` the queue, consumers are
//!    daemonic and call `task_done()`, the main process joins the producers and ends; no
//!    sentinel. With `--kill-consumer`, a consumer is killed while it holds a bun: Python's
//!    `join()` would wait forever; here the main process sees the dead consumer and reports the
//!    unfinished count.
//! 4. `bounded`: a fast producer and a slow consumer through `Queue(2)`: the producer sleeps
//!    inside `put` while the queue is full. The consumer is paused (SIGSTOP) for a moment, so the
//!    `ps` view shows the producer `S` (asleep in `put`) and the consumer `T`. `--timeline`
//!    draws the producer's waits.
//!
//! **What to watch for**
//! - `/proc/PID/fd` of any of these processes: `pipe:[…]` twice and `/memfd:concurrency-queue`:
//!   the queue *is* a pipe plus a lock;
//! - part 2: the main process must know how many consumers there are, and can send the `None`s
//!   only after every producer is done;
//! - part 3: "主" is printed after the last `task_done`, the consumers end as daemons
//!   (exitcode -SIGTERM) and no `None` is ever sent;
//! - part 4: the producer's state is `S` while the queue is full (`ps -o wchan` says
//!   `futex_do_wait`: asleep on the queue's count of free places; the paused consumer's says
//!   `do_signal_stop`), and each of its `put`s beyond the second returns only after the
//!   consumer's `get` made room.
//!
//! **Run it**
//! ```text
//! make demo-joinable-queue                              # the four parts, a few seconds
//! make demo-joinable-queue ARGS='bounded --timeline'    # the blocked producer, drawn
//! make demo-joinable-queue ARGS='joinable --kill-consumer'
//! make demo-joinable-queue ARGS='bounded --hold 20'     # pauses; in a second terminal:
//! ps -o pid,ppid,stat,wchan:20,comm -p <the pids it prints>   # and: ls -l /proc/PID/fd
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//! == 1. Queue basics: put, get, full, empty (队列) ==
//!   0.001s [ 40711 joinable-queue] Queue(3) is a pipe plus a lock (进程queue=管道+锁): fds 3 -> pipe:[88412] <- 4, ...
//!   0.001s [ 40711 joinable-queue] q.put_nowait(4) -> queue.Full: no free place in the queue
//! == 3. JoinableQueue: task_done and join, no sentinel ==
//!   0.912s [ 40725 consumer-2] 消费者 consumer-2 ate 包子1 (by producer-3); task_done()
//!   0.913s [ 40722 producer-3] producer-3: q.join() returned: every bun put has been marked done
//!   0.914s [ 40711 joinable-queue] 主 (main code over: every producer joined, 0 unfinished, 0 left)
//!   0.915s [ 40711 joinable-queue] consumer-1 (daemonic) was terminated at the main process's exit: exitcode -SIGTERM
//! == 4. A bounded queue: a fast producer blocks while it is full ==
//!   1.420s [ 40711 joinable-queue] producer-1 is asleep in put (state S) on a full Queue(2) (2 item(s) in it); ...
//!   1.722s [ 40711 joinable-queue] 8 items through Queue(2): 5 put(s) waited for room; every put(n) returned ...
//! ```
//!
//! Platform notes: Linux only. The queue's shared block is a `memfd`, its locks robust POSIX
//! mutexes, its waits futexes, and its pipes are enlarged with `F_SETPIPE_SZ`; the states are
//! read from `/proc/PID/stat`. On other systems this program says so and exits 1.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]
// Elsewhere `main` only says the demo needs Linux, which leaves the rest unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

// Each part is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod basics;
mod bounded;
mod buns;
mod stress;

/// The notes' producers and consumers (seed 002: p1, p2, p3 and c1, c2).
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 2;
/// Buns (包子) per producer: `range(3)` in the Queue version, `range(2)` in the JoinableQueue one.
const SENTINEL_BUNS: usize = 3;
const JOINABLE_BUNS: usize = 2;
/// `Queue(3)` in the basics, as in the notes.
const BASICS_MAXSIZE: usize = 3;
/// The bounded part: a small queue and more items than it holds.
const BOUNDED_MAXSIZE: usize = 2;
const BOUNDED_ITEMS: usize = 8;
/// The notes' sleeps: a producer's `time.sleep(0.5)` per bun, a consumer's `time.sleep(1)`.
const PRODUCER_SLEEP_S: f64 = 0.5;
const CONSUMER_SLEEP_S: f64 = 1.0;
/// The process queue's message sizes (`py_multiprocessing::queue`, Linux only), for the
/// `--max-message` flag's parser; checked equal to the queue's own at compile time.
const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
const MAX_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;
#[cfg(target_os = "linux")]
const _: () = {
    use py_multiprocessing::queue;
    assert!(DEFAULT_MAX_MESSAGE == queue::DEFAULT_MAX_MESSAGE);
    assert!(MAX_MESSAGE_LIMIT == queue::MAX_MESSAGE_LIMIT);
};
/// The caps of the count flags: each producer and consumer is a process, each bun and item
/// costs a sleep, so a typo must not become a fork bomb or a run of hours (exit 2 beyond).
const MAX_PRODUCERS: usize = 16;
const MAX_CONSUMERS: usize = 16;
const MAX_BUNS: usize = 1000;
const MAX_MAXSIZE: usize = 10_000;
const MAX_ITEMS: usize = 1000;
const MAX_STRESS_TOTAL: usize = 1_000_000;
const MAX_STRESS_QUEUE: usize = 100_000;

/// joinable-queue: Queue and JoinableQueue across processes, a pipe plus a lock
/// (进程queue=管道+锁), and producers and consumers (生产者消费者模型) with sentinels or join.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Producer processes (the sentinel and joinable parts), at most 16
    #[arg(long, global = true, value_name = "N", default_value_t = PRODUCERS,
          value_parser = count_in(1..=MAX_PRODUCERS))]
    producers: usize,

    /// Consumer processes (the sentinel and joinable parts), at most 16
    #[arg(long, global = true, value_name = "N", default_value_t = CONSUMERS,
          value_parser = count_in(1..=MAX_CONSUMERS))]
    consumers: usize,

    /// Buns (包子) each producer makes, at most 1000 [default: 3 in sentinel, 2 in joinable, as
    /// the notes]
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(1..=MAX_BUNS))]
    buns: Option<usize>,

    /// The queue's maxsize, at most 10000 [default: 3 in basics, 2 in bounded]
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(1..=MAX_MAXSIZE))]
    maxsize: Option<usize>,

    /// Items the fast producer puts in the bounded part, at most 1000
    #[arg(long, global = true, value_name = "N", default_value_t = BOUNDED_ITEMS,
          value_parser = count_in(1..=MAX_ITEMS))]
    items: usize,

    /// The largest item the basics' queue accepts, in bytes of JSON
    #[arg(long, global = true, value_name = "BYTES",
          default_value_t = DEFAULT_MAX_MESSAGE, value_parser = count_in(16..=MAX_MESSAGE_LIMIT))]
    max_message: usize,

    /// In the joinable part, kill consumer-1 (SIGKILL) while it holds its first bun
    #[arg(long, global = true)]
    kill_consumer: bool,

    /// Draw the bounded part as lanes: the producer's waits in put, the consumer's gets
    #[arg(long, global = true)]
    timeline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. Queue(3): put, get, full, empty, put_nowait/get_nowait; what a queue is made of
    Basics,
    /// 2. Producers and consumers through a Queue; one None sentinel per consumer
    Sentinel,
    /// 3. The JoinableQueue version: task_done and join, daemonic consumers, no sentinel
    Joinable,
    /// 4. A bounded queue: the fast producer blocks in put while the queue is full
    Bounded,
    /// Many items through one queue, checked by count and checksum (for tests)
    #[command(hide = true)]
    Stress {
        /// Items in all, shared among the producers, at most 1000000
        #[arg(long, value_name = "N", default_value_t = 10_000,
              value_parser = count_in(1..=MAX_STRESS_TOTAL))]
        total: usize,
        /// The queue's maxsize (0: unbounded), at most 100000
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = count_in(0..=MAX_STRESS_QUEUE))]
        queue_size: usize,
    },
}

common::demo_cli!(Cli, Cmd);

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    common::demo::main(
        &[
            &buns::SENTINEL_PRODUCER,
            &buns::SENTINEL_CONSUMER,
            &buns::JOINABLE_PRODUCER,
            &buns::JOINABLE_CONSUMER,
            &bounded::PRODUCER,
            &bounded::CONSUMER,
            &stress::PRODUCER,
            &stress::CONSUMER,
        ],
        run,
    )
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    common::demo::linux_only::<Cli>(
        "joinable-queue: this demo needs Linux (memfd, robust mutexes and futexes behind \
         py_multiprocessing::queue)",
    )
}

#[cfg(target_os = "linux")]
fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Cmd::Stress { total, queue_size }) = cli.cmd {
        return stress::run(&cli, total, queue_size);
    }
    common::demo::run_parts(
        &cli,
        &[
            (Cmd::Basics, basics::run),
            (Cmd::Sentinel, buns::sentinel),
            (Cmd::Joinable, buns::joinable),
            (Cmd::Bounded, bounded::run),
        ],
    )
}

/// The notes' `time.sleep(seconds)`, scaled by `--speed`, in milliseconds (sent to children).
#[cfg(target_os = "linux")]
fn notes_ms(cli: &Cli, seconds: f64) -> u64 {
    cli.common.notes_sleep(seconds).as_millis() as u64
}

#[cfg(target_os = "linux")]
fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}
