//! prefetch — the pool's speed-up, kept out of its lesson (a task goes to a worker that is
//! idle). While more tasks wait than there are workers, a busy worker is given tasks in advance,
//! as many as it runs in about [`PREFETCH_WINDOW`], so that it finds the next one in its inbox
//! without waiting for a round trip through the result thread. How long a task runs is a moving
//! average of what the workers report; until one is timed, tasks are taken to be long, and a
//! backlog of long tasks waits for the first worker that frees up.

use std::time::Duration;

use super::workers::{State, Worker};

const PREFETCH_WINDOW: Duration = Duration::from_millis(2);
/// The most tasks a worker holds at once (running and waiting in its inbox).
const MAX_PREFETCH: usize = 256;

impl State {
    /// The busy worker to give the next task in advance, if one should get it: the least
    /// loaded among those `usable`, the one given a task the longest ago first.
    pub(super) fn prefetch_to(&self, usable: &dyn Fn(&Worker) -> bool) -> Option<usize> {
        let live = self.workers.iter().filter(|w| usable(w)).count();
        if self.backlog.len() <= live {
            return None;
        }
        let depth = self.task_us.map_or(1, |us| {
            let fits = PREFETCH_WINDOW.as_micros() as f64 / us.max(1.0);
            (1 + fits as usize).min(MAX_PREFETCH)
        });
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| usable(w) && w.outstanding.len() < depth)
            .min_by_key(|(_, w)| (w.outstanding.len(), w.last_given))
            .map(|(i, _)| i)
    }

    /// A task ran for `us` microseconds: the moving average follows.
    pub(super) fn timed(&mut self, us: u64) {
        self.task_us = Some(self.task_us.map_or(us as f64, |avg| 0.8 * avg + 0.2 * us as f64));
    }
}
