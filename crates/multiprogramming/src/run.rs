//! Part 1, `run`: the notes' 多道技术 as a job mix you choose. First the prediction, in
//! process-run.py's own table; then the same jobs as real processes on one CPU, measured; then
//! the two tables side by side, and why they differ.
#![cfg(target_os = "linux")]

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use common::{predict, report};

use crate::kernel::Policy;
use crate::real::{self, Measured, Seen, SeenRow, Setup};
use crate::sim::{self, Cell, IoDone, Op, Prediction, State, Switch};
use crate::{Cli, jobs};

/// The longest real run this demo starts (the prediction's ticks times `--tick-ms`).
pub const MAX_RUN: Duration = Duration::from_secs(60);

/// Says which programs the jobs run (drawn or given).
pub fn show_jobs(jobs: &[Vec<Op>], how: &str) {
    let programs: Vec<String> = jobs.iter().map(|j| jobs::program_text(j)).collect();
    let list: Vec<String> =
        programs.iter().enumerate().map(|(i, p)| format!("job {i}: {p}")).collect();
    common::event!("jobs", { "programs": programs, "how": how }, "{how}: {}", list.join("; "));
}

/// Prints the prediction: a heading line, then the table's rows on lines of their own.
pub fn show_prediction(p: &Prediction, jobs: usize, s: &Setup) {
    let flags = format!(
        "-S {} -I {} -L {}",
        match s.switch {
            Switch::OnIo => "SWITCH_ON_IO",
            Switch::OnEnd => "SWITCH_ON_END",
        },
        match s.io_done {
            IoDone::Later => "IO_RUN_LATER",
            IoDone::Immediate => "IO_RUN_IMMEDIATE",
        },
        s.io_length
    );
    common::event!(
        "prediction",
        { "flags": flags, "rows": p.rows, "total": p.total, "cpu_busy": p.cpu_busy,
          "io_busy": p.io_busy, "cpu_busy_pct": p.cpu_percent(), "io_busy_pct": p.io_percent() },
        "predicted by process-run.py's rules ({flags}), as `process-run.py -c -p` prints it:"
    );
    report::plain(sim::table(p, jobs));
}

/// The prediction, then (unless `predict_only`) the real run beside it.
pub fn run(cli: &Cli, jobs: Vec<Vec<Op>>, how: &str, s: Setup, predict_only: bool) -> Result<()> {
    report::section(
        "run: 多道技术, process-run.py's prediction, then the same jobs on the real kernel",
    );
    show_jobs(&jobs, how);
    let p = sim::simulate(&jobs, s.switch, s.io_done, s.io_length);
    show_prediction(&p, jobs.len(), &s);
    if predict_only {
        return Ok(());
    }
    check_length(&p, s.tick)?;
    real::check_policy(s.policy)?;
    let question = format!(
        "the same jobs as real processes on one CPU ({}, --policy {}): what CPU busy % will be \
         measured? (predicted: {:.0} %)",
        match s.switch {
            Switch::OnIo => "on-io",
            Switch::OnEnd => "on-end",
        },
        match s.policy {
            Policy::Normal => "normal",
            Policy::Fifo => "fifo",
        },
        p.cpu_percent()
    );
    let guess =
        predict::ask(&cli.common, "cpu-busy", question, predict::Expect::About { within: 0.15 });
    let m =
        real::run_jobs(&cli.common, &s, Some("the jobs loaded, pinned, waiting to be released"))?;
    let rows = real::timeline(&m, s.tick);
    show_measured(&m, &rows, &s);
    compare(&p, &m, &rows, &s);
    guess.reveal(
        (m.cpu_busy_percent() * 10.0).round() / 10.0,
        "CPU busy is the jobs' CPU time (schedstat) over the wall time on their CPU",
    );
    Ok(())
}

