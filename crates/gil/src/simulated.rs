//! Part 2: the countdown under a simulated GIL (`gil::sim`): one thread, then two. Two take
//! about twice as long as one, even on two CPUs; the GIL counts its switches and checks that
//! it never let two threads in at once; a timeline shows who held it.

#![cfg(target_os = "linux")]

use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::predict;
use common::report;
use common::threads::named;
use common::timeline::{self, Record, Style};
use gil::countdown::{countdown_under_gil, ms, thread_cpu};
use gil::sim::{Gil, Rule, ThreadReport};
use serde_json::{Value, json};

use crate::{Cli, N, rule_text};

/// The timeline shows this many ms from the start of the two-thread run.
const TIMELINE_MS: u64 = 200;

/// What [`run_under`] returns: the wall time in ms, each thread's report and CPU ms, the GIL.
type Outcome = (f64, Vec<(ThreadReport, f64)>, Gil);

/// Runs `threads` interpreter threads, each counting `n` down under a fresh GIL; returns the
/// wall time, each thread's report and CPU time, and the GIL.
fn run_under(rule: Rule, threads: usize, n: u64) -> Result<Outcome> {
    let gil = Gil::new(rule);
    let gate = Barrier::new(threads + 1);
    let (wall, reports) = std::thread::scope(|s| -> Result<_> {
        let mut handles = Vec::new();
        for i in 1..=threads {
            let (gil, gate) = (&gil, &gate);
            handles.push(
                named::spawn_scoped(s, &format!("interp-{i}"), move || {
                    gate.wait();
                    let cpu0 = thread_cpu();
                    let mut interp = gil.enter(&format!("interp-{i}"));
                    countdown_under_gil(&mut interp, n);
                    let report = interp.finish();
                    (report, ms(thread_cpu() - cpu0))
                })
                .context("starting an interpreter thread")?,
            );
        }
        // The clock starts before the gate opens: a main thread descheduled right after the
        // gate would otherwise read it after the threads had done their work.
        let began = Instant::now();
        gate.wait();
        let reports: Vec<(ThreadReport, f64)> = handles
            .into_iter()
            .map(|h| h.join().expect("an interpreter thread panicked"))
            .collect();
        Ok((ms(began.elapsed()), reports))
    })?;
    Ok((wall, reports, gil))
}

