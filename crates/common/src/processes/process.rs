//! process — `Process`, Rust's counterpart of Python's `multiprocessing.Process`.
//!
//! Its target is one of the notes' two ways: a named function, a [`Role`]
//! (`Process(target=task, args=(...))`), or a type that implements [`Run`]
//! (`class MyProcess(Process): def run(self): ...`). [`Process::start`] is a match over the three
//! [`StartMethod`]s whose arms, in `process/start.rs`, show each method's system calls. A spawned
//! child starts from `main`, where [`dispatch`] runs its role: Python's
//! `if __name__ == '__main__':` guard. Every child is recorded in one registry (`registry.rs`),
//! so that the signal watcher ([`crate::signals`]) and the end of `main` (`reap.rs`) can stop
//! and reap all of them: no demo leaves a zombie or an orphan behind.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::Value;

use super::dispatch::{registered_role, run_value};
use super::reap::{self, send};
use super::registry::IS_DAEMONIC;
use crate::report;

pub use super::dispatch::{ExitWith, Role, Run, dispatch};
pub use super::reap::{Ended, end_main_code, finish_main, stop_all_children, wait_until_ended};
pub use super::registry::live_children;

/// How a child process is created. Python's defaults differ by platform and version: `fork` on
/// Linux up to 3.13, `forkserver` on Linux from 3.14, `spawn` on macOS (3.8+) and Windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartMethod {
    /// Copy the running parent with fork(2): the child has everything the parent had.
    Fork,
    /// Execute the program again: the child starts from main with nothing of the parent's.
    Spawn,
    /// Ask a single-threaded fork server (started once) to fork it: no fork from this process.
    Forkserver,
}

/// The name `--start-method` takes: `fork`, `spawn` or `forkserver`.
impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no method is skipped");
        f.write_str(value.get_name())
    }
}

enum Target {
    Role { role: &'static Role, args: Value },
    Closure(Box<dyn FnOnce() -> Result<()> + Send>),
}

impl Target {
    fn run(self) -> Result<()> {
        match self {
            Target::Role { role, args } => (role.run)(args),
            Target::Closure(f) => f(),
        }
    }

    /// The named role a child that starts from nothing (spawn, forkserver) looks up by name.
    fn into_role(self, name: &str, method: &str) -> Result<(&'static Role, Value)> {
        match self {
            Target::Role { role, args } => Ok((role, args)),
            Target::Closure(_) => bail!(
                "{name}: the {method} method needs a named role; a closure exists only in this \
                 process's memory (use fork, or a Role)"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    Started,
    Stopped,
}

/// A child process with Python's interface: `start`, `join`, `is_alive`, `terminate`, `kill`,
/// `pid`, `name`, `exitcode`, `daemon`.
pub struct Process {
    name: String,
    target: Option<Target>,
    method: StartMethod,
    daemon: bool,
    die_with_parent: bool,
    pass_fds: Vec<i32>,
    state: State,
    pid: Option<i32>,
    exitcode: Option<i32>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Python's `repr`: `<Process buyer-3 pid=4182 started daemon>`,
/// `<Process buyer-3 pid=4182 stopped exitcode=-SIGKILL>`.
impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Process {}", self.name)?;
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        match self.state {
            State::Initial => write!(f, " initial")?,
            State::Started => write!(f, " started")?,
            State::Stopped => write!(f, " stopped exitcode={}", exitcode_name(self.exitcode))?,
        }
        if self.daemon {
            write!(f, " daemon")?;
        }
        write!(f, ">")
    }
}

/// `0`, `3`, or `-SIGKILL` for a process killed by signal 9, as Python prints it.
pub fn exitcode_name(code: Option<i32>) -> String {
    let Some(code) = code else { return "None".to_string() };
    match signal_name(-code) {
        Some(name) if code < 0 => format!("-{name}"),
        _ => code.to_string(),
    }
}

/// The name of a signal number (`9` → `SIGKILL`), where the platform knows it.
pub fn signal_name(signo: i32) -> Option<&'static str> {
    Signal::try_from(signo).ok().map(|s| s.as_str())
}

impl Process {
    /// A process that will run `role` with `args` (Python's `Process(target=..., args=...)`).
    /// The start method is [`default_start_method`] until [`Process::start_method`] changes it.
    pub fn new(name: impl Into<String>, role: &'static Role, args: impl Serialize) -> Process {
        let args = serde_json::to_value(args).unwrap_or(Value::Null);
        Process::with_target(name.into(), Target::Role { role, args })
    }

    /// A process that runs `value.run()`: the "subclass `Process` and override `run`" way. The
    /// type's role must be listed in the demo's [`dispatch`] for the spawn method.
    pub fn from_run<T: Run>(name: impl Into<String>, value: T) -> Process {
        let args = serde_json::to_value(&value).unwrap_or(Value::Null);
        let target = match registered_role(T::ROLE) {
            Some(role) => Target::Role { role, args },
            // Not registered: still fine for fork, which needs no name to find the code.
            None => Target::Closure(Box::new(move || run_value::<T>(args))),
        };
        Process::with_target(name.into(), target)
    }

