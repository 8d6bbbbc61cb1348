//! pool — a pool of worker processes (Python's `multiprocessing.Pool`), and a pool of threads
//! with the same interface (Python's `multiprocessing.pool.ThreadPool`).
//!
//! ```ignore
//! static SQUARE: Task = typed_task!("square", |x: i64| Ok(x * x)); // def square(x): return x*x
//! /// Every task this program's workers can run, found by name (Python: a module-level def).
//! static TASKS: &[&Task] = &[&SQUARE];
//! /// The worker process; listed in `common::demo::main(&[&WORKER], run)` for spawn.
//! static WORKER: Role = Role::new("pool-worker", |args| pool::serve(args, TASKS));
//!
//! let pool = Pool::new(3, &WORKER)?;              // p = Pool(processes=3)
//! let r = pool.apply_async(&SQUARE, 7)?;          // r = p.apply_async(square, (7,))
//! let squares: Vec<i64> = pool.map(&SQUARE, 0..10)?; // p.map(square, range(10))
//! pool.close();                                   // p.close()
//! pool.join()?;                                   // p.join()
//! assert_eq!(r.get()?, json!(49));                // r.get()
//! ```
//!
//! ## Tasks are named functions
//! A spawned worker is this program run again: it has none of the parent's memory, so a task
//! cannot be a closure that holds anything. A [`Task`] is a name and a function; the parent
//! sends the name and the arguments as JSON, the worker finds the function by name in the list
//! its role gives to [`serve`], and sends the result back as JSON. Python has the same rule (a
//! task must be picklable: a module-level function, not a lambda) for the same reason. The
//! function is typed, as a Python function takes and gives Python values
//! ([`typed_task!`]: `fn(i64) -> Result<i64>`, any argument serde can read and any result it
//! can write), or works on JSON values ([`Task::new`]: `fn(Value) -> Result<Value>`).
//!
//! ## How work reaches the workers
//! Every worker has its own inbox, a [`Queue`] the parent writes and only that worker reads, and
//! every worker writes its results to one shared results queue. One thread of the parent, the
//! *handler* (named `pool-results`), does the rest: `apply_async` only puts the task in the
//! pool's backlog and wakes it; the handler gives tasks to workers (Python's `_handle_tasks`
//! thread), reads the results (Python's `_handle_results`), runs callbacks, and replaces
//! workers (Python's `_handle_workers`). The parent decides which worker gets which task, so it
//! knows at every moment which tasks each worker holds. That is what lets it
//! handle a worker killed in the middle of a task (a SIGKILL, the OOM killer):
//! - the handler learns of the death at once: a small thread per worker process waits for it
//!   to end (`waitid` with `WNOWAIT`, which does not reap) and then puts an "exited" message in
//!   the results queue, *behind* every result the worker sent before dying; the handler reaps it;
//! - it takes back from the dead worker's inbox the tasks it had not started, and gives them to
//!   others; the one task it was running gets an error naming the worker, its pid and the
//!   signal (`worker pool-worker-2 (pid 4182) was killed by SIGKILL while running task slow (job
//!   7)`);
//! - a new worker (a new pid) takes its place, and every other task completes.
//!
//! CPython's `multiprocessing.Pool` replaces the dead worker but never completes the lost task:
//! `get()` on it hangs forever. `concurrent.futures.ProcessPoolExecutor` fails *every* pending
//! future with `BrokenProcessPool` and refuses new work. A Python worker pulls tasks from one
//! shared pipe, so the parent cannot know which task died with it.
//!
//! Dispatch is fair and cheap: a task goes to an idle worker (the first to report its result
//! gets the next task, as in Python). Tasks are given to a busy worker in advance only while
//! more tasks wait than there are workers, and only as many as it runs in about
//! [`PREFETCH_WINDOW`] (workers report how long each task took): a short backlog, or a backlog
//! of long tasks, always waits for the first worker that frees up; a long backlog of tiny
//! tasks keeps every worker busy without a round trip to the parent between two tasks.
//!
//! ## How `map` travels
//! A chunk of `map` (Python's default size: the items split into about four chunks per
//! worker) is one frame each way, as Python sends one pickle per chunk:
//! - the caller's thread encodes each chunk's items straight into the JSON text of one list,
//!   once, from where they are (a range or a list is not copied first), and writes each to a
//!   worker's inbox itself as soon as it is encoded, if a worker can take it by the rules
//!   above (otherwise the handler does, once a worker frees up): no wake-up of another thread
//!   between a chunk and its worker;
//! - the worker reads the list item by item, runs the task on each as it goes and writes each
//!   result straight into its answer's text: a typed task's items are read straight into its
//!   argument type, and its results written from theirs, with no [`Value`] between;
//! - the handler, which has just read an answer's text from the results queue, reads it onto
//!   the end of the result list, as the caller's type (`Vec<u64>`, `Vec<String>`, `Vec<Value>`:
//!   [`Pool::map`] is generic over it), while the caller's thread is still encoding the next
//!   chunks; a chunk that ends before the ones in front of it waits as text for its turn.
//!
//! Lists of whole numbers, plain strings, booleans and nulls are read by a small scanner
//! several times faster than a general JSON parser, which hands each element to the type's
//! `Deserialize` as serde_json would; anything else is read by serde_json. A list's text goes
//! into its frame as it is ([`Queue::put_encoded`]), not as a JSON string inside a message,
//! which would escape it on the way in and copy it out again. The results stay in the items'
//! order whatever order the chunks end in, and a chunk lost with a killed worker fails the map
//! with that worker's error.
//!
//! What a `map` of 100,000 small numbers costs (CPU of all the processes, on the benchmark's
//! 2-core machine): about 35 ns an item with a typed task and typed results, 70 ns through
//! [`Value`]s, against about 230 for CPython's `Pool.map`. The first `map` on a new pool costs
//! more, about 50 and 135 ns: the page faults of the memory its results take (a `Value` is 72
//! bytes, a `u64` 8) and of the pages a forked worker shares with its parent until one of them
//! writes (copy-on-write).
//!
//! ## Results, callbacks, and who runs them
//! [`Pool::apply_async`] returns an [`AsyncResult`] at once (`get`, `get_timeout`, `ready`,
//! `successful`). A `callback` or `error_callback` runs **in the parent process, in the
//! result-handler thread** (named `pool-results`), as in Python: not in the worker that ran the
//! task, and not in the thread that submitted it. A callback runs before `get` returns; it
//! should be quick, since no other result is handled meanwhile, and must not wait for another
//! result of the same pool (that would wait forever, in Python too).
//!
//! ## close, join, terminate, and dropping a pool
//! Python's rules: after [`Pool::close`] or [`Pool::terminate`] no task can be submitted
//! ([`PoolError::NotRunning`]); [`Pool::join`] before either is an error
//! ([`PoolError::StillRunning`]); `join` waits until every submitted task is done and every
//! worker has exited. `terminate` stops the workers at once (SIGTERM, then SIGKILL after
//! [`crate::signals::GRACE`]): their running tasks end, and every unfinished result becomes
//! [`PoolError::Terminated`] (in Python they never complete).
//!
//! **Dropping a pool waits**: `drop` is `close` + `join`, so submitted work is never lost
//! silently, as `concurrent.futures`' `with` block does (`shutdown(wait=True)`). Python's
//! `with Pool() as p:` calls `terminate()` at the end of the block and silently kills the tasks
//! still running, which surprises people. Call [`Pool::terminate`] to get that. (While a panic
//! unwinds, drop terminates instead of waiting.)
//!
//! ## maxtasksperchild and the initializer
//! With `maxtasksperchild = N` a worker exits after N tasks and a new worker (a new pid) takes
//! its place (a chunk of `map` counts as one task, as in Python). An initializer is a [`Task`]
//! every worker runs once when it starts. If it fails, the pool is broken: pending tasks fail
//! with [`PoolError::Broken`] and new ones are refused (`concurrent.futures` does the same;
//! `multiprocessing.Pool` starts new workers that fail again, forever).
//!
//! ## Threads
//! [`ThreadPool::new`] makes a [`Pool`] whose workers are threads of this process, with the same
//! interface, the same queues and the same handler. A thread cannot be killed: `terminate` lets
//! the running tasks finish and fails the others. In Rust threads run CPU-bound work in parallel
//! (there is no GIL), so the choice between the two pools is about isolation (a crash or a
//! `kill -9` takes one worker, not the program) and start cost, not about cores.
//!
//! ## Forking from a thread
//! Workers are started by the handler thread, the one thread that outlives them all (a
//! worker's `PR_SET_PDEATHSIG` follows the thread that started it). A forked worker is a copy
//! of the parent with that one thread in it: any lock another thread of the parent held at that
//! instant (the queue module's table of adopted queues, which a thread holds while it makes a
//! queue; malloc's, stdout's) would stay locked for ever in the worker. So only the pool's
//! *first* workers are forked, when the pool starts (they get the parent's memory, the point of
//! fork); every *replacement* (of a worker that died, or retired after `maxtasksperchild`) of a
//! fork pool is started by the fork server ([`crate::forkserver`]): a single-threaded process
//! that forks it, passes it its queues' descriptors, and reports its exit. Pools started with
//! `spawn` or `forkserver` never fork from this process at all. The worker role must be listed
//! in the program's dispatch for a replacement to find it, as for spawn.
//!
//! ## Differences from Python
//! - Arguments and results are JSON values, not pickles; the arguments of one task, and its
//!   result, are at most [`MAX_MESSAGE`] bytes of JSON.
//! - A killed worker's task fails with an error instead of hanging `get` forever.
//! - Dropping a pool waits for its work (Python's `with Pool()` terminates it).
//! - One handler thread does the work of Python's three (tasks, results, workers).
//!
//! Linux only, like [`crate::queue`].

#![cfg(target_os = "linux")]

use std::any::type_name;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::process::{Process, Role, StartMethod, exitcode_name};
use crate::queue::{Queue, QueueError};
use crate::{report, signals};

/// The largest message to or from a worker, in bytes of JSON: a task's arguments (or a chunk of
/// `map`'s items) with its name, or its result. A task beyond it fails with
/// [`PoolError::Invalid`].
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Tasks are given to a worker in advance only as many as it runs in about this long.
pub const PREFETCH_WINDOW: Duration = Duration::from_millis(2);
/// The most tasks a worker holds at once (running and waiting in its inbox).
const MAX_PREFETCH: usize = 256;
/// The name of the parent's thread that reads results and runs callbacks.
pub const HANDLER_THREAD: &str = "pool-results";
/// How often the handler looks at the clock while terminating (to SIGKILL after the grace).
const TERMINATE_TICK: Duration = Duration::from_millis(20);
/// Messages the handler takes in one go before it runs the callbacks they completed.
const BATCH: usize = 256;

/// What a task does: JSON arguments in, a JSON result (or an error) out.
pub type TaskFn = fn(Value) -> anyhow::Result<Value>;

