//! Parts A1 and A2: Python's daemonic children (守护进程, `daemon=True`), seed 002's 示例二:
//! terminated when the parent exits; and the two rules (set before `start`, no
//! `multiprocessing` children).

use std::time::Duration;

use anyhow::{Result, bail};
use common::process::{self, Process, Role, StartMethod, exitcode_name};
use common::{ps, report};
use serde_json::{Value, json};

use crate::Cli;

pub static FOO: Role = Role::new("foo", foo);
pub static BAR: Role = Role::new("bar", bar);
pub static SLEEPER: Role = Role::new("sleeper", sleeper);
pub static NESTER: Role = Role::new("nester", nester);

/// Python's `print`, as an event: `{"event":"print","data":{"text":"123"}}`.
fn print(text: &str) {
    report::event("print", json!({ "text": text }), text);
}

fn seconds(args: &Value) -> Duration {
    Duration::from_secs_f64(args["seconds"].as_f64().unwrap_or(0.0))
}

pub fn method_arg(cli: &Cli) -> String {
    cli.common.start_method.to_string()
}

pub fn method_of(args: &Value) -> StartMethod {
    if args["method"] == "spawn" { StartMethod::Spawn } else { StartMethod::Fork }
}

/// Seed 002's `Foo`: print(123); time.sleep(1); print('end123').
fn foo(args: Value) -> Result<()> {
    print("123");
    std::thread::sleep(seconds(&args));
    print("end123");
    Ok(())
}

/// Seed 002's `Bar`: print(456); time.sleep(2); print('end456').
fn bar(args: Value) -> Result<()> {
    print("456");
    std::thread::sleep(seconds(&args));
    print("end456");
    Ok(())
}

fn sleeper(args: Value) -> Result<()> {
    std::thread::sleep(seconds(&args));
    Ok(())
}

/// Tries to start a child of its own: refused in a daemonic child, allowed in any other.
fn nester(args: Value) -> Result<()> {
    let mut grandchild = Process::new("grandchild", &SLEEPER, json!({ "seconds": 0.0 }))
        .start_method(method_of(&args));
    match grandchild.start() {
        Ok(()) => {
            common::event!("allowed", { "grandchild": grandchild.pid() }, "a non-daemonic child may start children: {grandchild}");
            if grandchild.join()? != Some(0) {
                return Err(common::processes::lost::report(&grandchild, "steps", 1));
            }
            Ok(())
        }
        Err(e) => {
            common::event!("refused", { "call": "start() in a daemonic child", "error": format!("{e:#}") }, "p.start() in a daemonic child -> error: {e:#}");
            Err(e)
        }
    }
}

fn started(p: &Process) {
    common::event!("started", { "name": p.name(), "pid": p.pid(), "daemon": p.daemon() }, "started {p}");
}