    /// A process that runs a closure. Only the fork method can run one: a closure cannot be
    /// sent to a freshly executed program (Python's spawn has the same limit with lambdas).
    pub fn from_fn(
        name: impl Into<String>,
        f: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Process {
        Process::with_target(name.into(), Target::Closure(Box::new(f)))
            .start_method(StartMethod::Fork)
    }

    fn with_target(name: String, target: Target) -> Process {
        Process {
            name,
            target: Some(target),
            method: default_start_method(),
            daemon: false,
            die_with_parent: true,
            pass_fds: Vec::new(),
            state: State::Initial,
            pid: None,
            exitcode: None,
        }
    }

    /// Chooses fork, spawn or forkserver (a closure can only be forked: [`Process::from_fn`]).
    pub fn start_method(mut self, method: StartMethod) -> Process {
        self.method = method;
        self
    }

    /// Lets the child outlive its parent. By default every child asks the kernel to kill it if
    /// its parent dies (`PR_SET_PDEATHSIG`), so that even a parent killed with SIGKILL leaves no
    /// orphan; the orphan demos turn that off.
    pub fn outlive_parent(mut self) -> Process {
        self.die_with_parent = false;
        self
    }

    /// Keeps these file descriptors open, under the same numbers, in a *spawned* or *forkserver*
    /// child (a queue's pipe, for example), which would not have them otherwise: every
    /// descriptor Rust opens is close-on-exec. The child must be told the numbers (in its
    /// arguments). A forked child has every descriptor anyway.
    pub fn pass_fds(mut self, fds: &[i32]) -> Process {
        self.pass_fds.extend_from_slice(fds);
        self
    }

    /// Python's `p.daemon = True`: a daemonic child is terminated when the parent's main code
    /// ends, instead of being waited for. Like Python, only before `start`.
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if self.state != State::Initial {
            bail!("{self}: the daemon flag can only be set before start (Python: AssertionError)");
        }
        self.daemon = daemon;
        Ok(())
    }

    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The name given at creation; it is also what `ps -o comm` shows for the child.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    pub fn method(&self) -> StartMethod {
        self.method
    }

    /// `None` while running (or before start); the exit code once reaped; minus the signal
    /// number if a signal killed it (`-9` for SIGKILL), as in Python.
    pub fn exitcode(&self) -> Option<i32> {
        self.exitcode
    }

    /// Starts the child and returns at once: the parent goes on while the child runs.
    pub fn start(&mut self) -> Result<()> {
        if self.state != State::Initial {
            bail!("{self}: cannot start a process twice");
        }
        if IS_DAEMONIC.load(Ordering::Relaxed) {
            bail!(
                "cannot start {}: daemonic processes are not allowed to have children \
                 (Python: AssertionError)",
                self.name
            );
        }
        let target = self.target.take().expect("target is present before start");
        let pid = match self.method {
            StartMethod::Fork => start::start_fork(self, target)?,
            StartMethod::Spawn => start::start_spawn(self, target)?,
            StartMethod::Forkserver => start::start_forkserver(self, target)?,
        };
        self.pid = Some(pid);
        self.state = State::Started;
        Ok(())
    }

    /// Blocks until the child ends, reaps it and returns its exit code.
    pub fn join(&mut self) -> Result<Option<i32>> {
        self.join_within(None)
    }

    /// Like [`Process::join`] but gives up after `timeout`; returns `None` (and leaves the child
    /// running) if it has not ended by then, as Python's `join(timeout)` does.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<i32>> {
        self.join_within(Some(timeout))
    }

    fn join_within(&mut self, timeout: Option<Duration>) -> Result<Option<i32>> {
        let pid = self.started_pid("join")?;
        if self.state == State::Started {
            self.record(reap::wait(pid, timeout));
        }
        Ok(self.exitcode)
    }

    /// True while the child runs. Like Python, this reaps a child that has ended.
    pub fn is_alive(&mut self) -> bool {
        let (State::Started, Some(pid)) = (self.state, self.pid) else { return false };
        self.record(reap::wait(pid, Some(Duration::ZERO)));
        self.state == State::Started
    }

    /// Sends SIGTERM (Python's `terminate`). It does not wait: `join` afterwards.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (Python's `kill`). It does not wait: `join` afterwards.
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends any signal to the child (SIGSTOP, SIGCONT, ...), if it has not been reaped.
    pub fn signal(&self, signo: i32) -> Result<()> {
        let pid = self.started_pid("signal")?;
        if self.state == State::Started {
            send(pid, Signal::try_from(signo).context("unknown signal")?)?;
        }
        Ok(())
    }

    fn started_pid(&self, what: &str) -> Result<i32> {
        self.pid.ok_or_else(|| anyhow!("{self}: can only {what} a started process"))
    }

    fn record(&mut self, outcome: Option<Option<i32>>) {
        if let Some(code) = outcome {
            self.exitcode = code;
            self.state = State::Stopped;
        }
    }
}

/// The start method when a demo is not told otherwise: fork, as Python on Linux up to 3.13.
pub fn default_start_method() -> StartMethod {
    StartMethod::Fork
}

/// Names the calling process: the name `ps -o comm` and `top` show (the kernel keeps 15 bytes
/// of it) and the one its printed lines carry. For a child forked directly, without [`Process`].
pub fn name_this_process(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(name) = std::ffi::CString::new(name.replace('\0', "")) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    report::set_who(name);
}

mod start;
pub(crate) use start::close_once;
#[cfg(target_os = "linux")]
pub(crate) use start::{set_parent_death_signal, this_program_again};
