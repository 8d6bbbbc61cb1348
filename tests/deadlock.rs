//! deadlock: deadlocks made on purpose that never hang the demo. Each is found (the detector's
//! table and cycle name the threads and the locks), seen in `/proc` (`S`, a futex wchan),
//! ended by a kill; the recursive lock counts back to 0; every philosophers fix eats every
//! meal; processes deadlock on flock and get EDEADLK from fcntl; Ctrl-C at any moment leaves
//! nothing behind; bad counts exit 2. Checked from `--json` events and from `/proc`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Demo, Output, pid_of, ps, run};

const BIN: &str = "deadlock";

/// How long any one part may take, on a loaded machine too (a part takes about a second).
const PART_BOUND: Duration = Duration::from_secs(60);

/// Runs one part with `--json` within [`PART_BOUND`]: exit 0, nothing left.
fn part(args: &[&str]) -> Output {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = Demo::start(BIN, &all).finish_within(PART_BOUND);
    out.assert_code(0).assert_nothing_left();
    out
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
}

/// An edge of a wait-for cycle: (waiter, lock, holder).
type Edge = (String, String, String);

/// The names of the threads in a `deadlock` event, the locks, and the cycle's edges
/// (waiter, lock, holder), checking that the cycle closes.
fn deadlock_report(out: &Output, e: &Value) -> (Vec<String>, Vec<String>, Vec<Edge>) {
    let threads: Vec<String> = e["data"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let locks = strings(&e["data"]["locks"]);
    let edges: Vec<Edge> = e["data"]["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("waiter"), s("lock"), s("holder"))
        })
        .collect();
    if edges.is_empty() {
        out.fail("the deadlock report has no cycle");
    }
    for (i, (_, _, holder)) in edges.iter().enumerate() {
        let next = &edges[(i + 1) % edges.len()].0;
        assert_eq!(holder, next, "each holder is the next waiter: the cycle closes");
    }
    (threads, locks, edges)
}

/// The one event named `name` printed by a process other than the demo itself (a child).
fn from_child<'a>(out: &'a Output, name: &str) -> &'a Value {
    let e = out.one(name);
    assert_ne!(
        pid_of(&e["pid"]),
        out.pid,
        "{name} comes from the child, where the threads deadlock"
    );
    e
}

#[test]
fn are_both_scientists_and_both_things_named_in_the_cycle_and_the_child_killed() {
    for method in ["fork", "spawn"] {
        let out = part(&["classic", "--start-method", method]);
        let found = from_child(&out, "deadlock");
        let (mut threads, mut locks, edges) = deadlock_report(&out, found);
        threads.sort();
        locks.sort();
        assert_eq!(threads, ["scientist-1", "scientist-2"], "{method}");
        assert_eq!(locks, ["fork", "noodles"], "{method}");
        assert_eq!(edges.len(), 2, "{method}: a ring of two");
        assert!(edges.contains(&("scientist-1".into(), "fork".into(), "scientist-2".into())));
        assert!(edges.contains(&("scientist-2".into(), "noodles".into(), "scientist-1".into())));
        assert!(found["data"]["cycle_text"].as_str().unwrap().contains("--fork-->"));
        // The parent's view of the child: both scientists asleep.
        let rows = &out.one("threads")["data"]["rows"];
        for name in ["scientist-1", "scientist-2"] {
            let row = rows.as_array().unwrap().iter().find(|r| r["comm"] == name).unwrap();
            assert_eq!(row["state"], "S", "{method}: {name} sleeps: {row}");
        }
        let killed = out.one("killed");
        assert_eq!(pid_of(&killed["data"]["pid"]), pid_of(&found["pid"]));
        assert_eq!(killed["data"]["exitcode"], -9, "{method}: ended by SIGKILL");
    }
}

