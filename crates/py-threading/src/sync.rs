//! sync — Python's `threading.Semaphore`, `BoundedSemaphore` and `Event`, built on std's `Mutex`
//! and `Condvar` the way CPython builds them on its `Condition(Lock())`.
//!
//! - [`Semaphore`]: a counter of free places (信号量). `acquire` takes one, sleeping while there
//!   is none; `release` gives one back and wakes one sleeper. Like CPython's, it has no owner
//!   and no ceiling: any thread may release, and one release too many silently makes one more
//!   place (`Semaphore(3)` becomes a semaphore of 4).
//! - [`BoundedSemaphore`]: the same, except that a release that would raise the counter above
//!   its initial value is refused with [`ReleasedTooManyTimes`] (Python's `ValueError:
//!   Semaphore released too many times`), and the counter is left as it was.
//! - [`Event`]: a flag that threads wait for (事件). `set` raises it and wakes every waiter, `clear`
//!   lowers it, `wait` sleeps until it is raised, `wait_timeout` returns the flag at the end:
//!   `false` when the time ran out first.
//!
//! CPython's code, which these follow line by line (Lib/threading.py, 3.11):
//!
//! ```text
//! Semaphore.acquire(timeout):            Semaphore.release(n=1):
//!   with self._cond:                       with self._cond:
//!     while self._value == 0:                self._value += n
//!       ... self._cond.wait(timeout)         for i in range(n): self._cond.notify()
//!     self._value -= 1
//! ```
//!
//! CPython's `Condition.notify` wakes only threads in its list of waiters, so a release with
//! nobody waiting costs nothing; here the mutex guards the count of waiters, and of wake-ups
//! already on their way, for the same reason.
//!
//! A waiter sleeps in `Condvar::wait`, i.e. in a futex: `ps -L` shows it in state `S` with
//! `wchan` `futex_do_wait` (or `futex_wait_queue` on older kernels), using no CPU.
//!
//! A `Condvar` may wake a thread for nothing (a spurious wake-up), so every wait re-checks its
//! condition in a loop and a timed wait keeps its own deadline: `acquire_timeout(t)` returns
//! `false` only after `t` has really passed.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `BoundedSemaphore.release()` called once too often: Python's `ValueError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ValueError: Semaphore released too many times (its initial value is {initial})")]
pub struct ReleasedTooManyTimes {
    /// The bounded semaphore's initial value, which its counter may not exceed.
    pub initial: usize,
}

/// Locks `m`, ignoring poisoning: the counters below stay valid whatever a panicking thread
/// was doing, since every change is a single assignment.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the semaphore's mutex guards.
#[derive(Debug, Default)]
struct State {
    /// Free places.
    value: usize,
    /// Threads inside `acquire`'s wait loop.
    waiters: usize,
    /// Wake-ups sent and not yet taken by a waiter: a release wakes only waiters that nobody
    /// is waking already. (std's `Condvar::notify_one` is a `futex` system call even when no
    /// thread waits, and a thread that gives a place back and takes it again at once would
    /// otherwise make one for every pair while a woken waiter is still on its way.)
    signalled: usize,
}

/// The counter and its condition, shared by both kinds of semaphore.
#[derive(Debug)]
struct Counter {
    state: Mutex<State>,
    cond: Condvar,
}

impl Counter {
    fn new(value: usize) -> Counter {
        Counter { state: Mutex::new(State { value, ..State::default() }), cond: Condvar::new() }
    }