/// Seed 002, example 2 (示例二), and what happens at the end of main's code.
pub fn daemonic(cli: &Cli) -> Result<()> {
    report::section("Part A1: daemonic children (守护进程): terminated when the parent exits");
    report::say(
        "p1 = Process(target=Foo); p1.daemon = True; p1.start()\n\
         p2 = Process(target=Bar); p2.start(); print('main---------')   # seed 002, 示例二",
    );
    let question = "Foo (daemonic) sleeps 1 s, then prints end123; Bar sleeps 2 s; main's code ends at \
                    once: does Foo print end123?";
    let expect = common::predict::Expect::Choice(&["yes", "no"]);
    let guess = common::predict::ask(&cli.common, "end123", question, expect);
    let method = cli.common.start_method;
    let mut p1 =
        Process::new("foo", &FOO, json!({ "seconds": cli.common.notes_sleep(1.0).as_secs_f64() }))
            .start_method(method);
    p1.set_daemon(true)?; // p1.daemon = True: before start, or it is an error (see `rules`)
    p1.start()?;
    let mut p2 =
        Process::new("bar", &BAR, json!({ "seconds": cli.common.notes_sleep(2.0).as_secs_f64() }))
            .start_method(method);
    p2.start()?;
    started(&p1);
    started(&p2);
    print("main---------");

    // ---- The main code ends here. What follows is what Python runs at the parent's exit
    // (multiprocessing's atexit hook), and what this demo's runner runs after `run` returns:
    // SIGTERM to every daemonic child, then a join of every other child, however long.
    common::event!("main_code_ended", { "pids": [p1.pid(), p2.pid()] }, "main's code has ended (运行完毕 is not 终止运行) and this parent has no non-daemon thread \
         to join, so its exit begins: terminate the daemonic children, then wait for the \
         others (Python does this in multiprocessing's atexit hook, after joining every \
         non-daemon thread: seed 002's 主进程代码执行结束后就终止 holds only when there is none)");
    let me = std::process::id() as i32;
    let ended = process::end_main_code();
    for e in &ended {
        let in_proc = ps::stat(e.pid).is_some();
        let what = match (e.daemon, e.exitcode) {
            (true, Some(-15)) => "terminated by SIGTERM at the parent's exit: no end123",
            (true, _) => "had already finished: the race went the other way (try --speed 1)",
            (false, _) => "waited for until it finished",
        };
        common::event!("ended", { "name": e.name, "pid": e.pid, "daemon": e.daemon, "exitcode": e.exitcode,
                    "exitcode_name": exitcode_name(e.exitcode), "at_ms": e.at_ms,
                    "in_proc": in_proc }, "{} ({}): exitcode {}, {}; {what}",
                e.name,
                if e.daemon { "daemonic" } else { "not daemonic" },
                exitcode_name(e.exitcode),
                if in_proc { "still in /proc" } else { "gone from /proc" });
        if in_proc {
            bail!("{} (pid {}) is still in /proc after the end of main's code", e.name, e.pid);
        }
    }
    let foo_code = ended.iter().find(|e| e.daemon).and_then(|e| e.exitcode);
    let why = "the parent's exit (here right after main's code: no non-daemon thread to join) \
               terminates every daemonic child (SIGTERM) before it waits for the others";
    guess.reveal(if foo_code == Some(0) { "yes" } else { "no" }, why);
    // A child killed by a signal the demo did not send (SIGTERM to the daemonic one) was
    // killed from elsewhere: its part of the lesson is lost.
    if let Some(e) = ended.iter().find(|e| e.exitcode.is_some_and(|c| c < 0 && c != -15)) {
        return Err(common::processes::lost::report_pid(e.pid, &e.name, e.exitcode, "steps", 1));
    }
    cli.common.hold("main's code has ended; the daemonic child is gone", &[me]);
    Ok(())
}

/// The two rules, broken on purpose.
pub fn rules(cli: &Cli) -> Result<()> {
    report::section(
        "Part A2: the rules: set daemon before start; a daemonic child starts no Process",
    );
    let method = cli.common.start_method;
    let mut p = Process::new(
        "sleeper",
        &SLEEPER,
        json!({ "seconds": cli.common.notes_sleep(1.0).as_secs_f64() }),
    )
    .start_method(method);
    p.start()?;
    match p.set_daemon(true) {
        Ok(()) => bail!("p.daemon = True after p.start() was accepted: the rule is broken"),
        Err(e) => {
            common::event!("refused", { "call": "set_daemon(true) after start()", "error": format!("{e:#}") }, "p.daemon = True after p.start() -> error: {e:#}")
        }
    }
    if p.join()? != Some(0) {
        return Err(common::processes::lost::report(&p, "steps", 1));
    }

    let mut daemonic = Process::new("daemonic", &NESTER, json!({ "method": method_arg(cli) }))
        .start_method(method);
    daemonic.set_daemon(true)?;
    let guess = common::predict::ask(
        &cli.common,
        "nested",
        "a daemonic child tries to start a child of its own: what is its exitcode?",
        common::predict::Expect::Count,
    );
    daemonic.start()?;
    let code = daemonic.join()?;
    guess.reveal(
        code.unwrap_or(-1),
        "a daemonic process may not start multiprocessing children: its Process.start() fails, \
         and the error ends it like an uncaught AssertionError (exitcode 1). os.fork() and \
         subprocess.run() still work in a daemonic child (CPython 3.11): seed 002's 禁止p创建子进程 \
         is true of multiprocessing only",
    );
    common::event!("joined", { "name": "daemonic", "daemon": true, "exitcode": code }, "{daemonic}: its start() failed, so it ended like an uncaught AssertionError (only \
             multiprocessing refuses: os.fork() and subprocess.run() work in a daemonic child, \
             CPython 3.11)");
    let mut normal =
        Process::new("normal", &NESTER, json!({ "method": method_arg(cli) })).start_method(method);
    normal.start()?;
    let normal_code = normal.join()?;
    common::event!("joined", { "name": "normal", "daemon": false, "exitcode": normal_code }, "{normal}: started and joined its own child");
    let killed = [(&daemonic, code), (&normal, normal_code)]
        .into_iter()
        .find(|(_, c)| c.is_some_and(|c| c < 0));
    if let Some((p, _)) = killed {
        return Err(common::processes::lost::report(p, "steps", 1));
    }
    if code != Some(1) || normal_code != Some(0) {
        bail!("expected exit codes 1 (daemonic) and 0 (normal), got {code:?} and {normal_code:?}");
    }
    Ok(())
}
