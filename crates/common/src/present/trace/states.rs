//! The kernel's view of each thread: the sampler's readings of `/proc` as stretches of one
//! state (running, ready, S, D, T, Z).

use super::*;

/// What the kernel showed of a thread over a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelState {
    Running,
    Ready,
    Sleeping,
    Disk,
    Stopped,
    Zombie,
    Other,
}

/// For each state, in [`KernelState`]'s order: its slice's name in the trace, what it means
/// (for the legend), the trace viewer's reserved colour name (`cname`), the SVG's colour.
const LOOKS: [(&str, &str, &str, &str); 7] = [
    ("running", "running on a CPU", "thread_state_running", "#2e9e44"),
    ("ready", "ready, waiting for a CPU", "thread_state_runnable", "#4a7fd4"),
    ("S", "S: blocked, interruptible sleep", "thread_state_sleeping", "#d9dde3"),
    ("D", "D: blocked, uninterruptible sleep", "thread_state_uninterruptible", "#e8871e"),
    ("T", "T: stopped by a signal", "yellow", "#e6c619"),
    ("Z", "Z: zombie, ended, not reaped", "terrible", "#b3261e"),
    ("other", "another state", "grey", "#9a9a9a"),
];

impl KernelState {
    /// Every state, in the legend's order.
    pub const ALL: [KernelState; 7] = [
        KernelState::Running,
        KernelState::Ready,
        KernelState::Sleeping,
        KernelState::Disk,
        KernelState::Stopped,
        KernelState::Zombie,
        KernelState::Other,
    ];

    pub fn name(self) -> &'static str {
        LOOKS[self as usize].0
    }

    pub fn meaning(self) -> &'static str {
        LOOKS[self as usize].1
    }

    pub fn cname(self) -> &'static str {
        LOOKS[self as usize].2
    }

    pub fn colour(self) -> &'static str {
        LOOKS[self as usize].3
    }

    /// A letter of `/proc/PID/stat`, with the growth of the time on a CPU and the time waiting
    /// for one since the previous sample (which tells running from ready).
    fn of(letter: char, ran_ns: u64, waited_ns: u64) -> KernelState {
        match letter {
            'R' if waited_ns > ran_ns => KernelState::Ready,
            'R' => KernelState::Running,
            'S' | 'I' => KernelState::Sleeping,
            'D' => KernelState::Disk,
            'T' | 't' => KernelState::Stopped,
            'Z' | 'X' => KernelState::Zombie,
            _ => KernelState::Other,
        }
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
    let mut by_tid: HashMap<(i32, i32), Vec<&Sample>> = HashMap::new();
    for s in samples {
        by_tid.entry((s.pid, s.tid)).or_default().push(s);
    }
    let mut slices = Vec::new();
    for ((pid, tid), list) in by_tid {
        let mut open: Option<StateSlice> = None;
        for (i, s) in list.iter().enumerate() {
            let (ran, waited) = match i.checked_sub(1).map(|p| list[p]) {
                Some(prev) => {
                    (s.run_ns.saturating_sub(prev.run_ns), s.wait_ns.saturating_sub(prev.wait_ns))
                }
                None => (1, 0),
            };
            let state = KernelState::of(s.state, ran, waited);
            // The time since the previous reading belongs to the slice that was open then.
            if let Some(slice) = &mut open {
                slice.run_ns += ran;
                slice.wait_ns += waited;
            }
            match &mut open {
                Some(slice) if slice.state == state => slice.end_us = s.t_us,
                _ => {
                    if let Some(mut slice) = open.take() {
                        slice.end_us = s.t_us;
                        slices.push(slice);
                    }
                    open = Some(StateSlice {
                        pid,
                        tid,
                        state,
                        start_us: s.t_us,
                        end_us: s.t_us,
                        run_ns: 0,
                        wait_ns: 0,
                    });
                }
            }
        }
        if let Some(mut slice) = open {
            // A state seen once at the very end lasts at least a moment, not a whole interval:
            // nothing says how long after the last reading it held.
            slice.end_us = slice.end_us.max(slice.start_us + 1.min(interval_us));
            slices.push(slice);
        }
    }
    slices.sort_by_key(|s| (s.pid, s.tid, s.start_us));
    slices
}
