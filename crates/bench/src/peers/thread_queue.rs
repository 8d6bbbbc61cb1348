//! thread-queue-peers — items per second through `py_threading::queue::Queue` beside the
//! channels a Rust user would pick instead: crossbeam-channel, flume and std's mpsc, on the work
//! of the thread-queue suite (small items `(producer, number)`, one `None` per consumer once the
//! producers are joined), in the same run.
//!
//! Four shapes: 1 producer → 1 consumer and 3 producers → 2 consumers, each with a bound of
//! [`BOUND`] items (`Queue::new(1024)`, `bounded(1024)`, `sync_channel(1024)`) and without one
//! (`Queue::new(0)`, `unbounded()`, `channel()`). std's mpsc has one consumer (`Receiver` is not
//! `Clone`): for 3 → 2 its two consumers share the `Receiver` behind a `Mutex`, the usual way
//! (the Rust book's thread pool). No peer has `task_done`/`join`: here, as in the suite, the
//! main thread learns the end by joining the consumers, which works the same for all.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use py_threading::queue::Queue;

use super::{peers_outcome, target_the_fastest};
use crate::measure::{Better, Outcome, Row, Settings, median};

/// Items per run, as in the thread-queue suite.
const ITEMS: usize = 100_000;
/// The bound of the bounded shapes.
const BOUND: usize = 1024;

type Item = Option<(u32, u32)>;

/// The queues measured, ours first.
const KINDS: [&str; 4] = ["ours", "crossbeam-channel", "flume", "std mpsc"];

/// The shapes: label, producers, consumers, bounded.
const SHAPES: [(&str, usize, usize, bool); 4] = [
    ("1 -> 1, bounded 1024", 1, 1, true),
    ("3 -> 2, bounded 1024", 3, 2, true),
    ("1 -> 1, unbounded", 1, 1, false),
    ("3 -> 2, unbounded", 3, 2, false),
];

/// `producers` threads each put their share of `items` with one of `putters`; the last putter
/// is the main thread's, for the `None`s; one consumer thread per getter counts until `None`.
fn drive<P, G>(mut putters: Vec<P>, getters: Vec<G>, items: usize) -> Result<f64>
where
    P: FnMut(Item) + Send + 'static,
    G: FnMut() -> Item + Send + 'static,
{
    let producers = putters.len() - 1;
    let consumers = getters.len();
    let per = items / producers;
    let mut main_put = putters.pop().ok_or_else(|| anyhow!("no putter for the main thread"))?;
    let began = Instant::now();
    let cs: Vec<_> = getters
        .into_iter()
        .map(|mut get| {
            std::thread::spawn(move || {
                let mut n = 0usize;
                while get().is_some() {
                    n += 1;
                }
                n
            })
        })
        .collect();
    let ps: Vec<_> = putters
        .into_iter()
        .enumerate()
        .map(|(k, mut put)| {
            std::thread::spawn(move || {
                for i in 0..per {
                    put(Some((k as u32, i as u32)));
                }
            })
        })
        .collect();
    for p in ps {
        p.join().map_err(|_| anyhow!("a producer panicked"))?;
    }
    for _ in 0..consumers {
        main_put(None);
    }
    let mut received = 0;
    for c in cs {
        received += c.join().map_err(|_| anyhow!("a consumer panicked"))?;
    }
    let seconds = began.elapsed().as_secs_f64();
    if received != per * producers {
        bail!("{received} items received of {}", per * producers);
    }
    Ok(received as f64 / seconds)
}

/// `n` copies of a cloneable putter or getter.
fn copies<T: Clone>(one: T, n: usize) -> Vec<T> {
    vec![one; n]
}

