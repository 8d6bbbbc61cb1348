//! coroutine: concurrency on one thread. Ten sleeping tasks on one TID in well under the sum,
//! CPU-bound tasks that never overlap on one thread, a blocking call that stops every other
//! task, who runs a callback, the saved state's size, `R` and `S` read from `/proc`, Ctrl-C and
//! bad flags; checked from `--json` events (one `write(2)` a line: their order is the order
//! they happened) and from `/proc`.

mod support;

use serde_json::Value;
use support::{Demo, Output, run_ok};

const BIN: &str = "coroutine";

fn data<'a>(out: &'a Output, event: &str, key: &str, value: &str) -> &'a Value {
    out.events
        .iter()
        .find(|e| e["event"] == event && e["data"][key] == value)
        .map(|e| &e["data"])
        .unwrap_or_else(|| out.fail(&format!("no {event} with {key} = {value}")))
}

#[test]
fn do_ten_sleeping_tasks_run_on_one_thread_in_well_under_the_sum() {
    let out = run_ok(BIN, &["executor", "--speed", "5", "--cpu-ms", "5"]);
    let pid = out.pid as i64;
    for runtime in ["the minimal executor (std only)", "tokio's current-thread runtime"] {
        let sleepers = data(&out, "sleepers", "runtime", runtime);
        assert_eq!(sleepers["tids"], serde_json::json!([pid]), "{runtime}: one thread, main's");
        let (elapsed, sum) =
            (sleepers["elapsed_ms"].as_f64().unwrap(), sleepers["sum_ms"].as_f64().unwrap());
        // A generous bound: below half of what ten sleeps in a row would take.
        assert!(elapsed < sum / 2.0, "{runtime}: {elapsed} ms for sleeps summing to {sum} ms");
    }
}

#[test]
fn do_cpu_bound_tasks_on_one_thread_never_overlap_and_add_up_their_cpu_time() {
    let out = run_ok(BIN, &["executor", "--speed", "20", "--cpu-ms", "5", "--tasks", "6"]);
    let steps: Vec<&Value> = out
        .events
        .iter()
        .filter(|e| {
            (e["event"] == "cpu_start" || e["event"] == "cpu_end") && e["data"]["threads"] == 1
        })
        .collect();
    assert_eq!(steps.len(), 12);
    for pair in steps.chunks(2) {
        assert_eq!(
            (&pair[0]["event"], &pair[1]["event"]),
            (&"cpu_start".into(), &"cpu_end".into())
        );
        assert_eq!(
            pair[0]["data"]["task"], pair[1]["data"]["task"],
            "a task ran start to end alone"
        );
        assert_eq!(pair[0]["tid"], out.pid as i64);
    }
    let totals: Vec<&Value> = out.named("cpu_bound");
    let single = totals.iter().find(|e| e["data"]["threads"] == 1).unwrap();
    assert!(single["data"]["cpu_sum_ms"].as_f64().unwrap() >= 6.0 * 5.0);
    // On two worker threads the tasks ran on two TIDs.
    let tids: std::collections::HashSet<i64> = out
        .events
        .iter()
        .filter(|e| e["event"] == "cpu_start" && e["data"]["threads"] == 2)
        .map(|e| e["tid"].as_i64().unwrap())
        .collect();
    assert!(!tids.contains(&(out.pid as i64)) && !tids.is_empty());
}

#[test]
fn does_a_blocking_call_inside_a_task_stop_every_other_task_while_it_blocks() {
    let out = run_ok(BIN, &["executor", "--speed", "20", "--cpu-ms", "1", "--tasks", "2"]);
    let at = |event: &str| {
        out.events
            .iter()
            .position(|e| e["event"] == event && e["data"]["blocking_call"] == true)
            .unwrap_or_else(|| out.fail(event))
    };
    let (start, end) = (at("blocking_start"), at("blocking_end"));
    assert!(start < end);
    assert!(
        out.events[start..end].iter().all(|e| e["event"] != "tick"),
        "no other task stepped while std::thread::sleep held the thread"
    );
}

#[test]
fn does_the_worker_run_a_pending_futures_callback_and_the_caller_a_done_ones() {
    let out = run_ok(BIN, &["callbacks", "--speed", "20"]);
    let pid = out.pid as i64;
    let callback = |case: &str| {
        out.events
            .iter()
            .find(|e| e["event"] == "callback" && e["data"]["case"] == case)
            .unwrap_or_else(|| out.fail(case))
    };
    let pending = callback("pending");
    assert!(pending["thread"].as_str().unwrap().starts_with("pool-worker-"));
    assert_ne!(pending["tid"], pid);
    let done = callback("done");
    assert_eq!((done["thread"].as_str(), done["tid"].as_i64()), (Some("main"), Some(pid)));
}

#[test]
fn is_the_saved_state_of_a_future_a_few_bytes_or_the_buffer_it_keeps() {
    let out = run_ok(BIN, &["switch", "--switch-steps", "100"]);
    let sizes: Vec<u64> =
        out.named("future_size").iter().map(|e| e["data"]["bytes"].as_u64().unwrap()).collect();
    assert_eq!(sizes.len(), 4);
    assert!(sizes[0] < 64 && sizes[1] < 64);
    assert!(sizes[2] >= 1024 && sizes[3] >= sizes[2]);
    let yielded: Vec<u64> =
        out.named("generator").iter().filter_map(|e| e["data"]["yielded"].as_u64()).collect();
    assert_eq!(yielded, [3, 2, 1]);
}

