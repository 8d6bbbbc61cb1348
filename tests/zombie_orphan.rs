//! zombie-orphan: what the kernel shows for zombies, orphans and process states. Each claim is
//! checked in `/proc` by the test itself while the demo holds the moment (`--hold`).

mod support;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;
use support::{DEADLINE, Demo, Output, pid_of, ps, wait_until};

const BIN: &str = "zombie-orphan";
/// Seconds the demo holds the moment a test inspects. The test reads `/proc` right after the
/// `hold` event, so this only has to outlast a scheduling delay on a loaded machine.
const HOLD: &str = "4";

/// One test makes this test process a child subreaper; while it does, no other test runs.
static SUBREAPER_MODE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SUBREAPER_MODE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SUBREAPER_MODE.write().unwrap_or_else(|e| e.into_inner())
}

fn data(event: &Value) -> &Value {
    &event["data"]
}

/// The state letter and parent of `pid` as `/proc/PID/stat` shows them now.
fn state_and_ppid(pid: i32) -> Option<(char, i32)> {
    ps::stat(pid).map(|i| (i.state, i.ppid))
}

/// True once that very process (pid and start time) has no entry in `/proc` any more.
fn gone(pid: i32, start: Option<u64>) -> bool {
    start.is_none() || ps::start_ticks(pid) != start
}

#[test]
fn a_child_that_ended_is_z_until_its_parent_reaps_it_then_gone() {
    let _lock = shared();
    let mut demo = Demo::start(BIN, &["zombie", "--hold", HOLD, "--json"]);
    let zombie = demo.wait_event("zombie");
    let pid = pid_of(&data(&zombie)["pid"]);
    demo.wait_event("hold");
    // The test's own reading, while the demo holds: Z, and still the demo's child.
    let (state, ppid) = state_and_ppid(pid).expect("the zombie is listed in /proc");
    assert_eq!((state, ppid), ('Z', demo.pid()), "/proc/{pid}/stat while unreaped");
    assert!(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().is_empty());
    let start = ps::start_ticks(pid);
    let out = demo.finish();
    out.assert_code(0);
    let reaped = out.one("reaped");
    assert_eq!(pid_of(&data(reaped)["pid"]), pid);
    assert_eq!(data(reaped)["exitcode"], 3, "the zombie kept the exit status for its parent");
    assert!(gone(pid, start), "/proc/{pid} still lists the child after it was reaped");
    out.assert_nothing_left();
}

#[test]
fn n_children_that_ended_unreaped_are_n_zombies_each_holding_a_pid() {
    let _lock = shared();
    let n = 4;
    let mut demo = Demo::start(BIN, &["many", "--count", &n.to_string(), "--hold", HOLD, "--json"]);
    let zombies = demo.wait_event("zombies");
    demo.wait_event("hold");
    let pids: Vec<i32> =
        data(&zombies)["pids"].as_array().expect("pids").iter().map(pid_of).collect();
    assert_eq!(pids.len(), n);
    let starts: Vec<Option<u64>> = pids.iter().map(|p| ps::start_ticks(*p)).collect();
    let z_children =
        ps::children_of(demo.pid()).into_iter().filter(|p| ps::state_of(*p) == Some('Z')).count();
    assert_eq!(z_children, n, "Z rows under the demo");
    for pid in &pids {
        assert_eq!(state_and_ppid(*pid), Some(('Z', demo.pid())), "/proc/{pid}/stat");
        // The pid is taken: signal 0 reaches a zombie.
        assert!(nix::sys::signal::kill(Pid::from_raw(*pid), None).is_ok(), "kill({pid}, 0)");
    }
    let out = demo.finish();
    out.assert_code(0);
    assert_eq!(out.named("reaped").len(), n);
    assert_eq!(data(out.one("all_reaped"))["count"], n);
    for (pid, start) in pids.iter().zip(starts) {
        assert!(gone(*pid, start), "zombie {pid} still listed after reaping");
    }
    out.assert_nothing_left();
}

/// The first event named `name`, whether it was already read or is still to come.
fn seen_or_wait(demo: &mut Demo, name: &str) -> Value {
    match demo.events().iter().find(|e| e["event"] == name) {
        Some(event) => event.clone(),
        None => demo.wait_event(name),
    }
}

