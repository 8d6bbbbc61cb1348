//! Part 2: one thread locks a `std::sync::Mutex` it already holds. std leaves it unspecified
//! ("this function will not return on the second call (it might panic or deadlock, for
//! example)"); on Linux the thread sleeps on the futex for ever. No detector watches std's
//! locks, so the parent looks at the thread in `/proc` (state `S`, wchan `futex…`), then kills
//! the child. `try_lock` would have said `WouldBlock`.
#![cfg(target_os = "linux")]

use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::Role;
use common::threads::named;
use common::{ps, report};
use serde_json::{Value, json};

use crate::Cli;
use crate::scene::{PATIENCE, Scene};

/// The child whose thread locks its mutex twice.
pub static ROLE: Role = Role::new("self-lock", child);

/// How long the parent watches the sleeping thread to see that it does not wake.
const WATCH: Duration = Duration::from_millis(100);

pub fn run(cli: &Cli) -> Result<()> {
    report::section("2. self: one thread locks the same std Mutex twice");
    let mut scene = Scene::start(cli, "self-lock", &ROLE, json!({}))?;
    let relocking = scene.wait_event("relocking", PATIENCE)?;
    let (pid, tid) = (scene.pid(), relocking.thread_id());
    let (seen, woke) = asleep(pid, tid)?;
    let wchan_shown = seen.wchan != "-";
    let how = if wchan_shown {
        format!("wchan {}: asleep in the kernel on the mutex's futex", seen.wchan)
    } else {
        "wchan hidden here (the kernel shows 0 in this container): its state is the proof".into()
    };
    common::event!("self_deadlock", { "pid": pid, "tid": tid, "state": seen.state.to_string(), "wchan": seen.wchan,
                "wchan_shown": wchan_shown, "woke": woke, "watched_ms": WATCH.as_millis() as u64 }, "relocker (tid {tid}) is {} ({}), {how}; in {} ms it did not wake once ({}): it \
             waits for a lock that only it could release",
            seen.state,
            ps::state_meaning(seen.state),
            WATCH.as_millis(),
            if woke { "it did, by surprise" } else { "no context switch" });
    scene.show_threads(cli, "the child's threads (ps -L): the relocker waits for itself");
    scene.kill("no other thread can unlock it, and it never will; the demo ends the child")?;
    report::say(
        "Python's threading.Lock hangs the same way on a second acquire() (its RLock is the \
         cure, part 3); acquire(timeout=...) returns False instead. std's lock() may also \
         panic on other systems; try_lock() says so without waiting, and parking_lot's \
         detector reports a relocked parking_lot::Mutex as a cycle of one thread.",
    );
    Ok(())
}

/// Waits until thread `tid` of `pid` sleeps (`S`), then watches it for [`WATCH`]: returns what
/// `/proc` showed and whether it woke up meanwhile (a context switch).
fn asleep(pid: i32, tid: i32) -> Result<(ps::ThreadInfo, bool)> {
    let deadline = Instant::now() + PATIENCE;
    let seen = loop {
        let info = ps::thread(pid, tid).context("the relocker thread vanished")?;
        // The wchan is what the kernel shows; where it hides it ("-"), the state alone.
        if info.state == 'S' && (info.wchan.contains("futex") || info.wchan == "-") {
            break info;
        }
        if Instant::now() >= deadline {
            bail!("the relocker never went to sleep: {info:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    std::thread::sleep(WATCH);
    let later = ps::thread(pid, tid).context("the relocker thread vanished")?;
    let woke = later.state != 'S' || later.voluntary_ctxt_switches != seen.voluntary_ctxt_switches;
    Ok((seen, woke))
}

/// The child: a thread named `relocker` locks a mutex twice.
fn child(_: Value) -> Result<()> {
    let handle = named::spawn("relocker", relock).context("starting the relocker")?;
    match handle.join() {
        Ok(()) => bail!("the second lock() returned"),
        Err(_) => bail!("the second lock() panicked (std allows it; Linux does not do it)"),
    }
}

fn relock() {
    let mutex = Mutex::new(0u32);
    let first = mutex.lock().unwrap_or_else(|e| e.into_inner());
    common::event!("locked", {}, "locked the Mutex once");
    let tried = match mutex.try_lock() {
        Err(TryLockError::WouldBlock) => "WouldBlock",
        Err(TryLockError::Poisoned(_)) => "Poisoned",
        Ok(_) => "Ok",
    };
    common::event!("try_lock", { "result": tried }, "try_lock() while holding it: {tried} (it would wait for itself)");
    common::event!("relocking", {}, "lock() a second time, in the same thread...");
    let second = mutex.lock(); // never returns on Linux: the thread waits for itself
    common::event!("relocked", {}, "the second lock() returned: {second:?}");
    drop(first);
}
