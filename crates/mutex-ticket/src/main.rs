//! mutex-ticket — ten buyers race for one ticket in a real `db.json` (练习一：模拟抢票); a
//! file lock around *buy* (互斥锁) fixes it, and so does `join`, at a price.
//!
//! The notes' experiment, faithfully: `db.json` holds `{"count": 1}`; ten buyers 路人0..9, each
//! its own process, first *search* (read and print the count; all at once, no lock), then *buy*:
//! read the count, pay (a pause), write it back one lower if it was positive.
//! - **The race** (`--no-lock`): every buyer that read `1` before the first one wrote `0` sells
//!   the same ticket. The demo counts the sales from the buyers' exit codes, reads the file, and
//!   says by how much the invariant *sold + left = on sale at the start* broke: "oversold by 9"
//!   (数据安全问题, the data-safety problem).
//! - **The lock** (the default): `flock(2)` on the sidecar `db.json.lock` around *buy* only. Exactly
//!   `min(tickets, buyers)` buyers succeed; *search* stays concurrent.
//! - **join** (`--join`): start each buyer and wait for it before the next. Also correct, but the
//!   searches are serial too: the wall times show 互斥锁与join的区别 (join serializes all the code,
//!   the lock only the critical section).
//! - **crash**: 路人0 stops itself inside the locked section, having written half of its new
//!   file; the parent kills it with SIGKILL. `db.json` is still whole (writes go to a temp file
//!   that is then renamed over it), the kernel drops the dead buyer's lock, the others go on,
//!   and the stray temp file is cleaned up.
//!
//! - **Be the scheduler** (`run --step`, `run --schedule 0,1,0,1,...`, `census`): 2 or 3 buyers
//!   wait before each of their steps (`search`, `lock`, `read`, `pay`, `write`, `unlock`) for
//!   the step to be granted: by you at a terminal, by a schedule, or by a seeded random choice.
//!   `census` counts every interleaving by outcome, then replays them on the kernel.
//!
//! Why the lock is on a sidecar and not on `db.json`: every write *replaces* `db.json` by a
//! rename. A buyer that opened `db.json` and then waited for a lock on it would wake up holding a
//! lock on the old, replaced file and read a stale count. The sidecar is never replaced, and
//! `db.json` is opened only once the lock is held.
//!
//! **What to watch for**: `oversold by N` in the race, and `invariant holds` after the fix; in the
//! lock view, one buyer holding `db.json.lock` while the others wait in state `S` (阻塞态,
//! blocked in `flock`); in the crash, the stopped buyer in state `T`, its exit code `-SIGKILL`,
//! and a `db.json` that still parses.
//!
//! **Run it**: `make demo-ticket` (the tour: race, lock, join, crash, in a few seconds). To watch
//! from a second terminal: `make demo-ticket ARGS='crash --hold 20'`, then run the `ps` command it
//! prints (e.g. `ps -o pid,ppid,stat,comm,args -p 4182,4183`) and `lslocks` or `cat /proc/locks`.
//! `ARGS='run --speed 1'` uses the notes' own 1-second pauses.
//!
//! ```text
//! == 1. The race: 10 buyers, 1 ticket, no lock ==
//!   0.101s [ 18948 buyer-1] <路人1> 查看到剩余票数 1 (sees 1 ticket left)
//!   0.102s [ 18947 buyer-0] <路人0> 查看到剩余票数 1 (sees 1 ticket left)
//!   ...
//!   0.202s [ 18948 buyer-1] <路人1> 购票成功! (bought a ticket 1 -> 0)
//!   0.203s [ 18947 buyer-0] <路人0> 购票成功! (bought a ticket 1 -> 0)
//!   ...
//!   0.207s [ 18944 mutex-ticket] sold 10, 0 left, 1 on sale at the start: 10 + 0 ≠ 1 — OVERSOLD BY 9 (数据安全问题, ...)
//! == 2. The fix: a lock around buy only (互斥锁) ==
//!   0.110s [ 20911 mutex-ticket] .../db.json.lock from /proc/locks (what lslocks shows) and /proc/PID/stat:
//!                                    PID STAT  PROCESS    LOCK
//!                                  20914 S     buyer-0    waits for it (blocked in flock: 阻塞态)
//!                                  20915 S     buyer-1    holds it
//!   ...
//!   1.317s [ 18944 mutex-ticket] invariant holds: sold 1 + left 0 = 1 on sale at the start
//! == 4. A buyer killed while it holds the lock (路人0, SIGKILL) ==
//!                                  18760 T     buyer-0    holds it, stopped inside the locked section
//!   3.538s [ 18709 mutex-ticket] <Process buyer-0 pid=18760 stopped exitcode=-SIGKILL>: killed inside the locked section;
//! == Summary ==
//!   part       sold  left  on sale  verdict          wall time
//!   no-lock      10     0        1  OVERSOLD BY 9      0.21 s
//!   lock          1     0        1  invariant holds    1.11 s
//!   join          1     0        1  invariant holds    2.02 s
//!   crash         1     0        1  invariant holds    1.11 s
//! ```
//!
//! Platform notes: Linux first. The lock is std's `File::lock` (flock(2) on Unix, LockFileEx on
//! Windows); the lock view reads `/proc/locks` and `/proc/PID/stat` (Linux only); the crash
//! experiment needs SIGSTOP/SIGKILL (Unix).
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod database;
mod parts;
mod steps;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use common::cli::CommonArgs;
use common::demo::bad_input;
use common::process::Role;
use common::report;
use mutex_ticket::store::{Durability, MAX_TICKETS};

