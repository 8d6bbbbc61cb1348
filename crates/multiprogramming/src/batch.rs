//! Part 2, `batch`: the history. 批处理 (the batch monitor: one job after the other, the CPU
//! idle through every IO) against 多道 (switch on IO), on an IO-heavy and a CPU-heavy mix, each
//! predicted and measured. Then the notes' second half of 时间上的复用: switching between jobs
//! that never block ("运行时间过长…反而会降低效率") costs switches, measured, and how small.
#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::{Context, Result};
use common::{predict, report};

use crate::kernel::Policy;
use crate::real::{self, Setup};
use crate::scp::{self, Mode};
use crate::sim::{self, IoDone, Switch};
use crate::{TickArg, jobs};

/// The two mixes: mostly IO, mostly CPU.
const MIXES: [(&str, &str); 2] = [("IO-heavy", "c1,i,c1,i:c1,i,c1,i:c3"), ("CPU-heavy", "c8:c6,i")];

/// CPU time of each of the two CPU-bound jobs that are switched between.
const SWITCH_WORK: Duration = Duration::from_millis(100);
/// Runs of each way; the fastest is kept.
const SWITCH_RUNS: usize = 3;

pub fn batch(cli: &crate::Cli, tick: &TickArg) -> Result<()> {
    report::section("batch: 批处理 against 多道, then what switching costs");
    let policy =
        if real::check_policy(Policy::Fifo).is_ok() { Policy::Fifo } else { Policy::Normal };
    common::event!(
        "batch_policy",
        { "policy": policy },
        "the jobs run {}",
        if policy == Policy::Fifo {
            "under SCHED_FIFO (allowed here): each keeps the CPU until it blocks or ends, as the \
             simulator assumes"
        } else {
            "under the normal policy (SCHED_FIFO needs root, CAP_SYS_NICE or RLIMIT_RTPRIO): the \
             kernel may also slice them"
        }
    );
    let question = "the IO-heavy mix: how many times higher is the CPU busy % with 多道 (switch on \
                    IO) than with 批处理 (switch on end), as measured?";
    let guess = predict::ask(
        &cli.common,
        "multiprogramming-gain",
        question,
        predict::Expect::About { within: 0.25 },
    );
    let mut table = format!(
        "{:<10} {:<22} {:>10} {:>8} {:>12} {:>8}",
        "mix", "way", "predicted", "CPU %", "measured", "CPU %"
    );
    let mut gain = None;
    for (mix, program) in MIXES {
        let jobs = jobs::parse_program(program).map_err(anyhow::Error::msg)?;
        let mut busy = [0.0; 2];
        for (k, switch) in [Switch::OnEnd, Switch::OnIo].into_iter().enumerate() {
            let s = Setup {
                jobs: jobs.clone(),
                switch,
                io_done: IoDone::Later,
                io_length: crate::DEFAULT_IO_LENGTH,
                tick: tick.tick(),
                policy,
            };
            let p = sim::simulate(&jobs, switch, IoDone::Later, crate::DEFAULT_IO_LENGTH);
            crate::run::check_length(&p, s.tick)?;
            // The first run holds with its jobs loaded, for a look with ps.
            let first = mix == MIXES[0].0 && switch == Switch::OnEnd;
            let moment =
                first.then_some("the batch monitor's jobs loaded, the first about to start");
            let m = real::run_jobs(&cli.common, &s, moment)?;
            busy[k] = m.cpu_busy_percent();
            let way = if switch == Switch::OnEnd { "批处理 (on-end)" } else { "多道 (on-io)" };
            table.push_str(&format!(
                "\n{:<10} {:<22} {:>7} tk {:>7.1} {:>9.1} tk {:>7.1}",
                mix,
                way,
                p.total,
                p.cpu_percent(),
                m.total_ticks(s.tick),
                m.cpu_busy_percent()
            ));
            common::event!(
                "batch_row",
                { "mix": mix, "program": program, "switch": switch, "predicted_total": p.total,
                  "predicted_cpu_pct": p.cpu_percent(), "measured_ticks": m.total_ticks(s.tick),
                  "measured_cpu_pct": m.cpu_busy_percent() },
                "{mix} ({program}), {way}: predicted {} ticks at {:.1} % CPU, measured {:.1} ticks at {:.1} %",
                p.total,
                p.cpu_percent(),
                m.total_ticks(s.tick),
                m.cpu_busy_percent()
            );
        }
        if gain.is_none() {
            gain = Some(busy[1] / busy[0].max(1e-9));
        }
    }
    common::event!("batch_table", {}, "the two mixes both ways (tk = ticks):\n{table}");
    if let Some(g) = gain {
        guess.reveal(
            (g * 100.0).round() / 100.0,
            "the CPU works while an IO is in flight instead of idling",
        );
    }
    switch_cost(cli)
}

