//! coroutine — what a coroutine switch costs and what a waiting task weighs (the coroutine
//! demo), in Rust beside CPython's asyncio and greenlet (`python/coroutine.py`).
//!
//! Three measurements, on both sides:
//! - **task switch** (the gevent-like way, an event loop that switches when a task yields): two
//!   tasks on tokio's current-thread runtime, each `yield_now`ing [`TOKIO_YIELDS`] times, against
//!   two asyncio tasks each `await asyncio.sleep(0)`ing; nanoseconds per yield;
//! - **stackful switch** (the greenlet-like way, explicit switches between stacks): a corosensei
//!   `resume` that the coroutine answers with `suspend`, against `g.switch()` answered by
//!   `main.switch()`; nanoseconds per round trip. Skipped on the Python side (the row says so)
//!   when `python3` cannot import `greenlet`, which is not in the standard library;
//! - **sleeping tasks**: [`SLEEPERS`] tasks that each sleep [`SLEEP_MS`] ms on one thread; the
//!   total time from the first spawn to the last join, and the memory each task holds while
//!   they all wait: the growth of the resident set (`VmRSS` of `/proc/self/status`, `statm`'s
//!   resident pages) from before the first spawn to the moment every task has started its
//!   sleep, divided by the number of tasks. The Rust side runs in a forked child, so that each
//!   run starts from a heap where no earlier run's tasks were freed; Python starts afresh for
//!   every run anyway. After other suites the forked child's heap still holds memory they freed,
//!   which `malloc` reuses without the resident set growing: so the Rust side takes the larger
//!   of the resident set's growth and the growth of the bytes `malloc` has handed out and not
//!   taken back (glibc's `mallinfo2().uordblks`), which counts the tasks either way.
//!
//! The switch loops are the coroutine demo's own (`coroutine::event_loop_switch` and
//! `coroutine::stackful_switch`, in crates/coroutine/src/lib.rs). Targets: the tokio switch at least 10× faster
//! than asyncio's; the stackful switch at least 100× faster than greenlet's.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::{Process, StartMethod};
use coroutine::{event_loop_switch, stackful_switch};
use serde_json::Value;

use crate::measure::{Better, Outcome, Row, Settings, median, run_python};

/// `yield_now`s per task in each Rust run (two tasks: twice as many switches).
pub(crate) const TOKIO_YIELDS: usize = 200_000;
/// `await asyncio.sleep(0)`s per task in each Python run, where one costs 10 to 20 times more.
const ASYNCIO_YIELDS: usize = 50_000;
/// Resume + suspend round trips in each Rust run (a few nanoseconds each).
const STACKFUL_ROUND_TRIPS: usize = 2_000_000;
/// `switch()` round trips in each Python run.
const GREENLET_ROUND_TRIPS: usize = 200_000;
/// Tasks that sleep at once, on each side.
pub(crate) const SLEEPERS: usize = 10_000;
/// How long each of them sleeps.
pub(crate) const SLEEP_MS: u64 = 10;
const TASK_SWITCH_TARGET: f64 = 10.0;
const STACKFUL_TARGET: f64 = 100.0;

/// Resident memory in bytes: `VmRSS` of `/proc/self/status`, the count of `statm`'s second
/// field given in KiB (so no page size is needed).
fn rss_bytes() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS line in /proc/self/status")?;
    Ok(kib * 1024)
}

/// Bytes `malloc` has handed out and not taken back (glibc); 0 elsewhere, where the resident
/// set alone is measured.
fn heap_in_use() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Safety: mallinfo2 only reads glibc's allocator counters and returns them by value.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// What a process holds at one moment: (resident bytes, heap bytes in use).
pub(crate) fn memory_now() -> Result<(u64, u64)> {
    Ok((rss_bytes()?, heap_in_use()))
}

/// Bytes per task grown from `before` to `during`: the larger of the resident set's growth and
/// the heap's (see the module documentation: the resident set does not grow where `malloc`
/// reuses memory freed before).
pub(crate) fn grown_per_task(before: (u64, u64), during: (u64, u64), n: usize) -> f64 {
    let grown = during.0.saturating_sub(before.0).max(during.1.saturating_sub(before.1));
    grown as f64 / n as f64
}

/// `n` tasks on one thread that each sleep `SLEEP_MS`: (seconds from the first spawn to the
/// last join, bytes of resident memory per task while they all sleep).
pub(crate) fn sleepers(n: usize) -> Result<(f64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(async {
        let started = Arc::new(AtomicUsize::new(0));
        let before = memory_now()?;
        let began = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Arc::clone(&started);
            tasks.push(tokio::spawn(async move {
                started.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(SLEEP_MS)).await;
            }));
        }
        // A task counts itself before its sleep: once all have, all of them are waiting.
        while started.load(Ordering::Relaxed) < n {
            tokio::task::yield_now().await;
        }
        let during = memory_now()?;
        for task in tasks {
            task.await?;
        }
        let seconds = began.elapsed().as_secs_f64();
        Ok((seconds, grown_per_task(before, during, n)))
    })
}