#[test]
fn does_a_thread_that_relocks_a_std_mutex_sleep_in_s_on_a_futex_until_killed() {
    // Held at the moment before the kill, the test reads /proc itself.
    let mut demo = Demo::start(BIN, &["self", "--json", "--hold", "30"]);
    let seen = demo.wait_event("self_deadlock");
    demo.wait_event("hold");
    let (pid, tid) = (pid_of(&seen["data"]["pid"]), pid_of(&seen["data"]["tid"]));
    assert_ne!(pid, demo.pid(), "the relocker lives in a child");
    let info = ps::thread(pid, tid).expect("the relocker thread is there");
    assert_eq!(info.comm, "relocker");
    assert_eq!(info.state, 'S', "asleep: {info:?}");
    if info.wchan == "-" {
        // Some containers hide kernel addresses: /proc/PID/task/TID/wchan reads 0 there.
        eprintln!("wchan is hidden on this system (reads 0): the state S is the evidence");
        assert_eq!(seen["data"]["wchan_shown"], false);
    } else {
        assert!(info.wchan.contains("futex"), "asleep on the mutex's futex: {info:?}");
    }
    let tried = demo.events().iter().find(|e| e["event"] == "try_lock").cloned().unwrap();
    assert_eq!(tried["data"]["result"], "WouldBlock");
    // Ctrl-C at that moment: the deadlocked child is stopped too.
    let out = demo.interrupt(true);
    out.assert_code(130).assert_nothing_left();
}

#[test]
fn does_the_recursive_lock_go_three_levels_deep_back_to_zero_and_let_every_scientist_eat() {
    let out = part(&["rlock"]);
    let counts: Vec<u64> =
        out.named("rlock_level").iter().map(|e| e["data"]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [0, 1, 2, 3, 2, 1, 0]);
    assert_eq!(out.one("rlock_other")["data"]["refused"], true, "another thread is not the owner");
    let all = &out.one("rlock_all_ate")["data"];
    assert_eq!(all["ate"], all["scientists"]);
    assert_eq!(all["ate"], 10);
    assert_eq!(all["count"], 0);
    assert_eq!(out.named("rlock_ate").len(), 10);
    // Whichever way it went, the report names the dead owner and the newcomer.
    let reuse = &out.one("rlock_owner_reuse")["data"];
    assert_ne!(reuse["dead_owner"], reuse["newcomer"], "ThreadIds are never reused");
}

#[test]
fn do_the_naive_philosophers_deadlock_in_a_ring_of_five_and_every_fix_eat_every_meal() {
    let out = part(&["philosophers", "--meals", "5"]);
    let found = out.one("deadlock");
    let (mut threads, mut locks, edges) = deadlock_report(&out, found);
    threads.sort();
    locks.sort();
    assert_eq!(threads, (1..=5).map(|i| format!("philosopher-{i}")).collect::<Vec<_>>());
    assert_eq!(locks, (1..=5).map(|i| format!("fork-{i}")).collect::<Vec<_>>());
    assert_eq!(edges.len(), 5, "a ring of five");
    for (waiter, lock, _) in &edges {
        let i: usize = waiter.trim_start_matches("philosopher-").parse().unwrap();
        assert_eq!(lock, &format!("fork-{}", i % 5 + 1), "each waits for his right fork");
    }
    let dead_pid = pid_of(&found["pid"]);
    assert_eq!(out.one("killed")["data"]["pid"], dead_pid);
    let fixes = out.named("dinner_done");
    let ways: Vec<&str> = fixes.iter().map(|e| e["data"]["way"].as_str().unwrap()).collect();
    assert_eq!(ways, ["order", "try-lock", "try-lock-fixed", "arbiter", "one-lock"]);
    for e in &fixes {
        let d = &e["data"];
        assert_eq!(d["eaten"], 25, "{}: every meal", d["way"]);
        assert_eq!(d["each"], serde_json::json!([5, 5, 5, 5, 5]), "{}", d["way"]);
        assert_ne!(pid_of(&e["pid"]), dead_pid);
    }
    assert_eq!(out.named("deadlock").len(), 1, "no fix reported a deadlock");
    assert_eq!(out.one("meals_table")["data"]["rows"].as_array().unwrap().len(), 5);
    // Another table size: three philosophers (arbiter of two seats).
    let out = part(&["philosophers", "--meals", "3", "--philosophers", "3"]);
    assert_eq!(out.one("deadlock")["data"]["cycle"].as_array().unwrap().len(), 3);
    assert!(out.named("dinner_done").iter().all(|e| e["data"]["eaten"] == 9));
}

