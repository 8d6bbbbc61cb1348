//! threads: Ex.1's lines, the named threads in `/proc/PID/task`, shared memory against a forked
//! child, the costs, daemon threads, the balance race counted and fixed, a lock whose holder
//! ends, Ctrl-C and bad flags; checked from `--json` events and from `/proc`.

mod support;

use std::collections::HashSet;

use serde_json::Value;
use support::{Demo, Output, pid_of, run, run_ok};

const BIN: &str = "threads";

/// The events of `out` named `name` whose `data[key]` is `value`.
fn with<'a>(out: &'a Output, name: &str, key: &str, value: &str) -> Vec<&'a Value> {
    out.named(name).into_iter().filter(|e| e["data"][key] == value).collect()
}

#[test]
fn does_ex1_print_the_notes_lines_in_order_from_main_and_loopthread() {
    let out = run_ok(BIN, &["names", "--speed", "200"]);
    let lines: Vec<&str> =
        out.named("ex1").iter().map(|e| e["data"]["text"].as_str().unwrap()).collect();
    let mut expected = vec![
        "thread MainThread is running...".to_string(),
        "thread LoopThread is running...".to_string(),
    ];
    expected.extend((1..=5).map(|n| format!("thread LoopThread >>> {n}")));
    expected.push("thread LoopThread ended".into());
    expected.push("thread MainThread ended".into());
    assert_eq!(lines, expected);
    for e in out.named("ex1") {
        assert_eq!(pid_of(&e["pid"]), out.pid, "every line comes from the demo's one process");
        let from_loop = e["data"]["text"].as_str().unwrap().contains("LoopThread");
        assert_eq!(from_loop, e["thread"] == "LoopThread", "{e}");
        assert_eq!(from_loop, pid_of(&e["tid"]) != out.pid, "only main's tid is the pid: {e}");
    }
    // People's lines name the thread and its tid: [pid/tid LoopThread].
    let people = run(BIN, &["names", "--speed", "200"]);
    people.assert_code(0);
    assert!(
        people.stdout.lines().any(|l| l.contains(&format!("[{:>6}/", people.pid))
            && l.contains(" LoopThread] thread LoopThread >>> 1")),
        "{}",
        people.stdout
    );
}

#[test]
fn are_the_named_threads_in_proc_task_of_one_pid_with_distinct_tids_and_does_ctrl_c_leave_nothing()
{
    let mut demo = Demo::start(BIN, &["names", "--json", "--speed", "200", "--hold", "60"]);
    let view = demo.wait_event("thread_view");
    demo.wait_event("hold");
    let pid = demo.pid();
    // Read by the test itself, not taken from the demo's word.
    let mut comms = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: i32 = entry.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap();
        comms.push((tid, comm.trim_end().to_string()));
    }
    let tids: HashSet<i32> = comms.iter().map(|(t, _)| *t).collect();
    assert_eq!(tids.len(), comms.len(), "distinct tids: {comms:?}");
    assert!(tids.contains(&pid), "the main thread's tid is the pid: {comms:?}");
    let names: Vec<&str> = comms.iter().map(|(_, c)| c.as_str()).collect();
    assert!(names.contains(&"LoopThread"), "{comms:?}");
    assert!(names.contains(&"LoopThread-with"), "the kernel keeps 15 bytes: {comms:?}");
    for t in view["data"]["threads"].as_array().unwrap() {
        let tid = pid_of(&t["tid"]);
        assert!(tids.contains(&tid) && tid != pid, "{t} is a thread of {pid}: {comms:?}");
        assert!(comms.contains(&(tid, t["expected"].as_str().unwrap().to_string())), "{t}");
    }
    let out = demo.interrupt(true);
    out.assert_code(130).assert_nothing_left();
    assert_quiet_after_interrupt(&out);
}

