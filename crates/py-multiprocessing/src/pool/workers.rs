//! workers — the pool's workers as the result thread sees them: giving waiting tasks to them
//! (each through its own inbox), starting one, stopping them, and what happens when one ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;

use super::result::{Completion, lock};
use super::state::{Handle, Job, Pending, Phase, Shared, Sink, State, Worker, Workers};
use super::worker::{FromWorker, ToWorker, WorkerArgs, frame, unframe, work};
use super::{MAX_MESSAGE, PoolError, died_how};
use crate::queue::{Queue, QueueError};
use crate::shm::Wait;
use common::process::{Process, StartMethod, exitcode_name};
use common::{report, signals};

impl Shared {
    /// Gives waiting tasks to workers: to an idle worker, the one idle the longest (and to a
    /// busy one in advance only as `pool/prefetch.rs` says).
    pub(super) fn dispatch(&self, st: &mut State) {
        if st.phase == Phase::Terminated || st.broken.is_some() {
            return;
        }
        let max = self.maxtasksperchild;
        let mut full: Vec<u32> = Vec::new();
        while !st.backlog.is_empty() {
            let usable = |w: &Worker| w.can_take(max) && !full.contains(&w.number);
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
                    let pid = worker.pid;
                    if let Some(Job { sink: Sink::One { slot, .. }, .. }) = st.jobs.get(&pending.id)
                    {
                        slot.pid.store(pid, Ordering::SeqCst);
                    }
                }
                Err(QueueError::Full) => {
                    full.push(worker.number);
                    st.backlog.push_front(pending);
                }
                Err(QueueError::TooLarge { size, max }) => {
                    // Its callbacks must run in the handler thread, like every other's: the
                    // failure waits in `deferred`, and whoever called `dispatch` wakes the
                    // handler (this thread holds the state lock: it must not block on a put).
                    let task = st.jobs.get(&pending.id).map_or("?", |j| j.task);
                    let chunk = matches!(
                        st.jobs.get(&pending.id),
                        Some(Job { sink: Sink::Chunk { .. }, .. })
                    );
                    let error = PoolError::Invalid(format!(
                        "the arguments of task {task} are {size} bytes, more than the limit of \
                         {max}{}",
                        if chunk { " (give map a smaller chunksize)" } else { "" }
                    ));
                    if let Some(completion) = self.finish_job(pending.id, Err(error), st) {
                        st.deferred.push(completion);
                    }
                }
                Err(_) => {
                    // Its inbox is closed or broken: the worker is dying; its exit is handled
                    // when the handler sees it.
                    worker.faulty = true;
                    st.backlog.push_front(pending);
                }
            }
        }
    }

    /// Starts one worker; returns its index in `st.workers`.
    /// A `replacement` (of a worker that died or retired) of a fork pool is started by the fork
    /// server, not forked from this process, which has threads by then (see the module docs).
    pub(super) fn start_worker(
        self: &Arc<Self>,
        st: &mut State,
        replacement: bool,
    ) -> Result<usize, PoolError> {
        let number = st.next_number;
        st.next_number += 1;
        let name = format!("{}-{number}", self.name);
        let inbox: Queue<ToWorker> = Queue::with_max_message(0, MAX_MESSAGE)
            .map_err(|e| PoolError::Start(format!("making the inbox of {name}: {e}")))?;
        let args = WorkerArgs {
            number,
            inbox: inbox.clone(),
            results: self.results.clone(),
            initializer: self.initializer.clone(),
            maxtasksperchild: self.maxtasksperchild,
        };
        let (pid, handle) = match &self.workers {
            Workers::Processes { role, method } => {
                // A spawned or fork-server worker gets the queues' descriptors (and finds their
                // numbers in its arguments); a forked one has them already.
                let mut fds = inbox.fds();
                fds.extend(self.results.fds());
                let method = match method {
                    StartMethod::Fork if replacement => StartMethod::Forkserver,
                    other => *other,
                };
                let mut process =
                    Process::new(&name, role, &args).start_method(method).pass_fds(&fds);
                process.start().map_err(|e| PoolError::Start(format!("{name}: {e:#}")))?;
                let pid = process.pid().unwrap_or(0);
                // Its watcher: a small thread that tells the handler when the worker has ended,
                // through the results queue, so that the news comes after every result the
                // worker sent.
                let results = self.results.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-watch"))
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        common::process::wait_until_ended(pid);
                        let _ = results.put_encoded(
                            &frame(&FromWorker::Exited { w: number }, &[]),
                            Wait::Forever,
                        );
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
                        let exited = FromWorker::Exited { w: args.number };
                        let _ = args.results.put_encoded(&frame(&exited, &[]), Wait::Forever);
                    })
                    .map_err(|e| PoolError::Start(format!("{name}: {e}")))?;
                (std::process::id() as i32, Handle::Thread(Some(thread)))
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
        Ok(st.workers.len() - 1)
    }

    /// Asks every worker to end now: SIGTERM to a process; a thread gets `Stop`.
    pub(super) fn stop_all(&self, st: &mut State) {
        for w in &mut st.workers {
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
        if st.terminating_since.is_none() {
            st.terminating_since = Some(Instant::now());
        }
    }

    /// Worker `i` has ended: reap it, hand on the tasks it had not started, fail the one it was
    /// running, and start a replacement if the pool still needs one.
    pub(super) fn on_exit(self: &Arc<Self>, i: usize, st: &mut State, out: &mut Vec<Completion>) {
        let mut worker = st.workers.remove(i);
        let exitcode = match &mut worker.handle {
            Handle::Process(process) => process.join().ok().flatten(),
            Handle::Thread(thread) => {
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
                Some(0)
            }
        };
        // The tasks still in its inbox were never started: they go back to the front of the
        // backlog, in their order. Nobody else reads that inbox, so what is in it is exact.
        let mut back: Vec<Pending> = Vec::new();
        while let Ok(frame) = worker.inbox.get_encoded(Wait::Now) {
            match unframe::<ToWorker>(&frame) {
                Ok((ToWorker::Run { id, .. } | ToWorker::Chunk { id, .. }, _)) => {
                    back.push(Pending { id, frame })
                }
                Ok((ToWorker::Stop, _)) => {}
                Err(_) => break,
            }
        }
        let mut lost: Option<(&'static str, u64)> = None;
        for id in std::mem::take(&mut worker.outstanding) {
            if back.iter().any(|p| p.id == id) {
                continue;
            }
            let Some(task) = st.jobs.get(&id).map(|j| j.task) else { continue };
            lost.get_or_insert((task, id));
            let error = PoolError::WorkerDied {
                task: task.into(),
                job: id,
                worker: worker.name.clone(),
                pid: worker.pid,
                exitcode,
            };
            out.extend(self.finish_job(id, Err(error), st));
        }
        for pending in back.into_iter().rev() {
            st.backlog.push_front(pending);
        }
        let stopping = signals::stopping();
        let expected = worker.stopping || (lost.is_none() && exitcode == Some(0));
        let needed = st.broken.is_none()
            && !stopping
            && match st.phase {
                Phase::Running => true,
                Phase::Closed => !st.backlog.is_empty(),
                Phase::Terminated => false,
            };
        let replacement = if needed {
            match self.start_worker(st, true) {
                Ok(j) => Some((st.workers[j].name.clone(), st.workers[j].pid)),
                Err(e) => {
                    self.break_pool(st, format!("replacing {}: {e}", worker.name), out);
                    None
                }
            }
        } else {
            None
        };
        if self.report && !stopping && (!expected || replacement.is_some()) {
            let retired = lost.is_none() && exitcode == Some(0);
            let how = if retired {
                format!(
                    "retired after {} task(s) (maxtasksperchild={})",
                    worker.given,
                    self.maxtasksperchild.map_or("None".into(), |m| m.to_string())
                )
            } else {
                match lost {
                    Some((task, job)) => format!(
                        "{} while running task {task} (job {job}): that task's result is an error",
                        died_how(exitcode)
                    ),
                    None => format!("{} between tasks", died_how(exitcode)),
                }
            };
            let then = match &replacement {
                Some((name, pid)) => format!("; {name} (pid {pid}) takes its place"),
                None => String::new(),
            };
            common::event!("pool_worker_exited", {
                    "worker": worker.name, "pid": worker.pid, "exitcode": exitcode,
                    "status": exitcode_name(exitcode), "lost_task": lost.map(|(t, _)| t),
                    "lost_job": lost.map(|(_, j)| j), "retired": retired,
                    "tasks": worker.given,
                    "replaced_by": replacement.as_ref().map(|(name, pid)| json!({ "worker": name, "pid": pid })),
                }, "{} (pid {}) {how}{then}", worker.name, worker.pid);
        }
        self.dispatch(st);
    }
}
