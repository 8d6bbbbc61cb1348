//! threads — what a thread is to the OS and to a program (线程): two ways to start one, the
//! threads of one process in `ps -L`, shared memory against isolated processes, what threads
//! cost, daemon threads (守护线程), and seed 001's balance race counted and fixed (线程锁).
//!
//! Seven parts, each a subcommand (no subcommand runs them all, in a few seconds). Every
//! thread started here is named, so `ps -L` shows it; every line a thread prints reads
//! `[pid/tid name]`, and every `--json` event carries `tid` and `thread`:
//! 1. `names`: seed 001's Ex.1, line for line (`thread MainThread is running...`, `thread
//!    LoopThread >>> 1` ... `5`, `thread LoopThread ended`); then what the OS sees: one pid, a
//!    tid per thread, the name in `/proc/PID/task/TID/comm` (15 bytes: a long name is cut),
//!    state and wchan per thread; Python's default names beside Rust's.
//! 2. `two-ways`: from a closure (`Thread(target=…)`) and from a type with a `run` method
//!    (`class MyThread(Thread)`).
//! 3. `shared`: a value written by a thread is seen by main at the same address; written by a
//!    forked child it is not (进程负责数据隔离，线程负责执行代码，共享全局资源).
//! 4. `cost`: start+join of a thread, a fork child and a spawn child; a switch, as ping-pong
//!    round trips through pipes between two threads and between two processes.
//! 5. `daemon`: Python's rule (non-daemon threads joined when the main code ends, daemon
//!    threads cut off, their `finally` never run) rebuilt; Rust's rule (every thread dies when
//!    `main` returns), each in a child process; then `thread::scope`, the non-daemon way.
//! 6. `race`: the balance program with two threads: the notes' code does not compile (see the
//!    library's docs); a relaxed load-then-store loses updates, counted; `Mutex` (and
//!    poisoning) and `fetch_add` are exact, each with its cost. `race --step` (or
//!    `--schedule 0,1,0,1,...`): you grant each load and store; the goal, lose an update.
//! 7. `dead-holder`: a lock whose holder thread ends. Python's `Lock` stays locked (苦苦等待锁
//!    的线程将永远等待下去); a Rust guard is released when its thread ends, poisoned if it
//!    panicked; only a guard leaked on purpose keeps it locked.
//!
//! **What to watch for**: in `ps -L` one PID and one LWP (tid) per thread, the main thread's
//! LWP equal to the PID; `LoopThread-with` for the name `LoopThread-with-a-long-name`; an
//! unnamed thread shown under the program's name; waiting threads in state `S` with wchan
//! `futex_wait…`; in `race`, "lost N of M" for the racy loop and exact counts for the others.
//!
//! **Run it**:
//! ```text
//! make demo-threads                             # the tour
//! make demo-threads ARGS='names --hold 20'      # pause with the threads alive; in a second terminal:
//! ps -L -o pid,lwp,stat,wchan:20,psr,comm -p <the demo's pid>   # the command the demo prints
//! make demo-threads ARGS='race --window yield'  # a yield inside the read-modify-write
//! make demo-threads ARGS='names --timeline'     # one lane per thread
//! ```
//!
//! Expected output (abridged; pids, tids and times differ):
//! ```text
//! == 1. names: seed 001's Ex.1, then what the OS sees ==
//!   0.001s [ 40211 threads] thread MainThread is running...
//!   0.001s [ 40211/40213 LoopThread] thread LoopThread is running...
//!   0.001s [ 40211/40213 LoopThread] thread LoopThread >>> 1
//!   ...
//!   0.502s [ 40211/40213 LoopThread] thread LoopThread ended
//!   0.502s [ 40211 threads] thread MainThread ended
//!   0.503s [ 40211 threads] the threads of pid 40211, from /proc/40211/task
//!     PID     TID STAT WCHAN                 PSR   CPU ms  VOL/INVOL  NAME
//!   40211   40211 R    -                       1        2        3/0  threads
//!   40211   40212 S    do_sys_poll             0        0        1/0  signal-watcher
//!   40211   40214 S    futex_do_wait           0        0        1/0  LoopThread
//!   40211   40215 S    futex_do_wait           1        0        1/0  LoopThread-with
//!   40211   40216 S    futex_do_wait           0        0        1/0  threads
//! == 6. race: seed 001's balance program, two threads (线程锁) ==
//!   0.264s [ 21465 threads] racy (load, then store): lost 159,768 of 2,000,000 changes in 261.8 ms;
//!                           balance = 8 (should be 0): the invariant broke
//!   0.591s [ 21465 threads] Mutex: lost 0 of 2,000,000 changes in 326.1 ms; balance = 0: exact; 1.2x
//!                           the racy loop's time
//!   0.703s [ 21465 threads] fetch_add: lost 0 of 2,000,000 changes in 107.8 ms; balance = 0: exact;
//!                           0.4x the racy loop's time
//! ```
//!
//! Platform notes: Linux first. The thread table reads `/proc/PID/task`, and the kernel keeps
//! a thread name of 15 bytes (`pthread_setname_np`). Elsewhere the parts run, without the
//! table. The children of `shared`, `cost` and `daemon` are forked (or spawned, with
//! `--start-method spawn`, where a part allows it).
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod cost;
mod daemon;
mod dead_holder;
mod names;
mod race;
mod shared;
mod two_ways;

