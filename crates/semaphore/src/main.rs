//! semaphore — `Semaphore` and `BoundedSemaphore` (信号量): three places for ten people, with
//! threads and with processes, one release too many, and what a holder killed inside does to
//! each kind of semaphore.
//!
//! A semaphore is a counter of free places: `acquire` takes one and sleeps while there is none,
//! `release` gives one back and wakes a sleeper. A lock (互斥锁) is close to a bounded semaphore
//! of one place (a `Lock` refuses a second `release`, as `BoundedSemaphore(1)` does).
//!
//! Three parts, each a subcommand (no subcommand runs them all, in a few seconds):
//! 1. `threads`: `Semaphore(3)` and ten threads `person-1`..`person-10` wanting in (the course's
//!    ten people and three rooms, not in the notes), each inside for a random moment (the
//!    classic example's `random.randint(1, 3)` seconds, scaled by `--speed`). A counter taken inside says how many
//!    are in: never more than three; every one of the ten gets in. The thread table shows three
//!    sleeping inside (`hrtimer_nanosleep`) and seven asleep in `acquire` (`futex_do_wait`).
//!    `--timeline` draws a lane per thread, `#` while inside; `--places 1` excludes as a lock
//!    does (BoundedSemaphore(1) is the closer match: an extra `release` of `Semaphore(1)` lets
//!    two in, of a `Lock` raises).
//! 2. `bounded`: one `release` too many: `Semaphore(3)` silently becomes a semaphore of four
//!    places (four `acquire(blocking=False)` succeed); `BoundedSemaphore(3)` refuses with
//!    `ValueError: Semaphore released too many times`.
//! 3. `processes`: the same ten people as processes through `py_multiprocessing::sync`'s
//!    `ProcessSemaphore(3)`. Then three holders fill the places, a late-comer sleeps in
//!    `acquire` (`S`), and one holder is killed with SIGKILL inside: with ours, the kernel gives
//!    its place back and the late-comer gets in, told whose place it was; with a POSIX named
//!    semaphore (`sem_open`, what CPython's `multiprocessing.Semaphore` is; visible as
//!    `/dev/shm/sem.NAME`) the place is lost for good: the late-comer gives up, and once every
//!    living holder has released, the value is stuck one low.
//!
//! **What to watch for**
//! - part 1: `inside` never exceeds the places; the waiters' `wchan` is `futex_do_wait`: a
//!   thread asleep in `acquire` uses no CPU;
//! - part 2: the value 4 after the extra release, and the `ValueError` of the bounded one;
//! - part 3: the late-comer in state `S` (`ps -o pid,stat,wchan,comm`), the holder's exit code
//!   `-SIGKILL`, then `value 3` for ours and `value 2` for `sem_open`'s, for good.
//!
//! **Run it**
//! ```text
//! make demo-semaphore                               # the three parts, a few seconds
//! make demo-semaphore ARGS='threads --timeline'     # a lane per person, # while inside
//! make demo-semaphore ARGS='threads --places 1'     # one at a time, as a lock
//! make demo-semaphore ARGS='processes --hold 20'    # pauses before the kill; elsewhere:
//! ps -o pid,ppid,stat,wchan:20,comm -p <the pids it prints>;  ls -l /dev/shm/sem.*
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//! == 1. Semaphore(3): ten people, three rooms (信号量) ==
//!   0.001s [ 51020/51023 person-1] person-1 is in (1 inside), for 0.2s
//!   0.001s [ 51020/51025 person-3] person-3 is in (3 inside), for 0.1s
//!   0.002s [ 51020/51026 person-4] person-4 waits in sem.acquire(): every place is taken
//!   0.105s [ 51020/51025 person-3] person-3 leaves (2 inside)
//!   0.801s [ 51020 semaphore] 10 of 10 got in, at most 3 inside at once: Semaphore(3) held
//! == 2. One release too many: Semaphore grows, BoundedSemaphore refuses ==
//!   0.802s [ 51020 semaphore] Semaphore(3): release() once too often: no error, and now 4 places
//!   0.802s [ 51020 semaphore] BoundedSemaphore(3): release() once too often -> ValueError: ...
//! == 3. Processes: ProcessSemaphore(3), then a holder killed inside ==
//!   1.950s [ 51020 semaphore] kill -9 51071 (holder-1, inside place 0)
//!   1.971s [ 51074 late-comer] late-comer is in (place 0): its holder, pid 51071, died holding it
//!   2.010s [ 51020 semaphore] ours: value 3 after the kill: the place came back
//!   2.410s [ 51099 late-comer] late-comer gave up after 0.2s: no place came free
//!   2.412s [ 51020 semaphore] sem_open: value 2 with every living holder gone: one place lost for good
//! ```
//!
//! Platform notes: the thread parts run anywhere; the processes part needs Linux (memfd,
//! robust mutexes, futexes, `/proc`) and says so elsewhere.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

