//! semaphore — [`ProcessSemaphore`], Python's `multiprocessing.Semaphore`: one robust mutex
//! per place.
//!
//! A [`SharedBlock`] of `n` places, each a robust, process-shared mutex and its holder's pid.
//! `acquire` takes the first free place (`pthread_mutex_trylock` on each, no system call), and
//! sleeps on a futex, the block's *generation* counter, while every place is taken; giving a
//! place back unlocks it and, when someone sleeps, bumps the generation and wakes one sleeper.
//!
//! Why a mutex per place rather than one counter: the kernel releases the robust mutexes a
//! thread holds when it dies, however it dies (even by SIGKILL), and *tells* the next process
//! to lock one (`EOWNERDEAD`; [`Place::recovered_from`] names the dead holder). A bare counter,
//! as CPython's `sem_open` semaphore in `/dev/shm/sem.NAME`, does not know who took a place: a
//! holder killed inside takes its place for good, and once every place is lost every later
//! `acquire` sleeps for ever. The kernel wakes no one on our generation counter for a dead
//! holder, so every sleep is cut into slices of [`DEATH_CHECK`], each ending with a new look.
//!
//! The price of knowing the holder: a place is given back by the thread that took it, by
//! dropping its [`Place`] (a guard, neither `Send` nor clonable). So it cannot be released by
//! someone else, nor once too often (bounded by construction, like `BoundedSemaphore`), and it
//! has at most [`MAX_PLACES`] places.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{SharedDescriptor, SyncError, shared_handle};
use crate::shm::{
    RobustGuard, RobustMutex, Shareable, SharedBlock, Taken, Wait, futex_wait, futex_wake, own_pid,
    random_id,
};

pub const MAX_PLACES: usize = 64;
/// The longest a dead holder's place may stay unnoticed while processes sleep in `acquire`.
const DEATH_CHECK: Duration = Duration::from_millis(20);

const SEMAPHORE_MAGIC: u64 = u64::from_be_bytes(*b"CDsem\0\0\x01");

#[repr(C)]
struct PlaceSlot {
    lock: RobustMutex,
    /// The pid of the process holding the place, 0 when free. Written under the place's lock.
    holder: AtomicU32,
    /// The pid of a holder that died holding the place, noticed by [`ProcessSemaphore::value`]
    /// before anyone took the place again: the next taker is told.
    dead_holder: AtomicU32,
}

#[repr(C)]
struct SemaphoreBlock {
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

/// A counting semaphore shared by processes, whose places come back when their holder dies.
/// Clones are handles on the same semaphore.
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

    /// The pid of the holder that died holding this place before it came to us (the kernel
    /// released it and told us: `EOWNERDEAD`); `None` for a place given back normally.
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

    #[inline]
    fn slots(&self) -> &[PlaceSlot] {
        let b = self.block.get();
        &b.slots[..b.places as usize]
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
        let b = self.block.get();
        while !wait.expired() {
            // Counted as a sleeper *before* the last look at the places: a holder that gives
            // its place back after that look sees the count and bumps the generation, which
            // this futex wait then finds changed (it returns at once) or is woken from.
            let generation = b.generation.load(Ordering::SeqCst);
            b.sleepers.fetch_add(1, Ordering::SeqCst);
            let place = self.take_free_place();
            if matches!(place, Ok(None)) && !wait.expired() {
                let slice = wait.remaining().map_or(DEATH_CHECK, |left| left.min(DEATH_CHECK));
                futex_wait(&b.generation, generation, Some(slice));
            }
            b.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !matches!(place, Ok(None)) {
                return place;
            }
        }
        Ok(None)
    }

    /// Tries every place once, without waiting. (Inlined: a `Place` returned through memory
    /// costs more than the lock itself.)
    #[inline(always)]
    fn take_free_place(&self) -> Result<Option<Place<'_>>, SyncError> {
        let me = own_pid();
        for (index, slot) in self.slots().iter().enumerate() {
            let Some((taken, guard)) = slot.lock.lock(Wait::Now)? else { continue };
            let recovered_from = match taken {
                Taken::OwnerDied => {
                    self.block.get().recovered.fetch_add(1, Ordering::SeqCst);
                    slot.dead_holder.store(0, Ordering::SeqCst);
                    // 0 if it died after clearing its pid, on its way out of the place.
                    slot.holder.load(Ordering::SeqCst)
                }
                // Rarely set: read it before paying for a swap.
                Taken::Clean if slot.dead_holder.load(Ordering::Relaxed) == 0 => 0,
                Taken::Clean => slot.dead_holder.swap(0, Ordering::SeqCst),
            };
            slot.holder.store(me, Ordering::Relaxed);
            return Ok(Some(Place {
                semaphore: self,
                index,
                guard: Some(guard),
                recovered_from: recovered_from as usize,
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
            let Some((taken, guard)) = slot.lock.lock(Wait::Now)? else { continue };
            if taken == Taken::OwnerDied {
                self.block.get().recovered.fetch_add(1, Ordering::SeqCst);
                slot.dead_holder.store(slot.holder.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            slot.holder.store(0, Ordering::SeqCst);
            drop(guard);
            // Someone may have found the place taken by this look and gone to sleep.
            self.wake_one();
            free += 1;
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

shared_handle!(ProcessSemaphore, SemaphoreBlock, "semaphore", SEMAPHORE_MAGIC);
