//! Part 4: the dining philosophers. Five philosophers around a table, a fork between each two;
//! to eat, a philosopher needs both of his forks. If every one takes his left fork and then
//! reaches for the right one, they deadlock in a ring (forced here, as in part 1, by a
//! `Barrier` at the first meal). Then four ways out, each eating every meal, with meals per
//! second in one table:
//! - **one global order**: take the lower-numbered fork first; the last philosopher then
//!   reaches for fork-1 first, like his neighbour, and the ring cannot close;
//! - **try_lock and back off**: holding the left fork, *try* the right; if it is taken, put the
//!   left one down and wait a *random* moment (without the randomness they could all retry in
//!   step for ever: a livelock); the table counts the retries, beside the same dinner with a
//!   fixed back-off;
//! - **an arbiter**: at most four sit at the table at once (a semaphore of four seats), so
//!   one of the five forks is always free;
//! - **one lock for everything**: a single lock around every meal; correct, and the slowest,
//!   since only one philosopher eats at a time.
#![cfg(target_os = "linux")]

use std::sync::{Barrier, Condvar};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::Role;
use common::report;
use common::threads::named;
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Cli;
use crate::scene::{Board, PATIENCE, Scene, Watchdog};

/// The child in which the philosophers dine, one way or another.
pub static ROLE: Role = Role::new("dinner", dinner);

/// How long a meal takes, holding both forks.
const EAT: Duration = Duration::from_micros(500);
/// How long a philosopher thinks between meals, holding nothing.
const THINK: Duration = Duration::from_micros(500);
/// The longest random back-off after a failed `try_lock`.
const BACKOFF_MAX_US: u64 = 1000;

/// How the philosophers take their forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Way {
    /// Left fork, then right: deadlocks.
    LeftFirst,
    /// The lower-numbered fork first.
    Order,
    /// Left, then try the right; on failure put the left down and back off randomly.
    TryLock,
    /// The same, backing off for a fixed time: all retry in step (a livelock, for a while).
    TryLockFixed,
    /// At most N-1 at the table.
    Arbiter,
    /// One lock around every meal.
    OneLock,
}

impl Way {
    fn label(self, philosophers: usize) -> String {
        match self {
            Way::LeftFirst => "left fork first".into(),
            Way::Order => "one global order".into(),
            Way::TryLock => "try_lock, random back-off".into(),
            Way::TryLockFixed => "try_lock, fixed back-off".into(),
            Way::Arbiter => format!("arbiter ({} seats)", philosophers - 1),
            Way::OneLock => "one lock for everything".into(),
        }
    }
}

const FIXES: [Way; 5] = [Way::Order, Way::TryLock, Way::TryLockFixed, Way::Arbiter, Way::OneLock];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dinner {
    way: Way,
    philosophers: usize,
    meals: usize,
    seed: u64,
}

pub fn run(cli: &Cli) -> Result<()> {
    let n = cli.philosophers;
    report::section(format!(
        "4. philosophers: {n} philosophers, {n} forks, {} meals each",
        cli.meals
    ));
    report::say(format!(
        "philosopher-i needs fork-i (his left) and fork-{{i+1}} (his right; philosopher-{n}'s \
         right is fork-1). First, every one takes his left fork, then reaches for the right."
    ));
    let dinner = |way| Dinner { way, philosophers: n, meals: cli.meals, seed: fastrand::u64(..) };
    let mut scene = Scene::start(cli, "dinner", &ROLE, json!(dinner(Way::LeftFirst)))?;
    scene.wait_deadlock(PATIENCE + PATIENCE / 3)?;
    scene.show_threads(cli, "the child's threads (ps -L): every philosopher asleep, fork in hand");
    scene.kill("nobody at this table will ever eat again; the demo ends the child")?;

    report::say("Now the fixes, each in a child of its own, every meal counted:");
    let question = format!(
        "five fixes: one global order, try_lock with a random back-off, try_lock with a fixed \
         one, an arbiter ({} seats), one lock for everything: which eats the fewest meals per \
         second?",
        n - 1
    );
    let expect = common::predict::Expect::Choice(&[
        "order",
        "try-lock",
        "try-lock-fixed",
        "arbiter",
        "one-lock",
    ]);
    let guess = common::predict::ask(&cli.common, "slowest", question, expect);
    let mut rows = Vec::new();
    for way in FIXES {
        let mut scene =
            Scene::start(cli, &format!("dinner-{}", way_name(way)), &ROLE, json!(dinner(way)))?;
        let done = scene.wait_event("dinner_done", PATIENCE + PATIENCE / 3)?;
        scene.join()?;
        let eaten = done.data["eaten"].as_u64().unwrap_or(0);
        let expected = (n * cli.meals) as u64;
        if eaten != expected {
            bail!("{}: only {eaten} of {expected} meals were eaten", way.label(n));
        }
        rows.push(done.data);
    }
    let slowest = table(cli, &rows);
    guess.reveal(
        slowest.as_str(),
        "one lock lets one philosopher eat at a time where the others let several; on a loaded \
         machine close figures may swap",
    );
    Ok(())
}