/// What a typed task does with a chunk of `map` (see [`typed_task!`]): the chunk's JSON list
/// of items in (with the place of its first item in the whole `map`, and how many it holds),
/// the JSON list of their results out, or the error of the first item that failed.
pub type ChunkFn = fn(&str, usize, usize) -> Result<String, String>;

/// A named function a pool can run: what Python's `apply_async(f, args)` sends is `f`'s name.
#[derive(Debug)]
pub struct Task {
    /// The name a worker finds the function by; unique in a program's task list.
    pub name: &'static str,
    /// The function itself, on JSON values.
    pub run: TaskFn,
    /// For a typed task, the function on a whole chunk of `map`, which reads each item
    /// straight into the function's argument type and writes each result straight into the
    /// answer's text, with no [`Value`] between (see [`typed_task!`]).
    chunk: Option<ChunkFn>,
}

impl Task {
    /// A task named `name` that runs `run` on JSON values.
    pub const fn new(name: &'static str, run: TaskFn) -> Task {
        Task { name, run, chunk: None }
    }

    /// A task with its own chunk function: what [`typed_task!`] makes.
    #[doc(hidden)]
    pub const fn typed(name: &'static str, run: TaskFn, chunk: ChunkFn) -> Task {
        Task { name, run, chunk: Some(chunk) }
    }
}

/// A [`Task`] named `$name` that runs `$f`, a function (or a closure that captures nothing)
/// from any argument type that can be read from JSON to any result type that can be written
/// as JSON, like a Python function:
///
/// ```
/// use common::pool::Task;
/// fn square(x: i64) -> anyhow::Result<i64> {
///     Ok(x * x)
/// }
/// static SQUARE: Task = common::typed_task!("square", square);
/// static HALF: Task = common::typed_task!("half", |x: f64| Ok(x / 2.0));
/// ```
///
/// `apply` and `apply_async` call it through JSON values like any task. A chunk of `map`
/// reaches it without them: each item is read from the chunk's text straight into `$f`'s
/// argument and each result written straight into the answer's text, which is what makes a
/// `map` of small items several times cheaper than through a [`TaskFn`] on [`Value`]s. An item
/// that is not of the argument type fails that item, as a bad argument of a [`Task::new`] task
/// does.
#[macro_export]
macro_rules! typed_task {
    ($name:expr, $f:expr) => {
        $crate::pool::Task::typed(
            $name,
            |args| $crate::pool::run_typed($f, args),
            |items, first, len| $crate::pool::run_typed_chunk($f, items, first, len),
        )
    };
}

/// A typed task's function, called on a JSON value (see [`typed_task!`]).
#[doc(hidden)]
pub fn run_typed<A: DeserializeOwned, R: Serialize>(
    f: impl Fn(A) -> anyhow::Result<R>,
    args: Value,
) -> anyhow::Result<Value> {
    let args = serde_json::from_value(args)
        .with_context(|| format!("not an argument of type {}", type_name::<A>()))?;
    Ok(serde_json::to_value(f(args)?)?)
}

/// A typed task's function, run on a chunk of `map` (see [`typed_task!`]) *while the list is
/// read*, writing each result straight into the JSON text of the answer: no list of items and
/// no list of results is built on the way (the profile of `map` was mostly such lists:
/// allocating, growing, copying, freeing), and one `catch_unwind` guards the whole chunk rather
/// than each item. The first failing item fails the chunk, naming its index in the whole `map`.
#[doc(hidden)]
pub fn run_typed_chunk<A: DeserializeOwned, R: Serialize>(
    f: impl Fn(A) -> anyhow::Result<R>,
    items: &str,
    first: usize,
    len: usize,
) -> Result<String, String> {
    let mut out = Vec::with_capacity(items.len() + 2);
    out.push(b'[');
    let (mut at, mut ran) = (0, true);
    let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let counted = for_each_item::<A>(items, |item| {
            ran = false;
            let value = f(item).map_err(|e| format!("on item {}: {e:#}", first + at))?;
            if at > 0 {
                out.push(b',');
            }
            at += 1;
            serde_json::to_writer(Text(&mut out), &value).map_err(|e| format!("a result: {e}"))?;
            ran = true;
            Ok(())
        });
        // An item that is not of the task's argument type is that item's error, as in Python a
        // `TypeError` raised by the function would be.
        counted.map_err(|e| match ran {
            true => {
                format!("on item {}: not an argument of type {}: {e}", first + at, type_name::<A>())
            }
            false => e,
        })
    }));
    chunk_outcome(counted, out, first + at, len)
}

/// Called with a task's result, in the parent's result-handler thread (Python's `callback`).
pub type Callback = Box<dyn FnOnce(&Value) + Send + 'static>;
/// Called with a task's error, in the parent's result-handler thread (`error_callback`).
pub type ErrorCallback = Box<dyn FnOnce(&PoolError) + Send + 'static>;

/// What can go wrong with a pool or a task. Cloned into every handle that asks for a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A task submitted after `close` or `terminate`.
    #[error("Pool not running: close() or terminate() was called (Python: ValueError)")]
    NotRunning,
    /// `join` before `close` or `terminate`.
    #[error(
        "join() needs close() or terminate() first: Pool is still running (Python: ValueError)"
    )]
    StillRunning,
    /// The task itself returned an error (Python re-raises the worker's exception in `get`).
    #[error("task {task} failed: {message}")]
    Task { task: String, message: String },
    /// The worker running the task died (killed, or exited) before sending its result. `job`
    /// is the pool's number for the task ([`AsyncResult::id`]; a chunk's own for `map`).
    #[error(
        "worker {worker} (pid {pid}) {} while running task {task} (job {job})",
        died_how(*.exitcode)
    )]
    WorkerDied { task: String, job: u64, worker: String, pid: i32, exitcode: Option<i32> },
    /// `terminate` came before the task finished.
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
    /// A worker could not be started.
    #[error("starting a pool worker: {0}")]
    Start(String),
}

