//! workers — what the parent knows of a pool (its workers, the jobs not answered yet, the
//! backlog of tasks no worker holds yet), and what it does with the workers: give waiting tasks
//! to them, each through its own inbox, and start one.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::result::{Answer, Callback, ErrorCallback, Job, Slot, lock};
use super::task::Task;
use super::worker::{FromWorker, ToWorker, WorkerArgs, frame, unframe, work};
use super::{MAX_MESSAGE, PoolError, PoolOptions};
use crate::queue::{Queue, QueueError};
use crate::shm::Wait;
use common::process::{Process, Role, StartMethod};
use common::report;

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
        match (&self.broken, self.phase) {
            (Some(why), _) => Err(PoolError::Broken(why.clone())),
            (None, Phase::Running) => Ok(()),
            (None, _) => Err(PoolError::NotRunning),
        }
    }

    /// A new job of `task`, not in the backlog yet (for a chunk of `map`, `chunks` are the jobs
    /// of all its map's chunks); its slot.
    pub(super) fn new_job(
        &mut self,
        task: &'static str,
        callback: Option<Callback>,
        error_callback: Option<ErrorCallback>,
        chunks: Option<Range<u64>>,
    ) -> Arc<Slot> {
        let slot = Slot::new(self.next_id, task);
        self.next_id += 1;
        self.jobs.insert(slot.id, Job { slot: slot.clone(), callback, error_callback, chunks });
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
    /// A `Wake` is on its way to the result thread: submitters need not send another.
    pub poked: AtomicBool,
}

impl Shared {
    /// Wakes the result thread. A blocking put: a `put_nowait` fails while a worker holds the
    /// writer lock, and a lost `Wake` would leave the pool waiting for ever.
    pub(super) fn wake(&self) {
        let _ = self.results.put_encoded(&frame(&FromWorker::Wake, &[]), Wait::Forever);
    }

    /// Wakes the result thread for the tasks in the backlog: one `Wake` per round of it, however
    /// many tasks are submitted meanwhile (it clears `poked` before it dispatches).
    pub(super) fn poke(&self) {
        if !self.poked.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Traced run: records (never prints) one end of job `id`'s way, its submission or its
    /// result, for the trace's arrow. The results queue's random id names the pool.
    pub(super) fn record_task(&self, end: &str, id: u64) {
        if report::tracing() {
            let pool = self.results.descriptor().id;
            report::record_only(end, serde_json::json!({ "pool": pool, "job": id }));
        }
    }

    /// Job `id` is over with `answer` (unless it was over already): its callbacks and slot wait
    /// in `st.finished` for the result thread. A chunk that failed fails its whole map at once,
    /// as in Python: the map's other chunks are over too, with the same error.
    pub(super) fn finish_job(&self, id: u64, answer: Answer, st: &mut State) {
        let Some(job) = st.jobs.remove(&id) else { return };
        self.record_task("task_result", id);
        if let (Err(_), Some(chunks)) = (&answer, &job.chunks) {
            for other in chunks.clone() {
                if let Some(sibling) = st.jobs.remove(&other) {
                    st.finished.push((sibling, answer.clone()));
                }
            }
        }
        st.finished.push((job, answer));
    }

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
                !w.stopping && max.is_none_or(|m| w.given < m) && !full.contains(&w.number)
            };
            let workers = st.workers.iter().enumerate();
            let idle = workers.filter(|(_, w)| usable(w) && w.outstanding.is_empty());
            let idle = idle.min_by_key(|(_, w)| w.last_given).map(|(i, _)| i);
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
                Err(QueueError::TooLarge { size, max }) => {
                    let chunk = matches!(unframe(&pending.frame), Ok((ToWorker::Chunk { .. }, _)));
                    let task = st.jobs.get(&pending.id).map_or("?", |j| j.slot.task);
                    let error = PoolError::Invalid(format!(
                        "the arguments of task {task} are {size} bytes, more than the limit of \
                         {max}{}",
                        if chunk { " (give map a smaller chunksize)" } else { "" }
                    ));
                    self.finish_job(pending.id, Err(error), st);
                }
                Err(_) => {
                    // Full, or broken (the worker is dying; its exit is handled when the result
                    // thread sees it): the task goes to another worker, or waits.
                    full.push(worker.number);
                    st.backlog.push_front(pending);
                }
            }
        }
    }

    /// Starts one worker. A `replacement` (of a worker that died or retired) in a fork pool comes
    /// from the fork server: this process has threads by then (see the module documentation).
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
        let initializer = self.options.initializer.as_ref();
        let args = WorkerArgs {
            number,
            inbox: inbox.clone(),
            results: self.results.clone(),
            initializer: initializer.map(|(task, args)| (task.name.into(), args.clone())),
            maxtasksperchild: self.options.maxtasksperchild,
        };
        let exited = frame(&FromWorker::Exited { w: number }, &[]);
        let (pid, handle) = match self.workers {
            Workers::Processes(role) => {
                // A spawned or fork-server worker gets the queues' descriptors (and finds their
                // numbers in its arguments); a forked one has them already.
                let fds = [inbox.fds(), self.results.fds()].concat();
                let method = match self.options.start_method {
                    StartMethod::Fork if replacement => StartMethod::Forkserver,
                    other => other,
                };
                let mut process =
                    Process::new(&name, role, &args).start_method(method).pass_fds(&fds);
                process.start().map_err(|e| PoolError::Start(format!("{name}: {e:#}")))?;
                let pid = process.pid().unwrap_or(0);
                // Its watcher thread posts `Exited` to the results queue when it ends, so that
                // the news comes after every result the worker sent.
                let results = self.results.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-watch"))
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        common::process::wait_until_ended(pid);
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
                        if let Err(e) = work(&args, &find) {
                            report::write_stderr(&format!("{who}: error: {e:#}"));
                        }
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
        });
        Ok(())
    }
}
