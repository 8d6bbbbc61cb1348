//! The model of a run that `--trace` and `--svg` draw: tracks (a process, a thread, a thread's
//! kernel states), state slices from the sampler's readings, spans from the phase marks,
//! instants, flow arrows and counters, all built from the run's own recording.

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

    /// The slice's name in the trace.
    pub fn name(self) -> &'static str {
        match self {
            KernelState::Running => "running",
            KernelState::Ready => "ready",
            KernelState::Sleeping => "S",
            KernelState::Disk => "D",
            KernelState::Stopped => "T",
            KernelState::Zombie => "Z",
            KernelState::Other => "other",
        }
    }

    /// What it means, for the legend.
    pub fn meaning(self) -> &'static str {
        match self {
            KernelState::Running => "running on a CPU",
            KernelState::Ready => "ready, waiting for a CPU",
            KernelState::Sleeping => "S: blocked, interruptible sleep",
            KernelState::Disk => "D: blocked, uninterruptible sleep",
            KernelState::Stopped => "T: stopped by a signal",
            KernelState::Zombie => "Z: zombie, ended, not reaped",
            KernelState::Other => "another state",
        }
    }

    /// The trace viewer's reserved colour name (`cname`).
    pub fn cname(self) -> &'static str {
        match self {
            KernelState::Running => "thread_state_running",
            KernelState::Ready => "thread_state_runnable",
            KernelState::Sleeping => "thread_state_sleeping",
            KernelState::Disk => "thread_state_uninterruptible",
            KernelState::Stopped => "yellow",
            KernelState::Zombie => "terrible",
            KernelState::Other => "grey",
        }
    }

    /// The SVG's colour.
    pub fn colour(self) -> &'static str {
        match self {
            KernelState::Running => "#2e9e44",
            KernelState::Ready => "#4a7fd4",
            KernelState::Sleeping => "#d9dde3",
            KernelState::Disk => "#e8871e",
            KernelState::Stopped => "#e6c619",
            KernelState::Zombie => "#b3261e",
            KernelState::Other => "#9a9a9a",
        }
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

/// One process's or thread's track.
#[derive(Debug, Clone)]
pub struct Track {
    pub pid: i32,
    pub tid: i32,
    /// As `ps` names it (`comm`), or as the demo named it when it was never sampled.
    pub name: String,
    /// The name without its number (`buyer-3` → `buyer`): what a picture's skeleton compares.
    pub role: String,
    /// The first and last moment anything was seen of it (µs).
    pub first_us: u64,
    pub last_us: u64,
    /// Whether it printed an event or marked a phase.
    pub spoke: bool,
}

