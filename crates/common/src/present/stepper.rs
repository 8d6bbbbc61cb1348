//! stepper — be the scheduler: real processes and threads wait before each marked step
//! (`phase::step`) until a controller grants them one step at a time (`--step`, `--schedule`).
//!
//! Two sides:
//! - the **workers**: each thread that is a worker says so with [`worker`]; its marks then
//!   report "I am about to make step X" and wait for a grant, a turn under a `Mutex` + `Condvar`.
//!   Threads of the controller's own process are joined with [`Controller::local`]; workers in
//!   child processes call [`join`] with the folder of the controller's named pipes (a `ready` pipe
//!   all write their reports to, a `grant.K` pipe per process whose relay thread hands out
//!   the turns);
//! - the **controller**: [`Controller::settle`] waits until every worker is at its next step,
//!   done, or blocked in the kernel (the demo's probe reads `/proc`: a flock waiter, a thread
//!   asleep on a futex); only a worker at a step can be granted one ([`Controller::grant`]).
//!
//! A worker blocked in the kernel is never simulated: it is seen asleep (`S`, its wchan), and it
//! becomes choosable only when the kernel lets it go on and it reports its next step.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::phase::{self, Mark};

/// How long a granted step may take to reach the next mark, end, or block, before the
/// controller gives up: far more than any step needs, so a loaded machine never trips it.
pub const STEP_PATIENCE: Duration = Duration::from_secs(20);

/// What a worker reports to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub worker: usize,
    /// The step it is about to make, or `None`: it is done.
    pub step: Option<String>,
    /// Its private state, as it last described it ([`note`]): "read count 1".
    pub note: String,
    /// The kernel's id of the worker's thread, to look it up in `/proc`.
    #[serde(default)]
    pub tid: i32,
}

// ---------------------------------------------------------------------------------------------
// The workers' side

/// The turns of this process's workers, and where their reports go.
struct Side {
    /// Grants not yet used, per worker; `None` once the controller let every worker run free.
    grants: Mutex<Option<Vec<u32>>>,
    turn: Condvar,
    out: Mutex<Out>,
}

enum Out {
    Local(Sender<Report>),
    Pipe(File),
}

static SIDE: OnceLock<Arc<Side>> = OnceLock::new();

thread_local! {
    static ME: Cell<Option<usize>> = const { Cell::new(None) };
    static NOTE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The calling thread is worker `i`: its marks wait for grants from now on.
pub fn worker(i: usize) {
    ME.with(|me| me.set(Some(i)));
}

/// True when this thread is a worker under a controller: what [`note`] checks first.
pub fn active() -> bool {
    SIDE.get().is_some() && ME.with(Cell::get).is_some()
}

/// Describes this worker's private state ("read count 1"), shown before the next step. The text
/// is made only under a controller, so a fast loop pays one check.
pub fn note(text: impl FnOnce() -> String) {
    if active() {
        NOTE.with(|n| *n.borrow_mut() = text());
    }
}

/// This worker has no more steps. Call it at the end of the worker's work.
pub fn done() {
    if let Some(side) = SIDE.get()
        && let Some(i) = ME.with(Cell::get)
    {
        let note = NOTE.with(|n| n.borrow().clone());
        side.send(Report { worker: i, step: None, note, tid: crate::threads::named::gettid() });
    }
}

impl Side {
    fn new(out: Out, workers: usize) -> Side {
        Side {
            grants: Mutex::new(Some(vec![0; workers])),
            turn: Condvar::new(),
            out: Mutex::new(out),
        }
    }

    fn send(&self, report: Report) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *out {
            Out::Local(tx) => {
                let _ = tx.send(report);
            }
            Out::Pipe(file) => {
                // One write of one short line: a pipe keeps it whole among the other writers'.
                let mut line = serde_json::to_string(&report).unwrap_or_default();
                line.push('\n');
                if file.write_all(line.as_bytes()).is_err() {
                    std::process::exit(1); // the controller is gone: nobody will grant a step
                }
            }
        }
    }

    /// Waits, under the mutex, until worker `i` has a grant, and uses it up.
    fn wait_turn(&self, i: usize) {
        let mut grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match grants.as_mut() {
                None => return,
                Some(g) if g.get(i).copied().unwrap_or(0) > 0 => {
                    g[i] -= 1;
                    return;
                }
                Some(_) => grants = self.turn.wait(grants).unwrap_or_else(PoisonError::into_inner),
            }
        }
    }

    fn grant(&self, i: usize) {
        let mut grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = grants.as_mut() {
            if g.len() <= i {
                g.resize(i + 1, 0);
            }
            g[i] += 1;
        }
        self.turn.notify_all();
    }

    /// No more turns: every worker runs free (after a bad schedule, so that threads can end).
    fn release(&self) {
        *self.grants.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.turn.notify_all();
    }
}

/// The stepper's listener: before a step, report it and wait for the turn.
fn on_mark(mark: &Mark<'_>) {
    let Mark::Step(step) = mark else { return };
    let (Some(side), Some(i)) = (SIDE.get(), ME.with(Cell::get)) else { return };
    let note = NOTE.with(|n| n.borrow().clone());
    let tid = crate::threads::named::gettid();
    side.send(Report { worker: i, step: Some((*step).to_owned()), note, tid });
    side.wait_turn(i);
}

/// In a child process: joins the controller whose pipes are in `dir`, as the process `slot`
/// (its workers numbered as the controller numbers them). A relay thread reads the grants; if
/// the controller goes away, this process exits.
pub fn join(dir: &Path, slot: usize) -> Result<()> {
    let ready = OpenOptions::new()
        .write(true)
        .open(dir.join("ready"))
        .with_context(|| format!("opening {}", dir.join("ready").display()))?;
    let grants = File::open(grant_path(dir, slot))
        .with_context(|| format!("opening {}", grant_path(dir, slot).display()))?;
    let side = Arc::new(Side::new(Out::Pipe(ready), 0));
    if SIDE.set(side.clone()).is_err() {
        bail!("this process already has a step controller");
    }
    phase::install_stepper(on_mark);
    crate::threads::named::spawn("step relay", move || {
        for line in BufReader::new(grants).lines() {
            match line.ok().and_then(|l| l.trim().parse::<usize>().ok()) {
                Some(i) => side.grant(i),
                None => break,
            }
        }
        std::process::exit(1); // the controller is gone: no step will ever be granted
    })?;
    Ok(())
}

/// `--step` and `--schedule` choose the steps of one part of a demo (`which`); asked for with
/// another part, or with none, the demo refuses before anything starts (exit 2) and names the
/// command that works (`example`).
pub fn only_in(part_chosen: bool, which: &str, example: &str) -> Result<()> {
    if part_chosen {
        return Ok(());
    }
    Err(crate::demo::bad_input(format!(
        "--step and --schedule choose the steps of {which}: try `{example}`"
    )))
}

fn grant_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("grant.{slot}"))
}

mod controller;
pub use controller::*;
mod choose;
pub use choose::*;
