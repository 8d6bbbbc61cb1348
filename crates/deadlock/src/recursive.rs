//! Part 3: the recursive lock (递归锁). Python's `RLock` is an owner and a count; here
//! `deadlock::rlock::RLock`, on `parking_lot::ReentrantMutex`. Three levels deep in one thread
//! and back to 0; another thread meanwhile cannot take it; the classic fix for the scientists
//! (`mutexA = mutexB = RLock()`: one recursive lock for both things), after which all of them
//! eat; and what happens to a lock whose owner ended while holding it.
#![cfg(target_os = "linux")]

use anyhow::{Result, bail};
use common::report;
use common::threads::named;
use deadlock::rlock::RLock;
use serde_json::json;

use crate::Cli;

/// The classic example's `for i in range(10): MyThread().start()`.
const SCIENTISTS: usize = 10;

pub fn run(cli: &Cli) -> Result<()> {
    report::section("3. rlock: the recursive lock (递归锁), an owner and a count");
    levels()?;
    all_eat(cli)?;
    dead_owner()
}

fn level(lock: &RLock<&str>, step: &str, depth: usize) {
    let owner = lock.owner();
    common::event!("rlock_level", { "step": step, "depth": depth, "count": owner.count,
                "owner": owner.thread.map(|t| format!("{t:?}")), "repr": lock.to_string() }, "{step:<8} depth {depth}: {lock}");
}

/// Three levels deep in one thread, another thread refused meanwhile, and back to 0.
fn levels() -> Result<()> {
    let lock = RLock::new("the kitchen");
    level(&lock, "start", 0);
    let one = lock.acquire();
    level(&lock, "acquire", 1);
    let two = lock.acquire();
    level(&lock, "acquire", 2);
    let three = lock.acquire();
    level(&lock, "acquire", 3);
    let refused = std::thread::scope(|s| {
        named::spawn_scoped(s, "other", || lock.try_acquire().is_none()).map(|h| h.join())
    })?
    .unwrap_or(false);
    common::event!("rlock_other", { "refused": refused, "count": lock.count() }, "another thread's acquire(blocking=False) at count {}: {}",
            lock.count(),
            if refused { "False, it is not the owner" } else { "True?! (broken)" });
    drop(three);
    level(&lock, "release", 2);
    drop(two);
    level(&lock, "release", 1);
    drop(one);
    level(&lock, "release", 0);
    if lock.count() != 0 || !refused {
        bail!("the recursive lock broke its rules: {lock}, other thread refused: {refused}");
    }
    report::say(
        "A plain Lock would have deadlocked at depth 2 (part 2). Only the owner releases: a \
         guard cannot move to another thread (the compiler refuses it; see the compile_fail \
         example of deadlock::rlock::RLockGuard), where Python raises RuntimeError: cannot \
         release un-acquired lock.",
    );
    Ok(())
}

/// The classic fix: the noodles and the fork are one recursive lock, and every scientist eats.
fn all_eat(cli: &Cli) -> Result<()> {
    report::say(format!(
        "The classic fix for part 1 (the course's later lecture; not in the notes): mutexA = \
         mutexB = RLock(). {SCIENTISTS} scientists, each \
         f1 (noodles then fork) and f2 (fork, a pause, then noodles), with one recursive lock \
         for both things: whoever holds it may take it again, the others wait their turn."
    ));
    let lock = RLock::new(());
    let both = &lock;
    let (noodles, fork) = (both, both); // mutexA = mutexB = RLock()
    let pause = cli.common.notes_sleep(0.1); // the notes' time.sleep(0.1) in f2
    let most = std::thread::scope(|s| -> Result<Vec<usize>> {
        let handles = (1..=SCIENTISTS)
            .map(|i| {
                named::spawn_scoped(s, &format!("scientist-{i}"), move || {
                    // f1: the noodles, then the fork.
                    let a = noodles.acquire();
                    let f1 = fork.acquire();
                    let depth1 = both.count();
                    drop((f1, a));
                    // f2: the fork, a pause, then the noodles: the other order.
                    let b = fork.acquire();
                    std::thread::sleep(pause);
                    let f2 = noodles.acquire();
                    let depth2 = both.count();
                    drop((f2, b));
                    common::event!("rlock_ate", { "counts": [depth1, depth2] }, "ate: f1 noodles then fork (count {depth1}), f2 fork then noodles \
                             (count {depth2})");
                    depth1.max(depth2)
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(handles.into_iter().map(|h| h.join().unwrap_or(0)).collect())
    })?;
    let ate = most.iter().filter(|&&d| d == 2).count();
    common::event!("rlock_all_ate", { "scientists": SCIENTISTS, "ate": ate, "count": both.count() }, "{ate} of {SCIENTISTS} scientists ate, each taking the one recursive lock twice \
             (count 2) in both orders; none deadlocked, and the count is back to {}",
            both.count());
    if ate != SCIENTISTS {
        bail!("only {ate} of {SCIENTISTS} scientists ate with the recursive lock");
    }
    Ok(())
}

/// A thread ends while holding a recursive lock (its guard forgotten); a new thread asks for
/// it. CPython's owner is the thread ident, which it reuses; parking_lot's is the address of a
/// thread-local, which a new thread gets again when the C library reuses the dead thread's
/// stack; a `ThreadId` is never reused.
fn dead_owner() -> Result<()> {
    let lock = RLock::new(());
    std::thread::scope(|s| -> Result<()> {
        named::spawn_scoped(s, "forgetful", || std::mem::forget(lock.acquire()))?.join().ok();
        Ok(())
    })?;
    let dead = lock.owner().thread;
    let (inherited, newcomer) = std::thread::scope(|s| -> Result<(bool, String)> {
        let h = named::spawn_scoped(s, "newcomer", || {
            let me = format!("{:?}", std::thread::current().id());
            // try, not acquire: a lock held by a dead thread would make acquire() wait for ever.
            let got = lock.try_acquire().is_some();
            (got, me)
        })?;
        Ok(h.join().unwrap_or((false, String::new())))
    })?;
    let dead = dead.map(|t| format!("{t:?}")).unwrap_or_default();
    report::event(
        "rlock_owner_reuse",
        json!({ "dead_owner": dead, "newcomer": newcomer, "inherited": inherited }),
        if inherited {
            format!(
                "forgetful ({dead}) ended holding the lock; newcomer ({newcomer}) got it at once, \
                 as if it were the owner: parking_lot names an owner by the address of a \
                 thread-local, and the C library gave the new thread the dead one's stack. \
                 CPython does the same with its reused thread idents. The ThreadIds (never \
                 reused) tell the truth: the owner was {dead}."
            )
        } else {
            format!(
                "forgetful ({dead}) ended holding the lock; newcomer ({newcomer}) was refused: \
                 the lock stays held by a thread that no longer exists. (CPython reuses thread \
                 idents, so there a new thread can inherit such a lock; parking_lot can too when \
                 a new thread gets the dead one's stack; a ThreadId is never reused.)"
            )
        },
    );
    Ok(())
}
