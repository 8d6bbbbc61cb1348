//! sync — Python's `threading.Semaphore`, `BoundedSemaphore` and `Event`, built on std's `Mutex`
//! and `Condvar` the way CPython builds them on its `Condition(Lock())`.
//!
//! A waiter sleeps in `Condvar::wait`, i.e. in a futex: `ps -L` shows it in state `S` with
//! `wchan` `futex_do_wait` (or `futex_wait_queue` on older kernels), using no CPU.
//!
//! A `Condvar` may wake a thread for nothing (a spurious wake-up), so every wait re-checks its
//! condition in a loop, and a timed wait keeps its own deadline.

mod event;
mod semaphore;

pub use event::Event;
pub use semaphore::{BoundedSemaphore, ReleasedTooManyTimes, Semaphore};

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: the state behind it stays valid whatever a panicking thread
/// was doing, since every change is a single assignment.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
