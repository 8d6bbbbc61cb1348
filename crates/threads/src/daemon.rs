//! Part 5: daemon threads (守护线程). Python joins every non-daemon thread when the main code
//! ends (`threading._shutdown()`), then the interpreter exits and daemon threads are cut off:
//! their `finally` never runs. A Rust program ends when `main` returns, whatever its threads are
//! doing: every thread is a daemon. The non-daemon behaviour is `join`, or `thread::scope`.
//!
//! Both rules run in a child process, because ending a process is the point: the tour goes on
//! in the parent, which reads back the child's lines (a timeline recording) and says which of
//! them appeared. The same two threads every time: `worker` (a few steps, then its last line
//! and its `finally`) and `heartbeat` (ticks until told to stop, then its `finally`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use common::process::{Process, Role};
use common::report;
use common::threads::named;
use common::timeline::{Record, Recording};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Cli;

/// Steps of the worker.
const STEPS: usize = 3;

/// The pauses, already scaled by `--speed`, sent to a child.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Pauses {
    step_ms: u64,
    tick_ms: u64,
}

/// Python's `finally:` block: printed when dropped, which a thread cut off never does.
struct Finally(&'static str);

impl Drop for Finally {
    fn drop(&mut self) {
        common::event!("finally", { "of": self.0 }, "{}: finally (its cleanup runs)", self.0);
    }
}

fn worker(p: Pauses) {
    let _finally = Finally("worker");
    for step in 1..=STEPS {
        std::thread::sleep(Duration::from_millis(p.step_ms));
        common::event!("work", { "step": step }, "worker: step {step} of {STEPS}");
    }
    common::event!("finished", {}, "worker: finished (its last line)");
}

/// Ticks until `stop` is set; with no `stop`, forever (a daemon's typical loop).
fn heartbeat(p: Pauses, stop: Option<&AtomicBool>) {
    let _finally = Finally("heartbeat");
    let mut tick = 0;
    while !stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
        tick += 1;
        if tick <= 3 {
            common::event!("tick", { "tick": tick }, "heartbeat: tick {tick}");
        }
        std::thread::sleep(Duration::from_millis(p.tick_ms));
    }
}

/// Python's `threading` bookkeeping, rebuilt: the non-daemon threads are remembered so that the
/// end of the main code can join them; a daemon thread is let go.
#[derive(Default)]
struct PythonThreading {
    non_daemon: Vec<JoinHandle<()>>,
}

impl PythonThreading {
    fn start(&mut self, name: &str, daemon: bool, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let handle = named::spawn(name, f)?;
        if !daemon {
            self.non_daemon.push(handle);
        }
        Ok(())
    }

    /// `threading._shutdown()`: "Wait until the Python thread state of all non-daemon threads
    /// get deleted".
    fn shutdown(self) -> Result<()> {
        for handle in self.non_daemon {
            handle.join().map_err(|_| anyhow!("a non-daemon thread panicked"))?;
        }
        Ok(())
    }
}

/// The child that follows Python's rule.
pub static PYTHON_RULE: Role = Role::new("python-rule", python_rule);

fn python_rule(args: Value) -> Result<()> {
    let p: Pauses = serde_json::from_value(args)?;
    let mut threading = PythonThreading::default();
    threading.start("heartbeat", true, move || heartbeat(p, None))?;
    threading.start("worker", false, move || worker(p))?;
    common::event!("main_returns", { "rule": "python" }, "main code ends; threading._shutdown() joins the non-daemon thread (worker)");
    threading.shutdown()?;
    common::event!("process_ends", { "rule": "python" }, "every non-daemon thread joined: the process ends, the daemon thread with it");
    Ok(())
}

/// The child that follows Rust's rule: `main` returns, the process ends.
pub static RUST_RULE: Role = Role::new("rust-rule", rust_rule);

fn rust_rule(args: Value) -> Result<()> {
    let p: Pauses = serde_json::from_value(args)?;
    // No handle kept: nothing will join them.
    named::spawn("heartbeat", move || heartbeat(p, None))?;
    named::spawn("worker", move || worker(p))?;
    common::event!("main_returns", { "rule": "rust" }, "main returns without a join: the process ends now");
    Ok(())
}

/// Which of a process's lines appeared.
#[derive(Debug, Serialize)]
struct Seen {
    worker_finished: bool,
    worker_finally: bool,
    heartbeat_finally: bool,
}

fn seen(records: &[Record], pid: i32) -> Seen {
    let has = |event: &str, of: Option<&str>| {
        records
            .iter()
            .any(|r| r.pid == pid && r.event == event && of.is_none_or(|of| r.data["of"] == of))
    };
    Seen {
        worker_finished: has("finished", None),
        worker_finally: has("finally", Some("worker")),
        heartbeat_finally: has("finally", Some("heartbeat")),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "printed" } else { "never printed" }
}

