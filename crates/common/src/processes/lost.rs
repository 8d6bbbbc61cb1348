//! lost — what a demo says when a child it did not mean to stop dies early, and how it keeps
//! waiting from becoming waiting for ever.
//!
//! The rule every demo follows: whatever child is killed, at whatever moment, the demo ends
//! within a bound, reaps every child, says what was lost (which child, how it ended, how many
//! items, tickets or tasks went with it: the event `child_lost`), and exits 1, "a child failed".
//! A child the demo kills itself, as its lesson, is no failure.
//!
//! The danger is a wait for something only the dead child would have sent: a count on a queue,
//! a `task_done`, a line on a pipe. Such a wait is made in short slices ([`wait_watching`]),
//! and between two slices the children are looked at ([`first_dead`]).

use std::time::{Duration, Instant};

use anyhow::Error;

use crate::process::{Process, exitcode_name};

/// How long one slice of a watched wait lasts: the longest a demo goes on waiting after a
/// child it depends on has died.
pub const WATCH_SLICE: Duration = Duration::from_millis(50);

/// "was killed by SIGKILL", "exited with code 1", "ended (its exit status was taken elsewhere)".
pub fn how(exitcode: Option<i32>) -> String {
    match exitcode {
        Some(code) if code < 0 => {
            format!("was killed by {}", exitcode_name(Some(code)).trim_start_matches('-'))
        }
        Some(code) => format!("exited with code {code}"),
        None => "ended (its exit status was taken elsewhere)".to_string(),
    }
}

/// Says that `child` died before its work was done and what went with it (the event
/// `child_lost`), and returns the error that makes the demo exit 1.
pub fn report(child: &Process, what: &str, count: u64) -> Error {
    report_pid(child.pid().unwrap_or(0), child.name(), child.exitcode(), what, count)
}

/// [`report`] for a child known by pid and name only.
pub fn report_pid(pid: i32, name: &str, exitcode: Option<i32>, what: &str, count: u64) -> Error {
    if crate::signals::stopping() {
        // Ctrl-C or SIGTERM: the child died of it, no failure to report; the signal watcher
        // is stopping everyone and ends the demo with 130 or 143.
        return anyhow::anyhow!("interrupted");
    }
    let how = how(exitcode);
    let lost = format!("{name} (pid {pid}) {how}: {count} {what} lost with it");
    crate::event!("child_lost", { "pid": pid, "name": name, "exitcode": exitcode, "status": exitcode_name(exitcode),
                "how": how, "lost": { "what": what, "count": count } }, "LOST: {lost}; the demo stops here (exit 1: a child failed)");
    Error::msg(lost)
}

/// The index of the first started child that ended otherwise than with exit code 0, reaping
/// every ended one (as `is_alive` does). One killed by a signal comes first: a consumer that
/// finds its queue broken by a killed neighbour exits 1, and the loss to report is the killed one.
pub fn first_dead(children: &mut [Process]) -> Option<usize> {
    let ended: Vec<usize> = (0..children.len())
        .filter(|&i| {
            let c = &mut children[i];
            c.pid().is_some() && !c.is_alive() && c.exitcode() != Some(0)
        })
        .collect();
    let killed = ended.iter().find(|&&i| children[i].exitcode().is_some_and(|code| code < 0));
    killed.or(ended.first()).copied()
}

