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
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
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

fn grant_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("grant.{slot}"))
}

// ---------------------------------------------------------------------------------------------
// The controller's side

/// Where a worker is, as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Started, not yet at its first step.
    Starting,
    /// Waiting for a grant before this step.
    At(String),
    /// Granted this step, not yet at the next one.
    Running(String),
    /// Granted this step and asleep in the kernel inside it: the probe's words (`S`, wchan).
    Blocked(String, String),
    Done,
}

/// What the demo's probe says of a worker that was granted a step and has not reported since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Still on its way (running, or about to report).
    Going,
    /// Asleep in the kernel, waiting for something another worker holds: why, from `/proc`.
    Blocked(String),
    /// Its process ended without saying it was done.
    Gone,
}

/// One worker: its name in the demo, where it is, and its private state.
#[derive(Debug, Clone)]
pub struct Worker {
    pub name: String,
    pub state: State,
    pub note: String,
    pub steps: usize,
    /// Its thread's kernel id, from its first report (0 before).
    pub tid: i32,
}

/// How the controller reaches its workers.
enum Link {
    Local(Arc<Side>, Receiver<Report>),
    Pipes { ready: Receiver<Report>, grants: Vec<File>, slot_of: Vec<usize> },
}

/// The controller: the workers' states and the schedule granted so far.
pub struct Controller {
    link: Link,
    pub workers: Vec<Worker>,
    /// Every grant so far: the worker and the step it made.
    pub granted: Vec<(usize, String)>,
    /// The kernel's choices: after grant number k (from 1), this blocked worker could go on.
    pub woke: Vec<(usize, usize)>,
    /// The pipes' folder, removed once every worker has opened its ends.
    pipes: Option<PipeDir>,
}

/// The folder of a controller's named pipes, made before its child processes start.
#[derive(Debug)]
pub struct PipeDir {
    dir: PathBuf,
    slots: usize,
}

impl PipeDir {
    /// Makes the pipes `ready` and `grant.0..slots` in a new private folder under `parent`.
    pub fn new(parent: &Path, slots: usize) -> Result<PipeDir> {
        let dir = parent.join(format!(
            "steps-{}-{:x}",
            std::process::id(),
            crate::report::monotonic_ns()
        ));
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = PipeDir { dir, slots };
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&made.dir.join("ready"), mode).context("mkfifo ready")?;
        for slot in 0..slots {
            nix::unistd::mkfifo(&grant_path(&made.dir, slot), mode).context("mkfifo grant")?;
        }
        Ok(made)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PipeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("workers", &self.workers).finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller of `names.len()` worker threads of this process. Each worker thread calls
    /// [`worker`] with its number before its first mark.
    pub fn local(names: Vec<String>) -> Result<Controller> {
        let (tx, rx) = channel();
        let side = Arc::new(Side::new(Out::Local(tx), names.len()));
        if SIDE.set(side.clone()).is_err() {
            bail!("this process already has a step controller");
        }
        phase::install_stepper(on_mark);
        Ok(Controller::with(Link::Local(side, rx), names))
    }

