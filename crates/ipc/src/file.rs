//! Part 5: the counter in a file ("其实文件也可以实现数据的共享。但是效率更低，安全性更差"):
//! correct under `flock`, lost updates and torn reads without it; then the same counter by
//! pipe, shared memory and file side by side.

#![cfg(target_os = "linux")]

use anyhow::Result;
use common::predict::{self, Expect};
use common::report;

use crate::counter::{self, Stores, Way};
use crate::{COUNTER_MEET_EVERY, Cli, FILE_INCREMENTS, SHM_INCREMENTS};

pub fn run(cli: &Cli) -> Result<()> {
    report::section("5. A file: the same counter, read-modify-write under flock (文件共享数据)");
    let stores = Stores::new()?;
    let increments = cli.increments(FILE_INCREMENTS);
    let meet_every = cli.meet_every(COUNTER_MEET_EVERY);
    report::say(format!(
        "the counter is {}; {} processes each add 1 {increments} times, each time opening the \
         file, reading the number and writing the next one (Python: open, int(f.read()), \
         f.seek(0), f.truncate(), f.write(str(n + 1)))",
        stores.file_kind, cli.processes
    ));
    let mut outcomes = Vec::new();
    for way in [Way::FileNoLock, Way::FileLock] {
        report::say(format!("each process runs: {}", way.code()));
        let outcome = counter::run_counter(cli, &stores, way, increments, meet_every, false)?;
        counter::show(&outcome)?;
        outcomes.push(outcome);
    }
    let pid = std::process::id();
    cli.common.hold(
        &format!("the counter file: cat /proc/{pid}/fd/{}", crate::kit::raw(&stores.file)),
        &[pid as i32],
    );

    // The table: the same job, every safe way, nobody made to wait at a meeting point.
    report::say(format!(
        "the same counter, {} processes, every safe way, with no meeting point: how fast \
         each is ({memory_increments} increments each in memory, {increments} in the file)",
        cli.processes,
        memory_increments = cli.increments(SHM_INCREMENTS)
    ));
    let guess = predict::ask(
        &cli.common,
        "file-slower",
        "the counter in a file under flock against the counter in shared memory under a lock: \
         how many times slower is the file (效率更低)?",
        Expect::About { within: 0.5 },
    );
    let mut rows = Vec::new();
    let memory_increments = cli.increments(SHM_INCREMENTS);
    for way in [Way::PipeToken, Way::ShmLock, Way::ShmAtomic, Way::FileLock] {
        // The file's rate is measured on fewer increments: it is the slow one.
        let n = if way == Way::FileLock { increments } else { memory_increments };
        let outcome = counter::run_counter(cli, &stores, way, n, 0, false)?;
        if outcome.value != outcome.expected {
            anyhow::bail!("{}: {} instead of {}", way.label(), outcome.value, outcome.expected);
        }
        rows.push(outcome);
    }
    let shm = rows.iter().find(|o| o.way == Way::ShmLock).map_or(1.0, |o| o.per_second);
    let mut table = format!(
        "  {:<31} {:>14} {:>16} {:>24}",
        "way", "increments/s", "µs per increment", "against shared memory+lock"
    );
    for o in &rows {
        let us = 1e6 / o.per_second;
        let slower = shm / o.per_second;
        if report::json_mode() {
            common::event!("table_row", { "way": o.way.key(), "label": o.way.label(), "per_second": o.per_second,
                        "us_per_increment": us, "times_slower_than_shm_lock": slower,
                        "exact": true }, "");
        }
        let against = if o.way == Way::ShmLock {
            "(the reference)".to_string()
        } else if slower >= 1.0 {
            format!("{slower:.1}× slower")
        } else {
            format!("{:.0}× faster", 1.0 / slower)
        };
        table.push_str(&format!(
            "\n  {:<31} {:>14.0} {:>16.2} {:>24}",
            o.way.label(),
            o.per_second,
            us,
            against
        ));
    }
    let file = rows.iter().find(|o| o.way == Way::FileLock).map_or(0.0, |o| o.per_second);
    let times_slower = shm / file.max(1e-9);
    guess.reveal(
        times_slower,
        "shared memory is a load and a store under a lock already in memory; the file is \
         open, flock, read, seek, truncate, write, close: about eight system calls per increment",
    );
    report::plain(table);
    let unlocked = &outcomes[0];
    common::event!("file_verdict", { "file_per_second": file, "shm_lock_per_second": shm,
                "times_slower": times_slower, "value_without_lock": unlocked.value,
                "expected": unlocked.expected, "torn_reads_without_lock": unlocked.torn_reads }, "效率更低: the file is {:.0}× slower than shared memory with a lock (about eight \
             system calls per increment, where an uncontended lock in shared memory makes \
             none, and the file system's own work at \
             each close); 安全性更差: without its lock it counted {} for {}, and {} reads found \
             it empty. Every way was exact with its lock.",
            shm / file.max(1e-9),
            unlocked.value,
            unlocked.expected,
            unlocked.torn_reads);
    Ok(())
}
