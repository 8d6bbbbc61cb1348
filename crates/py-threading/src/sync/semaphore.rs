//! [`Semaphore`]: a counter of free places (信号量). `acquire` takes one, sleeping while there is
//! none; `release` gives one back and wakes one sleeper. Like CPython's, it has no owner and no
//! ceiling: any thread may release, and one release too many makes one more place for good
//! (`Semaphore(3)` becomes 4). [`BoundedSemaphore`]: the same, but a release above the initial
//! value is refused with [`ReleasedTooManyTimes`], the counter left as it was.
//!
//! CPython's code, which this follows line by line (Lib/threading.py, 3.11):
//!
//! ```text
//! Semaphore.acquire(timeout):            Semaphore.release(n=1):
//!   with self._cond:                       with self._cond:
//!     while self._value == 0:                self._value += n
//!       ... self._cond.wait(timeout)         for i in range(n): self._cond.notify()
//!     self._value -= 1
//! ```

use std::ops::Deref;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::{Wait, lock, sleep};

/// `BoundedSemaphore.release()` called once too often: Python's `ValueError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ValueError: Semaphore released too many times (its initial value is {initial})")]
pub struct ReleasedTooManyTimes {
    /// The bounded semaphore's initial value, which its counter may not exceed.
    pub initial: usize,
}

/// What the semaphore's mutex guards.
#[derive(Debug, Default)]
struct State {
    /// Free places.
    value: usize,
    /// Threads inside `acquire`.
    waiters: usize,
    /// Wake-ups sent and not yet taken: a release wakes only waiters nobody is waking already.
    /// CPython's `Condition.notify` returns at once when nobody waits; std's `notify_one` is a
    /// `futex` call all the same, and a thread that gives a place back and takes it again at
    /// once would make one per pair while a woken waiter is still on its way.
    signalled: usize,
}

/// Python's `threading.Semaphore(value)`: a counter of free places with no ceiling.
#[derive(Debug)]
pub struct Semaphore {
    state: Mutex<State>,
    cond: Condvar,
}

impl Semaphore {
    /// A semaphore with `value` free places (Python's default is 1: a lock).
    pub fn new(value: usize) -> Semaphore {
        Semaphore { state: Mutex::new(State { value, ..State::default() }), cond: Condvar::new() }
    }

    /// `acquire()`: takes a place, sleeping while there is none. Always `true`, as in Python.
    pub fn acquire(&self) -> bool {
        self.take(Wait::Forever)
    }

    /// `acquire(timeout=t)`: `false` only after `t` has really passed with no place free.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.take(Wait::from_timeout(timeout))
    }

    /// `acquire(blocking=False)`: takes a place only if one is free now.
    pub fn try_acquire(&self) -> bool {
        self.take(Wait::Now)
    }

    /// `release()`: gives a place back, whoever calls it, and wakes one sleeper. Never refused:
    /// a release without an acquire adds a place for good.
    pub fn release(&self) {
        let _ = self.give(None);
    }

    /// The free places now (Python's `_value`): a snapshot, stale as soon as it is read.
    pub fn value(&self) -> usize {
        lock(&self.state).value
    }

    fn take(&self, wait: Wait) -> bool {
        let mut s = lock(&self.state);
        s.waiters += 1;
        let got = loop {
            if s.value > 0 {
                s.value -= 1;
                break true;
            }
            let (back, slept) = sleep(&self.cond, s, wait);
            s = back;
            if !slept {
                break false;
            }
            // Whatever woke us (a release, a timeout, nothing at all), we look again.
            s.signalled = s.signalled.saturating_sub(1);
        };
        s.waiters -= 1;
        s.signalled = s.signalled.min(s.waiters);
        got
    }

    /// Gives a place back (unless it would exceed `bound`) and wakes one sleeper, if one is
    /// asleep that no other release is waking already.
    fn give(&self, bound: Option<usize>) -> Result<(), ReleasedTooManyTimes> {
        let mut s = lock(&self.state);
        if let Some(initial) = bound
            && s.value >= initial
        {
            return Err(ReleasedTooManyTimes { initial });
        }
        s.value += 1;
        let wake = s.waiters > s.signalled;
        if wake {
            s.signalled += 1;
        }
        drop(s);
        if wake {
            self.cond.notify_one();
        }
        Ok(())
    }
}

/// Python's `threading.BoundedSemaphore(value)`: a [`Semaphore`] (it derefs to one, as the
/// Python class derives from it) whose counter may never exceed its initial value.
#[derive(Debug)]
pub struct BoundedSemaphore {
    semaphore: Semaphore,
    initial: usize,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free places, and never more.
    pub fn new(value: usize) -> BoundedSemaphore {
        BoundedSemaphore { semaphore: Semaphore::new(value), initial: value }
    }

    /// `release()`: gives a place back; refused, leaving the counter as it was, if every place
    /// is already free (Python's `ValueError: Semaphore released too many times`).
    pub fn release(&self) -> Result<(), ReleasedTooManyTimes> {
        self.semaphore.give(Some(self.initial))
    }
}

impl Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.semaphore
    }
}
