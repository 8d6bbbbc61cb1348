//! Runs the selected parts one at a time as children, then sums them up.
//!
//! Each part is the demo's binary (beside this one) with its subcommand and the shared flags.
//! It runs in the tour's own process group, so that a terminal's Ctrl-C reaches it directly and
//! it can read a guess from the terminal (a background group reading it would be stopped).
//! Each part's `answer` events reach the tour through a nameless file whose descriptor the part
//! inherits (`CONCURRENCY_DEMOS_ANSWERS_FD`, see `common::predict`).
// Elsewhere than Linux only the stub `imp::run` is built, which says so.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use common::report;

use crate::Cli;
use crate::parts::{self, Part};

/// How a part ended.
#[derive(Debug)]
enum Ended {
    Ran,
    Failed(String),
    Skipped(String),
}

/// One row of the summary.
#[derive(Debug)]
struct Row {
    /// Its place in this run of the tour.
    number: usize,
    part: Part,
    ended: Ended,
    answers: Vec<Value>,
}

pub fn main(cli: Cli) -> ExitCode {
    if let Some(a) = cli.common.answer.iter().find(|a| !a.contains('=')) {
        report::write_stderr(&format!(
            "tour: error: --answer {a}: in a tour, name the question it answers (--answer \
             oversold=9; the ids are in each demo's guide, crates/<demo>/README.md)"
        ));
        return ExitCode::from(2);
    }
    // --trace and --svg: one picture per part, beside the path given; checked before any part.
    if let Err(e) = cli.common.trace_outputs().check() {
        report::write_stderr(&format!("tour: error: {e:#}"));
        return ExitCode::from(2);
    }
    let selected = select(&cli);
    if cli.list {
        // People see the parts counted 1, 2, 3 in this list; `number` is the part's place in
        // the whole tour (`--all`), the same whatever is selected.
        for (step, (number, p)) in selected.iter().enumerate() {
            let step = step + 1;
            common::event!("part", { "number": number, "section": p.section, "demo": p.demo, "args": p.args }, "{step:>2}. seed 004 {} — {} {}", p.section, p.demo, p.args.join(" "));
        }
        return ExitCode::SUCCESS;
    }
    match imp::run(&cli, &selected) {
        Ok(code) => code,
        Err(e) => {
            report::write_stderr(&format!("tour: error: {e:#}"));
            ExitCode::from(1)
        }
    }
}

/// The parts to run, numbered as in the whole tour: from `--from`, within `--only`, without
/// `--skip`.
fn select(cli: &Cli) -> Vec<(usize, Part)> {
    let start = cli
        .from
        .as_deref()
        .and_then(|demo| parts::PARTS.iter().position(|p| p.demo == demo))
        .unwrap_or(0);
    parts::PARTS
        .iter()
        .enumerate()
        .skip(start)
        .filter(|(_, p)| p.core || cli.all)
        .filter(|(_, p)| cli.only.is_empty() || cli.only.iter().any(|d| d == p.demo))
        .filter(|(_, p)| !cli.skip.iter().any(|d| d == p.demo))
        .map(|(i, p)| (i + 1, *p))
        .collect()
}

/// The shared flags, passed on to every part.
fn shared_flags(cli: &Cli) -> Vec<String> {
    let c = &cli.common;
    let mut flags = vec!["--speed".to_string(), c.speed.to_string()];
    if c.json {
        flags.push("--json".into());
    }
    if let Some(hold) = c.hold {
        flags.extend(["--hold".into(), hold.to_string()]);
    }
    if c.start_method != common::process::default_start_method() {
        flags.extend(["--start-method".into(), c.start_method.to_string()]);
    }
    if c.predict {
        flags.push("--predict".into());
    }
    for a in &c.answer {
        flags.extend(["--answer".into(), a.clone()]);
    }
    flags
}

/// A part's own picture file: `run.json` becomes `run-07-mutex-ticket.json` for part 7.
pub(crate) fn part_path(path: &Path, step: usize, demo: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{step:02}-{demo}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{step:02}-{demo}"),
    };
    path.with_file_name(name)
}

/// `--trace` and `--svg` for one part (each part is a run of its own, drawn on its own).
fn picture_flags(cli: &Cli, step: usize, demo: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, path) in [("--trace", &cli.common.trace), ("--svg", &cli.common.svg)] {
        if let Some(path) = path {
            flags.push(flag.to_string());
            flags.push(part_path(path, step, demo).to_string_lossy().into_owned());
        }
    }
    flags
}

