//! start — what a start+join costs: a thread, a fork child, a spawn child and a fork-server
//! child in Rust, beside Python's `threading.Thread` and `multiprocessing.Process` with the
//! fork, spawn and forkserver start methods (`python/start.py`).
//!
//! Both sides do the same thing: start a child that does nothing, join it, `count` times one
//! after another; the figure is the time of one start+join in microseconds. The Rust side uses
//! `common::process::Process` and `std::thread`, so it includes the bookkeeping a demo pays
//! (naming the child, the parent-death signal, the registry of children), not a bare `fork`.
//! Both fork servers are started (by an untimed start+join of each kind) before the clock.

use anyhow::Result;
use common::startcost::{self, Starter};

use crate::measure::{Better, Outcome, Samples, Settings};

/// The project's goals: how many times faster than Python each start+join should be.
const TARGETS: [(Starter, f64); 4] = [
    (Starter::Thread, 2.0),
    (Starter::Fork, 8.0),
    (Starter::Spawn, 20.0),
    (Starter::Forkserver, 8.0),
];

pub fn run(settings: &Settings) -> Result<Outcome> {
    let count = settings.count;
    let mut samples = Samples::new(Starter::ALL.len());
    startcost::warm_up(Starter::ALL)?;
    let args = ["--count".to_string(), count.to_string(), "--runs".into(), "1".into()];
    for _ in 0..settings.runs {
        for (i, kind) in Starter::ALL.iter().enumerate() {
            samples.rust(i, startcost::start_join_round(*kind, count)?);
        }
        samples.python("start.py", &args, |answer| {
            Starter::ALL
                .iter()
                .map(|kind| {
                    let key = format!("{}_us", kind.key());
                    answer[&key].as_f64().ok_or(format!("start.py gave no {key}"))
                })
                .collect()
        });
    }
    let rows = Starter::ALL
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let target = TARGETS.iter().find(|(k, _)| k == kind).map(|(_, t)| *t);
            samples.row(i, format!("{} start+join", kind.key()), "µs", Better::Lower, target)
        })
        .collect();
    Ok(Outcome {
        rows,
        python: samples.python_outcome,
        notes: vec![format!(
            "each run starts and joins {count} children (or threads) one after another; Rust \
             through common::process::Process and std::thread, Python through \
             multiprocessing.get_context('fork'/'spawn'/'forkserver').Process and \
             threading.Thread"
        )],
    })
}
