//! The demo's side of the conversation (Linux only, like the server): starting the server,
//! asking it for a child, reading its answer.

use std::io::IoSlice;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, recv, sendmsg,
    socketpair,
};

use super::*;
use crate::process::this_program_again;

/// The role name in the hidden argument that makes this program a fork server.
pub(crate) const ROLE: &str = "__forkserver";
pub(super) const ENV_FD: &str = "CONCURRENCY_DEMOS_FORKSERVER_FD";
pub(super) const MAX_FDS: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    Started { pid: i32 },
    Failed { error: String },
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
