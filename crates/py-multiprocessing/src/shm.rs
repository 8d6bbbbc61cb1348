//! shm — a block of memory that several processes share, and the locks and counters that live
//! in it: what the process queue, the cross-process semaphores and events, and the IPC demo's
//! shared counter are built on.
//!
//! - [`SharedBlock`]: a `memfd` (an anonymous file in memory) mapped `MAP_SHARED`. Every
//!   process that maps it sees the same bytes. A forked child inherits the mapping; a spawned
//!   child is passed the descriptor ([`common::process::Process::pass_fds`]) and maps it with
//!   [`SharedBlock::from_raw_fd`]. `/proc/PID/maps` of each shows `/memfd:NAME (deleted)` at its
//!   own address: the same memory, wherever each process put it.
//! - [`RobustMutex`]: a POSIX *robust*, process-shared `pthread_mutex_t` in the block. It costs
//!   no system call when nobody else holds it; when its holder dies holding it, the kernel
//!   releases it and the next process to lock it is *told* ([`Taken::OwnerDied`]), so it can
//!   repair what the dead holder left half done. A POSIX named semaphore (CPython's
//!   `multiprocessing.Lock`/`Semaphore`) has no such rule: a holder killed inside keeps it for
//!   ever.
//! - [`futex_wait`] / [`futex_wake`]: sleep until a 32-bit word in the block changes, and wake
//!   the sleepers: how a counter in shared memory is waited on without spinning. Not
//!   `FUTEX_PRIVATE`: the kernel keys a shared mapping's futex by file and offset, so processes
//!   that mapped the block at different addresses still meet.
//!
//! Linux only: `memfd_create`, robust mutexes and futexes are Linux system calls.

#![cfg(target_os = "linux")]

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// A system call that failed, and the call's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct ShmError {
    pub call: &'static str,
    pub errno: Errno,
}

impl ShmError {
    fn new(call: &'static str, errno: Errno) -> ShmError {
        ShmError { call, errno }
    }
}

impl From<ShmError> for std::io::Error {
    fn from(e: ShmError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// Whether a wait may last for ever, until a moment, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Forever,
    Until(Instant),
    Now,
}

impl Wait {
    /// Until `timeout` from now (for ever if that moment cannot be represented).
    pub fn from_timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }

    /// `None`: for ever; otherwise until `timeout` from now (0: do not wait).
    pub fn from_option(timeout: Option<Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(Duration::ZERO) => Wait::Now,
            Some(t) => Wait::from_timeout(t),
        }
    }

    /// Time left: `None` for ever, `Some(ZERO)` when it has passed.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Wait::Forever => None,
            Wait::Until(deadline) => Some(deadline.saturating_duration_since(Instant::now())),
            Wait::Now => Some(Duration::ZERO),
        }
    }

    /// True once the wait has run out (at once for [`Wait::Now`]).
    pub fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

/// A type that may live in a [`SharedBlock`].
///
/// # Safety
/// All-zero bytes must be a valid value of the type (the kernel hands out zeroed pages), and
/// every field that changes once the block is shared must be safe to change from several
/// processes at once: atomics, or a [`RobustMutex`] and what it guards (in `UnsafeCell`s).
/// No pointers: each process maps the block at its own address.
pub unsafe trait Shareable: Sync {}

// Safety: zero is a valid count, and an atomic is made to change under many processes at once.
unsafe impl Shareable for AtomicU32 {}

/// A block of `T` in a `memfd`, mapped `MAP_SHARED` by every process that uses it.
pub struct SharedBlock<T: Shareable> {
    fd: OwnedFd,
    ptr: NonNull<T>,
}

// Safety: `T: Shareable` is made for use from many processes, hence threads, at once; the
// descriptor is a plain number the kernel synchronises.
unsafe impl<T: Shareable> Send for SharedBlock<T> {}
// Safety: as for Send.
unsafe impl<T: Shareable> Sync for SharedBlock<T> {}

impl<T: Shareable> std::fmt::Debug for SharedBlock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBlock")
            .field("fd", &self.fd.as_raw_fd())
            .field("addr", &self.ptr)
            .field("len", &Self::len())
            .finish()
    }
}

impl<T: Shareable> SharedBlock<T> {
    /// The mapping's length: `T` rounded up to whole pages.
    pub fn len() -> usize {
        std::mem::size_of::<T>().max(1).next_multiple_of(4096)
    }