    /// Takes one place, waiting up to `timeout` (`None`: for ever). `false`: the time ran out.
    fn acquire(&self, timeout: Option<Duration>) -> bool {
        let mut s = lock(&self.state);
        if s.value > 0 {
            s.value -= 1;
            return true;
        }
        if timeout == Some(Duration::ZERO) {
            return false;
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        s.waiters += 1;
        let got = loop {
            s = match deadline {
                None => self.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.cond.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            // Whatever woke us (a release, a timeout, nothing at all), we look again.
            s.signalled = s.signalled.saturating_sub(1);
            if s.value > 0 {
                s.value -= 1;
                break true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break false;
            }
        };
        s.waiters -= 1;
        s.signalled = s.signalled.min(s.waiters);
        got
    }

    /// Gives `n` places back (unless `bound` refuses) and wakes up to `n` sleepers.
    fn release(&self, n: usize, bound: Option<usize>) -> Result<(), ReleasedTooManyTimes> {
        let mut s = lock(&self.state);
        if let Some(initial) = bound
            && s.value.saturating_add(n) > initial
        {
            return Err(ReleasedTooManyTimes { initial });
        }
        s.value = s.value.saturating_add(n);
        let wake = n.min(s.waiters - s.signalled);
        s.signalled += wake;
        drop(s);
        for _ in 0..wake {
            self.cond.notify_one();
        }
        Ok(())
    }

    fn value(&self) -> usize {
        lock(&self.state).value
    }
}

/// Python's `threading.Semaphore(value)`: a counter of free places with no ceiling.
#[derive(Debug)]
pub struct Semaphore {
    counter: Counter,
}

impl Semaphore {
    /// A semaphore with `value` free places (Python's default is 1: a lock).
    pub fn new(value: usize) -> Semaphore {
        Semaphore { counter: Counter::new(value) }
    }

    /// `acquire()`: takes a place, sleeping as long as there is none. Always `true`, as in
    /// Python.
    pub fn acquire(&self) -> bool {
        self.counter.acquire(None)
    }

    /// `acquire(timeout=t)`: `false` if no place came free within `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.counter.acquire(Some(timeout))
    }

    /// `acquire(blocking=False)`: takes a place only if one is free now.
    pub fn try_acquire(&self) -> bool {
        self.counter.acquire(Some(Duration::ZERO))
    }

    /// `release()`: gives a place back, whoever calls it, and wakes one sleeper. Never refused:
    /// a release without an acquire adds a place for good.
    pub fn release(&self) {
        let _ = self.counter.release(1, None);
    }

    /// `release(n)` (Python 3.9+): gives `n` places back and wakes up to `n` sleepers.
    pub fn release_n(&self, n: usize) {
        let _ = self.counter.release(n, None);
    }

    /// The free places now (Python's `_value`): a snapshot, stale as soon as it is read.
    pub fn value(&self) -> usize {
        self.counter.value()
    }

    /// `with sem:`: takes a place and gives it back when the guard is dropped.
    pub fn access(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard { semaphore: self }
    }
}

impl Default for Semaphore {
    /// `Semaphore()`: one place, a lock without an owner.
    fn default() -> Semaphore {
        Semaphore::new(1)
    }
}

/// A place taken with [`Semaphore::access`], given back when dropped.
#[derive(Debug)]
#[must_use = "the place is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    semaphore: &'a Semaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        self.semaphore.release();
    }
}

/// Python's `threading.BoundedSemaphore(value)`: a [`Semaphore`] whose counter may never
/// exceed its initial value; a release that would is an error.
#[derive(Debug)]
pub struct BoundedSemaphore {
    counter: Counter,
    initial: usize,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free places, and never more.
    pub fn new(value: usize) -> BoundedSemaphore {
        BoundedSemaphore { counter: Counter::new(value), initial: value }
    }

    /// `acquire()`: takes a place, sleeping as long as there is none. Always `true`.
    pub fn acquire(&self) -> bool {
        self.counter.acquire(None)
    }

    /// `acquire(timeout=t)`: `false` if no place came free within `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.counter.acquire(Some(timeout))
    }

    /// `acquire(blocking=False)`: takes a place only if one is free now.
    pub fn try_acquire(&self) -> bool {
        self.counter.acquire(Some(Duration::ZERO))
    }

    /// `release()`: gives a place back; refused, leaving the counter as it was, if every place
    /// is already free (Python's `ValueError: Semaphore released too many times`).
    pub fn release(&self) -> Result<(), ReleasedTooManyTimes> {
        self.counter.release(1, Some(self.initial))
    }

    /// `release(n)`: all `n` places or none.
    pub fn release_n(&self, n: usize) -> Result<(), ReleasedTooManyTimes> {
        self.counter.release(n, Some(self.initial))
    }

    /// The free places now: a snapshot.
    pub fn value(&self) -> usize {
        self.counter.value()
    }

    /// The initial value: the most free places there may ever be.
    pub fn initial(&self) -> usize {
        self.initial
    }

    /// `with sem:`: takes a place and gives it back when the guard is dropped. (Should some
    /// other thread have released a place it never took meanwhile, the guard's own release is
    /// refused and dropped silently: the counter is already at its bound.)
    pub fn access(&self) -> BoundedGuard<'_> {
        self.acquire();
        BoundedGuard { semaphore: self }
    }
}

/// A place taken with [`BoundedSemaphore::access`], given back when dropped.
#[derive(Debug)]
#[must_use = "the place is given back as soon as the guard is dropped"]
pub struct BoundedGuard<'a> {
    semaphore: &'a BoundedSemaphore,
}

impl Drop for BoundedGuard<'_> {
    fn drop(&mut self) {
        let _ = self.semaphore.release();
    }
}

/// Python's `threading.Event()`: a flag, initially false, that threads wait for.
#[derive(Debug, Default)]
pub struct Event {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Event {
    /// An event whose flag is down.
    pub fn new() -> Event {
        Event::default()
    }

    /// `is_set()`: the flag now.
    pub fn is_set(&self) -> bool {
        *lock(&self.flag)
    }

