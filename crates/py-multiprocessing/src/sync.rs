//! sync — a semaphore and an event shared by processes, which survive a process killed in the
//! middle: [`ProcessSemaphore`] and [`ProcessEvent`], Python's `multiprocessing.Semaphore` and
//! `multiprocessing.Event` rebuilt on [`crate::shm`].
//!
//! ## The semaphore: one robust mutex per place
//! A `ProcessSemaphore` of `n` places is a [`SharedBlock`] holding `n` *places*, each a robust,
//! process-shared mutex and the pid of its holder. `acquire` takes the first free place
//! (`pthread_mutex_trylock` on each, no system call), and sleeps on a futex, the block's
//! *generation* counter, while every place is taken; giving a place back unlocks it and, when
//! someone sleeps, bumps the generation and wakes one sleeper (with nobody asleep, a pair of
//! `acquire` and release is a few atomic operations and no system call).
//!
//! Why a mutex per place rather than one counter: the kernel keeps, for every thread, the list
//! of robust mutexes it holds, and releases them when the thread dies, however it dies (even by
//! SIGKILL). The next process to lock such a place gets `EOWNERDEAD`: the place comes back, and
//! that process is *told* ([`Place::recovered_from`] names the dead holder's pid). A sleeper
//! learns of such a death within [`DEATH_CHECK`]: the kernel wakes no one on our generation
//! counter for a dead holder, so every sleep is cut into slices of that length, and each slice
//! ends with another look at the places.
//!
//! A POSIX named semaphore (`sem_open`, what CPython's `multiprocessing.Semaphore` is) is a bare
//! counter in `/dev/shm/sem.NAME`: it does not know who took a place, so a holder killed inside
//! takes its place with it, for good: the counter stays one low and, with every place lost, every
//! later `acquire` sleeps for ever.
//!
//! The price of knowing the holder: a place is given back by the thread that took it, by
//! dropping its [`Place`] (a guard, neither `Send` nor clonable). So a process semaphore cannot
//! be released by someone else, nor once too often: it is bounded by construction, like
//! `BoundedSemaphore`, and it has at most [`MAX_PLACES`] places.
//!
//! ## The event: one futex word
//! A [`ProcessEvent`] is a flag in a shared block: `set` stores 1 and wakes every process
//! sleeping on the word (`FUTEX_WAKE`), `clear` stores 0, `wait` sleeps on the word while it is
//! 0. A waiter killed in its sleep simply leaves the kernel's wait queue: nobody else notices.
//! CPython's `multiprocessing.Event` is a `Condition` over semaphores that counts its sleepers,
//! and `set` waits for each counted sleeper to acknowledge its wake-up: a waiter killed while
//! asleep makes a later `set` wait for an acknowledgement that never comes.
//!
//! ## Sharing them with a child
//! A forked child has the mapping already. A spawned child is passed the block's descriptor
//! ([`common::process::Process::pass_fds`] with [`ProcessSemaphore::fds`]) and receives the
//! semaphore or event in its arguments: both serialize to a descriptor (the fd number and the
//! block's random id), and deserializing maps the block again after checking the id, in a
//! descriptor of its own (a duplicate), so a handle can be rebuilt any number of times.
//!
//! Linux only, as [`crate::shm`].

#![cfg(target_os = "linux")]

use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shm::{
    RobustGuard, RobustMutex, Shareable, SharedBlock, ShmError, Taken, Wait, futex_wait,
    futex_wake, random_id,
};

/// The most places a [`ProcessSemaphore`] may have.
pub const MAX_PLACES: usize = 64;
/// The longest a sleeper in `acquire` goes without looking at the places again: the longest a
/// dead holder's place may stay unnoticed while processes sleep for it.
pub const DEATH_CHECK: Duration = Duration::from_millis(20);

const SEMAPHORE_MAGIC: u64 = u64::from_be_bytes(*b"CDsem\0\0\x01");
const EVENT_MAGIC: u64 = u64::from_be_bytes(*b"CDevent\x01");