/// Runs `orphan` in the default mode and checks the adoption in /proc; returns the output.
fn orphan_is_adopted_by_the_launcher(method: &str) -> Output {
    let mut demo =
        Demo::start(BIN, &["orphan", "--hold", HOLD, "--start-method", method, "--json"]);
    // The middle process and the orphan print concurrently: either event may come first.
    let middle = seen_or_wait(&mut demo, "parent_started");
    let middle_pid = pid_of(&middle["pid"]);
    let started = seen_or_wait(&mut demo, "orphan_started");
    let orphan = pid_of(&started["pid"]);
    assert_eq!(pid_of(&data(&started)["ppid"]), middle_pid, "the orphan's parent before");
    // The first hold: the first parent is still alive, and /proc says it is the parent.
    let first = seen_or_wait(&mut demo, "first_parent");
    assert_eq!(pid_of(&data(&first)["ppid"]), middle_pid, "the demo's reading before");
    let hold = seen_or_wait(&mut demo, "hold");
    let held: Vec<i32> = data(&hold)["pids"].as_array().expect("pids").iter().map(pid_of).collect();
    assert_eq!(held, [demo.pid(), middle_pid, orphan], "the first hold names all three");
    assert_eq!(state_and_ppid(orphan).map(|s| s.1), Some(middle_pid), "/proc during hold 1");
    assert!(ps::stat(middle_pid).is_some_and(|i| i.state != 'Z'), "the first parent is alive");
    // The second hold: adopted.
    let reparented = demo.wait_event("reparented");
    assert_eq!(pid_of(&data(&reparented)["after"]), demo.pid(), "the orphan's parent after");
    demo.wait_event("hold");
    let (state, ppid) = state_and_ppid(orphan).expect("the orphan is listed in /proc");
    assert_eq!(ppid, demo.pid(), "/proc/{orphan}/stat: adopted by the launcher (a subreaper)");
    assert_eq!(state, 'S', "an orphan is alive (blocked on its link), not a zombie");
    let middle_still_there =
        ps::stat(middle_pid).is_some_and(|i| i.ppid == demo.pid() && i.comm == "orphan-parent");
    assert!(!middle_still_there, "the orphan's first parent {middle_pid} has ended and was reaped");
    let start = ps::start_ticks(orphan);
    let out = demo.finish();
    out.assert_code(0);
    let reaped = out.named("reaped");
    let reaped_orphan = reaped
        .iter()
        .find(|e| pid_of(&data(e)["pid"]) == orphan)
        .unwrap_or_else(|| out.fail("no reaped event for the orphan"));
    assert_eq!(data(reaped_orphan)["exitcode"], 0);
    assert!(gone(orphan, start), "the orphan {orphan} is still listed after its reaping");
    out.assert_nothing_left();
    out
}

#[test]
fn an_orphan_is_adopted_by_the_subreaper_launcher_and_reaped_by_it() {
    let _lock = shared();
    orphan_is_adopted_by_the_launcher("fork");
}

#[test]
fn an_orphan_started_with_spawn_is_adopted_the_same_way() {
    let _lock = shared();
    orphan_is_adopted_by_the_launcher("spawn");
}

/// Makes this test process a child subreaper while alive.
struct SubreaperOn;

impl SubreaperOn {
    fn new() -> SubreaperOn {
        assert!(common::signals::set_child_subreaper(true), "prctl(PR_SET_CHILD_SUBREAPER)");
        SubreaperOn
    }
}

impl Drop for SubreaperOn {
    fn drop(&mut self) {
        common::signals::set_child_subreaper(false);
    }
}

/// Waits (with the deadline) for our adopted child `pid` to end and reaps it.
fn reap_adopted(pid: i32) -> WaitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return status,
            Err(e) => panic!("waitpid({pid}) in the test: {e}"),
        }
        assert!(Instant::now() < deadline, "orphan {pid} did not end");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn without_the_subreaper_the_orphan_goes_to_the_nearest_subreaper_above_the_demo() {
    // The test process itself becomes that nearest subreaper, so the outcome is known here
    // whatever PID 1 is; and only a parent can reap, so waitpid succeeding proves the adoption.
    let _lock = exclusive();
    support::bin(BIN); // build before the switch: cargo's own children must not come here
    let me = std::process::id() as i32;
    let _subreaper = SubreaperOn::new();
    let mut demo = Demo::start(BIN, &["orphan", "--no-subreaper", "--hold", HOLD, "--json"]);
    let reparented = demo.wait_event("reparented");
    let orphan = pid_of(&reparented["pid"]);
    assert_eq!(pid_of(&data(&reparented)["after"]), me, "the nearest subreaper: this test");
    assert_eq!(data(&reparented)["after_is_launcher"], false);
    assert_eq!(ps::stat(orphan).map(|i| i.ppid), Some(me), "/proc/{orphan}/stat ppid");
    demo.wait_event("hold");
    match reap_adopted(orphan) {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("the orphan ended with {other:?}"),
    }
    let out = demo.finish();
    out.assert_code(0);
    let gone_event = out.one("orphan_gone");
    assert_eq!(pid_of(&data(gone_event)["reaper"]), me);
    out.assert_nothing_left();
}

#[test]
fn busy_sleeping_stopped_and_ended_children_show_r_s_t_and_z() {
    let _lock = shared();
    let mut demo = Demo::start(BIN, &["states", "--hold", HOLD, "--json"]);
    let states = demo.wait_event("states");
    demo.wait_event("hold");
    let children = data(&states)["children"].as_array().expect("children").clone();
    assert_eq!(children.len(), 4);
    for (role, want) in [("busy", 'R'), ("sleeper", 'S'), ("stopped", 'T'), ("zombie", 'Z')] {
        let child = children
            .iter()
            .find(|c| c["role"] == role)
            .unwrap_or_else(|| demo.fail(&format!("no child with role {role}")));
        let pid = pid_of(&child["pid"]);
        wait_until(&format!("{role} {pid} shows {want} in /proc"), || {
            state_and_ppid(pid) == Some((want, demo.pid()))
        });
    }
    let out = demo.finish();
    out.assert_code(0);
    let resumed = out.one("resumed");
    assert_ne!(data(resumed)["state"], "T", "SIGCONT resumed the stopped child");
    assert_eq!(out.named("reaped").len(), 4);
    out.assert_nothing_left();
}

