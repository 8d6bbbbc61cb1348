//! forkserver — the third start method: children forked by a small single-threaded process,
//! never by the demo itself (Python's `multiprocessing` `forkserver`, Linux's default from
//! Python 3.14).
//!
//! ## Why
//! `fork(2)` copies only the thread that calls it. In a parent with other threads (a pool's
//! `pool-results` handler, the signal watcher, a thread making a queue), any lock one of them
//! held at that instant stays locked for ever in the child: a forked child that takes it blocks.
//! Spawn avoids that but starts the whole program again. The fork server is a third way: a
//! process that has only one thread, so forking it is always safe, and that forks quickly
//! because it is small and already running.
//!
//! ## How
//! - The server is this program run again, like a spawned child, with the hidden argument
//!   `__role=__forkserver`, which [`crate::process::dispatch`] recognizes before anything else
//!   runs; so it is started lazily, on the first request, from whatever thread asks: an `exec`
//!   leaves no other thread behind. It knows every role the program listed in its dispatch.
//! - The demo talks to it over a unix `SOCK_SEQPACKET` socketpair: one message per request
//!   (the role, the child's name, its arguments as JSON, its flags) carrying, as `SCM_RIGHTS`,
//!   the descriptors the child must have, plus the write end of a *status pipe*. The server
//!   forks, answers with the child's pid, and keeps the status pipe.
//! - In the child, before the role runs: the server's own descriptors are closed, the signals
//!   are restored, `PR_SET_PDEATHSIG` is asked for (the server is the parent; it is
//!   single-threaded, so the signal follows it, not a thread), and every passed descriptor is
//!   put back at the number it had in the demo, because the child's arguments name them by
//!   number (a queue's pipes, for example).
//! - When a child ends, the server reaps it (it gets SIGCHLD through a signalfd) and writes its
//!   exit code, Python's way (`-9` for SIGKILL), to that child's status pipe, then closes it.
//!
//! ## What join, exitcode and kill mean for such a child
//! Its parent in the kernel's sense is the server, not the demo: `ps` shows it under the
//! server, and the demo cannot `waitpid` it. So [`crate::process::Process::join`] waits for its
//! status pipe instead (a `poll` with the timeout), `exitcode` is what the server wrote, and
//! `terminate`/`kill` send the signal to its pid directly (same user, so allowed). Between the
//! server's reaping and the demo's `kill` the pid could in principle be reused, as with any
//! child reaped by someone else; Python's forkserver has the same window.
//!
//! If the server dies (killed), every status pipe reads end of file: its children, which asked
//! for `PR_SET_PDEATHSIG`, are killed by the kernel and reparented to the demo, which is a
//! child subreaper (see [`crate::signals`]), so the demo reaps them itself and `join` returns
//! their status after all. If the demo dies, even by SIGKILL, the server reads end of file on
//! its socket and exits, and its children follow it. The server ignores the stop signals
//! (a terminal's Ctrl-C reaches the whole group: the children die of it, and the server
//! must live to report it); [`stop`] ends it at the end of the demo, after every child. A
//! server killed anyway (SIGKILL) is reported like any lost child (event `child_lost`).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, recv, sendmsg,
    socketpair,
};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process::{exitcode_name, this_program_again};
use crate::processes::process::close_once;
use crate::processes::reap;

/// The role name in the hidden argument that makes this program a fork server.
pub(crate) const ROLE: &str = "__forkserver";
const ENV_FD: &str = "CONCURRENCY_DEMOS_FORKSERVER_FD";
/// The largest request, in bytes of JSON (one datagram of the socket); a spawned child's
/// arguments have about the same limit (one environment string).
pub const MAX_REQUEST: usize = 128 * 1024;
const MAX_FDS: usize = 64;
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

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Started { pid: i32 },
    Failed { error: String },
}

// ---------------------------------------------------------------------------------------------
// The demo's side.

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
    let me = std::process::id();
    let client = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    client.as_ref().filter(|c| c.owner == me).map(|c| c.pid)
}

fn take_own_client() -> Option<Client> {
    let mut guard = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    guard.take_if(|c| c.owner == std::process::id())
}

