//! joinable-queue: does the cross-process queue keep its promises? Order, nothing lost or
//! duplicated, a producer asleep while the queue is full, Full/Empty, task_done and join, both
//! start methods, oversize items, a consumer killed holding an item, and Ctrl-C.

mod support;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Demo, Output, wait_until};

const BIN: &str = "joinable-queue";

fn run(args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.push("--json");
    support::run(BIN, &all)
}

fn data<'a>(out: &'a Output, event: &str) -> &'a Value {
    &out.one(event)["data"]
}

/// The events named `name` printed by processes whose name starts with `who`.
fn by<'a>(out: &'a Output, name: &str, who: &str) -> Vec<&'a Value> {
    out.named(name)
        .into_iter()
        .filter(|e| e["who"].as_str().is_some_and(|w| w.starts_with(who)))
        .collect()
}

/// The number in a bun's name: "包子2" -> 2.
fn bun_number(event: &Value) -> u64 {
    let name = event["data"]["item"].as_str().unwrap_or_else(|| panic!("no item in {event}"));
    name.trim_start_matches("包子").parse().unwrap_or_else(|_| panic!("not a bun: {name}"))
}

/// Position of an event in the output (stdout order: one write per line, from every process).
fn index_of(out: &Output, pred: impl Fn(&Value) -> bool) -> Vec<usize> {
    out.events.iter().enumerate().filter(|(_, e)| pred(e)).map(|(i, _)| i).collect()
}

#[test]
fn a_full_queue_refuses_put_nowait_an_empty_one_get_nowait_and_items_come_out_in_order() {
    let out = run(&["basics"]);
    out.assert_code(0).assert_nothing_left();
    let queue = data(&out, "queue");
    assert!(queue["pipe"].as_str().unwrap().starts_with("pipe:["), "{queue}");
    assert!(queue["shared_block"].as_str().unwrap().contains("memfd:"), "{queue}");
    let puts: Vec<u64> =
        out.named("put").iter().map(|e| e["data"]["item"].as_u64().unwrap()).collect();
    assert_eq!(puts, [1, 2, 3]);
    assert_eq!(data(&out, "full")["full"], true);
    assert_eq!(data(&out, "put_nowait")["error"], "Full");
    let got: Vec<u64> =
        out.named("got").iter().map(|e| e["data"]["item"].as_u64().unwrap()).collect();
    assert_eq!(got, [1, 2, 3], "first in, first out");
    assert_eq!(data(&out, "empty")["empty"], true);
    assert_eq!(data(&out, "get_nowait")["error"], "Empty");
}

#[test]
fn task_done_called_more_times_than_items_taken_is_an_error() {
    let out = run(&["basics"]);
    out.assert_code(0);
    let refused = data(&out, "task_done_error");
    assert!(refused["error"].as_str().unwrap().contains("too many times"), "{refused}");
    assert_eq!(refused["unfinished"], 0);
}

#[test]
fn an_item_beyond_max_message_is_refused_with_a_clear_error() {
    let out = run(&["basics", "--max-message", "1000"]);
    out.assert_code(0).assert_nothing_left();
    let refused = data(&out, "too_large");
    assert_eq!(refused["size"], 1001);
    assert_eq!(refused["max"], 1000);
    assert_eq!(refused["qsize"], 0, "nothing was written");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("1001") && error.contains("max_message"), "{error}");
}

