//! state — what the parent knows of a pool: its workers, the jobs not yet answered, the
//! backlog of tasks no worker holds yet; and how a job ends (its result, or its error).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::Value;

use super::result::{Callback, Completion, ErrorCallback, Slot, lock};
use super::task::Task;
use super::worker::{FromWorker, ToWorker, frame};
use super::{MAX_MESSAGE, PoolError, PoolOptions};
use crate::queue::{Queue, QueueError};
use crate::shm::Wait;
use common::process::{Process, Role, StartMethod};

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
    /// Asks the worker to exit, without waiting for room in its inbox.
    pub(super) fn send_stop(&self) -> Result<(), QueueError> {
        self.inbox.put_encoded(&frame(&ToWorker::Stop, &[]), Wait::Now)
    }

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
    /// What a pool made with `options` shares with its handler thread and worker threads.
    pub(super) fn new(workers: Workers, options: PoolOptions) -> Result<Shared, PoolError> {
        let results = Queue::with_max_message(0, MAX_MESSAGE)
            .map_err(|e| PoolError::Start(format!("making the results queue: {e}")))?;
        let shared = Shared {
            size: options.processes,
            name: options.name,
            report: options.report,
            workers,
            initializer: options
                .initializer
                .as_ref()
                .map(|(task, args)| (task.name.to_string(), args.clone())),
            maxtasksperchild: options.maxtasksperchild,
            state: Mutex::new(State { next_number: 1, ..State::default() }),
            results,
            known: Mutex::new(HashMap::new()),
            terminated: AtomicBool::new(false),
            poked: AtomicBool::new(false),
        };
        if let Some((task, _)) = &options.initializer {
            lock(&shared.known).insert(task.name, task);
        }
        Ok(shared)
    }

    /// Wakes the handler thread (after `close` or `terminate`).
    pub(super) fn wake(&self) {
        let _ = self.results.put_encoded(&frame(&FromWorker::Wake, &[]), Wait::Forever);
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
        match job.sink {
            Sink::One { slot, callback, error_callback } => {
                let outcome = outcome.and_then(|result| {
                    serde_json::from_slice(&result).map_err(|e| {
                        let task = job.task;
                        PoolError::Broken(format!("a worker's answer to a job of {task}: {e}"))
                    })
                });
                Some(Completion { slot, outcome, callback, error_callback })
            }
            Sink::Chunk { map, index } => {
                let mut m = lock(&map);
                if m.finished {
                    return None;
                }
                // `map` reads the parts itself, as its caller's type: the map's value is null.
                let outcome = match outcome {
                    Ok(part) => {
                        m.parts[index] = Some(part);
                        m.chunks_left -= 1;
                        if m.chunks_left > 0 {
                            return None;
                        }
                        Ok(Value::Null)
                    }
                    Err(e) => Err(e),
                };
                m.finished = true;
                let slot = m.slot.clone();
                Some(Completion { slot, outcome, callback: None, error_callback: None })
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
}
