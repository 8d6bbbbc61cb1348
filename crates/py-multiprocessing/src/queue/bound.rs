//! bound — the bound of a queue made with `maxsize`: a counting semaphore of free places in
//! the shared block. `put` takes a place before it writes (sleeping on the count, a futex,
//! while there is none); `get` gives one back after it reads.

use std::sync::atomic::Ordering;

use super::Core;
use crate::shm::{Wait, futex_wait, futex_wake};

impl Core {
    pub(super) fn bounded(&self) -> bool {
        self.ctl().maxsize != 0
    }

    /// Takes a free place (if the queue is bounded), waiting as `wait` allows; false: none came.
    pub(super) fn acquire_slot(&self, wait: Wait) -> bool {
        let c = self.ctl();
        if !self.bounded() {
            return true;
        }
        loop {
            if c.free
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| f.checked_sub(1))
                .is_ok()
            {
                return true;
            }
            if wait.expired() {
                return false;
            }
            // Counted as a sleeper first; FUTEX_WAIT sleeps only if `free` is still 0, so a
            // place given back in between is never missed.
            c.free_waiters.fetch_add(1, Ordering::SeqCst);
            futex_wait(&c.free, 0, wait.remaining());
            c.free_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Gives a place back (if the queue is bounded), waking a sleeper in `put`.
    pub(super) fn release_slot(&self) {
        let c = self.ctl();
        if !self.bounded() {
            return;
        }
        c.free.fetch_add(1, Ordering::SeqCst);
        if c.free_waiters.load(Ordering::SeqCst) > 0 {
            futex_wake(&c.free, 1);
        }
    }
}
