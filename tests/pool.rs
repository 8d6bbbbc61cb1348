//! pool: process pools. Four tasks on three workers, apply vs apply_async, get and map,
//! callbacks, the close/join rules, terminate, a worker killed mid-task, maxtasksperchild and
//! Ctrl-C; checked from `--json` events (whose line order on the shared stdout pipe is the
//! order of the writes: one `write(2)` per line) and from `/proc`.

mod support;

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use support::{Demo, Output, pid_of, ps, run, run_ok};

const BIN: &str = "pool";

/// Positions (in stdout order) of the `task_start` and `task_end` of every task: task → (pid,
/// start, end).
fn task_lines(out: &Output) -> HashMap<u64, (i32, usize, usize)> {
    task_lines_in(&out.events)
}

fn task_lines_in(events: &[Value]) -> HashMap<u64, (i32, usize, usize)> {
    let mut starts = HashMap::new();
    let mut tasks = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let Some(task) = e["data"]["task"].as_u64() else { continue };
        match e["event"].as_str() {
            Some("task_start") => {
                starts.insert(task, (pid_of(&e["pid"]), i));
            }
            Some("task_end") => {
                let (pid, start) = starts[&task];
                assert_eq!(pid, pid_of(&e["pid"]), "task {task} ended in the process it began in");
                tasks.insert(task, (pid, start, i));
            }
            _ => {}
        }
    }
    tasks
}

/// The most tasks between their start and end lines at once. Every line is one write(2) to the
/// same pipe, so their order is the order in which they happened: no ties to break.
fn max_running(out: &Output) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for e in &out.events {
        match e["event"].as_str() {
            Some("task_start") => {
                now += 1;
                max = max.max(now);
            }
            Some("task_end") => now -= 1,
            _ => {}
        }
    }
    max
}

fn index_of(out: &Output, event: &str) -> usize {
    out.events
        .iter()
        .position(|e| e["event"] == event)
        .unwrap_or_else(|| out.fail(&format!("no {event} event")))
}

#[test]
fn do_four_tasks_on_three_workers_run_in_exactly_three_pids_never_more_than_three_at_once() {
    for method in ["fork", "spawn"] {
        let out = run_ok(BIN, &["apply-async", "--start-method", method]);
        let tasks = task_lines(&out);
        assert_eq!(tasks.len(), 4, "{method}: four tasks started and ended");
        let pids: HashSet<i32> = tasks.values().map(|t| t.0).collect();
        assert_eq!(pids.len(), 3, "{method}: exactly three worker processes ran them");
        for e in out.named("task_start") {
            assert_eq!(pid_of(&e["ppid"]), out.pid, "{method}: a worker is the demo's child");
            assert_ne!(pid_of(&e["pid"]), out.pid);
        }
        assert_eq!(max_running(&out), 3, "{method}: three at once, never four");
        // In each worker, one task after the other.
        for pid in &pids {
            let mut mine: Vec<&(i32, usize, usize)> =
                tasks.values().filter(|t| t.0 == *pid).collect();
            mine.sort_by_key(|t| t.1);
            assert!(mine.windows(2).all(|w| w[0].2 < w[1].1), "{method}: pid {pid} overlapped");
        }
        // The fourth task waited for a worker that had finished its task, and ran in its pid.
        let (pid3, start3, _) = tasks[&3];
        let before: Vec<u64> =
            (0..3).filter(|t| tasks[t].0 == pid3 && tasks[t].2 < start3).collect();
        assert_eq!(before.len(), 1, "{method}: task 3 ran in the pid of one of the first three");
        // apply_async does not wait: **** before any task ended.
        let stars = index_of(&out, "stars");
        assert!(tasks.values().all(|t| stars < t.2), "{method}: **** came after a task ended");
        let summary = &out.one("pool_summary")["data"];
        assert_eq!(summary["max_running"], 3);
        assert_eq!(summary["stars_before_first_end"], true);
    }
}

