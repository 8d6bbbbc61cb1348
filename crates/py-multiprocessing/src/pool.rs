//! pool — a pool of worker processes (Python's `multiprocessing.Pool`), and a pool of threads
//! with the same interface (Python's `multiprocessing.pool.ThreadPool`).
//!
//! ```ignore
//! static SQUARE: Task = typed_task!("square", |x: i64| Ok(x * x)); // def square(x): return x*x
//! static TASKS: &[&Task] = &[&SQUARE];            // what a worker can run, found by name
//! static WORKER: Role = Role::new("pool-worker", |args| pool::serve(args, TASKS));
//! let pool = Pool::new(3, &WORKER)?;              // p = Pool(processes=3)
//! let r = pool.apply_async(&SQUARE, 7)?;          // r = p.apply_async(square, (7,))
//! let squares: Vec<i64> = pool.map(&SQUARE, 0..10)?; // p.map(square, range(10))
//! pool.close();                                   // p.close()
//! pool.join()?;                                   // p.join()
//! ```
//!
//! ## Workers, a task queue each, and a result thread
//! - **Workers** (`pool/worker.rs`), processes or threads, loop: take a task from their inbox,
//!   run it, put the result in the results queue. A task is a named function (`pool/task.rs`):
//!   a spawned worker has none of the parent's memory.
//! - **A task queue per worker**, a [`Queue`] only the parent writes and only that worker reads:
//!   `apply_async` puts the task in the pool's backlog, and the parent gives it to the worker
//!   idle the longest (`pool/workers.rs`; a busy one gets tasks in advance only while more wait
//!   than there are workers: `pool/prefetch.rs`, a speed-up).
//! - **One result thread** in the parent (`pool/handler.rs`, [`HANDLER_THREAD`]) reads the
//!   results queue, fills the [`AsyncResult`]s (`pool/result.rs`), runs callbacks, gives waiting
//!   tasks to the workers that freed up, and replaces workers that died or retired. A worker
//!   killed mid-task fails that one task with an error naming it, its pid and the signal
//!   (CPython's `Pool` never completes it: `get` hangs).
//!
//! `map` (`pool/map.rs`) sends the items in chunks (about four per worker, as Python does).
//! A `callback` runs **in the parent, in the result thread**, as in Python: it must be quick.
//! `terminate` stops the workers at once (SIGTERM, then SIGKILL after
//! [`common::signals::GRACE`]) and fails every unfinished task. **Dropping a pool waits**
//! (`close` + `join`), where Python's `with Pool()` calls `terminate`.
//!
//! Only the *first* workers of a fork pool are forked (a fork copies one thread, and a lock
//! another thread held stays locked in the child); a replacement is started by the fork server
//! ([`common::forkserver`]). The result thread starts them all: a worker's `PR_SET_PDEATHSIG`
//! follows the *thread* that started it, and that thread outlives them all. Arguments and
//! results are serde values, not pickles, each at most [`MAX_MESSAGE`] bytes. Linux only.

#![cfg(target_os = "linux")]

mod handler;
mod map;
mod options;
mod prefetch;
mod result;
mod task;
mod worker;
mod workers;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use serde::Serialize;
use serde_json::Value;

use handler::handler_main;
pub use options::{PoolError, PoolOptions};
use result::lock;
pub use result::{AsyncResult, Callback, ErrorCallback};
pub use task::{ChunkFn, Encoding, Task, TaskFn, run_typed, run_typed_chunk, type_names};
pub use worker::serve;
use worker::{ToWorker, frame};
use workers::{Handle, Pending, Phase, Shared, State, Workers};

use crate::queue::Queue;
use common::process::Role;

/// The largest message to or from a worker, in bytes (a task's name with its arguments or a
/// chunk of `map`'s items, or a result); a task beyond it fails with [`PoolError::Invalid`].
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// The name of the parent's thread that reads results and runs callbacks.
pub const HANDLER_THREAD: &str = "pool-results";

/// A pool of worker processes (Python's `multiprocessing.Pool`); see the module documentation.
/// [`ThreadPool::new`] makes one whose workers are threads.
pub struct Pool {
    shared: Arc<Shared>,
    handler: Mutex<Option<JoinHandle<()>>>,
}

