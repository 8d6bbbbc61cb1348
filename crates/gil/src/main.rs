//! gil — the GIL (全局解释器锁): seed 001's countdown experiment measured honestly, a GIL
//! simulated in Rust that reproduces CPython's numbers, the convoy effect, concurrency against
//! parallelism (并发 vs 并行) on one CPU and on two, and the GIL against a program's own lock.
//!
//! Five parts, each a subcommand (no subcommand runs them all, in a few seconds):
//! 1. `experiment` (为什么说多线程是鸡肋): the notes' countdown (`while n > 0: n -= 1`, N =
//!    100,000,000) by one thread, by two threads each N, by one thread 2N in a row, and by two
//!    processes each N: wall time, CPU time per thread, and the true ratio two threads / one
//!    thread (about 1.0 on two CPUs: Rust threads run in parallel). The notes print `cost/2`
//!    for their two threads: the time per N, so CPython's two threads did 2N in twice one
//!    thread's time (no speed-up, not a slowdown). `--python` runs the
//!    notes' two programs (printing the real time) with `python3` beside ours.
//! 2. `simulated`: a GIL built as CPython ≥ 3.2 builds it (`gil::sim`): two CPU-bound threads
//!    under it take about twice as long as one, even on two CPUs; the switches are counted and
//!    a timeline shows who held the GIL. `--switch-interval MS` (CPython: 5 ms), or
//!    `--check-interval 100` for the notes' old rule (drop it every 100 "bytecodes").
//! 3. `convoy`: an I/O thread answering 1-byte requests on a socketpair, alone and beside a
//!    CPU-bound thread: with the simulated GIL the 99th percentile round trip is a switch
//!    interval (ms), with plain threads microseconds: Beazley's convoy effect.
//! 4. `cores` (并发 vs 并行): two CPU-bound threads pinned to one CPU (`sched_setaffinity`) take
//!    twice as long as pinned to two: concurrency is taking turns, parallelism is at the same
//!    time. Each thread's CPU, CPU time and context switches come from `/proc`.
//! 5. `vs-mutex` (GIL vs 互斥锁): under the simulated GIL, seed 001's `change_it` loses no
//!    update while its read-modify-write has no switch point inside (CPython 3.10+), loses
//!    updates once a call sits between the read and the write, and a lock of the program's
//!    own fixes it: the GIL protects the interpreter, not your data.
//!
//! **What to watch for**: in `experiment` two threads finish in about the time of one, each
//! with its own full CPU time, on different CPUs (`PSR`); in `simulated` the two threads' CPU
//! times add up to the wall time (one CPU at a time) and the overlap counter stays 0; in
//! `convoy` the p99 jumps from µs to the switch interval; in `cores` the pinned threads all
//! show the pinned CPU in `PSR`, and on one CPU they pile up involuntary context switches.
//!
//! **Run it**:
//! ```text
//! make demo-gil                                       # the tour
//! make demo-gil ARGS='simulated --switch-interval 1'  # more switches
//! make demo-gil ARGS='simulated --check-interval 100' # the notes' old rule
//! make demo-gil ARGS='cores --hold 20'                # pause with the pinned threads alive;
//! ps -L -o pid,lwp,stat,wchan:20,psr,comm -p <pid>    # in a second terminal (PSR: the CPU)
//! make demo-gil ARGS='cores --n 10000000000'          # long enough to watch `top -H`
//! ```
//!
//! Expected output (abridged; times, tids and CPUs differ):
//! ```text
//! == 1. the notes' experiment: count 100000000 down to 0, by one thread and by two (...) ==
//!   0.000s [  7031 gil] this machine has 2 CPUs (自己电脑上CPU的核数为2核), this program may use 2
//!   run                             wall ms    CPU ms  wall / 1 thread
//!   1 thread x N                       34.1      34.1             1.00
//!   2 threads x N each                 35.0      69.1             1.02
//!   1 thread x 2N in a row             68.2      68.1             2.00
//!   2 processes x N each               36.5      71.2             1.07
//!   0.165s [  7031 gil] two threads / one thread = 1.02: both threads ran at the same time ...
//! == 2. a simulated GIL (CPython >= 3.2: a waiter asks the holder to drop the GIL after 5 ms) ==
//!   0.283s [  7031 gil] two threads under the simulated GIL took 2.08 x one thread (191.1 ms
//!                       against 92.1 ms); the GIL changed hands 37 times, 36 of them on
//!                       request; overlaps (two threads inside at once): 0
//! == 3. the convoy effect: an I/O thread beside a CPU-bound thread ==
//!   case                                      p50 µs      p99 µs      max µs  round trips/s
//!   simulated GIL, I/O thread alone             41.9        63.1        67.6           3240
//!   simulated GIL, + CPU-bound thread         9915.0      9985.6      9988.5            100
//!   plain threads, I/O thread alone             11.6        22.1        25.3           3673
//!   plain threads, + CPU-bound thread           12.5        27.0        36.5           3670
//! == 5. GIL vs 互斥锁: the GIL protects the interpreter, not your data ==
//!   change_it does                              balance               updates lost  switches
//!   balance = balance + n                             0       0 of 20000000 (0.0%)         5
//!   balance = ident(balance) + n                      0 2678898 of 20000000 (13.4%)         7
//!   with lock: balance = ident(balance) + n           0       0 of 20000000 (0.0%)        29
//! ```
//!
//! Platform notes: Linux only (`sched_setaffinity`, `/proc/PID/task`, `CLOCK_THREAD_CPUTIME_ID`).
//! On a machine (or a `taskset`, or `--cpus 1`) with one CPU, `cores` says so and skips the
//! parallel row, and `experiment`'s two threads take turns.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]
// Elsewhere `main` only says the demo needs Linux, which leaves the rest unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

