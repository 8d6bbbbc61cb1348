//! Part 4: seed 004's two ways to submit a task (同步调用 / 异步调用), and the asynchronous
//! callback (异步回调): the kettle that whistles when the water boils. Who runs the callback
//! (谁在执行回调函数)? The parent process, in its result-handler thread: not the worker that
//! boiled the water, and not the main thread, which was busy with something else.

#![cfg(target_os = "linux")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::report;
use py_multiprocessing::pool::{self, AsyncResult, Pool, ThreadPool};
use serde::Serialize;
use serde_json::Value;

use crate::tasks::{BOIL, WORKER};
use crate::{Cli, notes_ms, options};

/// Which process and thread is running this code.
#[derive(Debug, Clone, Serialize)]
struct Here {
    pid: u32,
    tid: i32,
    thread: String,
}

fn here() -> Here {
    Here {
        pid: std::process::id(),
        // Safety: gettid has no arguments and cannot fail.
        tid: unsafe { libc::gettid() },
        thread: std::thread::current().name().unwrap_or("?").to_string(),
    }
}

/// The main thread's other work while the water boils.
fn chores(until: &AsyncResult, step: Duration) {
    let main = here();
    let mut n = 0;
    while !until.ready() && n < 50 {
        n += 1;
        common::event!("chore", { "n": n, "tid": main.tid }, "main thread (tid {}): chopping vegetables (切菜), round {n}", main.tid);
        std::thread::sleep(step);
    }
}

/// A callback that says where it runs, and keeps that for the demo's own check.
fn whistle(seen: Arc<Mutex<Option<Here>>>, kind: &'static str, main_tid: i32) -> pool::Callback {
    Box::new(move |value: &Value| {
        let at = here();
        common::event!("callback", { "pool": kind, "result": value, "pid": at.pid, "tid": at.tid, "thread": at.thread,
                    "main_tid": main_tid }, "callback: whistle! {} — run by process {} (the parent), thread {} (tid {}), not \
                 the main thread (tid {main_tid})",
                value.as_str().unwrap_or("?"),
                at.pid,
                at.thread,
                at.tid);
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    })
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section(
        "4. synchronous and asynchronous calls; the callback (同步调用, 异步调用+回调机制)",
    );
    let boil_ms = notes_ms(cli, 3.0);
    let step = Duration::from_millis((boil_ms / 4).max(1));
    let main = here();
    let pool = Pool::with_options(&WORKER, options(cli, 2))?;

    report::say("同步调用 (synchronous): submit the task, then wait right there for its result");
    let began = Instant::now();
    let value = pool.apply(&BOIL, (boil_ms, false))?;
    common::event!("sync", { "waited_ms": began.elapsed().as_millis() as u64, "value": value }, "p.apply(boil) returned after {} ms, and the main thread did nothing else meanwhile: \
             {}",
            began.elapsed().as_millis(),
            value.as_str().unwrap_or("?"));

    report::say("异步调用 (asynchronous): submit, go on with other work, ask for the result later");
    let began = Instant::now();
    let r = pool.apply_async(&BOIL, (boil_ms, false))?;
    common::event!("async_submitted", { "submit_us": began.elapsed().as_micros() as u64 }, "p.apply_async(boil) returned after {} µs", began.elapsed().as_micros());
    chores(&r, step);
    let value = r.get()?;
    common::event!("async_got", { "waited_ms": began.elapsed().as_millis() as u64, "value": value }, "r.get() after the chores: {}", value.as_str().unwrap_or("?"));

    report::say(
        "异步回调 (asynchronous callback): nobody asks; the result is handed to a function as \
         soon as it exists, like a kettle that whistles when the water boils",
    );
    let seen = Arc::new(Mutex::new(None));
    let r = pool.apply_async_with(
        &BOIL,
        (boil_ms, false),
        Some(whistle(seen.clone(), "processes", main.tid)),
        None,
    )?;
    chores(&r, step);
    r.get()?;
    let worker = r.pid();

    let broken = Arc::new(Mutex::new(None));
    let r = pool.apply_async_with(
        &BOIL,
        (boil_ms / 2, true),
        None,
        Some({
            let broken = broken.clone();
            Box::new(move |e: &pool::PoolError| {
                let at = here();
                common::event!("error_callback", { "error": e.to_string(), "pid": at.pid, "tid": at.tid, "thread": at.thread }, "error_callback: {e} — run by process {}, thread {}", at.pid, at.thread);
                *broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
            })
        }),
    )?;
    let failed = r.get().is_err();
    drop(pool);

    // The same with a thread pool: the task runs in a worker thread, the callback still in the
    // parent's result-handler thread.
    let threads = ThreadPool::new(2)?;
    let seen_threads = Arc::new(Mutex::new(None));
    let r = threads.apply_async_with(
        &BOIL,
        (boil_ms / 2, false),
        Some(whistle(seen_threads.clone(), "threads", main.tid)),
        None,
    )?;
    r.get()?;
    drop(threads);

    let at = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let at_error = broken.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let at_threads = seen_threads.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let right = |h: &Option<Here>| {
        h.as_ref().is_some_and(|h| {
            h.pid == main.pid && h.tid != main.tid && h.thread == pool::HANDLER_THREAD
        })
    };
    let ok = right(&at) && right(&at_error) && right(&at_threads) && failed;
    common::event!("who_ran_callbacks", { "parent": main.pid, "main_tid": main.tid, "worker": worker, "callback": at,
                "error_callback": at_error, "thread_pool_callback": at_threads, "as_expected": ok }, "谁在执行回调函数? The parent process ({}), in its result-handler thread \"{}\", for \
             both pools; the worker (pid {}) only boiled the water, and the main thread (tid {}) \
             was chopping vegetables. A callback should be quick: no other result is handled \
             while it runs.",
            main.pid,
            pool::HANDLER_THREAD,
            worker.map_or("?".into(), |p| p.to_string()),
            main.tid);
    if !ok {
        bail!(
            "a callback ran somewhere else than the parent's result-handler thread: {at:?} {at_error:?} {at_threads:?}"
        );
    }
    Ok(())
}
