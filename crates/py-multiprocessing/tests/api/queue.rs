//! queue: `Queue` and `JoinableQueue` through their public API, between threads of one process
//! (forking inside the multi-threaded test runner is unsafe: the `joinable-queue` demo tests
//! processes).
#![cfg(target_os = "linux")]
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use py_multiprocessing::queue::{JoinableQueue, PIPE_CAPACITY, Queue, QueueDescriptor, QueueError};
use py_multiprocessing::shm::Wait;

#[test]
fn items_come_out_in_the_order_they_went_in() {
    let q: Queue<(u32, String)> = Queue::new(0).unwrap();
    for i in 0..100 {
        q.put((i, format!("包子{i}"))).unwrap();
    }
    assert_eq!(q.qsize(), 100);
    for i in 0..100 {
        assert_eq!(q.get().unwrap(), (i, format!("包子{i}")));
    }
    assert!(q.empty());
}

#[test]
fn a_full_queue_refuses_put_nowait_and_an_empty_one_get_nowait() {
    let q: Queue<i32> = Queue::new(3).unwrap();
    for i in 1..=3 {
        q.put(i).unwrap();
    }
    assert!(q.full());
    assert!(matches!(q.put_nowait(4), Err(QueueError::Full)));
    let t = Instant::now();
    assert!(matches!(q.put_timeout(4, Duration::from_millis(50)), Err(QueueError::Full)));
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!((q.get().unwrap(), q.get().unwrap(), q.get().unwrap()), (1, 2, 3));
    assert!(q.empty());
    assert!(matches!(q.get_nowait(), Err(QueueError::Empty)));
    let t = Instant::now();
    assert!(matches!(q.get_timeout(Duration::from_millis(50)), Err(QueueError::Empty)));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // A refused put left the counts as they were: the three places are free again.
    for i in 0..3 {
        q.put_nowait(i).unwrap();
    }
    assert_eq!(q.qsize(), 3);
}

#[test]
fn an_item_beyond_max_message_is_refused_and_nothing_is_written() {
    let q: Queue<String> = Queue::with_max_message(2, 100).unwrap();
    match q.put("x".repeat(200)) {
        Err(QueueError::TooLarge { size, max }) => assert_eq!((size, max), (202, 100)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(q.empty());
    assert!(!q.full());
    q.put("small".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), "small");
}

#[test]
fn encoded_bytes_travel_as_they_are_and_keep_the_frame_limits() {
    let q: Queue<String> = Queue::with_max_message(0, 100_000).unwrap();
    q.put_encoded(b"\"typed\"", Wait::Forever).unwrap();
    assert_eq!(q.get().unwrap(), "typed", "an encoded item is read by get as JSON of T");
    let big: Vec<u8> = (0..90_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    q.put("x".to_string()).unwrap();
    q.put_encoded(&big, Wait::Forever).unwrap();
    q.put_encoded(b"not json\n", Wait::Forever).unwrap();
    assert_eq!(q.get_encoded(Wait::Forever).unwrap(), b"\"x\"", "get_encoded gives put's JSON");
    assert_eq!(q.get_encoded(Wait::Forever).unwrap(), big, "a big frame, whole and in its place");
    assert_eq!(q.get_encoded(Wait::Now).unwrap(), b"not json\n");
    assert!(matches!(q.get_encoded(Wait::Now), Err(QueueError::Empty)));
    let e = q.put_encoded(&[b'x'; 100_001], Wait::Forever).unwrap_err();
    assert!(matches!(e, QueueError::TooLarge { size: 100_001, max: 100_000 }), "{e}");
    assert!(q.empty(), "nothing was written");
}

#[test]
fn a_frame_larger_than_pipe_buf_arrives_whole() {
    let q: Queue<String> = Queue::new(0).unwrap();
    let big = "包".repeat(20_000); // 60,000 bytes of JSON: many PIPE_BUFs
    q.put(&big).unwrap();
    q.put("after".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), big);
    assert_eq!(q.get().unwrap(), "after");
}

#[test]
fn a_frame_larger_than_the_pipe_streams_through_it() {
    let q: Queue<String> = Queue::with_max_message(0, 4 * PIPE_CAPACITY).unwrap();
    q.put("before".to_string()).unwrap();
    // Twice the pipe's capacity: the writer can finish only while a reader reads.
    let huge = "z".repeat(2 * PIPE_CAPACITY);
    let writer = {
        let (q, huge) = (q.clone(), huge.clone());
        std::thread::spawn(move || q.put(huge))
    };
    assert_eq!(q.get().unwrap(), "before");
    assert_eq!(q.get().unwrap(), huge);
    writer.join().unwrap().unwrap();
}

#[test]
fn task_done_more_times_than_items_taken_is_an_error() {
    let q: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    // Nothing taken yet: CPython would accept this call (2 unfinished); the notes say no.
    assert!(matches!(q.task_done(), Err(QueueError::TaskDoneTooManyTimes)));
    q.get().unwrap();
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(QueueError::TaskDoneTooManyTimes)));
    assert_eq!(q.unfinished(), 1);
}

