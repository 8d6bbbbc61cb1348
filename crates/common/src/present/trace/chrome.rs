//! The model written as Chrome's Trace Event Format (see [the module](super)).

use super::*;

/// A track's metadata events (`kind`: process or thread): its name and its place in the list.
fn meta(kind: &str, pid: i32, tid: i32, name: &str, index: usize) -> [Value; 2] {
    let event = |what: &str, args: Value| {
        json!({"ph": "M", "name": format!("{kind}_{what}"), "pid": pid, "tid": tid,
            "args": args})
    };
    [event("name", json!({"name": name})), event("sort_index", json!({"sort_index": index}))]
}

impl Model {
    /// The Chrome Trace Event Format document.
    pub fn to_trace(&self) -> Value {
        let mut events: Vec<Value> = Vec::new();
        let mut named_pids = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            if !named_pids.contains(&t.pid) {
                named_pids.push(t.pid);
                let process =
                    self.tracks.iter().find(|p| p.pid == t.pid && p.is_process()).unwrap_or(t);
                events.extend(meta("process", t.pid, t.pid, &process.name, named_pids.len()));
            }
            events.extend(meta("thread", t.pid, t.tid, &t.name, 2 * i));
            if self.states.iter().any(|s| (s.pid, s.tid) == (t.pid, t.tid)) {
                let (kernel, name) = (t.tid + KERNEL_TRACK_OFFSET, format!("{} (kernel)", t.name));
                events.extend(meta("thread", t.pid, kernel, &name, 2 * i + 1));
            }
        }
        for s in &self.states {
            events.push(json!({"ph": "X", "name": s.state.name, "cat": "kernel",
                "pid": s.pid, "tid": s.tid + KERNEL_TRACK_OFFSET, "ts": s.start_us,
                "dur": s.end_us.saturating_sub(s.start_us).max(1), "cname": s.state.cname,
                "args": {"meaning": s.state.meaning, "on_cpu_us": s.run_ns / 1000,
                    "waiting_for_cpu_us": s.wait_ns / 1000}}));
        }
        let mut on_track: Vec<Value> = Vec::new();
        for s in &self.spans {
            on_track.push(json!({"ph": "B", "name": s.name, "cat": "phase",
                "pid": s.pid, "tid": s.tid, "ts": s.start_us}));
            let args = if s.closed { json!({}) } else { json!({"unfinished": true}) };
            on_track.push(json!({"ph": "E", "name": s.name, "cat": "phase",
                "pid": s.pid, "tid": s.tid, "ts": s.end_us, "args": args}));
        }
        for i in &self.instants {
            let cat = if i.kind == "event" || i.kind == "step" { i.kind } else { "lifecycle" };
            on_track.push(json!({"ph": "i", "s": "t", "name": i.name, "cat": cat,
                "pid": i.pid, "tid": i.tid, "ts": i.t_us, "args": i.data}));
        }
        for f in &self.flows {
            // A flow binds to a slice on its track at its moment (same cat, pid, tid and ts):
            // a 1 µs slice at each end, named after the message.
            for (pid, tid, ts) in [f.from, f.to] {
                on_track.push(json!({"ph": "X", "name": f.name, "cat": "flow", "pid": pid,
                    "tid": tid, "ts": ts, "dur": 1, "cname": "grey"}));
            }
            let ((pid, tid, ts), id) = (f.from, f.id);
            on_track.push(json!({"ph": "s", "id": id, "name": f.name, "cat": "flow",
                "pid": pid, "tid": tid, "ts": ts, "args": f.key}));
            let (pid, tid, ts) = f.to;
            on_track.push(json!({"ph": "f", "bp": "e", "id": id, "name": f.name, "cat": "flow",
                "pid": pid, "tid": tid, "ts": ts, "args": f.key}));
        }
        // In time order; at one moment an E closes before anything else begins, then B,
        // instants, flows (the 1 µs slice before its flow event, as pushed: the sort is stable).
        let order = |ph: &str| ["E", "B", "i"].iter().position(|p| *p == ph).unwrap_or(3);
        on_track.sort_by_key(|e| (e["ts"].as_u64(), order(e["ph"].as_str().unwrap_or(""))));
        events.extend(on_track);
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
