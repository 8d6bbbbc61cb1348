//! Part 3, `states`: the three states (运行态, 就绪态, 阻塞态) and their moves, seen in `/proc`
//! while they happen, and D (uninterruptible sleep).
//!
//! One job computes (R, running); another waits for its IO in `read(2)` (S, blocked). The IO
//! ends while the first job holds the only CPU: the woken job is R but does not run, and its
//! run-queue wait (`/proc/PID/schedstat`, field 2) grows until it runs: the notes' rule
//! "阻塞态切换到运行态时需要经过就绪态", measured as the wake-up latency. Both jobs are
//! SCHED_BATCH: a woken SCHED_NORMAL job usually preempts the running one at once (wake-up
//! preemption), and its ready time is microseconds; a SCHED_BATCH job never preempts on waking,
//! so it waits for the running job's time slice to end.
//!
//! D: a process in `clone(CLONE_VM | CLONE_VFORK)` (what `vfork` does) sleeps uninterruptibly
//! (TASK_KILLABLE: only a fatal signal ends it early) until its child exits or execs.
#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::Process;
use common::{predict, ps, report};
use nix::sched::CloneFlags;

use crate::kernel::{self, Sched};

/// The longest any step waits for a state to appear.
const STEP_DEADLINE: Duration = Duration::from_secs(20);
/// The computing job stops by itself after this much CPU time, should nobody tell it.
const MAX_COMPUTE: Duration = Duration::from_secs(30);

fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // Safety: the number was open in the demo when the child was forked and the child never
    // closes it.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// SCHED_BATCH for the calling job; the reason if the kernel refused.
fn batch() -> std::io::Result<()> {
    kernel::set_policy(libc::SCHED_BATCH, 0)
}