impl Track {
    /// True for a process's main thread (the track of the process itself).
    pub fn is_process(&self) -> bool {
        self.pid == self.tid
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

/// A phase span of the demo (`critical section`), closed at the track's end if never ended.
#[derive(Debug, Clone)]
pub struct Span {
    pub pid: i32,
    pub tid: i32,
    pub name: String,
    pub start_us: u64,
    pub end_us: u64,
    /// False when the thread ended (or the run did) inside the span.
    pub closed: bool,
}

/// An event the demo printed, or a step it marked.
#[derive(Debug, Clone)]
pub struct Instant {
    pub pid: i32,
    pub tid: i32,
    pub t_us: u64,
    pub name: String,
    /// `fork`, `exec`, `exit`, `kill`, `reap` or `signal`; `step` for a phase step; `event`.
    pub kind: &'static str,
    pub data: Value,
}

/// An arrow from one event to another (a message, a task's result).
#[derive(Debug, Clone)]
pub struct Flow {
    pub id: u64,
    pub name: &'static str,
    /// What names the message at both ends (`{"msg": id}`, `{"pool": p, "job": j}`, the item).
    pub key: Value,
    pub from: (i32, i32, u64),
    pub to: (i32, i32, u64),
}

/// One value of a shared counter.
#[derive(Debug, Clone)]
pub struct CounterPoint {
    pub name: &'static str,
    pub t_us: u64,
    pub value: f64,
}

/// A run, as both outputs draw it.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub root: i32,
    pub tracks: Vec<Track>,
    pub states: Vec<StateSlice>,
    pub spans: Vec<Span>,
    pub instants: Vec<Instant>,
    pub flows: Vec<Flow>,
    pub counters: Vec<CounterPoint>,
    pub end_us: u64,
    /// True when the step controller granted the steps (`--step`, `--schedule`): their order
    /// is then the chosen schedule's, which the picture spells out.
    pub stepped: bool,
    /// The sampler's real intervals: the gaps between two readings of one thread (µs).
    pub gaps: GapStats,
}

/// How regularly the sampler really read each thread (see [`crate::sampler`]).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GapStats {
    pub interval_us: u64,
    pub readings: usize,
    pub median_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl GapStats {
    fn of(samples: &[Sample], interval_us: u64) -> GapStats {
        let mut last: HashMap<(i32, i32), u64> = HashMap::new();
        let mut gaps = Vec::new();
        for s in samples {
            if let Some(prev) = last.insert((s.pid, s.tid), s.t_us) {
                gaps.push(s.t_us.saturating_sub(prev));
            }
        }
        gaps.sort_unstable();
        let at = |q: f64| gaps.get(((gaps.len() as f64 - 1.0) * q).round() as usize).copied();
        GapStats {
            interval_us,
            readings: samples.len(),
            median_us: at(0.5).unwrap_or(0),
            p99_us: at(0.99).unwrap_or(0),
            max_us: gaps.last().copied().unwrap_or(0),
        }
    }
}

/// The lifecycle kind of an event the demos emit, by its name.
pub fn lifecycle_kind(event: &str) -> Option<&'static str> {
    Some(match event {
        "started" | "forked" | "spawned" | "orphan_started" | "parent_started" | "pool_started"
        | "worker_started" | "replaced" => "fork",
        "exec" | "execed" => "exec",
        "exited" | "exiting" | "exit" | "orphan_exit" | "parent_exit" | "child_lost"
        | "orphan_gone" | "ended" => "exit",
        "killed" | "killing" | "kill" | "terminated" => "kill",
        "reaped" | "all_reaped" | "joined" => "reap",
        "interrupted" | "signal" | "sigchld_reaper" | "sigchld_ignored" | "stopped" | "resumed"
        | "sent_signal" => "signal",
        _ => return None,
    })
}

/// Arrows the events can tell: (from event, to event, the fields that name the message).
const FLOWS: &[(&str, &str, &[&str], &str)] = &[
    // The real ids, recorded by the process Queue and the Pool (never printed).
    ("queue_put", "queue_got", &["msg"], "message"),
    ("task_submitted", "task_result", &["pool", "job"], "result"),
    // Pairs guessed from the demo's own events, when no real ids are there (a thread queue).
    ("put", "got", &["item"], "message"),
    // A bun is named by its number and its producer: 包子0 of producer-1 and of producer-2.
    ("produced", "ate", &["item", "by"], "message"),
    ("task_end", "fault_result", &["task"], "result"),
];

/// Shared values the events carry: (event or `*` for any, field, counter name).
const COUNTERS: &[(&str, &str, &str)] = &[
    ("bought", "after", "tickets left"),
    ("*", "qsize", "queue size"),
    ("enter", "inside", "inside"),
    ("leave", "inside", "inside"),
    ("*", "balance", "balance"),
];

/// The step controller's event for each step it grants ([`crate::stepper`]).
const GRANTED: &str = "step";

/// Events drawn as nothing: prose and headings.
const QUIET: &[&str] = &["say", "section", "row", "states", "processes", "ps", "thread_view"];

/// The recorded ends of a message or a task, drawn as their arrow only.
pub(super) const FLOW_ENDS: &[&str] = &["queue_put", "queue_got", "task_submitted", "task_result"];

/// Threads of the demo's machinery, not of its concept: kept in the trace, left off the SVG.
pub const HELPER_THREADS: &[&str] = &["signal-watcher", "sampler"];

fn role_of(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = trimmed.trim_end_matches(['-', '_', ' ', '/']);
    if trimmed.is_empty() { name.to_string() } else { trimmed.to_string() }
}

fn record_time(r: &Record) -> u64 {
    if r.t_us > 0 { r.t_us } else { r.t_ms * 1000 }
}

