//! process — `Process`, Rust's counterpart of Python's `multiprocessing.Process`.
//!
//! A process runs one of two kinds of target, the two ways of starting a process in the notes:
//! - a named function, a [`Role`] (`Process(target=task, args=(...))`), or
//! - a type that implements [`Run`] (`class MyProcess(Process): def run(self): ...`).
//!
//! and starts by one of three methods ([`StartMethod`]):
//! - **fork**: `fork(2)` copies the parent; the child calls the target straight away with
//!   everything the parent had in memory, then leaves with `_exit(2)`, so no destructor and no
//!   buffer of the parent's runs a second time in the child.
//! - **spawn**: the current binary is executed again with a hidden role argument; the child
//!   starts from `main` with nothing of the parent's memory and [`dispatch`] runs the role. That
//!   dispatch, at the top of every demo's `main`, is the Rust analog of Python's
//!   `if __name__ == '__main__':` guard.
//! - **forkserver**: a small single-threaded process, this program run again with a hidden role
//!   (see [`crate::forkserver`]), forks the child on request and passes it its arguments and
//!   descriptors. The child starts as cheaply as a fork but never from a parent with threads;
//!   like a spawned child it has none of the demo's memory, and it is the server's child, not
//!   the demo's: `join` reads the exit code the server reports.
//!
//! Every child this module starts is recorded in one registry, so that the signal watcher
//! ([`crate::signals`]) and the end of `main` can stop and reap all of them: no demo leaves a
//! zombie or an orphan behind.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::report;

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

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        })
    }
}

/// A named function a child process can run, with its arguments as JSON. A spawned child finds
/// it by name in the list given to [`dispatch`].
#[derive(Debug)]
pub struct Role {
    /// The name a spawned child is told to run; unique within a demo.
    pub name: &'static str,
    /// The function itself; it receives the arguments given to [`Process::new`].
    pub run: fn(Value) -> Result<()>,
}

impl Role {
    /// A role for a plain function taking JSON arguments.
    pub const fn new(name: &'static str, run: fn(Value) -> Result<()>) -> Role {
        Role { name, run }
    }

    /// The role of a type that implements [`Run`]: the "subclass Process, override run" way.
    pub const fn of<T: Run>() -> Role {
        Role { name: T::ROLE, run: run_value::<T> }
    }
}

fn run_value<T: Run>(value: Value) -> Result<()> {
    let target: T = serde_json::from_value(value)
        .with_context(|| format!("decoding the arguments of role {}", T::ROLE))?;
    target.run()
}

/// A type whose value is a process's work: Python's `class MyProcess(Process)` with `run`.
/// It is serializable because a spawned child must receive it; it is not shared, it is copied.
pub trait Run: Serialize + DeserializeOwned + 'static {
    /// The role name under which a spawned child finds this type (see [`Role::of`]).
    const ROLE: &'static str;
    /// The work done in the child process.
    fn run(self) -> Result<()>;
}

/// An error a child returns to end with a chosen exit code, like `sys.exit(3)`.
#[derive(Debug, thiserror::Error)]
#[error("exit with code {0}")]
pub struct ExitWith(pub i32);