use clap::{Parser, Subcommand, ValueEnum};
use common::cli::{CommonArgs, count_in};
use common::report;

/// Seed 001's Ex.1 loops five times.
const LOOPS: usize = 5;
const MAX_LOOPS: usize = 1000;
/// Seed 001's `for i in range(1000000)`, in each of the two threads.
const UPDATES: usize = 1_000_000;
const MAX_UPDATES: usize = 100_000_000;
/// Part 4: starts and joins per round, rounds, and ping-pong round trips per round.
const COUNT: usize = 20;
const MAX_COUNT: usize = 10_000;
const ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 101;
const ROUND_TRIPS: usize = 5_000;
const MAX_ROUND_TRIPS: usize = 1_000_000;

/// threads: two ways to start a thread, threads in ps -L, shared memory vs isolated processes,
/// what threads cost, daemon threads, and the balance race counted and fixed.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Draw one lane per thread (parts names and two-ways)
    #[arg(long, global = true)]
    timeline: bool,

    /// Part 1: how many times LoopThread prints and sleeps (1 to 1000)
    #[arg(long, global = true, value_name = "N", default_value_t = LOOPS,
          value_parser = count_in(1..=MAX_LOOPS))]
    loops: usize,

    /// Part 6: change_it calls in each of the two threads (1 to 100000000; with --step or
    /// --schedule 1 to 3) [default: 1000000; 1 with --step or --schedule]
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(1..=MAX_UPDATES))]
    updates: Option<usize>,

    /// Part 6: be the scheduler: before each load and store, see the balance and each thread's
    /// next step, and choose who goes (at a terminal; without one, a random schedule, printed)
    #[arg(long, global = true)]
    step: bool,

    /// Part 6: replay a schedule: thread numbers from 0 (change_it(5)) and 1 (change_it(8)),
    /// one per step (0,0,1,1,...)
    #[arg(long, global = true, value_name = "LIST", conflicts_with = "step")]
    schedule: Option<String>,

    /// Part 6: the seed of the random schedule (--step without a terminal)
    #[arg(long, global = true, value_name = "N")]
    seed: Option<u64>,

    /// Part 6: what sits between the read and the write of the racy loop
    #[arg(long, global = true, value_enum, value_name = "WINDOW", default_value_t = Window::None)]
    window: Window,

    /// Part 4: threads or children started and joined per round (1 to 10000)
    #[arg(long, global = true, value_name = "N", default_value_t = COUNT,
          value_parser = count_in(1..=MAX_COUNT))]
    count: usize,

    /// Part 4: rounds of each measurement; the medians are shown (1 to 101)
    #[arg(long, global = true, value_name = "N", default_value_t = ROUNDS,
          value_parser = count_in(1..=MAX_ROUNDS))]
    rounds: usize,

    /// Part 4: ping-pong round trips per round (1 to 1000000)
    #[arg(long, global = true, value_name = "N", default_value_t = ROUND_TRIPS,
          value_parser = count_in(1..=MAX_ROUND_TRIPS))]
    round_trips: usize,
}

