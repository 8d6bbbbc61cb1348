//! `stress` (hidden, for tests): many items from several producers to several consumers
//! through one queue, checked without printing one line per item: each consumer sums a hash of
//! every item it took and checks that each producer's numbers came in increasing order; the
//! main process compares the counts and sums with what was put.

#![cfg(target_os = "linux")]

use anyhow::{Context, Result, bail};
use common::process::{Process, Role, Run};
use common::processes::lost;
use common::report;
use py_multiprocessing::queue::{Queue, QueueError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Cli;

pub static PRODUCER: Role = Role::of::<StressProducer>();
pub static CONSUMER: Role = Role::of::<StressConsumer>();

/// (producer, number), or `None` to stop a consumer.
type Item = Option<(u32, u32)>;

/// A well-mixed 64-bit hash of an item (splitmix64), so that a lost item and a duplicated one
/// cannot cancel out in the sums by accident.
fn hash(producer: u32, n: u32) -> u64 {
    let mut z = (u64::from(producer) << 32 | u64::from(n)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one consumer took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    count: u64,
    sum: u64,
    xor: u64,
    /// Each producer's numbers came to this consumer in increasing order.
    fifo: bool,
}

#[derive(Serialize, Deserialize)]
pub struct StressProducer {
    queue: Queue<Item>,
    producer: u32,
    count: u32,
}

impl Run for StressProducer {
    const ROLE: &'static str = "stress-producer";
    fn run(self) -> Result<()> {
        for n in 0..self.count {
            self.queue.put(Some((self.producer, n)))?;
        }
        // Started by running this program again (spawn), or a copy of its parent (fork)?
        let spawned = std::env::args().nth(1).is_some_and(|a| a.starts_with("__role="));
        common::event!("producer_done", { "producer": self.producer, "put": self.count, "spawned": spawned }, "put {} items (spawned: {spawned})", self.count);
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
pub struct StressConsumer {
    queue: Queue<Item>,
    results: Queue<Summary>,
    producers: usize,
}

impl Run for StressConsumer {
    const ROLE: &'static str = "stress-consumer";
    fn run(self) -> Result<()> {
        let mut last: Vec<Option<u32>> = vec![None; self.producers];
        let mut s = Summary { fifo: true, ..Summary::default() };
        while let Some((p, n)) = self.queue.get()? {
            let slot = last.get_mut(p as usize).context("an item from an unknown producer")?;
            s.fifo &= slot.is_none_or(|before| before < n);
            *slot = Some(n);
            s.count += 1;
            s.sum = s.sum.wrapping_add(hash(p, n));
            s.xor ^= hash(p, n);
        }
        report::event(
            "consumer_summary",
            json!(s),
            format!("took {} items; per-producer order kept: {}", s.count, s.fifo),
        );
        self.results.put(s)?;
        Ok(())
    }
}

pub fn run(cli: &Cli, total: usize, queue_size: usize) -> Result<()> {
    report::section("stress: many items, several producers and consumers, one queue");
    let q: Queue<Item> = Queue::new(queue_size).context("the stress queue")?;
    let results: Queue<Summary> = Queue::new(0).context("the results queue")?;
    let fds: Vec<i32> = [q.fds(), results.fds()].concat();
    let producers = cli.producers;
    let mut expected = Summary { fifo: true, ..Summary::default() };
    let mut children: Vec<Process> = Vec::new();
    for p in 0..producers {
        // Share `total` as evenly as possible.
        let count = (total / producers + usize::from(p < total % producers)) as u32;
        for n in 0..count {
            expected.count += 1;
            expected.sum = expected.sum.wrapping_add(hash(p as u32, n));
            expected.xor ^= hash(p as u32, n);
        }
        let work = StressProducer { queue: q.clone(), producer: p as u32, count };
        children.push(cli.common.child(format!("producer-{}", p + 1), work, &fds));
    }
    for c in 1..=cli.consumers {
        let work = StressConsumer { queue: q.clone(), results: results.clone(), producers };
        children.push(cli.common.child(format!("consumer-{c}"), work, &fds));
    }
    for c in &mut children {
        c.start()?;
    }
    // Watched: a consumer killed leaves producers blocked in put on the full queue, a producer
    // killed leaves its items missing; either way the others are stopped and it is reported.
    let failed = |children: &mut [Process], got: u64| -> Result<()> {
        // Every status collected first: a consumer killed and one that then found the queue
        // broken may both have ended, and the killed one is the loss to name.
        for c in children.iter_mut() {
            c.is_alive();
        }
        let i = lost::first_failed(children).expect("a failed child");
        lost::stop_running(children)?;
        Err(lost::report(&children[i], "items", expected.count.saturating_sub(got)))
    };
    loop {
        let mut running = false;
        for p in &mut children[..producers] {
            running |= p.is_alive();
        }
        for c in &mut children[producers..] {
            c.is_alive();
        }
        if lost::first_failed(&children).is_some() {
            return failed(&mut children, 0);
        }
        if !running {
            break;
        }
        std::thread::sleep(lost::WATCH_SLICE / 10);
    }
    for _ in 0..cli.consumers {
        q.put(None).context("q.put(None)")?;
    }
    let mut got = Summary { fifo: true, ..Summary::default() };
    let mut summaries = 0;
    while summaries < cli.consumers {
        match results.get_timeout(lost::WATCH_SLICE) {
            Ok(s) => {
                summaries += 1;
                got.count += s.count;
                got.sum = got.sum.wrapping_add(s.sum);
                got.xor ^= s.xor;
                got.fifo &= s.fifo;
            }
            Err(QueueError::Empty) => {
                for c in &mut children[producers..] {
                    c.is_alive();
                }
                if lost::first_failed(&children).is_some() {
                    return failed(&mut children, got.count);
                }
            }
            Err(e) => return Err(e).context("a consumer's summary"),
        }
    }
    for c in &mut children[producers..] {
        c.join()?;
    }
    if lost::first_failed(&children).is_some() {
        return failed(&mut children, got.count);
    }
    let intact = got.count == expected.count && got.sum == expected.sum && got.xor == expected.xor;
    common::event!("stress_result", {
            "producers": producers, "consumers": cli.consumers, "maxsize": queue_size,
            "put": expected.count, "received": got.count, "checksum_ok": intact,
            "fifo_per_producer": got.fifo, "left": q.qsize(),
        }, "{} items put by {producers} producers, {} received by {} consumers; nothing lost \
             or duplicated (count and checksums): {intact}; each producer's order kept: {}",
            expected.count, got.count, cli.consumers, got.fifo);
    if !intact || !got.fifo {
        bail!("items were lost, duplicated or reordered");
    }
    Ok(())
}
