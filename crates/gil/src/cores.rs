//! Part 4: concurrency vs parallelism (并发 vs 并行). Two CPU-bound threads pinned to one CPU
//! with `sched_setaffinity` take turns on it (concurrency); pinned to two CPUs they run at the
//! same time (parallelism). Each thread's CPU, CPU time and context switches come from `/proc`.

#![cfg(target_os = "linux")]

use anyhow::{Context, Result, bail};
use common::{predict, ps, report};
use gil::countdown::{countdown, ms};
use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::unistd::Pid;
use serde_json::json;

use crate::experiment::{ThreadRun, run_threads};
use crate::{CORES_N, Cli};

/// The CPUs this program may run on (its affinity mask, what `taskset -p` shows).
fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect())
}

/// Pins the calling thread to `cpu` (pid 0 = the calling thread) and returns the CPU it runs
/// on right after: the kernel moves it there before `sched_setaffinity` returns.
fn pin_to(cpu: usize) -> nix::Result<usize> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)?;
    sched_getcpu()
}

struct Row {
    what: &'static str,
    pinned: Vec<usize>,
    wall_ms: f64,
    threads: Vec<ThreadRun>,
}

/// Two threads, thread i pinned to `cpus[i]`, each counting `n` down.
fn pinned_run(cli: &Cli, what: &'static str, cpus: [usize; 2], n: u64) -> Result<Row> {
    let names = ["pinned-1".to_string(), "pinned-2".to_string()];
    let pid = std::process::id() as i32;
    let (wall, threads) = run_threads(
        &names,
        |i| match pin_to(cpus[i]) {
            Ok(_) => countdown(n),
            // Reported below as a thread that did not count: 0 done.
            Err(_) => 0,
        },
        |threads| {
            ps::show_threads(
                &format!("{what}: the threads of pid {pid}, from /proc/{pid}/task"),
                pid,
            );
            if what == "one CPU" {
                let cmd = format!("ps -L -o pid,lwp,stat,psr,comm -p {pid}");
                report::say(format!("PSR is the CPU a thread last ran on: {cmd}"));
            }
            cli.common.hold_threads(&format!("{what}: the pinned threads have counted down"), pid);
            let _ = threads;
        },
    )?;
    for t in &threads {
        if t.done != n {
            bail!("{} could not be pinned to its CPU (sched_setaffinity failed)", t.name);
        }
    }
    Ok(Row { what, pinned: cpus.to_vec(), wall_ms: ms(wall), threads })
}

