//! event: the traffic light, connect-and-retry with wait(timeout), waiters in other processes
//! (asleep in /proc, one killed, the rest woken by one set()), Ctrl-C and bad flags; checked
//! from `--json` events, whose line order on the shared stdout pipe is the order of the writes.

mod support;

use std::collections::HashSet;

use support::{Demo, pid_of, ps, run_ok};

const BIN: &str = "event";

/// Every car passes; a car waits only after a red line and goes after waiting only after a
/// green one (the light announces each change before it makes it, so this order is certain).
#[test]
fn does_every_car_pass_and_does_a_car_that_waited_go_only_after_the_light_turned_green() {
    let out = run_ok(BIN, &["light", "--cars", "10", "--speed", "20"]);
    let mut color = "none";
    let mut waiting: HashSet<String> = HashSet::new();
    let mut gone: HashSet<String> = HashSet::new();
    let mut greens = 0;
    for e in &out.events {
        let car = e["data"]["car"].as_str().unwrap_or_default().to_string();
        match e["event"].as_str().unwrap_or_default() {
            "light" => {
                color = if e["data"]["color"] == "green" { "green" } else { "red" };
                greens += usize::from(color == "green");
            }
            "wait_red" => {
                assert_eq!(color, "red", "{car} waited at a red light");
                waiting.insert(car);
            }
            "go" => {
                if e["data"]["waited"] == true {
                    assert!(waiting.contains(&car), "{car} said it waited");
                    assert!(greens > 0, "{car} went after a green light");
                }
                assert!(gone.insert(car), "each car goes once");
            }
            _ => {}
        }
    }
    assert_eq!(gone.len(), 10, "every car passed");
    let traffic = out.one("traffic");
    assert_eq!(traffic["data"]["passed"], 10);
    assert_eq!(traffic["data"]["waited"], waiting.len());
}

/// The server is ready only after 2 s (`--server-delay 20` at `--speed 10`), the client's three
/// attempts wait 0.05 s each: every `wait(timeout)` returns False, and only after its whole
/// timeout; the untimed wait after the TimeoutError returns True, after the server set it.
#[test]
fn is_an_unset_events_wait_with_a_timeout_false_and_does_the_client_connect_once_it_is_set() {
    let out = run_ok(BIN, &["timeout", "--server-delay", "20"]);
    let attempts = out.named("attempt");
    assert_eq!(attempts.len(), 3);
    for a in &attempts {
        assert_eq!(a["data"]["result"], false, "{a}");
        assert!(a["data"]["waited_ms"].as_u64() >= a["data"]["timeout_ms"].as_u64(), "{a}");
    }
    out.one("timeout_error");
    let position = |name: &str| out.events.iter().position(|e| e["event"] == name).unwrap();
    let connected = out.one("connected");
    assert_eq!(connected["data"]["result"], true);
    assert!(position("server_ready") < position("connected"), "connected after the set");
}

/// Waiting processes are asleep (`S`, in a futex) as /proc shows while the demo holds; Ctrl-C
/// then stops every one: exit 130, nothing left.
#[test]
fn are_process_waiters_seen_asleep_in_s_and_does_ctrl_c_leave_nothing() {
    for (to_group, method) in [(true, "fork"), (false, "spawn")] {
        let args =
            ["processes", "--json", "--hold", "60", "--waiters", "4", "--start-method", method];
        let mut demo = Demo::start(BIN, &args);
        let hold = demo.wait_event("hold");
        let pids: Vec<i32> = hold["data"]["pids"].as_array().unwrap().iter().map(pid_of).collect();
        assert_eq!(pids.len(), 4);
        for &pid in &pids {
            let p = ps::stat(pid).unwrap_or_else(|| demo.fail(&format!("{pid} is gone")));
            assert_eq!(p.state, 'S', "{} (pid {pid}) sleeps in wait()", p.comm);
            assert_eq!(p.ppid, demo.pid());
            let wchan = support::ps::wchan(pid);
            assert!(wchan.contains("futex"), "{} sleeps in a futex, not in {wchan:?}", p.comm);
        }
        demo.interrupt(to_group).assert_code(130).assert_nothing_left();
    }
}

