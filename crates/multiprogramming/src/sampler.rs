//! A small sampler: a thread that reads `/proc/PID/stat` and `/proc/PID/schedstat` of the
//! watched processes at a fixed interval, off the jobs' CPU, and keeps what it read. The
//! measured timeline is drawn from these samples and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::kernel;

/// At most this many samples are kept (a cap: the sampler must not grow without bound).
pub const MAX_SAMPLES: usize = 400_000;

/// One reading of one process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// CLOCK_MONOTONIC of the reading, in ns.
    pub t_ns: u64,
    pub pid: i32,
    /// The state letter (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// The CPU it last ran on (`PSR`).
    pub cpu: i32,
    /// Time on a CPU, and time waiting in a run queue, so far (`schedstat`), in ns.
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// The sampling thread; [`Sampler::stop`] ends it and returns its samples.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Samples `pids` every `interval`, from a thread pinned to `cpus` (off the jobs' CPU).
    pub fn start(pids: Vec<i32>, interval: Duration, cpus: Vec<usize>) -> Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let _ = kernel::pin_to(&cpus);
                let mut samples = Vec::new();
                while !flag.load(Ordering::Relaxed) && samples.len() < MAX_SAMPLES {
                    for &pid in &pids {
                        if let Some(s) = read(pid) {
                            samples.push(s);
                        }
                    }
                    std::thread::sleep(interval);
                }
                samples
            })
            .context("starting the sampler thread")?;
        Ok(Sampler { stop, thread })
    }

    /// Stops the thread and returns every sample, in time order per process.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One reading of `pid`, or `None` once it is gone.
pub fn read(pid: i32) -> Option<Sample> {
    let process = procfs::process::Process::new(pid).ok()?;
    let stat = process.stat().ok()?;
    let sched = process.schedstat().ok()?;
    Some(Sample {
        t_ns: kernel::monotonic_ns(),
        pid,
        state: stat.state,
        cpu: stat.processor.unwrap_or(-1),
        run_ns: sched.sum_exec_runtime,
        wait_ns: sched.run_delay,
    })
}