    /// Creates a zeroed block named `name` (the name `/proc/PID/maps` and `/proc/PID/fd` show)
    /// and runs `init` on it before any other process or thread can see it (to initialise its
    /// mutexes, or write what is fixed for the block's life). `init` gets a raw pointer: it may
    /// write any field through it, since nobody else can see the block yet. The descriptor is
    /// close-on-exec: a spawned child gets it only if it is passed.
    pub fn create(
        name: &CStr,
        init: impl FnOnce(*mut T) -> Result<(), ShmError>,
    ) -> Result<Self, ShmError> {
        // Safety: memfd_create reads the NUL-terminated name; we own the new descriptor.
        let fd = unsafe {
            let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(ShmError::new("memfd_create", Errno::last()));
            }
            OwnedFd::from_raw_fd(fd)
        };
        nix::unistd::ftruncate(&fd, Self::len() as libc::off_t)
            .map_err(|e| ShmError::new("ftruncate(the shared block)", e))?;
        let ptr = Self::map(fd.as_fd())?;
        let block = SharedBlock { fd, ptr };
        init(block.ptr.as_ptr())?;
        Ok(block)
    }

    /// Maps the block behind descriptor `fd`, which this process now owns (a spawned child's
    /// inherited descriptor). Refused unless `fd` is open, is a regular file (a memfd) and is
    /// large enough for `T`; what the bytes mean is the caller's to check (a magic number).
    /// The descriptor gets close-on-exec back, so it does not leak into this process's own
    /// spawned children unless passed again.
    ///
    /// # Safety
    /// `fd` must be a descriptor nothing else in this process owns or closes, and the block
    /// behind it must have been made by [`SharedBlock::create`] for the same `T`.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Result<Self, ShmError> {
        // Safety: a `struct stat` of zeroes is a valid value to be filled in.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // Safety: fstat on any integer is harmless: EBADF if it is not open; `st` is ours.
        if unsafe { libc::fstat(fd, &mut st) } < 0 {
            return Err(ShmError::new("fstat(the shared block's descriptor)", Errno::last()));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || (st.st_size as usize) < Self::len() {
            return Err(ShmError::new("the shared block's descriptor", Errno::EINVAL));
        }
        // Safety: the caller hands us the ownership of `fd`.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Safety: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
        let ptr = Self::map(fd.as_fd())?;
        Ok(SharedBlock { fd, ptr })
    }

    fn map(fd: BorrowedFd<'_>) -> Result<NonNull<T>, ShmError> {
        // Safety: a fresh shared mapping of a descriptor we hold; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ShmError::new("mmap(the shared block)", Errno::last()));
        }
        NonNull::new(ptr.cast::<T>()).ok_or(ShmError::new("mmap(the shared block)", Errno::EINVAL))
    }

    /// The shared value.
    pub fn get(&self) -> &T {
        // Safety: the mapping lives as long as `self`, is at least `size_of::<T>()` bytes, was
        // zeroed by the kernel (a valid `T`, by `Shareable`) and is only changed through
        // atomics and mutexes (also `Shareable`'s contract).
        unsafe { self.ptr.as_ref() }
    }

    /// The block's descriptor (for [`common::process::Process::pass_fds`]).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Unmaps the block and gives its descriptor back, open, to the caller (who then owns it):
    /// for a caller that mapped a descriptor only to find it names another block.
    pub fn into_raw_fd(self) -> RawFd {
        let me = std::mem::ManuallyDrop::new(self);
        // Safety: the mapping was made with this length in `map`; `me` is never used again
        // and its destructor does not run, so nothing unmaps or closes twice.
        unsafe {
            libc::munmap(me.ptr.as_ptr().cast(), Self::len());
            std::os::fd::IntoRawFd::into_raw_fd(std::ptr::read(&me.fd))
        }
    }

    /// Where this process mapped the block (another process's address differs).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl<T: Shareable> Drop for SharedBlock<T> {
    fn drop(&mut self) {
        // Safety: the mapping was made with this length in `map`, and nothing borrows it once
        // `self` is dropped (`get` borrows `self`). The descriptor closes with the OwnedFd.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), Self::len());
        }
    }
}

/// Whether a lock was taken cleanly or from a holder that died holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Clean,
    /// The holder died holding it; the kernel gave it to us and we made it usable again
    /// (`pthread_mutex_consistent`). What it guarded may be half done.
    OwnerDied,
}

/// A robust, process-shared mutex, to live in a [`SharedBlock`] (zeroed, then [`init`]).
///
/// [`init`]: RobustMutex::init
#[repr(transparent)]
pub struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

// Safety: a process-shared pthread mutex is made to be locked from many threads and processes.
unsafe impl Sync for RobustMutex {}

impl std::fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RobustMutex")
    }
}

/// Holds a [`RobustMutex`]; unlocks it when dropped.
#[derive(Debug)]
pub struct RobustGuard<'a> {
    mutex: &'a RobustMutex,
}

impl Drop for RobustGuard<'_> {
    fn drop(&mut self) {
        // Safety: this thread holds the mutex (a guard exists only after a successful lock).
        unsafe {
            libc::pthread_mutex_unlock(self.mutex.0.get());
        }
    }
}

