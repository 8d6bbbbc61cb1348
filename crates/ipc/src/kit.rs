//! What every part uses: raw descriptors passed to children, whole reads and writes, a lock
//! each process takes on its own open file, a meeting point (barrier) built from pipes, and what
//! `/proc` says about a descriptor or a sleeping process.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

/// A descriptor number this process received from its parent: inherited through `fork`, or
/// kept open across `exec` by `Process::pass_fds` for a spawned child.
pub fn fd(number: RawFd) -> BorrowedFd<'static> {
    // Safety: every number given to this function was passed to this process by its parent for
    // the life of the process (a child never closes the descriptors it uses), so it stays open
    // for as long as the borrow is used.
    unsafe { BorrowedFd::borrow_raw(number) }
}

/// A new pipe, both ends close-on-exec (a spawned child gets only the ends passed to it).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2()")
}

/// Closes descriptors this process inherited and must not hold: a forked child has a copy of
/// every end its parent had, and an end it keeps open changes what the others see (a write end
/// kept open means no end-of-file for anyone). A spawned child never had them: its list is empty.
pub fn close_inherited(fds: &[RawFd]) {
    for &number in fds {
        // Safety: the parent names only descriptors this forked child inherited and uses for
        // nothing; taking ownership and dropping it closes this process's copy alone.
        drop(unsafe { OwnedFd::from_raw_fd(number) });
    }
}

/// Reads until `buf` is full or end-of-file; returns how many bytes were read. A pipe returns
/// what it has, so one `read(2)` may give less than asked for: this is the loop every reader of
/// a byte stream needs.
pub fn read_full(from: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::read(from, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Writes all of `buf`, in as many `write(2)` calls as the kernel needs. One call of at most
/// `PIPE_BUF` bytes to a pipe is atomic; a bigger one may be split, and the pieces of two
/// writers may interleave (the `torn` part shows it).
pub fn write_all(to: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(to, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Bytes waiting in a pipe (`ioctl(FIONREAD)`).
pub fn bytes_in_pipe(pipe: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // Safety: FIONREAD writes one int to the pointer given, which points to `n`.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 { 0 } else { n as usize }
}

/// A pipe's capacity in bytes (`fcntl(F_GETPIPE_SZ)`): 64 KiB unless changed.
pub fn pipe_capacity(pipe: BorrowedFd<'_>) -> Result<usize> {
    let size = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_GETPIPE_SZ)
        .context("fcntl(F_GETPIPE_SZ)")?;
    Ok(size as usize)
}

// ---------------------------------------------------------------------------------------------
// A lock every process takes on an open file of its own.

/// A process-shared lock: `flock(2)` on an anonymous file (a memfd), playing the part of
/// `multiprocessing.Lock`, but released by the kernel if its holder dies.
///
/// A flock belongs to an *open file description*, and a forked child shares its parent's: two
/// processes locking through the same inherited descriptor would both "hold" the lock at once.
/// So each process opens the file anew through `/proc/self/fd/N` ([`LockFile::open`]), which
/// gives it a description of its own, and locks that.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LockFile {
    /// The memfd's number, in every process that has it.
    pub fd: RawFd,
}

impl LockFile {
    /// Makes the anonymous file (`/memfd:NAME` in `/proc/PID/fd`). The parent keeps the
    /// descriptor returned while its children run; they receive the number.
    pub fn new(name: &str) -> Result<(LockFile, OwnedFd)> {
        let name = std::ffi::CString::new(name).context("the lock's name")?;
        let memfd =
            nix::sys::memfd::memfd_create(name.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .context("memfd_create() for the lock")?;
        Ok((LockFile { fd: raw(&memfd) }, memfd))
    }

    /// This process's own open file description of the lock file (see the type's docs).
    pub fn open(&self) -> Result<Lock> {
        let path = format!("/proc/self/fd/{}", self.fd);
        let file = File::options().read(true).write(true).open(&path).with_context(|| {
            format!("opening {path} (the lock file) for a description of this process's own")
        })?;
        Ok(Lock { file })
    }
}

/// A process's handle on a [`LockFile`].
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Blocks in `flock(LOCK_EX)` until this process holds the lock.
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.file.lock().context("flock(LOCK_EX)")?;
        Ok(LockGuard { lock: self })
    }
}

/// Holds the lock until dropped (`flock(LOCK_UN)`).
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.file.unlock();
    }
}

// ---------------------------------------------------------------------------------------------
// A meeting point for processes, made of pipes.

