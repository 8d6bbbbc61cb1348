//! sampler — the kernel's own view of a demo, sampled from `/proc` while it runs.
//!
//! A named thread (`sampler`) wakes every `interval` and, for every process and thread of the
//! demo, reads:
//! - `/proc/PID/task/TID/stat`: the state letter (`R`, `S`, `D`, `T`, `Z`, ...) and the CPU it
//!   last ran on;
//! - `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU and nanoseconds ready but waiting for
//!   one (the `R` letter does not say which of the two a task is doing; these figures do).
//!
//! "The demo" is the root process, its descendants (followed through every thread's
//! `/proc/PID/task/TID/children`, since a child belongs to the thread that forked it) and, with
//! a recording given to [`Sampler::start`], every pid that emits an event or that an event
//! names in `data.pid`: a daemon leaves the family by its double fork, and the trace wants it.
//!
//! Each [`Sample`] carries when it was really read, not the nominal tick: on a loaded machine
//! the thread wakes late, and the picture must say when the kernel showed that state.
//!
//! What it misses: a state shorter than the interval, which falls between two samples (a
//! buyer's few microseconds on a CPU between two sleeps). The demo's own events and phase marks
//! carry those moments; the sampler draws the long states (a zombie, a thread blocked on a lock).
//!
//! The files are opened once per task and re-read with `pread` at offset 0 every tick, their
//! bytes handed to `procfs`'s parsers: `procfs::process::Task::stat()` opens the file on every
//! call, and three `open`/`close` pairs per thread every 2 ms would cost more than the reads.
//! A kept descriptor also names one task for good: once the task is reaped, reading it fails
//! with `ESRCH` even if its tid is reused, so a newcomer is never taken for the old task.

#[cfg(target_os = "linux")]
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

#[cfg(target_os = "linux")]
use procfs::FromRead;
#[cfg(target_os = "linux")]
use procfs::process::{Schedstat, Stat};

#[cfg(target_os = "linux")]
use crate::report;
#[cfg(target_os = "linux")]
use crate::timeline::read_from;

/// The interval the demos use for `--trace` and `--svg` (measured in the guide: the cost of the
/// sampler at this interval, and what it misses).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(2);

/// The most samples kept: about 50 MB, some 80 s of a dozen threads at 2 ms (a `--hold 3600`
/// must not fill the memory). Past it the sampler stops reading and [`Sampler::stop`] returns
/// what it has.
#[cfg(target_os = "linux")]
const MAX_SAMPLES: usize = 500_000;

/// The most tasks followed at once: a cap, so a runaway fork cannot make the sampler's tick
/// longer than its interval by orders of magnitude.
#[cfg(target_os = "linux")]
const MAX_TASKS: usize = 512;

/// One reading of one thread.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was read, in microseconds on the demo's clock ([`report::elapsed_us`]).
    pub t_us: u64,
    pub pid: i32,
    pub tid: i32,
    /// The thread's name as `ps -L -o comm` shows it.
    pub comm: String,
    /// The state letter of `/proc/PID/task/TID/stat`.
    pub state: char,
    /// The CPU it ran on last (-1 if the kernel did not say).
    pub cpu: i32,
    /// Total nanoseconds on a CPU so far (`schedstat` field 1).
    pub run_ns: u64,
    /// Total nanoseconds ready to run but waiting for a CPU so far (`schedstat` field 2).
    pub wait_ns: u64,
}

/// A sampler in progress: it prints nothing, and stops with [`Sampler::stop`] or when dropped.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    /// Starts sampling `root_pid` and its descendants every `interval` (at least 100 µs). With
    /// a `recording` (the file the demo's processes append their events to, see
    /// [`crate::timeline`]), it also samples every pid that emits an event there.
    pub fn start(
        root_pid: i32,
        interval: Duration,
        recording: Option<File>,
    ) -> anyhow::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let interval = interval.max(Duration::from_micros(100));
        let handle = crate::threads::named::spawn("sampler", {
            let stop = Arc::clone(&stop);
            move || run(root_pid, interval, &stop, recording.as_ref())
        })
        .map_err(|e| anyhow::anyhow!("starting the /proc sampler thread: {e}"))?;
        Ok(Sampler { stop, handle: Some(handle) })
    }

    /// Stops the sampler thread and returns every sample, in the order they were read.
    pub fn stop(mut self) -> Vec<Sample> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(handle) = self.handle.take() else { return Vec::new() };
        handle.thread().unpark();
        handle.join().unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(target_os = "linux")]
/// The descriptors kept open for one task (see the module documentation).
struct Task {
    pid: i32,
    stat: File,
    schedstat: Option<File>,
    children: Option<File>,
}