pub fn run(cli: &Cli) -> Result<()> {
    let rule = cli.rule();
    let n = cli.n_or(N);
    report::section(format!("2. a simulated GIL ({})", rule_text(rule)));
    report::say(
        "gil::sim is built as CPython builds its GIL (Python/ceval_gil.c): a thread runs its \
         bytecodes only while it holds one lock; at every switch point (here: each turn of the \
         countdown loop, where CPython checks at its backward jump) the holder gives it up if \
         the rule says so. The same countdown as part 1, one thread, then two.",
    );
    let question = "Under the GIL, two threads each count N down: how many times one thread's \
                    time do they take?";
    let guess =
        predict::ask(&cli.common, "sim-ratio", question, predict::Expect::About { within: 0.3 });
    let (one_ms, one, gil1) = run_under(rule, 1, n)?;
    common::event!("simulated_started", { "n": n, "one_thread_ms": one_ms }, "one thread under the GIL: {one_ms:.1} ms; now two threads, each {n}");
    let (two_ms, two, gil2) = run_under(rule, 2, n)?;
    let stats = gil2.stats();
    let ratio = two_ms / one_ms.max(1e-6);
    let mut table = format!(
        "  {:<10} {:>8} {:>12} {:>7} {:>10} {:>14} {:>18} {:>8}",
        "thread",
        "tid",
        "bytecodes",
        "holds",
        "requested",
        "most in a hold",
        "shortest asked ms",
        "CPU ms"
    );
    for (r, cpu) in &two {
        table.push_str(&format!(
            "\n  {:<10} {:>8} {:>12} {:>7} {:>10} {:>14} {:>18} {:>8.1}",
            r.name,
            r.tid,
            r.ops,
            r.holds,
            r.requested,
            r.max_hold_ops,
            r.min_requested_hold_ns.map_or("-".to_string(), |ns| format!("{:.2}", ns as f64 / 1e6)),
            cpu
        ));
    }
    let threads: Vec<Value> =
        two.iter().map(|(r, cpu)| json!({ "report": r, "cpu_ms": cpu })).collect();
    let (interval_ms, check_interval) = match rule {
        Rule::SwitchInterval(d) => (Some(d.as_secs_f64() * 1e3), None),
        Rule::CheckInterval(k) => (None, Some(k)),
    };
    let cpu_sum: f64 = two.iter().map(|(_, cpu)| cpu).sum();
    common::event!("simulated", {
            "n": n, "switch_interval_ms": interval_ms, "check_interval": check_interval,
            "one_thread_ms": one_ms, "two_threads_ms": two_ms, "ratio": ratio,
            "stats": stats, "one_thread_stats": gil1.stats(), "threads": threads,
            "one_thread": one[0].0, "cpu_ms_sum": cpu_sum,
        }, "two threads under the simulated GIL took {ratio:.2} x one thread ({two_ms:.1} ms \
             against {one_ms:.1} ms); the GIL changed hands {} times, {} of them on request; \
             overlaps (two threads inside at once): {}",
            stats.switches, stats.requested_drops, stats.overlaps);
    report::plain(table);
    let why = "only the GIL's holder runs: the two countdowns take turns on one CPU at a time";
    guess.reveal(ratio, why);
    if stats.overlaps != 0 {
        bail!("the simulated GIL let two threads in at once {} times", stats.overlaps);
    }
    for (r, _) in &two {
        if r.ops != n {
            bail!("{} ran {} bytecodes of {n}", r.name, r.ops);
        }
        if let Rule::CheckInterval(k) = rule
            && r.max_hold_ops > k
        {
            bail!(
                "{} held the GIL for {} bytecodes, more than the check interval {k}",
                r.name,
                r.max_hold_ops
            );
        }
    }
    // "About the wall time" only when the figures say so: a busy machine takes CPU time away
    // from both threads, and the sum falls short of the wall time.
    let share = cpu_sum / two_ms.max(1e-6);
    let cpu_verdict = if share >= 0.8 {
        format!("about the wall time ({two_ms:.0} ms)")
    } else {
        format!(
            "{:.0}% of the wall time ({two_ms:.0} ms): other programs had a CPU part of the time",
            share * 100.0
        )
    };
    report::say(format!(
        "The two threads' CPU times add up to {cpu_sum:.0} ms, {cpu_verdict}; the GIL lets one \
         thread run at a time (overlaps: {}), whatever the machine has, and the waiting thread \
         sleeps on the GIL's condition variable (state S). CPython 3.11.7's two threads take \
         1.71 times one thread (BENCH.md, suite gil): the same picture. The seed's \
         \"多线程不快反而慢\" is this: no speed-up, rather than a slowdown by switching.",
        stats.overlaps
    ));
    if let Rule::CheckInterval(k) = rule {
        let dropped: u64 = two.iter().map(|(r, _)| r.by_check_interval).sum();
        report::say(format!(
            "The old rule dropped the GIL {dropped} times (every {k} bytecodes), but it changed \
             hands only {} times: the thread that drops it takes it straight back before the \
             woken waiter runs, on several CPUs most of all (Beazley's GIL battle, which the \
             switch interval of Python 3.2 ended).",
            stats.switches
        ));
    }
    show_timeline(&gil2, &two);
    Ok(())
}

/// Who held the GIL during the first [`TIMELINE_MS`] of the two-thread run: one lane per
/// thread, `#` while it held the GIL.
fn show_timeline(gil: &Gil, threads: &[(ThreadReport, f64)]) {
    let pid = std::process::id() as i32;
    let first = threads
        .iter()
        .filter_map(|(r, _)| r.recorded.first().map(|h| h.start_ns))
        .min()
        .unwrap_or(0);
    let until = first + TIMELINE_MS * 1_000_000;
    // The title says how much of the run is drawn: the first TIMELINE_MS only when the run
    // lasted longer.
    let last = threads
        .iter()
        .filter_map(|(r, _)| r.recorded.iter().map(|h| h.end_ns).max())
        .max()
        .unwrap_or(first);
    let all_recorded = threads.iter().all(|(r, _)| r.recorded.len() as u64 == r.holds);
    let title = if last > until || !all_recorded {
        format!("who holds the simulated GIL, the first {TIMELINE_MS} ms of the two-thread run")
    } else {
        format!(
            "who holds the simulated GIL, the whole two-thread run ({} ms)",
            (last - first).div_ceil(1_000_000)
        )
    };
    let mut records = Vec::new();
    for (r, _) in threads {
        for h in r.recorded.iter().filter(|h| h.start_ns < until) {
            let at = |ns: u64| gil.epoch_ms() + ns / 1_000_000;
            for (t, event) in [(h.start_ns, "take"), (h.end_ns.min(until), "drop")] {
                records.push(Record {
                    t_ms: at(t),
                    t_us: at(t) * 1000,
                    pid,
                    ppid: 0,
                    who: r.name.clone(),
                    tid: r.tid,
                    thread: r.name.clone(),
                    event: event.into(),
                    data: Value::Null,
                });
            }
        }
    }
    // Each lane's records stay in its own order (take, drop, take, ...): spans pair them so.
    let style = Style::new().per_thread().width(100).span("take", "drop", '#');
    timeline::show(&title, &records, &style);
}
