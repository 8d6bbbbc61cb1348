//! threads — seed 001's balance loop and a thread switch (the threads demo), in Rust beside
//! CPython (`python/threads.py`).
//!
//! The loop: two threads, `change_it(5)` and `change_it(8)`, [`CALLS`] calls each, released
//! together by a barrier; `change_it` is `balance = balance + n; balance = balance - n; changes =
//! changes + 1`, the tally counting lost updates (two threads must leave `2 × CALLS`). In Rust:
//! racy (an atomic load, then a store), under a `Mutex`, and with `fetch_add`: the demo's own
//! loops, `threads::change_it_*` from its library. In Python: without the lock (as the notes' text warns), with the notes'
//! `acquire`/`try`/`finally`, and with one call inside the read-modify-write window. Figures:
//! calls per second; the lost updates go in the notes under the table.
//!
//! The switch: ping-pong round trips ([`ROUND_TRIPS`]) between two threads through two
//! channels (`mpsc` in Rust, `queue.Queue` in Python: each language's channel between threads);
//! and a byte through two pipes, between two threads and between two processes (fork), the
//! same system calls on both sides.
//!
//! Targets: the Rust `Mutex` loop at least 20× Python's locked loop; a Rust thread round trip
//! (the channel row) at most half of Python's (ratio ≥ 2).

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use common::process::{Process, StartMethod};
use common::threads::named;

use crate::measure::{Better, Outcome, Row, Settings, median, run_python};
use threads::{
    Account, Balance, change_it_atomic, change_it_locked, change_it_racy, ping, pong, two_threads,
};

/// `change_it` calls per thread in each Rust run: enough that the two threads overlap even when
/// one starts late on a busy machine (alone, a thread makes 1,000,000 calls in about 2 ms).
const CALLS: usize = 5_000_000;
/// The same in Python, where a call costs 20 to 100 times more.
const PYTHON_CALLS: usize = 500_000;
/// Ping-pong round trips per run, on each side.
const ROUND_TRIPS: usize = 20_000;
const MUTEX_TARGET: f64 = 20.0;
const SWITCH_TARGET: f64 = 2.0;

/// One run of the three Rust loops: (calls/s, lost) for racy, Mutex, fetch_add.
fn rust_loops() -> Result<[(f64, u64); 3]> {
    let total = (2 * CALLS) as u64;
    let b = Balance::default();
    // `black_box` keeps the read and the write two instructions (see the demo's library).
    let racy = two_threads(CALLS, |n| change_it_racy(&b, n, &|| ()))?.as_secs_f64();
    let racy_lost = total - b.changes.load(Ordering::Relaxed);
    let account = Mutex::new(Account::default());
    let locked = two_threads(CALLS, |n| change_it_locked(&account, n))?.as_secs_f64();
    let account = account.into_inner().unwrap_or_else(PoisonError::into_inner);
    let b = Balance::default();
    let atomic = two_threads(CALLS, |n| change_it_atomic(&b, n))?.as_secs_f64();
    if account.changes != total || b.changes.load(Ordering::Relaxed) != total {
        bail!("the Mutex or fetch_add loop lost updates");
    }
    let rate = |seconds: f64| total as f64 / seconds;
    Ok([(rate(racy), racy_lost), (rate(locked), 0), (rate(atomic), 0)])
}

/// µs per round trip between two threads through two `mpsc` channels (Rust's channel between
/// threads, as `queue.Queue` is Python's).
fn rust_handoff() -> Result<f64> {
    let (a_tx, a_rx) = std::sync::mpsc::channel::<u8>();
    let (b_tx, b_rx) = std::sync::mpsc::channel::<u8>();
    let partner = named::spawn("pong-channel", move || {
        for _ in 0..=ROUND_TRIPS {
            let Ok(byte) = a_rx.recv() else { return };
            if b_tx.send(byte).is_err() {
                return;
            }
        }
    })?;
    let round_trip = || -> Result<()> {
        a_tx.send(7)?;
        b_rx.recv()?;
        Ok(())
    };
    round_trip()?;
    let began = Instant::now();
    for _ in 0..ROUND_TRIPS {
        round_trip()?;
    }
    let us = began.elapsed().as_secs_f64() * 1e6 / ROUND_TRIPS as f64;
    partner.join().map_err(|_| anyhow!("pong-channel panicked"))?;
    Ok(us)
}

/// µs per round trip between two threads, then between two processes.
fn rust_switches() -> Result<(f64, f64)> {
    let (mut a_read, mut a_write) = std::io::pipe()?;
    let (mut b_read, mut b_write) = std::io::pipe()?;
    let partner =
        named::spawn("pong-thread", move || pong(ROUND_TRIPS + 1, &mut a_read, &mut b_write))?;
    let threads = ping(ROUND_TRIPS, &mut a_write, &mut b_read)?;
    partner.join().map_err(|_| anyhow!("pong-thread panicked"))?.context("pong-thread")?;

    let (mut a_read, mut a_write) = std::io::pipe()?;
    let (mut b_read, mut b_write) = std::io::pipe()?;
    let mut child = Process::from_fn("bench-pong", move || {
        pong(ROUND_TRIPS + 1, &mut a_read, &mut b_write)?;
        Ok(())
    })
    .start_method(StartMethod::Fork);
    child.start()?;
    let processes = ping(ROUND_TRIPS, &mut a_write, &mut b_read)?;
    if child.join()? != Some(0) {
        bail!("{child}: the ping-pong partner failed");
    }
    Ok((threads, processes))
}

