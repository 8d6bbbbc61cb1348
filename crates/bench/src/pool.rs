//! pool — what a trivial task costs through `py_multiprocessing::pool` (the pool demo), beside CPython's
//! `multiprocessing.Pool` and `concurrent.futures.ProcessPoolExecutor` doing the same
//! (`python/pool.py`).
//!
//! Two workers started with fork on both sides; the task returns its argument. The pool is
//! started (and has run one task) before the clock starts; each figure is microseconds per task
//! (nanoseconds per item for `map`):
//! - `apply_async`+`get`: submit every task, then `get` each result in order (Python's
//!   `[p.apply_async(f, (i,)) for i in ...]` then `[r.get() for r in rs]`; for
//!   `concurrent.futures`, `submit` then `result()`);
//! - `map`: one `map` over every item, with Python's default chunk size (for
//!   `concurrent.futures`, whose default is 1, the same chunk size is passed), through a typed
//!   task (`typed_task!`, `fn(usize) -> usize`, results read as a `Vec<usize>`: Rust's way to
//!   say what Python's `def echo(x): return x` gives back), and again through a task on JSON
//!   `Value`s (results as a `Vec<Value>`), a row without a target, to show what the types buy;
//! - `apply`: one task at a time, each waited for: a round trip to a worker and back.
//!
//! Every run checks every result. The targets: at least 10× less per task than
//! `multiprocessing.Pool.apply_async`, and at least 3× less per item than `Pool.map` (a chunk
//! is one frame each way; a typed task's items and results travel in postcard, where the
//! caller's types are the task's, and everything else as JSON: see `py_multiprocessing::pool`, `pool/map.rs`
//! and `pool/task.rs`). Each run's `map` is the first of a new pool: it pays the page faults of
//! its memory.

use std::time::Instant;

use anyhow::{Result, bail};
use common::process::{Role, StartMethod};
use py_multiprocessing::pool::{Pool, PoolOptions, Task, default_chunksize};
use serde_json::{Value, json};

use crate::measure::{Better, Outcome, Samples, Settings};

/// Tasks submitted with `apply_async` per run.
const TASKS: usize = 5_000;
/// Items given to `map` per run.
pub(crate) const ITEMS: usize = 100_000;
/// Tasks run one at a time with `apply` per run.
const APPLIES: usize = 500;
/// Workers in each pool.
pub(crate) const WORKERS: usize = 2;
/// The goal for `apply_async`+`get`: at least this many times less per task than Python's.
const TARGET: f64 = 10.0;
/// The goal for `map`: at least this many times less per item than `multiprocessing.Pool.map`.
const MAP_TARGET: f64 = 3.0;

fn echo(x: Value) -> Result<Value> {
    Ok(x)
}

pub(crate) static ECHO: Task = Task::new("echo", echo);
/// The same task, typed: a chunk of `map` reaches it with no JSON `Value` between.
pub(crate) static TYPED_ECHO: Task =
    py_multiprocessing::typed_task!("typed-echo", |x: usize| Ok(x));
/// The benchmark's pool worker (fork only: the benchmark's `__main__` guard lists no pool role).
pub(crate) static WORKER: Role = Role::new("bench-pool-worker", |args| {
    py_multiprocessing::pool::serve(args, &[&ECHO, &TYPED_ECHO])
});

/// (key in pool.py's output, figure, Python's side of the comparison, target).
const ROWS: [(&str, &str, Option<f64>); 6] = [
    ("mp_apply_async", "apply_async+get vs multiprocessing.Pool", Some(TARGET)),
    ("cf_submit", "apply_async+get vs ProcessPoolExecutor.submit", None),
    ("mp_map", "map vs multiprocessing.Pool.map", Some(MAP_TARGET)),
    ("cf_map", "map vs ProcessPoolExecutor.map", None),
    ("mp_map", "map of a task on JSON Values vs Pool.map", None),
    ("mp_apply", "apply, one at a time, vs multiprocessing.Pool", None),
];
/// Which Rust figure each row shows (see [`measure_rust`]).
const RUST_OF: [usize; 6] = [0, 0, 1, 1, 2, 3];

