//! Part 1: seed 001's Ex.1 (`threading.current_thread().name`), then the same process as the
//! OS sees it: one pid, a kernel thread id (tid, `LWP`) per thread, each thread's name in
//! `/proc/PID/task/TID/comm`, cut to 15 bytes.

use std::sync::{Arc, Barrier, mpsc};

use anyhow::{Context, Result, anyhow, bail};
use common::threads::named::{self, KERNEL_NAME_BYTES, kernel_name};
use common::{ps, report};
use serde_json::json;

use crate::{Cli, python_name};

/// A name longer than the kernel keeps, to show the cut.
const LONG_NAME: &str = "LoopThread-with-a-long-name";

/// One line of Ex.1, printed by the thread it names.
fn line(text: String) {
    report::event("ex1", json!({ "text": text, "name": python_name() }), text);
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("1. names: seed 001's Ex.1, then what the OS sees (多线程, current_thread)");
    crate::lanes(cli, "Ex.1: one lane per thread", "ex1", '*', || ex1(cli))?;
    os_view(cli)?;
    python_and_rust_names();
    Ok(())
}

/// Ex.1, line for line: `t = threading.Thread(target=loop, name="LoopThread"); t.start();
/// t.join()`.
fn ex1(cli: &Cli) -> Result<()> {
    let (loops, pause) = (cli.loops, cli.common.notes_sleep(1.0));
    line(format!("thread {} is running...", python_name()));
    let t = named::spawn("LoopThread", move || {
        line(format!("thread {} is running...", python_name()));
        for n in 1..=loops {
            line(format!("thread {} >>> {n}", python_name()));
            std::thread::sleep(pause);
        }
        line(format!("thread {} ended", python_name()));
    })
    .context("starting LoopThread")?;
    t.join().map_err(|_| anyhow!("LoopThread panicked"))?;
    line(format!("thread {} ended", python_name()));
    Ok(())
}

/// Three threads wait at a barrier while main reads `/proc/PID/task`: one named as in Ex.1,
/// one with a name longer than the kernel keeps, one without a name.
fn os_view(cli: &Cli) -> Result<()> {
    let pid = std::process::id() as i32;
    let names: [Option<&str>; 3] = [Some("LoopThread"), Some(LONG_NAME), None];
    let barrier = Arc::new(Barrier::new(names.len() + 1));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (barrier, tx) = (barrier.clone(), tx.clone());
        let body = move || {
            let _ = tx.send((i, named::gettid()));
            // Asleep in the kernel (a futex) until main has looked.
            barrier.wait();
        };
        let handle = match name {
            Some(name) => named::spawn(name, body),
            // No name: std leaves the kernel's name as it was, the program's.
            None => std::thread::Builder::new().spawn(body),
        };
        handles.push(handle.context("starting a thread to look at")?);
    }
    drop(tx);
    let mut tids = [0; 3];
    for _ in 0..names.len() {
        let (i, tid) = rx.recv().context("a thread's tid")?;
        tids[i] = tid;
    }
    let program = ps::stat(pid).map(|p| p.comm).unwrap_or_default();
    let mut rows = Vec::new();
    let mut text = format!(
        "pid {pid}: {} threads started here, seen in /proc/{pid}/task/TID/comm",
        names.len()
    );
    for (name, tid) in names.iter().zip(tids) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let expected = name.map_or(program.as_str(), kernel_name);
        text.push_str(&format!(
            "\n  tid {tid:>7}  given {:<30} kernel keeps {comm:?}",
            name.map_or("(no name)".to_string(), |n| format!("{n:?}"))
        ));
        rows.push(json!({ "tid": tid, "name": name, "comm": comm, "expected": expected }));
        if cfg!(target_os = "linux") && comm != expected {
            bail!("thread {tid}: the kernel shows {comm:?}, expected {expected:?}");
        }
    }
    report::event("thread_view", json!({ "pid": pid, "threads": rows }), text);
    ps::show_threads(&format!("the threads of pid {pid}, from /proc/{pid}/task"), pid);
    let mut distinct = tids.to_vec();
    distinct.push(pid);
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != tids.len() + 1 {
        bail!("two threads share a tid: {tids:?} (pid {pid})");
    }
    report::say(format!(
        "one process, one pid ({pid}), and a kernel thread id per thread: the main thread's tid \
         is the pid itself. The kernel keeps {KERNEL_NAME_BYTES} bytes of a name \
         ({LONG_NAME:?} shows as {:?}); a thread started without a name keeps the program's \
         ({program:?}). Waiting at a barrier, the threads sleep in the kernel: state S, in a \
         futex wait.",
        kernel_name(LONG_NAME)
    ));
    cli.common.hold_threads("three threads waiting at a barrier", pid);
    barrier.wait();
    for handle in handles {
        handle.join().map_err(|_| anyhow!("a thread panicked"))?;
    }
    Ok(())
}

/// Python's default names beside Rust's.
fn python_and_rust_names() {
    let rust_main = std::thread::current().name().unwrap_or("None").to_string();
    let unnamed = std::thread::spawn(|| std::thread::current().name().map(String::from))
        .join()
        .ok()
        .flatten();
    let rows = [
        ("main thread", "MainThread", format!("{rust_main:?}")),
        ("Thread(target=loop)", "Thread-1 (loop) (3.10+)", format!("{unnamed:?}")),
        ("subclass of Thread", "Thread-2", "a type with run(): named by its start".into()),
        (
            "name=\"LoopThread\"",
            "LoopThread",
            "Builder::new().name(\"LoopThread\"): Some(\"LoopThread\")".into(),
        ),
        (
            "seen by the kernel (comm)",
            "3.11: python3 for all; 3.14: name",
            "the name, cut to 15 bytes".into(),
        ),
    ];
    let mut text = format!("  {:<25} {:<34} Rust", "", "Python");
    for (what, python, rust) in &rows {
        text.push_str(&format!("\n  {what:<25} {python:<34} {rust}"));
    }
    common::event!("names_compare", { "rust_main": rust_main, "rust_unnamed": unnamed }, "Python's default names beside Rust's:");
    report::plain(text);
}
