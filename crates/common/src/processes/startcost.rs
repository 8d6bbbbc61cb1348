//! startcost — what it costs to start a thread or a process and wait for it.
//!
//! One measurement, shared by the `fork-vs-spawn` demo and `make bench`: start a child that does
//! nothing and join it, `count` times one after another, and divide the time by `count`. The
//! children are started exactly as a demo starts them, through [`Process`] (fork, spawn or
//! forkserver) or `std::thread::spawn`, so the figure is what a user of this crate pays,
//! bookkeeping included.
//!
//! A program that measures spawn or forkserver children must list [`NOOP`] in its `dispatch` (or
//! `demo::main`) roles: a spawned child runs the program again and finds its work by that name.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::process::{Process, Role, StartMethod};

/// The work of a measured child: nothing, so that only the start and the join are timed.
pub static NOOP: Role = Role::new("startcost-noop", |_| Ok(()));

/// What is started and joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starter {
    /// `std::thread::spawn` + `join` (Python's `threading.Thread`).
    Thread,
    /// [`Process`] with the fork start method (`fork(2)`, then `waitpid`).
    Fork,
    /// [`Process`] with the spawn start method (the program is executed again).
    Spawn,
    /// [`Process`] with the forkserver start method (the server itself is started before the
    /// clock, by [`warm_up`]).
    Forkserver,
}

impl Starter {
    /// All four, in the order they are reported (three where there is no fork server).
    pub const ALL: &[Starter] = &[
        Starter::Thread,
        Starter::Fork,
        Starter::Spawn,
        #[cfg(target_os = "linux")]
        Starter::Forkserver,
    ];

    /// `thread`, `fork`, `spawn` or `forkserver`: the key in events and in the Python output.
    pub fn key(self) -> &'static str {
        match self {
            Starter::Thread => "thread",
            Starter::Fork => "fork",
            Starter::Spawn => "spawn",
            Starter::Forkserver => "forkserver",
        }
    }
}

/// Starts and joins `count` children of one kind, one after another, and returns the time of
/// one start+join in microseconds (the mean over this round). A child that does not exit with
/// 0 is an error: a spawn child whose role is not registered would otherwise look cheap.
pub fn start_join_round(kind: Starter, count: usize) -> Result<f64> {
    let begin = Instant::now();
    for _ in 0..count {
        let method = match kind {
            Starter::Thread => {
                if std::thread::spawn(|| {}).join().is_err() {
                    bail!("a measured thread panicked");
                }
                continue;
            }
            Starter::Fork => StartMethod::Fork,
            Starter::Spawn => StartMethod::Spawn,
            Starter::Forkserver => StartMethod::Forkserver,
        };
        let mut child = Process::new(format!("cost-{method}"), &NOOP, ()).start_method(method);
        child.start()?;
        if child.join()? != Some(0) {
            let lost = crate::processes::lost::report(&child, "start+join rounds", 1);
            return Err(lost.context(format!(
                "{child}: a measured {method} child did not exit with 0 \
                 (is startcost::NOOP listed in the program's roles?)"
            )));
        }
    }
    Ok(begin.elapsed().as_secs_f64() * 1e6 / count.max(1) as f64)
}

/// One untimed start+join of each kind, so that no figure pays for a first time: the fork
/// server's own start (once per program), the first `exec` of the binary from a cold cache.
pub fn warm_up(kinds: &[Starter]) -> Result<()> {
    kinds.iter().try_for_each(|kind| start_join_round(*kind, 1).map(drop))
}

/// Runs `rounds` rounds of each kind (after [`warm_up`]), alternating the kinds inside every
/// round so that a busy moment of a shared machine does not fall on one kind only. Returns, for
/// each kind in the order given, every round's figure (µs per start+join).
pub fn measure(kinds: &[Starter], count: usize, rounds: usize) -> Result<Vec<(Starter, Vec<f64>)>> {
    warm_up(kinds)?;
    let mut out: Vec<(Starter, Vec<f64>)> = kinds.iter().map(|k| (*k, Vec::new())).collect();
    for _ in 0..rounds {
        for (kind, figures) in &mut out {
            figures.push(start_join_round(*kind, count)?);
        }
    }
    Ok(out)
}

/// The median of `values` (the mean of the middle two for an even count); `NaN` when empty.
/// A median, not a mean: one round slowed down by another program does not move it.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if !n.is_multiple_of(2) => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
