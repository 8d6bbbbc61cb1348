//! Be the scheduler: the buyers, real processes, wait before each of their steps for a grant
//! (`run --step`, `run --schedule`), and `census` counts every interleaving with the step model
//! below, then replays them on the kernel to check that the model told the truth.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use common::predict;
use common::process::Process;
use common::report;
use common::stepper::{self, Chooser, Controller, PipeDir, Probe};
use serde_json::json;

use crate::database::store_error;
use crate::parts::{Mode, Setup, finish, interrupted};
use mutex_ticket::buyer::{Buyer, NO_TICKET, tickets};

/// A buyer's steps without the lock, as `buyer.rs` marks them.
pub const STEPS_NO_LOCK: &[&str] = &["search", "read", "pay", "write"];
/// With the lock: flock before the read, unlock after the write.
pub const STEPS_LOCK: &[&str] = &["search", "lock", "read", "pay", "write", "unlock"];
/// No more buyers than this when someone chooses every step.
pub const MAX_STEP_BUYERS: usize = 3;
/// How many random schedules of 3 buyers the census replays on the kernel by default.
pub const SAMPLE: u32 = 24;

/// The guide, for its "Where the mechanism is" table: the source line of each step.
const GUIDE: &str = include_str!("../README.md");

/// What a stepped run came to on the kernel.
#[derive(Debug)]
pub struct Real {
    pub sold: u64,
    pub remaining: u64,
    pub initial: u64,
    pub grants: Vec<usize>,
    /// The kernel's choices: after grant number k (from 1), this flock waiter got the lock.
    pub woke: Vec<(usize, usize)>,
}

impl Real {
    pub fn oversold(&self) -> i64 {
        self.sold as i64 + self.remaining as i64 - self.initial as i64
    }
}

/// One run of the buyers in which `chooser` picks every step (a learner at a terminal sees the
/// state before each); `quiet` (the census's replays) prints nothing but errors.
pub fn run_stepped(s: &Setup, lock: bool, chooser: &mut Chooser, quiet: bool) -> Result<Real> {
    s.prepare()?;
    let started = Instant::now();
    let pipes = PipeDir::new(&std::env::temp_dir(), s.buyers)?;
    let mut buyers = Vec::with_capacity(s.buyers);
    for number in 0..s.buyers {
        let buyer = Buyer {
            number,
            db: s.db.path().to_owned(),
            use_lock: lock,
            search_ms: s.search_ms,
            buy_ms: s.buy_ms,
            level: s.level,
            stop_in_lock: false,
            step_dir: Some(pipes.path().to_owned()),
            quiet,
        };
        let mut process =
            Process::from_run(format!("buyer-{number}"), buyer).start_method(s.method);
        process.start()?;
        buyers.push(process);
    }
    let names = (0..s.buyers).map(|n| format!("路人{n}")).collect();
    let mut ctl = Controller::pipes(pipes, names, (0..s.buyers).collect())?;
    let lock_path = s.db.lock_path().to_owned();
    let table = stepper::where_table(GUIDE);
    let buyer_pids: Vec<Option<i32>> = buyers.iter().map(Process::pid).collect();
    let driven = stepper::drive(
        &mut ctl,
        chooser,
        quiet,
        |_, i| probe(&mut buyers[i], &lock_path),
        |ctl| show_state(s, lock, ctl, &buyer_pids, &table),
    );
    if let Err(e) = driven {
        for buyer in &mut buyers {
            let _ = buyer.kill();
            let _ = buyer.join();
        }
        if !quiet && !ctl.granted.is_empty() {
            report::say(format!(
                "the run ended after {} steps (the buyers killed and reaped): schedule so far {}",
                ctl.granted.len(),
                ctl.schedule()
            ));
        }
        return Err(e);
    }
    for buyer in &mut buyers {
        buyer.join()?;
    }
    interrupted()?;
    let grants: Vec<usize> = ctl.granted.iter().map(|(i, _)| *i).collect();
    let real = if quiet {
        let sold = buyers.iter().filter(|b| b.exitcode() == Some(0)).count() as u64;
        if let Some(b) = buyers.iter().find(|b| !matches!(b.exitcode(), Some(0 | NO_TICKET))) {
            bail!("{b} failed in a census replay (schedule {})", ctl.schedule());
        }
        let remaining = s.db.read_count().map_err(store_error)?;
        Real { sold, remaining, initial: s.initial, grants, woke: ctl.woke.clone() }
    } else {
        let mode = if lock { Mode::Lock } else { Mode::Race };
        let o = finish(s, mode, &buyers, None, started.elapsed().as_millis() as u64)?;
        Real {
            sold: o.sold,
            remaining: o.remaining,
            initial: s.initial,
            grants,
            woke: ctl.woke.clone(),
        }
    };
    if !quiet {
        let steps = real.grants.len();
        report::plain(format!(
            "timeline (one lane per buyer, one column per step granted):\n{}",
            ctl.timeline()
        ));
        let schedule = ctl.schedule();
        let won = real.oversold() > 0;
        let verdict = if won {
            format!("you made it oversell by {} in {steps} steps", real.oversold())
        } else if lock {
            format!("no oversell in {steps} steps: the lock let one buyer at a time read and write")
        } else {
            format!(
                "no oversell this time ({steps} steps): let both buyers read before either writes"
            )
        };
        common::event!("schedule", { "schedule": schedule, "steps": steps, "won": won,
                                     "oversold": real.oversold(), "woke": real.woke },
                       "{verdict}\nschedule: {schedule}\nreplay it: mutex-ticket run{} --buyers {} --tickets {} --schedule {schedule}",
                       if lock { "" } else { " --no-lock" }, s.buyers, s.initial);
    }
    Ok(real)
}

