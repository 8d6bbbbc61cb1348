//! result — `AsyncResult`, what `apply_async` returns (Python's `AsyncResult`): a slot the
//! result thread fills once, after the callback ([`Job::finish`]), for any number of waiters.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PoolError;
use super::task::panic_message;
use common::report;

/// Called with a task's result, in the parent's result thread (Python's `callback`).
pub type Callback = Box<dyn FnOnce(&Value) + Send + 'static>;
/// Called with a task's error, in the parent's result thread (`error_callback`).
pub type ErrorCallback = Box<dyn FnOnce(&PoolError) + Send + 'static>;

/// What a job ends with: the worker's answer as it came (a task's result as JSON, a chunk of
/// `map`'s results as their encoded list), or an error.
pub(super) type Answer = Result<Vec<u8>, PoolError>;

pub(super) struct Slot {
    pub id: u64,
    pub task: &'static str,
    /// The pid of the worker the job was last given to; 0 before that.
    pub pid: AtomicI32,
    value: Mutex<SlotValue>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotValue {
    answer: Option<Answer>,
    /// Threads asleep in `wait`: `set` wakes them only if there are any.
    waiting: usize,
}

impl Slot {
    pub(super) fn new(id: u64, task: &'static str) -> Arc<Slot> {
        let value = Mutex::new(SlotValue::default());
        Arc::new(Slot { id, task, pid: AtomicI32::new(0), value, ready: Condvar::new() })
    }

    fn set(&self, answer: Answer) {
        let mut value = lock(&self.value);
        value.answer = Some(answer);
        if value.waiting > 0 {
            self.ready.notify_all();
        }
    }

    /// Waits until the answer is set, or `deadline` passes (`None` then); `take` takes it out.
    pub(super) fn wait(&self, deadline: Option<Instant>, take: bool) -> Option<Answer> {
        let unset = |value: &mut SlotValue| value.answer.is_none();
        let mut value = lock(&self.value);
        value.waiting += 1;
        value = match deadline {
            None => self.ready.wait_while(value, unset).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let waited = self.ready.wait_timeout_while(value, left, unset);
                waited.unwrap_or_else(|e| e.into_inner()).0
            }
        };
        value.waiting -= 1;
        if take { value.answer.take() } else { value.answer.clone() }
    }

    /// A task's answer read as its JSON value.
    fn decode(&self, answer: &Answer) -> Result<Value, PoolError> {
        let bytes = answer.as_ref().map_err(Clone::clone)?;
        serde_json::from_slice(bytes).map_err(|e| {
            PoolError::Broken(format!("a worker's answer to a job of {}: {e}", self.task))
        })
    }
}

/// The result of a task submitted with `apply_async` (Python's `AsyncResult`), to ask whether
/// it is done and to wait on; a clone is another handle on the same result.
#[derive(Clone)]
pub struct AsyncResult {
    pub(super) slot: Arc<Slot>,
}

impl fmt::Debug for AsyncResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Slot { id, task, .. } = *self.slot;
        write!(f, "<AsyncResult job={id} task={task} ready={}>", self.ready())
    }
}

impl AsyncResult {
    /// Waits for the result: the task's value, or its error.
    pub fn get(&self) -> Result<Value, PoolError> {
        self.slot.wait(None, false).map_or(Err(PoolError::Timeout), |a| self.slot.decode(&a))
    }

    /// Like [`AsyncResult::get`], waiting at most `timeout`: [`PoolError::Timeout`] after that
    /// (the task goes on; ask again later).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Value, PoolError> {
        let deadline = Instant::now().checked_add(timeout);
        self.slot.wait(deadline, false).map_or(Err(PoolError::Timeout), |a| self.slot.decode(&a))
    }

    /// Whether the task has finished (with a value or an error).
    pub fn ready(&self) -> bool {
        lock(&self.slot.value).answer.is_some()
    }

    /// Whether the task finished without error; [`PoolError::NotReady`] before it finished.
    pub fn successful(&self) -> Result<bool, PoolError> {
        let value = lock(&self.slot.value);
        value.answer.as_ref().map(|a| self.slot.decode(a).is_ok()).ok_or(PoolError::NotReady)
    }

    /// The pid of the worker the task was given to (the last one, if it was handed on after
    /// its first worker died before starting it); `None` while it waits.
    pub fn pid(&self) -> Option<i32> {
        Some(self.slot.pid.load(Ordering::SeqCst)).filter(|&pid| pid != 0)
    }
}

/// A job the parent waits for: its slot, and what to call when it ends.
pub(super) struct Job {
    pub slot: Arc<Slot>,
    pub callback: Option<Callback>,
    pub error_callback: Option<ErrorCallback>,
    /// A chunk of `map`: the jobs of all its map's chunks.
    pub chunks: Option<Range<u64>>,
}

impl Job {
    /// Runs the job's callback (in the result thread, outside the pool's lock), then fills its
    /// slot, so that `get` returns only after the callback, as in Python.
    pub(super) fn finish(self, answer: Answer) {
        let Job { slot, callback, error_callback, .. } = self;
        if callback.is_some() || error_callback.is_some() {
            let seen = slot.decode(&answer);
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &seen {
                Ok(value) => callback.map(|cb| cb(value)),
                Err(error) => error_callback.map(|cb| cb(error)),
            }));
            if let Err(panic) = called {
                let (who, id, why) = (report::who(), slot.id, panic_message(panic.as_ref()));
                report::write_stderr(&format!(
                    "{who}: a pool callback of job {id} panicked: {why}"
                ));
            }
        }
        slot.set(answer);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
