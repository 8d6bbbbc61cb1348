//! The parts of the demo: one run of the buyers in a mode, the crash, and the final check of
//! the invariant sold + left = on sale at the start.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::predict;
use common::process::{Process, StartMethod, exitcode_name};
use common::report;
use mutex_ticket::store::{Durability, TicketDb};
use serde_json::json;

use crate::database::{clean_stray_temps, set_count, store_error, stray_temps};
use mutex_ticket::buyer::{Buyer, NO_TICKET, tickets};

/// How long the parent looks for buyers queueing on the lock before showing the lock view
/// anyway (the view only picks a moment to print; nothing depends on it).
const LOCK_VIEW_PATIENCE: Duration = Duration::from_secs(10);

/// The parts of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Race,
    Lock,
    Join,
    Crash,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Race => "no-lock",
            Mode::Lock => "lock",
            Mode::Join => "join",
            Mode::Crash => "crash",
        }
    }
}

/// Everything a part needs, decided once from the flags.
#[derive(Debug)]
pub struct Setup {
    pub db: TicketDb,
    /// The count at the start of every part.
    pub initial: u64,
    pub buyers: usize,
    pub search_ms: u64,
    pub buy_ms: u64,
    pub level: Durability,
    pub method: StartMethod,
    pub common: CommonArgs,
}

/// What one part came to.
#[derive(Debug)]
pub struct Outcome {
    pub mode: Mode,
    pub initial: u64,
    pub sold: u64,
    pub no_ticket: u64,
    pub killed: u64,
    pub remaining: u64,
    pub wall_ms: u64,
}

impl Outcome {
    /// Sales the database does not account for: sold + left - on sale at the start.
    pub fn oversold(&self) -> i64 {
        self.sold as i64 + self.remaining as i64 - self.initial as i64
    }
}

impl Setup {
    fn buyer(&self, number: usize, use_lock: bool, stop_in_lock: bool) -> Process {
        let buyer = Buyer {
            number,
            db: self.db.path().to_owned(),
            use_lock,
            search_ms: self.search_ms,
            buy_ms: self.buy_ms,
            level: self.level,
            stop_in_lock,
            step_dir: None,
            quiet: false,
        };
        Process::from_run(format!("buyer-{number}"), buyer).start_method(self.method)
    }

    /// Before a part: remove temp files that killed writers left, and put the count back.
    pub fn prepare(&self) -> Result<()> {
        clean_stray_temps(&self.db)?;
        let count = self.db.read_count().map_err(store_error)?;
        if count != self.initial {
            set_count(&self.db, self.initial)?;
        }
        Ok(())
    }

    fn describe(&self, mode: Mode) -> String {
        let how = match mode {
            Mode::Race => "each searches, then buys with NO lock",
            Mode::Lock => "each searches (no lock, all at once), then buys holding the lock",
            Mode::Join => "started and joined one at a time, no lock",
            Mode::Crash => "buying under the lock",
        };
        format!(
            "{} buyers (路人0..{}), {} on sale, started with {}: {how}\n\
             pauses: search {} ms, paying {} ms; writes: {}",
            self.buyers,
            self.buyers - 1,
            tickets(self.initial),
            self.method,
            self.search_ms,
            self.buy_ms,
            self.level.name()
        )
    }
}

/// One run of the buyers in `mode` (not the crash).
pub fn run_part(s: &Setup, mode: Mode, title: &str) -> Result<Outcome> {
    report::section(title);
    s.prepare()?;
    report::say(s.describe(mode));
    let guess = ask_before(s, mode); // --predict: the question, before the reveal
    let started = Instant::now();
    let mut buyers = Vec::with_capacity(s.buyers);
    for number in 0..s.buyers {
        let mut buyer = s.buyer(number, mode == Mode::Lock, false);
        buyer.start()?;
        if mode == Mode::Join {
            buyer.join()?; // the notes' p.join(): the next buyer starts only after this one ended
        }
        buyers.push(buyer);
    }
    if mode == Mode::Lock {
        show_lock_queue(s, &mut buyers, None);
    }
    for buyer in &mut buyers {
        buyer.join()?;
    }
    let wall_ms = started.elapsed().as_millis() as u64;
    let outcome = finish(s, mode, &buyers, None, wall_ms)?;
    if let Some(guess) = guess {
        reveal(guess, &outcome);
    }
    Ok(outcome)
}