/// One waiter is killed while it waits; one set() wakes every other one (each ends with 0,
/// within the harness's deadline), with every start method.
#[test]
fn does_one_set_wake_every_waiter_and_harm_nobody_after_a_waiter_was_killed() {
    for method in ["fork", "spawn", "forkserver"] {
        let out = run_ok(BIN, &["processes", "--waiters", "5", "--start-method", method]);
        let killed = out.one("killed");
        assert_eq!(killed["data"]["exitcode"], -9, "{method}: {killed}");
        let asleep = out.one("asleep");
        for row in asleep["data"]["rows"].as_array().unwrap() {
            assert_eq!(row["state"], "S", "{method}: {row}");
        }
        let woke: HashSet<i32> = out.named("woke").iter().map(|e| pid_of(&e["pid"])).collect();
        assert_eq!(woke.len(), 4, "{method}: every waiter but the killed one woke");
        assert!(!woke.contains(&pid_of(&killed["data"]["pid"])), "{method}: the dead never wake");
        let set_at = out.events.iter().position(|e| e["event"] == "set").unwrap();
        let first_woke = out.events.iter().position(|e| e["event"] == "woke").unwrap();
        assert!(set_at < first_woke, "{method}: nobody woke before set()");
        assert_eq!(out.one("all_woke")["data"]["woke"], 4);
    }
}

#[test]
fn does_ctrl_c_at_the_traffic_light_end_the_demo_with_130() {
    Demo::ctrl_c_at(BIN, &["light", "--json", "--speed", "1"], "light", true);
}

#[test]
fn are_counts_out_of_range_usage_errors_naming_the_flag() {
    support::assert_usage_errors(
        BIN,
        "light",
        &[
            ("--cars", "0"),
            ("--cars", "101"),
            ("--tries", "11"),
            ("--waiters", "0"),
            ("--waiters", "65"),
            ("--server-delay", "61"),
        ],
    );
}

#[test]
fn does_the_tour_run_all_three_parts_and_leave_nothing_behind() {
    let out = run_ok(BIN, &["--speed", "20"]);
    assert_eq!(out.named("section").len(), 3);
}

/// Whatever waiter is killed (SIGKILL, at a random moment), does the demo still end within a
/// bound, reap everyone, and, when it exits 1, say which waiter was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] = &[&["processes"], &["processes", "--start-method", "spawn"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(20), ms(20_000), 19);
}

/// A server 20 s (scaled) late: every timed wait of the client returns False, as the run's own
/// attempts say; the guess is judged against them. And the killed waiter: 5 waiters, 1 killed,
/// 4 wake, always.
#[test]
fn are_guesses_of_the_timed_out_waits_and_the_woken_waiters_judged_against_the_run() {
    for (guess, right) in [("3", true), ("2", false)] {
        let given = format!("timed-out={guess}");
        let out = run_ok(BIN, &["timeout", "--server-delay", "20", "--answer", &given]);
        let falses = out.named("attempt").iter().filter(|e| e["data"]["result"] == false).count();
        assert_eq!(falses, 3);
        let a = &out.answer("timed-out")["data"];
        assert_eq!((a["actual"].as_u64(), a["right"].as_bool()), (Some(3), Some(right)), "{a}");
    }
    let out = run_ok(BIN, &["processes", "--waiters", "5", "--answer", "woke=5"]);
    let a = &out.answer("woke")["data"];
    assert_eq!((a["actual"].as_u64(), a["right"].as_bool()), (Some(4), Some(false)), "{a}");
    assert!(run_ok(BIN, &["timeout", "--server-delay", "20"]).named("question").is_empty());
}
