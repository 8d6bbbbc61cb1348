//! joinable — `JoinableQueue`: a [`Queue`] whose consumers say when each item is processed
//! (`task_done`), so that a producer can wait until everything it put is (`join`). Two counters
//! of the shared block do it: items put, and tasks done; `join` sleeps on the second (a futex)
//! until they are equal.
//!
//! A consumer killed after taking an item never marks it done, so `join` would wait for ever,
//! in Python too (hence `join_timeout`). `task_done` refuses more calls than items *taken* with
//! `get`, as the notes say (CPython only refuses more than items *put*).

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Core, DEFAULT_MAX_MESSAGE, Queue, QueueDescriptor, QueueError};
use crate::shm::{Wait, futex_wait, futex_wake};

/// Python's `multiprocessing.JoinableQueue`. Every `Queue` method works on it too (it derefs to
/// one).
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue of at most `maxsize` items (0: no limit but the pipe's capacity), each
    /// at most [`DEFAULT_MAX_MESSAGE`] bytes of JSON.
    pub fn new(maxsize: usize) -> Result<JoinableQueue<T>, QueueError> {
        let core = Core::create(maxsize, DEFAULT_MAX_MESSAGE, true)?;
        Ok(JoinableQueue { queue: Queue::from_core(core) })
    }

    /// Rebuilds the queue in a child (see [`Queue::from_descriptor`]).
    pub fn from_descriptor(d: QueueDescriptor) -> Result<JoinableQueue<T>, QueueError> {
        Ok(JoinableQueue { queue: Queue::from_core(Core::from_descriptor(d, true)?) })
    }
}

impl<T> JoinableQueue<T> {
    /// Items put and not yet marked done (a snapshot).
    pub fn unfinished(&self) -> usize {
        self.queue.core.unfinished() as usize
    }

    /// Items taken with `get` and not yet marked done (a snapshot): items being processed, or
    /// held by a consumer that died.
    pub fn in_progress(&self) -> usize {
        let c = self.queue.core.ctl();
        c.gets.load(Ordering::SeqCst).wrapping_sub(c.done.load(Ordering::SeqCst)) as usize
    }

    /// Marks one taken item as processed; more calls than items taken with `get` is an error
    /// ([`QueueError::TaskDoneTooManyTimes`], Python's `ValueError`).
    pub fn task_done(&self) -> Result<(), QueueError> {
        let c = self.queue.core.ctl();
        c.done
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |done| {
                (c.gets.load(Ordering::SeqCst) != done).then(|| done.wrapping_add(1))
            })
            .map_err(|_| QueueError::TaskDoneTooManyTimes)?;
        self.queue.core.wake_joiners_if_all_done();
        Ok(())
    }

    /// Blocks until every item ever put has been marked done; for ever if a consumer died
    /// holding one, as Python's `join`: prefer [`JoinableQueue::join_timeout`] where they may.
    pub fn join(&self) -> Result<(), QueueError> {
        self.join_wait(Wait::Forever)
    }

    /// Like [`JoinableQueue::join`], giving up after `timeout` with [`QueueError::Timeout`],
    /// which carries how many tasks are unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        self.join_wait(Wait::from_timeout(timeout))
    }

    fn join_wait(&self, wait: Wait) -> Result<(), QueueError> {
        let c = self.queue.core.ctl();
        loop {
            // Counted as a sleeper before looking, so that a task_done that finishes the last
            // task after our look wakes us; FUTEX_WAIT returns at once if `done` has moved.
            c.join_waiters.fetch_add(1, Ordering::SeqCst);
            let done = c.done.load(Ordering::SeqCst);
            let unfinished = c.puts.load(Ordering::SeqCst).wrapping_sub(done) as usize;
            if unfinished == 0 || wait.expired() {
                c.join_waiters.fetch_sub(1, Ordering::SeqCst);
                return match unfinished {
                    0 => Ok(()),
                    _ => Err(QueueError::Timeout { unfinished }),
                };
            }
            futex_wait(&c.done, done, wait.remaining());
            c.join_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Core {
    pub(super) fn unfinished(&self) -> u32 {
        let c = self.ctl();
        c.puts.load(Ordering::SeqCst).wrapping_sub(c.done.load(Ordering::SeqCst))
    }

    pub(super) fn wake_joiners_if_all_done(&self) {
        let c = self.ctl();
        if c.join_waiters.load(Ordering::SeqCst) > 0 && self.unfinished() == 0 {
            futex_wake(&c.done, i32::MAX);
        }
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<JoinableQueue unfinished={} {:?}>", self.unfinished(), self.queue)
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}
