//! pool — what a trivial task costs through `common::pool` (the pool demo), beside CPython's
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
//!   `concurrent.futures`, whose default is 1, the same chunk size is passed);
//! - `apply`: one task at a time, each waited for: a round trip to a worker and back.
//!
//! Every run checks every result. The targets: at least 10× less per task than
//! `multiprocessing.Pool.apply_async`, and at least 3× less per item than `Pool.map` (a chunk
//! is one frame each way, its JSON text encoded once by the caller, put into the frame as it is
//! (`Queue::put_encoded`, no escaping) and read by a small scanner straight into the results; see
//! `common::pool`). Each run's `map` is the first of a new pool: it pays the page faults of its
//! memory (see `common::pool`, "How `map` travels").

use std::time::Instant;

use anyhow::{Result, bail};
use common::pool::{Pool, PoolOptions, Task, default_chunksize};
use common::process::{Role, StartMethod};
use serde_json::{Value, json};

use crate::measure::{Better, Outcome, Row, Settings, median, run_python};

/// Tasks submitted with `apply_async` per run.
const TASKS: usize = 5_000;
/// Items given to `map` per run.
const ITEMS: usize = 100_000;
/// Tasks run one at a time with `apply` per run.
const APPLIES: usize = 500;
/// Workers in each pool.
const WORKERS: usize = 2;
/// The goal for `apply_async`+`get`: at least this many times less per task than Python's.
const TARGET: f64 = 10.0;
/// The goal for `map`: at least this many times less per item than `multiprocessing.Pool.map`.
const MAP_TARGET: f64 = 3.0;

fn echo(x: Value) -> Result<Value> {
    Ok(x)
}

static ECHO: Task = Task::new("echo", echo);
/// The benchmark's pool worker (fork only: the benchmark's `__main__` guard lists no pool role).
static WORKER: Role = Role::new("bench-pool-worker", |args| common::pool::serve(args, &[&ECHO]));

/// (key in pool.py's output, figure, Python's side of the comparison, target).
const ROWS: [(&str, &str, Option<f64>); 5] = [
    ("mp_apply_async", "apply_async+get vs multiprocessing.Pool", Some(TARGET)),
    ("cf_submit", "apply_async+get vs ProcessPoolExecutor.submit", None),
    ("mp_map", "map vs multiprocessing.Pool.map", Some(MAP_TARGET)),
    ("cf_map", "map vs ProcessPoolExecutor.map", None),
    ("mp_apply", "apply, one at a time, vs multiprocessing.Pool", None),
];

/// The Rust figures of one run: apply_async+get (µs per task), map (ns per item), apply (µs per
/// task).
fn measure_rust() -> Result<[f64; 3]> {
    let options = PoolOptions {
        start_method: StartMethod::Fork,
        name: "bench-pool".into(),
        ..PoolOptions::new(WORKERS)
    };
    let pool = Pool::with_options(&WORKER, options)?;
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
    let values = pool.map(&ECHO, 0..ITEMS)?;
    let map = began.elapsed().as_secs_f64() * 1e9 / ITEMS as f64;
    if values.len() != ITEMS || values.iter().enumerate().any(|(i, v)| *v != json!(i)) {
        bail!("map returned wrong values");
    }

    let began = Instant::now();
    for i in 0..APPLIES {
        if pool.apply(&ECHO, i)? != json!(i) {
            bail!("apply({i}) returned the wrong value");
        }
    }
    let apply = began.elapsed().as_secs_f64() * 1e6 / APPLIES as f64;
    pool.close();
    pool.join()?;
    Ok([apply_async, map, apply])
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut rust: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut python: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
    let mut python_outcome: Result<String, String> = Ok(String::new());
    for _ in 0..settings.runs {
        // Rust, then Python, run after run: a busy moment of a shared machine hits both sides.
        for (i, us) in measure_rust()?.into_iter().enumerate() {
            rust[i].push(us);
        }
        if python_outcome.is_ok() {
            let args: Vec<String> = [
                ("--tasks", TASKS),
                ("--items", ITEMS),
                ("--applies", APPLIES),
                ("--workers", WORKERS),
            ]
            .iter()
            .flat_map(|(flag, n)| [flag.to_string(), n.to_string()])
            .collect();
            python_outcome = run_python("pool.py", &args).and_then(|answer| {
                for (i, (key, _, _)) in ROWS.iter().enumerate() {
                    let us = answer[key].as_f64().ok_or(format!("pool.py gave no {key}"))?;
                    // map's figures are shown in ns per item (pool.py gives µs).
                    python[i].push(if key.ends_with("map") { us * 1e3 } else { us });
                }
                Ok(answer["python"].as_str().unwrap_or("3").to_string())
            });
        }
    }
    // Rows 0 and 1 compare apply_async with both Python pools, rows 2 and 3 map, row 4 apply.
    let rust_of = [0, 0, 1, 1, 2];
    let rows = ROWS
        .iter()
        .enumerate()
        .map(|(i, (_, figure, target))| Row {
            figure: figure.to_string(),
            unit: if rust_of[i] == 1 { "ns/item" } else { "µs/task" },
            better: Better::Lower,
            rust: median(&rust[rust_of[i]]),
            python: python_outcome.is_ok().then(|| median(&python[i])),
            target: *target,
        })
        .collect();
    Ok(Outcome {
        rows,
        python: python_outcome,
        notes: vec![format!(
            "each run: {WORKERS} forked workers, a task that returns its argument; {TASKS} \
             apply_async then get, one map of {ITEMS} items (chunk size {}, Python's default, \
             also passed to ProcessPoolExecutor.map), {APPLIES} apply one at a time. Rust \
             through common::pool (a per-worker inbox and a results queue, common::queue), \
             Python through multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor",
            default_chunksize(ITEMS, WORKERS)
        )],
    })
}
