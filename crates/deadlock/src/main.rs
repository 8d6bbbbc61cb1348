//! deadlock — 死锁现象与递归锁: deadlocks made on purpose, every run, that never hang the demo:
//! found, shown and ended; the recursive lock; the dining philosophers and four ways out; and
//! processes that deadlock on file locks.
//!
//! Seed 001 says of thread locks: "不同的线程持有不同的锁，并试图获取对方持有的锁时，可能会造成死锁，
//! 导致多个线程全部挂起，既不能执行，也无法结束，只能靠操作系统强制终止" (threads holding different locks
//! and each reaching for the other's hang for ever, and only the OS can end them: too strong, as
//! the program's own detector and fcntl's `EDEADLK` show). This demo
//! makes that happen every time: a `Barrier` lets every thread take its first lock before any
//! reaches for its second, so the bad interleaving is not luck. The deadlocked threads live in a
//! child process; the child's watchdog finds the cycle with `parking_lot`'s deadlock detector
//! and prints who holds what and who waits for what, as a table and as the wait-for cycle; the
//! parent shows the threads asleep in `/proc` (state `S`, wchan `futex_do_wait`), then ends them
//! by killing the child. A deadlock shown is the lesson: exit 0.
//!
//! Five parts, each a subcommand (no subcommand runs them all, in a few seconds):
//! 1. `classic`: two scientists, the noodles (面条) and the fork (叉子), taken in opposite
//!    orders. Found by `parking_lot::deadlock::check_deadlock` within a second, reported with
//!    thread and lock names, killed. `classic --step` (or `--schedule 0,1,0,1`): you grant
//!    each lock and unlock, without the barrier; the goal, deadlock them.
//! 2. `self`: one thread locks a `std::sync::Mutex` twice. std says the second call "might panic
//!    or deadlock"; on Linux it sleeps for ever (`S`, wchan `futex…`), seen in `/proc` before the
//!    child is killed. `try_lock` says `WouldBlock` instead.
//! 3. `rlock` (递归锁): Python's `RLock`, an owner and a count, on `parking_lot::ReentrantMutex`:
//!    three levels deep and back to 0; the classic fix (one recursive lock for the noodles and the
//!    fork: `mutexA = mutexB = RLock()`), after which every scientist eats; only the owner
//!    unlocks (a guard cannot move to another thread: a `compile_fail` example in the library);
//!    and what a reused owner id does.
//! 4. `philosophers`: five philosophers, each takes the left fork then the right: deadlock,
//!    found and reported (the five forks and the ring). Then the fixes, each finishing every
//!    meal, with meals per second in one table: one global order (lower-numbered fork first),
//!    `try_lock` with a random back-off (and its count of retries, beside a fixed back-off that
//!    collides in step: a livelock while it lasts), an arbiter (at most four at the table), and
//!    one lock for everything (correct, and the slowest).
//! 5. `processes`: two processes, two files, locks taken in opposite orders. With `flock(2)`
//!    both sleep for ever: the demo finds them in `/proc/locks` (each holding one file, `->`
//!    waiting for the other) and kills one. With `fcntl(F_SETLKW)` record locks the kernel finds
//!    the cycle itself and one of them gets `EDEADLK`.
//!
//! **What to watch for**: in `ps -L` the deadlocked threads (`scientist-1`, `philosopher-3`)
//! are `S` with wchan `futex_do_wait` and use no CPU: a deadlock is not a busy loop, nothing
//! runs, and nothing ever will; the watchdog's table names the lock each one holds and the one
//! it waits for, and the cycle closes on the first thread. In part 5 the two `locker-N`
//! processes are `S` in the kernel's file-lock code, and `/proc/locks` (or `lslocks`) lists
//! each lock twice: held by one pid, `->` awaited by the other.
//!
//! **Run it**:
//! ```text
//! make demo-deadlock                                  # the tour
//! make demo-deadlock ARGS='classic --hold 20'         # pause before the kill; in a second terminal:
//! ps -L -o pid,lwp,stat,wchan:20,psr,comm -p <the child's pid>   # the command the demo prints
//! make demo-deadlock ARGS='processes --hold 20'       # then: cat /proc/locks (or lslocks)
//! make demo-deadlock ARGS='philosophers --meals 200'
//! ```
//!
//! Expected output (abridged; pids, times and figures differ):
//! ```text
//! == 1. classic: two scientists, the noodles and the fork, taken in opposite orders ==
//!   0.008s [  1621/1625 scientist-2] took the fork (拿到叉子)
//!   0.011s [  1621/1624 scientist-1] took the noodles (拿到面条)
//!   0.011s [  1621/1624 scientist-1] reaching for the fork...
//!   0.012s [  1621/1625 scientist-2] reaching for the noodles...
//!   0.690s [  1621/1623 watchdog] parking_lot's deadlock detector found 1 cycle(s) of 2 threads after 679 ms:
//!                                   thread           tid  holds         waits for
//!                                   scientist-1     1624  noodles       fork (held by scientist-2)
//!                                   scientist-2     1625  fork          noodles (held by scientist-1)
//!                                 wait-for cycle: scientist-1 --fork--> scientist-2 --noodles--> scientist-1
//!   0.693s [  1618 deadlock] the child's threads (ps -L): asleep in the kernel, none will ever wake
//!                                PID     TID STAT WCHAN                 PSR   CPU ms  VOL/INVOL  NAME
//!                               1621    1621 S    futex_do_wait           0        0        1/0  classic
//!                               1621    1623 S    futex_do_wait           1        0        8/2  watchdog
//!                               1621    1624 S    futex_do_wait           1       40       6/33  scientist-1
//!                               1621    1625 S    futex_do_wait           1      540      9/211  scientist-2
//!   0.699s [  1618 deadlock] kill -9 1621: threads that wait for each other never wake up by themselves. ...
//!                            Here the demo ends the child; exitcode -SIGKILL
//! == 4. philosophers: 5 philosophers, 5 forks, 20 meals each ==
//!   ...
//!   0.960s [  7110 deadlock] meals per second (5 philosophers, 20 meals each, 500 µs a meal):
//!                              fix                            meals   wall ms   meals/s   retries
//!                              one global order                 100      29.6      3375         -
//!                              try_lock, random back-off        100      32.8      3046        24
//!                              try_lock, fixed back-off         100      35.6      2811        61
//!                              arbiter (4 seats)                100      30.3      3305         -
//!                              one lock for everything          100      59.4      1684         -
//! ```
//!
//! The CPU ms of the deadlocked threads: to report, the detector wakes each of them once to
//! capture its own backtrace, then parks it for good; the demo waits until all are `S` again
//! before it shows them. That capture is most of the detector's delay (about 0.1 s in a release
//! build, most of a second in a debug build, longer on a loaded machine).
//!
//! Platform notes: Linux (the thread and lock views read `/proc`; `/proc/locks` lists file
//! locks; wchan names may be hidden in some containers, where it reads `0` and the demo says
//! so). The deadlocked child starts by fork by default, by spawn with `--start-method spawn`.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

