//! `--trace` and `--svg`: the run as Trace Event JSON and as a picture, checked for form (valid
//! JSON, paired slices, time order, a named track for every process and thread that spoke) and
//! for what they must show on the real kernel (a zombie's Z until its reap, overlapping critical
//! sections without the lock and none with it, deadlocked threads asleep, a killed worker's
//! track ending and its replacement's beginning), for the arrows drawn from real ids (a queue's
//! message from its put to its get, a pool task from its submission to its result), and for a
//! chosen schedule's steps, which run in the schedule's order.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;
use support::{Output, TempDir};

/// The kernel track of a thread has this added to its tid (see `common::trace`).
const KERNEL: i64 = common::trace::KERNEL_TRACK_OFFSET as i64;

/// A parsed trace: its events, and each track's name by (pid, tid).
struct Trace {
    events: Vec<Value>,
    names: HashMap<(i64, i64), String>,
}

impl Trace {
    fn read(path: &Path) -> Trace {
        let text = std::fs::read_to_string(path).expect("the trace file");
        let doc: Value = serde_json::from_str(&text).expect("the trace is valid JSON");
        let events = doc["traceEvents"].as_array().expect("a traceEvents array").clone();
        let mut names = HashMap::new();
        for e in &events {
            if e["ph"] == "M" && e["name"] == "thread_name" {
                let name = e["args"]["name"].as_str().expect("a thread name").to_string();
                names.insert((e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap()), name);
            }
        }
        Trace { events, names }
    }

    /// Every non-metadata event of one track, in file order.
    fn on(&self, pid: i64, tid: i64) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["ph"] != "M" && e["pid"] == pid && e["tid"] == tid)
            .collect()
    }

    /// The spans named `name` on every track: (pid, tid, begin, end).
    fn spans(&self, name: &str) -> Vec<(i64, i64, u64, u64)> {
        let mut open: HashMap<(i64, i64), Vec<u64>> = HashMap::new();
        let mut spans = Vec::new();
        for e in self.events.iter().filter(|e| e["name"] == name) {
            let key = (e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap());
            let ts = e["ts"].as_u64().unwrap();
            match e["ph"].as_str() {
                Some("B") => open.entry(key).or_default().push(ts),
                Some("E") => {
                    let begin = open.get_mut(&key).and_then(Vec::pop).expect("an E after its B");
                    spans.push((key.0, key.1, begin, ts));
                }
                _ => {}
            }
        }
        spans
    }

    /// The kernel-state slices of one thread: (state, start, end).
    fn states(&self, pid: i64, tid: i64) -> Vec<(String, u64, u64)> {
        self.on(pid, tid + KERNEL)
            .into_iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| {
                let ts = e["ts"].as_u64().unwrap();
                (e["name"].as_str().unwrap().to_string(), ts, ts + e["dur"].as_u64().unwrap())
            })
            .collect()
    }

    /// The first and last moment of any event on a thread's tracks (its own and its kernel one).
    fn extent(&self, pid: i64, tid: i64) -> Option<(u64, u64)> {
        let mut times = Vec::new();
        for e in self.on(pid, tid).into_iter().chain(self.on(pid, tid + KERNEL)) {
            let ts = e["ts"].as_u64().unwrap();
            times.push(ts);
            times.push(ts + e["dur"].as_u64().unwrap_or(0));
        }
        Some((*times.iter().min()?, *times.iter().max()?))
    }
}

/// The time of an event on the demo's clock, in µs.
fn t_us(e: &Value) -> u64 {
    e["t_us"].as_u64().unwrap_or_else(|| panic!("an event without t_us: {e}"))
}

fn pid(e: &Value) -> i64 {
    e["pid"].as_i64().unwrap()
}