use mutex_ticket::buyer::{Buyer, tickets};
use parts::{
    Mode, Setup, compare_lock_and_join, explain_sidecar, run_crash, run_part, summary_data,
};

/// The notes' `time.sleep(1)` before searching, scaled by `--speed` unless `--search-ms` is given.
const NOTES_SEARCH_SECS: f64 = 1.0;
/// The notes' `time.sleep(1)` in `get`, scaled by `--speed` unless `--buy-ms` is given. Here it
/// sits between the read and the write: the window of the race.
const NOTES_BUY_SECS: f64 = 1.0;
/// The notes' `for i in range(10)`.
const DEFAULT_BUYERS: usize = 10;
/// No more processes than this from one command.
const MAX_BUYERS: usize = 200;
const MAX_DELAY_MS: u64 = 600_000;

static BUYER: Role = Role::of::<Buyer>();
const ABOUT: &str = "Ten buyers (路人0..9), each a process, race for one ticket in a real db.json (练习一：模拟抢票).
Without a lock several buy the same ticket (数据安全问题); a file lock around buy (互斥锁), or join, fixes it.";

const AFTER_HELP: &str = concat!(
    "\
Parts (no subcommand = the tour; --no-lock or --join without a subcommand = `run` in that mode):
  run              the lock around buy only: search concurrent, buy serial (互斥锁)
  run --no-lock    the race: several buyers sell the one ticket, \"oversold by N\" (数据安全问题)
  run --join       start and join each buyer in turn: correct, but all serial (互斥锁与join的区别)
  crash            路人K is killed with SIGKILL inside the locked section: db.json stays whole,
                   the kernel releases the lock, the others go on, the stray temp file is removed
  run --step       be the scheduler: 2 buyers wait before each step (search, lock, read, pay,
                   write, unlock) for you to choose who goes; goal: make it oversell
  run --schedule L replay a schedule on the kernel: worker numbers from 0, one per step
  census           every interleaving of 2 or 3 buyers counted by outcome, replayed on the kernel

The database: without --db, a fresh copy of data/db.json ({\"count\": 1}) is made in a new private
folder, $TMPDIR/mutex-ticket-*/db.json; its path is printed and it is kept after the run so you
can `cat` it (remove the folder when done). data/db.json itself is never modified. With --db PATH
the file is used as it is (its count is the number of tickets on sale); a bad file is refused with
exit 2 and left byte-for-byte unchanged. The tour sets the count back before each part.

The lock is flock(2) on the sidecar PATH.lock (data: db.json.lock), never on db.json itself: each
write replaces db.json by a rename, so a lock on db.json would be a lock on a file that is no longer
there. Join in from a shell: flock PATH.lock -c 'cat PATH; sleep 5' (every buyer waits 5 s).

Exit codes: 0 the demo ran (the race overselling is the lesson, not a failure); 1 a buyer failed
or the demo did; 2 bad usage or a bad database file; 130 Ctrl-C, 143 SIGTERM.

",
    include_str!("differences.txt")
);

#[derive(Parser, Debug)]
#[command(name = "mutex-ticket", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    ticket: TicketArgs,
    #[command(flatten)]
    common: CommonArgs,
}

impl common::demo::DemoCli for Cli {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Cmd {
    /// The race, the lock, join, and a buyer killed inside the lock, back to back (the default)
    Tour,
    /// One run of the buyers: with the lock (the default), --no-lock (the race) or --join
    Run,
    /// Every interleaving of 2 or 3 buyers' steps counted by outcome, then replayed on the kernel
    Census {
        /// With 3 buyers: how many random schedules to replay on the kernel (2 buyers: all)
        #[arg(long, value_name = "N", default_value_t = steps::SAMPLE,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        sample: u32,
    },
    /// A buyer is killed with SIGKILL inside the locked section: the file stays whole, the others go on
    Crash {
        /// The buyer to kill (路人K); it goes first, so it is the one holding the lock
        #[arg(long, value_name = "K", default_value_t = 0)]
        victim: usize,
    },
}

#[derive(Args, Debug)]
struct TicketArgs {
    /// Use this database as it is; a bad file is refused (exit 2), never repaired, and so is
    /// anything but a regular file: a FIFO, socket, device or directory, and a symbolic link
    /// (every write replaces db.json by a rename, which would replace the link and not its
    /// target: pass the target's path) [default: a fresh copy of data/db.json in a new private
    /// temp folder, kept after the run]
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,

    /// Set the count to N before the run (with --db this writes that file)
    #[arg(long, global = true, value_name = "N", value_parser = parse_tickets,
          allow_negative_numbers = true)]
    tickets: Option<u64>,

    /// How many buyers (路人0..M-1), each its own process, at most 200 (at most 3 when you
    /// choose the steps, 2 or 3 for census) [default: 10; 2 with --step, --schedule, census]
    #[arg(long, global = true, value_name = "M", value_parser = parse_buyers,
          allow_negative_numbers = true)]
    buyers: Option<usize>,

    /// Be the scheduler: before each step, see db.json, each buyer's state and the line it
    /// runs next, and choose who goes (at a terminal; without one, a random schedule, printed)
    #[arg(long, global = true, conflicts_with = "join")]
    step: bool,

    /// Replay a schedule on the kernel: worker numbers from 0, one per step (0,0,1,1,...)
    #[arg(long, global = true, value_name = "LIST", conflicts_with_all = ["join", "step"])]
    schedule: Option<String>,

    /// The seed of the random schedule (--step without a terminal) or of census's sample
    #[arg(long, global = true, value_name = "N")]
    seed: Option<u64>,

    /// Pause before a buyer searches, at most 600000 [default: the notes' 1 s / --speed: 100 ms
    /// at --speed 10]
    #[arg(long, global = true, value_name = "MS", value_parser = parse_ms,
          allow_negative_numbers = true)]
    search_ms: Option<u64>,

    /// Pause between reading the count and writing it back (paying): the race window, at most
    /// 600000 [default: the notes' 1 s / --speed: 100 ms at --speed 10]
    #[arg(long, global = true, value_name = "MS", value_parser = parse_ms,
          allow_negative_numbers = true)]
    buy_ms: Option<u64>,

    /// No lock around buy: the race (数据安全问题)
    #[arg(long, global = true, conflicts_with = "join")]
    no_lock: bool,

    /// No lock, but start and join each buyer in turn: the notes' other fix
    #[arg(long, global = true)]
    join: bool,

    /// How a buyer writes db.json back
    #[arg(long, global = true, value_enum, value_name = "LEVEL", default_value_t = Durability::Rename)]
    durability: Durability,

    /// Shorthand for --durability fsync
    #[arg(long, global = true, conflicts_with = "durability")]
    fsync: bool,
}

