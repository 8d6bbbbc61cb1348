//! handle — the rest of a queue's handle: the `_timeout` and `_nowait` forms of `put` and
//! `get`, frames the caller encoded itself, and the snapshots (`qsize`, `empty`, `full`).

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Core, Queue, QueueDescriptor, QueueError};
use crate::shm::Wait;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts `item`, waiting at most `timeout` for a free place; [`QueueError::Full`] after that.
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<(), QueueError> {
        self.put_json(item.borrow(), Wait::from_timeout(timeout))
    }

    /// Puts `item` only if there is a free place now; [`QueueError::Full`] otherwise.
    pub fn put_nowait(&self, item: impl Borrow<T>) -> Result<(), QueueError> {
        self.put_json(item.borrow(), Wait::Now)
    }

    /// Takes the oldest item, waiting at most `timeout`; [`QueueError::Empty`] after that.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, QueueError> {
        self.get_json(Wait::from_timeout(timeout))
    }

    /// Takes the oldest item only if there is one now; [`QueueError::Empty`] otherwise.
    pub fn get_nowait(&self) -> Result<T, QueueError> {
        self.get_json(Wait::Now)
    }

    /// Puts `body`, bytes the caller encoded, as one item's frame, with the same limit and
    /// guarantees as [`Queue::put`]; the queue does not look inside. Read it back with
    /// [`Queue::get_encoded`].
    pub fn put_encoded(&self, body: &[u8], wait: Wait) -> Result<(), QueueError> {
        self.core.put_frame(body, wait)
    }

    /// Takes the oldest item's frame as it is, undecoded.
    pub fn get_encoded(&self, wait: Wait) -> Result<Vec<u8>, QueueError> {
        self.core.get_frame(wait)
    }
}

impl<T> Queue<T> {
    pub(super) fn from_core(core: Core) -> Queue<T> {
        Queue { core: Arc::new(core), _items: PhantomData }
    }

    /// 0 for an unbounded queue.
    pub fn maxsize(&self) -> usize {
        self.core.ctl().maxsize as usize
    }

    /// In bytes of JSON.
    pub fn max_message(&self) -> usize {
        self.core.ctl().max_message as usize
    }

    /// In bytes (what `F_GETPIPE_SZ` said at creation).
    pub fn pipe_capacity(&self) -> usize {
        self.core.ctl().capacity as usize
    }

    /// Items put and not yet taken, now. A snapshot (Python: "not reliable").
    pub fn qsize(&self) -> usize {
        let c = self.core.ctl();
        c.puts.load(Ordering::SeqCst).wrapping_sub(c.gets.load(Ordering::SeqCst)) as usize
    }

    /// Whether the queue holds no item now (a snapshot).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue has no free place now (a snapshot). Always false when unbounded.
    pub fn full(&self) -> bool {
        self.core.bounded() && self.core.ctl().free.load(Ordering::SeqCst) == 0
    }

    /// Processes (or threads) asleep in `put` because the queue is full (a snapshot).
    pub fn waiting_putters(&self) -> usize {
        self.core.ctl().free_waiters.load(Ordering::SeqCst) as usize
    }

    /// By every process (wraps around at 2^32).
    pub fn total_taken(&self) -> u32 {
        self.core.ctl().gets.load(Ordering::SeqCst)
    }

    /// For `Process::pass_fds`.
    pub fn fds(&self) -> Vec<RawFd> {
        let d = self.descriptor();
        vec![d.read_fd, d.write_fd, d.control_fd]
    }

    /// The numbers that name this queue, for a child ([`Queue::from_descriptor`]).
    pub fn descriptor(&self) -> QueueDescriptor {
        self.core.descriptor()
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { core: self.core.clone(), _items: PhantomData }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.descriptor();
        let (max, r, w, c) = (self.maxsize(), d.read_fd, d.write_fd, d.control_fd);
        write!(f, "<Queue maxsize={max} pipe fds {r}<-{w} shared block fd {c}>")
    }
}
