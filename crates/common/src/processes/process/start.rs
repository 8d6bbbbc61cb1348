//! The three start methods, each a function whose body shows its system calls: `start_fork`
//! (`fork`, the target, `_exit`), `start_spawn` (`fork` + `exec` of this program) and
//! `start_forkserver` (a request to the fork server).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::AtomicI32;

use nix::sys::signal::SigSet;
use nix::unistd::{ForkResult, Pid, fork, getpid};

use super::*;
use crate::processes::dispatch::{ENV_ARGS, ENV_DAEMONIC, ROLE_ARG_PREFIX, run_as_child};
use crate::processes::registry::{forget_the_parents_children, lock_for_a_birth, record_birth};

/// **fork**: the child is a copy of this process (its memory, its open files) and runs the
/// target at once, from the line after `fork()`, then leaves with `_exit`.
pub(super) fn start_fork(p: &Process, target: Target) -> Result<i32> {
    let parent = getpid();
    let births = lock_for_a_birth();
    // Safety: the child only runs this crate's code on the forking thread, the only thread
    // it has. glibc makes malloc usable after fork; the report module writes with raw
    // write(2) and atomics; the registry lock is held by this very thread, so the child can
    // release it. The child never returns: it leaves with _exit.
    match unsafe { fork() }.context("fork()")? {
        ForkResult::Parent { child } => {
            Ok(record_birth(births, child.as_raw(), &p.name, p.daemon, None))
        }
        ForkResult::Child => {
            // In the child, between fork() and _exit: forget the parent's children, undo what
            // belonged to the parent's other threads, take the child's name, run.
            forget_the_parents_children(births);
            // The parent blocks the stop signals for its signal-watcher thread, which the
            // child does not have: unblocked, they get their default action (Ctrl-C ends it).
            let _ = SigSet::empty().thread_set_mask();
            // The watcher's signalfd and the fork server's socket are the parent's: a copy
            // kept open here would keep the server from seeing the demo end.
            close_once(&crate::signals::WATCHER_FD);
            close_once(&crate::forkserver::CLIENT_FD);
            if p.die_with_parent {
                set_parent_death_signal(parent);
            }
            let code = run_as_child(&p.name, p.daemon, || target.run());
            // Safety: _exit ends the process at once, without running the parent's
            // destructors or atexit handlers a second time in this copy.
            unsafe { libc::_exit(code) }
        }
    }
}

/// **spawn**: this program is executed again (`fork` + `exec`, by `Command::spawn`) with a
/// hidden role argument; the child starts from `main` with none of this memory, and
/// [`dispatch`] runs the role, its arguments taken from the environment as JSON.
pub(super) fn start_spawn(p: &Process, target: Target) -> Result<i32> {
    let (role, args) = target.into_role(&p.name, "spawn")?;
    let parent = p.die_with_parent.then(getpid);
    let mut command = this_program_again(role.name, &p.name, p.pass_fds.clone(), parent)?;
    command.env(ENV_ARGS, args.to_string());
    if p.daemon {
        command.env(ENV_DAEMONIC, "1");
    } else {
        command.env_remove(ENV_DAEMONIC);
    }
    let births = lock_for_a_birth();
    let exe = std::path::Path::new(command.get_program()).display().to_string();
    let child = command.spawn().with_context(|| format!("spawning {exe}"))?;
    Ok(record_birth(births, child.id() as i32, &p.name, p.daemon, None))
}

/// **forkserver**: one request to the fork server (started once, single-threaded), which forks
/// the child and answers with its pid; the child is the server's, so only the server can
/// `waitpid` it, and it writes the exit code to the status pipe returned here.
pub(super) fn start_forkserver(p: &Process, target: Target) -> Result<i32> {
    let (role, args) = target.into_role(&p.name, "forkserver")?;
    let mut fds = p.pass_fds.clone();
    // The timeline's recording file, if one is open, under the same number.
    fds.extend(report::recording_fd().filter(|fd| !fds.contains(fd)));
    let request = crate::forkserver::Request {
        role: role.name.to_string(),
        name: p.name.clone(),
        args,
        daemon: p.daemon,
        die_with_parent: p.die_with_parent,
        fds,
        report: report::env_value(),
    };
    let births = lock_for_a_birth();
    let (pid, status) = crate::forkserver::start_child(&request)?;
    Ok(record_birth(births, pid, &p.name, p.daemon, Some(status)))
}

/// This program, to be run again as `role` (a spawned child, or the fork server). Between fork
/// and exec the child unblocks the stop signals (a signal mask survives exec, and std's
/// `Command` does not reset it: the child would be deaf to `terminate` and Ctrl-C), clears
/// close-on-exec on exactly `keep_fds`, which every descriptor Rust opens has, so that they stay
/// open under their numbers, and, given its parent's pid, asks to die with it.
pub(crate) fn this_program_again(
    role: &str,
    name: &str,
    keep_fds: Vec<RawFd>,
    parent: Option<Pid>,
) -> Result<Command> {
    let exe = std::env::current_exe().context("finding this program to run it again")?;
    let program = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut command = Command::new(&exe);
    command
        .arg0(&program)
        .arg(format!("{ROLE_ARG_PREFIX}{role}"))
        .arg(name)
        .env(report::ENV_REPORT, report::env_value());
    // Safety: runs between fork and exec in the child; pthread_sigmask, fcntl, prctl, getppid
    // and _exit are async-signal-safe, and nothing here allocates or takes a lock (`keep_fds`
    // was allocated before the fork and is only read).
    unsafe {
        command.pre_exec(move || {
            let _ = SigSet::empty().thread_set_mask();
            for &fd in &keep_fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(parent) = parent {
                set_parent_death_signal(parent);
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Asks the kernel to SIGKILL this process when its parent dies, then checks the parent did
/// not die before the request took effect (the man page's race). Also a fork server's
/// child's, its parent being the server.
pub(crate) fn set_parent_death_signal(parent: Pid) {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        if nix::unistd::getppid() != parent {
            // Safety: the parent is already gone; end at once, running nothing.
            unsafe { libc::_exit(1) }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
}

/// Closes the descriptor `slot` holds, once: whoever swaps it out closes it. Lock-free, so a
/// forked child may call it.
pub(crate) fn close_once(slot: &AtomicI32) {
    let fd = slot.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // Safety: the slot owned the descriptor and no longer names it; nothing else closes it.
        unsafe { libc::close(fd) };
    }
}
