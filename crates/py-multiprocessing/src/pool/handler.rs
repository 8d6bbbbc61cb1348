//! handler — the parent's one thread of a pool (named
//! [`HANDLER_THREAD`](super::HANDLER_THREAD)) that gives tasks to workers, reads their results,
//! runs callbacks and replaces workers (Python's `_handle_tasks`, `_handle_results` and
//! `_handle_workers` threads in one).
//!
//! Every worker has its own inbox, which only the parent writes and only that worker reads, so
//! the parent knows at every moment which tasks each worker holds. That is what lets it handle
//! a worker killed in the middle of a task: its watcher thread posts `Exited` to the results
//! queue *behind* every result the worker sent; the handler reaps it, takes back the tasks still
//! in its inbox, fails the one it was running with an error naming the worker, its pid and the
//! signal, and starts a new worker. (CPython's `Pool` never completes that task: `get` hangs.)

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::PoolError;
use super::result::{Completion, lock};
use super::state::{Handle, Phase, Shared, State};
use super::worker::{FromWorker, unframe};
use crate::queue::QueueError;
use crate::shm::Wait;
use common::signals;

/// How often the handler looks at the clock while terminating (to SIGKILL after the grace).
const TERMINATE_TICK: Duration = Duration::from_millis(20);
/// Messages the handler takes in one go before it runs the callbacks they completed.
const BATCH: usize = 256;

impl Shared {
    /// Job `id` has been answered by worker `w` after `us` microseconds of work.
    pub(super) fn on_done(
        &self,
        w: u32,
        id: u64,
        us: u64,
        outcome: Result<Vec<u8>, String>,
        st: &mut State,
        out: &mut Vec<Completion>,
    ) {
        if let Some(worker) = st.workers.iter_mut().find(|x| x.number == w) {
            // A worker answers in the order it was given its tasks.
            if worker.outstanding.front() == Some(&id) {
                worker.outstanding.pop_front();
            } else {
                worker.outstanding.retain(|x| *x != id);
            }
        }
        st.timed(us);
        let task = st.jobs.get(&id).map_or("?", |j| j.task);
        let outcome = outcome.map_err(|message| PoolError::Task { task: task.into(), message });
        out.extend(self.finish_job(id, outcome, st));
        // The worker that reported first gets the next task.
        self.dispatch(st);
    }

    /// Handles one message from the results queue.
    pub(super) fn on_message(
        self: &Arc<Self>,
        msg: FromWorker,
        payload: &[u8],
        st: &mut State,
        out: &mut Vec<Completion>,
    ) {
        match msg {
            FromWorker::Done { w, id, us, error } => {
                let outcome = match error {
                    None => Ok(payload.to_vec()),
                    Some(error) => Err(error),
                };
                self.on_done(w, id, us, outcome, st, out);
            }
            FromWorker::InitFailed { w, pid, error } => {
                let name = st
                    .workers
                    .iter()
                    .find(|x| x.number == w)
                    .map_or("?".into(), |x| x.name.clone());
                let init = self.initializer.as_ref().map_or("?", |(n, _)| n.as_str());
                self.break_pool(
                    st,
                    format!("the initializer {init} failed in {name} (pid {pid}): {error}"),
                    out,
                );
            }
            FromWorker::Exited { w } => {
                if let Some(i) = st.workers.iter().position(|x| x.number == w) {
                    self.on_exit(i, st, out);
                }
            }
            FromWorker::Ready { .. } | FromWorker::Wake => {}
        }
    }

    /// The pool can run nothing any more: every pending task fails with `why`, workers stop.
    pub(super) fn break_pool(&self, st: &mut State, why: String, out: &mut Vec<Completion>) {
        if st.broken.is_some() {
            return;
        }
        st.broken = Some(why.clone());
        out.extend(self.fail_all(st, |_| PoolError::Broken(why.clone())));
        self.stop_all(st);
    }
}

