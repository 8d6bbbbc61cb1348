//! thread-queue — Python's `queue` module between threads (线程queue): `Queue` (队列),
//! `LifoQueue` (堆栈), `PriorityQueue` (优先级队列), `task_done`/`join`, and 3.13's `shutdown`,
//! with producers and consumers as threads of one process.
//!
//! Four parts, each a subcommand (no subcommand runs them all, in about two seconds), over
//! `py_threading::queue`, built as CPython builds `queue.py`: one mutex, three conditions.
//! 1. `orders`: the same items through each kind: FIFO `1, 3, 2` comes out `1, 3, 2`; LIFO
//!    `2, 3, 1`; priority `(2, "p2"), (1, "p1"), (3, "p3")` comes out `p1, p2, p3`.
//! 2. `blocking`: `Queue(maxsize=2)`: a producer thread's third `put` blocks (its thread is seen
//!    in state `S` in `/proc/PID/task/TID/stat`) until main's `get` makes room; `put(timeout)` on
//!    a full queue raises `Full`, `get(timeout)` on an empty one `Empty`, each after its timeout.
//! 3. `joinable`: seed 002's buns (包子) with threads instead of processes: three producer
//!    threads `put` two buns each and `join()` the queue; two consumer threads `get`, eat, and
//!    `task_done()`; main joins the producers and prints 主. Then the cost of one item through
//!    this queue (threads share memory: no pipe, no copy) against the process `JoinableQueue`
//!    of the joinable-queue demo (a pipe, JSON, shared counters), in one table.
//! 4. `shutdown`: `shutdown()` lets the consumers drain the queue, then their `get` raises
//!    `ShutDown`; `shutdown(immediate=True)` drops what is left, and `join()` returns as soon as
//!    the item already taken is done.
//!
//! **What to watch for**: one PID, many TIDs: every producer and consumer is a named thread of
//! the same process (`[pid/tid producer-1]` in each line; `ps -L` lists them). In part 2 the
//! blocked producer is `S` with a `futex` wchan: asleep on the queue's `not_full` condition. In
//! part 3, 主 comes after the last `task_done`, never before; and the per-item cost of the
//! thread queue is a fraction of the process queue's.
//!
//! **Run it**:
//! ```text
//! make demo-thread-queue                                # the four parts
//! make demo-thread-queue ARGS='blocking --hold 20'      # pauses while the producer is blocked;
//! ps -L -o pid,lwp,stat,wchan:20,psr,comm -p <pid>      # in a second terminal (the demo prints it)
//! make demo-thread-queue ARGS='joinable --speed 1'      # the notes' own timing
//! ```
//!
//! Expected output (abridged; pids, tids and times differ):
//! ```text
//! == 1. Queue, LifoQueue, PriorityQueue: the same items, three orders (队列, 堆栈, 优先级队列) ==
//!   0.000s [ 51020 thread-queue] Queue():         put 1, 3, 2 -> get 1, 3, 2  (first in, first out)
//!   0.000s [ 51020 thread-queue] LifoQueue():     put 1, 3, 2 -> get 2, 3, 1  (last in, first out: a stack)
//!   0.000s [ 51020 thread-queue] PriorityQueue(): put (2, 'p2'), (1, 'p1'), (3, 'p3') -> get p1, p2, p3
//! == 2. Queue(maxsize=2): a third put blocks until a get makes room ==
//!   0.003s [ 51020/51023 producer] q.put(3) ... (the queue is full: this thread waits in put)
//!   0.005s [ 51020 thread-queue] producer thread 51023 is S (asleep, futex_wait_queue) in put
//!   0.005s [ 51020 thread-queue] q.get() -> 1: a place is free
//!   0.005s [ 51020/51023 producer] q.put(3) returned after 2 ms
//! == 3. Producers and consumers as threads: JoinableQueue's model with task_done and join ==
//!   0.160s [ 51020/51031 producer-1] 生产者 producer-1 made 包子0
//!   0.260s [ 51020/51034 consumer-1] 消费者 consumer-1 ate 包子0 (by producer-1); task_done()
//!   0.562s [ 51020 thread-queue] 主 (every producer joined: 6 buns eaten, 0 unfinished)
//!   0.700s [ 51020 thread-queue] one item through each queue, put + get + task_done:
//!      thread Queue (shared memory)        0.4 µs
//!      process JoinableQueue (pipe+lock)   3.1 µs   (7.8x the thread queue)
//! ```
//!
//! Platform notes: the thread queue is portable std; the thread states come from `/proc`
//! (Linux), and part 3 is Linux only, for its table's process queue (memfd, futexes).
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod blocking;
#[cfg(target_os = "linux")]
mod joinable;
common::linux_only_part!(joinable, "its table's process JoinableQueue: memfd, futexes");
mod orders;
mod shutdown;
mod stress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

