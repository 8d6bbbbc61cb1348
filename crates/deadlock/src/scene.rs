//! The stage every deadlock of this demo plays on.
//!
//! In the child process (where the threads deadlock):
//! - a [`Board`] where each thread writes, in plain words, what it holds and what it is about
//!   to wait for: the names the detector does not know (it sees lock addresses and threads);
//! - a [`Watchdog`] thread that asks `parking_lot::deadlock::check_deadlock()` every
//!   [`POLL`] whether some threads wait for each other in a ring, and when they do prints the
//!   table and the cycle (event `deadlock`).
//!
//! In the parent (the demo): a [`Scene`] starts the child with a recording on, so that it can
//! read the child's events ([`Scene::wait`]), then shows the child's threads from `/proc` and
//! ends it with SIGKILL ([`Scene::kill`]): threads that wait for each other never wake up by
//! themselves (seed 001's 只能靠操作系统强制终止 is too strong: the watchdog finds the cycle, and
//! fcntl record locks are refused with EDEADLK).
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::{Process, Role, exitcode_name};
use common::threads::named;
use common::timeline::{Record, Recording};
use deadlock::waitfor::{self, Waiter};

use crate::Cli;

/// How often the watchdog asks the detector. The detector's own report takes tens of
/// milliseconds (it captures every deadlocked thread's backtrace).
pub const POLL: Duration = Duration::from_millis(10);

/// How long a child waits for a deadlock before saying none came: far more than the
/// deadlocks need (they are forced), so that a loaded machine never makes a test fail.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What each thread of the child holds and waits for, a row per thread.
#[derive(Debug)]
pub struct Board {
    rows: Vec<Mutex<Row>>,
}

#[derive(Debug, Default)]
struct Row {
    id: Option<ThreadId>,
    waiter: Waiter,
}

impl Board {
    /// A board of `rows` rows, one per thread that will [`Board::sit`] at it.
    pub fn new(rows: usize) -> Arc<Board> {
        Arc::new(Board { rows: (0..rows).map(|_| Mutex::default()).collect() })
    }

    fn row(&self, i: usize) -> std::sync::MutexGuard<'_, Row> {
        self.rows[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calling thread takes row `i`: its name and kernel thread id.
    pub fn sit(&self, i: usize) {
        let mut row = self.row(i);
        row.id = Some(std::thread::current().id());
        row.waiter.name = named::current_name();
        row.waiter.tid = named::gettid();
    }

    /// Row `i` is about to wait for `lock`.
    pub fn wants(&self, i: usize, lock: &str) {
        self.row(i).waiter.waits_for = Some(lock.to_string());
    }

    /// Row `i` got `lock`.
    pub fn got(&self, i: usize, lock: &str) {
        let mut row = self.row(i);
        row.waiter.waits_for = None;
        row.waiter.holds.push(lock.to_string());
    }

    /// Row `i` let `lock` go.
    pub fn released(&self, i: usize, lock: &str) {
        self.row(i).waiter.holds.retain(|h| h != lock);
    }

    fn snapshot(&self) -> Vec<(Option<ThreadId>, Waiter)> {
        self.rows
            .iter()
            .map(|r| {
                let r = r.lock().unwrap_or_else(|e| e.into_inner());
                (r.id, r.waiter.clone())
            })
            .collect()
    }
}

/// The child's watchdog thread: it polls the detector until a deadlock is found (then it
/// reports it and waits to be killed with the rest), until it is stopped, or until
/// [`PATIENCE`] runs out.
#[derive(Debug)]
pub struct Watchdog {
    done: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching for [`PATIENCE`]. `what` names the rows in the table (`thread`,
    /// `philosopher`).
    pub fn start(board: Arc<Board>, what: &'static str) -> Result<Watchdog> {
        Watchdog::start_for(board, what, Some(PATIENCE))
    }

    /// Starts watching for `patience`, or until stopped (`None`: a learner choosing each step
    /// takes the time they take).
    pub fn start_for(
        board: Arc<Board>,
        what: &'static str,
        patience: Option<Duration>,
    ) -> Result<Watchdog> {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let handle = named::spawn("watchdog", move || {
            let began = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(POLL);
                let cycles: Vec<Vec<ThreadId>> = parking_lot::deadlock::check_deadlock()
                    .iter()
                    .map(|cycle| cycle.iter().map(|t| t.thread_id()).collect())
                    .collect();
                if !cycles.is_empty() {
                    found(&board, what, &cycles, began.elapsed());
                    // The detector leaves the deadlocked threads blocked for good; so do we,
                    // until the parent kills the process.
                    loop {
                        std::thread::park();
                    }
                }
                if patience.is_some_and(|p| began.elapsed() > p) {
                    common::event!("no_deadlock", { "after_ms": began.elapsed().as_millis() as u64 }, "no deadlock found in {PATIENCE:?}");
                    return;
                }
            }
        })
        .context("starting the watchdog thread")?;
        Ok(Watchdog { done, handle: Some(handle) })
    }

