//! Part 6: seed 001's balance program (线程锁) with two threads, `change_it(5)` and
//! `change_it(8)`, N calls each. The notes' code does not compile in Rust (the library's docs
//! show the error, checked by a `compile_fail` doctest); its nearest runnable form, a relaxed
//! load then store, loses updates, counted here; a `Mutex` and `fetch_add` are exact, and each
//! is timed against the racy loop in the same run.

use std::sync::atomic::Ordering;
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, bail};
use common::report;
use common::stepper::{self, Controller, Probe};
use common::threads::named;
use threads::{
    Account, Balance, NS, change_it_atomic, change_it_locked, change_it_racy, two_threads,
};

use crate::{Cli, Window, grouped, quiet_panics};

/// One variant's outcome.
struct Outcome {
    variant: &'static str,
    balance: i64,
    changes: u64,
    took: Duration,
}

impl Outcome {
    fn expected(calls: usize) -> u64 {
        (calls * NS.len()) as u64
    }

    fn report(&self, calls: usize, window: Option<Window>, racy: Option<Duration>) {
        let expected = Self::expected(calls);
        let lost = expected.saturating_sub(self.changes);
        let broke = lost > 0 || self.balance != 0;
        let cost = racy.map_or(String::new(), |r| {
            format!("; {:.1}x the racy loop's time", self.took.as_secs_f64() / r.as_secs_f64())
        });
        let verdict = if broke {
            format!("balance = {} (should be 0): the invariant broke", grouped(self.balance.into()))
        } else {
            "balance = 0: exact".to_string()
        };
        common::event!("race", { "variant": self.variant, "window": window.map(|w| format!("{w:?}").to_lowercase()),
                    "calls": expected, "changes": self.changes, "lost": lost,
                    "balance": self.balance, "ms": self.took.as_secs_f64() * 1e3,
                    "invariant_held": !broke }, "{}: lost {} of {} changes in {:.1} ms; {verdict}{cost}",
                self.variant,
                grouped(lost.into()),
                grouped(expected.into()),
                self.took.as_secs_f64() * 1e3);
    }
}

fn racy(calls: usize, window: Window) -> Result<Outcome> {
    let b = Balance::default();
    let took = match window {
        Window::None => two_threads(calls, |n| change_it_racy(&b, n, &|| {}))?,
        Window::Yield => two_threads(calls, |n| change_it_racy(&b, n, &std::thread::yield_now))?,
        Window::Barrier => {
            // Both threads read, then both write: one of the two writes is lost every time.
            let step = Barrier::new(NS.len());
            two_threads(calls, |n| {
                change_it_racy(&b, n, &|| {
                    step.wait();
                })
            })?
        }
    };
    Ok(Outcome {
        variant: "racy (load, then store)",
        balance: b.balance.into_inner(),
        changes: b.changes.into_inner(),
        took,
    })
}

fn locked(calls: usize) -> Result<Outcome> {
    let account = Mutex::new(Account::default());
    let took = two_threads(calls, |n| change_it_locked(&account, n))?;
    let account = account.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok(Outcome { variant: "Mutex", balance: account.balance, changes: account.changes, took })
}

fn atomic(calls: usize) -> Result<Outcome> {
    let b = Balance::default();
    let took = two_threads(calls, |n| change_it_atomic(&b, n))?;
    Ok(Outcome {
        variant: "fetch_add",
        balance: b.balance.into_inner(),
        changes: b.changes.into_inner(),
        took,
    })
}

/// A holder panics half-way through `change_it`: its guard still unlocks (the notes'
/// `finally`), and the mutex is marked poisoned, because the data may be half-changed.
fn poisoning() -> Result<()> {
    let account = Mutex::new(Account::default());
    let joined = quiet_panics(|| {
        std::thread::scope(|s| {
            named::spawn_scoped(s, "panicker", || {
                let mut guard = account.lock().unwrap_or_else(PoisonError::into_inner);
                guard.balance += 8;
                panic!("a panic half-way through change_it(8), with the lock held");
            })
            .map(|h| h.join().is_err())
        })
    })?;
    let poisoned = account.is_poisoned();
    let (balance, recovered) = match account.lock() {
        Ok(guard) => (guard.balance, false),
        Err(poison) => (poison.into_inner().balance, true),
    };
    account.clear_poison();
    common::event!("poisoned", { "panicked": joined, "poisoned": poisoned, "balance_seen": balance,
                "lock_returned_err": recovered, "cleared": !account.is_poisoned() }, "a thread panicked holding the lock: the guard unlocked anyway (no thread waits \
             forever), and the next lock() returned Err(PoisonError): poisoned = {poisoned}, \
             because the holder left balance = {balance} half-way. into_inner() still gives the \
             data; clear_poison() says it was repaired. Python's finally releases the lock and \
             says nothing.");
    if !(joined && poisoned && recovered) {
        bail!("poisoning did not behave as documented");
    }
    Ok(())
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("6. race: seed 001's balance program, two threads (线程锁)");
    let calls = cli.updates.unwrap_or(crate::UPDATES);
    report::say(format!(
        "The notes start one thread, change_it(8), which cannot race; here two, change_it(5) and \
         change_it(8), {} calls each. Written as in the notes (a plain shared variable) the \
         program does not compile: error[E0499] cannot borrow `balance` as mutable more than \
         once (a data race; see the library docs: cargo doc -p threads). The nearest program \
         that compiles reads with an atomic load and writes with an atomic store: each is \
         indivisible, the pair is not.",
        grouped(calls as i128)
    ));
    let guess = common::predict::ask(
        &cli.common,
        "lost",
        format!(
            "two threads, {} load-then-store updates each: are updates lost?",
            grouped(calls as i128)
        ),
        common::predict::Expect::Choice(&["none", "some"]),
    );
    let window = cli.window;
    let r = racy(calls, window)?;
    r.report(calls, Some(window), None);
    let lost = Outcome::expected(calls).saturating_sub(r.changes);
    let why = format!(
        "{lost} lost this run: a thread's store can overwrite a value the other read before it"
    );
    guess.reveal(if lost == 0 { "none" } else { "some" }, why);
    if r.changes == Outcome::expected(calls) && r.balance == 0 {
        report::say(
            "no update was lost this time: the threads did not overlap inside the window. The \
             race is still there: try --window yield, or --window barrier (certain).",
        );
    }
    let m = locked(calls)?;
    m.report(calls, None, Some(r.took));
    let a = atomic(calls)?;
    a.report(calls, None, Some(r.took));
    report::say(format!(
        "The costs: every racy store makes the other core's copy of the cache line stale, so two \
         racing threads slow each other down too; a contended Mutex often lets one thread run \
         many calls in a row.{}",
        if cfg!(debug_assertions) {
            " This is a debug build (unoptimized loops): for the costs that matter, run \
             `cargo run --release -p threads -- race` or `make bench`."
        } else {
            ""
        }
    ));
    if window != Window::None {
        report::say(
            "(the racy loop ran with something inside its window, so its time is not the bare \
             loop's: compare the costs from a run with --window none)",
        );
    }
    poisoning()?;
    report::say(
        "Python: the notes' loop loses nothing on CPython 3.10 and later, even with two threads: \
         a thread switch happens only at a call or a backward jump, and `balance = balance + n` \
         has neither between its read and its write. One call inside (`balance = ident(balance) \
         + n`) and it loses about a quarter of them. The GIL gives no atomicity, only coarse \
         switch points: `make bench` (suite threads) measures both, beside these loops.",
    );
    for o in [&m, &a] {
        if o.changes != Outcome::expected(calls) || o.balance != 0 {
            bail!("{} lost updates: {} of {}", o.variant, o.changes, Outcome::expected(calls));
        }
    }
    Ok(())
}

