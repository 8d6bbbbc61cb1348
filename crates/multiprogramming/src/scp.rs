//! Part 6, `serial-concurrent-parallel`: 串行, 并发 and 并行. The same two CPU-bound jobs one
//! after the other, interleaved on one CPU, and on two CPUs at once; for each, the wall time,
//! the CPU time, the switches and which CPU ran whom (the sampler's `psr`).
#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::process::Process;
use common::sampler::Sampler;
use common::{predict, report};
use serde::{Deserialize, Serialize};

use crate::kernel;

fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // Safety: the number was open in the demo when the child was forked and the child never
    // closes it.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// How the two jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// 串行: one after the other, on one CPU.
    Serial,
    /// 并发: at the same time on one CPU: they take turns.
    Concurrent,
    /// 并行: at the same time on two CPUs.
    Parallel,
}

/// What one job measured of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairJob {
    pub pid: i32,
    pub run_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// One run of the two jobs.
#[derive(Debug, Serialize)]
pub struct PairRun {
    pub mode: Mode,
    pub cpus: Vec<usize>,
    pub wall_ns: u64,
    pub jobs: Vec<PairJob>,
    /// One line per job: the CPU it ran on in each slice of the run, `.` waiting, ` ` absent.
    pub lanes: Vec<String>,
}

impl PairRun {
    pub fn cpu_ns(&self) -> u64 {
        self.jobs.iter().map(|j| j.run_ns).sum()
    }
    pub fn involuntary(&self) -> u64 {
        self.jobs.iter().map(|j| j.involuntary).sum()
    }
}

/// Slices in a lane of the psr timeline.
const LANE: usize = 48;

/// Runs two CPU-bound jobs of `work` CPU time each, as `mode` says.
pub fn run_pair(mode: Mode, work: Duration, hold: Option<&CommonArgs>) -> Result<PairRun> {
    let (jobs_cpu, others) = kernel::jobs_cpu_and_others()?;
    let cpus = match mode {
        Mode::Serial | Mode::Concurrent => vec![jobs_cpu, jobs_cpu],
        Mode::Parallel => {
            let allowed = kernel::allowed_cpus()?;
            if allowed.len() < 2 {
                bail!("one CPU: no parallel run");
            }
            vec![allowed[0], allowed[1]]
        }
    };
    let restore = kernel::allowed_cpus()?;
    if mode != Mode::Parallel {
        kernel::pin_process_to(&others)?;
    }
    let result = pair_pinned(mode, work, cpus, hold);
    let _ = kernel::pin_process_to(&restore);
    result
}

