//! Python's `threading.Event`, through the crate's public API.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use py_threading::sync::Event;

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