/// What the racy loop does between reading a value and writing it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Window {
    /// Nothing: the race depends on the two threads' timing
    None,
    /// `thread::yield_now()`: the CPU is offered to the other thread in the middle
    Yield,
    /// A barrier step: each thread waits for the other between its read and its write, so
    /// both read the same value and one write is lost for certain
    Barrier,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. Seed 001's Ex.1 (MainThread, LoopThread), then the threads as the OS sees them
    Names,
    /// 2. Two ways to start a thread: a closure, or a type with a run method
    TwoWays,
    /// 3. Threads share their process's memory; a forked child has its own copy
    Shared,
    /// 4. What a thread costs: start+join against fork and spawn; switches by ping-pong
    Cost,
    /// 5. Daemon threads: Python's rule, Rust's rule, and thread::scope
    Daemon,
    /// 6. The balance race: lost updates counted; Mutex (and poisoning) and fetch_add exact
    Race,
    /// 7. A lock whose holder thread ends: released, poisoned, or (leaked) locked for good
    DeadHolder,
}

common::demo_cli!(Cli, Cmd);

fn main() -> std::process::ExitCode {
    common::demo::main(&[&common::startcost::NOOP, &daemon::PYTHON_RULE, &daemon::RUST_RULE], run)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.step || cli.schedule.is_some() {
        let race = matches!(cli.cmd, Some(Cmd::Race));
        common::stepper::only_in(race, "part 6", "threads race --step")?;
        return race::stepped(&cli);
    }
    common::demo::run_parts(
        &cli,
        &[
            (Cmd::Names, names::run),
            (Cmd::TwoWays, two_ways::run),
            (Cmd::Shared, shared::run),
            (Cmd::Cost, cost::run),
            (Cmd::Daemon, daemon::run),
            (Cmd::Race, race::run),
            (Cmd::DeadHolder, dead_holder::run),
        ],
    )
}

/// Runs `body`; with `--timeline`, records every event meanwhile and draws one lane per
/// thread, `symbol` where a thread recorded `event`.
fn lanes<T>(
    cli: &Cli,
    title: &str,
    event: &'static str,
    symbol: char,
    body: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if !cli.timeline {
        return body();
    }
    let recording = common::timeline::Recording::start()?;
    let value = body()?;
    let records = recording.finish()?;
    let style = common::timeline::Style::new().per_thread().mark(event, symbol);
    common::timeline::show(title, &records, &style);
    Ok(value)
}

/// The name Python would print for the current thread: `MainThread` for the main one.
fn python_name() -> String {
    match std::thread::current().name() {
        Some("main") => "MainThread".to_string(),
        Some(name) => name.to_string(),
        None => "unnamed".to_string(),
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Runs `f` with panics reported as an event (`panic`, naming the thread) instead of the
/// default message on standard error; the previous hook is restored afterwards.
fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let thread = common::threads::named::current_name();
        report::event(
            "panic",
            serde_json::json!({ "thread": thread, "message": message }),
            format!("thread '{thread}' panicked: {message}"),
        );
    }));
    let value = f();
    std::panic::set_hook(previous);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(2_349_227), "2,349,227");
        assert_eq!(grouped(-1310), "-1,310");
        assert_eq!(grouped(999), "999");
    }
}
