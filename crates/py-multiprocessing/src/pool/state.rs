//! state — what the parent knows of a pool: its workers, the jobs not yet answered, the
//! backlog of tasks no worker holds yet.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::result::{Answer, Callback, ErrorCallback, Job, Slot};
use super::task::Task;
use super::worker::{FromWorker, ToWorker, frame};
use super::{PoolError, PoolOptions};
use crate::queue::{Queue, QueueError};
use crate::shm::Wait;
use common::process::{Process, Role};

pub(super) enum Workers {
    Processes(&'static Role),
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

pub(super) enum Handle {
    Process(Process),
    Thread(JoinHandle<()>),
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
}

#[derive(Default)]
pub(super) struct State {
    pub phase: Phase,
    pub broken: Option<String>,
    pub next_id: u64,
    pub backlog: VecDeque<Pending>,
    pub jobs: HashMap<u64, Job>,
    pub workers: Vec<Worker>,
    pub started: u32,
    /// The workers were told to stop now: past this moment, they are killed.
    pub grace_ends: Option<Instant>,
    /// How long a task runs, in µs: a moving average of what the workers report.
    pub task_us: Option<f64>,
    /// Jobs over, whose callbacks and slots the result thread has yet to run (outside the lock).
    pub finished: Vec<(Job, Answer)>,
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

    /// A new job of `task`, not in the backlog yet; its slot.
    pub(super) fn new_job(
        &mut self,
        task: &'static str,
        callback: Option<Callback>,
        error_callback: Option<ErrorCallback>,
    ) -> Arc<Slot> {
        let slot = Slot::new(self.next_id, task);
        self.next_id += 1;
        self.jobs.insert(slot.id, Job { slot: slot.clone(), callback, error_callback });
        slot
    }
}

/// What a pool shares with its result thread and worker threads.
pub(super) struct Shared {
    pub options: PoolOptions,
    pub workers: Workers,
    pub state: Mutex<State>,
    pub results: Queue<FromWorker>,
    /// Thread pools: the tasks submitted so far, found by name by the worker threads.
    pub known: Mutex<HashMap<&'static str, &'static Task>>,
    /// Thread pools: set by `terminate`, so a worker skips the tasks it still holds.
    pub terminated: AtomicBool,
    /// A `Wake` is on its way to the result thread: submitters need not send another.
    pub poked: AtomicBool,
}

impl Shared {
    /// Wakes the result thread (after `close` or `terminate`).
    pub(super) fn wake(&self) {
        let _ = self.results.put_encoded(&frame(&FromWorker::Wake, &[]), Wait::Forever);
    }

    /// Tells the result thread that tasks wait in the backlog: one `Wake` per round of it,
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

    /// Job `id` is over with `answer`: its callbacks and slot wait in `st.finished` for the
    /// result thread. A job already over is left alone.
    pub(super) fn finish_job(&self, id: u64, answer: Answer, st: &mut State) {
        if let Some(job) = st.jobs.remove(&id) {
            self.record_task("task_result", id);
            st.finished.push((job, answer));
        }
    }
}