#[test]
fn is_a_sync_cpu_call_running_and_a_blocking_call_asleep_in_proc() {
    let mut demo = Demo::start(BIN, &["calls", "--json", "--hold", "30", "--countdown", "1000"]);
    demo.wait_event("hold");
    let pid = demo.pid();
    let events = demo.events().to_vec();
    for (role, state) in [("sync-cpu-call", 'R'), ("blocking-call", 'S')] {
        let seen = events
            .iter()
            .find(|e| e["event"] == "state" && e["data"]["role"] == role)
            .unwrap_or_else(|| demo.fail(role));
        assert_eq!(seen["data"]["state"], state.to_string());
        // And read again by the test itself: the threads are still where the demo saw them.
        let tid = seen["data"]["tid"].as_i64().unwrap() as i32;
        assert_eq!(support::ps::thread(pid, tid).map(|t| t.state), Some(state), "{role}");
    }
    demo.interrupt(true).assert_code(130).assert_nothing_left();
}

#[test]
fn does_the_tour_run_every_part_with_a_switch_cost_for_each_way() {
    let out = run_ok(
        BIN,
        &[
            "--speed",
            "50",
            "--cpu-ms",
            "2",
            "--switches",
            "1000",
            "--switch-steps",
            "100",
            "--countdown",
            "1000",
        ],
    );
    assert_eq!(out.named("section").len(), 6);
    let costs = out.named("switch_cost");
    assert_eq!(costs.len(), 3);
    assert!(costs.iter().all(|e| e["data"]["ns"].as_f64().unwrap() > 0.0));
}

#[test]
fn does_ctrl_c_while_tasks_sleep_or_compute_exit_130_and_leave_nothing() {
    for (wait_for, cpu_ms) in [("woke", "200"), ("cpu_start", "200"), ("tick", "1")] {
        Demo::ctrl_c_at(
            BIN,
            &["executor", "--json", "--speed", "1", "--cpu-ms", cpu_ms],
            wait_for,
            true,
        );
    }
}

#[test]
fn are_bad_counts_usage_errors_naming_the_flag() {
    support::assert_usage_errors(
        BIN,
        "executor",
        &[("--tasks", "0"), ("--tasks", "10001"), ("--cpu-ms", "0"), ("--switches", "0")],
    );
}

#[test]
fn are_the_guesses_judged_against_the_runs_own_size_thread_and_state() {
    // The future's size read back from the run's own event: one byte off is wrong, exact right.
    let out = run_ok(BIN, &["switch", "--switch-steps", "100", "--answer", "future-bytes=1"]);
    let bytes = out.named("future_size")[2]["data"]["bytes"].as_u64().unwrap();
    let a = &out.answer("future-bytes")["data"];
    assert_eq!((a["actual"].as_u64(), a["right"].as_bool()), (Some(bytes), Some(bytes == 1)));
    let right = format!("future-bytes={bytes}");
    let out = run_ok(BIN, &["switch", "--switch-steps", "100", "--answer", &right]);
    assert_eq!(out.answer("future-bytes")["data"]["right"], true);
    // The callback's thread and the sync call's state, judged against what the run reports.
    let out = run_ok(BIN, &["callbacks", "--speed", "20", "--answer", "callback-thread=worker"]);
    let pending = out
        .named("callback")
        .into_iter()
        .find(|e| e["data"]["case"] == "pending")
        .unwrap_or_else(|| out.fail("no pending callback"));
    let ran_by = if pending["tid"] == out.pid as i64 { "main" } else { "worker" };
    let a = &out.answer("callback-thread")["data"];
    assert_eq!(
        (a["actual"].as_str(), a["right"].as_bool()),
        (Some(ran_by), Some(ran_by == "worker"))
    );
    let out = run_ok(BIN, &["calls", "--countdown", "1000", "--answer", "sync-state=S"]);
    let a = &out.answer("sync-state")["data"];
    assert_eq!((&a["actual"], &a["right"]), (&Value::from("R"), &Value::from(false)), "{a}");
}

#[test]
fn does_the_two_thread_verdict_follow_the_two_times_printed() {
    let out = run_ok(BIN, &["executor", "--speed", "20", "--cpu-ms", "5", "--tasks", "6"]);
    let totals: Vec<&Value> = out.named("cpu_bound");
    let one = totals.iter().find(|e| e["data"]["threads"] == 1).unwrap();
    let two = totals.iter().find(|e| e["data"]["threads"] == 2).unwrap();
    assert_eq!(one["data"]["verdict"], "one_thread", "{one}");
    let one_ms = one["data"]["elapsed_ms"].as_f64().unwrap();
    assert_eq!(two["data"]["one_thread_ms"].as_f64(), Some(one_ms), "compared with the run above");
    let two_ms = two["data"]["elapsed_ms"].as_f64().unwrap();
    let at_once = two_ms < 0.75 * one_ms;
    let verdict = two["data"]["verdict"].as_str().unwrap();
    assert_eq!(
        verdict,
        if at_once { "at_once" } else { "not_at_once" },
        "{two_ms} against {one_ms}"
    );
}
