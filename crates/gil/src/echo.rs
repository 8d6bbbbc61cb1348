//! echo — the convoy's measurement: an I/O thread answering 1-byte requests on a socketpair,
//! alone or beside a CPU-bound thread, under the simulated GIL or as plain Rust threads.
//!
//! The client is the calling thread, outside any GIL (as a client in another process would
//! be): it sends one byte, waits for the echo, times the round trip, and pauses [`THINK`]
//! before the next request. The I/O thread
//! ("io-thread") blocks in `read` with the GIL dropped, as CPython's `recv` does, takes the GIL
//! back to handle the request, and drops it again around `write`. The CPU-bound thread
//! ("cpu-thread") only computes. Under the simulated GIL every take by the I/O thread that
//! finds the CPU thread holding the GIL waits a whole switch interval before its request makes
//! the CPU thread drop it: Beazley's convoy effect.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::threads::named;
use serde::Serialize;

use crate::sim::{Gil, Interp, ThreadReport};

/// Bytecodes the I/O thread runs to handle one request (parse it, build the answer).
pub const HANDLE_OPS: u64 = 100;

/// The client's pause between an answer and its next request: requests arrive one at a time,
/// every fraction of a millisecond, as from many clients, not back to back. In that pause the
/// CPU-bound thread wakes up and takes the GIL; a client with no pause at all answers so fast
/// that the I/O thread takes the GIL back before the woken CPU thread runs.
pub const THINK: Duration = Duration::from_micros(200);

/// What one convoy case measured.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Every round trip, sorted, in microseconds.
    #[serde(skip)]
    pub sorted_us: Vec<f64>,
    pub round_trips: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Round trips per second over the whole case, pauses included.
    pub per_second: f64,
    /// What the I/O thread and the CPU thread did under the GIL (simulated GIL only).
    pub threads: Vec<ThreadReport>,
}

/// The nearest-rank percentile `p` (1-100) of sorted values: the value at rank
/// ceil(p × n / 100). Of fewer than 100 round trips, the 99th percentile is the slowest one.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs a blocking call with the GIL dropped if there is one.
fn blocking<T>(interp: &mut Option<Interp<'_>>, f: impl FnOnce() -> T) -> T {
    match interp {
        Some(interp) => interp.allow_threads(f),
        None => f(),
    }
}

/// `round_trips` 1-byte round trips to an I/O thread, under `gil` (or as plain threads), with
/// or without a CPU-bound thread beside it, `think` between an answer and the next request.
pub fn measure(
    gil: Option<&Gil>,
    with_cpu_thread: bool,
    round_trips: usize,
    think: Duration,
) -> Result<Latencies> {
    let (mut client, server) = UnixStream::pair().context("socketpair(AF_UNIX)")?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Latencies> {
        let (cpu_tx, cpu_rx) = mpsc::channel::<Option<usize>>();
        let cpu = if with_cpu_thread {
            let stop = &stop;
            Some(named::spawn_scoped(s, "cpu-thread", move || match gil {
                Some(gil) => {
                    let mut interp = gil.enter("cpu-thread");
                    let _ = cpu_tx.send(Some(interp.id()));
                    while !stop.load(Ordering::Relaxed) {
                        interp.tick();
                    }
                    Some(interp.finish())
                }
                None => {
                    let _ = cpu_tx.send(None);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                    None
                }
            })?)
        } else {
            drop(cpu_tx);
            None
        };
        let cpu_id = cpu_rx.recv().ok().flatten();
        let (io_tx, io_rx) = mpsc::channel::<()>();
        let server = &server;
        let io = named::spawn_scoped(s, "io-thread", move || {
            let mut interp = gil.map(|g| g.enter("io-thread"));
            let _ = io_tx.send(());
            let mut buf = [0u8; 64];
            loop {
                // recv(): blocks with the GIL dropped, takes it back when a request came.
                let n = match blocking(&mut interp, || (&*server).read(&mut buf)) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for _ in 0..HANDLE_OPS {
                    if let Some(interp) = &mut interp {
                        interp.tick();
                    }
                }
                if blocking(&mut interp, || (&*server).write_all(&buf[..n])).is_err() {
                    break;
                }
            }
            interp.map(Interp::finish)
        })?;
        let _ = io_rx.recv();
        // The I/O thread has dropped the GIL to wait in recv; the CPU thread takes it. From
        // here on, the first request can only be answered after a whole switch interval.
        if let (Some(gil), Some(id)) = (gil, cpu_id) {
            gil.wait_until_held_by(id);
        }
        let mut us = Vec::with_capacity(round_trips);
        let began = Instant::now();
        let result = (|| -> Result<()> {
            let mut byte = [0u8; 1];
            for i in 0..round_trips {
                if i > 0 && !think.is_zero() {
                    std::thread::sleep(think);
                }
                let t0 = Instant::now();
                client.write_all(&[b'a' + (i % 26) as u8]).context("sending a request")?;
                client.read_exact(&mut byte).context("reading the echo")?;
                us.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            Ok(())
        })();
        let elapsed = began.elapsed().max(Duration::from_nanos(1));
        // EOF ends the I/O thread; the flag ends the CPU thread.
        let _ = client.shutdown(std::net::Shutdown::Both);
        stop.store(true, Ordering::Relaxed);
        let mut threads = Vec::new();
        if let Ok(Some(report)) = io.join() {
            threads.push(report);
        }
        if let Some(cpu) = cpu
            && let Ok(Some(report)) = cpu.join()
        {
            threads.push(report);
        }
        result?;
        us.sort_by(f64::total_cmp);
        Ok(Latencies {
            round_trips,
            p50_us: percentile(&us, 50),
            p99_us: percentile(&us, 99),
            max_us: us.last().copied().unwrap_or(0.0),
            per_second: round_trips as f64 / elapsed.as_secs_f64(),
            sorted_us: us,
            threads,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Rule;

    #[test]
    fn the_99th_percentile_of_fewer_than_100_values_is_the_largest() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&v[..99], 99), 99.0);
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&[3.0], 99), 3.0);
    }

    #[test]
    fn beside_a_cpu_thread_under_the_gil_a_round_trip_waits_a_switch_interval() {
        let interval = Duration::from_millis(2);
        let gil = Gil::new(Rule::SwitchInterval(interval));
        let l = measure(Some(&gil), true, 20, THINK).unwrap();
        assert!(l.p99_us >= 2000.0, "p99 {} µs", l.p99_us);
        assert_eq!(gil.stats().overlaps, 0);
    }
}
