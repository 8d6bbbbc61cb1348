//! event — [`ProcessEvent`], Python's `multiprocessing.Event`: one futex word.
//!
//! A flag in a shared block: `set` stores 1 and wakes every process sleeping on the word
//! (`FUTEX_WAKE`), `clear` stores 0, `wait` sleeps on the word while it is 0. A waiter killed in
//! its sleep simply leaves the kernel's wait queue: nobody else notices. CPython's is a
//! `Condition` over semaphores, whose `set` waits for each sleeper it counted to acknowledge its
//! wake-up: a waiter killed asleep makes a later `set` wait for an acknowledgement never sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{SharedDescriptor, SyncError, shared_handle};
use crate::shm::{Shareable, SharedBlock, Wait, futex_wait, futex_wake, random_id};

const EVENT_MAGIC: u64 = u64::from_be_bytes(*b"CDevent\x01");

#[repr(C)]
struct EventBlock {
    magic: u64,
    id: u64,
    /// 1 while the event is set: the futex word waiters sleep on.
    flag: AtomicU32,
}

// Safety: as for SemaphoreBlock: zeroed is valid, and the flag is an atomic.
unsafe impl Shareable for EventBlock {}

/// An event shared by processes. Clones are handles on the same event.
#[derive(Debug, Clone)]
pub struct ProcessEvent {
    block: Arc<SharedBlock<EventBlock>>,
}

impl ProcessEvent {
    /// An event whose flag is down.
    pub fn new() -> Result<ProcessEvent, SyncError> {
        let id = random_id();
        let block = SharedBlock::<EventBlock>::create(c"concurrency-event", |b| {
            // Safety: the block is fresh and not shared yet.
            unsafe {
                (*b).magic = EVENT_MAGIC;
                (*b).id = id;
            }
            Ok(())
        })?;
        Ok(ProcessEvent { block: Arc::new(block) })
    }

    fn flag(&self) -> &AtomicU32 {
        &self.block.get().flag
    }

    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::SeqCst) == 1
    }

    /// `set()`: raises the flag and wakes every process (and thread) waiting for it.
    pub fn set(&self) {
        self.flag().store(1, Ordering::SeqCst);
        futex_wake(self.flag(), i32::MAX);
    }

    pub fn clear(&self) {
        self.flag().store(0, Ordering::SeqCst);
    }

    /// `wait()`: sleeps (state `S`, in a futex) until the flag is raised. Always `true`.
    pub fn wait(&self) -> bool {
        self.wait_until(Wait::Forever)
    }

    /// `wait(timeout)`: the flag at the end: `false` when the time ran out first.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Wait::from_timeout(timeout))
    }

    fn wait_until(&self, wait: Wait) -> bool {
        while !self.is_set() {
            if wait.expired() {
                return false;
            }
            // Sleeps only while the word is still 0: a `set` between the check above and this
            // call makes it return at once.
            futex_wait(self.flag(), 0, wait.remaining());
        }
        true
    }
}

shared_handle!(ProcessEvent, EventBlock, "event", EVENT_MAGIC);
