//! Part 6: workers that end. One is killed with `kill -9` in the middle of a task (as the OOM
//! killer or a user would): that task's result is an error naming the pid and the signal, a new
//! worker takes its place, every other task completes. Then `maxtasksperchild` replaces workers
//! on purpose, and each new worker runs the initializer.

#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::timeline::{self, Record, Recording, Style};
use common::{ps, report};
use py_multiprocessing::pool::{AsyncResult, Pool, PoolError, PoolOptions};
use serde_json::{Value, json};

use crate::basics::{PATIENCE, task_runs, wait_for_record};
use crate::tasks::{F, FArgs, INIT, WORKER};
use crate::{Cli, notes_ms, options};

pub fn run(cli: &Cli) -> Result<()> {
    report::section("6. a worker killed in the middle of a task; workers replaced on purpose");
    killed(cli)?;
    retired(cli)
}

fn killed(cli: &Cli) -> Result<()> {
    let me = std::process::id() as i32;
    let recording = Recording::start()?;
    let pool = Pool::with_options(&WORKER, options(cli, cli.processes))?;
    let before = pool.pids();
    let tasks = 3 * cli.processes;
    // The victim starts at once (one of the first `processes` tasks) and runs long enough to
    // be caught in the middle.
    let victim = 2.min(cli.processes - 1);
    let handles: Vec<AsyncResult> = (0..tasks)
        .map(|i| {
            let ms = if i == victim { notes_ms(cli, 10.0) } else { notes_ms(cli, 1.0) };
            pool.apply_async(&F, FArgs { name: i, ms })
        })
        .collect::<Result<_, _>>()?;
    let question = format!(
        "Pool({}) runs {tasks} tasks; the worker running one of them is killed with SIGKILL: how \
         many of the {tasks} results are errors?",
        cli.processes
    );
    let guess =
        common::predict::ask(&cli.common, "errors", question, common::predict::Expect::Count);
    let started = wait_for_record(&recording, &format!("task {victim} to start"), |r| {
        r.event == "task_start" && r.data["task"] == victim as u64
    })?;
    let pid = started.pid;
    // Let it get well into its work before the kill (the point is a worker killed in the
    // middle of a task, not at its first instruction), while other tasks still wait.
    std::thread::sleep(std::time::Duration::from_millis(notes_ms(cli, 1.5)));
    let mut pids = vec![me];
    pids.extend(&before);
    cli.common
        .hold(&format!("task {victim} is running in worker {pid}, about to be killed"), &pids);
    common::event!("killing", { "pid": pid, "task": victim }, "kill -9 {pid}: the worker running task {victim} (as the OOM killer, or a user, would)");
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
    {
        Ok(()) => {}
        // Already dead and reaped: killed from elsewhere before this part's own kill -9.
        Err(nix::errno::Errno::ESRCH) => {
            let lost = common::processes::lost::report_pid(pid, "pool worker", None, "tasks", 1);
            return Err(lost.context(format!("the worker {pid} running task {victim} was gone")));
        }
        Err(e) => return Err(e).with_context(|| format!("kill -9 {pid}")),
    }
    let after = replaced(&pool, pid, cli.processes)?;
    let new: Vec<i32> = after.iter().copied().filter(|p| !before.contains(p)).collect();
    ps::show_tree("after the kill: a new worker has taken the dead one's place (ps):");
    if cli.common.start_method == common::process::StartMethod::Fork {
        report::say(
            "The new worker's parent is `forkserver`: a single-threaded process this pool \
             starts for replacements. The pool's parent now has threads (pool-results, \
             signal-watcher), and a fork from a process with threads copies only the forking \
             thread, with any lock another thread held at that instant locked for good in the \
             child; so only the first workers are forked from the parent itself.",
        );
    }
    pool.close();
    pool.join()?;
    let records = recording.finish()?;

    let mut errors = Vec::new();
    let mut right = 0;
    for (i, h) in handles.iter().enumerate() {
        match h.get() {
            Ok(value) => {
                let good = value.as_str().is_some_and(|v| v.starts_with(&format!("{i} current")));
                right += usize::from(good);
                common::event!("fault_result", { "task": i, "ok": true, "value": value }, "task {i}: {}", value.as_str().unwrap_or("?"));
            }
            Err(e) => {
                common::event!("fault_result", { "task": i, "ok": false, "error": e.to_string(),
                            "worker_died": matches!(e, PoolError::WorkerDied { .. }) }, "task {i}: error: {e}");
                errors.push((i, e));
            }
        }
    }
    guess.reveal(
        errors.len(),
        "only the task in the killed worker is lost (its result is an error naming the pid and \
         SIGKILL); the pool starts a replacement and the other tasks run as usual",
    );
    let named = errors.first().is_some_and(|(i, e)| {
        *i == victim
            && e.to_string().contains(&pid.to_string())
            && e.to_string().contains("SIGKILL")
    });
    common::event!("fault_summary", { "killed": pid, "task": victim, "replacement": new, "errors": errors.iter().map(|(i, _)| i).collect::<Vec<_>>(),
                "ok": right, "tasks": tasks, "error_names_pid_and_signal": named }, "{right} of {tasks} results are right; the one error is task {victim}'s, and it names \
             the pid and the signal; new worker(s) {new:?} replaced pid {pid}");
    report::say(
        "In Python: multiprocessing.Pool also starts a new worker, but never learns which task \
         died with the old one: get() on that task's result waits forever (the pool hangs at \
         join). concurrent.futures.ProcessPoolExecutor notices the death and marks the whole \
         pool broken: every pending future fails with BrokenProcessPool, and it refuses new \
         work. Here the parent gives each worker its tasks itself, so it knows exactly which one \
         was lost, and gives the ones not yet started to the others.",
    );
    if cli.timeline {
        // The killed worker wrote nothing after its task began: its lane ends where the parent
        // killed it, marked X.
        let mut records = records;
        if let (Some(kill), Some(start)) = (
            records.iter().find(|r| r.event == "killing").cloned(),
            records.iter().find(|r| r.pid == pid).cloned(),
        ) {
            records.push(Record {
                t_ms: kill.t_ms,
                t_us: kill.t_us,
                event: "killed".into(),
                data: json!({}),
                ..start
            });
        }
        let style =
            Style::new().span_labelled("task_start", "task_end", '#', "task").mark("killed", 'X');
        timeline::show("a worker killed mid-task (X: kill -9)", &records, &style);
    }
    // A task lost with another worker than the victim: that worker was killed from elsewhere.
    let other = errors.iter().find_map(|(i, e)| match e {
        PoolError::WorkerDied { worker, pid: p, exitcode, .. } if *i != victim || *p != pid => {
            Some((worker.clone(), *p, *exitcode))
        }
        _ => None,
    });
    if let Some((worker, other_pid, exitcode)) = other {
        let lost = common::processes::lost::report_pid(other_pid, &worker, exitcode, "tasks", 1);
        return Err(lost.context(format!("{} task(s) lost in all", errors.len())));
    }
    if errors.len() != 1 || !named || right != tasks - 1 || new.is_empty() {
        bail!(
            "after the kill: {} error(s), {right} right results, replacement {new:?}",
            errors.len()
        );
    }
    Ok(())
}