mod bounded;
#[cfg(target_os = "linux")]
mod processes;
common::linux_only_part!(processes, "memfd, robust mutexes, futexes, /proc");
mod rooms;

/// The course's example: ten people, three rooms.
const PEOPLE: usize = 10;
const PLACES: usize = 3;
/// The most people a run may have (threads, or processes in part 3).
const MAX_PEOPLE: usize = 100;
/// The classic example's `time.sleep(random.randint(1, 3))` inside: from 1 to 3 seconds, scaled by --speed.
const STAY_S: (u64, u64) = (1, 3);

/// semaphore: Semaphore and BoundedSemaphore (信号量) for threads and for processes: a counter
/// of free places; and what a holder killed inside does to it.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// People (threads, or processes in part 3) who want in, from 1 to 100
    #[arg(long, global = true, value_name = "N", default_value_t = PEOPLE,
          value_parser = count_in(1..=MAX_PEOPLE))]
    people: usize,

    /// Places of the semaphore, from 1 to 64 (1: a lock)
    #[arg(long, global = true, value_name = "N", default_value_t = PLACES,
          value_parser = count_in(1..=MAX_PLACES))]
    places: usize,

    /// Draw part 1 as lanes, one per thread, # while inside
    #[arg(long, global = true)]
    timeline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. Semaphore(3) and ten threads: never more than three inside
    Threads,
    /// 2. One release too many: Semaphore grows, BoundedSemaphore refuses (ValueError)
    Bounded,
    /// 3. Processes: ProcessSemaphore(3); a holder killed inside, ours beside sem_open's
    Processes,
}

common::demo_cli!(Cli, Cmd);

/// The cap is the process semaphore's (`MAX_PLACES`), so every part takes the same flag.
const MAX_PLACES: usize = 64;

fn main() -> ExitCode {
    common::demo::main_parts(
        &processes::ROLES,
        &[
            (Cmd::Threads, rooms::run),
            (Cmd::Bounded, bounded::run),
            (Cmd::Processes, processes::run),
        ],
    )
}

/// A person's random stay inside, in milliseconds: the classic example's `random.randint(1, 3)` seconds,
/// scaled by `--speed`.
fn stay_ms(cli: &Cli, rng: &mut fastrand::Rng) -> u64 {
    let seconds = rng.u64(STAY_S.0..=STAY_S.1) as f64;
    cli.common.notes_sleep(seconds).as_millis() as u64
}

/// The most inside at once, as the counter said, against the places: the demo's invariant.
fn check_rooms(
    kind: &str,
    people: usize,
    places: usize,
    entered: usize,
    max: usize,
) -> anyhow::Result<()> {
    use common::report;
    use serde_json::json;
    let held = max <= places && entered == people;
    report::event(
        "rooms",
        json!({ "kind": kind, "people": people, "places": places, "entered": entered,
                "max_inside": max, "held": held }),
        if held {
            format!(
                "{entered} of {people} got in, at most {max} inside at once: the semaphore of \
                 {places} held{}",
                if places == 1 {
                    " (one at a time, as under a lock, 互斥锁; but one release() too many lets \
                     two in, as part 2 shows, where Lock.release() raises RuntimeError: the \
                     closer match is BoundedSemaphore(1))"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "BROKEN: {entered} of {people} got in, and {max} were inside at once with \
                 {places} place(s)"
            )
        },
    );
    if !held {
        anyhow::bail!("{kind}: the semaphore did not hold: {max} inside with {places} place(s)");
    }
    Ok(())
}
