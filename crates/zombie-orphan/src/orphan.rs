//! Part 3, orphan (孤儿进程): the parent ends while its child is still running.
//!
//! Three processes: the launcher (this demo's main process), a middle process that starts the
//! orphan-to-be and then ends, and the orphan itself. The orphan reports its parent before and
//! after; the kernel hands it to the nearest *child subreaper* among its ancestors
//! (`PR_SET_CHILD_SUBREAPER`), or to PID 1 if there is none. The demo runner makes every demo a
//! subreaper, so by default the new parent is the launcher, which reaps the orphan at the end;
//! `--no-subreaper` turns that off for this part and shows who really adopts it.
//!
//! Links: the launcher keeps one end of a Unix socket pair to each of the other two. The orphan
//! writes its reports into its link; closing the launcher's end (or the launcher's death, which
//! closes it too) tells each of them to end. So the orphan never outlives the demo by more than
//! a moment, whoever adopts it.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::cli::CommonArgs;
use common::process::{Process, Run, StartMethod};
use common::{ps, report, signals};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};
use serde::{Deserialize, Serialize};

use crate::procfs::{self, Ident, WAIT_LIMIT};

/// With `--no-subreaper`, how long the launcher waits for the adopting process to reap the
/// orphan after it ends (a PID 1 may reap only now and then, or never).
const ADOPTER_REAP_LIMIT: Duration = Duration::from_secs(10);

/// Makes a descriptor survive `exec` (clears FD_CLOEXEC), so that a spawned child inherits it
/// under the same number; a forked child inherits every descriptor anyway.
fn inheritable(fd: &impl std::os::fd::AsFd) -> Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).context("fcntl(F_SETFD) on a link")?;
    Ok(())
}

/// Takes ownership of a descriptor inherited under a number the parent passed in the
/// arguments (forked, or spawned with the descriptor made inheritable).
fn inherited(fd: RawFd) -> OwnedFd {
    // Safety: the parent created this descriptor, passed its number, and nothing else in this
    // process owns or closes it; it is open here by the rules of fork and exec described above.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A forked copy closes the descriptors it inherited and must not keep (an end kept open would
/// hide the other side's end-of-file), then takes its own end of its link.
fn own_link(link: RawFd, close: &[RawFd]) -> UnixStream {
    for &fd in close {
        drop(inherited(fd));
    }
    UnixStream::from(inherited(link))
}

/// The middle process: starts the orphan-to-be, waits for the launcher's word, then ends
/// without waiting for its child. (A Python child would join its children first.)
#[derive(Debug, Serialize, Deserialize)]
pub struct OrphanParent {
    launcher: i32,
    /// Its own end of the link to the launcher; EOF on it means "end now".
    link: RawFd,
    /// The orphan's end of the orphan's link, to hand down.
    orphan_link: RawFd,
    /// Descriptors a forked copy inherited and must not keep (the launcher's ends).
    close: Vec<RawFd>,
    spawn: bool,
    limit_ms: u64,
}

impl Run for OrphanParent {
    const ROLE: &'static str = "orphan-parent";
    fn run(self) -> Result<()> {
        let mut link = own_link(self.link, &self.close);
        let orphan_link = inherited(self.orphan_link);
        let method = if self.spawn { StartMethod::Spawn } else { StartMethod::Fork };
        let orphan = Orphan {
            launcher: self.launcher,
            link: orphan_link.as_raw_fd(),
            close: vec![self.link],
            limit_ms: self.limit_ms,
        };
        // outlive_parent: no PR_SET_PDEATHSIG, so the child is not killed when this process ends.
        let mut child = Process::from_run("orphan", orphan).start_method(method).outlive_parent();
        child.start()?;
        drop(orphan_link); // only the orphan keeps its end
        common::event!("parent_started", { "child": child.pid() }, "started my child {child}; I will end without waiting for it");
        // Wait for the launcher's word: it closes its end once the orphan has reported.
        link.set_read_timeout(Some(Duration::from_millis(self.limit_ms)))?;
        let _ = link.read(&mut [0u8; 16]);
        common::event!("parent_exit", { "child": child.pid() }, "ending now; my child is still running");
        // No join(): this process ends and its child becomes an orphan.
        Ok(())
    }
}

/// The orphan: reports its parent, waits until the parent changes, reports the new one, then
/// waits on its link until the launcher lets it go (or is gone).
#[derive(Debug, Serialize, Deserialize)]
pub struct Orphan {
    launcher: i32,
    link: RawFd,
    close: Vec<RawFd>,
    limit_ms: u64,
}

impl Run for Orphan {
    const ROLE: &'static str = "orphan";
    fn run(self) -> Result<()> {
        let mut link = own_link(self.link, &self.close);
        let me = getpid().as_raw();
        let before = getppid().as_raw();
        common::event!("orphan_started", { "ppid": before, "parent_name": procfs::comm(before) }, "my parent is {before} ({})", procfs::comm(before));
        // A write error means the launcher is gone: nothing to report to, end quietly.
        if writeln!(link, "hello {me} {before}").is_err() {
            return Ok(());
        }
        // getppid() changes the moment the parent ends (after the launcher's first hold, if
        // any): poll it, with a bound.
        let deadline = Instant::now() + Duration::from_millis(self.limit_ms);
        let after = loop {
            let now = getppid().as_raw();
            if now != before {
                break now;
            }
            if Instant::now() >= deadline {
                bail!("my parent {before} has not ended after {WAIT_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if after == self.launcher {
            // Adopted by the launcher: die with it, as every child of the demo does.
            set_parent_death_signal(after);
        }
        let name = procfs::comm(after);
        common::event!("reparented", { "before": before, "after": after, "after_name": name,
                    "after_is_launcher": after == self.launcher, "after_is_pid1": after == 1 }, "my parent {before} has ended; my parent is now {after} ({name}){}",
                if after == self.launcher { ", the launcher, a child subreaper" } else { "" });
        if writeln!(link, "adopted {after}").is_err() {
            return Ok(());
        }
        // Blocked in read(): state S while adopted. EOF (or the bound) ends it.
        link.set_read_timeout(Some(Duration::from_millis(self.limit_ms)))?;
        let _ = link.read(&mut [0u8; 16]);
        common::event!("orphan_exit", { "ppid": getppid().as_raw() }, "ending now");
        Ok(())
    }
}

/// PR_SET_PDEATHSIG: SIGKILL when the (new) parent dies; then the man page's check that the
/// parent did not die before the request took effect.
fn set_parent_death_signal(parent: i32) {
    // Safety: PR_SET_PDEATHSIG only sets a flag on the calling process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if getppid().as_raw() != parent {
        // Safety: the parent is already gone; end at once, running nothing.
        unsafe { libc::_exit(1) }
    }
}

/// Kills and (if it is our child) reaps the orphan when the part ends early with an error.
struct OrphanGuard {
    orphan: Ident,
    done: bool,
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        if !self.done && self.orphan.listed() {
            let pid = Pid::from_raw(self.orphan.pid);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None); // fails with ECHILD if another process adopted it
        }
    }
}

