//! daemon — two things called "daemon": Python's daemonic children (守护进程, `daemon=True`)
//! and a real Unix daemon (精灵进程), and why they have nothing in common but the name.
//!
//! **Part A, daemonic children, as the notes teach.** `p.daemon = True` (before `p.start()`)
//! means: when the parent exits (after its main code and its non-daemon threads), terminate
//! this child instead of waiting for it.
//! Seed 002's example: daemonic `Foo` (prints 123, sleeps 1 s, prints end123) and ordinary `Bar`
//! (456, sleeps 2 s, end456). `main---------` comes first, Foo is terminated before `end123`
//! (sometimes even before `123`), Bar is waited for and prints `end456`. A daemonic child may
//! not start a `Process` of its own (`os.fork` still works in Python), and the flag cannot
//! change after `start`: both are errors, as in Python.
//! Beyond the notes: the termination is code that runs in the parent at its end, so a parent
//! killed with SIGKILL never runs it and its daemonic child lives on, an orphan (孤儿进程);
//! Linux's `PR_SET_PDEATHSIG` asks the kernel itself to kill a child when the parent thread that
//! created it exits.
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
//! make demo-daemon ARGS='orphan --hold 20'  # pause twice: under its parent, then adopted
//! cargo run -q -p daemon -- start           # then: daemon status, daemon stop
//! ps -o pid,ppid,pgid,sid,tty,stat,comm -p PID   # in a second terminal: the pids it prints
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//!   0.000s [  8191 daemon] started <Process foo pid=8194 started daemon>
//!   0.000s [  8191 daemon] started <Process bar pid=8195 started>
//!   0.000s [  8191 daemon] main---------
//!   0.000s [  8191 daemon] main's code has ended (运行完毕 is not 终止运行) and this parent ...
//!   0.000s [  8194 foo] 123
//!   0.000s [  8195 bar] 456
//!   0.201s [  8195 bar] end456
//!   0.201s [  8191 daemon] foo (daemonic): exitcode -SIGTERM, gone from /proc; ...
//!   0.330s [  8191 daemon] the daemonic child 8201 is alive (state S): an orphan, now the
//!                          child of pid 8191 (this demo, a child subreaper; ...)
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
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod daemonic;
mod daemonize;
mod parent_death;
mod unix_daemon;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, number_in};

use crate::unix_daemon::Paths;

/// How often the daemon writes a heartbeat line to its log (`start --heartbeat`).
const DEFAULT_HEARTBEAT_SECS: f64 = 2.0;
/// How long `stop` waits for the daemon to exit after SIGTERM (`stop --timeout`).
const DEFAULT_STOP_TIMEOUT_SECS: f64 = 10.0;
/// The heartbeat of the tour's daemon, which lives a fraction of a second.
const TOUR_HEARTBEAT: Duration = Duration::from_millis(100);
/// Signal numbers, the same on every Unix (kill -1, -9, -15), named here without `libc`.
const SIGHUP: i32 = 1;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

#[derive(Parser, Debug)]
#[command(
    name = "daemon",
    about = "Python's daemonic children (守护进程: terminated when the parent exits) beside\n\
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

common::demo_cli!(Cli);

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Part A: seed 002's Foo (daemonic) and Bar: Foo is terminated when the parent exits
    Daemonic,
    /// Part A: daemon must be set before start; a daemonic child may not start a Process
    Rules,
    /// Part A: the parent is killed with SIGKILL; its daemonic child lives on, an orphan
    Orphan,
    /// Part A: the same with PR_SET_PDEATHSIG: the kernel ends the child with its parent thread
    Pdeathsig,
    /// Part B: start a real Unix daemon (double fork, setsid, pidfile under flock)
    Start {
        /// Seconds between the heartbeat lines the daemon writes to its log
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HEARTBEAT_SECS,
              value_parser = number_in(0.01..=3600.0, "a number of seconds"))]
        heartbeat: f64,
    },
    /// Part B: is the daemon running? Its pid, state, uptime, session and terminal
    Status,
    /// Part B: send the daemon SIGTERM and wait until it has exited
    Stop {
        /// Seconds to wait for the daemon to exit after SIGTERM
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STOP_TIMEOUT_SECS,
              value_parser = number_in(0.01..=3600.0, "a number of seconds"))]
        timeout: f64,
    },
}

const AFTER_HELP: &str = concat!(
    "\
With no subcommand: the tour of part A, then start, status and stop of a daemon in a fresh
directory (removed afterwards). Exit codes: 0 ran (`status` too, running or not: see its
output), 1 failed (a second `start` is refused with 1), 2 bad usage, 130 interrupted. A Ctrl-C
to `start` stops the launcher, never the daemon: that is what a daemon is for.

",
    include_str!("differences.txt")
);

fn main() -> ExitCode {
    common::demo::main(
        &[
            &daemonic::FOO,
            &daemonic::BAR,
            &daemonic::SLEEPER,
            &daemonic::NESTER,
            &parent_death::PARENT,
            &parent_death::LINGERER,
        ],
        run,
    )
}

fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        None => tour(&cli),
        Some(Cmd::Daemonic) => daemonic::daemonic(&cli),
        Some(Cmd::Rules) => daemonic::rules(&cli),
        Some(Cmd::Orphan) => parent_death::orphan(&cli),
        Some(Cmd::Pdeathsig) => parent_death::pdeathsig(&cli),
        Some(Cmd::Start { heartbeat }) => {
            let paths = Paths::new(unix_daemon::daemon_dir(&cli)?);
            unix_daemon::start(&cli, &paths, Duration::from_secs_f64(*heartbeat), true).map(drop)
        }
        Some(Cmd::Status) => unix_daemon::status(&Paths::new(unix_daemon::daemon_dir(&cli)?)),
        Some(Cmd::Stop { timeout }) => unix_daemon::stop(
            &Paths::new(unix_daemon::daemon_dir(&cli)?),
            Duration::from_secs_f64(*timeout),
        ),
    }
}

fn tour(cli: &Cli) -> Result<()> {
    daemonic::daemonic(cli)?;
    daemonic::rules(cli)?;
    parent_death::orphan(cli)?;
    parent_death::pdeathsig(cli)?;
    // Part B in a directory of its own, so that the tour never meets a daemon you started.
    let dir = unix_daemon::daemon_dir(cli)?.join(format!("tour-{}", std::process::id()));
    let paths = Paths::new(daemonize::prepare_dir(&dir)?);
    // No pause here for --hold: a Ctrl-C during it would leave the tour's daemon running.
    let result = unix_daemon::start(cli, &paths, TOUR_HEARTBEAT, false).and_then(|_| {
        // Not a synchronization: a moment for the daemon to write a heartbeat or two.
        std::thread::sleep(TOUR_HEARTBEAT * 3);
        unix_daemon::status(&paths)?;
        unix_daemon::stop(&paths, Duration::from_secs_f64(DEFAULT_STOP_TIMEOUT_SECS))
    });
    if result.is_err() && paths.pidfile.exists() {
        let _ = unix_daemon::stop(&paths, Duration::from_secs_f64(DEFAULT_STOP_TIMEOUT_SECS));
    }
    if result.is_ok() {
        unix_daemon::show_log(&paths);
    }
    let _ = std::fs::remove_dir_all(&paths.dir);
    result
}
