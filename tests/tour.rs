//! `make tour`: the demos in the notes' order, one part at a time, a summary at the end;
//! Ctrl-C leaves nothing behind; and the README stays a map whose every row has a guide.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{Demo, bin, run, run_ok};

/// The demos the tour test runs: every demo whose parts are in the tour (a demo missing from
/// this list would be skipped by `--only`, and the test would say nothing about it).
const DEMOS: &[&str] = &[
    "multiprogramming",
    "fork-vs-spawn",
    "process-basics",
    "zombie-orphan",
    "daemon",
    "mutex-ticket",
    "joinable-queue",
    "threads",
    "deadlock",
    "thread-queue",
    "pool",
    "coroutine",
];

/// The part numbers of the tour's `part` events, in the order they came.
fn numbers(events: &[&Value]) -> Vec<u64> {
    events.iter().map(|e| e["data"]["number"].as_u64().expect("a part number")).collect()
}

#[test]
fn the_tour_runs_every_part_in_the_notes_order_and_leaves_nothing() {
    for demo in DEMOS {
        bin(demo);
    }
    let only = DEMOS.join(",");
    let listed = run_ok("tour", &["--list", "--only", &only]);
    let planned = numbers(&listed.named("part"));
    assert!(planned.len() >= DEMOS.len(), "{planned:?}");
    let out = run_ok("tour", &["--only", &only, "--predict", "--speed", "50"]);
    // The demos' own events are on the same stdout; the tour's are those of pid = the tour.
    let tour_pid = out.pid as i64;
    let mine = |name: &str| -> Vec<&Value> {
        out.named(name).into_iter().filter(|e| e["pid"] == tour_pid).collect()
    };
    let ran = numbers(&mine("part"));
    assert_eq!(ran, planned, "every part, in the notes' order");
    assert!(ran.windows(2).all(|w| w[0] < w[1]), "{ran:?}");
    for done in mine("part_done") {
        assert_eq!(done["data"]["ended"], true, "{done}");
    }
    let summary = &mine("summary")[0]["data"];
    assert_eq!((summary["failed"].clone(), summary["skipped"].clone()), (0.into(), 0.into()));
    // Without a terminal the questions were asked and answered as events, and nothing waited.
    assert!(summary["no_guess"].as_u64().unwrap_or(0) >= 5, "{summary}");
    let questions = out.named("question");
    assert!(questions.iter().all(|q| q["data"]["waiting"] == false), "{questions:?}");
    // The parts' files (mutex-ticket's copies of db.json) lived in the tour's folder, now gone.
    let scratch = std::env::temp_dir().join(format!("tour-{}", out.pid));
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
}

#[test]
fn from_starts_at_that_demos_first_part() {
    let all = numbers(&run_ok("tour", &["--list"]).named("part"));
    let from = run_ok("tour", &["--list", "--from", "threads"]);
    let parts = from.named("part");
    assert_eq!(parts[0]["data"]["demo"], "threads", "{:?}", parts[0]);
    let rest = numbers(&parts);
    assert_eq!(rest, all[all.len() - rest.len()..].to_vec(), "the rest of the tour, in order");
    assert!(rest.len() < all.len());
    // --all adds the parts beyond the main line, in the same order.
    let every = numbers(&run_ok("tour", &["--list", "--all"]).named("part"));
    assert!(every.len() > all.len() && all.iter().all(|n| every.contains(n)));
    assert!(every.windows(2).all(|w| w[0] < w[1]), "{every:?}");
}

#[test]
fn ctrl_c_during_a_part_stops_it_and_the_tour_with_nothing_left() {
    bin("process-basics");
    for to_group in [true, false] {
        // At the notes' own speed the first part's children sleep 2 s: time to interrupt them.
        let mut tour = Demo::start("tour", &["--json", "--only", "process-basics", "--speed", "1"]);
        tour.wait_event("part");
        tour.wait_event("started");
        let out = tour.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        let scratch = std::env::temp_dir().join(format!("tour-{}", out.pid));
        assert!(!scratch.exists(), "{} was left behind", scratch.display());
        assert!(out.named("summary").is_empty(), "an interrupted tour has no summary");
    }
}

