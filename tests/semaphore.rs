//! semaphore: Semaphore(3) and ten people as threads and as processes, one release too many,
//! a holder killed inside (ours gives the place back, sem_open's loses it), the sleepers' state
//! in /proc, Ctrl-C and bad flags; checked from `--json` events and from `/proc`.

mod support;

use std::collections::HashSet;

use serde_json::Value;
use support::{Demo, Output, pid_of, ps, run_ok};

const BIN: &str = "semaphore";

/// The only event named `name` whose `data.kind` is `kind`.
fn of_kind<'a>(out: &'a Output, name: &str, kind: &str) -> &'a Value {
    let found: Vec<&Value> =
        out.named(name).into_iter().filter(|e| e["data"]["kind"] == kind).collect();
    if found.len() != 1 {
        out.fail(&format!("expected one {name:?} event of kind {kind:?}, found {}", found.len()));
    }
    found[0]
}

/// Checks the rooms of one run: the counter taken inside never passed the places, and every
/// person got in exactly once.
fn assert_rooms(out: &Output, kind: &str, people: usize, places: usize) {
    let rooms = of_kind(out, "rooms", kind);
    assert_eq!(rooms["data"]["held"], true, "{kind}: {rooms}");
    assert!(rooms["data"]["max_inside"].as_u64().unwrap() <= places as u64, "{kind}: {rooms}");
    assert_eq!(rooms["data"]["entered"], people, "{kind}: all {people} got in");
}

#[test]
fn are_ten_threads_never_more_than_three_inside_and_do_all_ten_get_in() {
    let out = run_ok(BIN, &["threads", "--speed", "40"]);
    assert_rooms(&out, "threads", 10, 3);
    let enters = out.named("enter");
    assert_eq!(enters.len(), 10);
    let people: HashSet<&str> = enters.iter().map(|e| e["thread"].as_str().unwrap()).collect();
    assert_eq!(people.len(), 10, "ten distinct threads got in: {people:?}");
    for e in &enters {
        assert_eq!(pid_of(&e["pid"]), out.pid, "a person is a thread of the demo");
        assert!(e["data"]["inside"].as_u64().unwrap() <= 3, "{e}");
    }
    // The thread table: ten person threads, named so the kernel shows them.
    let table = out.one("threads");
    let names: Vec<&str> = table["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["comm"].as_str())
        .collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("person-")).count(), 10, "{names:?}");
}

#[test]
fn is_a_semaphore_of_one_place_a_lock_with_one_inside_at_a_time() {
    let out = run_ok(BIN, &["threads", "--places", "1", "--people", "4", "--speed", "40"]);
    assert_rooms(&out, "threads", 4, 1);
    assert_eq!(of_kind(&out, "rooms", "threads")["data"]["max_inside"], 1);
}

#[test]
fn does_a_bounded_semaphore_refuse_one_release_too_many_where_a_semaphore_grows() {
    let out = run_ok(BIN, &["bounded"]);
    let plain = of_kind(&out, "extra_release", "Semaphore");
    assert_eq!(plain["data"]["value"], 4, "Semaphore(3) grew silently: {plain}");
    assert_eq!(plain["data"]["fits"], 4);
    assert!(plain["data"]["error"].is_null());
    let bounded = of_kind(&out, "extra_release", "BoundedSemaphore");
    let error = bounded["data"]["error"].as_str().unwrap();
    assert!(error.starts_with("ValueError: Semaphore released too many times"), "{error}");
    assert_eq!(bounded["data"]["value"], 3, "the refused release changed nothing");
    assert_eq!(bounded["data"]["fits"], 3);
}

/// Part 3 in full, with every start method: ten processes, three places; then a holder killed
/// inside: ours gives its place to the late-comer and tells it whose it was; sem_open's keeps
/// it lost, its value one low for good; and no name is left in /dev/shm.
#[test]
fn does_a_killed_holders_place_come_back_with_ours_and_stay_lost_with_sem_open() {
    for method in ["fork", "spawn", "forkserver"] {
        let out = run_ok(BIN, &["processes", "--speed", "40", "--start-method", method]);
        assert_rooms(&out, "processes", 10, 3);
        let enters = out.named("enter");
        let pids: HashSet<i32> = enters.iter().map(|e| pid_of(&e["pid"])).collect();
        assert_eq!(pids.len(), 10, "{method}: ten person processes got in");
        if method != "forkserver" {
            // (A forkserver's children are the fork server's.)
            assert!(enters.iter().all(|e| pid_of(&e["ppid"]) == out.pid), "{method}: children");
        }

        let killed = out.named("killed");
        assert_eq!(killed.len(), 2, "{method}: one holder killed per kind");
        for k in &killed {
            assert_eq!(k["data"]["exitcode"], -9, "{method}: killed by SIGKILL: {k}");
        }
        let ours = of_kind(&out, "after_kill", "ours");
        assert_eq!(ours["data"]["late_comer_got_in"], true, "{method}: {ours}");
        assert_eq!(ours["data"]["value"], 3, "{method}: the place came back: {ours}");
        let entered = of_kind(&out, "entered", "ours");
        assert_eq!(
            entered["data"]["recovered_from"], killed[0]["data"]["pid"],
            "{method}: the late-comer is told whose place it got"
        );

        let posix = of_kind(&out, "after_kill", "posix");
        assert_eq!(posix["data"]["late_comer_got_in"], false, "{method}: {posix}");
        assert_eq!(posix["data"]["value"], 2, "{method}: sem_open's place is lost: {posix}");
        of_kind(&out, "gave_up", "posix");
        let created = out.one("posix_created");
        assert_eq!(created["data"]["exists"], true, "{method}: visible in /dev/shm meanwhile");
        let path = created["data"]["path"].as_str().unwrap();
        assert!(!std::path::Path::new(path).exists(), "{method}: {path} was left behind");
    }
}

