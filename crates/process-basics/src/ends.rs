//! Parts 6 and 7: a process object's attributes, and the ways a process ends.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::{ExitWith, Process, Role, exitcode_name};
use common::{ps, report};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Cli, args, child, ms, secs, sleep_ms};

/// How long a child waits to be terminated or killed. Real seconds, not scaled by `--speed`:
/// `join` with a timeout must return while it is certainly still running, however busy the
/// machine; it never sleeps that long, the demo ends it.
const SLEEPER_SECONDS: u64 = 60;
/// The notes' `obj.join(1)`: one second, scaled by `--speed`.
const JOIN_TIMEOUT_SECONDS: f64 = 1.0;

/// The arguments of [`SLEEPER`] and [`ENDING`].
#[derive(Debug, Serialize, Deserialize)]
pub struct EndArgs {
    how: String,
    code: i32,
    sleep_ms: u64,
}

/// A child that sleeps until it is terminated or killed.
pub static SLEEPER: Role = Role::new("sleeper", sleeper);

fn sleeper(value: Value) -> Result<()> {
    let a: EndArgs = args("sleeper", value)?;
    common::event!("running", { "sleep_ms": a.sleep_ms }, "pid {} sleeping, until someone ends it", std::process::id());
    sleep_ms(a.sleep_ms);
    common::event!("done", {}, "nobody ended me; done");
    Ok(())
}

/// A child that ends in the way it is told.
pub static ENDING: Role = Role::new("ending", ending);

fn ending(value: Value) -> Result<()> {
    let a: EndArgs = args("ending", value)?;
    common::event!("ending", { "how": a.how }, "ending: {}", a.how);
    match a.how.as_str() {
        "ok" => Ok(()),
        "code" => Err(ExitWith(a.code).into()),
        "error" => {
            // An error nobody catches, as an uncaught exception in a Python `Process` (exitcode
            // 1). The notes' `python3 a.py` with no a.py is another case: the interpreter's
            // usage error, exit status 2.
            let missing = std::env::temp_dir()
                .join(format!("process-basics-no-such-dir-{}", std::process::id()))
                .join("a.py");
            std::fs::File::open(&missing)
                .with_context(|| format!("opening {}", missing.display()))?;
            Ok(())
        }
        "abort" => abort_without_core(),
        other => bail!("unknown way to end: {other}"),
    }
}

/// A fatal error, as a failed C assertion: `abort()` raises SIGABRT. No core file is written
/// (none must land in the user's directory): the core size limit is set to 0 first.
fn abort_without_core() -> ! {
    #[cfg(unix)]
    {
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // Safety: setrlimit only reads `zero`; lowering a limit is always allowed.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
        }
        #[cfg(target_os = "linux")]
        // Safety: PR_SET_DUMPABLE only sets a flag on this process; with 0, no core dump is
        // made even when core dumps go to a program (core_pattern starting with `|`).
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
        }
    }
    std::process::abort()
}

/// Part 6: pid, name, is_alive, join with a timeout, terminate, exitcode.
pub fn attributes(cli: &Cli) -> Result<()> {
    report::section("6. a process object's attributes (进程对象的常用属性)");
    let hold = Duration::from_secs_f64(cli.common.hold.unwrap_or(0.0));
    let sleep = Duration::from_secs(SLEEPER_SECONDS) + hold;
    let args = EndArgs { how: "sleep".into(), code: 0, sleep_ms: ms(sleep) };
    let mut p = child(cli, "sleeper", &SLEEPER, args);
    let attr = |step: &str, p: &mut Process| {
        let alive = p.is_alive();
        common::event!("attr", { "step": step, "repr": p.to_string(), "name": p.name(), "pid": p.pid(),
                    "is_alive": alive, "exitcode": p.exitcode() }, "{step}: {p}  name={} pid={} is_alive={alive} exitcode={}",
                p.name(),
                p.pid().map_or("None".into(), |pid| pid.to_string()),
                exitcode_name(p.exitcode()));
        alive
    };
    attr("created", &mut p);
    p.start()?;
    let pid = p.pid().unwrap_or(0);
    attr("started", &mut p);
    cli.common.hold("a child is sleeping", &[std::process::id() as i32, pid]);

    let timeout = cli.common.notes_sleep(JOIN_TIMEOUT_SECONDS);
    let t = Instant::now();
    let code = p.join_timeout(timeout)?;
    let took = t.elapsed();
    let alive = p.is_alive();
    let state = ps::state_of(pid);
    common::event!("join_timeout", { "timeout_ms": timeout.as_secs_f64() * 1e3,
                "returned_after_ms": took.as_secs_f64() * 1e3,
                "exitcode": code, "is_alive": alive, "state": state.map(String::from) }, "p.join({}) returned after {} with the child still running: exitcode={}, \
             is_alive={alive}, state {} in /proc ({})",
            timeout.as_secs_f64(),
            secs(took),
            exitcode_name(code),
            state.unwrap_or('?'),
            state.map_or("gone", ps::state_meaning));
    if !alive {
        if p.exitcode().is_some_and(|c| c < 0) {
            // Killed from elsewhere before the demo's own terminate().
            return Err(common::processes::lost::report(&p, "tasks", 1));
        }
        bail!("join with a timeout: the child {pid} should still be running, but it has ended");
    }

    p.terminate()?;
    let alive_right_after = p.is_alive();
    common::event!("terminate", { "is_alive_right_after": alive_right_after }, "p.terminate() sends SIGTERM and returns at once: is_alive right after says \
             {alive_right_after} (either can happen: the signal takes a moment to land)");
    p.join()?;
    let alive = attr("after terminate and join", &mut p);
    if p.exitcode().is_some_and(|c| c < 0 && c != -15) {
        return Err(common::processes::lost::report(&p, "tasks", 1));
    }
    if alive || p.exitcode() != Some(-15) {
        bail!("after terminate and join: expected is_alive false and exitcode -15, got {p}");
    }
    Ok(())
}