/// What can go wrong with a process semaphore or event.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A semaphore of no places, or of more than [`MAX_PLACES`].
    #[error("a process semaphore has from 1 to {MAX_PLACES} places, not {0}")]
    Places(usize),
    /// A descriptor that does not name such a block in this process.
    #[error("rebuilding a shared {what} from its descriptor: {why}")]
    BadDescriptor { what: &'static str, why: String },
    /// A system call failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
}

/// One place of a semaphore.
#[repr(C)]
struct PlaceSlot {
    lock: RobustMutex,
    /// The pid of the process holding the place, 0 when free. Written under the place's lock.
    holder: AtomicU32,
    /// The pid of a holder that died holding the place, noticed by [`ProcessSemaphore::value`]
    /// before anyone took the place again: the next taker is told.
    dead_holder: AtomicU32,
}

/// The semaphore's shared block.
#[repr(C)]
struct SemaphoreBlock {
    /// Written once by the creator before the block is shared, read-only after.
    magic: u64,
    id: u64,
    places: u32,
    /// Bumped at every place given back: what sleepers sleep on (a futex).
    generation: AtomicU32,
    /// Processes sleeping in `acquire`, so that a release makes the wake-up call only when
    /// someone sleeps. A sleeper killed in its sleep stays counted: a wasted call, no harm.
    sleepers: AtomicU32,
    /// Places given back because their holder died holding them.
    recovered: AtomicU32,
    slots: [PlaceSlot; MAX_PLACES],
}

// Safety: zeroed bytes are valid for every field (integers, atomics, and mutexes that are
// initialised before the block is shared); after that, fields change only through atomics or
// under the robust mutexes, and magic/id/places are never written again.
unsafe impl Shareable for SemaphoreBlock {}

/// The event's shared block.
#[repr(C)]
struct EventBlock {
    magic: u64,
    id: u64,
    /// 1 while the event is set: the futex word waiters sleep on.
    flag: AtomicU32,
}

// Safety: as for SemaphoreBlock: zeroed is valid, and the flag is an atomic.
unsafe impl Shareable for EventBlock {}

/// This process's pid, remembered: `getpid` is a system call (glibc caches it no more), and
/// a place records its holder at every acquire. A forked child forgets it (`pthread_atfork`).
#[inline]
fn my_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static FORGET_AT_FORK: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        // In the child right after fork: one atomic store, async-signal-safe.
        PID.store(0, Ordering::Relaxed);
    }
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    FORGET_AT_FORK.call_once(|| {
        // Safety: registers a child handler that only stores to an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget));
        }
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// What a handle serializes to: the block's descriptor number and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDescriptor {
    pub fd: RawFd,
    pub id: u64,
}

