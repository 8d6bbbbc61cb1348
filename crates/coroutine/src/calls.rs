//! Part 1: submitting a task synchronously and asynchronously (提交任务的两种方式), the three
//! states of a task (运行, 就绪, 阻塞), and the notes' two kinds of waiting: a synchronous call
//! to a CPU-bound function (the caller waits, but it is working: `R`) against a blocking call
//! (the caller is asleep: `S`), both read from `/proc` while they happen.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::predict;
use common::report;
use common::threads::named;

use crate::Cli;

/// How long a state is looked for in `/proc` before the demo gives up (a loaded machine may
/// take its time to run a thread; the state itself is certain).
const LOOK_FOR: Duration = Duration::from_secs(30);

/// A CPU-bound function: counts down `n`, in a way the compiler cannot fold.
pub fn countdown(mut n: u64) -> u64 {
    let mut steps = 0;
    while std::hint::black_box(n) > 0 {
        n -= 1;
        steps += 1;
    }
    steps
}

/// Spins (computing) until `stop` is set.
fn spin_until(stop: &AtomicBool) -> u64 {
    let mut work = 0u64;
    while !stop.load(Ordering::Relaxed) {
        work = work.wrapping_add(countdown(10_000));
    }
    work
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section(
        "1. Synchronous and asynchronous calls; running, ready, blocked; two kinds of waiting",
    );
    submit(cli)?;
    states(cli)
}

