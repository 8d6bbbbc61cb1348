//! lock — what waits in a shared block ([`crate::shm`] has the lesson): [`RobustMutex`] and
//! [`futex_wait`] / [`futex_wake`]. Both take a [`Wait`] (`py-threading`'s): for ever, until a
//! moment, or not at all.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
pub use py_threading::Wait;

use super::ShmError;

const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Whether a lock was taken cleanly or from a holder that died holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Clean,
    /// The holder died holding it; the kernel gave it to us and we made it usable again
    /// (`pthread_mutex_consistent`). What it guarded may be half done.
    OwnerDied,
}

/// A robust, process-shared mutex, to live in a [`super::SharedBlock`] (zeroed, then [`init`]).
///
/// [`init`]: RobustMutex::init
#[derive(Debug)]
#[repr(transparent)]
pub struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

// Safety: a process-shared pthread mutex is made to be locked from many threads and processes.
unsafe impl Sync for RobustMutex {}

/// Holds a [`RobustMutex`]; unlocks it when dropped.
#[derive(Debug)]
pub struct RobustGuard<'a> {
    mutex: &'a RobustMutex,
}

impl Drop for RobustGuard<'_> {
    fn drop(&mut self) {
        // Safety: this thread holds the mutex (a guard exists only after a successful lock).
        unsafe { libc::pthread_mutex_unlock(self.mutex.0.get()) };
    }
}

impl RobustMutex {
    /// Initialises the mutex as process-shared and robust.
    ///
    /// # Safety
    /// No thread or process may use the mutex yet (call it from [`super::SharedBlock::create`]'s
    /// `init`, before the block is shared).
    pub unsafe fn init(&self) -> Result<(), ShmError> {
        // Safety: the attribute object lives on our stack, initialised before use and destroyed
        // after; the caller guarantees nobody uses the mutex yet.
        let rc = unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let mut rc = libc::pthread_mutexattr_init(&mut attr);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            }
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(self.0.get(), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            rc
        };
        if rc != 0 {
            return Err(ShmError::new(
                "pthread_mutex_init(robust, process-shared)",
                Errno::from_raw(rc),
            ));
        }
        Ok(())
    }

    /// Locks the mutex, waiting as `wait` allows: `Ok(None)` if it was not taken in time. A
    /// holder's death is reported as [`Taken::OwnerDied`], and the lock is ours all the same.
    pub fn lock(&self, wait: Wait) -> Result<Option<(Taken, RobustGuard<'_>)>, ShmError> {
        let mutex = self.0.get();
        // `mutex` was initialised by `init` as a process-shared robust mutex and lives as long
        // as `self`: the calls below need only that.
        let rc = match wait {
            // Safety: see above.
            Wait::Forever => unsafe { libc::pthread_mutex_lock(mutex) },
            // Safety: see above.
            Wait::Now => unsafe { libc::pthread_mutex_trylock(mutex) },
            Wait::Until(_) => {
                // pthread_mutex_timedlock takes an absolute CLOCK_REALTIME time. A TimeSpec sum
                // counts nanoseconds in an i64 (292 years): a longer wait is cut to a century.
                let left = wait.remaining().unwrap_or_default().min(CENTURY);
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
                    .map_err(|e| ShmError::new("clock_gettime(CLOCK_REALTIME)", e))?;
                let abs = now + TimeSpec::from(left);
                // Safety: see above; `abs` lives on our stack for the call.
                unsafe { libc::pthread_mutex_timedlock(mutex, abs.as_ref()) }
            }
        };
        let taken = match rc {
            0 => Taken::Clean,
            libc::EOWNERDEAD => {
                // Ours now, from a holder that died: mark it usable again (see `Taken::OwnerDied`).
                // Safety: this thread owns the mutex after EOWNERDEAD.
                unsafe { libc::pthread_mutex_consistent(mutex) };
                Taken::OwnerDied
            }
            libc::EBUSY | libc::ETIMEDOUT => return Ok(None),
            e => return Err(ShmError::new("pthread_mutex_lock", Errno::from_raw(e))),
        };
        Ok(Some((taken, RobustGuard { mutex: self })))
    }
}

/// Sleeps while `word` holds `expected`, up to `timeout`; returns early on a wake-up, a change
/// of value, or a signal (callers loop and check again).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(TimeSpec::from);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ref() as *const libc::timespec);
    // Safety: FUTEX_WAIT reads the aligned u32 at `word` (alive for the call) and the optional
    // timespec on our stack. Not FUTEX_PRIVATE: the kernel keys a word in a MAP_SHARED mapping
    // by file and offset, so processes that mapped it at different addresses still meet.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr) };
}

/// Wakes up to `n` threads or processes sleeping on `word` (`i32::MAX`: all of them).
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // Safety: FUTEX_WAKE only uses the address as a key; the word is alive for the call.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}
