//! Python's `queue` module for threads, through the crate's public API.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use py_threading::queue::{LifoQueue, PriorityQueue, Queue, QueueError};

const SHORT: Duration = Duration::from_millis(20);

#[test]
fn the_three_orders_are_pythons() {
    let fifo = Queue::new(0);
    let lifo = LifoQueue::new(0);
    for i in [1, 3, 2] {
        fifo.put(i).unwrap();
        lifo.put(i).unwrap();
    }
    let drain = |get: &dyn Fn() -> Result<i32, QueueError>| {
        std::iter::from_fn(|| get().ok()).collect::<Vec<_>>()
    };
    assert_eq!(drain(&|| fifo.get_nowait()), [1, 3, 2]);
    assert_eq!(drain(&|| lifo.get_nowait()), [2, 3, 1]);
    let priority = PriorityQueue::new(0);
    for item in [(2, "p2"), (1, "p1"), (3, "p3")] {
        priority.put(item).unwrap();
    }
    let out: Vec<&str> = std::iter::from_fn(|| priority.get_nowait().ok()).map(|p| p.1).collect();
    assert_eq!(out, ["p1", "p2", "p3"]);
}

#[test]
fn full_and_empty_come_at_once_without_blocking_and_after_a_timeout_with_it() {
    let q = Queue::new(1);
    q.put("a").unwrap();
    assert!(q.full());
    let refused = q.put_nowait("b").unwrap_err();
    assert_eq!((refused.error, refused.item), (QueueError::Full, "b"));
    assert_eq!(q.put_timeout("c", SHORT).unwrap_err().error, QueueError::Full);
    assert_eq!(q.get().unwrap(), "a");
    assert_eq!(q.get_nowait(), Err(QueueError::Empty));
    assert_eq!(q.get_timeout(SHORT), Err(QueueError::Empty));
}

#[test]
fn task_done_once_too_often_is_an_error_and_join_waits_for_the_last_one() {
    let q = Arc::new(Queue::new(0));
    q.put(1).unwrap();
    q.put(2).unwrap();
    let worker = {
        let q = q.clone();
        std::thread::spawn(move || {
            for _ in 0..2 {
                q.get().unwrap();
                q.task_done().unwrap();
            }
        })
    };
    q.join();
    assert_eq!(q.unfinished_tasks(), 0);
    worker.join().unwrap();
    assert_eq!(q.task_done(), Err(QueueError::TaskDoneTooManyTimes));
    assert!(q.join_timeout(SHORT));
    q.put(3).unwrap();
    assert!(!q.join_timeout(SHORT));
}

#[test]
fn three_producers_and_two_consumers_lose_nothing_repeat_nothing_and_keep_each_order() {
    const EACH: usize = 10_000;
    let q = Queue::new(64);
    let taken = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let q = &q;
                s.spawn(move || (0..EACH).for_each(|i| q.put((p, i)).unwrap()))
            })
            .collect();
        for _ in 0..2 {
            s.spawn(|| {
                let mut mine = Vec::new();
                while let Ok(item) = q.get() {
                    mine.push(item);
                    q.task_done().unwrap();
                }
                taken.lock().unwrap().push(mine);
            });
        }
        // join counts only what was put: first let every producer finish putting.
        producers.into_iter().for_each(|p| p.join().unwrap());
        q.join();
        q.shutdown(false);
    });
    let taken = taken.into_inner().unwrap();
    let all: HashSet<(usize, usize)> = taken.iter().flatten().copied().collect();
    assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 3 * EACH);
    assert_eq!(all.len(), 3 * EACH);
    // Each consumer saw each producer's items in the order they were put.
    for mine in &taken {
        for p in 0..3 {
            let seq: Vec<usize> = mine.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
            assert!(seq.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[test]
fn shutdown_lets_getters_drain_then_says_shutdown_and_refuses_puts() {
    let q = Queue::new(0);
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(q.shutdown(false), 0);
    assert_eq!(q.put(3).unwrap_err().error, QueueError::ShutDown);
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.get(), Ok(2));
    assert_eq!(q.get(), Err(QueueError::ShutDown));
}

#[test]
fn an_immediate_shutdown_drops_the_rest_counts_them_done_and_wakes_a_blocked_getter() {
    let q = Queue::new(0);
    for i in 0..5 {
        q.put(i).unwrap();
    }
    assert_eq!(q.get(), Ok(0));
    assert_eq!(q.shutdown(true), 4);
    // The task taken before is not done yet: join waits for it alone.
    assert_eq!(q.unfinished_tasks(), 1);
    q.task_done().unwrap();
    assert!(q.join_timeout(SHORT));
    // A getter on an empty queue, blocked or about to be, ends with ShutDown, not a hang.
    let empty = Queue::<i32>::new(0);
    std::thread::scope(|s| {
        let getter = s.spawn(|| empty.get());
        empty.shutdown(false);
        assert_eq!(getter.join().unwrap(), Err(QueueError::ShutDown));
    });
}
