//! Parts A3 and A4, beyond the notes: a daemonic child whose parent is killed with SIGKILL
//! lives on, an orphan (孤儿进程), unless `PR_SET_PDEATHSIG` has the kernel end it too.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::{Process, Role, exitcode_name};
use common::{ps, report};
use serde_json::{Value, json};

use crate::daemonic::{method_arg, method_of};
use crate::{Cli, SIGKILL, SIGTERM};

/// How long the demo waits for the kernel to show a grandchild's birth or death in `/proc`.
const PROC_TIMEOUT: Duration = Duration::from_secs(10);

pub static PARENT: Role = Role::new("parent", parent);
pub static LINGERER: Role = Role::new("lingerer", lingerer);

/// Starts a daemonic child, then waits to be killed: the end of its main code, which would
/// terminate that child, never comes.
fn parent(args: Value) -> Result<()> {
    let outlive = args["outlive"].as_bool().unwrap_or(false);
    let mut child =
        Process::new("daemonic-child", &LINGERER, json!({})).start_method(method_of(&args));
    if outlive {
        // Python's behaviour: no parent-death signal, the child may outlive its parent.
        child = child.outlive_parent();
    }
    child.set_daemon(true)?;
    child.start()?;
    let how =
        if outlive { "no PR_SET_PDEATHSIG, as in Python" } else { "PR_SET_PDEATHSIG=SIGKILL" };
    common::event!("started", { "name": child.name(), "pid": child.pid(), "daemon": true, "pdeathsig": !outlive }, "started {child} ({how}); now waiting to be killed");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A child that does nothing until a signal ends it.
fn lingerer(_: Value) -> Result<()> {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A parent killed with SIGKILL leaves its daemonic child behind (Python's behaviour).
pub fn orphan(cli: &Cli) -> Result<()> {
    report::section("Part A3: the parent is SIGKILLed: its daemonic child is orphaned (孤儿进程)");
    report::say(
        "The parent terminates its daemonic children in code that runs at its exit. SIGKILL \
         ends a process without running any of its code, so the child lives on. The kernel \
         gives it to the nearest child subreaper among its ancestors (systemd --user on a \
         desktop), or to init (PID 1) when there is none; here the demo is that subreaper \
         (PR_SET_CHILD_SUBREAPER) and inherits it.",
    );
    let me = std::process::id() as i32;
    let (mut parent, child) = parent_with_daemonic_child(cli, true)?;
    let mut orphan = Adopted::new(child);
    ps::show_tree("before: the demo, the parent and its daemonic child");
    // The first moment: the child's parent is alive (PPID = the parent); the second hold, below,
    // shows the same child after its parent's death (PPID = the demo, its adopter).
    let parent_pid = parent.pid().unwrap_or(0);
    cli.common.hold(
        &format!("the daemonic child {child} under its parent {parent_pid}, still alive"),
        &[me, parent_pid, child],
    );
    let guess = common::predict::ask(
        &cli.common,
        "outlives",
        "the parent of a daemonic child is killed with SIGKILL: is the daemonic child still \
         alive afterwards? (yes / no)",
        common::predict::Expect::Choice(&["yes", "no"]),
    );
    parent.kill()?;
    let code = parent.join()?;
    common::event!("parent_killed", { "parent": parent.pid(), "child": child, "exitcode": code }, "SIGKILL -> {parent}: no code of its own ran at its end");
    let info = ps::stat(child).filter(|i| i.state != 'Z');
    guess.reveal(
        if info.is_some() { "yes" } else { "no" },
        "a daemonic child is terminated by its parent's own code at its end, and SIGKILL runs \
         none of it: the child lives on as an orphan",
    );
    report::event(
        "orphaned",
        json!({ "child": child, "alive": info.is_some(), "ppid": info.as_ref().map(|i| i.ppid),
                "state": info.as_ref().map(|i| i.state.to_string()) }),
        match &info {
            Some(i) => format!(
                "the daemonic child {child} is alive (state {}): an orphan, now the child of \
                 pid {} (this demo, a child subreaper; without one, the nearest subreaper \
                 above it, or init)",
                i.state, i.ppid
            ),
            None => format!("the daemonic child {child} is gone: it did not outlive its parent"),
        },
    );
    ps::show_tree("after: the orphan was reparented to the demo");
    match info {
        Some(i) if i.ppid == me => {}
        // Killed from elsewhere (a zombie of ours now, or already reaped by the watcher).
        None => {
            let code = orphan.reap()?;
            return Err(common::processes::lost::report_pid(
                child,
                "daemonic-child",
                code,
                "steps of this part",
                1,
            ));
        }
        _ => bail!("expected the orphan {child} alive and reparented to {me}"),
    }
    cli.common.hold("the daemonic child outlived its parent", &[me, child]);
    let code = orphan.stop()?;
    common::event!("orphan_stopped", { "child": child, "exitcode": code }, "no one else would end it: the demo sent SIGTERM and reaped it (exitcode {})",
            exitcode_name(code));
    if code != Some(-SIGTERM) {
        let lost = common::processes::lost::report_pid(child, "daemonic-child", code, "steps", 0);
        return Err(lost.context("the orphan ended otherwise than by the demo's SIGTERM"));
    }
    Ok(())
}

/// With `PR_SET_PDEATHSIG` the kernel kills the child when the parent thread that created it
/// exits, even by SIGKILL.
pub fn pdeathsig(cli: &Cli) -> Result<()> {
    report::section("Part A4: PR_SET_PDEATHSIG: the kernel ends the child with its parent");
    report::say(
        "prctl(PR_SET_PDEATHSIG, SIGKILL) in the child: when the parent *thread* that created \
         it exits, however it ends (prctl(2)), the kernel sends it SIGKILL. Here the parent \
         creates it from its main thread, so its death is the parent's. common::process does \
         this for every child by default.",
    );
    let me = std::process::id() as i32;
    let (mut parent, child) = parent_with_daemonic_child(cli, false)?;
    let mut adopted = Adopted::new(child);
    parent.kill()?;
    let code = parent.join()?;
    common::event!("parent_killed", { "parent": parent.pid(), "child": child, "exitcode": code }, "SIGKILL -> {parent}");
    // The kernel shows the effect: the child dies, a zombie of ours (we inherited it) until
    // we reap it.
    wait_for_proc(&format!("pid {child} to be a zombie"), || ps::state_of(child) == Some('Z'))?;
    ps::show_tree("the child died with its parent: a zombie (僵尸进程) under the demo");
    cli.common.hold("the child died with its parent; reaping it is up to the demo", &[me, child]);
    let code = adopted.reap()?;
    common::event!("died_with_parent", { "child": child, "exitcode": code, "exitcode_name": exitcode_name(code) }, "the daemonic child died with its parent: exitcode {}", exitcode_name(code));
    if code != Some(-SIGKILL) {
        bail!("expected the child to die of SIGKILL, its exit code was {}", exitcode_name(code));
    }
    Ok(())
}

/// Starts `parent`, which starts a daemonic child; returns both once the child runs its role
/// (its name shows in `/proc`, set after the parent-death signal was requested).
fn parent_with_daemonic_child(cli: &Cli, outlive: bool) -> Result<(Process, i32)> {
    let mut parent =
        Process::new("parent", &PARENT, json!({ "outlive": outlive, "method": method_arg(cli) }))
            .start_method(cli.common.start_method);
    parent.start()?;
    let parent_pid = parent.pid().unwrap_or(0);
    let mut child = None;
    let mut parent_died = false;
    let mut dead_child = None;
    let found = wait_for_proc("the parent's daemonic child", || {
        child = ps::children_of(parent_pid)
            .into_iter()
            .find(|pid| ps::stat(*pid).is_some_and(|i| i.comm == "daemonic-child"));
        // A parent killed from elsewhere before it started its child never will; a child
        // killed before it took its name is a zombie of the parent under the parent's name.
        parent_died = child.is_none() && !parent.is_alive();
        if child.is_none() {
            dead_child =
                ps::children_of(parent_pid).into_iter().find(|pid| ps::state_of(*pid) == Some('Z'));
        }
        child.is_some() || parent_died || dead_child.is_some()
    });
    if parent_died {
        return Err(common::processes::lost::report(&parent, "steps", 1)
            .context("the parent ended before it started its daemonic child"));
    }
    if let Some(pid) = dead_child {
        let _ = parent.kill();
        let _ = parent.join();
        let lost = common::processes::lost::report_pid(pid, "daemonic-child", None, "steps", 1);
        return Err(lost.context("the daemonic child died as it started"));
    }
    match (found, child) {
        (Ok(()), Some(child)) => Ok((parent, child)),
        (result, _) => {
            let _ = parent.kill();
            let _ = parent.join();
            result.and_then(|()| bail!("the parent's daemonic child vanished"))
        }
    }
}

/// Polls `/proc` until `pred` holds: for facts only the kernel can announce.
fn wait_for_proc(what: &str, mut pred: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + PROC_TIMEOUT;
    while !pred() {
        if Instant::now() >= deadline {
            bail!("waited {PROC_TIMEOUT:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// A grandchild that the kernel reparented to this demo (a child subreaper) when its parent
/// died. It is our child now, but not a `Process` of ours: the demo stops and reaps it itself,
/// and on any early return this guard kills and reaps it, so nothing is left behind.
struct Adopted {
    pid: i32,
    reaped: bool,
}

impl Adopted {
    fn new(pid: i32) -> Adopted {
        Adopted { pid, reaped: false }
    }

    /// SIGTERM, then reap: returns the exit code (`-15`).
    fn stop(&mut self) -> Result<Option<i32>> {
        signal(self.pid, SIGTERM)?;
        self.reap()
    }

    /// Waits for it to end (bounded) and reaps it with `waitpid`.
    fn reap(&mut self) -> Result<Option<i32>> {
        let code = reap(self.pid, PROC_TIMEOUT)?;
        self.reaped = true;
        Ok(code)
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = signal(self.pid, SIGKILL);
            let _ = reap(self.pid, PROC_TIMEOUT);
        }
    }
}

#[cfg(unix)]
fn signal(pid: i32, signo: i32) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    let signal = Signal::try_from(signo)?;
    kill(nix::unistd::Pid::from_raw(pid), signal).with_context(|| format!("kill({pid}, {signal})"))
}

/// `waitpid(pid, WNOHANG)` until it ends or `timeout` passes; `-signo` if a signal killed it.
#[cfg(unix)]
fn reap(pid: i32, timeout: Duration) -> Result<Option<i32>> {
    use nix::errno::Errno;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Some(-(signal as i32))),
            Ok(_) | Err(Errno::EINTR) => {}
            // Reaped by someone else (the runner's signal watcher): gone all the same.
            Err(Errno::ECHILD) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("waitpid({pid})")),
        }
        if Instant::now() >= deadline {
            bail!("pid {pid} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(not(unix))]
fn signal(_pid: i32, _signo: i32) -> Result<()> {
    bail!("this part needs a Unix system")
}

#[cfg(not(unix))]
fn reap(_pid: i32, _timeout: Duration) -> Result<Option<i32>> {
    bail!("this part needs a Unix system")
}