impl Model {
    /// Builds the run's model from its records and samples (`interval_us`: the sampler's).
    pub fn build(records: &[Record], samples: &[Sample], interval_us: u64) -> Model {
        let root = std::process::id() as i32;
        let gaps = GapStats::of(samples, interval_us);
        let mut model = Model { root, gaps, ..Model::default() };
        let mut tracks: BTreeMap<(i32, i32), Track> = BTreeMap::new();
        let mut see = |pid: i32, tid: i32, name: &str, t: u64, spoke: bool| {
            let track = tracks.entry((pid, tid)).or_insert_with(|| Track {
                pid,
                tid,
                name: name.to_string(),
                role: role_of(name),
                first_us: t,
                last_us: t,
                spoke,
            });
            track.first_us = track.first_us.min(t);
            track.last_us = track.last_us.max(t);
            track.spoke |= spoke;
        };
        for s in samples {
            see(s.pid, s.tid, &s.comm, s.t_us, false);
        }
        let mut records: Vec<&Record> = records.iter().collect();
        records.sort_by_key(|r| record_time(r));
        for r in &records {
            let tid = r.thread_id();
            let name = if tid == r.pid || r.thread.is_empty() { &r.who } else { &r.thread };
            see(r.pid, tid, name, record_time(r), true);
        }
        // Names as ps shows them: the sampled comm wins over the demo's own name, and its last
        // value over its first (a new thread is sampled before it names itself).
        for s in samples {
            if let Some(track) = tracks.get_mut(&(s.pid, s.tid)) {
                track.name.clone_from(&s.comm);
                track.role = role_of(&s.comm);
            }
        }
        model.states = state_slices(samples, interval_us);
        let (spans, steps) = spans_of(&records, &tracks);
        model.spans = spans;
        model.instants = steps;
        for r in &records {
            if r.event == PHASE_EVENT
                || QUIET.contains(&r.event.as_str())
                || FLOW_ENDS.contains(&r.event.as_str())
            {
                continue;
            }
            model.instants.push(Instant {
                pid: r.pid,
                tid: r.thread_id(),
                t_us: record_time(r),
                name: r.event.clone(),
                kind: lifecycle_kind(&r.event).unwrap_or("event"),
                data: r.data.clone(),
            });
        }
        model.instants.sort_by_key(|i| i.t_us);
        model.stepped =
            records.iter().any(|r| r.event == GRANTED && r.data.get("position").is_some());
        model.flows = flows_of(&records);
        model.flows.extend(handovers(&model.spans, model.flows.len() as u64));
        model.counters = counters_of(&records);
        model.end_us = tracks.values().map(|t| t.last_us).max().unwrap_or(0);
        model.tracks = tracks.into_values().collect();
        // Processes in the order they appeared, each followed by its threads.
        model.tracks.sort_by_key(|t| {
            let first_of_process = t.first_us;
            (t.pid != root, first_of_process, t.pid, t.tid != t.pid, t.tid)
        });
        let mut order: Vec<i32> = Vec::new();
        for t in &model.tracks {
            if !order.contains(&t.pid) {
                order.push(t.pid);
            }
        }
        model.tracks.sort_by_key(|t| {
            (order.iter().position(|p| *p == t.pid), t.tid != t.pid, t.first_us, t.tid)
        });
        model
    }

