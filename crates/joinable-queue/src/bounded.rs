//! Part 4: a bounded queue between a fast producer and a slow consumer. The producer sleeps in
//! `put` while the queue is full; for a moment the consumer is paused (SIGSTOP) so the `ps`
//! view can show it: the producer `S`, the consumer `T`.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::{Role, Run};
use common::processes::lost;
use common::report;
use common::timeline::{self, Recording, Style};
use py_multiprocessing::queue::Queue;
use serde::{Deserialize, Serialize};

use crate::{BOUNDED_MAXSIZE, CONSUMER_SLEEP_S, Cli, notes_ms, sleep_ms};

pub static PRODUCER: Role = Role::of::<FastProducer>();
pub static CONSUMER: Role = Role::of::<SlowConsumer>();

/// How long the main process waits for the producer to block before giving up (a loaded
/// machine can be slow; the producer normally blocks within a few milliseconds).
const BLOCK_DEADLINE: Duration = Duration::from_secs(30);

/// Puts 0, 1, 2, ... as fast as it can; says how long each `put` waited.
#[derive(Serialize, Deserialize)]
pub struct FastProducer {
    queue: Queue<u32>,
    items: u32,
}

impl Run for FastProducer {
    const ROLE: &'static str = "fast-producer";
    fn run(self) -> Result<()> {
        let maxsize = self.queue.maxsize() as u32;
        for n in 0..self.items {
            common::event!("putting", { "n": n }, "q.put({n}) ...");
            let began = Instant::now();
            self.queue.put(n)?;
            let waited = began.elapsed();
            // Items taken by then: put(n) returned, so n + 1 items went in and at most maxsize
            // are inside; a get made room for each of the others. Guaranteed by the bound.
            let taken = self.queue.total_taken();
            common::event!("put_done", { "n": n, "waited_ms": (waited.as_secs_f64() * 10_000.0).round() / 10.0,
                        "taken": taken, "maxsize": maxsize }, "q.put({n}) returned after {:.1} ms ({taken} taken so far)",
                    waited.as_secs_f64() * 1000.0);
            if taken + maxsize < n + 1 {
                bail!("put({n}) returned with only {taken} items taken from a Queue({maxsize})");
            }
        }
        Ok(())
    }
}

/// Takes the items one by one, slowly, and checks they come in the order they were put.
#[derive(Serialize, Deserialize)]
pub struct SlowConsumer {
    queue: Queue<u32>,
    items: u32,
    sleep_ms: u64,
}

