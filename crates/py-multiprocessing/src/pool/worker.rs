//! worker — the messages between the parent and its workers, and the worker's side: a loop
//! that takes a task from its inbox, runs it, and puts the result in the results queue.
//!
//! Every message is one frame of a [`Queue`]: the message in postcard, then its payload's bytes
//! as they are (a task's arguments or result as JSON, a chunk of `map` as its encoded list), so
//! a list is never escaped into a string or copied out of one.

use std::time::Instant;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::task::{Encoding, Task};
use crate::queue::{Queue, QueueError};
use crate::shm::Wait;

/// Parent → one worker, through its inbox.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ToWorker {
    /// Run `task`; the payload is its arguments as JSON.
    Run { id: u64, task: String },
    /// Run `task` on each item of a chunk of `map` whose first item is item `first`; the payload
    /// is the list of items, in `items`' encoding; the results go back in `results`'.
    Chunk { id: u64, task: String, first: usize, items: Encoding, results: Encoding },
    /// Exit (after `close`, once every task is done).
    Stop,
}

/// Workers (and the parent itself) → the result thread, through the results queue.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum FromWorker {
    /// The initializer failed; the worker exits.
    InitFailed { w: u32, error: String },
    /// Job `id` ran for `us` microseconds; the payload is its result (JSON, or a chunk's
    /// encoded list), empty if it failed with `error`.
    Done { w: u32, id: u64, us: u64, error: Option<String> },
    /// Worker `w` has ended: posted by the thread that watches a worker process, or by a worker
    /// thread itself as its last word.
    Exited { w: u32 },
    /// Nothing: wakes the handler.
    Wake,
}

/// One frame: `msg` in postcard, then `payload`.
pub(super) fn frame(msg: &impl Serialize, payload: &[u8]) -> Vec<u8> {
    let mut bytes = postcard::to_extend(msg, Vec::with_capacity(32 + payload.len()))
        .expect("postcard writes any message into a Vec");
    bytes.extend_from_slice(payload);
    bytes
}

/// A frame's message and its payload.
pub(super) fn unframe<M: DeserializeOwned>(frame: &[u8]) -> Result<(M, &[u8]), String> {
    postcard::take_from_bytes(frame).map_err(|e| format!("a message between pool processes: {e}"))
}

/// What a worker is given: its number, its two queues (as descriptors), and its settings.
#[derive(Serialize, Deserialize)]
pub(super) struct WorkerArgs {
    pub number: u32,
    pub inbox: Queue<ToWorker>,
    pub results: Queue<FromWorker>,
    pub initializer: Option<(String, Value)>,
    pub maxtasksperchild: Option<usize>,
}

/// The body of a pool's worker process: call it from the worker [`common::process::Role`] with
/// the program's task list (`Role::new("pool-worker", |args| pool::serve(args, TASKS))`). It
/// runs the initializer, then every task its inbox brings, until told to stop (or after
/// `maxtasksperchild` tasks). A task's error or panic becomes that task's error; the worker goes
/// on.
pub fn serve(args: Value, tasks: &[&Task]) -> anyhow::Result<()> {
    let args: WorkerArgs = serde_json::from_value(args)
        .context("decoding a pool worker's arguments (its queues travel as descriptors)")?;
    let find = |name: &str| tasks.iter().find(|t| t.name == name).copied();
    work(&args, &find)
}

/// The worker's loop (a process's, or a thread pool's thread's).
pub(super) fn work<'t>(
    a: &WorkerArgs,
    find: &dyn Fn(&str) -> Option<&'t Task>,
) -> anyhow::Result<()> {
    let w = a.number;
    let say = |msg: &FromWorker, payload: &[u8]| {
        a.results.put_encoded(&frame(msg, payload), Wait::Forever)
    };
    let task = |name: &str| {
        let why = "a pool runs only the tasks listed where its worker role calls pool::serve";
        find(name).ok_or_else(|| format!("this worker has no task named {name:?} ({why})"))
    };
    if let Some((name, init_args)) = &a.initializer
        && let Err(error) = task(name).and_then(|t| t.call(init_args.clone()))
    {
        say(&FromWorker::InitFailed { w, error: error.clone() }, &[])?;
        anyhow::bail!("the pool's initializer {name} failed: {error}");
    }
    for done in 1.. {
        let body = a.inbox.get_encoded(Wait::Forever)?;
        let (msg, payload) = unframe::<ToWorker>(&body).map_err(anyhow::Error::msg)?;
        let began = Instant::now();
        let (id, outcome) = match msg {
            ToWorker::Stop => return Ok(()),
            ToWorker::Run { id, task: name } => {
                let args = serde_json::from_slice(payload).map_err(|e| e.to_string());
                let result = args.and_then(|args| task(&name)?.call(args));
                (id, result.and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string())))
            }
            ToWorker::Chunk { id, task: name, first, items, results } => {
                (id, task(&name).and_then(|t| t.run_chunk(payload, items, results, first)))
            }
        };
        let us = began.elapsed().as_micros() as u64;
        let sent = match &outcome {
            Ok(result) => say(&FromWorker::Done { w, id, us, error: None }, result),
            Err(e) => say(&FromWorker::Done { w, id, us, error: Some(e.clone()) }, &[]),
        };
        if let Err(QueueError::TooLarge { size, max }) = sent {
            let error = format!("its result is {size} bytes, more than the limit of {max}");
            say(&FromWorker::Done { w, id, us, error: Some(error) }, &[])?;
        } else {
            sent?;
        }
        if a.maxtasksperchild.is_some_and(|max| done >= max) {
            break;
        }
    }
    Ok(())
}