/// The computing job: burns CPU on `cpu` until a byte arrives on `stop` (or [`MAX_COMPUTE`]).
fn compute(cpu: usize, stop: RawFd) -> Result<()> {
    kernel::pin_to(&[cpu])?;
    batch().context("sched_setscheduler(SCHED_BATCH)")?;
    let start = kernel::thread_cpu_ns();
    loop {
        kernel::burn(Duration::from_millis(1));
        let mut fds = [nix::poll::PollFd::new(fd(stop), nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0);
        if ready > 0 || kernel::thread_cpu_ns() - start > MAX_COMPUTE.as_nanos() as u64 {
            return Ok(());
        }
    }
}

/// The job that waits for its IO: asleep in `read(2)` until the demo writes (the IO ends);
/// its first act on running again is to read its own schedstat and send it back.
fn wait_for_io(cpu: usize, wake: RawFd, ack: RawFd) -> Result<()> {
    kernel::pin_to(&[cpu])?;
    batch().context("sched_setscheduler(SCHED_BATCH)")?;
    let mut byte = [0u8; 1];
    if !kernel::read_exact(fd(wake), &mut byte)? {
        return Ok(());
    }
    let s = kernel::schedstat(0).unwrap_or_default();
    let mut message = [0u8; 16];
    message[..8].copy_from_slice(&s.run_ns.to_le_bytes());
    message[8..].copy_from_slice(&s.wait_ns.to_le_bytes());
    kernel::write_all(fd(ack), &message)?;
    kernel::burn(Duration::from_millis(1));
    Ok(())
}

/// The process that shows D: it calls `clone(CLONE_VM | CLONE_VFORK)`, which returns only when
/// the child exits; the child waits on `release` first.
fn vfork_parent(release: RawFd) -> Result<()> {
    let mut stack = vec![0u8; 64 * 1024];
    let child = Box::new(move || -> isize {
        // Safety: the child shares the parent's memory (CLONE_VM) while the parent sleeps, so
        // it only makes system calls that touch nothing of the parent's: prctl, read, _exit.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let mut byte = 0u8;
            libc::read(release, (&raw mut byte).cast(), 1);
            libc::_exit(0)
        }
    });
    // Safety: the child runs on `stack`, which outlives it (the parent is suspended until the
    // child exits: CLONE_VFORK), and it only makes the async-signal-safe calls above.
    let pid = unsafe {
        nix::sched::clone(
            child,
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    }
    .context("clone(CLONE_VM | CLONE_VFORK)")?;
    nix::sys::wait::waitpid(pid, None).context("waitpid for the clone child")?;
    Ok(())
}

/// Waits until `pid` shows a state `want` accepts, watching `children`; returns the state.
fn wait_state(
    what: &str,
    pid: i32,
    children: &mut [&mut Process],
    want: impl Fn(char) -> bool,
) -> Result<char> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if let Some(state) = ps::state_of(pid)
            && want(state)
        {
            return Ok(state);
        }
        for c in children.iter_mut() {
            if c.pid().is_some() && !c.is_alive() {
                return Err(common::processes::lost::report(c, "states to show", 1));
            }
        }
        if Instant::now() > deadline {
            bail!("{what}: not seen within {STEP_DEADLINE:?} (state {:?})", ps::state_of(pid));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn seen(pid: i32, name: &str, state: char, meaning: &str) {
    let info = ps::stat(pid);
    let wchan = ps::wchan(pid);
    let psr = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .ok()
        .and_then(|s| s.processor)
        .unwrap_or(-1);
    common::event!(
        "state_seen",
        { "pid": pid, "name": name, "state": state.to_string(), "wchan": wchan, "psr": psr,
          "meaning": meaning, "comm": info.map(|i| i.comm) },
        "{name} ({pid}): STAT {state}, PSR {psr}, WCHAN {}: {meaning}",
        if wchan.is_empty() { "-".to_string() } else { wchan.clone() }
    );
}

pub fn states(cli: &crate::Cli) -> Result<()> {
    report::section(
        "states: running, blocked, ready (运行态, 阻塞态, 就绪态) and D, seen in /proc",
    );
    let (cpu, others) = kernel::jobs_cpu_and_others()?;
    let restore = kernel::allowed_cpus()?;
    kernel::pin_process_to(&others)?;
    let result = states_pinned(cli, cpu);
    let _ = kernel::pin_process_to(&restore);
    result
}

fn states_pinned(cli: &crate::Cli, cpu: usize) -> Result<()> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2");
    let (stop_r, stop_w) = pipe()?;
    let (wake_r, wake_w) = pipe()?;
    let (ack_r, ack_w) = pipe()?;
    let (release_r, release_w) = pipe()?;
    let (stop, wake, ack, release) =
        (stop_r.as_raw_fd(), wake_r.as_raw_fd(), ack_w.as_raw_fd(), release_r.as_raw_fd());
    let mut vfork = Process::from_fn("vfork-parent", move || vfork_parent(release));
    vfork.start()?;
    let mut computing = Process::from_fn("computing", move || compute(cpu, stop));
    computing.start()?;
    let mut waiting = Process::from_fn("waiting-io", move || wait_for_io(cpu, wake, ack));
    waiting.start()?;
    let (v, a, b) = (
        vfork.pid().context("no pid")?,
        computing.pid().context("no pid")?,
        waiting.pid().context("no pid")?,
    );
    let mut all = [&mut vfork, &mut computing, &mut waiting];
    // A step that fails because a child was killed from outside is reported as that loss.
    let result = (|| -> Result<()> {
        common::event!(
            "policy",
            { "policy": "SCHED_BATCH", "cpu": cpu },
            "the computing job and the waiting job are pinned to CPU {cpu} and run as SCHED_BATCH: a \
             woken SCHED_BATCH job does not preempt the running one (a SCHED_NORMAL one usually \
             does, at once, and its ready time is microseconds)"
        );
        wait_state("the vfork parent in D", v, &mut all, |s| s == 'D')?;
        wait_state("the computing job running", a, &mut all, |s| s == 'R')?;
        wait_state("the waiting job asleep in read(2)", b, &mut all, |s| s == 'S')?;
        seen(a, "computing", 'R', "running (运行态): on the CPU");
        seen(b, "waiting-io", 'S', "blocked (阻塞态): asleep in read(2), waiting for its IO");
        let clone_child = std::fs::read_to_string(format!("/proc/{v}/task/{v}/children"))
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()));
        seen(
            v,
            "vfork-parent",
            'D',
            "blocked (阻塞态) too, in an uninterruptible sleep: in clone(CLONE_VM | CLONE_VFORK) \
             until its child exits; signals wait (only a fatal one ends it), and it counts in the load average",
        );
        let mut pids = vec![std::process::id() as i32, a, b, v];
        pids.extend(clone_child);
        crate::hold(&cli.common, "R, S and D side by side", &pids);

        // The IO ends while the computing job holds the only CPU.
        let question = "a blocked job's IO ends while another job holds the only CPU: is it running \
                        at once, or ready (waiting in the run queue) first?";
        let guess = predict::ask(
            &cli.common,
            "woken-state",
            question,
            predict::Expect::Choice(&["running", "ready"]),
        );
        let before: Sched = kernel::schedstat(b).context("schedstat of the waiting job")?;
        let woke_at = Instant::now();
        kernel::write_all(wake_w.as_fd(), &[1])?;
        // Watch it from the other CPU until it runs: R with no CPU time added is ready.
        let mut ready_samples = 0u32;
        let mut first = None;
        while woke_at.elapsed() < STEP_DEADLINE {
            let Some(s) = kernel::schedstat(b) else { break };
            let state = ps::state_of(b).unwrap_or('?');
            if s.run_ns > before.run_ns {
                break;
            }
            if state == 'R' {
                ready_samples += 1;
                first.get_or_insert(state);
            }
        }
        let mut message = [0u8; 16];
        kernel::read_watching(ack_r.as_fd(), &mut message, &mut all, "its wake-up")?;
        let wait_at_run = u64::from_le_bytes(message[8..].try_into().unwrap_or_default());
        let ready_ns = wait_at_run.saturating_sub(before.wait_ns);
        // Under a microsecond is no wait worth the name, and would print as 0.000 ms.
        let ready = ready_ns >= 1_000;
        common::event!(
            "woken",
            { "pid": b, "ready_ns": ready_ns, "ready_samples": ready_samples,
              "wait_before_ns": before.wait_ns, "wait_at_run_ns": wait_at_run },
            "its IO ended: {}",
            if ready {
                format!(
                    "waiting-io ({b}) was first ready (就绪态), state R but not running, for \
                     {:.3} ms (its run-queue wait in /proc/{b}/schedstat grew by that much \
                     before it ran; seen R without CPU time {ready_samples} time(s) from the \
                     other CPU); only then did it run: 阻塞态 -> 就绪态 -> 运行态",
                    ready_ns as f64 / 1e6
                )
            } else {
                format!(
                    "waiting-io ({b}) ran at once: its run-queue wait in /proc/{b}/schedstat did \
                     not grow before it ran (seen R without CPU time {ready_samples} time(s)); \
                     this run shows no ready period (就绪态) between 阻塞态 and 运行态"
                )
            }
        );
        guess.reveal(
            if ready { "ready" } else { "running" },
            "a woken job goes to the run queue; it runs when the scheduler picks it",
        );
        Ok(())
    })();
    common::processes::lost::blame_dead_child(result, &mut all, "states to show")?;
    kernel::write_all(stop_w.as_fd(), &[1])?;
    kernel::write_all(release_w.as_fd(), &[1])?;
    for c in all.iter_mut() {
        c.join()?;
        if c.exitcode() != Some(0) {
            return Err(common::processes::lost::report(c, "states to show", 1));
        }
    }
    drop((wake_r, ack_w, stop_r, release_r));
    Ok(())
}