fn died_how(exitcode: Option<i32>) -> String {
    match exitcode {
        Some(code) if code < 0 => {
            format!("was killed by {}", exitcode_name(Some(code)).trim_start_matches('-'))
        }
        Some(code) => format!("exited with code {code}"),
        None => "ended (its exit status was lost)".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The messages between the parent and its workers.

/// Parent → one worker, through its inbox.
#[derive(Debug, Serialize, Deserialize)]
enum ToWorker {
    /// Run `task` on `args`.
    Run { id: u64, task: String, args: Value },
    /// Run `task` on each of `len` items of `map`, the first of which is item `first`. The
    /// items are the JSON text of one list, encoded once by the thread that called `map`: a
    /// chunk is one frame, the list's text as it is behind a small header (see
    /// [`send_to_worker`]), which only the worker parses (see [`run_chunk`]).
    Chunk { id: u64, task: String, items: String, first: usize, len: usize },
    /// Exit (after `close`, once every task is done).
    Stop,
}

/// Workers (and the parent itself) → the result-handler thread, through the results queue.
#[derive(Debug, Serialize, Deserialize)]
enum FromWorker {
    /// The worker has run its initializer and waits for tasks.
    Ready { w: u32, pid: i32 },
    /// The initializer failed; the worker exits.
    InitFailed { w: u32, pid: i32, error: String },
    /// The outcome of job `id`, which ran for `us` microseconds.
    Done { w: u32, id: u64, us: u64, outcome: Result<Value, String> },
    /// The outcome of chunk `id` of a `map`: the JSON text of its list of results (sent as it
    /// is, like the chunk: see [`send_result`]), parsed only by the handler or the caller of
    /// `map`, straight into the map's list of values.
    ChunkDone { w: u32, id: u64, us: u64, outcome: Result<String, String> },
    /// A `ChunkDone` whose results the handler has already parsed into its map, outside the
    /// pool's lock (see [`Shared::prefill`]). Never sent.
    #[serde(skip)]
    Filled { w: u32, id: u64, us: u64 },
    /// Worker `w` has ended: posted by the thread that watches a worker process, or by a
    /// worker thread itself as its last word.
    Exited { w: u32 },
    /// Nothing: wakes the handler after `close` or `terminate`.
    Wake,
}

/// What a worker is given: its number, its two queues (as descriptors), and its settings.
#[derive(Serialize, Deserialize)]
struct WorkerArgs {
    number: u32,
    inbox: Queue<ToWorker>,
    results: Queue<FromWorker>,
    initializer: Option<(String, Value)>,
    maxtasksperchild: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// A chunk's frame.
//
// Every message travels as its JSON, except a chunk of `map` and a chunk's results: their list
// is already JSON text, encoded once, and goes into the frame as it is, with no escaping into a
// JSON string and no unescaping out of one (`Queue::put_encoded`). Such a frame is the list,
// `\n`, a one-line JSON header, `\n`: it ends with a newline, which a message's compact JSON
// never does, and serde_json's compact list text holds no newline of its own.

/// What a chunk's frame says besides its list (see [`ToWorker::Chunk`]).
#[derive(Serialize, Deserialize)]
struct ChunkHeader<'a> {
    id: u64,
    task: std::borrow::Cow<'a, str>,
    first: usize,
    len: usize,
}

/// What the frame of a chunk's results says besides its list (see [`FromWorker::ChunkDone`]).
#[derive(Serialize, Deserialize)]
struct ChunkDoneHeader {
    w: u32,
    id: u64,
    us: u64,
}

/// Puts the frame of `list` and its header: the header is written after the list in the list's
/// own buffer, which is then given back as it was (no copy of the list into another buffer).
fn put_list(
    queue: &Queue<impl Serialize + serde::de::DeserializeOwned>,
    list: &mut String,
    header: &impl Serialize,
    wait: bool,
) -> Result<(), QueueError> {
    let end = list.len();
    list.push('\n');
    list.push_str(&serde_json::to_string(header).map_err(QueueError::Encode)?);
    list.push('\n');
    let sent = if wait {
        queue.put_encoded(list.as_bytes())
    } else {
        queue.put_encoded_nowait(list.as_bytes())
    };
    list.truncate(end);
    sent
}

/// A frame body, told apart.
enum Frame {
    /// A message's JSON.
    Message(Vec<u8>),
    /// A list's text and its header's JSON.
    List { list: String, header: Vec<u8> },
}

/// Splits a frame body into its list (as text) and its header, if it is a list's frame.
fn split_list_frame(mut body: Vec<u8>) -> Result<Frame, QueueError> {
    if body.last() != Some(&b'\n') {
        return Ok(Frame::Message(body));
    }
    let end = body.len() - 1;
    let bad = |what: &str| {
        QueueError::Decode(<serde_json::Error as serde::de::Error>::custom(format!(
            "a chunk's frame {what}"
        )))
    };
    let split =
        body[..end].iter().rposition(|&c| c == b'\n').ok_or_else(|| bad("has no header"))?;
    let header = body[split + 1..end].to_vec();
    body.truncate(split);
    let list = String::from_utf8(body).map_err(|_| bad("is not UTF-8"))?;
    Ok(Frame::List { list, header })
}

/// Writes a message to a worker's inbox without waiting (a chunk as its list's text).
fn send_to_worker(inbox: &Queue<ToWorker>, msg: &mut ToWorker) -> Result<(), QueueError> {
    match msg {
        ToWorker::Chunk { id, task, items, first, len } => {
            let header =
                ChunkHeader { id: *id, task: task.as_str().into(), first: *first, len: *len };
            put_list(inbox, items, &header, false)
        }
        other => inbox.put_nowait(&*other),
    }
}

/// Reads a message of a worker's inbox (see [`send_to_worker`]).
fn decode_to_worker(body: Vec<u8>) -> Result<ToWorker, QueueError> {
    match split_list_frame(body)? {
        Frame::Message(json) => serde_json::from_slice(&json).map_err(QueueError::Decode),
        Frame::List { list: items, header } => {
            let h: ChunkHeader = serde_json::from_slice(&header).map_err(QueueError::Decode)?;
            Ok(ToWorker::Chunk {
                id: h.id,
                task: h.task.into_owned(),
                items,
                first: h.first,
                len: h.len,
            })
        }
    }
}

/// Writes a worker's answer to the results queue (a chunk's results as their list's text).
fn send_result(results: &Queue<FromWorker>, msg: &mut FromWorker) -> Result<(), QueueError> {
    match msg {
        FromWorker::ChunkDone { w, id, us, outcome: Ok(list) } => {
            put_list(results, list, &ChunkDoneHeader { w: *w, id: *id, us: *us }, true)
        }
        other => results.put(&*other),
    }
}

/// Reads a message of the results queue (see [`send_result`]).
fn decode_from_worker(body: Vec<u8>) -> Result<FromWorker, QueueError> {
    match split_list_frame(body)? {
        Frame::Message(json) => serde_json::from_slice(&json).map_err(QueueError::Decode),
        Frame::List { list, header } => {
            let h: ChunkDoneHeader = serde_json::from_slice(&header).map_err(QueueError::Decode)?;
            Ok(FromWorker::ChunkDone { w: h.w, id: h.id, us: h.us, outcome: Ok(list) })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// The body of a pool's worker process: call it from the worker [`Role`] with the program's
/// task list (`Role::new("pool-worker", |args| pool::serve(args, TASKS))`). It runs the
/// initializer, then every task its inbox brings, until told to stop (or after
/// `maxtasksperchild` tasks). A task's error or panic becomes that task's error result; the
/// worker goes on.
pub fn serve(args: Value, tasks: &[&Task]) -> anyhow::Result<()> {
    let args: WorkerArgs = serde_json::from_value(args)
        .context("decoding a pool worker's arguments (its queues travel as descriptors)")?;
    let find = |name: &str| tasks.iter().find(|t| t.name == name).copied();
    work(&args, &find, None)
}

fn work<'t>(
    a: &WorkerArgs,
    find: &dyn Fn(&str) -> Option<&'t Task>,
    terminated: Option<&AtomicBool>,
) -> anyhow::Result<()> {
    let pid = std::process::id() as i32;
    if let Some((name, init_args)) = &a.initializer
        && let Err(error) = run_task(find, name, init_args.clone())
    {
        a.results.put(FromWorker::InitFailed { w: a.number, pid, error: error.clone() })?;
        anyhow::bail!("the pool's initializer {name} failed: {error}");
    }
    a.results.put(FromWorker::Ready { w: a.number, pid })?;
    let mut done = 0usize;
    loop {
        let skip = || terminated.is_some_and(|t| t.load(Ordering::SeqCst));
        const SKIPPED: &str = "the pool was terminated before the task started";
        let micros = |began: Instant| began.elapsed().as_micros() as u64;
        let w = a.number;
        let mut reply = match decode_to_worker(a.inbox.get_encoded()?)? {
            ToWorker::Stop => return Ok(()),
            ToWorker::Run { id, task, args } => {
                let began = Instant::now();
                let outcome =
                    if skip() { Err(SKIPPED.into()) } else { run_task(find, &task, args) };
                FromWorker::Done { w, id, us: micros(began), outcome }
            }
            ToWorker::Chunk { id, task, items, first, len } => {
                let began = Instant::now();
                let outcome = match find(&task) {
                    _ if skip() => Err(SKIPPED.into()),
                    Some(Task { chunk: Some(chunk), .. }) => chunk(&items, first, len),
                    Some(task) => run_chunk(task.run, &items, first, len),
                    None => Err(no_such_task(&task)),
                };
                FromWorker::ChunkDone { w, id, us: micros(began), outcome }
            }
        };
        let sent = send_result(&a.results, &mut reply);
        if let Err(QueueError::TooLarge { size, max }) = sent {
            let error = format!("its result is {size} bytes of JSON, more than the limit of {max}");
            let reply = match reply {
                FromWorker::ChunkDone { id, us, .. } => {
                    FromWorker::ChunkDone { w, id, us, outcome: Err(error) }
                }
                FromWorker::Done { id, us, .. } => {
                    FromWorker::Done { w, id, us, outcome: Err(error) }
                }
                other => other,
            };
            a.results.put(reply)?;
        } else {
            sent?;
        }
        done += 1;
        if a.maxtasksperchild.is_some_and(|max| done >= max) {
            return Ok(());
        }
    }
}

/// Runs one task, turning its error or panic into the message its result will carry.
fn run_task<'t>(
    find: &dyn Fn(&str) -> Option<&'t Task>,
    name: &str,
    args: Value,
) -> Result<Value, String> {
    match find(name) {
        Some(task) => run_one(task.run, args),
        None => Err(no_such_task(name)),
    }
}

fn no_such_task(name: &str) -> String {
    format!(
        "this worker has no task named {name:?} (a pool runs only the tasks listed where its \
         worker role calls pool::serve)"
    )
}

fn run_one(run: TaskFn, args: Value) -> Result<Value, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(args))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
    }
}

/// Runs a [`Task::new`] task on a chunk of `map`: as a typed task on [`Value`]s.
fn run_chunk(run: TaskFn, items: &str, first: usize, len: usize) -> Result<String, String> {
    run_typed_chunk(run, items, first, len)
}

/// A chunk's answer, once its items have been run: the list's text (`out`, closed here), or
/// the error of item `failed` (its place in the whole `map`), or of a chunk that held another
/// number of items than `len`.
fn chunk_outcome(
    counted: std::thread::Result<Result<usize, String>>,
    mut out: Vec<u8>,
    failed: usize,
    len: usize,
) -> Result<String, String> {
    match counted {
        Err(panic) => Err(format!("on item {failed}: panicked: {}", panic_message(panic.as_ref()))),
        Ok(Err(e)) => Err(e),
        Ok(Ok(n)) if n != len => Err(format!("a chunk of {len} items of map arrived with {n}")),
        Ok(Ok(_)) => {
            out.push(b']');
            String::from_utf8(out).map_err(|e| format!("a chunk's results: {e}"))
        }
    }
}

/// The JSON text of a chunk's items, the next `len` of `items`, written into a buffer sized for
/// it up front (growing a buffer item by item showed in the profile as copying); with how many
/// items there were (fewer than `len` if `items` ends first).
fn encode_list<T: Serialize>(
    items: &mut impl Iterator<Item = T>,
    len: usize,
) -> Result<(String, usize), serde_json::Error> {
    let mut text = Vec::with_capacity(len * 8 + 2);
    let mut count = 0;
    let mut json = serde_json::Serializer::new(Text(&mut text));
    serde::Serializer::collect_seq(&mut json, items.take(len).inspect(|_| count += 1))?;
    Ok((String::from_utf8(text).expect("serde_json writes UTF-8"), count))
}

/// The buffer a list's JSON text is written into. serde_json writes an item in small pieces (a
/// number's digits, a comma); a `Vec`'s own `write` copies each with a call to `memcpy`, which
/// the profile of `map` showed as a tenth of its time: here a short piece is copied byte by byte.
struct Text<'a>(&'a mut Vec<u8>);

impl std::io::Write for Text<'_> {
    #[inline]
    fn write(&mut self, piece: &[u8]) -> std::io::Result<usize> {
        self.write_all(piece)?;
        Ok(piece.len())
    }

    #[inline]
    fn write_all(&mut self, piece: &[u8]) -> std::io::Result<()> {
        if piece.len() <= 24 {
            // One capacity check for the piece, then plain stores (`push` would check each).
            self.0.extend(piece.iter().copied());
        } else {
            self.0.extend_from_slice(piece);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a chunk's answer (a JSON list) straight into its places in the map's results.
fn fill(slots: &mut [Value], answer: &str) -> Result<(), String> {
    let want = slots.len();
    let mut places = slots.iter_mut();
    let n = for_each_item(answer, |value| match places.next() {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => Err(format!("more than {want} results for a chunk of {want} items")),
    })?;
    if n == want { Ok(()) } else { Err(format!("{n} results for a chunk of {want} items")) }
}

/// Calls `each` with every element of the JSON list `text`, read as an `R`, in order; returns
/// how many there were. The elements `map` usually carries (whole numbers, strings without
/// escapes, `true`, `false`, `null`) are found here directly and handed to `R`'s `Deserialize`
/// as serde_json would hand them (the same visitor call: `visit_u64`, `visit_borrowed_str`...),
/// which is several times faster than a general JSON parser and builds no [`Value`] on the way
/// when `R` is a number or a string; anything else (a float, an escape, a list, an object, or an
/// element `R` does not take that way, such as a number for an `Option`) is read by serde_json.
/// The text is always serde_json's own output, but a damaged one is still an error, never a
/// wrong value.
fn for_each_item<R: DeserializeOwned>(
    text: &str,
    mut each: impl FnMut(R) -> Result<(), String>,
) -> Result<usize, String> {
    let b = text.as_bytes();
    let skip_space = |p: &mut usize| {
        while b.get(*p).is_some_and(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t')) {
            *p += 1;
        }
    };
    let mut p = 0;
    skip_space(&mut p);
    if b.get(p) != Some(&b'[') {
        return Err("a chunk is not a JSON list".into());
    }
    p += 1;
    skip_space(&mut p);
    let mut n = 0;
    if b.get(p) == Some(&b']') {
        p += 1;
    } else {
        loop {
            skip_space(&mut p);
            // The commonest element first, in one tight loop: a whole number right before a
            // comma or the end, as serde_json writes a list of numbers.
            let (mut q, mut v) = (p, 0u64);
            while let Some(d) = b.get(q).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
                v = v.wrapping_mul(10).wrapping_add(u64::from(d));
                q += 1;
            }
            let digits = q - p;
            if (1..=18).contains(&digits)
                && (digits == 1 || b[p] != b'0')
                && matches!(b.get(q), Some(b',' | b']'))
                && let Ok(value) = Scalar::Unsigned(v).read()
            {
                each(value)?;
                n += 1;
                p = q + 1;
                if b[q] == b']' {
                    break;
                }
                continue;
            }
            let fast =
                plain_scalar(b, p).and_then(|(scalar, end)| Some((scalar.read().ok()?, end)));
            let (value, end) = match fast {
                Some(found) => found,
                None => {
                    let mut one = serde_json::Deserializer::from_str(&text[p..]).into_iter::<R>();
                    let value = one.next().ok_or("a list cut short")?.map_err(|e| e.to_string())?;
                    (value, p + one.byte_offset())
                }
            };
            each(value)?;
            n += 1;
            p = end;
            skip_space(&mut p);
            match b.get(p) {
                Some(b',') => p += 1,
                Some(b']') => {
                    p += 1;
                    break;
                }
                _ => return Err(format!("expected , or ] at byte {p} of a list")),
            }
        }
    }
    skip_space(&mut p);
    if p == b.len() { Ok(n) } else { Err(format!("trailing characters at byte {p} of a list")) }
}

/// A common element of a list, found by [`plain_scalar`].
enum Scalar<'a> {
    /// A whole number without a sign (serde_json hands it to `visit_u64`).
    Unsigned(u64),
    /// A negative whole number (`visit_i64`).
    Negative(i64),
    /// A string without escapes (`visit_borrowed_str`).
    Str(&'a str),
    Bool(bool),
    /// `null` (`visit_unit`, or `visit_none` for an `Option`).
    Null,
}

impl<'a> Scalar<'a> {
    /// The element as an `R`, through the visitor call serde_json would make for it.
    fn read<R: Deserialize<'a>>(self) -> Result<R, serde_json::Error> {
        use serde::de::IntoDeserializer;
        use serde::de::value::BorrowedStrDeserializer;
        match self {
            Scalar::Unsigned(v) => R::deserialize(v.into_deserializer()),
            Scalar::Negative(v) => R::deserialize(v.into_deserializer()),
            Scalar::Str(s) => R::deserialize(BorrowedStrDeserializer::new(s)),
            Scalar::Bool(v) => R::deserialize(v.into_deserializer()),
            Scalar::Null => R::deserialize(().into_deserializer()),
        }
    }
}

