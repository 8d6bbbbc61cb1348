//! queue — Python's `queue` module for threads: [`Queue`] (FIFO, 队列), [`LifoQueue`] (堆栈) and
//! [`PriorityQueue`] (优先级队列), with `maxsize`, blocking and timed `put`/`get`, `task_done`
//! and `join`, and 3.13's `shutdown`.
//!
//! Built as CPython builds it (`Lib/queue.py`): **one mutex and three conditions** on it.
//! - `not_empty`: a `get` that finds nothing waits here; every `put` wakes one waiter;
//! - `not_full`: a `put` into a full bounded queue waits here; every `get` wakes one waiter;
//! - `all_tasks_done`: `join` waits here until the count of unfinished tasks (items put and not
//!   yet marked done with `task_done`) is 0.
//!
//! The three kinds differ only in which item leaves first: the order is a type parameter
//! ([`Fifo`], [`Lifo`], [`Priority`]), as CPython's subclasses override only `_put` and `_get`.
//! Everything here is shared memory: an item moves by a pointer's copy, no pipe, no encoding,
//! unlike the process queue of `py_multiprocessing::queue`.
//!
//! Why not std's `mpsc`? A channel has no LIFO and no priority order, no `task_done`/`join`,
//! no `qsize`, and only one consumer (`Receiver` is not `Clone`); `sync_channel(n)` is its
//! bounded queue, and dropping every `Sender` is its shutdown (`recv` then fails).
//!
//! Errors are Python's exceptions: [`QueueError::Full`], [`QueueError::Empty`],
//! [`QueueError::ShutDown`] (3.13), and [`QueueError::TaskDoneTooManyTimes`] (a `ValueError`
//! in Python). A refused `put` hands the item back in its [`PutError`].
//!
//! Shutdown (3.13, with the 3.14 rule on `join`): after `shutdown()`, every `put` fails with
//! `ShutDown`; `get` goes on returning the items left and fails with `ShutDown` once the queue is
//! empty, and every blocked `put` or `get` wakes to see it. `shutdown(immediate=true)` also drops
//! the items left, and counts each dropped item as done, so that `join` returns when the tasks
//! taken before are done too.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many times an empty `get` looks at the count before it sleeps (a few microseconds).
const SPIN: usize = 2_000;

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
#[derive(Clone, PartialEq, Eq)]
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