    /// `set()`: raises the flag and wakes every thread waiting for it. Threads that call `wait`
    /// afterwards return at once, until `clear`.
    pub fn set(&self) {
        *lock(&self.flag) = true;
        self.cond.notify_all();
    }

    /// `clear()`: lowers the flag; later `wait`s sleep again.
    pub fn clear(&self) {
        *lock(&self.flag) = false;
    }

    /// `wait()`: sleeps until the flag is raised. Always `true`.
    pub fn wait(&self) -> bool {
        let flag = lock(&self.flag);
        let _flag = self.cond.wait_while(flag, |up| !*up).unwrap_or_else(|e| e.into_inner());
        true
    }

    /// `wait(timeout)`: sleeps until the flag is raised or `timeout` has passed; returns the
    /// flag at the end: `false` when the time ran out first.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let flag = lock(&self.flag);
        let (flag, _) = self
            .cond
            .wait_timeout_while(flag, timeout, |up| !*up)
            .unwrap_or_else(|e| e.into_inner());
        *flag
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn ten_threads_through_a_semaphore_of_three_are_never_more_than_three_inside() {
        let sem = Semaphore::new(3);
        let (inside, max, entered) =
            (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..10 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _place = sem.access();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    entered.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert!(max.load(Ordering::SeqCst) <= 3);
        assert_eq!(entered.load(Ordering::SeqCst), 10);
        assert_eq!(sem.value(), 3);
    }

    #[test]
    fn a_semaphore_released_once_too_often_grows_and_a_bounded_one_refuses() {
        let sem = Semaphore::new(3);
        sem.release();
        assert_eq!(sem.value(), 4);
        assert!((0..4).all(|_| sem.try_acquire()));
        assert!(!sem.try_acquire());

        let bounded = BoundedSemaphore::new(3);
        assert!(bounded.acquire());
        assert_eq!(bounded.release(), Ok(()));
        let err = bounded.release().unwrap_err();
        assert_eq!(err, ReleasedTooManyTimes { initial: 3 });
        assert!(err.to_string().starts_with("ValueError: Semaphore released too many times"));
        assert_eq!(bounded.value(), 3);
        assert!(bounded.try_acquire());
        assert!(bounded.release_n(2).is_err(), "all of release(n) or none of it");
        assert_eq!(bounded.value(), 2);
    }

    #[test]
    fn an_acquire_with_a_timeout_on_a_full_semaphore_is_false_after_the_timeout() {
        let sem = Semaphore::new(0);
        let began = Instant::now();
        assert!(!sem.acquire_timeout(Duration::from_millis(30)));
        assert!(began.elapsed() >= Duration::from_millis(30));
        assert!(!sem.try_acquire());
    }

    #[test]
    fn threads_that_wait_time_out_and_release_at_random_never_lose_a_place() {
        let sem = Semaphore::new(2);
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let sem = &sem;
                s.spawn(move || {
                    let mut rng = fastrand_like(t);
                    for _ in 0..300 {
                        let got = if rng().is_multiple_of(3) {
                            sem.acquire_timeout(Duration::from_micros(rng() % 200))
                        } else {
                            sem.acquire()
                        };
                        if got {
                            if rng().is_multiple_of(2) {
                                std::thread::yield_now();
                            }
                            sem.release();
                        }
                    }
                });
            }
        });
        assert_eq!(sem.value(), 2);
        assert!(
            sem.acquire_timeout(Duration::from_secs(5))
                && sem.acquire_timeout(Duration::from_secs(5))
        );
    }

    /// A tiny xorshift generator, so the test needs no dependency.
    fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn a_release_from_another_thread_wakes_a_sleeping_acquirer() {
        let sem = Semaphore::new(0);
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| sem.acquire());
            sem.release();
            assert!(sleeper.join().unwrap());
        });
        assert_eq!(sem.value(), 0);
    }

    #[test]
    fn an_unset_events_wait_with_a_timeout_is_false_and_a_set_wakes_every_waiter() {
        let event = Event::new();
        assert!(!event.is_set());
        let began = Instant::now();
        assert!(!event.wait_timeout(Duration::from_millis(30)));
        assert!(began.elapsed() >= Duration::from_millis(30));

        let started = Barrier::new(5);
        let woke = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    started.wait();
                    assert!(event.wait());
                    woke.fetch_add(1, Ordering::SeqCst);
                });
            }
            started.wait();
            event.set();
        });
        assert_eq!(woke.load(Ordering::SeqCst), 4);
        assert!(event.is_set());
        assert!(event.wait_timeout(Duration::ZERO), "a set event's wait returns true at once");
        event.clear();
        assert!(!event.wait_timeout(Duration::ZERO));
    }
}
