//! daemonize — a real Unix daemon (精灵进程 / 守护进程 in the OS sense), the steps of TLPI's
//! `becomeDaemon` (`daemons/become_daemon.c`) and `createPidFile`, for a demo to call.
//!
//! Not Python's `daemon=True`, which only means "terminate me when the main code ends". A Unix
//! daemon is a process that nothing ties to a terminal, a login session or its launcher:
//!
//! 1. `fork()`: the launcher goes on (here: it waits for "ready", then exits); the child is
//!    not a process-group leader, so it may call `setsid`.
//! 2. `setsid()`: a new session and process group, with no controlling terminal (`?` in `ps`).
//! 3. `fork()` again and the middle process exits: the daemon is not the session's leader, so
//!    opening a terminal can never make it its controlling terminal. Its parent is now the
//!    nearest child subreaper or `init`, never the launcher.
//! 4. `umask(0o027)`, `chdir("/")`: files it creates are not world-readable, and it does not
//!    keep a mounted file system busy.
//! 5. Standard input from `/dev/null`, output and errors to a log file; every other inherited
//!    file descriptor closed (a pipe inherited from the launcher's caller would keep that
//!    caller's reader waiting for an end of file that never comes).
//!
//! A pidfile held under an exclusive `flock` says "one daemon runs here": the lock belongs to the
//! open file description, which `fork` shares, so the launcher takes it before forking and the
//! daemon keeps it until it exits, whatever way it exits. A second launcher fails to take it and
//! refuses; a pidfile left behind by a daemon killed with SIGKILL is not locked, so it is known
//! to be stale.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use common::report;

/// The umask a daemon sets: new files get no write bit for the group and nothing for others.
pub const DAEMON_UMASK: u32 = 0o027;

// ---------------------------------------------------------------------------------------------
// Where a daemon keeps its pidfile and log.

/// The per-user directory for `app`'s pidfile and log when no directory is given:
/// `$XDG_RUNTIME_DIR/<app>` (a tmpfs only this user can enter, emptied at logout), else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/<app>`. Created `0700` if missing; refused unless it is a
/// real directory owned by this user that no one else can enter. Never a fixed, guessable name
/// in a shared directory such as `/tmp`, where another user could create it first.
pub fn runtime_dir(app: &str) -> Result<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").and_then(absolute) {
        dir
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        dir
    } else if let Some(home) = std::env::var_os("HOME").and_then(absolute) {
        home.join(".cache")
    } else {
        bail!("neither XDG_RUNTIME_DIR nor HOME is set to an absolute path: pass --dir PATH");
    };
    let dir = base.join(app);
    create_private_dir(&dir)?;
    check_private_dir(&dir)?;
    Ok(dir)
}

/// Makes a directory given on the command line (`--dir`) usable: created `0700` if missing, and
/// returned absolute, because the daemon changes its working directory to `/`. A path that
/// cannot be a directory is bad input (exit 2), named with the flag.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let bad = |why: String| common::demo::bad_input(format!("--dir {}: {why}", dir.display()));
    if !dir.exists() {
        create_private_dir(dir).map_err(|e| bad(format!("{:#}", e.root_cause())))?;
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    if !dir.is_dir() {
        return Err(bad("not a directory".into()));
    }
    Ok(dir)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Refuses a directory that is a symlink, belongs to someone else, or that others can enter.
fn check_private_dir(dir: &Path) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory (a symlink?): remove it or pass --dir PATH", dir.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            bail!(
                "{} belongs to uid {}, not to you (uid {me}): pass --dir PATH",
                dir.display(),
                meta.uid()
            );
        }
        if meta.mode() & 0o077 != 0 {
            bail!(
                "{} is open to other users (mode {:o}): run `chmod 700 {}` or pass --dir PATH",
                dir.display(),
                meta.mode() & 0o777,
                dir.display()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The pidfile.

/// A pidfile whose exclusive lock this process holds (and, after [`spawn_daemon`], the daemon).
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
}

/// What [`PidFile::claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// The lock is ours. `stale` is the pid a dead daemon left in the file, if any.
    Claimed { pidfile: PidFile, stale: Option<i32> },
    /// Another process holds the lock: a daemon runs (its pid, once it has written it).
    HeldBy(Option<i32>),
}

/// What is at a pidfile's path, seen from outside (`status`, `stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No pidfile: no daemon.
    Absent,
    /// A pidfile nobody holds the lock of: its daemon died without removing it (SIGKILL?).
    Stale(Option<i32>),
    /// The lock is held: the daemon runs; its pid once it has written it.
    Running(Option<i32>),
}