    /// The Chrome Trace Event Format document.
    pub fn to_trace(&self) -> Value {
        let mut events: Vec<Value> = Vec::new();
        let mut named_pids = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            if !named_pids.contains(&t.pid) {
                named_pids.push(t.pid);
                let process =
                    self.tracks.iter().find(|p| p.pid == t.pid && p.is_process()).unwrap_or(t);
                events.push(json!({"ph": "M", "name": "process_name", "pid": t.pid,
                    "tid": t.pid, "args": {"name": process.name}}));
                events.push(json!({"ph": "M", "name": "process_sort_index", "pid": t.pid,
                    "tid": t.pid, "args": {"sort_index": named_pids.len()}}));
            }
            events.push(json!({"ph": "M", "name": "thread_name", "pid": t.pid, "tid": t.tid,
                "args": {"name": t.name}}));
            events.push(json!({"ph": "M", "name": "thread_sort_index", "pid": t.pid,
                "tid": t.tid, "args": {"sort_index": 2 * i}}));
            if self.states.iter().any(|s| s.tid == t.tid && s.pid == t.pid) {
                let kernel = t.tid + KERNEL_TRACK_OFFSET;
                events.push(json!({"ph": "M", "name": "thread_name", "pid": t.pid,
                    "tid": kernel, "args": {"name": format!("{} (kernel)", t.name)}}));
                events.push(json!({"ph": "M", "name": "thread_sort_index", "pid": t.pid,
                    "tid": kernel, "args": {"sort_index": 2 * i + 1}}));
            }
        }
        for s in &self.states {
            events.push(json!({"ph": "X", "name": s.state.name(), "cat": "kernel",
                "pid": s.pid, "tid": s.tid + KERNEL_TRACK_OFFSET, "ts": s.start_us,
                "dur": s.end_us.saturating_sub(s.start_us).max(1), "cname": s.state.cname(),
                "args": {"meaning": s.state.meaning(), "on_cpu_us": s.run_ns / 1000,
                    "waiting_for_cpu_us": s.wait_ns / 1000}}));
        }
        // Per thread track, in time order; B before E at the same moment only if it opens
        // later than the E closes, which the stable sort keeps.
        let mut on_track: Vec<(u64, u8, Value)> = Vec::new();
        for s in &self.spans {
            on_track.push((
                s.start_us,
                1,
                json!({"ph": "B", "name": s.name, "cat": "phase",
                "pid": s.pid, "tid": s.tid, "ts": s.start_us}),
            ));
            let args = if s.closed { json!({}) } else { json!({"unfinished": true}) };
            on_track.push((
                s.end_us,
                0,
                json!({"ph": "E", "name": s.name, "cat": "phase",
                "pid": s.pid, "tid": s.tid, "ts": s.end_us, "args": args}),
            ));
        }
        for i in &self.instants {
            on_track.push((
                i.t_us,
                2,
                json!({"ph": "i", "s": "t", "name": i.name,
                "cat": if i.kind == "event" || i.kind == "step" { i.kind } else { "lifecycle" },
                "pid": i.pid, "tid": i.tid, "ts": i.t_us, "args": i.data}),
            ));
        }
        for f in &self.flows {
            // A flow binds to a slice on its track at its moment (same cat, pid, tid and ts):
            // a 1 µs slice at each end, named after the message.
            for (pid, tid, ts) in [f.from, f.to] {
                on_track.push((
                    ts,
                    3,
                    json!({"ph": "X", "name": f.name, "cat": "flow", "pid": pid, "tid": tid,
                        "ts": ts, "dur": 1, "cname": "grey"}),
                ));
            }
            on_track.push((
                f.from.2,
                3,
                json!({"ph": "s", "id": f.id, "name": f.name, "cat": "flow",
                "pid": f.from.0, "tid": f.from.1, "ts": f.from.2, "args": f.key}),
            ));
            on_track.push((
                f.to.2,
                3,
                json!({"ph": "f", "bp": "e", "id": f.id, "name": f.name, "cat": "flow",
                "pid": f.to.0, "tid": f.to.1, "ts": f.to.2, "args": f.key}),
            ));
        }
        // At one moment: an E closes before anything else begins, then B, instants, flows (the
        // 1 µs slice before its flow event).
        on_track.sort_by_key(|(t, order, _)| (*t, *order));
        events.extend(on_track.into_iter().map(|(_, _, e)| e));
        for c in &self.counters {
            events.push(json!({"ph": "C", "name": c.name, "pid": self.root, "ts": c.t_us,
                "args": {"value": c.value}}));
        }
        json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "program": report::who(),
                "clock": "microseconds since the demo started (CLOCK_MONOTONIC)",
                "sampler": self.gaps,
            },
        })
    }
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

