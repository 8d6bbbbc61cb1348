//! The server's side: one thread, one loop over its socket and its signalfd; a request is a
//! `fork`, a child that ends is a `waitpid` and its exit code written to its status pipe.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::FromRawFd;

use anyhow::Context;
use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{SigHandler, SigSet, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, send};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{ForkResult, fork, getpid};

use super::client::{ENV_FD, MAX_FDS, Reply};
use super::*;
use crate::processes::dispatch::run_role;
use crate::report;
use crate::signals::STOP_SIGNALS;

/// The fork server's `main`: serves requests until its socket reads end of file, then exits.
/// Called by `dispatch` in a process started by [`launch`]; never returns.
pub(crate) fn serve() -> ! {
    if let Err(e) = serve_requests() {
        report::write_stderr(&format!("forkserver: error: {e:#}"));
        std::process::exit(1)
    }
    std::process::exit(0)
}

fn serve_requests() -> Result<()> {
    let fd: RawFd = std::env::var(ENV_FD)
        .ok()
        .and_then(|v| v.parse().ok())
        .context("the fork server was started without its socket")?;
    // Safety: the demo passed this descriptor, its socketpair's other end, under this number,
    // and nothing else in this process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A Ctrl-C reaches the whole group, the server too, which must live to report its children.
    for stop_signal in STOP_SIGNALS {
        // Safety: setting a signal to be ignored runs no code of ours in a handler.
        unsafe { signal(stop_signal, SigHandler::SigIgn) }.context("ignoring the stop signals")?;
    }
    let chld = SigSet::from_iter([Signal::SIGCHLD]);
    chld.thread_block().context("blocking SIGCHLD")?;
    let sigfd = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd for SIGCHLD")?;
    let me = getpid();
    let mut statuses: HashMap<i32, OwnedFd> = HashMap::new();
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let mut pfds = [sock.as_fd(), sigfd.as_fd()].map(|fd| PollFd::new(fd, PollFlags::POLLIN));
        if poll(&mut pfds, PollTimeout::NONE).is_err() {
            continue; // EINTR
        }
        let [asked, ended] = pfds.map(|p| p.any() == Some(true));
        if ended {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        reap(&mut statuses);
        if !asked {
            continue;
        }
        let Some((request, mut fds)) = receive(&sock, &mut buf)? else {
            return Ok(()); // end of file: the demo is gone, or has stopped us
        };
        let reply = match request {
            Err(error) => Reply::Failed { error },
            Ok(request) if request.fds.len() + 1 != fds.len() => Reply::Failed {
                error: format!(
                    "a status pipe and {} more named, {} came",
                    request.fds.len(),
                    fds.len()
                ),
            },
            Ok(request) => {
                let status = fds.remove(0);
                // Safety: this process has one thread, so the child may do anything; it never
                // returns from `child_main`.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => {
                        // The server's descriptors, and the other children's status pipes.
                        drop((sock, sigfd, statuses, status));
                        child_main(request, fds, me)
                    }
                    Ok(ForkResult::Parent { child }) => {
                        statuses.insert(child.as_raw(), status);
                        drop(fds); // the child has them now
                        Reply::Started { pid: child.as_raw() }
                    }
                    Err(e) => Reply::Failed { error: format!("fork(): {e}") },
                }
            }
        };
        let text = serde_json::to_vec(&reply).unwrap_or_default();
        let _ = send(fd, &text, MsgFlags::MSG_NOSIGNAL);
    }
}

/// Reaps every ended child and writes its exit code (Python's form) to its status pipe.
fn reap(statuses: &mut HashMap<i32, OwnedFd>) {
    while let Ok(ended) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        let Some(pid) = ended.pid() else { return }; // none has ended
        // A stopped or continued child has no exit code yet, and keeps its status pipe.
        if let Some(code) = reap::exitcode_of(ended)
            && let Some(status) = statuses.remove(&pid.as_raw())
        {
            let _ = nix::unistd::write(&status, &code.to_le_bytes());
        }
    }
}

type Received = (std::result::Result<Request, String>, Vec<OwnedFd>);

/// One request and its descriptors; `None` at end of file.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> Result<Option<Received>> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = match recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("recvmsg from the demo"),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().context("reading a request's descriptors")? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // Safety: the kernel just installed these descriptors in this process.
                fds.extend(received.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        break (msg.bytes, fds);
    };
    if n == 0 {
        return Ok(None);
    }
    let request = if n > MAX_REQUEST {
        Err(format!("a request of more than {MAX_REQUEST} bytes"))
    } else {
        serde_json::from_slice(&buf[..n]).map_err(|e| format!("decoding a request: {e}"))
    };
    Ok(Some((request, fds)))
}

/// The child of the server, its descriptors closed: restores signals, asks to die with the
/// server, puts the passed descriptors back under the demo's numbers, and runs the role.
fn child_main(request: Request, fds: Vec<OwnedFd>, server: Pid) -> ! {
    let _ = SigSet::empty().thread_set_mask();
    for stop_signal in STOP_SIGNALS {
        // Safety: restoring the default action runs no code of ours in a handler.
        let _ = unsafe { signal(stop_signal, SigHandler::SigDfl) };
    }
    if request.die_with_parent {
        crate::process::set_parent_death_signal(server);
    }
    let code = match place(fds, &request.fds) {
        Ok(()) => {
            report::init_from_env(&request.report, &request.name);
            run_role(&request.role, &request.name, request.args, request.daemon)
        }
        Err(e) => {
            report::write_stderr(&format!("{}: placing its descriptors: {e}", request.name));
            1
        }
    };
    // Safety: _exit ends this copy of the fork server at once, running none of its destructors.
    unsafe { libc::_exit(code) }
}

/// Makes each received descriptor available under its number in the demo: first every one is
/// moved above all the numbers involved (so no `dup2` overwrites one not yet moved) and the
/// originals are closed, then each is duplicated onto its number, without close-on-exec, as a
/// spawned child's would be.
fn place(received: Vec<OwnedFd>, numbers: &[RawFd]) -> std::io::Result<()> {
    let top = received.iter().map(|f| f.as_raw_fd()).chain(numbers.iter().copied()).max();
    let base = top.map_or(0, |t| t + 1);
    let mut moved = Vec::with_capacity(received.len());
    for fd in &received {
        let high = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(base))?;
        // Safety: fcntl just made `high`, and nothing else owns it.
        moved.push(unsafe { OwnedFd::from_raw_fd(high) });
    }
    drop(received);
    for (fd, &number) in moved.iter().zip(numbers) {
        // Safety: dup2 onto `number`, which the demo's arguments name; whatever had that number
        // in this child was the server's and is not used.
        if unsafe { libc::dup2(fd.as_raw_fd(), number) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