#[test]
fn are_the_workers_children_of_the_demo_named_pool_worker_and_asleep_in_their_tasks() {
    // --speed 1: each task sleeps one second, so the hold comes while they run.
    let mut demo = Demo::start(
        BIN,
        &["apply-async", "--json", "--hold", "30", "--speed", "1", "--start-method", "spawn"],
    );
    let started = demo.wait_event("pool_started");
    let workers: Vec<i32> =
        started["data"]["pids"].as_array().unwrap().iter().map(pid_of).collect();
    assert_eq!(workers.len(), 3);
    demo.wait_event("hold");
    for pid in &workers {
        support::wait_until(&format!("worker {pid} named and asleep"), || {
            ps::stat(*pid).is_some_and(|p| p.comm.starts_with("pool-worker") && p.state == 'S')
        });
        let info = ps::stat(*pid).unwrap();
        assert_eq!(info.ppid, demo.pid(), "/proc/{pid}/stat: the demo is its parent");
    }
    let out = demo.interrupt(true);
    out.assert_code(130).assert_nothing_left();
}

#[test]
fn does_apply_block_so_that_tasks_run_strictly_one_after_another() {
    let out = run_ok(BIN, &["apply"]);
    let tasks = task_lines(&out);
    assert_eq!(tasks.len(), 4);
    let mut order: Vec<&(i32, usize, usize)> = tasks.values().collect();
    order.sort_by_key(|t| t.1);
    assert!(order.windows(2).all(|w| w[0].2 < w[1].1), "apply overlapped two tasks");
    assert_eq!(max_running(&out), 1);
    let stars = index_of(&out, "stars");
    assert!(order.iter().all(|t| t.2 < stars), "**** came before the last apply returned");
    assert_eq!(out.one("apply_summary")["data"]["serial"], true);
}

