//! rlock — Python's `threading.RLock` (递归锁): a lock its owner may take again, with an
//! owner and a count, on `parking_lot::ReentrantMutex`.
//!
//! CPython's `RLock` is exactly that: `<locked _thread.RLock object owner=140… count=2>`. Each
//! `acquire` by the owner adds one to the count, each `release` takes one away, and other
//! threads wait until the count is back to 0. `parking_lot`'s `ReentrantMutex` keeps a count
//! too but does not show it, so [`RLock`] keeps a copy for the demo to print, with the owner as
//! a [`ThreadId`].
//!
//! Owners: CPython records the owner's `get_ident()`, which it reuses after a thread ends;
//! `parking_lot` records the address of a thread-local variable, which a new thread can get
//! again when the C library reuses a dead thread's stack. A [`ThreadId`] is never reused (a
//! 64-bit counter), so [`RLock::owner`] always names the thread that really took it.
//!
//! A guard gives `&T`, never `&mut T`: the owner may hold several guards at once, and two
//! `&mut` to one value would be unsound. Put a `Cell` or `RefCell` inside to change the value.

use std::fmt;
use std::sync::Mutex;
use std::thread::ThreadId;

use parking_lot::{ReentrantMutex, ReentrantMutexGuard};

/// A recursive lock with an owner and a count (Python's `RLock`).
#[derive(Debug)]
pub struct RLock<T> {
    inner: ReentrantMutex<T>,
    /// The owner and the count as the demo shows them; changed only by the thread that holds
    /// `inner`, read by anyone.
    state: Mutex<Owner>,
}

/// Who owns an [`RLock`] and how many times it took it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub thread: Option<ThreadId>,
    pub count: usize,
}

impl<T> RLock<T> {
    pub const fn new(value: T) -> RLock<T> {
        RLock {
            inner: ReentrantMutex::new(value),
            state: Mutex::new(Owner { thread: None, count: 0 }),
        }
    }

    /// `acquire()`: waits until no other thread owns the lock; the owner gets it again at once.
    pub fn acquire(&self) -> RLockGuard<'_, T> {
        let guard = self.inner.lock();
        self.taken(guard)
    }

    /// `acquire(blocking=False)`: `None` if another thread owns the lock.
    pub fn try_acquire(&self) -> Option<RLockGuard<'_, T>> {
        self.inner.try_lock().map(|guard| self.taken(guard))
    }

    fn taken<'a>(&'a self, guard: ReentrantMutexGuard<'a, T>) -> RLockGuard<'a, T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.thread = Some(std::thread::current().id());
        state.count += 1;
        RLockGuard { lock: self, guard }
    }

    /// How many times the owner holds it (0: unlocked).
    pub fn count(&self) -> usize {
        self.owner().count
    }

    /// The owner and the count right now.
    pub fn owner(&self) -> Owner {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Python's repr: `<locked RLock owner=ThreadId(1) count=3>`, `<unlocked RLock owner=None
/// count=0>`.
impl<T> fmt::Display for RLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = self.owner();
        let word = if owner.count > 0 { "locked" } else { "unlocked" };
        match owner.thread {
            Some(id) => write!(f, "<{word} RLock owner={id:?} count={}>", owner.count),
            None => write!(f, "<{word} RLock owner=None count={}>", owner.count),
        }
    }
}

/// One level of an [`RLock`]: dropping it is `release()`. Only the owner can drop it, because
/// it cannot leave the owner's thread:
///
/// ```
/// use deadlock::rlock::RLock;
///
/// let lock = RLock::new("noodles");
/// let guard = lock.acquire();
/// std::thread::scope(|s| {
///     // Another thread cannot take it while the owner holds it...
///     s.spawn(|| assert!(lock.try_acquire().is_none()));
/// });
/// drop(guard); // ...and the owner releases it, in its own thread.
/// assert_eq!(lock.count(), 0);
/// ```
///
/// Python lets any thread call `release()` and raises `RuntimeError: cannot release
/// un-acquired lock` when it is not the owner; here the same mistake does not compile (E0277:
/// the guard "cannot be sent between threads safely"):
///
/// ```compile_fail,E0277
/// use deadlock::rlock::RLock;
///
/// let lock = RLock::new("noodles");
/// let guard = lock.acquire();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard)); // release() in another thread: refused by the compiler
/// });
/// ```
#[derive(Debug)]
pub struct RLockGuard<'a, T> {
    lock: &'a RLock<T>,
    guard: ReentrantMutexGuard<'a, T>,
}

impl<T> std::ops::Deref for RLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> Drop for RLockGuard<'_, T> {
    fn drop(&mut self) {
        // Runs before the field `guard` is dropped, so the count changes while the lock is held.
        let mut state = self.lock.state.lock().unwrap_or_else(|e| e.into_inner());
        state.count = state.count.saturating_sub(1);
        if state.count == 0 {
            state.thread = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_levels_count_up_to_three_and_back_to_zero() {
        let lock = RLock::new(());
        let one = lock.acquire();
        let two = lock.acquire();
        let three = lock.acquire();
        assert_eq!(lock.count(), 3);
        assert_eq!(lock.owner().thread, Some(std::thread::current().id()));
        assert!(lock.to_string().starts_with("<locked RLock owner=ThreadId("));
        drop(three);
        drop(two);
        assert_eq!(lock.count(), 1);
        drop(one);
        assert_eq!(lock.to_string(), "<unlocked RLock owner=None count=0>");
    }

    #[test]
    fn another_thread_waits_until_the_count_is_zero() {
        let lock = RLock::new(());
        let outer = lock.acquire();
        let inner = lock.acquire();
        std::thread::scope(|s| {
            assert!(s.spawn(|| lock.try_acquire().is_none()).join().unwrap());
            drop(inner);
            assert!(s.spawn(|| lock.try_acquire().is_none()).join().unwrap(), "count is 1");
            drop(outer);
            assert!(s.spawn(|| lock.try_acquire().is_some()).join().unwrap());
        });
    }
}
