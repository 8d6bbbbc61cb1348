//! pipe — the queue's pipe and its system calls: made non-blocking and as large as the kernel
//! allows, written whole, and waited for with `poll(2)` (every wait takes the caller's timeout).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::setup::os_error;
use super::{PIPE_CAPACITY, QueueError};
use crate::shm::{Wait, fstat};

/// A pipe with non-blocking, close-on-exec ends, as large as the kernel allows; its size.
pub(super) fn make_pipe() -> Result<(OwnedFd, OwnedFd, u32), QueueError> {
    // Non-blocking: every wait is a poll(2) with the caller's timeout. O_NONBLOCK belongs to
    // the shared file description, so it holds in every process. Close-on-exec: a spawned
    // child gets the ends only if they are passed.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| os_error("pipe2", e))?;
    // Best effort: a larger pipe holds more unread items (pages are allocated as bytes come).
    let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY as libc::c_int));
    let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ).unwrap_or(65536);
    Ok((read, write, capacity as u32))
}

/// Writes all of `bytes` to the non-blocking pipe. Until the first byte is in, it waits for
/// room only as `wait` allows ([`QueueError::Full`] after that); once a byte is in, it finishes.
pub(super) fn write_all(fd: BorrowedFd<'_>, bytes: &[u8], wait: Wait) -> Result<(), QueueError> {
    let mut written = 0;
    while written < bytes.len() {
        match nix::unistd::write(fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(Errno::EAGAIN) => {
                let wait = if written == 0 { wait } else { Wait::Forever };
                if !poll_fd(fd, PollFlags::POLLOUT, wait)? {
                    return Err(QueueError::Full);
                }
            }
            Err(Errno::EINTR) => {}
            // Every read end is closed (only when every other process is gone).
            Err(Errno::EPIPE) => return Err(QueueError::Closed),
            Err(e) => return Err(os_error("write(the queue's pipe)", e)),
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` (POLLIN or POLLOUT). `Ok(false)`: the wait ran out.
pub(super) fn poll_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    wait: Wait,
) -> Result<bool, QueueError> {
    loop {
        // Rounded up, so that a short timeout does not become a busy loop of 0 ms polls.
        let timeout = wait.remaining().map_or(PollTimeout::NONE, |left| {
            PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut [PollFd::new(fd, events)], timeout) {
            Ok(0) if wait.expired() => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(os_error("poll", e)),
        }
    }
}

/// Bytes waiting in a pipe (`ioctl(FIONREAD)`, which Linux answers on either end).
pub(super) fn bytes_in_pipe(fd: BorrowedFd<'_>) -> Result<usize, QueueError> {
    let mut n: libc::c_int = 0;
    // Safety: FIONREAD writes one int to the pointer we give.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(os_error("ioctl(FIONREAD)", Errno::last()));
    }
    Ok(n.max(0) as usize)
}

/// Checks that `read_fd` and `write_fd`, numbers a child was given, are open here and are the
/// read and the write end of one pipe; the error says what is wrong.
pub(super) fn check_ends(read_fd: RawFd, write_fd: RawFd) -> Result<(), String> {
    let stat = |fd, what| -> Result<_, String> {
        let st = fstat(fd).map_err(|_| {
            format!(
                "the pipe's {what} (fd {fd}) is not open in this process: a spawned child \
                 must be given the queue's descriptors with Process::pass_fds"
            )
        })?;
        Ok((st.st_mode & libc::S_IFMT, st.st_ino))
    };
    let (read, write) = (stat(read_fd, "read end")?, stat(write_fd, "write end")?);
    if read.0 != libc::S_IFIFO || read != write {
        return Err(format!("fds {read_fd} and {write_fd} are not the two ends of one pipe"));
    }
    // Safety: fcntl(F_GETFL) only reads the flags of an open descriptor.
    let access = |fd| unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
    if access(read_fd) != libc::O_RDONLY || access(write_fd) != libc::O_WRONLY {
        return Err("the pipe's ends are swapped".into());
    }
    Ok(())
}