/// Seed 002's three producers (p1, p2, p3) and two consumers (c1, c2).
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 2;
/// Seed 002's `for i in range(2)`: buns per producer.
const BUNS: usize = 2;
/// Items measured through each queue for part 3's table.
const COST_ITEMS: usize = 20_000;
/// The most threads any part starts on one side (producers, or consumers).
const MAX_THREADS: usize = 64;
/// The most items a part sends (each is a few bytes: this bounds memory and time).
const MAX_ITEMS: usize = 1_000_000;

/// thread-queue: Python's queue module between threads (线程queue) — Queue, LifoQueue,
/// PriorityQueue, put/get with block and timeout, task_done/join, shutdown.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Producer threads in the joinable and stress parts (1 to 64)
    #[arg(long, global = true, value_name = "N", default_value_t = PRODUCERS,
          value_parser = count_in(1..=MAX_THREADS))]
    producers: usize,

    /// Consumer threads in the joinable, shutdown and stress parts (1 to 64)
    #[arg(long, global = true, value_name = "N", default_value_t = CONSUMERS,
          value_parser = count_in(1..=MAX_THREADS))]
    consumers: usize,

    /// Buns each producer makes in the joinable part (1 to 1000000)
    #[arg(long, global = true, value_name = "N", default_value_t = BUNS, value_parser = count_in(1..=MAX_ITEMS))]
    buns: usize,

    /// Items sent through each queue for the joinable part's cost table (1 to 1000000)
    #[arg(long, global = true, value_name = "N", default_value_t = COST_ITEMS,
          value_parser = count_in(1..=MAX_ITEMS))]
    cost_items: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. The same items through Queue, LifoQueue and PriorityQueue: three orders
    Orders,
    /// 2. Queue(maxsize=2): a blocked put (thread in S), Full and Empty after a timeout
    Blocking,
    /// 3. Seed 002's buns with threads: join and task_done; then thread queue vs process queue
    Joinable,
    /// 4. shutdown(): consumers drain, then ShutDown; shutdown(immediate=True) drops the rest
    Shutdown,
    /// Producers -> consumers, each item checked: nothing lost, none twice, order kept
    #[command(hide = true)]
    Stress {
        /// Items per producer (1 to 1000000)
        #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = count_in(1..=MAX_ITEMS))]
        items: usize,
        /// The queue's maxsize (0: unbounded)
        #[arg(long, value_name = "N", default_value_t = 64)]
        maxsize: usize,
    },
}

common::demo_cli!(Cli, Cmd);

fn main() -> ExitCode {
    common::demo::main(&joinable::ROLES, run)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Cmd::Stress { items, maxsize }) = cli.cmd {
        return stress::run(&cli, items, maxsize);
    }
    common::demo::run_parts(
        &cli,
        &[
            (Cmd::Orders, |cli: &Cli| orders::run(&cli.common)),
            (Cmd::Blocking, blocking::run),
            (Cmd::Joinable, joinable::run),
            (Cmd::Shutdown, shutdown::run),
        ],
    )
}
