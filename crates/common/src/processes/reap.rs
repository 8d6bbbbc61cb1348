//! Reaping and stopping children: `waitpid` (or, for a fork server's child, its status pipe)
//! for [`Process::join`](super::process::Process::join); the end of the main code, where
//! daemonic children are terminated and the others waited for; and the stop-everything the
//! signal watcher runs at Ctrl-C, so that no demo leaves a zombie or an orphan behind.

use std::time::Duration;
#[cfg(unix)]
use std::time::Instant;

use serde::Serialize;

#[cfg(doc)]
use super::process::Process;
use super::process::{SIGTERM, send};
use super::registry::{ChildEntry, with_registry};
use crate::report;

#[cfg(unix)]
pub(super) use imp::exitcode_of;
/// What [`Process::join`](super::process::Process::join) waits with.
pub(super) use imp::wait;

/// Reaps every child that has already ended and that [`Process`] does not know (a child a
/// demo forked itself, an orphan adopted by this subreaper): called last at Ctrl-C, so that
/// none is left behind as a zombie.
pub fn reap_unknown_ended_children() {
    #[cfg(unix)]
    {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let any = nix::unistd::Pid::from_raw(-1);
        while let Ok(status) = waitpid(any, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}
/// Blocks until child `pid` has ended, *without reaping it*: its owner reaps it afterwards with
/// [`Process::join`], which then returns at once with the status. For a child of ours this is
/// `waitid` with `WNOWAIT`; for a fork server's child, a `poll` on its status pipe (the server
/// has written the code, which `join` then reads). Returns at once for a pid that is neither
/// (already reaped by the signal watcher, at Ctrl-C).
pub fn wait_until_ended(pid: i32) {
    imp::wait_until_ended(pid)
}
/// The end of the main code, as Python does it at interpreter exit: daemonic children are
/// terminated, then every other child is waited for ("主进程会等待所有的子进程结束").
pub fn finish_main() {
    end_main_code();
    #[cfg(unix)]
    crate::forkserver::stop();
}

/// How one child ended at the end of the main code (see [`end_main_code`]).
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    /// As [`Process::exitcode`]: `-15` for a daemonic child ended by SIGTERM.
    pub exitcode: Option<i32>,
    /// When it was reaped, in milliseconds since the demo started ([`report::elapsed_ms`]).
    pub at_ms: u64,
}

/// What [`finish_main`] does, returning how each child ended, for a demo that shows it:
/// daemonic children are sent SIGTERM and reaped first (so none lingers as a zombie while the
/// others are waited for), then every other child is waited for, however long it takes.
pub fn end_main_code() -> Vec<Ended> {
    let mut children: Vec<(i32, ChildEntry)> =
        with_registry(|r| r.children.iter().map(|(p, c)| (*p, c.clone())).collect());
    children.sort_by_key(|(pid, child)| (!child.daemon, *pid));
    for (pid, child) in &children {
        if child.daemon {
            let _ = send(*pid, SIGTERM);
        }
    }
    children
        .into_iter()
        .map(|(pid, child)| {
            let exitcode = imp::wait(pid, None).flatten();
            Ended {
                pid,
                name: child.name,
                daemon: child.daemon,
                exitcode,
                at_ms: report::elapsed_ms(),
            }
        })
        .collect()
}

/// Stops every child: SIGTERM, up to `grace` to end, then SIGKILL; then reaps all of them, and
/// on Linux also any orphaned descendant reparented to this process. Used by the signal
/// watcher; afterwards no new child can start.
pub fn stop_all_children(grace: Duration) {
    let pids: Vec<i32> = with_registry(|r| {
        r.shutting_down = true;
        r.children.keys().copied().collect()
    });
    imp::stop_and_reap(&pids, grace);
}

#[cfg(unix)]
mod imp {
    use super::*;
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{Pid, getpid};
    use std::sync::Arc;

    use super::super::process::SIGKILL;

    /// Python's `exitcode` of an ended child: its exit code, or minus the signal that killed it
    /// (`-9` for SIGKILL); `None` for a status that is not an end (stopped, continued).
    pub fn exitcode_of(status: WaitStatus) -> Option<i32> {
        match status {
            WaitStatus::Exited(_, code) => Some(code),
            WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
            _ => None,
        }
    }

    /// Waits for `pid`: forever (`None`), not at all (`Some(ZERO)`), or up to a timeout.
    /// Returns `Some(exitcode)` once it is reaped (`Some(None)` if its status was lost because
    /// the kernel reaped it, SIGCHLD being ignored), `None` if it is still running.
    pub fn wait(pid: i32, timeout: Option<Duration>) -> Option<Option<i32>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // A fork server's child: its exit code comes through its status pipe.
        while let Some(pipe) =
            with_registry(|r| r.children.get(&pid).and_then(|c| c.status.clone()))
        {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !crate::forkserver::poll_status(&pipe, left) {
                return None;
            }
            // Read under the registry lock, so that of two waiters exactly one takes the code
            // and the other finds the child gone from the registry.
            let mut server_gone = false;
            let code = with_registry(|r| {
                if !r.children.contains_key(&pid) {
                    return None;
                }
                match crate::forkserver::read_status(&pipe) {
                    crate::forkserver::Status::Code(code) => {
                        r.children.remove(&pid);
                        Some(code)
                    }
                    crate::forkserver::Status::ServerGone => {
                        // Its children are reparented to us (a subreaper): wait as for ours.
                        if let Some(child) = r.children.get_mut(&pid) {
                            child.status = None;
                        }
                        server_gone = true;
                        None
                    }
                    crate::forkserver::Status::NotYet => None,
                }
            });
            if server_gone {
                crate::forkserver::server_died();
            }
            if let Some(code) = code {
                return Some(Some(code));
            }
        }
        let mut pause = Duration::from_micros(200);
        loop {
            let flags = if timeout.is_some() { Some(WaitPidFlag::WNOHANG) } else { None };
            match waitpid(Pid::from_raw(pid), flags) {
                Ok(ended @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    return Some(forget(pid, exitcode_of(ended)));
                }
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => {} // stopped or continued: still alive
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // ECHILD: reaped elsewhere (the watcher, or the kernel with SIGCHLD ignored).
                    let code = with_registry(|r| {
                        r.children.remove(&pid);
                        r.reaped.remove(&pid).flatten()
                    });
                    return Some(code);
                }
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return None,
                Some(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                None => {}
            }
        }
    }

    fn forget(pid: i32, code: Option<i32>) -> Option<i32> {
        with_registry(|r| {
            r.children.remove(&pid);
        });
        code
    }

    pub fn wait_until_ended(pid: i32) {
        let pipe = with_registry(|r| r.children.get(&pid).and_then(|c| c.status.clone()));
        if let Some(pipe) = pipe {
            crate::forkserver::poll_status(&pipe, None);
            if crate::forkserver::status_waiting(&pipe) {
                return;
            }
            // End of file without a code: the server died, and the child is ours now (or gone).
        }
        loop {
            // Safety: waitid fills the zeroed siginfo_t we give it; WNOWAIT leaves the child a
            // zombie, so its pid cannot be reused before its owner reaps it.
            let rc = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || Errno::last() != Errno::EINTR {
                return;
            }
        }
    }

    /// Whether `pid` is a child of this process (ended or not), without reaping it.
    fn is_our_child(pid: i32) -> bool {
        // Safety: waitid fills the zeroed siginfo_t; WNOHANG | WNOWAIT neither blocks nor reaps.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0
        }
    }

    /// Reads, without blocking, the exit codes the fork server has sent for its children in
    /// the registry; a child whose server died is treated as ours from then on, and forgotten
    /// if it is not (it was not reparented to us).
    fn collect_server_statuses() {
        with_registry(|r| {
            let watched: Vec<(i32, Arc<std::os::fd::OwnedFd>)> = r
                .children
                .iter()
                .filter_map(|(pid, c)| c.status.clone().map(|s| (*pid, s)))
                .collect();
            for (pid, pipe) in watched {
                match crate::forkserver::read_status(&pipe) {
                    crate::forkserver::Status::Code(code) => {
                        r.children.remove(&pid);
                        r.reaped.insert(pid, Some(code));
                    }
                    crate::forkserver::Status::ServerGone => {
                        if is_our_child(pid) {
                            if let Some(child) = r.children.get_mut(&pid) {
                                child.status = None;
                            }
                        } else if kill(Pid::from_raw(pid), None).is_err() {
                            r.children.remove(&pid);
                            r.reaped.insert(pid, None);
                        }
                    }
                    crate::forkserver::Status::NotYet => {}
                }
            }
        });
    }

    pub fn stop_and_reap(pids: &[i32], grace: Duration) {
        stop_and_reap_children(pids, grace);
        // Last, once it has reported every child of its own: the fork server.
        crate::forkserver::stop();
    }

    fn stop_and_reap_children(pids: &[i32], grace: Duration) {
        let me = getpid().as_raw();
        // The fork server is not stopped with the others: it must live to report its children.
        let server = crate::forkserver::server_pid();
        let children_of_me = || {
            let mut v = crate::ps::children_of(me);
            v.retain(|pid| Some(*pid) != server);
            v
        };
        let mut targets: Vec<i32> = pids.to_vec();
        targets.extend(children_of_me());
        targets.sort_unstable();
        targets.dedup();
        for pid in &targets {
            let _ = send(*pid, SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            // Reap whatever has ended: our children and any orphan reparented to us.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(status) => {
                        if let Some(pid) = status.pid() {
                            let code = exitcode_of(status);
                            with_registry(|r| {
                                r.children.remove(&pid.as_raw());
                                r.reaped.insert(pid.as_raw(), code);
                            });
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => return, // ECHILD: no child left at all
                }
            }
            collect_server_statuses();
            let left = children_of_me();
            if left.is_empty() && with_registry(|r| r.children.is_empty()) {
                return;
            }
            if Instant::now() >= deadline {
                for pid in left
                    .iter()
                    .copied()
                    .chain(with_registry(|r| r.children.keys().copied().collect::<Vec<_>>()))
                {
                    let _ = send(pid, SIGKILL);
                }
            } else {
                // New orphans may have been reparented to us since the first round.
                for pid in &left {
                    if !targets.contains(pid) {
                        let _ = send(*pid, SIGTERM);
                        targets.push(*pid);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;
    pub fn wait(_pid: i32, _timeout: Option<Duration>) -> Option<Option<i32>> {
        Some(None)
    }
    pub fn stop_and_reap(_pids: &[i32], _grace: Duration) {}
    pub fn wait_until_ended(_pid: i32) {}
}
