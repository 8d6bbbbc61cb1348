//! Part 5: when to use which pool (什么时候用池, 用哪种池). CPU-bound tasks on a process pool
//! and on a thread pool, IO-bound tasks on both: a table of wall times, measured here, and what
//! CPython would show instead.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::report;
use py_multiprocessing::pool::{Pool, PoolOptions, Task, ThreadPool};
use serde::Serialize;

use crate::tasks::{CPU, IO, WORKER, iterations_for, spin};
use crate::{Cli, notes_ms, options};

/// IO-bound tasks: this many, on pools of [`IO_WORKERS`].
const IO_TASKS: usize = 8;
const IO_WORKERS: usize = 4;

#[derive(Debug, Serialize)]
struct Row {
    work: &'static str,
    pool: &'static str,
    workers: usize,
    tasks: usize,
    /// Making the pool (starting its workers), ms.
    start_ms: f64,
    /// From the first submit to the last result, ms.
    run_ms: f64,
    /// The tasks' own times added up: what one worker would take, ms.
    serial_ms: f64,
}

/// Runs `tasks` tasks on a freshly made pool; returns (start, run) in ms.
fn measure(
    make: impl FnOnce() -> Result<Pool>,
    task: &'static Task,
    args: u64,
    tasks: usize,
) -> Result<(f64, f64)> {
    let began = Instant::now();
    let pool = make()?;
    let start = began.elapsed();
    let began = Instant::now();
    let handles =
        (0..tasks).map(|_| pool.apply_async(task, args)).collect::<Result<Vec<_>, _>>()?;
    for h in &handles {
        h.get()?;
    }
    let run = began.elapsed();
    pool.close();
    pool.join()?;
    Ok((start.as_secs_f64() * 1e3, run.as_secs_f64() * 1e3))
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("5. which pool? CPU-bound and IO-bound tasks on processes and threads");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let cpu_tasks = 2 * cores;
    let iterations = iterations_for(Duration::from_millis(cli.cpu_ms));
    // One task timed here, in this process: the serial baseline.
    let began = Instant::now();
    std::hint::black_box(spin(iterations));
    let one_cpu_ms = began.elapsed().as_secs_f64() * 1e3;
    report::say(format!(
        "{cpu_tasks} CPU-bound tasks of about {one_cpu_ms:.0} ms of arithmetic each on {cores} \
         workers (this program may use {cores} CPUs), then {IO_TASKS} IO-bound tasks (a wait of {} ms each, \
         standing for a network or disk wait) on {IO_WORKERS} workers",
        notes_ms(cli, 1.0)
    ));
    let io_ms = notes_ms(cli, 1.0);
    let mut rows = Vec::new();
    let cases: [(&'static str, &'static str, usize, &'static Task, u64, usize, f64); 4] = [
        ("CPU-bound", "processes", cores, &CPU, iterations, cpu_tasks, one_cpu_ms),
        ("CPU-bound", "threads", cores, &CPU, iterations, cpu_tasks, one_cpu_ms),
        ("IO-bound", "processes", IO_WORKERS, &IO, io_ms, IO_TASKS, io_ms as f64),
        ("IO-bound", "threads", IO_WORKERS, &IO, io_ms, IO_TASKS, io_ms as f64),
    ];
    for (work, kind, workers, task, args, tasks, each_ms) in cases {
        let (start_ms, run_ms) = if kind == "processes" {
            measure(|| Ok(Pool::with_options(&WORKER, options(cli, workers))?), task, args, tasks)?
        } else {
            let options = PoolOptions { name: "pool-thread".into(), ..PoolOptions::new(workers) };
            measure(|| Ok(ThreadPool::with_options(options)?), task, args, tasks)?
        };
        rows.push(Row {
            work,
            pool: kind,
            workers,
            tasks,
            start_ms,
            run_ms,
            serial_ms: each_ms * tasks as f64,
        });
    }
    let mut table = format!(
        "  {:<10} {:<10} {:>7} {:>5} {:>10} {:>10} {:>14}",
        "work", "pool", "workers", "tasks", "start ms", "run ms", "one-by-one ms"
    );
    for r in &rows {
        table.push_str(&format!(
            "\n  {:<10} {:<10} {:>7} {:>5} {:>10.1} {:>10.0} {:>14.0}",
            r.work, r.pool, r.workers, r.tasks, r.start_ms, r.run_ms, r.serial_ms
        ));
    }
    common::event!("which_pool", { "rows": rows, "cores": cores }, "wall times, measured now:");
    report::plain(table);
    // The verdict is this run's: a pool ran its CPU-bound tasks in parallel only if it took
    // clearly less than one by one; "as fast as each other" only if the two are close.
    let cpu = |pool: &str| rows.iter().find(|r| r.work == "CPU-bound" && r.pool == pool);
    if let (Some(p), Some(t)) = (cpu("processes"), cpu("threads")) {
        let parallel = |r: &Row| r.run_ms < 0.75 * r.serial_ms;
        let close = p.run_ms.max(t.run_ms) <= 1.25 * p.run_ms.min(t.run_ms);
        let ran = match (parallel(p), parallel(t)) {
            (true, true) if close => {
                "both pools ran the CPU-bound tasks in parallel, about as fast as each other: \
                 threads have no GIL"
                    .to_string()
            }
            (true, true) => format!(
                "both pools ran the CPU-bound tasks in parallel (threads have no GIL), the {} \
                 pool faster in this run",
                if p.run_ms < t.run_ms { "process" } else { "thread" }
            ),
            _ if cores < 2 => "this program may use one CPU, so neither pool could run two \
                 tasks at once"
                .to_string(),
            (pp, tp) => format!(
                "in this run {} clearly less than the one-by-one {:.0} ms: other programs kept \
                 the CPUs busy. Threads have no GIL: on free CPUs both pools run in parallel",
                match (pp, tp) {
                    (true, false) => "the thread pool did not take",
                    (false, true) => "the process pool did not take",
                    _ => "neither pool took",
                },
                p.serial_ms
            ),
        };
        common::event!(
            "which_verdict",
            { "processes_ms": p.run_ms, "threads_ms": t.run_ms, "one_by_one_ms": p.serial_ms,
              "processes_parallel": parallel(p), "threads_parallel": parallel(t),
              "close": close },
            "Here, in Rust, {ran}. So the choice is not about cores: a process pool costs more \
             to start and to talk to (every argument and result is copied through a pipe), and \
             buys isolation (a crash or a kill -9 takes one worker, not the program: part 6); a \
             thread pool starts in microseconds and shares memory."
        );
    }
    report::say(
        "In CPython the table would differ: CPU-bound tasks on a thread pool would take about \
         the one-by-one time, because the GIL lets one thread at a time run Python code, while \
         the process pool divides it by the cores; that is why seed 001 says many cores need \
         processes (可以通过多进程实现多核任务), and the course's rule of thumb (a later lecture, \
         not in the notes) is: CPU-bound → processes (计算密集型用多进程), IO-bound → threads \
         (IO密集型用多线程). IO-bound tasks \
         overlap their waits on both pools, in Python and here.",
    );
    for r in rows.iter().filter(|r| r.work == "IO-bound") {
        if r.run_ms >= r.serial_ms {
            bail!(
                "{} IO-bound tasks on {} {} took {:.0} ms, no less than one by one",
                r.tasks,
                r.workers,
                r.pool,
                r.run_ms
            );
        }
    }
    Ok(())
}
