//! Part 2, inherited state (开启进程 windows/linux 区别): a value the parent sets at run time is
//! in a fork child, not in a spawn child (seed 003's Windows `NameError`) unless passed to it.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use common::process::{Process, StartMethod};
use common::report;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::answers::{WorkDir, post, read_answer, succeeded};
use crate::{Cli, INHERITOR};

/// A value that exists only once the parent's `run` has computed it (part 2).
static RUNTIME_VALUE: OnceLock<String> = OnceLock::new();
/// A value compiled into the program: every process running it has it, fork or spawn (like a
/// Python name defined at module level, which a spawn child defines again on import).
static COMPILED_IN: &str = "compiled into the program";

#[derive(Debug, Serialize, Deserialize)]
struct InheritArgs {
    method: String,
    /// The parent's run-time value, when the parent passes it explicitly.
    passed: Option<String>,
    answer: PathBuf,
}

/// The child of part 2: what does it find of the parent's run-time value?
pub fn inheritor(args: Value) -> Result<()> {
    let args: InheritArgs = serde_json::from_value(args).context("decoding the child's args")?;
    let passed = args.passed.is_some();
    if let Some(value) = args.passed {
        // The explicit way, which works with every start method: the value came as an argument.
        let _ = RUNTIME_VALUE.set(value);
    }
    let found = RUNTIME_VALUE.get().cloned();
    let text = match &found {
        Some(v) => format!("{} child (passed: {passed}): has it: {v:?}", args.method),
        None => format!(
            "{} child (passed: {passed}): does not have it; Python says NameError: name 'a' is \
             not defined",
            args.method
        ),
    };
    let answer = json!({
        "method": args.method, "passed": passed, "found": found, "compiled_in": COMPILED_IN,
        "pid": std::process::id(),
    });
    report::event("child-runtime-value", answer.clone(), text);
    post(&args.answer, &answer)
}

pub fn run(cli: &Cli, work: &WorkDir) -> Result<()> {
    report::section("2. inherited state: a fork child has the parent's values, a spawn child not");
    let value = RUNTIME_VALUE
        .get_or_init(|| {
            format!(
                "set at run time by pid {} at {} ns",
                std::process::id(),
                report::monotonic_ns()
            )
        })
        .clone();
    common::event!("parent-runtime-value", { "value": value, "compiled_in": COMPILED_IN }, "parent: a = {value:?} (and a static {COMPILED_IN:?})");
    let question = "a value the parent set at run time: does a spawn child find it?";
    let expect = common::predict::Expect::Choice(&["yes", "no"]);
    let guess = common::predict::ask(&cli.common, "spawn-finds", question, expect);
    let cases = [
        ("inherit-fork", StartMethod::Fork, None),
        ("inherit-spawn", StartMethod::Spawn, None),
        ("inherit-passed", StartMethod::Spawn, Some(value.clone())),
    ];
    let mut results = Vec::new();
    let mut as_expected = true;
    for (i, (name, method, passed)) in cases.into_iter().enumerate() {
        let expect_it = method == StartMethod::Fork || passed.is_some();
        let answer = work.fresh(&format!("inherit-{i}.json"))?;
        let args = InheritArgs { method: method.to_string(), passed, answer: answer.clone() };
        let mut child = Process::new(name, &INHERITOR, args).start_method(method);
        child.start()?;
        child.join()?;
        succeeded(&child, "the inherit child")?;
        let answer = read_answer(&answer)?
            .ok_or_else(|| anyhow!("{child} ended without answering in {}", answer.display()))?;
        let has_it = answer["found"] == value.as_str();
        as_expected &= has_it == expect_it && answer["compiled_in"] == COMPILED_IN;
        results.push(json!({ "name": name, "has_it": has_it, "answer": answer }));
    }
    let spawn_found = results.iter().any(|r| r["name"] == "inherit-spawn" && r["has_it"] == true);
    let why = "a spawn child is the program started again: it runs main afresh, without the \
               parent's run-time values (unless they are passed as arguments)";
    guess.reveal(if spawn_found { "yes" } else { "no" }, why);
    common::event!("inherit", { "value": value, "results": results, "as_expected": as_expected }, "fork child: has it (a copy of the parent's memory); spawn child: does not (it ran \
             main afresh, like Windows' CreateProcess); spawn child given it as an argument: has \
             it.\nThe static compiled into the program is in all three.");
    if !as_expected {
        bail!("inherited state not as expected: {results:?}");
    }
    Ok(())
}
