//! process-basics: pid and ppid, two ways to start, start vs join, seed 001's examples, the
//! four tasks' wall times, attributes, exit codes, the send_mail loop and the order of
//! children; checked from `--json` events, the recorded timeline and `/proc`.

mod support;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Demo, TempDir, pid_of, ps, run, run_ok, wait_until};

const BIN: &str = "process-basics";

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Index in `events` of the first event matching `pred`.
fn position(events: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events.iter().position(pred).unwrap_or_else(|| panic!("no event {what}"))
}

/// The first event so far that satisfies `pred`, or the next one to come.
fn seen_or_wait(demo: &mut Demo, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    match demo.events().iter().find(|e| pred(e)) {
        Some(e) => e.clone(),
        None => demo.wait_for(what, pred),
    }
}

#[test]
fn is_a_childs_ppid_the_demos_pid_and_the_demos_ppid_whoever_started_it() {
    for method in ["fork", "spawn"] {
        let mut demo =
            Demo::start(BIN, &["pids", "--json", "--hold", "30", "--start-method", method]);
        let me = std::process::id() as i32;
        let pids = demo.wait_event("pids");
        assert_eq!(pid_of(&pids["data"]["ppid"]), me, "the test started the demo: its parent");
        assert_eq!(pid_of(&pids["data"]["pid"]), demo.pid());
        assert_eq!(ps::stat(demo.pid()).unwrap().ppid, me, "/proc agrees");
        demo.wait_event("hold");
        let children: Vec<i32> = demo
            .events()
            .iter()
            .filter(|e| e["event"] == "started")
            .map(|e| pid_of(&e["data"]["pid"]))
            .collect();
        assert_eq!(children.len(), 2);
        for child in &children {
            let info = ps::stat(*child).unwrap_or_else(|| panic!("child {child} in /proc"));
            assert_eq!(info.ppid, demo.pid(), "/proc/{child}/stat: the demo is the parent");
            let said = seen_or_wait(&mut demo, "the child's own pid line", |e| {
                e["event"] == "child_pids" && pid_of(&e["data"]["pid"]) == *child
            });
            assert_eq!(pid_of(&said["data"]["ppid"]), demo.pid(), "os.getppid() in the child");
        }
        let check = seen_or_wait(&mut demo, "ppid_check", |e| e["event"] == "ppid_check");
        assert_eq!(check["data"]["all_mine"], true);
        // Ctrl-C from the terminal reaches the whole group.
        demo.signal_group(Signal::SIGINT);
        demo.finish().assert_code(130).assert_nothing_left();
    }
}

#[test]
fn do_both_ways_of_starting_run_the_work_in_a_child_of_the_demo() {
    for method in ["fork", "spawn"] {
        let out = run_ok(BIN, &["two-ways", "--speed", "100", "--start-method", method]);
        let running = out.named("running");
        assert_eq!(running.len(), 2, "{method}");
        for way in ["target function", "run method"] {
            let e = running.iter().find(|e| e["data"]["way"] == way).expect(way);
            assert_eq!(pid_of(&e["ppid"]), out.pid, "{way} ran in a child of the demo ({method})");
            assert_ne!(pid_of(&e["pid"]), out.pid);
        }
        assert_eq!(out.one("joined")["data"]["exitcodes"], serde_json::json!([0, 0]));
    }
}

#[test]
fn does_start_return_at_once_and_join_wait_until_the_child_has_ended() {
    // --speed 3: the child sleeps one second.
    let out = run_ok(BIN, &["start-join", "--speed", "3"]);
    let started = &out.one("started")["data"];
    let joined = &out.one("joined")["data"];
    let sleep = f64_of(&joined["child_sleep_ms"]);
    assert_eq!(sleep, 1000.0);
    assert!(f64_of(&started["start_ms"]) < sleep, "start returned before the child could end");
    assert!(
        f64_of(&started["start_ms"]) + f64_of(&joined["waited_ms"]) >= sleep,
        "from start to the end of join at least the child's sleep passed: {started} {joined}"
    );
    let child_done = position(&out.events, "child done", |e| e["event"] == "done");
    let join_end = position(&out.events, "joined", |e| e["event"] == "joined");
    assert!(child_done < join_end, "join returns only after the child's last line");
    assert_eq!(joined["exitcode"], 0);
}