/// [`sleepers`] in a forked child, whose heap holds none of an earlier run's freed tasks; the
/// child sends its two figures back through a pipe.
fn sleepers_in_child(n: usize) -> Result<(f64, f64)> {
    in_child(sleepers, n)
}

/// `sleepers(n)` (tokio's, or a peer's) in a forked child; see [`sleepers_in_child`].
pub(crate) fn in_child(sleepers: fn(usize) -> Result<(f64, f64)>, n: usize) -> Result<(f64, f64)> {
    let (mut from_child, mut to_parent) = std::io::pipe()?;
    // Fork: every earlier measurement has joined its threads, and the child touches nothing
    // of the parent's but the pipe: it builds its own runtime, writes 16 bytes and leaves.
    let mut child = Process::from_fn("bench-sleepers", move || {
        let (seconds, per_task) = sleepers(n)?;
        let mut message = [0u8; 16];
        message[..8].copy_from_slice(&seconds.to_le_bytes());
        message[8..].copy_from_slice(&per_task.to_le_bytes());
        to_parent.write_all(&message)?;
        Ok(())
    })
    .start_method(StartMethod::Fork);
    child.start()?;
    // 16 bytes fit in the pipe's buffer: the child writes them and ends before we read.
    if child.join()? != Some(0) {
        bail!("{child}: the sleeping tasks failed");
    }
    let mut message = [0u8; 16];
    from_child.read_exact(&mut message).context("reading the sleepers' figures")?;
    let figure = |bytes: &[u8]| f64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
    Ok((figure(&message[..8]), figure(&message[8..])))
}

/// The rows, in order: figure, unit, target.
const FIGURES: [(&str, &str, Option<f64>); 4] = [
    ("task switch, tokio yield_now / asyncio.sleep(0)", "ns", Some(TASK_SWITCH_TARGET)),
    ("stackful switch, corosensei / greenlet.switch", "ns", Some(STACKFUL_TARGET)),
    ("10,000 tasks sleeping 10 ms, total", "ms", None),
    ("10,000 tasks sleeping 10 ms, memory per task", "bytes", None),
];

/// What one run of `python/coroutine.py` gave.
struct PythonRun {
    /// The figures in the order of [`FIGURES`]; the greenlet one `None` when skipped.
    figures: [Option<f64>; 4],
    version: String,
    /// `Ok(greenlet's version)`, or `Err(why it was skipped)`.
    greenlet: Result<String, String>,
}

