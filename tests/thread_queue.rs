//! thread-queue: Python's queue module between threads. The three orders, a blocked `put` seen
//! asleep in `/proc`, `Full` and `Empty` after their timeouts, `join` after the last
//! `task_done`, shutdown both ways, many items through one queue, Ctrl-C and bad flags; checked
//! from `--json` events (one `write(2)` a line: their order is the order they happened) and
//! from `/proc/PID/task`.

mod support;

use serde_json::{Value, json};
use support::{Demo, Output, run, run_ok};

const BIN: &str = "thread-queue";

fn position(out: &Output, pred: impl Fn(&Value) -> bool) -> usize {
    out.events.iter().position(pred).unwrap_or_else(|| out.fail("no such event"))
}

#[test]
fn do_fifo_lifo_and_priority_queues_give_pythons_orders() {
    let out = run_ok(BIN, &["orders"]);
    let orders = out.named("order");
    let got = |kind: &str| {
        orders.iter().find(|e| e["data"]["kind"] == kind).map(|e| e["data"]["got"].clone())
    };
    assert_eq!(got("Queue"), Some(json!([1, 3, 2])));
    assert_eq!(got("LifoQueue"), Some(json!([2, 3, 1])));
    assert_eq!(got("PriorityQueue"), Some(json!(["p1", "p2", "p3"])));
}

#[test]
fn is_a_put_into_a_full_queue_asleep_until_a_get_and_do_timeouts_raise_full_and_empty() {
    let mut demo = Demo::start(BIN, &["blocking", "--json", "--hold", "30"]);
    let blocked = demo.wait_event("put_blocked");
    let hold = demo.wait_event("hold");
    // Read the producer's state ourselves while the demo holds: one pid, the producer's own
    // tid, named, asleep.
    let pid = demo.pid();
    let tid = blocked["data"]["tid"].as_i64().unwrap() as i32;
    assert_ne!(tid, pid);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap();
    assert_eq!(comm.trim_end(), "producer");
    assert_eq!(ps_thread_state(pid, tid), Some('S'));
    assert!(hold["data"]["command"].as_str().unwrap().starts_with("ps -L"));
    demo.signal(nix::sys::signal::Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();

    let out = run_ok(BIN, &["blocking"]);
    let blocked_at = position(&out, |e| e["event"] == "put_blocked");
    let get_at = position(&out, |e| e["event"] == "getting");
    let returned_at = position(&out, |e| e["event"] == "put_returned");
    assert!(blocked_at < get_at && get_at < returned_at, "put(3) returned only after a get");
    for call in ["put", "get"] {
        let timeout = out
            .named("timeout")
            .into_iter()
            .find(|e| e["data"]["call"] == call)
            .unwrap_or_else(|| out.fail("no timeout event"));
        let expected = if call == "put" { "queue.Full" } else { "queue.Empty" };
        assert_eq!(timeout["data"]["result"], expected);
        assert!(
            timeout["data"]["waited_ms"].as_f64().unwrap()
                >= timeout["data"]["timeout_ms"].as_f64().unwrap() - 1.0,
            "{call} gave up only after its timeout"
        );
    }
}

fn ps_thread_state(pid: i32, tid: i32) -> Option<char> {
    support::ps::thread(pid, tid).map(|t| t.state)
}

#[test]
fn does_main_print_its_line_only_after_the_last_task_done_with_every_bun_eaten_once() {
    let out = run_ok(BIN, &["joinable", "--speed", "50", "--cost-items", "2000"]);
    let eaten: Vec<&Value> = out.named("eaten");
    assert_eq!(eaten.len(), 6);
    let mut buns: Vec<(String, String)> = eaten
        .iter()
        .map(|e| {
            (e["data"]["by"].as_str().unwrap().into(), e["data"]["item"].as_str().unwrap().into())
        })
        .collect();
    buns.sort();
    buns.dedup();
    assert_eq!(buns.len(), 6, "no bun eaten twice");
    let last_eaten = out.events.iter().rposition(|e| e["event"] == "eaten").unwrap();
    let main_done = position(&out, |e| e["event"] == "main_done");
    assert!(last_eaten < main_done);
    assert_eq!(out.one("main_done")["data"]["unfinished"], 0);
    // Every producer's join returned, and each after the last bun was eaten.
    let joined: Vec<usize> = out
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "producer_joined")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(joined.len(), 3);
    assert!(joined.iter().all(|&i| i > last_eaten));
    // One process, many threads: every line is this pid's, the workers' tids are their own.
    let pid = out.pid as i64;
    assert!(out.events.iter().all(|e| e["pid"] == pid));
    assert!(
        eaten
            .iter()
            .all(|e| e["tid"] != pid && e["thread"].as_str().unwrap().starts_with("consumer-"))
    );
    let cost = &out.one("cost")["data"];
    assert!(
        cost["thread_us"].as_f64().unwrap() > 0.0 && cost["process_us"].as_f64().unwrap() > 0.0
    );
}