fn pair_pinned(
    mode: Mode,
    work: Duration,
    cpus: Vec<usize>,
    hold: Option<&CommonArgs>,
) -> Result<PairRun> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2");
    let (results_r, results_w) = pipe()?;
    let mut gos = Vec::new();
    let mut jobs = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        let (go_r, go_w) = pipe()?;
        let (go, results) = (go_r.as_raw_fd(), results_w.as_raw_fd());
        let mut job = Process::from_fn(format!("cpu-job-{}", i + 1), move || {
            kernel::pin_to(&[cpu])?;
            let mut byte = [0u8; 1];
            if !kernel::read_exact(fd(go), &mut byte)? {
                return Ok(());
            }
            let s0 = kernel::schedstat(0).unwrap_or_default();
            let (v0, i0) = kernel::switches(0);
            kernel::burn(work);
            let s1 = kernel::schedstat(0).unwrap_or_default();
            let (v1, i1) = kernel::switches(0);
            let report = PairJob {
                pid: std::process::id() as i32,
                run_ns: s1.run_ns.saturating_sub(s0.run_ns),
                voluntary: v1.saturating_sub(v0),
                involuntary: i1.saturating_sub(i0),
            };
            kernel::write_all(fd(results), (serde_json::to_string(&report)? + "\n").as_bytes())
        });
        job.start()?;
        jobs.push(job);
        gos.push((go_r, go_w));
    }
    if let Some(common) = hold {
        let mut pids = vec![std::process::id() as i32];
        pids.extend(jobs.iter().filter_map(Process::pid));
        crate::hold(
            common,
            &format!("two CPU-bound jobs pinned to CPUs {cpus:?}, about to start"),
            &pids,
        );
    }
    let sampler = Sampler::start(std::process::id() as i32, Duration::from_millis(1), None)?;
    let t0 = kernel::monotonic_ns();
    let release = |i: usize| kernel::write_all(gos[i].1.as_fd(), &[1]);
    let mut outcome = Ok(());
    if mode == Mode::Serial {
        for i in 0..jobs.len() {
            release(i)?;
            outcome = outcome.and(watch(&mut jobs, Some(i)));
        }
    } else {
        for i in 0..jobs.len() {
            release(i)?;
        }
        outcome = watch(&mut jobs, None);
    }
    let wall_ns = kernel::monotonic_ns() - t0;
    let samples = sampler.stop();
    outcome?;
    drop(results_w);
    let mut buf = vec![0u8; 4096];
    let k = nix::unistd::read(results_r.as_fd(), &mut buf).context("reading the jobs' reports")?;
    let mut reports: Vec<PairJob> = String::from_utf8_lossy(&buf[..k])
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let pids: Vec<i32> = jobs.iter().filter_map(Process::pid).collect();
    reports.sort_by_key(|r| pids.iter().position(|p| *p == r.pid));
    // The psr timeline: for each slice of the run, the CPU a job ran on (its run time grew
    // between the last readings before the slice's start and before its end), `.` if it was
    // runnable but did not run (ready), blank if it slept (not released yet) or had ended.
    let t0_us = t0 / 1000 - (kernel::monotonic_ns() / 1000 - common::report::elapsed_us());
    let slice_us = (wall_ns / 1000 / LANE as u64).max(1);
    let lanes = pids
        .iter()
        .map(|&pid| {
            let mine: Vec<_> = samples.iter().filter(|s| s.pid == pid && s.tid == pid).collect();
            let last_before = |t: u64| mine.iter().rev().find(|s| s.t_us <= t);
            (0..LANE as u64)
                .map(|k| {
                    let (a, b) = (t0_us + k * slice_us, t0_us + (k + 1) * slice_us);
                    let Some(end) = last_before(b) else { return ' ' };
                    let start = last_before(a).map_or(0, |s| s.run_ns);
                    if end.run_ns > start && end.t_us >= a {
                        char::from_digit(end.cpu.clamp(0, 35) as u32, 36).unwrap_or('?')
                    } else if end.state == 'R' {
                        '.'
                    } else {
                        ' '
                    }
                })
                .collect::<String>()
        })
        .collect();
    Ok(PairRun { mode, cpus, wall_ns, jobs: reports, lanes })
}