/// The parent's result-handler thread: starts the workers, then reads every message of the
/// results queue (results, and the news that a worker has ended), runs callbacks, replaces dead
/// workers, and ends once the pool is closed (or terminated) and every worker has exited.
pub(super) fn handler_main(shared: Arc<Shared>, started: mpsc::Sender<Result<(), PoolError>>) {
    {
        let mut st = lock(&shared.state);
        for _ in 0..shared.size {
            if let Err(e) = shared.start_worker(&mut st, false) {
                abandon_workers(&mut st);
                drop(st);
                let _ = started.send(Err(e));
                return;
            }
        }
    }
    let _ = started.send(Ok(()));
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&shared))).is_err() {
        // A bug in the pool: fail every task and stop every worker, rather than leave callers
        // waiting forever for results nobody will set.
        let mut out = Vec::new();
        let mut st = lock(&shared.state);
        shared.break_pool(&mut st, "the pool's handler thread panicked".into(), &mut out);
        abandon_workers(&mut st);
        drop(st);
        for completion in out {
            completion.run();
        }
    }
}

/// Kills and reaps every worker process, tells every worker thread to stop, and forgets them
/// all: the pool could not start, or its handler failed.
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

/// The handler's loop (see [`handler_main`]).
fn handle(shared: &Arc<Shared>) {
    loop {
        let terminating = lock(&shared.state).terminating_since.is_some();
        let mut out = Vec::new();
        let mut fatal = None;
        // One message, waiting as long as it takes (only a tick while terminating, to SIGKILL
        // a worker that outlives its grace); then whatever else is there, without waiting.
        let first = if terminating {
            shared.results.get_encoded(Wait::from_timeout(TERMINATE_TICK))
        } else {
            shared.results.get_encoded(Wait::Forever)
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(got) = next.take() {
            let body = match got {
                Ok(body) => body,
                Err(QueueError::Empty) => break,
                Err(e) => {
                    fatal = Some(format!("reading the results queue: {e}"));
                    break;
                }
            };
            match unframe::<FromWorker>(&body) {
                Ok((msg, payload)) => {
                    shared.on_message(msg, payload, &mut lock(&shared.state), &mut out);
                }
                Err(e) => {
                    fatal = Some(format!("reading the results queue: {e}"));
                    break;
                }
            }
            taken += 1;
            if taken < BATCH {
                next = Some(shared.results.get_encoded(Wait::Now));
            }
        }
        let finished = {
            let mut st = lock(&shared.state);
            if let Some(why) = fatal {
                shared.break_pool(&mut st, why, &mut out);
            }
            if st.phase == Phase::Terminated && !st.terminate_done {
                st.terminate_done = true;
                out.extend(
                    shared.fail_all(&mut st, |task| PoolError::Terminated { task: task.into() }),
                );
                shared.stop_all(&mut st);
            }
            if let Some(since) = st.terminating_since
                && since.elapsed() >= signals::GRACE
                && !st.killed_after_grace
            {
                st.killed_after_grace = true;
                for w in &st.workers {
                    if let Handle::Process(process) = &w.handle {
                        let _ = process.kill();
                    }
                }
            }
            if st.phase == Phase::Closed && st.jobs.is_empty() && !st.stop_sent {
                st.stop_sent = true;
                for w in &mut st.workers {
                    w.stopping = true;
                    if w.send_stop().is_err()
                        && let Handle::Process(process) = &w.handle
                    {
                        let _ = process.terminate();
                    }
                }
            }
            // Tasks submitted since the last round: cleared first, so that a task submitted
            // after this point sends a new `Wake`.
            shared.poked.store(false, Ordering::SeqCst);
            shared.dispatch(&mut st);
            out.append(&mut st.deferred);
            st.phase != Phase::Running && st.workers.is_empty()
        };
        for completion in out {
            completion.run();
        }
        if finished {
            return;
        }
    }
}