    /// A controller of workers in child processes that [`join`] through `pipes`; `slot_of[i]`
    /// is the process slot of worker `i`. Call it once the children are started (so that none
    /// of them inherits the controller's ends of the pipes).
    pub fn pipes(pipes: PipeDir, names: Vec<String>, slot_of: Vec<usize>) -> Result<Controller> {
        let open = |path: PathBuf| {
            // Read and write: the open never waits for the other side, and the pipe never
            // reads as ended while this process holds it.
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let ready = open(pipes.dir.join("ready"))?;
        let grants =
            (0..pipes.slots).map(|s| open(grant_path(&pipes.dir, s))).collect::<Result<_>>()?;
        let (tx, rx) = channel();
        crate::threads::named::spawn("step reports", move || {
            let mut lines = BufReader::new(ready);
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let Ok(report) = serde_json::from_str::<Report>(&line) else { break };
                        if tx.send(report).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
        let mut ctl = Controller::with(Link::Pipes { ready: rx, grants, slot_of }, names);
        ctl.pipes = Some(pipes);
        Ok(ctl)
    }

    fn with(link: Link, names: Vec<String>) -> Controller {
        let workers = names
            .into_iter()
            .map(|name| Worker {
                name,
                state: State::Starting,
                note: String::new(),
                steps: 0,
                tid: 0,
            })
            .collect();
        Controller { link, workers, granted: Vec::new(), woke: Vec::new(), pipes: None }
    }

    fn receive(&self, timeout: Duration) -> Option<Report> {
        let rx = match &self.link {
            Link::Local(_, rx) => rx,
            Link::Pipes { ready, .. } => ready,
        };
        rx.recv_timeout(timeout).ok()
    }

    fn apply(&mut self, report: Report) {
        if let Some(w) = self.workers.get_mut(report.worker) {
            w.note = report.note;
            w.tid = report.tid;
            w.state = match report.step {
                Some(step) => State::At(step),
                None => State::Done,
            };
        }
    }

    /// Waits until every worker is at a step, done, or blocked in the kernel (as `probe` sees
    /// it from `/proc`). Once the others have settled, each blocked worker is looked at again:
    /// the last step may have let it go (an unlock wakes a flock waiter), and then it is
    /// watched until it reports or blocks again. Fails if a worker's process ends without
    /// saying so, or if nothing settles within [`STEP_PATIENCE`].
    pub fn settle(&mut self, mut probe: impl FnMut(&Controller, usize) -> Probe) -> Result<()> {
        let blocked: Vec<bool> =
            self.workers.iter().map(|w| matches!(w.state, State::Blocked(..))).collect();
        self.settle_all(&mut probe)?;
        for (i, was) in blocked.into_iter().enumerate() {
            if was && !matches!(self.workers[i].state, State::Blocked(..)) {
                self.woke.push((self.granted.len(), i));
            }
        }
        // Every worker has opened its pipes: the folder can go (nothing left after a Ctrl-C).
        self.pipes.take();
        Ok(())
    }

    fn settle_all(&mut self, probe: &mut impl FnMut(&Controller, usize) -> Probe) -> Result<()> {
        let deadline = Instant::now() + STEP_PATIENCE;
        loop {
            while let Some(report) = self.receive(Duration::ZERO) {
                self.apply(report);
            }
            let mut unsettled = false;
            for i in 0..self.workers.len() {
                let step = match &self.workers[i].state {
                    State::Starting => {
                        unsettled = true;
                        continue;
                    }
                    State::Running(step) => step.clone(),
                    _ => continue,
                };
                match probe(self, i) {
                    Probe::Going => unsettled = true,
                    Probe::Blocked(why) => self.workers[i].state = State::Blocked(step, why),
                    Probe::Gone => self.gone(i)?,
                }
            }
            if !unsettled {
                // Everyone else is still: did the kernel let a blocked worker go meanwhile?
                for i in 0..self.workers.len() {
                    if let State::Blocked(step, _) = &self.workers[i].state {
                        match probe(self, i) {
                            Probe::Blocked(_) => {}
                            Probe::Going => {
                                self.workers[i].state = State::Running(step.clone());
                                unsettled = true;
                            }
                            Probe::Gone => self.gone(i)?,
                        }
                    }
                }
                if !unsettled {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "a worker neither reached its next step nor blocked within {STEP_PATIENCE:?}"
                );
            }
            if let Some(report) = self.receive(Duration::from_millis(1)) {
                self.apply(report);
            }
        }
    }

    /// Worker `i`'s process ended: fine if it said it was done (perhaps just now), else an error.
    fn gone(&mut self, i: usize) -> Result<()> {
        // Its last report may still be on its way from the pipe.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !matches!(self.workers[i].state, State::Done | State::At(_))
            && Instant::now() < deadline
        {
            if let Some(report) = self.receive(Duration::from_millis(10)) {
                self.apply(report);
            }
        }
        if !matches!(self.workers[i].state, State::Done | State::At(_)) {
            bail!("{} ended in the middle of a step", self.workers[i].name);
        }
        Ok(())
    }

    /// The worker that holds the lock whose steps are `lock X` / `unlock X`, as the grants
    /// tell: it was granted `lock X`, went past it (the kernel gave it the lock), and has not
    /// been granted `unlock X` since.
    pub fn holder(&self, lock_step: &str, unlock_step: &str) -> Option<usize> {
        (0..self.workers.len()).find(|&i| {
            let mine: Vec<&str> =
                self.granted.iter().filter(|(j, _)| *j == i).map(|(_, s)| s.as_str()).collect();
            let Some(k) = mine.iter().rposition(|s| *s == lock_step) else { return false };
            let unlocked = mine[k + 1..].contains(&unlock_step);
            let past =
                k + 1 < mine.len() || matches!(self.workers[i].state, State::At(_) | State::Done);
            past && !unlocked
        })
    }

    /// Lets every worker of this process run free from now on: after a bad schedule or a
    /// refusal, so that its threads end. (Workers in child processes are ended by the demo.)
    pub fn release(&self) {
        if let Link::Local(side, _) = &self.link {
            side.release();
        }
    }

    /// The workers that can be granted a step now.
    pub fn choosable(&self) -> Vec<usize> {
        (0..self.workers.len()).filter(|&i| matches!(self.workers[i].state, State::At(_))).collect()
    }

    /// True when every worker is done.
    pub fn finished(&self) -> bool {
        self.workers.iter().all(|w| w.state == State::Done)
    }

    /// True when some workers are left and every one of them is blocked: a deadlock.
    pub fn deadlocked(&self) -> bool {
        !self.finished()
            && self.workers.iter().all(|w| matches!(w.state, State::Done | State::Blocked(..)))
    }

    /// Grants worker `i` its next step (it must be choosable).
    pub fn grant(&mut self, i: usize) -> Result<()> {
        let State::At(step) = self.workers[i].state.clone() else {
            bail!("{} is not waiting at a step", self.workers[i].name);
        };
        self.workers[i].state = State::Running(step.clone());
        self.workers[i].steps += 1;
        self.granted.push((i, step));
        match &mut self.link {
            Link::Local(side, _) => side.grant(i),
            Link::Pipes { grants, slot_of, .. } => {
                let file = &mut grants[slot_of[i]];
                file.write_all(format!("{i}\n").as_bytes()).context("granting a step")?;
            }
        }
        Ok(())
    }

    /// The schedule so far, as `--schedule` takes it: `0,0,1,1,0`.
    pub fn schedule(&self) -> String {
        join_schedule(self.granted.iter().map(|(i, _)| *i))
    }

    /// One lane per worker, one column per granted step: the step's short name where that
    /// worker made it.
    pub fn timeline(&self) -> String {
        let width = self.granted.iter().map(|(_, s)| s.chars().count()).max().unwrap_or(1) + 1;
        let name_width = self.workers.iter().map(|w| columns(&w.name)).max().unwrap_or(0).max(4);
        let pad = |name: &str| format!("{name}{}  ", " ".repeat(name_width - columns(name)));
        let mut out = pad("step");
        for k in 1..=self.granted.len() {
            out.push_str(&format!("{:<width$}", k));
        }
        for (i, w) in self.workers.iter().enumerate() {
            out.push('\n');
            out.push_str(&pad(&w.name));
            for (j, step) in &self.granted {
                let cell = if *j == i { step.as_str() } else { "·" };
                out.push_str(&format!("{cell:<width$}"));
            }
        }
        out
    }
}

/// How a stepped run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every worker is done.
    Finished,
    /// Workers are left and every one of them is blocked in the kernel.
    Deadlock,
}

/// Runs the workers step by step: settle, then (at a terminal) `show` the state, then let
/// `chooser` pick the worker to grant, until every worker is done or they deadlock. `quiet`
/// prints nothing per step; otherwise each grant is a `step` event (unless a terminal is
/// asking: the learner saw the state). A bad schedule is bad input (exit 2) naming its position.
pub fn drive(
    ctl: &mut Controller,
    chooser: &mut Chooser,
    quiet: bool,
    mut probe: impl FnMut(&Controller, usize) -> Probe,
    mut show: impl FnMut(&Controller),
) -> Result<Ending> {
    let asking = matches!(chooser, Chooser::Ask);
    loop {
        ctl.settle(&mut probe)?;
        let position = ctl.granted.len() + 1;
        let ended = if ctl.finished() {
            Some(Ending::Finished)
        } else if ctl.deadlocked() {
            Some(Ending::Deadlock)
        } else {
            None
        };
        if let Some(ended) = ended {
            chooser.check_used_up(position - 1, ended).map_err(refused)?;
            return Ok(ended);
        }
        if asking {
            show(ctl);
        }
        let i = chooser.next(ctl, position).map_err(refused)?;
        if !quiet && !asking {
            let step = match &ctl.workers[i].state {
                State::At(step) => step.clone(),
                _ => String::new(),
            };
            let name = &ctl.workers[i].name;
            crate::event!("step", { "position": position, "worker": i, "step": step },
                          "step {position}: {name} {step}");
        }
        ctl.grant(i)?;
    }
}

fn refused(refusal: Refusal) -> anyhow::Error {
    match refusal {
        Refusal::BadSchedule(message) => crate::demo::bad_input(message),
        Refusal::Quit => anyhow::anyhow!("no worker was chosen (end of input): stopped"),
    }
}

/// The chooser a demo's flags ask for: `--schedule` (checked here for unknown workers), the
/// learner at a terminal, or, without one, a random schedule from `--seed` (or a seed drawn
/// now), said at once so the run can be replayed.
pub fn chooser_for(schedule: Option<&str>, seed: Option<u64>, workers: usize) -> Result<Chooser> {
    if let Some(text) = schedule {
        return parse_schedule(text, workers)
            .map(Chooser::Schedule)
            .map_err(crate::demo::bad_input);
    }
    if seed.is_none() && std::io::stdin().is_terminal() && !crate::report::json_mode() {
        return Ok(Chooser::Ask);
    }
    let seed = seed.unwrap_or_else(|| crate::report::monotonic_ns() % 1_000_000);
    crate::event!("seed", { "seed": seed },
                  "no terminal to ask: a random schedule from --seed {seed} (the schedule is printed at the end)");
    Ok(Chooser::seeded(seed))
}

/// Each worker's line: its number, name, private state, where it is, and the source line
/// its next step runs (from the guide's table).
pub fn lanes(ctl: &Controller, table: &[(String, String, String)]) -> String {
    let width = ctl.workers.iter().map(|w| columns(&w.name)).max().unwrap_or(0);
    let states: Vec<String> = ctl.workers.iter().map(|w| describe(&w.state)).collect();
    // Only the workers at a step have a source line to line up.
    let state_width = (ctl.workers.iter().zip(&states))
        .filter(|(w, _)| matches!(w.state, State::At(_)))
        .map(|(_, s)| s.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, (w, state)) in ctl.workers.iter().zip(&states).enumerate() {
        let line = match &w.state {
            State::At(step) => source_of(table, step, &w.name)
                .map_or(String::new(), |(_, at, call)| format!("   {at}  {call}")),
            _ => String::new(),
        };
        let note = if w.note.is_empty() { "-" } else { &w.note };
        let pad = " ".repeat(width - columns(&w.name));
        let line = format!("  {i} {}{pad}  {note:<16} {state:<state_width$}{line}", w.name);
        out.push('\n');
        out.push_str(line.trim_end());
    }
    out
}

/// Indents every line by two spaces.
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// The columns a name takes at a terminal: two for each CJK character (路人0 takes five).
pub fn columns(text: &str) -> usize {
    text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// `[0, 1, 1]` as `0,1,1`.
pub fn join_schedule(steps: impl IntoIterator<Item = usize>) -> String {
    steps.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Parses `--schedule 0,0,1,...` (worker numbers from 0, one per step); `workers` is how many
/// there are, so an unknown worker is refused here, naming its position.
pub fn parse_schedule(text: &str, workers: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for (k, part) in text.split(',').enumerate() {
        let part = part.trim();
        match part.parse::<usize>() {
            Ok(i) if i < workers => out.push(i),
            Ok(i) => {
                return Err(format!(
                    "--schedule position {}: worker {i} is unknown (workers are 0..{})",
                    k + 1,
                    workers - 1
                ));
            }
            Err(_) => {
                return Err(format!(
                    "--schedule position {}: {part:?} is not a worker number (0..{})",
                    k + 1,
                    workers - 1
                ));
            }
        }
    }
    Ok(out)
}

/// Who chooses the next step.
#[derive(Debug)]
pub enum Chooser {
    /// The learner at a terminal.
    Ask,
    /// A given schedule, in order.
    Schedule(Vec<usize>),
    /// A random choice among the choosable workers, from this seed.
    Random(fastrand::Rng),
}

/// Why the next step cannot be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A bad `--schedule` (its message names the position): exit 2.
    BadSchedule(String),
    /// The learner ended input.
    Quit,
}

impl Chooser {
    /// A random choice among the choosable workers, the same for the same seed.
    pub fn seeded(seed: u64) -> Chooser {
        Chooser::Random(fastrand::Rng::with_seed(seed))
    }

    /// The next worker to grant, or why there is none. `position` counts the grants from 1.
    pub fn next(&mut self, ctl: &Controller, position: usize) -> Result<usize, Refusal> {
        let choosable = ctl.choosable();
        match self {
            Chooser::Schedule(list) => {
                let Some(&i) = list.get(position - 1) else {
                    let left: Vec<&str> = ctl
                        .workers
                        .iter()
                        .filter(|w| w.state != State::Done)
                        .map(|w| w.name.as_str())
                        .collect();
                    return Err(Refusal::BadSchedule(format!(
                        "--schedule has too few steps: it ends after position {}, with steps \
                         left for {}",
                        position - 1,
                        left.join(", ")
                    )));
                };
                if choosable.contains(&i) {
                    return Ok(i);
                }
                let w = &ctl.workers[i];
                let why = match &w.state {
                    State::Done => "is done".to_owned(),
                    State::Blocked(step, why) => format!("is blocked in `{step}` ({why})"),
                    _ => "cannot go on".to_owned(),
                };
                Err(Refusal::BadSchedule(format!(
                    "--schedule position {position}: worker {i} ({}) {why}; choosable: {}",
                    w.name,
                    names(ctl, &choosable)
                )))
            }
            Chooser::Random(rng) => {
                if choosable.is_empty() {
                    return Err(Refusal::Quit);
                }
                Ok(choosable[rng.usize(..choosable.len())])
            }
            Chooser::Ask => ask(ctl, &choosable),
        }
    }

    /// After the last step (`ended`: every worker done, or deadlocked): a schedule with steps
    /// left over is refused, naming the position.
    pub fn check_used_up(&self, used: usize, ended: Ending) -> Result<(), Refusal> {
        let how = match ended {
            Ending::Finished => "every worker is done",
            Ending::Deadlock => "the workers are deadlocked (none can go on)",
        };
        match self {
            Chooser::Schedule(list) if list.len() > used => Err(Refusal::BadSchedule(format!(
                "--schedule has too many steps: {how} after position {used}, and it goes on to \
                 position {}",
                list.len()
            ))),
            _ => Ok(()),
        }
    }
}

fn names(ctl: &Controller, which: &[usize]) -> String {
    if which.is_empty() {
        return "none".to_owned();
    }
    which.iter().map(|&i| format!("{i} ({})", ctl.workers[i].name)).collect::<Vec<_>>().join(", ")
}

/// Asks at the terminal which worker goes next, until the reply is a choosable worker.
fn ask(ctl: &Controller, choosable: &[usize]) -> Result<usize, Refusal> {
    let mut stdin = std::io::stdin().lock();
    loop {
        crate::report::plain(format!(
            "who goes next? {} > ",
            join_schedule(choosable.iter().copied())
        ));
        let mut line = String::new();
        let mut byte = [0u8; 1];
        // Byte by byte: nothing the learner types after the answer is read ahead and lost.
        loop {
            match stdin.read(&mut byte) {
                Ok(0) => return Err(Refusal::Quit),
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0] as char),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Refusal::Quit),
            }
        }
        if line.trim().is_empty() && choosable.len() == 1 {
            return Ok(choosable[0]); // Enter: the only one that can go
        }
        match line.trim().parse::<usize>() {
            Ok(i) if choosable.contains(&i) => return Ok(i),
            Ok(i) if i < ctl.workers.len() => crate::report::plain(format!(
                "  {} cannot go now ({}); choose one of {}",
                ctl.workers[i].name,
                describe(&ctl.workers[i].state),
                names(ctl, choosable)
            )),
            _ => crate::report::plain(format!("  type a worker number: {}", names(ctl, choosable))),
        }
    }
}