/// Asks the server (started now if need be) for a child; returns its pid and the read end of
/// its status pipe (non-blocking), where the server writes its exit code.
pub(crate) fn start_child(request: &Request) -> Result<(i32, OwnedFd)> {
    let text = serde_json::to_vec(request).context("encoding a fork-server request")?;
    if text.len() > MAX_REQUEST {
        bail!(
            "{}: the arguments are {} bytes of JSON, more than the fork server's limit of {}",
            request.name,
            text.len(),
            MAX_REQUEST
        );
    }
    if request.fds.len() + 1 > MAX_FDS {
        bail!("{}: more than {} descriptors to pass", request.name, MAX_FDS - 1);
    }
    let (status_read, status_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("pipe2 for a child's status")?;
    let mut guard = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|c| c.owner != std::process::id()) {
        // None yet, or the parent's, inherited by fork (its socket was closed in this child).
        *guard = Some(launch()?);
    }
    let client = guard.as_ref().expect("just started");
    let mut fds = vec![status_write.as_raw_fd()];
    fds.extend_from_slice(&request.fds);
    let rights = [ControlMessage::ScmRights(&fds)];
    let asked = loop {
        let iov = [IoSlice::new(&text)];
        match sendmsg::<UnixAddr>(client.sock, &iov, &rights, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    drop(status_write);
    let reply =
        asked.map_err(anyhow::Error::from).and_then(|_| read_reply(client.sock, client.pid));
    match reply {
        Ok(Reply::Started { pid }) => Ok((pid, status_read)),
        Ok(Reply::Failed { error }) => {
            bail!("the fork server could not start {}: {error}", request.name)
        }
        Err(e) => {
            // The server is gone: say so, forget it and reap it; a later request starts anew.
            let gone = guard.take().expect("present");
            drop(guard);
            lost(gone);
            Err(e.context(format!("asking the fork server for {}", request.name)))
        }
    }
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
    let status = exitcode_name(exitcode);
    let how = crate::processes::lost::how(exitcode);
    crate::event!("child_lost", { "pid": client.pid, "name": "forkserver", "exitcode": exitcode, "status": status,
                "how": how, "lost": { "what": "children it had started", "count": 0 } }, "LOST: the fork server (pid {}) {how}: its children die with it (PR_SET_PDEATHSIG)",
            client.pid);
}

const ALIVE_CHECK_MS: libc::c_int = 100;

/// Reads the server's answer. End of file says the server has ended, but only once every copy
/// of its end of the socket is closed, and a child forked by another thread at the wrong moment
/// may hold one: so the wait also looks at the server itself, every [`ALIVE_CHECK_MS`], and
/// gives up once it is gone or a zombie (killed, perhaps before it even reached `exec`).
fn read_reply(sock: RawFd, server: i32) -> Result<Reply> {
    let mut buf = [0u8; 4096];
    loop {
        let mut pfd = libc::pollfd { fd: sock, events: libc::POLLIN, revents: 0 };
        // Safety: one valid pollfd on our stack, for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ALIVE_CHECK_MS) };
        if ready == 0 {
            if matches!(crate::ps::state_of(server), None | Some('Z') | Some('X')) {
                bail!("the fork server (pid {server}) has ended");
            }
            continue;
        }
        if ready < 0 && Errno::last() != Errno::EINTR {
            return Err(Errno::last()).context("poll on the fork server's socket");
        }
        match recv(sock, &mut buf, MsgFlags::empty()) {
            Ok(0) => bail!("the fork server has ended"),
            Ok(n) => {
                return serde_json::from_slice(&buf[..n])
                    .context("decoding the fork server's answer");
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("recv from the fork server"),
        }
    }
}

/// Starts the server: this program again, with the hidden role and the server's end of a new
/// socketpair; nothing runs between fork and exec but what [`this_program_again`] shows, so it
/// is safe from any thread.
fn launch() -> Result<Client> {
    let (ours, theirs) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .context("socketpair for the fork server")?;
    let their_fd = theirs.as_raw_fd();
    let mut command = this_program_again(ROLE, "forkserver", vec![their_fd], None)?;
    command.env(ENV_FD, their_fd.to_string()).stdin(std::process::Stdio::null());
    // `child` is dropped without waiting: the server is reaped by `stop` (or by the signal
    // watcher's reaping of every child).
    let child = command.spawn().context("starting the fork server")?;
    drop(theirs);
    // Owned by the Client from now on, closed by `close_once(&CLIENT_FD)`.
    let sock = std::os::fd::IntoRawFd::into_raw_fd(ours);
    CLIENT_FD.store(sock, Ordering::SeqCst);
    Ok(Client { sock, pid: child.id() as i32, owner: std::process::id() })
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

/// Waits until `status` is readable (the server wrote, or closed it) or `timeout` passes.
pub(crate) fn poll_status(status: &OwnedFd, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
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

mod server;
pub(crate) use server::serve;
