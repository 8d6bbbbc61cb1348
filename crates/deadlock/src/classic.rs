//! Part 1: the notes' deadlock. Two scientists and two things, the noodles (面条) and the fork
//! (叉子): scientist-1 takes the noodles then the fork, scientist-2 the fork then the noodles.
//! A `Barrier` lets both hold their first thing before either reaches for the second, so they
//! deadlock on every run; the child's watchdog finds the cycle, the parent shows the threads
//! asleep in `/proc` and kills the child.
#![cfg(target_os = "linux")]

use std::sync::Barrier;

use anyhow::{Result, bail};
use common::phase;
use common::process::Role;
use common::report;
use common::stepper::{self, Controller, PipeDir, Probe, State};
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
/// deadlock never lets happen. With `step_dir` (`--step`, `--schedule`) there is no barrier:
/// the parent grants each lock and unlock in the order chosen, and both may well eat.
fn scientists(args: Value) -> Result<()> {
    let step_dir = args["step_dir"].as_str().map(std::path::PathBuf::from);
    if let Some(dir) = &step_dir {
        stepper::join(dir, 0)?;
    }
    let board = Board::new(2);
    let barrier = Barrier::new(2);
    let barrier = if step_dir.is_some() { None } else { Some(&barrier) };
    let noodles = Mutex::new(());
    let fork = Mutex::new(());
    // Stepped, the deadlock comes when the learner makes it: the watchdog waits for it.
    let patience = if step_dir.is_some() { None } else { Some(PATIENCE) };
    let watchdog = Watchdog::start_for(board.clone(), "thread", patience)?;
    std::thread::scope(|s| -> Result<()> {
        let b = &board;
        let n: Thing = ("noodles", "面条", &noodles, A);
        let f: Thing = ("fork", "叉子", &fork, B);
        named::spawn_scoped(s, "scientist-1", move || scientist(0, b, barrier, n, f))?;
        named::spawn_scoped(s, "scientist-2", move || scientist(1, b, barrier, f, n))?;
        Ok(())
    })?;
    watchdog.stop();
    if step_dir.is_some() {
        common::event!("both_ate", {}, "both scientists ate: no deadlock this time");
        return Ok(());
    }
    bail!("both scientists ate: the forced deadlock did not happen")
}

fn scientist(i: usize, board: &Board, barrier: Option<&Barrier>, first: Thing, second: Thing) {
    stepper::worker(i);
    let ((a, a_notes, a_lock, a_mark), (b, _, b_lock, b_mark)) = (first, second);
    board.sit(i);
    board.wants(i, a);
    phase::step(a_mark.lock);
    let first = a_lock.lock();
    let holding_first = phase::span(a_mark.holding);
    board.got(i, a);
    stepper::note(|| format!("holds the {a}"));
    common::event!("took", { "lock": a }, "took the {a} (拿到{a_notes})");
    // Both scientists hold their first thing before either reaches for the second.
    if let Some(barrier) = barrier {
        barrier.wait();
    }
    board.wants(i, b);
    common::event!("reaching", { "lock": b }, "reaching for the {b}...");
    phase::step(b_mark.lock);
    let second = b_lock.lock(); // never returns: the other scientist holds it, and waits for ours
    let holding_second = phase::span(b_mark.holding);
    board.got(i, b);
    stepper::note(|| format!("holds the {a} and the {b}: ate"));
    common::event!("ate", {}, "ate");
    phase::step(b_mark.unlock);
    drop(holding_second);
    drop(second);
    board.released(i, b);
    stepper::note(|| format!("holds the {a}"));
    phase::step(a_mark.unlock);
    drop(holding_first);
    drop(first);
    board.released(i, a);
    stepper::note(|| "holds nothing".to_owned());
    stepper::done();
}

/// The guide, for its "Where the mechanism is" table: the source line of each step.
const GUIDE: &str = include_str!("../README.md");

/// The two locks as the steps name them: (step letter, thing).
const LOCKS: [(&str, &str); 2] = [("A", "noodles"), ("B", "fork")];