impl<T> std::fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Which item leaves first: what CPython's `_put`, `_get` and `_qsize` decide.
pub trait Order<T>: Default {
    fn push(&mut self, item: T);
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// First in, first out (`queue.Queue`): a `VecDeque`.
#[derive(Debug)]
pub struct Fifo<T>(VecDeque<T>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}

impl<T> Order<T> for Fifo<T> {
    fn push(&mut self, item: T) {
        self.0.push_back(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out (`queue.LifoQueue`, a stack): a `Vec`.
#[derive(Debug)]
pub struct Lifo<T>(Vec<T>);

impl<T> Default for Lifo<T> {
    fn default() -> Self {
        Lifo(Vec::new())
    }
}

impl<T> Order<T> for Lifo<T> {
    fn push(&mut self, item: T) {
        self.0.push(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Lowest first (`queue.PriorityQueue`, a binary heap as `heapq`): items are usually
/// `(priority, data)` tuples, compared as Python compares them, field by field.
#[derive(Debug)]
pub struct Priority<T: Ord>(BinaryHeap<Reverse<T>>);

impl<T: Ord> Default for Priority<T> {
    fn default() -> Self {
        Priority(BinaryHeap::new())
    }
}

impl<T: Ord> Order<T> for Priority<T> {
    fn push(&mut self, item: T) {
        self.0.push(Reverse(item));
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|Reverse(item)| item)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What the mutex guards.
#[derive(Debug)]
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

/// A thread queue with the order `O`: see the module documentation. Share it with `Arc` or a
/// borrow in `thread::scope`.
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
pub type Queue<T> = BaseQueue<T, Fifo<T>>;
/// `queue.LifoQueue`: last in, first out.
pub type LifoQueue<T> = BaseQueue<T, Lifo<T>>;
/// `queue.PriorityQueue`: lowest first.
pub type PriorityQueue<T> = BaseQueue<T, Priority<T>>;

/// How long a call may wait: Python's `block` and `timeout` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Never,
    At(Instant),
    NoWait,
}

impl Deadline {
    fn new(block: bool, timeout: Option<Duration>) -> Deadline {
        match (block, timeout) {
            (false, _) => Deadline::NoWait,
            (true, None) => Deadline::Never,
            (true, Some(t)) => Instant::now().checked_add(t).map_or(Deadline::Never, Deadline::At),
        }
    }
}

impl<T, O: Order<T>> Default for BaseQueue<T, O> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<T, O: Order<T>> BaseQueue<T, O> {
    /// A queue of at most `maxsize` items; 0 means no bound, as in Python.
    pub fn new(maxsize: usize) -> Self {
        BaseQueue {
            maxsize,
            mutex: Mutex::new(State {
                items: O::default(),
                unfinished_tasks: 0,
                is_shutdown: false,
                waiting_putters: 0,
                waiting_getters: 0,
            }),
            len: AtomicUsize::new(0),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_tasks_done: Condvar::new(),
            _items: std::marker::PhantomData,
        }
    }

    /// The state, even if a thread panicked while holding the lock: every change to it is made
    /// in one step, so a panic never leaves it half changed.
    fn lock(&self) -> MutexGuard<'_, State<O>> {
        self.mutex.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `cond` until `deadline`; `false` once the deadline has passed.
    fn wait<'a>(
        cond: &Condvar,
        guard: MutexGuard<'a, State<O>>,
        deadline: Deadline,
    ) -> (MutexGuard<'a, State<O>>, bool) {
        match deadline {
            Deadline::NoWait => (guard, false),
            Deadline::Never => (cond.wait(guard).unwrap_or_else(|e| e.into_inner()), true),
            Deadline::At(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (guard, false);
                }
                let (guard, _) = cond.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner());
                (guard, true)
            }
        }
    }

    /// The bound given at creation (0: none).
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// Items in the queue now (a snapshot, as in Python: another thread may change it at once).
    pub fn qsize(&self) -> usize {
        self.lock().items.len()
    }

    /// True if the queue holds no item now (a snapshot).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// True if a bounded queue holds `maxsize` items now (a snapshot).
    pub fn full(&self) -> bool {
        self.maxsize > 0 && self.qsize() >= self.maxsize
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.lock().unfinished_tasks
    }

    /// Threads blocked in `put` right now, waiting for a free place.
    pub fn waiting_putters(&self) -> usize {
        self.lock().waiting_putters
    }

    /// True once [`BaseQueue::shutdown`] was called.
    pub fn is_shutdown(&self) -> bool {
        self.lock().is_shutdown
    }

    /// `put(item, block, timeout)`: waits (as `block` and `timeout` allow) for a free place, then
    /// adds the item, counts one more unfinished task and wakes one waiting `get`.
    pub fn put_with(
        &self,
        item: T,
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<(), PutError<T>> {
        let deadline = Deadline::new(block, timeout);
        let mut state = self.lock();
        loop {
            if state.is_shutdown {
                return Err(PutError { error: QueueError::ShutDown, item });
            }
            if self.maxsize == 0 || state.items.len() < self.maxsize {
                break;
            }
            // Asleep on `not_full` (the lock let go) until a `get` notifies it.
            state.waiting_putters += 1;
            let (back, waited) = Self::wait(&self.not_full, state, deadline);
            state = back;
            state.waiting_putters -= 1;
            if !waited {
                return Err(PutError { error: QueueError::Full, item });
            }
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
        self.put_with(item, true, None)
    }

    /// `put(item, timeout=t)`: [`QueueError::Full`] if no place frees up within `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_with(item, true, Some(timeout))
    }

    /// `put_nowait(item)`: [`QueueError::Full`] at once if there is no free place.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, false, None)
    }

    /// `get(block, timeout)`: waits (as allowed) for an item, takes it and wakes one waiting
    /// `put`. After `shutdown`, the items left still come out, then [`QueueError::ShutDown`].
    pub fn get_with(&self, block: bool, timeout: Option<Duration>) -> Result<T, QueueError> {
        let deadline = Deadline::new(block, timeout);
        let mut state = self.lock();
        let mut spun = false;
        loop {
            if let Some(item) = state.items.pop() {
                self.len.store(state.items.len(), Ordering::Release);
                if state.waiting_putters > 0 {
                    self.not_full.notify_one();
                }
                return Ok(item);
            }
            if state.is_shutdown {
                return Err(QueueError::ShutDown);
            }
            if !spun && deadline != Deadline::NoWait {
                spun = true;
                drop(state);
                self.spin_until_an_item();
                state = self.lock();
                continue;
            }
            // Asleep on `not_empty` (the lock let go) until a `put` notifies it.
            state.waiting_getters += 1;
            let (back, waited) = Self::wait(&self.not_empty, state, deadline);
            state = back;
            state.waiting_getters -= 1;
            if !waited {
                return Err(QueueError::Empty);
            }
        }
    }

    /// Before `get` sleeps, it watches the count for a moment with the lock let go: in a steady
    /// stream the next item is usually a few hundred nanoseconds away, and a sleep and a wake-up
    /// (two futex calls, a context switch) cost several microseconds each. Only speed: CPython
    /// does not do this; it is where Rust's extra speed on a busy queue comes from, and it is
    /// bounded (once per call).
    fn spin_until_an_item(&self) {
        for _ in 0..SPIN {
            if self.len.load(Ordering::Acquire) > 0 {
                break;
            }
            std::hint::spin_loop();
        }
    }

    /// `get()`: blocks until there is an item.
    pub fn get(&self) -> Result<T, QueueError> {
        self.get_with(true, None)
    }

    /// `get(timeout=t)`: [`QueueError::Empty`] if no item comes within `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, QueueError> {
        self.get_with(true, Some(timeout))
    }

    /// `get_nowait()`: [`QueueError::Empty`] at once if there is no item.
    pub fn get_nowait(&self) -> Result<T, QueueError> {
        self.get_with(false, None)
    }

    /// `task_done()`: one task taken with `get` is finished; when none is left unfinished, every
    /// `join` returns. More calls than items put: [`QueueError::TaskDoneTooManyTimes`].
    pub fn task_done(&self) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.unfinished_tasks == 0 {
            return Err(QueueError::TaskDoneTooManyTimes);
        }
        state.unfinished_tasks -= 1;
        if state.unfinished_tasks == 0 {
            self.all_tasks_done.notify_all();
        }
        Ok(())
    }

    /// `join()`: blocks until every item put has been marked done with `task_done`.
    pub fn join(&self) {
        let mut state = self.lock();
        while state.unfinished_tasks > 0 {
            state = self.all_tasks_done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// `join()` with a limit (Python's `join` has none): `false` if tasks were still unfinished
    /// after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let deadline = Deadline::new(true, Some(timeout));
        let mut state = self.lock();
        while state.unfinished_tasks > 0 {
            let (back, waited) = Self::wait(&self.all_tasks_done, state, deadline);
            state = back;
            if !waited {
                return state.unfinished_tasks == 0;
            }
        }
        true
    }

    /// `shutdown(immediate)` (Python 3.13): from now on `put` fails with `ShutDown`, and `get`
    /// does once the queue is empty; every blocked caller wakes. With `immediate`, the items
    /// left are dropped at once and each counts as done (3.14), so `join` returns as soon as
    /// the tasks already taken are done. Returns how many items were dropped.
    pub fn shutdown(&self, immediate: bool) -> usize {
        let mut state = self.lock();
        state.is_shutdown = true;
        let mut dropped = 0;
        if immediate {
            while state.items.pop().is_some() {
                self.len.store(state.items.len(), Ordering::Release);
                dropped += 1;
                state.unfinished_tasks = state.unfinished_tasks.saturating_sub(1);
            }
            self.all_tasks_done.notify_all();
        }
        self.not_empty.notify_all();
        self.not_full.notify_all();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    const SHORT: Duration = Duration::from_millis(20);

    #[test]
    fn the_three_orders_are_pythons() {
        let fifo = Queue::new(0);
        let lifo = LifoQueue::new(0);
        for i in [1, 3, 2] {
            fifo.put(i).unwrap();
            lifo.put(i).unwrap();
        }
        let drain = |get: &dyn Fn() -> Result<i32, QueueError>| {
            std::iter::from_fn(|| get().ok()).collect::<Vec<_>>()
        };
        assert_eq!(drain(&|| fifo.get_nowait()), [1, 3, 2]);
        assert_eq!(drain(&|| lifo.get_nowait()), [2, 3, 1]);
        let priority = PriorityQueue::new(0);
        for item in [(2, "p2"), (1, "p1"), (3, "p3")] {
            priority.put(item).unwrap();
        }
        let out: Vec<&str> =
            std::iter::from_fn(|| priority.get_nowait().ok()).map(|p| p.1).collect();
        assert_eq!(out, ["p1", "p2", "p3"]);
    }

    #[test]
    fn full_and_empty_come_at_once_without_blocking_and_after_a_timeout_with_it() {
        let q = Queue::new(1);
        q.put("a").unwrap();
        assert!(q.full());
        let refused = q.put_nowait("b").unwrap_err();
        assert_eq!((refused.error, refused.item), (QueueError::Full, "b"));
        assert_eq!(q.put_timeout("c", SHORT).unwrap_err().error, QueueError::Full);
        assert_eq!(q.get().unwrap(), "a");
        assert_eq!(q.get_nowait(), Err(QueueError::Empty));
        assert_eq!(q.get_timeout(SHORT), Err(QueueError::Empty));
    }

    #[test]
    fn task_done_once_too_often_is_an_error_and_join_waits_for_the_last_one() {
        let q = Arc::new(Queue::new(0));
        q.put(1).unwrap();
        q.put(2).unwrap();
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                for _ in 0..2 {
                    q.get().unwrap();
                    q.task_done().unwrap();
                }
            })
        };
        q.join();
        assert_eq!(q.unfinished_tasks(), 0);
        worker.join().unwrap();
        assert_eq!(q.task_done(), Err(QueueError::TaskDoneTooManyTimes));
        assert!(q.join_timeout(SHORT));
        q.put(3).unwrap();
        assert!(!q.join_timeout(SHORT));
    }

