//! daemon — two things called "daemon": Python's daemonic children (守护进程, `daemon=True`)
//! and a real Unix daemon (精灵进程), and why they have nothing in common but the name.
//!
//! **Part A, daemonic children, as the notes teach.** `p.daemon = True` (before `p.start()`)
//! means: when the parent's *main code* ends, terminate this child instead of waiting for it.
//! Seed 002's example: daemonic `Foo` (prints 123, sleeps 1 s, prints end123) and ordinary `Bar`
//! (456, sleeps 2 s, end456). `main---------` comes first, Foo is terminated before `end123`
//! (sometimes even before `123`), Bar is waited for and prints `end456`. A daemonic child may
//! not start children, and the flag cannot change after `start`: both are errors, as in Python.
//! Beyond the notes: the termination is code that runs in the parent at its end, so a parent
//! killed with SIGKILL never runs it and its daemonic child lives on, an orphan (孤儿进程);
//! Linux's `PR_SET_PDEATHSIG` asks the kernel itself to kill a child when its parent dies.
//!
//! **Part B, a real Unix daemon.** `daemon start` double-forks with `setsid` in between
//! (`common::daemonize::spawn_daemon`, TLPI's `becomeDaemon`): the daemon has no controlling
//! terminal, runs in a session of its own that it does not lead, its parent is not the launcher,
//! its working directory is `/`, its umask 027, its output goes to a log file. A pidfile held
//! under an exclusive `flock` makes a second `start` refuse. `status` reads `/proc`; `stop`
//! sends SIGTERM, which the daemon takes with `sigtimedwait` (no signal handler), removes its
//! pidfile and exits; `stop` waits for it with a pidfd, bounded.
//!
//! **What to watch for:** in `daemonic`, `end123` never appears and Foo's exit code is
//! `-SIGTERM`; in `orphan`, the daemonic child's PPID changes to this demo's pid (a child
//! subreaper) after its parent is killed; in `pdeathsig`, the child turns `Z` (`<defunct>`) the
//! moment its parent dies; for the Unix daemon, `TT` is `?`, `SID` differs from your shell's and
//! from the daemon's own pid, and `PPID` is 1 (or your session's subreaper).
//!
//! **Run it:**
//! ```text
//! make demo-daemon                          # the tour: part A, then start, status, stop
//! make demo-daemon ARGS='orphan --hold 20'  # pause while the orphan lives under the demo
//! cargo run -q -p daemon -- start           # then: daemon status, daemon stop
//! ps -o pid,ppid,pgid,sid,tty,stat,comm -p PID   # in a second terminal: the pids it prints
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//!   0.000s [  8191 daemon] started <Process foo pid=8194 started daemon>
//!   0.000s [  8191 daemon] started <Process bar pid=8195 started>
//!   0.000s [  8191 daemon] main---------
//!   0.000s [  8191 daemon] main's code has ended (运行完毕 is not 终止运行): terminate ...
//!   0.000s [  8194 foo] 123
//!   0.000s [  8195 bar] 456
//!   0.201s [  8195 bar] end456
//!   0.201s [  8191 daemon] foo (daemonic): exitcode -SIGTERM, gone from /proc; ...
//!   0.330s [  8191 daemon] the daemonic child 8201 is alive (state S): an orphan, now the
//!                          child of pid 8191 (this demo, a child subreaper; else init)
//!   0.351s [  8191 daemon] the daemonic child died with its parent: exitcode -SIGKILL
//!   0.365s [  8191 daemon] started the daemon: pid 7916, pidfile ~/.cache/.../daemon.pid
//!                              PID    PPID    PGID     SID  TTY  STAT  COMMAND
//!                             7885    7528    7528    7305  ?    R     daemon   <- launcher
//!                             7916       1    7915    7915  ?    S     daemond  <- the daemon
//!   0.666s [  8191 daemon] pid 7916 exited after 740µs; its pidfile is removed
//! ```
//!
//! Platform notes: Linux (`PR_SET_PDEATHSIG`, `PR_SET_CHILD_SUBREAPER`, pidfd, `/proc`). Other
//! Unix systems can run the daemonic-children part and the double fork; part B's `stop` and the
//! daemon's signal wait say plainly where they need Linux.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use common::cli::CommonArgs;
use common::daemonize::{self, Claim, DaemonSetup, PidFile, Probe, ProcessHandle, Ready};
use common::process::{self, Process, Role, StartMethod, exitcode_name};
use common::{ps, report, signals};
use serde_json::{Value, json};

