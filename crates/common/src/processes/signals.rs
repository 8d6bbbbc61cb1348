//! signals — Ctrl-C or SIGTERM at any moment leaves nothing behind.
//!
//! - The main thread blocks SIGINT, SIGTERM and SIGHUP *before any other thread exists* (threads
//!   inherit the mask), and one watcher thread takes them: no code runs in a signal handler, and
//!   the watcher knows *which* signal came (exit 130 for SIGINT, 143 for SIGTERM). A `ctrlc`
//!   handler is not told which, and a forked child would inherit it as a handler whose thread
//!   does not exist, swallowing Ctrl-C; here a forked child unblocks the signals and gets the
//!   default action.
//! - The watcher then stops every child (SIGTERM, a grace period, SIGKILL; a fork server's
//!   children by pid like the others, the server last, once it has reported them all), reaps
//!   them, and ends the process with `128 + signal`. This works whether the signal reaches the
//!   whole process group (a terminal's Ctrl-C: the children die of it and are reaped) or the
//!   parent alone (`kill -INT PID`: the watcher stops them).
//! - For a parent killed with SIGKILL, every child asks for `PR_SET_PDEATHSIG`, and the demo is
//!   a child subreaper: orphaned descendants come back to it to be reaped, not left as zombies
//!   under a PID 1 that may never reap them (as in many containers).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::{SigSet, Signal};

use crate::process;

/// How long children get to end after SIGTERM before they are killed with SIGKILL.
pub const GRACE: Duration = Duration::from_millis(1500);

/// The signals that stop a demo: the watcher takes them; the fork server ignores them.
pub(crate) const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Set once a stop signal has been received: the watcher is stopping everything.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The watcher's signalfd, which a forked child (no watcher thread in it) closes first thing,
/// so that it does not show among the child's open files.
pub(crate) static WATCHER_FD: AtomicI32 = AtomicI32::new(-1);

/// Blocks the stop signals in this thread and starts the watcher. Must run before any other
/// thread is started, which is why the demo runner calls it first.
pub fn install() -> Result<()> {
    let set = SigSet::from_iter(STOP_SIGNALS);
    set.thread_block()?;
    // Linux: the watcher waits on a `signalfd` with `poll`, which leaves the signal pending; it
    // raises `STOPPING` *before* taking the signal off the queue, so at every instant the stop
    // is either still pending or already flagged: [`stopping`] never misses it.
    #[cfg(target_os = "linux")]
    let watch = {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        use std::os::fd::{AsFd, AsRawFd};
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?;
        WATCHER_FD.store(fd.as_raw_fd(), Ordering::SeqCst);
        move || loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::NONE), Ok(n) if n > 0) {
                continue;
            }
            STOPPING.store(true, Ordering::SeqCst);
            if let Ok(Some(info)) = fd.read_signal() {
                shutdown(info.ssi_signo as i32);
            }
        }
    };
    // Elsewhere: `sigwait(2)`. The signal is flagged right after it is taken, a window of a few
    // instructions in which [`stopping`] can miss it.
    #[cfg(not(target_os = "linux"))]
    let watch = move || loop {
        if let Ok(signal) = set.wait() {
            STOPPING.store(true, Ordering::SeqCst);
            shutdown(signal as i32);
        }
    };
    std::thread::Builder::new().name("signal-watcher".into()).spawn(watch)?;
    Ok(())
}

/// True once Ctrl-C or SIGTERM has arrived (or is about to be handled): the watcher will stop
/// every child and end the process with 130 or 143. Code that sees a child die in the meantime
/// (of that same Ctrl-C) must not report a failure of its own; the runner parks instead.
pub fn stopping() -> bool {
    if STOPPING.load(Ordering::SeqCst) {
        return true;
    }
    let mut pending = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // Safety: sigpending fills the set it is given.
    if unsafe { libc::sigpending(pending.as_mut_ptr()) } != 0 {
        return false;
    }
    // Safety: sigpending succeeded, so the set is filled.
    let pending = unsafe { SigSet::from_sigset_t_unchecked(pending.assume_init()) };
    STOP_SIGNALS.iter().any(|s| pending.contains(*s)) || STOPPING.load(Ordering::SeqCst)
}

/// Makes this process the reaper of its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`),
/// or stops being one. Returns whether the kernel agreed (false where there is no such call).
pub fn set_child_subreaper(on: bool) -> bool {
    #[cfg(target_os = "linux")]
    return nix::sys::prctl::set_child_subreaper(on).is_ok();
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
    crate::event!("interrupted", { "signal": name, "children": children.len() }, "interrupted by {name}: ending and reaping {} child(ren)", children.len());
    process::stop_all_children(GRACE);
    // Last, whatever ended meanwhile that `Process` does not know (an orphan adopted late).
    super::reap::reap_ended();
    let code = 128 + signo;
    crate::event!("exit", { "code": code }, "every child is reaped; exit {code}");
    // The pictures of the run so far (--trace, --svg), now that every child's end is in them.
    crate::trace::finish_on_signal();
    // Safety: _exit ends the process without running destructors or flushing Rust's stdout,
    // which the main thread may be holding; every line was already written with write(2).
    unsafe { libc::_exit(code) }
}