#[test]
fn reaping_on_sigchld_keeps_every_status_and_ignoring_sigchld_never_shows_z() {
    let _lock = shared();
    let out = support::run(BIN, &["cures", "--children", "3", "--json"]);
    out.assert_code(0);
    let reaper = data(out.one("sigchld_reaper"));
    let codes: Vec<i64> = reaper["reaped"]
        .as_array()
        .expect("reaped")
        .iter()
        .map(|r| r["exitcode"].as_i64().expect("an exit status"))
        .collect();
    let mut sorted = codes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [11, 12, 13], "every exit status collected on SIGCHLD");
    assert!(reaper["signals"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(reaper["zombies_left"], 0);

    let ignored = data(out.one("sigchld_ignored"));
    assert_eq!(ignored["z_seen"], 0, "with SIGCHLD ignored no Z is ever seen");
    assert!(ignored["samples"].as_u64().unwrap_or(0) > 0, "the demo did look");
    assert!(ignored["exitcodes"].as_array().expect("exitcodes").iter().all(Value::is_null));
    assert!(ignored["waitpid"].as_str().unwrap_or("").contains("ECHILD"));
    out.assert_nothing_left();
}

#[test]
fn ctrl_c_to_the_whole_group_during_the_hold_leaves_no_zombie_and_no_orphan() {
    let _lock = shared();
    for part in [&["zombie"][..], &["many", "--count", "3"], &["orphan"], &["states"]] {
        Demo::ctrl_c_at_hold(BIN, part, true);
    }
}

#[test]
fn ctrl_c_to_the_parent_alone_during_the_hold_leaves_no_zombie_and_no_orphan() {
    let _lock = shared();
    for part in [&["zombie"][..], &["many", "--count", "3"], &["orphan"], &["states"]] {
        Demo::ctrl_c_at_hold(BIN, part, false);
    }
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let _lock = shared();
    for (args, names) in [
        (&["many", "--count", "0"][..], "--count"),
        (&["many", "--count", "100000"], "--count"),
        (&["--hold=-1"], "--hold"),
        (&["states", "--hold", "soon"], "--hold"),
        (&["orphan", "--bogus"], "--bogus"),
        (&["nosuchpart"], "nosuchpart"),
    ] {
        let out = support::run(BIN, args);
        out.assert_code(2);
        assert!(out.stderr.contains(names), "{args:?}: stderr should name {names}: {}", out.stderr);
        out.assert_nothing_left();
    }
}

#[test]
fn the_tour_runs_every_part_and_leaves_nothing_behind() {
    let _lock = shared();
    let out = support::run(BIN, &["--json"]);
    out.assert_code(0);
    for event in ["zombie", "sigchld_reaper", "sigchld_ignored", "zombies", "adopted", "states"] {
        out.one(event);
    }
    assert_eq!(out.named("section").len(), 6);
    out.assert_nothing_left();
}

/// Whatever child is killed (SIGKILL, at a random moment of any part), does the demo still end
/// within a bound, reap everyone, and, when it exits 1, say which child was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let _lock = shared();
    let parts: &[&[&str]] = &[&["zombie"], &["cures"], &["many"], &["orphan"], &["states"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(60), ms(20_000), 15);
}

/// Can a typo in a count start thousands of processes? No: every count flag has a cap, given
/// in --help, and beyond it the demo exits 2 before anything starts.
#[test]
fn every_count_flag_has_a_cap_and_beyond_it_nothing_starts() {
    let _lock = shared();
    support::assert_capped(BIN, &["cures"], "--children", 64);
    support::assert_capped(BIN, &["many"], "--count", 256);
}

#[test]
fn is_a_guess_of_the_orphans_new_parent_judged_against_its_ppid_in_proc() {
    let _lock = shared();
    // The demo is a child subreaper: the orphan is handed to it, never to PID 1.
    let wrong = support::answer_of(BIN, &["orphan"], "new-parent", "init");
    assert_eq!(wrong["data"]["actual"], "demo", "{wrong}");
    assert_eq!(wrong["data"]["right"], false, "{wrong}");
    let right = support::answer_of(BIN, &["orphan"], "new-parent", "demo");
    assert_eq!(right["data"]["right"], true, "{right}");
    // SIGCHLD ignored: no exit status is left to read.
    let statuses = support::answer_of(BIN, &["cures", "--children", "2"], "statuses", "2");
    assert_eq!(
        (&statuses["data"]["actual"], &statuses["data"]["right"]),
        (&0.into(), &false.into())
    );
}