/// Maps the block named by `d` in a descriptor of its own (a close-on-exec duplicate of `d.fd`,
/// so the number passed stays open and may be used again), and checks its magic and id.
fn adopt<T: Shareable>(
    d: SharedDescriptor,
    what: &'static str,
    check: impl Fn(&T) -> (u64, u64),
    magic: u64,
) -> Result<SharedBlock<T>, SyncError> {
    let bad = |why: String| SyncError::BadDescriptor { what, why };
    // Safety: F_DUPFD_CLOEXEC on any integer is harmless: EBADF if it is not open.
    let fd = unsafe { libc::fcntl(d.fd, libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(bad(format!(
            "fd {} is not open in this process ({}): a spawned child must be given it with \
             Process::pass_fds",
            d.fd,
            Errno::last()
        )));
    }
    // The passed number itself should not leak into this process's own spawned children.
    // Safety: fcntl on a descriptor that is open.
    unsafe { libc::fcntl(d.fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // Safety: `fd` is a fresh duplicate that nothing else owns; the check below makes sure the
    // block behind it is of this kind before anything else is read from it.
    let block = match unsafe { SharedBlock::<T>::from_raw_fd(fd) } {
        Ok(block) => block,
        Err(e) => {
            // Safety: `fd` is ours (from_raw_fd refused it before taking it over).
            unsafe { libc::close(fd) };
            return Err(bad(e.to_string()));
        }
    };
    let (found_magic, found_id) = check(block.get());
    if found_magic != magic || found_id != d.id {
        let fd = block.into_raw_fd();
        // Safety: `into_raw_fd` handed the descriptor back to us.
        unsafe { libc::close(fd) };
        return Err(bad(format!("fd {} is not this {what}'s shared block", d.fd)));
    }
    Ok(block)
}

/// A counting semaphore shared by processes, whose places come back when their holder dies:
/// see the module documentation. Clones are handles on the same semaphore.
#[derive(Debug, Clone)]
pub struct ProcessSemaphore {
    block: Arc<SharedBlock<SemaphoreBlock>>,
}

/// A place of a [`ProcessSemaphore`], held until dropped (`with sem:` in Python). Neither
/// `Send` nor `Sync`: the robust mutex behind it belongs to the thread that took it.
#[derive(Debug)]
#[must_use = "the place is given back as soon as it is dropped"]
pub struct Place<'a> {
    semaphore: &'a ProcessSemaphore,
    index: usize,
    guard: Option<RobustGuard<'a>>,
    /// The dead holder's pid, 0 for none (a plain word: a `Place` is returned by value on
    /// every acquire, and an `Option<i32>` costs a partial store and a stalled reload).
    recovered_from: usize,
    _not_send: PhantomData<*const ()>,
}

impl Place<'_> {
    /// Which place this is, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pid of the holder that died holding this place before it was given to us: the
    /// kernel released it (`EOWNERDEAD`) and we are told. `None` for a place given back
    /// normally.
    pub fn recovered_from(&self) -> Option<i32> {
        (self.recovered_from != 0).then_some(self.recovered_from as i32)
    }

    /// Gives the place back (what dropping it does).
    pub fn release(self) {}
}

impl Drop for Place<'_> {
    #[inline]
    fn drop(&mut self) {
        let b = self.semaphore.block.get();
        // Under the place's lock; the unlock publishes it.
        b.slots[self.index].holder.store(0, Ordering::Relaxed);
        drop(self.guard.take());
        self.semaphore.wake_one();
    }
}

impl ProcessSemaphore {
    /// A semaphore of `places` free places (1 to [`MAX_PLACES`]), in a new shared block.
    pub fn new(places: usize) -> Result<ProcessSemaphore, SyncError> {
        if places == 0 || places > MAX_PLACES {
            return Err(SyncError::Places(places));
        }
        let id = random_id();
        let block = SharedBlock::<SemaphoreBlock>::create(c"concurrency-semaphore", |b| {
            // Safety: the block is fresh and not shared yet: nobody else reads or writes it.
            unsafe {
                (*b).magic = SEMAPHORE_MAGIC;
                (*b).id = id;
                (*b).places = places as u32;
                let block = &*b;
                for slot in &block.slots[..places] {
                    slot.lock.init()?;
                }
            }
            Ok(())
        })?;
        Ok(ProcessSemaphore { block: Arc::new(block) })
    }

    /// Rebuilds a handle from what a parent sent (see the module documentation).
    pub fn from_descriptor(d: SharedDescriptor) -> Result<ProcessSemaphore, SyncError> {
        let block = adopt::<SemaphoreBlock>(d, "semaphore", |b| (b.magic, b.id), SEMAPHORE_MAGIC)?;
        Ok(ProcessSemaphore { block: Arc::new(block) })
    }

    /// What this handle serializes to.
    pub fn descriptor(&self) -> SharedDescriptor {
        SharedDescriptor { fd: self.block.raw_fd(), id: self.block.get().id }
    }

    /// The descriptors a spawned child must be given ([`common::process::Process::pass_fds`]).
    pub fn fds(&self) -> [RawFd; 1] {
        [self.block.raw_fd()]
    }

    /// How many places it has.
    pub fn places(&self) -> usize {
        self.block.get().places as usize
    }

    #[inline]
    fn slots(&self) -> &[PlaceSlot] {
        &self.block.get().slots[..self.places()]
    }

