//! pool — process pools (进程池): `apply_async` and `apply`, collecting results, callbacks and
//! who runs them, process pools against thread pools, and a worker killed in the middle of a
//! task.
//!
//! Six parts, each a subcommand (no subcommand runs them all, in a few seconds), with
//! `py_multiprocessing::pool`, this workspace's `multiprocessing.Pool`:
//! 1. `apply-async`: seed 001's `Pool(3)` and four tasks by `apply_async`. `****` is printed as
//!    soon as the four are submitted (异步, 非阻塞); three workers run at once; the fourth task
//!    waits for the first worker that frees up and runs in *its* pid: a pool keeps its workers.
//! 2. `apply`: the blocking pool (阻塞进程池): the same four tasks by `apply`, strictly one after
//!    another, so `****` comes last and the wall time is the sum.
//! 3. `get`: collecting results (关注进程池结果): `get`; `map` returns results in the order of its
//!    items even when they finish in another order; the `close`/`join` rules; dropping a pool
//!    waits for its work, where Python's `with Pool()` would `terminate` it.
//! 4. `callback`: seed 004's synchronous and asynchronous calls, and the kettle that whistles
//!    when the water boils: a callback runs in the *parent*, in its result-handler thread
//!    (谁在执行回调函数?), while the main thread does something else.
//! 5. `which-pool`: CPU-bound and IO-bound tasks on a process pool and a thread pool: a table of
//!    wall times, with what Python (and its GIL) would show.
//! 6. `fault`: a worker killed with `kill -9` in the middle of a task: that task's result is an
//!    error naming the pid and the signal, a new worker replaces it, every other task completes
//!    (Python's `multiprocessing.Pool` hangs there); then `maxtasksperchild` replacing workers on
//!    purpose, each new one running the initializer.
//!
//! **What to watch for**: the pool's workers are children of this program (their PPID), named
//! `pool-worker-N` in `ps -o comm`, and they stay alive between tasks (`S`, sleeping, waiting
//! for the next); the fourth task's pid is one of the first three; after `kill -9` a new
//! `pool-worker-N` with a new pid appears; after `join` none is left. `--timeline` draws one
//! lane per worker pid, `#` where it ran a task.
//!
//! **Run it**:
//! ```text
//! make demo-pool                                     # the tour
//! make demo-pool ARGS='apply-async --timeline'       # one part, with lanes
//! make demo-pool ARGS='fault --hold 20'              # pause before the kill; in a second terminal:
//! ps -o pid,ppid,stat,comm,args --ppid <the demo's pid>    # or the ps command the demo prints
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//! == 1. Pool(3) and apply_async: submit without waiting (使用进程池, 异步非阻塞) ==
//!   0.000s [  7031 pool] parent process 7031 run...
//!   0.003s [  7031 pool] p = Pool(processes=3): 3 worker processes started by fork (7034, 7036, 7038)
//!   0.003s [  7031 pool] ****************
//!   0.004s [  7034 pool-worker-1] 0 current child process 7034 start running...
//!   0.004s [  7036 pool-worker-2] 1 current child process 7036 start running...
//!   0.004s [  7038 pool-worker-3] 2 current child process 7038 start running...
//!   0.104s [  7036 pool-worker-2] 1 current child process 7036 end
//!   0.104s [  7038 pool-worker-3] 2 current child process 7038 end
//!   0.104s [  7034 pool-worker-1] 0 current child process 7034 end
//!   0.105s [  7036 pool-worker-2] 3 current child process 7036 start running...
//!   0.205s [  7036 pool-worker-2] 3 current child process 7036 end
//!   0.206s [  7031 pool] parent process 7031 end...
//!   0.207s [  7031 pool] 4 tasks ran in 3 worker processes, at most 3 at once (Pool(processes=3))
//!                        task 3 waited for a free worker and ran in pid 7036, the first worker
//!                        that freed up, after task 1: the pool keeps its workers (维持执行进程的总数为3)
//! == 6. a worker killed in the middle of a task; workers replaced on purpose ==
//!   0.154s [  7710 pool] kill -9 7718: the worker running task 2 (as the OOM killer, or a user, would)
//!   0.155s [  7710 pool] pool-worker-3 (pid 7718) was killed by SIGKILL while running task f (job 2):
//!                        that task's result is an error; pool-worker-4 (pid 7720) takes its place
//!   0.155s [  7720 pool-worker-4] 5 current child process 7720 start running...
//!   0.358s [  7710 pool] task 2: error: worker pool-worker-3 (pid 7718) was killed by SIGKILL while
//!                        running task f (job 2)
//!   0.359s [  7710 pool] 8 of 9 results are right; the one error is task 2's, and it names the pid
//!                        and the signal; new worker(s) [7720] replaced pid 7718
//! ```
//!
//! With `--timeline` (part 1): one lane per process, `#` a task (its number at the start of the
//! span, where the lane's first bar does not hide it), `*` the stars:
//! ```text
//!   pool 7031          *========================================|
//!   pool-worker-1 7034 |###################|
//!   pool-worker-2 7036 |####################3###################|
//!   pool-worker-3 7038 |###################|
//!                      +---------+---------+---------+---------+---------+
//!                      0.00s     0.05s     0.10s     0.15s     0.20s     0.25s
//! ```
//!
//! Platform notes: Linux only (the pool's queues use `memfd`, robust mutexes and futexes; the
//! demo reads `/proc`). Workers start by fork by default, by spawn with `--start-method spawn`:
//! then each worker is this program run again with `__role=pool-worker`, and finds its tasks by
//! name, as on Windows and macOS, where Python's pools spawn.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