#[test]
fn do_two_processes_deadlock_on_flock_in_proc_locks_and_does_fcntl_refuse_one_with_edeadlk() {
    for method in ["fork", "spawn"] {
        two_processes(&part(&["processes", "--start-method", method]));
    }
}

fn two_processes(out: &Output) {
    let flock = &out.one("flock_deadlock")["data"];
    let locks = flock["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 4, "two files, each held by one and awaited by the other: {locks:?}");
    assert!(locks.iter().all(|l| l["kind"] == "FLOCK"));
    let pids: Vec<i32> =
        flock["processes"].as_array().unwrap().iter().map(|p| pid_of(&p["pid"])).collect();
    for file in ["a", "b"] {
        let on: Vec<&Value> = locks.iter().filter(|l| l["file"] == file).collect();
        let holder = on.iter().find(|l| l["waiting"] == false).unwrap();
        let waiter = on.iter().find(|l| l["waiting"] == true).unwrap();
        assert_ne!(holder["pid"], waiter["pid"], "file {file}: held by one, awaited by the other");
        assert!(pids.contains(&pid_of(&holder["pid"])) && pids.contains(&pid_of(&waiter["pid"])));
    }
    for p in flock["processes"].as_array().unwrap() {
        assert_eq!(p["state"], "S", "blocked in flock: {p}");
    }
    assert_eq!(flock["cycle"].as_array().unwrap().len(), 2);
    let ended = &out.one("flock_ended")["data"];
    assert_eq!(
        ended["exitcodes"],
        serde_json::json!([0, -9]),
        "locker-2 killed, locker-1 finished"
    );

    let fcntl = &out.one("fcntl_ended")["data"];
    assert_eq!(fcntl["edeadlk"].as_array().unwrap().len(), 1, "exactly one gets EDEADLK: {fcntl}");
    assert_eq!(fcntl["got_both"].as_array().unwrap().len(), 1, "and the other both files");
    assert_ne!(fcntl["edeadlk"][0], fcntl["got_both"][0]);
    assert_eq!(fcntl["exitcodes"], serde_json::json!([0, 0]), "no kill needed");
    assert_eq!(out.one("edeadlk")["data"]["errno"], "EDEADLK");
}

#[test]
fn does_ctrl_c_at_any_moment_exit_130_and_leave_nothing() {
    // At the moment two processes are deadlocked on flock: SIGINT to the demo alone.
    Demo::ctrl_c_at(BIN, &["processes", "--json", "--hold", "30"], "hold", false);
    // With the philosophers deadlocked: Ctrl-C to the whole group.
    Demo::ctrl_c_at(BIN, &["philosophers", "--json", "--hold", "30"], "hold", true);
    // At random moments of the tour (seeded; CHAOS_SEED repeats a run).
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(14);
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..4 {
        let mut demo = Demo::start(BIN, &["--json", "--meals", "5"]);
        // Wait for the first line, so the demo is running, then a random moment of the tour.
        demo.wait_event("say");
        std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
        let to_group = rng.bool();
        let began = std::time::Instant::now();
        let out = demo.interrupt(to_group);
        eprintln!(
            "seed {seed}: interrupted (group: {to_group}), exit {:?} after {:?}",
            out.code(),
            began.elapsed()
        );
        match out.code() {
            Some(130) => {}
            // The tour may have ended before the signal came.
            Some(0) => eprintln!("seed {seed}: the tour had ended before the signal"),
            _ => out.fail(&format!("seed {seed}: expected 130 after Ctrl-C")),
        }
        out.assert_nothing_left();
    }
}

#[test]
fn are_bad_counts_a_usage_error_naming_the_flag() {
    for (args, flag) in [
        (&["philosophers", "--meals", "0"][..], "--meals"),
        (&["philosophers", "--meals", "1001"][..], "--meals"),
        (&["--philosophers", "1"][..], "--philosophers"),
        (&["philosophers", "--philosophers", "33"][..], "--philosophers"),
    ] {
        let out = run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        assert!(out.stderr.contains(flag), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn does_the_tour_run_all_five_parts() {
    let out = part(&["--meals", "3"]);
    assert_eq!(out.named("section").len(), 5);
    assert_eq!(out.named("deadlock").len(), 2, "classic and the naive philosophers");
    assert_eq!(out.named("killed").len(), 4, "classic, self, philosophers, a flock locker");
}

#[test]
fn is_a_guess_of_which_lock_kind_gets_edeadlk_judged_against_this_runs_lockers() {
    // Only POSIX record locks detect it.
    support::judged_both_ways(BIN, &["processes"], "edeadlk", "flock", "fcntl");
}

#[test]
fn does_the_livelock_sentence_follow_the_retries_it_counts() {
    let out = part(&["philosophers", "--meals", "5"]);
    let table = &out.one("meals_table")["data"];
    let (random, fixed) =
        (table["retries_random"].as_u64().unwrap(), table["retries_fixed"].as_u64().unwrap());
    let says = out.said("try_lock retried");
    assert_eq!(says.len(), 1, "{says:?}");
    assert!(says[0].contains(&format!("retried {random} times with a random back-off, {fixed}")));
    let expected = if fixed > random { "the fixed one more" } else { "no more than the random" };
    assert!(says[0].contains(expected), "{random} random, {fixed} fixed: {}", says[0]);
}

// ---------------------------------------------------------------------------------------------
// Be the scheduler: classic --step, --schedule

#[test]
fn do_opposite_lock_orders_interleaved_deadlock_found_killed_and_exit_0() {
    let out = part(&["classic", "--schedule", "0,1,0,1"]);
    out.assert_code(0).assert_nothing_left();
    let s = &out.one("schedule")["data"];
    assert_eq!(s["won"], true, "{s}");
    // The child's own detector found the cycle, and the parent killed the child.
    let (threads, _, _) = deadlock_report(&out, out.one("deadlock"));
    assert_eq!(threads.len(), 2);
    assert_eq!(out.one("killed")["data"]["exitcode"], -9);
}

#[test]
fn does_a_serial_schedule_let_both_scientists_eat_and_a_blocked_one_refuse_a_step() {
    let out = part(&["classic", "--schedule", "0,0,0,0,1,1,1,1"]);
    out.assert_code(0).assert_nothing_left();
    assert_eq!(out.one("schedule")["data"]["won"], false);
    assert_eq!(out.named("ate").len(), 2);
    assert!(out.named("deadlock").is_empty());

    // scientist-2 holds the fork; scientist-1, granted `lock B`, sleeps on it: it cannot be
    // granted step 4.
    let out = run(BIN, &["--json", "classic", "--schedule", "1,0,0,0"]);
    out.assert_code(2).assert_nothing_left();
    for word in ["position 4", "blocked", "lock B"] {
        if !out.stderr.contains(word) {
            out.fail(&format!("the message must say {word:?}"));
        }
    }
    let out = run(BIN, &["--json", "classic", "--schedule", "0,1,0,1,0"]);
    out.assert_code(2).assert_nothing_left();
    assert!(out.stderr.contains("too many") && out.stderr.contains("deadlocked"), "{}", out.stderr);
}
