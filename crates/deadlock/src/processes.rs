//! Part 5: processes deadlock too. Two processes and two files: `locker-1` locks `a` then `b`,
//! `locker-2` locks `b` then `a`; both hold their first before either reaches for the second
//! (the parent lets them go together through a pipe, the processes' Barrier).
//! - With `flock(2)` both sleep for ever, and say nothing. The demo finds them in
//!   `/proc/locks` (each file: a holder, and `->` a waiter) and in `/proc` (state `S`), then
//!   kills one: the kernel drops its locks, and the other gets both files.
//! - With `fcntl(F_SETLKW)` record locks the kernel follows the chain of waiters itself: the
//!   request that would close the cycle fails with `EDEADLK`, and that process backs off.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::locks::{self, FileLock};
use common::process::{Process, Role, exitcode_name};
use common::timeline::{Record, Recording};
use common::{ps, report};
use deadlock::waitfor::{self, Waiter};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, Flock, FlockArg, OFlag, fcntl};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Cli;
use crate::scene::PATIENCE;

/// A process that locks two files in a given order.
pub static ROLE: Role = Role::new("locker", locker);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Flock,
    Fcntl,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Locker {
    kind: Kind,
    /// The files, in the order this process locks them: (name, path).
    first: (String, PathBuf),
    second: (String, PathBuf),
    /// The read end of the "go" pipe: one byte lets this process reach for its second file.
    go: i32,
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("5. processes: two processes, two files, locks in opposite orders");
    let guess = common::predict::ask(
        &cli.common,
        "edeadlk",
        "two processes lock two files in opposite orders, once with flock and once with fcntl \
         (POSIX record locks): which kind does the kernel refuse with EDEADLK? (flock / fcntl / \
         both / neither)",
        common::predict::Expect::Choice(&["flock", "fcntl", "both", "neither"]),
    );
    let by_flock = pair(cli, Kind::Flock)?;
    let by_fcntl = pair(cli, Kind::Fcntl)?;
    let refused = match (by_flock, by_fcntl) {
        (true, true) => "both",
        (true, false) => "flock",
        (false, true) => "fcntl",
        (false, false) => "neither",
    };
    guess.reveal(
        refused,
        "the kernel tracks who waits for whom only for POSIX record locks (fcntl F_SETLKW): a \
         request that would close a cycle fails with EDEADLK; flock waits for ever",
    );
    Ok(())
}