fn parse_tickets(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_TICKETS => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of tickets from 0 to {MAX_TICKETS}")),
    }
}

fn parse_buyers(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > MAX_BUYERS => {
            Err(format!("{text:?} is more than {MAX_BUYERS} buyers (the cap)"))
        }
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

fn parse_ms(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(ms) if ms <= MAX_DELAY_MS => Ok(ms),
        _ => Err(format!("{text:?} is not a number of milliseconds from 0 to {MAX_DELAY_MS}")),
    }
}

fn main() -> std::process::ExitCode {
    common::demo::main(&[&BUYER], run)
}

fn run(mut cli: Cli) -> Result<()> {
    cli.common.own_children("part 4 sees its buyer stop with waitpid(WUNTRACED)");
    let args = &cli.ticket;
    let cmd = match cli.cmd {
        Some(cmd) => cmd,
        None if args.no_lock || args.join => Cmd::Run,
        None => Cmd::Tour,
    };
    if matches!(cmd, Cmd::Census { .. }) && args.join {
        return Err(bad_input("--join: census counts the interleavings with and without the lock"));
    }
    if matches!(cmd, Cmd::Tour | Cmd::Crash { .. }) && (args.no_lock || args.join) {
        return Err(bad_input(
            "--no-lock and --join choose the mode of `run` (the tour runs every mode; crash needs \
             the lock): try `mutex-ticket run --no-lock`",
        ));
    }
    let stepping = args.step || args.schedule.is_some();
    if stepping {
        common::stepper::only_in(matches!(cmd, Cmd::Run), "`run`", "mutex-ticket run --step")?;
    }
    let chosen = stepping || matches!(cmd, Cmd::Census { .. });
    let buyers = args.buyers.unwrap_or(if chosen { 2 } else { DEFAULT_BUYERS });
    if stepping && buyers > steps::MAX_STEP_BUYERS {
        return Err(bad_input(format!(
            "--buyers {buyers}: at most {} when you choose every step (--step, --schedule)",
            steps::MAX_STEP_BUYERS
        )));
    }
    if matches!(cmd, Cmd::Census { .. }) && !(2..=3).contains(&buyers) {
        return Err(bad_input(format!(
            "--buyers {buyers}: census counts every interleaving of 2 or 3 buyers"
        )));
    }
    if let Cmd::Crash { victim } = cmd
        && victim >= buyers
    {
        return Err(bad_input(format!(
            "--victim {victim}: there are only {buyers} buyers (路人0..{})",
            buyers - 1
        )));
    }
    let mut chooser = match args.schedule.as_deref() {
        _ if !stepping => None,
        schedule => Some(common::stepper::chooser_for(schedule, args.seed, buyers)?),
    };
    let (db, initial) = database::open(args.db.as_deref(), args.tickets)?;
    // With every step chosen, the pauses only slow the replay: none unless asked for.
    let ms = |flag: Option<u64>, notes: f64| {
        flag.unwrap_or_else(|| {
            if chosen { 0 } else { cli.common.notes_sleep(notes).as_millis() as u64 }
        })
    };
    let setup = Setup {
        db,
        initial,
        buyers,
        search_ms: ms(args.search_ms, NOTES_SEARCH_SECS),
        buy_ms: ms(args.buy_ms, NOTES_BUY_SECS),
        level: if args.fsync { Durability::Fsync } else { args.durability },
        method: cli.common.start_method,
        common: cli.common.clone(),
    };
    if let Some(chooser) = &mut chooser {
        let lock = !args.no_lock;
        let title =
            if lock { "Be the scheduler: with the lock" } else { "Be the scheduler: no lock" };
        report::section(title);
        steps::run_stepped(&setup, lock, chooser, false)?;
        return Ok(());
    }
    match cmd {
        Cmd::Census { sample } => {
            let seed = args.seed.unwrap_or(1);
            steps::census(&setup, false, seed, sample as usize)?;
            if !args.no_lock {
                steps::census(&setup, true, seed, sample as usize)?;
            }
            Ok(())
        }
        Cmd::Run if args.no_lock => {
            run_part(&setup, Mode::Race, "The race: no lock (数据安全问题)").map(drop)
        }
        Cmd::Run if args.join => {
            run_part(&setup, Mode::Join, "Start and join each buyer in turn").map(drop)
        }
        Cmd::Run => run_part(&setup, Mode::Lock, "A lock around buy (互斥锁)").map(drop),
        Cmd::Crash { victim } => run_crash(&setup, victim, &crash_title(victim)).map(drop),
        Cmd::Tour => tour(&setup),
    }
}

