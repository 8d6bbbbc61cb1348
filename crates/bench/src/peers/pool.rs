//! pool-peers — what `map` costs per item through `py_multiprocessing::pool` beside rayon's `par_iter`, on
//! the work of the pool suite: [`ITEMS`] items, a task that returns its argument, results
//! collected in order as a `Vec<usize>`, two workers on each side.
//!
//! - `ThreadPool::new(2).map(&TYPED_ECHO, 0..N)` vs `(0..N).into_par_iter().map(..).collect()`
//!   on a rayon pool of two threads: the same semantics (threads of one process, results in
//!   order);
//! - `Pool::map` (two forked worker processes) vs the same rayon call: the nearest thing, since
//!   rayon has no processes; the row shows what isolation costs.
//!
//! Each pool is new in each run and has run one task (rayon: one `install`) before the clock
//! starts. Every run checks every result.

use std::time::Instant;

use anyhow::{Result, bail};
use py_multiprocessing::pool::{Pool, ThreadPool};
use rayon::prelude::*;

use super::{peers_outcome, target_the_fastest};
use crate::measure::{Better, Outcome, Row, Settings, median};
use crate::pool::{ECHO, ITEMS, TYPED_ECHO, WORKER, WORKERS, options};

fn check(values: &[usize]) -> Result<()> {
    if !values.iter().copied().eq(0..ITEMS) {
        bail!("map returned wrong values");
    }
    Ok(())
}

/// ns per item of `pool.map(&TYPED_ECHO, 0..ITEMS)`; the pool has run one task already.
fn ours(pool: &Pool) -> Result<f64> {
    pool.apply(&ECHO, 0)?;
    let began = Instant::now();
    let values: Vec<usize> = pool.map(&TYPED_ECHO, 0..ITEMS)?;
    let ns = began.elapsed().as_secs_f64() * 1e9 / ITEMS as f64;
    check(&values)?;
    pool.close();
    pool.join()?;
    Ok(ns)
}

/// ns per item of a `par_iter` map on a rayon pool of [`WORKERS`] threads.
fn rayon_map() -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(WORKERS).build()?;
    pool.install(|| ());
    let began = Instant::now();
    // black_box: the echo stays a call per item, as ours is, not a copy of the range.
    let values: Vec<usize> =
        pool.install(|| (0..ITEMS).into_par_iter().map(std::hint::black_box).collect());
    let ns = began.elapsed().as_secs_f64() * 1e9 / ITEMS as f64;
    check(&values)?;
    Ok(ns)
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let (mut threads, mut processes, mut rayon) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..settings.runs {
        threads.push(ours(&ThreadPool::new(WORKERS)?)?);
        processes.push(ours(&Pool::with_options(&WORKER, options())?)?);
        rayon.push(rayon_map()?);
    }
    let rayon = median(&rayon);
    let row = |figure: &str, ours: &[f64]| Row {
        figure: figure.to_string(),
        unit: "ns/item",
        better: Better::Lower,
        rust: median(ours),
        python: Some(rayon),
        target: None,
    };
    let mut rows = vec![row("ThreadPool map vs rayon par_iter (2 threads)", &threads)];
    target_the_fastest(&mut rows);
    rows.push(row("Pool map (2 processes) vs rayon par_iter (nearest)", &processes));
    Ok(peers_outcome(
        rows,
        vec![
            format!(
                "each run: one map of {ITEMS} items (a task returning its argument, results as a \
                 Vec<usize> in order) on a new pool of {WORKERS}: py_multiprocessing::pool's ThreadPool and \
                 Pool (forked workers), and rayon's par_iter on a ThreadPoolBuilder pool of \
                 {WORKERS} threads"
            ),
            "what rayon does that ours does not: par_iter splits the range in place and its \
             threads steal halves from each other, so an item is never copied, encoded or \
             queued, and each thread writes its results straight into the output Vec; a map \
             item costs a function call. Ours keeps multiprocessing.Pool's design for both \
             kinds of worker: chunks travel encoded (postcard for a typed task such as this one) through per-worker inboxes and a \
             results queue read by a handler thread, so a task is a named function any worker \
             (a thread, a forked or a spawned process) can run, and in return a thread pool and \
             a process pool share one interface with apply_async, callbacks, maxtasksperchild, \
             and a killed worker's tasks given back to others. Within 2x of rayon is not \
             possible with that design: the gap is the encoding and the queues"
                .to_string(),
        ],
    ))
}
