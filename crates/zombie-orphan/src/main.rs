//! zombie-orphan — zombies (僵尸进程), orphans (孤儿进程) and process states, seen in `ps`.
//!
//! What happens, part by part (no subcommand runs them all, each in about a second):
//! - `zombie`: a child ends; its parent does not call `join()` yet, only reads `/proc`, so the
//!   child stays in state `Z` (`<defunct>`), keeping its pid and exit status, until `join()`
//!   calls `waitpid(2)` and it is gone.
//! - `cures`: two ways to never keep zombies: reap on SIGCHLD (a handler wakes the parent's
//!   loop, which reaps), and SIGCHLD set to SIG_IGN (the kernel reaps at once; the exit status
//!   is lost).
//! - `many --count N`: N children end unreaped: N `Z` rows, N pids taken until reaped.
//! - `orphan`: a middle process starts a child and ends first. The child keeps running (an
//!   orphan, not a zombie: seed 003 confuses the two, seed 004 has it right) and is adopted by
//!   the nearest child subreaper, here the launcher (`PR_SET_CHILD_SUBREAPER`), which reaps it.
//!   `--no-subreaper` shows who adopts it otherwise (PID 1, whatever it is called here).
//! - `states`: four children in `R` (busy: running *or* ready), `S` (sleeping: blocked), `T`
//!   (stopped by SIGSTOP, then resumed by SIGCONT) and `Z`.
//!
//! **What to watch for**: `STAT Z` and `[zombie-child] <defunct>` while the parent has not
//! waited; the row gone after `join()`; N `Z` rows for `many`; the orphan's `PPID` changing from
//! the middle process (the first `--hold`) to the launcher or PID 1 (the second) while its
//! `STAT` stays `S`; `R`, `S`, `T`, `Z`
//! side by side; no `Z` ever with SIGCHLD ignored.
//!
//! **Run it**: `make demo-zombie-orphan` (all parts), or for one part with a pause:
//! `make demo-zombie-orphan ARGS='zombie --hold 20'`; in a second terminal run the command the
//! demo prints, e.g. `ps -o pid,ppid,stat,comm,args -p 4170,4182`. `orphan --hold 20` pauses
//! twice: while the first parent lives, and after the orphan's adoption.
//!
//! ```text
//! == zombie (僵尸进程): the child has ended, its parent has not reaped it yet ==
//!   0.006s [  1954 zombie-child] my work is done; ending with exit code 3
//!   0.007s [  1951 zombie-orphan] child 1954 has ended and is in state Z: zombie (僵尸进程): ...
//!   0.010s [  1951 zombie-orphan] this demo's processes (the child is <defunct>):
//!                                     PID    PPID STAT  COMMAND
//!                                    1951    1949 R     zombie-orphan
//!                                    1954    1951 Z       [zombie-child] <defunct>
//!   0.211s [  1951 zombie-orphan] 0.2s later it is still in state Z: a zombie never goes away ...
//!   0.211s [  1951 zombie-orphan] join() -> waitpid(): reaped <Process zombie-child pid=1954 ...
//! == orphan (孤儿进程): the parent ends while its child still runs ==
//!   0.001s [  8336 orphan] my parent is 8335 (orphan-parent)
//!   0.026s [  8332 zombie-orphan] holding 20s at: the child 8336 under its first parent 8335, ...
//!                                   in another terminal run: ps -o pid,ppid,stat,comm,args -p ...
//!  20.062s [  8335 orphan-parent] ending now; my child is still running
//!  20.063s [  8336 orphan] my parent 8335 has ended; my parent is now 8332 (zombie-orphan), ...
//!  20.064s [  8332 zombie-orphan] orphan 8336: parent 8335 -> 8332 (zombie-orphan); state S ...
//!  20.074s [  8332 zombie-orphan] holding 20s at: an orphan adopted by 8332 (zombie-orphan)
//!  40.078s [  8332 zombie-orphan] the launcher, its adoptive parent, reaped orphan 8336 ...
//! ```
//!
//! Platform notes: Linux only (it reads `/proc` and uses `prctl`); elsewhere it says so and
//! exits 1. In a container PID 1 may not be `init` and may reap adopted orphans only now and
//! then (or never): `orphan --no-subreaper` measures it. Ctrl-C at any moment stops and reaps
//! everything (exit 130); with `--no-subreaper` the orphan ends as soon as the launcher does,
//! and it is then up to its adopter to reap it.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

