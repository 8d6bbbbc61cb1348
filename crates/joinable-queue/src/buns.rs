//! Parts 2 and 3: producers (生产者) make buns (包子), consumers (消费者) eat them; first with a
//! plain `Queue` and `None` sentinels, then with a `JoinableQueue`, `task_done` and `join`.

#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::process::{Process, Role, Run, exitcode_name};
use common::processes::lost;
use common::report;
use py_multiprocessing::queue::{JoinableQueue, Queue, QueueError};
use serde::{Deserialize, Serialize};

use crate::{CONSUMER_SLEEP_S, Cli, JOINABLE_BUNS, PRODUCER_SLEEP_S, SENTINEL_BUNS};
use crate::{notes_ms, sleep_ms};

/// One bun: `'包子%s' % i`, and who made it (the notes' producers all make 包子0, 包子1, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bun {
    pub name: String,
    pub by: String,
}

/// Makes `count` buns, one every `sleep_ms`, as the notes' producer does.
fn make_buns(
    count: usize,
    sleep_ms_each: u64,
    mut put: impl FnMut(Bun) -> Result<()>,
) -> Result<()> {
    for i in 0..count {
        sleep_ms(sleep_ms_each);
        let bun = Bun { name: format!("包子{i}"), by: report::who().to_string() };
        common::event!("produced", { "item": bun.name, "by": bun.by, "n": i }, "生产者 {} made {}", bun.by, bun.name);
        put(bun)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 2: a plain Queue and one None per consumer.

pub static SENTINEL_PRODUCER: Role = Role::of::<SentinelProducer>();
pub static SENTINEL_CONSUMER: Role = Role::of::<SentinelConsumer>();

/// `def producer(q)`: make buns and put them.
#[derive(Serialize, Deserialize)]
pub struct SentinelProducer {
    queue: Queue<Option<Bun>>,
    buns: usize,
    sleep_ms: u64,
}

impl Run for SentinelProducer {
    const ROLE: &'static str = "sentinel-producer";
    fn run(self) -> Result<()> {
        make_buns(self.buns, self.sleep_ms, |bun| Ok(self.queue.put(Some(bun))?))
    }
}

/// `def consumer(q)`: eat until a `None` comes; then report how many were eaten.
#[derive(Serialize, Deserialize)]
pub struct SentinelConsumer {
    queue: Queue<Option<Bun>>,
    eaten: Queue<usize>,
    sleep_ms: u64,
}

impl Run for SentinelConsumer {
    const ROLE: &'static str = "sentinel-consumer";
    fn run(self) -> Result<()> {
        let me = report::who();
        let mut eaten = 0;
        loop {
            // A span for --trace and --svg (nothing without them): how long get() blocks.
            let waiting = common::phase::span("blocked in get");
            let got = self.queue.get()?;
            drop(waiting);
            let Some(bun) = got else {
                common::event!("sentinel", { "consumer": me, "eaten": eaten }, "消费者 {me} got None: the end (if res is None: break); ate {eaten}");
                break;
            };
            sleep_ms(self.sleep_ms);
            eaten += 1;
            common::event!("ate", { "consumer": me, "item": bun.name, "by": bun.by }, "消费者 {me} ate {} (by {})", bun.name, bun.by);
        }
        self.eaten.put(eaten)?;
        Ok(())
    }
}

pub fn sentinel(cli: &Cli) -> Result<()> {
    report::section("2. Producers and consumers through a Queue, ended by None (生产者消费者模型)");
    let buns = cli.buns.unwrap_or(SENTINEL_BUNS);
    let q: Queue<Option<Bun>> = Queue::new(0).context("Queue()")?;
    let eaten: Queue<usize> = Queue::new(0).context("Queue() for the counts")?;
    let fds: Vec<i32> = [q.fds(), eaten.fds()].concat();
    let (produce_ms, eat_ms) = (notes_ms(cli, PRODUCER_SLEEP_S), notes_ms(cli, CONSUMER_SLEEP_S));
    let mut producers: Vec<Process> = (1..=cli.producers)
        .map(|n| {
            let work = SentinelProducer { queue: q.clone(), buns, sleep_ms: produce_ms };
            cli.common.child(format!("producer-{n}"), work, &fds)
        })
        .collect();
    let mut consumers: Vec<Process> = (1..=cli.consumers)
        .map(|n| {
            let work =
                SentinelConsumer { queue: q.clone(), eaten: eaten.clone(), sleep_ms: eat_ms };
            cli.common.child(format!("consumer-{n}"), work, &fds)
        })
        .collect();
    for p in producers.iter_mut().chain(consumers.iter_mut()) {
        p.start()?;
    }
    report::say(format!(
        "started {} producers and {} consumers; the consumers loop on q.get() until a None comes",
        producers.len(),
        consumers.len()
    ));
    for p in &mut producers {
        p.join()?;
    }
    // Only now may the ends be sent: a None put while a producer still works would stop a
    // consumer before the last buns, and one None is needed per consumer.
    for _ in &consumers {
        q.put(None).context("q.put(None)")?;
    }
    common::event!("sentinels_sent", { "sentinels": consumers.len() }, "every producer joined; q.put(None) x {} (one per consumer)", consumers.len());
    // One count per consumer, watching them meanwhile: a consumer killed before it sent its
    // count never will, and a plain eaten.get() would wait for it for ever.
    let mut total = 0;
    let mut counts = 0;
    let mut queue_error = None;
    let expected = |cs: &mut [Process]| {
        cs.iter_mut().map(|c| c.is_alive() || c.exitcode() == Some(0)).filter(|&ok| ok).count()
    };
    while counts < expected(&mut consumers) {
        match eaten.get_timeout(lost::WATCH_SLICE) {
            Ok(n) => {
                total += n;
                counts += 1;
            }
            Err(QueueError::Empty) => {}
            Err(e) => {
                // A consumer killed in the middle of its count's frame breaks the queue.
                queue_error = Some(e);
                break;
            }
        }
    }
    for c in &mut consumers {
        c.join()?;
    }
    let made = buns * producers.len();
    common::event!("summary", { "produced": made, "eaten": total, "sentinels": consumers.len(),
                "left": q.qsize() }, "主 (main code over): {made} buns made, {total} eaten, {} left", q.qsize());
    // Whoever was killed: the buns made minus those reported eaten went with them.
    let mut missing = made.saturating_sub(total) as u64;
    let mut first = None;
    // The killed first: a consumer that exited 1 on a queue broken by the kill is no cause.
    let mut failed: Vec<&Process> =
        producers.iter().chain(&consumers).filter(|c| c.exitcode() != Some(0)).collect();
    failed.sort_by_key(|c| c.exitcode().is_none_or(|code| code >= 0));
    for c in failed {
        first.get_or_insert(lost::report(c, "buns", missing));
        missing = 0;
    }
    if let Some(lost) = first {
        return Err(lost);
    }
    if let Some(e) = queue_error {
        return Err(e).context("a consumer's count");
    }
    if total != made {
        bail!("{made} buns were made but {total} eaten");
    }
    report::say(
        "it works, and it is clumsy (相当low): the main process must know how many consumers \
         there are, must wait for every producer before sending the Nones, and a None sent too \
         early, or one too few, loses buns or leaves a consumer waiting for ever. Part 3 needs \
         no sentinel.",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 3: a JoinableQueue: task_done and join.

pub static JOINABLE_PRODUCER: Role = Role::of::<JoinableProducer>();
pub static JOINABLE_CONSUMER: Role = Role::of::<JoinableConsumer>();

/// The notes' producer: make buns, put them, then `q.join()` until every one is eaten.
#[derive(Serialize, Deserialize)]
pub struct JoinableProducer {
    queue: JoinableQueue<Bun>,
    buns: usize,
    sleep_ms: u64,
}

impl Run for JoinableProducer {
    const ROLE: &'static str = "joinable-producer";
    fn run(self) -> Result<()> {
        let me = report::who();
        make_buns(self.buns, self.sleep_ms, |bun| Ok(self.queue.put(bun)?))?;
        common::event!("producer_join", { "producer": me, "unfinished": self.queue.unfinished() }, "{me} calls q.join(): {} bun(s) not yet marked done", self.queue.unfinished());
        self.queue.join()?;
        common::event!("joined", { "producer": me, "unfinished": self.queue.unfinished() }, "{me}: q.join() returned: every bun put has been marked done");
        Ok(())
    }
}

/// The notes' consumer: get, eat, `task_done`, for ever (it is daemonic). `die_mid_item`: killed
/// (SIGKILL) while it holds its first bun, before `task_done`.
#[derive(Serialize, Deserialize)]
pub struct JoinableConsumer {
    queue: JoinableQueue<Bun>,
    sleep_ms: u64,
    die_mid_item: bool,
}

impl Run for JoinableConsumer {
    const ROLE: &'static str = "joinable-consumer";
    fn run(self) -> Result<()> {
        let me = report::who();
        loop {
            let bun = self.queue.get()?;
            common::event!("eating", { "consumer": me, "item": bun.name, "by": bun.by }, "消费者 {me} took {} (by {})", bun.name, bun.by);
            if self.die_mid_item {
                common::event!("killed_mid_item", { "consumer": me, "item": bun.name }, "{me} is killed (SIGKILL) holding {}: task_done() never comes",
                        bun.name);
                // Safety: kill(2) on our own pid; SIGKILL cannot be caught, the process ends here.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            sleep_ms(self.sleep_ms);
            // Printed before task_done(), so every such line precedes the producers' "joined".
            common::event!("task_done", { "consumer": me, "item": bun.name, "by": bun.by }, "消费者 {me} ate {} (by {}); task_done()", bun.name, bun.by);
            self.queue.task_done()?;
        }
    }
}

pub fn joinable(cli: &Cli) -> Result<()> {
    report::section("3. JoinableQueue: task_done and join, no sentinel (JoinableQueue)");
    let buns = cli.buns.unwrap_or(JOINABLE_BUNS);
    let q: JoinableQueue<Bun> = JoinableQueue::new(0).context("JoinableQueue()")?;
    let fds = q.fds();
    let (produce_ms, eat_ms) = (notes_ms(cli, PRODUCER_SLEEP_S), notes_ms(cli, CONSUMER_SLEEP_S));
    let mut producers: Vec<Process> = (1..=cli.producers)
        .map(|n| {
            let work = JoinableProducer { queue: q.clone(), buns, sleep_ms: produce_ms };
            cli.common.child(format!("producer-{n}"), work, &fds)
        })
        .collect();
    let mut consumers = Vec::new();
    for n in 1..=cli.consumers {
        let die_mid_item = cli.kill_consumer && n == 1;
        let work = JoinableConsumer { queue: q.clone(), sleep_ms: eat_ms, die_mid_item };
        let mut c = cli.common.child(format!("consumer-{n}"), work, &fds);
        c.set_daemon(true)?; // c1.daemon = True: terminated when the main process exits
        consumers.push(c);
    }
    let guess = cli.kill_consumer.then(|| {
        let question = "a consumer is killed holding a bun: Python's join() would wait for ever; \
                        here, how many tasks does join_timeout() find unfinished?";
        common::predict::ask(&cli.common, "unfinished", question, common::predict::Expect::Count)
    });
    for p in producers.iter_mut().chain(consumers.iter_mut()) {
        p.start()?;
    }
    report::say(format!(
        "started {} producers and {} daemonic consumers; the main process joins the producers, \
         which join the queue",
        producers.len(),
        consumers.len()
    ));

    // p1.join(); p2.join(); p3.join(), watching the consumers meanwhile: a consumer that dies
    // holding a bun would make every producer's q.join(), and so this wait, last for ever.
    let watch = Duration::from_millis(eat_ms.max(50) * 3);
    let mut dead: Vec<String> = Vec::new();
    let mut stuck_at: Option<usize> = None;
    let stuck = loop {
        let mut all_joined = true;
        for p in &mut producers {
            all_joined &= p.join_timeout(Duration::from_millis(20))?.is_some();
        }
        if all_joined {
            break None;
        }
        for c in &mut consumers {
            if !c.is_alive() && !dead.contains(&c.name().to_string()) {
                common::event!("consumer_died", { "consumer": c.name(), "pid": c.pid(), "exitcode": c.exitcode(),
                            "unfinished": q.unfinished() }, "{c} died; {} task(s) unfinished", q.unfinished());
                dead.push(c.name().to_string());
            }
        }
        if dead.is_empty() {
            continue;
        }
        if dead.len() == consumers.len() {
            // Nobody is left to eat what is in the queue either.
            break Some(q.unfinished());
        }
        // A consumer is dead: is the queue stuck? The live consumers eat what is left; when
        // nothing is left and the unfinished count stays the same, nobody will finish it.
        match q.join_timeout(watch) {
            Ok(()) => continue, // all done after all: the producers return now
            Err(QueueError::Timeout { unfinished }) => {
                if q.qsize() == 0 && stuck_at == Some(unfinished) {
                    break Some(unfinished);
                }
                stuck_at = Some(unfinished);
            }
            Err(e) => return Err(e).context("q.join_timeout()"),
        }
    };
    // A producer that ended otherwise than by returning did not make all its buns.
    let lost_producers: Vec<usize> = (0..producers.len())
        .filter(|&i| !producers[i].is_alive() && producers[i].exitcode() != Some(0))
        .collect();
    if let Some(unfinished) = stuck {
        common::event!("join_would_hang", { "unfinished": unfinished, "in_progress": q.in_progress(), "dead": dead,
                    "qsize": q.qsize() }, "q.join_timeout() -> {unfinished} unfinished task(s), the queue is empty, and \
                 {} died holding a bun: nobody will ever call task_done() for it. Python's \
                 JoinableQueue.join() would wait here for ever; the demo ends the producers.",
                dead.join(", "));
        for p in &mut producers {
            p.terminate()?;
            p.join()?;
            common::event!("producer_stopped", { "producer": p.name(), "exitcode": p.exitcode() }, "{p} (it was waiting in q.join())");
        }
    } else {
        common::event!("main_done", { "unfinished": q.unfinished(), "left": q.qsize() }, "主 (main code over: every producer joined, {} unfinished, {} left)",
                q.unfinished(),
                q.qsize());
    }
    if let Some(guess) = guess {
        let why = "the bun the killed consumer held is never task_done(): nobody else has it";
        guess.reveal(stuck.unwrap_or(0), why);
    }
    // The end of the main code: daemonic children are terminated (守护进程), as in Python.
    let lesson = |name: &str| cli.kill_consumer && name == "consumer-1";
    let mut lost_consumers: Vec<(i32, String, Option<i32>)> = consumers
        .iter()
        .filter(|c| dead.iter().any(|d| d == c.name()) && !lesson(c.name()))
        .map(|c| (c.pid().unwrap_or(0), c.name().to_string(), c.exitcode()))
        .collect();
    for ended in common::process::end_main_code() {
        // Killed from elsewhere after the producers were done: SIGTERM is the only way out.
        let expected = matches!(ended.exitcode, Some(0) | Some(-15)) || lesson(&ended.name);
        if ended.daemon && !expected && lost_consumers.iter().all(|(pid, ..)| *pid != ended.pid) {
            lost_consumers.push((ended.pid, ended.name.clone(), ended.exitcode));
        }
        common::event!("ended", { "name": ended.name, "pid": ended.pid, "daemon": ended.daemon,
                    "exitcode": ended.exitcode }, "{} {} at the main process's exit: exitcode {}",
                ended.name,
                if ended.daemon { "(daemonic) was terminated" } else { "was waited for" },
                exitcode_name(ended.exitcode));
    }
    let mut unfinished = stuck.unwrap_or(0) as u64;
    let mut first = None;
    for (pid, name, exitcode) in &lost_consumers {
        first.get_or_insert(lost::report_pid(*pid, name, *exitcode, "buns", unfinished));
        unfinished = 0;
    }
    for &i in &lost_producers {
        first.get_or_insert(lost::report(&producers[i], "buns", 0));
    }
    if let Some(lost) = first {
        return Err(lost);
    }
    if stuck.is_none() {
        report::say(
            "no sentinel: each consumer's task_done() tells the producers' q.join() that a bun \
             is finished; the main process waits for the producers only, and the consumers, \
             being daemonic, are terminated when the main process exits",
        );
    }
    Ok(())
}
