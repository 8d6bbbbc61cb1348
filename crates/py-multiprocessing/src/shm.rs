//! shm — memory that several processes share, and the locks and counters in it: what the
//! process queue, semaphore and event, and the IPC demo's shared counter are built on.
//!
//! - [`SharedBlock`]: a `memfd` (an anonymous file in memory) mapped `MAP_SHARED`. Every
//!   process that maps it sees the same bytes. A forked child inherits the mapping; a spawned
//!   child is passed the descriptor ([`common::process::Process::pass_fds`]) and maps it with
//!   [`SharedBlock::map_passed`]. `/proc/PID/maps` of each shows `/memfd:NAME (deleted)` at its
//!   own address: the same memory, wherever each process put it.
//! - [`RobustMutex`]: a POSIX *robust*, process-shared `pthread_mutex_t` in the block. It costs
//!   no system call when nobody else holds it; when its holder dies holding it, the kernel
//!   releases it and the next process to lock it is *told* ([`Taken::OwnerDied`]), so it can
//!   repair what the dead holder left half done (CPython's `sem_open` locks have no such rule:
//!   `sync/semaphore.rs`).
//! - [`futex_wait`] / [`futex_wake`]: sleep until a 32-bit word in the block changes, and wake
//!   the sleepers: how a counter in shared memory is waited on without spinning.
//!
//! The block is here; the mutex and the futex are in `shm/lock.rs`. Linux only.

#![cfg(target_os = "linux")]

mod lock;

use std::ffi::CStr;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

pub use lock::{RobustGuard, RobustMutex, Taken, Wait, futex_wait, futex_wake};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct ShmError {
    pub call: &'static str,
    pub errno: Errno,
}

impl ShmError {
    pub(crate) fn new(call: &'static str, errno: Errno) -> ShmError {
        ShmError { call, errno }
    }
}

/// Why [`SharedBlock::map_passed`] could not map a descriptor number this process was passed.
#[derive(Debug, thiserror::Error)]
pub enum PassedError {
    #[error(
        "fd {fd} is not open in this process ({errno}): a spawned child must be given it with \
         Process::pass_fds"
    )]
    NotOpen { fd: RawFd, errno: Errno },
    #[error(transparent)]
    Refused(ShmError),
}