/// Two jobs that never block, one after the other and then interleaved by the kernel.
fn switch_cost(cli: &crate::Cli) -> Result<()> {
    let _ = cli;
    // The fastest of a few runs each: other processes of the machine only ever add time.
    let fastest = |mode: Mode| -> Result<scp::PairRun> {
        let mut best: Option<scp::PairRun> = None;
        for _ in 0..SWITCH_RUNS {
            let r = scp::run_pair(mode, SWITCH_WORK, None)?;
            if best.as_ref().is_none_or(|b| r.wall_ns < b.wall_ns) {
                best = Some(r);
            }
        }
        best.context("no run")
    };
    let serial = fastest(Mode::Serial)?;
    let interleaved = fastest(Mode::Concurrent)?;
    let extra_switches = interleaved.involuntary().saturating_sub(serial.involuntary());
    let extra_ns = interleaved.wall_ns as i64 - serial.wall_ns as i64;
    let per_switch_us = if extra_switches > 0 && extra_ns > 0 {
        Some(extra_ns as f64 / 1e3 / extra_switches as f64)
    } else {
        None
    };
    let share = 100.0 * extra_ns.max(0) as f64 / serial.wall_ns.max(1) as f64;
    common::event!(
        "switch_cost",
        { "serial_ms": serial.wall_ns as f64 / 1e6, "interleaved_ms": interleaved.wall_ns as f64 / 1e6,
          "serial_involuntary": serial.involuntary(), "interleaved_involuntary": interleaved.involuntary(),
          "per_switch_us": per_switch_us, "extra_pct": share },
        "two jobs of {} ms CPU that never block (the fastest of {SWITCH_RUNS} runs each): one after the other {:.1} ms ({} involuntary \
         switches), interleaved by the kernel {:.1} ms ({} switches). {}",
        SWITCH_WORK.as_millis(),
        serial.wall_ns as f64 / 1e6,
        serial.involuntary(),
        interleaved.wall_ns as f64 / 1e6,
        interleaved.involuntary(),
        match per_switch_us {
            Some(us) if share < 10.0 => format!(
                "Switching cost {:.1} % more wall time, about {us:.0} µs a switch: honestly small \
                 (用户感觉不到). A switch itself is a microsecond or so (OSTEP ch. 6); beyond \
                 it, a job pays for the caches the other cooled (the indirect cost Li, Ding and \
                 Shen measure in \"Quantifying the cost of context switch\", 2007); this run \
                 does not measure the two apart",
                share
            ),
            // A switch itself: "sub-microsecond results on systems with 2- or 3-GHz
            // processors" (OSTEP ch. 6, Limited Direct Execution).
            Some(us) if us > 10.0 => format!(
                "The interleaved run took {share:.0} % longer ({us:.0} µs per extra switch): \
                 far more than a switch itself costs (a microsecond or so: OSTEP ch. 6 \
                 reports sub-microsecond switches on 2-3 GHz CPUs), so most of that is other processes' turns on this CPU"
            ),
            Some(us) => format!(
                "The interleaved run took {share:.0} % longer, about {us:.1} µs per extra switch"
            ),
            None => "No cost could be seen above this machine's noise: a switch costs a \
                     microsecond or so (OSTEP ch. 6 reports sub-microsecond switches on 2-3 GHz \
                     CPUs) against slices of milliseconds (用户感觉不到)"
                .to_string(),
        }
    );
    Ok(())
}
