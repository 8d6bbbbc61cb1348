//! spin — the queue's one speed-up, kept apart from its lesson (a reader that finds the pipe
//! empty sleeps in `poll(2)`): it first watches the count of items put for a few microseconds.
//! When items come quickly the next one is taken without a sleep and a wake-up, which the
//! writer would otherwise pay for inside its `write(2)`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Core;
use crate::shm::Wait;

/// How long a reader watches for an item before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// True if an item was put while we watched (read again); false: sleep in `poll(2)`. A change
/// of the count, not the count itself, so that an item counted by a writer that died before
/// writing it never keeps a reader spinning.
pub(super) fn before_poll(core: &Core, wait: Wait) -> bool {
    if wait == Wait::Now {
        return false;
    }
    let puts = &core.ctl().puts;
    let before = puts.load(Ordering::Acquire);
    let began = Instant::now();
    while began.elapsed() < SPIN {
        // Give the core away at once if another process wants it (the writer, perhaps).
        std::thread::yield_now();
        if puts.load(Ordering::Acquire) != before {
            return true;
        }
    }
    false
}
