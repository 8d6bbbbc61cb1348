//! threads (the library part) — seed 001's balance program (§线程锁), in the forms Rust allows.
//!
//! The notes' program: a global `balance`, and `change_it(n)` doing `balance = balance + n;
//! balance = balance - n` a million times, which must leave `balance` at 0. The notes start
//! *one* thread (`change_it(8)`), which cannot race; the demo starts two, as the text means.
//!
//! **As the notes write it, Rust does not compile it.** Two threads that both write one plain
//! variable are a data race, and the borrow checker refuses the second `&mut`:
//!
//! ```compile_fail,E0499
//! fn change_it(balance: &mut i64, n: i64) {
//!     *balance = *balance + n;
//!     *balance = *balance - n;
//! }
//!
//! let mut balance: i64 = 0;
//! std::thread::scope(|s| {
//!     s.spawn(|| for _ in 0..1_000_000 { change_it(&mut balance, 8) });
//!     // error[E0499]: cannot borrow `balance` as mutable more than once at a time
//!     s.spawn(|| for _ in 0..1_000_000 { change_it(&mut balance, 5) });
//! });
//! ```
//!
//! A global is refused as well: writing a `static mut` is `unsafe` (and a `static` without
//! `mut` cannot be written at all):
//!
//! ```compile_fail,E0133
//! static mut BALANCE: i64 = 0;
//!
//! fn change_it(n: i64) {
//!     // error[E0133]: use of mutable static is unsafe and requires unsafe block
//!     BALANCE = BALANCE + n;
//!     BALANCE = BALANCE - n;
//! }
//! ```
//!
//! What does compile, in this module:
//! - [`change_it_racy`]: the nearest runnable race. Each `x = x + n` is an atomic *load* and
//!   then an atomic *store* (`Relaxed`): each is indivisible, the pair is not, so another
//!   thread can store in between, and its update is lost. Atomics make the race defined
//!   behaviour; they do not make it right.
//! - [`change_it_locked`]: the notes' `lock.acquire(); try: change_it(n) finally:
//!   lock.release()`: a `Mutex` whose guard unlocks when it is dropped, even by a panic.
//! - [`change_it_atomic`]: no lock; `fetch_add` makes each read-modify-write one indivisible
//!   instruction (`lock xadd` on x86).
//!
//! Each also counts its calls in `changes` the same way (racy, locked or atomic): two threads
//! making `n` calls each must leave `changes` at `2 n`; what is missing is the lost updates.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::threads::named;

/// The shared state of the racy and the atomic variants: the notes' `balance`, and a tally of
/// the `change_it` calls made.
#[derive(Debug, Default)]
pub struct Balance {
    pub balance: AtomicI64,
    pub changes: AtomicU64,
}

/// The shared state of the locked variant: the same two numbers behind one lock.
#[derive(Debug, Default)]
pub struct Account {
    pub balance: i64,
    pub changes: u64,
}

/// The notes' `change_it(n)` as a race: three read-modify-writes, each a load, then `window()`
/// (nothing, a `yield`, or a barrier step that holds every thread between its read and its
/// write), then a store.
#[inline]
pub fn change_it_racy(b: &Balance, n: i64, window: &impl Fn()) {
    // The step marks (`--step`, `--schedule`, `--trace`) do nothing unless a listener is installed.
    add_racy(&b.balance, n, window);
    add_racy(&b.balance, -n, window);
    let c = black_box(b.changes.load(Ordering::Relaxed));
    window();
    b.changes.store(c + 1, Ordering::Relaxed);
}

/// `x = x + n` in two steps: a load, then a store of what was loaded plus `n`. Between the two,
/// another thread's store is overwritten: the lost update.
#[inline]
fn add_racy(x: &AtomicI64, n: i64, window: &impl Fn()) {
    common::phase::step("load");
    // `black_box`: without it an optimized build fuses the load and the store into one `add`
    // to memory (x86 `addq %rsi, (%rdi)`): still not atomic, having no `lock` prefix, but with a
    // window of a few cycles that loses almost nothing. The notes' read and write are two steps.
    let v = black_box(x.load(Ordering::Relaxed));
    common::stepper::note(|| format!("loaded {v}"));
    window();
    common::phase::step("store");
    x.store(v + n, Ordering::Relaxed);
    common::stepper::note(|| format!("stored {}", v + n));
}

