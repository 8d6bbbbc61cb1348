//! peers — ours beside the Rust crates a user would pick instead, on the same work in the same
//! run: the question a Rust learner asks after the Python one ("should I use this `Queue`, or
//! the crate everyone uses?").
//!
//! - `thread_queue`: `py_threading::queue::Queue` vs crossbeam-channel, flume, std's mpsc;
//! - `queue`: `py_multiprocessing::queue::Queue` (processes) vs ipc-channel;
//! - `pool`: `ThreadPool::map` and `Pool::map` vs rayon's `par_iter`;
//! - `coroutine`: tokio's current-thread runtime vs smol's executor (async-executor, async-io).
//!
//! The crates are dependencies of the bench only, compiled with `--features peers` (`make bench`
//! turns it on); without the feature each suite here says so, and the others run. Each row's
//! ratio is how many times better ours is (below 1: the peer is better); the target, ours within
//! 2× of the fastest peer doing the same thing (a ratio ≥ 0.5), sits on that peer's row.

use crate::measure::{Outcome, Row};

/// Whether the peer crates are compiled in (`--features peers`).
pub const COMPILED: bool = cfg!(feature = "peers");

/// Ours within 2× of the fastest peer: a ratio (ours / peer, better is higher) of at least ½.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub const TARGET: f64 = 0.5;

/// A peer suite: compiled with the feature, a clear error without it.
macro_rules! peer_suite {
    ($name:ident) => {
        #[cfg(feature = "peers")]
        mod $name;
        #[cfg(feature = "peers")]
        pub use self::$name::run as $name;

        #[cfg(not(feature = "peers"))]
        pub fn $name(
            _settings: &crate::measure::Settings,
        ) -> anyhow::Result<crate::measure::Outcome> {
            anyhow::bail!(
                "the peer crates are not compiled in: run cargo run --release -p bench \
                 --features peers (make bench does)"
            )
        }
    };
}

peer_suite!(thread_queue);
peer_suite!(queue);
peer_suite!(pool);
peer_suite!(coroutine);

/// Puts the target on the row of the fastest peer among `rows` (the best ratio for ours is the
/// worst: the smallest `ours / peer`, or `peer / ours` for a cost).
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn target_the_fastest(rows: &mut [Row]) {
    let fastest = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.ratio()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    if let Some(i) = fastest {
        rows[i].target = Some(TARGET);
    }
}

/// A peer suite's outcome: its rows and notes (the peers are Rust crates: no Python side).
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn peers_outcome(rows: Vec<Row>, notes: Vec<String>) -> Outcome {
    Outcome { rows, python: Ok(String::new()), notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Better;

    #[test]
    fn the_target_sits_on_the_fastest_peer_whichever_way_is_better() {
        let row = |better, rust, peer| Row {
            figure: "x".into(),
            unit: "u",
            better,
            rust,
            python: Some(peer),
            target: None,
        };
        let mut rates = [
            row(Better::Higher, 10.0, 20.0),
            row(Better::Higher, 10.0, 40.0),
            row(Better::Higher, 10.0, 5.0),
        ];
        target_the_fastest(&mut rates);
        assert_eq!(rates.iter().map(|r| r.target).collect::<Vec<_>>(), [None, Some(TARGET), None]);
        let mut costs = [row(Better::Lower, 10.0, 20.0), row(Better::Lower, 10.0, 4.0)];
        target_the_fastest(&mut costs);
        assert_eq!(costs.iter().map(|r| r.target).collect::<Vec<_>>(), [None, Some(TARGET)]);
    }
}
