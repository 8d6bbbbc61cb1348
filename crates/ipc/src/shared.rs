//! Part 4: a counter in shared memory (共享数据) that four processes increment: updates lost
//! without a lock, exact with a process-shared lock or an atomic instruction.

#![cfg(target_os = "linux")]

use anyhow::Result;
use common::predict::{self, Expect};
use common::report;

use crate::counter::{self, Stores, Way};
use crate::{COUNTER_MEET_EVERY, Cli, SHM_INCREMENTS};

pub fn run(cli: &Cli) -> Result<()> {
    report::section("4. Shared memory: a counter four processes increment (共享数据)");
    let stores = Stores::new()?;
    let line = counter::maps_line(stores.block.addr());
    common::event!("mapped", { "addr": format!("{:#x}", stores.block.addr()), "maps": line,
                "inode": line.as_deref().and_then(counter::maps_inode), "parent": true }, "memfd_create + mmap(MAP_SHARED): one page of memory that every process maps; here \
             at {:#x}: {}",
            stores.block.addr(),
            line.as_deref().unwrap_or("?"));
    let increments = cli.increments(SHM_INCREMENTS);
    let meet_every = cli.meet_every(COUNTER_MEET_EVERY);
    report::say(format!(
        "{} processes each add 1 to the counter {increments} times{}",
        cli.processes,
        if meet_every > 0 {
            format!(
                "; once every {meet_every} increments they all meet at the worst moment (for \
                 the unlocked way: between reading the counter and writing it back), which \
                 makes the race certain"
            )
        } else {
            String::new()
        }
    ));
    let guess = predict::ask(
        &cli.common,
        "unlocked-exact",
        format!(
            "{} processes each add 1 {increments} times to a counter in shared memory, with no \
             lock: is the count exact, or are updates lost?",
            cli.processes
        ),
        Expect::Choice(&["exact", "lost"]),
    );
    let mut guess = Some(guess); // revealed after the first way, the unlocked one
    for (i, way) in [Way::ShmNoLock, Way::ShmLock, Way::ShmAtomic].into_iter().enumerate() {
        report::say(format!("each process runs: {}", way.code()));
        let outcome = counter::run_counter(cli, &stores, way, increments, meet_every, i == 0)?;
        counter::show(&outcome)?;
        if let Some(guess) = guess.take() {
            let exact = outcome.value == outcome.expected;
            guess.reveal(
                if exact { "exact" } else { "lost" },
                format!(
                    "`n = counter; counter = n + 1` is a read and a write: two processes that \
                     read the same n both write n + 1, and one update is lost ({} this run)",
                    outcome.lost
                ),
            );
        }
    }
    report::say(
        "the same page at a different address in every process: /proc/PID/maps names one memfd \
         (the same inode) in each, so one physical page is mapped into all of them. Seed 003's \
         物理级别隔离 is, more exactly, virtual memory: each process has its own page tables, \
         and a page is shared when they map it, as here. Python's Value('i', 0) is such a page with a lock beside it, \
         but `v.value += 1` takes that lock twice, once to read and once to write: updates are \
         lost unless the whole line runs inside `with v.get_lock():`",
    );
    if meet_every > 0 {
        report::say(format!(
            "The rates above are not a race between the lock and the atomic: every {meet_every} \
             increments all the processes wait for each other at a meeting point, and those \
             waits, the same for every way, take most of the time (an atomic increment alone \
             is a few nanoseconds). --meet-every 0 drops them; make bench compares the ways."
        ));
    }
    Ok(())
}