/// With `--hold`, the demo pauses with every place held and the late-comer asleep: /proc says
/// `S` for all of them, asleep in a futex. Then Ctrl-C, to the group or to the demo alone,
/// stops and reaps every child: exit 130, nothing left.
#[test]
fn are_the_holders_and_the_late_comer_seen_asleep_in_s_and_does_ctrl_c_leave_nothing() {
    for (to_group, method) in [(true, "fork"), (false, "spawn")] {
        let args =
            ["processes", "--json", "--speed", "40", "--hold", "60", "--start-method", method];
        let mut demo = Demo::start(BIN, &args);
        let hold = demo.wait_event("hold");
        let pids: Vec<i32> = hold["data"]["pids"].as_array().unwrap().iter().map(pid_of).collect();
        assert_eq!(pids.len(), 4, "three holders and the late-comer: {hold}");
        for &pid in &pids {
            let p = ps::stat(pid).unwrap_or_else(|| demo.fail(&format!("{pid} is gone")));
            assert_eq!(p.state, 'S', "{} (pid {pid}) sleeps", p.comm);
            assert_eq!(p.ppid, demo.pid());
            let wchan = support::ps::wchan(pid);
            assert!(wchan.contains("futex"), "{} sleeps in a futex, not in {wchan:?}", p.comm);
        }
        let late = ps::stat(*pids.last().unwrap()).unwrap();
        assert_eq!(late.comm, "late-comer");
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        let name = format!("/dev/shm/sem.semaphore-demo-{}", out.pid);
        assert!(!std::path::Path::new(&name).exists(), "{name} was left behind");
    }
}

#[test]
fn does_ctrl_c_in_the_thread_part_end_the_demo_with_130() {
    Demo::ctrl_c_at(BIN, &["threads", "--json", "--hold", "60"], "hold", true);
}

#[test]
fn are_counts_out_of_range_usage_errors_naming_the_flag() {
    support::assert_usage_errors(
        BIN,
        "threads",
        &[("--people", "0"), ("--people", "101"), ("--places", "0"), ("--places", "65")],
    );
}

#[test]
fn does_the_tour_run_all_three_parts_and_leave_nothing_behind() {
    let out = run_ok(BIN, &["--speed", "40"]);
    assert_eq!(out.named("section").len(), 3);
    assert_eq!(out.named("rooms").len(), 2);
}

/// Whatever child is killed (SIGKILL, at a random moment of the processes part: a person, a
/// holder, a late-comer), does the demo still end within a bound, reap everyone, and, when it
/// exits 1, say which child was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] = &[&["processes", "--speed", "40"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(600), ms(20_000), 18);
}

#[test]
fn does_the_timeline_draw_one_lane_per_person_thread_with_its_time_inside() {
    let out = run_ok(BIN, &["threads", "--timeline", "--speed", "40"]);
    let timeline = out.one("timeline");
    let lanes = timeline["data"]["lanes"].as_array().unwrap();
    let people: HashSet<i64> = lanes
        .iter()
        .filter(|l| l["who"].as_str().unwrap_or_default().starts_with("person-"))
        .map(|l| l["tid"].as_i64().unwrap())
        .collect();
    assert_eq!(people.len(), 10, "one lane per person thread: {lanes:?}");
    assert!(timeline["data"]["text"].as_str().unwrap().contains('#'));
}

#[test]
fn is_a_guess_of_the_places_after_one_release_too_many_judged_against_the_run() {
    // Semaphore(3) after one release too many: four acquire(blocking=False) succeed, read back
    // from the run's own event; one fewer is wrong.
    let out = run_ok(BIN, &["bounded", "--answer", "extra-release=3"]);
    let fits = of_kind(&out, "extra_release", "Semaphore")["data"]["fits"].as_u64().unwrap();
    let a = &out.answer("extra-release")["data"];
    assert_eq!((a["actual"].as_u64(), a["right"].as_bool()), (Some(fits), Some(fits == 3)), "{a}");
    let out = run_ok(BIN, &["bounded", "--answer", &format!("extra-release={fits}")]);
    assert_eq!(out.answer("extra-release")["data"]["right"], true);
    // Without --predict or --answer, no question is asked.
    assert!(run_ok(BIN, &["bounded"]).named("question").is_empty());
}