/// Part 7: a normal exit, a chosen exit code, an error, abort, kill -9 and kill -15.
pub fn exits(cli: &Cli) -> Result<()> {
    report::section("7. ways a process ends (终止进程)");
    let cases: [(&str, &str, i32); 4] = [
        ("ok", "normal exit (正常退出): run returns", 0),
        ("code", "a chosen exit code, as sys.exit(code)", cli.code),
        (
            "error",
            "an error nobody catches (出错退出), as an uncaught exception in a Python \
             Process (the notes' `python3 a.py` with no a.py exits 2: a usage error)",
            1,
        ),
        ("abort", "a fatal error (严重错误退出): abort() raises SIGABRT", -6),
    ];
    let mut wrong = Vec::new();
    // The first child that ended otherwise than this part makes it end (killed from elsewhere).
    let mut lost: Option<anyhow::Error> = None;
    for (how, what, expected) in cases {
        let args = EndArgs { how: how.into(), code: cli.code, sleep_ms: 0 };
        let mut p = child(cli, format!("end-{how}"), &ENDING, args);
        p.start()?;
        let code = p.join()?;
        exited(how, what, code, expected, &p, &mut wrong);
        if code != Some(expected) && lost.is_none() && cli.common.hold.is_none() {
            lost = Some(common::processes::lost::report(&p, "tasks", 1));
        }
    }

    let signals: [(&str, &str, &str, i32); 2] = [
        (
            "kill -9",
            "end-sigkill",
            "killed by another process: kill -9 PID (SIGKILL, p.kill())",
            -9,
        ),
        (
            "kill -15",
            "end-sigterm",
            "asked to end: kill PID, which is kill -15 (SIGTERM, p.terminate())",
            -15,
        ),
    ];
    for (how, name, what, expected) in signals {
        let args = EndArgs { how: how.into(), code: 0, sleep_ms: SLEEPER_SECONDS * 1000 };
        let mut p = child(cli, name, &SLEEPER, args);
        p.start()?;
        let pid = p.pid().unwrap_or(0);
        let program = std::env::args()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "process-basics".into());
        let command = format!("{how} {pid}").replace("kill -15", "kill");
        common::event!("commands", { "find": format!("ps aux | grep {program}"), "end": command }, "find it: ps aux | grep {program}   (Windows: tasklist | findstr {program})\n\
                 end it:  {command}   (Windows: taskkill /F /PID {pid})");
        cli.common.hold(&format!("a child waits to be ended: try {command}"), &[pid]);
        let guess = (expected == -9).then(|| {
            common::predict::ask(
                &cli.common,
                "sigkill-code",
                "the parent kills a sleeping child with SIGKILL (kill -9, p.kill()): what is its \
                 exitcode (a whole number, negative for a signal)?",
                common::predict::Expect::About { within: 0.01 },
            )
        });
        if expected == -9 {
            p.kill()?
        } else {
            p.terminate()?
        }
        let code = p.join()?;
        if let Some(guess) = guess {
            guess.reveal(
                code.unwrap_or(0),
                "a process ended by a signal has no exit status: exitcode is minus the signal's \
                 number, and SIGKILL is 9 (a shell would print 137 = 128 + 9)",
            );
        }
        exited(how, what, code, expected, &p, &mut wrong);
        if code != Some(expected) && lost.is_none() && cli.common.hold.is_none() {
            lost = Some(common::processes::lost::report(&p, "tasks", 1));
        }
    }
    // With --hold a learner may have ended a child another way; otherwise every code is known.
    if !wrong.is_empty() && cli.common.hold.is_none() {
        let why = format!("unexpected exit codes: {}", wrong.join(", "));
        return Err(match lost {
            Some(e) => e.context(why),
            None => anyhow::anyhow!(why),
        });
    }
    Ok(())
}

fn exited(
    how: &str,
    what: &str,
    code: Option<i32>,
    expected: i32,
    p: &Process,
    wrong: &mut Vec<String>,
) {
    let as_expected = code == Some(expected);
    if !as_expected {
        wrong.push(format!("{how}: {} (expected {expected})", exitcode_name(code)));
    }
    common::event!("exited", { "how": how, "exitcode": code, "expected": expected, "as_expected": as_expected,
                "repr": p.to_string() }, "{what}: exitcode {}  {p}", code_text(code));
}

/// `-9 (-SIGKILL)` for a signal, the number alone otherwise.
fn code_text(code: Option<i32>) -> String {
    match code {
        Some(c) if c < 0 => format!("{c} ({})", exitcode_name(code)),
        _ => exitcode_name(code),
    }
}
