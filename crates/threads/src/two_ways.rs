//! Part 2: two ways to start a thread (开启线程的两种方式), as seed 004 teaches them: a target
//! function (`Thread(target=task, args=('egon',))`) and a class that overrides `run`
//! (`class MyThread(Thread)`). Rust has no subclassing: the second way is a type with a `run`
//! method behind a small trait whose `start` spawns a named thread that calls it.

use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use common::report;
use common::threads::named;

use crate::Cli;

/// The notes' `task(name)`: says it runs, sleeps, says it is done.
fn task(name: &str, pause: Duration) {
    common::event!("task", { "name": name, "step": "running" }, "{name} is running");
    std::thread::sleep(pause);
    common::event!("task", { "name": name, "step": "done" }, "{name} is done");
}

/// Python's `Thread` as a base "class": implement `run`, get `start`.
trait Thread: Send + Sized + 'static {
    /// The thread's name (Python's `self.name`), also its name in `ps -L`.
    fn name(&self) -> String;
    /// What the thread does (Python's overridden `run`).
    fn run(self);
    /// Starts a named thread that calls `run`, as `Thread.start` does.
    fn start(self) -> io::Result<JoinHandle<()>> {
        let name = self.name();
        named::spawn(&name, move || self.run())
    }
}

/// `class MyThread(Thread): def __init__(self, name): ...; def run(self): ...`
struct MyThread {
    name: String,
    pause: Duration,
}

impl Thread for MyThread {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(self) {
        task(&self.name, self.pause);
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("2. two ways to start a thread (开启线程的两种方式)");
    crate::lanes(cli, "two ways: one lane per thread", "task", '*', || both(cli))
}

fn both(cli: &Cli) -> Result<()> {
    let pause = cli.common.notes_sleep(2.0);
    report::say("way 1: a closure, Python's Thread(target=task, args=('egon',))");
    let began = Instant::now();
    let t1 = named::spawn("task", move || task("egon", pause))?;
    let start_us = began.elapsed().as_secs_f64() * 1e6;
    common::event!("main_goes_on", { "way": "closure", "start_us": start_us }, "主线程: t.start() returned after {start_us:.0} µs; main goes on");
    report::say("way 2: a type with run(), Python's class MyThread(Thread)");
    let began = Instant::now();
    let t2 = MyThread { name: "MyThread".into(), pause }.start()?;
    let start_us = began.elapsed().as_secs_f64() * 1e6;
    common::event!("main_goes_on", { "way": "run_method", "start_us": start_us }, "主线程: MyThread.start() returned after {start_us:.0} µs; main goes on");
    for (t, what) in [(t1, "task"), (t2, "MyThread")] {
        t.join().map_err(|_| anyhow!("{what} panicked"))?;
    }
    common::event!("joined", { "threads": ["task", "MyThread"] }, "joined both: two threads of this one process (the same pid, their own tids)");
    report::say(
        "A thread starts in microseconds: no new address space to make, so its first line often \
         comes before main's (seed 002: 几乎是t.start()的同时就将线程开启了). Nothing guarantees \
         that order, for threads or processes.",
    );
    Ok(())
}