/// After `interrupted`, the demo's process prints only the signal watcher's lines.
fn assert_quiet_after_interrupt(out: &Output) {
    let Some(at) = out.events.iter().position(|e| e["event"] == "interrupted") else {
        out.fail("no interrupted event");
    };
    for e in &out.events[at..] {
        if pid_of(&e["pid"]) == out.pid && e["thread"] != "signal-watcher" {
            out.fail(&format!("a thread printed after the interrupt: {e}"));
        }
    }
    assert_eq!(out.events.last().unwrap()["event"], "exit");
}

#[test]
fn does_ctrl_c_at_any_moment_exit_130_with_no_threads_work_after_and_no_child_left() {
    // The tour, interrupted at the start of a part (or a moment later): Ex.1's sleeps, the
    // costs (fork and spawn children), the daemon children, the racy threads at work.
    let cases: [(&str, usize, u64, bool); 5] = [
        ("1. names", 0, 3, true),
        ("4. what", 0, 5, true),
        ("5. daemon", 1, 0, true),
        ("5. daemon", 3, 4, false),
        ("6. race", 0, 1, true),
    ];
    for (part, skip, delay_ms, to_group) in cases {
        let mut demo = Demo::start(BIN, &["--json"]);
        demo.wait_for(&format!("part {part}"), |e| {
            e["event"] == "section" && e["data"]["title"].as_str().unwrap().starts_with(part)
        });
        for _ in 0..skip {
            demo.wait_for("any line", |_| true);
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        assert_quiet_after_interrupt(&out);
    }
}

#[test]
fn does_ctrl_c_at_a_random_moment_of_the_tour_leave_nothing_and_print_nothing_after() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    eprintln!("threads: Ctrl-C at random moments, seed {seed} (CHAOS_SEED={seed} repeats it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..3 {
        let mut demo = Demo::start(BIN, &["--json"]);
        demo.wait_event("section");
        let after = std::time::Duration::from_millis(rng.u64(0..2000));
        std::thread::sleep(after);
        let out = demo.interrupt(rng.bool());
        // The tour may have ended by itself first (a fast machine): then it exited 0.
        if out.code() == Some(0) {
            out.assert_nothing_left();
            continue;
        }
        out.assert_code(130).assert_nothing_left();
        assert_quiet_after_interrupt(&out);
    }
}

