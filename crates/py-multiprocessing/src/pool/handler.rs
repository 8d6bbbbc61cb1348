//! handler — the result thread, the parent's one thread of a pool: Python's `_handle_tasks`,
//! `_handle_results` and `_handle_workers` threads in one ([what it does](super)). It
//! ends once the pool is closed (or terminated) and every worker has exited.
//!
//! As only the parent writes a worker's inbox, it knows at every moment which tasks each worker
//! holds. So a worker killed mid-task can be handled: its watcher thread posts `Exited` to the
//! results queue *behind* every result the worker sent; the handler reaps it, takes back the
//! tasks still in its inbox, fails the one it was running, and starts a new worker.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use serde_json::json;

use super::PoolError;
use super::result::lock;
use super::worker::{FromWorker, ToWorker, unframe};
use super::workers::{Handle, Pending, Phase, Shared, State};
use crate::queue::QueueError;
use crate::shm::Wait;
use common::process::exitcode_name;
use common::processes::lost;
use common::signals;

/// Messages the handler takes in one go before it runs the callbacks they completed.
const BATCH: usize = 256;

/// The result thread's body; `started` hears whether every worker started.
pub(super) fn handler_main(shared: Arc<Shared>, started: mpsc::Sender<Result<(), PoolError>>) {
    let mut st = lock(&shared.state);
    let all = (0..shared.options.processes).try_for_each(|_| shared.start_worker(&mut st, false));
    if let Err(e) = all {
        abandon_workers(&mut st);
        drop(st);
        let _ = started.send(Err(e));
        return;
    }
    drop(st);
    let _ = started.send(Ok(()));
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&shared))).is_err() {
        // A bug in the pool: fail every task and stop every worker, rather than leave callers
        // waiting forever for results nobody will set.
        let mut st = lock(&shared.state);
        shared.break_pool(&mut st, "the pool's handler thread panicked".into());
        abandon_workers(&mut st);
        let finished = std::mem::take(&mut st.finished);
        drop(st);
        finished.into_iter().for_each(|(job, answer)| job.finish(answer));
    }
}

/// The pool could not start, or its handler failed: kill and reap its processes, stop its threads.
fn abandon_workers(st: &mut State) {
    for w in &mut st.workers {
        match &mut w.handle {
            Handle::Process(process) => {
                let _ = process.kill();
                let _ = process.join();
            }
            Handle::Thread(_) => {
                let _ = w.send_stop();
            }
        }
    }
    st.workers.clear();
}

fn handle(shared: &Arc<Shared>) {
    loop {
        // One message, waiting as long as it takes (only until the grace ends while stopping,
        // to SIGKILL a worker that outlives it); then whatever else is there, without waiting.
        let first = lock(&shared.state).grace_ends.map_or(Wait::Forever, Wait::Until);
        let mut fatal = None;
        for taken in 0..BATCH {
            let got = shared.results.get_encoded(if taken == 0 { first } else { Wait::Now });
            let read = match &got {
                Ok(body) => unframe::<FromWorker>(body),
                Err(QueueError::Empty) => break,
                Err(e) => Err(e.to_string()),
            };
            match read {
                Ok((msg, payload)) => shared.on_message(msg, payload, &mut lock(&shared.state)),
                Err(e) => {
                    fatal = Some(format!("reading the results queue: {e}"));
                    break;
                }
            }
        }
        let mut st = lock(&shared.state);
        if let Some(why) = fatal {
            shared.break_pool(&mut st, why);
        }
        if st.grace_ends.is_some_and(|end| Instant::now() >= end) {
            st.grace_ends = None;
            for w in &st.workers {
                if let Handle::Process(process) = &w.handle {
                    let _ = process.kill();
                }
            }
        }
        if st.phase == Phase::Closed && st.jobs.is_empty() {
            for w in st.workers.iter_mut().filter(|w| !w.stopping) {
                w.stopping = true;
                if w.send_stop().is_err()
                    && let Handle::Process(process) = &w.handle
                {
                    let _ = process.terminate();
                }
            }
        }
        // Tasks submitted since the last round: cleared first, so that a task submitted after
        // this point sends a new `Wake`.
        shared.poked.store(false, Ordering::SeqCst);
        shared.dispatch(&mut st);
        let finished = std::mem::take(&mut st.finished);
        let done = st.phase != Phase::Running && st.workers.is_empty();
        drop(st);
        finished.into_iter().for_each(|(job, answer)| job.finish(answer));
        if done {
            return;
        }
    }
}

