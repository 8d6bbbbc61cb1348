//! The controller's side: it lets every worker settle, then grants one step at a time.

use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::ensure;

use super::*;

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

/// One worker: its name in the demo, where it is, its private state, and its thread's kernel
/// id (from its first report; 0 before).
#[derive(Debug, Clone)]
pub struct Worker {
    pub name: String,
    pub state: State,
    pub note: String,
    pub tid: i32,
}

/// How long a granted step may take to reach the next mark, end, or block, before the
/// controller gives up: far more than any step needs, so a loaded machine never trips it.
const STEP_PATIENCE: Duration = Duration::from_secs(20);

/// The controller: the workers' states and the schedule granted so far.
#[derive(Debug)]
pub struct Controller {
    pub workers: Vec<Worker>,
    /// Every grant so far: the worker and the step it made.
    pub granted: Vec<(usize, String)>,
    /// The kernel's choices: after grant number k (from 1), this blocked worker could go on.
    pub woke: Vec<(usize, usize)>,
    reports: Receiver<Report>,
    link: Link,
}

/// How the controller grants a step.
#[derive(Debug)]
enum Link {
    Local(&'static Side),
    Pipes {
        grants: Vec<File>,
        slot_of: Vec<usize>,
        dir: Option<PipeDir>,
        /// The controller's own end of the `ready` pipe, and the thread that reads it (see drop).
        ready_end: File,
        reader: Option<JoinHandle<()>>,
    },
}

/// The folder of a controller's named pipes (`ready`, `grant.0..slots`), made before its child
/// processes start, removed on drop.
#[derive(Debug)]
pub struct PipeDir {
    dir: tempfile::TempDir,
    slots: usize,
}

impl PipeDir {
    /// Makes the pipes in a new private folder under `parent`.
    pub fn new(parent: &Path, slots: usize) -> Result<PipeDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("steps-{}-", std::process::id()))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .with_context(|| format!("creating the pipes' folder in {}", parent.display()))?;
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&dir.path().join("ready"), mode).context("mkfifo ready")?;
        for slot in 0..slots {
            nix::unistd::mkfifo(&grant_path(dir.path(), slot), mode).context("mkfifo grant")?;
        }
        Ok(PipeDir { dir, slots })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Controller {
    /// Ends the thread that reads the reports (the pipe never reads as ended while `ready_end` is
    /// open: a line that is not a report stops it), and joins it: std takes a process-wide lock
    /// as a thread starts and ends (its table of stack guards), and a child forked while a
    /// thread is still ending inherits that lock held for ever, so the threads it starts hang.
    fn drop(&mut self) {
        if let Link::Pipes { ready_end, reader, .. } = &mut self.link {
            let _ = ready_end.write_all(b"end\n");
            if let Some(reader) = reader.take() {
                let _ = reader.join();
            }
        }
    }
}

impl Controller {
    /// A controller of `names.len()` worker threads of this process. Each worker thread calls
    /// [`worker`] with its number before its first mark.
    pub fn local(names: Vec<String>) -> Result<Controller> {
        let (tx, reports) = channel();
        let side = Side::install(Out::Local(tx))?;
        Ok(Controller::with(names, reports, Link::Local(side)))
    }

    /// A controller of workers in child processes that [`join`] through `pipes`; `slot_of[i]`
    /// is the process slot of worker `i`. Call it once the children are started (so that none
    /// of them inherits the controller's ends of the pipes).
    pub fn pipes(pipes: PipeDir, names: Vec<String>, slot_of: Vec<usize>) -> Result<Controller> {
        // Read and write: the open never waits for the other side, and the pipe never reads as
        // ended while this process holds it.
        let mut rw = OpenOptions::new();
        rw.read(true).write(true);
        let ready = open_pipe(&pipes.path().join("ready"), &rw)?;
        let ready_end = ready.try_clone().context("duplicating the ready pipe")?;
        let grants = (0..pipes.slots)
            .map(|s| open_pipe(&grant_path(pipes.path(), s), &rw))
            .collect::<Result<_>>()?;
        let (tx, reports) = channel();
        let reader = crate::threads::named::spawn("step reports", move || {
            // Until end of file, a line that is not a report (the controller's own "end"), or a
            // controller that no longer listens.
            let lines = BufReader::new(ready).lines().map_while(Result::ok);
            let mut reports = lines.map_while(|line| serde_json::from_str::<Report>(&line).ok());
            _ = reports.try_for_each(|report| tx.send(report));
        })?;
        let dir = Some(pipes);
        let link = Link::Pipes { grants, slot_of, dir, ready_end, reader: Some(reader) };
        Ok(Controller::with(names, reports, link))
    }