/// Checks what every trace must be: B/E paired on each track, time never going back on a
/// track, a named track for every pid/tid that printed an event, the root's processes named.
fn assert_well_formed(trace: &Trace, out: &Output) {
    let mut tracks: BTreeSet<(i64, i64)> = BTreeSet::new();
    for e in &trace.events {
        let ph = e["ph"].as_str().expect("every event has a ph");
        assert!(
            ["M", "B", "E", "X", "i", "C", "s", "f"].contains(&ph),
            "an unexpected phase {ph}: {e}"
        );
        if ph != "M" && ph != "C" {
            assert!(e["ts"].is_u64(), "ts in µs: {e}");
            tracks.insert((e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap()));
        }
        if ph == "X" {
            assert!(e["dur"].as_u64().unwrap() >= 1 && e["cname"].is_string(), "{e}");
        }
        if ph == "f" {
            assert_eq!(e["bp"], "e", "{e}");
        }
    }
    for &(pid, tid) in &tracks {
        assert!(trace.names.contains_key(&(pid, tid)), "track {pid}/{tid} has no thread_name");
        let mut stack: Vec<String> = Vec::new();
        let mut last = 0;
        for e in trace.on(pid, tid) {
            let ts = e["ts"].as_u64().unwrap();
            assert!(ts >= last, "time goes back on {pid}/{tid}: {last} then {e}");
            last = ts;
            match e["ph"].as_str() {
                Some("B") => stack.push(e["name"].as_str().unwrap().into()),
                Some("E") => {
                    assert_eq!(stack.pop().as_deref(), e["name"].as_str(), "E without its B: {e}")
                }
                _ => {}
            }
        }
        assert!(stack.is_empty(), "B without E on {pid}/{tid}: {stack:?}");
    }
    for e in &out.events {
        let key = (pid(e), e["tid"].as_i64().unwrap());
        assert!(trace.names.contains_key(&key), "{key:?} printed {} but has no track", e["event"]);
    }
    let processes: BTreeSet<i64> = trace
        .events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    for e in &out.events {
        assert!(processes.contains(&pid(e)), "no process_name for {}", pid(e));
    }
}

/// Runs a demo with --json and the pictures asked; fails unless it exits 0 and leaves nothing.
fn traced(bin: &str, args: &[&str], dir: &TempDir, svg: bool) -> (Output, Trace) {
    let trace = dir.join("run.json");
    let picture = dir.join("run.svg");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--trace", trace.to_str().unwrap()]);
    if svg {
        all.extend(["--svg", picture.to_str().unwrap()]);
    }
    let out = support::run_ok(bin, &all);
    let parsed = Trace::read(&trace);
    assert_well_formed(&parsed, &out);
    (out, parsed)
}

/// Every pair of `spans` that overlaps in time, from different threads.
fn overlapping(spans: &[(i64, i64, u64, u64)]) -> usize {
    let mut n = 0;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if (a.0, a.1) != (b.0, b.1) && a.2 < b.3 && b.2 < a.3 {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn without_the_lock_the_buyers_critical_sections_overlap_and_the_svg_has_a_lane_each() {
    let dir = TempDir::new("trace-race");
    let db = dir.join("db.json");
    std::fs::write(&db, b"{\"count\": 1}").unwrap();
    let (out, trace) =
        traced("mutex-ticket", &["run", "--no-lock", "--db", db.to_str().unwrap()], &dir, true);
    let buyers: BTreeSet<i64> = out.named("bought").iter().map(|e| pid(e)).collect();
    if buyers.len() < 2 {
        out.fail("only one buyer bought: the race did not show in this run");
    }
    let sections = trace.spans("critical section");
    // Two buyers that both sold the one ticket both read 1: each read before the other wrote,
    // so their critical sections overlap, pair by pair.
    let sold: Vec<_> = sections.iter().filter(|s| buyers.contains(&s.0)).copied().collect();
    assert_eq!(sold.len(), buyers.len(), "one critical section per buyer that bought");
    let pairs = buyers.len() * (buyers.len() - 1) / 2;
    assert_eq!(overlapping(&sold), pairs, "{sold:?}");
    // The counter of the tickets left follows the buyers' writes.
    assert!(trace.events.iter().any(|e| e["ph"] == "C" && e["name"] == "tickets left"));

    // The picture: one lane per process and per thread of the demo (the helper threads aside).
    let text = std::fs::read_to_string(dir.join("run.svg")).unwrap();
    let svg = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    let lanes: BTreeSet<(i64, i64)> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("lane"))
        .map(|n| {
            let num = |a: &str| n.attribute(a).unwrap().parse::<i64>().unwrap();
            (num("data-pid"), num("data-tid"))
        })
        .collect();
    let tracks: BTreeSet<(i64, i64)> = trace
        .names
        .iter()
        .filter(|((_, tid), name)| {
            *tid < KERNEL && !common::trace::HELPER_THREADS.contains(&name.as_str())
        })
        .map(|(key, _)| *key)
        .collect();
    assert_eq!(lanes, tracks);
    let spoke: BTreeSet<i64> = out.events.iter().map(pid).collect();
    assert!(spoke.iter().all(|p| lanes.iter().any(|l| l.0 == *p)), "a process with no lane");
    let critical = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("span"))
        .filter(|n| n.attribute("data-name") == Some("critical section"))
        .count();
    assert_eq!(critical, sections.len());
}