/// Puts the demo back into subreaper mode when the part ends, however it ends.
struct SubreaperBack;

impl Drop for SubreaperBack {
    fn drop(&mut self) {
        signals::set_child_subreaper(true);
    }
}

fn read_report(reader: &mut impl BufRead, word: &str) -> Result<Vec<i32>> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .with_context(|| format!("reading the orphan's {word:?} report from its link"))?;
    let mut fields = line.split_whitespace();
    if fields.next() != Some(word) {
        bail!("the orphan's link: expected {word:?}, got {line:?}");
    }
    fields
        .map(|f| f.parse().with_context(|| format!("the orphan's {word:?} report: {line:?}")))
        .collect()
}

/// Waits for our child `pid` (an adopted orphan, not a `Process`) with `waitpid(2)`, bounded.
fn reap_adopted(pid: i32) -> Result<Option<i32>> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Some(-(signal as i32))),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).with_context(|| format!("waitpid({pid})")),
        }
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            bail!("the orphan {pid} did not end within {WAIT_LIMIT:?} after its link closed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn orphan(cli: &CommonArgs, no_subreaper: bool) -> Result<()> {
    report::section("orphan (孤儿进程): the parent ends while its child still runs");
    report::say(
        "The notes disagree here. Seed 003 (§僵尸进程) says a child whose parent ends first \
         becomes a zombie: it does not, it becomes an orphan (孤儿进程), keeps running, and is \
         adopted. Seed 004 has it right. A zombie is the reverse case: the child ended first \
         and its parent has not reaped it. Watch the orphan's state below: S, alive, not Z.",
    );
    let me = getpid().as_raw();
    let _subreaper_back = if no_subreaper {
        signals::set_child_subreaper(false);
        report::say(
            "--no-subreaper: the launcher stops being a child subreaper for this part; the \
             orphan goes to the nearest subreaper above it, or to PID 1.",
        );
        Some(SubreaperBack)
    } else {
        report::say(format!(
            "The launcher ({me}) is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): orphans \
             below it are handed to it instead of to PID 1, and it reaps them."
        ));
        None
    };

    let (to_parent, parent_end) = UnixStream::pair().context("socketpair for the middle link")?;
    let (from_orphan, orphan_end) = UnixStream::pair().context("socketpair for the orphan link")?;
    inheritable(&parent_end)?;
    inheritable(&orphan_end)?;
    let fork = cli.start_method == StartMethod::Fork;
    // Two holds (before and after the first parent ends), and some slack for a busy machine.
    let limit_ms = (cli.hold.unwrap_or(0.0) * 2000.0) as u64 + 3 * WAIT_LIMIT.as_millis() as u64;
    let middle = OrphanParent {
        launcher: me,
        link: parent_end.as_raw_fd(),
        orphan_link: orphan_end.as_raw_fd(),
        close: if fork { vec![to_parent.as_raw_fd(), from_orphan.as_raw_fd()] } else { vec![] },
        spawn: !fork,
        limit_ms,
    };
    let mut parent = Process::from_run("orphan-parent", middle).start_method(cli.start_method);
    parent.start()?;
    drop(parent_end);
    drop(orphan_end);

    from_orphan.set_read_timeout(Some(WAIT_LIMIT))?;
    let mut reports = BufReader::new(from_orphan);
    let hello = match read_report(&mut reports, "hello") {
        Ok(hello) => hello,
        // No report: the middle process or the orphan-to-be died first (killed from elsewhere).
        Err(e) => {
            let middle = parent.pid().unwrap_or(0);
            let orphan = ps::children_of(middle).first().copied().unwrap_or(0);
            // EOF comes as the middle process's files close, a moment before it can be reaped.
            parent.join_timeout(Duration::from_millis(500))?;
            let lost = if parent.exitcode().is_some_and(|code| code != 0) {
                common::processes::lost::report(&parent, "steps", 1)
            } else {
                common::processes::lost::report_pid(orphan, "orphan", None, "steps", 1)
            };
            return Err(lost.context(e));
        }
    };
    let (pid, before) = (hello[0], hello[1]);
    let mut guard = OrphanGuard { orphan: Ident::of(pid), done: false };

    // The first moment: the child's first parent is still alive. The notes' point is the
    // change of parent, so a second terminal sees both: PPID = the middle process now, the
    // adopter after.
    let middle_pid = parent.pid().unwrap_or(0);
    let first = ps::stat(pid).map(|i| i.ppid);
    common::event!("first_parent", { "pid": pid, "ppid": first, "middle": middle_pid, "reported": before }, "before: the child {pid} has its first parent, {} (orphan-parent), which is still              alive",
            first.map_or("?".to_string(), |p| p.to_string()));
    ps::show_tree("before: the child under its first parent, the middle process");
    cli.hold(
        &format!("the child {pid} under its first parent {middle_pid}, still alive"),
        &[me, middle_pid, pid],
    );

    let question = format!(
        "the orphan's parent {middle_pid} ends now: who is the orphan's parent afterwards: the \
         middle process (still), this demo ({me}), init (PID 1) or another subreaper?"
    );
    let expect = common::predict::Expect::Choice(&["middle", "demo", "init", "other"]);
    let guess = common::predict::ask(cli, "new-parent", question, expect);
    drop(to_parent); // EOF: the middle process ends now
    if parent.join()? != Some(0) {
        // Killed from elsewhere: it ended, but not by its own code.
        return Err(common::processes::lost::report(&parent, "steps of this part", 1));
    }
    report::say(format!(
        "the launcher joined the orphan's parent: {parent}. It ended while its child ran on: a \
         parent need not wait for its children (seed 003's 所有的子进程结束之后，父进程才能结束 is \
         Python's habit, whose exit joins its non-daemonic children, not a rule of the OS)"
    ));
    let after = match read_report(&mut reports, "adopted") {
        Ok(report) => report[0],
        Err(e) if !no_subreaper && guard.orphan.state().is_none_or(|s| s == 'Z') => {
            // The orphan died (killed from elsewhere) before it reported its new parent: it is
            // this demo's zombie now, to reap.
            let code = reap_adopted(pid).ok().flatten();
            guard.done = true;
            let lost = common::processes::lost::report_pid(pid, "orphan", code, "steps", 1);
            return Err(lost.context(e));
        }
        Err(e) => return Err(e),
    };
    // Once it has reported, the orphan blocks reading its link: it sleeps (S), alive.
    if let Err(e) = procfs::wait_for_state(pid, "the orphan to wait on its link", |s| s == 'S') {
        // Ended before it could wait: killed from elsewhere.
        if no_subreaper {
            return Err(e);
        }
        let code = reap_adopted(pid).ok().flatten();
        guard.done = true;
        return Err(common::processes::lost::report_pid(pid, "orphan", code, "steps", 1).context(e));
    }
    let info = ps::stat(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let name = procfs::comm(info.ppid);
    common::event!("adopted", { "pid": pid, "before": before, "after": after, "ppid": info.ppid,
                "parent_name": name, "state": info.state.to_string(), "launcher": me,
                "subreaper": !no_subreaper }, "orphan {pid}: parent {before} -> {} ({name}); its state is {} ({}), not Z: an \
             orphan is alive, it only changed parents",
            info.ppid,
            info.state,
            ps::state_meaning(info.state));
    let adopter = match info.ppid {
        p if p == middle_pid => "middle",
        p if p == me => "demo",
        1 => "init",
        _ => "other",
    };
    guess.reveal(
        adopter,
        if no_subreaper {
            "an orphan is handed to the nearest child subreaper above it, or to PID 1"
        } else {
            "this demo is a child subreaper, so the kernel hands it the orphans below it"
        },
    );
    if info.ppid != after || (!no_subreaper && after != me) {
        bail!("orphan {pid}: /proc says parent {}, it reported {after}, launcher {me}", info.ppid);
    }
    if no_subreaper {
        let mut rows = vec![];
        for p in [me, pid, info.ppid] {
            if let Some(row) = ps::stat(p) {
                rows.push((0, row));
            }
        }
        ps::show("the launcher, the orphan, and its new parent:", &rows);
    } else {
        ps::show_tree("the launcher's tree: the orphan now hangs right under it");
    }
    let mut pids = vec![me, pid];
    if info.ppid != me {
        pids.push(info.ppid);
    }
    cli.hold(&format!("an orphan adopted by {} ({name})", info.ppid), &pids);

    drop(reports); // EOF on its link: the orphan ends now
    if no_subreaper {
        let ended = Instant::now();
        let mut zombie_since = None;
        let gone = loop {
            match guard.orphan.state() {
                None => break true,
                Some('Z') => {
                    zombie_since.get_or_insert_with(Instant::now);
                }
                Some(_) => {}
            }
            if ended.elapsed() >= ADOPTER_REAP_LIMIT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !gone {
            let state = guard.orphan.state();
            bail!(
                "orphan {pid} is still listed (state {state:?}) {ADOPTER_REAP_LIMIT:?} after it \
                 was told to end: its new parent {} ({name}) does not reap it. This is why the \
                 demos make themselves child subreapers; run without --no-subreaper",
                info.ppid
            );
        }
        guard.done = true;
        let waited = ended.elapsed().as_millis() as u64;
        let zombie_ms = zombie_since.map(|t| t.elapsed().as_millis() as u64);
        common::event!("orphan_gone", { "pid": pid, "reaper": info.ppid, "reaper_name": name, "after_ms": waited,
                    "zombie_ms": zombie_ms }, "the orphan ended and {} ({name}) reaped it {waited} ms after it was told to \
                 end; it was that process's zombie for {} ms. Orphans are harmless (无害) only \
                 because their adopter reaps them.",
                info.ppid,
                zombie_ms.map_or("less than 5".to_string(), |ms| ms.to_string()));
    } else {
        // The subreaper reaps its adopted child like any other: waitpid(2).
        let code = reap_adopted(pid)?;
        guard.done = true;
        common::event!("reaped", { "pid": pid, "name": "orphan", "exitcode": code, "via": "waitpid (subreaper)" }, "the launcher, its adoptive parent, reaped orphan {pid} with waitpid(): exit \
                 status {}",
                common::process::exitcode_name(code));
        if guard.orphan.listed() {
            bail!("orphan {pid} is still listed after waitpid()");
        }
        if code != Some(0) {
            return Err(common::processes::lost::report_pid(pid, "orphan", code, "steps", 1));
        }
    }
    Ok(())
}