/// The Rust figures of one run: apply_async+get (µs per task), map of the typed task and of the
/// task on values (ns per item, each on a new pool), apply (µs per task).
fn measure_rust() -> Result<[f64; 4]> {
    let pool = Pool::with_options(&WORKER, options())?;
    pool.apply(&ECHO, 0)?; // the workers are up

    let began = Instant::now();
    let handles = (0..TASKS).map(|i| pool.apply_async(&ECHO, i)).collect::<Result<Vec<_>, _>>()?;
    for (i, handle) in handles.iter().enumerate() {
        if handle.get()? != json!(i) {
            bail!("apply_async({i}) returned the wrong value");
        }
    }
    let apply_async = began.elapsed().as_secs_f64() * 1e6 / TASKS as f64;

    let began = Instant::now();
    let values: Vec<usize> = pool.map(&TYPED_ECHO, 0..ITEMS)?;
    let map = began.elapsed().as_secs_f64() * 1e9 / ITEMS as f64;
    if !values.iter().copied().eq(0..ITEMS) {
        bail!("map returned wrong values");
    }
    drop(values);

    let began = Instant::now();
    for i in 0..APPLIES {
        if pool.apply(&ECHO, i)? != json!(i) {
            bail!("apply({i}) returned the wrong value");
        }
    }
    let apply = began.elapsed().as_secs_f64() * 1e6 / APPLIES as f64;
    pool.close();
    pool.join()?;

    // The same map through values, also the first map of a new pool.
    let pool = Pool::with_options(&WORKER, options())?;
    pool.apply(&ECHO, 0)?;
    let began = Instant::now();
    let values: Vec<Value> = pool.map(&ECHO, 0..ITEMS)?;
    let map_values = began.elapsed().as_secs_f64() * 1e9 / ITEMS as f64;
    if values.len() != ITEMS || values.iter().enumerate().any(|(i, v)| *v != json!(i)) {
        bail!("map of values returned wrong values");
    }
    drop(values);
    pool.close();
    pool.join()?;
    Ok([apply_async, map, map_values, apply])
}

pub(crate) fn options() -> PoolOptions {
    PoolOptions {
        start_method: StartMethod::Fork,
        name: "bench-pool".into(),
        ..PoolOptions::new(WORKERS)
    }
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut samples = Samples::new(ROWS.len());
    let args: Vec<String> =
        [("--tasks", TASKS), ("--items", ITEMS), ("--applies", APPLIES), ("--workers", WORKERS)]
            .iter()
            .flat_map(|(flag, n)| [flag.to_string(), n.to_string()])
            .collect();
    for _ in 0..settings.runs {
        let measured = measure_rust()?;
        for (i, rust_of) in RUST_OF.iter().enumerate() {
            samples.rust(i, measured[*rust_of]);
        }
        samples.python("pool.py", &args, |answer| {
            ROWS.iter()
                .map(|(key, _, _)| {
                    let us = answer[key].as_f64().ok_or(format!("pool.py gave no {key}"))?;
                    // map's figures are shown in ns per item (pool.py gives µs).
                    Ok(if key.ends_with("map") { us * 1e3 } else { us })
                })
                .collect()
        });
    }
    let rows = ROWS
        .iter()
        .enumerate()
        .map(|(i, (_, figure, target))| {
            let unit = if matches!(RUST_OF[i], 1 | 2) { "ns/item" } else { "µs/task" };
            samples.row(i, *figure, unit, Better::Lower, *target)
        })
        .collect();
    Ok(Outcome {
        rows,
        python: samples.python_outcome,
        notes: vec![format!(
            "each run: {WORKERS} forked workers, a task that returns its argument; {TASKS} \
             apply_async then get, one map of {ITEMS} items (chunk size {}, Python's default, \
             also passed to ProcessPoolExecutor.map), {APPLIES} apply one at a time. Rust \
             through py_multiprocessing::pool (a per-worker inbox and a results queue, py_multiprocessing::queue), \
             Python through multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor",
            default_chunksize(ITEMS, WORKERS)
        )],
    })
}