#[test]
fn with_the_lock_no_two_critical_sections_overlap() {
    let dir = TempDir::new("trace-lock");
    let db = dir.join("db.json");
    std::fs::write(&db, b"{\"count\": 3}").unwrap();
    let args = ["run", "--buyers", "5", "--search-ms", "20", "--buy-ms", "20"];
    let (out, trace) =
        traced("mutex-ticket", &[&args[..], &["--db", db.to_str().unwrap()]].concat(), &dir, false);
    let sections = trace.spans("critical section");
    assert_eq!(sections.len(), 5, "every buyer enters it once: {sections:?}");
    assert_eq!(overlapping(&sections), 0, "{sections:?}");
    let holding = trace.spans("holding the lock");
    assert_eq!(holding.len(), 5);
    assert_eq!(overlapping(&holding), 0, "{holding:?}");
    assert_eq!(out.named("bought").len(), 3);
    // The lock handed on four times: an arrow from each holder's release to the next's hold.
    let mut handovers: Vec<(u64, u64)> = trace
        .events
        .iter()
        .filter(|e| e["name"] == "hand-over" && (e["ph"] == "s" || e["ph"] == "f"))
        .map(|e| (e["id"].as_u64().unwrap(), e["ts"].as_u64().unwrap()))
        .collect();
    handovers.sort();
    assert_eq!(handovers.len(), 8, "{handovers:?}");
    let mut ends: Vec<u64> = holding.iter().map(|h| h.3).collect();
    let mut starts: Vec<u64> = holding.iter().map(|h| h.2).collect();
    ends.sort();
    starts.sort();
    for pair in handovers.chunks(2) {
        let (from, to) = (pair[0].1, pair[1].1);
        assert!(ends.contains(&from) && starts.contains(&to) && from <= to, "{pair:?}");
    }
}

#[test]
fn a_zombie_shows_a_z_slice_between_its_exit_and_its_reap() {
    let dir = TempDir::new("trace-zombie");
    let (out, trace) = traced("zombie-orphan", &["zombie"], &dir, false);
    let zombie = out.one("zombie");
    let child = zombie["data"]["pid"].as_i64().unwrap();
    let reaped = out.named("reaped").into_iter().find(|e| e["data"]["pid"] == child).unwrap();
    let states = trace.states(child, child);
    let z: Vec<_> = states.iter().filter(|s| s.0 == "Z").collect();
    assert_eq!(z.len(), 1, "{states:?}");
    let (_, start, end) = z[0];
    // Z from the child's exit (after its last event) until the reap, and nothing after it.
    let last_word = out.events.iter().filter(|e| pid(e) == child).map(t_us).max().unwrap();
    assert!(*start >= last_word, "Z before the child's last event: {states:?}");
    assert!(*end <= t_us(reaped), "Z after the reap: {states:?}");
    assert_eq!(states.last().unwrap().0, "Z", "the child's last state is Z: {states:?}");
    assert!(trace.events.iter().any(|e| e["ph"] == "i"
        && e["cat"] == "lifecycle"
        && e["name"] == "reaped"
        && e["pid"] == pid(reaped)));
}