/// Is buyer `p` asleep in flock, waiting for the lock? From /proc/locks (a `->` line: a
/// blocked request) and its state letter and wchan in /proc/PID.
fn probe(p: &mut Process, lock_path: &Path) -> Probe {
    if !p.is_alive() {
        return Probe::Gone;
    }
    let Some(pid) = p.pid() else { return Probe::Gone };
    let (holders, waiters) = common::locks::holders_and_waiters(lock_path).unwrap_or_default();
    if waiters.contains(&pid) && common::ps::state_of(pid) == Some('S') {
        let holder = holders.first().map_or("another process".to_owned(), |h| format!("pid {h}"));
        Probe::Blocked(format!(
            "state S, wchan {}: waits in flock for {} to unlock",
            common::ps::wchan(pid),
            holder
        ))
    } else {
        Probe::Going
    }
}

/// The shared state, each buyer's own, and the line its next step runs.
fn show_state(
    s: &Setup,
    lock: bool,
    ctl: &Controller,
    pids: &[Option<i32>],
    table: &[(String, String, String)],
) {
    let text = std::fs::read_to_string(s.db.path()).unwrap_or_default();
    let mut out = format!("db.json: {} (shared)", text.trim_end());
    if lock {
        let (holders, _) = common::locks::holders_and_waiters(s.db.lock_path()).unwrap_or_default();
        let who: Vec<String> = holders
            .iter()
            .map(|h| match pids.iter().position(|p| *p == Some(*h)) {
                Some(n) => format!("路人{n}"),
                None => format!("pid {h}"),
            })
            .collect();
        let held =
            if who.is_empty() { "free".to_owned() } else { format!("held by {}", who.join(", ")) };
        let name = s.db.lock_path().file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&format!(", {name}: {held} (/proc/locks)"));
    }
    out.push_str(&stepper::lanes(ctl, table));
    let goal = if lock {
        "goal: make it oversell (the lock will try to stop you)"
    } else {
        "goal: make it oversell (sell more tickets than db.json had)"
    };
    out.push_str(&format!("\n  {goal}; steps so far: {}", ctl.schedule()));
    report::plain(out);
}

// ---------------------------------------------------------------------------------------------
// The step model

/// The state of the model: db.json's count, each buyer's place in its steps and what it read,
/// and the lock.
#[derive(Debug, Clone)]
struct Model {
    steps: &'static [&'static str],
    count: u64,
    sold: u64,
    next: Vec<usize>,
    read: Vec<u64>,
    holder: Option<usize>,
    blocked: Vec<bool>,
}

impl Model {
    fn new(buyers: usize, tickets: u64, lock: bool) -> Model {
        Model {
            steps: if lock { STEPS_LOCK } else { STEPS_NO_LOCK },
            count: tickets,
            sold: 0,
            next: vec![0; buyers],
            read: vec![0; buyers],
            holder: None,
            blocked: vec![false; buyers],
        }
    }

    fn choosable(&self) -> Vec<usize> {
        (0..self.next.len())
            .filter(|&i| !self.blocked[i] && self.next[i] < self.steps.len())
            .collect()
    }

    /// Buyer `i` makes its next step. Returns the flock waiters if it unlocked with some
    /// waiting: the kernel then picks one ([`Model::wake`]).
    fn step(&mut self, i: usize) -> Vec<usize> {
        let step = self.steps[self.next[i]];
        self.next[i] += 1;
        match step {
            "lock" if self.holder.is_some() => self.blocked[i] = true,
            "lock" => self.holder = Some(i),
            "read" => self.read[i] = self.count,
            "write" if self.read[i] > 0 => {
                self.count = self.read[i] - 1;
                self.sold += 1;
            }
            "unlock" => {
                self.holder = None;
                return (0..self.blocked.len()).filter(|&w| self.blocked[w]).collect();
            }
            _ => {}
        }
        Vec::new()
    }