/// The events of seed 001's example `n`, from its `example` event to the next one.
fn example_events(events: &[Value], n: u64) -> &[Value] {
    let start = position(events, "example", |e| e["event"] == "example" && e["data"]["n"] == n);
    let end = events[start + 1..]
        .iter()
        .position(|e| e["event"] == "example")
        .map_or(events.len(), |i| start + 1 + i);
    &events[start..end]
}

fn last_index_of(events: &[Value], who: &str) -> usize {
    events.iter().rposition(|e| e["who"] == who).unwrap_or_else(|| panic!("no event of {who}"))
}

fn first_index_of(events: &[Value], who: &str) -> usize {
    events.iter().position(|e| e["who"] == who).unwrap_or_else(|| panic!("no event of {who}"))
}

#[test]
fn with_join_does_every_childs_last_line_come_before_the_parents_end() {
    for method in ["fork", "spawn"] {
        let out =
            run_ok(BIN, &["examples", "--speed", "100", "--loops", "2", "--start-method", method]);
        let parent_end = |ev: &[Value]| position(ev, "parent_end", |e| e["event"] == "parent_end");

        // 例子一: both joined, so both children's last lines precede the parent's end.
        let ex1 = example_events(&out.events, 1);
        for child in ["process1", "process2"] {
            assert!(last_index_of(ex1, child) < parent_end(ex1), "例子一, {child} ({method})");
            let ticks = ex1.iter().filter(|e| e["who"] == child && e["event"] == "tick").count();
            assert_eq!(ticks, 2, "--loops 2");
        }
        // 例子二: the run method ran in two children.
        let ex2 = example_events(&out.events, 2);
        for child in ["p1", "p2"] {
            let e = &ex2[first_index_of(ex2, child)];
            assert_eq!(e["data"]["way"], "run method");
            assert_eq!(pid_of(&e["ppid"]), out.pid);
        }
        // 例子三, 四 and 五: unjoined children are still waited for before the part ends.
        for n in [3, 4, 5] {
            let ev = example_events(&out.events, n);
            let reaped = position(ev, "reaped", |e| e["event"] == "reaped");
            assert!(last_index_of(ev, "process2") < reaped, "例子{n}: waited for at exit");
        }
        // 例子四: p1 was joined.
        let ex4 = example_events(&out.events, 4);
        assert!(last_index_of(ex4, "process1") < parent_end(ex4));
        // 例子五: start, join, start: p2 starts only after p1's last line.
        let ex5 = example_events(&out.events, 5);
        assert!(last_index_of(ex5, "process1") < first_index_of(ex5, "process2"));
    }
}

#[test]
fn does_start_all_then_join_all_take_the_longest_task_and_start_join_each_the_sum() {
    // --speed 10: the tasks sleep 500, 300, 200 and 100 ms.
    let out = run_ok(BIN, &["tasks", "--speed", "10"]);
    let walls = out.named("wall");
    assert_eq!(walls.len(), 2);
    let (concurrent, serial) = (&walls[0]["data"], &walls[1]["data"]);
    assert_eq!((f64_of(&concurrent["longest_ms"]), f64_of(&concurrent["sum_ms"])), (500.0, 1100.0));
    let c = f64_of(&concurrent["wall_ms"]);
    let s = f64_of(&serial["wall_ms"]);
    // Lower bounds are exact (sleeps never end early); the upper bound is generous.
    assert!(c >= 500.0, "start all, join all waits for the longest task: {c} ms");
    assert!(c < 0.85 * 1100.0, "start all, join all stays well under the sum: {c} ms");
    assert!(s >= 1100.0, "start and join each takes at least the sum: {s} ms");
    assert_eq!(out.one("verdict")["data"]["holds"], true);
}

