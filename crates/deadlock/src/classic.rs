//! Part 1: the notes' deadlock. Two scientists and two things, the noodles (面条) and the fork
//! (叉子): scientist-1 takes the noodles then the fork, scientist-2 the fork then the noodles.
//! A `Barrier` lets both hold their first thing before either reaches for the second, so they
//! deadlock on every run; the child's watchdog finds the cycle, the parent shows the threads
//! asleep in `/proc` and kills the child.

use std::sync::Barrier;

use anyhow::{Result, bail};
use common::phase;
use common::process::Role;
use common::report;
use common::threads::named;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::Cli;
use crate::scene::{Board, PATIENCE, Scene, Watchdog};

/// The child in which the two scientists deadlock.
pub static ROLE: Role = Role::new("classic", scientists);

/// A thing on the table: its name, its name in the notes, its lock, and its letter in the step
/// marks (`lock A`, `holding A`).
type Thing<'a> = (&'a str, &'a str, &'a Mutex<()>, Letter);

/// The step marks of one lock (`--step`, `--schedule`, `--trace`; nothing without a listener).
#[derive(Clone, Copy)]
struct Letter {
    lock: &'static str,
    holding: &'static str,
    unlock: &'static str,
}

const A: Letter = Letter { lock: "lock A", holding: "holding A", unlock: "unlock A" };
const B: Letter = Letter { lock: "lock B", holding: "holding B", unlock: "unlock B" };

pub fn run(cli: &Cli) -> Result<()> {
    report::section(
        "1. classic: two scientists, the noodles and the fork, taken in opposite orders",
    );
    report::say(
        "科学家吃面 (the course's classic example, not in the notes): scientist-1 takes the \
         noodles (面条) then the fork (叉子); scientist-2 the fork then the noodles. A Barrier makes both hold their first thing before either reaches for \
         the second: the bad interleaving on every run, not by luck. They live in a child process.",
    );
    let question = "each holds one thing and reaches for the other's: how many of the two eat?";
    let guess = common::predict::ask(&cli.common, "ate", question, common::predict::Expect::Count);
    let mut scene = Scene::start(cli, "classic", &ROLE, json!({}))?;
    let found = scene.wait_deadlock(PATIENCE + PATIENCE / 3)?;
    let stuck = found.data["threads"].as_array().map_or(0, Vec::len);
    let why = format!("{stuck} threads wait for each other's lock: a cycle, so none can go on");
    guess.reveal(2usize.saturating_sub(stuck), why);
    scene.show_threads(
        cli,
        "the child's threads (ps -L): asleep in the kernel, none will ever wake",
    );
    scene.kill(
        "threads that wait for each other never wake up by themselves. Seed 001 says only the OS \
         can end them (只能靠操作系统强制终止); but this program found the cycle itself (its \
         watchdog, above) and could have backed off or ended itself, and fcntl record locks \
         have the kernel refuse the cycle with EDEADLK (part 5). Here the demo ends the child",
    )?;
    report::say(
        "In Python the same two threads hang for ever: threading.Lock has no detector, and \
         faulthandler.dump_traceback_later() can dump their stacks but finds no cycle. Here the \
         program found its own deadlock (parking_lot's detector builds the wait-for graph of its \
         locks) and could end itself; the usual cure is not to make one: one order for all \
         locks (part 4).",
    );
    Ok(())
}

/// The child: two scientists and a watchdog. Returns only if they both ate, which a forced
/// deadlock never lets happen.
fn scientists(_: Value) -> Result<()> {
    let board = Board::new(2);
    let barrier = Barrier::new(2);
    let noodles = Mutex::new(());
    let fork = Mutex::new(());
    let watchdog = Watchdog::start(board.clone(), "thread")?;
    std::thread::scope(|s| -> Result<()> {
        let (b, barrier) = (&board, &barrier);
        let n: Thing = ("noodles", "面条", &noodles, A);
        let f: Thing = ("fork", "叉子", &fork, B);
        named::spawn_scoped(s, "scientist-1", move || scientist(0, b, barrier, n, f))?;
        named::spawn_scoped(s, "scientist-2", move || scientist(1, b, barrier, f, n))?;
        Ok(())
    })?;
    watchdog.stop();
    bail!("both scientists ate: the forced deadlock did not happen")
}

fn scientist(i: usize, board: &Board, barrier: &Barrier, first: Thing, second: Thing) {
    let ((a, a_notes, a_lock, a_mark), (b, _, b_lock, b_mark)) = (first, second);
    board.sit(i);
    board.wants(i, a);
    phase::step(a_mark.lock);
    let first = a_lock.lock();
    let holding_first = phase::span(a_mark.holding);
    board.got(i, a);
    report::event("took", json!({ "lock": a }), format!("took the {a} (拿到{a_notes})"));
    // Both scientists hold their first thing before either reaches for the second.
    barrier.wait();
    board.wants(i, b);
    report::event("reaching", json!({ "lock": b }), format!("reaching for the {b}..."));
    phase::step(b_mark.lock);
    let second = b_lock.lock(); // never returns: the other scientist holds it, and waits for ours
    let holding_second = phase::span(b_mark.holding);
    board.got(i, b);
    report::event("ate", json!({}), "ate");
    phase::step(b_mark.unlock);
    drop(holding_second);
    drop(second);
    board.released(i, b);
    phase::step(a_mark.unlock);
    drop(holding_first);
    drop(first);
    board.released(i, a);
}