/// A pool whose workers are threads of this process (Python's `multiprocessing.pool.ThreadPool`):
/// a [`Pool`] with the same interface.
#[derive(Debug)]
pub struct ThreadPool;

// `ThreadPool::new` is Python's spelling (`ThreadPool(4)`); what it makes is a `Pool`, so that
// both kinds have one interface, as Python's `ThreadPool` is a subclass of `Pool`.
#[allow(clippy::new_ret_no_self)]
impl ThreadPool {
    /// A pool of `threads` worker threads.
    pub fn new(threads: usize) -> Result<Pool, PoolError> {
        let options = PoolOptions { name: "pool-thread".into(), ..PoolOptions::new(threads) };
        ThreadPool::with_options(options)
    }

    /// A pool of threads with options (`start_method` is ignored).
    pub fn with_options(options: PoolOptions) -> Result<Pool, PoolError> {
        Pool::start(Workers::Threads, options)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Python's repr: `<Pool pool-worker state=RUN pool_size=3 processes>`.
impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared.state);
        let state = match (st.phase, &st.broken) {
            (_, Some(_)) => "BROKEN",
            (Phase::Running, None) => "RUN",
            (Phase::Closed, None) => "CLOSE",
            (Phase::Terminated, None) => "TERMINATE",
        };
        let kind =
            if matches!(self.shared.workers, Workers::Threads) { "threads" } else { "processes" };
        let PoolOptions { name, processes, .. } = &self.shared.options;
        write!(f, "<Pool {name} state={state} pool_size={processes} {kind}>")
    }
}

impl Pool {
    /// A pool of `processes` worker processes running `worker`, a role whose function calls
    /// [`serve`] with the program's task list (`Pool(processes=3)`).
    pub fn new(processes: usize, worker: &'static Role) -> Result<Pool, PoolError> {
        Pool::with_options(worker, PoolOptions::new(processes))
    }

    /// A pool of worker processes with options (start method, initializer, maxtasksperchild).
    pub fn with_options(worker: &'static Role, options: PoolOptions) -> Result<Pool, PoolError> {
        Pool::start(Workers::Processes(worker), options)
    }

    fn start(workers: Workers, options: PoolOptions) -> Result<Pool, PoolError> {
        if options.processes == 0 {
            let python = "Python: ValueError: Number of processes must be at least 1";
            return Err(PoolError::Invalid(format!("a pool needs at least 1 worker ({python})")));
        }
        if options.maxtasksperchild == Some(0) {
            return Err(PoolError::Invalid("maxtasksperchild must be at least 1".into()));
        }
        let results = Queue::with_max_message(0, MAX_MESSAGE)
            .map_err(|e| PoolError::Start(format!("making the results queue: {e}")))?;
        let known: HashMap<_, _> = options.initializer.iter().map(|(t, _)| (t.name, *t)).collect();
        let shared = Arc::new(Shared {
            options,
            workers,
            state: Mutex::new(State::default()),
            results,
            known: Mutex::new(known),
            poked: AtomicBool::new(false),
        });
        // The handler thread starts the workers, as it outlives them all: a worker asks the
        // kernel to kill it when the *thread* that started it ends (PR_SET_PDEATHSIG).
        let (started_tx, started_rx) = mpsc::channel();
        let for_handler = shared.clone();
        let handler = std::thread::Builder::new()
            .name(HANDLER_THREAD.into())
            .spawn(move || handler_main(for_handler, started_tx))
            .map_err(|e| PoolError::Start(format!("starting the {HANDLER_THREAD} thread: {e}")))?;
        let ended = || PoolError::Start("the pool's handler thread ended at start".into());
        if let Err(e) = started_rx.recv().unwrap_or_else(|_| Err(ended())) {
            let _ = handler.join();
            return Err(e);
        }
        Ok(Pool { shared, handler: Mutex::new(Some(handler)) })
    }