/// Ctrl-C just as the tour starts its next part (the moment the tour has said which part comes,
/// and its process is being made): the part being started is stopped and waited for too, never
/// left behind as an orphan.
#[test]
fn ctrl_c_as_a_part_is_being_started_leaves_nothing() {
    bin("process-basics");
    for trial in 0..6 {
        let mut tour =
            Demo::start("tour", &["--json", "--only", "process-basics", "--speed", "50"]);
        tour.wait_for("the second part", |e| e["event"] == "part" && e["data"]["step"] == 2);
        let out = tour.interrupt(trial % 2 == 0);
        out.assert_code(130).assert_nothing_left();
    }
}

#[test]
fn at_a_terminal_with_predict_the_tour_waits_for_each_guess_and_for_enter_between_parts() {
    bin("thread-queue");
    let mut tour =
        support::TtyDemo::start("tour", &["--only", "thread-queue", "--predict", "--speed", "50"]);
    let guess = "your guess (Enter skips): ";
    tour.wait_for(guess, 1);
    tour.type_line("2\n");
    tour.wait_for(guess, 2);
    tour.type_line("p3\n");
    tour.wait_for("press Enter for the next part", 1);
    // The second part starts only after Enter.
    let pause = tour.seen.find("press Enter for the next part").expect("the pause");
    assert!(!tour.seen[..pause].contains("thread-queue joinable (part"), "{}", tour.seen);
    tour.type_line("\n");
    let seen = tour.finish_ok();
    assert!(seen.contains("ANSWER (lifo-first): 2 (you said 2: RIGHT)"), "{seen}");
    assert!(seen.contains("ANSWER (priority-first): p1 (you said p3: wrong)"), "{seen}");
    assert!(seen.contains("guesses: 1 right, 1 wrong, 0 not made"), "{seen}");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let out = run("tour", &["--from", "no-such-demo"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--from"), "{}", out.stderr);
    let out = run("tour", &["--list", "--answer", "9"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--answer"), "{}", out.stderr);
}

/// The demo crates: the list in `crates/demos.txt` (every other crate is a library or a tool).
fn demo_crates(root: &Path) -> Vec<String> {
    let demos: Vec<String> = common::demo::demos().into_iter().map(String::from).collect();
    for demo in &demos {
        assert!(root.join("crates").join(demo).join("Cargo.toml").is_file(), "crates/{demo}");
    }
    demos
}

#[test]
fn every_demo_row_of_the_readme_links_to_its_guide_and_every_demo_has_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("reading README.md");
    let mut linked = Vec::new();
    for row in readme.lines().filter(|l| l.starts_with('|')) {
        let mut rest = row;
        while let Some(at) = rest.find("](crates/") {
            let target = &rest[at + 2..];
            let end = target.find(')').expect("a closed link");
            let path = &target[..end];
            assert!(root.join(path).is_file(), "the README links to {path}, which does not exist");
            if let Some(demo) =
                path.strip_prefix("crates/").and_then(|p| p.strip_suffix("/README.md"))
            {
                linked.push(demo.to_string());
            }
            rest = &target[end..];
        }
    }
    for demo in demo_crates(root) {
        assert!(
            root.join("crates").join(&demo).join("README.md").is_file(),
            "crates/{demo}/README.md (its guide) is missing"
        );
        assert!(linked.contains(&demo), "no README row links to crates/{demo}/README.md");
    }
}

/// `make demo-<name>` runs each demo: the Makefile names one target for every crate of
/// `crates/demos.txt`, and none for a crate that is not a demo.
#[test]
fn the_makefile_names_a_demo_target_for_exactly_the_demos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let makefile = std::fs::read_to_string(root.join("Makefile")).expect("reading Makefile");
    // A rule's targets: the words before its `:`.
    let mut named: Vec<String> = makefile
        .lines()
        .filter(|l| !l.starts_with(['\t', '#', '.']) && !l.contains(":="))
        .filter_map(|l| l.split_once(':').map(|(targets, _)| targets))
        .flat_map(str::split_whitespace)
        .filter_map(|t| t.strip_prefix("demo-"))
        .filter(|t| !["ticket", "tour"].contains(t))
        .map(String::from)
        .collect();
    named.sort();
    let mut demos = demo_crates(root);
    demos.sort();
    assert_eq!(named, demos, "the Makefile's demo-<name> targets against crates/demos.txt");
}
