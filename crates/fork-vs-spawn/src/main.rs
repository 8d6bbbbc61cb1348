//! fork-vs-spawn — what a child process gets from its parent, by fork and by spawn.
//!
//! Five experiments from the notes (多进程, 开启进程 windows/linux 区别, 不同操作系统进程间内存分配,
//! 不同操作系统开启子进程的区别) and a sixth on Python 3.14's default, each a subcommand; with none,
//! the tour runs all six:
//!
//! 1. `isolation` (数据隔离): a child writes 99 into the parent's `a = 50`; the parent still reads
//!    50. After fork the child's `a` sits at the *same virtual address* with different contents:
//!    copy-on-write (写时复制), the Rust counterpart of the notes' `id(a)` experiment.
//! 2. `inherit`: a value the parent sets at run time is in a fork child (a copy of the parent's
//!    memory), not in a spawn child (the program started again from `main`: seed 003's Windows
//!    `NameError`), unless it is passed as an argument.
//! 3. `guard`: a spawned child that runs the parent's code because the `__main__` guard is
//!    missing starts a child, which starts a child... Shown safely: each level runs this program
//!    again without its role argument, and a depth counter stops the chain at `--cap`.
//! 4. `buffer`: the fork pitfall. A line still in a user-space buffer at fork is copied into the
//!    child and written twice to a file or pipe; flushing before fork writes it once.
//! 5. `cost`: start+join of N threads, fork children, spawn children and fork-server
//!    children, in microseconds, so "线程的开销远远小于进程" is measured here, not asserted.
//! 6. `methods`: the three start methods side by side (`fork`, `spawn`, and `forkserver`,
//!    Linux's default from Python 3.14): what each child finds (its parent, its threads, the
//!    parent's run-time value, a descriptor not passed and one passed) and what each costs;
//!    then a fork pool whose every task retires its worker, while two threads make queues: each
//!    replacement is forked by the single-threaded fork server, so none can inherit a lock that
//!    another thread held, and none blocks (`--replacements N`).
//!
//! Every part checks its own claim and says so; a broken claim makes the demo exit 1.
//!
//! **What to watch for**: in the `isolation` table the fork child's command line is the parent's
//! (it *is* a copy of the parent), the spawn child's is `fork-vs-spawn __role=isolated ...`
//! (the program run again); the same address printed by parent and fork child with 50 and 99 in
//! it; in `guard` a chain of pids, each the parent (PPID) of the next, all reaped at the end;
//! in `methods` the forkserver child's PPID, which is the fork server's, not the demo's, and
//! the replacement workers' count "forked by the fork server".
//!
//! **Run it**:
//! ```text
//! make demo-fork-vs-spawn                               # the tour, a few seconds
//! make demo-fork-vs-spawn ARGS='isolation --hold 20'    # pause while both children are alive
//! ps -o pid,ppid,stat,comm,args -p <the pids it prints> # in a second terminal
//! make demo-fork-vs-spawn ARGS='methods --replacements 500'
//! ps -o pid,ppid,stat,comm --ppid <the demo's pid>     # meanwhile: the forkserver, its workers
//! ```
//!
//! Expected output (abridged; pids and addresses differ from run to run):
//! ```text
//! == 1. isolation (数据隔离): a child's write never reaches the parent ==
//!   0.000s [ 14202 fork-vs-spawn] parent: a = 50 at address 0x560fc4008738
//!   0.002s [ 14204 isolated-fork] fork child: found a = 50 at 0x560fc4008738, wrote 99, reads 99
//!   0.003s [ 14205 isolated-spawn] spawn child: found a = 0 at 0x55e64b40c738, wrote 99, reads 99
//!   0.004s [ 14202 fork-vs-spawn] both children are alive and waiting; ps shows them like this
//!                                     PID    PPID COMM            COMMAND LINE
//!                                   14202   13277 fork-vs-spawn   target/debug/fork-vs-spawn   (parent)
//!                                   14204   14202 isolated-fork   target/debug/fork-vs-spawn   (fork child)
//!                                   14205   14202 isolated-spawn  fork-vs-spawn __role=isolated isolated-spawn   (spawn child)
//!   0.004s [ 14202 fork-vs-spawn] parent after both children wrote 99: a = 50 at 0x560fc4008738
//!                                 fork: same address, different contents: copy-on-write (写时复制), not sharing
//! == 3. the __main__ guard: without it a spawn child starts children again ==
//!   0.015s [ 14202 fork-vs-spawn] depth 0: pid 14202, parent 13277: the program you started
//!   0.000s [ 14209 unguarded-1] depth 1: pid 14209, parent 14202: running the parent's code from main
//!   0.000s [ 14211 unguarded-2] depth 2: pid 14211, parent 14209: running the parent's code from main
//!   0.001s [ 14213 unguarded-3] depth 3: pid 14213, parent 14211: running the parent's code from main
//! == 4. the fork pitfall: a buffer copied by fork is written twice ==
//!   0.034s [ 14202 fork-vs-spawn] without flush before fork: the parent's line is in .../buffer-unflushed.txt 2 times
//!   0.038s [ 14202 fork-vs-spawn] with flush before fork: the parent's line is in .../buffer-flushed.txt 1 time
//! == 5. the cost of a start: threads, fork children, spawn children ==
//!                                 kind      µs per start  × a thread
//!                                 thread            74.6        1.0
//!                                 fork             835.3       11.2
//!                                 spawn           2365.0       31.7
//! ```
//! (Each level of the unguarded chain is a freshly started program: its clock starts at 0.)
//!
//! Platform notes: Linux first (`/proc` for the table, `PR_SET_NAME` for the names). The fork
//! parts need a Unix system; on Windows only spawn exists, which is why Python's notes see the
//! `NameError` there. With ASLR off (`/proc/sys/kernel/randomize_va_space` = 0, or
//! `setarch -R`) a spawn child's address can equal the parent's: equal numbers, separate memory.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod answers;
mod buffer;
mod cost;
mod guard;
mod inherit;
mod isolation;
#[cfg(target_os = "linux")]
mod methods;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};
use common::process::Role;
use common::startcost;

