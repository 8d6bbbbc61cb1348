//! Python's `threading.Semaphore` and `BoundedSemaphore`, through the crate's public API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use py_threading::sync::{BoundedSemaphore, ReleasedTooManyTimes, Semaphore};

#[test]
fn ten_threads_through_a_semaphore_of_three_are_never_more_than_three_inside() {
    let sem = Semaphore::new(3);
    let (inside, max, entered) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| {
                for _ in 0..50 {
                    sem.acquire();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                    sem.release();
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
        sem.acquire_timeout(Duration::from_secs(5)) && sem.acquire_timeout(Duration::from_secs(5))
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
