//! Only for speed, apart from the lesson (CPython does not do this): before `get` sleeps, it
//! watches the count of items for a moment with the lock let go.

use std::sync::atomic::Ordering;

use super::{BaseQueue, Order};

/// How many times an empty `get` looks at the count before it sleeps (a few microseconds).
const SPIN: usize = 2_000;

impl<T, O: Order<T>> BaseQueue<T, O> {
    /// In a steady stream the next item is usually a few hundred nanoseconds away, and a sleep
    /// and a wake-up (two futex calls, a context switch) cost several microseconds each: this is
    /// where Rust's extra speed on a busy queue comes from. Bounded: once per `get`.
    pub(super) fn spin_until_an_item(&self) {
        for _ in 0..SPIN {
            if self.len.load(Ordering::Acquire) > 0 {
                break;
            }
            std::hint::spin_loop();
        }
    }
}