/// At most this many `change_it` calls per thread when every step is chosen.
const MAX_STEP_UPDATES: usize = 3;

/// The guide, for its "Where the mechanism is" table: the source line of each step.
const GUIDE: &str = include_str!("../README.md");

/// `race --step` / `--schedule`: the same two threads and the same racy `change_it`, each
/// waiting before every load and store until it is granted the step (a turn under a `Mutex` +
/// `Condvar`): the learner is the scheduler.
pub fn stepped(cli: &Cli) -> Result<()> {
    let calls = cli.updates.unwrap_or(1);
    if calls > MAX_STEP_UPDATES {
        return Err(common::demo::bad_input(format!(
            "--updates {calls}: at most {MAX_STEP_UPDATES} when you choose every step (--step, \
             --schedule): each call is 4 steps per thread"
        )));
    }
    let mut chooser = common::stepper::chooser_for(cli.schedule.as_deref(), cli.seed, NS.len())?;
    report::section("6. race, step by step: you are the scheduler of the two threads (线程锁)");
    report::say(format!(
        "change_it(5) and change_it(8), {calls} call(s) each: every `balance = balance + n` is a \
         load, then a store (twice per call: + n, then - n). The balance must end at 0. \
         Goal: lose an update."
    ));
    let b = Balance::default();
    let names: Vec<String> = NS.iter().map(|n| format!("change_it({n})")).collect();
    let mut ctl = Controller::local(names.clone())?;
    let table = stepper::where_table(GUIDE);
    let driven = std::thread::scope(|s| -> Result<stepper::Ending> {
        for (i, (&n, name)) in NS.iter().zip(&names).enumerate() {
            let b = &b;
            named::spawn_scoped(s, name, move || {
                stepper::worker(i);
                for _ in 0..calls {
                    change_it_racy(b, n, &|| {});
                }
                stepper::done();
            })?;
        }
        let show = |ctl: &Controller| {
            let mut out = format!(
                "balance = {}, changes = {} (shared)",
                b.balance.load(Ordering::Relaxed),
                b.changes.load(Ordering::Relaxed)
            );
            out.push_str(&stepper::lanes(ctl, &table));
            out.push_str(&format!("\n  goal: lose an update; steps so far: {}", ctl.schedule()));
            report::plain(out);
        };
        let driven = stepper::drive(&mut ctl, &mut chooser, false, |_, _| Probe::Going, show);
        if driven.is_err() {
            ctl.release(); // the threads run to their end, so that the scope can close
        }
        driven
    });
    driven?;
    let balance = b.balance.into_inner();
    let changes = b.changes.into_inner();
    report::plain(format!(
        "timeline (one lane per thread, one column per step granted):\n{}",
        ctl.timeline()
    ));
    let expected = (calls * NS.len()) as u64;
    let won = balance != 0 || changes != expected;
    let schedule = ctl.schedule();
    let verdict = if won {
        format!(
            "balance = {balance} (should be 0): you lost an update in {} steps: a store wrote \
             back a value loaded before the other thread's store",
            ctl.granted.len()
        )
    } else {
        format!(
            "balance = 0: no update lost in {} steps; let both threads load before either stores",
            ctl.granted.len()
        )
    };
    common::event!("schedule", { "schedule": schedule, "steps": ctl.granted.len(), "won": won,
                                 "balance": balance, "changes": changes, "calls": expected },
                   "{verdict}\nschedule: {schedule}\nreplay it: threads race --updates {calls} --schedule {schedule}");
    Ok(())
}
