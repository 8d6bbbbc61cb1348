//! shm: a block two mappings share, a robust mutex whose holder dies, and waits.
#![cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use py_multiprocessing::shm::{PassedError, RobustMutex, Shareable, SharedBlock, Taken, Wait};

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
    // Safety: the number names a block of the same type, as a passed one would.
    let b = unsafe { SharedBlock::<Counter>::map_passed(a.raw_fd()) }.unwrap();
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.raw_fd(), b.raw_fd(), "mapped in a duplicate of its own");
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
fn a_passed_number_that_is_not_open_or_names_no_block_is_refused() {
    // Safety: nothing is read from a block that is refused.
    let not_open = unsafe { SharedBlock::<Counter>::map_passed(100_000) }.unwrap_err();
    assert!(matches!(not_open, PassedError::NotOpen { fd: 100_000, errno: Errno::EBADF }));
    assert!(not_open.to_string().contains("pass_fds"), "{not_open}");
    let (read, _write) = nix::unistd::pipe().unwrap();
    // Safety: as above.
    let a_pipe = unsafe { SharedBlock::<Counter>::map_passed(read.as_raw_fd()) }.unwrap_err();
    assert!(matches!(a_pipe, PassedError::Refused(e) if e.errno == Errno::EINVAL), "{a_pipe}");
}

#[test]
fn a_wait_of_now_has_expired_and_one_of_a_minute_has_not() {
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

#[test]
fn a_timed_lock_of_a_held_mutex_gives_up_at_its_deadline_not_before() {
    let block = SharedBlock::<Counter>::create(c"test-timed", |c| {
        // Safety: the block is not shared yet.
        unsafe { (*c).lock.init() }
    })
    .unwrap();
    let lock = &block.get().lock;
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _guard = lock.lock(Wait::Forever).unwrap();
            held.send(()).unwrap();
            // Let go after 10 s at the latest: a deadline never reached fails, not hangs.
            let _ = released.recv_timeout(Duration::from_secs(10));
        });
        is_held.recv().unwrap();
        let began = std::time::Instant::now();
        let got = lock.lock(Wait::from_timeout(Duration::from_millis(200))).unwrap();
        let waited = began.elapsed();
        release.send(()).unwrap();
        assert!(got.is_none(), "the holder still held it");
        // The deadline is on CLOCK_REALTIME, `waited` on the monotonic clock: a few ms apart.
        assert!(waited >= Duration::from_millis(190), "gave up early, after {waited:?}");
        assert!(waited < Duration::from_secs(5), "gave up late, after {waited:?}");
    });
    // A wait longer than a TimeSpec's nanoseconds can count (292 years) takes a free lock too.
    let millennium = Duration::from_secs(1000 * 365 * 86_400);
    assert!(lock.lock(Wait::from_timeout(millennium)).unwrap().is_some());
}
