//! ticket — what safety costs (the mutex-ticket demo): transactions per second on one `db.json`
//! at each level of safety, in Rust through the demo's own store (`mutex_ticket::store`), beside the same protocol in Python
//! (`python/ticket.py`: `fcntl.flock` on the sidecar, `json`, `os.replace`).
//!
//! [`PROCESSES`] processes each run [`TRANSACTIONS`] read-modify-write transactions
//! `count += 1` with no pauses, at each level:
//! - no lock: read, write a temp file, rename it. Fast, and wrong: the final count shows the
//!   updates that were lost (two processes read the same count and both write count + 1);
//! - lock + write in place: `flock` on `db.json.lock`, read, truncate and rewrite `db.json`;
//! - lock + rename (the demo's default): the new text goes to a temp file renamed over `db.json`,
//!   so a process killed at any moment leaves the old file or the new one, never a torn one;
//! - lock + rename + fsync: the temp file and the directory are fsync'ed too, for power loss.
//!
//! The processes wait at a start gate (a flock the parent holds while it starts them), so the
//! clock runs only while they work, as the Python side's `multiprocessing.Event` does. The
//! file system dominates these figures (a rename, an fsync); the target for Rust is to be held
//! back by it, not by its own code: lock + rename at least 1.3× Python's transactions per second.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::process::Process;
use mutex_ticket::store::{Durability, TicketDb};

use crate::measure::{Better, Outcome, Row, Settings, median, run_python};

/// Processes working on the file at the same time, on each side.
const PROCESSES: usize = 4;
/// Transactions per process per run.
const TRANSACTIONS: u64 = 200;
/// The goal: lock + rename at least this many times Python's rate.
const RENAME_TARGET: f64 = 1.3;

/// The levels of safety, in the order of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    NoLock,
    InPlace,
    Rename,
    Fsync,
}

impl Level {
    const ALL: [Level; 4] = [Level::NoLock, Level::InPlace, Level::Rename, Level::Fsync];

    /// The key in the Python script's output.
    fn key(self) -> &'static str {
        match self {
            Level::NoLock => "no-lock",
            Level::InPlace => "in-place",
            Level::Rename => "rename",
            Level::Fsync => "fsync",
        }
    }

    fn figure(self) -> &'static str {
        match self {
            Level::NoLock => "no lock (loses updates)",
            Level::InPlace => "lock + write in place",
            Level::Rename => "lock + rename (default)",
            Level::Fsync => "lock + rename + fsync",
        }
    }

    /// How the count is written; `None`: no lock at all (writes by rename).
    fn locked_durability(self) -> Option<Durability> {
        match self {
            Level::NoLock => None,
            Level::InPlace => Some(Durability::InPlace),
            Level::Rename => Some(Durability::Rename),
            Level::Fsync => Some(Durability::Fsync),
        }
    }
}

/// One transaction: `count += 1`, the demo's buy without its pause.
fn transaction(db: &TicketDb, level: Level) -> Result<()> {
    match level.locked_durability() {
        None => {
            let count = db.read_count()?;
            db.write_count(count + 1, Durability::Rename)?;
        }
        Some(durability) => {
            let mut guard = db.lock()?; // flock(LOCK_EX) on db.json.lock
            let count = guard.read_count()?;
            guard.write_count(count + 1, durability)?;
        } // the guard unlocks here
    }
    Ok(())
}

