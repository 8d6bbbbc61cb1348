//! options — how a pool is made ([`PoolOptions`]) and what can go wrong ([`PoolError`]).

use serde_json::Value;

use super::task::Task;
use common::process::StartMethod;
use common::processes::lost;

/// What can go wrong with a pool or a task. Cloned into every handle that asks for a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("Pool not running: close() or terminate() was called (Python: ValueError)")]
    NotRunning,
    #[error(
        "join() needs close() or terminate() first: Pool is still running (Python: ValueError)"
    )]
    StillRunning,
    /// The task itself returned an error (Python re-raises the worker's exception in `get`).
    #[error("task {task} failed: {message}")]
    Task { task: String, message: String },
    /// The worker running the task died (killed, or exited) before sending its result. `job`
    /// is the pool's number for the task (a chunk's own, for `map`).
    #[error(
        "worker {worker} (pid {pid}) {} while running task {task} (job {job})",
        lost::how(*.exitcode)
    )]
    WorkerDied { task: String, job: u64, worker: String, pid: i32, exitcode: Option<i32> },
    #[error("the pool was terminated before task {task} finished")]
    Terminated { task: String },
    /// The pool cannot run tasks any more (an initializer failed, a queue broke).
    #[error("the pool is broken: {0}")]
    Broken(String),
    /// `get_timeout` ran out (Python: `multiprocessing.TimeoutError`).
    #[error("the result was not ready in time (Python: multiprocessing.TimeoutError)")]
    Timeout,
    /// `successful` before the result was ready (Python: `ValueError`).
    #[error("the result is not ready yet (Python: ValueError)")]
    NotReady,
    /// Bad arguments: not JSON, too large, or a pool of no workers.
    #[error("{0}")]
    Invalid(String),
    #[error("starting a pool worker: {0}")]
    Start(String),
}

/// How a pool is made (Python's `Pool(processes, initializer, initargs, maxtasksperchild)`).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// How many workers (at least 1).
    pub processes: usize,
    /// fork or spawn (process pools only).
    pub start_method: StartMethod,
    /// A task every worker runs once when it starts, with these arguments.
    pub initializer: Option<(&'static Task, Value)>,
    /// Replace a worker after this many tasks (a new process, a new pid).
    pub maxtasksperchild: Option<usize>,
    /// Workers are named `<name>-1`, `<name>-2`, ... (also what `ps -o comm` shows).
    pub name: String,
    /// Print an event when a worker dies or retires and when one replaces it.
    pub report: bool,
}

impl PoolOptions {
    /// `processes` workers started by the default method, no initializer, no task limit.
    pub fn new(processes: usize) -> PoolOptions {
        PoolOptions {
            processes,
            start_method: common::process::default_start_method(),
            initializer: None,
            maxtasksperchild: None,
            name: "pool-worker".to_string(),
            report: false,
        }
    }
}