/// The directory under `$XDG_RUNTIME_DIR` (or `~/.cache`) for the daemon's pidfile and log.
const APP_DIR: &str = "concurrency-demos";
const PIDFILE_NAME: &str = "daemon.pid";
const LOG_NAME: &str = "daemon.log";
/// The daemon's name in `ps -o comm` and in its log lines.
const DAEMON_NAME: &str = "daemond";
/// How often the daemon writes a heartbeat line to its log (`start --heartbeat`).
const DEFAULT_HEARTBEAT_SECS: f64 = 2.0;
/// How long `stop` waits for the daemon to exit after SIGTERM (`stop --timeout`).
const DEFAULT_STOP_TIMEOUT_SECS: f64 = 10.0;
/// The heartbeat of the tour's daemon, which lives a fraction of a second.
const TOUR_HEARTBEAT: Duration = Duration::from_millis(100);
/// How long `start` waits for the daemon's "ready" (it takes milliseconds).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the demo waits for the kernel to show a grandchild's birth or death in `/proc`.
const PROC_TIMEOUT: Duration = Duration::from_secs(10);
/// Signal numbers, the same on every Unix (kill -1, -9, -15), named here without `libc`.
const SIGHUP: i32 = 1;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

#[derive(Parser, Debug)]
#[command(
    name = "daemon",
    about = "Python's daemonic children (守护进程: terminated when main's code ends) beside\n\
             a real Unix daemon (精灵进程: double fork, setsid, pidfile under flock).",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Directory of the Unix daemon's pidfile and log [default: $XDG_RUNTIME_DIR/concurrency-demos,
    /// else ~/.cache/concurrency-demos, private to you]
    #[arg(long, global = true, value_name = "PATH")]
    dir: Option<PathBuf>,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

impl common::demo::DemoCli for Cli {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Part A: seed 002's Foo (daemonic) and Bar: Foo is terminated when main's code ends
    Daemonic,
    /// Part A: daemon must be set before start; a daemonic child may not start children
    Rules,
    /// Part A: the parent is killed with SIGKILL; its daemonic child lives on, an orphan
    Orphan,
    /// Part A: the same with PR_SET_PDEATHSIG: the kernel ends the child with its parent
    Pdeathsig,
    /// Part B: start a real Unix daemon (double fork, setsid, pidfile under flock)
    Start {
        /// Seconds between the heartbeat lines the daemon writes to its log
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HEARTBEAT_SECS,
              value_parser = parse_secs)]
        heartbeat: f64,
    },
    /// Part B: is the daemon running? Its pid, state, uptime, session and terminal
    Status,
    /// Part B: send the daemon SIGTERM and wait until it has exited
    Stop {
        /// Seconds to wait for the daemon to exit after SIGTERM
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STOP_TIMEOUT_SECS,
              value_parser = parse_secs)]
        timeout: f64,
    },
}

const AFTER_HELP: &str = "\
With no subcommand: the tour of part A, then start, status and stop of a daemon in a fresh
directory (removed afterwards). Exit codes: 0 ran (`status` too, running or not: see its
output), 1 failed (a second `start` is refused with 1), 2 bad usage, 130 interrupted. A Ctrl-C
to `start` stops the launcher, never the daemon: that is what a daemon is for.

Differences from Python:
  - Python's daemon=True is not a Unix daemon. Python's standard library has no daemonize call
    (PEP 3143's python-daemon is a separate package); part B is what such a package does.
  - Python terminates daemonic children in an exit hook of the parent (multiprocessing's
    atexit function), as this demo's runner does after main returns. A parent killed with
    SIGKILL runs no hook: the children live on. Here every child asks for PR_SET_PDEATHSIG by
    default (Linux) so it dies with its parent; `orphan` turns that off to show Python's case.
  - Python raises AssertionError for both rule breaks; here they are errors with the same
    messages, and the daemonic child that breaks one exits 1, as an uncaught exception does.
  - A daemonic child's exitcode is -15 (-SIGTERM) in both.";

fn parse_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.01..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds from 0.01 to 3600")),
    }
}

static FOO: Role = Role::new("foo", foo);
static BAR: Role = Role::new("bar", bar);
static SLEEPER: Role = Role::new("sleeper", sleeper);
static NESTER: Role = Role::new("nester", nester);
static PARENT: Role = Role::new("parent", parent);
static LINGERER: Role = Role::new("lingerer", lingerer);

fn main() -> ExitCode {
    common::demo::main(&[&FOO, &BAR, &SLEEPER, &NESTER, &PARENT, &LINGERER], run)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        None => tour(&cli),
        Some(Cmd::Daemonic) => daemonic(&cli),
        Some(Cmd::Rules) => rules(&cli),
        Some(Cmd::Orphan) => orphan(&cli),
        Some(Cmd::Pdeathsig) => pdeathsig(&cli),
        Some(Cmd::Start { heartbeat }) => {
            let paths = Paths::new(daemon_dir(&cli)?);
            start(&cli, &paths, Duration::from_secs_f64(*heartbeat), true).map(drop)
        }
        Some(Cmd::Status) => status(&Paths::new(daemon_dir(&cli)?)),
        Some(Cmd::Stop { timeout }) => {
            stop(&Paths::new(daemon_dir(&cli)?), Duration::from_secs_f64(*timeout))
        }
    }
}