#[test]
fn does_the_timeline_draw_a_lane_for_every_process_even_spawned_ones() {
    for method in ["fork", "spawn"] {
        let out = run_ok(BIN, &["tasks", "--timeline", "--speed", "20", "--start-method", method]);
        let timelines = out.named("timeline");
        assert_eq!(timelines.len(), 2, "one drawing per way of joining ({method})");
        let concurrent = &timelines[0]["data"];
        let lanes = concurrent["lanes"].as_array().unwrap();
        // The tasks of the first run: their "running" events come before the first drawing.
        let first_drawing = position(&out.events, "timeline", |e| e["event"] == "timeline");
        let running: Vec<&Value> =
            out.events[..first_drawing].iter().filter(|e| e["event"] == "running").collect();
        assert_eq!(running.len(), 4);
        assert_eq!(lanes.len(), 5, "the demo and its four tasks ({method}): {concurrent}");
        let lane = |pid: i32| lanes.iter().find(|l| pid_of(&l["pid"]) == pid).unwrap();
        let parent = lane(out.pid);
        for task in running {
            let l = lane(pid_of(&task["pid"]));
            let (start, end) = (f64_of(&l["start_ms"]), f64_of(&l["end_ms"]));
            // t_ms is whole milliseconds: a lane may look 1 ms shorter than the sleep.
            assert!(end - start >= f64_of(&task["data"]["sleep_ms"]) - 1.0, "{l}");
            assert!(f64_of(&parent["start_ms"]) <= start && f64_of(&parent["end_ms"]) >= end);
        }
        let text = concurrent["text"].as_str().unwrap();
        for l in lanes {
            let label = format!("{} {}", l["who"].as_str().unwrap(), pid_of(&l["pid"]));
            assert!(text.contains(&label), "a row for {label}:\n{text}");
        }
        let rows = text.lines().skip(1).filter(|l| l.contains('|')).count();
        assert_eq!(rows, 5, "a row per lane under the title:\n{text}");
    }
}

