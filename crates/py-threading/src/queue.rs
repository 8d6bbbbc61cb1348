//! queue — Python's `queue` module for threads: [`Queue`] (FIFO, 队列), [`LifoQueue`] (堆栈) and
//! [`PriorityQueue`] (优先级队列), with `maxsize`, blocking and timed `put`/`get`, `task_done`
//! and `join`, and 3.13's `shutdown`.
//!
//! Built as CPython builds it (`Lib/queue.py`): **one mutex and three conditions** on it.
//! - `not_empty`: a `get` that finds nothing waits here; every `put` wakes one waiter;
//! - `not_full`: a `put` into a full bounded queue waits here; every `get` wakes one waiter;
//! - `all_tasks_done`: `join` waits here until every item put is marked done (`task_done`).
//!
//! The three kinds differ only in which item leaves first ([`Order`]). An item moves by a
//! pointer's copy in shared memory: no pipe, no encoding, unlike `py_multiprocessing::queue`.
//!
//! Why not std's `mpsc`? It has no LIFO or priority order, no `task_done`/`join`, no `qsize`,
//! and one consumer (`Receiver` is not `Clone`); `sync_channel(n)` is its bounded queue, and
//! dropping every `Sender` its shutdown. How the work ends is in `queue/done.rs`; a getter's
//! short spin before it sleeps, only for speed, in `queue/spin.rs`.

mod done;
mod order;
mod spin;

pub use order::Order;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::{Wait, lock, sleep};

/// What Python's `queue` module raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// `put` without blocking, or after its timeout, found the queue full (`queue.Full`).
    #[error("queue.Full")]
    Full,
    /// `get` without blocking, or after its timeout, found the queue empty (`queue.Empty`).
    #[error("queue.Empty")]
    Empty,
    /// The queue was shut down (`queue.ShutDown`, Python 3.13).
    #[error("queue.ShutDown")]
    ShutDown,
    /// More `task_done` calls than items put (Python's `ValueError`).
    #[error("ValueError: task_done() called too many times")]
    TaskDoneTooManyTimes,
}

/// A refused `put`: why, and the item, given back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct PutError<T> {
    pub error: QueueError,
    pub item: T,
}

// By hand, so that any item may be refused, even one that cannot be printed (a boxed job).
impl<T> std::fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutError").field("error", &self.error).finish_non_exhaustive()
    }
}

/// What the mutex guards.
#[derive(Debug, Default)]
struct State<O> {
    items: O,
    /// Items put and not yet marked done (CPython's `unfinished_tasks`).
    unfinished_tasks: usize,
    is_shutdown: bool,
    /// Threads waiting in `put` for a free place, and in `get` for an item, right now. A
    /// wake-up is sent only when somebody waits: std's `Condvar::notify_one` always makes a
    /// `futex` system call, CPython's `Condition.notify` returns at once when nobody waits.
    waiting_putters: usize,
    waiting_getters: usize,
}

/// A thread queue with the order `O`. Share it with `Arc` or a borrow in `thread::scope`.
#[derive(Debug)]
pub struct BaseQueue<T, O: Order<T>> {
    maxsize: usize,
    mutex: Mutex<State<O>>,
    /// The number of items, also kept outside the mutex (written under it): what a getter
    /// that found the queue empty watches for a moment before it goes to sleep.
    len: AtomicUsize,
    not_empty: Condvar,
    not_full: Condvar,
    all_tasks_done: Condvar,
    _items: std::marker::PhantomData<fn(T) -> T>,
}

/// `queue.Queue`: first in, first out.
pub type Queue<T> = BaseQueue<T, VecDeque<T>>;
/// `queue.LifoQueue`: last in, first out.
pub type LifoQueue<T> = BaseQueue<T, Vec<T>>;
/// `queue.PriorityQueue`: lowest first.
pub type PriorityQueue<T> = BaseQueue<T, BinaryHeap<Reverse<T>>>;