impl Run for SlowConsumer {
    const ROLE: &'static str = "slow-consumer";
    fn run(self) -> Result<()> {
        let mut in_order = true;
        for expected in 0..self.items {
            let n = self.queue.get()?;
            in_order &= n == expected;
            common::event!("got", { "n": n }, "q.get() -> {n}");
            sleep_ms(self.sleep_ms);
        }
        common::event!("consumer_done", { "got": self.items, "in_order": in_order }, "took {} items, in order: {in_order}", self.items);
        Ok(())
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("4. A bounded queue: a fast producer blocks while it is full (阻塞队列)");
    let maxsize = cli.maxsize.unwrap_or(BOUNDED_MAXSIZE);
    let items = cli.items as u32;
    let q: Queue<u32> = Queue::new(maxsize).with_context(|| format!("Queue({maxsize})"))?;
    let fds = q.fds();
    let question = format!(
        "a fast producer puts {items} items into Queue({maxsize}), a consumer takes one every \
         {CONSUMER_SLEEP_S} s (at the notes' speed): how many of the puts wait for room?"
    );
    let guess =
        common::predict::ask(&cli.common, "waiting-puts", question, common::predict::Expect::Count);
    let recording = Recording::start()?;
    let mut consumer = cli.common.child(
        "consumer-1",
        SlowConsumer { queue: q.clone(), items, sleep_ms: notes_ms(cli, CONSUMER_SLEEP_S) },
        &fds,
    );
    let mut producer =
        cli.common.child("producer-1", FastProducer { queue: q.clone(), items }, &fds);
    consumer.start()?;
    producer.start()?;
    let (ppid, cpid) = (producer.pid().unwrap_or(0), consumer.pid().unwrap_or(0));

    if items as usize > maxsize {
        // Wait until the producer is asleep in put on the full queue, then pause the consumer
        // so that the picture holds still while it is shown.
        let began = Instant::now();
        let blocked = loop {
            let state = common::ps::state_of(ppid);
            if q.full() && q.waiting_putters() > 0 && state == Some('S') {
                break true;
            }
            // A child killed from elsewhere leaves the other waiting for ever: stop looking,
            // and let the join below say which one was lost.
            let lost = !producer.is_alive() || !consumer.is_alive();
            if lost || began.elapsed() > BLOCK_DEADLINE {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if blocked {
            show_blocked(cli, &q, &mut consumer, ppid, cpid)?;
        } else if producer.is_alive() && consumer.is_alive() {
            report::say("the producer was never seen blocked (it ended, or the machine is slow)");
        }
    }
    // Each waits for the other: a consumer killed leaves the producer blocked in put, a
    // producer killed leaves the consumer blocked in get. join_all stops the one left waiting.
    let mut both = [producer, consumer];
    if let Some(i) = lost::join_all(&mut both)? {
        let taken = q.total_taken() as u64;
        return Err(lost::report(&both[i], "items", u64::from(items).saturating_sub(taken)));
    }
    let [producer, consumer] = both;
    let records = recording.finish()?;
    for p in [&producer, &consumer] {
        if p.exitcode() != Some(0) {
            bail!("{p} failed");
        }
    }

    // The demo's own check, from what both processes recorded.
    let puts: Vec<&timeline::Record> = records.iter().filter(|r| r.event == "put_done").collect();
    let blocked_puts = puts
        .iter()
        .filter(|r| r.data["waited_ms"].as_f64().unwrap_or(0.0) >= notes_ms(cli, 0.5) as f64)
        .count();
    let violations = puts
        .iter()
        .filter(|r| {
            let (n, taken) = (r.data["n"].as_u64().unwrap_or(0), r.data["taken"].as_u64());
            taken.is_none_or(|t| t + (maxsize as u64) < n + 1)
        })
        .count();
    let in_order = records
        .iter()
        .find(|r| r.event == "consumer_done")
        .is_some_and(|r| r.data["in_order"] == true);
    common::event!("bounded_summary", { "items": items, "maxsize": maxsize, "blocked_puts": blocked_puts,
                "violations": violations, "in_order": in_order }, "{items} items through Queue({maxsize}): {blocked_puts} put(s) waited for room; every \
             put(n) returned with at least n + 1 - {maxsize} items taken: {}; first in, first \
             out: {in_order}",
            violations == 0);
    guess.reveal(
        blocked_puts,
        format!(
            "the first {maxsize} puts find room at once (and one more while the consumer takes \
             its first item); every later put sleeps until a get makes room"
        ),
    );
    if violations > 0 || !in_order {
        bail!(
            "the bounded queue broke its promise: {violations} early put(s), in order {in_order}"
        );
    }
    if cli.timeline {
        let style =
            Style::new().span("putting", "put_done", '#').mark("put_done", 'p').mark("got", 'g');
        timeline::show(
            &format!("a fast producer and a slow consumer through Queue({maxsize})"),
            &records,
            &style,
        );
        report::plain(
            "  (# the producer inside put: asleep while the queue is full; p a put returned; g a \
             get, which makes room)",
        );
    }
    report::say(
        "the bounded queue balances their speeds (平衡生产者与消费者之间的速度差): the producer \
         cannot run ahead by more than maxsize items; it sleeps in put until a get makes room",
    );
    Ok(())
}

/// Pauses the consumer (SIGSTOP) while the producer is blocked on the full queue, shows both
/// with their state letters, holds with `--hold`, and lets the consumer go on (SIGCONT).
fn show_blocked(
    cli: &Cli,
    q: &Queue<u32>,
    consumer: &mut common::process::Process,
    ppid: i32,
    cpid: i32,
) -> Result<()> {
    consumer.signal(libc::SIGSTOP)?;
    let began = Instant::now();
    while common::ps::state_of(cpid) != Some('T') && began.elapsed() < BLOCK_DEADLINE {
        if !consumer.is_alive() {
            // Killed from elsewhere: the join after this says so.
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let rows: Vec<(usize, common::ps::ProcInfo)> = [std::process::id() as i32, ppid, cpid]
        .iter()
        .filter_map(|pid| common::ps::stat(*pid))
        .enumerate()
        .map(|(i, p)| (usize::from(i > 0), p))
        .collect();
    common::ps::show("the producer blocked on the full queue; the consumer paused", &rows);
    let (pstate, cstate) = (common::ps::state_of(ppid), common::ps::state_of(cpid));
    common::event!("blocked", {
            "producer_pid": ppid, "producer_state": pstate.map(String::from),
            "consumer_pid": cpid, "consumer_state": cstate.map(String::from),
            "qsize": q.qsize(), "maxsize": q.maxsize(), "full": q.full(),
            "waiting_putters": q.waiting_putters(),
        }, "producer-1 is asleep in put (state {}) on a full Queue({}) ({} item(s) in it); \
             consumer-1 paused with SIGSTOP (state {})",
            pstate.unwrap_or('?'),
            q.maxsize(),
            q.qsize(),
            cstate.unwrap_or('?'));
    cli.common.hold("the producer is blocked in put on a full queue", &[ppid, cpid]);
    consumer.signal(libc::SIGCONT)?;
    report::say("consumer-1 continues (SIGCONT): each get makes room and wakes the producer");
    Ok(())
}