    /// `acquire()`: takes a place, sleeping while there is none.
    #[inline]
    pub fn acquire(&self) -> Result<Place<'_>, SyncError> {
        Ok(self.acquire_wait(Wait::Forever)?.expect("a wait for ever ends with a place"))
    }

    /// `acquire(timeout=t)`: `None` if no place came free within `timeout`.
    #[inline]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Place<'_>>, SyncError> {
        self.acquire_wait(Wait::from_timeout(timeout))
    }

    /// `acquire(block=False)`: a place only if one is free now.
    #[inline]
    pub fn try_acquire(&self) -> Result<Option<Place<'_>>, SyncError> {
        self.acquire_wait(Wait::Now)
    }

    #[inline]
    fn acquire_wait(&self, wait: Wait) -> Result<Option<Place<'_>>, SyncError> {
        if let Some(place) = self.take_free_place()? {
            return Ok(Some(place));
        }
        if wait.expired() {
            return Ok(None);
        }
        let b = self.block.get();
        loop {
            // Counted as a sleeper *before* the last look at the places: a holder that gives
            // its place back after that look sees the count and bumps the generation, which
            // this futex wait then finds changed (it returns at once) or is woken from.
            let generation = b.generation.load(Ordering::SeqCst);
            b.sleepers.fetch_add(1, Ordering::SeqCst);
            let place = self.take_free_place();
            if !matches!(place, Ok(None)) {
                b.sleepers.fetch_sub(1, Ordering::SeqCst);
                return place;
            }
            if wait.expired() {
                b.sleepers.fetch_sub(1, Ordering::SeqCst);
                return Ok(None);
            }
            let slice = wait.remaining().map_or(DEATH_CHECK, |left| left.min(DEATH_CHECK));
            futex_wait(&b.generation, generation, Some(slice));
            b.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Tries every place once, without waiting. (Inlined: a `Place` returned through memory
    /// costs more than the lock itself.)
    #[inline(always)]
    fn take_free_place(&self) -> Result<Option<Place<'_>>, SyncError> {
        let me = my_pid();
        for (index, slot) in self.slots().iter().enumerate() {
            let Some((taken, guard)) = slot.lock.lock(Wait::Now)? else { continue };
            let recovered_from = match taken {
                Taken::OwnerDied => {
                    self.block.get().recovered.fetch_add(1, Ordering::SeqCst);
                    slot.dead_holder.store(0, Ordering::SeqCst);
                    // 0: it died after clearing its pid, on its way out of the place.
                    Some(slot.holder.load(Ordering::SeqCst) as i32).filter(|&pid| pid != 0)
                }
                // Rarely set: read it before paying for a swap.
                Taken::Clean if slot.dead_holder.load(Ordering::Relaxed) == 0 => None,
                Taken::Clean => match slot.dead_holder.swap(0, Ordering::SeqCst) {
                    0 => None,
                    pid => Some(pid as i32),
                },
            };
            slot.holder.store(me, Ordering::Relaxed);
            return Ok(Some(Place {
                semaphore: self,
                index,
                guard: Some(guard),
                recovered_from: recovered_from.map_or(0, |pid| pid as usize),
                _not_send: PhantomData,
            }));
        }
        Ok(None)
    }

    /// After a place was given back: wakes one sleeper, if any. The unlock must be ordered
    /// before the look at the sleepers' count (the other half of `acquire_wait`'s protocol):
    /// on x86-64 glibc unlocks a robust mutex with `xchg`, a full barrier already; elsewhere a
    /// full fence does it. With nobody asleep, a release makes no system call.
    #[inline]
    fn wake_one(&self) {
        let b = self.block.get();
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(Ordering::SeqCst);
        if b.sleepers.load(Ordering::SeqCst) > 0 {
            b.generation.fetch_add(1, Ordering::SeqCst);
            futex_wake(&b.generation, 1);
        }
    }

    /// `get_value()`: the free places now, a snapshot. A place whose holder died counts as
    /// free: it is looked at (a lock that does not wait), given back, and the next process to
    /// take it is told who died ([`Place::recovered_from`]).
    pub fn value(&self) -> Result<usize, SyncError> {
        let mut free = 0;
        for slot in self.slots() {
            match slot.lock.lock(Wait::Now)? {
                None => {}
                Some((taken, guard)) => {
                    if taken == Taken::OwnerDied {
                        self.block.get().recovered.fetch_add(1, Ordering::SeqCst);
                        slot.dead_holder
                            .store(slot.holder.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    slot.holder.store(0, Ordering::SeqCst);
                    drop(guard);
                    // Someone may have found the place taken by this look and gone to sleep.
                    self.wake_one();
                    free += 1;
                }
            }
        }
        Ok(free)
    }

    /// The pids holding a place now (0 for none), place by place: a snapshot.
    pub fn holders(&self) -> Vec<i32> {
        self.slots().iter().map(|s| s.holder.load(Ordering::SeqCst) as i32).collect()
    }

    /// How many places have come back from holders that died holding them.
    pub fn recovered(&self) -> usize {
        self.block.get().recovered.load(Ordering::SeqCst) as usize
    }
}

impl Serialize for ProcessSemaphore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.descriptor().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProcessSemaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProcessSemaphore, D::Error> {
        let descriptor = SharedDescriptor::deserialize(d)?;
        ProcessSemaphore::from_descriptor(descriptor).map_err(serde::de::Error::custom)
    }
}

/// An event shared by processes: a flag in shared memory, waited on with a futex. Clones are
/// handles on the same event.
#[derive(Debug, Clone)]
pub struct ProcessEvent {
    block: Arc<SharedBlock<EventBlock>>,
}

impl ProcessEvent {
    /// An event whose flag is down, in a new shared block.
    pub fn new() -> Result<ProcessEvent, SyncError> {
        let id = random_id();
        let block = SharedBlock::<EventBlock>::create(c"concurrency-event", |b| {
            // Safety: the block is fresh and not shared yet.
            unsafe {
                (*b).magic = EVENT_MAGIC;
                (*b).id = id;
            }
            Ok(())
        })?;
        Ok(ProcessEvent { block: Arc::new(block) })
    }

    /// Rebuilds a handle from what a parent sent.
    pub fn from_descriptor(d: SharedDescriptor) -> Result<ProcessEvent, SyncError> {
        let block = adopt::<EventBlock>(d, "event", |b| (b.magic, b.id), EVENT_MAGIC)?;
        Ok(ProcessEvent { block: Arc::new(block) })
    }

    /// What this handle serializes to.
    pub fn descriptor(&self) -> SharedDescriptor {
        SharedDescriptor { fd: self.block.raw_fd(), id: self.block.get().id }
    }

    /// The descriptors a spawned child must be given.
    pub fn fds(&self) -> [RawFd; 1] {
        [self.block.raw_fd()]
    }

    fn flag(&self) -> &AtomicU32 {
        &self.block.get().flag
    }

    /// `is_set()`.
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::SeqCst) == 1
    }

    /// `set()`: raises the flag and wakes every process (and thread) waiting for it.
    pub fn set(&self) {
        self.flag().store(1, Ordering::SeqCst);
        futex_wake(self.flag(), i32::MAX);
    }

    /// `clear()`: lowers the flag.
    pub fn clear(&self) {
        self.flag().store(0, Ordering::SeqCst);
    }

    /// `wait()`: sleeps (state `S`, in a futex) until the flag is raised. Always `true`.
    pub fn wait(&self) -> bool {
        self.wait_until(Wait::Forever)
    }

    /// `wait(timeout)`: the flag at the end: `false` when the time ran out first.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Wait::from_timeout(timeout))
    }

    fn wait_until(&self, wait: Wait) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            if wait.expired() {
                return false;
            }
            // Sleeps only while the word is still 0: a `set` between the check above and this
            // call makes it return at once.
            futex_wait(self.flag(), 0, wait.remaining());
        }
    }
}

