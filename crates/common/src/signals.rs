//! signals — Ctrl-C or SIGTERM at any moment leaves nothing behind.
//!
//! The design, and why:
//! - The demo's main thread blocks SIGINT, SIGTERM and SIGHUP *before any other thread exists*
//!   (threads inherit the mask), and one watcher thread takes them with `sigwait(2)`. No code
//!   runs inside a signal handler, and the watcher learns *which* signal came, so the exit code
//!   is 130 for SIGINT and 143 for SIGTERM. (A `ctrlc` handler is not told which signal it was,
//!   and a forked child inherits it as a handler whose thread does not exist: it would swallow
//!   Ctrl-C. Here a forked child simply unblocks the signals and gets the default action.)
//! - On a signal the watcher stops every child (SIGTERM, a grace period, then SIGKILL), reaps
//!   them all, and ends the process with `128 + signal`.
//! - This works whether the signal reaches the whole process group (a terminal's Ctrl-C: the
//!   children die of it themselves and are reaped) or the parent alone (`kill -INT PID`: the
//!   watcher stops them).
//! - As a backstop for a parent killed with SIGKILL, every child asks for `PR_SET_PDEATHSIG`
//!   (see [`crate::process`]), and the demo is a child subreaper, so that orphaned descendants
//!   come back to it to be reaped instead of lingering as zombies under a PID 1 that may never
//!   reap them (as in many containers).

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::{process, report};

/// How long children get to end after SIGTERM before they are killed with SIGKILL.
pub const GRACE: Duration = Duration::from_millis(1500);

/// Blocks the stop signals in this thread and starts the watcher. Must run before any other
/// thread is started, which is why the demo runner calls it first.
pub fn install() -> Result<()> {
    imp::install()
}

/// Makes this process the reaper of its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`),
/// or stops being one. Returns whether the platform supports it.
pub fn set_child_subreaper(on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        // Safety: PR_SET_CHILD_SUBREAPER only sets a flag on the calling process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, libc::c_ulong::from(on)) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = on;
        false
    }
}

/// Stops and reaps every child, prints why, and ends the process with `128 + signo`.
fn shutdown(signo: i32) -> ! {
    let name = process::signal_name(signo).unwrap_or("signal");
    let children = process::live_children();
    report::event(
        "interrupted",
        json!({ "signal": name, "children": children.len() }),
        format!("interrupted by {name}: stopping and reaping {} child(ren)", children.len()),
    );
    process::stop_all_children(GRACE);
    let code = 128 + signo;
    report::event("exit", json!({ "code": code }), format!("every child is reaped; exit {code}"));
    // Safety: _exit ends the process without running destructors or flushing Rust's stdout,
    // which the main thread may be holding; every line was already written with write(2).
    unsafe { libc::_exit(code) }
}

#[cfg(unix)]
mod imp {
    use super::*;
    use nix::sys::signal::{SigSet, Signal};

    fn stop_signals() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        set
    }

    pub fn install() -> Result<()> {
        let set = stop_signals();
        set.thread_block()?;
        std::thread::Builder::new().name("signal-watcher".into()).spawn(move || {
            loop {
                if let Ok(signal) = set.wait() {
                    shutdown(signal as i32);
                }
            }
        })?;
        Ok(())
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;
    pub fn install() -> Result<()> {
        Ok(())
    }
}
