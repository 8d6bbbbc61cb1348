//! Part 2: a bounded queue. A `put` into a full queue waits on the `not_full` condition, a
//! `get` on an empty one on `not_empty`; with a timeout they give up with `Full` and `Empty`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::predict;
use common::report;
use common::threads::named;
use py_threading::queue::{Queue, QueueError};
use serde_json::json;

use crate::Cli;

/// Seed 004's `queue.Queue(2)`-style bound.
const MAXSIZE: usize = 2;
/// How long the timed `put` and `get` wait before they give up.
const TIMEOUT: Duration = Duration::from_millis(50);
/// How long main waits for the producer to be seen blocked before it calls that a failure.
const SEEN_BLOCKED_WITHIN: Duration = Duration::from_secs(30);

pub fn run(cli: &Cli) -> Result<()> {
    report::section(format!(
        "2. Queue(maxsize={MAXSIZE}): a third put blocks until a get makes room"
    ));
    let q = Arc::new(Queue::new(MAXSIZE));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let question = format!(
        "Queue(maxsize={MAXSIZE}): the producer puts {} items, main gets one only later. \
         Does the third put return before main's get (阻塞)?",
        MAXSIZE + 1
    );
    let guess =
        predict::ask(&cli.common, "third-put", question, predict::Expect::Choice(&["yes", "no"]));
    // Set by the producer once its last put returned; main reads it just before its get.
    let last_put_returned = Arc::new(AtomicBool::new(false));
    let producer = {
        let q = q.clone();
        let last_put_returned = last_put_returned.clone();
        named::spawn("producer", move || -> Result<()> {
            let _ = tid_tx.send(named::gettid());
            for i in 1..=MAXSIZE + 1 {
                let full = q.full();
                report::event(
                    "putting",
                    json!({ "item": i, "full": full }),
                    if full {
                        format!("q.put({i}) ... (the queue is full: this thread waits in put)")
                    } else {
                        format!("q.put({i})")
                    },
                );
                let began = Instant::now();
                q.put(i).map_err(|e| anyhow::anyhow!("put({i}): {e}"))?;
                if i == MAXSIZE + 1 {
                    last_put_returned.store(true, Ordering::SeqCst);
                }
                if full {
                    let waited = began.elapsed();
                    common::event!("put_returned", { "item": i, "waited_ms": waited.as_secs_f64() * 1000.0 }, "q.put({i}) returned after {} ms", waited.as_millis());
                }
            }
            Ok(())
        })?
    };

    // Wait until the producer is really inside put, asleep; then read its state from /proc.
    let pid = std::process::id() as i32;
    let deadline = Instant::now() + SEEN_BLOCKED_WITHIN;
    let tid = tid_rx.recv_timeout(SEEN_BLOCKED_WITHIN).ok();
    let blocked = loop {
        let row = tid.and_then(|tid| common::ps::thread(pid, tid));
        if q.waiting_putters() == 1 && row.as_ref().is_some_and(|r| r.state == 'S') {
            break row;
        }
        if Instant::now() > deadline || producer.is_finished() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let Some(row) = blocked else {
        bail!("the producer was never seen asleep in put on a full queue");
    };
    common::event!("put_blocked", { "tid": row.tid, "state": row.state.to_string(), "wchan": row.wchan,
                "qsize": q.qsize() }, "producer thread {} is {} (asleep, {}) in put: {} items in a Queue({MAXSIZE})",
            row.tid,
            row.state,
            row.wchan,
            q.qsize());
    common::ps::show_threads("this process's threads (ps -L)", pid);
    cli.common.hold_threads("the producer is blocked in put on a full queue", pid);
    let returned_before_get = last_put_returned.load(Ordering::SeqCst);
    common::event!("getting", {}, "main calls q.get(): that frees a place for the producer");
    let first = q.get()?;
    match producer.join() {
        Ok(result) => result?,
        Err(_) => bail!("the producer thread panicked"),
    }
    common::event!("got", { "item": first, "left": q.qsize() }, "main's q.get() -> {first}; the producer ended; {} items left in the queue",
            q.qsize());
    let why = "a put into a full queue waits on not_full until a get takes an item and notifies it";
    guess.reveal(if returned_before_get { "yes" } else { "no" }, why);

    // The queue is full again (2 and 3): a timed put gives up with Full.
    let began = Instant::now();
    let refused = q.put_timeout(4, TIMEOUT).err().map(|e| e.error);
    let waited = began.elapsed();
    common::event!("timeout", { "call": "put", "result": refused.map(|e| e.to_string()),
                "waited_ms": waited.as_secs_f64() * 1000.0, "timeout_ms": TIMEOUT.as_millis() }, "q.put(4, timeout={}) on a full queue -> {} after {} ms",
            TIMEOUT.as_secs_f64(),
            refused.map_or("accepted?".into(), |e| e.to_string()),
            waited.as_millis());
    while q.get_nowait().is_ok() {}
    let began = Instant::now();
    let empty = q.get_timeout(TIMEOUT).err();
    let waited = began.elapsed();
    common::event!("timeout", { "call": "get", "result": empty.map(|e| e.to_string()),
                "waited_ms": waited.as_secs_f64() * 1000.0, "timeout_ms": TIMEOUT.as_millis() }, "q.get(timeout={}) on an empty queue -> {} after {} ms",
            TIMEOUT.as_secs_f64(),
            empty.map_or("an item?".into(), |e| e.to_string()),
            waited.as_millis());
    if refused != Some(QueueError::Full) || empty != Some(QueueError::Empty) {
        bail!("expected Full and Empty, got {refused:?} and {empty:?}");
    }
    Ok(())
}
