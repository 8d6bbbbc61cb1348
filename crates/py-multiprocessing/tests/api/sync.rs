//! sync: the process semaphore and event, between threads of one process (forking inside the
//! multi-threaded test runner is unsafe: the semaphore and event demos test processes).
#![cfg(target_os = "linux")]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use py_multiprocessing::sync::{MAX_PLACES, ProcessEvent, ProcessSemaphore, SharedDescriptor};

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
