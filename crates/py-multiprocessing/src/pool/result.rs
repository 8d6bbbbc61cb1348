//! result — `AsyncResult`, what `apply_async` and `map_async` return (Python's `AsyncResult`):
//! a slot the result-handler thread fills once, and that any number of threads may wait on.
//! A callback runs in the handler thread, before the slot is filled, as in Python.

use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PoolError;
use super::task::panic_message;
use common::report;

/// Called with a task's result, in the parent's result-handler thread (Python's `callback`).
pub type Callback = Box<dyn FnOnce(&Value) + Send + 'static>;
/// Called with a task's error, in the parent's result-handler thread (`error_callback`).
pub type ErrorCallback = Box<dyn FnOnce(&PoolError) + Send + 'static>;

pub(super) struct Slot {
    pub id: u64,
    pub task: &'static str,
    /// The pid of the worker the task was last given to; 0 before that.
    pub pid: AtomicI32,
    value: Mutex<SlotValue>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotValue {
    outcome: Option<Result<Value, PoolError>>,
    /// Threads asleep in `get`: the handler wakes them only if there are any.
    waiting: usize,
}

impl Slot {
    pub(super) fn new(id: u64, task: &'static str) -> Arc<Slot> {
        let value = Mutex::new(SlotValue::default());
        Arc::new(Slot { id, task, pid: AtomicI32::new(0), value, ready: Condvar::new() })
    }

    pub(super) fn set(&self, outcome: Result<Value, PoolError>) {
        let mut value = lock(&self.value);
        if value.outcome.is_none() {
            value.outcome = Some(outcome);
        }
        if value.waiting > 0 {
            self.ready.notify_all();
        }
    }

    /// Waits until the outcome is set, or `deadline` passes (`None` then); `take` takes it out.
    fn wait(&self, deadline: Option<Instant>, take: bool) -> Option<Result<Value, PoolError>> {
        let mut value = lock(&self.value);
        loop {
            if value.outcome.is_some() {
                return if take { value.outcome.take() } else { value.outcome.clone() };
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return None;
            }
            value.waiting += 1;
            value = match left {
                None => self.ready.wait(value).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.ready.wait_timeout(value, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            value.waiting -= 1;
        }
    }
}
/// The result of a task submitted with `apply_async` or `map_async` (Python's `AsyncResult`):
/// a handle that can be asked whether the task is done and waited on. Cloning it gives another
/// handle on the same result.
#[derive(Clone)]
pub struct AsyncResult {
    pub(super) slot: Arc<Slot>,
}

impl fmt::Debug for AsyncResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<AsyncResult job={} task={} ready={}>",
            self.slot.id,
            self.slot.task,
            self.ready()
        )
    }
}

impl AsyncResult {
    /// Waits for the result: the task's value, or its error.
    pub fn get(&self) -> Result<Value, PoolError> {
        self.slot.wait(None, false).unwrap_or(Err(PoolError::Timeout))
    }

    /// Like [`AsyncResult::get`], waiting at most `timeout`: [`PoolError::Timeout`] after that
    /// (the task goes on; ask again later).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Value, PoolError> {
        let deadline = Instant::now().checked_add(timeout);
        self.slot.wait(deadline, false).unwrap_or(Err(PoolError::Timeout))
    }

    /// Waits for the result and takes it out of the handle: for a caller that holds the only
    /// handle (a large `map` is not copied).
    pub(super) fn take(self) -> Result<Value, PoolError> {
        self.slot.wait(None, true).unwrap_or(Err(PoolError::Timeout))
    }

    /// Whether the task has finished (with a value or an error).
    pub fn ready(&self) -> bool {
        lock(&self.slot.value).outcome.is_some()
    }

    /// Whether the task finished without error; [`PoolError::NotReady`] before it finished.
    pub fn successful(&self) -> Result<bool, PoolError> {
        match lock(&self.slot.value).outcome.as_ref() {
            Some(outcome) => Ok(outcome.is_ok()),
            None => Err(PoolError::NotReady),
        }
    }

    /// The pid of the worker the task was given to (the last one, if it was handed on after
    /// its first worker died before starting it); `None` while it waits, and for `map`.
    pub fn pid(&self) -> Option<i32> {
        match self.slot.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A finished job whose callback must run (outside the lock) before its result is set.
pub(super) struct Completion {
    pub slot: Arc<Slot>,
    pub outcome: Result<Value, PoolError>,
    pub callback: Option<Callback>,
    pub error_callback: Option<ErrorCallback>,
}

impl Completion {
    pub(super) fn run(self) {
        let Completion { slot, outcome, callback, error_callback } = self;
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &outcome {
            Ok(value) => callback.map(|cb| cb(value)),
            Err(error) => error_callback.map(|cb| cb(error)),
        }));
        if let Err(panic) = called {
            report::write_stderr(&format!(
                "{}: a pool callback of job {} panicked: {}",
                report::who(),
                slot.id,
                panic_message(panic.as_ref())
            ));
        }
        slot.set(outcome);
    }
}
