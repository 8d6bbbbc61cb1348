//! The model written as Chrome's Trace Event Format, which Perfetto's UI and `chrome://tracing`
//! open as it is.

use super::*;

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