/// `--predict`: how many tickets the race oversells, or how many the lock lets buy.
fn ask_before(s: &Setup, mode: Mode) -> Option<predict::Guess> {
    let (n, t) = (s.buyers, tickets(s.initial));
    let (id, question) = match mode {
        Mode::Race => {
            ("oversold", format!("{n} buyers, {t}, no lock: by how many is it oversold?"))
        }
        Mode::Lock => ("sold", format!("{n} buyers, {t}, a lock around buy: how many buy one?")),
        Mode::Join => (
            "join-oversold",
            format!(
                "{n} buyers, {t}, no lock, but each joined before the next starts: by how many \
                 is it oversold?"
            ),
        ),
        Mode::Crash => return None,
    };
    Some(predict::ask(&s.common, id, question, predict::Expect::Count))
}

fn reveal(guess: predict::Guess, o: &Outcome) {
    match o.mode {
        Mode::Race => guess.reveal(
            o.oversold(),
            format!(
                "{} sold of {} on sale: every buyer read the count before anyone wrote it back, \
                 so each saw a ticket (on another run the count differs)",
                o.sold, o.initial
            ),
        ),
        Mode::Join => guess.reveal(
            o.oversold(),
            "no two buyers ever ran at once, so each read the count the one before it wrote: \
             safe without a lock, but serial",
        ),
        _ => {
            guess.reveal(o.sold, "one buyer at a time reads, decrements and writes under the lock")
        }
    }
}

/// The crash: the victim takes the lock first and stops itself inside it; the others queue up
/// behind it; the parent kills it with SIGKILL; the others go on.
pub fn run_crash(s: &Setup, victim: usize, title: &str) -> Result<Outcome> {
    report::section(title);
    s.prepare()?;
    report::say(format!(
        "{}\n路人{victim} goes first: it takes the lock, reads the count, writes half of its new file\n\
         and stops itself (SIGSTOP); the parent waits for that (waitpid WUNTRACED), starts the\n\
         others, and kills it with SIGKILL.",
        s.describe(Mode::Crash)
    ));
    let started = Instant::now();
    let mut dead = s.buyer(victim, true, true);
    dead.start()?;
    wait_until_stopped(&dead)?;

    let mut others: Vec<Process> =
        (0..s.buyers).filter(|&n| n != victim).map(|n| s.buyer(n, true, false)).collect();
    for buyer in &mut others {
        buyer.start()?;
    }
    show_lock_queue(s, &mut others, Some(&dead));
    let text = fs::read_to_string(s.db.path()).unwrap_or_default();
    let temps = stray_temps(&s.db);
    common::event!("before_kill", { "db_text": text, "temps": temps }, "db.json still reads {} (whole: the victim never touched it);\n\
             the victim's half-written new file: {}",
            text.trim_end(),
            if temps.is_empty() { "none".to_owned() } else { temps.join(", ") });

    let guess = predict::ask(
        &s.common,
        "whole",
        format!(
            "路人{victim} is killed with SIGKILL halfway through writing its new file, inside the \
             lock: is db.json still whole (readable, one count) afterwards? (yes / no)"
        ),
        predict::Expect::Choice(&["yes", "no"]),
    );
    dead.kill()?;
    dead.join()?;
    let whole = s.db.read_count().is_ok();
    guess.reveal(
        if whole { "yes" } else { "no" },
        match s.level {
            Durability::InPlace => {
                "with --durability in-place the buyer truncates db.json and writes into it: a \
                 kill in between can leave it torn"
            }
            _ => {
                "the buyer writes a new file and renames it over db.json, and rename is atomic: \
                 db.json is the old file or the new one, never half of either"
            }
        },
    );
    common::event!("killed", {
        "buyer": victim,
        "pid": dead.pid(),
        "exitcode": dead.exitcode(),
        "exitcode_name": exitcode_name(dead.exitcode()),
    }, "{dead}: killed inside the locked section;\n\
         the kernel released its lock as it died{}",
        if others.is_empty() {
            ""
        } else {
            ", and woke every waiter: flock keeps no queue, so they raced for it and one won \
             (not necessarily the one that waited longest)"
        });
    for buyer in &mut others {
        buyer.join()?;
    }
    let wall_ms = started.elapsed().as_millis() as u64;
    let victim_pid = dead.pid();
    let mut all = vec![dead];
    all.append(&mut others);
    finish(s, Mode::Crash, &all, victim_pid, wall_ms)
}

/// Blocks until `process` stops (SIGSTOP): `waitpid(pid, WUNTRACED)` reports a stopped child
/// without reaping it, so its `Process` can still kill and join it afterwards.
#[cfg(unix)]
fn wait_until_stopped(process: &Process) -> Result<()> {
    use nix::errno::Errno;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(process.pid().context("the victim has no pid")?);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(..)) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Ok(status) => {
                interrupted()?;
                let exitcode = match status {
                    WaitStatus::Exited(_, code) => Some(code),
                    WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
                    _ => None,
                };
                let lost = common::processes::lost::report_pid(
                    pid.as_raw(),
                    process.name(),
                    exitcode,
                    "tickets",
                    0,
                );
                return Err(lost.context(format!(
                    "{} ended before it stopped inside the locked section ({status:?}); see \
                     its message above",
                    process.name()
                )));
            }
            Err(e) => {
                interrupted()?; // the watcher reaped it first
                bail!("waitpid({pid}, WUNTRACED): {e}")
            }
        }
    }
}