#[test]
fn do_both_ways_start_a_named_thread_of_the_same_process() {
    let out = run_ok(BIN, &["two-ways", "--speed", "100"]);
    for name in ["egon", "MyThread"] {
        let steps: Vec<&str> = with(&out, "task", "name", name)
            .iter()
            .map(|e| e["data"]["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["running", "done"], "{name}");
        for e in with(&out, "task", "name", name) {
            assert_eq!(pid_of(&e["pid"]), out.pid);
            assert_ne!(pid_of(&e["tid"]), out.pid, "{name} runs in a thread of its own");
        }
    }
    assert_eq!(with(&out, "task", "name", "egon")[0]["thread"], "task");
    assert_eq!(with(&out, "task", "name", "MyThread")[0]["thread"], "MyThread");
}

#[test]
fn does_main_see_a_threads_write_at_the_same_address_but_not_a_forked_childs() {
    let out = run_ok(BIN, &["shared"]);
    let main = &out.one("main_value")["data"];
    let after_thread = &out.one("after_thread")["data"];
    let after_child = &out.one("after_child")["data"];
    assert_eq!(after_thread["value"], 99, "the thread's write is seen");
    assert_eq!(after_child["value"], 50, "the child's write is not");
    assert_eq!(main["address"], after_thread["address"]);
    let child_wrote = with(&out, "wrote", "who", "child");
    assert_eq!(child_wrote.len(), 1);
    let child = child_wrote[0];
    assert_ne!(pid_of(&child["pid"]), out.pid, "the child is another process");
    assert_eq!(pid_of(&child["pid"]), pid_of(&after_child["child"]));
    assert_eq!(child["data"]["address"], main["address"], "fork: the same virtual address");
    assert_eq!(child["data"]["value"], 99);
    assert_eq!(out.one("scoped_borrow")["data"]["len"], 1);
}

#[test]
fn does_the_racy_loop_lose_updates_when_both_threads_are_held_inside_the_window() {
    let out = run_ok(BIN, &["race", "--window", "barrier", "--updates", "300"]);
    let racy = &with(&out, "race", "variant", "racy (load, then store)")[0]["data"];
    assert!(racy["lost"].as_u64().unwrap() > 0, "a barrier between read and write: {racy}");
    assert_eq!(racy["invariant_held"], false);
    for variant in ["Mutex", "fetch_add"] {
        let d = &with(&out, "race", "variant", variant)[0]["data"];
        assert_eq!((d["lost"].as_u64(), d["balance"].as_i64()), (Some(0), Some(0)), "{variant}");
        assert_eq!(d["changes"], 600, "{variant}: every call counted");
    }
    let poisoned = &out.one("poisoned")["data"];
    assert_eq!(poisoned["poisoned"], true);
    assert_eq!(poisoned["balance_seen"], 8, "the holder's half-done change is visible");
    assert_eq!(with(&out, "panic", "thread", "panicker").len(), 1);
}

#[test]
fn are_mutex_and_fetch_add_exact_under_a_yield_in_the_window() {
    let out = run_ok(BIN, &["race", "--window", "yield", "--updates", "20000"]);
    for variant in ["Mutex", "fetch_add"] {
        let d = &with(&out, "race", "variant", variant)[0]["data"];
        assert_eq!((d["lost"].as_u64(), d["balance"].as_i64()), (Some(0), Some(0)), "{variant}");
    }
}

#[test]
fn is_a_daemon_threads_finally_never_run_and_a_scoped_threads_always_run() {
    let out = run_ok(BIN, &["daemon", "--speed", "50"]);
    let summary = &out.one("daemon_summary")["data"];
    let python = pid_of(&summary["python_rule"]["pid"]);
    let rust = pid_of(&summary["rust_rule"]["pid"]);
    // Read from the children's own lines on the shared stdout.
    let from = |pid: i32, event: &str, of: Option<&str>| {
        out.named(event)
            .iter()
            .filter(|e| pid_of(&e["pid"]) == pid && of.is_none_or(|of| e["data"]["of"] == of))
            .count()
    };
    assert_eq!(from(python, "finished", None), 1, "Python's rule joins the non-daemon worker");
    assert_eq!(from(python, "finally", Some("worker")), 1);
    assert_eq!(from(python, "finally", Some("heartbeat")), 0, "the daemon is cut off");
    assert_eq!(from(rust, "main_returns", None), 1);
    assert_eq!(from(rust, "finally", Some("heartbeat")), 0, "main returned: the thread died");
    assert_eq!(from(out.pid, "finally", Some("worker")), 1, "thread::scope joins");
    assert_eq!(from(out.pid, "finally", Some("heartbeat")), 1);
    for pid in [python, rust] {
        assert_ne!(pid, out.pid);
    }
}

#[test]
fn is_a_lock_freed_when_its_holder_ends_poisoned_after_a_panic_and_held_only_if_leaked() {
    let out = run_ok(BIN, &["dead-holder"]);
    let found =
        |ending: &str| with(&out, "holder_ended", "ending", ending)[0]["data"]["try_lock"].clone();
    assert_eq!(found("returns"), "acquired");
    assert_eq!(found("panics"), "poisoned");
    assert_eq!(found("leaks_the_guard"), "would_block");
}

#[test]
fn are_the_costs_measured_for_threads_fork_and_spawn_children_and_both_switches() {
    let out = run_ok(BIN, &["cost", "--count", "2", "--rounds", "1", "--round-trips", "200"]);
    let cost = &out.one("cost")["data"];
    for key in ["thread_us", "fork_us", "spawn_us", "switch_threads_us", "switch_processes_us"] {
        assert!(cost[key].as_f64().is_some_and(|us| us > 0.0), "{key}: {cost}");
    }
}

#[test]
fn do_bad_counts_exit_2_naming_the_flag_before_anything_runs() {
    for (args, flag) in [
        (&["race", "--updates", "0"][..], "--updates"),
        (&["race", "--updates", "100000001"][..], "--updates"),
        (&["--loops", "0"][..], "--loops"),
        (&["cost", "--round-trips", "1000001"][..], "--round-trips"),
        (&["cost", "--count", "0"][..], "--count"),
        (&["race", "--window", "sometimes"][..], "--window"),
    ] {
        let out = run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        assert!(out.stderr.contains(flag), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran: {}", out.stdout);
    }
}

#[test]
fn is_a_guess_of_what_try_lock_finds_after_a_panicking_holder_judged_against_this_run() {
    support::judged_both_ways(BIN, &["dead-holder"], "after-panic", "would_block", "poisoned");
}

// ---------------------------------------------------------------------------------------------
// Be the scheduler: race --step, --schedule

fn schedule_of(out: &Output) -> &Value {
    &out.one("schedule")["data"]
}

#[test]
fn does_a_serial_schedule_keep_the_balance_and_both_loading_before_a_store_lose_an_update() {
    // Each call: load, store (balance + n), load, store (balance - n); 0 is change_it(5).
    let serial = run_ok(BIN, &["race", "--schedule", "0,0,0,0,1,1,1,1"]);
    let s = schedule_of(&serial);
    assert_eq!((s["balance"].as_i64(), s["won"].as_bool()), (Some(0), Some(false)), "{s}");
    assert_eq!(serial.named("step").len(), 8, "one step event per granted step");

    // Both load 0; 5 is stored, then 8 over it: the + 5 is lost. Then change_it(5) loads 8
    // and stores 3; change_it(8) loads 3 and stores -5.
    let lost = run_ok(BIN, &["race", "--schedule", "0,1,0,1,0,0,1,1"]);
    let s = schedule_of(&lost);
    assert_eq!((s["balance"].as_i64(), s["won"].as_bool()), (Some(-5), Some(true)), "{s}");
    let steps: Vec<String> =
        lost.named("step").iter().map(|e| e["data"]["step"].as_str().unwrap().to_owned()).collect();
    assert_eq!(steps[..4], ["load", "load", "store", "store"]);
}

#[test]
fn are_bad_schedules_and_too_many_updates_refused_with_exit_2_naming_the_position() {
    for (args, words) in [
        (&["race", "--schedule", "0,2"][..], &["position 2", "unknown"][..]),
        (&["race", "--schedule", "0,0,0,0,0"][..], &["position 5", "done"][..]),
        (&["race", "--schedule", "0,1"][..], &["too few", "position 2"][..]),
        (&["race", "--schedule", "0,0,0,0,1,1,1,1,0"][..], &["too many", "position 8"][..]),
        (&["race", "--step", "--updates", "4"][..], &["--updates", "3"][..]),
        (&["names", "--step"][..], &["--step", "race"][..]),
    ] {
        let out = run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        for word in words {
            if !out.stderr.contains(word) {
                out.fail(&format!("the message must say {word:?}"));
            }
        }
    }
}

#[test]
fn does_step_without_a_terminal_draw_a_seeded_schedule_that_replays_to_the_same_balance() {
    let first = run_ok(BIN, &["race", "--step", "--updates", "2", "--seed", "11"]);
    let s = schedule_of(&first);
    let schedule = s["schedule"].as_str().unwrap();
    assert_eq!(schedule.split(',').count(), 16, "2 calls x 4 steps x 2 threads");
    let replay = run_ok(BIN, &["race", "--updates", "2", "--schedule", schedule]);
    assert_eq!(schedule_of(&replay)["balance"], s["balance"]);
}