impl PidFile {
    /// Takes the pidfile's exclusive lock without waiting (`flock(LOCK_EX | LOCK_NB)`), creating
    /// the file if needed. A daemon that is stopping removes its pidfile while it still holds the
    /// lock; a claim that opened the old file just before is then holding a lock on a file that
    /// no longer has a name, so the claim checks that the path still names the file it locked,
    /// and tries again if not.
    pub fn claim(path: &Path) -> Result<Claim> {
        for _ in 0..100 {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
            let file = options.open(path).with_context(|| format!("opening {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {
                    if !names_file(path, &file) {
                        continue; // replaced or removed since we opened it: claim the new one
                    }
                    let stale = read_pid(&file);
                    return Ok(Claim::Claimed {
                        pidfile: PidFile { file, path: path.to_path_buf() },
                        stale,
                    });
                }
                Err(TryLockError::WouldBlock) => return Ok(Claim::HeldBy(read_pid(&file))),
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("flock({})", path.display()));
                }
            }
        }
        bail!("{} kept being replaced while it was being locked", path.display())
    }

    /// Writes `pid` as the file's only line.
    pub fn write_pid(&mut self, pid: i32) -> Result<()> {
        let path = self.path.display().to_string();
        self.file.set_len(0).with_context(|| format!("truncating {path}"))?;
        #[cfg(unix)]
        let written = {
            use std::os::unix::fs::FileExt;
            self.file.write_all_at(format!("{pid}\n").as_bytes(), 0)
        };
        #[cfg(not(unix))]
        let written = {
            use std::io::{Seek, SeekFrom};
            self.file.seek(SeekFrom::Start(0)).and_then(|_| writeln!(self.file, "{pid}"))
        };
        written.with_context(|| format!("writing {path}"))
    }

    /// Removes the pidfile while still holding its lock; the lock goes when the file is closed.
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing {}", self.path.display()))
    }

    /// The pidfile's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Looks at a pidfile without disturbing a running daemon: a shared lock is refused while the
/// daemon holds its exclusive one, and granted (then dropped at once) when nobody holds it.
pub fn probe(path: &Path) -> Result<Probe> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Absent),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let pid = read_pid(&file);
    match file.try_lock_shared() {
        Ok(()) => Ok(Probe::Stale(pid)),
        Err(TryLockError::WouldBlock) => Ok(Probe::Running(pid)),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("flock({})", path.display())),
    }
}

fn read_pid(mut file: &File) -> Option<i32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// True if `path` still names the very file `file` has open (same device and inode).
fn names_file(path: &Path, file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(path), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

// ---------------------------------------------------------------------------------------------
// Becoming a daemon.

/// What [`spawn_daemon`] needs to know.
#[derive(Debug)]
pub struct DaemonSetup<'a> {
    /// The name `ps -o comm` shows for the daemon; also the `who` of its log lines.
    pub name: &'a str,
    /// The log file (absolute): the daemon's standard output and error, appended to.
    pub log: &'a Path,
    /// How long the launcher waits for the daemon to report that it is ready.
    pub ready_timeout: Duration,
}

/// The daemon's way to tell its launcher "ready" (or why it could not start). The launcher
/// waits on a pipe for it, so no sleep stands in for synchronization.
#[derive(Debug)]
pub struct Ready {
    pipe: Option<std::io::PipeWriter>,
}

impl Ready {
    /// Reports `"ready <pid>"` to the launcher and closes the pipe.
    pub fn notify(&mut self) -> Result<()> {
        let mut pipe = self.pipe.take().context("ready was already reported")?;
        writeln!(pipe, "ready {}", std::process::id()).context("writing to the launcher's pipe")
    }

    /// Reports why the daemon could not start (once; ignored after `notify`).
    pub fn fail(&mut self, why: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = writeln!(pipe, "error {}", why.replace('\n', " "));
        }
    }
}