// Each of these parts is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod classic;
mod philosophers;
mod processes;
mod recursive;
mod scene;
mod self_lock;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

/// Part 4: philosophers at the table (seats, forks) unless `--philosophers` says otherwise.
const PHILOSOPHERS: usize = 5;
/// The most philosophers `--philosophers` accepts (a thread each, and the table stays readable).
const MAX_PHILOSOPHERS: usize = 32;
/// Part 4: meals each philosopher eats in every fix unless `--meals` says otherwise.
const MEALS: usize = 20;
/// The most meals `--meals` accepts: with one lock for everything, 32 × 1000 meals of
/// `EAT_US` each already take tens of seconds.
const MAX_MEALS: usize = 1000;

/// deadlock: 死锁现象与递归锁 — deadlocks on purpose that never hang: found by a detector, shown
/// in /proc, ended by a kill; the recursive lock; dining philosophers; file-lock deadlocks.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Part 4: philosophers (and forks) at the table, 2 to 32
    #[arg(long, global = true, value_name = "N", default_value_t = PHILOSOPHERS,
          value_parser = count_in(2..=MAX_PHILOSOPHERS))]
    philosophers: usize,

    /// Part 4: meals each philosopher eats in every fix, 1 to 1000
    #[arg(long, global = true, value_name = "N", default_value_t = MEALS,
          value_parser = count_in(1..=MAX_MEALS))]
    meals: usize,

    /// Part 1: be the scheduler: before each lock and unlock, see who holds what and choose
    /// who goes (at a terminal; without one, a random schedule, printed)
    #[arg(long, global = true)]
    step: bool,

    /// Part 1: replay a schedule: 0 for scientist-1, 1 for scientist-2, one per step (0,1,0,1)
    #[arg(long, global = true, value_name = "LIST", conflicts_with = "step")]
    schedule: Option<String>,

    /// Part 1: the seed of the random schedule (--step without a terminal)
    #[arg(long, global = true, value_name = "N")]
    seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. Two scientists, noodles and fork, in opposite orders: found, shown, killed
    Classic,
    /// 2. One thread locks a std Mutex twice: asleep for ever (S, futex) until killed
    #[command(name = "self")]
    SelfLock,
    /// 3. The recursive lock (递归锁): three levels, the count, one RLock and all eat
    Rlock,
    /// 4. Dining philosophers: left fork first deadlocks; four fixes and their meals per second
    Philosophers,
    /// 5. Two processes, two files: flock sleeps for ever, fcntl gets EDEADLK
    Processes,
}

common::demo_cli!(Cli, Cmd);

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    common::demo::main(
        &[&classic::ROLE, &self_lock::ROLE, &philosophers::ROLE, &processes::ROLE],
        run,
    )
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    common::demo::linux_only::<Cli>(
        "deadlock: this demo needs Linux (it reads /proc/PID/task and /proc/locks)",
    )
}

#[cfg(target_os = "linux")]
fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.step || cli.schedule.is_some() {
        let classic = matches!(cli.cmd, Some(Cmd::Classic));
        common::stepper::only_in(classic, "part 1", "deadlock classic --step")?;
        return classic::stepped(&cli);
    }
    common::demo::run_parts(
        &cli,
        &[
            (Cmd::Classic, classic::run),
            (Cmd::SelfLock, self_lock::run),
            (Cmd::Rlock, recursive::run),
            (Cmd::Philosophers, philosophers::run),
            (Cmd::Processes, processes::run),
        ],
    )
}
