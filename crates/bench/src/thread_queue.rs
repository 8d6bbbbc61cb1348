//! thread-queue — items per second through `py_threading::queue::Queue` between threads (the
//! thread-queue demo), beside CPython's `queue.Queue` doing the same (`python/thread_queue.py`),
//! with std's `mpsc::sync_channel` as a reference row (no Python counterpart).
//!
//! Small items, a tuple `(producer, number)`, an unbounded queue, `None` sentinels:
//! - 1 producer thread → 1 consumer thread;
//! - 3 producers → 2 consumers, one `None` per consumer once the producers are joined.
//!
//! The clock runs from the threads' start to the last consumer's end; every run checks by count
//! that every item arrived. The target: at least 20× Python's items per second.

use std::sync::{Arc, mpsc};
use std::time::Instant;

use anyhow::{Result, bail};
use py_threading::queue::Queue;

use crate::measure::{Better, Outcome, Row, Samples, Settings, case_figures, median};

/// Items per run, on each side.
const ITEMS: usize = 100_000;
/// The goal: at least this many times Python's items per second.
const TARGET: f64 = 20.0;

const CASES: [(&str, &str, usize, usize); 2] = [
    ("1to1", "1 producer -> 1 consumer thread", 1, 1),
    ("3to2", "3 producers -> 2 consumer threads", 3, 2),
];

type Item = Option<(u32, u32)>;

/// `producers` → `consumers` through one `Queue`; items per second.
fn through_queue(producers: usize, consumers: usize, items: usize) -> Result<f64> {
    let q: Arc<Queue<Item>> = Arc::new(Queue::new(0));
    let per = items / producers;
    let began = Instant::now();
    let cs: Vec<_> = (0..consumers)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while let Ok(Some(_)) = q.get() {
                    n += 1;
                }
                n
            })
        })
        .collect();
    let ps: Vec<_> = (0..producers)
        .map(|k| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let _ = q.put(Some((k as u32, i as u32)));
                }
            })
        })
        .collect();
    for p in ps {
        p.join().map_err(|_| anyhow::anyhow!("a producer panicked"))?;
    }
    for _ in 0..consumers {
        let _ = q.put(None);
    }
    let mut received = 0;
    for c in cs {
        received += c.join().map_err(|_| anyhow::anyhow!("a consumer panicked"))?;
    }
    let seconds = began.elapsed().as_secs_f64();
    if received != per * producers {
        bail!("{received} items received of {}", per * producers);
    }
    Ok(received as f64 / seconds)
}

/// 1 → 1 through std's bounded channel (a reference: no LIFO, no join, one consumer).
fn through_sync_channel(items: usize) -> Result<f64> {
    let (tx, rx) = mpsc::sync_channel::<(u32, u32)>(1024);
    let began = Instant::now();
    let consumer = std::thread::spawn(move || rx.iter().count());
    for i in 0..items {
        tx.send((0, i as u32))?;
    }
    drop(tx);
    let received = consumer.join().map_err(|_| anyhow::anyhow!("the consumer panicked"))?;
    let seconds = began.elapsed().as_secs_f64();
    if received != items {
        bail!("{received} items received of {items}");
    }
    Ok(items as f64 / seconds)
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut samples = Samples::new(CASES.len());
    let mut reference = Vec::new();
    let args = ["--items".to_string(), ITEMS.to_string()];
    for _ in 0..settings.runs {
        for (i, (_, _, producers, consumers)) in CASES.iter().enumerate() {
            let items = ITEMS - ITEMS % producers;
            samples.rust(i, through_queue(*producers, *consumers, items)?);
        }
        reference.push(through_sync_channel(ITEMS)?);
        samples.python("thread_queue.py", &args, |answer| {
            CASES
                .iter()
                .map(|(case, ..)| {
                    let [seconds, received] =
                        case_figures(answer, "thread_queue.py", case, ["seconds", "received"])?;
                    Ok(received / seconds)
                })
                .collect()
        });
    }
    let mut rows: Vec<Row> = CASES
        .iter()
        .enumerate()
        .map(|(i, (_, figure, ..))| {
            samples.row(i, *figure, "items/s", Better::Higher, Some(TARGET))
        })
        .collect();
    rows.push(Row {
        figure: "std mpsc::sync_channel(1024), 1 -> 1 (reference)".into(),
        unit: "items/s",
        better: Better::Higher,
        rust: median(&reference),
        python: None,
        target: None,
    });
    Ok(Outcome {
        rows,
        python: samples.python_outcome,
        notes: vec![format!(
            "each run: {ITEMS} small items (producer, number) between threads of one process; \
             Rust through py_threading::queue::Queue (one Mutex, three Condvars, as \
             Lib/queue.py), Python through queue.Queue (one lock, three Conditions, under the GIL)"
        )],
    })
}
