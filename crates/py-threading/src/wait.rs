//! wait — how long a call may wait (Python's `block` and `timeout` arguments, as one value), and
//! the two helpers every primitive here waits with: a sleep on a `Condvar` that keeps to it, and
//! a lock that ignores poisoning.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Whether a wait may last for ever, until a moment, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Forever,
    Until(Instant),
    Now,
}

impl Wait {
    /// Until `timeout` from now (for ever if that moment cannot be represented).
    pub fn from_timeout(timeout: Duration) -> Wait {
        Instant::now().checked_add(timeout).map_or(Wait::Forever, Wait::Until)
    }

    /// Time left: `None` for ever, `Some(ZERO)` when it has passed.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Wait::Forever => None,
            Wait::Until(deadline) => Some(deadline.saturating_duration_since(Instant::now())),
            Wait::Now => Some(Duration::ZERO),
        }
    }

    /// True once the wait has run out (at once for [`Wait::Now`]).
    pub fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

/// Sleeps on `cond`, the lock let go, as `wait` allows; `false`, without sleeping, once it has
/// run out. A `Condvar` may wake a thread for nothing, so every caller looks again in a loop.
pub(crate) fn sleep<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    wait: Wait,
) -> (MutexGuard<'a, T>, bool) {
    match wait.remaining() {
        None => (cond.wait(guard).unwrap_or_else(PoisonError::into_inner), true),
        Some(left) if left.is_zero() => (guard, false),
        Some(left) => {
            (cond.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0, true)
        }
    }
}

/// Locks `m`, ignoring poisoning: every change to the state behind it is made in one step, so a
/// thread that panicked while holding it never left it half changed.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