/// Two lockers on a pair of fresh files, and what the kernel does with them. Returns whether
/// a locker was refused with EDEADLK.
fn pair(cli: &Cli, kind: Kind) -> Result<bool> {
    let dir = std::env::temp_dir().join(format!(
        "deadlock-{}-{}",
        std::process::id(),
        report::monotonic_ns()
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = pair_in(cli, kind, &dir);
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn pair_in(cli: &Cli, kind: Kind, dir: &Path) -> Result<bool> {
    let call = match kind {
        Kind::Flock => "flock(fd, LOCK_EX)",
        Kind::Fcntl => "fcntl(fd, F_SETLKW, {F_WRLCK, whole file})",
    };
    report::say(format!("{call}: locker-1 takes a then b, locker-2 takes b then a"));
    let mut inodes = Vec::new();
    for name in ["a", "b"] {
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        inodes.push((name, file.metadata()?.ino()));
    }
    let file = |name: &str| (name.to_string(), dir.join(name));
    // The pipe is close-on-exec; a spawned locker keeps its read end through `pass_fds`.
    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2()")?;
    let recording = Recording::start()?;
    let mut lockers = Vec::new();
    for (name, first, second) in [("locker-1", "a", "b"), ("locker-2", "b", "a")] {
        let args =
            Locker { kind, first: file(first), second: file(second), go: go_read.as_raw_fd() };
        let mut p = Process::new(name, &ROLE, args)
            .start_method(cli.common.start_method)
            .pass_fds(&[go_read.as_raw_fd()]);
        p.start().with_context(|| format!("starting {name}"))?;
        lockers.push(p);
    }
    let mut lockers = Lockers(lockers, Vec::new());
    drop(go_read);
    let pids: Vec<i32> = lockers.0.iter().filter_map(|p| p.pid()).collect();
    wait_records(&recording, &mut lockers, "both lockers to hold their first file", |rs| {
        rs.iter().filter(|r| r.event == "holds").count() == 2
    })?;
    // Both have both files open: the names can go (a lock belongs to the open file, not to
    // its name), and nothing is left behind even if the demo is interrupted from here on.
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    // Both hold one file each: let them reach for the other together.
    File::from(go_write).write_all(b"gg").context("writing to the go pipe")?;

    let refused = match kind {
        Kind::Flock => {
            let table = wait_for_waiters(&inodes, &mut lockers)?;
            show_flock_deadlock(&table, &inodes, &pids);
            cli.common.hold("two processes deadlocked on flock, before the kill", &pids);
            lockers.1.push(pids[1]);
            let victim = &lockers.0[1];
            common::event!("killed", { "pid": pids[1], "name": victim.name() }, "kill -9 {} ({}): the kernel drops a process's locks when it dies; with \
                     flock nothing else would end the wait (fcntl, next, refuses the cycle \
                     itself: seed 001's 只能靠操作系统强制终止 is not the only way out)",
                    pids[1],
                    victim.name());
            victim.kill()?;
            let survivor = wait_records(&recording, &mut lockers, "locker-1 to get both", |rs| {
                rs.iter().any(|r| r.event == "got_both")
            })?;
            let codes = lockers.join_all()?;
            common::event!("flock_ended", { "killed": pids[1], "got_both": survivor.pid, "exitcodes": codes }, "locker-1 got b the moment locker-2 died, and finished (exitcodes {} and {})",
                    exitcode_name(codes[0]),
                    exitcode_name(codes[1]));
            recording.records()?.iter().any(|r| r.event == "edeadlk")
        }
        Kind::Fcntl => {
            let rs = wait_records(&recording, &mut lockers, "EDEADLK and then both got", |rs| {
                rs.iter().any(|r| r.event == "edeadlk")
                    && rs.iter().filter(|r| r.event == "got_both" || r.event == "edeadlk").count()
                        == 2
            })
            .map(|_| recording.records())??;
            let codes = lockers.join_all()?;
            let refused: Vec<&Record> = rs.iter().filter(|r| r.event == "edeadlk").collect();
            let got: Vec<&Record> = rs.iter().filter(|r| r.event == "got_both").collect();
            common::event!("fcntl_ended", { "edeadlk": refused.iter().map(|r| r.pid).collect::<Vec<_>>(),
                        "edeadlk_names": refused.iter().map(|r| r.who.clone()).collect::<Vec<_>>(),
                        "got_both": got.iter().map(|r| r.pid).collect::<Vec<_>>(),
                        "exitcodes": codes }, "the kernel refused {} with EDEADLK (its request would have closed the \
                     cycle); it let its file go, and {} got both. No kill was needed: the one \
                     case where the OS does better than just ending them",
                    refused.iter().map(|r| r.who.as_str()).collect::<Vec<_>>().join(", "),
                    got.iter().map(|r| r.who.as_str()).collect::<Vec<_>>().join(", "));
            !refused.is_empty()
        }
    };
    drop(recording);
    Ok(refused)
}

/// The lockers of one pair; whatever happens, none is left running.
#[derive(Debug)]
struct Lockers(Vec<Process>, Vec<i32>);

impl Lockers {
    /// A locker that ended with an error (not the one killed on purpose).
    fn any_failed(&mut self) -> Option<String> {
        let killed = &self.1;
        self.0.iter_mut().find_map(|p| {
            let failed = !p.is_alive() && p.exitcode() != Some(0);
            (failed && !p.pid().is_some_and(|pid| killed.contains(&pid))).then(|| p.to_string())
        })
    }

    fn join_all(&mut self) -> Result<Vec<Option<i32>>> {
        let mut codes = Vec::new();
        for p in &mut self.0 {
            match p.join_timeout(PATIENCE)? {
                Some(code) => codes.push(Some(code)),
                None => bail!("{p} did not end within {PATIENCE:?}"),
            }
        }
        Ok(codes)
    }
}

impl Drop for Lockers {
    fn drop(&mut self) {
        for p in &mut self.0 {
            if p.is_alive() {
                let _ = p.kill();
                let _ = p.join();
            }
        }
    }
}

/// Waits until the records so far satisfy `pred` (returns the last one), failing if a locker
/// fails or [`PATIENCE`] runs out.
fn wait_records(
    recording: &Recording,
    lockers: &mut Lockers,
    what: &str,
    pred: impl Fn(&[Record]) -> bool,
) -> Result<Record> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rs = recording.records()?;
        if pred(&rs) {
            return rs.last().cloned().context("no record");
        }
        if let Some(p) = lockers.any_failed() {
            bail!("{p} failed while waiting for {what}");
        }
        if Instant::now() >= deadline {
            bail!("waited {PATIENCE:?} for {what}, in vain");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The lines of `/proc/locks` about the files of `inodes`, with the file's name.
fn proc_locks(inodes: &[(&str, u64)]) -> Result<Vec<(String, FileLock)>> {
    let text = std::fs::read_to_string("/proc/locks").context("reading /proc/locks")?;
    Ok(text
        .lines()
        .filter_map(locks::parse_line)
        .filter_map(|(ino, lock)| {
            inodes.iter().find(|(_, i)| *i == ino).map(|(name, _)| (name.to_string(), lock))
        })
        .collect())
}

/// Waits until `/proc/locks` shows, for each file, a holder and a process blocked waiting.
fn wait_for_waiters(
    inodes: &[(&str, u64)],
    lockers: &mut Lockers,
) -> Result<Vec<(String, FileLock)>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let table = proc_locks(inodes)?;
        let complete = inodes.iter().all(|(name, _)| {
            let on = |waiting| table.iter().any(|(f, l)| f == name && l.waiting == waiting);
            on(false) && on(true)
        });
        if complete {
            return Ok(table);
        }
        if let Some(p) = lockers.any_failed() {
            bail!("{p} failed before both blocked");
        }
        if Instant::now() >= deadline {
            bail!("waited {PATIENCE:?} for both lockers to block in flock, in vain: {table:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `/proc/locks`, the processes' state and wchan, the wait-for table and cycle.
fn show_flock_deadlock(table: &[(String, FileLock)], inodes: &[(&str, u64)], pids: &[i32]) {
    let mut text = String::from("/proc/locks (-> is a process blocked waiting for the lock):");
    for (file, l) in table {
        let ino = inodes.iter().find(|(n, _)| n == file).map_or(0, |(_, i)| *i);
        text.push_str(&format!(
            "\n  {}{} ADVISORY {} {} inode {ino} (file {file})",
            if l.waiting { "-> " } else { "" },
            l.kind,
            l.access,
            l.pid
        ));
    }
    let names = ["locker-1", "locker-2"];
    let mut waiters = Vec::new();
    let mut states = Vec::new();
    for (pid, name) in pids.iter().zip(names) {
        let holds =
            table.iter().filter(|(_, l)| l.pid == *pid && !l.waiting).map(|(f, _)| f.clone());
        let waits = table.iter().find(|(_, l)| l.pid == *pid && l.waiting).map(|(f, _)| f.clone());
        waiters.push(Waiter {
            name: name.into(),
            tid: *pid,
            holds: holds.collect(),
            waits_for: waits,
        });
        let info = ps::thread(*pid, *pid);
        let (state, wchan) = info.map_or(('?', "-".to_string()), |t| (t.state, t.wchan));
        states
            .push(json!({ "pid": pid, "name": name, "state": state.to_string(), "wchan": wchan }));
        text.push_str(&format!(
            "\n  {name} (pid {pid}): state {state} ({}), wchan {wchan}",
            ps::state_meaning(state)
        ));
    }
    let edges = waitfor::cycle(&waiters).unwrap_or_default();
    let cycle_text = waitfor::cycle_text(&edges);
    text.push_str(&format!(
        "\n{}\nwait-for cycle: {cycle_text}\nneither will ever wake: flock has no deadlock check",
        waitfor::table(&waiters, "process", "pid")
    ));
    let locks: Vec<Value> = table
        .iter()
        .map(|(file, l)| json!({ "file": file, "pid": l.pid, "kind": l.kind, "access": l.access, "waiting": l.waiting }))
        .collect();
    report::event(
        "flock_deadlock",
        json!({ "locks": locks, "processes": states, "waiters": waiters, "cycle": edges,
                "cycle_text": cycle_text }),
        text,
    );
}

/// The locker: opens both files, locks the first, waits for the go, reaches for the second.
fn locker(args: Value) -> Result<()> {
    let me: Locker = serde_json::from_value(args).context("decoding the locker's files")?;
    let open = |(name, path): &(String, PathBuf)| {
        File::options().write(true).open(path).with_context(|| format!("opening {name}"))
    };
    let (first, second) = (open(&me.first)?, open(&me.second)?);
    let (a, b) = (&me.first.0, &me.second.0);
    let _held = take(me.kind, first).map_err(|e| anyhow::anyhow!("locking {a}: {e}"))?;
    common::event!("holds", { "file": a }, "holds {a}");
    // Safety: `go` is the read end of the pipe the parent made for us and nobody else in this
    // process uses; the File owns it from here on.
    let mut go = File::from(unsafe { OwnedFd::from_raw_fd(me.go) });
    let mut byte = [0u8; 1];
    go.read_exact(&mut byte).context("reading the go pipe")?;
    common::event!("reaching", { "file": b }, "reaching for {b}...");
    match take(me.kind, second) {
        Ok(_both) => {
            common::event!("got_both", { "files": [a, b] }, "got {b} too: holds {a} and {b}");
            Ok(())
        }
        Err(Errno::EDEADLK) => {
            common::event!("edeadlk", { "file": b, "errno": "EDEADLK" }, "fcntl(F_SETLKW) on {b}: EDEADLK (Resource deadlock avoided): the kernel saw \
                     that the holder of {b} waits for my {a}; I let {a} go");
            Ok(())
        }
        Err(e) => bail!("locking {b}: {e}"),
    }
}

/// A held lock of either kind; dropping it (or exiting) lets it go.
#[derive(Debug)]
enum Held {
    Flock { _lock: Flock<File> },
    Fcntl { _file: File },
}

/// Locks the whole `file` exclusively, waiting as long as it takes: the call that deadlocks.
fn take(kind: Kind, file: File) -> Result<Held, Errno> {
    match kind {
        Kind::Flock => Flock::lock(file, FlockArg::LockExclusive)
            .map(|lock| Held::Flock { _lock: lock })
            .map_err(|(_, e)| e),
        Kind::Fcntl => {
            // Safety: an all-zero `struct flock` is a valid value; the fields are set below.
            let mut whole: libc::flock = unsafe { std::mem::zeroed() };
            whole.l_type = libc::F_WRLCK as libc::c_short;
            whole.l_whence = libc::SEEK_SET as libc::c_short;
            whole.l_start = 0;
            whole.l_len = 0; // to the end of the file, however long it grows
            fcntl(&file, FcntlArg::F_SETLKW(&whole))?;
            Ok(Held::Fcntl { _file: file })
        }
    }
}