fn tour(cli: &Cli) -> Result<()> {
    daemonic(cli)?;
    rules(cli)?;
    orphan(cli)?;
    pdeathsig(cli)?;
    // Part B in a directory of its own, so that the tour never meets a daemon you started.
    let dir = daemon_dir(cli)?.join(format!("tour-{}", std::process::id()));
    let paths = Paths::new(daemonize::prepare_dir(&dir)?);
    // No pause here for --hold: a Ctrl-C during it would leave the tour's daemon running.
    let result = start(cli, &paths, TOUR_HEARTBEAT, false).and_then(|_| {
        // Not a synchronization: a moment for the daemon to write a heartbeat or two.
        std::thread::sleep(TOUR_HEARTBEAT * 3);
        status(&paths)?;
        stop(&paths, Duration::from_secs_f64(DEFAULT_STOP_TIMEOUT_SECS))
    });
    if result.is_err() && paths.pidfile.exists() {
        let _ = stop(&paths, Duration::from_secs_f64(DEFAULT_STOP_TIMEOUT_SECS));
    }
    if result.is_ok() {
        show_log(&paths);
    }
    let _ = std::fs::remove_dir_all(&paths.dir);
    result
}

// ---------------------------------------------------------------------------------------------
// Part A: daemonic children (Python's meaning).

/// Python's `print`, as an event: `{"event":"print","data":{"text":"123"}}`.
fn print(text: &str) {
    report::event("print", json!({ "text": text }), text);
}

fn seconds(args: &Value) -> Duration {
    Duration::from_secs_f64(args["seconds"].as_f64().unwrap_or(0.0))
}

fn method_arg(cli: &Cli) -> String {
    cli.common.start_method.to_string()
}

fn method_of(args: &Value) -> StartMethod {
    if args["method"] == "spawn" { StartMethod::Spawn } else { StartMethod::Fork }
}

/// Seed 002's `Foo`: print(123); time.sleep(1); print('end123').
fn foo(args: Value) -> Result<()> {
    print("123");
    std::thread::sleep(seconds(&args));
    print("end123");
    Ok(())
}

/// Seed 002's `Bar`: print(456); time.sleep(2); print('end456').
fn bar(args: Value) -> Result<()> {
    print("456");
    std::thread::sleep(seconds(&args));
    print("end456");
    Ok(())
}

fn sleeper(args: Value) -> Result<()> {
    std::thread::sleep(seconds(&args));
    Ok(())
}

/// Tries to start a child of its own: refused in a daemonic child, allowed in any other.
fn nester(args: Value) -> Result<()> {
    let mut grandchild = Process::new("grandchild", &SLEEPER, json!({ "seconds": 0.0 }))
        .start_method(method_of(&args));
    match grandchild.start() {
        Ok(()) => {
            report::event(
                "allowed",
                json!({ "grandchild": grandchild.pid() }),
                format!("a non-daemonic child may start children: {grandchild}"),
            );
            grandchild.join()?;
            Ok(())
        }
        Err(e) => {
            report::event(
                "refused",
                json!({ "call": "start() in a daemonic child", "error": format!("{e:#}") }),
                format!("p.start() in a daemonic child -> error: {e:#}"),
            );
            Err(e)
        }
    }
}

