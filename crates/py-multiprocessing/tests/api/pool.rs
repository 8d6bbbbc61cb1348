//! pool: thread pools through the public API. Forking inside the multi-threaded test runner is
//! unsafe, so process pools are tested through the `pool` demo (the workspace's tests/pool.rs).
#![cfg(target_os = "linux")]
use std::sync::{Condvar, Mutex, mpsc};
use std::time::Duration;

use anyhow::Context;
use py_multiprocessing::pool::{
    AsyncResult, HANDLER_THREAD, MAX_MESSAGE, PoolError, PoolOptions, Task, ThreadPool,
    default_chunksize,
};
use serde_json::{Value, json};

fn square(x: Value) -> anyhow::Result<Value> {
    let n = x.as_i64().context("square needs a number")?;
    Ok(json!(n * n))
}
fn nap(x: Value) -> anyhow::Result<Value> {
    std::thread::sleep(Duration::from_millis(x.as_u64().unwrap_or(10)));
    Ok(json!(std::thread::current().name().unwrap_or("?")))
}
fn fail(_: Value) -> anyhow::Result<Value> {
    anyhow::bail!("no luck")
}
static SQUARE: Task = Task::new("square", square);
static NAP: Task = Task::new("nap", nap);
static FAIL: Task = Task::new("fail", fail);
#[test]
fn map_returns_results_in_the_order_of_the_items_whatever_the_chunks() {
    let pool = ThreadPool::new(3).unwrap();
    for chunksize in [None, Some(1), Some(7), Some(1000)] {
        let got: Vec<Value> = pool.map_chunked(&SQUARE, 0..100, chunksize).unwrap();
        let want: Vec<Value> = (0..100i64).map(|i| json!(i * i)).collect();
        assert_eq!(got, want, "chunksize {chunksize:?}");
        let typed: Vec<u64> = pool.map_chunked(&SQUARE, 0..100, chunksize).unwrap();
        assert_eq!(typed, (0..100u64).map(|i| i * i).collect::<Vec<_>>());
    }
    assert_eq!(pool.map::<_, Value>(&SQUARE, Vec::<i64>::new()).unwrap(), Vec::<Value>::new());
    let err = pool.map::<_, Value>(&SQUARE, vec![json!(1), json!("x"), json!(3)]).unwrap_err();
    assert!(err.to_string().contains("on item 1"), "{err}");
    // A result that is not the type asked for fails the map, with serde's words.
    let err = pool.map::<_, i8>(&SQUARE, [3, 30]).unwrap_err();
    assert!(err.to_string().contains("900"), "{err}");
}

fn typed_square(x: i64) -> anyhow::Result<i64> {
    anyhow::ensure!(x != 13, "unlucky");
    assert_ne!(x, 14, "a panic on 14");
    Ok(x * x)
}
static TYPED_SQUARE: Task = py_multiprocessing::typed_task!("typed-square", typed_square);
static TYPED_PAIR: Task =
    py_multiprocessing::typed_task!("typed-pair", |(name, n): (String, u32)| Ok(format!(
        "{name}{n}"
    )));

#[test]
fn a_typed_task_takes_and_gives_its_own_types_in_map_and_json_in_apply() {
    let pool = ThreadPool::new(2).unwrap();
    for chunksize in [None, Some(1), Some(5)] {
        let got: Vec<i64> = pool.map_chunked(&TYPED_SQUARE, 0..13, chunksize).unwrap();
        assert_eq!(got, (0..13).map(|x| x * x).collect::<Vec<_>>(), "chunksize {chunksize:?}");
        let got: Vec<Value> = pool.map_chunked(&TYPED_SQUARE, -3..3, chunksize).unwrap();
        assert_eq!(got, [9, 4, 1, 0, 1, 4].map(|x| json!(x)));
        // Not its own types: the same numbers, never a u32 read as postcard's zigzag i64.
        let got: Vec<u64> = pool.map_chunked(&TYPED_SQUARE, 0..5u32, chunksize).unwrap();
        assert_eq!(got, [0, 1, 4, 9, 16]);
    }
    let pairs = [("a", 1), ("b\"q", 2)];
    assert_eq!(pool.map::<_, String>(&TYPED_PAIR, pairs).unwrap(), ["a1", "b\"q2"]);
    assert_eq!(pool.apply(&TYPED_SQUARE, 7).unwrap(), json!(49));
    assert_eq!(pool.apply(&TYPED_PAIR, ("x", 3)).unwrap(), json!("x3"));
    // Its errors, its panics and its arguments of the wrong type are the item's errors.
    for (items, what) in [
        (vec![json!(12), json!(13)], "on item 1: unlucky"),
        (vec![json!(1), json!(2), json!(14)], "on item 2: panicked: assertion"),
        (vec![json!(1), json!("x")], "on item 1: not an argument of type i64"),
        (vec![json!(1), json!(2.5)], "on item 1: not an argument of type i64"),
    ] {
        let err = pool.map::<_, i64>(&TYPED_SQUARE, &items).unwrap_err();
        assert!(err.to_string().contains(what), "{items:?}: {err}");
    }
    let err = pool.apply(&TYPED_SQUARE, "x").unwrap_err();
    assert!(err.to_string().contains("not an argument of type i64"), "{err}");
    pool.close();
    pool.join().unwrap();
}