/// A barrier for `n` processes built from `n` pipes: member `i` reads its own pipe and writes
/// into everybody else's. To meet, a member writes one byte to each other member, then reads
/// `n - 1` bytes from its own pipe: it goes on only when every other member has arrived. It can
/// be used again and again: a member can be at most one meeting ahead of another (it cannot
/// pass the next meeting before the slow one arrives), so the bytes of a later meeting never
/// let anybody pass an earlier one before everyone came.
///
/// The demos use it to make a race certain on a loaded machine: every process stops at the
/// worst moment (between reading a message's header and its body, between reading a counter
/// and writing it back) until all are there, as if the scheduler had preempted each of them at
/// that very instruction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meeting {
    /// This member's read end.
    pub mine: RawFd,
    /// The write ends of the other members' pipes.
    pub others: Vec<RawFd>,
}

impl Meeting {
    /// The `n` members' ends; the pipes stay open in this process (children get the numbers).
    pub fn group(n: usize) -> Result<(Vec<Meeting>, Vec<RawFd>)> {
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for _ in 0..n {
            let (r, w) = pipe()?;
            reads.push(r.into_raw_fd());
            writes.push(w.into_raw_fd());
        }
        let all: Vec<RawFd> = reads.iter().chain(&writes).copied().collect();
        let members = (0..n)
            .map(|i| Meeting {
                mine: reads[i],
                others: writes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, w)| *w)
                    .collect(),
            })
            .collect();
        Ok((members, all))
    }

    /// Closes the group's descriptors in this process (the parent, once every member started).
    pub fn close_group(all: &[RawFd]) {
        close_inherited(all);
    }

    /// Waits here until every other member arrives.
    pub fn wait(&self) -> Result<()> {
        for &other in &self.others {
            write_all(fd(other), &[1]).context("arriving at the meeting point")?;
        }
        let mut arrivals = vec![0u8; self.others.len()];
        let got = read_full(fd(self.mine), &mut arrivals).context("waiting at the meeting")?;
        if got < arrivals.len() {
            bail!("the other processes left the meeting point (end-of-file on its pipe)");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// What /proc says.

/// Where `/proc/PID/fd/N` points: `pipe:[88412]`, `socket:[88420]`, `/memfd:ipc (deleted)`.
pub fn fd_link(pid: i32, number: RawFd) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{number}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("? ({e})"))
}

/// The inode in a link such as `pipe:[88412]`.
pub fn link_inode(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// How descriptor `number` of `pid` is open: `r`, `w` or `rw` (the kernel gives the link
/// `/proc/PID/fd/N` the permissions of the open mode; `procfs` reads them).
pub fn fd_mode(pid: i32, number: RawFd) -> &'static str {
    use procfs::process::FDPermissions;
    let mode =
        procfs::process::Process::new(pid).and_then(|p| p.fd_from_fd(number)).map(|f| f.mode());
    match mode {
        Ok(m) if m.contains(FDPermissions::READ | FDPermissions::WRITE) => "rw",
        Ok(m) if m.contains(FDPermissions::READ) => "r",
        Ok(m) if m.contains(FDPermissions::WRITE) => "w",
        _ => "?",
    }
}

/// Every descriptor of `pid` that points to `link` (a pipe's `pipe:[N]`, say).
pub fn fds_pointing_to(pid: i32, link: &str) -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut found: Vec<RawFd> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&n| fd_link(pid, n) == link)
        .collect();
    found.sort_unstable();
    found
}

/// What a process is doing, as `/proc` tells it: its state letter and, while it sleeps in a
/// system call, which one and on which descriptor (`/proc/PID/syscall`: the number and the
/// arguments; "running" while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Doing {
    pub state: char,
    /// `read`, `write`, `flock`, `futex`, ... or the number; `None` if unknown or running.
    pub syscall: Option<String>,
    /// The first argument, for the calls whose first argument is a descriptor.
    pub fd: Option<RawFd>,
}

impl Doing {
    /// True if it sleeps in `call`(2) (on descriptor `on`, if given).
    pub fn asleep_in(&self, call: &str, on: Option<RawFd>) -> bool {
        self.state == 'S'
            && self.syscall.as_deref() == Some(call)
            && (on.is_none() || self.fd == on)
    }

    /// `S (asleep in write(2) on fd 4)`.
    pub fn describe(&self) -> String {
        match (&self.syscall, self.fd) {
            (Some(call), Some(fd)) => format!("{} (asleep in {call}(2) on fd {fd})", self.state),
            (Some(call), None) => format!("{} (asleep in {call}(2))", self.state),
            _ => self.state.to_string(),
        }
    }
}