/// "next: read", "blocked in lock (S, flock_lock_inode_wait)", "done".
pub fn describe(state: &State) -> String {
    match state {
        State::Starting => "starting".to_owned(),
        State::At(step) => format!("next: {step}"),
        State::Running(step) => format!("running {step}"),
        State::Blocked(step, why) => format!("BLOCKED in {step}: {why}"),
        State::Done => "done".to_owned(),
    }
}

/// The source line of each step, from a guide's `## Where the mechanism is` table: rows
/// `| step | `src/file.rs:LINE` | `call` |`, keyed by the step's name (the first column's
/// first word or words up to a colon or parenthesis).
pub fn where_table(guide: &str) -> Vec<(String, String, String)> {
    let Some(start) = guide.find("## Where the mechanism is") else { return Vec::new() };
    let mut rows = Vec::new();
    for line in guide[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() == 3 && cells[1].starts_with('`') {
            let code = |c: &str| c.trim_matches('`').to_owned();
            rows.push((cells[0].to_owned(), code(cells[1]), code(cells[2])));
        }
    }
    rows
}

/// The row of `table` for `worker`'s step `step`: the first whose first column names the step
/// in backquotes for this worker (`` `lock A` by scientist-2 ``), or for every worker (a row
/// that starts with `` `read` `` and names nobody after it).
pub fn source_of<'a>(
    table: &'a [(String, String, String)],
    step: &str,
    worker: &str,
) -> Option<&'a (String, String, String)> {
    let key = format!("`{step}`");
    let mine = format!("{key} by {worker}");
    table.iter().find(|(what, _, _)| what.contains(&mine)).or_else(|| {
        table.iter().find(|(what, _, _)| {
            what.starts_with(&key) && !what[key.len()..].trim_start().starts_with("by ")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_names_the_position_of_an_unknown_worker() {
        assert_eq!(parse_schedule("0, 1,0", 2), Ok(vec![0, 1, 0]));
        let error = parse_schedule("0,1,2", 2).unwrap_err();
        assert!(error.contains("position 3") && error.contains("worker 2"), "{error}");
        let error = parse_schedule("0,x", 2).unwrap_err();
        assert!(error.contains("position 2") && error.contains("\"x\""), "{error}");
    }

    #[test]
    fn a_step_finds_its_row_for_its_worker_or_for_everyone() {
        let guide = "# g\n\n## Where the mechanism is\n\n| step | where | call |\n|---|---|---|\n\
                     | `lock A` by s-1, `lock B` by s-2 | `src/a.rs:3` | `first()` |\n\
                     | `lock B` by s-1, `lock A` by s-2 | `src/a.rs:5` | `second()` |\n\
                     | `read`: the count | `src/b.rs:9` | `read()` |\n\n## Next\n| x | `src/c.rs:1` | `c` |\n";
        let table = where_table(guide);
        assert_eq!(table.len(), 3, "{table:?}");
        assert_eq!(source_of(&table, "lock A", "s-1").unwrap().2, "first()");
        assert_eq!(source_of(&table, "lock A", "s-2").unwrap().2, "second()");
        assert_eq!(source_of(&table, "read", "anyone").unwrap().1, "src/b.rs:9");
        assert!(source_of(&table, "write", "anyone").is_none());
    }

    /// The one test of this process that installs the stepper: two threads, three marks each,
    /// granted in a chosen order; each mark runs only once granted.
    #[test]
    fn threads_make_their_steps_in_the_granted_order_only() {
        let order = Mutex::new(Vec::new());
        let mut ctl = Controller::local(vec!["a".into(), "b".into()]).unwrap();
        let mut chooser = Chooser::Schedule(vec![1, 0, 0, 1, 1, 0]);
        let ending = std::thread::scope(|s| {
            for i in 0..2 {
                let order = &order;
                s.spawn(move || {
                    worker(i);
                    for step in ["one", "two", "three"] {
                        phase::step(step);
                        order.lock().unwrap().push(format!("{i}{step}"));
                    }
                    done();
                });
            }
            let ending = drive(&mut ctl, &mut chooser, true, |_, _| Probe::Going, |_| {});
            ctl.release();
            ending
        });
        assert_eq!(ending.unwrap(), Ending::Finished);
        assert_eq!(ctl.schedule(), "1,0,0,1,1,0");
        let order = order.into_inner().unwrap();
        assert_eq!(order, ["1one", "0one", "0two", "1two", "1three", "0three"]);
        assert!(
            ctl.timeline().lines().nth(1).unwrap().starts_with("a     ·"),
            "{}",
            ctl.timeline()
        );
    }
}