// Each part is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod children;
mod cures;
mod orphan;
mod procfs;
mod states;
mod zombie;

/// Zombies in `many` unless `--count` says otherwise.
const DEFAULT_ZOMBIES: usize = 5;
/// At most this many zombies: each is a real process, and the pid space is finite (pid_max).
const MAX_ZOMBIES: usize = 256;
/// Children in each cure unless `--children` says otherwise, and at most (each is a process).
const CURE_CHILDREN: usize = 3;
const MAX_CURE_CHILDREN: usize = 64;

/// Zombies, orphans and process states (R S T Z), seen in ps.
///
/// A zombie is a child that has ended and that its parent has not reaped (waitpid); an orphan
/// is a child whose parent ended first: it keeps running and is adopted.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

common::demo_cli!(Cli);

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A child ends and is not reaped: state Z (`<defunct>`) until join() calls waitpid
    Zombie,
    /// The two cures: reap on SIGCHLD, or ignore SIGCHLD so the kernel reaps at once
    Cures {
        /// Children in each cure, at most 64
        #[arg(long, value_name = "N", default_value_t = CURE_CHILDREN,
              value_parser = count_in(1..=MAX_CURE_CHILDREN))]
        children: usize,
    },
    /// N children end unreaped: N Z rows, each holding a pid until reaped
    Many {
        /// How many zombies, at most 256
        #[arg(long, value_name = "N", default_value_t = DEFAULT_ZOMBIES,
              value_parser = count_in(1..=MAX_ZOMBIES))]
        count: usize,
    },
    /// The parent ends while its child runs: the child is an orphan, adopted by a subreaper
    Orphan {
        /// Stop being a child subreaper for this part: the orphan goes to the nearest
        /// subreaper above the demo, or to PID 1
        #[arg(long)]
        no_subreaper: bool,
    },
    /// Four children in the states R (running or ready), S (blocked), T (stopped), Z (zombie)
    States,
}

#[cfg(target_os = "linux")]
#[cfg(target_os = "linux")]
fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.common.own_children("a zombie is its own parent's to reap");
    let c = &cli.common;
    match cli.cmd {
        Some(Cmd::Zombie) => zombie::zombie(c),
        Some(Cmd::Cures { children }) => {
            cures::reap_on_sigchld(c, children)?;
            cures::ignore_sigchld(c, children)
        }
        Some(Cmd::Many { count }) => zombie::many(c, count),
        Some(Cmd::Orphan { no_subreaper }) => orphan::orphan(c, no_subreaper),
        Some(Cmd::States) => states::states(c),
        None => {
            zombie::zombie(c)?;
            cures::reap_on_sigchld(c, CURE_CHILDREN)?;
            cures::ignore_sigchld(c, CURE_CHILDREN)?;
            zombie::many(c, DEFAULT_ZOMBIES)?;
            orphan::orphan(c, false)?;
            states::states(c)
        }
    }
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use common::process::Role;
    static QUIT: Role = Role::of::<children::Quit>();
    static BUSY: Role = Role::of::<children::Busy>();
    static SLEEPER: Role = Role::of::<children::Sleeper>();
    static ORPHAN_PARENT: Role = Role::of::<orphan::OrphanParent>();
    static ORPHAN: Role = Role::of::<orphan::Orphan>();
    common::demo::main(&[&QUIT, &BUSY, &SLEEPER, &ORPHAN_PARENT, &ORPHAN], run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    fn run(_cli: Cli) -> anyhow::Result<()> {
        anyhow::bail!("this demo reads /proc and calls prctl(): it runs on Linux only")
    }
    common::demo::main(&[], run)
}