fn way_name(way: Way) -> String {
    serde_json::to_value(way).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Prints the table of the fixes; returns the way (its `way` name) with the fewest meals/s.
fn table(cli: &Cli, rows: &[Value]) -> String {
    let n = cli.philosophers;
    let mut text = format!(
        "meals per second ({n} philosophers, {} meals each, {} µs a meal):\n  {:<28} {:>7} {:>9} {:>9} {:>9}",
        cli.meals,
        EAT.as_micros(),
        "fix",
        "meals",
        "wall ms",
        "meals/s",
        "retries"
    );
    let mut slowest: Option<(&str, f64, &str)> = None;
    for r in rows {
        let label = r["label"].as_str().unwrap_or("?");
        let rate = r["meals_per_s"].as_f64().unwrap_or(0.0);
        let retries = match r["retries"].as_u64() {
            Some(n) if r["way"].as_str().is_some_and(|w| w.starts_with("try-lock")) => {
                n.to_string()
            }
            _ => "-".into(),
        };
        text.push_str(&format!(
            "\n  {label:<28} {:>7} {:>9.1} {rate:>9.0} {retries:>9}",
            r["eaten"].as_u64().unwrap_or(0),
            r["wall_ms"].as_f64().unwrap_or(0.0)
        ));
        if slowest.is_none_or(|(_, s, _)| rate < s) {
            slowest = Some((label, rate, r["way"].as_str().unwrap_or("?")));
        }
    }
    let one_lock = Way::OneLock.label(n);
    let verdict = match slowest {
        Some((label, _, _)) if label == one_lock => format!(
            "{one_lock} was the slowest: only one philosopher eats at a time, where the others \
             let up to {} eat at once",
            n / 2
        ),
        Some((label, _, _)) => format!(
            "{label} was the slowest this time (a loaded machine shuffles close figures); one \
             lock lets only one philosopher eat at a time"
        ),
        None => String::new(),
    };
    let retries = |way: &str| {
        rows.iter().find(|r| r["way"] == way).and_then(|r| r["retries"].as_u64()).unwrap_or(0)
    };
    let (random, fixed) = (retries("try-lock"), retries("try-lock-fixed"));
    // Which back-off retried more is this run's figure; the lesson is said either way.
    let this_time = if fixed > random {
        "the fixed one more, as expected"
    } else {
        "this time the fixed one no more than the random one: the jitter of sleep() broke the \
         symmetry by itself"
    };
    let livelock = format!(
        "try_lock retried {random} times with a random back-off, {fixed} with a fixed one \
         ({this_time}): philosophers who put their fork down and wait the same time pick it up \
         again in step and collide again (a livelock, 活锁, while it lasts); a random pause \
         breaks the symmetry. The jitter of sleep() breaks it too, sooner or later."
    );
    report::event(
        "meals_table",
        json!({ "rows": rows, "verdict": verdict, "retries_random": random,
                "retries_fixed": fixed }),
        text,
    );
    report::say(verdict);
    report::say(livelock);
    slowest.map_or("?", |(_, _, way)| way).to_string()
}

/// What one philosopher did.
#[derive(Debug, Default, Clone, Copy)]
struct Plate {
    meals: usize,
    retries: u64,
}

/// At most `seats` philosophers at the table at once: a counting semaphore on Mutex + Condvar.
#[derive(Debug)]
struct Arbiter {
    free: std::sync::Mutex<usize>,
    freed: Condvar,
}

impl Arbiter {
    fn sit(&self) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    fn leave(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.freed.notify_one();
    }
}

/// Everything the philosophers share.
#[derive(Debug)]
struct Table {
    dinner: Dinner,
    forks: Vec<Mutex<()>>,
    board: std::sync::Arc<Board>,
    barrier: Barrier,
    arbiter: Arbiter,
    one_lock: Mutex<()>,
}

impl Table {
    fn fork_name(&self, f: usize) -> String {
        format!("fork-{}", f + 1)
    }

    /// Takes fork `f` for philosopher `i`, writing it on the board.
    fn take(&self, i: usize, f: usize) -> MutexGuard<'_, ()> {
        let name = self.fork_name(f);
        self.board.wants(i, &name);
        let guard = self.forks[f].lock();
        self.board.got(i, &name);
        guard
    }

    fn put(&self, i: usize, f: usize, guard: MutexGuard<'_, ()>) {
        drop(guard);
        self.board.released(i, &self.fork_name(f));
    }

    fn dine(&self, i: usize) -> Plate {
        let n = self.dinner.philosophers;
        let (left, right) = (i, (i + 1) % n);
        let mut rng = fastrand::Rng::with_seed(self.dinner.seed.wrapping_add(i as u64));
        let mut plate = Plate::default();
        self.board.sit(i);
        for meal in 0..self.dinner.meals {
            match self.dinner.way {
                Way::LeftFirst => {
                    let l = self.take(i, left);
                    if meal == 0 {
                        common::event!("took", { "fork": self.fork_name(left) }, "took {} (left), reaching for {}...",
                                self.fork_name(left),
                                self.fork_name(right));
                        // Every philosopher holds his left fork before any reaches right.
                        self.barrier.wait();
                    }
                    let r = self.take(i, right); // the ring closes here: every right fork is a neighbour's left
                    eat();
                    self.put(i, right, r);
                    self.put(i, left, l);
                }
                Way::Order => {
                    let (first, second) = (left.min(right), left.max(right));
                    let a = self.take(i, first);
                    let b = self.take(i, second);
                    eat();
                    self.put(i, second, b);
                    self.put(i, first, a);
                }
                Way::TryLock | Way::TryLockFixed => loop {
                    let l = self.take(i, left);
                    if meal == 0 && plate.retries == 0 {
                        // The same start as the deadlock: every left fork in hand.
                        self.barrier.wait();
                    }
                    if let Some(r) = self.forks[right].try_lock() {
                        eat();
                        drop(r);
                        self.put(i, left, l);
                        break;
                    }
                    self.put(i, left, l);
                    plate.retries += 1;
                    // A random pause, or all of them would retry in step (a livelock).
                    let pause = match self.dinner.way {
                        Way::TryLock => rng.u64(0..=BACKOFF_MAX_US),
                        _ => BACKOFF_MAX_US / 2,
                    };
                    std::thread::sleep(Duration::from_micros(pause));
                },
                Way::Arbiter => {
                    self.arbiter.sit();
                    let l = self.take(i, left);
                    let r = self.take(i, right);
                    eat();
                    self.put(i, right, r);
                    self.put(i, left, l);
                    self.arbiter.leave();
                }
                Way::OneLock => {
                    let everything = self.one_lock.lock();
                    eat();
                    drop(everything);
                }
            }
            plate.meals += 1;
            std::thread::sleep(THINK);
        }
        plate
    }
}