fn submit(cli: &Cli) -> Result<()> {
    let n = cli.countdown;
    let began = Instant::now();
    let steps = countdown(n);
    common::event!("sync_call", { "steps": steps, "waited_ms": began.elapsed().as_secs_f64() * 1e3 }, "synchronous (同步): r = countdown({n}) -> {steps}; main waited {:.1} ms for it, doing nothing else",
            began.elapsed().as_secs_f64() * 1e3);
    let began = Instant::now();
    let task = named::spawn("task", move || countdown(n))?;
    common::event!(
        "async_submitted",
        {},
        "asynchronous (异步): submitted countdown to a thread; main goes on at once"
    );
    let mut other = 0;
    while !task.is_finished() {
        other += 1;
        std::thread::yield_now();
    }
    let steps = task.join().map_err(|_| anyhow::anyhow!("the task panicked"))?;
    common::event!("async_result", { "steps": steps, "other_work": other, "ms": began.elapsed().as_secs_f64() * 1e3 }, "the result came {:.1} ms later ({steps}); meanwhile main did {other} other steps \
             (a real program would do real work there, or be told by a callback: part 2)",
            began.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

/// Pins the calling thread to one CPU (`sched_setaffinity` on tid 0: the caller).
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) -> Result<()> {
    // Safety: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity only read and
    // write the set on our stack.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere there is no `sched_setaffinity` (macOS has none): the thread stays unpinned.
#[cfg(not(target_os = "linux"))]
fn pin_to(cpu: usize) -> Result<()> {
    bail!("pinning to cpu {cpu}: sched_setaffinity is Linux's")
}

/// Looks in `/proc` until thread `tid` of this process is in `state`; the row then.
fn seen_in(tid: i32, state: char) -> Option<common::ps::ThreadInfo> {
    let pid = std::process::id() as i32;
    let deadline = Instant::now() + LOOK_FOR;
    loop {
        let row = common::ps::thread(pid, tid);
        if row.as_ref().is_some_and(|r| r.state == state) || Instant::now() > deadline {
            return row.filter(|r| r.state == state);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn states(cli: &Cli) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<(&'static str, i32)>();
    let mut handles = Vec::new();

    // Running: the caller of a synchronous CPU-bound call is busy computing the answer.
    {
        let (stop, tid_tx) = (stop.clone(), tid_tx.clone());
        handles.push(named::spawn("sync-cpu-call", move || {
            let _ = tid_tx.send(("sync-cpu-call", named::gettid()));
            spin_until(&stop);
        })?);
    }
    // Blocked: the caller of a blocking call (a read of a pipe nobody writes yet) sleeps.
    let (reader, writer) = nix::unistd::pipe()?;
    {
        let tid_tx = tid_tx.clone();
        handles.push(named::spawn("blocking-call", move || {
            let _ = tid_tx.send(("blocking-call", named::gettid()));
            let mut file = std::fs::File::from(reader);
            let mut byte = [0u8; 1];
            let _ = file.read(&mut byte);
        })?);
    }
    // Ready: two CPU-bound threads on one CPU; while one runs the other waits for the CPU.
    let spins = Arc::new(AtomicU64::new(0));
    for name in ["ready-a", "ready-b"] {
        let (stop, tid_tx, spins) = (stop.clone(), tid_tx.clone(), spins.clone());
        handles.push(named::spawn(name, move || {
            let pinned = pin_to(0).is_ok();
            let _ = tid_tx.send((name, if pinned { named::gettid() } else { -1 }));
            spins.fetch_add(spin_until(&stop), Ordering::Relaxed);
        })?);
    }
    drop(tid_tx);
    let tids: Vec<(&str, i32)> = tid_rx.iter().take(4).collect();
    let tid = |name: &str| tids.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);

    let question = "A thread inside a synchronous call to a CPU-bound function waits for its \
                    answer: which state letter does /proc show for it, R (running) or S (asleep)?";
    let mut guess = Some(predict::ask(
        &cli.common,
        "sync-state",
        question,
        predict::Expect::Choice(&["R", "S"]),
    ));
    let mut seen = Vec::new();
    for (role, state, meaning) in [
        ("sync-cpu-call", 'R', "running (运行): it waits for its answer by computing it"),
        ("blocking-call", 'S', "blocked (阻塞): asleep in read(2) until data comes"),
    ] {
        let row = tid(role).and_then(|t| seen_in(t, state));
        let Some(row) = row else { bail!("{role} was never seen in state {state}") };
        common::event!("state", { "role": role, "tid": row.tid, "state": row.state.to_string(), "wchan": row.wchan }, "{role} (tid {}) is {} ({}): {meaning}", row.tid, row.state, row.wchan);
        if role == "sync-cpu-call"
            && let Some(guess) = guess.take()
        {
            let why =
                "it waits by computing the answer itself: on the CPU or ready for it, never asleep";
            guess.reveal(row.state.to_string(), why);
        }
        seen.push(row);
    }
    // Let the pinned pair take turns on CPU 0 for a moment, then read how often each was made
    // to wait (involuntary switches: it was ready, not running).
    std::thread::sleep(Duration::from_millis(50));
    let pid = std::process::id() as i32;
    for name in ["ready-a", "ready-b"] {
        if let Some(row) = tid(name).filter(|t| *t > 0).and_then(|t| common::ps::thread(pid, t)) {
            common::event!("state", { "role": name, "tid": row.tid, "state": row.state.to_string(),
                        "involuntary": row.nonvoluntary_ctxt_switches, "cpu": row.processor }, "{name} (tid {}) is {} on CPU {}: pinned there with its twin, it is running or \
                     ready (就绪), one letter for both; the CPU was taken from it {} times",
                    row.tid, row.state, row.processor, row.nonvoluntary_ctxt_switches);
        }
    }
    common::ps::show_threads("this process's threads (ps -L)", pid);
    cli.common.hold_threads("a sync CPU-bound call (R) beside a blocking call (S)", pid);
    report::say(
        "two kinds of waiting: a synchronous call waits for a result (the caller may be busy, R); \
         a blocking call waits for an event (the caller is asleep, S, and the CPU is free for \
         others: 多道技术)",
    );
    stop.store(true, Ordering::Relaxed);
    nix::unistd::write(&writer, b"x")?;
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?;
    }
    Ok(())
}