#[test]
fn deadlocked_threads_sleep_from_the_deadlock_to_the_kill() {
    let dir = TempDir::new("trace-deadlock");
    // --hold: the parent waits this long (at least) after its ps table, before the kill.
    const HOLD_US: u64 = 300_000;
    let (out, trace) = traced("deadlock", &["classic", "--hold", "0.3"], &dir, false);
    let found = out.one("deadlock");
    // The parent's table of the child's threads: printed once it has read both asleep again
    // (to report, the detector wakes each deadlocked thread to capture its own backtrace, and
    // on a loaded machine one may still be on its way back to sleep after the report).
    let table = out.one("threads");
    let held = out.one("hold");
    let threads = found["data"]["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2);
    for t in threads {
        let tid = t["tid"].as_i64().unwrap();
        let states = trace.states(pid(found), tid);
        // Every state read from the table to the kill is S. A slice begins at a reading; it
        // lasts until the next reading of another state.
        let window = t_us(table)..t_us(held) + HOLD_US;
        let times = (t_us(table), t_us(held));
        let read_inside: Vec<_> = states.iter().filter(|s| window.contains(&s.1)).collect();
        assert!(read_inside.iter().all(|s| s.0 == "S"), "{tid} not asleep {times:?}: {states:?}");
        // And asleep still when the parent paused before the kill.
        assert!(
            states.iter().any(|s| s.0 == "S" && s.1 < t_us(held) + HOLD_US && s.2 >= t_us(held)),
            "{tid} not asleep at the pause {times:?}: {states:?}"
        );
        // Each holds its first lock until the end: the span never closed.
        let holding: Vec<_> = trace
            .on(pid(found), tid)
            .into_iter()
            .filter(|e| e["ph"] == "E" && e["args"]["unfinished"] == true)
            .collect();
        assert_eq!(holding.len(), 1, "one lock held to the end by {tid}");
    }
}

#[test]
fn a_killed_pool_worker_s_track_ends_and_its_replacement_s_begins() {
    let dir = TempDir::new("trace-pool");
    let (out, trace) = traced("pool", &["fault"], &dir, false);
    let summary = &out.one("fault_summary")["data"];
    let victim = summary["killed"].as_i64().unwrap();
    let killing = out.one("killing");
    let end_of_run = out.events.iter().map(t_us).max().unwrap();
    let (_, victim_end) = trace.extent(victim, victim).expect("a track for the killed worker");
    assert!(victim_end < end_of_run, "the killed worker's track goes on to the end");
    let replacements: Vec<i64> = summary["replacement"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_i64).collect());
    let replacements = if replacements.is_empty() {
        vec![summary["replacement"].as_i64().expect("the replacement's pid")]
    } else {
        replacements
    };
    for new in replacements {
        let (begin, _) = trace.extent(new, new).expect("a track for the new worker");
        assert!(begin > t_us(killing), "the new worker {new} was there before the kill");
    }
    // The task the victim was running ends unfinished on its track.
    let running = trace.spans("task running");
    assert!(running.iter().any(|s| s.0 == victim), "{running:?}");
}

/// The arrows of one name: (id, the `s` event, the `f` event), each id's two ends checked to
/// be there once each, the start no later than the end.
fn flows<'a>(trace: &'a Trace, name: &str) -> Vec<(u64, &'a Value, &'a Value)> {
    let mut ends: BTreeMap<u64, (Vec<&Value>, Vec<&Value>)> = BTreeMap::new();
    for e in trace.events.iter().filter(|e| e["cat"] == "flow" && e["name"] == name) {
        let id = || e["id"].as_u64().expect("a flow id");
        match e["ph"].as_str() {
            Some("s") => ends.entry(id()).or_default().0.push(e),
            Some("f") => ends.entry(id()).or_default().1.push(e),
            _ => {}
        }
    }
    ends.into_iter()
        .map(|(id, (starts, finishes))| {
            assert_eq!(
                (starts.len(), finishes.len()),
                (1, 1),
                "flow {id}: {starts:?} {finishes:?}"
            );
            let (s, f) = (starts[0], finishes[0]);
            assert!(s["ts"].as_u64() <= f["ts"].as_u64(), "flow {id} ends before it starts");
            (id, s, f)
        })
        .collect()
}

