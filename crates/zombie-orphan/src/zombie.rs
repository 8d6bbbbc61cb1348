//! Part 1, zombie (僵尸进程), and part 2, many zombies: children that have ended and that their
//! parent has not reaped yet.
//!
//! The parent never calls `join` or `is_alive` while it shows the zombie: both call `waitpid`,
//! which is exactly what removes a zombie. It only reads `/proc`, which changes nothing.

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::process::{Process, exitcode_name};
use common::{ps, report};
use serde_json::json;

use crate::MAX_ZOMBIES;
use crate::children::Quit;
use crate::procfs::{self, Ident};

/// The zombie child's exit code: the one thing its zombie keeps for the parent to collect.
pub const ZOMBIE_EXIT_CODE: i32 = 3;
/// How long the zombie is left alone before the parent reaps it, in the notes' seconds
/// (scaled by `--speed`): long enough to check that it does not go away by itself.
const LINGER_NOTES_SECS: f64 = 2.0;

fn me() -> i32 {
    std::process::id() as i32
}

/// Prints a reaped child and checks that its pid entry is really gone. A child killed by a
/// signal other than `sent` (the one the demo sent it, if any) was killed from elsewhere: it
/// is reported as lost (exit 1).
pub fn report_reaped(p: &Process, ident: Ident, via: &str, sent: Option<i32>) -> Result<()> {
    report::event(
        "reaped",
        json!({ "pid": ident.pid, "name": p.name(), "exitcode": p.exitcode(), "via": via }),
        format!("{via}: reaped {p} (exit status {})", exitcode_name(p.exitcode())),
    );
    if p.exitcode().is_some_and(|code| code < 0 && Some(-code) != sent) {
        return Err(common::processes::lost::report(p, "steps of this part", 1));
    }
    if let Some(state) = ident.state() {
        bail!("{p} is still listed in /proc (state {state}) after it was reaped");
    }
    Ok(())
}

/// One child ends; the parent looks at it in `/proc` (state `Z`), waits, then reaps it.
pub fn zombie(cli: &CommonArgs) -> Result<()> {
    report::section("zombie (僵尸进程): the child has ended, its parent has not reaped it yet");
    report::say(
        "A child that ends keeps a small entry in the process table (its pid and exit status) \
         until its parent asks for that status with waitpid(): until then it is a zombie, \
         state Z, <defunct>. The parent here does not call join() (which calls waitpid) yet.",
    );
    let question = "a child ends and its parent does not call join(): a moment later, is it still in \
                    the process table (Z) or gone?";
    let expect = common::predict::Expect::Choice(&["Z", "gone"]);
    let guess = common::predict::ask(cli, "zombie", question, expect);
    let mut child = Process::from_run("zombie-child", Quit { code: ZOMBIE_EXIT_CODE, after_ms: 0 })
        .start_method(cli.start_method);
    child.start()?;
    let pid = child.pid().context("the zombie child has no pid after start")?;

    // Only /proc is read: no join(), no is_alive(), no waitpid(), so nothing reaps the child.
    procfs::wait_for_state(pid, "the child to end (state Z)", |s| s == 'Z')?;
    let ident = Ident::of(pid);
    let rss = procfs::rss_kb(pid);
    report::event(
        "zombie",
        json!({ "pid": pid, "state": "Z", "ppid": me(), "rss_kb": rss }),
        format!(
            "child {pid} has ended and is in state Z: {}; its memory is already freed \
             (VmRSS: {}), by the kernel as it exited, not by the parent as seed 003 says \
             (父进程…会清理子进程内存); what remains is its pid and its exit status",
            ps::state_meaning('Z'),
            rss.map_or("none".to_string(), |kb| format!("{kb} kB")),
        ),
    );
    ps::show_tree("this demo's processes (the child is <defunct>):");

    std::thread::sleep(cli.notes_sleep(LINGER_NOTES_SECS));
    let still = ident.state();
    let why = "only the parent's waitpid() (join) removes a zombie; it never goes away by itself";
    guess.reveal(still.map_or("gone".to_string(), |s| s.to_string()), why);
    report::say(format!(
        "{:.1}s later it is still {}: a zombie never goes away by itself; only its parent's \
         waitpid() (or the parent's own end) removes it",
        cli.notes_sleep(LINGER_NOTES_SECS).as_secs_f64(),
        still.map_or("gone".to_string(), |s| format!("in state {s}")),
    ));
    if still != Some('Z') {
        bail!("the zombie {pid} changed to {still:?} although nobody reaped it");
    }
    cli.hold("a zombie child that its parent has not reaped", &[me(), pid]);

    // join() calls waitpid(pid): it collects the exit status and frees the pid.
    child.join()?;
    report_reaped(&child, ident, "join() -> waitpid()", None)?;
    if child.exitcode() != Some(ZOMBIE_EXIT_CODE) {
        bail!("{child}: expected exit code {ZOMBIE_EXIT_CODE} from the zombie");
    }
    ps::show_tree("after join(): the zombie is gone");
    Ok(())
}

/// `count` children end and none is reaped: `count` rows in state Z, each holding a pid.
pub fn many(cli: &CommonArgs, count: usize) -> Result<()> {
    if count > MAX_ZOMBIES {
        return Err(common::demo::bad_input(format!(
            "--count {count}: at most {MAX_ZOMBIES} zombies (each is a real process)"
        )));
    }
    report::section(format!("many zombies: {count} children end, none is reaped yet"));
    let mut children = Vec::with_capacity(count);
    for i in 1..=count {
        let mut child = Process::from_run(format!("zombie-{i}"), Quit { code: 0, after_ms: 0 })
            .start_method(cli.start_method);
        child.start()?;
        children.push(child);
    }
    let pids: Vec<i32> = children.iter().filter_map(Process::pid).collect();
    for pid in &pids {
        procfs::wait_for_state(*pid, "every child to end (state Z)", |s| s == 'Z')?;
    }
    let idents: Vec<Ident> = pids.iter().map(|p| Ident::of(*p)).collect();
    ps::show_tree(&format!("{count} zombies, {count} <defunct> rows:"));

    // kill(pid, 0) checks that a pid names a process without sending anything. It succeeds for
    // a zombie: the pid is still taken.
    let held = pids
        .iter()
        .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(**p), None).is_ok())
        .count();
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    report::event(
        "zombies",
        json!({ "count": count, "pids": pids, "pids_held": held, "pid_max": pid_max }),
        format!(
            "{count} children in state Z; kill(pid, 0) succeeds for {held} of them: each still \
             holds its pid (of the {} this system has, /proc/sys/kernel/pid_max). Enough zombies \
             and fork() fails with EAGAIN: that is the harm (有害) the notes mean.",
            pid_max.map_or("?".to_string(), |m| m.to_string()),
        ),
    );
    if held != count {
        bail!("only {held} of {count} zombies still hold their pid");
    }
    let mut all = vec![me()];
    all.extend(&pids);
    cli.hold(&format!("{count} zombies that their parent has not reaped"), &all);

    for (child, ident) in children.iter_mut().zip(idents) {
        child.join()?;
        report_reaped(child, ident, "join() -> waitpid()", None)?;
    }
    report::event(
        "all_reaped",
        json!({ "count": count }),
        format!("all {count} reaped: their pids are free again"),
    );
    Ok(())
}
