//! Part 4: an executor (the minimal one of `mini.rs`, then tokio's current-thread runtime)
//! running ten tasks that each sleep: about one sleep in all, on one thread. Then what a
//! coroutine cannot do: CPU-bound tasks on one thread take the sum of their times (two worker
//! threads halve it); and one blocking call inside a task holds every other task up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::predict;
use common::report;
use common::threads::named::gettid;

use crate::Cli;
use crate::mini::{Executor, yield_now};

/// The notes' `time.sleep(1)` inside each task, scaled by `--speed`.
const SLEEP_S: f64 = 1.0;
/// Steps of the tickers beside the blocking task.
const TICKS: usize = 5;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(ts) => Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
        Err(_) => Duration::ZERO,
    }
}

/// Computes until this thread has used `cpu` more CPU time: CPU-bound work of a known size
/// whatever else the machine does.
fn burn(cpu: Duration) -> Duration {
    let began = thread_cpu();
    while thread_cpu() - began < cpu {
        std::hint::black_box(crate::calls::countdown(10_000));
    }
    thread_cpu() - began
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("4. An executor: ten sleeping tasks on one thread; what a coroutine cannot do");
    sleepers(cli)?;
    sleepers_on_tokio(cli)?;
    let one = cpu_bound(cli, 1, None)?;
    cpu_bound(cli, 2, Some(one))?;
    blocking(cli)
}

fn sleepers(cli: &Cli) -> Result<()> {
    let executor = Executor::new();
    let timer = executor.timer();
    let nap = cli.common.notes_sleep(SLEEP_S);
    let tids = Arc::new(Mutex::new(Vec::new()));
    for task in 0..cli.tasks {
        let (timer, tids) = (timer.clone(), tids.clone());
        executor.spawn(async move {
            tids.lock().unwrap_or_else(|e| e.into_inner()).push(gettid());
            timer.sleep(nap).await;
            common::event!("woke", { "task": task }, "task {task} woke up");
        });
    }
    let question = format!(
        "{} tasks on one thread each sleep {:.0} ms: how many sleeps long is the whole run (1 = one \
         sleep, {} = one after another)?",
        cli.tasks,
        nap.as_secs_f64() * 1e3,
        cli.tasks
    );
    let guess =
        predict::ask(&cli.common, "sleeps", question, predict::Expect::About { within: 0.5 });
    let began = Instant::now();
    executor.run(1);
    let took = began.elapsed();
    report_sleepers("the minimal executor (std only)", cli, nap, took, &tids)?;
    let why = "a sleeping task yields to the executor, which runs the others meanwhile: the waits overlap";
    guess.reveal(took.as_secs_f64() / nap.as_secs_f64().max(1e-9), why);
    Ok(())
}

fn sleepers_on_tokio(cli: &Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let nap = cli.common.notes_sleep(SLEEP_S);
    let tids = Arc::new(Mutex::new(Vec::new()));
    let began = Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..cli.tasks)
            .map(|_| {
                let tids = tids.clone();
                tokio::spawn(async move {
                    tids.lock().unwrap_or_else(|e| e.into_inner()).push(gettid());
                    tokio::time::sleep(nap).await;
                })
            })
            .collect();
        for handle in handles {
            let _ = handle.await;
        }
    });
    report_sleepers("tokio's current-thread runtime", cli, nap, began.elapsed(), &tids)
}

fn report_sleepers(
    runtime: &str,
    cli: &Cli,
    nap: Duration,
    took: Duration,
    tids: &Mutex<Vec<i32>>,
) -> Result<()> {
    let mut tids = tids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    tids.sort_unstable();
    tids.dedup();
    let sum = nap * cli.tasks as u32;
    common::event!("sleepers", { "runtime": runtime, "tasks": cli.tasks, "elapsed_ms": took.as_secs_f64() * 1e3,
                "sum_ms": sum.as_secs_f64() * 1e3, "tids": tids }, "{runtime}: {} tasks each sleeping {:.0} ms took {:.0} ms in all (not {:.0} ms), all on \
             thread(s) {tids:?}: while one waits, the others run",
            cli.tasks,
            nap.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3,
            sum.as_secs_f64() * 1e3);
    Ok(())
}

