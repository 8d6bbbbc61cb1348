//! [`Event`]: a flag that threads wait for (事件), a `Mutex<bool>` and a `Condvar`.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::lock;

/// Python's `threading.Event()`: a flag, initially false, that threads wait for.
#[derive(Debug, Default)]
pub struct Event {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Event {
    pub fn new() -> Event {
        Event::default()
    }

    pub fn is_set(&self) -> bool {
        *lock(&self.flag)
    }

    /// `set()`: raises the flag and wakes every thread waiting for it. Threads that call `wait`
    /// afterwards return at once, until `clear`.
    pub fn set(&self) {
        *lock(&self.flag) = true;
        self.cond.notify_all();
    }

    pub fn clear(&self) {
        *lock(&self.flag) = false;
    }

    /// `wait()`: sleeps until the flag is raised. Always `true`.
    pub fn wait(&self) -> bool {
        let flag = lock(&self.flag);
        let _flag = self.cond.wait_while(flag, |up| !*up).unwrap_or_else(PoisonError::into_inner);
        true
    }

    /// `wait(timeout)`: sleeps until the flag is raised or `timeout` has passed; returns the
    /// flag at the end: `false` when the time ran out first.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let flag = lock(&self.flag);
        let waited = self.cond.wait_timeout_while(flag, timeout, |up| !*up);
        *waited.unwrap_or_else(PoisonError::into_inner).0
    }
}