/// The figures of one run, in the order of the rows.
const FIGURES: [(&str, &str, Better); 6] = [
    ("balance loop, no lock (racy)", "calls/s", Better::Higher),
    ("balance loop, Mutex / Lock", "calls/s", Better::Higher),
    ("balance loop, fetch_add", "calls/s", Better::Higher),
    ("thread switch, mpsc / queue.Queue", "µs", Better::Lower),
    ("thread switch, pipes", "µs", Better::Lower),
    ("process switch, pipes", "µs", Better::Lower),
];

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut rust: Vec<Vec<f64>> = vec![Vec::new(); FIGURES.len()];
    let mut python: Vec<Vec<f64>> = vec![Vec::new(); FIGURES.len()];
    let mut rust_lost = Vec::new();
    let (mut py_lost, mut py_call_lost, mut py_lock_lost) = (Vec::new(), Vec::new(), Vec::new());
    let mut python_outcome: Result<String, String> = Ok(String::new());
    for _ in 0..settings.runs {
        // Rust, then Python, run after run: a busy moment of a shared machine hits both sides.
        let loops = rust_loops()?;
        for (i, (rate, _)) in loops.iter().enumerate() {
            rust[i].push(*rate);
        }
        rust_lost.push(loops[0].1 as f64);
        rust[3].push(rust_handoff()?);
        let (t, p) = rust_switches()?;
        rust[4].push(t);
        rust[5].push(p);
        if python_outcome.is_ok() {
            let args = [
                "--calls".to_string(),
                PYTHON_CALLS.to_string(),
                "--round-trips".into(),
                ROUND_TRIPS.to_string(),
            ];
            python_outcome = run_python("threads.py", &args).and_then(|answer| {
                let case = |name: &str| -> Result<(f64, f64), String> {
                    let c = &answer["cases"][name];
                    let (Some(seconds), Some(changes)) =
                        (c["seconds"].as_f64(), c["changes"].as_f64())
                    else {
                        return Err(format!("threads.py gave no figures for {name}"));
                    };
                    let total = (2 * PYTHON_CALLS) as f64;
                    Ok((total / seconds, total - changes))
                };
                let (nolock, lost) = case("nolock")?;
                let (lock, lock_lost) = case("lock")?;
                let (_, call_lost) = case("call_in_window")?;
                python[0].push(nolock);
                python[1].push(lock);
                py_lost.push(lost);
                py_lock_lost.push(lock_lost);
                py_call_lost.push(call_lost);
                for (i, key) in
                    [(3, "handoff_queue_us"), (4, "switch_threads_us"), (5, "switch_processes_us")]
                {
                    python[i].push(answer[key].as_f64().ok_or(format!("threads.py: no {key}"))?);
                }
                Ok(answer["python"].as_str().unwrap_or("3").to_string())
            });
        }
    }
    let rows = FIGURES
        .iter()
        .enumerate()
        .map(|(i, (figure, unit, better))| Row {
            figure: figure.to_string(),
            unit,
            better: *better,
            rust: median(&rust[i]),
            // Python has no fetch_add on an int.
            python: (python_outcome.is_ok() && i != 2).then(|| median(&python[i])),
            target: match i {
                1 => Some(MUTEX_TARGET),
                3 => Some(SWITCH_TARGET),
                _ => None,
            },
        })
        .collect();
    let pct = |lost: f64, total: usize| 100.0 * lost / (2 * total) as f64;
    let mut notes = vec![format!(
        "each run: two threads, change_it(5) and change_it(8), {CALLS} calls each in Rust, \
         {PYTHON_CALLS} each in Python; then {ROUND_TRIPS} round trips between two threads \
         through two channels (mpsc / queue.Queue), and one-byte round trips through two pipes \
         between two threads and between two forked processes"
    )];
    notes.push(
        "a switch is the kernel's work (a futex or pipe wake-up, a context switch, often across \
         cores): through pipes both languages make the same system calls and Python holds no \
         GIL while it waits in read, so that row sits near 1x, the machine being the limit; the \
         language shows in the channel row (queue.Queue is a Condition in Python code, taking \
         the GIL back at every wake-up)"
            .to_string(),
    );
    let rust_lost = median(&rust_lost);
    notes.push(format!(
        "updates lost (medians): Rust racy loop {rust_lost:.0} of {} ({:.1}%); Mutex and \
         fetch_add 0",
        2 * CALLS,
        pct(rust_lost, CALLS)
    ));
    if python_outcome.is_ok() {
        let (l, k, c) = (median(&py_lost), median(&py_lock_lost), median(&py_call_lost));
        notes.push(format!(
            "Python: the notes' loop without the lock lost {l:.0} of {} ({:.1}%): on CPython \
             3.10+ a thread switches only at a call or a backward jump, none of which sits \
             between the read and the write; with the Lock {k:.0}; with one call inside the \
             window {c:.0} ({:.1}%): the race was there all along",
            2 * PYTHON_CALLS,
            pct(l, PYTHON_CALLS),
            pct(c, PYTHON_CALLS)
        ));
    }
    Ok(Outcome { rows, python: python_outcome, notes })
}