// Each part is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod basics;
mod callbacks;
mod fault;
mod tasks;
mod which;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

/// Seed 001's `Pool(processes=3)`.
const PROCESSES: usize = 3;
/// Seed 001's `range(4)`.
const TASKS: usize = 4;
/// The caps of the count flags (exit 2 beyond, before anything starts): every worker is a
/// process; every task is a handle held until its result is read, so `--tasks` is refused
/// beyond its cap rather than run in memory that grows with it.
const MAX_PROCESSES: usize = 32;
const MAX_TASKS: usize = 1000;
const MAX_TASKS_PER_CHILD: usize = 1000;
/// Part 5: how long one CPU-bound task computes, in milliseconds (not scaled by `--speed`).
const CPU_MS: u64 = 150;

/// pool: process pools (进程池) — apply_async vs apply, get, map, callbacks, close/join/terminate,
/// process vs thread pools, and a worker killed mid-task, with `py_multiprocessing::pool`.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Draw one lane per worker process (parts apply-async, apply and fault)
    #[arg(long, global = true)]
    timeline: bool,

    /// Worker processes in the pools of parts 1, 2, 3 and 6 (Pool(processes=N)), at most 32
    #[arg(long, global = true, value_name = "N", default_value_t = PROCESSES,
          value_parser = count_in(1..=MAX_PROCESSES))]
    processes: usize,

    /// Tasks submitted in parts 1 and 2 (the notes' range(4)), at most 1000
    #[arg(long, global = true, value_name = "N", default_value_t = TASKS,
          value_parser = count_in(1..=MAX_TASKS))]
    tasks: usize,

    /// Part 1: replace a worker after this many tasks (a new pid each time), at most 1000
    #[arg(long, global = true, value_name = "N",
          value_parser = count_in(1..=MAX_TASKS_PER_CHILD))]
    maxtasksperchild: Option<usize>,

    /// Part 5: milliseconds of computation in one CPU-bound task
    #[arg(long, global = true, value_name = "MS", default_value_t = CPU_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    cpu_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. Pool(3), four tasks by apply_async: **** first, three at once, the fourth in a freed pid
    ApplyAsync,
    /// 2. The blocking pool: the same four tasks by apply, one after another
    Apply,
    /// 3. Collecting results: get, map in order, the close/join rules, dropping a pool
    Get,
    /// 4. Synchronous and asynchronous calls; a callback, and which process and thread run it
    Callback,
    /// 5. CPU-bound and IO-bound tasks on a process pool and on a thread pool: wall times
    WhichPool,
    /// 6. A worker killed with kill -9 mid-task; maxtasksperchild and the initializer
    Fault,
}

common::demo_cli!(Cli, Cmd);

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    common::demo::main(&[&tasks::WORKER], run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    common::demo::linux_only::<Cli>(
        "pool: this demo needs Linux (its pools' queues use memfd, robust mutexes, futexes)",
    )
}

/// A worker killed from elsewhere in the middle of a task turns that task's result into an
/// error (`WorkerDied`): the part stops there and says which worker and which task were lost
/// (exit 1). A worker killed between tasks loses nothing: the pool replaces it (the event
/// `pool_worker_exited`) and the part goes on. The worker that part 6 kills on purpose is its
/// lesson and handled there.
#[cfg(target_os = "linux")]
fn run(cli: Cli) -> anyhow::Result<()> {
    let result = common::demo::run_parts(
        &cli,
        &[
            (Cmd::ApplyAsync, basics::apply_async),
            (Cmd::Apply, basics::apply),
            (Cmd::Get, basics::get),
            (Cmd::Callback, callbacks::run),
            (Cmd::WhichPool, which::run),
            (Cmd::Fault, fault::run),
        ],
    );
    if let Err(e) = &result {
        let died =
            e.chain().find_map(|c| match c.downcast_ref::<py_multiprocessing::pool::PoolError>() {
                Some(py_multiprocessing::pool::PoolError::WorkerDied {
                    task,
                    job,
                    worker,
                    pid,
                    exitcode,
                }) => Some((task.clone(), *job, worker.clone(), *pid, *exitcode)),
                _ => None,
            });
        if let Some((task, job, worker, pid, exitcode)) = died {
            let lost = common::processes::lost::report_pid(pid, &worker, exitcode, "tasks", 1);
            return Err(lost.context(format!("task {task} (job {job}) was lost")));
        }
    }
    result
}

/// The pool options every part starts from: `--processes` workers started by
/// `--start-method`, named `pool-worker-N`, reporting when one dies or is replaced.
#[cfg(target_os = "linux")]
fn options(cli: &Cli, processes: usize) -> py_multiprocessing::pool::PoolOptions {
    py_multiprocessing::pool::PoolOptions {
        start_method: cli.common.start_method,
        report: true,
        ..py_multiprocessing::pool::PoolOptions::new(processes)
    }
}

/// Milliseconds of the notes' `time.sleep(seconds)`, scaled by `--speed`.
#[cfg(target_os = "linux")]
fn notes_ms(cli: &Cli, seconds: f64) -> u64 {
    cli.common.notes_sleep(seconds).as_millis() as u64
}
