//! Part 1, zombie (僵尸进程), and part 2, many zombies: children that have ended and that their
//! parent has not reaped yet.
//!
//! The parent never calls `join` or `is_alive` while it shows the zombie: both call `waitpid`,
//! which is exactly what removes a zombie. It only reads `/proc`, which changes nothing.

#![cfg(target_os = "linux")]

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::process::{Process, exitcode_name};
use common::{ps, report};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

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
    common::event!("reaped", { "pid": ident.pid, "name": p.name(), "exitcode": p.exitcode(), "via": via }, "{via}: reaped {p} (exit status {})", exitcode_name(p.exitcode()));
    if p.exitcode().is_some_and(|code| code < 0 && Some(-code) != sent) {
        return Err(common::processes::lost::report(p, "steps of this part", 1));
    }
    if let Some(state) = ident.state() {
        bail!("{p} is still listed in /proc (state {state}) after it was reaped");
    }
    Ok(())
}

/// One child ends; the parent looks at it in `/proc` (state `Z`), waits, then reaps it. The
/// system calls themselves, as TLPI's `make_zombie.c` makes them: `fork()`, `_exit()` in the
/// child, `waitpid()` in the parent; what the part prints is in the functions below.
pub fn zombie(cli: &CommonArgs) -> Result<()> {
    let guess = introduce_the_zombie(cli);
    // Safety: the child only names itself (prctl), writes one line (write(2)) and leaves with
    // _exit, on the one thread it has; glibc makes malloc usable after fork.
    let child = match unsafe { fork() }.context("fork()")? {
        ForkResult::Child => {
            // The child: from here on a second process runs this code. It ends at once with
            // _exit, not exit: nothing of the parent's (destructors, buffers) runs twice.
            common::process::name_this_process("zombie-child");
            say_exiting(ZOMBIE_EXIT_CODE);
            // Safety: _exit ends this process at once; it is async-signal-safe.
            unsafe { libc::_exit(ZOMBIE_EXIT_CODE) }
        }
        ForkResult::Parent { child } => child,
    };
    // The parent does not call waitpid() yet: the child ends and stays in the process table,
    // a zombie (Z). Looking at it in /proc reaps nothing.
    let seen = look_at_the_zombie(cli, child.as_raw(), guess);
    // waitpid(): the parent collects the exit status, and the kernel frees the entry and the
    // pid. Called whatever the look found, so that no zombie outlives this part.
    let status = waitpid(child, None).context("waitpid()")?;
    let ident = seen?;
    say_reaped(ident, status)?;
    ps::show_tree("after waitpid(): the zombie is gone");
    Ok(())
}

/// The part's heading, and the question asked before the reveal (`--predict`).
fn introduce_the_zombie(cli: &CommonArgs) -> common::predict::Guess {
    report::section("zombie (僵尸进程): the child has ended, its parent has not reaped it yet");
    report::say(
        "A child that ends keeps a small entry in the process table (its pid and exit status) \
         until its parent asks for that status with waitpid(): until then it is a zombie, \
         state Z, <defunct>. The parent here does not call waitpid() (what join() calls) yet.",
    );
    let question = "a child ends and its parent does not call join(): a moment later, is it still in \
                    the process table (Z) or gone?";
    let expect = common::predict::Expect::Choice(&["Z", "gone"]);
    common::predict::ask(cli, "zombie", question, expect)
}

/// In the child: the line it prints before it ends (the event `exiting`).
fn say_exiting(code: i32) {
    common::event!("exiting", { "code": code }, "my work is done; ending with exit code {code}");
}

/// The parent's look at its unreaped child, from `/proc` only: state `Z`, no memory left, and
/// still `Z` a moment later (the guess judged against it); then the `--hold` pause for `ps`.
fn look_at_the_zombie(cli: &CommonArgs, pid: i32, guess: common::predict::Guess) -> Result<Ident> {
    procfs::wait_for_state(pid, "the child to end (state Z)", |s| s == 'Z')?;
    let ident = Ident::of(pid);
    let rss = procfs::rss_kb(pid);
    common::event!("zombie", { "pid": pid, "state": "Z", "ppid": me(), "rss_kb": rss }, "child {pid} has ended and is in state Z: {}; its memory is already freed \
             (VmRSS: {}), by the kernel as it exited, not by the parent as seed 003 says \
             (父进程…会清理子进程内存); what remains is its pid and its exit status",
            ps::state_meaning('Z'),
            rss.map_or("none".to_string(), |kb| format!("{kb} kB")));
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
    Ok(ident)
}

/// What `waitpid()` collected (the event `reaped`): the exit status the zombie kept, and its
/// `/proc` entry gone. A child killed by a signal was killed from elsewhere: lost (exit 1).
fn say_reaped(ident: Ident, status: WaitStatus) -> Result<()> {
    let exitcode = match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
        _ => None,
    };
    let (pid, name) = (ident.pid, "zombie-child");
    let code = exitcode_name(exitcode);
    common::event!("reaped", { "pid": pid, "name": name, "exitcode": exitcode, "via": "waitpid()" }, "waitpid(): reaped {name} (pid {pid}, exit status {code})");
    if exitcode.is_some_and(|code| code < 0) {
        return Err(common::processes::lost::report_pid(
            pid,
            name,
            exitcode,
            "steps of this part",
            1,
        ));
    }
    if let Some(state) = ident.state() {
        bail!("{name} ({pid}) is still listed in /proc (state {state}) after it was reaped");
    }
    if exitcode != Some(ZOMBIE_EXIT_CODE) {
        bail!("{name} ({pid}): expected exit code {ZOMBIE_EXIT_CODE} from the zombie");
    }
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
    common::event!("zombies", { "count": count, "pids": pids, "pids_held": held, "pid_max": pid_max }, "{count} children in state Z; kill(pid, 0) succeeds for {held} of them: each still \
             holds its pid (of the {} this system has, /proc/sys/kernel/pid_max). Enough zombies \
             and fork() fails with EAGAIN: that is the harm (有害) the notes mean.",
            pid_max.map_or("?".to_string(), |m| m.to_string()));
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
    common::event!("all_reaped", { "count": count }, "all {count} reaped: their pids are free again");
    Ok(())
}
