//! Parts 1 to 3: seed 001's pools. `apply_async` (non-blocking), `apply` (blocking), and
//! collecting results with `get` and `map`; the `close`/`join` rules; dropping a pool.

#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::timeline::{self, Record, Recording, Style};
use common::{ps, report};
use py_multiprocessing::pool::{AsyncResult, Pool, PoolError};
use serde_json::{Value, json};

use crate::tasks::{F, FArgs, SQUARE, WORKER};
use crate::{Cli, notes_ms, options};

/// How long the demo waits for something its own workers must do (a task to start, a worker
/// to be replaced) before it calls it a failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One run of a task, as the workers recorded it (`task_start` / `task_end` events).
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub task: u64,
    pub pid: i32,
    /// Positions of its start and end in the recording: the order in which they were written,
    /// one `write(2)` each to one file, which is the order in which they happened.
    pub start: usize,
    pub end: Option<usize>,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
}

/// Every task run in `records`, in the order they started.
pub fn task_runs(records: &[Record]) -> Vec<TaskRun> {
    let mut runs: Vec<TaskRun> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Some(task) = r.data["task"].as_u64() else { continue };
        match r.event.as_str() {
            "task_start" => runs.push(TaskRun {
                task,
                pid: r.pid,
                start: i,
                end: None,
                start_ms: r.t_ms,
                end_ms: None,
            }),
            "task_end" => {
                if let Some(run) = runs
                    .iter_mut()
                    .rev()
                    .find(|x| x.task == task && x.pid == r.pid && x.end.is_none())
                {
                    run.end = Some(i);
                    run.end_ms = Some(r.t_ms);
                }
            }
            _ => {}
        }
    }
    runs
}