/// The common elements of a list, found directly: a whole number of at most 18 digits, a
/// string without escapes, `true`, `false`, `null`; with the byte offset just after it. `None`
/// for anything else, which serde_json then reads (and rejects if it is not JSON).
fn plain_scalar(b: &[u8], p: usize) -> Option<(Scalar<'_>, usize)> {
    let rest = &b[p..];
    match *rest.first()? {
        b'-' | b'0'..=b'9' => {
            let negative = rest[0] == b'-';
            let digits = &rest[usize::from(negative)..];
            // One pass: the digits are counted and summed together (wrapping: a number of more
            // than 18 digits is refused below, whatever the sum).
            let (mut len, mut v) = (0, 0i64);
            while let Some(d) = digits.get(len).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
                v = v.wrapping_mul(10).wrapping_add(i64::from(d));
                len += 1;
            }
            let fraction = matches!(digits.get(len), Some(b'.' | b'e' | b'E'));
            if len == 0 || len > 18 || (len > 1 && digits[0] == b'0') || fraction {
                return None;
            }
            let end = p + usize::from(negative) + len;
            match (negative, v) {
                (false, v) => Some((Scalar::Unsigned(v as u64), end)),
                (true, 0) => None, // -0: serde_json's own reading
                (true, v) => Some((Scalar::Negative(-v), end)),
            }
        }
        b'"' => {
            let body = &rest[1..];
            let len = body.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            if body[len] != b'"' {
                return None;
            }
            let s = std::str::from_utf8(&body[..len]).ok()?;
            Some((Scalar::Str(s), p + len + 2))
        }
        b't' if rest.starts_with(b"true") => Some((Scalar::Bool(true), p + 4)),
        b'f' if rest.starts_with(b"false") => Some((Scalar::Bool(false), p + 5)),
        b'n' if rest.starts_with(b"null") => Some((Scalar::Null, p + 4)),
        _ => None,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

struct Slot {
    id: u64,
    task: &'static str,
    /// The pid of the worker the task was last given to; 0 before that.
    pid: AtomicI32,
    value: Mutex<SlotValue>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotValue {
    outcome: Option<Result<Value, PoolError>>,
    /// Threads asleep in `get`: the handler wakes them only if there are any (a wake-up is a
    /// system call, and most results are set before anyone asks for them).
    waiting: usize,
}

impl Slot {
    fn new(id: u64, task: &'static str) -> Arc<Slot> {
        Arc::new(Slot {
            id,
            task,
            pid: AtomicI32::new(0),
            value: Mutex::new(SlotValue::default()),
            ready: Condvar::new(),
        })
    }

    fn set(&self, outcome: Result<Value, PoolError>) {
        let mut value = lock(&self.value);
        if value.outcome.is_none() {
            value.outcome = Some(outcome);
        }
        if value.waiting > 0 {
            self.ready.notify_all();
        }
    }

    /// Waits until the outcome is set, or `deadline` passes; `None` then.
    fn wait(&self, deadline: Option<Instant>) -> Option<Result<Value, PoolError>> {
        let mut value = lock(&self.value);
        loop {
            if let Some(outcome) = value.outcome.as_ref() {
                return Some(outcome.clone());
            }
            value.waiting += 1;
            value = match deadline {
                None => self.ready.wait(value).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        value.waiting -= 1;
                        return None;
                    }
                    self.ready.wait_timeout(value, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            value.waiting -= 1;
        }
    }
}

/// The result of a task submitted with `apply_async` or `map_async` (Python's `AsyncResult`):
/// a handle that can be asked whether the task is done and waited on. Cloning it gives another
/// handle on the same result.
#[derive(Clone)]
pub struct AsyncResult {
    slot: Arc<Slot>,
}

impl fmt::Debug for AsyncResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<AsyncResult job={} task={} ready={}>",
            self.slot.id,
            self.slot.task,
            self.ready()
        )
    }
}

impl AsyncResult {
    /// Waits for the result: the task's value, or its error.
    pub fn get(&self) -> Result<Value, PoolError> {
        self.slot.wait(None).unwrap_or(Err(PoolError::Timeout))
    }

    /// Like [`AsyncResult::get`], waiting at most `timeout`: [`PoolError::Timeout`] after that
    /// (the task goes on; ask again later).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Value, PoolError> {
        let deadline = Instant::now().checked_add(timeout);
        self.slot.wait(deadline).unwrap_or(Err(PoolError::Timeout))
    }

    /// Waits for the result and takes it out of the handle: for a caller that holds the only
    /// handle (a large `map` is not copied).
    fn take(self) -> Result<Value, PoolError> {
        let mut value = lock(&self.slot.value);
        loop {
            if let Some(outcome) = value.outcome.take() {
                return outcome;
            }
            value.waiting += 1;
            value = self.slot.ready.wait(value).unwrap_or_else(|e| e.into_inner());
            value.waiting -= 1;
        }
    }

    /// Waits until the result is ready (Python's `wait()`); true if it is, within `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        !matches!(self.get_timeout(timeout), Err(PoolError::Timeout))
    }

    /// Whether the task has finished (with a value or an error).
    pub fn ready(&self) -> bool {
        lock(&self.slot.value).outcome.is_some()
    }

    /// Whether the task finished without error; [`PoolError::NotReady`] before it finished.
    pub fn successful(&self) -> Result<bool, PoolError> {
        match lock(&self.slot.value).outcome.as_ref() {
            Some(outcome) => Ok(outcome.is_ok()),
            None => Err(PoolError::NotReady),
        }
    }

    /// The pool's number for this job (in submission order).
    pub fn id(&self) -> u64 {
        self.slot.id
    }

    /// The pid of the worker the task was given to (the last one, if it was handed on after
    /// its first worker died before starting it); `None` while it waits, and for `map`.
    pub fn pid(&self) -> Option<i32> {
        match self.slot.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

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
            start_method: crate::process::default_start_method(),
            initializer: None,
            maxtasksperchild: None,
            name: "pool-worker".to_string(),
            report: false,
        }
    }
}

/// Processes or threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Processes,
    Threads,
}

enum Workers {
    Processes { role: &'static Role, method: StartMethod },
    Threads,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Closed,
    Terminated,
}

struct Pending {
    id: u64,
    wire: ToWorker,
}

enum Sink {
    One { slot: Arc<Slot>, callback: Option<Callback>, error_callback: Option<ErrorCallback> },
    Chunk { map: Arc<MapShared>, start: usize, len: usize },
}

struct Job {
    task: &'static str,
    sink: Sink,
}

/// A `map` in progress, shared by its chunks' jobs (and, for `map`, by its caller).
struct MapShared {
    job: Mutex<MapJob>,
}

struct MapJob {
    slot: Arc<Slot>,
    /// `map_async`'s results, each chunk's filled in its places as it comes.
    values: Vec<Value>,
    /// `map`'s results instead, read as its caller's type (see [`ChunkReader`]).
    reader: Option<Box<dyn ChunkReader>>,
    chunks_left: usize,
    callback: Option<Callback>,
    error_callback: Option<ErrorCallback>,
    finished: bool,
}

/// Reads the chunks of a `map` into one list of its caller's result type, in the handler
/// thread as each chunk's answer comes, while the caller's thread is still encoding the next
/// chunks (it was the busiest thread of a map: it both encoded every item and read every
/// result). The handler has just read the answer's text from the results queue, so the text is
/// still in its core's cache.
trait ChunkReader: Send {
    /// Makes room for the map's `n` results, once they are counted.
    fn expect(&mut self, n: usize);
    /// Reads the answer to the chunk of `len` items starting at item `start`.
    fn read(&mut self, start: usize, len: usize, text: String) -> Result<(), String>;
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

/// The results of a `map` as `R`s, read straight onto the end of the list: a chunk that ends
/// before the ones in front of it waits as text for its turn. So the list is written once, item
/// after item, and holds no placeholder (filling 100,000 placeholders first was, with their
/// page faults, a third of a first map's time).
struct InOrder<R> {
    values: Vec<R>,
    early: HashMap<usize, (usize, String)>,
}

impl<R: DeserializeOwned + Send + 'static> ChunkReader for InOrder<R> {
    fn expect(&mut self, n: usize) {
        self.values.reserve_exact(n);
    }