#[test]
fn three_producers_to_two_consumers_lose_and_duplicate_none_of_10000_items() {
    let out = run(&["stress", "--total", "10000", "--producers", "3", "--consumers", "2"]);
    out.assert_code(0).assert_nothing_left();
    let result = data(&out, "stress_result");
    assert_eq!(result["put"], 10000);
    assert_eq!(result["received"], 10000);
    assert_eq!(result["checksum_ok"], true, "{result}");
    assert_eq!(result["left"], 0);
    let summaries = out.named("consumer_summary");
    assert_eq!(summaries.len(), 2);
    let counted: u64 = summaries.iter().map(|s| s["data"]["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 10000);
}

#[test]
fn each_producer_s_items_reach_a_consumer_in_the_order_they_were_put() {
    // Many items, a small queue (producers block), each consumer checks every producer's order.
    let out = run(&["stress", "--total", "6000", "--queue-size", "4"]);
    out.assert_code(0);
    assert_eq!(data(&out, "stress_result")["fifo_per_producer"], true);
    for s in out.named("consumer_summary") {
        assert_eq!(s["data"]["fifo"], true, "{s}");
    }
    // And in the notes' version: each consumer eats each producer's buns in order.
    let out = run(&["sentinel"]);
    out.assert_code(0).assert_nothing_left();
    for consumer in ["consumer-1", "consumer-2"] {
        for producer in ["producer-1", "producer-2", "producer-3"] {
            let numbers: Vec<u64> = by(&out, "ate", consumer)
                .into_iter()
                .filter(|e| e["data"]["by"] == producer)
                .map(bun_number)
                .collect();
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "{consumer} ate {producer}'s {numbers:?}"
            );
        }
    }
}

#[test]
fn the_sentinel_version_eats_every_bun_and_stops_each_consumer_with_one_none() {
    let out = run(&["sentinel"]);
    out.assert_code(0).assert_nothing_left();
    assert_eq!(out.named("produced").len(), 9);
    assert_eq!(out.named("ate").len(), 9);
    assert_eq!(out.named("sentinel").len(), 2);
    let summary = data(&out, "summary");
    assert_eq!((summary["produced"].as_u64(), summary["eaten"].as_u64()), (Some(9), Some(9)));
    let eaten: u64 =
        out.named("sentinel").iter().map(|e| e["data"]["eaten"].as_u64().unwrap()).sum();
    assert_eq!(eaten, 9);
}

#[test]
fn join_returns_only_after_the_last_task_done() {
    let out = run(&["joinable"]);
    out.assert_code(0).assert_nothing_left();
    let done = index_of(&out, |e| e["event"] == "task_done");
    let joined = index_of(&out, |e| e["event"] == "joined");
    assert_eq!(done.len(), 6, "3 producers x 2 buns, each marked done once");
    assert_eq!(joined.len(), 3);
    // A consumer prints task_done before it calls task_done(); a producer prints joined after
    // its join() returned: so every task_done line comes before every joined line.
    assert!(done.iter().max() < joined.iter().min(), "task_done at {done:?}, joined at {joined:?}");
    for j in out.named("joined") {
        assert_eq!(j["data"]["unfinished"], 0, "{j}");
    }
    assert_eq!(data(&out, "main_done")["unfinished"], 0);
    assert!(out.named("sentinel").is_empty() && out.named("sentinels_sent").is_empty());
    // The consumers were daemonic: the end of the main code terminated them.
    let ended = out.named("ended");
    assert_eq!(ended.len(), 2);
    for e in ended {
        assert_eq!(
            (e["data"]["daemon"].as_bool(), e["data"]["exitcode"].as_i64()),
            (Some(true), Some(-15))
        );
    }
}

#[test]
fn both_start_methods_give_the_children_the_queue() {
    for method in ["fork", "spawn"] {
        let out = run(&["stress", "--total", "3000", "--start-method", method]);
        out.assert_code(0).assert_nothing_left();
        for done in out.named("producer_done") {
            // A spawned child runs this program again with a hidden role argument.
            assert_eq!(done["data"]["spawned"], method == "spawn", "{method}: {done}");
        }
        let result = data(&out, "stress_result");
        assert_eq!(
            (result["received"].as_u64(), result["checksum_ok"].as_bool()),
            (Some(3000), Some(true)),
            "{method}"
        );
        let out = run(&["joinable", "--start-method", method]);
        out.assert_code(0).assert_nothing_left();
        assert_eq!(out.named("task_done").len(), 6, "{method}");
        // Every line of a child comes from a process other than the demo, named for its role.
        let demo = out.pid as u64;
        for e in out.named("task_done") {
            assert_ne!(e["pid"].as_u64(), Some(demo));
            assert_eq!(e["ppid"].as_u64(), Some(demo), "{method}: {e}");
        }
    }
}

#[test]
fn a_producer_sleeps_in_put_while_the_queue_is_full_and_ctrl_c_leaves_nothing() {
    let mut demo = Demo::start(BIN, &["bounded", "--json", "--hold", "60"]);
    let blocked = demo.wait_event("blocked");
    demo.wait_event("hold");
    let producer = blocked["data"]["producer_pid"].as_i64().unwrap() as i32;
    let consumer = blocked["data"]["consumer_pid"].as_i64().unwrap() as i32;
    assert_eq!(blocked["data"]["full"], true, "{blocked}");
    assert!(blocked["data"]["waiting_putters"].as_u64() >= Some(1), "{blocked}");
    // The kernel's own word, read here: asleep (S) in put, its consumer stopped (T), both
    // children of the demo. During the hold nothing can take an item, so it stays asleep.
    let p = support::ps::stat(producer).expect("the producer's /proc/PID/stat");
    let c = support::ps::stat(consumer).expect("the consumer's /proc/PID/stat");
    assert_eq!((p.state, c.state), ('S', 'T'), "producer {p:?}, consumer {c:?}");
    assert_eq!((p.ppid, c.ppid), (demo.pid(), demo.pid()));
    // Ctrl-C from the terminal: the whole group, a stopped child included.
    demo.signal_group(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();
}

#[test]
fn every_put_beyond_maxsize_returns_only_after_a_get_made_room() {
    let out = run(&["bounded", "--items", "8", "--maxsize", "2"]);
    out.assert_code(0).assert_nothing_left();
    let puts = out.named("put_done");
    assert_eq!(puts.len(), 8);
    for put in &puts {
        // put(n) returned: n + 1 items went in, at most 2 are inside, so n - 1 were taken.
        let (n, taken) =
            (put["data"]["n"].as_u64().unwrap(), put["data"]["taken"].as_u64().unwrap());
        assert!(n <= taken + 1, "put({n}) returned with only {taken} taken: {put}");
    }
    let got: Vec<u64> = out.named("got").iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(got, (0..8).collect::<Vec<u64>>());
    let summary = data(&out, "bounded_summary");
    assert_eq!(
        (summary["in_order"].as_bool(), summary["violations"].as_u64()),
        (Some(true), Some(0))
    );
    assert!(summary["blocked_puts"].as_u64() >= Some(1), "{summary}");
    assert_eq!(data(&out, "blocked")["producer_state"], "S");
}

#[test]
fn a_consumer_killed_holding_an_item_is_reported_instead_of_a_silent_hang() {
    let out = run(&["joinable", "--kill-consumer"]);
    out.assert_code(0).assert_nothing_left();
    let died = data(&out, "consumer_died");
    assert_eq!(
        (died["consumer"].as_str(), died["exitcode"].as_i64()),
        (Some("consumer-1"), Some(-9))
    );
    let hang = data(&out, "join_would_hang");
    assert_eq!(hang["unfinished"], 1, "the dead consumer's bun: {hang}");
    assert_eq!(hang["qsize"], 0);
    // Every other bun was eaten and marked done by the live consumer.
    assert_eq!(out.named("task_done").len(), 5);
    assert!(out.named("joined").is_empty(), "no producer's join() can return");
}

#[test]
fn ctrl_c_to_the_parent_alone_stops_and_reaps_every_child() {
    let mut demo = Demo::start(BIN, &["bounded", "--json", "--hold", "60"]);
    let blocked = demo.wait_event("blocked");
    demo.wait_event("hold");
    let consumer = blocked["data"]["consumer_pid"].as_i64().unwrap() as i32;
    wait_until("the consumer is stopped", || support::ps::state_of(consumer) == Some('T'));
    demo.signal(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();
}

#[test]
fn a_bad_flag_exits_2_and_names_it() {
    let out = support::run(BIN, &["sentinel", "--producers", "0"]);
    out.assert_code(2).assert_nothing_left();
    assert!(out.stderr.contains("--producers"), "{}", out.stderr);
    let out = support::run(BIN, &["basics", "--max-message", "5"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--max-message"), "{}", out.stderr);
}

/// Whatever child is killed (SIGKILL, at a random moment of any part), does the demo still end
/// within a bound, reap everyone, and, when it exits 1, say which child was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] =
        &[&["sentinel"], &["joinable"], &["bounded"], &["stress", "--total", "20000"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(400), ms(20_000), 11);
}

/// Can a typo in a count start thousands of processes? No: every count flag has a cap, given
/// in --help, and beyond it the demo exits 2 before anything starts.
#[test]
fn every_count_flag_has_a_cap_and_beyond_it_nothing_starts() {
    for (part, flag, cap) in [
        (&["sentinel"][..], "--producers", 16),
        (&["sentinel"], "--consumers", 16),
        (&["sentinel"], "--buns", 1000),
        (&["bounded"], "--maxsize", 10_000),
        (&["bounded"], "--items", 1000),
        (&["stress"], "--total", 1_000_000),
        (&["stress"], "--queue-size", 100_000),
    ] {
        support::assert_capped(BIN, part, flag, cap);
    }
}

#[test]
fn is_a_guess_of_what_put_nowait_on_a_full_queue_does_judged_against_this_run() {
    support::judged_both_ways(BIN, &["basics"], "put-nowait", "blocks", "Full");
}

/// The bounded part waits for its producer to block on the full queue. A producer killed
/// while the part waits (here: at its first put) can never block: the part must notice the
/// death, not wait out its deadline, and exit 1 naming the lost producer.
#[test]
fn a_producer_killed_before_it_blocks_is_reported_at_once() {
    let mut demo = Demo::start(BIN, &["bounded", "--json"]);
    let first_put = demo.wait_for("producer-1's first put", |e| {
        e["event"] == "putting" && e["who"] == "producer-1"
    });
    let producer = support::pid_of(&first_put["pid"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(producer), nix::sys::signal::SIGKILL)
        .expect("kill producer-1");
    let out = demo.finish_within(std::time::Duration::from_secs(15));
    out.assert_code(1).assert_nothing_left();
    let lost = out.one("child_lost");
    assert_eq!(lost["data"]["name"], "producer-1", "{}", out.stdout);
}
