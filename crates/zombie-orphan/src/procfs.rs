//! Readings of `/proc` this demo needs beyond `common::ps`: one particular process (a pid and
//! its start time, so that a pid reused by a newcomer is never taken for the process we watched),
//! its name and its memory, and a bounded wait for a state letter.
//!
//! Reading `/proc/PID/stat` never reaps anything: it is how the parent can look at a zombie
//! child without calling `waitpid`, which would remove it.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::ps;

/// The longest this demo waits for the kernel to show a state (a child to end, to be stopped, to
/// be adopted). Generous: a loaded 2-core machine may take a while to schedule a new child.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One particular process: a pid and the start time it had when we first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    pub pid: i32,
    start: Option<u64>,
}

impl Ident {
    /// The process that has `pid` now.
    pub fn of(pid: i32) -> Ident {
        Ident { pid, start: ps::start_ticks(pid) }
    }

    /// True while that very process still has an entry in `/proc` (alive or zombie).
    pub fn listed(&self) -> bool {
        self.start.is_some() && ps::start_ticks(self.pid) == self.start
    }

    /// Its state letter, if it is still listed.
    pub fn state(&self) -> Option<char> {
        let state = ps::state_of(self.pid);
        if self.listed() { state } else { None }
    }
}

/// The short name of `pid` (`/proc/PID/comm`, what `ps -o comm` shows), or `?`.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `VmRSS` of `/proc/PID/status`, in kB: the process's resident memory (none for a zombie).
pub fn rss_kb(pid: i32) -> Option<u64> {
    ::procfs::process::Process::new(pid).ok()?.status().ok()?.vmrss
}

/// Polls `/proc/PID/stat` until the state letter satisfies `want`, for at most [`WAIT_LIMIT`].
/// `what` says what is awaited, for the error message.
pub fn wait_for_state(pid: i32, what: &str, want: impl Fn(char) -> bool) -> Result<char> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let state = ps::state_of(pid);
        if let Some(s) = state.filter(|s| want(*s)) {
            return Ok(s);
        }
        if state.is_none_or(|s| s == 'Z') {
            // Ended (killed from elsewhere, say): the state wanted will never come.
            bail!("waiting for {what}: /proc/{pid} has ended ({state:?})");
        }
        if Instant::now() >= deadline {
            let seen = state.map_or("no such process".to_string(), |s| format!("state {s}"));
            bail!("waiting for {what}: /proc/{pid}/stat still shows {seen} after {WAIT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_is_listed() {
        let me = Ident::of(std::process::id() as i32);
        assert!(me.listed());
        assert!(rss_kb(me.pid).is_some_and(|kb| kb > 0));
        assert!(!Ident { pid: me.pid, start: me.start.map(|s| s + 1) }.listed());
    }
}