/// Refuses a run longer than [`MAX_RUN`] (exit 2, naming the flags to change).
pub fn check_length(p: &Prediction, tick: Duration) -> Result<()> {
    let length = tick * p.total.min(u64::from(u32::MAX)) as u32;
    if length > MAX_RUN {
        return Err(common::demo::bad_input(format!(
            "--tick-ms {} with {} predicted ticks would run {:.0} s: at most {} s (give a smaller \
             --tick-ms or fewer instructions)",
            tick.as_millis(),
            p.total,
            length.as_secs_f64(),
            MAX_RUN.as_secs()
        )));
    }
    Ok(())
}

/// The measured stats, each job's time running / ready / blocked, and the measured timeline.
pub fn show_measured(m: &Measured, rows: &[SeenRow], s: &Setup) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let per_job: Vec<serde_json::Value> = m
        .jobs
        .iter()
        .map(|r| {
            serde_json::json!({ "job": r.job, "pid": r.pid, "running_ms": ms(r.running_ns()),
                "ready_ms": ms(r.ready_ns()), "blocked_ms": ms(r.blocked_ns), "ios": r.ios,
                "voluntary": r.voluntary, "involuntary": r.involuntary,
                "wake_mean_us": r.wake_sum_ns as f64 / 1e3 / r.ios.max(1) as f64 })
        })
        .collect();
    let mut text = format!(
        "measured on CPU {}: Total Time {:.1} ticks ({:.1} ms), CPU Busy {:.1} %, IO Busy {:.1} %\n\
         {:>5} {:>8} {:>11} {:>9} {:>11} {:>4} {:>6} {:>6}",
        m.jobs_cpu,
        m.total_ticks(s.tick),
        ms(m.wall_ns),
        m.cpu_busy_percent(),
        m.io_busy_percent(),
        "job",
        "pid",
        "running ms",
        "ready ms",
        "blocked ms",
        "IOs",
        "vol",
        "invol"
    );
    for r in &m.jobs {
        let _ = write!(
            text,
            "\n{:>5} {:>8} {:>11.1} {:>9.2} {:>11.1} {:>4} {:>6} {:>6}",
            r.job,
            r.pid,
            ms(r.running_ns()),
            ms(r.ready_ns()),
            ms(r.blocked_ns),
            r.ios,
            r.voluntary,
            r.involuntary
        );
    }
    common::event!(
        "measured",
        { "total_ticks": m.total_ticks(s.tick), "wall_ms": ms(m.wall_ns),
          "cpu_busy_pct": m.cpu_busy_percent(), "io_busy_pct": m.io_busy_percent(),
          "cpu": m.jobs_cpu, "jobs": per_job, "samples": m.samples.len(),
          "cpu_all_busy_pct": m.cpu_all_busy_pct },
        "{text}"
    );
    if let Some(all) = m.cpu_all_busy_pct {
        let others = (all - m.cpu_busy_percent()).max(0.0);
        common::event!(
            "cpu_shared",
            { "cpu": m.jobs_cpu, "busy_pct": all, "jobs_pct": m.cpu_busy_percent(), "others_pct": others },
            "CPU {} was busy about {all:.0} % of the run (/proc/stat, 10 ms ticks): the jobs {:.0} %, \
             other processes of this machine about {others:.0} %{}",
            m.jobs_cpu,
            m.cpu_busy_percent(),
            match (others > 10.0, s.policy) {
                // Whole 10 ms ticks against schedstat's nanoseconds: on a short run the coarse
                // figure can come out below the jobs' own, and then it says nothing of others.
                _ if all < m.cpu_busy_percent() => format!(
                    ": below the jobs' own figure (schedstat): /proc/stat counts whole 10 ms \
                     ticks, too coarse for a {:.0} ms run",
                    ms(m.wall_ns)
                ),
                (false, _) => String::new(),
                (true, Policy::Normal) => ": in the time the jobs left free, and taking turns \
                                          with them (time the jobs saw as ready)"
                    .to_string(),
                (true, Policy::Fifo) => ": under SCHED_FIFO only in the time the jobs left \
                                        free (all of them blocked), or past the real-time limit \
                                        (sched_rt_runtime_us, sched(7))"
                    .to_string(),
            }
        );
    }
    common::event!(
        "timeline",
        { "rows": rows, "samples": m.samples.len() },
        "the measured timeline, one row per tick of wall time ({} samples of /proc/PID/stat and \
         schedstat): in each tick a job is RUN, READY or BLOCKED by where most of its time went",
        m.samples.len()
    );
}