/// The most tasks running at one moment: a sweep over the recording in its written order.
pub fn max_running(records: &[Record]) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for r in records {
        match r.event.as_str() {
            "task_start" => {
                now += 1;
                max = max.max(now);
            }
            "task_end" => now = now.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Waits until the recording holds a record that satisfies `pred`, and returns it.
pub fn wait_for_record(
    recording: &Recording,
    what: &str,
    pred: impl Fn(&Record) -> bool,
) -> Result<Record> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(r) = recording.records()?.into_iter().find(|r| pred(r)) {
            return Ok(r);
        }
        if Instant::now() >= deadline {
            bail!("waited {PATIENCE:?} for {what}, in vain");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn style() -> Style {
    Style::new().span_labelled("task_start", "task_end", '#', "task").mark("stars", '*')
}

fn distinct(pids: impl IntoIterator<Item = i32>) -> Vec<i32> {
    let mut seen = HashSet::new();
    pids.into_iter().filter(|p| seen.insert(*p)).collect()
}

fn me() -> i32 {
    std::process::id() as i32
}

/// What seed 001's code did, as recorded.
struct Seed001 {
    records: Vec<Record>,
    /// The pool's workers when it started.
    workers: Vec<i32>,
    /// How long submitting every task took, in µs.
    submit_us: u128,
}

/// Runs seed 001's code: a pool, its tasks submitted with `apply_async` (or `apply` when
/// `blocking`), `****`, `close`, `join`, every result checked.
fn seed_001(cli: &Cli, title: &str, blocking: bool) -> Result<Seed001> {
    let recording = Recording::start()?;
    let me = me();
    common::event!("parent_start", { "pid": me }, "parent process {me} run...");
    let mut opts = options(cli, cli.processes);
    if !blocking {
        opts.maxtasksperchild = cli.maxtasksperchild;
    }
    let pool = Pool::with_options(&WORKER, opts)?;
    let workers = pool.pids();
    common::event!("pool_started", { "pids": workers, "processes": cli.processes, "method": cli.common.start_method.to_string(),
                "maxtasksperchild": if blocking { None } else { cli.maxtasksperchild } }, "p = Pool(processes={}): {} worker processes started by {} ({})",
            cli.processes,
            workers.len(),
            cli.common.start_method,
            workers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "));
    let ms = notes_ms(cli, 1.0);
    let began = Instant::now();
    let mut handles: Vec<AsyncResult> = Vec::new();
    for i in 0..cli.tasks {
        let args = FArgs { name: i, ms };
        if blocking {
            pool.apply(&F, args).with_context(|| format!("p.apply(f, ({i},))"))?;
        } else {
            handles.push(
                pool.apply_async(&F, args).with_context(|| format!("p.apply_async(f, ({i},))"))?,
            );
        }
    }
    let submit_us = began.elapsed().as_micros();
    common::event!("stars", { "submit_us": submit_us, "tasks": cli.tasks, "blocking": blocking }, "****************");
    if !blocking {
        ps::show_tree("this program and its pool while the first tasks run (ps):");
        let mut pids = vec![me];
        pids.extend(&workers);
        cli.common.hold("the pool's workers are running the first tasks", &pids);
    }
    pool.close();
    pool.join().context("p.join()")?;
    for (i, h) in handles.iter().enumerate() {
        h.get().with_context(|| format!("the result of task {i}"))?;
    }
    common::event!("parent_end", { "pid": me }, "parent process {me} end...");
    let records = recording.finish()?;
    if cli.timeline {
        timeline::show(title, &records, &style());
    }
    Ok(Seed001 { records, workers, submit_us })
}

/// Part 1: `Pool(3)` and four tasks by `apply_async`.
pub fn apply_async(cli: &Cli) -> Result<()> {
    report::section("1. Pool(3) and apply_async: submit without waiting (使用进程池, 异步非阻塞)");
    let title = "Pool(3), four tasks by apply_async";
    let question = format!(
        "Pool({}) and {} tasks by apply_async: in how many different worker pids do they run?",
        cli.processes, cli.tasks
    );
    let guess = common::predict::ask(&cli.common, "pids", question, common::predict::Expect::Count);
    let Seed001 { records, workers, submit_us } = seed_001(cli, title, false)?;
    let runs = task_runs(&records);
    if runs.len() != cli.tasks || runs.iter().any(|r| r.end.is_none()) {
        bail!("expected {} tasks to start and end, the recording shows {}", cli.tasks, runs.len());
    }
    let pids = distinct(runs.iter().map(|r| r.pid));
    let max = max_running(&records);
    let stars =
        records.iter().position(|r| r.event == "stars").context("no **** in the recording")?;
    let first_start = runs.iter().map(|r| r.start).min().unwrap_or(0);
    let first_end = runs.iter().filter_map(|r| r.end).min().unwrap_or(0);
    // The tasks that had to wait: each ran in a worker after that worker's previous task.
    let mut waited = Vec::new();
    for run in runs.iter().filter(|r| r.task as usize >= cli.processes) {
        let before = runs
            .iter()
            .filter(|r| r.pid == run.pid && r.end.is_some_and(|e| e < run.start))
            .max_by_key(|r| r.end);
        let first_freed = runs.iter().filter(|r| r.end.is_some()).min_by_key(|r| r.end);
        waited.push(json!({
            "task": run.task, "pid": run.pid, "after_task": before.map(|b| b.task),
            "new_worker": !workers.contains(&run.pid),
            "first_freed": first_freed.is_some_and(|f| f.pid == run.pid && run.task as usize == cli.processes),
        }));
    }
    let limit = cli.processes.min(cli.tasks);
    report::event(
        "pool_summary",
        json!({
            "tasks": cli.tasks, "processes": cli.processes, "pids": pids, "max_running": max,
            "stars_before_first_task_line": stars < first_start, "stars_before_first_end": stars < first_end,
            "submit_us": submit_us, "waited": waited,
        }),
        summary_text(cli, &runs, &pids, max, &waited),
    );
    let why = "a pool keeps its workers: a task waits for a free one and runs in its pid";
    guess.reveal(pids.len(), why);
    if stars < first_start {
        report::say(format!(
            "**** came before every task's first line: apply_async returned after {submit_us} µs \
             for all {} tasks, without waiting for any (非阻塞)",
            cli.tasks
        ));
    } else {
        report::say(format!(
            "a worker printed its first line before ****: the main thread was held up between \
             apply_async and print (a busy machine); still, apply_async returned after \
             {submit_us} µs for all {} tasks, and **** came before any task ended",
            cli.tasks
        ));
    }
    if max > limit {
        bail!(
            "{max} tasks ran at once in a pool of {}: the pool broke its own limit",
            cli.processes
        );
    }
    if cli.maxtasksperchild.is_none() && pids.len() != limit {
        bail!("{} tasks ran in {} processes, expected {limit}", cli.tasks, pids.len());
    }
    Ok(())
}

fn summary_text(cli: &Cli, runs: &[TaskRun], pids: &[i32], max: usize, waited: &[Value]) -> String {
    let mut text = format!(
        "{} tasks ran in {} worker processes, at most {max} at once (Pool(processes={}))",
        runs.len(),
        pids.len(),
        cli.processes
    );
    for w in waited {
        let task = &w["task"];
        let pid = &w["pid"];
        if w["new_worker"] == true {
            text.push_str(&format!(
                "\ntask {task} ran in a new worker, pid {pid}: the one before it had done its \
                 maxtasksperchild tasks"
            ));
        } else {
            let after = &w["after_task"];
            let first =
                if w["first_freed"] == true { ", the first worker that freed up" } else { "" };
            text.push_str(&format!(
                "\ntask {task} waited for a free worker and ran in pid {pid}{first}, after task {after}: \
                 the pool keeps its workers (维持执行进程的总数为{})",
                cli.processes
            ));
        }
    }
    text
}

/// Part 2: the same tasks with the blocking `apply`.
pub fn apply(cli: &Cli) -> Result<()> {
    report::section("2. the blocking pool: apply waits for each task (使用阻塞进程池, 同步阻塞)");
    let title = "Pool(3), four tasks by apply";
    let guess = common::predict::ask(
        &cli.common,
        "apply-wall",
        "Pool(3), four tasks by apply: is the wall time about the sum of the tasks' times, or \
         about the longest one's?",
        common::predict::Expect::Choice(&["sum", "longest"]),
    );
    let began = Instant::now();
    let Seed001 { records, .. } = seed_001(cli, title, true)?;
    let wall_ms = began.elapsed().as_millis() as u64;
    let runs = task_runs(&records);
    let serial = runs.windows(2).all(|w| w[0].end.is_some_and(|e| e < w[1].start));
    let stars = records.iter().position(|r| r.event == "stars").unwrap_or(0);
    let stars_last = runs.iter().all(|r| r.end.is_some_and(|e| e < stars));
    let pids: Vec<i32> = runs.iter().map(|r| r.pid).collect();
    let busy_ms: u64 =
        runs.iter().map(|r| r.end_ms.unwrap_or(r.start_ms).saturating_sub(r.start_ms)).sum();
    let longest_ms = runs
        .iter()
        .map(|r| r.end_ms.unwrap_or(r.start_ms).saturating_sub(r.start_ms))
        .max()
        .unwrap_or(0);
    guess.reveal(
        if wall_ms.abs_diff(busy_ms) <= wall_ms.abs_diff(longest_ms) { "sum" } else { "longest" },
        format!(
            "wall {wall_ms} ms, the tasks' times add up to {busy_ms} ms, the longest is \
             {longest_ms} ms: apply returns only when its task has ended, so they run one after \
             another"
        ),
    );
    common::event!("apply_summary", { "serial": serial, "stars_last": stars_last, "pids": pids, "busy_ms": busy_ms,
                "wall_ms": wall_ms, "tasks": runs.len() }, "apply returned only when its task had ended: {} tasks one after another ({}), in \
             pids {}; the tasks' times add up to {busy_ms} ms; **** came {}",
            runs.len(),
            if serial { "no two overlapped" } else { "BUT two overlapped" },
            pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
            if stars_last { "after all of them" } else { "too early" });
    report::say(
        "which worker takes an apply is not a rule: CPython's idle workers race for one shared \
         task queue, so the notes' 7976, 4540, 3556, 7976 is one outcome among others. A \
         blocking pool runs one task at a time, whatever its size",
    );
    if !serial || runs.len() != cli.tasks {
        bail!("apply is blocking, yet tasks overlapped or went missing: {runs:?}");
    }
    Ok(())
}

/// Part 3: collecting results.
pub fn get(cli: &Cli) -> Result<()> {
    report::section("3. collecting results: get and map; close, join, terminate (关注进程池结果)");
    let recording = Recording::start()?;
    let ms = notes_ms(cli, 1.0);

    // Seed 001's code: three tasks, close, join, then get each result.
    let pool = Pool::with_options(&WORKER, options(cli, cli.processes))?;
    let results: Vec<AsyncResult> =
        (0..3).map(|i| pool.apply_async(&F, FArgs { name: i, ms })).collect::<Result<_, _>>()?;
    common::event!("stars", {}, "****************");
    pool.close();
    pool.join()?;
    for (i, r) in results.iter().enumerate() {
        let value = r.get().with_context(|| format!("result[{i}].get()"))?;
        common::event!("got", { "task": i, "value": value }, "***** {}", value.as_str().unwrap_or("?"));
    }

    // map: results in the order of the items, whatever order they finish in.
    let pool = Pool::with_options(&WORKER, options(cli, cli.processes))?;
    let n = 2 * cli.processes as i64;
    let step = notes_ms(cli, 0.5);
    // The later an item, the shorter its task: they finish in another order than they came.
    let items: Vec<(i64, u64)> = (0..n).map(|x| (x, (n - x) as u64 * step / 2)).collect();
    let values: Vec<i64> =
        pool.map_chunked(&SQUARE, &items, Some(1)).context("p.map(square, items)")?;
    drop(pool);
    let finished: Vec<i64> = recording
        .records()?
        .iter()
        .filter(|r| r.event == "square_done")
        .filter_map(|r| r.data["x"].as_i64())
        .collect();
    let in_order = values.iter().copied().eq((0..n).map(|x| x * x));
    common::event!("map_result", { "items": (0..n).collect::<Vec<_>>(), "values": values, "in_order": in_order, "finish_order": finished }, "p.map(square, range({n})) = {}: in the items' order, though they finished in the \
             order {finished:?} (map chunks the items, chunksize=1 here, and puts each result \
             back in its place)",
            json!(values));

    // The rules: join before close, submit after close.
    let pool = Pool::with_options(&WORKER, options(cli, 1))?;
    let early = pool.join().err();
    let mut refused =
        rule("p.join() before p.close()", early.as_ref(), "ValueError: Pool is still running");
    pool.close();
    let late = pool.apply_async(&F, FArgs { name: 9, ms }).err();
    refused &=
        rule("p.apply_async() after p.close()", late.as_ref(), "ValueError: Pool not running");
    pool.join()?;
    report::say(
        "the notes' rule reads 调用join之前要先调用join函数 (\"call join before join\"): a slip \
         for close. join() waits for the workers to exit, and they exit only once no more work \
         can come: after close() (or terminate())",
    );
    if !refused {
        bail!("the pool accepted a call that Python's rules refuse");
    }

    // Dropping a pool waits for its work (concurrent.futures' `with` does too)...
    let began = Instant::now();
    let handles: Vec<AsyncResult> = {
        let pool = Pool::with_options(&WORKER, options(cli, cli.processes))?;
        (10..13).map(|i| pool.apply_async(&F, FArgs { name: i, ms })).collect::<Result<_, _>>()?
        // `pool` is dropped here: close() + join()
    };
    let ready = handles.iter().filter(|h| h.successful() == Ok(true)).count();
    common::event!("dropped", { "ready": ready, "of": handles.len(), "waited_ms": began.elapsed().as_millis() as u64 }, "a pool dropped with {} tasks submitted: the drop waited {} ms, until all were \
             done: {ready} of {} results ready (no work lost silently)",
            handles.len(),
            began.elapsed().as_millis(),
            handles.len());

    // ... where Python's `with Pool() as p:` ends with terminate(): running tasks are killed.
    let long = notes_ms(cli, 10.0);
    let pool = Pool::with_options(&WORKER, options(cli, cli.processes))?;
    let workers = pool.pids();
    let doomed: Vec<AsyncResult> = (20..20 + cli.processes)
        .map(|i| pool.apply_async(&F, FArgs { name: i, ms: long }))
        .collect::<Result<_, _>>()?;
    for i in 20..20 + cli.processes as u64 {
        wait_for_record(&recording, &format!("task {i} to start"), |r| {
            r.event == "task_start" && r.data["task"] == i
        })?;
    }
    let began = Instant::now();
    pool.terminate();
    let took = began.elapsed().as_millis() as u64;
    let errors: Vec<String> = doomed
        .iter()
        .map(|h| match h.get() {
            Ok(v) => format!("finished anyway: {v}"),
            Err(e) => e.to_string(),
        })
        .collect();
    let left: Vec<i32> =
        workers.iter().copied().filter(|p| ps::stat(*p).is_some_and(|s| s.ppid == me())).collect();
    let all_terminated =
        doomed.iter().all(|h| matches!(h.get(), Err(PoolError::Terminated { .. })));
    common::event!("terminated", { "took_ms": took, "task_ms": long, "errors": errors, "workers": workers, "left": left,
                "all_terminated": all_terminated }, "p.terminate() with {} tasks of {long} ms running (what Python's `with Pool() as \
             p:` does at the end of its block): returned after {took} ms, every worker gone \
             ({} left), each result an error: {}",
            doomed.len(),
            left.len(),
            errors.first().map_or("", String::as_str));
    recording.finish()?;
    if !in_order {
        bail!("map returned {values:?}, not the squares in order");
    }
    // A worker killed from elsewhere (not by terminate): its task's error says which; `run`
    // reports it as lost.
    let died = handles.iter().chain(&doomed).find_map(|h| match h.get() {
        Err(e @ PoolError::WorkerDied { .. }) => Some(e),
        _ => None,
    });
    if let Some(e) = died {
        return Err(e).context("a task of the drop or terminate step");
    }
    if ready != handles.len() || !left.is_empty() || !all_terminated {
        bail!("drop or terminate did not do what they promise (ready {ready}, left {left:?})");
    }
    Ok(())
}

/// Reports how a call that breaks Python's rules was answered; true if it was refused.
fn rule(call: &str, error: Option<&PoolError>, python: &str) -> bool {
    match error {
        Some(e) => {
            common::event!("rule", { "call": call, "error": e.to_string(), "python": python }, "{call}: refused: {e}")
        }
        None => {
            common::event!("rule", { "call": call, "error": null, "python": python }, "{call}: accepted?! Python raises {python}")
        }
    }
    error.is_some()
}
