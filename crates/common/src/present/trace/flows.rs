//! Arrows between events: a message from its `put` to its `get`, a task from its submission to
//! its result, a lock from one holder to the next.

use std::collections::{BTreeSet, VecDeque};

use super::*;

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

/// Arrows the events can tell: (from event, to event, the fields that name the message, kind).
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

/// The recorded ends of a message or a task, drawn as their arrow only.
pub(super) const FLOW_ENDS: &[&str] = &["queue_put", "queue_got", "task_submitted", "task_result"];

pub(super) fn flows_of(records: &[&Record]) -> Vec<Flow> {
    let mut flows = Vec::new();
    // A guess only where the run recorded no real ids of its kind (a message, a result).
    let real = |end: &str| records.iter().any(|r| r.event == end);
    let (real_messages, real_results) = (real("queue_got"), real("task_result"));
    for (from, to, keys, name) in FLOWS {
        let guessed = !FLOW_ENDS.contains(from);
        if guessed && ((*name == "message" && real_messages) || (*name == "result" && real_results))
        {
            continue;
        }
        // First in, first out per id: a put is matched with the first get of that item after it.
        let mut waiting: HashMap<String, VecDeque<&Record>> = HashMap::new();
        for r in records.iter().filter(|r| r.event == *from || r.event == *to) {
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
                    from: (start.pid, start.thread_id(), start.t_us),
                    to: (r.pid, r.thread_id(), r.t_us),
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
pub(super) fn handovers(spans: &[Span], ids_from: u64) -> Vec<Flow> {
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let mut flows = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with("holding")) {
        let mut held: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        held.sort_by_key(|s| (s.start_us, s.end_us));
        if held.windows(2).any(|w| w[1].start_us < w[0].end_us) {
            continue;
        }
        for w in held.windows(2).filter(|w| (w[0].pid, w[0].tid) != (w[1].pid, w[1].tid)) {
            flows.push(Flow {
                id: ids_from + flows.len() as u64 + 1,
                name: "hand-over",
                key: json!({}),
                from: (w[0].pid, w[0].tid, w[0].end_us),
                to: (w[1].pid, w[1].tid, w[1].start_us),
            });
        }
    }
    flows
}