/// The class of a predicted cell, in the measured timeline's words.
fn class(cell: Cell) -> Seen {
    match cell {
        Cell::Run(_) | Cell::Is(State::Running) => Seen::Run,
        Cell::Is(State::Ready) => Seen::Ready,
        Cell::Is(State::Blocked) => Seen::Blocked,
        Cell::Is(State::Done) => Seen::Done,
    }
}

/// The two tables side by side, how far they agree, and why they differ, from this run's
/// figures.
pub fn compare(p: &Prediction, m: &Measured, rows: &[SeenRow], s: &Setup) {
    let n = m.jobs.len();
    let width = rows.len().max(p.rows.len());
    let mut text =
        format!("{:>5}  {:<width$}  | measured", "tick", "predicted", width = 12 * n + 8);
    let (mut agree, mut cells, mut other_runner) = (0usize, 0usize, 0usize);
    for k in 0..width {
        let _ = write!(text, "\n{:>5}  ", k + 1);
        match p.rows.get(k) {
            Some(r) => {
                for c in &r.cells {
                    let _ = write!(text, "{:>12}", c.text());
                }
                let _ = write!(text, "{:>4}{:>4}", if r.cpu { "1" } else { "" }, r.ios);
            }
            None => {
                let _ = write!(text, "{:w$}", "", w = 12 * n + 8);
            }
        }
        text.push_str("  |");
        if let Some(r) = rows.get(k) {
            for c in &r.cells {
                let _ = write!(text, "{:>8}", c.text());
            }
            let _ = write!(text, "{:>4}{:>4}", if r.cpu >= 0.5 { "1" } else { "" }, r.ios);
        }
        if let (Some(pr), Some(mr)) = (p.rows.get(k), rows.get(k)) {
            for (pc, mc) in pr.cells.iter().zip(&mr.cells) {
                cells += 1;
                // A job not yet released waits for its turn: READY in the simulator's words.
                let seen = if *mc == Seen::Queued { Seen::Ready } else { *mc };
                agree += usize::from(class(*pc) == seen);
            }
            let predicted = pr.cells.iter().position(|c| matches!(c, Cell::Run(_)));
            let measured = mr.cells.iter().position(|c| *c == Seen::Run);
            if predicted.is_some() && measured.is_some() && predicted != measured {
                other_runner += 1;
            }
        }
    }
    let involuntary: u64 = m.jobs.iter().map(|r| r.involuntary).sum();
    let ios: u64 = m.jobs.iter().map(|r| r.ios).sum();
    let wake_mean_us =
        m.jobs.iter().map(|r| r.wake_sum_ns).sum::<u64>() as f64 / 1e3 / ios.max(1) as f64;
    let wake_max_us = m.jobs.iter().map(|r| r.wake_max_ns).max().unwrap_or(0) as f64 / 1e3;
    let ready_ms = m.jobs.iter().map(|r| r.ready_ns()).sum::<u64>() as f64 / 1e6;
    let measured_ticks = m.total_ticks(s.tick);
    let mut why = vec![format!(
        "tick granularity: the prediction counts whole ticks ({} in all); the run took {:.1} ticks \
         of wall time ({:+.1} %): each CPU tick is exact on the job's own clock, and the time \
         between them (waits in the run queue, wake-ups, switches, system calls) is the rest",
        p.total,
        measured_ticks,
        100.0 * (measured_ticks - p.total as f64) / p.total.max(1) as f64
    )];
    if ios > 0 {
        why.push(format!(
            "wake-up latency: an IO's answer reached its job {wake_mean_us:.0} µs later on average \
             (at most {wake_max_us:.0} µs), where the simulator moves a job the same tick"
        ));
    }
    if s.policy == Policy::Normal {
        why.push(format!(
            "the scheduler's choice: --policy normal lets the kernel slice CPU-bound jobs every \
             few ms ({involuntary} involuntary context switches in this run; the simulator \
             preempts a running job only under IO_RUN_IMMEDIATE) and decide who runs after a \
             wake-up; {other_runner} tick(s) had another job running than predicted"
        ));
    } else {
        // What the involuntary switches were, from this run's count and flags.
        let preempted = match (involuntary, s.io_done) {
            (0, _) => "no involuntary switch".to_string(),
            (n, IoDone::Immediate) => format!(
                "{n} involuntary switch(es): under IO_RUN_IMMEDIATE a job whose IO ends takes \
                 the CPU from the running one"
            ),
            (n, IoDone::Later) => format!(
                "{n} involuntary switch(es) all the same: something of a higher priority took \
                 the CPU, which the simulator does not have"
            ),
        };
        why.push(format!(
            "the scheduler's choice: under SCHED_FIFO a job runs until it blocks or ends \
             ({preempted}), but a woken job joins the end of the queue in wake-up order where \
             process-run.py takes the next job by number; {other_runner} tick(s) had another \
             job running than predicted"
        ));
    }
    why.push(format!(
        "time ready: the jobs waited {ready_ms:.2} ms in all in the run queue (schedstat){}",
        match (m.cpu_all_busy_pct, s.policy) {
            (Some(all), Policy::Normal) if all - m.cpu_busy_percent() > 10.0 => format!(
                ", behind each other and behind other processes of this machine, which used \
                 about {:.0} % of CPU {} during the run (/proc/stat)",
                all - m.cpu_busy_percent(),
                m.jobs_cpu
            ),
            (_, Policy::Fifo) => ", behind each other: under SCHED_FIFO an ordinary process \
                                 runs ahead of a job only past the real-time limit \
                                 (sched_rt_runtime_us, 0.95 s of each second by default, \
                                 sched(7))"
                .to_string(),
            _ => ", behind each other".to_string(),
        }
    ));
    if s.policy == Policy::Normal && s.io_done == IoDone::Immediate {
        why.push(
            "--io-done immediate under --policy normal: the kernel decides whether a woken job \
             preempts the running one (it usually does); only --policy fifo makes it a choice"
                .to_string(),
        );
    }
    let agree_pct = 100.0 * agree as f64 / cells.max(1) as f64;
    common::event!(
        "compare",
        { "agree": agree, "cells": cells, "agree_pct": agree_pct,
          "predicted": { "total": p.total, "cpu_busy_pct": p.cpu_percent(), "io_busy_pct": p.io_percent() },
          "measured": { "total_ticks": measured_ticks, "cpu_busy_pct": m.cpu_busy_percent(),
                        "io_busy_pct": m.io_busy_percent() },
          "other_runner_ticks": other_runner, "involuntary": involuntary,
          "wake_mean_us": wake_mean_us, "ready_ms": ready_ms, "why": why },
        "predicted (left) and measured (right), tick by tick: the states agree in {agree} of \
         {cells} cells ({agree_pct:.0} %); Total Time {} vs {measured_ticks:.1} ticks, CPU Busy \
         {:.1} % vs {:.1} %, IO Busy {:.1} % vs {:.1} %",
        p.total,
        p.cpu_percent(),
        m.cpu_busy_percent(),
        p.io_percent(),
        m.io_busy_percent()
    );
    report::plain(text);
    for line in &why {
        report::say(format!("why they differ: {line}"));
    }
}