fn crash_title(victim: usize) -> String {
    format!("A buyer killed while it holds the lock (路人{victim}, SIGKILL)")
}

/// The README's first command: the race, then the fixes, then the crash, with the final counts.
fn tour(s: &Setup) -> Result<()> {
    let n = s.buyers;
    let t = tickets(s.initial);
    let race = run_part(s, Mode::Race, &format!("1. The race: {n} buyers, {t}, no lock"))?;
    let lock = run_part(s, Mode::Lock, "2. The fix: a lock around buy only (互斥锁)")?;
    explain_sidecar(s);
    let join = run_part(s, Mode::Join, "3. The other fix: start and join each buyer in turn")?;
    compare_lock_and_join(s, &lock, &join);
    let crash = run_crash(s, 0, &format!("4. {}", crash_title(0)))?;

    report::section("Summary");
    let rows = [&race, &lock, &join, &crash];
    let mut table = String::from("  part       sold  left  on sale  verdict          wall time");
    for o in rows {
        let verdict = match o.oversold() {
            0 => "invariant holds".to_owned(),
            n if n > 0 && o.mode == Mode::Race => format!("OVERSOLD BY {n}"),
            n => format!("{n:+} from outside"),
        };
        table.push_str(&format!(
            "\n  {:<9} {:>5} {:>5} {:>8}  {:<16} {:>6.2} s",
            o.mode.name(),
            o.sold,
            o.remaining,
            o.initial,
            verdict,
            o.wall_ms as f64 / 1000.0
        ));
    }
    report::plain(table);
    let parts: Vec<_> = rows.iter().map(|o| summary_data(o)).collect();
    common::event!("tour_summary", { "parts": parts }, "the database is still there: cat {}", s.db.path().display());
    Ok(())
}