    /// Stops watching (the threads finished) and says whether the watchdog ever saw a deadlock
    /// (it cannot have, or this thread would not be here to ask).
    pub fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Reports what the detector found: the deadlocked threads (named from the board), the locks,
/// the table and the wait-for cycle.
fn found(board: &Board, what: &str, cycles: &[Vec<ThreadId>], after: Duration) {
    let rows = board.snapshot();
    // In the board's order (scientist-1 first), then any thread the board does not know.
    let ids: Vec<ThreadId> = cycles.iter().flatten().copied().collect();
    let mut waiters: Vec<Waiter> = rows
        .iter()
        .filter(|(id, _)| id.is_some_and(|id| ids.contains(&id)))
        .map(|(_, waiter)| waiter.clone())
        .collect();
    for id in &ids {
        if !rows.iter().any(|(row, _)| row.as_ref() == Some(id)) {
            waiters.push(Waiter { name: format!("{id:?}"), ..Waiter::default() });
        }
    }
    let edges = waitfor::cycle(&waiters).unwrap_or_default();
    let locks: BTreeSet<&String> = waiters.iter().flat_map(|w| &w.holds).collect();
    let cycle_text = waitfor::cycle_text(&edges);
    common::event!("deadlock", {
            "detector": "parking_lot::deadlock::check_deadlock",
            "after_ms": after.as_millis() as u64,
            "cycles": cycles.len(),
            "threads": waiters,
            "locks": locks,
            "cycle": edges,
            "cycle_text": cycle_text,
        }, "parking_lot's deadlock detector found {} cycle(s) of {} threads after {} ms:\n{}\n\
             wait-for cycle: {cycle_text}",
            cycles.len(),
            waiters.len(),
            after.as_millis(),
            waitfor::table(&waiters, what, "tid"));
}

/// A child process on stage, with a recording of its events.
#[derive(Debug)]
pub struct Scene {
    child: Process,
    pid: i32,
    recording: Option<Recording>,
}

impl Scene {
    /// Starts the child `name` running `role` with `args`, by `--start-method`.
    pub fn start(
        cli: &Cli,
        name: &str,
        role: &'static Role,
        args: serde_json::Value,
    ) -> Result<Scene> {
        let recording = Recording::start()?;
        let mut child = Process::new(name, role, args).start_method(cli.common.start_method);
        child.start().with_context(|| format!("starting {name}"))?;
        let pid = child.pid().context("a started child has a pid")?;
        Ok(Scene { child, pid, recording: Some(recording) })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits up to `patience` for the first event of the child that satisfies `pred`; fails if
    /// the child ends first.
    pub fn wait(
        &mut self,
        what: &str,
        patience: Duration,
        pred: impl Fn(&Record) -> bool,
    ) -> Result<Record> {
        let deadline = Instant::now() + patience;
        let recording = self.recording.as_ref().context("the recording is on")?;
        loop {
            if let Some(r) = recording.records()?.into_iter().find(|r| pred(r)) {
                return Ok(r);
            }
            if !self.child.is_alive() {
                bail!(
                    "{} ended before {what} (exitcode {})",
                    self.child.name(),
                    exitcode_name(self.child.exitcode())
                );
            }
            if Instant::now() >= deadline {
                bail!("waited {patience:?} for {what}, in vain");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits up to `patience` for the child's event named `event`, failing at once if the
    /// child reports a deadlock (or gives up on finding one) instead.
    pub fn wait_event(&mut self, event: &str, patience: Duration) -> Result<Record> {
        let pid = self.pid;
        let record = self.wait(&format!("the event {event}"), patience, |r| {
            r.pid == pid && (r.event == event || r.event == "deadlock" || r.event == "no_deadlock")
        })?;
        if record.event != event {
            bail!(
                "{} reported {} instead of {event}: {}",
                self.child.name(),
                record.event,
                record.data
            );
        }
        Ok(record)
    }

    /// Waits up to `patience` for the child's watchdog to report the deadlock (fails if it
    /// reports none), then until the deadlocked threads are asleep again: reporting, the
    /// detector wakes each of them to capture its own backtrace, after which it parks for good.
    pub fn wait_deadlock(&mut self, patience: Duration) -> Result<Record> {
        let pid = self.pid;
        let record = self.wait("the deadlock to be found", patience, |r| {
            r.pid == pid && (r.event == "deadlock" || r.event == "no_deadlock")
        })?;
        if record.event != "deadlock" {
            bail!("{}: no deadlock was found, though one was forced", self.child.name());
        }
        let tids: Vec<i32> = record.data["threads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["tid"].as_i64().map(|tid| tid as i32))
            .filter(|&tid| tid > 0)
            .collect();
        let deadline = Instant::now() + patience;
        loop {
            let asleep = tids
                .iter()
                .all(|&tid| common::ps::thread(pid, tid).is_some_and(|t| t.state == 'S'));
            if asleep {
                break;
            }
            if !self.child.is_alive() {
                bail!("{} ended while its threads were deadlocked", self.child.name());
            }
            if Instant::now() >= deadline {
                bail!("the deadlocked threads of {} never went back to sleep", self.child.name());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(record)
    }

    /// The child's threads from `/proc` (`ps -L`), and the `--hold` pause before the kill.
    pub fn show_threads(&self, cli: &Cli, title: &str) {
        common::ps::show_threads(title, self.pid);
        cli.common.hold_threads("the deadlocked threads, before the kill", self.pid);
    }

    /// Ends the child with SIGKILL, reaps it, and says so (event `killed`).
    pub fn kill(mut self, why: &str) -> Result<()> {
        self.recording.take();
        self.child.kill()?;
        let code = self.child.join()?;
        common::event!("killed", { "pid": self.pid, "exitcode": code }, "kill -9 {}: {why}; exitcode {}", self.pid, exitcode_name(code));
        Ok(())
    }

    /// Waits for the child to end by itself and fails unless it exits 0.
    pub fn join(mut self) -> Result<()> {
        self.recording.take();
        let code = self.child.join_timeout(PATIENCE)?;
        match code {
            Some(0) => Ok(()),
            None => bail!("{} did not end within {PATIENCE:?}", self.child),
            Some(_) => bail!("{} failed", self.child),
        }
    }
}

impl Drop for Scene {
    /// A scene that ends by an error still leaves nothing behind: a deadlocked child would
    /// otherwise be waited for at the end of `main` for ever.
    fn drop(&mut self) {
        if self.child.is_alive() {
            let _ = self.child.kill();
            let _ = self.child.join();
        }
    }
}