fn describe(rule: &str, s: &Seen) -> String {
    format!(
        "{rule}: worker's last line {}, worker's finally {}, heartbeat's finally {}",
        yes_no(s.worker_finished),
        yes_no(s.worker_finally),
        yes_no(s.heartbeat_finally)
    )
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("5. daemon threads (守护线程): who waits for whom when main ends");
    let pauses = Pauses {
        step_ms: cli.common.notes_sleep(1.0).as_millis() as u64,
        tick_ms: cli.common.notes_sleep(0.5).as_millis() as u64,
    };
    let me = std::process::id() as i32;
    let yes_or_no = common::predict::Expect::Choice(&["yes", "no"]);
    let daemon_guess = common::predict::ask(
        &cli.common,
        "daemon-finally",
        format!(
            "Python's rule: heartbeat (daemon=True) ticks in a loop inside try/finally, worker \
             (non-daemon) works {STEPS} steps; main's code ends: does heartbeat's finally \
             print? (yes / no)"
        ),
        yes_or_no,
    );
    let rust_guess = common::predict::ask(
        &cli.common,
        "rust-worker",
        "Rust's rule: the same worker, spawned, and main returns without a join: does the \
         worker's last line (\"finished\") print? (yes / no)",
        yes_or_no,
    );
    let recording = Recording::start()?;
    let mut pids = Vec::new();
    for (name, role) in [("python-rule", &PYTHON_RULE), ("rust-rule", &RUST_RULE)] {
        report::say(match name {
            "python-rule" => {
                "Python's rule, in a child: heartbeat with daemon=True, worker without"
            }
            _ => "Rust's rule, in a child: the same two threads, and main returns",
        });
        let mut child = Process::new(name, role, pauses).start_method(cli.common.start_method);
        child.start()?;
        let code = child.join()?;
        if code != Some(0) {
            bail!("{child}: the {name} child failed");
        }
        pids.push(child.pid().unwrap_or(0));
    }

    report::say("thread::scope in this process: the scope's end joins its threads");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        let w = named::spawn_scoped(s, "worker", || worker(pauses))?;
        named::spawn_scoped(s, "heartbeat", || heartbeat(pauses, Some(&stop)))?;
        common::event!("main_returns", { "rule": "scope" }, "main's code in the scope ends: join the worker, stop the heartbeat, the scope joins it");
        w.join().map_err(|_| anyhow!("worker panicked"))?;
        stop.store(true, Ordering::SeqCst);
        Ok(())
    })?;
    let records = recording.finish()?;

    let python = seen(&records, pids[0]);
    let rust = seen(&records, pids[1]);
    let scoped = seen(&records, me);
    common::event!("daemon_summary", { "python_rule": { "pid": pids[0], "seen": python },
                "rust_rule": { "pid": pids[1], "seen": rust },
                "scope": { "pid": me, "seen": scoped } }, "what each process printed:\n{}\n{}\n{}",
            describe(&format!("Python's rule (pid {})", pids[0]), &python),
            describe(&format!("Rust's rule (pid {})", pids[1]), &rust),
            describe("thread::scope (this process)", &scoped));
    let word = |b: bool| if b { "yes" } else { "no" };
    daemon_guess.reveal(
        word(python.heartbeat_finally),
        "once the last non-daemon thread is joined the interpreter exits, and a daemon thread \
         is cut off where it is: its finally never runs",
    );
    rust_guess.reveal(
        word(rust.worker_finished),
        "returning from main ends the process (exit_group), and every thread with it: in Rust \
         every thread is a daemon unless it is joined",
    );
    report::say(
        "Python: a daemon thread lives until the last non-daemon thread ends, then it is cut \
         off mid-loop (seed 004 names 守护线程 but not this rule). A daemonic process is ended \
         at the same moment, the parent's exit after its last non-daemon thread, but by \
         SIGTERM, before the parent waits for its other children. Rust: returning from main ends the process, so every thread is cut off \
         like a daemon, even one in the middle of its work; join it, or start it in \
         thread::scope, for Python's non-daemon behaviour.",
    );
    if !python.worker_finished || python.heartbeat_finally || rust.heartbeat_finally {
        bail!("the daemon rules did not hold: {python:?} / {rust:?}");
    }
    if !(scoped.worker_finally && scoped.heartbeat_finally) {
        bail!("a scoped thread's finally is missing: {scoped:?}");
    }
    Ok(())
}