/// Waits until the pool has replaced `dead`: `size` workers again, none of them `dead`.
fn replaced(pool: &Pool, dead: i32, size: usize) -> Result<Vec<i32>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pids = pool.pids();
        if !pids.contains(&dead) && pids.len() == size {
            return Ok(pids);
        }
        if Instant::now() >= deadline {
            bail!("the pool did not replace worker {dead} within {PATIENCE:?}: {pids:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn retired(cli: &Cli) -> Result<()> {
    report::say(
        "Pool(2, initializer=init, maxtasksperchild=2): a worker exits after two tasks and a new \
         one (a new pid) takes its place; every worker runs the initializer once, when it starts",
    );
    let recording = Recording::start()?;
    let opts = PoolOptions {
        maxtasksperchild: Some(2),
        initializer: Some((&INIT, Value::Null)),
        ..options(cli, 2)
    };
    let pool = Pool::with_options(&WORKER, opts)?;
    let ms = notes_ms(cli, 0.5);
    let handles: Vec<AsyncResult> =
        (0..6).map(|i| pool.apply_async(&F, FArgs { name: i, ms })).collect::<Result<_, _>>()?;
    pool.close();
    pool.join()?;
    for h in &handles {
        h.get()?;
    }
    let records = recording.finish()?;
    let runs = task_runs(&records);
    let mut per_pid: HashMap<i32, usize> = HashMap::new();
    for r in &runs {
        *per_pid.entry(r.pid).or_default() += 1;
    }
    let inits: Vec<i32> =
        records.iter().filter(|r| r.event == "worker_init").map(|r| r.pid).collect();
    let most = per_pid.values().copied().max().unwrap_or(0);
    let pids: Vec<i32> = runs.iter().map(|r| r.pid).collect();
    common::event!("retire_summary", { "pids": pids, "workers": per_pid.len(), "most_tasks_in_one": most, "inits": inits }, "6 tasks ran in {} worker processes, at most {most} in each (pids by task: {}); the \
             initializer ran {} times, once in each",
            per_pid.len(),
            pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
            inits.len());
    let all_initialised = per_pid.keys().all(|p| inits.contains(p));
    if most > 2 || per_pid.len() < 3 || !all_initialised {
        bail!("maxtasksperchild=2 broken: {per_pid:?}, initializer ran in {inits:?}");
    }
    Ok(())
}
