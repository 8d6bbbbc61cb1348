//! sim — a global interpreter lock (GIL), built the way CPython ≥ 3.2 builds it
//! (`Python/ceval_gil.c`: `take_gil`, `drop_gil`), so a Rust program can show what Python's
//! threads show.
//!
//! One lock an "interpreter" thread must hold to run its "bytecodes". A thread state
//! ([`Interp`], CPython's `PyThreadState`) calls [`Interp::tick`] at every switch point (CPython
//! checks its eval breaker at function calls and backward jumps). The rule for giving the lock
//! up is one of two ([`Rule`]):
//! - **switch interval** (3.2 and later, `sys.setswitchinterval`, 5 ms by default): a thread
//!   that wants the GIL waits on a condition variable for at most one interval; if the same
//!   holder still has it then, it sets `gil_drop_request`, and the holder drops the GIL at its
//!   next switch point and *waits until another thread has taken it* (CPython's
//!   `FORCE_SWITCHING`), so it cannot grab it straight back. Nobody asks, nobody drops: one
//!   thread alone never pays for the GIL.
//! - **check interval** (before 3.2, seed 001's "每执行100条字节码"): the holder drops the GIL
//!   every N bytecodes and takes it again at once. On several cores it usually wins its own
//!   lock back before the woken waiter runs: the "GIL battle" David Beazley measured.
//!
//! A blocking call (a `recv`, a `sleep`, a `Lock.acquire` that has to wait) runs with the GIL
//! dropped ([`Interp::allow_threads`], CPython's `Py_BEGIN_ALLOW_THREADS`) and takes it back
//! afterwards: with a CPU-bound thread around, that taking back waits a whole interval, which
//! is the convoy effect.
//!
//! The GIL checks itself: a counter of threads inside it, incremented after every take and
//! decremented before every drop, and an overlap counter of the takes that found it non-zero.
//! It must stay 0.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// CPython's default switch interval, `sys.getswitchinterval()` = 0.005.
pub const DEFAULT_SWITCH_INTERVAL: Duration = Duration::from_millis(5);

/// At most this many holds are kept per thread for a timeline; the counts cover all of them.
const MAX_RECORDED_HOLDS: usize = 100_000;

/// When the holder gives the GIL up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    /// CPython ≥ 3.2: when another thread has waited this long for it.
    SwitchInterval(Duration),
    /// Before 3.2: every this many bytecodes (switch points), whether anyone waits or not.
    CheckInterval(u64),
}

/// Why a hold of the GIL ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// A waiter asked (`gil_drop_request`) after waiting a whole switch interval.
    Requested,
    /// The check interval's count of bytecodes was reached.
    CheckInterval,
    /// The thread made a blocking call (`Py_BEGIN_ALLOW_THREADS`).
    Blocking,
    /// The thread finished.
    Exit,
}

/// One hold of the GIL by one thread.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hold {
    /// From the GIL's creation, in nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Bytecodes (switch points) run during the hold.
    pub ops: u64,
    pub end: End,
}

impl Hold {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns - self.start_ns)
    }
}

/// Counts kept by the GIL itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GilStats {
    /// Times any thread took the GIL.
    pub takes: u64,
    /// Takes by a thread other than the previous holder: the GIL changed hands.
    pub switches: u64,
    /// Drops made because a waiter asked (switch interval rule).
    pub requested_drops: u64,
    /// Takes that found another thread inside the GIL. Must be 0.
    pub overlaps: u64,
}

#[derive(Debug)]
struct State {
    locked: bool,
    holder: Option<usize>,
    last_holder: Option<usize>,
    /// Incremented by every take (CPython's `gil->switch_number`).
    switch_number: u64,
    /// When the current holder took it, set inside the mutex (see [`Interp::take`]).
    held_since: Option<Instant>,
    stats: GilStats,
}

