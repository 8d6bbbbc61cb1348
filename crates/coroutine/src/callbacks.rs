//! Part 2: asynchronous callbacks (异步回调), the kettle that whistles when the water boils:
//! instead of asking "done yet?", the caller leaves a function to be called with the result.
//! Who runs it (谁在执行回调函数?) is the rule of `concurrent.futures`: the worker thread that
//! finishes the future, or, if it was already done, the caller, at once.

use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Result, bail};
use common::predict;
use common::report;
use common::threads::named;
use py_threading::queue::Queue;

use crate::Cli;

/// A callback: called once with the result, in whichever thread the rule says.
type Callback<T> = Box<dyn FnOnce(&T) + Send>;

/// A future of `concurrent.futures`: pending, then done with a result; callbacks added while
/// pending run in the thread that sets the result, those added later run at once.
pub struct FutureResult<T> {
    state: Mutex<(Option<T>, Vec<Callback<T>>)>,
    done: Condvar,
}

impl<T> FutureResult<T> {
    fn new() -> Arc<FutureResult<T>> {
        Arc::new(FutureResult { state: Mutex::new((None, Vec::new())), done: Condvar::new() })
    }

    /// `add_done_callback(fn)`.
    pub fn add_done_callback(&self, callback: impl FnOnce(&T) + Send + 'static) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.0 {
            // Already done: the caller runs it, now.
            Some(result) => callback(result),
            None => state.1.push(Box::new(callback)),
        }
    }

    /// Sets the result and runs the callbacks in this thread (the worker's).
    fn set_result(&self, result: T) {
        let callbacks = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.0 = Some(result);
            self.done.notify_all();
            std::mem::take(&mut state.1)
        };
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(result) = &state.0 {
            for callback in callbacks {
                callback(result);
            }
        }
    }

    /// `result()`: waits until done.
    pub fn result(&self) -> T
    where
        T: Clone,
    {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(result) = &state.0 {
                return result.clone();
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// `ThreadPoolExecutor(max_workers)`: named worker threads taking jobs from a queue.
pub struct ThreadPool {
    jobs: Arc<Queue<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl ThreadPool {
    pub fn new(workers: usize) -> Result<ThreadPool> {
        let jobs: Arc<Queue<Job>> = Arc::new(Queue::new(0));
        let workers = (0..workers)
            .map(|i| {
                let jobs = jobs.clone();
                // CPython names them ThreadPoolExecutor-0_0, -0_1, ...; the kernel keeps 15
                // bytes, so `ps -L` would show the same name for all: a shorter one here.
                named::spawn(&format!("pool-worker-{i}"), move || {
                    while let Ok(job) = jobs.get() {
                        job();
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ThreadPool { jobs, workers })
    }

    /// `submit(fn)`: returns at once with the future of `f`'s result.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Arc<FutureResult<T>> {
        let future = FutureResult::new();
        let done = future.clone();
        let _ = self.jobs.put(Box::new(move || done.set_result(f())));
        future
    }

    /// `shutdown(wait=True)`: the workers finish the jobs given, then end.
    pub fn shutdown(self) -> Result<()> {
        self.jobs.shutdown(false);
        for worker in self.workers {
            if worker.join().is_err() {
                bail!("a pool worker panicked");
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} workers)", self.workers.len())
    }
}

/// Reports which thread runs a callback.
fn whistle(case: &'static str, what: &str) {
    common::event!("callback", { "case": case, "what": what }, "callback: {what} (run by thread {} tid {})",
            named::current_name(),
            named::gettid());
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("2. Asynchronous callbacks: the kettle whistles; who runs the callback?");
    let pool = ThreadPool::new(2)?;
    let boil = cli.common.notes_sleep(3.0);

    // Pending when the callback is added: the worker that finishes it runs the callback.
    let question = "A callback added while the future is still pending (回调): which thread runs \
                    it, the pool's worker or main?";
    let guess = predict::ask(
        &cli.common,
        "callback-thread",
        question,
        predict::Expect::Choice(&["worker", "main"]),
    );
    let (ran_by_tx, ran_by_rx) = std::sync::mpsc::channel();
    let kettle = pool.submit(move || {
        common::event!("boiling", {}, "the kettle is on (烧水壶)");
        std::thread::sleep(boil);
        "boiling water"
    });
    kettle.add_done_callback(move |water| {
        whistle("pending", &format!("whistle! {water} is ready"));
        let main = named::gettid() == std::process::id() as i32;
        let _ = ran_by_tx.send(if main { "main" } else { "worker" });
    });
    common::event!(
        "main_free",
        {},
        "main does something else meanwhile: it does not wait for the water, the kettle will say"
    );
    let water = kettle.result();
    common::event!("result", { "result": water }, "kettle.result() -> {water:?}");
    // result() returns once the result is set; the callback runs just after, in its thread.
    if let Ok(ran_by) = ran_by_rx.recv_timeout(std::time::Duration::from_secs(60)) {
        let why = if ran_by == "worker" {
            "a pending future's callbacks run in the thread that sets its result: the worker"
        } else {
            "the kettle had already boiled when the callback was added: the caller ran it at once"
        };
        guess.reveal(ran_by, why);
    }

    // Already done when the callback is added: the caller (main) runs it, at once.
    let quick = pool.submit(|| 42);
    let answer = quick.result();
    quick.add_done_callback(move |n| whistle("done", &format!("the answer {n} was already there")));
    common::event!("result", { "result": answer }, "a callback added to a future already done ran at once, in the thread that added it");
    pool.shutdown()?;
    report::say(
        "the rule of concurrent.futures: the worker thread runs the callbacks of a future it \
         finishes; add_done_callback on a finished future runs it in the caller. For a process \
         pool the callback runs in the parent, in its result-handler thread: see `pool callback`",
    );
    Ok(())
}
