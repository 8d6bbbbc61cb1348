//! event — `Event` (事件): a flag that threads, or processes, wait for. One side sets it; every
//! waiter wakes.
//!
//! `set()` raises the flag and wakes every thread asleep in `wait()`; `clear()` lowers it;
//! `is_set()` reads it; `wait(timeout)` returns the flag at the end: `false` when the time ran
//! out first. Built here on a `Mutex` and a `Condvar` (`py_threading::sync::Event`), as
//! CPython builds it on a `Condition`; across processes on one futex word in shared memory
//! (`py_multiprocessing::sync::ProcessEvent`).
//!
//! Three parts, each a subcommand (no subcommand runs them all, in a few seconds):
//! 1. `light`: the traffic light (红绿灯). A `light` thread turns the light red (`clear()`) and
//!    green (`set()`) in turn; cars (`car-1`..`car-5`) arrive at random moments: at a green
//!    light (`is_set()`) a car goes on, at a red one it waits (`wait()`) and goes when the light
//!    turns green. Every line says who and when.
//! 2. `timeout`: connect and retry (链接超时). A `server` thread is slow to start and sets the event
//!    when it is ready; a `client` thread tries three times, `wait(0.5)` each (scaled by
//!    `--speed`), and each returns `false`: the classic `conn_mysql` raises `TimeoutError` here. The client
//!    then waits without a timeout, and `wait()` returns `true` when the server is ready.
//! 3. `processes`: an event across processes: three children block in `wait()` (state `S`, in
//!    a futex), one is killed with SIGKILL while it waits, and the parent's `set()` wakes every
//!    other one at once: a dead waiter harms nobody. (CPython's `multiprocessing.Event.set()`
//!    would wait for ever for the dead waiter's acknowledgement.)
//!
//! **What to watch for**
//! - part 1: a car that arrived at red (`waits at the red light`) goes only after the line
//!   `light turns GREEN`; while red, its thread sleeps in `futex_do_wait`;
//! - part 2: each `wait(timeout)` returns `false` after the whole timeout, not earlier;
//! - part 3: the waiters' state `S` and `wchan` `futex_do_wait` in `ps`, the killed waiter's
//!   `-SIGKILL`, and every other waiter's `woke` line right after `set()`.
//!
//! **Run it**
//! ```text
//! make demo-event                                   # the three parts, a few seconds
//! make demo-event ARGS='light --cars 10 --speed 5'  # more cars, slower lights
//! make demo-event ARGS='processes --hold 20'        # pauses while they wait; elsewhere:
//! ps -o pid,ppid,stat,wchan:20,comm -p <the pids it prints>
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//! == 1. The traffic light (红绿灯): set() is green, clear() is red ==
//!   0.000s [ 61020/61022 light] light turns RED: event.clear()
//!   0.120s [ 61020/61024 car-2] car-2 waits at the red light: event.wait()
//!   0.500s [ 61020/61022 light] light turns GREEN: event.set()
//!   0.500s [ 61020/61024 car-2] car-2 goes (it waited 0.38s for the green light)
//!   0.610s [ 61020/61023 car-1] car-1 goes: the light is green (event.is_set() is True)
//! == 2. Connect and retry: wait(timeout) returns False until the server is ready ==
//!   1.010s [ 61020/61030 client] <client> attempt 1: event.wait(0.05) -> False after 0.05s
//!   1.160s [ 61020/61030 client] TimeoutError: 链接超时 (connection timed out) after 3 attempts
//!   1.311s [ 61020/61030 client] <client> connected: event.wait() -> True, 0.15s later
//! == 3. Processes: waiters asleep in wait(), one killed, set() wakes the rest ==
//!   1.420s [ 61020 event] kill -9 61041 (waiter-1, asleep in event.wait()): -SIGKILL
//!   1.421s [ 61020 event] event.set(): one FUTEX_WAKE for every sleeper
//!   1.421s [ 61042 waiter-2] waiter-2 woke: event.wait() -> True
//! ```
//!
//! Platform notes: the thread parts run anywhere; the processes part needs Linux (memfd,
//! futexes, `/proc`) and says so elsewhere.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in, number_in};

mod light;
#[cfg(target_os = "linux")]
mod processes;
common::linux_only_part!(processes, "memfd, futexes, /proc");
mod retry;

/// Cars at the traffic light, and the most a run may have.
const CARS: usize = 5;
const MAX_CARS: usize = 100;
/// The client's attempts, each a `wait(timeout)`, and the most a run may have.
const TRIES: usize = 3;
const MAX_TRIES: usize = 10;
/// Waiting processes in part 3, and the most a run may have.
const WAITERS: usize = 3;
const MAX_WAITERS: usize = 64;
/// The classic examples' times (not in the notes), in seconds (scaled by --speed): a red and a green phase, the window in
/// which cars arrive, the client's `event.wait(0.5)`, the server's slow start.
const RED_S: f64 = 5.0;
const GREEN_S: f64 = 5.0;
const ARRIVALS_S: f64 = 10.0;
const ATTEMPT_S: f64 = 0.5;
const SERVER_DELAY_S: f64 = 3.0;

/// event: Event (事件) for threads and processes: set() wakes every waiter, clear() makes them
/// wait again, wait(timeout) returns False when the time runs out first.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Cars at the traffic light (part 1), from 1 to 100
    #[arg(long, global = true, value_name = "N", default_value_t = CARS,
          value_parser = count_in(1..=MAX_CARS))]
    cars: usize,

    /// The client's attempts, each an event.wait(timeout) (part 2), from 1 to 10
    #[arg(long, global = true, value_name = "N", default_value_t = TRIES,
          value_parser = count_in(1..=MAX_TRIES))]
    tries: usize,

    /// The server's start-up time in the example's seconds, scaled by --speed (part 2), 0 to 60
    #[arg(long, global = true, value_name = "SECS", default_value_t = SERVER_DELAY_S,
          value_parser = number_in(0.0..=60.0, "a number of seconds"))]
    server_delay: f64,

    /// Waiting processes (part 3), from 1 to 64
    #[arg(long, global = true, value_name = "N", default_value_t = WAITERS,
          value_parser = count_in(1..=MAX_WAITERS))]
    waiters: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. The traffic light: a light thread sets and clears, cars wait at red
    Light,
    /// 2. Connect and retry: wait(timeout) is False until a slow server sets the event
    Timeout,
    /// 3. Processes: children asleep in wait(), one killed, set() wakes the rest
    Processes,
}

common::demo_cli!(Cli, Cmd);

fn main() -> ExitCode {
    common::demo::main_parts(
        &processes::ROLES,
        &[(Cmd::Light, light::run), (Cmd::Timeout, retry::run), (Cmd::Processes, processes::run)],
    )
}

/// Seconds as people read them: `0.38s`.
fn secs(d: std::time::Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
