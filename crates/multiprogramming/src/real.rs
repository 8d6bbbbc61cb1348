//! The real run: each job is a process pinned to one CPU; a CPU tick is `--tick-ms` of the
//! job's own CPU time; an IO is a request to a "device" process, which answers on a pipe after
//! `io-length` ticks, so the job sleeps in `read(2)` meanwhile (state S, blocked).
//!
//! `on-io`: every job is released at once and the kernel's scheduler switches between them (a
//! job that blocks gives up the CPU). `on-end`: the batch monitor releases the next job only
//! when the previous one has ended, so the CPU idles through every IO.
#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::process::Process;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};

use crate::kernel::{self, FIFO_PRIORITY, Policy, Sched};
use crate::sim::{IoDone, Op, Switch};
use common::sampler::{Sample, Sampler};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Setup {
    pub jobs: Vec<Vec<Op>>,
    pub switch: Switch,
    pub io_done: IoDone,
    pub io_length: u64,
    pub tick: Duration,
    pub policy: Policy,
}

/// What one job measured of itself, sent to the monitor as one JSON line when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    pub job: usize,
    pub pid: i32,
    /// CLOCK_MONOTONIC when the monitor released it (set by the monitor), when it first ran
    /// (it read its release), and when it ended, in ns.
    #[serde(default)]
    pub release_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// schedstat when released and when ended.
    pub at_start: Sched,
    pub at_end: Sched,
    /// Time asleep in `read(2)` until the device answered, in ns.
    pub blocked_ns: u64,
    pub ios: u64,
    /// From the device's answer to the job running again (wake-up latency), in ns.
    pub wake_sum_ns: u64,
    pub wake_max_ns: u64,
    /// Context switches while it ran: voluntary (it blocked) and involuntary (preempted).
    pub voluntary: u64,
    pub involuntary: u64,
}

impl JobReport {
    pub fn running_ns(&self) -> u64 {
        self.at_end.run_ns.saturating_sub(self.at_start.run_ns)
    }
    /// Time in the run queue: what schedstat counted while it ran its instructions, plus the
    /// time from its release to its first instruction (woken, not yet running).
    pub fn ready_ns(&self) -> u64 {
        self.at_end.wait_ns.saturating_sub(self.at_start.wait_ns)
            + self.start_ns.saturating_sub(self.release_ns)
    }
}

/// What the device measured: time with at least one IO in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceReport {
    pub io_busy_ns: u64,
    pub ios: u64,
}

/// Everything the real run measured.
#[derive(Debug)]
pub struct Measured {
    pub t0_ns: u64,
    pub wall_ns: u64,
    pub jobs: Vec<JobReport>,
    pub device: DeviceReport,
    /// The shared sampler's readings of `/proc/PID/task/TID/{stat,schedstat}`.
    pub samples: Vec<Sample>,
    /// CLOCK_MONOTONIC of the report clock's zero, in ns: a sample's `t_us` is on that clock.
    pub report_t0_ns: u64,
    pub jobs_cpu: usize,
    /// The share of the jobs' CPU that was busy in all (`/proc/stat`, in clock ticks of 10 ms:
    /// about), whoever ran: other processes of this machine too.
    pub cpu_all_busy_pct: Option<f64>,
}

impl Measured {
    pub fn total_ticks(&self, tick: Duration) -> f64 {
        self.wall_ns as f64 / tick.as_nanos() as f64
    }
    pub fn cpu_busy_percent(&self) -> f64 {
        let run: u64 = self.jobs.iter().map(JobReport::running_ns).sum();
        100.0 * run as f64 / self.wall_ns.max(1) as f64
    }
    pub fn io_busy_percent(&self) -> f64 {
        100.0 * self.device.io_busy_ns as f64 / self.wall_ns.max(1) as f64
    }
}

/// Under `--policy fifo`, the device and the monitor run at this SCHED_FIFO priority (above
/// the jobs' and the other work on their CPU), so that an IO ends and the next batch job starts
/// on time on a busy machine too.
const MONITOR_PRIORITY: i32 = FIFO_PRIORITY + 2;

/// The device's quit message (a job number no job has).
const QUIT: u32 = u32::MAX;

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).context("pipe2")
}