#[test]
fn does_shutdown_let_consumers_drain_and_an_immediate_one_drop_the_rest_and_free_join() {
    let out = run_ok(BIN, &["shutdown", "--speed", "50"]);
    let drained = out.one("drained");
    assert_eq!(drained["data"]["taken"], drained["data"]["items"]);
    let shutdowns = out.named("shutdown");
    assert_eq!(shutdowns[0]["data"]["put_after"], "queue.ShutDown");
    let immediate = shutdowns[1];
    assert_eq!(immediate["data"]["dropped"], 5);
    assert_eq!(immediate["data"]["unfinished"], 1);
    assert_eq!(immediate["data"]["join_returned_early"], false);
    let task_done = position(&out, |e| e["event"] == "task_done");
    let joined = position(&out, |e| e["event"] == "joined");
    assert!(task_done < joined, "join returned only after the task taken before was done");
    // Every consumer of both halves ended with ShutDown.
    let errors = out.named("get_error");
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e["data"]["error"] == "queue.ShutDown"));
}

#[test]
fn do_three_producers_and_two_consumers_lose_nothing_repeat_nothing_and_keep_order() {
    let out = run_ok(BIN, &["stress", "--producers", "3", "--consumers", "2", "--items", "10000"]);
    let stress = &out.one("stress")["data"];
    assert_eq!(stress["expected"], 30_000);
    assert_eq!(stress["taken"], 30_000);
    assert_eq!(stress["distinct"], 30_000);
    assert_eq!(stress["out_of_order"], 0);
}

#[test]
fn does_the_tour_run_the_four_parts() {
    let out = run_ok(BIN, &["--speed", "50", "--cost-items", "2000"]);
    assert_eq!(out.named("section").len(), 4);
}

#[test]
fn does_ctrl_c_at_any_moment_exit_130_and_leave_nothing() {
    // While the buns go round (threads only), and while the cost table's consumer process is
    // busy with a million items (several seconds: the interrupt lands before the end).
    for (wait_for, extra) in
        [("produced", "2000"), ("eaten", "2000"), ("consumers_ended", "1000000")]
    {
        Demo::ctrl_c_at(
            BIN,
            &["joinable", "--json", "--speed", "2", "--cost-items", extra],
            wait_for,
            true,
        );
    }
}

#[test]
fn are_bad_counts_usage_errors_naming_the_flag() {
    support::assert_usage_errors(
        BIN,
        "joinable",
        &[("--producers", "0"), ("--consumers", "65"), ("--buns", "1000001")],
    );
    run(BIN, &["stress", "--items", "0"]).assert_code(2);
}

#[test]
fn are_the_third_put_and_the_dropped_count_judged_against_the_run() {
    // The third put cannot return before main's get: "no" is right, "yes" wrong.
    for (guess, right) in [("no", true), ("yes", false)] {
        let out = run_ok(BIN, &["blocking", "--answer", &format!("third-put={guess}")]);
        let a = &out.answer("third-put")["data"];
        assert_eq!(a["actual"], "no", "{a}");
        assert_eq!(a["right"], right, "{a}");
    }
    // The dropped count read back from the run's own shutdown event, then one less.
    let out = run_ok(BIN, &["shutdown", "--speed", "50", "--answer", "dropped=0"]);
    let shutdown = out
        .named("shutdown")
        .into_iter()
        .find(|e| e["data"]["immediate"] == true)
        .unwrap_or_else(|| out.fail("no immediate shutdown"));
    let dropped = shutdown["data"]["dropped"].as_u64().unwrap();
    let a = &out.answer("dropped")["data"];
    assert_eq!((a["actual"].as_u64(), a["right"].as_bool()), (Some(dropped), Some(dropped == 0)));
    let out =
        run_ok(BIN, &["shutdown", "--speed", "50", "--answer", &format!("dropped={dropped}")]);
    assert_eq!(out.answer("dropped")["data"]["right"], true);
}