#[test]
fn a_queue_s_messages_flow_from_each_put_to_its_get_by_their_real_ids() {
    // Fork and spawn: a spawned child learns that the run is traced from its environment.
    for method in ["fork", "spawn"] {
        let dir = TempDir::new("trace-queue");
        let (out, trace) =
            traced("joinable-queue", &["--start-method", method, "sentinel"], &dir, false);
        let messages = flows(&trace, "message");
        // Each message id is used once at each end, and names the process that put it.
        let ids: Vec<u64> =
            messages.iter().map(|(_, s, _)| s["args"]["msg"].as_u64().unwrap()).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{method}: a message id used twice: {ids:?}");
        for (_, s, f) in &messages {
            assert_eq!(s["args"], f["args"], "{method}: both ends name the same message");
            let id = s["args"]["msg"].as_u64().unwrap();
            assert_eq!((id >> 32) as i64, pid(s), "{method}: {id:#x} is not its sender's");
        }
        // Every item and every sentinel a consumer took came to it by an arrow from the
        // process that put it: a producer, or the main process (the sentinels).
        let consumers: BTreeSet<i64> = out.named("ate").iter().map(|e| pid(e)).collect();
        let producers: BTreeSet<i64> = out.named("produced").iter().map(|e| pid(e)).collect();
        let taken = out.named("ate").len() + out.named("sentinel").len();
        let to_consumers: Vec<_> =
            messages.iter().filter(|(_, _, f)| consumers.contains(&pid(f))).collect();
        assert_eq!(to_consumers.len(), taken, "{method}: {to_consumers:?}");
        let root = out.one("summary");
        for (_, s, _) in to_consumers {
            assert!(producers.contains(&pid(s)) || pid(s) == pid(root), "{method}: from {s}");
        }
        // The real ids replace the guess from the items: no second arrow per item.
        assert!(messages.iter().all(|(_, s, _)| s["args"]["item"].is_null()));
    }
}

#[test]
fn each_pool_task_flows_from_its_submission_to_its_result() {
    let dir = TempDir::new("trace-pool-results");
    let (out, trace) = traced("pool", &["apply-async"], &dir, false);
    let results = flows(&trace, "result");
    // apply_async submits each task once, in the main thread; the result thread receives each.
    assert_eq!(results.len(), out.named("task_end").len(), "{results:?}");
    let root = out.one("pool_started");
    let jobs: BTreeSet<u64> =
        results.iter().map(|(_, s, _)| s["args"]["job"].as_u64().unwrap()).collect();
    assert_eq!(jobs.len(), results.len(), "a job submitted twice");
    for (_, s, f) in &results {
        assert_eq!((pid(s), s["tid"].as_i64()), (pid(root), root["tid"].as_i64()), "{s}");
        assert_eq!(trace.names[&(pid(f), f["tid"].as_i64().unwrap())], "pool-results", "{f}");
        assert_eq!(s["args"], f["args"]);
    }
}

#[test]
fn a_chosen_schedule_s_steps_run_in_its_order_one_lane_per_worker() {
    let dir = TempDir::new("trace-schedule");
    let db = dir.join("db.json");
    std::fs::write(&db, b"{\"count\": 1}").unwrap();
    // Both searches before either write (it oversells), and not simply alternating.
    let schedule = [1, 0, 1, 0, 0, 0, 1, 1];
    let list = schedule.map(|w| w.to_string()).join(",");
    let args = ["run", "--no-lock", "--schedule", &list, "--db", db.to_str().unwrap()];
    let (out, trace) = traced("mutex-ticket", &args, &dir, true);
    assert_eq!(out.one("summary")["data"]["oversold"], 1);
    // Each buyer's pid, by its worker number.
    let worker: HashMap<i64, i64> = out
        .named("searched")
        .iter()
        .map(|e| (pid(e), e["data"]["buyer"].as_i64().unwrap()))
        .collect();
    assert_eq!(worker.len(), 2);
    let mut steps: Vec<&Value> = trace
        .events
        .iter()
        .filter(|e| e["ph"] == "i" && e["cat"] == "step" && worker.contains_key(&pid(e)))
        .collect();
    steps.sort_by_key(|e| e["ts"].as_u64());
    // The k-th step the buyers ran is the k-th of the schedule, and the one it granted.
    let ran: Vec<i64> = steps.iter().map(|e| worker[&pid(e)]).collect();
    assert_eq!(ran, schedule.map(i64::from), "{steps:?}");
    let granted: Vec<&str> =
        out.named("step").iter().map(|e| e["data"]["step"].as_str().unwrap()).collect();
    let names: Vec<&str> = steps.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, granted);

    // The picture: each step a numbered mark on its buyer's lane, and in the strip of steps
    // the k-th column is the k-th worker's.
    let text = std::fs::read_to_string(dir.join("run.svg")).unwrap();
    let svg = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    let lane_pid = |n: roxmltree::Node| -> i64 {
        let lane = n.ancestors().find(|a| a.attribute("class") == Some("lane"));
        let pid = n.attribute("data-pid").or_else(|| lane?.attribute("data-pid"));
        pid.expect("a pid").parse().unwrap()
    };
    let numbered = |class: &str, kind: Option<&str>| {
        let mut found: Vec<(usize, i64)> = svg
            .descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .filter(|n| kind.is_none() || n.attribute("data-kind") == kind)
            .filter(|n| worker.contains_key(&lane_pid(*n)))
            .map(|n| (n.attribute("data-order").unwrap().parse().unwrap(), worker[&lane_pid(n)]))
            .collect();
        found.sort();
        found
    };
    let expected: Vec<(usize, i64)> =
        schedule.iter().enumerate().map(|(k, w)| (k + 1, i64::from(*w))).collect();
    assert_eq!(numbered("mark", Some("step")), expected);
    assert_eq!(numbered("step-cell", None), expected);
}

