//! workers — the pool's workers as the parent sees them: giving waiting tasks to them (each
//! through its own inbox), starting one, and stopping them all.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::result::lock;
use super::state::{Handle, Phase, Shared, State, Worker, Workers};
use super::worker::{FromWorker, ToWorker, WorkerArgs, frame, work};
use super::{MAX_MESSAGE, PoolError};
use crate::queue::{Queue, QueueError};
use crate::shm::Wait;
use common::process::{Process, StartMethod};
use common::{report, signals};

impl Shared {
    /// Gives waiting tasks to workers: to an idle worker, the one idle the longest (and to a
    /// busy one in advance only as `pool/prefetch.rs` says).
    pub(super) fn dispatch(&self, st: &mut State) {
        if st.phase == Phase::Terminated || st.broken.is_some() {
            return;
        }
        let max = self.options.maxtasksperchild;
        let mut full: Vec<u32> = Vec::new();
        while !st.backlog.is_empty() {
            let usable = |w: &Worker| {
                !w.stopping
                    && !w.faulty
                    && max.is_none_or(|m| w.given < m)
                    && !full.contains(&w.number)
            };
            let idle = st
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| usable(w) && w.outstanding.is_empty())
                .min_by_key(|(_, w)| w.last_given)
                .map(|(i, _)| i);
            let Some(i) = idle.or_else(|| st.prefetch_to(&usable)) else { break };
            let Some(pending) = st.backlog.pop_front() else { break };
            let worker = &mut st.workers[i];
            match worker.inbox.put_encoded(&pending.frame, Wait::Now) {
                Ok(()) => {
                    worker.outstanding.push_back(pending.id);
                    worker.given += 1;
                    st.given += 1;
                    worker.last_given = st.given;
                    if let Some(job) = st.jobs.get(&pending.id) {
                        job.slot.pid.store(worker.pid, Ordering::SeqCst);
                    }
                }
                Err(QueueError::Full) => {
                    full.push(worker.number);
                    st.backlog.push_front(pending);
                }
                Err(QueueError::TooLarge { size, max }) => {
                    // The failure waits in `st.finished`, for its callbacks to run in the result
                    // thread like every other's (this thread holds the lock: it must not run them).
                    let task = st.jobs.get(&pending.id).map_or("?", |j| j.slot.task);
                    let error = PoolError::Invalid(format!(
                        "the arguments of task {task} are {size} bytes, more than the limit of {max}"
                    ));
                    self.finish_job(pending.id, Err(error), st);
                }
                Err(_) => {
                    // Its inbox is closed or broken: the worker is dying; its exit is handled
                    // when the result thread sees it.
                    worker.faulty = true;
                    st.backlog.push_front(pending);
                }
            }
        }
    }

    /// Starts one worker. A `replacement` (of a worker that died or retired) of a fork pool is
    /// started by the fork server, not forked from this process, which has threads by then
    /// (see the module documentation).
    pub(super) fn start_worker(
        self: &Arc<Self>,
        st: &mut State,
        replacement: bool,
    ) -> Result<(), PoolError> {
        st.started += 1;
        let number = st.started;
        let name = format!("{}-{number}", self.options.name);
        let inbox: Queue<ToWorker> = Queue::with_max_message(0, MAX_MESSAGE)
            .map_err(|e| PoolError::Start(format!("making the inbox of {name}: {e}")))?;
        let args = WorkerArgs {
            number,
            inbox: inbox.clone(),
            results: self.results.clone(),
            initializer: self.options.initializer.as_ref().map(|(t, a)| (t.name.into(), a.clone())),
            maxtasksperchild: self.options.maxtasksperchild,
        };
        let (pid, handle) = match self.workers {
            Workers::Processes(role) => {
                // A spawned or fork-server worker gets the queues' descriptors (and finds their
                // numbers in its arguments); a forked one has them already.
                let mut fds = inbox.fds();
                fds.extend(self.results.fds());
                let method = match self.options.start_method {
                    StartMethod::Fork if replacement => StartMethod::Forkserver,
                    other => other,
                };
                let mut process =
                    Process::new(&name, role, &args).start_method(method).pass_fds(&fds);
                process.start().map_err(|e| PoolError::Start(format!("{name}: {e:#}")))?;
                let pid = process.pid().unwrap_or(0);
                // Its watcher: a small thread that tells the result thread when the worker has
                // ended, through the results queue, so that the news comes after every result
                // the worker sent.
                let results = self.results.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-watch"))
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        common::process::wait_until_ended(pid);
                        let exited = frame(&FromWorker::Exited { w: number }, &[]);
                        let _ = results.put_encoded(&exited, Wait::Forever);
                    })
                    .map_err(|e| PoolError::Start(format!("a thread to watch {name}: {e}")))?;
                (pid, Handle::Process(process))
            }
            Workers::Threads => {
                let shared = self.clone();
                let who = name.clone();
                let thread = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        let find = |n: &str| lock(&shared.known).get(n).copied();
                        if let Err(e) = work(&args, &find, Some(&shared.terminated)) {
                            report::write_stderr(&format!("{who}: error: {e:#}"));
                        }
                        let exited = frame(&FromWorker::Exited { w: number }, &[]);
                        let _ = args.results.put_encoded(&exited, Wait::Forever);
                    })
                    .map_err(|e| PoolError::Start(format!("{name}: {e}")))?;
                (std::process::id() as i32, Handle::Thread(thread))
            }
        };
        st.workers.push(Worker {
            number,
            name,
            pid,
            handle,
            inbox,
            outstanding: VecDeque::new(),
            given: 0,
            last_given: 0,
            stopping: false,
            faulty: false,
        });
        Ok(())
    }

    /// Fails every job not yet over with `error` (of its task) and tells every worker to end now:
    /// SIGTERM to a process (SIGKILL after [`signals::GRACE`]), `Stop` to a thread. For
    /// `terminate`, and for a pool that broke.
    pub(super) fn stop_now(&self, st: &mut State, error: impl Fn(&'static str) -> PoolError) {
        st.backlog.clear();
        let mut ids: Vec<u64> = st.jobs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let task = st.jobs[&id].slot.task;
            self.finish_job(id, Err(error(task)), st);
        }
        for w in &mut st.workers {
            w.outstanding.clear();
            w.stopping = true;
            match &w.handle {
                Handle::Process(process) => {
                    let _ = process.terminate();
                }
                Handle::Thread(_) => {
                    let _ = w.send_stop();
                }
            }
        }
        st.grace_ends.get_or_insert(Instant::now() + signals::GRACE);
    }
}
