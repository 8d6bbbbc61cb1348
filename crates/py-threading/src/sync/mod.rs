//! sync — Python's `threading.Semaphore`, `BoundedSemaphore` and `Event`, built on std's `Mutex`
//! and `Condvar` the way CPython builds them on its `Condition(Lock())`.
//!
//! A waiter sleeps in `Condvar::wait`, i.e. in a futex: `ps -L` shows it in state `S` with
//! `wchan` `futex_do_wait` (or `futex_wait_queue` on older kernels), using no CPU.

mod event;
mod semaphore;

pub use event::Event;
pub use semaphore::{BoundedSemaphore, ReleasedTooManyTimes, Semaphore};