/// Where the demos' binaries are: beside this one (`target/debug/`).
fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether to wait for Enter between parts: a learner at a terminal who asked to guess.
fn pausing(cli: &Cli) -> bool {
    cli.common.predict && !cli.common.json && std::io::stdin().is_terminal()
}

fn pause(next: &Part) {
    report::write_stdout(
        format!(
            "\npress Enter for the next part ({} {}), Ctrl-C to stop: ",
            next.demo, next.section
        )
        .as_bytes(),
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// A JSON value as a learner typed it (a string without its quotes).
fn shown(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

/// The one-screen summary: each part, what it showed, how it ended, the guesses.
fn summarize(rows: &[Row]) -> ExitCode {
    let count = |f: fn(&Ended) -> bool| rows.iter().filter(|r| f(&r.ended)).count();
    let (ran, failed, skipped) = (
        count(|e| matches!(e, Ended::Ran)),
        count(|e| matches!(e, Ended::Failed(_))),
        count(|e| matches!(e, Ended::Skipped(_))),
    );
    let answers: Vec<&Value> = rows.iter().flat_map(|r| &r.answers).collect();
    let judged = |want: bool| answers.iter().filter(|a| a["right"] == json!(want)).count();
    let (right, wrong) = (judged(true), judged(false));
    let no_guess = answers.iter().filter(|a| a["right"].is_null()).count();
    report::section(format!(
        "summary: {} parts, {ran} ran, {failed} failed, {skipped} skipped; guesses: {right} right, \
         {wrong} wrong, {no_guess} not made",
        rows.len()
    ));
    let mut table = String::new();
    for r in rows {
        let section = r.part.section.split_whitespace().next().unwrap_or("");
        let status = match &r.ended {
            Ended::Ran => "ran".to_string(),
            Ended::Failed(how) => format!("FAILED ({how})"),
            Ended::Skipped(_) => "skipped".to_string(),
        };
        let what = format!("{} {}", r.part.demo, r.part.args.join(" "));
        table.push_str(&format!(
            "{:>3} {section:<6} {what:<32} {status:<8} {}\n",
            r.number, r.part.shows
        ));
        // The guesses made (a question without one is only counted, to keep to one screen).
        for a in r.answers.iter().filter(|a| !a["right"].is_null()) {
            let verdict = match a["right"].as_bool() {
                Some(true) => format!("guessed {}: right", shown(&a["guess"])),
                _ => format!("guessed {}: wrong", shown(&a["guess"])),
            };
            let id = a["id"].as_str().unwrap_or("?");
            table.push_str(&format!("{:>44} {id} = {} ({verdict})\n", "", shown(&a["actual"])));
        }
    }
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (ended, how) = match &r.ended {
                Ended::Ran => ("ran", String::new()),
                Ended::Failed(how) => ("failed", how.clone()),
                Ended::Skipped(why) => ("skipped", why.clone()),
            };
            json!({ "step": r.number, "section": r.part.section, "demo": r.part.demo,
                    "args": r.part.args, "shows": r.part.shows, "ended": ended, "how": how,
                    "answers": r.answers })
        })
        .collect();
    common::event!("summary", { "parts": data, "ran": ran, "failed": failed, "skipped": skipped,
                "right": right, "wrong": wrong, "no_guess": no_guess }, "each part, what it showed, and the guesses:");
    report::plain(table.trim_end());
    if failed > 0 {
        let names: Vec<String> = rows
            .iter()
            .filter(|r| matches!(r.ended, Ended::Failed(_)))
            .map(|r| format!("{} {}", r.part.demo, r.part.args.join(" ")))
            .collect();
        report::say(format!(
            "{failed} part(s) failed (their own report is above): {}",
            names.join("; ")
        ));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{DirBuilderExt, FileExt};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use nix::sys::signal::{SigSet, Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::Pid;

    use super::*;

    /// The parts' temp folder (their `TMPDIR`), removed when the tour ends.
    static SCRATCH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    /// The pid of the part running now, 0 for none, [`STARTING`] or [`STOPPING`]. The main
    /// thread starts a part and the watcher ends the tour only by changing it from 0, so that
    /// a stop signal can never end the tour while the part it is starting is left behind.
    static CURRENT: AtomicI32 = AtomicI32::new(0);
    /// [`CURRENT`] while a part is being started: its pid is not known yet, but it may exist.
    const STARTING: i32 = -1;
    /// [`CURRENT`] once a thread has begun to end the tour: no part may start.
    const STOPPING: i32 = -2;
    /// The stop signal received, or 0.
    static SIGNAL: AtomicI32 = AtomicI32::new(0);
    /// How long a part gets to stop its own children after a stop signal, before SIGKILL.
    const GRACE: Duration = Duration::from_secs(5);

    fn stop_signals() -> SigSet {
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(s);
        }
        set
    }

    /// Blocks the stop signals (before any thread exists) and takes them in a watcher thread:
    /// a part running gets the signal (a terminal's Ctrl-C has reached it already, a `kill` to
    /// the tour alone has not) and the main thread, once the part has ended, exits 128 + signal;
    /// with no part running the watcher ends the tour itself.
    fn install_watcher() -> Result<()> {
        let set = stop_signals();
        set.thread_block().context("blocking SIGINT, SIGTERM, SIGHUP")?;
        std::thread::Builder::new()
            .name("tour-signals".into())
            .spawn(move || {
                loop {
                    let Ok(signal) = set.wait() else { continue };
                    if SIGNAL.swap(signal as i32, Ordering::SeqCst) != 0 {
                        continue;
                    }
                    // A part being started may already be a process: wait for its pid, so that
                    // the tour never ends leaving it behind.
                    let pid = loop {
                        match CURRENT.load(Ordering::SeqCst) {
                            STARTING => std::thread::sleep(Duration::from_millis(1)),
                            STOPPING => wait_for_the_end(),
                            0 => try_stop(signal as i32), // or a part is being started now
                            pid => break pid,
                        }
                    };
                    let _ = kill(Pid::from_raw(pid), signal);
                    let deadline = Instant::now() + GRACE;
                    while CURRENT.load(Ordering::SeqCst) == pid && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if CURRENT.load(Ordering::SeqCst) == pid {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            })
            .context("starting the signal watcher")?;
        Ok(())
    }

    /// Ends the tour with 128 + `signo` if no part is running or being started and no other
    /// thread is ending it already; returns otherwise.
    fn try_stop(signo: i32) {
        if CURRENT.compare_exchange(0, STOPPING, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            interrupted(signo);
        }
    }

    /// For a thread that finds the other one ending the tour.
    fn wait_for_the_end() -> ! {
        loop {
            std::thread::park();
        }
    }

    /// Ends the tour with 128 + `signo`, once no part is left running.
    fn interrupted(signo: i32) -> ! {
        reap_all();
        remove_scratch();
        let name = common::process::signal_name(signo).unwrap_or("signal");
        common::event!("interrupted", { "signal": name, "code": 128 + signo }, "interrupted by {name}: the part running was ended; exit {}", 128 + signo);
        // Safety: _exit ends the process at once; every line was written with write(2).
        unsafe { libc::_exit(128 + signo) }
    }

    /// Reaps whatever came back to the tour (an orphaned grandchild, the tour being a child
    /// subreaper), so that nothing is left as a zombie.
    fn reap_all() {
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }

    /// A private folder (mode 0700) that every part gets as its `TMPDIR`: what a part keeps
    /// after its run for a learner to look at (mutex-ticket's copy of `db.json`) lives there
    /// while the tour lasts, and goes with it.
    fn make_scratch() -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("tour-{}", std::process::id()));
        // A folder of this name can only be left by a tour that was killed with SIGKILL and
        // had this pid: stale.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let _ = SCRATCH.set(dir.clone());
        Ok(dir)
    }

    fn remove_scratch() {
        if let Some(dir) = SCRATCH.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// The nameless file the parts append their answers to (O_TMPFILE: Ctrl-C leaves nothing).
    fn answers_file() -> Result<File> {
        common::timeline::nameless_file()
    }

    pub fn run(cli: &Cli, selected: &[(usize, Part)]) -> Result<ExitCode> {
        install_watcher()?;
        common::signals::set_child_subreaper(true);
        let answers = answers_file()?;
        let fd = answers.as_raw_fd();
        let scratch = make_scratch()?;
        let result = run_all(cli, selected, &answers, fd, &scratch);
        remove_scratch();
        result
    }

    fn run_all(
        cli: &Cli,
        selected: &[(usize, Part)],
        answers: &File,
        fd: i32,
        scratch: &Path,
    ) -> Result<ExitCode> {
        let mut read_to = 0u64;
        let dir = bin_dir();
        let flags = shared_flags(cli);
        let pausing = pausing(cli);
        report::say(format!(
            "the course in the notes' order (seed 004): {} part(s){}; the parts' files are in {} \
             until the tour ends",
            selected.len(),
            if pausing { "; Enter between parts" } else { "" },
            scratch.display()
        ));
        let mut rows = Vec::new();
        let mut first = true;
        for (step, (number, part)) in selected.iter().enumerate() {
            let step = step + 1;
            let bin = dir.join(part.demo);
            if !bin.is_file() {
                let why = format!("{} is not built yet (cargo build -p {})", part.demo, part.demo);
                common::event!("skipped", { "number": number, "demo": part.demo, "why": why }, "part {step} skipped: {why}");
                rows.push(Row {
                    number: step,
                    part: *part,
                    ended: Ended::Skipped(why),
                    answers: Vec::new(),
                });
                continue;
            }
            if pausing && !first {
                pause(part);
            }
            first = false;
            report::section(format!(
                "seed 004 {} — {} {} (part {step} of {})",
                part.section,
                part.demo,
                part.args.join(" "),
                selected.len()
            ));
            common::event!("part", { "number": number, "step": step, "section": part.section, "demo": part.demo,
                        "args": part.args }, "{}: {}", part.demo, part.shows);
            let mut flags = flags.clone();
            flags.extend(picture_flags(cli, step, part.demo));
            let ended = run_part(&bin, part, &flags, fd, scratch)?;
            let (new, upto) = read_answers(answers, read_to);
            read_to = upto;
            report::event(
                "part_done",
                json!({ "number": number, "demo": part.demo, "args": part.args,
                        "ended": matches!(ended, Ended::Ran), "answers": new.len() }),
                match &ended {
                    Ended::Failed(how) => {
                        format!("{} {}: FAILED ({how})", part.demo, part.args.join(" "))
                    }
                    _ => format!("{} {}: done", part.demo, part.args.join(" ")),
                },
            );
            rows.push(Row { number: step, part: *part, ended, answers: new });
            let signo = SIGNAL.load(Ordering::SeqCst);
            if signo != 0 {
                try_stop(signo);
                wait_for_the_end(); // the watcher is ending the tour
            }
        }
        Ok(summarize(&rows))
    }

    /// Runs one part to its end; a part that does not exit 0 has failed (its own report says
    /// what was lost), unless the tour is being stopped.
    fn run_part(
        bin: &Path,
        part: &Part,
        flags: &[String],
        answers_fd: i32,
        scratch: &Path,
    ) -> Result<Ended> {
        let mut command = Command::new(bin);
        command.env("TMPDIR", scratch);
        command
            .args(part.args)
            .args(flags)
            .env(common::predict::ENV_ANSWERS_FD, answers_fd.to_string());
        let parent = std::process::id() as i32;
        // Safety: between fork and exec the child only makes async-signal-safe calls
        // (pthread_sigmask, prctl, getppid, fcntl, kill) on values prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::sigaddset(&mut set, s);
                }
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                // If the tour dies (even by SIGKILL), the part is told to stop and cleans up.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                // The answers file is the one descriptor the part inherits on purpose.
                libc::fcntl(answers_fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
        if CURRENT.compare_exchange(0, STARTING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            wait_for_the_end(); // the watcher is ending the tour
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                CURRENT.store(0, Ordering::SeqCst);
                return Err(e).with_context(|| format!("starting {}", bin.display()));
            }
        };
        CURRENT.store(child.id() as i32, Ordering::SeqCst);
        let status = child.wait();
        CURRENT.store(0, Ordering::SeqCst);
        reap_all();
        let status = status.with_context(|| format!("waiting for {}", part.demo))?;
        Ok(match (status.code(), status.signal()) {
            (Some(0), _) => Ended::Ran,
            (Some(code), _) => Ended::Failed(format!("exit {code}")),
            (None, Some(signo)) => Ended::Failed(format!(
                "killed by {}",
                common::process::signal_name(signo).unwrap_or("a signal")
            )),
            (None, None) => Ended::Failed("ended".into()),
        })
    }

    /// The answers appended since `from`, and where they end.
    fn read_answers(file: &File, from: u64) -> (Vec<Value>, u64) {
        let mut bytes = Vec::new();
        let mut offset = from;
        let mut buffer = [0u8; 8192];
        while let Ok(n) = file.read_at(&mut buffer, offset) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..n]);
            offset += n as u64;
        }
        let text = String::from_utf8_lossy(&bytes);
        let answers = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["answer"].clone())
            .collect();
        (answers, offset)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub fn run(_cli: &Cli, _selected: &[(usize, Part)]) -> anyhow::Result<ExitCode> {
        report::write_stderr("tour: runs on Linux only, the demos' own platform");
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_writes_its_picture_beside_the_path_given() {
        let path = Path::new("out/run.svg");
        assert_eq!(part_path(path, 7, "mutex-ticket"), Path::new("out/run-07-mutex-ticket.svg"));
        assert_eq!(part_path(Path::new("trace"), 12, "pool"), Path::new("trace-12-pool"));
    }
}
