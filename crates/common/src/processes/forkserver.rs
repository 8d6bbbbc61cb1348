//! forkserver — the third start method: children forked by a small single-threaded process,
//! never by the demo itself (Python's `multiprocessing` `forkserver`, Linux's default from
//! Python 3.14).
//!
//! ## Why
//! `fork(2)` copies only the calling thread. In a parent with other threads (a pool's
//! `pool-results` handler, the signal watcher, a thread making a queue), a lock one of them held
//! at that instant stays locked for ever in the child, and a child that takes it blocks. Spawn
//! avoids that but starts the whole program again. A process with one thread is always safe to
//! fork, and fast to fork when it is small and already running: the fork server.
//!
//! ## How
//! - The server is this program run again with the hidden argument `__role=__forkserver`, which
//!   [`crate::process::dispatch`] recognizes before anything else runs, so it knows every role
//!   of the dispatch; an `exec` leaves no other thread behind, so it starts lazily, on the first
//!   request, from whatever thread asks.
//! - One message per request over a unix `SOCK_SEQPACKET` socketpair (the role, the child's
//!   name, its arguments as JSON, its flags) carries, as `SCM_RIGHTS`, the descriptors the child
//!   must have and the write end of a *status pipe*. The server forks, answers with the pid and
//!   keeps the status pipe.
//! - Before the role runs, the child closes the server's descriptors, restores the signals, asks
//!   for `PR_SET_PDEATHSIG` (its parent, the server, is single-threaded, so the signal follows
//!   it, not a thread) and puts every passed descriptor back at its number in the demo, since
//!   its arguments name them by number (a queue's pipes, for example).
//! - The server reaps an ended child (SIGCHLD comes through a signalfd), writes its exit code,
//!   Python's way (`-9` for SIGKILL), to its status pipe, and closes it.
//!
//! ## What join, exitcode and kill mean for such a child
//! Its parent is the server: `ps` shows it there, and the demo cannot `waitpid` it. So
//! [`crate::process::Process::join`] polls its status pipe (with the timeout), `exitcode` is what
//! the server wrote, and `terminate`/`kill` signal its pid directly (same user, so allowed). As
//! with any child reaped by someone else, the pid could in principle be reused between the
//! server's reaping and the demo's `kill`; Python's forkserver has the same window.
//!
//! If the server dies, every status pipe reads end of file: its children, killed by the kernel
//! (`PR_SET_PDEATHSIG`), are reparented to the demo, a child subreaper (see [`crate::signals`]),
//! which reaps them, so `join` returns their status after all. If the demo dies, even by
//! SIGKILL, the server reads end of file on its socket and exits, and its children follow it.
//! The server ignores the stop signals (a terminal's Ctrl-C reaches the whole group: the
//! children die of it, and the server must live to report it); [`stop`] ends it after every
//! child. A server killed anyway (SIGKILL) is reported like any lost child (`child_lost`).
//!
//! ## Where it runs
//! Linux only: the requests need a `SOCK_SEQPACKET` socketpair, which macOS lacks, the server a
//! `signalfd`, the children `PR_SET_PDEATHSIG`. Elsewhere a forkserver start fails, saying so;
//! fork and spawn work.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::AtomicI32;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process::exitcode_name;
use crate::processes::process::close_once;
use crate::processes::reap;

/// The largest request, in bytes of JSON (one datagram of the socket); a spawned child's
/// arguments have about the same limit (one environment string).
pub const MAX_REQUEST: usize = 128 * 1024;
/// How long [`stop`] waits for the server to leave after its socket is closed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the demo asks of the server: start `role` as a child named `name`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub role: String,
    pub name: String,
    pub args: Value,
    pub daemon: bool,
    pub die_with_parent: bool,
    /// The numbers the passed descriptors have in the demo, in the order they are sent; the
    /// child gets them under these numbers.
    pub fds: Vec<RawFd>,
    /// The report settings (`report::env_value`) at the moment of the request.
    pub report: String,
}

// ---------------------------------------------------------------------------------------------
// The demo's side.

// Elsewhere no server is started (see `start_child`), so no Client is made.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Client {
    /// The demo's end of the socketpair (close-on-exec; closed in forked children).
    sock: RawFd,
    pid: i32,
    /// The process that started this server: a forked child of the demo must not use it.
    owner: u32,
}

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);
/// The client's socket, which a forked child of the demo closes first thing, without a lock
/// (so the server still sees end of file when the demo goes); [`close_once`] closes it.
pub(crate) static CLIENT_FD: AtomicI32 = AtomicI32::new(-1);