#[test]
fn does_the_recording_file_have_no_name_and_leave_nothing_after_ctrl_c() {
    let cwd = TempDir::new("process-basics-cwd");
    // --speed 1: the notes' own 5-second task, so the recording is surely in use.
    let mut demo =
        Demo::start_in(BIN, &["tasks", "--json", "--timeline", "--speed", "1"], Some(cwd.path()));
    let task = demo.wait_event("running");
    let child = pid_of(&task["pid"]);
    for pid in [demo.pid(), child] {
        let mut found = Vec::new();
        wait_until("the recording file is open", || {
            found = open_files(pid).into_iter().filter(|t| t.ends_with("(deleted)")).collect();
            !found.is_empty()
        });
        let temp = std::env::temp_dir();
        assert!(
            found.iter().any(|t| t.starts_with(temp.to_str().unwrap())),
            "pid {pid} records to a nameless file in {}: {found:?}",
            temp.display()
        );
    }
    demo.signal_group(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing written to the working directory: {left:?}");
}

/// Where each of `pid`'s file descriptors points (`/proc/PID/fd/*`).
fn open_files(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn does_exitcode_say_0_the_chosen_code_1_and_minus_the_signal() {
    let cwd = TempDir::new("process-basics-exits");
    for method in ["fork", "spawn"] {
        let out = Demo::start_in(
            BIN,
            &["exits", "--json", "--code", "7", "--start-method", method],
            Some(cwd.path()),
        )
        .finish();
        out.assert_code(0).assert_nothing_left();
        let code_of = |how: &str| {
            let e = out.named("exited").into_iter().find(|e| e["data"]["how"] == how).unwrap();
            e["data"]["exitcode"].as_i64().unwrap()
        };
        assert_eq!(code_of("ok"), 0);
        assert_eq!(code_of("code"), 7, "sys.exit(7)");
        assert_eq!(code_of("error"), 1, "an uncaught error");
        assert_eq!(code_of("abort"), -6, "SIGABRT");
        assert_eq!(code_of("kill -9"), -9);
        assert_eq!(code_of("kill -15"), -15);
        assert!(out.stderr.contains("a.py"), "the child's error is on stderr: {}", out.stderr);
        let commands = out.named("commands");
        assert_eq!(commands.len(), 2);
        assert!(commands[0]["data"]["find"].as_str().unwrap().starts_with("ps aux | grep"));
        assert!(commands[0]["data"]["end"].as_str().unwrap().starts_with("kill -9 "));
    }
    // The same with core dumps allowed (the harness's limit may be 0): abort must still leave
    // no core file in the working directory.
    let status = run_with_core_dumps_allowed(&["exits", "--json"], cwd.path());
    assert_eq!(status.code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "abort left no core file in the working directory: {left:?}");
}

/// Runs the demo in `cwd` with the core-file size limit raised to its maximum, in its own
/// session, with the harness's deadline; kills what is left if it does not end in time. (The
/// harness has no hook for resource limits, hence this small runner.)
fn run_with_core_dumps_allowed(args: &[&str], cwd: &std::path::Path) -> std::process::ExitStatus {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(support::bin(BIN));
    command.args(args).current_dir(cwd).stdout(std::process::Stdio::null());
    command.stderr(std::process::Stdio::null());
    // Safety: setsid and setrlimit are async-signal-safe and touch only the child.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &limit);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawning the demo");
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            assert!(support::session_members(child.id() as i32).is_empty(), "nothing left");
            return status;
        }
        if std::time::Instant::now() > deadline {
            for p in support::session_members(child.id() as i32) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not end in time: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn does_join_with_a_timeout_return_while_the_child_runs_and_terminate_end_it() {
    for method in ["fork", "spawn"] {
        let out = run_ok(BIN, &["attributes", "--speed", "20", "--start-method", method]);
        let steps = out.named("attr");
        assert_eq!(steps[0]["data"]["is_alive"], false, "before start");
        assert_eq!(steps[0]["data"]["pid"], Value::Null);
        assert_eq!(steps[1]["data"]["is_alive"], true, "after start");
        let pid = pid_of(&steps[1]["data"]["pid"]);
        assert_eq!(steps[1]["data"]["name"], "sleeper");
        let timed = &out.one("join_timeout")["data"];
        assert!(f64_of(&timed["returned_after_ms"]) >= f64_of(&timed["timeout_ms"]));
        assert_eq!(timed["exitcode"], Value::Null, "join(timeout) returned None");
        assert_eq!(timed["is_alive"], true, "the child still runs after join(timeout)");
        assert_eq!(timed["state"], "S", "sleeping, per /proc");
        let after = &steps[2]["data"];
        assert_eq!(after["is_alive"], false, "terminate, then join: not alive ({method})");
        assert_eq!(after["exitcode"], -15);
        assert!(ps::stat(pid).is_none_or(|p| p.ppid != out.pid), "reaped");
    }
}

#[test]
fn does_the_notes_send_mail_loop_say_all_sent_too_early_and_the_fix_not() {
    let out = run_ok(BIN, &["send-mail", "--mails", "6"]);
    let verdicts = out.named("verdict");
    assert_eq!(verdicts[0]["data"]["version"], "notes");
    assert_eq!(verdicts[0]["data"]["joined"], 1, "the notes' loop joins only its last process");
    assert_eq!(verdicts[1]["data"]["joined"], 6);
    assert_eq!(verdicts[1]["data"]["sent_after_all_sent"], 0);
    // Stdout's own order: after the notes' "all sent", mails are still being sent (mail 0
    // takes ten times as long as the last one, the only one joined); after the fix none is.
    let notes = position(&out.events, "notes' all_sent", |e| {
        e["event"] == "all_sent" && e["data"]["version"] == "notes"
    });
    let fixed = position(&out.events, "fixed all_sent", |e| {
        e["event"] == "all_sent" && e["data"]["version"] == "fixed"
    });
    let fixed_start =
        out.events[notes..].iter().position(|e| e["event"] == "say").map(|i| notes + i).unwrap();
    let late = out.events[notes..fixed_start].iter().filter(|e| e["event"] == "sent").count();
    assert!(late >= 1, "some mail was sent after the notes' \"all sent\"");
    assert!(verdicts[0]["data"]["sent_after_all_sent"].as_u64().unwrap() >= 1);
    let sent_fixed = out.events[fixed_start..fixed].iter().filter(|e| e["event"] == "sent").count();
    assert_eq!(sent_fixed, 6, "every mail sent before the fixed \"all sent\"");
    let mut all: Vec<u64> =
        out.named("sent").iter().map(|e| e["data"]["i"].as_u64().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], "each mail once per loop");
}

#[test]
fn does_every_child_report_exactly_once_per_round_whatever_the_order() {
    let out = run_ok(BIN, &["order", "--children", "4", "--rounds", "3"]);
    let orders = out.named("order");
    assert_eq!(orders.len(), 3);
    for (round, order) in orders.iter().enumerate() {
        let mut seen: Vec<u64> = order["data"]["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3], "round {}", round + 1);
        let hellos = out.named("hello");
        let mut mine: Vec<u64> = hellos
            .iter()
            .filter(|e| e["data"]["round"] == round as u64 + 1)
            .map(|e| e["data"]["index"].as_u64().unwrap())
            .collect();
        mine.sort_unstable();
        assert_eq!(mine, [0, 1, 2, 3], "stdout agrees, round {}", round + 1);
    }
    // Whether the orders differed is the scheduler's business; the demo must say it honestly.
    let summary = &out.one("orders")["data"];
    let distinct = summary["distinct"].as_u64().unwrap();
    assert!((1..=3).contains(&distinct));
    assert_eq!(summary["differed"], distinct > 1);
}

#[test]
fn does_the_tour_run_every_part() {
    let out = run_ok(BIN, &["--speed", "100"]);
    assert_eq!(out.named("section").len(), 9);
    assert_eq!(out.named("example").len(), 5);
}

#[test]
fn are_bad_flags_refused_with_exit_2_and_a_clear_message() {
    for (args, flag) in [
        (&["--speed", "0"][..], "--speed"),
        (&["order", "--children", "0"][..], "--children"),
        (&["exits", "--code", "300"][..], "--code"),
        (&["examples", "9"][..], "ONLY"),
        (&["no-such-part"][..], "no-such-part"),
    ] {
        let out = run(BIN, args);
        out.assert_code(2);
        assert!(out.stderr.contains(flag), "{args:?}: the message names {flag}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "nothing ran");
    }
}

#[test]
fn does_ctrl_c_to_the_parent_alone_during_hold_leave_nothing_behind() {
    let mut demo =
        Demo::start(BIN, &["attributes", "--json", "--hold", "30", "--start-method", "spawn"]);
    let hold = demo.wait_event("hold");
    let child = pid_of(&hold["data"]["pids"][1]);
    wait_until("the sleeper sleeps", || ps::state_of(child) == Some('S'));
    demo.signal(Signal::SIGINT);
    let out = demo.finish();
    out.assert_code(130).assert_nothing_left();
    out.one("interrupted");
}

/// Whatever child is killed (SIGKILL, at a random moment of any part), does the demo still end
/// within a bound, reap everyone, and, when it exits 1, say which child was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] = &[
        &["pids"],
        &["two-ways"],
        &["start-join"],
        &["examples"],
        &["tasks"],
        &["attributes"],
        &["exits"],
        &["send-mail", "--mails", "8"],
        &["order"],
    ];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 1, ms(300), ms(20_000), 13);
}

/// Can a typo in a count start thousands of processes? No: every count flag has a cap, given
/// in --help, and beyond it the demo exits 2 before anything starts.
#[test]
fn every_count_flag_has_a_cap_and_beyond_it_nothing_starts() {
    for (part, flag, cap) in [
        ("examples", "--loops", 100),
        ("send-mail", "--mails", 200),
        ("order", "--children", 32),
        ("order", "--rounds", 100),
    ] {
        support::assert_capped(BIN, &[part], flag, cap);
    }
}

#[test]
fn is_a_guess_of_the_sigkilled_childs_exitcode_judged_against_what_join_returned() {
    support::judged_both_ways(BIN, &["exits"], "sigkill-code", "137", -9);
}

#[test]
fn is_the_child_already_in_proc_when_start_returns() {
    // start() is a fork, not a message to the OS: the child exists, as this process's child,
    // before start() returns.
    let out = run_ok("process-basics", &["start-join"]);
    let started = &out.one("started")["data"];
    assert_eq!(started["in_proc"], true, "{started}");
    assert_eq!(started["ppid"].as_i64(), Some(out.pid as i64), "{started}");
}
