//! The two usual cures for zombies, when a parent cannot simply `join` each child in turn:
//!
//! 1. **Reap on SIGCHLD.** The kernel sends the parent SIGCHLD whenever a child ends. A handler
//!    may only do async-signal-safe things, so ours writes one byte to a pipe (the "self-pipe
//!    trick"); the parent's main loop waits on that pipe with `poll(2)` and reaps with
//!    `is_alive()` (a `waitpid(pid, WNOHANG)`) through the same `Process` objects, so the
//!    registry of children stays right. Why not `sigwait`: this program already has a second
//!    thread (the Ctrl-C watcher) that does not block SIGCHLD, so the kernel may deliver the
//!    signal there, where the default action discards it. A handler runs in whichever thread
//!    gets it, and the pipe carries the news to the main loop either way.
//! 2. **Ignore SIGCHLD.** With `SIGCHLD` set to `SIG_IGN`, Linux (and POSIX.1-2001) reaps
//!    children as soon as they end: no zombie ever appears, but the exit status is lost and
//!    `waitpid` fails with `ECHILD`.
//!
//! Both restore the previous SIGCHLD disposition when they are done.

#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::process::Process;
use common::{ps, report};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde_json::json;

use crate::children::Quit;
use crate::procfs::{Ident, WAIT_LIMIT};
use crate::zombie::report_reaped;

/// The children end one after another, this far apart (the notes' seconds, scaled by --speed).
const STAGGER_NOTES_SECS: f64 = 1.0;

/// The write end of the self-pipe, for the signal handler (-1: none yet).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The SIGCHLD handler: one byte into the pipe, nothing else. write(2) is async-signal-safe;
/// errno is saved and restored because the handler may interrupt code that is about to read it.
/// A full pipe (EAGAIN) is fine: it already holds a wake-up.
extern "C" fn on_sigchld(_signo: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let saved = Errno::last_raw();
        // Safety: write(2) on a plain fd with a valid one-byte buffer; async-signal-safe.
        unsafe {
            libc::write(fd, b"!".as_ptr().cast(), 1);
        }
        Errno::set_raw(saved);
    }
}

/// The self-pipe, created once and kept for the life of the process: a handler still running in
/// another thread can then never write into a descriptor that was closed and reused.
fn wake_pipe() -> Result<&'static (OwnedFd, OwnedFd)> {
    static PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();
    if let Some(pipe) = PIPE.get() {
        return Ok(pipe);
    }
    let pipe = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("pipe2() for the SIGCHLD self-pipe")?;
    let pipe = PIPE.get_or_init(|| pipe);
    WAKE_FD.store(pipe.1.as_raw_fd(), Ordering::Relaxed);
    Ok(pipe)
}

/// Sets the SIGCHLD disposition and puts the previous one back when dropped.
struct SigchldDisposition {
    previous: SigAction,
}

impl SigchldDisposition {
    fn set(handler: SigHandler, flags: SaFlags) -> Result<SigchldDisposition> {
        let action = SigAction::new(handler, flags, SigSet::empty());
        // Safety: the handler, if any, is `on_sigchld`, which is async-signal-safe.
        let previous =
            unsafe { sigaction(Signal::SIGCHLD, &action) }.context("sigaction(SIGCHLD)")?;
        Ok(SigchldDisposition { previous })
    }
}

impl Drop for SigchldDisposition {
    fn drop(&mut self) {
        // Safety: puts back the action that was installed before; it was valid then.
        let _ = unsafe { sigaction(Signal::SIGCHLD, &self.previous) };
    }
}

/// Waits up to `timeout` for the pipe to become readable and empties it; returns how many
/// SIGCHLDs were noted.
fn wait_for_sigchld(read_end: &OwnedFd, timeout: Duration) -> Result<usize> {
    let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {} // EINTR: the handler ran in this very thread
        Err(e) => return Err(e).context("poll() on the SIGCHLD self-pipe"),
    }
    let mut noted = 0;
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(read_end, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => return Ok(noted),
            Ok(n) => noted += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("read() from the SIGCHLD self-pipe"),
        }
    }
}

fn start_children(cli: &CommonArgs, prefix: &str, count: usize) -> Result<Vec<(Process, i32)>> {
    let step = cli.notes_sleep(STAGGER_NOTES_SECS).as_millis() as u64;
    let mut children = Vec::with_capacity(count);
    for i in 1..=count {
        let quit = Quit { code: 10 + i as i32, after_ms: step * i as u64 };
        let mut child =
            Process::from_run(format!("{prefix}-{i}"), quit).start_method(cli.start_method);
        child.start()?;
        let pid = child.pid().context("a started child has no pid")?;
        children.push((child, pid));
    }
    Ok(children)
}

fn zombie_children() -> usize {
    let me = std::process::id() as i32;
    ps::children_of(me).into_iter().filter(|p| ps::state_of(*p) == Some('Z')).count()
}