/// Borrows a descriptor number inherited across `fork`.
fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // Safety: every number passed here was open in the monitor when the child was forked, and
    // the child never closes it: it stays open for the child's whole life.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// The device: answers each request after `latency`, in the order they came (every IO takes
/// the same time), and counts the time with an IO in flight.
fn device(
    requests: RawFd,
    answers: Vec<RawFd>,
    results: RawFd,
    latency: Duration,
    cpus: Vec<usize>,
    policy: Policy,
) -> Result<()> {
    let _ = kernel::pin_to(&cpus);
    if policy == Policy::Fifo {
        // A device answers on time: above the jobs and the machine's other work on its CPU.
        kernel::set_policy(libc::SCHED_FIFO, MONITOR_PRIORITY)
            .context("SCHED_FIFO for the device")?;
    }
    let mut pending: std::collections::VecDeque<(u64, usize)> = Default::default();
    let mut report = DeviceReport::default();
    let mut busy_since = 0u64;
    loop {
        let now = kernel::monotonic_ns();
        while let Some(&(due, job)) = pending.front() {
            if due > now {
                break;
            }
            pending.pop_front();
            let answered = kernel::monotonic_ns();
            kernel::write_all(fd(answers[job]), &answered.to_le_bytes())?;
            if pending.is_empty() {
                report.io_busy_ns += answered - busy_since;
            }
        }
        let timeout = pending.front().map(|&(due, _)| {
            let ns = due.saturating_sub(kernel::monotonic_ns());
            nix::sys::time::TimeSpec::from_duration(Duration::from_nanos(ns))
        });
        let mut fds = [nix::poll::PollFd::new(fd(requests), nix::poll::PollFlags::POLLIN)];
        match nix::poll::ppoll(&mut fds, timeout, None) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("ppoll on the request pipe"),
        }
        let mut message = [0u8; 4];
        if !kernel::read_exact(fd(requests), &mut message)? {
            return Ok(());
        }
        let job = u32::from_le_bytes(message);
        if job == QUIT {
            break;
        }
        let job = job as usize;
        if job >= answers.len() {
            bail!("a request from job {job}, which does not exist");
        }
        let now = kernel::monotonic_ns();
        if pending.is_empty() {
            busy_since = now;
        }
        pending.push_back((now + latency.as_nanos() as u64, job));
        report.ios += 1;
    }
    let line = serde_json::to_string(&serde_json::json!({ "device": report }))? + "\n";
    kernel::write_all(fd(results), line.as_bytes())
}

/// The descriptors one job uses.
#[derive(Debug, Clone, Copy)]
struct JobFds {
    go: RawFd,
    request: RawFd,
    answer: RawFd,
    results: RawFd,
}