/// Pairs each thread's phase marks into spans; a span still open when its thread was last seen
/// ends there (a worker killed inside it). Steps become instants.
fn spans_of(
    records: &[&Record],
    tracks: &BTreeMap<(i32, i32), Track>,
) -> (Vec<Span>, Vec<Instant>) {
    let mut open: HashMap<(i32, i32), Vec<Span>> = HashMap::new();
    let mut spans = Vec::new();
    let mut steps = Vec::new();
    for r in records.iter().filter(|r| r.event == PHASE_EVENT) {
        let key = (r.pid, r.thread_id());
        let name = r.data["name"].as_str().unwrap_or("").to_string();
        let t = record_time(r);
        match r.data["ph"].as_str() {
            Some("B") => open.entry(key).or_default().push(Span {
                pid: key.0,
                tid: key.1,
                name,
                start_us: t,
                end_us: t,
                closed: false,
            }),
            Some("E") => {
                let stack = open.entry(key).or_default();
                // The innermost open span of that name (spans close in reverse order).
                if let Some(pos) = stack.iter().rposition(|s| s.name == name) {
                    // Any span opened inside it and never closed ends with it, so they nest.
                    for mut inner in stack.drain(pos + 1..).rev() {
                        inner.end_us = t;
                        spans.push(inner);
                    }
                    let mut span = stack.pop().expect("found above");
                    span.end_us = t;
                    span.closed = true;
                    spans.push(span);
                }
            }
            _ => steps.push(Instant {
                pid: key.0,
                tid: key.1,
                t_us: t,
                name,
                kind: "step",
                data: Value::Null,
            }),
        }
    }
    for (key, stack) in open {
        let end = tracks.get(&key).map_or(0, |t| t.last_us);
        for mut span in stack.into_iter().rev() {
            span.end_us = end.max(span.start_us);
            spans.push(span);
        }
    }
    spans.sort_by_key(|s| (s.pid, s.tid, s.start_us));
    (spans, steps)
}

fn flows_of(records: &[&Record]) -> Vec<Flow> {
    let mut flows = Vec::new();
    // Where a run recorded real ids (its process queues, its pools), it draws those arrows
    // and no guess of the same kind from the demo's events as well.
    let real = |end: &str| records.iter().any(|r| r.event == end);
    let (real_messages, real_results) = (real("queue_got"), real("task_result"));
    for (from, to, keys, name) in FLOWS {
        let guessed = !FLOW_ENDS.contains(from);
        if guessed && ((*name == "message" && real_messages) || (*name == "result" && real_results))
        {
            continue;
        }
        // First in, first out per id: a put is matched with the first get of that item after it.
        let mut waiting: HashMap<String, std::collections::VecDeque<&Record>> = HashMap::new();
        for r in records {
            if r.event != *from && r.event != *to {
                continue;
            }
            let key: serde_json::Map<String, Value> = keys
                .iter()
                .filter_map(|k| Some((k.to_string(), r.data.get(*k)?.clone())))
                .collect();
            if key.len() != keys.len() || key.values().any(Value::is_null) {
                continue;
            }
            let id = serde_json::to_string(&key).unwrap_or_default();
            if r.event == *from {
                waiting.entry(id).or_default().push_back(r);
            } else if r.event == *to
                && let Some(start) = waiting.get_mut(&id).and_then(|q| q.pop_front())
            {
                flows.push(Flow {
                    id: flows.len() as u64 + 1,
                    name,
                    key: Value::Object(key),
                    from: (start.pid, start.thread_id(), record_time(start)),
                    to: (r.pid, r.thread_id(), record_time(r)),
                });
            }
        }
    }
    flows
}

/// A lock handed from one holder to the next: for every span name `holding ...` whose spans
/// never overlap (a lock: one holder at a time), an arrow from each span's end to the next
/// one's beginning on another thread. Spans of a name that do overlap (a semaphore's places)
/// are not a lock, and get none.
fn handovers(spans: &[Span], ids_from: u64) -> Vec<Flow> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut flows = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with("holding")) {
        let mut held: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        held.sort_by_key(|s| (s.start_us, s.end_us));
        if held.windows(2).any(|w| w[1].start_us < w[0].end_us) {
            continue;
        }
        for w in held.windows(2) {
            if (w[0].pid, w[0].tid) != (w[1].pid, w[1].tid) {
                flows.push(Flow {
                    id: ids_from + flows.len() as u64 + 1,
                    name: "hand-over",
                    key: json!({}),
                    from: (w[0].pid, w[0].tid, w[0].end_us),
                    to: (w[1].pid, w[1].tid, w[1].start_us),
                });
            }
        }
    }
    flows
}

fn counters_of(records: &[&Record]) -> Vec<CounterPoint> {
    let mut points = Vec::new();
    for r in records {
        for (event, field, name) in COUNTERS {
            if (*event == "*" || r.event == *event)
                && let Some(value) = r.data.get(*field).and_then(Value::as_f64)
            {
                points.push(CounterPoint { name, t_us: record_time(r), value });
            }
        }
    }
    points
}