    /// The pids of the worker processes alive now, oldest first (empty for a thread pool).
    pub fn pids(&self) -> Vec<i32> {
        let st = lock(&self.shared.state);
        let processes = st.workers.iter().filter(|w| matches!(w.handle, Handle::Process(_)));
        processes.map(|w| w.pid).collect()
    }

    /// Runs `task` on `args` in a worker and waits for its result (Python's `apply`: blocking).
    pub fn apply(&self, task: &'static Task, args: impl Serialize) -> Result<Value, PoolError> {
        self.apply_async(task, args)?.get()
    }

    /// Gives `task` with `args` to a worker and returns at once (Python's `apply_async`).
    pub fn apply_async(
        &self,
        task: &'static Task,
        args: impl Serialize,
    ) -> Result<AsyncResult, PoolError> {
        self.apply_async_with(task, args, None, None)
    }

    /// [`Pool::apply_async`] with a `callback` (called with the result) and an
    /// `error_callback` (called with the error), both run in the parent's result thread.
    pub fn apply_async_with(
        &self,
        task: &'static Task,
        args: impl Serialize,
        callback: Option<Callback>,
        error_callback: Option<ErrorCallback>,
    ) -> Result<AsyncResult, PoolError> {
        let args = serde_json::to_vec(&args).map_err(|e| {
            PoolError::Invalid(format!("encoding the arguments of {}: {e}", task.name))
        })?;
        self.remember(task);
        let mut st = lock(&self.shared.state);
        st.check_open()?;
        let slot = st.new_job(task.name, callback, error_callback, None);
        let id = slot.id;
        let frame = frame(&ToWorker::Run { id, task: task.name.to_string() }, &args);
        self.shared.record_task("task_submitted", id);
        st.backlog.push_back(Pending { id, frame });
        drop(st);
        self.shared.poke();
        Ok(AsyncResult { slot })
    }

    /// No more tasks may be submitted; the workers exit once every submitted task is done
    /// (Python's `close`). Does not wait: [`Pool::join`] does.
    pub fn close(&self) {
        let mut st = lock(&self.shared.state);
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
            drop(st);
            self.shared.wake();
        }
    }

    /// Waits until every submitted task is done and every worker has exited. Only after
    /// [`Pool::close`] or [`Pool::terminate`]: before, [`PoolError::StillRunning`], as Python's
    /// `join` raises `ValueError`. Must not be called from a callback.
    pub fn join(&self) -> Result<(), PoolError> {
        if lock(&self.shared.state).phase == Phase::Running {
            return Err(PoolError::StillRunning);
        }
        let handler = lock(&self.handler).take();
        let joined = handler.map_or(Ok(()), JoinHandle::join);
        joined.map_err(|_| PoolError::Broken("the result-handler thread panicked".into()))
    }

    /// Stops every worker now (SIGTERM; SIGKILL after a grace period) and fails every unfinished
    /// task with [`PoolError::Terminated`]; returns once every worker is gone. A thread cannot
    /// be stopped: a thread pool's running tasks finish first.
    pub fn terminate(&self) {
        let mut st = lock(&self.shared.state);
        if st.phase != Phase::Terminated {
            st.phase = Phase::Terminated;
            self.shared.stop_now(&mut st, |task| PoolError::Terminated { task: task.into() });
        }
        drop(st);
        self.shared.wake();
        let _ = self.join();
    }

    /// Thread pools: makes `task` known to the worker threads, which find it by name.
    fn remember(&self, task: &'static Task) {
        if matches!(self.shared.workers, Workers::Threads) {
            lock(&self.shared.known).insert(task.name, task);
        }
    }
}

/// Dropping a pool waits for its work: `close` + `join` (see the module documentation).
impl Drop for Pool {
    fn drop(&mut self) {
        if lock(&self.handler).is_none() {
            return;
        }
        if std::thread::panicking() {
            self.terminate();
        } else {
            self.close();
            let _ = self.join();
        }
    }
}

/// Python's choice: `chunksize, extra = divmod(len(items), len(pool) * 4)`, plus one if extra.
pub fn default_chunksize(items: usize, workers: usize) -> usize {
    items.div_ceil(workers.max(1) * 4).max(1)
}