    #[test]
    fn three_producers_and_two_consumers_lose_nothing_repeat_nothing_and_keep_each_order() {
        const EACH: usize = 10_000;
        let q = Queue::new(64);
        let taken = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let producers: Vec<_> = (0..3)
                .map(|p| {
                    let q = &q;
                    s.spawn(move || (0..EACH).for_each(|i| q.put((p, i)).unwrap()))
                })
                .collect();
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while let Ok(item) = q.get() {
                        mine.push(item);
                        q.task_done().unwrap();
                    }
                    taken.lock().unwrap().push(mine);
                });
            }
            // join counts only what was put: first let every producer finish putting.
            producers.into_iter().for_each(|p| p.join().unwrap());
            q.join();
            q.shutdown(false);
        });
        let taken = taken.into_inner().unwrap();
        let all: HashSet<(usize, usize)> = taken.iter().flatten().copied().collect();
        assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 3 * EACH);
        assert_eq!(all.len(), 3 * EACH);
        // Each consumer saw each producer's items in the order they were put.
        for mine in &taken {
            for p in 0..3 {
                let seq: Vec<usize> = mine.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn shutdown_lets_getters_drain_then_says_shutdown_and_refuses_puts() {
        let q = Queue::new(0);
        q.put(1).unwrap();
        q.put(2).unwrap();
        assert_eq!(q.shutdown(false), 0);
        assert_eq!(q.put(3).unwrap_err().error, QueueError::ShutDown);
        assert_eq!(q.get(), Ok(1));
        assert_eq!(q.get(), Ok(2));
        assert_eq!(q.get(), Err(QueueError::ShutDown));
    }

    #[test]
    fn an_immediate_shutdown_drops_the_rest_counts_them_done_and_wakes_a_blocked_getter() {
        let q = Queue::new(0);
        for i in 0..5 {
            q.put(i).unwrap();
        }
        assert_eq!(q.get(), Ok(0));
        assert_eq!(q.shutdown(true), 4);
        // The task taken before is not done yet: join waits for it alone.
        assert_eq!(q.unfinished_tasks(), 1);
        q.task_done().unwrap();
        assert!(q.join_timeout(SHORT));
        // A getter on an empty queue, blocked or about to be, ends with ShutDown, not a hang.
        let empty = Queue::<i32>::new(0);
        std::thread::scope(|s| {
            let getter = s.spawn(|| empty.get());
            empty.shutdown(false);
            assert_eq!(getter.join().unwrap(), Err(QueueError::ShutDown));
        });
    }
}