/// A fresh folder for one measurement, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Result<Scratch> {
        let stamp = common::report::monotonic_ns();
        let dir = std::env::temp_dir()
            .join(format!("bench-ticket-{label}-{}-{stamp:x}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One Rust run at one level: (seconds, final count).
fn measure_rust(level: Level) -> Result<(f64, u64)> {
    let scratch = Scratch::new(level.key())?;
    let db = TicketDb::create(scratch.0.join("db.json"), 0)?;
    let gate_path = scratch.0.join("gate");
    let gate =
        File::create(&gate_path).with_context(|| format!("creating {}", gate_path.display()))?;
    gate.lock().with_context(|| format!("locking {}", gate_path.display()))?;
    let mut workers = Vec::with_capacity(PROCESSES);
    for n in 0..PROCESSES {
        let (db, gate_path) = (db.clone(), gate_path.clone());
        let mut worker = Process::from_fn(format!("bench-ticket-{n}"), move || {
            wait_at_gate(&gate_path)?;
            for _ in 0..TRANSACTIONS {
                transaction(&db, level)?;
            }
            Ok(())
        });
        worker.start()?;
        workers.push(worker);
    }
    let began = Instant::now();
    gate.unlock().context("opening the start gate")?;
    for worker in &mut workers {
        if worker.join()? != Some(0) {
            bail!("{worker} failed at level {}", level.key());
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    Ok((seconds, db.read_count()?))
}

/// Blocks until the parent opens the gate: a shared flock on a file the parent holds
/// exclusively while it starts the workers (opened anew: a descriptor inherited through fork
/// would share the parent's lock instead of waiting for it).
fn wait_at_gate(path: &Path) -> Result<()> {
    let gate = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    gate.lock_shared().with_context(|| format!("waiting at {}", path.display()))?;
    Ok(())
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let expected = PROCESSES as u64 * TRANSACTIONS;
    let n = Level::ALL.len();
    let (mut rust_rate, mut rust_final) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let (mut py_rate, mut py_final) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut python: Result<String, String> = Ok(String::new());
    for _ in 0..settings.runs {
        // Rust, then Python, run after run: a busy moment of a shared machine hits both sides.
        for (i, level) in Level::ALL.iter().enumerate() {
            let (seconds, last) = measure_rust(*level)?;
            if level.locked_durability().is_some() && last != expected {
                bail!("lost updates under the lock at level {}: {last} of {expected}", level.key());
            }
            rust_rate[i].push(expected as f64 / seconds);
            rust_final[i].push(last as f64);
        }
        if python.is_ok() {
            let args = [
                "--processes".to_string(),
                PROCESSES.to_string(),
                "--transactions".into(),
                TRANSACTIONS.to_string(),
            ];
            python = run_python("ticket.py", &args).and_then(|answer| {
                for (i, level) in Level::ALL.iter().enumerate() {
                    let got = &answer["levels"][level.key()];
                    let (Some(seconds), Some(last)) =
                        (got["seconds"].as_f64(), got["final"].as_f64())
                    else {
                        return Err(format!("ticket.py gave no figures for {}", level.key()));
                    };
                    if got["failed"].as_u64() != Some(0) {
                        return Err(format!("ticket.py: a process failed at {}", level.key()));
                    }
                    py_rate[i].push(expected as f64 / seconds);
                    py_final[i].push(last);
                }
                Ok(answer["python"].as_str().unwrap_or("3").to_string())
            });
        }
    }
    let rows = Level::ALL
        .iter()
        .enumerate()
        .map(|(i, level)| Row {
            figure: level.figure().to_string(),
            unit: "tx/s",
            better: Better::Higher,
            rust: median(&rust_rate[i]),
            python: python.is_ok().then(|| median(&py_rate[i])),
            target: (*level == Level::Rename).then_some(RENAME_TARGET),
        })
        .collect::<Vec<_>>();
    let us = |rate: f64| 1e6 / rate;
    let mut notes = vec![format!(
        "each run: {PROCESSES} processes x {TRANSACTIONS} transactions count += 1 on one db.json, \
         no pauses; the final count should be {expected}"
    )];
    let lost = |finals: &[f64]| expected as f64 - median(finals);
    let no_lock = Level::ALL.iter().position(|l| *l == Level::NoLock).unwrap_or(0);
    notes.push(match &python {
        Ok(_) => format!(
            "no lock: {:.0} of {expected} updates lost in Rust, {:.0} in Python (medians); every \
             locked level ended at exactly {expected} on both sides. (Unlocked, the Rust store \
             reads the file a second time before writing, to keep its other keys.)",
            lost(&rust_final[no_lock]),
            lost(&py_final[no_lock])
        ),
        Err(_) => format!(
            "no lock: {:.0} of {expected} updates lost (median); every locked level ended at \
             exactly {expected}",
            lost(&rust_final[no_lock])
        ),
    });
    let per_tx: Vec<String> = rows
        .iter()
        .map(|row| match row.python {
            Some(p) => format!("{}: {:.0} µs (Python {:.0} µs)", row.figure, us(row.rust), us(p)),
            None => format!("{}: {:.0} µs", row.figure, us(row.rust)),
        })
        .collect();
    notes.push(format!("one transaction, all processes together: {}", per_tx.join("; ")));
    Ok(Outcome { rows, python, notes })
}
