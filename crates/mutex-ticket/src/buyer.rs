//! The buyer (路人N), one process each: the notes' `task(name, mutex)`, `search` then `get`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::store::{self, Durability, StoreError, TicketDb};
use anyhow::{Context, Result};
use common::process::{ExitWith, Run};
use common::report;
use common::{phase, stepper};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A buyer's exit code when no ticket was left (没有足够的票!). The parent counts the sales from
/// its children's exit codes (Python's `p.exitcode`): 0 bought a ticket, this one found none,
/// anything else failed (1: an error, printed on stderr; `-SIGKILL`: killed).
pub const NO_TICKET: i32 = 3;

/// One buyer: what it is told by the parent. Like the notes' `StockProcess`, a type whose `run`
/// is the child's work; serializable because a spawned child receives a copy of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Buyer {
    /// N in 路人N.
    pub number: usize,
    /// The database; its lock is the sidecar `<db>.lock`.
    pub db: PathBuf,
    /// False for `--no-lock` and `--join`.
    pub use_lock: bool,
    /// The pause before searching (the notes' `time.sleep(1)` in `search`).
    pub search_ms: u64,
    /// The pause between reading the count and writing it back (paying): the race window.
    pub buy_ms: u64,
    pub level: Durability,
    /// The crash experiment: stop inside the locked section, to be killed there.
    pub stop_in_lock: bool,
    /// `--step`, `--schedule`, `census`: the folder of the step controller's pipes; before each
    /// step this buyer waits for its turn.
    #[serde(default)]
    pub step_dir: Option<PathBuf>,
    /// The census's replays: no lines, only the exit code and db.json tell the outcome.
    #[serde(default)]
    pub quiet: bool,
}

impl Run for Buyer {
    const ROLE: &'static str = "buyer";

    fn run(self) -> Result<()> {
        if let Some(dir) = &self.step_dir {
            stepper::join(dir, self.number)?;
            stepper::worker(self.number);
        }
        let db = TicketDb::new(&self.db);
        let bought = self.search(&db).and_then(|()| self.buy(&db));
        stepper::done();
        bought
    }
}

impl Buyer {
    /// A buyer's line, unless it is a quiet replay of the census.
    fn event(&self, name: &str, data: Value, text: String) {
        if !self.quiet {
            report::event(name, data, text);
        }
    }

    fn person(&self) -> String {
        format!("路人{}", self.number)
    }

    /// The notes' `search`: look at the count. No lock: any number of buyers look at once.
    fn search(&self, db: &TicketDb) -> Result<()> {
        std::thread::sleep(Duration::from_millis(self.search_ms));
        // A step mark (`--step`, `--schedule`, `--trace`); nothing happens without a listener.
        phase::step("search");
        let count = db.read_count().with_context(|| format!("{} searching", self.person()))?;
        stepper::note(|| format!("saw {count} left"));
        self.event(
            "searched",
            json!({ "buyer": self.number, "count": count }),
            format!("<{}> 查看到剩余票数 {count} (sees {} left)", self.person(), tickets(count)),
        );
        Ok(())
    }

    /// The notes' `get`, inside `with mutex:`: read the count, pay, write it back decremented.
    fn buy(&self, db: &TicketDb) -> Result<()> {
        let asked = Instant::now();
        if self.use_lock && !self.quiet {
            json_only("waiting_for_lock", json!({ "buyer": self.number }));
        }
        // ▶ THE LINE `--no-lock` takes away: flock(LOCK_EX) on the sidecar db.json.lock.
        let lock = if self.use_lock {
            phase::step("lock");
            Some(lock_sidecar(db)?)
        } else {
            None
        };
        let holding = lock.as_ref().map(|_| phase::span("holding the lock"));
        let waited_ms = lock.as_ref().map(|_| asked.elapsed().as_millis() as u64);
        if let Some(waited_ms) = waited_ms.filter(|_| !self.quiet) {
            json_only("locked", json!({ "buyer": self.number, "waited_ms": waited_ms }));
        }

        // db.json is opened only now, after the lock: the file as the last holder left it.
        phase::step("read");
        let critical = phase::span("critical section");
        let (object, before) =
            store::read(db.path()).with_context(|| format!("{} buying", self.person()))?;
        stepper::note(|| format!("read count {before}"));
        if self.stop_in_lock {
            self.stop_here(db, before)?;
        }
        // Paying. Without the lock, every buyer that read the same count meanwhile will also
        // "sell" that same ticket: the window of the race.
        phase::step("pay");
        std::thread::sleep(Duration::from_millis(self.buy_ms));
        // The write step: a buyer that read 0 writes nothing and says so.
        phase::step("write");
        let bought = self.write(db, &object, before, waited_ms);
        drop(critical);
        if let Some(lock_file) = lock {
            phase::step("unlock");
            drop(holding); // before the unlock: after it, the next buyer may already hold the lock
            // flock(LOCK_UN): the next waiter wakes and opens db.json as we left it (closing the
            // file would too, unless a child forked meanwhile still had it open).
            lock_file.unlock().context("unlocking db.json.lock")?;
        }
        bought
    }

