//! Part 1: the notes' `Queue(3)` in one process, and what a queue is made of.

#![cfg(target_os = "linux")]

use anyhow::{Context, Result, bail};
use common::report;
use py_multiprocessing::queue::{JoinableQueue, Queue, QueueError};

use crate::{BASICS_MAXSIZE, Cli};

pub fn run(cli: &Cli) -> Result<()> {
    report::section("1. Queue basics: put, get, full, empty (队列)");
    let maxsize = cli.maxsize.unwrap_or(BASICS_MAXSIZE);
    let q: Queue<u64> = Queue::with_max_message(maxsize, cli.max_message)
        .with_context(|| format!("Queue({maxsize})"))?;
    anatomy(&q)?;

    // q.put(1); q.put(2); q.put(3); print(q.full())
    for item in 1..=maxsize as u64 {
        q.put(item).with_context(|| format!("q.put({item})"))?;
        common::event!("put", { "item": item, "qsize": q.qsize() }, "q.put({item})  qsize() = {}", q.qsize());
    }
    common::event!("full", { "full": q.full(), "qsize": q.qsize(), "maxsize": maxsize }, "q.full() = {}  (判断是否满了)", q.full());
    // q.put(4) would block here for ever (再放就阻塞住了，卡死); put_nowait says so instead.
    let extra = maxsize as u64 + 1;
    let guess = common::predict::ask(
        &cli.common,
        "put-nowait",
        format!(
            "Queue({maxsize}) holds {maxsize} items: what does q.put_nowait({extra}) do: raise \
             Full, block until there is room, or accept the item?"
        ),
        common::predict::Expect::Choice(&["Full", "blocks", "accepted"]),
    );
    let refused = q.put_nowait(extra);
    guess.reveal(
        match &refused {
            Ok(()) => "accepted",
            Err(QueueError::Full) => "Full",
            Err(_) => "other",
        },
        "the _nowait forms never wait: where put would sleep (卡死), put_nowait fails at once \
         with Full",
    );
    common::event!("put_nowait", { "item": extra, "error": refused.as_ref().err().map(error_name) }, "q.put_nowait({extra}) -> {}  (q.put({extra}) would block: 卡死)",
            outcome(&refused));
    if !matches!(refused, Err(QueueError::Full)) {
        bail!("q.put_nowait({extra}) on a full Queue({maxsize}) gave {refused:?}, not Full");
    }

    // print(q.get()) three times; print(q.empty())
    let mut got = Vec::new();
    for _ in 0..maxsize {
        let item = q.get().context("q.get()")?;
        common::event!("got", { "item": item, "qsize": q.qsize() }, "q.get() -> {item}  qsize() = {}", q.qsize());
        got.push(item);
    }
    common::event!("empty", { "empty": q.empty(), "qsize": q.qsize() }, "q.empty() = {}  (判断是否空了)", q.empty());
    let refused = q.get_nowait();
    common::event!("get_nowait", { "error": refused.as_ref().err().map(error_name) }, "q.get_nowait() -> {}  (q.get() would block: 卡死)", outcome(&refused));
    if !matches!(refused, Err(QueueError::Empty)) {
        bail!("q.get_nowait() on an empty queue gave {refused:?}, not Empty");
    }
    let expected: Vec<u64> = (1..=maxsize as u64).collect();
    if got != expected {
        bail!("first in, first out is broken: put {expected:?}, got {got:?}");
    }

    too_large(cli)?;
    task_done_too_often()?;
    report::say(
        "qsize(), empty() and full() are snapshots: with other processes using the queue the \
         answer may be stale before it is used (Python's documentation: \"not reliable\")",
    );
    Ok(())
}

/// Shows the queue's descriptors as the kernel names them in /proc/self/fd.
fn anatomy(q: &Queue<u64>) -> Result<()> {
    let d = q.descriptor();
    let link = |fd: i32| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("? ({e})"))
    };
    let (pipe, block) = (link(d.read_fd), link(d.control_fd));
    common::event!("queue", {
            "maxsize": q.maxsize(), "max_message": q.max_message(),
            "pipe_capacity": q.pipe_capacity(), "fds": d,
            "pipe": pipe, "shared_block": block,
        }, "Queue({}) is a pipe plus a lock (进程queue=管道+锁): fds {} -> {pipe} <- {} carries \
             the items; fd {} is {block}, shared memory with the reader lock, the writer lock \
             and the counts. The pipe holds {} KiB; an item may be up to {} bytes of JSON.",
            q.maxsize(),
            d.read_fd,
            d.write_fd,
            d.control_fd,
            q.pipe_capacity() / 1024,
            q.max_message());
    Ok(())
}

/// An item beyond max_message is refused before anything is written.
fn too_large(cli: &Cli) -> Result<()> {
    let q: Queue<String> =
        Queue::with_max_message(0, cli.max_message).context("Queue() for the oversize item")?;
    // A JSON string of max_message - 1 letters plus its two quotes: one byte too many.
    let item = "x".repeat(cli.max_message - 1);
    let refused = q.put(&item);
    match &refused {
        Err(QueueError::TooLarge { size, max }) => {
            common::event!("too_large", { "size": size, "max": max, "error": refused.as_ref().err().map(|e| e.to_string()),
                    "qsize": q.qsize() }, "q.put(<{size} bytes of JSON>) -> error: {}", outcome(&refused))
        }
        _ => bail!("an item of {} bytes was not refused: {refused:?}", cli.max_message + 1),
    }
    Ok(())
}

/// task_done once more than items taken: Python's ValueError.
fn task_done_too_often() -> Result<()> {
    let q: JoinableQueue<String> = JoinableQueue::new(0).context("JoinableQueue()")?;
    q.put("包子0".to_string())?;
    q.get()?;
    q.task_done().context("the first task_done()")?;
    let refused = q.task_done();
    common::event!("task_done_error", { "error": refused.as_ref().err().map(|e| e.to_string()), "unfinished": q.unfinished() }, "JoinableQueue: put, get, task_done() ok; task_done() again -> {} (Python: ValueError)",
            outcome(&refused));
    if !matches!(refused, Err(QueueError::TaskDoneTooManyTimes)) {
        bail!("a second task_done() for one item gave {refused:?}");
    }
    Ok(())
}

fn error_name(e: &QueueError) -> &'static str {
    match e {
        QueueError::Full => "Full",
        QueueError::Empty => "Empty",
        QueueError::TooLarge { .. } => "TooLarge",
        QueueError::TaskDoneTooManyTimes => "TaskDoneTooManyTimes",
        _ => "other",
    }
}

fn outcome<T>(result: &Result<T, QueueError>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}