/// `with lock: change_it(n)`: the guard is the notes' `try/finally`; it unlocks when dropped.
/// A poisoned lock (a holder panicked) is still used: the data is consistent here, because a
/// panic can only come between two whole calls.
#[inline]
pub fn change_it_locked(account: &Mutex<Account>, n: i64) {
    let mut guard = account.lock().unwrap_or_else(PoisonError::into_inner);
    guard.balance += n;
    guard.balance -= n;
    guard.changes += 1;
}

/// `change_it(n)` with `fetch_add`: every update indivisible, no lock.
#[inline]
pub fn change_it_atomic(b: &Balance, n: i64) {
    b.balance.fetch_add(n, Ordering::Relaxed);
    b.balance.fetch_sub(n, Ordering::Relaxed);
    b.changes.fetch_add(1, Ordering::Relaxed);
}

/// The partner's side: `n` times, read one byte and send it back.
pub fn pong(n: usize, from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut byte = [0u8];
    for _ in 0..n {
        from.read_exact(&mut byte)?;
        to.write_all(&byte)?;
    }
    Ok(())
}

/// The measuring side: one untimed round trip (the partner is surely running), then `n`
/// timed ones; µs per round trip.
pub fn ping(n: usize, to: &mut impl Write, from: &mut impl Read) -> std::io::Result<f64> {
    let mut byte = [7u8];
    to.write_all(&byte)?;
    from.read_exact(&mut byte)?;
    let began = Instant::now();
    for _ in 0..n {
        to.write_all(&byte)?;
        from.read_exact(&mut byte)?;
    }
    Ok(began.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// The two threads' `n`, as in the notes' source tutorial (`run_thread(5)`, `run_thread(8)`).
pub const NS: [i64; 2] = [5, 8];

/// Starts one named thread per `n` in [`NS`], lets them go together (a barrier, so neither
/// finishes before the other starts), and returns the time both took.
pub fn two_threads(calls: usize, body: impl Fn(i64) + Sync) -> Result<Duration> {
    let gate = Barrier::new(NS.len() + 1);
    let body = &body;
    let mut began = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        for n in NS {
            let gate = &gate;
            named::spawn_scoped(s, &format!("change_it({n})"), move || {
                gate.wait();
                for _ in 0..calls {
                    body(n);
                }
            })?;
        }
        gate.wait();
        began = Instant::now();
        Ok(())
    })?;
    Ok(began.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_barrier_between_read_and_write_loses_updates_for_certain() {
        let b = Balance::default();
        let barrier = Barrier::new(2);
        let step = || {
            barrier.wait();
        };
        std::thread::scope(|s| {
            for n in [8, 5] {
                let (b, step) = (&b, &step);
                s.spawn(move || (0..50).for_each(|_| change_it_racy(b, n, step)));
            }
        });
        assert!(b.changes.load(Ordering::Relaxed) < 100);
    }

    #[test]
    fn the_locked_and_atomic_variants_are_exact() {
        let account = Mutex::new(Account::default());
        let b = Balance::default();
        std::thread::scope(|s| {
            for n in [8, 5] {
                let (account, b) = (&account, &b);
                s.spawn(move || {
                    for _ in 0..10_000 {
                        change_it_locked(account, n);
                        change_it_atomic(b, n);
                    }
                });
            }
        });
        let account = account.into_inner().unwrap();
        assert_eq!((account.balance, account.changes), (0, 20_000));
        assert_eq!(b.balance.load(Ordering::Relaxed), 0);
        assert_eq!(b.changes.load(Ordering::Relaxed), 20_000);
    }
}