#[test]
fn does_map_return_results_in_the_order_of_its_items_and_get_each_tasks_value() {
    let out = run_ok(BIN, &["get", "--speed", "20"]);
    let got = out.named("got");
    assert_eq!(got.len(), 3);
    for (i, e) in got.iter().enumerate() {
        let value = e["data"]["value"].as_str().unwrap();
        assert!(value.starts_with(&format!("{i} current child process")), "{value}");
    }
    let map = &out.one("map_result")["data"];
    let items: Vec<i64> =
        map["items"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let values: Vec<i64> =
        map["values"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(values, items.iter().map(|x| x * x).collect::<Vec<_>>());
    let mut finished: Vec<i64> =
        map["finish_order"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    finished.sort_unstable();
    assert_eq!(finished, items, "every item ran exactly once");
}

#[test]
fn are_join_before_close_and_submitting_after_close_refused_as_python_refuses_them() {
    let out = run_ok(BIN, &["get", "--speed", "20"]);
    let rules = out.named("rule");
    assert_eq!(rules.len(), 2);
    let error = |call: &str| -> String {
        let e = rules.iter().find(|r| r["data"]["call"].as_str().unwrap().contains(call)).unwrap();
        e["data"]["error"].as_str().unwrap_or_else(|| panic!("{call} was accepted")).to_string()
    };
    assert!(error("join() before").contains("still running"));
    assert!(error("apply_async() after").contains("not running"));
    // Dropping a pool waited for all of its tasks.
    let dropped = &out.one("dropped")["data"];
    assert_eq!(dropped["ready"], dropped["of"]);
}

#[test]
fn does_terminate_end_running_tasks_promptly_and_leave_no_worker() {
    // Each terminated task would run 1 s at the default speed.
    let out = run_ok(BIN, &["get"]);
    let t = &out.one("terminated")["data"];
    let took = t["took_ms"].as_u64().unwrap();
    let task_ms = t["task_ms"].as_u64().unwrap();
    assert!(took < task_ms / 2, "terminate took {took} ms with tasks of {task_ms} ms");
    assert_eq!(t["left"].as_array().unwrap().len(), 0, "no worker left: {t}");
    assert_eq!(t["all_terminated"], true);
    for e in t["errors"].as_array().unwrap() {
        assert!(e.as_str().unwrap().contains("terminated"), "{e}");
    }
    // The terminated workers never wrote their tasks' end.
    let ended: HashSet<u64> =
        out.named("task_end").iter().filter_map(|e| e["data"]["task"].as_u64()).collect();
    assert!((20..23).all(|t| !ended.contains(&t)));
}

#[test]
fn do_callbacks_run_in_the_parent_in_its_result_handler_thread() {
    let out = run_ok(BIN, &["callback", "--speed", "20"]);
    let callbacks = out.named("callback");
    assert_eq!(callbacks.len(), 2, "one for the process pool, one for the thread pool");
    for e in callbacks.iter().chain(out.named("error_callback").iter()) {
        assert_eq!(pid_of(&e["pid"]), out.pid, "a callback runs in the parent process");
        assert_eq!(e["data"]["thread"], "pool-results");
    }
    for e in &callbacks {
        assert_ne!(e["data"]["tid"], e["data"]["main_tid"], "not in the main thread");
    }
    let who = &out.one("who_ran_callbacks")["data"];
    assert_ne!(pid_of(&who["worker"]), out.pid, "the task itself ran in a worker process");
    assert_eq!(who["as_expected"], true);
    // The main thread went on with its chores while the water boiled.
    assert!(!out.named("chore").is_empty());
    let submitted = index_of(&out, "async_submitted");
    let chore = index_of(&out, "chore");
    let got = index_of(&out, "async_got");
    assert!(submitted < chore && chore < got);
}

#[test]
fn does_a_worker_killed_mid_task_fail_only_that_task_and_get_replaced_by_a_new_pid() {
    for method in ["fork", "spawn"] {
        let out = run_ok(BIN, &["fault", "--speed", "20", "--start-method", method]);
        let killing = &out.one("killing")["data"];
        let killed = pid_of(&killing["pid"]);
        let victim = killing["task"].as_u64().unwrap();
        // It was killed in the middle: its task started in that pid and never ended (the
        // events of the first half of the part, before its summary).
        let first_half = &out.events[..index_of(&out, "fault_summary")];
        let tasks = task_lines_in(first_half);
        assert!(!tasks.contains_key(&victim), "{method}: the victim's task never ended");
        let total = out.one("fault_summary")["data"]["tasks"].as_u64().unwrap() as usize;
        assert_eq!(tasks.len(), total - 1, "{method}: every other task did");
        assert!(first_half.iter().any(|e| {
            e["event"] == "task_start" && e["data"]["task"] == victim && pid_of(&e["pid"]) == killed
        }));
        let results = out.named("fault_result");
        assert_eq!(results.len(), total);
        for r in &results {
            let d = &r["data"];
            let task = d["task"].as_u64().unwrap();
            if task == victim {
                assert_eq!(d["ok"], false, "{method}");
                assert_eq!(d["worker_died"], true);
                let error = d["error"].as_str().unwrap();
                assert!(
                    error.contains(&format!("pid {killed}")) && error.contains("SIGKILL"),
                    "{error}"
                );
            } else {
                assert_eq!(d["ok"], true, "{method}: task {task}: {d}");
                let value = d["value"].as_str().unwrap();
                assert!(value.starts_with(&format!("{task} current child process")), "{value}");
            }
        }
        let exited = out
            .named("pool_worker_exited")
            .into_iter()
            .find(|e| pid_of(&e["data"]["pid"]) == killed)
            .unwrap_or_else(|| out.fail("no pool_worker_exited for the killed worker"));
        assert_eq!(exited["data"]["status"], "-SIGKILL");
        assert_eq!(pid_of(&exited["ppid"]), pid_of(&out.events[0]["ppid"]));
        let replacement = pid_of(&exited["data"]["replaced_by"]["pid"]);
        assert_ne!(replacement, killed, "{method}: a new pid");
        let summary = &out.one("fault_summary")["data"];
        assert_eq!(summary["ok"], total - 1);
        assert!(summary["replacement"].as_array().unwrap().contains(&Value::from(replacement)));
    }
}

#[test]
fn does_maxtasksperchild_replace_a_worker_with_a_new_pid() {
    let out = run_ok(BIN, &["apply-async", "--maxtasksperchild", "1", "--speed", "20"]);
    let tasks = task_lines(&out);
    let pids: HashSet<i32> = tasks.values().map(|t| t.0).collect();
    assert_eq!(pids.len(), 4, "one task per worker: four tasks, four pids");
    let retired: Vec<&Value> = out
        .named("pool_worker_exited")
        .into_iter()
        .filter(|e| e["data"]["retired"] == true)
        .collect();
    assert!(!retired.is_empty(), "a worker retired and was replaced");
    for e in &retired {
        let new = pid_of(&e["data"]["replaced_by"]["pid"]);
        assert_ne!(new, pid_of(&e["data"]["pid"]));
    }
    // Part 6's second half: maxtasksperchild=2 and an initializer in every new worker.
    let out = run_ok(BIN, &["fault", "--speed", "20"]);
    let summary = &out.one("retire_summary")["data"];
    assert!(summary["most_tasks_in_one"].as_u64().unwrap() <= 2);
    let workers = summary["workers"].as_u64().unwrap();
    assert!(workers >= 3, "six tasks, two per worker: at least three workers");
    let inits: HashSet<i64> =
        out.named("worker_init").iter().map(|e| e["pid"].as_i64().unwrap()).collect();
    let task_pids: HashSet<i64> =
        summary["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
    assert!(task_pids.is_subset(&inits), "every worker that ran a task ran the initializer");
}

#[test]
fn does_the_which_pool_table_show_io_bound_tasks_overlapping_on_both_pools() {
    let out = run_ok(BIN, &["which-pool", "--cpu-ms", "30", "--speed", "20"]);
    let rows = out.one("which_pool")["data"]["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 4);
    for r in rows.iter().filter(|r| r["work"] == "IO-bound") {
        let run = r["run_ms"].as_f64().unwrap();
        let serial = r["serial_ms"].as_f64().unwrap();
        assert!(run < serial, "IO-bound tasks overlapped their waits: {r}");
    }
    assert!(
        rows.iter().any(|r| r["pool"] == "threads")
            && rows.iter().any(|r| r["pool"] == "processes")
    );
}

#[test]
fn does_the_timeline_draw_one_lane_per_worker_pid() {
    let out = run_ok(BIN, &["apply-async", "--timeline"]);
    let timeline = &out.one("timeline")["data"];
    let task_pids: HashSet<i32> = task_lines(&out).values().map(|t| t.0).collect();
    let lanes: HashSet<i32> =
        timeline["lanes"].as_array().unwrap().iter().map(|l| pid_of(&l["pid"])).collect();
    assert!(task_pids.is_subset(&lanes), "a lane for every worker: {timeline}");
    assert!(lanes.contains(&out.pid), "and one for the parent");
    assert!(timeline["text"].as_str().unwrap().contains('#'));
}

#[test]
fn does_ctrl_c_stop_and_reap_every_worker_sent_to_the_group_or_to_the_parent_alone() {
    for (to_group, method) in [(true, "fork"), (false, "spawn")] {
        let mut demo = Demo::start(
            BIN,
            &["apply-async", "--json", "--hold", "30", "--speed", "1", "--start-method", method],
        );
        let started = demo.wait_event("pool_started");
        demo.wait_event("hold");
        for pid in started["data"]["pids"].as_array().unwrap().iter().map(pid_of) {
            assert_eq!(ps::stat(pid).map(|p| p.ppid), Some(demo.pid()), "worker {pid} is alive");
        }
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
    }
}

#[test]
fn is_a_pool_of_zero_processes_a_usage_error_naming_the_flag() {
    let out = run(BIN, &["apply-async", "--processes", "0"]);
    out.assert_code(2).assert_nothing_left();
    assert!(out.stderr.contains("--processes"), "{}", out.stderr);
    let out = run(BIN, &["no-such-part"]);
    out.assert_code(2);
}

#[test]
fn does_the_tour_run_all_six_parts_and_leave_nothing_behind() {
    let out = run_ok(BIN, &["--speed", "20", "--cpu-ms", "30"]);
    assert_eq!(out.named("section").len(), 6);
}

/// Whatever worker is killed (SIGKILL, at a random moment of any part), does the demo still end
/// within a bound, reap everyone, and, when it exits 1, say which worker and task were lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] =
        &[&["apply-async"], &["apply"], &["get"], &["callback"], &["which-pool"], &["fault"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(400), ms(20_000), 12);
}

/// A worker killed in the middle of `map` (SIGKILL, as the OOM killer does): does the map wait
/// for ever for the chunk it held, as Python's `Pool.map` does? No: the map fails with that
/// worker's error (which worker, which signal, which task), the demo says what was lost and
/// exits 1, and every process is gone.
#[test]
fn a_worker_killed_during_map_fails_the_map_with_that_workers_error() {
    // Slowed down so that at the first result of map every other item still sleeps a second
    // or more in its worker.
    let mut demo = Demo::start(BIN, &["--json", "get", "--speed", "0.5"]);
    demo.wait_event("square_done");
    let workers = support::descendants(demo.pid());
    assert!(!workers.is_empty(), "the pool's workers are the demo's children");
    for pid in &workers {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
    }
    let out = demo.finish_within(std::time::Duration::from_secs(20));
    out.assert_code(1).assert_nothing_left();
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("task square") && said.contains("was killed by SIGKILL"),
        "the map's error names the task and the signal: {said}"
    );
    assert!(out.named("map_result").is_empty(), "no result of a map that lost a chunk");
}

/// Can a typo in a count start thousands of workers or hold a hundred million tasks? No:
/// every count flag has a cap (the tasks are refused beyond it rather than run in growing
/// memory), given in --help, and beyond it the demo exits 2 before anything starts.
#[test]
fn every_count_flag_has_a_cap_and_beyond_it_nothing_starts() {
    for (flag, cap) in [("--processes", 32), ("--tasks", 1000), ("--maxtasksperchild", 1000)] {
        support::assert_capped(BIN, &["apply-async"], flag, cap);
    }
    let out = run(BIN, &["--json", "apply-async", "--tasks", "100000000"]);
    out.assert_code(2).assert_nothing_left();
}

#[test]
fn is_a_guess_of_how_many_results_a_killed_worker_spoils_judged_against_this_run() {
    // Only the killed worker's task fails.
    support::judged_both_ways(BIN, &["fault"], "errors", "0", 1);
}

#[test]
fn does_the_which_pool_verdict_follow_the_times_in_the_table() {
    let out = run_ok(BIN, &["which-pool", "--cpu-ms", "30", "--speed", "20"]);
    let rows = out.one("which_pool")["data"]["rows"].as_array().unwrap().clone();
    let v = &out.one("which_verdict")["data"];
    let cpu = |pool: &str| {
        rows.iter().find(|r| r["work"] == "CPU-bound" && r["pool"] == pool).unwrap().clone()
    };
    let (p, t) = (cpu("processes"), cpu("threads"));
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap();
    assert_eq!(f(v, "processes_ms"), f(&p, "run_ms"), "the table's figure: {v}");
    assert_eq!(f(v, "threads_ms"), f(&t, "run_ms"), "the table's figure: {v}");
    let parallel = |r: &Value| f(r, "run_ms") < 0.75 * f(r, "serial_ms");
    assert_eq!(v["processes_parallel"], parallel(&p), "{v}");
    assert_eq!(v["threads_parallel"], parallel(&t), "{v}");
    let (a, b) = (f(&p, "run_ms"), f(&t, "run_ms"));
    assert_eq!(v["close"], a.max(b) <= 1.25 * a.min(b), "{v}");
}