    fn with(names: Vec<String>, reports: Receiver<Report>, link: Link) -> Controller {
        let workers = names
            .into_iter()
            .map(|name| Worker { name, state: State::Starting, note: String::new(), tid: 0 })
            .collect();
        Controller { workers, granted: Vec::new(), woke: Vec::new(), reports, link }
    }

    /// Applies the next report, if one comes within `timeout`.
    fn receive(&mut self, timeout: Duration) -> bool {
        let Ok(report) = self.reports.recv_timeout(timeout) else { return false };
        if let Some(w) = self.workers.get_mut(report.worker) {
            w.note = report.note;
            w.tid = report.tid;
            w.state = report.step.map_or(State::Done, State::At);
        }
        true
    }

    /// Waits until every worker is at a step, done, or blocked in the kernel (as `probe` sees
    /// it from `/proc`); a blocked worker that the last step let go (an unlock wakes a flock
    /// waiter) is watched until it reports or blocks again. Fails if a worker's process ends
    /// without saying so, or if nothing settles within `STEP_PATIENCE` (20 s).
    pub fn settle(&mut self, mut probe: impl FnMut(&Controller, usize) -> Probe) -> Result<()> {
        let blocked: Vec<bool> =
            self.workers.iter().map(|w| matches!(w.state, State::Blocked(..))).collect();
        let deadline = Instant::now() + STEP_PATIENCE;
        while !self.settled(&mut probe)? {
            if Instant::now() >= deadline {
                let stuck = (self.workers.iter())
                    .filter_map(|w| match &w.state {
                        State::Running(step) => Some(format!("{} (granted {step:?})", w.name)),
                        State::Starting => Some(format!("{} (not yet at its first step)", w.name)),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                bail!("{stuck} neither reached the next step nor blocked within {STEP_PATIENCE:?}");
            }
            self.receive(Duration::from_millis(1));
        }
        for (i, was) in blocked.into_iter().enumerate() {
            if was && !matches!(self.workers[i].state, State::Blocked(..)) {
                self.woke.push((self.granted.len(), i));
            }
        }
        // Every worker has opened its pipes: the folder can go (nothing left after a Ctrl-C).
        if let Link::Pipes { dir, .. } = &mut self.link {
            dir.take();
        }
        Ok(())
    }

    /// One look at every worker, once the reports that came are applied: true when none is on
    /// its way.
    fn settled(&mut self, probe: &mut impl FnMut(&Controller, usize) -> Probe) -> Result<bool> {
        while self.receive(Duration::ZERO) {}
        let mut settled = !self.workers.iter().any(|w| w.state == State::Starting);
        for i in 0..self.workers.len() {
            let State::Running(step) = self.workers[i].state.clone() else { continue };
            match probe(self, i) {
                Probe::Going => settled = false,
                Probe::Blocked(why) => self.workers[i].state = State::Blocked(step, why),
                Probe::Gone => self.gone(i)?,
            }
        }
        if !settled {
            return Ok(false);
        }
        // Everyone else is still: did the kernel let a blocked worker go meanwhile?
        for i in 0..self.workers.len() {
            let State::Blocked(step, _) = self.workers[i].state.clone() else { continue };
            match probe(self, i) {
                Probe::Blocked(_) => {}
                Probe::Going => {
                    self.workers[i].state = State::Running(step);
                    settled = false;
                }
                Probe::Gone => self.gone(i)?,
            }
        }
        Ok(settled)
    }

    /// Worker `i`'s process ended: fine if it said it was done (perhaps just now), else an error.
    fn gone(&mut self, i: usize) -> Result<()> {
        // Its last report may still be on its way from the pipe.
        let deadline = Instant::now() + Duration::from_secs(2);
        let said = |ctl: &Controller| matches!(ctl.workers[i].state, State::Done | State::At(_));
        while !said(self) && Instant::now() < deadline {
            self.receive(Duration::from_millis(10));
        }
        ensure!(said(self), "{} ended in the middle of a step", self.workers[i].name);
        Ok(())
    }

    /// Lets every worker of this process run free from now on: after a bad schedule or a
    /// refusal, so that its threads end. (Workers in child processes are ended by the demo.)
    pub fn release(&self) {
        if let Link::Local(side) = &self.link {
            side.release();
        }
    }

    /// The workers that can be granted a step now.
    pub fn choosable(&self) -> Vec<usize> {
        (0..self.workers.len()).filter(|&i| matches!(self.workers[i].state, State::At(_))).collect()
    }

    /// Grants worker `i` its next step (it must be choosable).
    pub fn grant(&mut self, i: usize) -> Result<()> {
        let State::At(step) = self.workers[i].state.clone() else {
            bail!("{} is not waiting at a step", self.workers[i].name);
        };
        self.workers[i].state = State::Running(step.clone());
        self.granted.push((i, step));
        match &mut self.link {
            Link::Local(side) => side.grant(i),
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
}
