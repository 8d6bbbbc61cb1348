//! The few kernel calls every part of this demo makes: pin to a CPU, burn a tick of a thread's
//! own CPU time, choose a scheduling policy, read what the scheduler counted.
#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The CPUs this program may run on (its affinity mask, what `taskset -p` shows).
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect())
}

/// Pins the calling thread (pid 0) to `cpus`; a thread started afterwards inherits the mask.
pub fn pin_to(cpus: &[usize]) -> Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("sched_setaffinity to CPUs {cpus:?}"))
}

/// Pins every thread of this process (the signal watcher too, started before any part) to
/// `cpus`: `sched_setaffinity` on each tid of `/proc/self/task`.
pub fn pin_process_to(cpus: &[usize]) -> Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    }
    for task in std::fs::read_dir("/proc/self/task").context("/proc/self/task")?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        // A thread that ended meanwhile is no error (ESRCH).
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(e).with_context(|| format!("sched_setaffinity of thread {tid}")),
        }
    }
    Ok(())
}

/// The CPU for the jobs, and the others (for the demo's own threads and the device): the jobs
/// take the last allowed CPU, so the demo's threads keep the rest. One CPU: both are it.
pub fn jobs_cpu_and_others() -> Result<(usize, Vec<usize>)> {
    let allowed = allowed_cpus()?;
    let Some(&jobs) = allowed.last() else { bail!("sched_getaffinity gave no CPU") };
    let others: Vec<usize> = allowed.iter().copied().filter(|&c| c != jobs).collect();
    Ok((jobs, if others.is_empty() { vec![jobs] } else { others }))
}

/// Nanoseconds on a clock.
fn now(clock: ClockId) -> u64 {
    clock_gettime(clock).map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// CLOCK_MONOTONIC in ns: one clock for every process of the machine.
pub fn monotonic_ns() -> u64 {
    now(ClockId::CLOCK_MONOTONIC)
}

/// This thread's own CPU time in ns: it advances only while the thread runs.
pub fn thread_cpu_ns() -> u64 {
    now(ClockId::CLOCK_THREAD_CPUTIME_ID)
}

/// One CPU tick: computes until this thread has *run* `tick` (CLOCK_THREAD_CPUTIME_ID), however
/// long it waits in between. A calibrated loop would count the waits too, and a busy machine
/// would stretch every tick.
pub fn burn(tick: Duration) {
    let target = thread_cpu_ns() + tick.as_nanos() as u64;
    let mut x = 1u64;
    while thread_cpu_ns() < target {
        for i in 0..200u64 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
    }
    std::hint::black_box(x);
}

/// A scheduling policy for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The kernel's default (SCHED_OTHER): fair shares, time slices of a few ms, and a woken
    /// job usually preempts the running one.
    Normal,
    /// SCHED_FIFO (root, CAP_SYS_NICE or RLIMIT_RTPRIO): a job runs until it blocks or ends,
    /// as in process-run.py.
    Fifo,
}

/// SCHED_FIFO priority of a running job; a job waiting for its IO under `--io-done immediate`
/// holds one more, so that its wake-up preempts the running job.
pub const FIFO_PRIORITY: i32 = 1;

/// Sets the calling thread's policy: `libc::SCHED_OTHER`, `SCHED_BATCH` or `SCHED_FIFO` with
/// `priority` (0 for the first two).
pub fn set_policy(policy: i32, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // Safety: sched_setscheduler reads `param`, which lives across the call; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether this process may use SCHED_FIFO: tried on a short-lived thread of its own.
pub fn fifo_allowed() -> std::io::Result<()> {
    std::thread::spawn(|| set_policy(libc::SCHED_FIFO, FIFO_PRIORITY))
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread panicked")))
}

/// What the scheduler counted for a task (`/proc/PID/schedstat`): time on the CPU and time
/// waiting in a run queue (ready, 就绪态), in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sched {
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// `/proc/PID/schedstat` of `pid` (0: this process); `None` once it is gone.
pub fn schedstat(pid: i32) -> Option<Sched> {
    let process = if pid == 0 {
        procfs::process::Process::myself()
    } else {
        procfs::process::Process::new(pid)
    };
    let s = process.ok()?.schedstat().ok()?;
    Some(Sched { run_ns: s.sum_exec_runtime, wait_ns: s.run_delay })
}

/// Voluntary and involuntary context switches of `pid` (0: this process), from
/// `/proc/PID/status`.
pub fn switches(pid: i32) -> (u64, u64) {
    let process = if pid == 0 {
        procfs::process::Process::myself()
    } else {
        procfs::process::Process::new(pid)
    };
    process
        .and_then(|p| p.status())
        .map(|s| {
            (s.voluntary_ctxt_switches.unwrap_or(0), s.nonvoluntary_ctxt_switches.unwrap_or(0))
        })
        .unwrap_or((0, 0))
}

/// Reads one fixed-size message from a pipe, retrying on EINTR; `false` at end of file.
pub fn read_exact(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("read"),
        }
    }
    Ok(true)
}

/// Writes one message to a pipe in one `write(2)` (at most PIPE_BUF bytes: atomic).
pub fn write_all(fd: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match nix::unistd::write(fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("write"),
        }
    }
    Ok(())
}

/// Reads one fixed-size message like [`read_exact`], in short slices, watching `children`
/// between them: a child that ends before the message came (killed from outside, say) is
/// reported as lost (exit 1) instead of a wait for ever (the write end of the pipe may be held
/// by other processes, so no end of file would come).
pub fn read_watching(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
    children: &mut [&mut common::process::Process],
    what: &str,
) -> Result<()> {
    loop {
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u8)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                if read_exact(fd, buf)? {
                    return Ok(());
                }
                bail!("{what}: the pipe was closed");
            }
            Err(e) => return Err(e).context("poll"),
        }
        for c in children.iter_mut() {
            if c.pid().is_some() && !c.is_alive() {
                return Err(common::processes::lost::report(c, what, 1));
            }
        }
    }
}