/// Says it holds `said` items and gives `gives`.
struct Liar {
    said: usize,
    gives: std::ops::Range<usize>,
}

impl Iterator for Liar {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        self.gives.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.said, Some(self.said))
    }
}

#[test]
fn the_items_are_counted_not_taken_from_the_iterators_word() {
    let pool = ThreadPool::new(2).unwrap();
    let odd = (0..12).filter(|x| x % 2 == 1);
    let got: Vec<i64> = pool.map_chunked(&TYPED_SQUARE, odd, Some(3)).unwrap();
    assert_eq!(got, [1, 9, 25, 49, 81, 121]);
    for (said, gives) in [(10, 0..7), (1, 0..2)] {
        let liar = Liar { said, gives: gives.clone() };
        let got: Vec<u64> = pool.map_chunked(&TYPED_SQUARE, liar, Some(4)).unwrap();
        assert_eq!(got, gives.map(|x| (x * x) as u64).collect::<Vec<_>>(), "{said} said");
    }
    pool.close();
    pool.join().unwrap();
}

/// Does the first chunk to fail fail the map at once, as in Python, while a chunk before it still
/// runs? That chunk is held until the map has returned (or for 10 s, failing it).
#[test]
fn the_first_chunk_to_fail_fails_the_map_without_waiting_for_the_chunks_before_it() {
    static RELEASED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
    fn hold_or_fail(x: Value) -> anyhow::Result<Value> {
        anyhow::ensure!(x != json!("fail"), "no luck");
        let held = RELEASED.0.lock().unwrap();
        let (released, _) =
            RELEASED.1.wait_timeout_while(held, Duration::from_secs(10), |r| !*r).unwrap();
        anyhow::ensure!(*released, "held for 10 s: the map waited for this chunk");
        Ok(x)
    }
    static HOLD_OR_FAIL: Task = Task::new("hold-or-fail", hold_or_fail);
    let pool = ThreadPool::new(2).unwrap();
    let items = [json!("hold"), json!("fail")];
    let err = pool.map_chunked::<_, Value>(&HOLD_OR_FAIL, items, Some(1)).unwrap_err();
    *RELEASED.0.lock().unwrap() = true;
    RELEASED.1.notify_all();
    assert!(err.to_string().contains("no luck"), "{err}");
}

#[test]
fn the_chunksize_is_pythons() {
    assert_eq!(default_chunksize(100, 3), 9); // divmod(100, 12) = (8, 4) -> 9
    assert_eq!(default_chunksize(12, 3), 1);
    assert_eq!(default_chunksize(1, 8), 1);
    assert_eq!(default_chunksize(0, 2), 1);
}

#[test]
fn submitting_after_close_and_joining_before_close_are_errors() {
    let pool = ThreadPool::new(2).unwrap();
    assert_eq!(pool.join(), Err(PoolError::StillRunning));
    let r = pool.apply_async(&NAP, 20).unwrap();
    pool.close();
    assert_eq!(pool.apply_async(&SQUARE, 2).unwrap_err(), PoolError::NotRunning);
    assert_eq!(pool.map::<_, Value>(&SQUARE, [1]).unwrap_err(), PoolError::NotRunning);
    pool.join().unwrap();
    assert!(r.ready(), "join waited for the task submitted before close");
    assert_eq!(r.successful(), Ok(true));
    pool.join().unwrap(); // a second join returns at once
    assert!(pool.to_string().contains("state=CLOSE"), "{pool}");
}

#[test]
fn callbacks_run_in_the_result_handler_thread_before_get_returns() {
    let pool = ThreadPool::new(2).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let ok = pool
        .apply_async_with(
            &SQUARE,
            9,
            Some(Box::new(move |v| {
                tx.send((v.clone(), std::thread::current().name().map(String::from))).unwrap()
            })),
            None,
        )
        .unwrap();
    let bad = pool
        .apply_async_with(
            &FAIL,
            (),
            None,
            Some(Box::new(move |e| {
                tx2.send((json!(e.to_string()), std::thread::current().name().map(String::from)))
                    .unwrap()
            })),
        )
        .unwrap();
    assert_eq!(ok.get().unwrap(), json!(81));
    assert!(matches!(bad.get(), Err(PoolError::Task { .. })));
    assert_eq!(bad.successful(), Ok(false));
    let mut seen: Vec<(Value, Option<String>)> = rx.try_iter().collect();
    seen.sort_by_key(|(v, _)| v.to_string());
    assert_eq!(seen.len(), 2, "both callbacks ran before get returned");
    for (_, thread) in &seen {
        assert_eq!(thread.as_deref(), Some(HANDLER_THREAD));
    }
    assert!(seen.iter().any(|(v, _)| v == &json!(81)));
    assert!(seen.iter().any(|(v, _)| v.as_str().is_some_and(|s| s.contains("no luck"))));
}

