//! The controller's side: it waits until every worker is at its next step, done, or blocked in
//! the kernel, and grants one step at a time.

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
    Pipes {
        ready: Receiver<Report>,
        /// The controller's own end of the `ready` pipe, to end the reading thread when done.
        ready_end: File,
        /// The reading thread, joined when the controller goes.
        reader: Option<std::thread::JoinHandle<()>>,
        grants: Vec<File>,
        slot_of: Vec<usize>,
    },
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

impl Drop for Controller {
    /// Ends the thread that reads the workers' reports: a line that is not a report stops it
    /// (the workers are gone, and its own descriptor keeps the pipe from ever reading as ended).
    /// It is joined before the controller is gone: std takes one lock of the whole process as
    /// a thread starts and as it ends (its stack-overflow handler's table of threads), so a
    /// thread still ending while the demo forks its next children can hold it at the moment of
    /// `fork()`. A child inherits it held, by a thread that does not exist there, for ever: the
    /// threads the child starts then hang.
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
        let ready_end = ready.try_clone().context("duplicating the ready pipe")?;
        let grants =
            (0..pipes.slots).map(|s| open(grant_path(&pipes.dir, s))).collect::<Result<_>>()?;
        let (tx, rx) = channel();
        let reader = crate::threads::named::spawn("step reports", move || {
            // Until end of file, a line that is not a report (the controller's own "end"), or a
            // controller that no longer listens.
            for line in BufReader::new(ready).lines() {
                let Some(report) = line.ok().and_then(|l| serde_json::from_str::<Report>(&l).ok())
                else {
                    break;
                };
                if tx.send(report).is_err() {
                    break;
                }
            }
        })?;
        let link = Link::Pipes { ready: rx, ready_end, reader: Some(reader), grants, slot_of };
        let mut ctl = Controller::with(link, names);
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
                let stuck: Vec<String> = self
                    .workers
                    .iter()
                    .filter(|w| matches!(w.state, State::Starting | State::Running(_)))
                    .map(|w| match &w.state {
                        State::Running(step) => format!("{} (granted {step:?})", w.name),
                        _ => format!("{} (not yet at its first step)", w.name),
                    })
                    .collect();
                bail!(
                    "{} neither reached the next step nor blocked within {STEP_PATIENCE:?}",
                    stuck.join(", ")
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
        out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
    }
}