impl Serialize for ProcessEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.descriptor().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProcessEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProcessEvent, D::Error> {
        let descriptor = SharedDescriptor::deserialize(d)?;
        ProcessEvent::from_descriptor(descriptor).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;

    #[test]
    fn ten_threads_through_three_places_are_never_more_than_three_inside() {
        let sem = ProcessSemaphore::new(3).unwrap();
        let (inside, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..10 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let _place = sem.acquire().unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(max.load(Ordering::SeqCst) <= 3);
        assert_eq!(sem.value().unwrap(), 3);
    }

    #[test]
    fn a_full_semaphore_refuses_at_once_or_after_the_timeout() {
        let sem = ProcessSemaphore::new(1).unwrap();
        let place = sem.acquire().unwrap();
        assert_eq!(place.index(), 0);
        assert!(sem.try_acquire().unwrap().is_none());
        let began = Instant::now();
        assert!(sem.acquire_timeout(Duration::from_millis(30)).unwrap().is_none());
        assert!(began.elapsed() >= Duration::from_millis(30));
        assert_eq!(sem.value().unwrap(), 0);
        assert_eq!(sem.holders(), vec![std::process::id() as i32]);
        drop(place);
        assert_eq!(sem.value().unwrap(), 1);
        assert!(ProcessSemaphore::new(0).is_err());
        assert!(ProcessSemaphore::new(MAX_PLACES + 1).is_err());
    }

    #[test]
    fn a_place_whose_holder_thread_ended_holding_it_comes_back_and_the_taker_is_told() {
        // For the kernel, a thread that ends holding a robust mutex is a holder that died (as
        // a process killed with SIGKILL is): the fork version runs in the semaphore demo.
        let sem = ProcessSemaphore::new(1).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(sem.acquire().unwrap())).join().unwrap();
        });
        let place = sem.acquire_timeout(Duration::from_secs(10)).unwrap().expect("the place");
        assert_eq!(place.recovered_from(), Some(std::process::id() as i32));
        assert_eq!(sem.recovered(), 1);
    }

    #[test]
    fn a_sleeper_gets_the_place_of_a_holder_that_ended_holding_it() {
        let sem = ProcessSemaphore::new(1).unwrap();
        let holder_gone = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let (sem, holder_gone) = (&sem, &holder_gone);
            s.spawn(move || {
                std::mem::forget(sem.acquire().unwrap());
                holder_gone.wait();
            });
            holder_gone.wait();
            // The holder's thread is ending (or has ended) with the place: this sleep is
            // ended by a death check, not by a release.
            let place = sem.acquire().unwrap();
            assert!(place.recovered_from().is_some());
        });
    }

    #[test]
    fn a_handle_rebuilt_from_its_descriptor_is_the_same_semaphore_and_event() {
        let sem = ProcessSemaphore::new(2).unwrap();
        let json = serde_json::to_string(&sem).unwrap();
        let again: ProcessSemaphore = serde_json::from_str(&json).unwrap();
        let _a = again.acquire().unwrap();
        assert_eq!(sem.value().unwrap(), 1);

        let event = ProcessEvent::new().unwrap();
        let json = serde_json::to_string(&event).unwrap();
        let other: ProcessEvent = serde_json::from_str(&json).unwrap();
        other.set();
        assert!(event.is_set());

        let wrong = SharedDescriptor { id: sem.descriptor().id ^ 1, ..sem.descriptor() };
        assert!(ProcessSemaphore::from_descriptor(wrong).is_err());
        let not_open = SharedDescriptor { fd: 100_000, id: 1 };
        assert!(ProcessEvent::from_descriptor(not_open).is_err());
    }

    #[test]
    fn an_unset_process_events_wait_is_false_after_the_timeout_and_set_wakes_every_waiter() {
        let event = ProcessEvent::new().unwrap();
        let began = Instant::now();
        assert!(!event.wait_timeout(Duration::from_millis(30)));
        assert!(began.elapsed() >= Duration::from_millis(30));
        let woke = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    assert!(event.wait());
                    woke.fetch_add(1, Ordering::SeqCst);
                });
            }
            event.set();
        });
        assert_eq!(woke.load(Ordering::SeqCst), 4);
        event.clear();
        assert!(!event.wait_timeout(Duration::ZERO));
    }
}
