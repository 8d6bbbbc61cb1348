//! Part 4: `shutdown()` (Python 3.13): the queue takes no more items; consumers drain what is
//! left, then `get` raises `ShutDown`. `shutdown(immediate=True)` drops what is left, and each
//! dropped item counts as done, so `join()` returns once the items already taken are done.

use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Duration;

use anyhow::{Result, bail};
use common::predict;
use common::report;
use common::threads::named;
use py_threading::queue::{Queue, QueueError};

use crate::Cli;

/// Items put before each shutdown.
const ITEMS: usize = 6;
/// How long a consumer takes over one item in the draining half (scaled by `--speed`).
const WORK_S: f64 = 0.2;

pub fn run(cli: &Cli) -> Result<()> {
    report::section("4. shutdown(): drain, then ShutDown; shutdown(immediate=True): drop the rest");
    drain(cli)?;
    immediate(cli)
}

fn drain(cli: &Cli) -> Result<()> {
    let q: Arc<Queue<usize>> = Arc::new(Queue::new(0));
    for i in 0..ITEMS {
        q.put(i).map_err(|e| anyhow::anyhow!("put: {e}"))?;
    }
    let work = cli.common.notes_sleep(WORK_S);
    let consumers: Vec<_> = (1..=cli.consumers)
        .map(|c| {
            let q = q.clone();
            named::spawn(&format!("consumer-{c}"), move || {
                let mut taken = Vec::new();
                loop {
                    match q.get() {
                        Ok(item) => {
                            std::thread::sleep(work);
                            common::event!("took", { "item": item }, "got {item}");
                            taken.push(item);
                            let _ = q.task_done();
                        }
                        Err(e) => {
                            common::event!("get_error", { "error": e.to_string(), "taken": taken.len() }, "q.get() -> {e}: the queue is shut down and empty; this consumer ends");
                            return taken;
                        }
                    }
                }
            })
        })
        .collect::<Result<_, _>>()?;
    q.shutdown(false);
    let refused = q.put(99).err().map(|e| e.error);
    common::event!("shutdown", { "immediate": false, "left": q.qsize(), "put_after": refused.map(|e| e.to_string()) }, "q.shutdown() with {} item(s) still in the queue; q.put(99) -> {}",
            q.qsize(),
            refused.map_or("accepted?".into(), |e| e.to_string()));
    let mut taken = 0;
    for consumer in consumers {
        taken += consumer.join().map_err(|_| anyhow::anyhow!("a consumer panicked"))?.len();
    }
    common::event!("drained", { "taken": taken, "items": ITEMS }, "the consumers drained all {taken} of {ITEMS} items before ShutDown");
    if taken != ITEMS || refused != Some(QueueError::ShutDown) {
        bail!("{taken} of {ITEMS} items drained; put after shutdown: {refused:?}");
    }
    Ok(())
}

fn immediate(cli: &Cli) -> Result<()> {
    let q: Arc<Queue<usize>> = Arc::new(Queue::new(0));
    for i in 0..ITEMS {
        q.put(i).map_err(|e| anyhow::anyhow!("put: {e}"))?;
    }
    let (holding_tx, holding_rx) = channel();
    let (finish_tx, finish_rx) = channel::<()>();
    let consumer = {
        let q = q.clone();
        named::spawn("consumer", move || -> Result<Option<QueueError>> {
            let item = q.get()?;
            common::event!("holding", { "item": item }, "got {item}; working on it");
            let _ = holding_tx.send(());
            let _ = finish_rx.recv();
            // Said before the call: once task_done returns, main's join may print first.
            common::event!("task_done", { "item": item }, "task_done() for {item}");
            q.task_done()?;
            Ok(q.get().err())
        })?
    };
    if holding_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        bail!("the consumer never took an item");
    }
    let question = format!(
        "{ITEMS} items put, one consumer holds one of them: how many items does \
         shutdown(immediate=True) drop?"
    );
    let guess = predict::ask(&cli.common, "dropped", question, predict::Expect::Count);
    let dropped = q.shutdown(true);
    guess.reveal(
        dropped,
        "immediate drops every item still in the queue; the one already taken is not in it",
    );
    let unfinished = q.unfinished_tasks();
    // The item being worked on is not done yet, so join must not return yet.
    let early = q.join_timeout(Duration::from_millis(20));
    common::event!("shutdown", { "immediate": true, "dropped": dropped, "unfinished": unfinished,
                "join_returned_early": early }, "q.shutdown(immediate=True): {dropped} item(s) dropped and counted done; {unfinished} \
             unfinished (the one being worked on), so join() still waits");
    let _ = finish_tx.send(());
    q.join();
    common::event!("joined", {}, "q.join() returned: the item taken before is done");
    let after = consumer.join().map_err(|_| anyhow::anyhow!("the consumer panicked"))??;
    common::event!("get_error", { "error": after.map(|e| e.to_string()) }, "the consumer's next q.get() -> {}",
            after.map_or("an item?".into(), |e| e.to_string()));
    if dropped != ITEMS - 1 || unfinished != 1 || early || after != Some(QueueError::ShutDown) {
        bail!("immediate shutdown: dropped {dropped}, unfinished {unfinished}, early join {early}");
    }
    Ok(())
}
