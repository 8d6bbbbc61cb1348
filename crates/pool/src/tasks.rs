//! The tasks this demo's pools run, and the worker role that finds them by name.
//!
//! A pool's task is a named function, not a closure: a spawned worker is this program run again
//! and has nothing of the parent's memory, so the parent sends a task's *name* and its
//! arguments as JSON, and the worker looks the name up in [`TASKS`] (Python's rule is the same:
//! a task must be a module-level function, which pickle sends by name). Each is a typed
//! function, as a Python `def` takes and returns Python values: `py_multiprocessing::typed_task!` reads its
//! argument from JSON and writes its result back.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use anyhow::Result;
use common::process::Role;
use common::report;
use py_multiprocessing::pool::{self, Task};
use py_multiprocessing::typed_task;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Every task a worker of this demo can run.
pub static TASKS: &[&Task] = &[&F, &SQUARE, &BOIL, &CPU, &IO, &INIT];

/// The pool's worker process: it serves tasks from [`TASKS`] until told to stop. Listed in
/// `common::demo::main`, so that a spawned worker (`pool __role=pool-worker pool-worker-1`)
/// finds it.
pub static WORKER: Role = Role::new("pool-worker", |args| pool::serve(args, TASKS));

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn pid() -> u32 {
    std::process::id()
}

/// Seed 001's `f(name)`: says it starts, sleeps one (scaled) second, says it ends.
pub static F: Task = typed_task!("f", f);

#[derive(Debug, Serialize, Deserialize)]
pub struct FArgs {
    /// The notes' `name`: 0, 1, 2, 3.
    pub name: usize,
    /// How long it sleeps (the notes' `time.sleep(1)`, scaled by `--speed`).
    pub ms: u64,
}

fn f(a: FArgs) -> Result<String> {
    let (name, pid) = (a.name, pid());
    common::event!("task_start", { "task": name, "pid": pid }, "{name} current child process {pid} start running...");
    // A span for --trace and --svg (nothing without them): a killed worker's stays open.
    let _running = common::phase::span("task running");
    sleep_ms(a.ms);
    let end = format!("{name} current child process {pid} end");
    report::event("task_end", json!({ "task": name, "pid": pid }), &end);
    Ok(end)
}

/// `x * x`, after sleeping `ms`: `map` with the later items finishing first.
pub static SQUARE: Task = typed_task!("square", square);

fn square((x, ms): (i64, u64)) -> Result<i64> {
    sleep_ms(ms);
    common::event!("square_done", { "x": x, "pid": pid() }, "{x} * {x} done");
    Ok(x * x)
}

/// Seed 004's kettle: boiling takes a while; a cracked kettle fails.
pub static BOIL: Task = typed_task!("boil", boil);

fn boil((ms, cracked): (u64, bool)) -> Result<&'static str> {
    common::event!("boiling", { "pid": pid() }, "the kettle is on (烧水)...");
    sleep_ms(ms);
    if cracked {
        anyhow::bail!("the kettle cracked: no boiling water");
    }
    Ok("the water has boiled (水烧开了)")
}

/// CPU-bound work: `iterations` rounds of arithmetic the compiler cannot skip.
pub static CPU: Task = typed_task!("cpu", |iterations: u64| Ok(spin(iterations)));

/// The CPU-bound loop itself (also timed by the parent to size the tasks).
pub fn spin(iterations: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(std::hint::black_box(i));
    }
    x
}

/// How many iterations of [`spin`] take about `target` here (measured, so that debug and
/// release builds, fast and slow machines, all run tasks of about the same length).
pub fn iterations_for(target: Duration) -> u64 {
    let mut n: u64 = 100_000;
    loop {
        let began = Instant::now();
        std::hint::black_box(spin(n));
        let took = began.elapsed();
        if took >= Duration::from_millis(20) || n >= 1 << 40 {
            let per = took.as_secs_f64() / n as f64;
            return ((target.as_secs_f64() / per.max(1e-12)) as u64).max(1);
        }
        n *= 4;
    }
}

/// IO-bound work: waiting `ms` (a network or disk wait, played by a sleep).
pub static IO: Task = typed_task!("io", io);

fn io(ms: u64) -> Result<u32> {
    sleep_ms(ms);
    Ok(pid())
}

/// The initializer: runs once in every worker when it starts.
pub static INIT: Task = typed_task!("init", init);

fn init(_: ()) -> Result<()> {
    common::event!("worker_init", { "pid": pid() }, "initializer: worker {} is ready", pid());
    Ok(())
}