pub fn run(cli: &Cli) -> Result<()> {
    let n = cli.n_or(CORES_N);
    report::section(
        "4. concurrency vs parallelism (并发 vs 并行): two threads on one CPU, then on two",
    );
    let allowed = allowed_cpus()?;
    let mut cpus = allowed.clone();
    if let Some(k) = cli.cpus {
        cpus.truncate(usize::from(k));
    }
    let Some(&first) = cpus.first() else { bail!("sched_getaffinity gave no CPU") };
    common::event!("cpus_allowed", { "allowed": allowed, "used": cpus }, "this program may run on CPUs {allowed:?} (nproc: {}); this part uses {cpus:?}",
            allowed.len());
    let question = "Two CPU-bound threads pinned to one CPU (并发) instead of two (并行): how many \
                    times longer do they take?";
    // Asked only where there is a second CPU to compare with.
    let guess = (cpus.len() >= 2).then(|| {
        predict::ask(&cli.common, "one-cpu", question, predict::Expect::About { within: 0.3 })
    });
    let mut rows = vec![pinned_run(cli, "one CPU", [first, first], n)?];
    let parallel_skipped = cpus.len() < 2;
    if parallel_skipped {
        common::event!("parallel_skipped", { "cpus": cpus.len() }, "only one CPU here: the parallel row (two threads on two CPUs) is skipped; on one \
             CPU threads can only take turns");
    } else {
        rows.push(pinned_run(cli, "two CPUs", [cpus[0], cpus[1]], n)?);
    }
    let mut table = format!(
        "  {:<9} {:>9}  {:<9} {:>8} {:>4} {:>8} {:>6} {:>8}",
        "CPUs", "wall ms", "thread", "tid", "PSR", "CPU ms", "vol", "invol"
    );
    for r in &rows {
        for (i, t) in r.threads.iter().enumerate() {
            let (what, wall) = if i == 0 {
                (r.what.to_string(), format!("{:.1}", r.wall_ms))
            } else {
                (String::new(), String::new())
            };
            table.push_str(&format!(
                "\n  {:<9} {:>9}  {:<9} {:>8} {:>4} {:>8.1} {:>6} {:>8}",
                what, wall, t.name, t.tid, t.psr, t.cpu_ms, t.voluntary, t.involuntary
            ));
        }
    }
    let data: Vec<_> = rows
        .iter()
        .map(|r| json!({ "cpus": r.what, "pinned": r.pinned, "wall_ms": r.wall_ms, "threads": r.threads }))
        .collect();
    let ratio = (rows.len() == 2).then(|| rows[0].wall_ms / rows[1].wall_ms.max(1e-6));
    common::event!("cores", { "n": n, "rows": data, "parallel_skipped": parallel_skipped, "one_over_two": ratio }, "two threads, each counting {n} down, pinned with sched_setaffinity:");
    report::plain(table);
    if let (Some(ratio), Some(guess)) = (ratio, guess) {
        let why = "on one CPU the threads take turns, so the wall time is both CPU times added up";
        guess.reveal(ratio, why);
    }
    for r in &rows {
        for (t, cpu) in r.threads.iter().zip(&r.pinned) {
            if t.psr != *cpu as i32 {
                bail!(
                    "{} was pinned to CPU {cpu} but /proc says it last ran on CPU {}",
                    t.name,
                    t.psr
                );
            }
        }
    }
    // The verdicts are this run's: pinned to one CPU the threads can only take turns (certain);
    // on two CPUs they ran at the same time only if the wall time shows it.
    let one = &rows[0];
    let one_sum: f64 = one.threads.iter().map(|t| t.cpu_ms).sum();
    let mut text = format!(
        "On one CPU the threads can only take turns (concurrency, 并发: 看起来同时运行, \
         实际上来回切换): the wall time ({:.0} ms) is at least their two CPU times added up \
         ({one_sum:.0} ms; the rest went to other programs on that CPU), and the kernel's \
         scheduler preempted them {} times (involuntary switches).",
        one.wall_ms,
        one.threads.iter().map(|t| t.involuntary).sum::<u64>()
    );
    let mut verdict = json!({ "one_cpu_wall_ms": one.wall_ms, "one_cpu_cpu_sum_ms": one_sum });
    if let (Some(ratio), Some(two)) = (ratio, rows.get(1)) {
        let cpu_each = two.threads.iter().map(|t| t.cpu_ms).fold(0.0, f64::max);
        let two_sum: f64 = two.threads.iter().map(|t| t.cpu_ms).sum();
        let (key, what) = if two.wall_ms <= 1.25 * cpu_each {
            (
                "parallel",
                "about one thread's CPU time: the threads ran at the same time (parallelism, \
                 并行: 只有多核才能同时做多件事)",
            )
        } else if two.wall_ms < 0.75 * two_sum {
            (
                "partly_parallel",
                "more than one thread's CPU time but less than both added up: the threads ran \
                 at the same time part of the time; other programs took the CPUs the rest",
            )
        } else {
            (
                "took_turns",
                "no less than both CPU times added up: other programs kept a CPU busy, so even \
                 on two CPUs the threads mostly took turns in this run",
            )
        };
        text.push_str(&format!(
            " On two CPUs the wall time ({:.0} ms) is {what} (CPU time {cpu_each:.0} ms for the \
             busier thread, {two_sum:.0} ms for both); one CPU / two CPUs = {ratio:.2}. Other \
             programs on a shared machine take CPUs too: the figures move from run to run.",
            two.wall_ms
        ));
        verdict["two_cpus_wall_ms"] = json!(two.wall_ms);
        verdict["two_cpus_cpu_max_ms"] = json!(cpu_each);
        verdict["two_cpus_cpu_sum_ms"] = json!(two_sum);
        verdict["verdict"] = json!(key);
    }
    report::event("cores_verdict", verdict, text);
    Ok(())
}
