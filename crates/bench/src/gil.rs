//! gil — seed 001's GIL experiment and the convoy effect (the gil demo), beside CPython doing
//! the same (`python/gil.py`).
//!
//! In each run, on both sides: the countdown (`while n > 0: n -= 1`) by one thread (its CPU
//! time per iteration, which other programs on the machine do not stretch as they stretch the
//! wall time), by two threads each N and by two forked processes each N (wall time); and 1-byte round trips to an
//! I/O thread on a socketpair, alone and beside a thread that spins, with a pause of
//! [`::gil::echo::THINK`] between an answer and the next request (p50, p99). Rust also runs the
//! countdown under its simulated GIL (`gil::sim`), and the convoy under it.
//!
//! Here the Python figures are the point of several rows: CPython's two threads take about 1.9
//! times one thread (the notes' claim, hidden by their `cost/2`), and its I/O thread waits a
//! switch interval beside a spinning thread. The targets: Rust 2 threads / 1 thread ≤ 1.15,
//! Rust per-iteration speed ≥ 40× Python's, the simulated GIL's 2 threads / 1 thread within
//! 1.8-2.2 (it reproduces Python), and the convoy p99 of plain Rust threads ≤ 1/20 of Python's.
//! The table's target column holds the ≥ targets; the others are checked in the notes.

use std::time::Instant;

use anyhow::{Result, bail};
use common::process::Process;
// `::gil` is the gil demo's library (this module is the bench's `gil`).
use ::gil::countdown::{countdown, countdown_under_gil, thread_cpu};
use ::gil::echo;
use ::gil::sim::{DEFAULT_SWITCH_INTERVAL, Gil, Rule};

use crate::measure::{Better, Outcome, Row, Samples, Settings, median, run_python};

/// Decrements per thread in Rust (about 0.4 s of one thread) and in CPython (about 0.7 s).
const N_RUST: u64 = 1_000_000_000;
const N_SIM: u64 = 500_000_000;
const N_PYTHON: u64 = 30_000_000;
/// Round trips per convoy case (the p99 of 100 is the second slowest).
const ROUND_TRIPS: usize = 100;

const TARGET_SPEED: f64 = 40.0;
const TARGET_RUST_2T: f64 = 1.15;
const TARGET_SIM_2T: (f64, f64) = (1.8, 2.2);
const TARGET_CONVOY: f64 = 20.0;

fn secs(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let began = Instant::now();
    f()?;
    Ok(began.elapsed().as_secs_f64())
}

/// Two threads each counting `n` down; returns the CPU seconds they used together.
fn two_threads(n: u64) -> Result<f64> {
    std::thread::scope(|s| {
        let count = || {
            let done = countdown(n);
            (done, thread_cpu().as_secs_f64())
        };
        let (a, b) = (s.spawn(count), s.spawn(count));
        match (a.join(), b.join()) {
            (Ok((da, ca)), Ok((db, cb))) if da == n && db == n => Ok(ca + cb),
            _ => bail!("a countdown thread did not finish"),
        }
    })
}

/// `/proc/loadavg`'s first figure: runnable threads on the machine, averaged over a minute.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn two_processes(n: u64) -> Result<()> {
    let mut children: Vec<Process> = (1..=2)
        .map(|i| {
            Process::from_fn(format!("bench-countdown-{i}"), move || {
                countdown(n);
                Ok(())
            })
        })
        .collect();
    for c in &mut children {
        c.start()?;
    }
    for c in &mut children {
        if c.join()? != Some(0) {
            bail!("{c} failed");
        }
    }
    Ok(())
}

/// Wall seconds of `threads` threads each counting `n` down under a fresh simulated GIL.
fn simulated(threads: usize, n: u64) -> Result<f64> {
    let gil = Gil::new(Rule::SwitchInterval(DEFAULT_SWITCH_INTERVAL));
    let seconds = secs(|| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut interp = gil.enter("bench-interp");
                    countdown_under_gil(&mut interp, n);
                    interp.finish();
                });
            }
        });
        Ok(())
    })?;
    if gil.stats().overlaps != 0 {
        bail!("the simulated GIL let two threads in at once");
    }
    Ok(seconds)
}

/// Figures per run: the seven rows.
const FIGURES: usize = 7;

/// One run's figures, and the CPUs the one thread and the two threads had on average (CPU
/// time / wall).
fn rust_run() -> Result<([f64; FIGURES], [f64; 2])> {
    let cpu0 = thread_cpu();
    let one = secs(|| {
        std::hint::black_box(countdown(N_RUST));
        Ok(())
    })?;
    let cpu_one = (thread_cpu() - cpu0).as_secs_f64();
    let began = Instant::now();
    let cpu = two_threads(N_RUST)?;
    let two = began.elapsed().as_secs_f64();
    let procs = secs(|| two_processes(N_RUST))?;
    let sim_one = simulated(1, N_SIM)?;
    let sim_two = simulated(2, N_SIM)?;
    let plain_alone = echo::measure(None, false, ROUND_TRIPS, echo::THINK)?;
    let plain = echo::measure(None, true, ROUND_TRIPS, echo::THINK)?;
    let gil = Gil::new(Rule::SwitchInterval(DEFAULT_SWITCH_INTERVAL));
    let sim = echo::measure(Some(&gil), true, ROUND_TRIPS, echo::THINK)?;
    Ok((
        [
            cpu_one / N_RUST as f64 * 1e9,
            two / one,
            procs / one,
            sim_two / sim_one,
            plain.p99_us,
            sim.p99_us,
            plain_alone.p99_us,
        ],
        [cpu_one / one, cpu / two],
    ))
}

