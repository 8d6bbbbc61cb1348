//! Part 3: an event across processes (`py_multiprocessing::sync::ProcessEvent`): children asleep
//! in `wait()`, one killed while it waits, and one `set()` that wakes every other one.

use std::time::{Duration, Instant};

use anyhow::Result;
use common::predict::{self, Expect};
use common::process::{Process, Role, Run, exitcode_name};
use common::processes::lost;
use common::{ps, report};
use py_multiprocessing::sync::ProcessEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Cli;

/// The roles a spawned child may run.
pub static ROLES: [&Role; 1] = [&WAITER];
static WAITER: Role = Role::of::<Waiter>();

/// How long the parent waits to see every waiter asleep before it calls the run failed.
const ASLEEP_DEADLINE: Duration = Duration::from_secs(30);

/// A waiting process: `event.wait()`, then says when it woke.
#[derive(Debug, Serialize, Deserialize)]
struct Waiter {
    event: ProcessEvent,
}

impl Run for Waiter {
    const ROLE: &'static str = "event-waiter";
    fn run(self) -> Result<()> {
        let me = report::who();
        common::event!("waiting", { "who": me }, "{me} waits in event.wait()");
        let began = Instant::now();
        let result = self.event.wait();
        common::event!("woke", { "who": me, "result": result, "waited_ms": began.elapsed().as_millis() as u64 }, "{me} woke: event.wait() -> True");
        Ok(())
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    let n = cli.waiters;
    report::section("3. Processes: waiters asleep in wait(), one killed, set() wakes the rest");
    let event = ProcessEvent::new()?;
    report::say(format!(
        "event = ProcessEvent(): one 32-bit flag in shared memory (a memfd); {n} waiter \
         process(es), started by {}, sleep on it in a futex",
        cli.common.start_method
    ));
    let mut waiters: Vec<Process> = (1..=n)
        .map(|i| {
            Process::from_run(format!("waiter-{i}"), Waiter { event: event.clone() })
                .start_method(cli.common.start_method)
                .pass_fds(&event.fds())
        })
        .collect();
    let result = (|| -> Result<()> {
        for w in &mut waiters {
            w.start()?;
        }
        let pids: Vec<i32> = waiters.iter().filter_map(Process::pid).collect();
        lost::wait_asleep_in_futex(&pids, &mut waiters, ASLEEP_DEADLINE)?;
        show_asleep(&pids);
        cli.common.hold("every waiter asleep in event.wait(); waiter-1 is killed next", &pids);

        let guess = predict::ask(
            &cli.common,
            "woke",
            format!(
                "{n} waiter process(es) asleep in event.wait(); waiter-1 is killed with SIGKILL, \
                 then event.set(): how many waiters wake?"
            ),
            Expect::Count,
        );
        let victim = &mut waiters[0];
        let victim_pid = victim.pid().unwrap_or(0);
        victim.kill()?;
        let exitcode = victim.join()?;
        common::event!("killed", { "pid": victim_pid, "name": victim.name(), "exitcode": exitcode }, "kill -9 {victim_pid} ({}, asleep in event.wait()): {}; the kernel just takes it \
                 off the futex's wait queue",
                victim.name(),
                exitcode_name(exitcode));
        common::event!("set", { "waiters": n - 1 }, "event.set(): the flag goes up, and one FUTEX_WAKE wakes every sleeper");
        let began = Instant::now();
        event.set();
        if let Some(i) = lost::join_all(&mut waiters[1..])? {
            return Err(lost::report(&waiters[1 + i], "its wake-up", 1));
        }
        let all = began.elapsed();
        guess.reveal(
            n - 1,
            "set() raises the flag in shared memory and one FUTEX_WAKE wakes every sleeper; \
             the killed one was just taken off the futex's wait queue, and is missed by nobody",
        );
        common::event!("all_woke", { "woke": n - 1, "killed": 1, "ms": all.as_millis() as u64 }, "{} waiter(s) woke and ended within {:.1} ms of set(); the killed one harmed \
                 nobody (CPython's multiprocessing.Event.set() would wait for ever for its \
                 acknowledgement, and wake no one)",
                n - 1,
                all.as_secs_f64() * 1000.0);
        Ok(())
    })();
    if result.is_err() {
        event.set();
        let _ = lost::stop_running(&mut waiters);
    }
    result
}

/// The waiters as `ps -o pid,stat,wchan,comm` shows them (the event `asleep`).
fn show_asleep(pids: &[i32]) {
    let title = "every waiter asleep (S) in event.wait(), using no CPU";
    let (rows, text) = ps::sleep_table(title, pids);
    report::event("asleep", json!({ "pids": pids, "rows": rows }), text);
}
