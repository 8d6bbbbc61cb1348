//! Reaping and stopping children: `waitpid` (or, for a fork server's child, its status pipe)
//! for [`Process::join`]; the end of the main code, where daemonic children are terminated and
//! the others waited for; and the stop-everything the signal watcher runs at Ctrl-C, so that
//! no demo leaves a zombie or an orphan behind.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid};

#[cfg(doc)]
use super::process::Process;
use super::registry::{ChildEntry, registry};
use crate::forkserver::{self, Status};
use crate::report;

/// Sends `signal` to `pid`; one that has already ended (`ESRCH`) is no error.
pub(super) fn send(pid: i32, signal: Signal) -> Result<()> {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("kill({pid}, {signal})")),
    }
}

/// Python's `exitcode` of an ended child: its exit code, or minus the signal that killed it
/// (`-9` for SIGKILL); `None` for a status that is not an end (stopped, continued).
pub(crate) fn exitcode_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
        _ => None,
    }
}

/// Blocks until `pid` ends and reaps it, without the registry (whose lock the caller may
/// hold): its exit code, `None` if it was reaped by someone else.
pub(crate) fn reap_now(pid: i32) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None).map(exitcode_of) {
            Ok(Some(code)) => return Some(code),
            Ok(None) | Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

/// Reaps every child that has ended, whether [`Process`] knows it or not (a child a demo forked
/// itself, an orphan adopted by this subreaper), and keeps its exit code for its owner's
/// `join`. False once no child is left at all.
pub(super) fn reap_ended() -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    let mut r = registry();
                    r.children.remove(&pid.as_raw());
                    r.reaped.insert(pid.as_raw(), exitcode_of(status));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return false, // ECHILD
        }
    }
}

/// The status pipe of `pid`, if it is a fork server's child whose server still reports.
fn server_pipe(pid: i32) -> Option<Arc<OwnedFd>> {
    registry().children.get(&pid).and_then(|c| c.status.clone())
}

