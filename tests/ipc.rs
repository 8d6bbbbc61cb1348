//! ipc: do the notes' claims about pipes, shared memory and files hold on the real kernel? A
//! pipe has no lock (torn messages, interleaved big writes) and a lock fixes it; end-of-file
//! needs every write end closed; two programs joined by a pipe hold one inode; a duplex pipe
//! talks both ways; a shared counter loses updates without a lock and none with one or with an
//! atomic; a file too, slower; and Ctrl-C and bad flags.

mod support;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Demo, Output, pid_of, run_ok};

const BIN: &str = "ipc";

/// The one event named `name` whose `data[key]` is `value`.
fn where_<'a>(out: &'a Output, name: &str, key: &str, value: impl Into<Value>) -> &'a Value {
    let value = value.into();
    let found: Vec<&Value> =
        out.named(name).into_iter().filter(|e| e["data"][key] == value).collect();
    if found.len() != 1 {
        out.fail(&format!(
            "expected one {name:?} event with {key} = {value}, found {}",
            found.len()
        ));
    }
    &found[0]["data"]
}

fn count(data: &Value, key: &str) -> u64 {
    data[key].as_u64().unwrap_or_else(|| panic!("no count {key} in {data}"))
}

/// Where `/proc/PID/fd/N` points.
fn link(pid: i32, fd: &Value) -> String {
    let path = format!("/proc/{pid}/fd/{}", fd.as_i64().unwrap());
    std::fs::read_link(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn two_readers_without_a_lock_tear_messages_and_with_one_tear_none() {
    let out = run_ok(BIN, &["torn"]);
    let without = where_(&out, "torn_summary", "lock", false);
    let with = where_(&out, "torn_summary", "lock", true);
    // The readers met between header and body: tearing is certain, whatever the load.
    assert!(count(without, "torn") > 0, "{without}");
    assert_eq!(count(without, "torn") + count(without, "whole"), count(without, "messages"));
    assert_eq!(count(with, "torn"), 0, "{with}");
    assert_eq!(count(with, "whole"), count(with, "messages"), "{with}");
}

#[test]
fn big_writes_interleave_without_a_lock_and_never_with_one() {
    let out = run_ok(BIN, &["torn", "--big", "2"]);
    let without = where_(&out, "interleaved_summary", "lock", false);
    let with = where_(&out, "interleaved_summary", "lock", true);
    assert!(count(without, "interleaved") > 0, "{without}");
    assert_eq!(count(with, "interleaved"), 0, "{with}");
    assert_eq!(count(with, "messages"), 4);
    // With the lock, the second writer waited in flock(2), not in write(2).
    let blocked = where_(&out, "writers_blocked", "lock", true);
    assert_eq!(blocked["b"]["doing"]["syscall"], "flock", "{blocked}");
    assert_eq!(blocked["a"]["doing"]["syscall"], "write", "{blocked}");
}

#[test]
fn the_eof_hang_ends_at_its_deadline_and_the_fixed_reader_gets_eof() {
    let out = run_ok(BIN, &["pipe", "--deadline-ms", "100"]);
    let hang = &out.one("eof_hang")["data"];
    assert_eq!(hang["state"], "S", "{hang}");
    assert_eq!(hang["syscall"], "read", "{hang}");
    assert!(!hang["own_write_fds"].as_array().unwrap().is_empty(), "it holds a write end: {hang}");
    assert_eq!(out.one("eof_hang_ended")["data"]["exitcode"], -15, "terminated at the deadline");
    // The hung reader never printed eof; the fixed one did, after every line.
    let eof = out.one("eof");
    assert_eq!(eof["who"], "reader-2");
    assert_eq!(eof["data"]["lines"], 3);
    assert_eq!(out.one("eof_fixed")["data"]["exitcode"], 0);
}

#[test]
fn the_hung_reader_sleeps_in_read_holding_a_write_end_and_ps_and_grep_share_one_pipe_inode() {
    let mut demo = Demo::start(BIN, &["pipe", "--json", "--hold", "2"]);
    // The first pause: the reader that never sees end-of-file.
    let hang = demo.wait_event("eof_hang")["data"].clone();
    let reader = pid_of(&hang["pid"]);
    assert_eq!(support::ps::state_of(reader), Some('S'));
    let pipe = hang["pipe"].as_str().unwrap().to_string();
    for fd in hang["own_write_fds"].as_array().unwrap() {
        assert_eq!(link(reader, fd), pipe, "the reader's own write end is the same pipe");
    }
    // The second pause: ps-aux and grep, both alive at the start gate.
    let same = demo.wait_event("same_pipe")["data"].clone();
    let (writer, grep) = (pid_of(&same["writer"]["pid"]), pid_of(&same["reader"]["pid"]));
    let ends = |side: &str| same[side]["ends"].as_array().unwrap().clone();
    let (w, r) = (ends("writer"), ends("reader"));
    assert_eq!((w.len(), r.len()), (1, 1), "one end each: {same}");
    assert_eq!((w[0]["mode"].as_str(), r[0]["mode"].as_str()), (Some("w"), Some("r")));
    let (wl, rl) = (link(writer, &w[0]["fd"]), link(grep, &r[0]["fd"]));
    assert!(wl.starts_with("pipe:["), "{wl}");
    assert_eq!(wl, rl, "both children's descriptors name the same pipe inode");
    assert!(same["parent_ends"].as_array().unwrap().is_empty(), "the demo keeps none: {same}");
    let out = demo.finish();
    out.assert_code(0).assert_nothing_left();
    assert!(!out.named("grep_match").is_empty(), "grep finds the demo itself");
}

#[test]
fn both_ends_of_a_duplex_pipe_send_and_receive() {
    let out = run_ok(BIN, &["duplex"]);
    let ends = &out.one("pipe_ends")["data"];
    let (a, b) = (ends["parent_end"]["link"].as_str().unwrap(), ends["child_end"]["link"].as_str());
    assert!(a.starts_with("socket:["), "{ends}");
    assert_ne!(Some(a), b, "a socketpair is two sockets");
    let pings: Vec<u64> =
        out.named("ping").iter().map(|e| e["data"]["answer"]["pong"].as_u64().unwrap()).collect();
    assert_eq!(pings, [1, 2, 3, 4, 5]);
    assert_eq!(out.one("pong_eof")["data"]["answered"], 5);
    assert_eq!(out.one("one_way")["data"]["errno"], libc::EBADF);
}

#[test]
fn the_shared_counter_is_exact_with_a_lock_or_atomic_and_short_without() {
    let out = run_ok(BIN, &["shared-memory", "--increments", "500"]);
    let expected = 4 * 500;
    let no_lock = where_(&out, "counter", "way", "shm-no-lock");
    assert_eq!(count(no_lock, "expected"), expected);
    assert!(count(no_lock, "value") < expected, "updates lost: {no_lock}");
    assert_eq!(count(where_(&out, "counter", "way", "shm-lock"), "value"), expected);
    assert_eq!(count(where_(&out, "counter", "way", "shm-atomic"), "value"), expected);
}

#[test]
fn spawned_children_map_the_same_memfd_each_at_its_own_address() {
    let out = run_ok(BIN, &["shared-memory", "--increments", "100", "--start-method", "spawn"]);
    let maps = out.named("mapped");
    assert_eq!(maps.len(), 5, "the parent and four children");
    let parent = maps.iter().find(|e| e["data"]["parent"] == true).expect("the parent's map");
    let inode = &parent["data"]["inode"];
    assert!(inode.as_u64().is_some(), "{parent}");
    for m in &maps {
        assert_eq!(&m["data"]["inode"], inode, "the same memfd: {m}");
        assert!(m["data"]["maps"].as_str().unwrap().contains("/memfd:ipc-counter"), "{m}");
        if m != parent {
            assert_ne!(m["data"]["addr"], parent["data"]["addr"], "its own address: {m}");
        }
    }
    let lock = where_(&out, "counter", "way", "shm-lock");
    assert_eq!(count(lock, "value"), count(lock, "expected"));
}

#[test]
fn the_file_counter_is_exact_under_flock_and_short_without() {
    let out = run_ok(BIN, &["file", "--increments", "100", "--processes", "3"]);
    // Without the lock the count is wrong: short (lost updates, reads of an emptied file) or,
    // when two writes of different lengths overlap ("100", then "99" over it: "990"), beyond.
    let no_lock = where_(&out, "counter", "way", "file-no-lock");
    assert_ne!(count(no_lock, "value"), 300, "{no_lock}");
    assert_eq!(count(where_(&out, "counter", "way", "file-lock"), "value"), 300);
    let rows = out.named("table_row");
    assert_eq!(rows.len(), 4, "pipe, shared memory with a lock, atomic, file");
    assert!(rows.iter().all(|r| r["data"]["exact"] == true));
}

#[test]
fn every_part_runs_with_the_spawn_start_method() {
    let out =
        run_ok(BIN, &["--start-method", "spawn", "--increments", "50", "--deadline-ms", "50"]);
    let sections = out.named("section");
    assert_eq!(sections.len(), 5, "the tour has five parts");
    assert!(count(where_(&out, "torn_summary", "lock", false), "torn") > 0);
    assert_eq!(out.one("eof")["data"]["lines"], 3);
}

#[test]
fn ctrl_c_while_two_writers_sleep_on_a_full_pipe_leaves_nothing() {
    let mut demo = Demo::start(BIN, &["torn", "--json", "--hold", "60"]);
    let blocked = demo.wait_event("writers_blocked")["data"].clone();
    demo.wait_event("hold");
    // The kernel's own word: both writers asleep, the pipe full.
    for side in ["a", "b"] {
        let pid = pid_of(&blocked[side]["pid"]);
        assert_eq!(support::ps::state_of(pid), Some('S'), "{side}: {blocked}");
        assert_eq!(support::ps::stat(pid).unwrap().ppid, demo.pid());
    }
    demo.signal_group(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();
}

#[test]
fn ctrl_c_to_the_parent_alone_reaps_the_reader_that_waits_for_ever() {
    let mut demo = Demo::start(BIN, &["pipe", "--json", "--hold", "60"]);
    demo.wait_event("eof_hang");
    demo.wait_event("hold");
    demo.signal(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();
}

#[test]
fn a_bad_flag_exits_2_and_names_it() {
    for (args, flag) in [
        (&["torn", "--readers", "1"][..], "--readers"),
        (&["shared-memory", "--processes", "17"][..], "--processes"),
        (&["pipe", "--messages", "0"][..], "--messages"),
        (&["file", "--increments", "1000001"][..], "--increments"),
    ] {
        let out = support::run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        assert!(out.stderr.contains(flag), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn a_child_killed_at_a_random_moment_is_reported_and_nothing_is_left() {
    let parts: &[&[&str]] = &[
        &["torn"],
        &["shared-memory", "--increments", "20000"],
        &["file", "--increments", "200"],
        &["duplex", "--round-trips", "5000"],
        &["pipe", "--deadline-ms", "200"],
    ];
    let within = std::time::Duration::from_millis(400);
    let bound = std::time::Duration::from_secs(30);
    support::kill_random_children(BIN, parts, 3, within, bound, 17);
}

/// The reader that kept a write end never sees end-of-file (the demo fails otherwise): "no" is
/// right, "yes" wrong. The unlocked shared counter: the guess is judged against the run's own
/// `counter` event.
#[test]
fn are_guesses_of_the_eof_and_the_unlocked_count_judged_against_the_run() {
    for (guess, right) in [("no", true), ("yes", false)] {
        let given = format!("eof={guess}");
        let out = run_ok(BIN, &["pipe", "--deadline-ms", "100", "--answer", &given]);
        let a = &out.answer("eof")["data"];
        assert_eq!((a["actual"].as_str(), a["right"].as_bool()), (Some("no"), Some(right)), "{a}");
    }
    let out =
        run_ok(BIN, &["shared-memory", "--increments", "500", "--answer", "unlocked-exact=lost"]);
    let unlocked = where_(&out, "counter", "way", "shm-no-lock");
    let lost = count(unlocked, "lost") > 0;
    let a = &out.answer("unlocked-exact")["data"];
    let actual = if lost { "lost" } else { "exact" };
    assert_eq!((a["actual"].as_str(), a["right"].as_bool()), (Some(actual), Some(lost)), "{a}");
    assert!(run_ok(BIN, &["pipe", "--deadline-ms", "100"]).named("question").is_empty());
}