/// Items per second of `kind` in `shape`.
fn measure(kind: &str, producers: usize, consumers: usize, bounded: bool) -> Result<f64> {
    let items = ITEMS - ITEMS % producers;
    let putters = producers + 1;
    match kind {
        "ours" => {
            let q: Arc<Queue<Item>> = Arc::new(Queue::new(if bounded { BOUND } else { 0 }));
            let put = {
                let q = q.clone();
                move |x| {
                    let _ = q.put(x);
                }
            };
            let get = move || q.get().unwrap_or(None);
            drive(copies(put, putters), copies(get, consumers), items)
        }
        "crossbeam-channel" => {
            let (tx, rx) = if bounded {
                crossbeam_channel::bounded::<Item>(BOUND)
            } else {
                crossbeam_channel::unbounded()
            };
            let put = move |x| {
                let _ = tx.send(x);
            };
            let get = move || rx.recv().unwrap_or(None);
            drive(copies(put, putters), copies(get, consumers), items)
        }
        "flume" => {
            let (tx, rx) = if bounded { flume::bounded::<Item>(BOUND) } else { flume::unbounded() };
            let put = move |x| {
                let _ = tx.send(x);
            };
            let get = move || rx.recv().unwrap_or(None);
            drive(copies(put, putters), copies(get, consumers), items)
        }
        _ if bounded => {
            let (tx, rx) = mpsc::sync_channel::<Item>(BOUND);
            let put = move |x| {
                let _ = tx.send(x);
            };
            drive(copies(put, putters), mpsc_getters(rx, consumers), items)
        }
        _ => {
            let (tx, rx) = mpsc::channel::<Item>();
            let put = move |x| {
                let _ = tx.send(x);
            };
            drive(copies(put, putters), mpsc_getters(rx, consumers), items)
        }
    }
}

/// One consumer owns the `Receiver`; several share it behind a `Mutex` (it is not `Clone`).
fn mpsc_getters(
    rx: mpsc::Receiver<Item>,
    consumers: usize,
) -> Vec<Box<dyn FnMut() -> Item + Send>> {
    if consumers == 1 {
        return vec![Box::new(move || rx.recv().unwrap_or(None))];
    }
    let shared = Arc::new(Mutex::new(rx));
    (0..consumers)
        .map(|_| {
            let shared = shared.clone();
            Box::new(move || {
                let rx = shared.lock().unwrap_or_else(|e| e.into_inner());
                rx.recv().unwrap_or(None)
            }) as Box<dyn FnMut() -> Item + Send>
        })
        .collect()
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    // figures[shape][kind]: one figure per run.
    let mut figures = vec![vec![Vec::new(); KINDS.len()]; SHAPES.len()];
    for _ in 0..settings.runs {
        // Every queue, shape after shape, run after run: a busy moment hits all of them.
        for (s, (_, producers, consumers, bounded)) in SHAPES.iter().enumerate() {
            for (k, kind) in KINDS.iter().enumerate() {
                figures[s][k].push(measure(kind, *producers, *consumers, *bounded)?);
            }
        }
    }
    let mut rows = Vec::new();
    for (s, (shape, _, consumers, _)) in SHAPES.iter().enumerate() {
        let ours = median(&figures[s][0]);
        let mut shape_rows: Vec<Row> = KINDS[1..]
            .iter()
            .enumerate()
            .map(|(k, kind)| {
                let kind = if *kind == "std mpsc" && *consumers > 1 {
                    "std mpsc, Receiver in a Mutex"
                } else {
                    kind
                };
                Row {
                    figure: format!("{shape}: vs {kind}"),
                    unit: "items/s",
                    better: Better::Higher,
                    rust: ours,
                    python: Some(median(&figures[s][k + 1])),
                    target: None,
                }
            })
            .collect();
        target_the_fastest(&mut shape_rows);
        rows.extend(shape_rows);
    }
    Ok(peers_outcome(
        rows,
        vec![
            format!(
                "each run: {ITEMS} items (producer, number) between threads, one None per \
                 consumer after the producers are joined; ours is py_threading::queue::Queue \
                 (one Mutex and three Condvars, as Lib/queue.py), Queue::new({BOUND}) or \
                 Queue::new(0)"
            ),
            "what the fastest peer does that ours does not: crossbeam-channel's bounded channel \
             is an array of slots, each with its own stamp, claimed by a compare-and-swap on a \
             head or tail index, so a put and a get touch no lock and wake a sleeper only when \
             one is registered (its unbounded channel is a linked list of 31-slot blocks, also \
             lock-free); flume keeps a Mutex over a VecDeque but holds it for a push or a pop \
             only. Ours takes the one mutex for every put and get and signals a Condvar, as \
             Python's queue.Queue does, and in return gives what no channel has: task_done and \
             join, qsize, LIFO and priority orders, timed put and get, and 3.13's shutdown, \
             one file a learner can read against Lib/queue.py"
                .to_string(),
            "std mpsc has one consumer: for 3 -> 2 its consumers take turns on a Mutex around the \
             Receiver, and each one holds it while it sleeps in recv, so that row measures the \
             hand-off, not a multi-consumer queue"
                .to_string(),
        ],
    ))
}