/// A type that may live in a [`SharedBlock`].
///
/// # Safety
/// All-zero bytes must be a valid value of the type (the kernel hands out zeroed pages), and
/// every field that changes once the block is shared must be safe to change from several
/// processes at once: atomics, or a [`RobustMutex`] and what it guards (in `UnsafeCell`s).
/// No pointers: each process maps the block at its own address.
pub unsafe trait Shareable: Sync {}

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
    /// and runs `init` on it, through a raw pointer that may write any field, before any other
    /// process or thread can see it (to initialise its mutexes, or write what is fixed for the
    /// block's life). The descriptor is close-on-exec: a spawned child gets it only if passed.
    pub fn create(
        name: &CStr,
        init: impl FnOnce(*mut T) -> Result<(), ShmError>,
    ) -> Result<Self, ShmError> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)
            .map_err(|e| ShmError::new("memfd_create", e))?;
        nix::unistd::ftruncate(&fd, Self::len() as libc::off_t)
            .map_err(|e| ShmError::new("ftruncate(the shared block)", e))?;
        let block = SharedBlock { ptr: Self::map(fd.as_fd())?, fd };
        init(block.ptr.as_ptr())?;
        Ok(block)
    }

    /// Maps the block behind descriptor `fd`, which this process now owns (a spawned child's
    /// inherited descriptor). Refused, `fd` left open and still the caller's, unless `fd` is
    /// open, is a regular file (a memfd) and is large enough for `T`; what the bytes mean is the
    /// caller's to check (a magic number). `fd` gets close-on-exec back: it does not leak into
    /// this process's own spawned children unless passed again.
    ///
    /// # Safety
    /// `fd` must be a descriptor nothing else in this process owns or closes, and the block
    /// behind it must have been made by [`SharedBlock::create`] for the same `T`.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Result<Self, ShmError> {
        let st = fstat(fd).map_err(|e| ShmError::new("fstat(the shared block's descriptor)", e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || (st.st_size as usize) < Self::len() {
            return Err(ShmError::new("the shared block's descriptor", Errno::EINVAL));
        }
        // Safety: fstat just found `fd` open, and the caller does not close it meanwhile.
        let ptr = Self::map(unsafe { BorrowedFd::borrow_raw(fd) })?;
        // Safety: the caller hands us the ownership of `fd`, taken only now that it is mapped.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        Ok(SharedBlock { fd, ptr })
    }

    /// Maps the block behind a descriptor number this process was passed (through `fork`, or
    /// `Process::pass_fds`) in a close-on-exec duplicate of its own, so that the number can be
    /// mapped again; the number gets close-on-exec back, as in [`SharedBlock::from_raw_fd`],
    /// which refuses what this refuses.
    ///
    /// # Safety
    /// The block must have been made by [`SharedBlock::create`] for the same `T`, or the caller
    /// reads only plain numbers of it (a magic number, an id) until they prove it was.
    pub unsafe fn map_passed(fd: RawFd) -> Result<Self, PassedError> {
        // Safety: F_DUPFD_CLOEXEC on any integer is harmless: EBADF if it is not open. (A
        // number that may not be open is no `BorrowedFd`: hence libc's fcntl, not nix's.)
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(PassedError::NotOpen { fd, errno: Errno::last() });
        }
        // Safety: fcntl on `fd`, which the duplicate just proved open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // Safety: `dup` is a fresh duplicate that nothing else owns; what the block holds, the
        // caller vouches for.
        unsafe { Self::from_raw_fd(dup) }.map_err(|e| {
            let _ = nix::unistd::close(dup); // refused, so still ours
            PassedError::Refused(e)
        })
    }

    fn map(fd: BorrowedFd<'_>) -> Result<NonNull<T>, ShmError> {
        let len = NonZeroUsize::new(Self::len()).expect("a page at least");
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // Safety: a fresh shared mapping of a descriptor we hold; the kernel picks the address.
        let ptr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) };
        ptr.map(NonNull::cast).map_err(|e| ShmError::new("mmap(the shared block)", e))
    }

    pub fn get(&self) -> &T {
        // Safety: the mapping lives as long as `self`, is at least `size_of::<T>()` bytes, was
        // zeroed by the kernel (a valid `T`, by `Shareable`) and is only changed through
        // atomics and mutexes (also `Shareable`'s contract).
        unsafe { self.ptr.as_ref() }
    }

    /// For `Process::pass_fds`.
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
            let _ = munmap(me.ptr.cast(), Self::len());
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
        let _ = unsafe { munmap(self.ptr.cast(), Self::len()) };
    }
}

/// `fstat(2)` of a descriptor number that may not be open here (then `EBADF`).
pub(crate) fn fstat(fd: RawFd) -> Result<libc::stat, Errno> {
    // Safety: zeroes are a valid `stat` to fill in; fstat on any integer is harmless (EBADF if
    // it is not open) and writes only to `st`, which is ours.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        Errno::result(libc::fstat(fd, &mut st)).map(|_| st)
    }
}

/// A random number, to tell one shared block from another (a block's id, stored in it and in
/// what names it, proves that a descriptor a child was given is that block).
pub fn random_id() -> u64 {
    // Not secret, only distinct: std's randomly keyed hash of the pid and the time. (A forked
    // child continues its parent's keys, but not its pid.)
    RandomState::new().hash_one((std::process::id(), common::report::monotonic_ns()))
}

/// This process's pid, kept after the first call: `getpid` is a system call, which a
/// semaphore's every acquire (it records its holder) should not pay. A forked child forgets it
/// (`pthread_atfork`), so that it never records its parent's.
pub(crate) fn own_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static WATCH_FORKS: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        PID.store(0, Ordering::Relaxed);
    }
    match PID.load(Ordering::Relaxed) {
        0 => {
            // Safety: registers a handler that only stores to an atomic, which is
            // async-signal-safe, as a handler run in a forked child must be.
            WATCH_FORKS.call_once(|| unsafe {
                libc::pthread_atfork(None, None, Some(forget));
            });
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}