impl RobustMutex {
    /// Initialises the mutex as process-shared and robust.
    ///
    /// # Safety
    /// No thread or process may use the mutex yet (call it from [`SharedBlock::create`]'s
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
                // pthread_mutex_timedlock takes an absolute CLOCK_REALTIME time.
                let left = wait.remaining().unwrap_or_default();
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
                    .map_err(|e| ShmError::new("clock_gettime(CLOCK_REALTIME)", e))?;
                let mut sec = now.tv_sec() + left.as_secs() as libc::time_t;
                let mut nsec = now.tv_nsec() + libc::c_long::from(left.subsec_nanos());
                if nsec >= 1_000_000_000 {
                    sec += 1;
                    nsec -= 1_000_000_000;
                }
                let abs = libc::timespec { tv_sec: sec, tv_nsec: nsec };
                // Safety: see above; `abs` lives on our stack for the call.
                unsafe { libc::pthread_mutex_timedlock(mutex, &abs) }
            }
        };
        let guard = RobustGuard { mutex: self };
        match rc {
            0 => Ok(Some((Taken::Clean, guard))),
            libc::EOWNERDEAD => {
                // The holder died holding it: we own it now; mark it usable again. The caller
                // decides from what it recorded whether the guarded state is whole.
                // Safety: this thread owns the mutex after EOWNERDEAD.
                unsafe {
                    libc::pthread_mutex_consistent(mutex);
                }
                Ok(Some((Taken::OwnerDied, guard)))
            }
            libc::EBUSY | libc::ETIMEDOUT => {
                std::mem::forget(guard);
                Ok(None)
            }
            e => {
                std::mem::forget(guard);
                Err(ShmError::new("pthread_mutex_lock", Errno::from_raw(e)))
            }
        }
    }
}

/// Sleeps while `word` holds `expected`, up to `timeout`; returns early on a wake-up, a change
/// of value, or a signal (callers loop and check again).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // Safety: FUTEX_WAIT reads the aligned u32 at `word` (alive for the call) and the optional
    // timespec on our stack. Not FUTEX_PRIVATE: the word may be shared with other processes
    // through a MAP_SHARED mapping, which the kernel keys by file and offset.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr);
    }
}

/// Wakes up to `n` threads or processes sleeping on `word` (`i32::MAX`: all of them).
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // Safety: FUTEX_WAKE only uses the address as a key; the word is alive for the call.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// A random number, to tell one shared block from another (a block's id, stored in it and in
/// what names it, proves that a descriptor a child was given is that block).
pub fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    // Safety: getrandom writes at most 8 bytes into our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        // Not secret, only distinct: the time and pid are enough.
        common::report::monotonic_ns() ^ (u64::from(std::process::id()) << 32)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;
    use std::sync::atomic::Ordering;

    use super::*;

    #[repr(C)]
    struct Counter {
        lock: RobustMutex,
        value: AtomicU32,
    }
    // Safety: zero is a valid mutex-to-be and counter; both are shared-safe.
    unsafe impl Shareable for Counter {}

    #[test]
    fn a_block_mapped_twice_is_the_same_memory_at_two_addresses() {
        let a = SharedBlock::<Counter>::create(c"test-counter", |c| {
            // Safety: the block is not shared yet.
            unsafe { (*c).lock.init() }
        })
        .unwrap();
        let fd = nix::unistd::dup(a.fd.as_fd()).unwrap();
        // Safety: the duplicate is ours alone, and names a block of the same type.
        let b = unsafe { SharedBlock::<Counter>::from_raw_fd(fd.into_raw_fd()) }.unwrap();
        assert_ne!(a.addr(), b.addr());
        a.get().value.store(41, Ordering::SeqCst);
        {
            let (taken, _guard) = b.get().lock.lock(Wait::Forever).unwrap().unwrap();
            assert_eq!(taken, Taken::Clean);
            b.get().value.fetch_add(1, Ordering::SeqCst);
            // Held by this thread: another attempt that does not wait is refused.
            let other = std::thread::scope(|s| {
                s.spawn(|| a.get().lock.lock(Wait::Now).unwrap().is_none()).join().unwrap()
            });
            assert!(other);
        }
        assert_eq!(a.get().value.load(Ordering::SeqCst), 42);
    }

    #[test]
    fn a_wait_of_zero_is_now_and_none_is_forever() {
        assert_eq!(Wait::from_option(Some(Duration::ZERO)), Wait::Now);
        assert_eq!(Wait::from_option(None), Wait::Forever);
        assert!(Wait::Now.expired());
        assert!(!Wait::from_timeout(Duration::from_secs(60)).expired());
    }

    #[test]
    fn a_holder_that_dies_holding_the_lock_releases_it_and_the_next_one_is_told() {
        let block = SharedBlock::<Counter>::create(c"test-robust", |c| {
            // Safety: the block is not shared yet.
            unsafe { (*c).lock.init() }
        })
        .unwrap();
        // The robust list is kept per thread: a thread that ends holding the mutex is, for the
        // kernel, a holder that died (as a process killed with SIGKILL is).
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(block.get().lock.lock(Wait::Forever).unwrap())).join()
        })
        .unwrap();
        let (taken, _guard) = block.get().lock.lock(Wait::Forever).unwrap().unwrap();
        assert_eq!(taken, Taken::OwnerDied);
    }
}