/// The global interpreter lock. Threads run under it through [`Gil::enter`].
#[derive(Debug)]
pub struct Gil {
    rule: Rule,
    state: Mutex<State>,
    /// Threads waiting for the GIL wait here (`gil->cond`).
    cond: Condvar,
    /// Signalled at every take (`gil->switch_cond`): a holder forced to drop waits here until
    /// someone else has taken the GIL.
    switch_cond: Condvar,
    /// `gil_drop_request`, read by the holder at every switch point (the eval breaker).
    drop_request: AtomicBool,
    /// Threads between a take and a drop right now: never more than 1.
    inside: AtomicUsize,
    overlaps: AtomicU64,
    next_id: AtomicUsize,
    epoch: Instant,
    epoch_ms: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gil {
    /// A free GIL following `rule`.
    pub fn new(rule: Rule) -> Gil {
        Gil {
            rule,
            state: Mutex::new(State {
                locked: false,
                holder: None,
                last_holder: None,
                switch_number: 0,
                held_since: None,
                stats: GilStats::default(),
            }),
            cond: Condvar::new(),
            switch_cond: Condvar::new(),
            drop_request: AtomicBool::new(false),
            inside: AtomicUsize::new(0),
            overlaps: AtomicU64::new(0),
            next_id: AtomicUsize::new(0),
            epoch: Instant::now(),
            epoch_ms: common::report::elapsed_ms(),
        }
    }

    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The demo's clock ([`common::report::elapsed_ms`]) when this GIL was made: add a hold's
    /// `start_ns` to place it on the demo's timeline.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// A new interpreter thread named `name`; like a new Python thread, it runs only once it
    /// holds the GIL, so this takes it (and may wait for it).
    pub fn enter(&self, name: &str) -> Interp<'_> {
        let check_every = match self.rule {
            Rule::CheckInterval(n) => n,
            Rule::SwitchInterval(_) => u64::MAX,
        };
        let mut interp = Interp {
            gil: self,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            tid: common::threads::named::gettid(),
            check_every,
            holding: false,
            hold_start: self.epoch,
            hold_ops: 0,
            report: ThreadReport::default(),
        };
        interp.report.name = interp.name.clone();
        interp.report.tid = interp.tid;
        interp.report.id = interp.id;
        interp.take();
        interp
    }

    /// The counts so far.
    pub fn stats(&self) -> GilStats {
        let mut stats = lock(&self.state).stats;
        stats.overlaps = self.overlaps.load(Ordering::SeqCst);
        stats
    }

    /// Waits until the thread with this id holds the GIL.
    pub fn wait_until_held_by(&self, id: usize) {
        let mut st = lock(&self.state);
        while st.holder != Some(id) {
            st = self.switch_cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What one interpreter thread did under the GIL.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ThreadReport {
    pub id: usize,
    pub name: String,
    pub tid: i32,
    /// Bytecodes run in all.
    pub ops: u64,
    /// Holds of the GIL, and how many of them ended for each reason.
    pub holds: u64,
    pub requested: u64,
    pub by_check_interval: u64,
    pub blocking: u64,
    /// The most bytecodes in one hold.
    pub max_hold_ops: u64,
    /// The shortest hold that ended because a waiter asked, in ns (none: `None`).
    pub min_requested_hold_ns: Option<u64>,
    /// The first holds, for a timeline.
    #[serde(skip)]
    pub recorded: Vec<Hold>,
}

/// A thread's state under the GIL (CPython's `PyThreadState`). Dropping it drops the GIL.
#[derive(Debug)]
pub struct Interp<'g> {
    gil: &'g Gil,
    id: usize,
    name: String,
    tid: i32,
    /// `Rule::CheckInterval(n)`: n; `u64::MAX` under the switch interval rule.
    check_every: u64,
    holding: bool,
    hold_start: Instant,
    hold_ops: u64,
    report: ThreadReport,
}

impl Interp<'_> {
    /// This thread's number in its GIL (0 for the first to enter).
    pub fn id(&self) -> usize {
        self.id
    }

    /// One bytecode's switch point: gives the GIL up here if the rule says so.
    #[inline]
    pub fn tick(&mut self) {
        self.hold_ops += 1;
        if self.hold_ops >= self.check_every || self.gil.drop_request.load(Ordering::Relaxed) {
            self.switch_point();
        }
    }

    #[cold]
    fn switch_point(&mut self) {
        let end =
            if self.hold_ops >= self.check_every { End::CheckInterval } else { End::Requested };
        self.release(end);
        self.take();
    }

    /// Runs a blocking call with the GIL dropped, then takes it back (CPython's
    /// `Py_BEGIN_ALLOW_THREADS` ... `Py_END_ALLOW_THREADS` around `recv`, `sleep`, a lock).
    pub fn allow_threads<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.release(End::Blocking);
        let result = f();
        self.take();
        result
    }

    /// The thread ends: drops the GIL and returns what it did.
    pub fn finish(mut self) -> ThreadReport {
        self.release(End::Exit);
        std::mem::take(&mut self.report)
    }