#[cfg(target_os = "linux")]
impl Task {
    fn open(pid: i32, tid: i32) -> Option<Task> {
        let dir = format!("/proc/{pid}/task/{tid}");
        Some(Task {
            pid,
            stat: File::open(format!("{dir}/stat")).ok()?,
            // Absent without CONFIG_SCHED_INFO, or not readable: the state still counts.
            schedstat: File::open(format!("{dir}/schedstat")).ok(),
            children: File::open(format!("{dir}/children")).ok(),
        })
    }
}

#[cfg(target_os = "linux")]
/// Reads a whole small /proc file into `buf`; `None` once the task is gone.
fn reread(file: &File, buf: &mut Vec<u8>) -> Option<()> {
    buf.clear();
    read_from(file, 0, buf).ok()?;
    (!buf.is_empty()).then_some(())
}

#[cfg(target_os = "linux")]
/// Adds to `watched` the pids of the events appended to the recording since `offset`.
fn new_speakers(recording: &File, offset: &mut u64, watched: &mut BTreeSet<i32>) {
    let mut bytes = Vec::new();
    let _ = read_from(recording, *offset, &mut bytes);
    // Only whole lines: a line being appended right now is read next time.
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return };
    *offset += end as u64 + 1;
    for record in crate::timeline::parse(&String::from_utf8_lossy(&bytes[..end])) {
        // The pid that printed the event, and the one it names (`data.pid`): a daemon closes
        // the recording with every other descriptor, but its launcher says which pid it is.
        let named = record.data["pid"].as_i64().map(|pid| pid as i32);
        watched.extend(std::iter::once(record.pid).chain(named).filter(|pid| *pid > 1));
    }
}

#[cfg(target_os = "linux")]
fn run(root: i32, interval: Duration, stop: &AtomicBool, recording: Option<&File>) -> Vec<Sample> {
    let me = crate::threads::named::gettid();
    let mut tasks: BTreeMap<i32, Task> = BTreeMap::new();
    let mut watched = BTreeSet::from([root]);
    let mut offset = 0;
    let mut samples = Vec::new();
    let mut buf = Vec::with_capacity(1024);
    let mut next = std::time::Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if samples.len() >= MAX_SAMPLES {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            return samples;
        }
        if let Some(file) = recording {
            new_speakers(file, &mut offset, &mut watched);
        }
        // The processes of the demo: the root, the watched pids, and every child of any of
        // their threads, found through the `children` files.
        let mut pids = watched.clone();
        let mut queue: Vec<i32> = pids.iter().copied().collect();
        let mut seen_tids = BTreeSet::new();
        while let Some(pid) = queue.pop() {
            for tid in crate::ps::numbered(&format!("/proc/{pid}/task")) {
                if tid == me || !seen_tids.insert(tid) {
                    continue;
                }
                if !tasks.contains_key(&tid)
                    && tasks.len() < MAX_TASKS
                    && let Some(task) = Task::open(pid, tid)
                {
                    tasks.insert(tid, task);
                }
                let children = tasks.get(&tid).and_then(|t| t.children.as_ref());
                if children.and_then(|file| reread(file, &mut buf)).is_none() {
                    continue;
                }
                let found = String::from_utf8_lossy(&buf);
                let children = found.split_whitespace().filter_map(|c| c.parse::<i32>().ok());
                queue.extend(children.filter(|child| pids.insert(*child)));
            }
        }
        // Read every task; one whose files no longer read (reaped) is dropped.
        tasks.retain(|&tid, task| {
            let t_us = report::elapsed_us();
            let stat = reread(&task.stat, &mut buf).and_then(|()| Stat::from_read(&buf[..]).ok());
            let Some(stat) = stat else { return false };
            let (run_ns, wait_ns) = task
                .schedstat
                .as_ref()
                .and_then(|f| reread(f, &mut buf))
                .and_then(|()| Schedstat::from_read(&buf[..]).ok())
                .map_or((0, 0), |s| (s.sum_exec_runtime, s.run_delay));
            let (pid, comm, state) = (task.pid, stat.comm, stat.state);
            let cpu = stat.processor.unwrap_or(-1);
            samples.push(Sample { t_us, pid, tid, comm, state, cpu, run_ns, wait_ns });
            true
        });
        if stopping {
            return samples;
        }
        // Ticks on a fixed grid; after a late wake-up (a loaded machine) the next tick is
        // one interval from now rather than a burst of catch-up reads.
        next += interval;
        let now = std::time::Instant::now();
        if next <= now {
            next = now + interval;
        }
        while !stop.load(Ordering::Relaxed)
            && let Some(left) = next.checked_duration_since(std::time::Instant::now())
        {
            std::thread::park_timeout(left);
        }
    }
}

/// Elsewhere there is no `/proc` to read: the sampler waits to be stopped and has no samples.
#[cfg(not(target_os = "linux"))]
fn run(_: i32, _: Duration, stop: &AtomicBool, _: Option<&File>) -> Vec<Sample> {
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(50));
    }
    Vec::new()
}