/// Reads what `pid` is doing; `None` once it is gone. `/proc/PID/syscall` is read here: the
/// `procfs` crate has no reader for it.
pub fn doing(pid: i32) -> Option<Doing> {
    let state = common::ps::state_of(pid)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let mut words = text.split_whitespace();
    let number = words.next().and_then(|w| w.parse::<libc::c_long>().ok());
    let first = words.next().and_then(|w| i64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
    let (syscall, takes_fd) = match number {
        Some(libc::SYS_read) => (Some("read".to_string()), true),
        Some(libc::SYS_write) => (Some("write".to_string()), true),
        Some(libc::SYS_flock) => (Some("flock".to_string()), true),
        Some(libc::SYS_futex) => (Some("futex".to_string()), false),
        Some(n) => (Some(format!("syscall {n}")), false),
        None => (None, false),
    };
    let fd = if takes_fd { first.map(|f| f as RawFd) } else { None };
    Some(Doing { state, syscall, fd })
}

/// Polls `pid` until `pred` holds for what it is doing (up to `within`, or until it ends);
/// returns the last reading, and whether `pred` held.
pub fn wait_doing(
    pid: i32,
    within: std::time::Duration,
    pred: impl Fn(&Doing) -> bool,
) -> (Option<Doing>, bool) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = doing(pid);
        if now.as_ref().is_some_and(&pred) {
            return (now, true);
        }
        // Gone, or dead and not yet reaped (a zombie does nothing any more): no use waiting.
        let ended = now.as_ref().is_none_or(|d| matches!(d.state, 'Z' | 'X'));
        if ended || std::time::Instant::now() >= deadline {
            return (now, false);
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// The raw number of an owned descriptor, for the children's arguments.
pub fn raw(owned: &OwnedFd) -> RawFd {
    owned.as_fd().as_raw_fd()
}

// ---------------------------------------------------------------------------------------------
// Children's results.

/// Sends one child's result to its parent: one line of JSON in one `write(2)` (at most
/// `PIPE_BUF` bytes, so the lines of several children never mix).
pub fn send_result(to: RawFd, value: &serde_json::Value) -> Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    if line.len() > libc::PIPE_BUF {
        bail!("a result of {} bytes is more than PIPE_BUF", line.len());
    }
    write_all(fd(to), line.as_bytes()).context("sending the result to the parent")
}

/// The results waiting in the pipe once every child has ended (they were written before the
/// children exited, so reading what the pipe holds never blocks).
pub fn take_results(from: BorrowedFd<'_>) -> Result<Vec<serde_json::Value>> {
    let mut bytes = vec![0u8; bytes_in_pipe(from)];
    let got = read_full(from, &mut bytes).context("reading the children's results")?;
    bytes.truncate(got);
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).context("a child's result is not JSON"))
        .collect()
}

/// Fills `buf` from `from` while watching `children`: a child that died before sending what
/// the parent waits for never will, so the wait ends with `child_lost` instead of for ever.
pub fn read_full_watching(
    from: BorrowedFd<'_>,
    buf: &mut [u8],
    children: &mut [common::process::Process],
    what: &str,
) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let slice = common::processes::lost::WATCH_SLICE;
    let mut done = 0;
    while done < buf.len() {
        let mut fds = [PollFd::new(from, PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(slice).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => match nix::unistd::read(from, &mut buf[done..]) {
                Ok(0) => bail!("end-of-file while waiting for {what}"),
                Ok(n) => {
                    done += n;
                    continue;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("read()"),
            },
            Err(e) => return Err(e).context("poll()"),
        }
        if let Some(dead) = common::processes::lost::first_dead(children) {
            return Err(common::processes::lost::report(&children[dead], what, 0));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_gives_its_inode() {
        assert_eq!(link_inode("pipe:[88412]"), Some(88412));
        assert_eq!(link_inode("/memfd:ipc (deleted)"), None);
    }

    #[test]
    fn members_of_a_meeting_pass_only_together_and_again() {
        let (members, all) = Meeting::group(3).unwrap();
        std::thread::scope(|s| {
            for m in &members {
                s.spawn(move || {
                    for _ in 0..50 {
                        m.wait().unwrap();
                    }
                });
            }
        });
        Meeting::close_group(&all);
    }

    #[test]
    fn two_descriptions_of_one_lock_file_exclude_each_other() {
        let (file, _owned) = LockFile::new("test-lock").unwrap();
        let (a, b) = (file.open().unwrap(), file.open().unwrap());
        let _held = a.lock().unwrap();
        assert!(matches!(b.file.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    }
}