/// Waits for `pid`: forever (`None`), not at all (`Some(ZERO)`), or up to a timeout.
/// Returns `Some(exitcode)` once it is reaped (`Some(None)` if its status was lost because
/// the kernel reaped it, SIGCHLD being ignored), `None` if it is still running.
pub(crate) fn wait(pid: i32, timeout: Option<Duration>) -> Option<Option<i32>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    // A fork server's child: its exit code comes through its status pipe.
    while let Some(pipe) = server_pipe(pid) {
        if !forkserver::poll_status(&pipe, deadline) {
            return None;
        }
        // Read under the registry lock, so that of two waiters exactly one takes the code
        // and the other finds the child gone from the registry.
        let mut r = registry();
        let Some(child) = r.children.get_mut(&pid) else { continue };
        match forkserver::read_status(&pipe) {
            Status::Code(code) => {
                r.children.remove(&pid);
                return Some(Some(code));
            }
            // Its children are reparented to us (a subreaper): wait as for ours.
            Status::ServerGone => {
                child.status = None;
                drop(r);
                forkserver::server_died();
            }
            Status::NotYet => {}
        }
    }
    let mut pause = Duration::from_micros(200);
    loop {
        match waitpid(Pid::from_raw(pid), timeout.map(|_| WaitPidFlag::WNOHANG)).map(exitcode_of) {
            Ok(Some(code)) => {
                registry().children.remove(&pid);
                return Some(Some(code));
            }
            Ok(None) => {} // still running, stopped or continued
            Err(Errno::EINTR) => continue,
            // ECHILD: reaped elsewhere (the watcher, or the kernel with SIGCHLD ignored).
            Err(_) => {
                let mut r = registry();
                r.children.remove(&pid);
                return Some(r.reaped.remove(&pid).flatten());
            }
        }
        let Some(deadline) = deadline else { continue };
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Blocks until child `pid` has ended, *without reaping it*, so that its owner's
/// [`Process::join`] then returns at once with the status: `waitid` with `WNOWAIT` for a child
/// of ours, a `poll` on its status pipe for a fork server's. Returns at once for a pid that is
/// neither (already reaped by the signal watcher, at Ctrl-C).
pub fn wait_until_ended(pid: i32) {
    if let Some(pipe) = server_pipe(pid) {
        forkserver::poll_status(&pipe, None);
        if forkserver::status_waiting(&pipe) {
            return;
        }
        // End of file without a code: the server died, and the child is ours now (or gone).
    }
    // WNOWAIT leaves the child a zombie, so its pid cannot be reused before its owner reaps it.
    while waitid_nowait(pid, 0) == Err(Errno::EINTR) {}
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT | extra)`: waits for the child's end (or, with
/// `WNOHANG`, looks) without reaping it. libc's, as nix has no `waitid` on every Unix.
fn waitid_nowait(pid: i32, extra: libc::c_int) -> nix::Result<()> {
    let flags = libc::WEXITED | libc::WNOWAIT | extra;
    // Safety: waitid fills the zeroed siginfo_t it is given, and nothing else.
    let rc = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags)
    };
    Errno::result(rc).map(drop)
}

/// The end of the main code, as Python does it at interpreter exit: daemonic children are
/// terminated, then every other child is waited for ("主进程会等待所有的子进程结束").
pub fn finish_main() {
    end_main_code();
    forkserver::stop();
}

/// How one child ended at the end of the main code (see [`end_main_code`]).
#[derive(Debug, Clone)]
pub struct Ended {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    /// As [`Process::exitcode`]: `-15` for a daemonic child ended by SIGTERM.
    pub exitcode: Option<i32>,
    /// When it was reaped, in milliseconds since the demo started ([`report::elapsed_ms`]).
    pub at_ms: u64,
}

/// What [`finish_main`] does before it stops the fork server, returning how each child ended,
/// for a demo that shows it. The daemonic children are reaped first, so that none lingers as a
/// zombie while the others are waited for, however long that takes.
pub fn end_main_code() -> Vec<Ended> {
    let mut children: Vec<(i32, ChildEntry)> =
        registry().children.iter().map(|(p, c)| (*p, c.clone())).collect();
    children.sort_by_key(|(pid, child)| (!child.daemon, *pid));
    for (pid, _) in children.iter().filter(|(_, child)| child.daemon) {
        let _ = send(*pid, Signal::SIGTERM);
    }
    children
        .into_iter()
        .map(|(pid, child)| Ended {
            pid,
            name: child.name,
            daemon: child.daemon,
            exitcode: wait(pid, None).flatten(),
            at_ms: report::elapsed_ms(), // once reaped: fields are evaluated in this order
        })
        .collect()
}

/// Stops every child (SIGTERM, up to `grace` to end, then SIGKILL) and reaps it, and any
/// orphaned descendant reparented to this process; the fork server last, once it has reported
/// its own children. Used by the signal watcher; afterwards no new child can start.
pub fn stop_all_children(grace: Duration) {
    let mut targets: Vec<i32> = {
        let mut r = registry();
        r.shutting_down = true;
        r.children.keys().copied().collect()
    };
    let me = getpid().as_raw();
    // The fork server is not stopped with the others: it must live to report its children.
    let server = forkserver::server_pid();
    let children_of_me = || -> Vec<i32> {
        crate::ps::children_of(me).into_iter().filter(|&pid| Some(pid) != server).collect()
    };
    targets.extend(children_of_me());
    targets.sort_unstable();
    targets.dedup();
    for pid in &targets {
        let _ = send(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    // Until no child is left at all, or none but the fork server.
    while reap_ended() {
        collect_server_statuses();
        let left = children_of_me();
        let registered: Vec<i32> = registry().children.keys().copied().collect();
        if left.is_empty() && registered.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for pid in left.iter().chain(&registered) {
                let _ = send(*pid, Signal::SIGKILL);
            }
        } else {
            // New orphans may have been reparented to us since the first round.
            for pid in &left {
                if !targets.contains(pid) {
                    let _ = send(*pid, Signal::SIGTERM);
                    targets.push(*pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    forkserver::stop();
}

/// Reads, without blocking, the exit codes the fork server has sent for its children in
/// the registry; a child whose server died is treated as ours from then on, and forgotten
/// if it is not (it was not reparented to us).
fn collect_server_statuses() {
    let mut r = registry();
    let watched: Vec<(i32, Arc<OwnedFd>)> =
        r.children.iter().filter_map(|(pid, c)| c.status.clone().map(|s| (*pid, s))).collect();
    for (pid, pipe) in watched {
        let forget = match forkserver::read_status(&pipe) {
            Status::Code(code) => Some(Some(code)),
            Status::ServerGone if is_our_child(pid) => {
                if let Some(child) = r.children.get_mut(&pid) {
                    child.status = None;
                }
                None
            }
            Status::ServerGone if kill(Pid::from_raw(pid), None).is_err() => Some(None),
            Status::ServerGone | Status::NotYet => None,
        };
        if let Some(code) = forget {
            r.children.remove(&pid);
            r.reaped.insert(pid, code);
        }
    }
}

/// Whether `pid` is a child of this process (ended or not), without reaping it.
fn is_our_child(pid: i32) -> bool {
    waitid_nowait(pid, libc::WNOHANG).is_ok()
}
