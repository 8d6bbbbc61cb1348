//! Part 4, process states: the notes' three-state model (运行/就绪/阻塞) as the kernel shows it,
//! plus the two states the model leaves out. Four children, one in each state:
//!
//! | child   | what it does                      | state | the notes' word      |
//! |---------|-----------------------------------|-------|----------------------|
//! | busy    | computes in a loop, no I/O        | `R`   | 运行态 *or* 就绪态   |
//! | sleeper | sleeps (blocked until a timer)    | `S`   | 阻塞态               |
//! | stopped | sleeps, then SIGSTOP              | `T`   | (not in the model)   |
//! | zombie  | has ended, not reaped             | `Z`   | 僵尸进程             |

#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::{Context, Result};
use common::cli::CommonArgs;
use common::process::Process;
use common::{ps, report};
use serde_json::json;

use crate::children::{Busy, Quit, Sleeper};
use crate::procfs::{self, Ident, WAIT_LIMIT};
use crate::zombie::report_reaped;

pub fn states(cli: &CommonArgs) -> Result<()> {
    report::section("process states: R, S, T, Z (运行/就绪/阻塞 as the kernel shows them)");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    report::say(format!(
        "The notes' model has three states: running (运行), ready (就绪: could run, waits for a \
         CPU) and blocked (阻塞: waits for an event). Linux shows running and ready as one \
         letter, R (runnable): the letter cannot tell whether an R process is on a CPU this \
         very instant. This machine has {cpus} CPU(s); when more processes are runnable than \
         that, some of them are ready rather than running, and all of them show R. Over time \
         /proc/PID/schedstat does tell them apart: nanoseconds on a CPU (运行) and nanoseconds \
         waiting in the run queue (就绪). Blocked is S, or D for a wait no signal interrupts \
         (usually the disk). Two more: T, stopped by a signal; Z, ended but not reaped (see \
         the Glossary of the README)."
    ));
    // Every child ends by itself at the latest after this, even if nobody stops it.
    let limit = Duration::from_secs_f64(cli.hold.unwrap_or(0.0)) + 3 * WAIT_LIMIT;
    let limit_ms = limit.as_millis() as u64;
    let method = cli.start_method;
    let mut busy = Process::from_run("busy", Busy { limit_ms }).start_method(method);
    let mut sleeper = Process::from_run("sleeper", Sleeper { limit_ms }).start_method(method);
    let mut stopped = Process::from_run("stopped", Sleeper { limit_ms }).start_method(method);
    let mut zombie =
        Process::from_run("zombie", Quit { code: 0, after_ms: 0 }).start_method(method);
    for p in [&mut busy, &mut sleeper, &mut stopped, &mut zombie] {
        p.start()?;
    }
    // Stop the third child once it is asleep in its own code (named, blocked in its sleep), so
    // that ps shows it as "stopped" in state T rather than a half-started copy of the demo.
    let stopped_pid = stopped.pid().context("the stopped child has no pid")?;
    let asleep = procfs::wait_for_state(stopped_pid, "the third child to fall asleep", |s| {
        s == 'S' && procfs::comm(stopped_pid) == "stopped"
    });
    let mut all = [&mut busy, &mut sleeper, &mut stopped, &mut zombie];
    common::processes::lost::blame_dead_child(asleep, &mut all, "steps of this part")?;
    stopped.signal(libc::SIGSTOP)?;

    let roles: [(&Process, char); 4] =
        [(&busy, 'R'), (&sleeper, 'S'), (&stopped, 'T'), (&zombie, 'Z')];
    let mut children = Vec::new();
    let mut failed = None;
    for (p, want) in roles {
        let pid = p.pid().context("a started child has no pid")?;
        let what = format!("{} to show {want}", p.name());
        if let Err(e) = procfs::wait_for_state(pid, &what, |s| s == want) {
            failed = Some(e);
            break;
        }
        children.push(json!({ "role": p.name(), "pid": pid, "state": want.to_string(),
                              "meaning": ps::state_meaning(want) }));
    }
    if let Some(e) = failed {
        let mut all = [&mut busy, &mut sleeper, &mut stopped, &mut zombie];
        return common::processes::lost::blame_dead_child(Err(e), &mut all, "steps of this part");
    }
    let mut legend = String::from("each child's state, as the kernel shows it:");
    for c in &children {
        legend.push_str(&format!(
            "\n  {:<8} {:>7}  {}  {}",
            c["role"].as_str().unwrap_or("?"),
            c["pid"],
            c["state"].as_str().unwrap_or("?"),
            c["meaning"].as_str().unwrap_or("?")
        ));
    }
    report::event("states", json!({ "children": children }), legend);
    // The busy child's R, split by the scheduler's own accounting: time on a CPU (running)
    // against time runnable but waiting for one (ready).
    if let Some((run_ns, wait_ns)) = busy.pid().and_then(schedstat) {
        common::event!(
            "schedstat",
            { "pid": busy.pid(), "run_ns": run_ns, "wait_ns": wait_ns },
            "busy's R, from /proc/{}/schedstat: {:.1} ms on a CPU (运行态), {:.1} ms runnable \
             but waiting for a CPU (就绪态)",
            busy.pid().unwrap_or(0),
            run_ns as f64 / 1e6,
            wait_ns as f64 / 1e6
        );
    }
    ps::show_tree("this demo's processes, with their STAT letters:");
    let ids: Vec<Ident> = [&busy, &sleeper, &stopped, &zombie]
        .iter()
        .filter_map(|p| p.pid())
        .map(Ident::of)
        .collect();
    let mut pids = vec![std::process::id() as i32];
    pids.extend(ids.iter().map(|i| i.pid));
    cli.hold("four children in states R, S, T and Z", &pids);

    // SIGCONT resumes the stopped child where it was: back in its sleep.
    stopped.signal(libc::SIGCONT)?;
    let state = procfs::wait_for_state(stopped_pid, "the stopped child to resume", |s| s != 'T')?;
    common::event!("resumed", { "pid": stopped_pid, "state": state.to_string() }, "SIGCONT: the stopped child {stopped_pid} goes on; state {state} ({})",
            ps::state_meaning(state));

    // The end: terminate the three that still run (Python's terminate()), reap all four.
    report::say(
        "The demo ends its children now: terminate() (SIGTERM) to busy, sleeper and stopped, \
         then join() reaps all four; so three exit statuses read -SIGTERM, the zombie's 0. \
         (In <Process ... stopped exitcode=...>, CPython's wording, stopped means ended.)",
    );
    for p in [&busy, &sleeper, &stopped] {
        p.terminate()?;
    }
    let sent = [Some(libc::SIGTERM), Some(libc::SIGTERM), Some(libc::SIGTERM), None];
    let all = [&mut busy, &mut sleeper, &mut stopped, &mut zombie];
    for ((p, ident), sent) in all.into_iter().zip(ids).zip(sent) {
        p.join()?;
        report_reaped(p, ident, "join() -> waitpid()", sent)?;
    }
    Ok(())
}

/// `/proc/PID/schedstat`: nanoseconds on a CPU and nanoseconds waiting in a run queue (the
/// first two of its three numbers); `None` where the kernel has no schedstats.
fn schedstat(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}
