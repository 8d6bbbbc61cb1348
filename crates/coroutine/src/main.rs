//! coroutine — concurrency on one thread (单线程下实现并发): synchronous and asynchronous calls,
//! callbacks and who runs them, and coroutines as a switch plus a saved state.
//!
//! Five parts, each a subcommand (no subcommand runs them all, in a few seconds):
//! 1. `calls`: a task submitted synchronously (the caller waits) and asynchronously (the caller
//!    goes on); the three states of a task, read from `/proc`: a synchronous call to a
//!    CPU-bound function is `R` (the caller waits by working), a blocking call `S` (asleep in
//!    `read`), and two CPU-bound threads pinned to one CPU are both `R`: running and ready
//!    (运行, 就绪) share one letter.
//! 2. `callbacks` (异步回调, the kettle that whistles): a thread pool's future with a callback;
//!    the worker thread runs it when the future finishes later, the caller when it was already
//!    done, as `concurrent.futures` does. Each line names its thread and TID.
//! 3. `switch` (切换+保存状态): a generator written by hand as a state machine; then `async fn`
//!    futures, which *are* such state machines: `size_of_val` shows the saved state (a few
//!    bytes; 1 KiB more when a 1 KiB buffer lives across an `.await`); a switch in CPU work only
//!    costs.
//! 4. `executor`: a minimal executor written here (`mini.rs`, std only) runs ten tasks that each
//!    sleep: about one sleep in all, on one TID; the same on tokio's current-thread runtime. Then
//!    ten CPU-bound tasks: the sum of their times on one thread, about half on two when two
//!    CPUs are free (the verdict compares this run's two times); and a
//!    blocking `std::thread::sleep` inside a task: no other task moves while it sleeps.
//! 5. `three-ways` (如何实现协程, 三种): generator-like, greenlet-like (`corosensei`), gevent-like
//!    (tokio), with the cost of one switch each; then where coroutines pay (io-models).
//!
//! **What to watch for**: in `executor`, every task's line carries the same TID: ten tasks, one
//! thread; the elapsed time is one sleep, not ten. In `calls`, `ps -L` shows `sync-cpu-call`
//! `R` and `blocking-call` `S` (wchan `anon_pipe_read`; older kernels: `pipe_read`). In
//! `callbacks`, the whistle comes from `pool-worker-N`, the second callback from `main`.
//!
//! **Run it**:
//! ```text
//! make demo-coroutine
//! make demo-coroutine ARGS='calls --hold 20'        # then, in a second terminal:
//! ps -L -o pid,lwp,stat,wchan:20,psr,comm -p <pid>  # (the demo prints the command)
//! make demo-coroutine ARGS='executor --speed 1'     # the notes' one-second sleeps
//! ```
//!
//! Expected output (abridged; pids, tids and times differ):
//! ```text
//! == 4. An executor: ten sleeping tasks on one thread; what a coroutine cannot do ==
//!   0.312s [ 6101 coroutine] the minimal executor (std only): 10 tasks each sleeping 100 ms took
//!                            101 ms in all (not 1000 ms), all on thread(s) [6101]
//!   0.530s [ 6101 coroutine] 10 CPU-bound tasks of 20 ms CPU each on 1 worker thread(s): 201 ms in all
//!   0.640s [ 6101 coroutine] 10 CPU-bound tasks of 20 ms CPU each on 2 worker thread(s): 104 ms in all
//! == 5. Three ways to make a coroutine (如何实现协程), and what a switch costs ==
//!   0.700s [ 6101 coroutine] generator-like       1.1 ns per switch
//!   0.702s [ 6101 coroutine] greenlet-like        3.0 ns per switch
//!   0.740s [ 6101 coroutine] gevent-like         60.2 ns per switch
//! ```
//!
//! Platform notes: Linux (the states come from `/proc`, pinning from `sched_setaffinity`).
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod callbacks;
mod calls;
mod executor;
mod mini;
mod switch;
mod three_ways;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

/// The notes' ten tasks.
const TASKS: usize = 10;
/// CPU time of each CPU-bound task in part 4, in milliseconds (not scaled by `--speed`).
const CPU_MS: u64 = 20;
/// Switches measured per way in part 5.
const SWITCHES: usize = 100_000;
/// Steps of each CPU-bound task in part 3's comparison.
const SWITCH_STEPS: usize = 20_000;
/// A synchronous call's countdown in part 1.
const COUNTDOWN: u64 = 20_000_000;

/// coroutine: concurrency on one thread (单线程下实现并发) — sync and async calls, callbacks and
/// who runs them, coroutines as switch + saved state, executors, three ways to a coroutine.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Tasks in the executor part (1 to 10000)
    #[arg(long, global = true, value_name = "N", default_value_t = TASKS,
          value_parser = count_in(1..=10_000))]
    tasks: usize,

    /// CPU time of each CPU-bound task in the executor part, in ms (1 to 1000)
    #[arg(long, global = true, value_name = "MS", default_value_t = CPU_MS,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    cpu_ms: u64,

    /// Switches measured for each way in the three-ways part (1 to 10000000)
    #[arg(long, global = true, value_name = "N", default_value_t = SWITCHES,
          value_parser = count_in(1..=10_000_000))]
    switches: usize,

    /// Steps of each CPU-bound task in the switch part (1 to 10000000)
    #[arg(long, global = true, value_name = "N", default_value_t = SWITCH_STEPS,
          value_parser = count_in(1..=10_000_000))]
    switch_steps: usize,

    /// The synchronous call's countdown in the calls part (1 to 10000000000)
    #[arg(long, global = true, value_name = "N", default_value_t = COUNTDOWN,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000_000))]
    countdown: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. Sync and async calls; running, ready, blocked; a busy wait (R) vs a blocked one (S)
    Calls,
    /// 2. Asynchronous callbacks: the kettle; which thread runs the callback
    Callbacks,
    /// 3. A coroutine is a switch plus a saved state: a hand-made generator, async fn sizes
    Switch,
    /// 4. A minimal executor and tokio: ten sleeping tasks, CPU-bound tasks, a blocking call
    Executor,
    /// 5. Three ways to a coroutine (generator, greenlet, gevent) and a switch's cost each
    ThreeWays,
}

common::demo_cli!(Cli, Cmd);

fn main() -> ExitCode {
    common::demo::main_parts(
        &[],
        &[
            (Cmd::Calls, calls::run),
            (Cmd::Callbacks, callbacks::run),
            (Cmd::Switch, switch::run),
            (Cmd::Executor, executor::run),
            (Cmd::ThreeWays, three_ways::run),
        ],
    )
}