    /// Writes the count back one lower, or reports that none was left (exit [`NO_TICKET`]).
    fn write(
        &self,
        db: &TicketDb,
        object: &serde_json::Map<String, Value>,
        before: u64,
        waited_ms: Option<u64>,
    ) -> Result<()> {
        if before == 0 {
            stepper::note(|| "found none left".to_owned());
            self.event(
                "sold_out",
                json!({ "buyer": self.number, "count": before, "waited_ms": waited_ms }),
                format!("<{}> 没有足够的票! (no ticket left{})", self.person(), waited(waited_ms)),
            );
            return Err(ExitWith(NO_TICKET).into());
        }
        let after = before - 1;
        let text = db.text(object, after)?;
        write_back(db, &text, self.level).with_context(|| {
            format!("{} writing the new count to {}", self.person(), db.path().display())
        })?;
        stepper::note(|| format!("wrote count {after}"));
        self.event(
            "bought",
            json!({ "buyer": self.number, "before": before, "after": after, "waited_ms": waited_ms }),
            format!(
                "<{}> 购票成功! (bought a ticket {before} -> {after}{})",
                self.person(),
                waited(waited_ms)
            ),
        );
        Ok(())
    }

    /// The crash experiment. This buyer holds the lock and has read the count; it writes the
    /// first half of its new file, as a buyer killed in the middle of a write leaves it, and
    /// stops itself with SIGSTOP. The parent, blocked in `waitpid(WUNTRACED)`, learns that it
    /// stopped and kills it right here: no sleep decides the moment.
    fn stop_here(&self, db: &TicketDb, before: u64) -> Result<()> {
        let temp = db.temp_path(std::process::id());
        if before > 0 {
            let text = format!("{{\"count\": {}}}\n", before - 1);
            std::fs::write(&temp, &text.as_bytes()[..text.len() / 2])
                .with_context(|| format!("writing {}", temp.display()))?;
        }
        common::event!("in_critical_section", { "buyer": self.number, "count": before, "temp": temp }, "<{}> holds the lock, read count {before}, wrote half of {} ... and stops \
                 itself here (SIGSTOP)",
                self.person(),
                temp.display());
        stop_self()?;
        // Continued (SIGCONT) rather than killed: go on with the purchase; the store replaces
        // the leftover temp file that carries our own pid.
        Ok(())
    }
}

/// Takes the lock: the sidecar `db.json.lock`, opened by this buyer, and `flock(fd, LOCK_EX)`
/// on it. The call sleeps in the kernel (state S) while another process holds the lock; the
/// kernel releases it when the holder unlocks, closes it, or dies.
pub fn lock_sidecar(db: &TicketDb) -> Result<File, StoreError> {
    let lock_file = db.open_lock_file()?;
    loop {
        match lock_file.lock() {
            Ok(()) => return Ok(lock_file),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue, // a signal; wait on
            Err(e) => return Err(store::io_error(db.lock_path(), "cannot lock it", e)),
        }
    }
}

/// Writes the new text at `level`: in place as the notes do (a kill in the middle tears the
/// file), or by a temp file and a rename.
pub fn write_back(db: &TicketDb, text: &[u8], level: Durability) -> io::Result<()> {
    match level {
        Durability::InPlace => store::write_in_place(db.path(), text),
        Durability::Rename => write_by_rename(db, text, false),
        Durability::Fsync => write_by_rename(db, text, true),
    }
}

/// Replaces db.json's contents without ever tearing it: the whole new text goes to a temp file
/// beside it, `db.json.tmp.<pid>`, then `rename(2)` puts that file in db.json's place in one
/// step. A buyer killed at any moment leaves the old file or the new one; at worst a stray
/// temp file, which the parent removes. With `fsync`, the contents reach the disk before the
/// name points at them, and the directory after (a power loss too).
pub fn write_by_rename(db: &TicketDb, text: &[u8], fsync: bool) -> io::Result<()> {
    // Our own pid, asked each time: a forked child has its own name, and its own temp file.
    let temp = db.temp_path(std::process::id());
    let written = File::create(&temp)
        .and_then(|mut file| {
            file.write_all(text)?;
            if fsync {
                file.sync_all()?;
            }
            Ok(())
        })
        .and_then(|()| fs::rename(&temp, db.path()));
    if written.is_err() {
        let _ = fs::remove_file(&temp); // a failed write leaves no temp file
    }
    written?;
    if fsync {
        let dir = db.path().parent().filter(|d| !d.as_os_str().is_empty());
        File::open(dir.unwrap_or(std::path::Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

#[cfg(unix)]
fn stop_self() -> Result<()> {
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP).context("raise(SIGSTOP)")
}

#[cfg(not(unix))]
fn stop_self() -> Result<()> {
    anyhow::bail!("the crash experiment needs Unix signals (SIGSTOP, SIGKILL)")
}

/// An event the tests read but people need not: nothing is printed without `--json`.
fn json_only(name: &str, data: Value) {
    if report::json_mode() {
        report::event(name, data, "");
    }
}

fn waited(waited_ms: Option<u64>) -> String {
    match waited_ms {
        Some(ms) => format!("; waited {:.2}s for the lock", ms as f64 / 1000.0),
        None => String::new(),
    }
}

/// "1 ticket", "3 tickets".
pub fn tickets(n: u64) -> String {
    if n == 1 { "1 ticket".to_owned() } else { format!("{n} tickets") }
}
