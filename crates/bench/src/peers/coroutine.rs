//! coroutine-peers — tokio's current-thread runtime (what the coroutine and io-models demos use)
//! beside smol's executor on one thread (`async_executor::LocalExecutor`, driven by
//! `async_io::block_on`, timers from `async_io::Timer`), on the work of the coroutine suite:
//! - a task switch: two tasks each yielding [`TOKIO_YIELDS`] times (`tokio::task::yield_now`
//!   vs `futures_lite::future::yield_now`), nanoseconds per yield;
//! - [`SLEEPERS`] tasks sleeping [`SLEEP_MS`] ms at once: the time from the first spawn to the
//!   last join, and the resident memory grown per task by the moment all of them wait, each run
//!   in a forked child (as the coroutine suite does, so no earlier run's freed memory is reused).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use async_executor::LocalExecutor;

use super::{peers_outcome, target_the_fastest};
use crate::coroutine::{SLEEP_MS, SLEEPERS, TOKIO_YIELDS, grown_per_task, in_child, memory_now};
use crate::measure::{Better, Outcome, Row, Settings, median};

/// Two tasks on a `LocalExecutor`, each yielding `n` times; nanoseconds per yield.
fn smol_switch(n: usize) -> f64 {
    let ex = LocalExecutor::new();
    let began = Instant::now();
    futures_lite::future::block_on(ex.run(async {
        let a = ex.spawn(async move {
            for _ in 0..n {
                futures_lite::future::yield_now().await;
            }
        });
        let b = ex.spawn(async move {
            for _ in 0..n {
                futures_lite::future::yield_now().await;
            }
        });
        a.await;
        b.await;
    }));
    began.elapsed().as_secs_f64() * 1e9 / (2 * n) as f64
}

/// `n` tasks on a `LocalExecutor` that each sleep [`SLEEP_MS`] on an `async_io::Timer`: the
/// seconds from the first spawn to the last join, and resident bytes per waiting task (the
/// same measure as the coroutine suite's tokio sleepers).
fn smol_sleepers(n: usize) -> Result<(f64, f64)> {
    let ex = LocalExecutor::new();
    async_io::block_on(ex.run(async {
        let started = Arc::new(AtomicUsize::new(0));
        let before = memory_now()?;
        let began = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Arc::clone(&started);
            tasks.push(ex.spawn(async move {
                started.fetch_add(1, Ordering::Relaxed);
                async_io::Timer::after(Duration::from_millis(SLEEP_MS)).await;
            }));
        }
        // A task counts itself before its sleep: once all have, all of them are waiting.
        while started.load(Ordering::Relaxed) < n {
            futures_lite::future::yield_now().await;
        }
        let during = memory_now()?;
        for task in tasks {
            task.await;
        }
        let seconds = began.elapsed().as_secs_f64();
        Ok((seconds, grown_per_task(before, during, n)))
    }))
}

/// The coroutine suite's tokio sleepers, again, in this suite's run.
fn tokio_sleepers(n: usize) -> Result<(f64, f64)> {
    crate::coroutine::sleepers(n)
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    // [tokio, smol] per figure: switch ns, sleepers ms, bytes per task.
    let mut figures = vec![[Vec::new(), Vec::new()]; 3];
    for _ in 0..settings.runs {
        figures[0][0].push(coroutine::event_loop_switch(TOKIO_YIELDS)?);
        figures[0][1].push(smol_switch(TOKIO_YIELDS));
        let (seconds, per_task) = in_child(tokio_sleepers, SLEEPERS)?;
        figures[1][0].push(seconds * 1e3);
        figures[2][0].push(per_task);
        let (seconds, per_task) = in_child(smol_sleepers, SLEEPERS)?;
        figures[1][1].push(seconds * 1e3);
        figures[2][1].push(per_task);
    }
    let names = [
        ("task switch, yield_now: tokio vs smol (async-executor)", "ns"),
        ("10,000 tasks sleeping 10 ms, total: tokio vs smol", "ms"),
        ("10,000 tasks sleeping 10 ms, memory per task: tokio vs smol", "bytes"),
    ];
    let mut rows: Vec<Row> = names
        .iter()
        .zip(&figures)
        .map(|((figure, unit), [tokio, smol])| Row {
            figure: figure.to_string(),
            unit,
            better: Better::Lower,
            rust: median(tokio),
            python: Some(median(smol)),
            target: None,
        })
        .collect();
    // One peer per figure: each row is its figure's fastest.
    for row in &mut rows[..2] {
        target_the_fastest(std::slice::from_mut(row));
    }
    Ok(peers_outcome(
        rows,
        vec![
            format!(
                "each run: two tasks yielding {TOKIO_YIELDS} times each, per yield, on tokio's \
                 current-thread runtime and on async-executor's LocalExecutor (smol's); \
                 {SLEEPERS} tasks each sleeping {SLEEP_MS} ms on one thread, tokio::time::sleep \
                 and async_io::Timer, each in a forked child"
            ),
            "what smol does that tokio does not: a LocalExecutor is a queue of runnables and a \
             yield_now wakes its own waker, which pushes the task back on that queue; tokio's \
             scheduler also keeps a budget per task (cooperative preemption), a defer list so \
             that a yielded task goes behind the I/O driver's events, a LIFO slot and task \
             states shared with a multi-threaded runtime. In return tokio gives the coroutine \
             and io-models demos one runtime with its own I/O driver and a hierarchical timer \
             wheel (async-io keeps timers in a BTreeMap behind a mutex), tokio::net, LocalSet \
             for !Send tasks, and the ecosystem most async crates are written for"
                .to_string(),
        ],
    ))
}
