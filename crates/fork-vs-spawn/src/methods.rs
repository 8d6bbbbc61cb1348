//! Part 6, three start methods side by side (fork, spawn, forkserver): what a child of each
//! finds of its parent, and what each costs; then why the third exists: a fork pool's workers
//! replaced again and again while two other threads make queues, which never blocks, because
//! the replacements come from the single-threaded fork server, not from this threaded process.
//! Linux only, as the fork server and the process pool are.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use common::process::{Process, Role, StartMethod};
use common::startcost::{self, Starter};
use common::{forkserver, report};
use py_multiprocessing::pool::{Pool, PoolError, PoolOptions, Task};
use py_multiprocessing::queue::Queue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Cli;
use crate::answers::{WorkDir, post, read_answer, succeeded};

/// The child of the comparison: it reports what it found.
pub static PROBE: Role = Role::new("methods-probe", probe);
/// The pool worker of the replacement round (a role, so the fork server can start it).
pub static POOL_WORKER: Role =
    Role::new("methods-pool-worker", |args| py_multiprocessing::pool::serve(args, &[&WHOAMI]));
static WHOAMI: Task = Task::new("whoami", whoami);

/// Set by the parent at run time: a fork child has it, the others not.
static RUNTIME_VALUE: OnceLock<String> = OnceLock::new();
/// How long one task of the replacement round may take before the demo calls it blocked.
const TASK_DEADLINE: Duration = Duration::from_secs(10);
/// Threads that make (and drop) queues while the pool replaces its workers.
const QUEUE_MAKERS: usize = 2;
/// Start+join per method in the comparison (at most `--count`), one round.
const COST_COUNT: usize = 20;

#[derive(Debug, Serialize, Deserialize)]
struct ProbeArgs {
    method: String,
    answer: PathBuf,
    /// A descriptor the parent opened and did not pass, and one it passed (`pass_fds`).
    unpassed_fd: i32,
    passed_fd: i32,
}

/// This process's thread count and command line, from `/proc/self` (with `procfs`).
fn threads_and_cmdline() -> (Option<u64>, String) {
    let me = procfs::process::Process::myself().ok();
    let threads = me.as_ref().and_then(|p| p.status().ok()).map(|s| s.threads);
    let cmdline = me.and_then(|p| p.cmdline().ok()).unwrap_or_default().join(" ");
    (threads, cmdline)
}

/// What the child finds: its parent, its threads, its command line, the parent's value, the
/// two descriptors.
fn probe(args: Value) -> Result<()> {
    let args: ProbeArgs = serde_json::from_value(args).context("decoding the probe's args")?;
    let (threads, cmdline) = threads_and_cmdline();
    let has_fd = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok();
    let answer = json!({
        "method": args.method,
        "pid": std::process::id(),
        "ppid": std::os::unix::process::parent_id(),
        "threads": threads,
        "cmdline": cmdline,
        "has_value": RUNTIME_VALUE.get().is_some(),
        "unpassed_fd": has_fd(args.unpassed_fd),
        "passed_fd": has_fd(args.passed_fd),
    });
    post(&args.answer, &answer)
}

fn whoami(_: Value) -> Result<Value> {
    Ok(json!({ "pid": std::process::id(), "ppid": std::os::unix::process::parent_id() }))
}

