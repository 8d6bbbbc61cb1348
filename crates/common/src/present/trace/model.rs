//! The model of a run that `--trace` and `--svg` draw, built from the run's own recording and
//! samples (what it holds: see [the module](super)).

use super::*;

/// One process's or thread's track.
#[derive(Debug, Clone)]
pub struct Track {
    pub pid: i32,
    pub tid: i32,
    /// As `ps` names it (`comm`), or as the demo named it when it was never sampled.
    pub name: String,
    /// The first and last moment anything was seen of it (µs).
    pub first_us: u64,
    pub last_us: u64,
}

impl Track {
    /// True for a process's main thread (the track of the process itself).
    pub fn is_process(&self) -> bool {
        self.pid == self.tid
    }

    /// The name without its number (`buyer-3` → `buyer`): what a picture's skeleton compares.
    pub fn role(&self) -> &str {
        let trimmed = self.name.trim_end_matches(|c: char| c.is_ascii_digit());
        let trimmed = trimmed.trim_end_matches(['-', '_', ' ', '/']);
        if trimmed.is_empty() { &self.name } else { trimmed }
    }
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

/// The kind of an event the demos emit, by its name: a lifecycle one's, or `event`.
fn kind_of(event: &str) -> &'static str {
    match event {
        "started" | "forked" | "spawned" | "orphan_started" | "parent_started" | "pool_started"
        | "worker_started" | "replaced" => "fork",
        "exec" | "execed" => "exec",
        "exited" | "exiting" | "exit" | "orphan_exit" | "parent_exit" | "child_lost"
        | "orphan_gone" | "ended" => "exit",
        "killed" | "killing" | "kill" | "terminated" => "kill",
        "reaped" | "all_reaped" | "joined" => "reap",
        "interrupted" | "signal" | "sigchld_reaper" | "sigchld_ignored" | "stopped" | "resumed"
        | "sent_signal" => "signal",
        _ => "event",
    }
}

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

/// Threads of the demo's machinery, not of its concept: kept in the trace, left off the SVG.
pub const HELPER_THREADS: &[&str] = &["signal-watcher", "sampler"];

impl Model {
    /// Builds the run's model from its records and samples (`interval_us`: the sampler's).
    pub fn build(records: &[Record], samples: &[Sample], interval_us: u64) -> Model {
        let root = std::process::id() as i32;
        let gaps = GapStats::of(samples, interval_us);
        let mut model = Model { root, gaps, ..Model::default() };
        let mut records: Vec<&Record> = records.iter().collect();
        records.sort_by_key(|r| r.t_us);
        let mut tracks: BTreeMap<(i32, i32), Track> = BTreeMap::new();
        // Names as ps shows them: the sampled comm wins over the demo's own name, and its last
        // value over its first (a new thread is sampled before it names itself).
        let mut see = |pid: i32, tid: i32, name: &str, t: u64, sampled: bool| {
            let new = || Track { pid, tid, name: name.to_string(), first_us: t, last_us: t };
            let track = tracks.entry((pid, tid)).or_insert_with(new);
            track.first_us = track.first_us.min(t);
            track.last_us = track.last_us.max(t);
            if sampled {
                track.name = name.to_string();
            }
        };
        for r in &records {
            see(r.pid, r.thread_id(), r.name(), r.t_us, false);
        }
        for s in samples {
            see(s.pid, s.tid, &s.comm, s.t_us, true);
        }
        model.states = state_slices(samples, interval_us);
        model.spans = spans_of(&records, &tracks);
        // Every event the picture shows, and every step the demo marked, as an instant.
        for r in &records {
            let (name, kind, data) = match (r.event.as_str(), r.data["ph"].as_str()) {
                (PHASE_EVENT, Some("B" | "E")) => continue,
                (PHASE_EVENT, _) => {
                    (r.data["name"].as_str().unwrap_or("").into(), "step", Value::Null)
                }
                (event, _) if QUIET.contains(&event) || FLOW_ENDS.contains(&event) => continue,
                (event, _) => (event.to_string(), kind_of(event), r.data.clone()),
            };
            let (pid, tid, t_us) = (r.pid, r.thread_id(), r.t_us);
            model.instants.push(Instant { pid, tid, t_us, name, kind, data });
        }
        // In time order, a step before an event of the same moment.
        model.instants.sort_by_key(|i| (i.t_us, i.kind != "step"));
        model.stepped =
            records.iter().any(|r| r.event == GRANTED && r.data.get("position").is_some());
        model.flows = flows_of(&records);
        model.flows.extend(handovers(&model.spans, model.flows.len() as u64));
        model.counters = counters_of(&records);
        model.end_us = tracks.values().map(|t| t.last_us).max().unwrap_or(0);
        // Processes in the order they appeared (the root first), each followed by its threads.
        let mut first_of_process: HashMap<i32, u64> = HashMap::new();
        for t in tracks.values() {
            let first = first_of_process.entry(t.pid).or_insert(t.first_us);
            *first = (*first).min(t.first_us);
        }
        model.tracks = tracks.into_values().collect();
        model.tracks.sort_by_key(|t| {
            (t.pid != root, first_of_process[&t.pid], t.pid, t.tid != t.pid, t.first_us, t.tid)
        });
        model
    }
}

/// Pairs each thread's phase marks into spans; a span still open when its thread was last seen
/// ends there (a worker killed inside it).
fn spans_of(records: &[&Record], tracks: &BTreeMap<(i32, i32), Track>) -> Vec<Span> {
    let mut open: HashMap<(i32, i32), Vec<Span>> = HashMap::new();
    let mut spans = Vec::new();
    for r in records.iter().filter(|r| r.event == PHASE_EVENT) {
        let key = (r.pid, r.thread_id());
        let name = r.data["name"].as_str().unwrap_or("").to_string();
        let t = r.t_us;
        match r.data["ph"].as_str() {
            Some("B") => {
                let span =
                    Span { pid: key.0, tid: key.1, name, start_us: t, end_us: t, closed: false };
                open.entry(key).or_default().push(span);
            }
            Some("E") => {
                let stack = open.entry(key).or_default();
                // The innermost open span of that name (spans close in reverse order).
                if let Some(pos) = stack.iter().rposition(|s| s.name == name) {
                    // Spans opened inside it and never closed end with it, unfinished: they nest.
                    for (depth, mut span) in stack.drain(pos..).enumerate().rev() {
                        span.end_us = t;
                        span.closed = depth == 0;
                        spans.push(span);
                    }
                }
            }
            _ => {}
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
    spans
}

fn counters_of(records: &[&Record]) -> Vec<CounterPoint> {
    let mut points = Vec::new();
    for r in records {
        for (event, field, name) in COUNTERS {
            if (*event == "*" || r.event == *event)
                && let Some(value) = r.data.get(*field).and_then(Value::as_f64)
            {
                points.push(CounterPoint { name, t_us: r.t_us, value });
            }
        }
    }
    points
}