impl Shared {
    fn on_message(self: &Arc<Self>, msg: FromWorker, payload: &[u8], st: &mut State) {
        match msg {
            FromWorker::Done { w, id, us, error } => {
                if let Some(worker) = st.workers.iter_mut().find(|x| x.number == w)
                    && let Some(at) = worker.outstanding.iter().position(|x| *x == id)
                {
                    worker.outstanding.remove(at);
                }
                st.timed(us);
                let task = st.jobs.get(&id).map_or("?", |j| j.slot.task);
                let answer = match error {
                    None => Ok(payload.to_vec()),
                    Some(message) => Err(PoolError::Task { task: task.into(), message }),
                };
                self.finish_job(id, answer, st);
                // The worker that reported first gets the next task.
                self.dispatch(st);
            }
            FromWorker::InitFailed { w, error } => {
                let worker = st.workers.iter().find(|x| x.number == w);
                let (name, pid) = worker.map_or(("?", 0), |x| (x.name.as_str(), x.pid));
                let init = self.options.initializer.as_ref().map_or("?", |(task, _)| task.name);
                let why = format!("the initializer {init} failed in {name} (pid {pid}): {error}");
                self.break_pool(st, why);
            }
            FromWorker::Exited { w } => {
                if let Some(i) = st.workers.iter().position(|x| x.number == w) {
                    self.on_exit(i, st);
                }
            }
            FromWorker::Wake => {}
        }
    }

    /// For `terminate` and a broken pool: every job not over yet fails with `error` (of its
    /// task); a process gets SIGTERM (SIGKILL after [`signals::GRACE`]), and a thread, which
    /// cannot be stopped, loses the tasks in its inbox and gets `Stop`.
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
                    while w.inbox.get_encoded(Wait::Now).is_ok() {}
                    let _ = w.send_stop();
                }
            }
        }
        st.grace_ends.get_or_insert(Instant::now() + signals::GRACE);
    }

    /// The pool can run nothing any more: every pending task fails with `why`, workers stop.
    fn break_pool(&self, st: &mut State, why: String) {
        if st.broken.is_none() {
            self.stop_now(st, |_| PoolError::Broken(why.clone()));
            st.broken = Some(why);
        }
    }

    /// Worker `i` has ended: reap it, hand on the tasks it had not started, fail the one it was
    /// running, and start a replacement if the pool still needs one.
    fn on_exit(self: &Arc<Self>, i: usize, st: &mut State) {
        let worker = st.workers.remove(i);
        let exitcode = match worker.handle {
            Handle::Process(mut process) => process.join().ok().flatten(),
            Handle::Thread(thread) => {
                let _ = thread.join();
                Some(0)
            }
        };
        // The tasks still in its inbox were never started: they go back to the front of the
        // backlog, in their order. Nobody else reads that inbox, so what is in it is exact.
        let mut back = Vec::new();
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
        let taken = worker.outstanding.iter().filter(|&&id| back.iter().all(|p| p.id != id));
        for &id in taken {
            let Some(task) = st.jobs.get(&id).map(|job| job.slot.task) else { continue };
            lost.get_or_insert((task, id));
            let (name, pid) = (worker.name.clone(), worker.pid);
            let error =
                PoolError::WorkerDied { task: task.into(), job: id, worker: name, pid, exitcode };
            self.finish_job(id, Err(error), st);
        }
        for pending in back.into_iter().rev() {
            st.backlog.push_front(pending);
        }
        let stopping = signals::stopping();
        let retired = lost.is_none() && exitcode == Some(0);
        let needed = st.broken.is_none()
            && !stopping
            && (st.phase == Phase::Running
                || (st.phase == Phase::Closed && !st.backlog.is_empty()));
        let mut replacement = None;
        if needed {
            match self.start_worker(st, true) {
                Ok(()) => replacement = st.workers.last().map(|w| (w.name.clone(), w.pid)),
                Err(e) => self.break_pool(st, format!("replacing {}: {e}", worker.name)),
            }
        }
        if self.options.report
            && !stopping
            && (!(worker.stopping || retired) || replacement.is_some())
        {
            let how = match lost {
                None if retired => format!(
                    "retired after {} task(s) (maxtasksperchild={})",
                    worker.given,
                    self.options.maxtasksperchild.map_or("None".into(), |m| m.to_string())
                ),
                Some((task, job)) => format!(
                    "{} while running task {task} (job {job}): that task's result is an error",
                    lost::how(exitcode)
                ),
                None => format!("{} between tasks", lost::how(exitcode)),
            };
            let then = replacement.as_ref().map_or(String::new(), |(name, pid)| {
                format!("; {name} (pid {pid}) takes its place")
            });
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
