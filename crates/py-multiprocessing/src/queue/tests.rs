//! The queue's insides: a lock holder dying between or inside frames, and `join_timeout` given
//! up while it sleeps. Threads at most (forking inside the multi-threaded test runner is
//! unsafe); the rest is tested through the public API in `tests/api/queue.rs`, and processes
//! through the `joinable-queue` demo.
use std::time::Instant;

use super::*;
use crate::shm::Wait;

/// A thread takes the writer or the reader lock, does `inside`, and ends without unlocking:
/// for the kernel, a holder that died (the robust mutex passes on, and the next holder is told).
fn die_holding(core: &Arc<Core>, writer: bool, inside: impl FnOnce(&Core) + Send + 'static) {
    let core = core.clone();
    std::thread::spawn(move || {
        let guard = core.lock(writer, Wait::Forever).unwrap();
        inside(&core);
        std::mem::forget(guard);
    })
    .join()
    .unwrap();
}

#[test]
fn a_reader_that_dies_between_frames_harms_nobody() {
    let q: Queue<i32> = Queue::new(0).unwrap();
    die_holding(&q.core, false, |_| {});
    assert!(matches!(q.get_nowait(), Err(QueueError::Empty)));
    q.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
}

#[test]
fn a_reader_that_dies_inside_a_read_breaks_the_queue_for_everyone() {
    let q: Queue<i32> = Queue::new(0).unwrap();
    q.put(1).unwrap();
    // Dies as if killed inside read(2): whether the bytes left the pipe is unknown.
    die_holding(&q.core, false, |core| core.ctl().reader_busy.store(1, Ordering::SeqCst));
    assert!(matches!(q.get(), Err(QueueError::Broken(_))));
    assert!(matches!(q.get_nowait(), Err(QueueError::Broken(_))));
}

#[test]
fn a_writer_that_dies_inside_a_big_frame_does_not_make_readers_hang() {
    let q: Queue<String> = Queue::new(0).unwrap();
    // Dies with half the frame written.
    die_holding(&q.core, true, |core| {
        let frame = [&10_004u32.to_le_bytes()[..], &[b'x'; 5000]].concat();
        core.ctl().puts.fetch_add(1, Ordering::SeqCst);
        core.ctl().writer_busy.store(1, Ordering::SeqCst);
        nix::unistd::write(&core.write, &frame).unwrap();
    });
    assert!(matches!(q.get(), Err(QueueError::Broken(_))));
}

#[test]
fn join_timeout_reports_the_unfinished_count_when_it_gives_up_not_when_it_began() {
    let q: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            // Once the main thread sleeps in join_timeout, one task is done.
            let deadline = Instant::now() + Duration::from_secs(30);
            while q.core.ctl().join_waiters.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "join_timeout never began to wait");
                std::thread::yield_now();
            }
            q.get().unwrap();
            q.task_done().unwrap();
        })
    };
    let joined = q.join_timeout(Duration::from_millis(300));
    assert!(matches!(joined, Err(QueueError::Timeout { unfinished: 1 })), "{joined:?}");
    consumer.join().unwrap();
}
