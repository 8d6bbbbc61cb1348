//! The kernel's view of each thread: the sampler's readings of `/proc` as stretches of one
//! state (running, ready, S, D, T, Z).

use super::*;

/// What the kernel showed of a thread over a stretch of time, and how both outputs draw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelState {
    /// The slice's name in the trace.
    pub name: &'static str,
    /// What it means, for the legend.
    pub meaning: &'static str,
    /// The trace viewer's reserved colour name (`cname`).
    pub cname: &'static str,
    /// The SVG's colour.
    pub colour: &'static str,
}

const fn state(
    name: &'static str,
    meaning: &'static str,
    cname: &'static str,
    colour: &'static str,
) -> KernelState {
    KernelState { name, meaning, cname, colour }
}

impl KernelState {
    /// Every state, in the legend's order.
    pub const ALL: [KernelState; 7] = [
        state("running", "running on a CPU", "thread_state_running", "#2e9e44"),
        state("ready", "ready, waiting for a CPU", "thread_state_runnable", "#4a7fd4"),
        state("S", "S: blocked, interruptible sleep", "thread_state_sleeping", "#d9dde3"),
        state("D", "D: blocked, uninterruptible sleep", "thread_state_uninterruptible", "#e8871e"),
        state("T", "T: stopped by a signal", "yellow", "#e6c619"),
        state("Z", "Z: zombie, ended, not reaped", "terrible", "#b3261e"),
        state("other", "another state", "grey", "#9a9a9a"),
    ];

    /// A letter of `/proc/PID/stat`, with the growth of the time on a CPU and the time waiting
    /// for one since the previous sample (which tells running from ready).
    fn of(letter: char, ran_ns: u64, waited_ns: u64) -> KernelState {
        let name = match letter {
            'R' if waited_ns > ran_ns => "ready",
            'R' => "running",
            'S' | 'I' => "S",
            'D' => "D",
            'T' | 't' => "T",
            'Z' | 'X' => "Z",
            _ => "other",
        };
        KernelState::ALL.into_iter().find(|s| s.name == name).expect("every name is in ALL")
    }
}

/// A stretch of one kernel state on one thread.
#[derive(Debug, Clone)]
pub struct StateSlice {
    pub pid: i32,
    pub tid: i32,
    pub state: KernelState,
    pub start_us: u64,
    pub end_us: u64,
    /// Nanoseconds on a CPU and waiting for one during the slice (from `schedstat`): what the
    /// letter alone does not say, such as a few µs on a CPU inside a stretch sampled as S.
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// Consecutive samples of one thread in the same state, as slices: a sample's state holds from
/// its moment to the next sample's; the last one ends where it was read.
pub(super) fn state_slices(samples: &[Sample], interval_us: u64) -> Vec<StateSlice> {
    let mut by_thread: BTreeMap<(i32, i32), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_thread.entry((s.pid, s.tid)).or_default().push(s);
    }
    let mut slices = Vec::new();
    for ((pid, tid), list) in by_thread {
        let mut mine: Vec<StateSlice> = Vec::new();
        let mut prev: Option<&Sample> = None;
        for s in list {
            let (ran, waited) = prev.map_or((1, 0), |p| {
                (s.run_ns.saturating_sub(p.run_ns), s.wait_ns.saturating_sub(p.wait_ns))
            });
            prev = Some(s);
            let state = KernelState::of(s.state, ran, waited);
            // The time since the previous reading belongs to the slice open then, which lasts
            // until this reading.
            if let Some(open) = mine.last_mut() {
                open.run_ns += ran;
                open.wait_ns += waited;
                open.end_us = s.t_us;
                if open.state == state {
                    continue;
                }
            }
            let (start_us, end_us) = (s.t_us, s.t_us);
            mine.push(StateSlice { pid, tid, state, start_us, end_us, run_ns: 0, wait_ns: 0 });
        }
        if let Some(last) = mine.last_mut() {
            // A state seen once at the very end lasts at least a moment, not a whole interval:
            // nothing says how long after the last reading it held.
            last.end_us = last.end_us.max(last.start_us + 1.min(interval_us));
        }
        slices.extend(mine);
    }
    slices
}