    /// CPython's `take_gil`.
    fn take(&mut self) {
        let gil = self.gil;
        let mut st = lock(&gil.state);
        match gil.rule {
            Rule::SwitchInterval(interval) => {
                while st.locked {
                    let number = st.switch_number;
                    let began = Instant::now();
                    st = gil.cond.wait_timeout(st, interval).unwrap_or_else(|e| e.into_inner()).0;
                    // Still the same holder after a whole interval of waiting: ask it to drop.
                    if st.locked && st.switch_number == number && began.elapsed() >= interval {
                        gil.drop_request.store(true, Ordering::SeqCst);
                    }
                }
            }
            Rule::CheckInterval(_) => {
                while st.locked {
                    st = gil.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        let now = Instant::now();
        st.locked = true;
        st.holder = Some(self.id);
        st.switch_number += 1;
        st.held_since = Some(now);
        st.stats.takes += 1;
        if st.last_holder.is_some_and(|last| last != self.id) {
            st.stats.switches += 1;
        }
        st.last_holder = Some(self.id);
        // A pending request was for the previous holder.
        gil.drop_request.store(false, Ordering::SeqCst);
        gil.switch_cond.notify_all();
        drop(st);
        if gil.inside.fetch_add(1, Ordering::SeqCst) != 0 {
            gil.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.holding = true;
        self.hold_start = now;
    }

    /// CPython's `drop_gil`.
    fn release(&mut self, end: End) {
        if !self.holding {
            return;
        }
        let gil = self.gil;
        let now = Instant::now();
        self.record(end, now);
        gil.inside.fetch_sub(1, Ordering::SeqCst);
        let mut st = lock(&gil.state);
        st.locked = false;
        st.holder = None;
        st.held_since = None;
        self.holding = false;
        gil.cond.notify_one();
        if end == End::Requested {
            st.stats.requested_drops += 1;
            // FORCE_SWITCHING: wait until the waiter that asked has taken the GIL, so that
            // this thread cannot take it straight back.
            while st.last_holder == Some(self.id) {
                st = gil.switch_cond.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn record(&mut self, end: End, now: Instant) {
        let r = &mut self.report;
        let ops = self.hold_ops;
        self.hold_ops = 0;
        r.ops += ops;
        r.holds += 1;
        r.max_hold_ops = r.max_hold_ops.max(ops);
        let start_ns = self.hold_start.duration_since(self.gil.epoch).as_nanos() as u64;
        let end_ns = now.duration_since(self.gil.epoch).as_nanos() as u64;
        match end {
            End::Requested => {
                r.requested += 1;
                let held = end_ns - start_ns;
                r.min_requested_hold_ns =
                    Some(r.min_requested_hold_ns.map_or(held, |m| m.min(held)));
            }
            End::CheckInterval => r.by_check_interval += 1,
            End::Blocking => r.blocking += 1,
            End::Exit => {}
        }
        if r.recorded.len() < MAX_RECORDED_HOLDS {
            r.recorded.push(Hold { start_ns, end_ns, ops, end });
        }
    }
}

impl Drop for Interp<'_> {
    fn drop(&mut self) {
        // A thread that panics under the GIL must not leave it locked for ever.
        self.release(End::Exit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(gil: &Gil, name: &str, ops: u64) -> ThreadReport {
        let mut t = gil.enter(name);
        for _ in 0..ops {
            t.tick();
        }
        t.finish()
    }

    #[test]
    fn one_thread_alone_never_drops_the_gil() {
        let gil = Gil::new(Rule::SwitchInterval(Duration::from_micros(100)));
        let r = spin(&gil, "alone", 1_000_000);
        assert_eq!((r.ops, r.holds, r.requested), (1_000_000, 1, 0));
        assert_eq!(gil.stats().switches, 0);
    }

    #[test]
    fn two_threads_take_turns_and_never_overlap() {
        let interval = Duration::from_micros(200);
        let gil = Gil::new(Rule::SwitchInterval(interval));
        let reports = std::thread::scope(|s| {
            let a = s.spawn(|| spin(&gil, "a", 20_000_000));
            let b = s.spawn(|| spin(&gil, "b", 20_000_000));
            [a.join().unwrap(), b.join().unwrap()]
        });
        let stats = gil.stats();
        assert_eq!(stats.overlaps, 0);
        assert!(reports.iter().all(|r| r.ops == 20_000_000));
        for r in &reports {
            if let Some(min) = r.min_requested_hold_ns {
                assert!(min >= interval.as_nanos() as u64, "a requested hold of {min} ns");
            }
        }
    }

    #[test]
    fn the_check_interval_counts_bytecodes() {
        let gil = Gil::new(Rule::CheckInterval(100));
        let reports = std::thread::scope(|s| {
            let a = s.spawn(|| spin(&gil, "a", 100_000));
            let b = s.spawn(|| spin(&gil, "b", 100_050));
            [a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(gil.stats().overlaps, 0);
        assert!(reports.iter().all(|r| r.max_hold_ops <= 100));
        assert_eq!(reports[0].by_check_interval, 1000);
        assert_eq!(reports[1].by_check_interval, 1000);
    }
}