/// Cure 1: a SIGCHLD handler wakes the main loop, which reaps whatever has ended.
pub fn reap_on_sigchld(cli: &CommonArgs, count: usize) -> Result<()> {
    report::section("cure 1: reap when SIGCHLD arrives (the kernel tells the parent)");
    report::say(
        "The parent installs a SIGCHLD handler and goes about its business (here: a poll() \
         loop). Each time a child ends, the handler wakes the loop, and the loop reaps every \
         child that has ended: signals of one kind do not queue, so one SIGCHLD may stand for \
         several children. This is how a parent learns that a child ended: the kernel sends \
         it SIGCHLD and keeps the exit status for its wait() (join() is waitpid), not a file \
         or the network, as seed 000 says (通过文件或网络进行进程通信).",
    );
    let (read_end, _) = wake_pipe()?;
    // Drain any byte left from an earlier run of this part.
    wait_for_sigchld(read_end, Duration::ZERO)?;
    let restore = SigchldDisposition::set(
        SigHandler::Handler(on_sigchld),
        // SA_NOCLDSTOP: no SIGCHLD when a child is merely stopped; SA_RESTART: other threads'
        // system calls resume instead of failing with EINTR.
        SaFlags::SA_NOCLDSTOP | SaFlags::SA_RESTART,
    )?;
    let mut pending = start_children(cli, "sigchld", count)?;
    let idents: Vec<Ident> = pending.iter().map(|(_, pid)| Ident::of(*pid)).collect();
    let deadline = Instant::now() + WAIT_LIMIT + cli.notes_sleep(STAGGER_NOTES_SECS) * count as u32;
    let mut signals = 0;
    let mut reaped = Vec::new();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("{} child(ren) not reaped after {WAIT_LIMIT:?} of SIGCHLD", pending.len());
        }
        signals += wait_for_sigchld(read_end, left.min(Duration::from_millis(500)))?;
        let mut still = Vec::new();
        for (mut child, pid) in pending {
            // is_alive() is waitpid(pid, WNOHANG): it reaps the child if it has ended.
            if child.is_alive() {
                still.push((child, pid));
            } else {
                let ident = idents.iter().find(|i| i.pid == pid).copied().unwrap_or(Ident::of(pid));
                report_reaped(&child, ident, "SIGCHLD -> is_alive() -> waitpid(WNOHANG)", None)?;
                reaped.push(json!({ "pid": pid, "exitcode": child.exitcode() }));
            }
        }
        pending = still;
    }
    drop(restore);
    let zombies = zombie_children();
    common::event!("sigchld_reaper", { "children": count, "reaped": reaped, "signals": signals, "zombies_left": zombies }, "{} of {count} children reaped on {signals} SIGCHLD wake-up(s), each with its exit \
             status; zombies left: {zombies}. Each child was a zombie only for the moment between \
             its end and the handler's wake-up. SIGCHLD is back to its previous action.",
            reaped.len());
    if zombies != 0 {
        bail!("{zombies} zombie(s) left although every child was reaped on SIGCHLD");
    }
    Ok(())
}

/// Cure 2: SIGCHLD ignored, so the kernel reaps each child the moment it ends.
pub fn ignore_sigchld(cli: &CommonArgs, count: usize) -> Result<()> {
    report::section("cure 2: ignore SIGCHLD (SIG_IGN), so the kernel reaps at once");
    report::say(
        "With SIGCHLD set to SIG_IGN, a child that ends is removed at once: it never becomes a \
         zombie. The price: nobody can learn its exit status. The parent watches /proc the \
         whole time to catch any Z.",
    );
    let question = format!(
        "{count} children end with SIGCHLD ignored (SIG_IGN): of how many can the parent still \
         read the exit status (join's exitcode)?"
    );
    let guess = common::predict::ask(cli, "statuses", question, common::predict::Expect::Count);
    let restore = SigchldDisposition::set(SigHandler::SigIgn, SaFlags::empty())?;
    let children = start_children(cli, "ignored", count)?;
    let pids: Vec<i32> = children.iter().map(|(_, pid)| *pid).collect();
    let mut watching: Vec<Ident> = pids.iter().map(|p| Ident::of(*p)).collect();
    let deadline = Instant::now() + WAIT_LIMIT + cli.notes_sleep(STAGGER_NOTES_SECS) * count as u32;
    let (mut samples, mut z_seen) = (0u64, 0u64);
    while !watching.is_empty() {
        if Instant::now() >= deadline {
            bail!("{} child(ren) still listed after {WAIT_LIMIT:?}", watching.len());
        }
        watching.retain(|ident| match ident.state() {
            Some(state) => {
                samples += 1;
                z_seen += u64::from(state == 'Z');
                true
            }
            None => false,
        });
        std::thread::sleep(Duration::from_micros(500));
    }
    // The key syscall, asked directly: there is nothing left to wait for.
    let first = pids[0];
    let waited = match waitpid(Pid::from_raw(first), Some(WaitPidFlag::WNOHANG)) {
        Ok(status) => format!("{status:?}"),
        Err(e) => e.to_string(),
    };
    let mut exitcodes = Vec::new();
    for (mut child, _) in children {
        child.join()?; // waitpid fails with ECHILD: join() records "no exit status"
        exitcodes.push(child.exitcode());
    }
    drop(restore);
    guess.reveal(
        exitcodes.iter().filter(|code| code.is_some()).count(),
        "the kernel removed each child the moment it ended, its exit status with it: waitpid \
         finds nothing (ECHILD)",
    );
    common::event!("sigchld_ignored", { "children": count, "pids": pids, "samples": samples, "z_seen": z_seen,
                "waitpid": waited, "exitcodes": exitcodes }, "{count} children ended and vanished: {samples} looks at /proc saw Z {z_seen} \
             times. waitpid({first}) says: {waited}. Their exit statuses are lost (exitcode \
             None), although they ended with 11, 12, ... SIGCHLD is back to its previous action.");
    if z_seen != 0 {
        bail!("saw {z_seen} zombie state(s) although SIGCHLD was ignored");
    }
    Ok(())
}
