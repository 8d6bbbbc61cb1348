//! `--predict` and `--answer`: a question before its reveal, judged against the run's own
//! outcome, never waiting without a terminal, and answered at a terminal (a pseudo-terminal).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{TempDir, run_ok};

/// A fresh one-ticket database in the test's own folder.
fn one_ticket(dir: &TempDir) -> String {
    let db = dir.join("db.json");
    std::fs::write(&db, "{\"count\": 1}\n").expect("writing db.json");
    db.to_string_lossy().into_owned()
}

/// The position of the first event named `name` (with `id`, for questions and answers).
fn position(events: &[Value], name: &str, id: Option<&str>) -> usize {
    events
        .iter()
        .position(|e| e["event"] == name && id.is_none_or(|id| e["data"]["id"] == id))
        .unwrap_or_else(|| panic!("no {name} event ({id:?}) in {events:#?}"))
}

#[test]
fn the_question_is_asked_before_the_race_and_answered_after_its_outcome() {
    let dir = TempDir::new("predict-order");
    let db = one_ticket(&dir);
    let out =
        run_ok("mutex-ticket", &["run", "--no-lock", "--predict", "--db", &db, "--speed", "50"]);
    let question = position(&out.events, "question", Some("oversold"));
    let first_sale = position(&out.events, "bought", None);
    let summary = position(&out.events, "summary", None);
    let answer = position(&out.events, "answer", Some("oversold"));
    assert!(
        question < first_sale && first_sale < summary && summary < answer,
        "question {question}, first sale {first_sale}, summary {summary}, answer {answer}"
    );
}

#[test]
fn without_predict_nothing_is_asked() {
    let dir = TempDir::new("predict-off");
    let db = one_ticket(&dir);
    let out = run_ok("mutex-ticket", &["run", "--no-lock", "--db", &db, "--speed", "50"]);
    assert!(out.named("question").is_empty() && out.named("answer").is_empty());
}

#[test]
fn without_a_terminal_the_question_never_waits() {
    // stdin is a pipe that stays open (the harness's), so a demo that read it would hang until
    // the test's bound: it must not read at all.
    let dir = TempDir::new("predict-pipe");
    let db = one_ticket(&dir);
    let mut demo = support::Demo::start(
        "mutex-ticket",
        &["--json", "run", "--predict", "--db", &db, "--speed", "50"],
    );
    let question = demo.wait_event("question");
    assert_eq!(question["data"]["waiting"], false, "{question}");
    assert_eq!(question["data"]["from"], "none", "{question}");
    let answer = demo.wait_event("answer");
    assert!(answer["data"]["guess"].is_null() && answer["data"]["right"].is_null(), "{answer}");
    assert_eq!(answer["data"]["actual"], 1, "the lock sells exactly one: {answer}");
    let out = demo.finish_within(Duration::from_secs(60));
    out.assert_code(0).assert_nothing_left();
}

#[test]
fn an_answer_is_judged_right_or_wrong_against_the_races_own_oversold_count() {
    // A wide race window (every buyer reads before any writes back): the count is then 2 on
    // nearly every run, but the test only relies on the run's own figure.
    let race = |guess: &str| {
        let dir = TempDir::new("predict-race");
        let db = one_ticket(&dir);
        let answer = format!("oversold={guess}");
        let out = run_ok(
            "mutex-ticket",
            &[
                "run",
                "--no-lock",
                "--buyers",
                "3",
                "--search-ms",
                "0",
                "--buy-ms",
                "400",
                "--db",
                &db,
                "--answer",
                &answer,
            ],
        );
        let oversold = out.one("summary")["data"]["oversold"].clone();
        let judged = out.one("answer")["data"].clone();
        assert_eq!(judged["actual"], oversold, "the answer is the run's own count: {judged}");
        assert_eq!(judged["guess"].to_string(), guess, "{judged}");
        (oversold, judged["right"].clone())
    };
    // A count no run can reach: wrong.
    let (_, right) = race("1000");
    assert_eq!(right, false);
    // The count this race reaches when all three buyers overlap: right when it did, wrong when
    // it did not, so the judgement follows the run and not a stored value.
    let mut right_once = false;
    for _ in 0..3 {
        let (oversold, right) = race("2");
        assert_eq!(right, oversold == 2, "oversold {oversold}, judged {right}");
        if oversold == 2 {
            right_once = true;
            break;
        }
    }
    assert!(right_once, "three 3-buyer races with a 400 ms window never oversold by 2");
}

#[test]
fn answers_given_up_front_are_used_in_turn_and_by_name() {
    let out = run_ok("thread-queue", &["orders", "--answer", "priority-first=p1", "--answer", "3"]);
    let answers: Vec<&Value> = out.named("answer");
    let by_id = |id: &str| {
        answers
            .iter()
            .find(|a| a["data"]["id"] == id)
            .map(|a| (*a).clone())
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let lifo = by_id("lifo-first");
    assert_eq!(
        (lifo["data"]["guess"].clone(), lifo["data"]["right"].clone()),
        (3.into(), false.into())
    );
    assert_eq!(lifo["data"]["actual"], 2);
    let priority = by_id("priority-first");
    assert_eq!(priority["data"]["right"], true, "{priority}");
}

#[test]
fn a_guess_typed_at_a_terminal_is_read_and_judged() {
    let dir = TempDir::new("predict-tty");
    let db = one_ticket(&dir);
    let mut demo = support::TtyDemo::start(
        "mutex-ticket",
        &["run", "--predict", "--db", &db, "--speed", "50"],
    );
    demo.wait_for("your guess (Enter skips): ", 1);
    assert!(!demo.seen.contains("bought a ticket"), "the buyers started before the guess");
    demo.type_line("1\n");
    demo.wait_for("ANSWER (sold): 1 (you said 1: RIGHT)", 1);
    let seen = demo.finish_ok();
    let question = seen.find("QUESTION (sold)").expect("the question");
    let sale = seen.find("bought a ticket").expect("a sale");
    assert!(question < sale, "{seen}");
}