#[test]
fn a_bad_path_exits_2_naming_the_flag_before_anything_starts() {
    let dir = TempDir::new("trace-bad");
    let missing = dir.join("no-such-folder").join("run.json");
    let file_as_dir = dir.join("plain");
    std::fs::write(&file_as_dir, b"x").unwrap();
    let under_file = file_as_dir.join("run.svg");
    let cases: [(&str, &Path); 4] = [
        ("--trace", dir.path()),
        ("--svg", dir.path()),
        ("--trace", &missing),
        ("--svg", &under_file),
    ];
    for (flag, path) in cases {
        let out =
            support::run("zombie-orphan", &["--json", "zombie", flag, path.to_str().unwrap()]);
        out.assert_code(2);
        assert!(out.stderr.contains(flag), "{flag}: {}", out.stderr);
        assert!(out.events.is_empty(), "something ran: {:?}", out.events);
        out.assert_nothing_left();
    }
    // /proc refuses new files even to root: an unwritable folder.
    let out = support::run("zombie-orphan", &["zombie", "--trace", "/proc/run.json"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--trace /proc/run.json: cannot write"), "{}", out.stderr);
    assert_eq!(out.stdout, "", "something ran");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a file left behind");
}

#[test]
fn an_existing_file_is_replaced_whole() {
    let dir = TempDir::new("trace-replace");
    let path = dir.join("run.json");
    let old = format!("{{\"old\": \"{}\"}}", "x".repeat(1 << 20));
    std::fs::write(&path, &old).unwrap();
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&path).unwrap().ino();
    let out = support::run_ok("zombie-orphan", &["zombie", "--trace", path.to_str().unwrap()]);
    // A new file put in place by rename (a new inode), not the old one overwritten in place.
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), before);
    let trace = Trace::read(&path);
    assert_well_formed(&trace, &out);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("\"old\""));
    let names: BTreeMap<String, ()> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| (e.unwrap().file_name().to_string_lossy().into_owned(), ()))
        .collect();
    assert_eq!(names.keys().collect::<Vec<_>>(), ["run.json"], "a temporary file left behind");
}

#[test]
fn ctrl_c_still_writes_the_run_so_far_once_every_child_is_reaped() {
    let dir = TempDir::new("trace-interrupt");
    let path = dir.join("run.json");
    let picture = dir.join("run.svg");
    let args = ["--json", "zombie", "--hold", "60", "--trace", path.to_str().unwrap()];
    let mut demo = support::Demo::start(
        "zombie-orphan",
        &[&args[..], &["--svg", picture.to_str().unwrap()]].concat(),
    );
    let held = demo.wait_event("hold");
    let child = held["data"]["pids"][1].as_i64().unwrap();
    let out = demo.interrupt(false);
    out.assert_code(130).assert_nothing_left();
    let trace = Trace::read(&path);
    assert_well_formed(&trace, &out);
    // The zombie, and the watcher's stop, are in it.
    assert!(trace.states(child, child).iter().any(|s| s.0 == "Z"));
    assert!(trace.events.iter().any(|e| e["ph"] == "i" && e["name"] == "interrupted"));
    roxmltree::Document::parse(&std::fs::read_to_string(&picture).unwrap()).unwrap();
}

#[test]
fn the_tour_checks_the_picture_paths_before_any_part() {
    let dir = TempDir::new("trace-tour");
    let out =
        support::run("tour", &["--only", "zombie-orphan", "--svg", dir.path().to_str().unwrap()]);
    out.assert_code(2);
    assert!(out.stderr.contains("--svg"), "{}", out.stderr);
    assert_eq!(out.stdout, "", "a part ran");
}
