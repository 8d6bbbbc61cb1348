//! stepper — be the scheduler: real processes and threads wait before each marked step
//! (`phase::step`) until a controller grants them one step at a time (`--step`, `--schedule`).
//!
//! Two sides:
//! - the **workers**: a thread says it is one with [`worker`]; its marks then report "I am about
//!   to make step X" and wait for a grant, a turn under a `Mutex` + `Condvar`. The controller's
//!   own threads are joined with [`Controller::local`]; child processes call [`join`] with the
//!   folder of the controller's named pipes (`ready`, which all write their reports to, and a
//!   `grant.K` per process, whose relay thread hands out the turns);
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
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::phase::{self, Mark};

/// What a worker reports to the controller: the step it is about to make (`None`: it is done),
/// its private state as [`note`] last described it, and its thread's kernel id for `/proc`.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    worker: usize,
    step: Option<String>,
    note: String,
    tid: i32,
}

// ---------------------------------------------------------------------------------------------
// The workers' side

/// The turns of this process's workers, and where their reports go.
#[derive(Debug)]
struct Side {
    /// Grants not yet used, per worker; `None` once the controller let every worker run free.
    grants: Mutex<Option<Vec<u32>>>,
    turn: Condvar,
    out: Out,
}

#[derive(Debug)]
enum Out {
    Local(Sender<Report>),
    Pipe(File),
}

static SIDE: OnceLock<Side> = OnceLock::new();

thread_local! {
    static ME: Cell<Option<usize>> = const { Cell::new(None) };
    static NOTE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The calling thread is worker `i`: its marks wait for grants from now on.
pub fn worker(i: usize) {
    ME.with(|me| me.set(Some(i)));
}

/// This process's side and the calling thread's worker number, under a controller.
fn me() -> Option<(&'static Side, usize)> {
    Some((SIDE.get()?, ME.with(Cell::get)?))
}

/// Describes this worker's private state ("read count 1"), shown before the next step. The text
/// is made only under a controller, so a fast loop pays one check.
pub fn note(text: impl FnOnce() -> String) {
    if me().is_some() {
        NOTE.with(|n| *n.borrow_mut() = text());
    }
}

/// This worker has no more steps. Call it at the end of the worker's work.
pub fn done() {
    if let Some((side, i)) = me() {
        side.send(i, None);
    }
}

/// The stepper's listener: before a step, report it and wait for the turn.
fn on_mark(mark: &Mark<'_>) {
    let Mark::Step(step) = mark else { return };
    let Some((side, i)) = me() else { return };
    side.send(i, Some(step));
    side.wait_turn(i);
}

impl Side {
    /// Makes this process's side, the one per process that [`on_mark`] reports to.
    fn install(out: Out) -> Result<&'static Side> {
        let side = Side { grants: Mutex::new(Some(Vec::new())), turn: Condvar::new(), out };
        if SIDE.set(side).is_err() {
            bail!("this process already has a step controller");
        }
        phase::install_stepper(on_mark);
        Ok(SIDE.get().expect("set just above"))
    }

    fn send(&self, worker: usize, step: Option<&str>) {
        let note = NOTE.with(|n| n.borrow().clone());
        let tid = crate::threads::named::gettid();
        let report = Report { worker, step: step.map(str::to_owned), note, tid };
        match &self.out {
            Out::Local(tx) => _ = tx.send(report),
            Out::Pipe(file) => {
                // One write of one short line: a pipe keeps it whole among the other writers'
                // (so no lock: any thread writes through a shared `&File`).
                let line = format!("{}\n", serde_json::to_string(&report).unwrap_or_default());
                let mut file: &File = file;
                if file.write_all(line.as_bytes()).is_err() {
                    std::process::exit(1); // the controller is gone: nobody will grant a step
                }
            }
        }
    }

    /// Waits, under the mutex, until worker `i` has a grant, and uses it up.
    fn wait_turn(&self, i: usize) {
        let grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        // Grants are still handed out (not released), and none is left for `i`.
        let no_turn = |grants: &mut Option<Vec<u32>>| {
            grants.as_ref().is_some_and(|g| g.get(i).copied().unwrap_or(0) == 0)
        };
        let mut grants =
            self.turn.wait_while(grants, no_turn).unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = grants.as_mut() {
            g[i] -= 1;
        }
    }

    fn grant(&self, i: usize) {
        let mut grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = grants.as_mut() {
            g.resize(g.len().max(i + 1), 0);
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

/// In a child process: joins the controller whose pipes are in `dir`, as the process `slot`
/// (its workers numbered as the controller numbers them); the process exits if the controller goes.
pub fn join(dir: &Path, slot: usize) -> Result<()> {
    let ready = open_pipe(&dir.join("ready"), OpenOptions::new().write(true))?;
    let grants = open_pipe(&grant_path(dir, slot), OpenOptions::new().read(true))?;
    let side = Side::install(Out::Pipe(ready))?;
    crate::threads::named::spawn("step relay", move || {
        let lines = BufReader::new(grants).lines().map_while(Result::ok);
        for i in lines.map_while(|line| line.trim().parse::<usize>().ok()) {
            side.grant(i);
        }
        std::process::exit(1); // the controller is gone: no step will ever be granted
    })?;
    Ok(())
}

/// `--step` and `--schedule` choose the steps of one part of a demo (`which`); asked for with
/// another part, or with none, the demo refuses before anything starts (exit 2) and names the
/// command that works (`example`).
pub fn only_in(part_chosen: bool, which: &str, example: &str) -> Result<()> {
    let refusal = format!("--step and --schedule choose the steps of {which}: try `{example}`");
    if part_chosen { Ok(()) } else { Err(crate::demo::bad_input(refusal)) }
}

fn grant_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("grant.{slot}"))
}

fn open_pipe(path: &Path, how: &OpenOptions) -> Result<File> {
    how.open(path).with_context(|| format!("opening {}", path.display()))
}

mod controller;
pub use controller::*;
mod choose;
pub use choose::*;