/// One job: waits to be released, then runs its instructions on its own CPU time.
fn job(
    index: usize,
    code: Vec<Op>,
    fds: JobFds,
    setup: (Duration, Policy, IoDone, usize),
) -> Result<()> {
    let (tick, policy, io_done, cpu) = setup;
    kernel::pin_to(&[cpu])?;
    if policy == Policy::Fifo {
        kernel::set_policy(libc::SCHED_FIFO, FIFO_PRIORITY)
            .context("sched_setscheduler(SCHED_FIFO)")?;
    }
    // Raising the priority before the IO makes the wake-up preempt the running job (its
    // IO_RUN_IMMEDIATE); lowering it after the io_done puts the job at the *front* of its
    // priority's list (sched(7)), so it keeps the CPU, as in process-run.py.
    let immediate = policy == Policy::Fifo && io_done == IoDone::Immediate;
    let mut go = [0u8; 1];
    if !kernel::read_exact(fd(fds.go), &mut go)? {
        return Ok(());
    }
    let start_ns = kernel::monotonic_ns();
    let at_start = kernel::schedstat(0).unwrap_or_default();
    let (vol0, invol0) = kernel::switches(0);
    let (mut blocked_ns, mut ios, mut wake_sum_ns, mut wake_max_ns) = (0u64, 0u64, 0u64, 0u64);
    for op in code {
        match op {
            Op::Cpu => kernel::burn(tick),
            Op::Io => {
                kernel::burn(tick);
                if immediate {
                    kernel::set_policy(libc::SCHED_FIFO, FIFO_PRIORITY + 1)?;
                }
                let asked = kernel::monotonic_ns();
                kernel::write_all(fd(fds.request), &(index as u32).to_le_bytes())?;
                // The IO: asleep in read(2) until the device answers (state S).
                let mut answer = [0u8; 8];
                if !kernel::read_exact(fd(fds.answer), &mut answer)? {
                    bail!("the device closed its answer pipe");
                }
                let back = kernel::monotonic_ns();
                let answered = u64::from_le_bytes(answer);
                // Blocked until the device answered; from then on it was woken (ready or
                // already running again): the wake-up latency.
                let wake = back.saturating_sub(answered);
                blocked_ns += answered.saturating_sub(asked);
                ios += 1;
                wake_sum_ns += wake;
                wake_max_ns = wake_max_ns.max(wake);
            }
            Op::IoDone => {
                kernel::burn(tick);
                if immediate {
                    kernel::set_policy(libc::SCHED_FIFO, FIFO_PRIORITY)?;
                }
            }
        }
    }
    let end_ns = kernel::monotonic_ns();
    let (vol1, invol1) = kernel::switches(0);
    let report = JobReport {
        job: index,
        release_ns: 0,
        pid: std::process::id() as i32,
        start_ns,
        end_ns,
        at_start,
        at_end: kernel::schedstat(0).unwrap_or_default(),
        blocked_ns,
        ios,
        wake_sum_ns,
        wake_max_ns,
        voluntary: vol1.saturating_sub(vol0),
        involuntary: invol1.saturating_sub(invol0),
    };
    let line = serde_json::to_string(&report)? + "\n";
    kernel::write_all(fd(fds.results), line.as_bytes())
}

/// Whether `--policy fifo` may be used here: exit 2 with a message if not.
pub fn check_policy(policy: Policy) -> Result<()> {
    if policy != Policy::Fifo {
        return Ok(());
    }
    kernel::fifo_allowed().map_err(|e| {
        common::demo::bad_input(format!(
            "--policy fifo: SCHED_FIFO needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO (ulimit -r) \
             of at least {} (sched_setscheduler: {e}); run as root, or use --policy normal",
            MONITOR_PRIORITY
        ))
    })
}

/// Runs the jobs for real and measures them. The jobs and the device are this monitor's
/// children; a child killed from outside ends the run with `child_lost` (exit 1).
pub fn run_jobs(common: &CommonArgs, s: &Setup, hold_moment: Option<&str>) -> Result<Measured> {
    check_policy(s.policy)?;
    let (jobs_cpu, others) = kernel::jobs_cpu_and_others()?;
    let restore = kernel::allowed_cpus()?;
    // The monitor's own threads (and the sampler, which inherits the mask) stay off the jobs'
    // CPU for the run.
    kernel::pin_process_to(&others)?;
    let result = run_pinned(common, s, jobs_cpu, others, hold_moment);
    let _ = kernel::pin_process_to(&restore);
    result
}