/// `classic --step` / `--schedule`: the same two scientists in their child process, without
/// the barrier; the parent grants each `lock` and `unlock` in the order the learner chooses
/// (the child's relay thread hands the turns to its threads). A scientist that reaches for a
/// thing the other holds is seen asleep in /proc and cannot be chosen; when both are, they
/// are deadlocked, and the child's detector says so too.
pub fn stepped(cli: &Cli) -> Result<()> {
    report::section("1. classic, step by step: you are the scheduler of the two scientists");
    report::say(
        "scientist-1 takes the noodles (lock A) then the fork (lock B); scientist-2 the fork \
         then the noodles. No barrier this time: you choose who makes the next step. \
         Goal: deadlock them.",
    );
    let mut chooser = stepper::chooser_for(cli.schedule.as_deref(), cli.seed, 2)?;
    let pipes = PipeDir::new(&std::env::temp_dir(), 1)?;
    let args = json!({ "step_dir": pipes.path() });
    let mut scene = Scene::start(cli, "classic", &ROLE, args)?;
    let names = vec!["scientist-1".to_owned(), "scientist-2".to_owned()];
    let mut ctl = Controller::pipes(pipes, names, vec![0, 0])?;
    let pid = scene.pid();
    let table = stepper::where_table(GUIDE);
    let show = |ctl: &Controller| {
        let held: Vec<String> = LOCKS
            .iter()
            .map(|(letter, thing)| match holder_of(ctl, letter) {
                Some(h) => format!("{thing} ({letter}): held by {}", ctl.workers[h].name),
                None => format!("{thing} ({letter}): free"),
            })
            .collect();
        let mut out = format!("{} (shared)", held.join(", "));
        out.push_str(&stepper::lanes(ctl, &table));
        out.push_str(&format!("\n  goal: deadlock them; steps so far: {}", ctl.schedule()));
        report::plain(out);
    };
    let ending = stepper::drive(&mut ctl, &mut chooser, false, |ctl, i| probe(ctl, pid, i), show)?;
    report::plain(format!(
        "timeline (one lane per thread, one column per step granted):\n{}",
        ctl.timeline()
    ));
    let schedule = ctl.schedule();
    let steps = ctl.granted.len();
    let deadlocked = ending == stepper::Ending::Deadlock;
    if deadlocked {
        scene.wait_deadlock(PATIENCE + PATIENCE / 3)?;
        scene.show_threads(
            cli,
            "the child's threads (ps -L): both asleep on a lock the other holds",
        );
        scene.kill(
            "a deadlock never ends by itself; the watchdog found the cycle (above), so the \
             program could have ended itself (seed 001: only the OS can, 只能靠操作系统强制终止); \
             here the demo ends the child",
        )?;
    } else {
        scene.join()?;
    }
    let verdict = if deadlocked {
        format!(
            "you deadlocked them in {steps} steps: each holds one lock and sleeps on the other's"
        )
    } else {
        format!(
            "both ate in {steps} steps: no deadlock; let each take its first thing before either reaches for the second"
        )
    };
    common::event!("schedule", { "schedule": schedule, "steps": steps, "won": deadlocked },
                   "{verdict}\nschedule: {schedule}\nreplay it: deadlock classic --schedule {schedule}");
    Ok(())
}

/// Is scientist `i` asleep on a lock the other holds? Only a `lock X` step whose lock another
/// holds can block; then its thread must be seen asleep (S) in /proc, with its wchan.
fn probe(ctl: &Controller, pid: i32, i: usize) -> Probe {
    let w = &ctl.workers[i];
    let (State::Running(step) | State::Blocked(step, _)) = &w.state else { return Probe::Going };
    let Some(letter) = step.strip_prefix("lock ") else { return Probe::Going };
    let Some(holder) = holder_of(ctl, letter).filter(|h| *h != i) else {
        return Probe::Going;
    };
    match common::ps::thread(pid, w.tid) {
        Some(t) if t.state == 'S' => Probe::Blocked(format!(
            "state S, wchan {}: sleeps on lock {letter}, held by {}",
            common::ps::wchan(w.tid),
            ctl.workers[holder].name
        )),
        Some(_) => Probe::Going,
        None => Probe::Gone,
    }
}

/// The scientist who holds lock `letter`, as the grants tell: granted `lock X`, went past it (the
/// kernel gave it the lock), and not granted `unlock X` since.
fn holder_of(ctl: &Controller, letter: &str) -> Option<usize> {
    let (lock, unlock) = (format!("lock {letter}"), format!("unlock {letter}"));
    (0..ctl.workers.len()).find(|&i| {
        let mine: Vec<&str> =
            ctl.granted.iter().filter(|(j, _)| *j == i).map(|(_, s)| s.as_str()).collect();
        let Some(k) = mine.iter().rposition(|s| *s == lock) else { return false };
        let past = k + 1 < mine.len() || matches!(ctl.workers[i].state, State::At(_) | State::Done);
        past && !mine[k + 1..].contains(&unlock.as_str())
    })
}