fn eat() {
    std::thread::sleep(EAT);
}

/// The child: the philosophers and a watchdog; reports the meals (event `dinner_done`).
fn dinner(args: Value) -> Result<()> {
    let dinner: Dinner = serde_json::from_value(args).context("decoding the dinner")?;
    let n = dinner.philosophers;
    let table = Table {
        forks: (0..n).map(|_| Mutex::new(())).collect(),
        board: Board::new(n),
        barrier: Barrier::new(n),
        arbiter: Arbiter { free: std::sync::Mutex::new(n - 1), freed: Condvar::new() },
        one_lock: Mutex::new(()),
        dinner,
    };
    let watchdog = Watchdog::start(table.board.clone(), "philosopher")?;
    let began = Instant::now();
    let plates = std::thread::scope(|s| -> Result<Vec<Plate>> {
        let table = &table;
        let handles = (0..n)
            .map(|i| {
                named::spawn_scoped(s, &format!("philosopher-{}", i + 1), move || table.dine(i))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(handles.into_iter().map(|h| h.join().unwrap_or_default()).collect())
    })?;
    let wall = began.elapsed();
    watchdog.stop();
    let eaten: usize = plates.iter().map(|p| p.meals).sum();
    let retries: u64 = plates.iter().map(|p| p.retries).sum();
    let way = table.dinner.way;
    let rate = eaten as f64 / wall.as_secs_f64().max(1e-9);
    common::event!("dinner_done", { "way": way, "label": way.label(n), "eaten": eaten,
        "expected": n * table.dinner.meals,
        "each": plates.iter().map(|p| p.meals).collect::<Vec<_>>(),
        "retries": retries, "wall_ms": wall.as_secs_f64() * 1000.0, "meals_per_s": rate,
        "deadlock": false }, "{}: {eaten} of {} meals eaten in {:.1} ms ({rate:.0} meals/s){}; no deadlock",
    way.label(n),
    n * table.dinner.meals,
    wall.as_secs_f64() * 1000.0,
    if matches!(way, Way::TryLock | Way::TryLockFixed) {
        format!(", {retries} retries")
    } else {
        String::new()
    });
    Ok(())
}
