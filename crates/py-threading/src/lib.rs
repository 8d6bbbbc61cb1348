//! py-threading — what Python's `threading` and `queue` modules give and std does not, on std's
//! `Mutex` and `Condvar`, as CPython builds them on its lock.
//!
//! - [`sync`]: `Semaphore`, `BoundedSemaphore` and `Event`.
//! - [`queue`]: the `queue` module, one mutex and three conditions.
//! - [`Wait`]: Python's `block` and `timeout` as one value (`py-multiprocessing` waits with it too).
//!
//! A library, not a demo: `semaphore`, `event`, `thread-queue` and others use it. Threads
//! themselves are std's (`common::threads::named` names them).

pub mod queue;
pub mod sync;
mod wait;

pub use wait::Wait;
use wait::{lock, sleep};