#[test]
fn join_waits_for_the_last_task_done_and_join_timeout_reports_what_is_unfinished() {
    let q: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
    q.join().unwrap(); // nothing put: returns at once
    for i in 0..3 {
        q.put(i).unwrap();
    }
    match q.join_timeout(Duration::from_millis(20)) {
        Err(QueueError::Timeout { unfinished }) => assert_eq!(unfinished, 3),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                q.get().unwrap();
                std::thread::sleep(Duration::from_millis(10));
                q.task_done().unwrap();
            }
        })
    };
    q.join().unwrap();
    assert_eq!(q.unfinished(), 0);
    consumer.join().unwrap();
}

#[test]
fn a_blocked_put_returns_once_a_get_frees_a_place() {
    let q: Queue<i32> = Queue::new(1).unwrap();
    q.put(1).unwrap();
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || q.put(2))
    };
    // Wait until the producer is asleep in put, then free the place.
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.waiting_putters() == 0 {
        assert!(Instant::now() < deadline, "the producer never blocked");
        std::thread::yield_now();
    }
    assert_eq!(q.get().unwrap(), 1);
    producer.join().unwrap().unwrap();
    assert_eq!(q.get().unwrap(), 2);
}

#[test]
fn many_threads_lose_and_duplicate_nothing() {
    let q: Queue<Option<(u32, u32)>> = Queue::new(8).unwrap();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    q.put(Some((p, i))).unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some(item) = q.get().unwrap() {
                    seen.push(item);
                }
                seen
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for _ in 0..2 {
        q.put(None).unwrap(); // one sentinel per consumer
    }
    let mut all: Vec<(u32, u32)> = Vec::new();
    for c in consumers {
        let seen = c.join().unwrap();
        // Per producer, each consumer sees increasing numbers (FIFO).
        for p in 0..3 {
            let mine: Vec<u32> = seen.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {p} out of order");
        }
        all.extend(seen);
    }
    all.sort_unstable();
    let expected: Vec<(u32, u32)> = (0..3).flat_map(|p| (0..2000).map(move |i| (p, i))).collect();
    assert_eq!(all, expected);
}

#[test]
fn a_descriptor_names_its_queue_and_is_adopted_once() {
    let q: Queue<i32> = Queue::new(0).unwrap();
    let d = q.descriptor();
    // The creator already holds it: rebuilding would make two owners of the same fds.
    assert!(matches!(Queue::<i32>::from_descriptor(d), Err(QueueError::BadDescriptor(_))));
    // A joinable queue's descriptor is not a plain queue's, and vice versa.
    let j: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
    assert!(matches!(
        Queue::<i32>::from_descriptor(j.descriptor()),
        Err(QueueError::BadDescriptor(_))
    ));
    // Numbers that are not open here say what to do.
    let wrong = QueueDescriptor { read_fd: 900, write_fd: 901, control_fd: 902, id: 1 };
    let err = Queue::<i32>::from_descriptor(wrong).unwrap_err().to_string();
    assert!(err.contains("pass_fds"), "{err}");
    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(json["read_fd"], d.read_fd);
}

#[test]
fn a_corrupt_length_breaks_the_queue_instead_of_allocating() {
    let q: Queue<String> = Queue::with_max_message(0, 1000).unwrap();
    // A length of 4 GiB written straight into the pipe, as a corrupt writer would.
    // Safety: the queue's write end stays open while `q` lives, longer than the call.
    let write_end = unsafe { BorrowedFd::borrow_raw(q.descriptor().write_fd) };
    nix::unistd::write(write_end, &u32::MAX.to_le_bytes()).unwrap();
    assert!(matches!(q.get_nowait(), Err(QueueError::Broken(_))));
    // And it stays broken for everyone.
    assert!(matches!(q.put("x".to_string()), Err(QueueError::Broken(_))));
}

#[test]
fn a_frame_carries_a_message_id_only_in_a_traced_run() {
    let q: Queue<String> = Queue::new(0).unwrap();
    // Safety: the queue's read end stays open while `q` lives, longer than the test.
    let read_end = unsafe { BorrowedFd::borrow_raw(q.descriptor().read_fd) };
    let mut frame = [0u8; 4 + 8 + 4];
    q.put("ab".to_string()).unwrap();
    // Untraced: the 4-byte length and the JSON `"ab"`, nothing more.
    assert_eq!(nix::unistd::read(read_end, &mut frame).unwrap(), 4 + 4);
    assert_eq!(frame[..8], [4, 0, 0, 0, b'"', b'a', b'b', b'"']);
    common::report::set_tracing(true);
    q.put("ab".to_string()).unwrap();
    common::report::set_tracing(false);
    assert_eq!(nix::unistd::read(read_end, &mut frame).unwrap(), frame.len());
    // The length's top bit says an 8-byte id follows.
    assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()), 4 | 1 << 31);
    let id = u64::from_le_bytes(frame[4..12].try_into().unwrap());
    assert_eq!(id >> 32, u64::from(std::process::id()), "the id names this process");
    assert_eq!(&frame[12..], b"\"ab\"");
}