// Each part is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod convoy;
mod cores;
mod experiment;
mod simulated;
mod vs_mutex;

use std::time::Duration;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in, number_in};
use gil::sim::Rule;

/// Seed 001's countdown: 一亿 (100,000,000), decremented to 0.
const N: u64 = 100_000_000;
/// The most decrements per thread `--n` accepts (about 4 s of one Rust thread, 4 minutes of
/// CPython).
const MAX_N: u64 = 10_000_000_000;
/// Part 4: decrements per thread, more than part 1 so that a busy neighbour on a shared
/// machine blurs the two rows less.
const CORES_N: u64 = 500_000_000;
/// Part 5: `change_it` calls per thread (the notes loop 1,000,000 times; more calls, more
/// switches of the GIL inside the read-modify-write).
const LOOPS: u64 = 5_000_000;
/// CPython's `sys.getswitchinterval()`, in ms.
const SWITCH_INTERVAL_MS: f64 = 5.0;
/// Part 3: round trips per case (the 99th percentile of 100 is the second slowest).
const ROUND_TRIPS: usize = 100;

/// gil: the GIL (全局解释器锁) — the notes' countdown measured honestly, a simulated GIL that
/// reproduces CPython's numbers, the convoy effect, concurrency vs parallelism, GIL vs a lock.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Work per thread: decrements (experiment and simulated: 100000000; cores: 500000000)
    /// or change_it calls (vs-mutex: 5000000); 1 to 10000000000
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_N))]
    n: Option<u64>,

    /// Milliseconds a thread waits for the simulated GIL before it asks the holder to drop it
    /// (sys.setswitchinterval; CPython: 5); from 0.01 to 1000
    #[arg(long, global = true, value_name = "MS", default_value_t = SWITCH_INTERVAL_MS,
          allow_negative_numbers = true, value_parser = number_in(0.01..=1000.0, "a number of milliseconds"))]
    switch_interval: f64,

    /// The rule before Python 3.2: drop the simulated GIL every N bytecodes, whoever waits
    /// (the notes' 每执行100条字节码); 1 to 1000000
    #[arg(long, global = true, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    check_interval: Option<u64>,

    /// convoy: round trips per case; 1 to 100000
    #[arg(long, global = true, value_name = "N", default_value_t = ROUND_TRIPS,
          allow_negative_numbers = true, value_parser = count_in(1..=100_000))]
    round_trips: usize,

    /// experiment: also run the notes' two programs with python3 (said skipped without it)
    #[arg(long, global = true)]
    python: bool,

    /// cores: use only the first N of the CPUs this program may run on, as `taskset` would
    /// (--cpus 1 shows a one-CPU machine); 1 to 1024
    #[arg(long, global = true, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    cpus: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. The notes' countdown by one thread, two threads, 2N in a row and two processes
    Experiment,
    /// 2. A GIL simulated as CPython builds it: two threads take twice one; switches; timeline
    Simulated,
    /// 3. The convoy effect: an I/O thread's latency beside a CPU-bound thread, GIL or not
    Convoy,
    /// 4. Concurrency vs parallelism (并发 vs 并行): two threads pinned to one CPU, then two
    Cores,
    /// 5. GIL vs 互斥锁: lost updates under the GIL, and the program's own lock that fixes them
    VsMutex,
}

common::demo_cli!(Cli, Cmd);

impl Cli {
    /// The simulated GIL's rule from `--switch-interval` and `--check-interval`.
    fn rule(&self) -> Rule {
        match self.check_interval {
            Some(n) => Rule::CheckInterval(n),
            None => Rule::SwitchInterval(self.interval()),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.switch_interval / 1e3)
    }

    /// `--n`, or the part's default.
    fn n_or(&self, default: u64) -> u64 {
        self.n.unwrap_or(default)
    }
}

/// How the rule reads in a sentence.
fn rule_text(rule: Rule) -> String {
    match rule {
        Rule::SwitchInterval(d) => format!(
            "CPython >= 3.2: a waiter asks the holder to drop the GIL after {} ms",
            d.as_secs_f64() * 1e3
        ),
        Rule::CheckInterval(n) => {
            format!("before Python 3.2: the holder drops the GIL every {n} bytecodes")
        }
    }
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    common::demo::main_parts(
        &[&experiment::COUNTDOWN],
        &[
            (Cmd::Experiment, experiment::run),
            (Cmd::Simulated, simulated::run),
            (Cmd::Convoy, convoy::run),
            (Cmd::Cores, cores::run),
            (Cmd::VsMutex, vs_mutex::run),
        ],
    )
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    common::demo::linux_only::<Cli>(
        "gil: this demo needs Linux (sched_setaffinity, /proc/PID/task, thread CPU clocks)",
    )
}