/// Runs the CPU-bound tasks on `threads` worker threads; returns the time they took. With
/// `one_thread` (the time on one thread) the verdict compares the two.
fn cpu_bound(cli: &Cli, threads: usize, one_thread: Option<Duration>) -> Result<Duration> {
    let executor = Executor::new();
    let cpu = Duration::from_millis(cli.cpu_ms);
    let used = Arc::new(Mutex::new(Vec::new()));
    for task in 0..cli.tasks {
        let used = used.clone();
        executor.spawn(async move {
            common::event!("cpu_start", { "task": task, "threads": threads }, "task {task} computes");
            let took = burn(cpu);
            common::event!("cpu_end", { "task": task, "threads": threads, "cpu_ms": took.as_secs_f64() * 1e3 }, "task {task} done");
            used.lock().unwrap_or_else(|e| e.into_inner()).push(took);
            yield_now().await;
        });
    }
    let began = Instant::now();
    executor.run(threads);
    let took = began.elapsed();
    let cpu_sum: Duration = used.lock().unwrap_or_else(|e| e.into_inner()).iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // The verdict is this run's: two threads ran tasks at once only if they took clearly less
    // than one thread did (on two free CPUs, about half).
    let (verdict, why) = match one_thread {
        None => (
            "one_thread",
            "at least the sum of their CPU times: one thread runs one task at a time, and \
             switching cannot make computation faster"
                .to_string(),
        ),
        Some(one) if took.as_secs_f64() < 0.75 * one.as_secs_f64() => (
            "at_once",
            format!(
                "less than one thread's {:.0} ms: two threads on two cores ran two tasks at once \
                 (no GIL)",
                ms(one)
            ),
        ),
        Some(one) => (
            "not_at_once",
            format!(
                "not clearly less than one thread's {:.0} ms: the two threads did not get two \
                 CPUs at once in this run (a busy machine, or one CPU for this program)",
                ms(one)
            ),
        ),
    };
    common::event!("cpu_bound", { "threads": threads, "tasks": cli.tasks, "elapsed_ms": ms(took),
                "cpu_sum_ms": ms(cpu_sum), "one_thread_ms": one_thread.map(ms),
                "verdict": verdict }, "{} CPU-bound tasks of {} ms CPU each on {threads} worker thread(s): {:.0} ms in all \
             (CPU time used {:.0} ms): {why}",
            cli.tasks,
            cli.cpu_ms,
            ms(took),
            ms(cpu_sum));
    Ok(took)
}

fn blocking(cli: &Cli) -> Result<()> {
    let block = cli.common.notes_sleep(2.0);
    for blocking_call in [true, false] {
        let executor = Executor::new();
        let timer = executor.timer();
        let tick = cli.common.notes_sleep(0.1);
        for name in ["ticker-1", "ticker-2"] {
            let timer = timer.clone();
            executor.spawn(async move {
                for i in 0..TICKS {
                    common::event!("tick", { "task": name, "n": i, "blocking_call": blocking_call }, "{name} tick {i}");
                    timer.sleep(tick).await;
                }
            });
        }
        let timer2 = timer.clone();
        executor.spawn(async move {
            timer2.sleep(tick).await;
            let call = if blocking_call { "std::thread::sleep" } else { "timer.sleep(..).await" };
            common::event!("blocking_start", { "blocking_call": blocking_call }, "blocker calls {call}({} ms)", block.as_millis());
            if blocking_call {
                // The classic mistake: a blocking call holds the thread, so no other task runs.
                std::thread::sleep(block);
            } else {
                timer2.sleep(block).await;
            }
            common::event!("blocking_end", { "blocking_call": blocking_call }, "blocker's {call} returned");
        });
        executor.run(1);
    }
    report::say(
        "std::thread::sleep inside a task blocks the one thread: no tick while it sleeps; the \
         runtime's own sleep lets the others run (gevent's monkey.patch_all exists to turn the \
         first into the second; Rust has no monkey patching, so use tokio::time::sleep or \
         spawn_blocking)",
    );
    Ok(())
}