    fn wake(&mut self, w: usize) {
        self.blocked[w] = false;
        self.holder = Some(w);
    }

    fn oversold(&self, tickets: u64) -> i64 {
        self.sold as i64 + self.count as i64 - tickets as i64
    }
}

/// Every schedule's outcome: oversold by k → how many schedules, and the first one found.
#[derive(Debug, Default)]
pub struct Tally {
    pub total: u64,
    pub outcomes: BTreeMap<i64, (u64, Vec<usize>)>,
    /// Every schedule, with its outcome, when asked to keep them.
    pub kept: Vec<(Vec<usize>, i64)>,
}

/// Enumerates every interleaving of `buyers` buyers' steps (lock-aware: a buyer blocked in
/// flock cannot be granted a step; where several wait, each choice of the kernel counts).
pub fn census_model(buyers: usize, tickets: u64, lock: bool, keep: bool) -> Tally {
    let mut tally = Tally::default();
    let mut path = Vec::new();
    walk(&Model::new(buyers, tickets, lock), tickets, &mut path, &mut tally, keep);
    tally
}

fn walk(m: &Model, tickets: u64, path: &mut Vec<usize>, tally: &mut Tally, keep: bool) {
    let choosable = m.choosable();
    if choosable.is_empty() {
        let over = m.oversold(tickets);
        tally.total += 1;
        let entry = tally.outcomes.entry(over).or_insert((0, path.clone()));
        entry.0 += 1;
        if keep {
            tally.kept.push((path.clone(), over));
        }
        return;
    }
    for i in choosable {
        let mut next = m.clone();
        let waiters = next.step(i);
        path.push(i);
        if waiters.is_empty() {
            walk(&next, tickets, path, tally, keep);
        } else {
            for w in waiters {
                let mut woken = next.clone();
                woken.wake(w);
                walk(&woken, tickets, path, tally, keep);
            }
        }
        path.pop();
    }
}

/// The model's outcome of one real run: its grants, with the kernel's choices where it made
/// them, and how many times it had a choice (several flock waiters). Fails if the model would
/// not allow the run (then the model is wrong).
pub fn model_outcome(
    buyers: usize,
    tickets: u64,
    lock: bool,
    real: &Real,
) -> Result<(i64, usize), String> {
    let mut m = Model::new(buyers, tickets, lock);
    let mut choices = 0;
    for (k, &i) in real.grants.iter().enumerate() {
        if !m.choosable().contains(&i) {
            return Err(format!("the model does not let 路人{i} make step {}", k + 1));
        }
        let waiters = m.step(i);
        if !waiters.is_empty() {
            let Some(&(_, w)) = real.woke.iter().find(|(after, _)| *after == k + 1) else {
                return Err(format!(
                    "after step {} no flock waiter was seen to get the lock",
                    k + 1
                ));
            };
            if !waiters.contains(&w) {
                return Err(format!(
                    "after step {} 路人{w} got the lock but was not waiting",
                    k + 1
                ));
            }
            choices += usize::from(waiters.len() > 1);
            m.wake(w);
        }
    }
    if !m.choosable().is_empty() {
        return Err("the run ended before the model's buyers were done".to_owned());
    }
    Ok((m.oversold(tickets), choices))
}

/// n! / (k!^buyers): the number of interleavings of `buyers` sequences of `k` steps each.
pub fn multinomial(buyers: usize, k: usize) -> u64 {
    let mut total: u128 = 1;
    let mut placed = 0u128;
    for _ in 0..buyers {
        for j in 1..=k as u128 {
            placed += 1;
            total = total * placed / j;
        }
    }
    total as u64
}

fn outcome_name(over: i64) -> String {
    if over == 0 { "correct".to_owned() } else { format!("oversold by {over}") }
}