fn python_run() -> Result<PythonRun, String> {
    let args = [
        "--yields".to_string(),
        ASYNCIO_YIELDS.to_string(),
        "--round-trips".into(),
        GREENLET_ROUND_TRIPS.to_string(),
        "--tasks".into(),
        SLEEPERS.to_string(),
        "--sleep-ms".into(),
        SLEEP_MS.to_string(),
    ];
    let answer = run_python("coroutine.py", &args)?;
    let number = |v: &Value, what: &str| v.as_f64().ok_or(format!("coroutine.py: no {what}"));
    let asyncio = number(&answer["asyncio_switch_ns"], "asyncio_switch_ns")?;
    let g = &answer["greenlet"];
    let (greenlet_ns, greenlet) = match g["round_trip_ns"].as_f64() {
        Some(ns) => (Some(ns), Ok(g["version"].as_str().unwrap_or("?").to_string())),
        None => (None, Err(g["skipped"].as_str().unwrap_or("greenlet not measured").to_string())),
    };
    let sleepers = &answer["sleepers"];
    let seconds = number(&sleepers["seconds"], "sleepers.seconds")?;
    let per_task = number(&sleepers["bytes_per_task"], "sleepers.bytes_per_task")?;
    let version = answer["python"].as_str().unwrap_or("3").to_string();
    let figures = [Some(asyncio), greenlet_ns, Some(seconds * 1e3), Some(per_task)];
    Ok(PythonRun { figures, version, greenlet })
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut rust: Vec<Vec<f64>> = vec![Vec::new(); FIGURES.len()];
    let mut python: Vec<Vec<f64>> = vec![Vec::new(); FIGURES.len()];
    let mut python_outcome: Result<String, String> = Ok(String::new());
    let mut greenlet = Err("not run".to_string());
    for _ in 0..settings.runs {
        // Rust, then Python, run after run: a busy moment of a shared machine hits both sides.
        rust[0].push(event_loop_switch(TOKIO_YIELDS)?);
        rust[1].push(stackful_switch(STACKFUL_ROUND_TRIPS));
        let (seconds, per_task) = sleepers_in_child(SLEEPERS)?;
        rust[2].push(seconds * 1e3);
        rust[3].push(per_task);
        if python_outcome.is_ok() {
            python_outcome = python_run().map(|answer| {
                for (i, figure) in answer.figures.into_iter().enumerate() {
                    python[i].extend(figure);
                }
                greenlet = answer.greenlet;
                answer.version
            });
        }
    }
    let rows: Vec<Row> = FIGURES
        .iter()
        .enumerate()
        .map(|(i, (figure, unit, target))| Row {
            figure: figure.to_string(),
            unit,
            better: Better::Lower,
            rust: median(&rust[i]),
            python: (python_outcome.is_ok() && !python[i].is_empty()).then(|| median(&python[i])),
            target: *target,
        })
        .collect();
    let mut notes = vec![
        format!(
            "each run: two tasks yielding {TOKIO_YIELDS} times each (tokio current-thread) and \
             {ASYNCIO_YIELDS} times each (asyncio), per yield; {STACKFUL_ROUND_TRIPS} corosensei \
             resume+suspend and {GREENLET_ROUND_TRIPS} greenlet switch-and-back round trips, per \
             round trip; {SLEEPERS} tasks each sleeping {SLEEP_MS} ms on one thread, the time \
             from the first spawn to the last join, and the resident memory grown by the moment \
             all of them wait (VmRSS of /proc/self/status), per task; Rust in a forked child"
        ),
        "a stackful switch only swaps a few registers and the stack pointer (corosensei) where \
         greenlet copies the slice of C stack in use to the heap and back; a tokio yield goes \
         through the run queue and a waker, an asyncio one through call_soon, a Handle and a \
         Task step in Python code"
            .to_string(),
    ];
    match (&python_outcome, &greenlet) {
        (Ok(_), Ok(version)) => notes.push(format!("greenlet {version} measured")),
        (Ok(_), Err(why)) => notes.push(format!(
            "stackful switch row: the Python side was skipped: {why} (pip install greenlet to \
             compare); the Rust figure stands alone"
        )),
        (Err(_), _) => {}
    }
    for row in rows.iter().filter(|r| r.met() == Some(false)) {
        let (ratio, target) = (row.ratio().unwrap_or(0.0), row.target.unwrap_or(0.0));
        let limit = if row.unit == "ns" && row.target == Some(TASK_SWITCH_TARGET) {
            "a tokio yield is a trip through the scheduler (the task's state word, the defer list \
             of wakers, the run queue), a few hundred ns, which a loaded machine stretches as \
             much as Python's"
        } else {
            "the Rust round trip is a few ns, so any preemption or cache miss of a shared \
             machine weighs on it more than on greenlet's"
        };
        notes.push(format!(
            "target missed: {} at {ratio:.1}x, {:.0}% short of {target}x: {limit}",
            row.figure,
            100.0 * (1.0 - ratio / target)
        ));
    }
    Ok(Outcome { rows, python: python_outcome, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sleeping_task_waits_its_full_sleep_and_the_switches_are_counted() {
        let (seconds, per_task) = sleepers(200).unwrap();
        // A tokio sleep never ends early; the clock ran across at least one of them.
        assert!(seconds >= SLEEP_MS as f64 / 1e3, "{seconds}");
        assert!(per_task.is_finite() && per_task >= 0.0, "{per_task}");
        assert!(event_loop_switch(100).unwrap() > 0.0);
        assert!(stackful_switch(100) > 0.0);
    }

    #[test]
    fn a_task_counts_even_where_the_resident_set_does_not_grow() {
        // malloc reusing freed memory: resident bytes unchanged, 1,000 heap bytes more.
        assert_eq!(grown_per_task((8192, 500), (8192, 1500), 10), 100.0);
        // Fresh pages: the resident set grows more than the heap's count.
        assert_eq!(grown_per_task((8192, 500), (16384, 1500), 8), 1024.0);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_heap_count_sees_blocks_this_thread_holds() {
        let before = heap_in_use();
        let held: Vec<Box<[u8; 512]>> = (0..20_000).map(|_| Box::new([1u8; 512])).collect();
        let during = heap_in_use();
        // Nine tenths: the other tests of this binary may free a little meanwhile.
        assert!(during >= before + 20_000 * 512 * 9 / 10, "{before} -> {during} bytes in use");
        drop(std::hint::black_box(held));
    }

    #[test]
    fn the_python_side_prints_every_figure_or_says_why_greenlet_was_skipped() {
        let args: Vec<String> =
            ["--yields", "50", "--round-trips", "50", "--tasks", "50", "--sleep-ms", "1"]
                .map(String::from)
                .to_vec();
        let answer = match run_python("coroutine.py", &args) {
            Ok(answer) => answer,
            // No python3 here: the suite says so and the Rust figures stand alone.
            Err(why) if why.contains("not found") => return,
            Err(why) => panic!("{why}"),
        };
        assert!(answer["asyncio_switch_ns"].as_f64().is_some(), "{answer}");
        assert_eq!(answer["sleepers"]["tasks"].as_u64(), Some(50), "{answer}");
        let greenlet = &answer["greenlet"];
        assert!(
            greenlet["round_trip_ns"].as_f64().is_some() || greenlet["skipped"].is_string(),
            "{answer}"
        );
    }
}