pub fn run(cli: &Cli, work: &WorkDir) -> Result<()> {
    report::section("6. three start methods side by side: fork, spawn, forkserver");
    compare(cli, work)?;
    replacements(cli.replacements)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn compare(cli: &Cli, work: &WorkDir) -> Result<()> {
    RUNTIME_VALUE.get_or_init(|| format!("set at run time by pid {}", std::process::id()));
    let unpassed = std::fs::File::open(&work.path).context("opening the work folder")?;
    let passed = std::fs::File::open(&work.path).context("opening the work folder")?;
    let me = std::process::id();
    let parent_threads = common::ps::threads(me as i32).len();
    let methods = [StartMethod::Fork, StartMethod::Spawn, StartMethod::Forkserver];
    let guess = common::predict::ask(
        &cli.common,
        "fork-threads",
        format!(
            "this demo has {parent_threads} threads; a thread forks a child: how many threads \
             does the fork child have?"
        ),
        common::predict::Expect::Count,
    );
    let mut found = Vec::new();
    for method in methods {
        let answer = work.fresh(&format!("methods-{method}.json"))?;
        let args = ProbeArgs {
            method: method.to_string(),
            answer: answer.clone(),
            unpassed_fd: unpassed.as_raw_fd(),
            passed_fd: passed.as_raw_fd(),
        };
        let mut child = Process::new(format!("probe-{method}"), &PROBE, args)
            .start_method(method)
            .pass_fds(&[passed.as_raw_fd()]);
        child.start()?;
        child.join()?;
        succeeded(&child, "the probe child")?;
        let answer = read_answer(&answer)?
            .ok_or_else(|| anyhow!("{child} ended without answering in {}", answer.display()))?;
        found.push(answer);
    }
    let server = forkserver::server_pid();
    let count = cli.count.min(COST_COUNT);
    let kinds = [Starter::Fork, Starter::Spawn, Starter::Forkserver];
    let costs = startcost::measure(&kinds, count, 1)?;
    let cost_of = |i: usize| costs.get(i).map_or(f64::NAN, |(_, v)| startcost::median(v));
    let mut text = format!(
        "the parent (pid {me}) has {parent_threads} threads; each child reports:\n\
         method      parent (PPID)      threads  run-time value  unpassed fd  passed fd  µs per start\n"
    );
    for (i, a) in found.iter().enumerate() {
        let ppid = a["ppid"].as_u64().unwrap_or(0) as i32;
        let parent = if ppid == me as i32 {
            format!("this demo {ppid}")
        } else if Some(ppid) == server {
            format!("forkserver {ppid}")
        } else {
            format!("{ppid}")
        };
        text.push_str(&format!(
            "{:<11} {parent:<18} {:>7}  {:<14}  {:<11}  {:<9}  {:>12.0}\n",
            a["method"].as_str().unwrap_or("?"),
            a["threads"].as_u64().map_or("?".to_string(), |t| t.to_string()),
            yes(a["has_value"] == true),
            yes(a["unpassed_fd"] == true),
            yes(a["passed_fd"] == true),
            cost_of(i),
        ));
    }
    text.push_str(
        "fork copies the parent (its memory, every descriptor) but only the forking thread; \
         spawn runs the program again from main and keeps only the descriptors passed; a \
         forkserver child is forked by a single-threaded server (this program run once more: \
         its command line is the server's), has nothing of the demo's memory, and gets the \
         passed descriptors through the server (SCM_RIGHTS), under the same numbers",
    );
    let (fork, spawn, served) = (&found[0], &found[1], &found[2]);
    guess.reveal(
        fork["threads"].as_u64().unwrap_or(0),
        "fork copies the whole memory but only the thread that called it; the others are gone",
    );
    let as_expected = fork["has_value"] == true
        && fork["unpassed_fd"] == true
        && spawn["has_value"] == false
        && spawn["unpassed_fd"] == false
        && served["has_value"] == false
        && served["unpassed_fd"] == false
        && found.iter().all(|a| a["passed_fd"] == true && a["threads"] == 1)
        && fork["ppid"] == me
        && spawn["ppid"] == me
        && server.is_some_and(|s| served["ppid"] == s);
    report::event(
        "methods",
        json!({ "pid": me, "parent_threads": parent_threads, "server": server,
                "children": found, "cost_us": { "fork": cost_of(0), "spawn": cost_of(1),
                "forkserver": cost_of(2) }, "count": count, "as_expected": as_expected }),
        text,
    );
    if !as_expected {
        bail!("the three start methods did not behave as described: {found:?}");
    }
    Ok(())
}

/// A fork pool whose every task retires its worker (`maxtasksperchild = 1`), so every task
/// after the first two runs in a replacement; meanwhile other threads make queues, each
/// holding the queue module's table lock for a moment. A replacement forked from this process
/// at such a moment would block on that lock for ever; one forked by the fork server cannot.
fn replacements(rounds: usize) -> Result<()> {
    let options = PoolOptions {
        start_method: StartMethod::Fork,
        maxtasksperchild: Some(1),
        name: "replaced".into(),
        ..PoolOptions::new(2)
    };
    let pool = Pool::with_options(&POOL_WORKER, options)?;
    let stop = AtomicBool::new(false);
    let queues_made = AtomicUsize::new(0);
    let began = Instant::now();
    let outcome = std::thread::scope(|scope| {
        for i in 1..=QUEUE_MAKERS {
            let (stop, made) = (&stop, &queues_made);
            let started = common::threads::named::spawn_scoped(
                scope,
                &format!("queue-maker-{i}"),
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        if Queue::<u32>::new(0).is_ok() {
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                },
            );
            if let Err(e) = started {
                stop.store(true, Ordering::Relaxed);
                return Err(anyhow!("starting a queue-maker thread: {e}"));
            }
        }
        let mut answers = Vec::new();
        let mut blocked = None;
        for i in 0..rounds {
            let result = pool.apply_async(&WHOAMI, i).and_then(|r| r.get_timeout(TASK_DEADLINE));
            match result {
                Ok(answer) => answers.push(answer),
                Err(PoolError::Timeout) => {
                    blocked = Some(i);
                    break;
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!("task {i} of the replacement round: {e}"));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        Ok((answers, blocked))
    });
    let (answers, blocked) = match outcome {
        Ok(done) => done,
        Err(e) => {
            pool.terminate();
            return Err(e);
        }
    };
    let server = forkserver::server_pid();
    let me = std::process::id() as u64;
    let mut pids: Vec<u64> = answers.iter().filter_map(|a| a["pid"].as_u64()).collect();
    pids.sort_unstable();
    pids.dedup();
    let from_server = answers.iter().filter(|a| server.is_some_and(|s| a["ppid"] == s)).count();
    let forked_here = answers.iter().filter(|a| a["ppid"] == me).count();
    if blocked.is_some() {
        pool.terminate();
    } else {
        pool.close();
        pool.join()?;
    }
    let made = queues_made.load(Ordering::Relaxed);
    let ms = began.elapsed().as_millis() as u64;
    common::event!("replacements", { "rounds": rounds, "done": answers.len(), "blocked_at": blocked,
        "workers": pids.len(), "from_server": from_server, "forked_here": forked_here,
        "server": server, "queues_made": made, "ms": ms }, "{} tasks, each in a new worker ({} workers in all: {forked_here} forked here at the \
     start, {from_server} forked by the fork server {}) while {QUEUE_MAKERS} threads made \
     {made} queues; {} in {ms} ms",
    answers.len(),
    pids.len(),
    server.map_or("-".into(), |s| format!("(pid {s})")),
    match blocked {
        None => "no replacement ever blocked".to_string(),
        Some(i) => format!("task {i} got no answer within {TASK_DEADLINE:?}: BLOCKED"),
    });
    if let Some(i) = blocked {
        bail!("a replacement worker blocked: task {i} got no answer within {TASK_DEADLINE:?}");
    }
    if rounds > 2 && from_server == 0 {
        bail!("no replacement worker came from the fork server");
    }
    Ok(())
}
