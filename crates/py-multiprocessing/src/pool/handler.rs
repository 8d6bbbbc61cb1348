//! handler — the parent's side of a pool: its state, and the one thread (named
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PoolError;
use super::result::{Callback, Completion, ErrorCallback, Slot, lock};
use super::task::Task;
use super::worker::{FromWorker, ToWorker, frame, unframe};
use crate::queue::{Queue, QueueError};
use common::process::{Process, Role, StartMethod};
use common::signals;

/// Tasks are given to a busy worker in advance only as many as it runs in about this long.
pub const PREFETCH_WINDOW: Duration = Duration::from_millis(2);
/// The most tasks a worker holds at once (running and waiting in its inbox).
pub(super) const MAX_PREFETCH: usize = 256;
/// How often the handler looks at the clock while terminating (to SIGKILL after the grace).
const TERMINATE_TICK: Duration = Duration::from_millis(20);
/// Messages the handler takes in one go before it runs the callbacks they completed.
const BATCH: usize = 256;

pub(super) enum Workers {
    Processes { role: &'static Role, method: StartMethod },
    Threads,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Phase {
    #[default]
    Running,
    Closed,
    Terminated,
}

/// A task waiting for a worker: its job and its frame, ready to write.
pub(super) struct Pending {
    pub id: u64,
    pub frame: Vec<u8>,
}

pub(super) enum Sink {
    One {
        slot: Arc<Slot>,
        callback: Option<Callback>,
        error_callback: Option<ErrorCallback>,
    },
    /// Chunk `index` of a map.
    Chunk {
        map: Arc<Mutex<MapJob>>,
        index: usize,
    },
}

pub(super) struct Job {
    pub task: &'static str,
    pub sink: Sink,
}

/// A `map` in progress, shared by its chunks' jobs and its caller.
pub(super) struct MapJob {
    pub slot: Arc<Slot>,
    /// How many items the map has.
    pub items: usize,
    /// Each chunk's answer, its results' list as the worker encoded it, as it comes.
    pub parts: Vec<Option<Vec<u8>>>,
    pub chunks_left: usize,
    /// `map_async`: the map's value is the list of results, read from JSON; `map` reads the
    /// parts itself, as its caller's type.
    pub values: bool,
    pub callback: Option<Callback>,
    pub error_callback: Option<ErrorCallback>,
    pub finished: bool,
}

pub(super) enum Handle {
    Process(Process),
    Thread(Option<JoinHandle<()>>),
}

pub(super) struct Worker {
    pub number: u32,
    pub name: String,
    pub pid: i32,
    pub handle: Handle,
    pub inbox: Queue<ToWorker>,
    /// Jobs given to it and not yet answered, in the order given (it runs them in this order).
    pub outstanding: VecDeque<u64>,
    /// Jobs given over its life (for `maxtasksperchild`).
    pub given: usize,
    /// When it was last given a job (the pool's count of jobs given): of two idle workers, the
    /// one idle the longer gets the next job, so that work goes round all of them.
    pub last_given: u64,
    /// `Stop` was sent, or it was signalled: it takes no more tasks.
    pub stopping: bool,
    /// Its inbox refused a task for another reason than being full: it takes no more.
    pub faulty: bool,
}

impl Worker {
    pub(super) fn can_take(&self, max: Option<usize>) -> bool {
        !self.stopping && !self.faulty && max.is_none_or(|m| self.given < m)
    }
}

#[derive(Default)]
pub(super) struct State {
    pub phase: Phase,
    pub broken: Option<String>,
    pub next_id: u64,
    pub backlog: VecDeque<Pending>,
    pub jobs: HashMap<u64, Job>,
    pub workers: Vec<Worker>,
    pub next_number: u32,
    pub stop_sent: bool,
    pub terminate_done: bool,
    pub terminating_since: Option<Instant>,
    pub killed_after_grace: bool,
    /// How long a task runs, in µs: a moving average of what the workers report.
    pub task_us: Option<f64>,
    /// Jobs that failed before reaching a worker, whose callbacks the handler runs.
    pub deferred: Vec<Completion>,
    /// Jobs given to workers so far (the clock of `Worker::last_given`).
    pub given: u64,
}

impl State {
    pub(super) fn check_open(&self) -> Result<(), PoolError> {
        if let Some(why) = &self.broken {
            return Err(PoolError::Broken(why.clone()));
        }
        match self.phase {
            Phase::Running => Ok(()),
            _ => Err(PoolError::NotRunning),
        }
    }
}

pub(super) struct Shared {
    pub size: usize,
    pub name: String,
    pub report: bool,
    pub workers: Workers,
    pub initializer: Option<(String, Value)>,
    pub maxtasksperchild: Option<usize>,
    pub state: Mutex<State>,
    pub results: Queue<FromWorker>,
    /// Thread pools: the tasks submitted so far, found by name by the worker threads.
    pub known: Mutex<HashMap<&'static str, &'static Task>>,
    /// Thread pools: set by `terminate`, so a worker skips the tasks it still holds.
    pub terminated: AtomicBool,
    /// A `Wake` is on its way to the handler: submitters need not send another.
    pub poked: AtomicBool,
}

impl Shared {
    /// Wakes the handler thread (after `close` or `terminate`).
    pub(super) fn wake(&self) {
        let _ = self.results.put_encoded(&frame(&FromWorker::Wake, &[]));
    }

    /// Tells the handler that tasks wait in the backlog: one `Wake` per round of the handler,
    /// however many tasks are submitted meanwhile (it clears `poked` before it dispatches). A
    /// blocking put: a `put_nowait` fails while a worker holds the writer lock, and a lost
    /// `Wake` would leave the backlog waiting for ever.
    pub(super) fn poke(&self) {
        if !self.poked.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Traced run: records (never prints) one end of job `id`'s way, its submission or its
    /// result, for the trace's arrow. The results queue's random id names the pool.
    pub(super) fn record_task(&self, end: &str, id: u64) {
        if common::report::tracing() {
            let pool = self.results.descriptor().id;
            common::report::record_only(end, serde_json::json!({ "pool": pool, "job": id }));
        }
    }

    /// Job `id` is over, with its result's bytes: its completion, if one is due (a chunk
    /// completes its map only when it is the last one, or the first to fail).
    pub(super) fn finish_job(
        &self,
        id: u64,
        outcome: Result<Vec<u8>, PoolError>,
        st: &mut State,
    ) -> Option<Completion> {
        let job = st.jobs.remove(&id)?;
        self.record_task("task_result", id);
        let shape = |why: String| {
            PoolError::Broken(format!("a worker's answer to a job of {}: {why}", job.task))
        };
        match job.sink {
            Sink::One { slot, callback, error_callback } => {
                let outcome = outcome.and_then(|result| {
                    serde_json::from_slice(&result).map_err(|e| shape(e.to_string()))
                });
                Some(Completion { slot, outcome, callback, error_callback })
            }
            Sink::Chunk { map, index } => {
                let mut m = lock(&map);
                if m.finished {
                    return None;
                }
                let outcome = match outcome {
                    Ok(part) => {
                        m.parts[index] = Some(part);
                        m.chunks_left -= 1;
                        if m.chunks_left > 0 {
                            return None;
                        }
                        if m.values {
                            json_values(&m.parts, m.items).map_err(shape)
                        } else {
                            Ok(Value::Null)
                        }
                    }
                    Err(e) => Err(e),
                };
                m.finished = true;
                Some(Completion {
                    slot: m.slot.clone(),
                    outcome,
                    callback: m.callback.take(),
                    error_callback: m.error_callback.take(),
                })
            }
        }
    }

    /// Fails every job not yet finished (terminate, or a broken pool).
    pub(super) fn fail_all(
        &self,
        st: &mut State,
        error: impl Fn(&'static str) -> PoolError,
    ) -> Vec<Completion> {
        st.backlog.clear();
        for w in &mut st.workers {
            w.outstanding.clear();
        }
        let mut ids: Vec<u64> = st.jobs.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let task = st.jobs.get(&id)?.task;
                self.finish_job(id, Err(error(task)), st)
            })
            .collect()
    }

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
        st.task_us = Some(st.task_us.map_or(us as f64, |avg| 0.8 * avg + 0.2 * us as f64));
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
                for w in &mut st.workers {
                    match &mut w.handle {
                        Handle::Process(process) => {
                            let _ = process.kill();
                            let _ = process.join();
                        }
                        Handle::Thread(_) => {
                            let _ = w.inbox.put_encoded_nowait(&frame(&ToWorker::Stop, &[]));
                        }
                    }
                }
                st.workers.clear();
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
        for w in &mut st.workers {
            if let Handle::Process(process) = &mut w.handle {
                let _ = process.kill();
                let _ = process.join();
            }
        }
        st.workers.clear();
        drop(st);
        for completion in out {
            completion.run();
        }
    }
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
            shared.results.get_encoded_timeout(TERMINATE_TICK)
        } else {
            shared.results.get_encoded()
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
                next = Some(shared.results.get_encoded_nowait());
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
                    if w.inbox.put_encoded_nowait(&frame(&ToWorker::Stop, &[])).is_err()
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

/// A `map_async`'s results: every chunk's JSON list, in order, as one list of values.
fn json_values(parts: &[Option<Vec<u8>>], items: usize) -> Result<Value, String> {
    let mut values = Vec::with_capacity(items);
    for part in parts {
        let part = part.as_deref().ok_or("a chunk's results are missing")?;
        values.extend(serde_json::from_slice::<Vec<Value>>(part).map_err(|e| e.to_string())?);
    }
    Ok(Value::Array(values))
}