#[cfg(not(unix))]
fn wait_until_stopped(_process: &Process) -> Result<()> {
    bail!("the crash experiment needs Unix signals (SIGSTOP, SIGKILL)")
}

/// Waits (polling `/proc/locks`, up to a deadline) for the moment the buyers queue on the lock,
/// then shows who holds it and who waits, with their state letters; `--hold` pauses there.
/// In the crash, `holder` is the stopped victim and every other buyer should be waiting.
fn show_lock_queue(s: &Setup, buyers: &mut [Process], holder: Option<&Process>) {
    let lock_path = s.db.lock_path();
    let everyone = buyers.len() + usize::from(holder.is_some());
    if everyone < 2 {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(s.search_ms) + LOCK_VIEW_PATIENCE;
    let (holders, waiters) = loop {
        let (holders, waiters) = common::locks::holders_and_waiters(lock_path).unwrap_or_default();
        // Every buyer still running is in the queue: someone holds the lock (a buyer, or
        // another program such as flock(1)), the rest wait for it.
        let mut alive = 0;
        let mut queued = 0;
        for buyer in buyers.iter_mut() {
            if buyer.is_alive() {
                alive += 1;
                let pid = buyer.pid().unwrap_or(0);
                queued += usize::from(holders.contains(&pid) || waiters.contains(&pid));
            }
        }
        let ready = match holder {
            Some(_) => waiters.len() >= buyers.len() && queued == buyers.len(),
            None => !holders.is_empty() && !waiters.is_empty() && queued == alive,
        };
        if ready || alive == 0 || Instant::now() >= deadline {
            break (holders, waiters);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut rows = Vec::new();
    let mut table = format!(
        "{} from /proc/locks (what lslocks shows) and /proc/PID/stat:\n    PID STAT  PROCESS    LOCK",
        lock_path.display()
    );
    let ours: Vec<(i32, String)> = holder
        .into_iter()
        .chain(buyers.iter())
        .filter_map(|p| Some((p.pid()?, p.name().to_owned())))
        .collect();
    // Holders and waiters that are not buyers: flock(1), Python's fcntl.flock, ...
    let others = holders.iter().chain(&waiters).filter(|pid| ours.iter().all(|(p, _)| p != *pid));
    let others: Vec<(i32, String)> = others
        .map(|&pid| (pid, common::ps::stat(pid).map_or("?".to_owned(), |i| i.comm)))
        .collect();
    for (pid, name) in ours.iter().chain(&others) {
        let pid = *pid;
        let Some(state) = common::ps::state_of(pid) else { continue };
        let lock = if holders.contains(&pid) {
            if state == 'T' { "holds it, stopped inside the locked section" } else { "holds it" }
        } else if waiters.contains(&pid) {
            "waits for it (blocked in flock: 阻塞态)"
        } else {
            "-"
        };
        let outsider = if others.iter().any(|(p, _)| *p == pid) { " (not a buyer)" } else { "" };
        table.push_str(&format!("\n{pid:>7} {state:<5} {name:<10} {lock}{outsider}"));
        rows.push(json!({ "pid": pid, "state": state.to_string(), "name": name, "lock": lock }));
    }
    report::event(
        "lock_view",
        json!({ "lock_path": lock_path, "holders": holders, "waiters": waiters, "rows": rows }),
        table,
    );
    let pids: Vec<i32> = holder.into_iter().chain(buyers.iter()).filter_map(Process::pid).collect();
    s.common.hold("buyers queueing for the lock", &pids);
}

/// Ctrl-C or SIGTERM arrived: a buyer that just died of it is no failure to report. The
/// signal watcher is stopping and reaping every child and ends the process with 130 or 143;
/// the demo runner, seeing the same, leaves the ending to it.
pub fn interrupted() -> Result<()> {
    if common::signals::stopping() {
        bail!("interrupted");
    }
    Ok(())
}

/// Tallies the buyers' exit codes, reads the file, cleans up, and checks the invariant.
pub fn finish(
    s: &Setup,
    mode: Mode,
    buyers: &[Process],
    victim_pid: Option<i32>,
    wall_ms: u64,
) -> Result<Outcome> {
    interrupted()?;
    let (mut sold, mut no_ticket, mut killed) = (0, 0, 0);
    let mut failed = Vec::new();
    for buyer in buyers {
        match buyer.exitcode() {
            Some(0) => sold += 1,
            Some(NO_TICKET) => no_ticket += 1,
            Some(code) if code < 0 && buyer.pid() == victim_pid => killed += 1,
            _ => failed.push(buyer.to_string()),
        }
    }
    let remaining = s.db.read_count().map_err(store_error)?;
    clean_stray_temps(&s.db)?;
    let outcome = Outcome { mode, initial: s.initial, sold, no_ticket, killed, remaining, wall_ms };
    let text = fs::read_to_string(s.db.path()).unwrap_or_default();
    let verdict = match outcome.oversold() {
        0 => format!(
            "invariant holds: sold {sold} + left {remaining} = {} on sale at the start",
            s.initial
        ),
        n if n > 0 && mode == Mode::Race => format!(
            "sold {sold}, {remaining} left, {} on sale at the start: {sold} + {remaining} ≠ {} — \
             OVERSOLD BY {n} (数据安全问题, the data-safety problem)",
            s.initial, s.initial,
        ),
        // The buyers took turns, so only a writer that is not a buyer can explain a difference.
        n if mode != Mode::Race => format!(
            "sold {sold} + left {remaining} ≠ {} on sale at the start: the count was changed by \
             {} ticket(s) during the run by a program that is not a buyer",
            s.initial, n
        ),
        n => format!(
            "sold {sold} + left {remaining} ≠ {}: {} ticket(s) unaccounted for",
            s.initial, -n
        ),
    };
    report::event(
        "summary",
        summary_data(&outcome),
        format!(
            "{verdict}\n{} sold, {} found none (没有足够的票){}; took {:.2} s; db.json now holds {}",
            sold,
            no_ticket,
            if killed > 0 { format!(", {killed} killed") } else { String::new() },
            wall_ms as f64 / 1000.0,
            text.trim_end()
        ),
    );
    if !failed.is_empty() {
        let hint = if s.level == Durability::InPlace {
            "; with --durability in-place, a buyer that reads without the lock (every search, and \
             every buy with --no-lock) can catch db.json truncated and not yet rewritten: the \
             torn read that writing by rename rules out"
        } else {
            ""
        };
        // What went with them: tickets the file no longer holds that no buyer reports sold (a
        // buyer killed after its write and before its exit).
        let mut unaccounted = (-outcome.oversold()).max(0) as u64;
        let mut first = None;
        for buyer in buyers.iter().filter(|b| failed.contains(&b.to_string())) {
            let lost = common::processes::lost::report(buyer, "tickets", unaccounted);
            unaccounted = 0;
            first.get_or_insert(lost);
        }
        let names: Vec<&str> =
            buyers.iter().filter(|b| failed.contains(&b.to_string())).map(Process::name).collect();
        return Err(first.expect("a failed buyer").context(format!(
            "{} buyer(s) failed (their messages are above): {}{hint}",
            failed.len(),
            names.join(", ")
        )));
    }
    Ok(outcome)
}

pub fn summary_data(o: &Outcome) -> serde_json::Value {
    json!({
        "mode": o.mode.name(),
        "initial": o.initial,
        "sold": o.sold,
        "no_ticket": o.no_ticket,
        "killed": o.killed,
        "remaining": o.remaining,
        "oversold": o.oversold(),
        "invariant_holds": o.oversold() == 0,
        "wall_ms": o.wall_ms,
    })
}

/// Why the lock is on `db.json.lock` and not on `db.json`.
pub fn explain_sidecar(s: &Setup) {
    report::say(format!(
        "The lock is flock(2) on {lock},\n\
         a file that is never replaced; db.json is opened only once the lock is held.\n\
         Why not lock db.json itself? Each write replaces db.json by a rename, and a lock belongs\n\
         to the file that was opened, not to its name: a buyer that opened db.json and then waited\n\
         would wake up holding a lock on the old, replaced file, and read a stale count.\n\
         Join in from another terminal: flock {lock} -c 'cat {db}; sleep 5'",
        lock = s.db.lock_path().display(),
        db = s.db.path().display()
    ));
}

/// 互斥锁与join的区别, measured.
pub fn compare_lock_and_join(s: &Setup, lock: &Outcome, join: &Outcome) {
    let sec = |ms: u64| ms as f64 / 1000.0;
    common::event!("comparison", { "lock_ms": lock.wall_ms, "join_ms": join.wall_ms, "lock_sold": lock.sold,
                "join_sold": join.sold }, "互斥锁与join的区别: both sold {} correctly; the lock took {:.2} s, join {:.2} s.\n\
             join made all the code serial, search included: {n} × ({search} + {buy}) ms;\n\
             the lock only the buy: {search} ms of searching all at once, then {n} × {buy} ms.",
            lock.sold,
            sec(lock.wall_ms),
            sec(join.wall_ms),
            n = s.buyers,
            search = s.search_ms,
            buy = s.buy_ms);
}