impl<T, O: Order<T>> BaseQueue<T, O> {
    /// A queue of at most `maxsize` items; 0 means no bound, as in Python.
    pub fn new(maxsize: usize) -> Self {
        BaseQueue {
            maxsize,
            mutex: Mutex::new(State::default()),
            len: AtomicUsize::new(0),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_tasks_done: Condvar::new(),
            _items: std::marker::PhantomData,
        }
    }

    /// A snapshot, as in Python: another thread may change it at once.
    pub fn qsize(&self) -> usize {
        lock(&self.mutex).items.len()
    }

    /// A snapshot.
    pub fn full(&self) -> bool {
        self.maxsize > 0 && self.qsize() >= self.maxsize
    }

    pub fn unfinished_tasks(&self) -> usize {
        lock(&self.mutex).unfinished_tasks
    }

    /// Threads blocked in `put` now, waiting for a free place.
    pub fn waiting_putters(&self) -> usize {
        lock(&self.mutex).waiting_putters
    }

    /// `put(item, block, timeout)`: waits (as `block` and `timeout` allow) for a free place, then
    /// adds the item, counts one more unfinished task and wakes one waiting `get`.
    fn put_with(&self, item: T, wait: Wait) -> Result<(), PutError<T>> {
        let mut state = lock(&self.mutex);
        while !state.is_shutdown && self.maxsize > 0 && state.items.len() >= self.maxsize {
            // Asleep on `not_full` (the lock let go) until a `get` notifies it.
            state.waiting_putters += 1;
            let (back, waited) = sleep(&self.not_full, state, wait);
            state = back;
            state.waiting_putters -= 1;
            if !waited {
                return Err(PutError { error: QueueError::Full, item });
            }
        }
        if state.is_shutdown {
            return Err(PutError { error: QueueError::ShutDown, item });
        }
        state.items.push(item);
        self.len.store(state.items.len(), Ordering::Release);
        state.unfinished_tasks += 1;
        if state.waiting_getters > 0 {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    /// `put(item)`: blocks while the queue is full.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::Forever)
    }

    /// `put(item, timeout=t)`: [`QueueError::Full`] if no place frees up within `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::from_timeout(timeout))
    }

    /// `put_nowait(item)`: [`QueueError::Full`] at once if there is no free place.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::Now)
    }

    /// `get(block, timeout)`: waits (as allowed) for an item, takes it and wakes one waiting
    /// `put`. After `shutdown`, the items left still come out, then [`QueueError::ShutDown`].
    fn get_with(&self, wait: Wait) -> Result<T, QueueError> {
        let mut state = lock(&self.mutex);
        let mut spun = false;
        while state.items.is_empty() && !state.is_shutdown {
            if !spun && wait != Wait::Now {
                spun = true;
                drop(state);
                self.spin_until_an_item();
                state = lock(&self.mutex);
                continue;
            }
            // Asleep on `not_empty` (the lock let go) until a `put` notifies it.
            state.waiting_getters += 1;
            let (back, waited) = sleep(&self.not_empty, state, wait);
            state = back;
            state.waiting_getters -= 1;
            if !waited {
                return Err(QueueError::Empty);
            }
        }
        let Some(item) = state.items.pop() else { return Err(QueueError::ShutDown) };
        self.len.store(state.items.len(), Ordering::Release);
        if state.waiting_putters > 0 {
            self.not_full.notify_one();
        }
        Ok(item)
    }

    /// `get()`: blocks until there is an item.
    pub fn get(&self) -> Result<T, QueueError> {
        self.get_with(Wait::Forever)
    }

    /// `get(timeout=t)`: [`QueueError::Empty`] if no item comes within `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, QueueError> {
        self.get_with(Wait::from_timeout(timeout))
    }

    /// `get_nowait()`: [`QueueError::Empty`] at once if there is no item.
    pub fn get_nowait(&self) -> Result<T, QueueError> {
        self.get_with(Wait::Now)
    }
}
