//! How the work ends: `task_done` and `join` (every item put is finished), and 3.13's
//! `shutdown` (no more items will come; with the 3.14 rule on `join`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BaseQueue, Order, QueueError};
use crate::{Wait, lock, sleep};

impl<T, O: Order<T>> BaseQueue<T, O> {
    /// `task_done()`: one task taken with `get` is finished; when none is left unfinished, every
    /// `join` returns. More calls than items put: [`QueueError::TaskDoneTooManyTimes`].
    pub fn task_done(&self) -> Result<(), QueueError> {
        let mut state = lock(&self.mutex);
        if state.unfinished_tasks == 0 {
            return Err(QueueError::TaskDoneTooManyTimes);
        }
        state.unfinished_tasks -= 1;
        if state.unfinished_tasks == 0 {
            self.all_tasks_done.notify_all();
        }
        Ok(())
    }

    /// `join()`: blocks until every item put has been marked done with `task_done`.
    pub fn join(&self) {
        self.join_until(Wait::Forever);
    }

    /// `join()` with a limit (Python's `join` has none): `false` if tasks were still unfinished
    /// after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_until(Wait::from_timeout(timeout))
    }

    fn join_until(&self, wait: Wait) -> bool {
        let mut state = lock(&self.mutex);
        while state.unfinished_tasks > 0 {
            let (back, slept) = sleep(&self.all_tasks_done, state, wait);
            state = back;
            if !slept {
                return false;
            }
        }
        true
    }

    /// `shutdown(immediate)` (Python 3.13): from now on `put` fails with `ShutDown`, and `get`
    /// does once the queue is empty; every blocked caller wakes. With `immediate`, the items
    /// left are dropped at once and each counts as done (3.14), so `join` returns as soon as
    /// the tasks already taken are done. Returns how many items were dropped.
    pub fn shutdown(&self, immediate: bool) -> usize {
        let mut state = lock(&self.mutex);
        state.is_shutdown = true;
        let mut dropped = 0;
        if immediate {
            dropped = std::mem::take(&mut state.items).len();
            self.len.store(0, Ordering::Release);
            state.unfinished_tasks = state.unfinished_tasks.saturating_sub(dropped);
            self.all_tasks_done.notify_all();
        }
        self.not_empty.notify_all();
        self.not_full.notify_all();
        dropped
    }
}
