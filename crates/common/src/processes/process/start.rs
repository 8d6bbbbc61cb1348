//! The three start methods, each a function whose body shows its system calls: `start_fork`
//! (`fork`, the target, `_exit`), `start_spawn` (`fork` + `exec` of this program) and
//! `start_forkserver` (a request to the fork server); and the signals `terminate` and `kill`
//! send.

#[cfg(unix)]
pub(crate) use imp::set_parent_death_signal;
pub(crate) use imp::{SIGKILL, SIGTERM, send, start_fork, start_forkserver, start_spawn};

#[cfg(unix)]
mod imp {
    use super::super::*;
    use nix::errno::Errno;
    use nix::sys::signal::{SigSet, Signal, kill};
    use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
    use std::os::unix::process::CommandExt;

    use crate::processes::dispatch::{
        ENV_ARGS, ENV_DAEMONIC, ROLE_ARG_PREFIX, catch_run, child_exit_code,
    };
    use crate::processes::registry::{
        CLOSE_AFTER_FORK, forget_the_parents_children, lock_for_a_birth, record_birth,
    };

    pub const SIGTERM: i32 = libc::SIGTERM;
    pub const SIGKILL: i32 = libc::SIGKILL;

    pub fn send(pid: i32, signo: i32) -> Result<()> {
        let signal = Signal::try_from(signo).context("unknown signal")?;
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("kill({pid}, {signal})")),
        }
    }

    /// **fork**: the child is a copy of this process (its memory, its open files) and runs the
    /// target at once, from the line after `fork()`, then leaves with `_exit`.
    pub fn start_fork(p: &Process, target: Target) -> Result<i32> {
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
                // In the child, between fork() and _exit: forget the parent's children, undo
                // what belonged to the parent's other threads, take the child's name, run.
                forget_the_parents_children(births);
                become_a_forked_child(&p.name, p.daemon, p.die_with_parent, parent);
                let code = child_exit_code(catch_run(|| target.run()));
                use std::io::Write;
                let _ = std::io::stdout().flush();
                // Safety: _exit ends the process at once, without running the parent's
                // destructors or atexit handlers a second time in this copy.
                unsafe { libc::_exit(code) }
            }
        }
    }

    /// In a forked child, before it runs its target: the state of the parent's other threads
    /// undone, the parent-death signal, the daemonic flag and the name.
    fn become_a_forked_child(name: &str, daemon: bool, die_with_parent: bool, parent: Pid) {
        // The parent blocks SIGINT/SIGTERM for its signal-watcher thread; that thread does not
        // exist in the child, so the child must get the default actions back or it would
        // survive Ctrl-C.
        let _ = SigSet::empty().thread_set_mask();
        for slot in &CLOSE_AFTER_FORK {
            let fd = slot.swap(-1, Ordering::SeqCst);
            if fd >= 0 {
                // Safety: the descriptor belongs to a thread of the parent that this child does
                // not have; nothing in the child uses it.
                unsafe {
                    libc::close(fd);
                }
            }
        }
        crate::forkserver::forget_in_forked_child();
        if die_with_parent {
            set_parent_death_signal(parent);
        }
        IS_DAEMONIC.store(daemon, Ordering::Relaxed);
        crate::process::name_this_process(name);
    }

    /// **spawn**: this program is executed again (`fork` + `exec`, by `Command::spawn`) with a
    /// hidden role argument; the child starts from `main` with none of this memory, and
    /// [`dispatch`] runs the role, its arguments taken from the environment as JSON.
    pub fn start_spawn(p: &Process, target: Target) -> Result<i32> {
        let (role, args) = target.into_role(&p.name, "spawn")?;
        let parent = getpid();
        let exe = std::env::current_exe().context("finding this program to spawn it")?;
        let program = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut command = std::process::Command::new(&exe);
        command
            .arg0(&program)
            .arg(format!("{ROLE_ARG_PREFIX}{}", role.name))
            .arg(&p.name)
            .env(ENV_ARGS, args.to_string())
            .env(report::ENV_REPORT, report::env_value());
        if p.daemon {
            command.env(ENV_DAEMONIC, "1");
        } else {
            command.env_remove(ENV_DAEMONIC);
        }
        // A signal mask survives both fork and exec, and std's Command does not reset it: without
        // this, the child would keep SIGINT/SIGTERM blocked (the parent blocks them for its
        // watcher thread) and neither `terminate` nor Ctrl-C would reach it.
        let pass_fds = p.pass_fds.clone();
        let die_with_parent = p.die_with_parent;
        // Safety: runs between fork and exec in the child; pthread_sigmask, fcntl, prctl,
        // getppid and _exit are async-signal-safe, and nothing here allocates or takes a lock
        // (`pass_fds` was allocated before the fork and is only read).
        unsafe {
            command.pre_exec(move || {
                let _ = SigSet::empty().thread_set_mask();
                for &fd in &pass_fds {
                    // Keep exactly the passed descriptors open across exec, under their numbers.
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if die_with_parent {
                    set_parent_death_signal(parent);
                }
                Ok(())
            });
        }
        let births = lock_for_a_birth();
        let child = command.spawn().with_context(|| format!("spawning {}", exe.display()))?;
        Ok(record_birth(births, child.id() as i32, &p.name, p.daemon, None))
    }

    /// **forkserver**: one request to the fork server (started once, single-threaded): it
    /// forks the child, hands it its arguments and descriptors, and answers with the child's
    /// pid and a pipe on which it will write the child's exit code (the child is the server's,
    /// so only the server can `waitpid` it).
    pub fn start_forkserver(p: &Process, target: Target) -> Result<i32> {
        let (role, args) = target.into_role(&p.name, "forkserver")?;
        let mut fds = p.pass_fds.clone();
        // The timeline's recording file, if one is open, under the same number.
        if let Some(fd) = report::recording_fd().filter(|fd| !fds.contains(fd)) {
            fds.push(fd);
        }
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

    /// Asks the kernel to SIGKILL this process when its parent dies, then checks the parent did
    /// not die before the request took effect (the man page's race). Also a fork server's
    /// child's, its parent being the server.
    pub fn set_parent_death_signal(parent: Pid) {
        #[cfg(target_os = "linux")]
        {
            // Safety: prctl with PR_SET_PDEATHSIG only sets a flag on the calling process.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            if getppid() != parent {
                // Safety: the parent is already gone; end at once, running nothing.
                unsafe { libc::_exit(1) }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = parent;
    }
}

#[cfg(not(unix))]
mod imp {
    use super::super::*;
    pub const SIGTERM: i32 = 15;
    pub const SIGKILL: i32 = 9;
    pub fn send(_pid: i32, _signo: i32) -> Result<()> {
        bail!("signals to processes need a Unix system")
    }
    pub fn start_fork(_: &Process, _: Target) -> Result<i32> {
        bail!("starting processes is implemented for Unix systems only, for now")
    }
    pub use start_fork as start_spawn;
    pub use start_fork as start_forkserver;
}