    fn read(&mut self, start: usize, len: usize, text: String) -> Result<(), String> {
        self.early.insert(start, (len, text));
        while let Some((len, text)) = self.early.remove(&self.values.len()) {
            let read = for_each_item(&text, |value| {
                self.values.push(value);
                Ok(())
            })?;
            if read != len {
                return Err(format!("{read} results for a chunk of {len} items"));
            }
        }
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// A submitted map: its handle, and its shared part and its number of items (`None` for no
/// items).
type SubmittedMap = (AsyncResult, Option<(Arc<MapShared>, usize)>);

/// Where a map's results go.
struct MapEnds {
    reader: Option<Box<dyn ChunkReader>>,
    callback: Option<Callback>,
    error_callback: Option<ErrorCallback>,
}

/// What a worker answered: a value (`apply`), or a chunk's results as JSON text (`map`).
enum Answer {
    Value(Value),
    Raw(String),
    /// A chunk's results, already in their places (see [`Shared::prefill`]).
    Filled,
}

/// A finished job whose callback must run (outside the lock) before its result is set.
struct Completion {
    slot: Arc<Slot>,
    outcome: Result<Value, PoolError>,
    callback: Option<Callback>,
    error_callback: Option<ErrorCallback>,
}

impl Completion {
    fn run(self) {
        let Completion { slot, outcome, callback, error_callback } = self;
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &outcome {
            Ok(value) => callback.map(|cb| cb(value)),
            Err(error) => error_callback.map(|cb| cb(error)),
        }));
        if let Err(panic) = called {
            report::write_stderr(&format!(
                "{}: a pool callback of job {} panicked: {}",
                report::who(),
                slot.id,
                panic_message(panic.as_ref())
            ));
        }
        slot.set(outcome);
    }
}

enum Handle {
    Process(Process),
    Thread(Option<JoinHandle<()>>),
}

struct Worker {
    number: u32,
    name: String,
    pid: i32,
    handle: Handle,
    inbox: Queue<ToWorker>,
    /// Jobs given to it and not yet answered, in the order given (it runs them in this order).
    outstanding: VecDeque<u64>,
    /// Jobs given over its life (for `maxtasksperchild`).
    given: usize,
    /// When it was last given a job (the pool's count of jobs given): of two idle workers, the
    /// one idle the longer gets the next job, so that work goes round all of them.
    last_given: u64,
    /// `Stop` was sent, or it was signalled: it takes no more tasks.
    stopping: bool,
    /// Its inbox refused a task for another reason than being full: it takes no more.
    faulty: bool,
}

impl Worker {
    fn can_take(&self, max: Option<usize>) -> bool {
        !self.stopping && !self.faulty && max.is_none_or(|m| self.given < m)
    }
}

struct State {
    phase: Phase,
    broken: Option<String>,
    next_id: u64,
    backlog: VecDeque<Pending>,
    jobs: HashMap<u64, Job>,
    workers: Vec<Worker>,
    next_number: u32,
    stop_sent: bool,
    terminate_done: bool,
    terminating_since: Option<Instant>,
    killed_after_grace: bool,
    /// How long a task runs, in µs: a moving average of what the workers report.
    task_us: Option<f64>,
    /// Jobs that failed before reaching a worker, whose callbacks the handler runs.
    deferred: Vec<Completion>,
    /// Jobs given to workers so far (the clock of `Worker::last_given`).
    given: u64,
}

impl State {
    fn check_open(&self) -> Result<(), PoolError> {
        if let Some(why) = &self.broken {
            return Err(PoolError::Broken(why.clone()));
        }
        match self.phase {
            Phase::Running => Ok(()),
            _ => Err(PoolError::NotRunning),
        }
    }
}

struct Shared {
    size: usize,
    name: String,
    report: bool,
    workers: Workers,
    initializer: Option<(String, Value)>,
    maxtasksperchild: Option<usize>,
    state: Mutex<State>,
    results: Queue<FromWorker>,
    /// Thread pools: the tasks submitted so far, found by name by the worker threads.
    known: Mutex<HashMap<&'static str, &'static Task>>,
    /// Thread pools: set by `terminate`, so a worker skips the tasks it still holds.
    terminated: AtomicBool,
    /// A `Wake` is on its way to the handler: submitters need not send another.
    poked: AtomicBool,
}

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
        Pool::start(
            Workers::Threads,
            PoolOptions { name: "pool-thread".into(), ..PoolOptions::new(threads) },
        )
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
        let kind = match self.kind() {
            Kind::Processes => "processes",
            Kind::Threads => "threads",
        };
        write!(f, "<Pool {} state={state} pool_size={} {kind}>", self.shared.name, self.shared.size)
    }
}

/// A worker as the pool sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub number: u32,
    pub name: String,
    /// The process's pid (for a thread pool, this program's pid).
    pub pid: i32,
    /// Tasks given to it so far.
    pub given: usize,
}

impl Pool {
    /// A pool of `processes` worker processes running `worker`, a role whose function calls
    /// [`serve`] with the program's task list (`Pool(processes=3)`).
    pub fn new(processes: usize, worker: &'static Role) -> Result<Pool, PoolError> {
        Pool::with_options(worker, PoolOptions::new(processes))
    }

    /// A pool of worker processes with options (start method, initializer, maxtasksperchild).
    pub fn with_options(worker: &'static Role, options: PoolOptions) -> Result<Pool, PoolError> {
        let method = options.start_method;
        Pool::start(Workers::Processes { role: worker, method }, options)
    }

    fn start(workers: Workers, options: PoolOptions) -> Result<Pool, PoolError> {
        if options.processes == 0 {
            return Err(PoolError::Invalid(
                "a pool needs at least 1 worker (Python: ValueError: Number of processes must be \
                 at least 1)"
                    .into(),
            ));
        }
        if options.maxtasksperchild == Some(0) {
            return Err(PoolError::Invalid("maxtasksperchild must be at least 1".into()));
        }
        let results = Queue::with_max_message(0, MAX_MESSAGE)
            .map_err(|e| PoolError::Start(format!("making the results queue: {e}")))?;
        let shared = Arc::new(Shared {
            size: options.processes,
            name: options.name,
            report: options.report,
            workers,
            initializer: options
                .initializer
                .as_ref()
                .map(|(task, args)| (task.name.to_string(), args.clone())),
            maxtasksperchild: options.maxtasksperchild,
            state: Mutex::new(State {
                phase: Phase::Running,
                broken: None,
                next_id: 0,
                backlog: VecDeque::new(),
                jobs: HashMap::new(),
                workers: Vec::new(),
                next_number: 1,
                stop_sent: false,
                terminate_done: false,
                terminating_since: None,
                killed_after_grace: false,
                task_us: None,
                deferred: Vec::new(),
                given: 0,
            }),
            results,
            known: Mutex::new(HashMap::new()),
            terminated: AtomicBool::new(false),
            poked: AtomicBool::new(false),
        });
        if let Some((task, _)) = &options.initializer {
            lock(&shared.known).insert(task.name, task);
        }
        // The handler thread starts the workers and outlives them all: a worker asks the kernel
        // to kill it when the *thread* that started it ends (PR_SET_PDEATHSIG), so the pool's
        // workers must not be started by a thread that may end before the pool does.
        let (started_tx, started_rx) = mpsc::channel();
        let handler = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(HANDLER_THREAD.into())
                .spawn(move || handler_main(shared, started_tx))
                .map_err(|e| {
                    PoolError::Start(format!("starting the {HANDLER_THREAD} thread: {e}"))
                })?
        };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Pool { shared, handler: Mutex::new(Some(handler)) }),
            Ok(Err(e)) => {
                let _ = handler.join();
                Err(e)
            }
            Err(_) => {
                let _ = handler.join();
                Err(PoolError::Start("the pool's handler thread ended at start".into()))
            }
        }
    }

    /// Processes or threads.
    pub fn kind(&self) -> Kind {
        match self.shared.workers {
            Workers::Processes { .. } => Kind::Processes,
            Workers::Threads => Kind::Threads,
        }
    }

    /// How many workers the pool keeps.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// The workers alive now, oldest first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        lock(&self.shared.state)
            .workers
            .iter()
            .map(|w| WorkerInfo {
                number: w.number,
                name: w.name.clone(),
                pid: w.pid,
                given: w.given,
            })
            .collect()
    }

    /// The pids of the worker processes alive now (empty for a thread pool).
    pub fn pids(&self) -> Vec<i32> {
        match self.kind() {
            Kind::Processes => self.workers().iter().map(|w| w.pid).collect(),
            Kind::Threads => Vec::new(),
        }
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
    /// `error_callback` (called with the error), both run in the parent's result-handler thread.
    pub fn apply_async_with(
        &self,
        task: &'static Task,
        args: impl Serialize,
        callback: Option<Callback>,
        error_callback: Option<ErrorCallback>,
    ) -> Result<AsyncResult, PoolError> {
        let args = encode_args(task, args)?;
        self.remember(task);
        let mut st = lock(&self.shared.state);
        st.check_open()?;
        let id = st.next_id;
        st.next_id += 1;
        let slot = Slot::new(id, task.name);
        st.jobs.insert(
            id,
            Job {
                task: task.name,
                sink: Sink::One { slot: slot.clone(), callback, error_callback },
            },
        );
        let wire = ToWorker::Run { id, task: task.name.to_string(), args };
        st.backlog.push_back(Pending { id, wire });
        drop(st);
        self.shared.poke();
        Ok(AsyncResult { slot })
    }

    /// Runs `task` on every item, in chunks, and returns the results in the items' order
    /// (Python's `map`), each read as an `R`: a [`Value`], or whatever type the task's results
    /// are (`let squares: Vec<u64> = pool.map(&SQUARE, 0..10)?`). The first error fails the
    /// whole call, and so does a result that is not an `R`.
    pub fn map<T: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_chunked(task, items, None)
    }

    /// [`Pool::map`] with a chosen chunk size (items per task sent to a worker); `None` chooses
    /// as Python does (the items split into about four chunks per worker).
    pub fn map_chunked<T: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, PoolError> {
        let reader: Box<dyn ChunkReader> =
            Box::new(InOrder::<R> { values: Vec::new(), early: HashMap::new() });
        let ends = MapEnds { reader: Some(reader), callback: None, error_callback: None };
        let (handle, map) = self.submit_map(task, items, chunksize, ends)?;
        handle.take()?;
        let Some((map, n)) = map else { return Ok(Vec::new()) };
        let reader = lock(&map.job).reader.take();
        let broken = |e: String| {
            PoolError::Broken(format!("a worker's answer to a chunk of map({}): {e}", task.name))
        };
        match reader.map(|r| r.into_any().downcast::<InOrder<R>>()) {
            Some(Ok(read)) if read.values.len() == n => Ok(read.values),
            Some(Ok(read)) => Err(broken(format!("{} results for {n} items", read.values.len()))),
            _ => Err(broken("its results were lost".into())),
        }
    }

    /// Like [`Pool::map`], returning at once; the handle's value is the list of results.
    pub fn map_async<T: Serialize>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
        callback: Option<Callback>,
        error_callback: Option<ErrorCallback>,
    ) -> Result<AsyncResult, PoolError> {
        let ends = MapEnds { reader: None, callback, error_callback };
        Ok(self.submit_map(task, items, chunksize, ends)?.0)
    }

    /// Submits a map, whose results go to `ends`: a reader (`map`), or a list of values and the
    /// callbacks (`map_async`).
    fn submit_map<T: Serialize>(
        &self,
        task: &'static Task,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
        ends: MapEnds,
    ) -> Result<SubmittedMap, PoolError> {
        // Items whose number is known (a range, a list) are encoded straight from where they
        // are; others are first collected to be counted, as Python's map makes a list of an
        // iterable that has no len().
        let items = items.into_iter();
        match items.size_hint() {
            (low, Some(high)) if low == high => {
                self.submit_map_of(task, low, items, chunksize, ends)
            }
            _ => {
                let items: Vec<T> = items.collect();
                let n = items.len();
                let items = items.into_iter();
                self.submit_map_of(task, n, items, chunksize, ends)
            }
        }
    }

    /// [`Pool::submit_map`] of `n` items.
    fn submit_map_of<T: Serialize>(
        &self,
        task: &'static Task,
        n: usize,
        mut items: impl Iterator<Item = T>,
        chunksize: Option<usize>,
        ends: MapEnds,
    ) -> Result<SubmittedMap, PoolError> {
        self.remember(task);
        let chunksize = chunksize.unwrap_or_else(|| default_chunksize(n, self.shared.size)).max(1);
        let MapEnds { mut reader, callback, error_callback } = ends;
        if let Some(reader) = reader.as_mut() {
            reader.expect(n);
        }
        let values = if reader.is_some() { Vec::new() } else { vec![Value::Null; n] };
        let mut st = lock(&self.shared.state);
        st.check_open()?;
        let map_id = st.next_id;
        st.next_id += 1;
        let slot = Slot::new(map_id, task.name);
        if n == 0 {
            drop(st);
            slot.set(Ok(Value::Array(Vec::new())));
            return Ok((AsyncResult { slot }, None));
        }
        let chunks = n.div_ceil(chunksize);
        let map = Arc::new(MapShared {
            job: Mutex::new(MapJob {
                slot: slot.clone(),
                values,
                reader,
                chunks_left: chunks,
                callback,
                error_callback,
                finished: false,
            }),
        });
        // Every chunk is a job from now on (so `close` waits for all of them), but reaches the
        // backlog only once encoded: each chunk is encoded here, once, in the caller's thread,
        // straight from the items, and the workers start on the first while the rest are
        // encoded.
        let first_id = st.next_id;
        st.next_id += chunks as u64;
        let part_len = |c: usize| chunksize.min(n - c * chunksize);
        for c in 0..chunks {
            let sink = Sink::Chunk { map: map.clone(), start: c * chunksize, len: part_len(c) };
            st.jobs.insert(first_id + c as u64, Job { task: task.name, sink });
        }
        drop(st);
        for c in 0..chunks {
            let id = first_id + c as u64;
            let (first, len) = (c * chunksize, part_len(c));
            // An iterator that gives another number of items than it said fails the map.
            let encoded = encode_list(&mut items, len).map_err(|e| e.to_string()).and_then(
                |(text, count)| match count == len && (c + 1 < chunks || items.next().is_none()) {
                    true => Ok(text),
                    false => Err(format!("the items' iterator did not give the {n} it said")),
                },
            );
            let mut st = lock(&self.shared.state);
            if !st.jobs.contains_key(&id) {
                break; // terminated (or broken) meanwhile: the map has already failed
            }
            match encoded {
                Ok(items) => {
                    let wire =
                        ToWorker::Chunk { id, task: task.name.to_string(), items, first, len };
                    st.backlog.push_back(Pending { id, wire });
                }
                Err(e) => {
                    let error = PoolError::Invalid(format!(
                        "encoding the items of map({}): {e}",
                        task.name
                    ));
                    for later in id + 1..first_id + chunks as u64 {
                        st.jobs.remove(&later);
                    }
                    // Its error callback runs in the handler thread, like every other's.
                    if let Some(completion) = self.shared.finish_job(id, Err(error), &mut st) {
                        st.deferred.push(completion);
                    }
                    drop(st);
                    self.shared.wake();
                    return Ok((AsyncResult { slot }, Some((map, n))));
                }
            }
            // This thread gives the chunk to a worker itself, if one can take it now, rather
            // than waking the handler to do it: a wake-up less between a chunk's encoding and
            // its worker, and the chunk's buffer is freed here, to be reused by the next one.
            self.shared.dispatch(&mut st);
            let waiting = !st.backlog.is_empty();
            drop(st);
            if waiting {
                self.shared.poke();
            }
        }
        Ok((AsyncResult { slot }, Some((map, n))))
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
        if let Some(handler) = handler {
            handler
                .join()
                .map_err(|_| PoolError::Broken("the result-handler thread panicked".into()))?;
        }
        Ok(())
    }

    /// Stops every worker now (SIGTERM; SIGKILL after a grace period) and fails every unfinished
    /// task with [`PoolError::Terminated`]; returns once every worker is gone. A thread cannot
    /// be stopped: a thread pool's running tasks finish first.
    pub fn terminate(&self) {
        {
            let mut st = lock(&self.shared.state);
            if st.phase != Phase::Terminated {
                st.phase = Phase::Terminated;
                self.shared.terminated.store(true, Ordering::SeqCst);
            }
        }
        self.shared.wake();
        let _ = self.join();
    }

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

