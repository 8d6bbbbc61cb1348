//! Part 3: seed 002's producer/consumer model (生产者消费者模型) with threads: producers `put`
//! and `join()`, consumers `get` and `task_done()`; then what one item costs through this queue
//! and through the process `JoinableQueue`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::process::{Process, Role, Run};
use common::report;
use common::threads::named;
use py_threading::queue::Queue;
use serde::{Deserialize, Serialize};

use crate::Cli;

/// Seed 002's sleeps: a producer makes a bun in 0.5 s, a consumer eats one in 1 s (scaled by
/// `--speed`).
const PRODUCER_SLEEP_S: f64 = 0.5;
const CONSUMER_SLEEP_S: f64 = 1.0;

/// One bun: `'包子%s' % i`, and who made it.
#[derive(Debug, Clone)]
struct Bun {
    name: String,
    by: String,
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section(
        "3. Producers and consumers as threads: JoinableQueue's model with task_done and join",
    );
    buns(cli)?;
    cost(cli)
}

fn buns(cli: &Cli) -> Result<()> {
    let q: Arc<Queue<Bun>> = Arc::new(Queue::new(0));
    let make = cli.common.notes_sleep(PRODUCER_SLEEP_S);
    let eat = cli.common.notes_sleep(CONSUMER_SLEEP_S);
    let mut producers = Vec::new();
    for p in 1..=cli.producers {
        let (q, buns) = (q.clone(), cli.buns);
        producers.push(named::spawn(&format!("producer-{p}"), move || -> Result<()> {
            for i in 0..buns {
                std::thread::sleep(make);
                let bun = Bun { name: format!("包子{i}"), by: named::current_name() };
                common::event!("produced", { "item": bun.name, "by": bun.by }, "生产者 {} made {}", bun.by, bun.name);
                q.put(bun).map_err(|e| anyhow::anyhow!("put: {e}"))?;
            }
            // A producer returns only when every bun put (by anyone) has been eaten.
            q.join();
            common::event!("producer_joined", {}, "q.join() returned: every bun is eaten");
            Ok(())
        })?);
    }
    let mut consumers = Vec::new();
    for c in 1..=cli.consumers {
        let q = q.clone();
        consumers.push(named::spawn(&format!("consumer-{c}"), move || -> usize {
            let mut eaten = 0;
            // Python's daemon consumer loops for ever; this one stops when the queue is shut
            // down, so that the part can join it.
            while let Ok(bun) = q.get() {
                std::thread::sleep(eat);
                eaten += 1;
                common::event!("eaten", { "item": bun.name, "by": bun.by }, "消费者 {} ate {} (by {}); task_done()",
                        named::current_name(),
                        bun.name,
                        bun.by);
                let _ = q.task_done();
            }
            eaten
        })?);
    }
    for producer in producers {
        match producer.join() {
            Ok(result) => result?,
            Err(_) => bail!("a producer thread panicked"),
        }
    }
    let unfinished = q.unfinished_tasks();
    common::event!("main_done", { "unfinished": unfinished, "left": q.qsize() }, "主 (every producer joined: {} buns made, {unfinished} unfinished, {} left)",
            cli.producers * cli.buns,
            q.qsize());
    // Python would now exit and cut the daemon consumers off inside get(). Rust threads die
    // with the process too, but the tour goes on: shut the queue down so they return.
    q.shutdown(false);
    let mut eaten = 0;
    for consumer in consumers {
        eaten += consumer.join().map_err(|_| anyhow::anyhow!("a consumer thread panicked"))?;
    }
    common::event!("consumers_ended", { "eaten": eaten }, "q.shutdown(): the consumers' get() raised ShutDown and they ended; {eaten} buns eaten \
             in all (Python's daemon threads would simply be cut off at exit)");
    if eaten != cli.producers * cli.buns || unfinished != 0 {
        bail!("{eaten} buns eaten of {}, {unfinished} unfinished", cli.producers * cli.buns);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cost of one item: thread queue against process queue.

pub static ROLES: [&Role; 1] = [&PROCESS_CONSUMER];
static PROCESS_CONSUMER: Role = Role::of::<ProcessConsumer>();

/// A consumer process: `get` and `task_done` for each of `items` items, then end.
#[derive(Serialize, Deserialize)]
pub struct ProcessConsumer {
    queue: py_multiprocessing::queue::JoinableQueue<u32>,
    items: usize,
}

impl Run for ProcessConsumer {
    const ROLE: &'static str = "thread-queue-process-consumer";
    fn run(self) -> Result<()> {
        for _ in 0..self.items {
            self.queue.get()?;
            self.queue.task_done()?;
        }
        Ok(())
    }
}

/// Seconds for `items` items from main to one consumer thread, each `put`, `get`, `task_done`,
/// with main's `join` at the end.
fn thread_queue_seconds(items: usize) -> Result<f64> {
    let q: Arc<Queue<u32>> = Arc::new(Queue::new(0));
    let consumer = {
        let q = q.clone();
        named::spawn("cost-consumer", move || {
            while q.get().is_ok() {
                let _ = q.task_done();
            }
        })?
    };
    let began = Instant::now();
    for i in 0..items {
        q.put(i as u32).map_err(|e| anyhow::anyhow!("put: {e}"))?;
    }
    q.join();
    let seconds = began.elapsed().as_secs_f64();
    q.shutdown(false);
    consumer.join().map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
    Ok(seconds)
}

/// The same through the process `JoinableQueue`, to a consumer process.
fn process_queue_seconds(cli: &Cli, items: usize) -> Result<f64> {
    let q: py_multiprocessing::queue::JoinableQueue<u32> =
        py_multiprocessing::queue::JoinableQueue::new(0)?;
    let mut child = Process::from_run("cost-consumer", ProcessConsumer { queue: q.clone(), items })
        .start_method(cli.common.start_method)
        .pass_fds(&q.fds());
    child.start()?;
    let began = Instant::now();
    for i in 0..items {
        q.put(i as u32)?;
    }
    // join with a limit: a consumer killed meanwhile must not hang the demo.
    loop {
        match q.join_timeout(std::time::Duration::from_millis(200)) {
            Ok(()) => break,
            Err(py_multiprocessing::queue::QueueError::Timeout { unfinished })
                if !child.is_alive() =>
            {
                bail!(
                    "{child} ended with {unfinished} item(s) unfinished ({})",
                    common::process::exitcode_name(child.exitcode())
                );
            }
            Err(py_multiprocessing::queue::QueueError::Timeout { .. }) => {}
            Err(e) => return Err(e).context("joining the process queue"),
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    child.join()?;
    Ok(seconds)
}

fn cost(cli: &Cli) -> Result<()> {
    let items = cli.cost_items;
    let thread = thread_queue_seconds(items)? / items as f64 * 1e6;
    let process = process_queue_seconds(cli, items)? / items as f64 * 1e6;
    common::event!("cost", { "items": items, "thread_us": thread, "process_us": process }, "one item through each queue, put + get + task_done ({items} items, one consumer):\n\
             \x20  thread Queue (shared memory, one mutex)        {thread:>8.2} µs\n\
             \x20  process JoinableQueue (pipe + locks, JSON)     {process:>8.2} µs   ({:.1}x the thread queue)",
            process / thread.max(1e-9));
    report::say(
        "threads share memory: the item itself stays where it is, only the queue's mutex and \
         conditions are shared; a process queue encodes each item, writes it into a pipe and \
         reads it back in another address space",
    );
    Ok(())
}
