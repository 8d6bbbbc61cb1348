//! semaphore — what an acquire+release pair costs (the semaphore demo): the thread semaphore of
//! `py_threading::sync` beside CPython's `threading.Semaphore`, and the process semaphore of
//! `py_multiprocessing::sync` beside `multiprocessing.Semaphore` (`python/semaphore.py`).
//!
//! Four figures, nanoseconds per pair (lower is better), each on a semaphore of one place:
//! - one thread alone (no contention: the cost of the mutex and the counter);
//! - two threads taking turns as fast as they can (contention: sleeps and wake-ups);
//! - one process alone on the process semaphore (our robust mutex per place; Python: a POSIX
//!   named semaphore);
//! - two forked processes taking turns.
//!
//! The clock starts when the workers leave a start gate and stops when all are done. The
//! target: at least 10× Python on each figure.

use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Result, bail};
use common::process::Process;
use py_multiprocessing::shm::{RobustMutex, Shareable, SharedBlock, Wait};
use py_multiprocessing::sync::{ProcessEvent, ProcessSemaphore};
use py_threading::sync::Semaphore;

use crate::measure::{Better, Outcome, Row, Samples, Settings, case_figures, median};

/// Pairs per worker and run: Rust's, and Python's (about 100 times slower per pair).
const PAIRS: usize = 1_000_000;
const PYTHON_PAIRS: usize = 100_000;
/// The goal: at least this many times faster than Python.
const TARGET: f64 = 10.0;

/// The figures, with the key of each in the Python script's output.
const CASES: [(&str, &str); 4] = [
    ("thread_alone", "Semaphore acquire+release, 1 thread"),
    ("thread_two", "Semaphore(1), 2 threads contending"),
    ("process_alone", "process semaphore acquire+release, 1 process"),
    ("process_two", "process semaphore(1), 2 processes contending"),
];

/// The floor of the process semaphore: what one robust, process-shared mutex costs alone, a
/// trylock and an unlock, in the same kind of shared block. No Python figure: a row to read the
/// process rows against.
const FLOOR: &str = "floor: one robust mutex trylock+unlock";

#[repr(C)]
struct OneLock {
    lock: RobustMutex,
}

// Safety: a zeroed mutex initialised before the block is shared; nothing else in it.
unsafe impl Shareable for OneLock {}

fn robust_floor() -> Result<f64> {
    let block = SharedBlock::<OneLock>::create(c"bench-robust-floor", |b| {
        // Safety: the block is not shared yet.
        unsafe { (*b).lock.init() }
    })?;
    let lock = &block.get().lock;
    let began = Instant::now();
    for _ in 0..PAIRS {
        drop(lock.lock(Wait::Now)?);
    }
    Ok(began.elapsed().as_secs_f64() * 1e9 / PAIRS as f64)
}

fn thread_pairs(sem: &Semaphore, n: usize) {
    for _ in 0..n {
        sem.acquire();
        sem.release();
    }
}

fn process_pairs(sem: &ProcessSemaphore, n: usize) -> Result<()> {
    for _ in 0..n {
        drop(sem.acquire()?);
    }
    Ok(())
}

/// Seconds for one run of `case`, and the pairs it made.
fn measure_rust(case: &str) -> Result<(f64, usize)> {
    match case {
        "thread_alone" => {
            let sem = Semaphore::new(1);
            let began = Instant::now();
            thread_pairs(&sem, PAIRS);
            Ok((began.elapsed().as_secs_f64(), PAIRS))
        }
        "thread_two" => {
            let sem = Semaphore::new(1);
            let gate = Barrier::new(3);
            let seconds = std::thread::scope(|s| {
                for name in ["bench-sem-1", "bench-sem-2"] {
                    let (sem, gate) = (&sem, &gate);
                    common::threads::named::spawn_scoped(s, name, move || {
                        gate.wait();
                        thread_pairs(sem, PAIRS);
                    })?;
                }
                gate.wait();
                let began = Instant::now();
                // The scope joins both workers when this closure returns; time it from here.
                Ok::<_, std::io::Error>(began)
            })?
            .elapsed()
            .as_secs_f64();
            Ok((seconds, 2 * PAIRS))
        }
        "process_alone" => {
            let sem = ProcessSemaphore::new(1)?;
            let began = Instant::now();
            process_pairs(&sem, PAIRS)?;
            Ok((began.elapsed().as_secs_f64(), PAIRS))
        }
        _ => {
            let sem = ProcessSemaphore::new(1)?;
            let gate = ProcessEvent::new()?;
            let mut workers: Vec<Process> = (1..=2)
                .map(|n| {
                    let (sem, gate) = (sem.clone(), gate.clone());
                    Process::from_fn(format!("bench-sem-{n}"), move || {
                        gate.wait();
                        process_pairs(&sem, PAIRS)
                    })
                })
                .collect();
            for w in &mut workers {
                w.start()?;
            }
            let began = Instant::now();
            gate.set();
            for w in &mut workers {
                if w.join()? != Some(0) {
                    bail!("{w} failed");
                }
            }
            Ok((began.elapsed().as_secs_f64(), 2 * PAIRS))
        }
    }
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut samples = Samples::new(CASES.len());
    let mut floor = Vec::new();
    let args = ["--pairs".to_string(), PYTHON_PAIRS.to_string()];
    for _ in 0..settings.runs {
        floor.push(robust_floor()?);
        for (i, (case, _)) in CASES.iter().enumerate() {
            let (seconds, pairs) = measure_rust(case)?;
            samples.rust(i, seconds * 1e9 / pairs as f64);
        }
        samples.python("semaphore.py", &args, |answer| {
            CASES
                .iter()
                .map(|(case, _)| {
                    let [seconds, pairs] =
                        case_figures(answer, "semaphore.py", case, ["seconds", "pairs"])?;
                    Ok(seconds * 1e9 / pairs)
                })
                .collect()
        });
    }
    let mut rows: Vec<Row> = CASES
        .iter()
        .enumerate()
        .map(|(i, (_, figure))| samples.row(i, *figure, "ns/pair", Better::Lower, Some(TARGET)))
        .collect();
    rows.push(Row {
        figure: FLOOR.to_string(),
        unit: "ns/pair",
        better: Better::Lower,
        rust: median(&floor),
        python: None,
        target: None,
    });
    Ok(Outcome {
        rows,
        python: samples.python_outcome,
        notes: vec![
            format!(
                "each run: {PAIRS} acquire+release pairs per worker in Rust, {PYTHON_PAIRS} in \
             Python; threads: py_threading::sync::Semaphore (Mutex + Condvar) vs \
             threading.Semaphore; processes: ProcessSemaphore (a robust mutex per place, futex \
             sleeps) vs multiprocessing.Semaphore (sem_open), forked workers"
            ),
            "the process rows cannot reach 10x: multiprocessing.Semaphore's acquire/release go \
             straight to glibc's sem_wait/sem_post (one atomic instruction each), so Python pays \
             little more than its call overhead; ours cannot go below the floor row, a robust \
             mutex's trylock+unlock (the price of knowing the holder, which is what gives a \
             SIGKILLed holder's place back). Limit: Python's per-call overhead over that floor"
                .to_string(),
        ],
    })
}