/// Waits until job `only` (or both) ended, watching both.
fn watch(jobs: &mut [Process], only: Option<usize>) -> Result<()> {
    loop {
        let mut running = 0;
        for (i, j) in jobs.iter_mut().enumerate() {
            let alive = j.is_alive();
            if !alive && j.exitcode() != Some(0) {
                return Err(common::processes::lost::report(j, "CPU-bound jobs", 1));
            }
            running += usize::from(alive && only.is_none_or(|o| o == i));
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Serial => "serial (串行): one after the other, one CPU",
        Mode::Concurrent => "concurrent (并发): both at once, one CPU",
        Mode::Parallel => "parallel (并行): both at once, two CPUs",
    }
}

pub fn serial_concurrent_parallel(cli: &crate::Cli, work_ms: u64) -> Result<()> {
    report::section(
        "serial-concurrent-parallel: 串行, 并发, 并行, the same two CPU-bound jobs three ways",
    );
    let work = Duration::from_millis(work_ms);
    let allowed = kernel::allowed_cpus()?;
    let question = format!(
        "two jobs of {work_ms} ms CPU each, interleaved on one CPU (并发): how long does the pair \
         take in wall time, in ms?"
    );
    let guess = predict::ask(
        &cli.common,
        "concurrent-wall-ms",
        question,
        predict::Expect::About { within: 0.2 },
    );
    let mut runs = vec![
        run_pair(Mode::Serial, work, None)?,
        run_pair(Mode::Concurrent, work, Some(&cli.common))?,
    ];
    if allowed.len() >= 2 {
        runs.push(run_pair(Mode::Parallel, work, None)?);
    } else {
        common::event!(
            "parallel_skipped",
            { "cpus": allowed.len() },
            "this machine lets the demo use one CPU only: the parallel row (two CPUs at once) is \
             skipped; on one CPU jobs can only take turns (并发), never run at once (并行)"
        );
    }
    for r in &runs {
        let mut text = format!(
            "{}: wall {:.1} ms, CPU {:.1} ms, {} involuntary switch(es), CPUs {:?}; which CPU ran \
             whom, {} slices of the run:",
            mode_name(r.mode),
            r.wall_ns as f64 / 1e6,
            r.cpu_ns() as f64 / 1e6,
            r.involuntary(),
            r.cpus,
            LANE
        );
        for (j, lane) in r.jobs.iter().zip(&r.lanes) {
            text.push_str(&format!("\n  {:>7} |{lane}|", j.pid));
        }
        common::event!(
            "pair",
            { "mode": r.mode, "wall_ms": r.wall_ns as f64 / 1e6, "cpu_ms": r.cpu_ns() as f64 / 1e6,
              "involuntary": r.involuntary(), "cpus": r.cpus, "jobs": r.jobs, "lanes": r.lanes },
            "{text}"
        );
    }
    let (wall_ms, cpu_ms) = (runs[1].wall_ns as f64 / 1e6, runs[1].cpu_ns() as f64 / 1e6);
    guess.reveal(
        wall_ms.round(),
        if wall_ms <= 1.15 * cpu_ms {
            "on one CPU the two jobs take turns: the pair takes the sum of their CPU times"
                .to_string()
        } else {
            format!(
                "on one CPU the two jobs take turns: the pair takes the sum of their CPU times \
                 ({cpu_ms:.0} ms here), and took {:.0} ms more, other processes' turns on that CPU",
                wall_ms - cpu_ms
            )
        },
    );
    let serial = runs[0].wall_ns as f64;
    let share = |r: &PairRun| 100.0 * r.cpu_ns() as f64 / r.wall_ns.max(1) as f64;
    let ratio = |r: &PairRun| r.wall_ns as f64 / serial;
    let concurrent = &runs[1];
    let mut verdict = if (0.85..=1.15).contains(&ratio(concurrent)) {
        format!(
            "concurrent took {:.2}× serial's wall time: on one CPU, taking turns (并发) finishes the \
             pair no sooner; it only lets both make progress",
            ratio(concurrent)
        )
    } else {
        format!(
            "concurrent took {:.2}× serial's wall time for the same CPU time: the jobs got {:.0} % \
             of the wall time serially and {:.0} % concurrently; the rest went to other processes \
             of this machine on that CPU",
            ratio(concurrent),
            share(&runs[0]),
            share(concurrent)
        )
    };
    if let Some(parallel) = runs.get(2) {
        verdict.push_str(&if ratio(parallel) < 0.75 {
            format!(
                "; parallel (并行) took {:.2}×: two CPUs ran the two jobs at once",
                ratio(parallel)
            )
        } else {
            format!(
                "; parallel (并行) took {:.2}×: the jobs got only {:.0} % of two CPUs' wall time, \
                 other processes of this machine had the rest",
                ratio(parallel),
                share(parallel) / 2.0
            )
        });
    }
    common::event!(
        "pair_summary",
        { "ratios": runs.iter().map(ratio).collect::<Vec<_>>(),
          "cpu_share_pct": runs.iter().map(share).collect::<Vec<_>>() },
        "{verdict}"
    );
    Ok(())
}