/// The fork server's pid, if this process has started one that is still running.
pub fn server_pid() -> Option<i32> {
    let client = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    client.as_ref().filter(|c| c.owner == std::process::id()).map(|c| c.pid)
}

fn take_own_client() -> Option<Client> {
    CLIENT.lock().unwrap_or_else(|e| e.into_inner()).take_if(|c| c.owner == std::process::id())
}

/// The server died (killed: it ignores the stop signals, and [`stop`] forgets it first):
/// reaps it and says so (event `child_lost`); its children come back to the demo to be reaped.
pub(crate) fn server_died() {
    if let Some(client) = take_own_client() {
        lost(client);
    }
}

fn lost(client: Client) {
    close_once(&CLIENT_FD);
    let exitcode = reap::reap_now(client.pid);
    let how = crate::processes::lost::how(exitcode);
    crate::event!("child_lost", { "pid": client.pid, "name": "forkserver", "exitcode": exitcode, "status": exitcode_name(exitcode),
                "how": how, "lost": { "what": "children it had started", "count": 0 } }, "LOST: the fork server (pid {}) {how}: its children die with it (PR_SET_PDEATHSIG)",
            client.pid);
}

/// Ends the server, if this process started one: closes the socket (the server exits on end of
/// file), waits up to a short grace for it to leave, SIGKILLs it after that, and reaps it.
/// Called at the end of `main` and by the signal watcher, after every child has been reaped.
pub fn stop() {
    let Some(client) = take_own_client() else { return };
    close_once(&CLIENT_FD);
    if reap::wait(client.pid, Some(STOP_GRACE)).is_none() {
        let _ = nix::sys::signal::kill(Pid::from_raw(client.pid), Signal::SIGKILL);
        reap::reap_now(client.pid);
    }
}

/// What waiting on a child's status pipe gave.
pub(crate) enum Status {
    /// The exit code the server wrote.
    Code(i32),
    /// Nothing yet (within the timeout), or another thread took the code first.
    NotYet,
    /// End of file without a code: the server died before reaping the child.
    ServerGone,
}

/// Waits until `status` is readable (the server wrote, or closed it) or `deadline` passes.
pub(crate) fn poll_status(status: &OwnedFd, deadline: Option<Instant>) -> bool {
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let wait = left.map_or(PollTimeout::NONE, |l| l.try_into().unwrap_or(PollTimeout::MAX));
        match poll(&mut [PollFd::new(status.as_fd(), PollFlags::POLLIN)], wait) {
            Ok(0) if deadline.is_some_and(|d| Instant::now() >= d) => return false,
            Ok(0) | Err(Errno::EINTR) => continue,
            _ => return true, // readable, or an error that the read will tell
        }
    }
}

/// Whether the server's code is waiting in `status` (without reading it).
pub(crate) fn status_waiting(status: &OwnedFd) -> bool {
    let mut available: libc::c_int = 0;
    // Safety: FIONREAD writes one int, the number of bytes ready to read.
    let rc = unsafe { libc::ioctl(status.as_raw_fd(), libc::FIONREAD, &mut available) };
    rc == 0 && available >= 4
}

/// Reads the exit code from a status pipe without blocking.
pub(crate) fn read_status(status: &OwnedFd) -> Status {
    let mut code = [0u8; 4];
    loop {
        match nix::unistd::read(status.as_fd(), &mut code) {
            Ok(4) => return Status::Code(i32::from_le_bytes(code)),
            // End of file; a torn write cannot happen (4 bytes < PIPE_BUF).
            Ok(_) => return Status::ServerGone,
            Err(Errno::EINTR) => continue,
            Err(_) => return Status::NotYet, // EAGAIN
        }
    }
}

// Asking the server, and the server itself: Linux only (see "Where it runs" above).
#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
pub(crate) use client::{ROLE, start_child};
#[cfg(target_os = "linux")]
pub(crate) use server::serve;

/// Elsewhere there is no fork server (see "Where it runs" above): asking fails, saying so.
#[cfg(not(target_os = "linux"))]
pub(crate) fn start_child(request: &Request) -> Result<(i32, OwnedFd)> {
    anyhow::bail!("{}: the forkserver start method needs Linux; use fork or spawn", request.name)
}