fn python_run() -> Result<([f64; FIGURES], String), String> {
    let args = [
        "--n".to_string(),
        N_PYTHON.to_string(),
        "--round-trips".into(),
        ROUND_TRIPS.to_string(),
        "--think-us".into(),
        echo::THINK.as_micros().to_string(),
    ];
    let a = run_python("gil.py", &args)?;
    let f = |key: &str| a[key].as_f64().ok_or(format!("gil.py gave no {key}"));
    let c = |case: &str| {
        a["convoy"][case]["p99_us"].as_f64().ok_or(format!("gil.py gave no convoy {case}"))
    };
    let one = f("one_thread_s")?;
    let two = f("two_threads_s")?;
    Ok((
        [
            f("one_thread_cpu_s")? / N_PYTHON as f64 * 1e9,
            two / one,
            f("two_processes_s")? / one,
            two / one,
            c("spinning")?,
            c("spinning")?,
            c("alone")?,
        ],
        a["python"].as_str().unwrap_or("3").to_string(),
    ))
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut samples = Samples::new(FIGURES);
    let (mut cpus_one, mut cpus_two) = (Vec::new(), Vec::new());
    let load_before = load_average();
    for _ in 0..settings.runs {
        let (figures, used) = rust_run()?;
        cpus_one.push(used[0]);
        cpus_two.push(used[1]);
        for (i, v) in figures.into_iter().enumerate() {
            samples.rust(i, v);
        }
        samples.python_from(|| python_run().map(|(figures, version)| (figures.to_vec(), version)));
    }
    let specs: [(&str, &'static str, Option<f64>); FIGURES] = [
        ("countdown, 1 thread, CPU time per iteration", "ns", Some(TARGET_SPEED)),
        ("2 threads / 1 thread, wall (Rust target <= 1.15)", "ratio", None),
        ("2 processes / 1 thread, wall", "ratio", None),
        ("2T/1T: simulated GIL (rust) vs CPython (target 1.8-2.2)", "ratio", None),
        ("convoy p99 beside a spinning thread: Rust threads", "µs", Some(TARGET_CONVOY)),
        ("convoy p99 beside a spinning thread: simulated GIL", "µs", None),
        ("convoy p99, I/O thread alone", "µs", None),
    ];
    let rows: Vec<Row> = specs
        .iter()
        .enumerate()
        .map(|(i, (figure, unit, target))| samples.row(i, *figure, unit, Better::Lower, *target))
        .collect();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let rust_2t = rows[1].rust;
    let sim_2t = rows[3].rust;
    let load = match (load_before, load_average()) {
        (Some(a), Some(b)) => format!("{a:.1} before, {b:.1} after"),
        _ => "unknown".to_string(),
    };
    let notes = vec![
        format!(
            "targets checked here: Rust 2 threads / 1 thread = {rust_2t:.2} (target <= \
             {TARGET_RUST_2T}: {}); simulated GIL 2 threads / 1 thread = {sim_2t:.2} (target \
             {}-{}: {}){}",
            verdict(rust_2t <= TARGET_RUST_2T),
            TARGET_SIM_2T.0,
            TARGET_SIM_2T.1,
            verdict((TARGET_SIM_2T.0..=TARGET_SIM_2T.1).contains(&sim_2t)),
            rows[1].python.map_or(String::new(), |p| format!(
                "; CPython 2 threads / 1 thread = {p:.2} (the notes' claim: about 1.9)"
            )),
        ),
        format!(
            "CPUs this program got (where the 2-thread row meets its limit): the two Rust threads \
             had {:.2} CPUs together, the one thread {:.2} (CPU time / wall, medians; two free \
             CPUs give 2.00 and 1.00, and a ratio of about 1.0), with a load average of {load} \
             on {} CPUs; their CPU time per iteration does not change",
            median(&cpus_two),
            median(&cpus_one),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        format!(
            "countdown N = {N_RUST} in Rust (black_box keeps the loop), {N_SIM} under the \
             simulated GIL ({} ms switch interval), {N_PYTHON} in CPython; ratio rows: the \
             'ratio' column is CPython's ratio over Rust's",
            DEFAULT_SWITCH_INTERVAL.as_millis()
        ),
        format!(
            "convoy: {ROUND_TRIPS} one-byte round trips per case on a socketpair, {} µs apart, \
             the client outside the GIL (CPython: a forked process). With no GIL the limit of \
             the Rust threads' p99 is the kernel's scheduler: when more threads are runnable \
             than there are CPUs (other tenants, the spinning thread), the I/O thread waits for \
             a time slice of a few ms",
            echo::THINK.as_micros()
        ),
    ];
    Ok(Outcome { rows, python: samples.python_outcome, notes })
}
