//! Part 7: a lock whose holder thread ends. The notes: 获得锁的线程用完后一定要释放锁，否则那些
//! 苦苦等待锁的线程将永远等待下去. A Python `Lock` has no owner, so it stays locked when its
//! holder exits without `release()`. A Rust `MutexGuard` belongs to its thread's stack: when
//! the thread ends, normally or by a panic, the guard is dropped and the lock is free (marked
//! poisoned after a panic). Only a guard leaked on purpose (`mem::forget`) keeps it locked, as
//! Python's would be. Another thread checks each case with `try_lock`, which never waits.

use std::sync::{Arc, Mutex, TryLockError};

use anyhow::{Result, anyhow, bail};
use common::report;
use common::threads::named;

use crate::quiet_panics;

/// How the holder thread ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// It returns with the guard still in scope.
    Returns,
    /// It panics with the guard held.
    Panics,
    /// It leaks the guard (`mem::forget`) and returns: the lock is never unlocked.
    LeaksTheGuard,
}

impl Ending {
    fn key(self) -> &'static str {
        match self {
            Ending::Returns => "returns",
            Ending::Panics => "panics",
            Ending::LeaksTheGuard => "leaks_the_guard",
        }
    }
}

/// What another thread's `try_lock` found once the holder had ended.
fn after_holder_ends(ending: Ending) -> Result<&'static str> {
    let lock = Arc::new(Mutex::new(0u32));
    let holder = {
        let lock = lock.clone();
        named::spawn("holder", move || {
            let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            *guard += 1;
            match ending {
                Ending::Returns => {}
                Ending::Panics => panic!("the holder panics with the lock held"),
                Ending::LeaksTheGuard => std::mem::forget(guard),
            }
        })?
    };
    let panicked = quiet_panics(|| holder.join().is_err());
    if panicked != matches!(ending, Ending::Panics) {
        bail!("the holder's end was not the one chosen ({ending:?})");
    }
    let waiter = named::spawn("waiter", move || match lock.try_lock() {
        Ok(_) => "acquired",
        Err(TryLockError::Poisoned(_)) => "poisoned",
        Err(TryLockError::WouldBlock) => "would_block",
    })?;
    waiter.join().map_err(|_| anyhow!("the waiter panicked"))
}

pub fn run(cli: &crate::Cli) -> Result<()> {
    report::section("7. a lock whose holder thread ends (苦苦等待锁的线程将永远等待下去?)");
    for ending in [Ending::Returns, Ending::Panics, Ending::LeaksTheGuard] {
        let guess = matches!(ending, Ending::Panics).then(|| {
            common::predict::ask(
                &cli.common,
                "after-panic",
                "a thread panics while it holds a Mutex (互斥锁); then another thread calls \
                 try_lock: what does it find? (acquired / poisoned / would_block)",
                common::predict::Expect::Choice(&["acquired", "poisoned", "would_block"]),
            )
        });
        let found = after_holder_ends(ending)?;
        if let Some(guess) = guess {
            guess.reveal(
                found,
                "the panic unwound the holder's stack and dropped its guard, so the lock is \
                 free, but the mutex is marked poisoned: its data may be half-updated",
            );
        }
        let meaning = match found {
            "acquired" => "the lock was free: the guard was dropped when the thread ended",
            "poisoned" => {
                "the lock was free but poisoned: unwinding dropped the guard, and the mutex \
                 remembers that its holder panicked"
            }
            _ => {
                "still locked, for good: nothing will ever unlock it, and a lock() here would \
                 wait forever (Python's Lock after its holder exits without release())"
            }
        };
        common::event!("holder_ended", { "ending": ending.key(), "try_lock": found }, "holder {}; waiter's try_lock: {found}: {meaning}",
                ending.key().replace('_', " "));
        let expected = match ending {
            Ending::Returns => "acquired",
            Ending::Panics => "poisoned",
            Ending::LeaksTheGuard => "would_block",
        };
        if found != expected {
            bail!("holder {}: try_lock found {found}, expected {expected}", ending.key());
        }
    }
    report::say(
        "In Python a Lock has no owner (any thread may release it), so the interpreter cannot \
         release it for a thread that ended: acquire() waits forever, acquire(timeout=1) returns \
         False. In Rust only the holder can unlock, by dropping its guard, and a thread's end \
         drops everything it holds.",
    );
    Ok(())
}