enum Target {
    Role { role: &'static Role, args: Value },
    Closure(Box<dyn FnOnce() -> Result<()> + Send>),
}

impl Target {
    /// Runs the child's work, in the child.
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
    /// Descriptors a spawned child keeps open across `exec` (see [`Process::pass_fds`]).
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
    match code {
        None => "None".to_string(),
        Some(code) if code < 0 => match signal_name(-code) {
            Some(name) => format!("-{name}"),
            None => code.to_string(),
        },
        Some(code) => code.to_string(),
    }
}

/// The name of a signal number (`9` → `SIGKILL`), where the platform knows it.
pub fn signal_name(signo: i32) -> Option<&'static str> {
    #[cfg(unix)]
    {
        nix::sys::signal::Signal::try_from(signo).ok().map(|s| s.as_str())
    }
    #[cfg(not(unix))]
    {
        let _ = signo;
        None
    }
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
        let role = registered_role(T::ROLE);
        match role {
            Some(role) => Process::with_target(name.into(), Target::Role { role, args }),
            // Not registered: still fine for fork, which needs no name to find the code.
            None => Process::with_target(
                name.into(),
                Target::Closure(Box::new(move || {
                    let value: T = serde_json::from_value(args)?;
                    value.run()
                })),
            ),
        }
    }

    /// A process that runs a closure. Only the fork method can run one: a closure cannot be
    /// sent to a freshly executed program (Python's spawn has the same limit with lambdas).
    pub fn from_fn(
        name: impl Into<String>,
        f: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Process {
        let mut process = Process::with_target(name.into(), Target::Closure(Box::new(f)));
        process.method = StartMethod::Fork;
        process
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

    /// Chooses fork, spawn or forkserver for this process (a closure, [`Process::from_fn`],
    /// can only be forked: the other two need a [`Role`] listed in the program's dispatch).
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

    /// Keeps these file descriptors open in a *spawned* child: every descriptor Rust opens is
    /// close-on-exec, so without this a spawned child would not have them (a queue's pipe, for
    /// example). Between fork and exec the child clears `FD_CLOEXEC` on exactly these
    /// descriptors, so they keep their numbers; the child must be told the numbers (in its
    /// arguments). A *forkserver* child gets them too: they travel to the server as
    /// `SCM_RIGHTS` and the child has them under the same numbers. For the fork method this
    /// does nothing: a forked child has every descriptor.
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

    /// Whether this process is daemonic.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The name given at creation; it is also what `ps -o comm` shows for the child.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The start method this process uses.
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
            StartMethod::Fork => imp::start_fork(self, target)?,
            StartMethod::Spawn => imp::start_spawn(self, target)?,
            StartMethod::Forkserver => imp::start_forkserver(self, target)?,
        };
        self.pid = Some(pid);
        self.state = State::Started;
        Ok(())
    }

    /// Blocks until the child ends, reaps it and returns its exit code.
    pub fn join(&mut self) -> Result<Option<i32>> {
        let pid = self.started_pid("join")?;
        if self.state == State::Started {
            self.record(imp::wait(pid, None));
        }
        Ok(self.exitcode)
    }

    /// Like [`Process::join`] but gives up after `timeout`; returns `None` (and leaves the child
    /// running) if it has not ended by then, as Python's `join(timeout)` does.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let pid = self.started_pid("join")?;
        if self.state == State::Started {
            self.record(imp::wait(pid, Some(timeout)));
        }
        Ok(self.exitcode)
    }

    /// True while the child runs. Like Python, this reaps a child that has ended.
    pub fn is_alive(&mut self) -> bool {
        match (self.state, self.pid) {
            (State::Started, Some(pid)) => {
                self.record(imp::wait(pid, Some(Duration::ZERO)));
                self.state == State::Started
            }
            _ => false,
        }
    }

    /// Sends SIGTERM (Python's `terminate`). It does not wait: `join` afterwards.
    pub fn terminate(&self) -> Result<()> {
        self.signal(imp::SIGTERM)
    }

    /// Sends SIGKILL (Python's `kill`). It does not wait: `join` afterwards.
    pub fn kill(&self) -> Result<()> {
        self.signal(imp::SIGKILL)
    }

    /// Sends any signal to the child (SIGSTOP, SIGCONT, ...), if it has not been reaped.
    pub fn signal(&self, signo: i32) -> Result<()> {
        let pid = self.started_pid("signal")?;
        if self.state == State::Started {
            imp::send(pid, signo)?;
        }
        Ok(())
    }

    fn started_pid(&self, what: &str) -> Result<i32> {
        match self.pid {
            Some(pid) => Ok(pid),
            None => bail!("{self}: can only {what} a started process"),
        }
    }

    fn record(&mut self, outcome: Option<Option<i32>>) {
        if let Some(code) = outcome {
            self.exitcode = code;
            self.state = State::Stopped;
        }
    }
}

/// The start method when a demo is not told otherwise: fork where the OS has it.
pub fn default_start_method() -> StartMethod {
    if cfg!(unix) { StartMethod::Fork } else { StartMethod::Spawn }
}

// ---------------------------------------------------------------------------------------------
// The registry of started children, shared by `Process`, the end of `main` and the signal
// watcher.

#[derive(Debug, Clone)]
struct ChildEntry {
    name: String,
    daemon: bool,
    /// A fork server's child: the read end of the pipe where the server writes its exit code
    /// (it is not this process's child, so `waitpid` cannot see it). `None` for a child of
    /// ours, and once the server has died (its children are then reparented to us).
    #[cfg(unix)]
    status: Option<Arc<std::os::fd::OwnedFd>>,
}