fn run_pinned(
    common: &CommonArgs,
    s: &Setup,
    jobs_cpu: usize,
    others: Vec<usize>,
    hold_moment: Option<&str>,
) -> Result<Measured> {
    let n = s.jobs.len();
    let (requests_r, requests_w) = pipe()?;
    let (results_r, results_w) = pipe()?;
    let mut answers = Vec::new();
    let mut gos = Vec::new();
    for _ in 0..n {
        answers.push(pipe()?);
        gos.push(pipe()?);
    }
    let latency = s.tick * s.io_length as u32;
    let answer_ws: Vec<RawFd> = answers.iter().map(|(_, w)| w.as_raw_fd()).collect();
    let (req_r, res_w) = (requests_r.as_raw_fd(), results_w.as_raw_fd());
    let device_cpus = others.clone();
    let policy = s.policy;
    let mut device = Process::from_fn("device", move || {
        device(req_r, answer_ws, res_w, latency, device_cpus, policy)
    });
    device.start()?;
    let mut jobs = Vec::new();
    for (i, code) in s.jobs.iter().enumerate() {
        let fds = JobFds {
            go: gos[i].0.as_raw_fd(),
            request: requests_w.as_raw_fd(),
            answer: answers[i].0.as_raw_fd(),
            results: res_w,
        };
        let code = code.clone();
        let setup = (s.tick, s.policy, s.io_done, jobs_cpu);
        let mut p = Process::from_fn(format!("job-{i}"), move || job(i, code, fds, setup));
        p.start()?;
        jobs.push(p);
    }
    let pids: Vec<i32> = jobs.iter().filter_map(Process::pid).collect();
    common::event!(
        "loaded",
        { "pids": pids, "device": device.pid(), "cpu": jobs_cpu, "policy": s.policy,
          "switch": s.switch, "io_done": s.io_done, "tick_ms": s.tick.as_secs_f64() * 1e3 },
        "{n} job(s) loaded as processes {pids:?}, all pinned to CPU {jobs_cpu} \
         (sched_setaffinity); the device is {}; the monitor and its sampler run on CPU(s) \
         {others:?}{}",
        device.pid().unwrap_or(0),
        if others == [jobs_cpu] {
            " (this machine lets the demo use one CPU: the monitor shares it with the jobs)"
        } else {
            ""
        }
    );
    // Every job asleep on its release pipe before the first is released: the jobs then enter
    // the run queue in release order (under SCHED_FIFO, the order they will run in).
    for pid in &pids {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while common::ps::state_of(*pid) != Some('S') {
            for p in jobs.iter_mut().chain(std::iter::once(&mut device)) {
                if !p.is_alive() {
                    return Err(common::processes::lost::report(p, "jobs' instructions", 1));
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("job {pid} never waited for its release");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    if let Some(moment) = hold_moment {
        let mut all = vec![std::process::id() as i32];
        all.extend(&pids);
        all.extend(device.pid());
        crate::hold(common, moment, &all);
    }
    // Started from this thread, pinned off the jobs' CPU: the sampler's thread inherits that.
    let interval = (s.tick / 4).max(Duration::from_micros(500));
    let sampler = Sampler::start(std::process::id() as i32, interval, None)?;
    let report_t0_ns = kernel::monotonic_ns() - common::report::elapsed_us() * 1000;
    if s.policy == Policy::Fifo {
        kernel::set_policy(libc::SCHED_FIFO, MONITOR_PRIORITY)
            .context("SCHED_FIFO for the monitor")?;
    }
    let mut inbox = Inbox { fd: results_r, text: String::new() };
    let cpu_before = cpu_busy_ticks(jobs_cpu);
    let t0_ns = kernel::monotonic_ns();
    let mut release_ns = vec![t0_ns; n];
    let outcome = match s.switch {
        // The kernel switches: all are released, in job order.
        Switch::OnIo => (|| {
            for (i, (_, w)) in gos.iter().enumerate() {
                release_ns[i] = kernel::monotonic_ns();
                kernel::write_all(w.as_fd(), &[1])?;
            }
            if !watch(&mut jobs, &mut device, &mut inbox, |inbox| (0..n).all(|i| inbox.has(i)))? {
                bail!("every job ended, not every one reported");
            }
            Ok(())
        })(),
        // The batch monitor: the next job only when the previous one has ended (its report,
        // its last act, has arrived).
        Switch::OnEnd => (|| {
            for i in 0..n {
                release_ns[i] = kernel::monotonic_ns();
                kernel::write_all(gos[i].1.as_fd(), &[1])?;
                if !watch(&mut jobs, &mut device, &mut inbox, |inbox| inbox.has(i))? {
                    bail!("every job ended, job {i} did not report");
                }
            }
            Ok(())
        })(),
    };
    let end_ns = kernel::monotonic_ns();
    let _ = kernel::set_policy(libc::SCHED_OTHER, 0);
    let cpu_after = cpu_busy_ticks(jobs_cpu);
    let samples = sampler.stop();
    outcome?;
    // Every job has reported: wait for them to end, then stop the device.
    watch(&mut jobs, &mut device, &mut inbox, |_| false)?;
    kernel::write_all(requests_w.as_fd(), &QUIT.to_le_bytes())?;
    while device.is_alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    if device.exitcode() != Some(0) {
        return Err(common::processes::lost::report(&device, "IOs", 0));
    }
    drop(results_w);
    let mut reports = Vec::new();
    let mut device_report = DeviceReport::default();
    let text = inbox.text + &read_available(inbox.fd)?;
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).context("a job's report")?;
        if let Some(d) = value.get("device") {
            device_report = serde_json::from_value(d.clone())?;
        } else {
            reports.push(serde_json::from_value::<JobReport>(value)?);
        }
    }
    reports.sort_by_key(|r| r.job);
    if reports.len() != n {
        bail!("{} of {n} jobs reported", reports.len());
    }
    for r in &mut reports {
        r.release_ns = release_ns[r.job];
    }
    let cpu_all_busy_pct = match (cpu_before, cpu_after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            Some(100.0 * b1.saturating_sub(b0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    };
    let last_end = reports.iter().map(|r| r.end_ns).max().unwrap_or(end_ns);
    Ok(Measured {
        t0_ns,
        wall_ns: last_end.saturating_sub(t0_ns).max(1),
        jobs: reports,
        device: device_report,
        samples,
        report_t0_ns,
        jobs_cpu,
        cpu_all_busy_pct,
    })
}

/// Busy and total clock ticks of `cpu` so far (`/proc/stat`): busy is all but idle and iowait.
fn cpu_busy_ticks(cpu: usize) -> Option<(u64, u64)> {
    use procfs::CurrentSI;
    let stats = procfs::KernelStats::current().ok()?;
    let t = stats.cpu_time.get(cpu)?;
    let idle = t.idle + t.iowait.unwrap_or(0);
    let total = t.user
        + t.nice
        + t.system
        + t.idle
        + t.iowait.unwrap_or(0)
        + t.irq.unwrap_or(0)
        + t.softirq.unwrap_or(0)
        + t.steal.unwrap_or(0);
    Some((total - idle, total))
}

/// The jobs' reports as they arrive on the results pipe.
struct Inbox {
    fd: OwnedFd,
    text: String,
}

impl Inbox {
    /// Waits up to 1 ms for more of the reports, and keeps what came.
    fn pull(&mut self) -> Result<()> {
        let mut fds = [nix::poll::PollFd::new(self.fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1u8)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e).context("poll on the results pipe"),
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(self.fd.as_fd(), &mut buf) {
            Ok(k) => self.text.push_str(&String::from_utf8_lossy(&buf[..k])),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("reading the results pipe"),
        }
        Ok(())
    }

    /// Whether job `job` has reported (a report begins with its number, its first field).
    fn has(&self, job: usize) -> bool {
        let head = format!("{{\"job\":{job},");
        self.text.lines().any(|l| l.starts_with(&head))
    }
}

/// Waits until `done` holds for the reports (`true`) or every job has ended cleanly
/// (`false`), watching the device and every job: one that dies of anything but a clean end is
/// reported as lost (exit 1).
fn watch(
    jobs: &mut [Process],
    device: &mut Process,
    inbox: &mut Inbox,
    done: impl Fn(&Inbox) -> bool,
) -> Result<bool> {
    loop {
        if done(inbox) {
            return Ok(true);
        }
        let mut running = 0;
        for j in jobs.iter_mut() {
            let alive = j.is_alive();
            if !alive && j.exitcode() != Some(0) {
                return Err(common::processes::lost::report(j, "jobs' instructions", 1));
            }
            running += usize::from(alive);
        }
        if !device.is_alive() {
            return Err(common::processes::lost::report(device, "IOs in flight", 0));
        }
        if running == 0 {
            return Ok(false);
        }
        inbox.pull()?;
    }
}

/// Everything in a pipe whose every write end is closed or idle (non-blocking read).
fn read_available(r: OwnedFd) -> Result<String> {
    nix::fcntl::fcntl(r.as_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(r.as_fd(), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("reading the jobs' reports"),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A job's state in one tick of the measured timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Seen {
    /// Not released yet (waiting for its turn in the batch).
    Queued,
    Run,
    Ready,
    Blocked,
    Done,
}

impl Seen {
    pub fn text(self) -> &'static str {
        match self {
            Seen::Queued => "-",
            Seen::Run => "RUN",
            Seen::Ready => "READY",
            Seen::Blocked => "BLOCKED",
            Seen::Done => "DONE",
        }
    }
}

/// One tick of the measured timeline.
#[derive(Debug, Clone, Serialize)]
pub struct SeenRow {
    pub tick: u64,
    pub cells: Vec<Seen>,
    /// The jobs' CPU time in this tick, as a fraction of the tick.
    pub cpu: f64,
    pub ios: usize,
}

/// One reading of a job: when, its state letter, and its time on a CPU so far.
#[derive(Debug, Clone, Copy)]
struct Point {
    t: u64,
    state: char,
    run: u64,
}

/// The readings of one job: the sampler's, plus its own at its first instruction and its end
/// (running at both).
fn series(m: &Measured, r: &JobReport) -> Vec<Point> {
    let mut points: Vec<Point> = m
        .samples
        .iter()
        .filter(|s| s.pid == r.pid && s.tid == r.pid)
        .map(|s| Point { t: m.report_t0_ns + s.t_us * 1000, state: s.state, run: s.run_ns })
        .filter(|p| p.t > r.start_ns && p.t < r.end_ns)
        .collect();
    points.push(Point { t: r.start_ns, state: 'R', run: r.at_start.run_ns });
    points.push(Point { t: r.end_ns, state: 'R', run: r.at_end.run_ns });
    points.sort_unstable_by_key(|p| p.t);
    points
}

/// Time running, ready and blocked within `[lo, hi)`. Between two readings the CPU time is
/// schedstat's (spread evenly); the rest is ready if the task was runnable (`R`) and blocked
/// if it slept (`S`, `D`): schedstat's wait figure grows only when a waiting task finally
/// runs, so it cannot say *when* the task waited; the state letter can.
fn split(points: &[Point], lo: u64, hi: u64) -> (f64, f64, f64) {
    let (mut run, mut ready, mut blocked) = (0.0, 0.0, 0.0);
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (from, to) = (a.t.max(lo), b.t.min(hi));
        if to <= from || b.t <= a.t {
            continue;
        }
        let share = (to - from) as f64 / (b.t - a.t) as f64;
        let ran = (b.run.saturating_sub(a.run) as f64 * share).min((to - from) as f64);
        let rest = (to - from) as f64 - ran;
        let runnable = |c: char| c == 'R';
        let r_share = match (runnable(a.state), runnable(b.state)) {
            (true, true) => 1.0,
            (false, false) => 0.0,
            _ => 0.5,
        };
        run += ran;
        ready += rest * r_share;
        blocked += rest * (1.0 - r_share);
    }
    (run, ready, blocked)
}

/// The measured timeline, one row per tick of wall time since the release: in each tick, each
/// job's time running, ready and blocked (see [`split`]); the largest of the three names the
/// cell. A job released but not yet at its first instruction counts as ready (woken, waiting).
pub fn timeline(m: &Measured, tick: Duration) -> Vec<SeenRow> {
    let tick_ns = tick.as_nanos() as u64;
    let ticks = m.wall_ns.div_ceil(tick_ns);
    let all: Vec<Vec<Point>> = m.jobs.iter().map(|r| series(m, r)).collect();
    (0..ticks)
        .map(|k| {
            let (a, b) = (m.t0_ns + k * tick_ns, m.t0_ns + (k + 1) * tick_ns);
            let mut cpu = 0.0;
            let cells: Vec<Seen> = m
                .jobs
                .iter()
                .zip(&all)
                .map(|(r, points)| {
                    if b <= r.release_ns {
                        return Seen::Queued;
                    }
                    if a >= r.end_ns {
                        return Seen::Done;
                    }
                    let woken = b.min(r.start_ns).saturating_sub(a.max(r.release_ns)) as f64;
                    let (run, ready, blocked) = split(points, a.max(r.start_ns), b.min(r.end_ns));
                    let ready = ready + woken;
                    cpu += run;
                    if run >= ready && run >= blocked {
                        Seen::Run
                    } else if ready >= blocked {
                        Seen::Ready
                    } else {
                        Seen::Blocked
                    }
                })
                .collect();
            let ios = cells.iter().filter(|c| **c == Seen::Blocked).count();
            SeenRow { tick: k + 1, cells, cpu: cpu / tick_ns as f64, ios }
        })
        .collect()
}