fn encode_args(task: &Task, args: impl Serialize) -> Result<Value, PoolError> {
    serde_json::to_value(args)
        .map_err(|e| PoolError::Invalid(format!("encoding the arguments of {}: {e}", task.name)))
}

/// Python's choice: `chunksize, extra = divmod(len(items), len(pool) * 4)`, plus one if extra.
pub fn default_chunksize(items: usize, workers: usize) -> usize {
    let per = workers.max(1) * 4;
    (items / per + usize::from(!items.is_multiple_of(per))).max(1)
}

impl Shared {
    /// Wakes the handler thread (after `close` or `terminate`).
    fn wake(&self) {
        let _ = self.results.put(FromWorker::Wake);
    }

    /// Tells the handler that tasks wait in the backlog: one `Wake` per round of the handler,
    /// however many tasks are submitted meanwhile (it clears `poked` before it dispatches).
    fn poke(&self) {
        if !self.poked.swap(true, Ordering::SeqCst) {
            let _ = self.results.put_nowait(FromWorker::Wake);
        }
    }

    /// Gives waiting tasks to workers: to an idle worker first (the one idle the longest); to a busy
    /// worker only while more tasks wait than there are workers, and only as many as it runs in
    /// about [`PREFETCH_WINDOW`].
    fn dispatch(&self, st: &mut State) {
        if st.phase == Phase::Terminated || st.broken.is_some() {
            return;
        }
        let max = self.maxtasksperchild;
        // Until a task has been timed, assume tasks are long: no task is given in advance.
        let depth = st.task_us.map_or(1, |us| {
            let fits = PREFETCH_WINDOW.as_micros() as f64 / us.max(1.0);
            (1 + fits as usize).min(MAX_PREFETCH)
        });
        let mut full: Vec<u32> = Vec::new();
        while !st.backlog.is_empty() {
            let usable = |w: &Worker| w.can_take(max) && !full.contains(&w.number);
            let live = st.workers.iter().filter(|w| usable(w)).count();
            let prefetch = st.backlog.len() > live;
            let idle = st
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| usable(w) && w.outstanding.is_empty())
                .min_by_key(|(_, w)| w.last_given)
                .map(|(i, _)| i);
            let pick = idle.or_else(|| {
                if !prefetch {
                    return None;
                }
                st.workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| usable(w) && w.outstanding.len() < depth)
                    .min_by_key(|(_, w)| (w.outstanding.len(), w.last_given))
                    .map(|(i, _)| i)
            });
            let Some(i) = pick else { break };
            let Some(mut pending) = st.backlog.pop_front() else { break };
            let worker = &mut st.workers[i];
            match send_to_worker(&worker.inbox, &mut pending.wire) {
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
                    // failure waits there, and the handler is woken (without blocking: this
                    // thread holds the state lock the handler needs to drain the queue).
                    let task = st.jobs.get(&pending.id).map_or("?", |j| j.task);
                    let chunk = matches!(pending.wire, ToWorker::Chunk { .. });
                    let error = PoolError::Invalid(format!(
                        "the arguments of task {task} are {size} bytes of JSON, more than the \
                         limit of {max}{}",
                        if chunk { " (give map a smaller chunksize)" } else { "" }
                    ));
                    if let Some(completion) = self.finish_job(pending.id, Err(error), st) {
                        st.deferred.push(completion);
                        let _ = self.results.put_nowait(FromWorker::Wake);
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
    fn start_worker(
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
                        crate::process::wait_until_ended(pid);
                        let _ = results.put(FromWorker::Exited { w: number });
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
                        let _ = args.results.put(FromWorker::Exited { w: args.number });
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

    /// Job `id` is over: its completion, if one is due (a chunk completes its map only when it
    /// is the last one, or the first to fail).
    fn finish_job(
        &self,
        id: u64,
        outcome: Result<Answer, PoolError>,
        st: &mut State,
    ) -> Option<Completion> {
        let job = st.jobs.remove(&id)?;
        let shape = |why: String| {
            PoolError::Broken(format!("a worker's answer to a job of {}: {why}", job.task))
        };
        match job.sink {
            Sink::One { slot, callback, error_callback } => {
                let outcome = outcome.and_then(|answer| match answer {
                    Answer::Value(value) => Ok(value),
                    Answer::Raw(raw) => {
                        serde_json::from_str(&raw).map_err(|e| shape(e.to_string()))
                    }
                    Answer::Filled => Err(shape("a chunk's answer to a single task".into())),
                });
                Some(Completion { slot, outcome, callback, error_callback })
            }
            Sink::Chunk { map, start, len } => {
                let mut m = lock(&map.job);
                if m.finished {
                    return None;
                }
                let filled = outcome.and_then(|answer| {
                    match answer {
                        Answer::Raw(raw) => fill(&mut m.values[start..start + len], &raw),
                        Answer::Filled => Ok(()),
                        Answer::Value(Value::Array(values)) if values.len() == len => {
                            for (slot, v) in m.values[start..start + len].iter_mut().zip(values) {
                                *slot = v;
                            }
                            Ok(())
                        }
                        Answer::Value(_) => Err(format!("not a list of {len} results")),
                    }
                    .map_err(shape)
                });
                let outcome = match filled {
                    Ok(()) => {
                        m.chunks_left -= 1;
                        if m.chunks_left > 0 {
                            return None;
                        }
                        Ok(Value::Array(std::mem::take(&mut m.values)))
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
    fn fail_all(
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

    /// Parses a chunk's results into their places in the map *without holding the pool's
    /// lock*, so that submitting (and `map` sending its next chunks) goes on meanwhile; only
    /// the map's own lock is held, which nothing but the handler takes while the map runs.
    fn prefill(&self, msg: FromWorker) -> FromWorker {
        let FromWorker::ChunkDone { w, id, us, outcome: Ok(text) } = msg else { return msg };
        let target = match lock(&self.state).jobs.get(&id) {
            Some(Job { sink: Sink::Chunk { map, start, len }, .. }) => {
                Some((map.clone(), *start, *len))
            }
            _ => None,
        };
        let Some((map, start, len)) = target else {
            return FromWorker::ChunkDone { w, id, us, outcome: Ok(text) };
        };
        let mut m = lock(&map.job);
        if m.finished {
            return FromWorker::Filled { w, id, us };
        }
        let read = match m.reader.as_mut() {
            Some(reader) => reader.read(start, len, text),
            None => fill(&mut m.values[start..start + len], &text),
        };
        match read {
            Ok(()) => FromWorker::Filled { w, id, us },
            Err(e) => FromWorker::ChunkDone {
                w,
                id,
                us,
                outcome: Err(format!("its results could not be read: {e}")),
            },
        }
    }

    /// Job `id` has been answered by worker `w` after `us` microseconds of work.
    fn on_done(
        &self,
        w: u32,
        id: u64,
        us: u64,
        outcome: Result<Answer, String>,
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
    fn on_message(self: &Arc<Self>, msg: FromWorker, st: &mut State, out: &mut Vec<Completion>) {
        match msg {
            FromWorker::Done { w, id, us, outcome } => {
                self.on_done(w, id, us, outcome.map(Answer::Value), st, out);
            }
            FromWorker::ChunkDone { w, id, us, outcome } => {
                self.on_done(w, id, us, outcome.map(Answer::Raw), st, out);
            }
            FromWorker::Filled { w, id, us } => {
                self.on_done(w, id, us, Ok(Answer::Filled), st, out);
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
    fn break_pool(&self, st: &mut State, why: String, out: &mut Vec<Completion>) {
        if st.broken.is_some() {
            return;
        }
        st.broken = Some(why.clone());
        out.extend(self.fail_all(st, |_| PoolError::Broken(why.clone())));
        self.stop_all(st);
    }

    /// Asks every worker to end now: SIGTERM to a process; a thread gets `Stop`.
    fn stop_all(&self, st: &mut State) {
        for w in &mut st.workers {
            w.stopping = true;
            match &w.handle {
                Handle::Process(process) => {
                    let _ = process.terminate();
                }
                Handle::Thread(_) => {
                    let _ = w.inbox.put_nowait(ToWorker::Stop);
                }
            }
        }
        if st.terminating_since.is_none() {
            st.terminating_since = Some(Instant::now());
        }
    }

    /// Worker `i` has ended: reap it, hand on the tasks it had not started, fail the one it was
    /// running, and start a replacement if the pool still needs one.
    fn on_exit(self: &Arc<Self>, i: usize, st: &mut State, out: &mut Vec<Completion>) {
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
        while let Ok(body) = worker.inbox.get_encoded_nowait() {
            let Ok(msg) = decode_to_worker(body) else { break };
            if let ToWorker::Run { id, .. } | ToWorker::Chunk { id, .. } = &msg {
                back.push(Pending { id: *id, wire: msg });
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
            report::event(
                "pool_worker_exited",
                json!({
                    "worker": worker.name, "pid": worker.pid, "exitcode": exitcode,
                    "status": exitcode_name(exitcode), "lost_task": lost.map(|(t, _)| t),
                    "lost_job": lost.map(|(_, j)| j), "retired": retired,
                    "tasks": worker.given,
                    "replaced_by": replacement.as_ref().map(|(name, pid)| json!({ "worker": name, "pid": pid })),
                }),
                format!("{} (pid {}) {how}{then}", worker.name, worker.pid),
            );
        }
        self.dispatch(st);
    }
}

/// The parent's result-handler thread: starts the workers, then reads every message of the
/// results queue (results, and the news that a worker has ended), runs callbacks, replaces dead
/// workers, and ends once the pool is closed (or terminated) and every worker has exited.
fn handler_main(shared: Arc<Shared>, started: mpsc::Sender<Result<(), PoolError>>) {
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
                            let _ = w.inbox.put_nowait(ToWorker::Stop);
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
            match got.and_then(decode_from_worker) {
                Ok(msg) => {
                    let msg = shared.prefill(msg);
                    let mut st = lock(&shared.state);
                    shared.on_message(msg, &mut st, &mut out);
                }
                Err(QueueError::Empty) => break,
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
                    if w.inbox.put_nowait(ToWorker::Stop).is_err()
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

#[cfg(test)]
mod tests {
    //! Thread pools only: forking inside the multi-threaded test runner is unsafe, so process
    //! pools are tested through the `pool` demo (tests/pool.rs).
    use super::*;

    fn square(x: Value) -> anyhow::Result<Value> {
        let n = x.as_i64().context("square needs a number")?;
        Ok(json!(n * n))
    }
    fn nap(x: Value) -> anyhow::Result<Value> {
        std::thread::sleep(Duration::from_millis(x.as_u64().unwrap_or(10)));
        Ok(json!(std::thread::current().name().unwrap_or("?")))
    }
    fn fail(_: Value) -> anyhow::Result<Value> {
        anyhow::bail!("no luck")
    }
    static SQUARE: Task = Task::new("square", square);
    static NAP: Task = Task::new("nap", nap);
    static FAIL: Task = Task::new("fail", fail);

    #[test]
    fn map_returns_results_in_the_order_of_the_items_whatever_the_chunks() {
        let pool = ThreadPool::new(3).unwrap();
        for chunksize in [None, Some(1), Some(7), Some(1000)] {
            let got: Vec<Value> = pool.map_chunked(&SQUARE, 0..100, chunksize).unwrap();
            let want: Vec<Value> = (0..100i64).map(|i| json!(i * i)).collect();
            assert_eq!(got, want, "chunksize {chunksize:?}");
            let typed: Vec<u64> = pool.map_chunked(&SQUARE, 0..100, chunksize).unwrap();
            assert_eq!(typed, (0..100u64).map(|i| i * i).collect::<Vec<_>>());
        }
        assert_eq!(pool.map::<_, Value>(&SQUARE, Vec::<i64>::new()).unwrap(), Vec::<Value>::new());
        let err = pool.map::<_, Value>(&SQUARE, vec![json!(1), json!("x"), json!(3)]).unwrap_err();
        assert!(err.to_string().contains("on item 1"), "{err}");
        // A result that is not the type asked for fails the map, with serde's words.
        let err = pool.map::<_, i8>(&SQUARE, [3, 30]).unwrap_err();
        assert!(err.to_string().contains("900"), "{err}");
    }

    fn typed_square(x: i64) -> anyhow::Result<i64> {
        anyhow::ensure!(x != 13, "unlucky");
        assert_ne!(x, 14, "a panic on 14");
        Ok(x * x)
    }
    static TYPED_SQUARE: Task = crate::typed_task!("typed-square", typed_square);
    static TYPED_PAIR: Task =
        crate::typed_task!("typed-pair", |(name, n): (String, u32)| Ok(format!("{name}{n}")));

    #[test]
    fn a_typed_task_takes_and_gives_its_own_types_in_map_and_json_in_apply() {
        let pool = ThreadPool::new(2).unwrap();
        for chunksize in [None, Some(1), Some(5)] {
            let got: Vec<i64> = pool.map_chunked(&TYPED_SQUARE, 0..13, chunksize).unwrap();
            assert_eq!(got, (0..13).map(|x| x * x).collect::<Vec<_>>(), "chunksize {chunksize:?}");
            let got: Vec<Value> = pool.map_chunked(&TYPED_SQUARE, -3..3, chunksize).unwrap();
            assert_eq!(got, [9, 4, 1, 0, 1, 4].map(|x| json!(x)));
        }
        let pairs = [("a", 1), ("b\"q", 2)];
        assert_eq!(pool.map::<_, String>(&TYPED_PAIR, pairs).unwrap(), ["a1", "b\"q2"]);
        assert_eq!(pool.apply(&TYPED_SQUARE, 7).unwrap(), json!(49));
        assert_eq!(pool.apply(&TYPED_PAIR, ("x", 3)).unwrap(), json!("x3"));
        // Its errors, its panics and its arguments of the wrong type are the item's errors.
        for (items, what) in [
            (vec![json!(12), json!(13)], "on item 1: unlucky"),
            (vec![json!(1), json!(2), json!(14)], "on item 2: panicked: assertion"),
            (vec![json!(1), json!("x")], "on item 1: not an argument of type i64"),
            (vec![json!(1), json!(2.5)], "on item 1: not an argument of type i64"),
        ] {
            let err = pool.map::<_, i64>(&TYPED_SQUARE, &items).unwrap_err();
            assert!(err.to_string().contains(what), "{items:?}: {err}");
        }
        let err = pool.apply(&TYPED_SQUARE, "x").unwrap_err();
        assert!(err.to_string().contains("not an argument of type i64"), "{err}");
        pool.close();
        pool.join().unwrap();
    }

    /// Says it holds `said` items and gives `gives`.
    struct Liar {
        said: usize,
        gives: std::ops::Range<usize>,
    }

    impl Iterator for Liar {
        type Item = usize;
        fn next(&mut self) -> Option<usize> {
            self.gives.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (self.said, Some(self.said))
        }
    }

    #[test]
    fn items_are_encoded_from_where_they_are_and_a_wrong_count_fails_the_map() {
        let pool = ThreadPool::new(2).unwrap();
        // Without an exact size, the items are collected first.
        let odd = (0..12).filter(|x| x % 2 == 1);
        let got: Vec<i64> = pool.map_chunked(&TYPED_SQUARE, odd, Some(3)).unwrap();
        assert_eq!(got, [1, 9, 25, 49, 81, 121]);
        for (said, gives) in [(10, 0..7), (10, 0..12), (1, 0..2)] {
            let liar = Liar { said, gives: gives.clone() };
            let err = pool.map_chunked::<_, i64>(&TYPED_SQUARE, liar, Some(4)).unwrap_err();
            assert!(
                err.to_string().contains(&format!("did not give the {said} it said")),
                "{said} said, {gives:?} given: {err}"
            );
        }
        // The pool is still good.
        assert_eq!(pool.map::<_, i64>(&TYPED_SQUARE, 0..3).unwrap(), [0, 1, 4]);
        pool.close();
        pool.join().unwrap();
    }

    /// Reads `text` with [`for_each_item`] as a list of `R`, or serde_json's error.
    fn read_list<R: DeserializeOwned>(text: &str) -> Result<Vec<R>, String> {
        let mut got = Vec::new();
        for_each_item(text, |v| {
            got.push(v);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn a_list_read_as_a_type_reads_as_serde_json_reads_it() {
        #[derive(Deserialize, Debug, PartialEq)]
        enum Colour {
            Red,
            Blue,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct Meters(f64);
        fn same<R: DeserializeOwned + PartialEq + fmt::Debug>(text: &str) {
            let ours = read_list::<R>(text);
            let theirs = serde_json::from_str::<Vec<R>>(text).map_err(|e| e.to_string());
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{text} as {}", std::any::type_name::<R>());
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours, theirs, "{text} as {}", std::any::type_name::<R>());
            }
        }
        let lists = [
            "[0,1,255,256,18446744073709551615]",
            "[-1,-128,-129,1.5,-0.0,1e3]",
            "[\"a\",\"q\\\"uote\",\"\",\"ü\"]",
            "[true,false,null,1]",
            "[\"Red\",\"Blue\",\"Green\"]",
            "[[1,2],{\"k\":1}]",
        ];
        // Each list whole, and each of its elements alone (a list of mixed elements fails as a
        // whole for most types).
        let alone = lists.iter().flat_map(|list| {
            let elements: Vec<Value> = serde_json::from_str(list).unwrap();
            elements.into_iter().map(|e| format!("[{e}]"))
        });
        for text in lists.iter().map(|l| l.to_string()).chain(alone) {
            let text = text.as_str();
            same::<Value>(text);
            same::<u64>(text);
            same::<u8>(text);
            same::<i8>(text);
            same::<i64>(text);
            same::<f64>(text);
            same::<Meters>(text);
            same::<String>(text);
            same::<bool>(text);
            same::<Option<u64>>(text);
            same::<Option<String>>(text);
            same::<()>(text);
            same::<Colour>(text);
        }
    }

    #[test]
    fn a_chunk_list_reads_as_serde_json_reads_it_and_a_damaged_one_is_an_error() {
        let lists = [
            json!([]),
            json!([1, -2, 0, i64::MIN, u64::MAX, 1.5, -0.0, 1e300, 123_456_789_012_345_678u64]),
            json!(["a", "q\"uote", "back\\slash", "ü", "", "tab\t", true, false, null]),
            json!([[1, [2]], {"k": [1, "v"]}, [], {}]),
        ];
        for list in lists {
            for text in [
                serde_json::to_string(&list).unwrap(),
                serde_json::to_string_pretty(&list).unwrap(),
            ] {
                let got = read_list::<Value>(&text).unwrap();
                assert_eq!(Value::Array(got), list, "{text}");
            }
        }
        for bad in ["", "[", "[1,", "[1 2]", "[01]", "[1]x", "{}", "[,]", "[1,]", "[tru]", "[\"a]"]
        {
            assert!(read_list::<Value>(bad).is_err(), "{bad:?} was read");
            assert!(read_list::<u64>(bad).is_err(), "{bad:?} was read as numbers");
        }
    }

    #[test]
    fn a_chunk_travels_as_its_list_text_and_every_other_message_as_json() {
        let inbox: Queue<ToWorker> = Queue::with_max_message(0, MAX_MESSAGE).unwrap();
        let (items, _) = encode_list(&mut (0..20_000u64), 20_000).unwrap();
        let mut chunk =
            ToWorker::Chunk { id: 7, task: "echo".into(), items: items.clone(), first: 3, len: 2 };
        send_to_worker(&inbox, &mut chunk).unwrap();
        assert!(matches!(&chunk, ToWorker::Chunk { items: i, .. } if *i == items), "given back");
        inbox.put(ToWorker::Stop).unwrap();
        let body = inbox.get_encoded().unwrap();
        assert!(body.starts_with(items.as_bytes()), "the list's text as it is, not escaped");
        match decode_to_worker(body).unwrap() {
            ToWorker::Chunk { id: 7, task, items: got, first: 3, len: 2 } => {
                assert_eq!((task.as_str(), got == items), ("echo", true));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode_to_worker(inbox.get_encoded().unwrap()), Ok(ToWorker::Stop)));

        let results: Queue<FromWorker> = Queue::with_max_message(0, MAX_MESSAGE).unwrap();
        let mut done = FromWorker::ChunkDone { w: 2, id: 7, us: 5, outcome: Ok("[1,2]".into()) };
        send_result(&results, &mut done).unwrap();
        let mut failed = FromWorker::ChunkDone { w: 2, id: 8, us: 5, outcome: Err("no\n".into()) };
        send_result(&results, &mut failed).unwrap();
        let got = decode_from_worker(results.get_encoded().unwrap()).unwrap();
        assert!(
            matches!(&got, FromWorker::ChunkDone { w: 2, id: 7, us: 5, outcome: Ok(l) } if l == "[1,2]"),
            "{got:?}"
        );
        let got = decode_from_worker(results.get_encoded().unwrap()).unwrap();
        assert!(
            matches!(&got, FromWorker::ChunkDone { id: 8, outcome: Err(e), .. } if e == "no\n"),
            "{got:?}"
        );
        for bad in
            [&b"[1]\n"[..], b"[1]\n{\"w\":1}\n", b"\xff\n{\"w\":1,\"id\":1,\"us\":1}\n", b"{"]
        {
            assert!(decode_from_worker(bad.to_vec()).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn the_chunksize_is_pythons() {
        assert_eq!(default_chunksize(100, 3), 9); // divmod(100, 12) = (8, 4) -> 9
        assert_eq!(default_chunksize(12, 3), 1);
        assert_eq!(default_chunksize(1, 8), 1);
        assert_eq!(default_chunksize(0, 2), 1);
    }

    #[test]
    fn submitting_after_close_and_joining_before_close_are_errors() {
        let pool = ThreadPool::new(2).unwrap();
        assert_eq!(pool.join(), Err(PoolError::StillRunning));
        let r = pool.apply_async(&NAP, 20).unwrap();
        pool.close();
        assert_eq!(pool.apply_async(&SQUARE, 2).unwrap_err(), PoolError::NotRunning);
        assert_eq!(pool.map::<_, Value>(&SQUARE, [1]).unwrap_err(), PoolError::NotRunning);
        pool.join().unwrap();
        assert!(r.ready(), "join waited for the task submitted before close");
        assert_eq!(r.successful(), Ok(true));
        pool.join().unwrap(); // a second join returns at once
        assert!(pool.to_string().contains("state=CLOSE"), "{pool}");
    }

    #[test]
    fn callbacks_run_in_the_result_handler_thread_before_get_returns() {
        let pool = ThreadPool::new(2).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let ok = pool
            .apply_async_with(
                &SQUARE,
                9,
                Some(Box::new(move |v| {
                    tx.send((v.clone(), std::thread::current().name().map(String::from))).unwrap()
                })),
                None,
            )
            .unwrap();
        let bad = pool
            .apply_async_with(
                &FAIL,
                (),
                None,
                Some(Box::new(move |e| {
                    tx2.send((
                        json!(e.to_string()),
                        std::thread::current().name().map(String::from),
                    ))
                    .unwrap()
                })),
            )
            .unwrap();
        assert_eq!(ok.get().unwrap(), json!(81));
        assert!(matches!(bad.get(), Err(PoolError::Task { .. })));
        assert_eq!(bad.successful(), Ok(false));
        let mut seen: Vec<(Value, Option<String>)> = rx.try_iter().collect();
        seen.sort_by_key(|(v, _)| v.to_string());
        assert_eq!(seen.len(), 2, "both callbacks ran before get returned");
        for (_, thread) in &seen {
            assert_eq!(thread.as_deref(), Some(HANDLER_THREAD));
        }
        assert!(seen.iter().any(|(v, _)| v == &json!(81)));
        assert!(seen.iter().any(|(v, _)| v.as_str().is_some_and(|s| s.contains("no luck"))));
    }

    #[test]
    fn get_timeout_and_successful_before_the_result_is_ready() {
        let pool = ThreadPool::new(1).unwrap();
        let r = pool.apply_async(&NAP, 300).unwrap();
        assert_eq!(r.get_timeout(Duration::from_millis(10)), Err(PoolError::Timeout));
        assert_eq!(r.successful(), Err(PoolError::NotReady));
        assert!(!r.ready());
        assert!(r.get_timeout(Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_short_backlog_waits_for_the_first_free_worker_and_maxtasksperchild_replaces_workers() {
        let options = PoolOptions { maxtasksperchild: Some(2), ..PoolOptions::new(2) };
        let pool = ThreadPool::with_options(options).unwrap();
        let names: Vec<AsyncResult> = (0..6).map(|_| pool.apply_async(&NAP, 5).unwrap()).collect();
        let names: Vec<String> =
            names.iter().map(|r| r.get().unwrap().as_str().unwrap().to_string()).collect();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() >= 3, "six tasks, two per worker: at least three workers {names:?}");
        for name in &distinct {
            assert!(names.iter().filter(|n| *n == name).count() <= 2, "{names:?}");
        }
    }

    #[test]
    fn terminate_fails_the_waiting_tasks_and_drop_waits_for_the_rest() {
        let pool = ThreadPool::new(1).unwrap();
        let running = pool.apply_async(&NAP, 100).unwrap();
        let waiting: Vec<_> = (0..3).map(|_| pool.apply_async(&NAP, 100).unwrap()).collect();
        pool.terminate();
        assert!(running.ready());
        for w in &waiting {
            assert!(matches!(w.get(), Err(PoolError::Terminated { .. }) | Ok(_)), "{w:?}");
        }
        assert!(waiting.iter().any(|w| matches!(w.get(), Err(PoolError::Terminated { .. }))));
        assert_eq!(pool.apply(&SQUARE, 1).unwrap_err(), PoolError::NotRunning);

        let done: Vec<AsyncResult> = {
            let pool = ThreadPool::new(2).unwrap();
            (0..4).map(|_| pool.apply_async(&NAP, 20).unwrap()).collect()
        };
        assert!(done.iter().all(|r| r.successful() == Ok(true)), "drop waited: {done:?}");
    }

    #[test]
    fn an_unknown_task_a_panic_and_bad_arguments_are_errors_of_that_task_only() {
        static UNLISTED: Task = Task::new("unlisted", |_| Ok(Value::Null));
        fn boom(_: Value) -> anyhow::Result<Value> {
            panic!("kaboom")
        }
        static BOOM: Task = Task::new("boom", boom);
        let pool = ThreadPool::new(1).unwrap();
        assert_eq!(pool.apply(&UNLISTED, ()).unwrap(), Value::Null);
        let e = pool.apply(&BOOM, ()).unwrap_err();
        assert!(e.to_string().contains("kaboom"), "{e}");
        let e = pool.apply(&SQUARE, "seven").unwrap_err();
        assert!(e.to_string().contains("square needs a number"), "{e}");
        assert_eq!(pool.apply(&SQUARE, 7).unwrap(), json!(49));
        let huge = "x".repeat(MAX_MESSAGE);
        let e = pool.apply(&SQUARE, huge).unwrap_err();
        assert!(matches!(e, PoolError::Invalid(_)) && e.to_string().contains("limit"), "{e}");
        assert_eq!(pool.apply(&SQUARE, 8).unwrap(), json!(64), "the pool goes on");
        assert!(matches!(ThreadPool::new(0), Err(PoolError::Invalid(_))));
    }

    #[test]
    fn a_worker_died_error_names_the_worker_the_pid_and_the_signal() {
        let e = PoolError::WorkerDied {
            task: "slow".into(),
            job: 7,
            worker: "pool-worker-2".into(),
            pid: 4182,
            exitcode: Some(-9),
        };
        assert_eq!(
            e.to_string(),
            "worker pool-worker-2 (pid 4182) was killed by SIGKILL while running task slow (job 7)"
        );
    }
}