/// Starts a daemon that runs `daemon_main` with `pidfile` (whose lock it inherits), and returns
/// its pid in the calling process (the launcher) once the daemon has called [`Ready::notify`].
/// The launcher's copy of the pidfile is closed, not unlocked: the lock stays with the daemon.
/// In the daemon it never returns: when `daemon_main` returns, the daemon ends with `_exit`
/// (0, or 1 after logging its error). Every descriptor but the pidfile's is closed in it.
///
/// The caller should not be a child subreaper (`signals::set_child_subreaper(false)`): when
/// the middle process exits, the daemon would be reparented to it, tied to the launcher.
/// The caller's standard output should hold no unwritten bytes (it is flushed here).
pub fn spawn_daemon(
    setup: &DaemonSetup<'_>,
    pidfile: PidFile,
    daemon_main: impl FnOnce(PidFile, &mut Ready) -> Result<()>,
) -> Result<i32> {
    imp::spawn_daemon(setup, pidfile, daemon_main)
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, so that they wait, pending, until
/// [`wait_for_stop_signal`] takes them: no code runs in a signal handler, and a SIGTERM that
/// arrives while the daemon is busy is not lost.
pub fn block_stop_signals() -> Result<()> {
    imp::block_stop_signals()
}

/// Waits up to `timeout` for SIGTERM, SIGINT or SIGHUP (blocked by [`block_stop_signals`]) with
/// `sigtimedwait(2)`. Returns the signal's number, or `None` when the time is up.
pub fn wait_for_stop_signal(timeout: Duration) -> Result<Option<i32>> {
    imp::wait_for_stop_signal(timeout)
}

/// A process that is not this process's child (a daemon), held by a Linux pidfd: signals go to
/// that very process even if its pid were reused, and its end can be waited for with `poll`.
#[derive(Debug)]
pub struct ProcessHandle {
    pid: i32,
    #[cfg(target_os = "linux")]
    pidfd: std::os::fd::OwnedFd,
}

impl ProcessHandle {
    /// `pidfd_open(pid)`. Fails if there is no such process.
    pub fn open(pid: i32) -> Result<ProcessHandle> {
        imp::open_handle(pid)
    }

    /// Sends a signal (`pidfd_send_signal`).
    pub fn send_signal(&self, signo: i32) -> Result<()> {
        imp::send_signal(self, signo)
    }

    /// Waits up to `timeout` for the process to end. It cannot be reaped from here (it is not
    /// our child); its own parent does that. Returns whether it ended.
    pub fn wait_exit(&self, timeout: Duration) -> Result<bool> {
        imp::wait_exit(self, timeout)
    }
}

#[cfg(unix)]
mod imp {
    use super::*;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::stat::{Mode, umask};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid};
    use std::os::fd::{AsFd, AsRawFd};

    pub fn spawn_daemon(
        setup: &DaemonSetup<'_>,
        pidfile: PidFile,
        daemon_main: impl FnOnce(PidFile, &mut Ready) -> Result<()>,
    ) -> Result<i32> {
        let (mut reader, writer) = std::io::pipe().context("pipe() for the ready report")?;
        // Bytes still in Rust's buffers would be copied into the children and written twice.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // Safety: fork #1. The child (the middle process) only closes a descriptor and calls
        // setsid, fork and _exit, all async-signal-safe, so it is sound even though this
        // process has other threads (the demo's signal watcher).
        match unsafe { fork() }.context("fork() of the middle process")? {
            ForkResult::Child => {
                drop(reader);
                middle_process(setup, pidfile, writer, daemon_main)
            }
            ForkResult::Parent { child } => {
                drop(writer); // else the pipe would never report end of file
                // The middle process exits at once: reap it, so it is not left a zombie.
                let status = loop {
                    match waitpid(child, None) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => break other.context("waitpid() for the middle process")?,
                    }
                };
                if status != WaitStatus::Exited(child, 0) {
                    bail!("the middle process failed (setsid or the second fork): {status:?}");
                }
                read_ready(&mut reader, setup.ready_timeout)
            }
        }
    }

    fn middle_process(
        setup: &DaemonSetup<'_>,
        pidfile: PidFile,
        writer: std::io::PipeWriter,
        daemon_main: impl FnOnce(PidFile, &mut Ready) -> Result<()>,
    ) -> ! {
        // A new session: this process leads it and its process group, and has no controlling
        // terminal. Cannot fail here: a fresh child is never a process-group leader.
        if setsid().is_err() {
            // Safety: _exit ends this copy without running the launcher's destructors.
            unsafe { libc::_exit(1) }
        }
        // Safety: fork #2. This process has one thread (fork copies only the caller's), so the
        // grandchild may run ordinary Rust code: glibc resets malloc's locks in a fork child,
        // the launcher's only other thread (the signal watcher) sits in sigwait holding no lock,
        // and `report` writes with raw write(2) and atomics. This process only _exits.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => become_daemon(setup, pidfile, writer, daemon_main),
            // Safety: _exit ends the middle process at once; its child, the daemon, is
            // reparented to the nearest subreaper or init and is not a session leader.
            Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
            // Safety: as above.
            Err(_) => unsafe { libc::_exit(1) },
        }
    }

    /// The daemon's side: TLPI's `becomeDaemon` steps after the double fork, then `daemon_main`.
    fn become_daemon(
        setup: &DaemonSetup<'_>,
        pidfile: PidFile,
        writer: std::io::PipeWriter,
        daemon_main: impl FnOnce(PidFile, &mut Ready) -> Result<()>,
    ) -> ! {
        let mut ready = Ready { pipe: Some(writer) };
        let detached = detach(setup, &[pidfile.file.as_raw_fd()], &ready);
        let code = match detached.and_then(|()| daemon_main(pidfile, &mut ready)) {
            Ok(()) => 0,
            Err(e) => {
                let why = format!("{e:#}");
                report::write_stderr(&format!("{}: error: {why}", setup.name));
                ready.fail(&why);
                1
            }
        };
        // Safety: _exit ends the daemon without running the launcher's atexit handlers or
        // destructors, which belong to the launcher; every log line was written with write(2).
        unsafe { libc::_exit(code) }
    }

    fn detach(setup: &DaemonSetup<'_>, keep: &[i32], ready: &Ready) -> Result<()> {
        // fork already cleared the launcher's parent-death signal (if it had one); say so
        // explicitly: nothing may end the daemon when its launcher ends.
        #[cfg(target_os = "linux")]
        // Safety: PR_SET_PDEATHSIG with 0 only clears a flag on this process.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, 0);
        }
        umask(Mode::from_bits_truncate(DAEMON_UMASK as libc::mode_t));
        nix::unistd::chdir("/").context("chdir(\"/\")")?;
        let null = File::open("/dev/null").context("opening /dev/null")?;
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        let log =
            options.open(setup.log).with_context(|| format!("opening {}", setup.log.display()))?;
        dup2_stdin(&null).context("dup2(/dev/null, 0)")?;
        dup2_stdout(&log).context("dup2(log, 1)")?;
        dup2_stderr(&log).context("dup2(log, 2)")?;
        drop((null, log));
        let mut keep = keep.to_vec();
        if let Some(pipe) = &ready.pipe {
            keep.push(pipe.as_raw_fd());
        }
        close_other_fds(&keep);
        // Start from a clean signal mask (the launcher blocked its stop signals for its watcher).
        SigSet::empty().thread_set_mask().context("sigprocmask()")?;
        #[cfg(target_os = "linux")]
        {
            let mut name: Vec<u8> = setup.name.bytes().filter(|b| *b != 0).take(15).collect();
            name.push(0);
            // Safety: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe {
                libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            }
        }
        report::set_who(setup.name);
        Ok(())
    }

    /// Closes every descriptor above 2 except `keep`.
    fn close_other_fds(keep: &[i32]) {
        let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
        let open: Vec<i32> = match std::fs::read_dir(dir) {
            Ok(entries) => {
                entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
            }
            Err(_) => (3..1024).collect(),
        };
        for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
            // Safety: closing a descriptor this process does not use any more; the one
            // read_dir used is already closed, and closing it again only fails with EBADF.
            unsafe {
                libc::close(fd);
            }
        }
    }

    fn read_ready(reader: &mut std::io::PipeReader, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        let mut text = Vec::new();
        let mut buf = [0u8; 512];
        while !text.contains(&b'\n') {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the daemon did not report ready within {timeout:?}");
            }
            let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e).context("poll() on the ready pipe"),
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the ready pipe"),
            }
        }
        let text = String::from_utf8_lossy(&text);
        let line = text.lines().next().unwrap_or("").trim();
        if let Some(pid) = line.strip_prefix("ready ") {
            return pid.parse().with_context(|| format!("the daemon reported {line:?}"));
        }
        if let Some(why) = line.strip_prefix("error ") {
            bail!("the daemon could not start: {why}");
        }
        bail!("the daemon ended before it reported ready (see its log)")
    }

    fn stop_signals() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.add(Signal::SIGHUP);
        set
    }

    pub fn block_stop_signals() -> Result<()> {
        stop_signals().thread_block().context("sigprocmask(SIG_BLOCK, SIGTERM|SIGINT|SIGHUP)")
    }

    #[cfg(target_os = "linux")]
    pub fn wait_for_stop_signal(timeout: Duration) -> Result<Option<i32>> {
        let set = stop_signals();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // Safety: the set and the timespec are valid for the call; no siginfo is asked for.
            let signo = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
            if signo > 0 {
                return Ok(Some(signo));
            }
            match nix::errno::Errno::last() {
                nix::errno::Errno::EAGAIN => return Ok(None),
                nix::errno::Errno::EINTR => continue,
                e => return Err(e).context("sigtimedwait()"),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn wait_for_stop_signal(_timeout: Duration) -> Result<Option<i32>> {
        bail!("sigtimedwait() is not available on this system; this part needs Linux")
    }

    #[cfg(target_os = "linux")]
    pub fn open_handle(pid: i32) -> Result<ProcessHandle> {
        use std::os::fd::FromRawFd;
        // Safety: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pidfd_open({pid})"));
        }
        // Safety: the descriptor was just returned to us and nothing else owns it.
        let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        Ok(ProcessHandle { pid, pidfd })
    }

    #[cfg(target_os = "linux")]
    pub fn send_signal(handle: &ProcessHandle, signo: i32) -> Result<()> {
        let fd = handle.pidfd.as_raw_fd();
        // Safety: pidfd_send_signal takes a pidfd we own, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, fd, signo, std::ptr::null::<u8>(), 0)
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pidfd_send_signal({}, {signo})", handle.pid));
        }
        Ok(())
    }

    #[cfg(target_os = "linux")]
    pub fn wait_exit(handle: &ProcessHandle, timeout: Duration) -> Result<bool> {
        // A pidfd becomes readable when its process ends.
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(handle.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll() on a pidfd"),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn open_handle(pid: i32) -> Result<ProcessHandle> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .with_context(|| format!("kill({pid}, 0)"))?;
        Ok(ProcessHandle { pid })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn send_signal(handle: &ProcessHandle, signo: i32) -> Result<()> {
        let signal = Signal::try_from(signo).context("unknown signal")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(handle.pid), signal)
            .with_context(|| format!("kill({}, {signal})", handle.pid))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn wait_exit(handle: &ProcessHandle, timeout: Duration) -> Result<bool> {
        // Without pidfds, poll for the pid's end (a zombie still answers kill(pid, 0)).
        let deadline = Instant::now() + timeout;
        while nix::sys::signal::kill(nix::unistd::Pid::from_raw(handle.pid), None).is_ok() {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(true)
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;
    const UNIX_ONLY: &str = "a Unix daemon needs a Unix system (fork, setsid)";
    pub fn spawn_daemon(
        _: &DaemonSetup<'_>,
        _: PidFile,
        _: impl FnOnce(PidFile, &mut Ready) -> Result<()>,
    ) -> Result<i32> {
        bail!(UNIX_ONLY)
    }
    pub fn block_stop_signals() -> Result<()> {
        bail!(UNIX_ONLY)
    }
    pub fn wait_for_stop_signal(_: Duration) -> Result<Option<i32>> {
        bail!(UNIX_ONLY)
    }
    pub fn open_handle(_: i32) -> Result<ProcessHandle> {
        bail!(UNIX_ONLY)
    }
    pub fn send_signal(_: &ProcessHandle, _: i32) -> Result<()> {
        bail!(UNIX_ONLY)
    }
    pub fn wait_exit(_: &ProcessHandle, _: Duration) -> Result<bool> {
        bail!(UNIX_ONLY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("common-daemonize-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_pidfile_is_claimed_once_and_a_closed_one_is_stale() {
        let dir = temp("claim");
        let path = dir.join("x.pid");
        assert_eq!(probe(&path).unwrap(), Probe::Absent);
        let Claim::Claimed { mut pidfile, stale: None } = PidFile::claim(&path).unwrap() else {
            panic!("a fresh pidfile was not claimed");
        };
        pidfile.write_pid(4182).unwrap();
        // flock locks belong to the open file description: a second open is refused.
        assert!(matches!(PidFile::claim(&path).unwrap(), Claim::HeldBy(Some(4182))));
        assert_eq!(probe(&path).unwrap(), Probe::Running(Some(4182)));
        drop(pidfile);
        assert_eq!(probe(&path).unwrap(), Probe::Stale(Some(4182)));
        let Claim::Claimed { pidfile, stale: Some(4182) } = PidFile::claim(&path).unwrap() else {
            panic!("a stale pidfile was not taken over");
        };
        pidfile.remove().unwrap();
        assert_eq!(probe(&path).unwrap(), Probe::Absent);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_shared_runtime_dir_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("private");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check_private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("open to other users"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