/// `mutex-ticket census`: the model's count, then the replays on the kernel.
pub fn census(s: &Setup, lock: bool, seed: u64, sample: usize) -> Result<()> {
    let n = s.buyers;
    let steps = if lock { STEPS_LOCK } else { STEPS_NO_LOCK };
    report::section(format!(
        "census: every interleaving of {n} buyers, {}, {}",
        tickets(s.initial),
        if lock { "with the lock" } else { "no lock" }
    ));
    let replay_all = n <= 2;
    let tally = census_model(n, s.initial, lock, replay_all);
    let k = steps.len();
    let bound = multinomial(n, k);
    let oversell: u64 = tally.outcomes.iter().filter(|(o, _)| **o > 0).map(|(_, (c, _))| c).sum();
    let how = if lock {
        format!(
            "fewer than the {bound} interleavings of {n}×{k} steps: a buyer blocked in flock \
             cannot be granted a step{}",
            if n > 2 { "; where several wait, each choice of the kernel counts" } else { "" }
        )
    } else {
        format!("{}!/({k}!^{n}) = {bound}: the multinomial of {n} buyers' {k} steps", n * k)
    };
    report::say(format!("each buyer's steps: {} ({k}); {how}", steps.join(", ")));
    let guess = predict::ask(
        &s.common,
        if lock { "lock-fraction" } else { "fraction" },
        format!(
            "of the {} possible schedules of {n} buyers ({}), what fraction oversell? (0 to 1)",
            tally.total,
            if lock { "with the lock" } else { "no lock" }
        ),
        predict::Expect::About { within: 0.25 },
    );
    let mut lines = format!("{} schedules, {oversell} oversell", tally.total);
    let mut rows = Vec::new();
    for (over, (count, example)) in &tally.outcomes {
        let example = stepper::join_schedule(example.iter().copied());
        lines.push_str(&format!(
            "\n  {:<15} {count:>7}   e.g. --schedule {example}",
            outcome_name(*over)
        ));
        rows.push(json!({ "oversold": over, "schedules": count, "example": example }));
    }
    // `run` takes the lock unless told otherwise: an example alone would replay the wrong race.
    lines.push_str(&format!(
        "\n  replay an example: mutex-ticket run{} --buyers {n} --tickets {} --schedule <it>",
        if lock { "" } else { " --no-lock" },
        s.initial
    ));
    common::event!("census", { "buyers": n, "lock": lock, "tickets": s.initial, "schedules": tally.total,
                               "oversell": oversell, "multinomial": bound, "outcomes": rows }, "{lines}");
    let fraction = oversell as f64 / tally.total.max(1) as f64;
    guess.reveal(
        (fraction * 1000.0).round() / 1000.0,
        format!(
            "{oversell} of {} schedules let two buyers read the count before either wrote it",
            tally.total
        ),
    );

    // The replays: the same schedules on the kernel, each a fresh set of buyer processes.
    let began = Instant::now();
    let (mut replayed, mut matched) = (0u64, 0u64);
    let mut mismatches = Vec::new();
    let mut choices = 0usize;
    let runs: Vec<Chooser> = if replay_all {
        tally.kept.iter().map(|(g, _)| Chooser::Schedule(g.clone())).collect()
    } else {
        (0..sample as u64).map(|j| Chooser::seeded(seed.wrapping_add(j))).collect()
    };
    for mut chooser in runs {
        let real = run_stepped(s, lock, &mut chooser, true)?;
        let model = model_outcome(n, s.initial, lock, &real);
        replayed += 1;
        choices += model.as_ref().map_or(0, |(_, c)| *c);
        let model = model.map(|(over, _)| over);
        if model == Ok(real.oversold()) {
            matched += 1;
        } else if mismatches.len() < 5 {
            mismatches.push(format!(
                "schedule {}: the kernel {}, the model {}",
                stepper::join_schedule(real.grants.iter().copied()),
                outcome_name(real.oversold()),
                model.map_or_else(|e| e, outcome_name)
            ));
        }
    }
    let took = began.elapsed();
    // The replays leave db.json as the last one left it: put the count back, so that a census
    // leaves the --db it was given as it found it and a second census counts the same tickets.
    s.prepare()?;
    let each_ms = took.as_secs_f64() * 1e3 / replayed.max(1) as f64;
    let which = if replay_all {
        format!("all {replayed}")
    } else {
        format!("{replayed} random ones (--seed {seed})")
    };
    let kernel = if choices > 0 {
        format!(
            "; {choices} times several buyers waited in flock and the kernel chose which one got \
             the lock: each choice recorded, and followed in the model"
        )
    } else {
        String::new()
    };
    common::event!("replayed", { "replayed": replayed, "matched": matched, "all": replay_all,
                                 "seed": seed, "ms": took.as_secs_f64() * 1e3, "ms_each": each_ms,
                                 "kernel_choices": choices, "mismatches": mismatches },
                   "replayed {which} on the kernel in {:.2} s ({each_ms:.1} ms each): {matched} of {replayed} gave the model's outcome{kernel}{}",
                   took.as_secs_f64(),
                   if mismatches.is_empty() { String::new() } else { format!("\n  {}", mismatches.join("\n  ")) });
    if matched != replayed {
        bail!("{} replays differed from the model", replayed - matched);
    }
    Ok(())
}
