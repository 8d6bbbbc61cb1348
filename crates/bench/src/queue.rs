//! queue — messages per second through `py_multiprocessing::queue` (the joinable-queue demo), beside
//! CPython's `multiprocessing.Queue` and `JoinableQueue` doing the same (`python/mp_queue.py`).
//!
//! Small messages, a tuple `(producer, number)`, forked children, on both sides:
//! - 1 producer → 1 consumer through an unbounded `Queue`; the consumer stops at a `None`;
//! - 3 producers → 2 consumers, one `None` per consumer once the producers are joined;
//! - `JoinableQueue`: the main process puts every message, one daemonic consumer calls `get`
//!   and `task_done` for each, and the main process `join`s the queue.
//!
//! The clock starts when the producers leave a start gate (the children are already started and
//! waiting) and stops when the consumers have reported their counts, or when `join` returns.
//! Every run checks that every message arrived exactly once by count. The target: at least 5×
//! Python's messages per second on each figure (10× before the queue took its writer lock for
//! every frame, as CPython's does, where small frames used to go lockless; see BENCH.md).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::process::Process;
use py_multiprocessing::queue::{JoinableQueue, Queue};

use crate::measure::{Better, Outcome, Samples, Settings, case_figures};

/// Messages per run, on each side.
pub(crate) const MESSAGES: usize = 100_000;
/// The goal: at least this many times Python's messages per second.
const TARGET: f64 = 5.0;

/// The figures, with the key of each in the Python script's output.
const CASES: [(&str, &str); 3] = [
    ("1to1", "1 producer -> 1 consumer"),
    ("3to2", "3 producers -> 2 consumers"),
    ("joinable", "JoinableQueue put/task_done/join"),
];

type Item = Option<(u32, u32)>;

/// `producers` → `consumers` through one queue; returns the seconds from the gate's opening to
/// the consumers' reports.
pub(crate) fn many(producers: usize, consumers: usize, messages: usize) -> Result<f64> {
    let q: Queue<Item> = Queue::new(0)?;
    let gate: Queue<()> = Queue::new(0)?;
    let done: Queue<u64> = Queue::new(0)?;
    let per = messages / producers;
    let mut children = Vec::new();
    for n in 0..consumers {
        let (q, done) = (q.clone(), done.clone());
        children.push(Process::from_fn(format!("bench-consumer-{n}"), move || {
            let mut received = 0u64;
            while q.get()?.is_some() {
                received += 1;
            }
            done.put(received)?;
            Ok(())
        }));
    }
    for k in 0..producers {
        let (q, gate) = (q.clone(), gate.clone());
        children.push(Process::from_fn(format!("bench-producer-{k}"), move || {
            gate.get()?;
            for i in 0..per {
                q.put(Some((k as u32, i as u32)))?;
            }
            Ok(())
        }));
    }
    let end = || (0..consumers).try_for_each(|_| Ok(q.put(None)?));
    let count = || done.get().context("a consumer's count");
    timed(&mut children, consumers, &gate, (per * producers) as u64, end, count)
}

/// Times one run of `children`, the consumers first (`consumers` of them), then the producers,
/// each producer waiting at `gate`: all are started, the gate opens (the clock starts), the
/// producers are joined, `end` tells every consumer there is no more, `count` gives each
/// consumer's count (the clock stops at the last), and the consumers are joined. Fails unless
/// every producer exits 0 and the counts add up to `expected`. Returns the seconds.
pub(crate) fn timed(
    children: &mut [Process],
    consumers: usize,
    gate: &Queue<()>,
    expected: u64,
    end: impl FnOnce() -> Result<()>,
    mut count: impl FnMut() -> Result<u64>,
) -> Result<f64> {
    for child in children.iter_mut() {
        child.start()?;
    }
    let began = Instant::now();
    for _ in consumers..children.len() {
        gate.put(())?;
    }
    for producer in &mut children[consumers..] {
        if producer.join()? != Some(0) {
            bail!("{producer} failed");
        }
    }
    end()?;
    let mut received = 0;
    for _ in 0..consumers {
        received += count()?;
    }
    let seconds = began.elapsed().as_secs_f64();
    for consumer in &mut children[..consumers] {
        consumer.join()?;
    }
    if received != expected {
        bail!("{received} messages received of {expected}");
    }
    Ok(seconds)
}

/// The main process puts `messages` into a JoinableQueue and joins it; one consumer.
fn joinable(messages: usize) -> Result<f64> {
    let q: JoinableQueue<Item> = JoinableQueue::new(0)?;
    let mut consumer = {
        let q = q.clone();
        Process::from_fn("bench-consumer", move || {
            loop {
                q.get()?;
                q.task_done()?;
            }
        })
    };
    consumer.set_daemon(true)?;
    consumer.start()?;
    let began = Instant::now();
    for i in 0..messages {
        q.put(Some((0, i as u32)))?;
    }
    q.join()?;
    let seconds = began.elapsed().as_secs_f64();
    consumer.terminate()?;
    consumer.join()?;
    Ok(seconds)
}

fn measure_rust(case: &str) -> Result<f64> {
    let (messages, seconds) = match case {
        "1to1" => (MESSAGES, many(1, 1, MESSAGES)?),
        "3to2" => {
            let n = MESSAGES - MESSAGES % 3;
            (n, many(3, 2, n)?)
        }
        _ => (MESSAGES, joinable(MESSAGES)?),
    };
    Ok(messages as f64 / seconds)
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut samples = Samples::new(CASES.len());
    let args = ["--messages".to_string(), MESSAGES.to_string()];
    for _ in 0..settings.runs {
        for (i, (case, _)) in CASES.iter().enumerate() {
            samples.rust(i, measure_rust(case)?);
        }
        samples.python("mp_queue.py", &args, |answer| {
            CASES
                .iter()
                .map(|(case, _)| {
                    let [seconds, received] =
                        case_figures(answer, "mp_queue.py", case, ["seconds", "received"])?;
                    Ok(received / seconds)
                })
                .collect()
        });
    }
    let rows = CASES
        .iter()
        .enumerate()
        .map(|(i, (_, figure))| samples.row(i, *figure, "msg/s", Better::Higher, Some(TARGET)))
        .collect();
    Ok(Outcome {
        rows,
        python: samples.python_outcome,
        notes: vec![format!(
            "each run: {MESSAGES} small messages (producer, number), forked children; Rust through \
             py_multiprocessing::queue (a pipe, a writer lock and a reader lock, robust mutexes in shared \
             memory, futex counters), Python through multiprocessing.Queue / JoinableQueue (a \
             pipe, semaphores, a feeder thread)"
        )],
    })
}