#[derive(Default)]
struct Registry {
    children: HashMap<i32, ChildEntry>,
    /// Exit codes of children that someone else (the watcher) reaped before their owner asked.
    reaped: HashMap<i32, Option<i32>>,
    shutting_down: bool,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static IS_DAEMONIC: AtomicBool = AtomicBool::new(false);
static ROLES: Mutex<Vec<&'static Role>> = Mutex::new(Vec::new());

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

fn registered_role(name: &str) -> Option<&'static Role> {
    ROLES.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().find(|r| r.name == name)
}

/// Names the calling process: the name `ps -o comm` shows (at most 15 bytes on Linux) and the
/// one its printed lines carry. For a child forked directly, without [`Process`].
pub fn name_this_process(name: &str) {
    imp::name_this_process(name);
    report::set_who(name);
}

/// Reaps every child that has already ended and that [`Process`] does not know (a child a
/// demo forked itself, an orphan adopted by this subreaper): called last at Ctrl-C, so that
/// none is left behind as a zombie.
pub fn reap_unknown_ended_children() {
    #[cfg(unix)]
    {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let any = nix::unistd::Pid::from_raw(-1);
        while let Ok(status) = waitpid(any, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// Pids and names of the children started through [`Process`] that have not been reaped.
pub fn live_children() -> Vec<(i32, String)> {
    with_registry(|r| {
        let mut v: Vec<_> = r.children.iter().map(|(p, c)| (*p, c.name.clone())).collect();
        v.sort();
        v
    })
}

/// Descriptors that a thread of this process owns and that a forked child, which has no such
/// thread, closes first thing (the signal watcher's signalfd): lock-free, so it is safe to read
/// after `fork`.
static CLOSE_AFTER_FORK: [AtomicI32; 4] = [const { AtomicI32::new(-1) }; 4];

/// Asks every child forked from now on to close `fd` before it runs its target (the signal
/// watcher registers its signalfd here). Returns false if the (small) table is full.
pub fn close_in_forked_children(fd: i32) -> bool {
    CLOSE_AFTER_FORK
        .iter()
        .any(|slot| slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Blocks until child `pid` has ended, *without reaping it*: its owner reaps it afterwards with
/// [`Process::join`], which then returns at once with the status. For a child of ours this is
/// `waitid` with `WNOWAIT`; for a fork server's child, a `poll` on its status pipe (the server
/// has written the code, which `join` then reads). Returns at once for a pid that is neither
/// (already reaped by the signal watcher, at Ctrl-C).
pub fn wait_until_ended(pid: i32) {
    imp::wait_until_ended(pid)
}

/// The argument that marks a spawned child: `<demo> __role=<role> <name>`.
const ROLE_ARG_PREFIX: &str = "__role=";
/// Environment variable carrying a spawned child's arguments (JSON) and flags.
const ENV_ARGS: &str = "CONCURRENCY_DEMOS_ARGS";
const ENV_DAEMONIC: &str = "CONCURRENCY_DEMOS_DAEMONIC";

/// The `if __name__ == '__main__':` guard. Called first in every demo's `main` with the roles
/// the demo's children can run: in a spawned child it runs the requested role and exits (never
/// returning); in the program a user started it returns at once and `main` goes on.
pub fn dispatch(roles: &[&'static Role]) {
    ROLES.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(roles);
    let mut args = std::env::args().skip(1);
    let Some(role_name) =
        args.next().and_then(|a| a.strip_prefix(ROLE_ARG_PREFIX).map(String::from))
    else {
        return;
    };
    let name = args.next().unwrap_or_else(|| role_name.clone());
    report::init_from_env(&std::env::var(report::ENV_REPORT).unwrap_or_default(), &name);
    #[cfg(unix)]
    if role_name == crate::forkserver::ROLE {
        imp::name_this_process(&name);
        crate::forkserver::serve(run_forkserver_child);
    }
    IS_DAEMONIC.store(std::env::var_os(ENV_DAEMONIC).is_some(), Ordering::Relaxed);
    imp::name_this_process(&name);
    let code = match registered_role(&role_name) {
        Some(role) => {
            let args = std::env::var(ENV_ARGS)
                .ok()
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or(Value::Null);
            child_exit_code(catch_run(|| (role.run)(args)))
        }
        None => {
            report::write_stderr(&format!(
                "{name}: this program has no role {role_name:?} (known: {})",
                roles.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
            ));
            2
        }
    };
    std::process::exit(code);
}

/// The body of a fork server's child: like a spawned child's, from the request's fields.
#[cfg(unix)]
fn run_forkserver_child(role: String, name: String, args: Value, daemon: bool, env: String) -> ! {
    report::init_from_env(&env, &name);
    IS_DAEMONIC.store(daemon, Ordering::Relaxed);
    imp::name_this_process(&name);
    let code = match registered_role(&role) {
        Some(role) => child_exit_code(catch_run(|| (role.run)(args))),
        None => {
            report::write_stderr(&format!("{name}: this program has no role {role:?}"));
            2
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Safety: _exit ends this copy of the fork server at once, running none of its destructors.
    unsafe { libc::_exit(code) }
}

/// Runs a child's target, turning a panic into an error so the child still exits cleanly.
fn catch_run(f: impl FnOnce() -> Result<()>) -> Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => bail!("the child panicked"),
    }
}

/// 0 on success; the chosen code for [`ExitWith`]; 1 for any other error (Python's exit code
/// for an uncaught exception), after printing it.
fn child_exit_code(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith(code)) => *code,
            None => {
                report::write_stderr(&format!("{}: error: {e:#}", report::who()));
                1
            }
        },
    }
}

/// The end of the main code, as Python does it at interpreter exit: daemonic children are
/// terminated, then every other child is waited for ("主进程会等待所有的子进程结束").
pub fn finish_main() {
    end_main_code();
    #[cfg(unix)]
    crate::forkserver::stop();
}

/// How one child ended at the end of the main code (see [`end_main_code`]).
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    /// As [`Process::exitcode`]: `-15` for a daemonic child ended by SIGTERM.
    pub exitcode: Option<i32>,
    /// When it was reaped, in milliseconds since the demo started ([`report::elapsed_ms`]).
    pub at_ms: u64,
}

/// What [`finish_main`] does, returning how each child ended, for a demo that shows it:
/// daemonic children are sent SIGTERM and reaped first (so none lingers as a zombie while the
/// others are waited for), then every other child is waited for, however long it takes.
pub fn end_main_code() -> Vec<Ended> {
    let mut children: Vec<(i32, ChildEntry)> =
        with_registry(|r| r.children.iter().map(|(p, c)| (*p, c.clone())).collect());
    children.sort_by_key(|(pid, child)| (!child.daemon, *pid));
    for (pid, child) in &children {
        if child.daemon {
            let _ = imp::send(*pid, imp::SIGTERM);
        }
    }
    children
        .into_iter()
        .map(|(pid, child)| {
            let exitcode = imp::wait(pid, None).flatten();
            Ended {
                pid,
                name: child.name,
                daemon: child.daemon,
                exitcode,
                at_ms: report::elapsed_ms(),
            }
        })
        .collect()
}

/// Stops every child: SIGTERM, up to `grace` to end, then SIGKILL; then reaps all of them, and
/// on Linux also any orphaned descendant reparented to this process. Used by the signal
/// watcher; afterwards no new child can start.
pub fn stop_all_children(grace: Duration) {
    let pids: Vec<i32> = with_registry(|r| {
        r.shutting_down = true;
        r.children.keys().copied().collect()
    });
    imp::stop_and_reap(&pids, grace);
}

#[cfg(unix)]
mod imp {
    use super::*;
    use nix::errno::Errno;
    use nix::sys::signal::{SigSet, Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
    use std::os::unix::process::CommandExt;

    pub const SIGTERM: i32 = libc::SIGTERM;
    pub const SIGKILL: i32 = libc::SIGKILL;

    pub fn send(pid: i32, signo: i32) -> Result<()> {
        let signal = Signal::try_from(signo).context("unknown signal")?;
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("kill({pid}, {signal})")),
        }
    }

    /// The registry, locked while a child is born: the signal watcher cannot miss a child being
    /// born, and after shutdown began no new child starts (this thread then waits for the
    /// watcher to end the process). Unflushed output is written first: a forked child would
    /// print it a second time (the fix that `fork-vs-spawn` shows).
    fn lock_for_a_birth() -> Births {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(Registry::default).shutting_down {
            drop(guard);
            loop {
                std::thread::park();
            }
        }
        guard
    }

    /// Records the newborn `pid` and unlocks the registry.
    fn record_birth(
        mut births: Births,
        pid: i32,
        p: &Process,
        status: Option<std::os::fd::OwnedFd>,
    ) -> i32 {
        let entry =
            ChildEntry { name: p.name.clone(), daemon: p.daemon, status: status.map(Arc::new) };
        births.get_or_insert_with(Registry::default).children.insert(pid, entry);
        pid
    }

    type Births = std::sync::MutexGuard<'static, Option<Registry>>;

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
            ForkResult::Parent { child } => Ok(record_birth(births, child.as_raw(), p, None)),
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

    /// In a forked child: the registry copied from the parent lists the parent's children,
    /// which are not this child's; empty it and unlock it.
    fn forget_the_parents_children(mut births: Births) {
        let registry = births.get_or_insert_with(Registry::default);
        registry.children.clear();
        registry.reaped.clear();
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
        name_this_process(name);
        report::set_who(name);
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
        Ok(record_birth(births, child.id() as i32, p, None))
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
        Ok(record_birth(births, pid, p, Some(status)))
    }

    /// Asks the kernel to SIGKILL this process when its parent dies, then checks the parent did
    /// not die before the request took effect (the man page's race).
    fn set_parent_death_signal(parent: Pid) {
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

    /// Sets the name `ps -o comm` and `top` show (at most 15 bytes on Linux).
    pub fn name_this_process(name: &str) {
        #[cfg(target_os = "linux")]
        {
            let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
            bytes.push(0);
            // Safety: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which
            // `bytes` is, and does not keep the pointer.
            unsafe {
                libc::prctl(libc::PR_SET_NAME, bytes.as_ptr());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = name;
    }

    /// Waits for `pid`: forever (`None`), not at all (`Some(ZERO)`), or up to a timeout.
    /// Returns `Some(exitcode)` once it is reaped (`Some(None)` if its status was lost because
    /// the kernel reaped it, SIGCHLD being ignored), `None` if it is still running.
    pub fn wait(pid: i32, timeout: Option<Duration>) -> Option<Option<i32>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // A fork server's child: its exit code comes through its status pipe.
        while let Some(pipe) =
            with_registry(|r| r.children.get(&pid).and_then(|c| c.status.clone()))
        {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !crate::forkserver::poll_status(&pipe, left) {
                return None;
            }
            // Read under the registry lock, so that of two waiters exactly one takes the code
            // and the other finds the child gone from the registry.
            let mut server_gone = false;
            let code = with_registry(|r| {
                if !r.children.contains_key(&pid) {
                    return None;
                }
                match crate::forkserver::read_status(&pipe) {
                    crate::forkserver::Status::Code(code) => {
                        r.children.remove(&pid);
                        Some(code)
                    }
                    crate::forkserver::Status::ServerGone => {
                        // Its children are reparented to us (a subreaper): wait as for ours.
                        if let Some(child) = r.children.get_mut(&pid) {
                            child.status = None;
                        }
                        server_gone = true;
                        None
                    }
                    crate::forkserver::Status::NotYet => None,
                }
            });
            if server_gone {
                crate::forkserver::server_died();
            }
            if let Some(code) = code {
                return Some(Some(code));
            }
        }
        let mut pause = Duration::from_micros(200);
        loop {
            let flags = if timeout.is_some() { Some(WaitPidFlag::WNOHANG) } else { None };
            match waitpid(Pid::from_raw(pid), flags) {
                Ok(WaitStatus::Exited(_, code)) => return Some(forget(pid, Some(code))),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    return Some(forget(pid, Some(-(signal as i32))));
                }
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => {} // stopped or continued: still alive
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // ECHILD: reaped elsewhere (the watcher, or the kernel with SIGCHLD ignored).
                    let code = with_registry(|r| {
                        r.children.remove(&pid);
                        r.reaped.remove(&pid).flatten()
                    });
                    return Some(code);
                }
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return None,
                Some(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                None => {}
            }
        }
    }

    fn forget(pid: i32, code: Option<i32>) -> Option<i32> {
        with_registry(|r| {
            r.children.remove(&pid);
        });
        code
    }

    pub fn wait_until_ended(pid: i32) {
        let pipe = with_registry(|r| r.children.get(&pid).and_then(|c| c.status.clone()));
        if let Some(pipe) = pipe {
            crate::forkserver::poll_status(&pipe, None);
            if crate::forkserver::status_waiting(&pipe) {
                return;
            }
            // End of file without a code: the server died, and the child is ours now (or gone).
        }
        loop {
            // Safety: waitid fills the zeroed siginfo_t we give it; WNOWAIT leaves the child a
            // zombie, so its pid cannot be reused before its owner reaps it.
            let rc = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || Errno::last() != Errno::EINTR {
                return;
            }
        }
    }

    /// Whether `pid` is a child of this process (ended or not), without reaping it.
    fn is_our_child(pid: i32) -> bool {
        // Safety: waitid fills the zeroed siginfo_t; WNOHANG | WNOWAIT neither blocks nor reaps.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0
        }
    }

    /// Reads, without blocking, the exit codes the fork server has sent for its children in
    /// the registry; a child whose server died is treated as ours from then on, and forgotten
    /// if it is not (it was not reparented to us).
    fn collect_server_statuses() {
        with_registry(|r| {
            let watched: Vec<(i32, Arc<std::os::fd::OwnedFd>)> = r
                .children
                .iter()
                .filter_map(|(pid, c)| c.status.clone().map(|s| (*pid, s)))
                .collect();
            for (pid, pipe) in watched {
                match crate::forkserver::read_status(&pipe) {
                    crate::forkserver::Status::Code(code) => {
                        r.children.remove(&pid);
                        r.reaped.insert(pid, Some(code));
                    }
                    crate::forkserver::Status::ServerGone => {
                        if is_our_child(pid) {
                            if let Some(child) = r.children.get_mut(&pid) {
                                child.status = None;
                            }
                        } else if kill(Pid::from_raw(pid), None).is_err() {
                            r.children.remove(&pid);
                            r.reaped.insert(pid, None);
                        }
                    }
                    crate::forkserver::Status::NotYet => {}
                }
            }
        });
    }

    pub fn stop_and_reap(pids: &[i32], grace: Duration) {
        stop_and_reap_children(pids, grace);
        // Last, once it has reported every child of its own: the fork server.
        crate::forkserver::stop();
    }

    fn stop_and_reap_children(pids: &[i32], grace: Duration) {
        let me = getpid().as_raw();
        // The fork server is not stopped with the others: it must live to report its children.
        let server = crate::forkserver::server_pid();
        let children_of_me = || {
            let mut v = crate::ps::children_of(me);
            v.retain(|pid| Some(*pid) != server);
            v
        };
        let mut targets: Vec<i32> = pids.to_vec();
        targets.extend(children_of_me());
        targets.sort_unstable();
        targets.dedup();
        for pid in &targets {
            let _ = send(*pid, SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            // Reap whatever has ended: our children and any orphan reparented to us.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(status) => {
                        if let Some(pid) = status.pid() {
                            let code = match status {
                                WaitStatus::Exited(_, c) => Some(c),
                                WaitStatus::Signaled(_, s, _) => Some(-(s as i32)),
                                _ => None,
                            };
                            with_registry(|r| {
                                r.children.remove(&pid.as_raw());
                                r.reaped.insert(pid.as_raw(), code);
                            });
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => return, // ECHILD: no child left at all
                }
            }
            collect_server_statuses();
            let left = children_of_me();
            if left.is_empty() && with_registry(|r| r.children.is_empty()) {
                return;
            }
            if Instant::now() >= deadline {
                for pid in left
                    .iter()
                    .copied()
                    .chain(with_registry(|r| r.children.keys().copied().collect::<Vec<_>>()))
                {
                    let _ = send(pid, SIGKILL);
                }
            } else {
                // New orphans may have been reparented to us since the first round.
                for pid in &left {
                    if !targets.contains(pid) {
                        let _ = send(*pid, SIGTERM);
                        targets.push(*pid);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;
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
    pub fn name_this_process(_name: &str) {}
    pub fn wait(_pid: i32, _timeout: Option<Duration>) -> Option<Option<i32>> {
        Some(None)
    }
    pub fn stop_and_reap(_pids: &[i32], _grace: Duration) {}
    pub fn wait_until_ended(_pid: i32) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_named_as_python_prints_them() {
        assert_eq!(exitcode_name(Some(0)), "0");
        assert_eq!(exitcode_name(Some(3)), "3");
        assert_eq!(exitcode_name(Some(-9)), "-SIGKILL");
        assert_eq!(exitcode_name(Some(-15)), "-SIGTERM");
        assert_eq!(exitcode_name(None), "None");
    }

    #[test]
    fn a_new_process_displays_as_initial_and_refuses_join() {
        fn noop(_: Value) -> Result<()> {
            Ok(())
        }
        static NOOP: Role = Role::new("noop", noop);
        let mut p = Process::new("worker-1", &NOOP, ());
        assert_eq!(p.to_string(), "<Process worker-1 initial>");
        assert!(!p.is_alive());
        assert!(p.join().is_err());
        p.set_daemon(true).unwrap();
        assert_eq!(p.to_string(), "<Process worker-1 initial daemon>");
    }
}