/// Starts a daemonic child, then waits to be killed: the end of its main code, which would
/// terminate that child, never comes.
fn parent(args: Value) -> Result<()> {
    let outlive = args["outlive"].as_bool().unwrap_or(false);
    let mut child =
        Process::new("daemonic-child", &LINGERER, json!({})).start_method(method_of(&args));
    if outlive {
        // Python's behaviour: no parent-death signal, the child may outlive its parent.
        child = child.outlive_parent();
    }
    child.set_daemon(true)?;
    child.start()?;
    let how =
        if outlive { "no PR_SET_PDEATHSIG, as in Python" } else { "PR_SET_PDEATHSIG=SIGKILL" };
    report::event(
        "started",
        json!({ "name": child.name(), "pid": child.pid(), "daemon": true, "pdeathsig": !outlive }),
        format!("started {child} ({how}); now waiting to be killed"),
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A child that does nothing until a signal ends it.
fn lingerer(_: Value) -> Result<()> {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn started(p: &Process) {
    report::event(
        "started",
        json!({ "name": p.name(), "pid": p.pid(), "daemon": p.daemon() }),
        format!("started {p}"),
    );
}

/// Seed 002, example 2 (示例二), and what happens at the end of main's code.
fn daemonic(cli: &Cli) -> Result<()> {
    report::section("Part A1: daemonic children (守护进程): terminated when main's code ends");
    report::say(
        "p1 = Process(target=Foo); p1.daemon = True; p1.start()\n\
         p2 = Process(target=Bar); p2.start(); print('main---------')   # seed 002, 示例二",
    );
    let method = cli.common.start_method;
    let mut p1 =
        Process::new("foo", &FOO, json!({ "seconds": cli.common.notes_sleep(1.0).as_secs_f64() }))
            .start_method(method);
    p1.set_daemon(true)?; // p1.daemon = True: before start, or it is an error (see `rules`)
    p1.start()?;
    let mut p2 =
        Process::new("bar", &BAR, json!({ "seconds": cli.common.notes_sleep(2.0).as_secs_f64() }))
            .start_method(method);
    p2.start()?;
    started(&p1);
    started(&p2);
    print("main---------");

    // ---- The main code ends here. What follows is what Python runs at the parent's exit
    // (multiprocessing's atexit hook), and what this demo's runner runs after `run` returns:
    // SIGTERM to every daemonic child, then a join of every other child, however long.
    report::event(
        "main_code_ended",
        json!({ "pids": [p1.pid(), p2.pid()] }),
        "main's code has ended (运行完毕 is not 终止运行): terminate the daemonic children, \
         then wait for the others",
    );
    let me = std::process::id() as i32;
    let ended = process::end_main_code();
    for e in &ended {
        let in_proc = ps::stat(e.pid).is_some();
        let what = match (e.daemon, e.exitcode) {
            (true, Some(-15)) => "terminated by SIGTERM when main's code ended: no end123",
            (true, _) => "had already finished: the race went the other way (try --speed 1)",
            (false, _) => "waited for until it finished",
        };
        report::event(
            "ended",
            json!({ "name": e.name, "pid": e.pid, "daemon": e.daemon, "exitcode": e.exitcode,
                    "exitcode_name": exitcode_name(e.exitcode), "at_ms": e.at_ms,
                    "in_proc": in_proc }),
            format!(
                "{} ({}): exitcode {}, {}; {what}",
                e.name,
                if e.daemon { "daemonic" } else { "not daemonic" },
                exitcode_name(e.exitcode),
                if in_proc { "still in /proc" } else { "gone from /proc" }
            ),
        );
        if in_proc {
            bail!("{} (pid {}) is still in /proc after the end of main's code", e.name, e.pid);
        }
    }
    cli.common.hold("main's code has ended; the daemonic child is gone", &[me]);
    Ok(())
}

/// The two rules, broken on purpose.
fn rules(cli: &Cli) -> Result<()> {
    report::section("Part A2: the rules: set daemon before start; a daemonic child has none");
    let method = cli.common.start_method;
    let mut p = Process::new(
        "sleeper",
        &SLEEPER,
        json!({ "seconds": cli.common.notes_sleep(1.0).as_secs_f64() }),
    )
    .start_method(method);
    p.start()?;
    match p.set_daemon(true) {
        Ok(()) => bail!("p.daemon = True after p.start() was accepted: the rule is broken"),
        Err(e) => report::event(
            "refused",
            json!({ "call": "set_daemon(true) after start()", "error": format!("{e:#}") }),
            format!("p.daemon = True after p.start() -> error: {e:#}"),
        ),
    }
    p.join()?;

    let mut daemonic = Process::new("daemonic", &NESTER, json!({ "method": method_arg(cli) }))
        .start_method(method);
    daemonic.set_daemon(true)?;
    daemonic.start()?;
    let code = daemonic.join()?;
    report::event(
        "joined",
        json!({ "name": "daemonic", "daemon": true, "exitcode": code }),
        format!("{daemonic}: its start() failed, so it ended like an uncaught AssertionError"),
    );
    let mut normal =
        Process::new("normal", &NESTER, json!({ "method": method_arg(cli) })).start_method(method);
    normal.start()?;
    let normal_code = normal.join()?;
    report::event(
        "joined",
        json!({ "name": "normal", "daemon": false, "exitcode": normal_code }),
        format!("{normal}: started and joined its own child"),
    );
    if code != Some(1) || normal_code != Some(0) {
        bail!("expected exit codes 1 (daemonic) and 0 (normal), got {code:?} and {normal_code:?}");
    }
    Ok(())
}

/// A parent killed with SIGKILL leaves its daemonic child behind (Python's behaviour).
fn orphan(cli: &Cli) -> Result<()> {
    report::section("Part A3: the parent is SIGKILLed: its daemonic child is orphaned (孤儿进程)");
    report::say(
        "The parent terminates its daemonic children in code that runs at its end. SIGKILL \
         ends a process without running any of its code, so the child lives on. In Python it \
         goes to init (PID 1) and runs until someone kills it; here the demo inherits it.",
    );
    let me = std::process::id() as i32;
    let (mut parent, child) = parent_with_daemonic_child(cli, true)?;
    let mut orphan = Adopted::new(child);
    ps::show_tree("before: the demo, the parent and its daemonic child");
    parent.kill()?;
    let code = parent.join()?;
    report::event(
        "parent_killed",
        json!({ "parent": parent.pid(), "child": child, "exitcode": code }),
        format!("SIGKILL -> {parent}: no code of its own ran at its end"),
    );
    let info = ps::stat(child).filter(|i| i.state != 'Z');
    report::event(
        "orphaned",
        json!({ "child": child, "alive": info.is_some(), "ppid": info.as_ref().map(|i| i.ppid),
                "state": info.as_ref().map(|i| i.state.to_string()) }),
        match &info {
            Some(i) => format!(
                "the daemonic child {child} is alive (state {}): an orphan, now the child of \
                 pid {} (this demo, a child subreaper; else init)",
                i.state, i.ppid
            ),
            None => format!("the daemonic child {child} is gone: it did not outlive its parent"),
        },
    );
    ps::show_tree("after: the orphan was reparented to the demo");
    match info {
        Some(i) if i.ppid == me => {}
        _ => bail!("expected the orphan {child} alive and reparented to {me}"),
    }
    cli.common.hold("the daemonic child outlived its parent", &[me, child]);
    let code = orphan.stop()?;
    report::event(
        "orphan_stopped",
        json!({ "child": child, "exitcode": code }),
        format!(
            "no one else would end it: the demo sent SIGTERM and reaped it (exitcode {})",
            exitcode_name(code)
        ),
    );
    Ok(())
}

/// With `PR_SET_PDEATHSIG` the kernel kills the child when its parent dies, even by SIGKILL.
fn pdeathsig(cli: &Cli) -> Result<()> {
    report::section("Part A4: PR_SET_PDEATHSIG: the kernel ends the child with its parent");
    report::say(
        "prctl(PR_SET_PDEATHSIG, SIGKILL) in the child: when its parent dies, however it dies, \
         the kernel sends it SIGKILL. common::process does this for every child by default.",
    );
    let me = std::process::id() as i32;
    let (mut parent, child) = parent_with_daemonic_child(cli, false)?;
    let mut adopted = Adopted::new(child);
    parent.kill()?;
    let code = parent.join()?;
    report::event(
        "parent_killed",
        json!({ "parent": parent.pid(), "child": child, "exitcode": code }),
        format!("SIGKILL -> {parent}"),
    );
    // The kernel shows the effect: the child dies, a zombie of ours (we inherited it) until
    // we reap it.
    wait_for_proc(&format!("pid {child} to be a zombie"), || ps::state_of(child) == Some('Z'))?;
    ps::show_tree("the child died with its parent: a zombie (僵尸进程) under the demo");
    cli.common.hold("the child died with its parent; reaping it is up to the demo", &[me, child]);
    let code = adopted.reap()?;
    report::event(
        "died_with_parent",
        json!({ "child": child, "exitcode": code, "exitcode_name": exitcode_name(code) }),
        format!("the daemonic child died with its parent: exitcode {}", exitcode_name(code)),
    );
    if code != Some(-SIGKILL) {
        bail!("expected the child to die of SIGKILL, its exit code was {}", exitcode_name(code));
    }
    Ok(())
}

/// Starts `parent`, which starts a daemonic child; returns both once the child runs its role
/// (its name shows in `/proc`, set after the parent-death signal was requested).
fn parent_with_daemonic_child(cli: &Cli, outlive: bool) -> Result<(Process, i32)> {
    let mut parent =
        Process::new("parent", &PARENT, json!({ "outlive": outlive, "method": method_arg(cli) }))
            .start_method(cli.common.start_method);
    parent.start()?;
    let parent_pid = parent.pid().unwrap_or(0);
    let mut child = None;
    let found = wait_for_proc("the parent's daemonic child", || {
        child = ps::children_of(parent_pid)
            .into_iter()
            .find(|pid| ps::stat(*pid).is_some_and(|i| i.comm == "daemonic-child"));
        child.is_some()
    });
    match (found, child) {
        (Ok(()), Some(child)) => Ok((parent, child)),
        (result, _) => {
            let _ = parent.kill();
            let _ = parent.join();
            result.and_then(|()| bail!("the parent's daemonic child vanished"))
        }
    }
}

/// Polls `/proc` until `pred` holds: for facts only the kernel can announce.
fn wait_for_proc(what: &str, mut pred: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + PROC_TIMEOUT;
    while !pred() {
        if Instant::now() >= deadline {
            bail!("waited {PROC_TIMEOUT:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// A grandchild that the kernel reparented to this demo (a child subreaper) when its parent
/// died. It is our child now, but not a `Process` of ours: the demo stops and reaps it itself,
/// and on any early return this guard kills and reaps it, so nothing is left behind.
struct Adopted {
    pid: i32,
    reaped: bool,
}

impl Adopted {
    fn new(pid: i32) -> Adopted {
        Adopted { pid, reaped: false }
    }

    /// SIGTERM, then reap: returns the exit code (`-15`).
    fn stop(&mut self) -> Result<Option<i32>> {
        signal(self.pid, SIGTERM)?;
        self.reap()
    }

    /// Waits for it to end (bounded) and reaps it with `waitpid`.
    fn reap(&mut self) -> Result<Option<i32>> {
        let code = reap(self.pid, PROC_TIMEOUT)?;
        self.reaped = true;
        Ok(code)
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = signal(self.pid, SIGKILL);
            let _ = reap(self.pid, PROC_TIMEOUT);
        }
    }
}

#[cfg(unix)]
fn signal(pid: i32, signo: i32) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    let signal = Signal::try_from(signo)?;
    kill(nix::unistd::Pid::from_raw(pid), signal).with_context(|| format!("kill({pid}, {signal})"))
}

/// `waitpid(pid, WNOHANG)` until it ends or `timeout` passes; `-signo` if a signal killed it.
#[cfg(unix)]
fn reap(pid: i32, timeout: Duration) -> Result<Option<i32>> {
    use nix::errno::Errno;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Some(-(signal as i32))),
            Ok(_) | Err(Errno::EINTR) => {}
            // Reaped by someone else (the runner's signal watcher): gone all the same.
            Err(Errno::ECHILD) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("waitpid({pid})")),
        }
        if Instant::now() >= deadline {
            bail!("pid {pid} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(not(unix))]
fn signal(_pid: i32, _signo: i32) -> Result<()> {
    bail!("this part needs a Unix system")
}

#[cfg(not(unix))]
fn reap(_pid: i32, _timeout: Duration) -> Result<Option<i32>> {
    bail!("this part needs a Unix system")
}

// ---------------------------------------------------------------------------------------------
// Part B: a real Unix daemon.

struct Paths {
    dir: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn new(dir: PathBuf) -> Paths {
        Paths { pidfile: dir.join(PIDFILE_NAME), log: dir.join(LOG_NAME), dir }
    }
}

/// `--dir`, or the per-user runtime directory.
fn daemon_dir(cli: &Cli) -> Result<PathBuf> {
    match &cli.dir {
        Some(dir) => daemonize::prepare_dir(dir),
        None => daemonize::runtime_dir(APP_DIR),
    }
}

/// `daemon start`: claims the pidfile, double-forks the daemon, waits for its "ready", and
/// checks in `/proc` that it is detached. Returns the daemon's pid.
fn start(cli: &Cli, paths: &Paths, heartbeat: Duration, hold: bool) -> Result<i32> {
    report::section("Part B: a real Unix daemon (精灵进程): start");
    report::say(
        "fork -> setsid (a new session, no terminal) -> fork again, the middle process exits \
         (the daemon is not the session leader) -> umask 027, chdir /, output to a log file",
    );
    let me = std::process::id() as i32;
    let launcher = ps::stat(me).context("reading /proc/self/stat")?;
    // The runner made this process a child subreaper, so that orphans come back to it. The
    // daemon must not: when its middle parent exits it would become our child again, tied
    // to the launcher. Turned off before the double fork.
    signals::set_child_subreaper(false);
    let pidfile = match PidFile::claim(&paths.pidfile)? {
        Claim::HeldBy(pid) => {
            let who = pid.map_or("a daemon that is starting".to_string(), |p| format!("pid {p}"));
            report::event(
                "already_running",
                json!({ "pid": pid, "pidfile": paths.pidfile }),
                format!("{} is locked by {who}", paths.pidfile.display()),
            );
            bail!(
                "a daemon is already running ({who}; {} is locked): run `daemon stop` first",
                paths.pidfile.display()
            );
        }
        Claim::Claimed { pidfile, stale } => {
            if let Some(pid) = stale {
                report::say(format!(
                    "{} names pid {pid}, but nobody holds its lock: that daemon died without \
                     cleaning up (SIGKILL?). Taking the pidfile over.",
                    paths.pidfile.display()
                ));
            }
            pidfile
        }
    };
    let setup = DaemonSetup { name: DAEMON_NAME, log: &paths.log, ready_timeout: READY_TIMEOUT };
    // fork, setsid, fork: see common::daemonize. Returns here, in the launcher, after "ready".
    let pid = daemonize::spawn_daemon(&setup, pidfile, move |pidfile, ready| {
        daemon_main(pidfile, ready, heartbeat)
    })?;
    let daemon = ps::stat(pid).context("the daemon vanished right after it reported ready")?;
    let mut table = String::from("    PID    PPID    PGID     SID  TTY  STAT  COMMAND");
    for (p, role) in [(&launcher, "launcher (this process)"), (&daemon, "the daemon")] {
        let tty = if p.tty_nr == 0 { "?".to_string() } else { p.tty_nr.to_string() };
        table.push_str(&format!(
            "\n{:>7} {:>7} {:>7} {:>7}  {tty:<4} {:<5} {}   <- {role}",
            p.pid, p.ppid, p.pgid, p.sid, p.state, p.comm
        ));
    }
    report::event(
        "daemon_started",
        json!({ "pid": pid, "ppid": daemon.ppid, "pgid": daemon.pgid, "sid": daemon.sid,
                "tty_nr": daemon.tty_nr, "launcher": me, "launcher_sid": launcher.sid,
                "pidfile": paths.pidfile, "log": paths.log }),
        format!(
            "started the daemon: pid {pid}, pidfile {}, log {}\n{table}",
            paths.pidfile.display(),
            paths.log.display()
        ),
    );
    // The demo checks its own claims.
    let mut broken = Vec::new();
    if daemon.sid == launcher.sid {
        broken.push("it is in the launcher's session");
    }
    if daemon.sid == daemon.pid {
        broken.push("it leads its session");
    }
    if daemon.tty_nr != 0 {
        broken.push("it has a controlling terminal");
    }
    if daemon.ppid == me {
        broken.push("its parent is the launcher");
    }
    if !broken.is_empty() {
        let _ = stop(paths, Duration::from_secs_f64(DEFAULT_STOP_TIMEOUT_SECS));
        bail!("the daemon is not detached: {}", broken.join(", "));
    }
    report::say(format!(
        "checked in /proc: session {} is not the launcher's ({}), the daemon does not lead it \
         (sid != pid), no controlling terminal (tty ?), parent {} is not the launcher",
        daemon.sid, launcher.sid, daemon.ppid
    ));
    if hold {
        cli.common.hold("the daemon runs detached; its launcher is still here", &[me, pid]);
    }
    Ok(pid)
}

/// The daemon itself, after `common::daemonize` detached it: cwd `/`, umask 027, output to
/// the log. It is not under the demo runner's signal watcher any more (that thread stayed in
/// the launcher), so it handles its own signals: blocked, and taken with `sigtimedwait`.
fn daemon_main(mut pidfile: PidFile, ready: &mut Ready, heartbeat: Duration) -> Result<()> {
    // Blocked before "ready": a SIGTERM sent the moment `start` returns waits, pending.
    daemonize::block_stop_signals()?;
    let me = std::process::id() as i32;
    pidfile.write_pid(me)?;
    let info = ps::stat(me).context("reading /proc/self/stat")?;
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    report::event(
        "daemon_ready",
        json!({ "pid": me, "sid": info.sid, "pgid": info.pgid, "tty_nr": info.tty_nr,
                "cwd": cwd, "umask": format!("{:03o}", daemonize::DAEMON_UMASK) }),
        format!(
            "ready: session {}, no terminal, cwd {cwd}, umask {:03o}, pidfile {}",
            info.sid,
            daemonize::DAEMON_UMASK,
            pidfile.path().display()
        ),
    );
    ready.notify()?;
    let mut beats = 0u64;
    loop {
        match daemonize::wait_for_stop_signal(heartbeat)? {
            None => {
                beats += 1;
                let ppid = parent_pid();
                report::event(
                    "heartbeat",
                    json!({ "n": beats, "ppid": ppid }),
                    format!("heartbeat {beats} (parent {ppid})"),
                );
            }
            Some(SIGHUP) => report::event(
                "sighup",
                json!({}),
                "SIGHUP: a daemon has no terminal to lose; by convention it means \"reload\"",
            ),
            Some(signo) => {
                let name = process::signal_name(signo).unwrap_or("signal");
                report::event(
                    "stopping",
                    json!({ "signal": name }),
                    format!("{name}: removing {} and exiting", pidfile.path().display()),
                );
                // Removed while the lock is still held; exiting releases the lock.
                pidfile.remove()?;
                report::event("stopped", json!({}), "stopped cleanly");
                return Ok(());
            }
        }
    }
}

fn parent_pid() -> i32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id() as i32
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// `daemon status`: what the pidfile and `/proc` say.
fn status(paths: &Paths) -> Result<()> {
    report::section("Part B: status");
    let file = paths.pidfile.display();
    match daemonize::probe(&paths.pidfile)? {
        Probe::Absent => report::event(
            "status",
            json!({ "running": false, "pidfile": paths.pidfile }),
            format!("not running: there is no {file}"),
        ),
        Probe::Stale(pid) => report::event(
            "status",
            json!({ "running": false, "stale_pid": pid, "pidfile": paths.pidfile }),
            format!(
                "not running: {file} names pid {pid:?} but nobody holds its lock (the daemon was \
                 killed without cleaning up); `daemon start` takes it over"
            ),
        ),
        Probe::Running(None) => report::event(
            "status",
            json!({ "running": true, "pid": null, "pidfile": paths.pidfile }),
            format!("starting: {file} is locked but holds no pid yet"),
        ),
        Probe::Running(Some(pid)) => {
            let info = ps::stat(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
            let uptime = ps::started_ago(pid).unwrap_or_default().as_secs_f64();
            let last = std::fs::read_to_string(&paths.log)
                .ok()
                .and_then(|t| t.lines().last().map(String::from))
                .unwrap_or_default();
            let tty =
                if info.tty_nr == 0 { "none (?)".to_string() } else { info.tty_nr.to_string() };
            report::event(
                "status",
                json!({ "running": true, "pid": pid, "state": info.state.to_string(),
                        "ppid": info.ppid, "sid": info.sid, "tty_nr": info.tty_nr,
                        "uptime_s": uptime, "pidfile": paths.pidfile, "log": paths.log,
                        "last_log_line": last }),
                format!(
                    "running: pid {pid}, state {} ({}), up {uptime:.1}s, parent {}, session {}, \
                     terminal {tty}\n  last log line: {last}",
                    info.state,
                    ps::state_meaning(info.state),
                    info.ppid,
                    info.sid
                ),
            );
        }
    }
    Ok(())
}

/// `daemon stop`: SIGTERM through a pidfd, then wait (bounded) for the daemon to exit.
fn stop(paths: &Paths, timeout: Duration) -> Result<()> {
    report::section("Part B: stop");
    let pid = match daemonize::probe(&paths.pidfile)? {
        Probe::Absent => {
            report::event("stop", json!({ "was_running": false }), "not running: nothing to stop");
            return Ok(());
        }
        Probe::Stale(pid) => {
            report::event(
                "stop",
                json!({ "was_running": false, "stale_pid": pid }),
                format!("not running ({} is stale): nothing to stop", paths.pidfile.display()),
            );
            return Ok(());
        }
        Probe::Running(None) => bail!("the daemon is still starting: run `daemon stop` again"),
        Probe::Running(Some(pid)) => pid,
    };
    // A pidfd names this very process; checking the pidfile again once it is open rules out a
    // pid that was reused in between.
    let handle = ProcessHandle::open(pid)?;
    if daemonize::probe(&paths.pidfile)? != Probe::Running(Some(pid)) {
        bail!("the daemon changed while `stop` looked at it: run `daemon stop` again");
    }
    let t0 = Instant::now();
    handle.send_signal(SIGTERM)?;
    report::event(
        "sent",
        json!({ "pid": pid, "signal": "SIGTERM" }),
        format!("SIGTERM -> pid {pid}; waiting up to {timeout:?} for it to exit"),
    );
    if !handle.wait_exit(timeout)? {
        bail!(
            "pid {pid} did not exit within {timeout:?} after SIGTERM; `kill -KILL {pid}` ends \
             it (its pidfile then stays behind, stale)"
        );
    }
    let pidfile_left = paths.pidfile.exists();
    report::event(
        "daemon_stopped",
        json!({ "pid": pid, "waited_ms": t0.elapsed().as_millis() as u64,
                "pidfile_removed": !pidfile_left }),
        format!(
            "pid {pid} exited after {:.0?}; its pidfile is {} (its parent, not us, reaps it)",
            t0.elapsed(),
            if pidfile_left { "still there" } else { "removed" }
        ),
    );
    if pidfile_left {
        bail!("the daemon exited but left {} behind", paths.pidfile.display());
    }
    Ok(())
}

/// The tour prints what the daemon wrote to its log.
fn show_log(paths: &Paths) {
    let text = std::fs::read_to_string(&paths.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    report::event(
        "log",
        json!({ "path": paths.log, "lines": lines.len() }),
        format!("the daemon's log, {}:", paths.log.display()),
    );
    report::plain(lines.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"));
}