use answers::WorkDir;

/// How deep the unguarded chain of `guard` may go (`--cap`), and the most a user may ask for.
const DEFAULT_CAP: usize = 3;
const MAX_CAP: usize = 8;
/// Children started and joined per round in `cost` (`--count`), and rounds (`--rounds`).
const DEFAULT_COUNT: usize = 50;
const DEFAULT_ROUNDS: usize = 3;
const MAX_COUNT: usize = 1000;
const MAX_ROUNDS: usize = 20;

const ABOUT: &str = "\
fork copies the running parent (its memory, values, unflushed buffers); spawn runs the program
again from main; a fork server forks from a single-threaded process. Six experiments: isolation,
inherit, guard, buffer, cost, methods (none: all six).";

const DIFFERENCES: &str = include_str!("differences.txt");

/// The command line; `--help` shows [`ABOUT`], the flags, then [`DIFFERENCES`].
#[derive(Debug, Parser)]
#[command(name = "fork-vs-spawn", about = ABOUT, long_about = None, after_help = DIFFERENCES)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Folder for the children's answers and the buffer files (kept); default: a temporary
    /// folder removed at the end
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// How deep the unguarded chain of `guard` may go, at most 8
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_CAP,
          value_parser = count_in(1..=MAX_CAP))]
    cap: usize,

    /// Children (and threads) started and joined per round in `cost`, at most 1000
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_COUNT,
          value_parser = count_in(1..=MAX_COUNT))]
    count: usize,

    /// Rounds in `cost`, at most 20; the table shows each figure's median
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_ROUNDS,
          value_parser = count_in(1..=MAX_ROUNDS))]
    rounds: usize,

    /// Tasks in `methods`' replacement round (each in a new worker), at most 500
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_REPLACEMENTS,
          value_parser = count_in(1..=MAX_REPLACEMENTS))]
    replacements: usize,

    #[command(flatten)]
    common: CommonArgs,
}

/// Tasks in `methods`' replacement round (`--replacements`), and the most a user may ask for.
const DEFAULT_REPLACEMENTS: usize = 40;
const MAX_REPLACEMENTS: usize = 500;

common::demo_cli!(Cli);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Cmd {
    /// A child writes into the parent's value: same address after fork, different contents
    Isolation,
    /// A value set at run time: in a fork child, not in a spawn child unless passed
    Inherit,
    /// A spawned child without the __main__ guard starts children again (stopped at --cap)
    Guard,
    /// Text buffered before fork is written twice; flushing first writes it once
    Buffer,
    /// Microseconds per start+join of a thread, a fork child and a spawn child
    Cost,
    /// fork, spawn and forkserver side by side; fork-pool workers replaced by the fork server
    Methods,
}

static ISOLATED: Role = Role::of::<isolation::Isolated>();
static INHERITOR: Role = Role::new("inheritor", inherit::inheritor);

fn main() -> ExitCode {
    common::demo::main(
        &[
            &ISOLATED,
            &INHERITOR,
            &startcost::NOOP,
            #[cfg(target_os = "linux")]
            &methods::PROBE,
            #[cfg(target_os = "linux")]
            &methods::POOL_WORKER,
        ],
        run,
    )
}

fn run(cli: Cli) -> Result<()> {
    let work = WorkDir::new(cli.dir.as_deref())?;
    match cli.cmd {
        Some(Cmd::Isolation) => isolation::run(&cli, &work),
        Some(Cmd::Inherit) => inherit::run(&cli, &work),
        Some(Cmd::Guard) => guard::run(&cli, &work),
        Some(Cmd::Buffer) => buffer::run(&cli, &work),
        Some(Cmd::Cost) => cost::run(&cli),
        Some(Cmd::Methods) => methods::run(&cli, &work),
        None => {
            isolation::run(&cli, &work)?;
            inherit::run(&cli, &work)?;
            guard::run(&cli, &work)?;
            buffer::run(&cli, &work)?;
            cost::run(&cli)?;
            methods::run(&cli, &work)
        }
    }
}

/// Elsewhere part 6 says what it needs: the fork server and the process pool are Linux's.
#[cfg(not(target_os = "linux"))]
mod methods {
    pub fn run(_: &crate::Cli, _: &crate::answers::WorkDir) -> anyhow::Result<()> {
        anyhow::bail!("the methods part needs Linux (the fork server, the process pool)")
    }
}