#[test]
fn get_timeout_and_successful_before_the_result_is_ready() {
    let pool = ThreadPool::new(1).unwrap();
    let r = pool.apply_async(&NAP, 300).unwrap();
    assert_eq!(r.get_timeout(Duration::from_millis(10)), Err(PoolError::Timeout));
    assert_eq!(r.successful(), Err(PoolError::NotReady));
    assert!(!r.ready());
    assert!(r.get_timeout(Duration::from_secs(60)).is_ok());
}

#[test]
fn a_short_backlog_waits_for_the_first_free_worker_and_maxtasksperchild_replaces_workers() {
    let options = PoolOptions { maxtasksperchild: Some(2), ..PoolOptions::new(2) };
    let pool = ThreadPool::with_options(options).unwrap();
    let names: Vec<AsyncResult> = (0..6).map(|_| pool.apply_async(&NAP, 5).unwrap()).collect();
    let names: Vec<String> =
        names.iter().map(|r| r.get().unwrap().as_str().unwrap().to_string()).collect();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 3, "six tasks, two per worker: at least three workers {names:?}");
    for name in &distinct {
        assert!(names.iter().filter(|n| *n == name).count() <= 2, "{names:?}");
    }
}

#[test]
fn terminate_fails_the_waiting_tasks_and_drop_waits_for_the_rest() {
    let pool = ThreadPool::new(1).unwrap();
    let running = pool.apply_async(&NAP, 100).unwrap();
    let waiting: Vec<_> = (0..3).map(|_| pool.apply_async(&NAP, 100).unwrap()).collect();
    pool.terminate();
    assert!(running.ready());
    for w in &waiting {
        assert!(matches!(w.get(), Err(PoolError::Terminated { .. }) | Ok(_)), "{w:?}");
    }
    assert!(waiting.iter().any(|w| matches!(w.get(), Err(PoolError::Terminated { .. }))));
    assert_eq!(pool.apply(&SQUARE, 1).unwrap_err(), PoolError::NotRunning);

    let done: Vec<AsyncResult> = {
        let pool = ThreadPool::new(2).unwrap();
        (0..4).map(|_| pool.apply_async(&NAP, 20).unwrap()).collect()
    };
    assert!(done.iter().all(|r| r.successful() == Ok(true)), "drop waited: {done:?}");
}

#[test]
fn an_unknown_task_a_panic_and_bad_arguments_are_errors_of_that_task_only() {
    static UNLISTED: Task = Task::new("unlisted", |_| Ok(Value::Null));
    fn boom(_: Value) -> anyhow::Result<Value> {
        panic!("kaboom")
    }
    static BOOM: Task = Task::new("boom", boom);
    let pool = ThreadPool::new(1).unwrap();
    assert_eq!(pool.apply(&UNLISTED, ()).unwrap(), Value::Null);
    let e = pool.apply(&BOOM, ()).unwrap_err();
    assert!(e.to_string().contains("kaboom"), "{e}");
    let e = pool.apply(&SQUARE, "seven").unwrap_err();
    assert!(e.to_string().contains("square needs a number"), "{e}");
    assert_eq!(pool.apply(&SQUARE, 7).unwrap(), json!(49));
    let huge = "x".repeat(MAX_MESSAGE);
    let e = pool.apply(&SQUARE, huge).unwrap_err();
    assert!(matches!(e, PoolError::Invalid(_)) && e.to_string().contains("limit"), "{e}");
    assert_eq!(pool.apply(&SQUARE, 8).unwrap(), json!(64), "the pool goes on");
    assert!(matches!(ThreadPool::new(0), Err(PoolError::Invalid(_))));
}

#[test]
fn a_worker_died_error_names_the_worker_the_pid_and_the_signal() {
    let e = PoolError::WorkerDied {
        task: "slow".into(),
        job: 7,
        worker: "pool-worker-2".into(),
        pid: 4182,
        exitcode: Some(-9),
    };
    assert_eq!(
        e.to_string(),
        "worker pool-worker-2 (pid 4182) was killed by SIGKILL while running task slow (job 7)"
    );
}