/// Calls `step(WATCH_SLICE)` (a blocking call given a short timeout: `Some` is the answer,
/// `None` means not yet) until it answers; between two calls, a child that died
/// ([`first_dead`]) ends the wait with its index.
pub fn wait_watching<T>(
    children: &mut [Process],
    mut step: impl FnMut(Duration) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Result<T, usize>> {
    loop {
        if let Some(answer) = step(WATCH_SLICE)? {
            return Ok(Ok(answer));
        }
        if let Some(index) = first_dead(children) {
            return Ok(Err(index));
        }
    }
}

/// Waits until every one of `pids` sleeps in a futex (state `S`, a `futex...` wchan: asleep in
/// a lock, a semaphore or an event), watching `children` as [`wait_watching`] does: a child
/// that died ends the wait as its loss (`child_lost`). An error if not all are seen asleep
/// within `deadline`.
pub fn wait_asleep_in_futex(
    pids: &[i32],
    children: &mut [Process],
    deadline: Duration,
) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let answer = wait_watching(children, |slice| {
        let asleep = |&pid: &i32| {
            crate::ps::state_of(pid) == Some('S') && crate::ps::wchan(pid).contains("futex")
        };
        if pids.iter().all(asleep) {
            return Ok(Some(()));
        }
        if began.elapsed() > deadline {
            let states: Vec<_> = pids.iter().map(|&p| (p, crate::ps::state_of(p))).collect();
            anyhow::bail!(
                "not every one of {pids:?} was seen asleep within {deadline:?}: {states:?}"
            );
        }
        std::thread::sleep(slice.min(Duration::from_millis(2)));
        Ok(None)
    })?;
    answer.map_err(|i| report(&children[i], "its wait", 0))
}

/// Joins every one of `children` (all started), watching them: when one ends otherwise than
/// with exit code 0, the others may be waiting for it (for an item on a queue, room in it, a
/// line on a pipe), so those still running are stopped (SIGTERM, then joined). Returns the
/// index of the first that failed, or `None` when every child ended with 0.
pub fn join_all(children: &mut [Process]) -> anyhow::Result<Option<usize>> {
    loop {
        // Every child is looked at (and reaped if it ended), not only up to the first alive.
        let running = children.iter_mut().map(Process::is_alive).filter(|&alive| alive).count() > 0;
        if let Some(index) = first_failed(children) {
            stop_running(children)?;
            return Ok(Some(index));
        }
        if !running {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The index of the first of `children` known to have ended otherwise than with exit code 0
/// (as far as the last `is_alive` or `join` saw); one killed by a signal comes before one that
/// exited with an error, which may only have failed because of it (see [`first_dead`]).
pub fn first_failed(children: &[Process]) -> Option<usize> {
    let killed = children.iter().position(|c| c.exitcode().is_some_and(|code| code < 0));
    killed.or_else(|| children.iter().position(|c| c.exitcode().is_some_and(|code| code != 0)))
}

/// Stops (SIGTERM) and joins every one of `children` still running.
pub fn stop_running(children: &mut [Process]) -> anyhow::Result<()> {
    for c in children.iter_mut().filter(|c| c.pid().is_some() && c.exitcode().is_none()) {
        c.terminate()?;
        c.join()?;
    }
    Ok(())
}

/// How long children left by a failed part get to end after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// A part that failed (a child lost, a check broken) may leave children waiting for something
/// that will never come (a release, an item, a count): the end of the main code would wait for
/// them for ever. So on an error every child still registered is stopped (SIGTERM, then
/// SIGKILL after [`STOP_GRACE`]) and reaped before the error is returned (exit 1).
pub fn stop_children_on_error<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    if result.is_err() && !crate::signals::stopping() {
        crate::process::stop_all_children(STOP_GRACE);
    }
    result
}

/// When a step of a part failed (a state never reached, a report never read), the reason may
/// be a child killed from elsewhere: if one of `children` has ended by a signal, the failure
/// is reported as that child's loss (the event `child_lost`, exit 1), with the step's error as
/// context. Otherwise the error is returned as it is.
pub fn blame_dead_child<T>(
    result: anyhow::Result<T>,
    children: &mut [&mut Process],
    what: &str,
) -> anyhow::Result<T> {
    let Err(error) = result else { return result };
    // A killed child's /proc files (`exe`, `fd`) go while it is still dying, a moment before it
    // can be reaped, and the step may have failed on them in between: each child gets until
    // this deadline to end. One that is dying ends at once; a live one costs the wait, once.
    let deadline = Instant::now() + DYING;
    for c in children.iter_mut().filter(|c| c.pid().is_some()) {
        let _ = c.join_timeout(deadline.saturating_duration_since(Instant::now()));
        if c.exitcode().is_some_and(|code| code < 0) {
            return Err(report(c, what, 1).context(format!("{error:#}")));
        }
    }
    Err(error)
}

/// How long [`blame_dead_child`] waits, in all, for a child killed from elsewhere to end.
const DYING: Duration = Duration::from_secs(1);
