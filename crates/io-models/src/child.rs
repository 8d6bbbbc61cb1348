//! A model's server as a child process of `compare`, `idle` and `explain`: the listening socket
//! is bound here, the child forked with it (and with the shared counters page), and the child's
//! threads, memory and CPU are read from `/proc` while the load client drives it.

#![cfg(target_os = "linux")]

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use common::process::{Process, StartMethod};
use io_models::client::process_cpu;

use crate::model::Model;
use crate::server::{Limits, Stats, listen_localhost, set_quiet, shared_stats};

/// A server child: its port, its counters, its process.
#[derive(Debug)]
pub struct ServerChild {
    pub port: u16,
    pub pid: i32,
    pub stats: &'static Stats,
    process: Process,
}

impl ServerChild {
    /// Binds 127.0.0.1:0 and forks the child that serves on it with `model`.
    pub fn start(model: Model, limits: Limits) -> Result<ServerChild> {
        let (listener, port) = listen_localhost(0)?;
        let stats = shared_stats()?;
        let listener_fd = listener.as_raw_fd();
        let mut process = Process::from_fn(format!("{model}-server"), move || {
            set_quiet(true);
            crate::serve_with(model, listener, limits, stats)
        })
        .start_method(StartMethod::Fork);
        process.start().with_context(|| format!("forking the {model} server"))?;
        // The parent's copy of the listener went with the closure; the child's stays open.
        let _ = listener_fd;
        let pid = process.pid().unwrap_or(0);
        Ok(ServerChild { port, pid, stats, process })
    }

    /// CPU time of the server (its reaped children included), user and system.
    pub fn cpu(&self) -> (Duration, Duration) {
        process_cpu(self.pid).unwrap_or_default()
    }

    /// Waits (up to `bound`) until the server has no connection open: the fork model's children
    /// are then reaped and their CPU counted.
    pub fn wait_all_closed(&self, bound: Duration) {
        let until = Instant::now() + bound;
        while self.stats.open_now() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then reaped (`join`), so nothing is left.
    pub fn stop(mut self) -> Result<()> {
        let _ = self.process.terminate();
        if self.process.join_timeout(Duration::from_secs(5))?.is_none() {
            let _ = self.process.kill();
            self.process.join()?;
        }
        Ok(())
    }
}

/// What the sampler saw of a server: the most threads (and child processes) and the most
/// memory at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Peak {
    /// Threads of the server process, plus its child processes' threads.
    pub tasks: u64,
    /// Proportional set size of the server and its children, KiB (shared pages counted once).
    pub pss_kib: u64,
}

/// Samples a server every few milliseconds from another thread, until dropped.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    tasks: Arc<AtomicU64>,
    pss: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// `children`: also count the server's child processes (the fork model); scanning `/proc`
    /// for them costs CPU, so only where they exist.
    pub fn start(pid: i32, children: bool) -> Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = Arc::new(AtomicU64::new(0));
        let pss = Arc::new(AtomicU64::new(0));
        let (s, t, p) = (stop.clone(), tasks.clone(), pss.clone());
        let thread = common::threads::named::spawn("sampler", move || {
            let mut round = 0u64;
            while !s.load(Ordering::Relaxed) {
                let (n, kib) = measure(pid, children, round.is_multiple_of(5));
                t.fetch_max(n, Ordering::Relaxed);
                if let Some(kib) = kib {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .context("starting the sampler thread")?;
        Ok(Sampler { stop, tasks, pss, thread: Some(thread) })
    }

    pub fn finish(mut self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Peak {
            tasks: self.tasks.load(Ordering::Relaxed),
            pss_kib: self.pss.load(Ordering::Relaxed),
        }
    }
}

/// Threads of `pid` and of its children, and (when `memory`) their PSS in KiB.
pub fn measure(pid: i32, children: bool, memory: bool) -> (u64, Option<u64>) {
    let mut pids = vec![pid];
    if children {
        pids.extend(common::ps::children_of(pid));
    }
    let tasks = pids.iter().map(|&p| threads_of(p)).sum();
    let pss = memory.then(|| pids.iter().filter_map(|&p| pss_kib(p)).sum());
    (tasks, pss)
}

fn threads_of(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count() as u64).unwrap_or(0)
}

/// `Pss` of `/proc/PID/smaps_rollup`: resident memory with shared pages divided among sharers.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let rollup = procfs::process::Process::new(pid).ok()?.smaps_rollup().ok()?;
    let bytes = rollup.memory_map_rollup.0.first()?.extension.map.get("Pss").copied()?;
    Some(bytes / 1024)
}
