//! The harness every integration test uses: build a demo once, run it in its own session with a
//! deadline on every wait, read its `--json` events, and leave nothing behind. On failure it
//! prints the command, its status, stdout and stderr.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use common::ps;

/// How long any single test step may take before the test fails. Generous: the machines are
/// shared, have 2 cores, and a nested `cargo build` may be running.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The path of a demo binary, built once per test binary with the same profile as the tests.
/// Never relies on an earlier manual build: the nested `cargo build` picks up every edit.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir();
    if !built.contains(name) {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "-p", name]);
        if dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo build");
        assert!(status.success(), "cargo build -p {name} failed");
        built.insert(name.to_string());
    }
    dir.join(name)
}

/// `target/debug` (or `target/release`): the test binary lives in its `deps/` folder.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// A temporary folder of the test's own, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir()
            .join(format!("concurrency-demos-test-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test's temp folder");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running demo. It is the leader of a new session and process group, so signals can reach
/// its whole group and its leftovers can be found by session id. Dropping it kills the group.
#[derive(Debug)]
pub struct Demo {
    cmd: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<Value>,
    finished: Option<ExitStatus>,
}

impl Demo {
    /// Starts `bin_name` with `args`; stdout is read line by line as events.
    pub fn start(bin_name: &str, args: &[&str]) -> Demo {
        Demo::start_in(bin_name, args, None)
    }

    /// Like [`Demo::start`], in the given working directory.
    pub fn start_in(bin_name: &str, args: &[&str], cwd: Option<&Path>) -> Demo {
        let path = bin(bin_name);
        let mut command = Command::new(&path);
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        // Safety: setsid is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let cmd = format!("{} {}", path.display(), args.join(" "));
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let all_out = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                all_out.lock().unwrap().push_str(&format!("{line}\n"));
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let all_err = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            all_err.lock().unwrap().push_str(&text);
        });
        Demo { cmd, child, stdin, lines, stdout, stderr, seen: Vec::new(), finished: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The events read so far, in order.
    pub fn events(&self) -> &[Value] {
        &self.seen
    }

    /// Waits (up to [`DEADLINE`]) for the next event named `name` and returns it.
    pub fn wait_event(&mut self, name: &str) -> Value {
        self.wait_for(&format!("event {name:?}"), |e| e["event"] == name)
    }

    /// Waits (up to [`DEADLINE`]) for the first new event that satisfies `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let Ok(event) = serde_json::from_str::<Value>(&line) else {
                        self.fail(&format!("stdout line is not JSON: {line:?}"));
                    };
                    self.seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("timed out waiting for {what}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("stdout closed before {what}"))
                }
            }
        }
    }

    /// Sends `signal` to the demo process alone.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Sends `signal` to the demo's whole process group, as a terminal's Ctrl-C does.
    pub fn signal_group(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Ctrl-C: SIGINT to the whole group as a terminal sends it (`to_group`), or to the demo
    /// alone as `kill -INT PID` does; then waits for the demo to exit.
    pub fn interrupt(self, to_group: bool) -> Output {
        if to_group {
            self.signal_group(nix::sys::signal::Signal::SIGINT);
        } else {
            self.signal(nix::sys::signal::Signal::SIGINT);
        }
        self.finish()
    }

    /// The Ctrl-C test: starts the demo with `args`, waits for the event `moment`, interrupts
    /// it ([`Demo::interrupt`]) and checks that it exits 130 and leaves nothing behind.
    pub fn ctrl_c_at(bin_name: &str, args: &[&str], moment: &str, to_group: bool) -> Output {
        let mut demo = Demo::start(bin_name, args);
        demo.wait_event(moment);
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        out
    }

    /// The Ctrl-C test at a hold: starts `part` holding for a minute, interrupts it at the hold
    /// (to its whole group, or to the demo alone) and checks that it exits 130 with nothing
    /// left: none of the pids the hold named is still in its session, or a zombie.
    pub fn ctrl_c_at_hold(bin_name: &str, part: &[&str], to_group: bool) -> Output {
        let mut args = part.to_vec();
        args.extend(["--hold", "60", "--json"]);
        let mut demo = Demo::start(bin_name, &args);
        let hold = demo.wait_event("hold");
        let pids: Vec<i32> =
            hold["data"]["pids"].as_array().expect("pids").iter().map(pid_of).collect();
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        for pid in pids.iter().filter(|p| **p != out.pid) {
            if let Some(info) = ps::stat(*pid) {
                assert!(info.sid != out.pid && info.state != 'Z', "{part:?}: {pid} left: {info:?}");
            }
        }
        out
    }

    /// Closes the demo's standard input.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits (up to [`DEADLINE`]) for the demo to exit and returns everything it printed.
    pub fn finish(self) -> Output {
        self.finish_within(DEADLINE)
    }

    /// Like [`Demo::finish`] with a bound of the test's own: fails (killing the demo) unless it
    /// exits within `bound`.
    pub fn finish_within(mut self, bound: Duration) -> Output {
        let deadline = Instant::now() + bound;
        self.stdin.take();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => self.fail(&format!("the demo did not exit within {bound:?}")),
            }
        };
        let deadline = Instant::now() + DEADLINE;
        self.finished = Some(status);
        // Drain the rest of stdout: the reader thread ends at EOF.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            match serde_json::from_str::<Value>(&line) {
                Ok(event) => self.seen.push(event),
                Err(_) if line.trim().is_empty() => {}
                Err(_) => {}
            }
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = loop {
            // The stderr reader finishes at EOF right after exit.
            let text = self.stderr.lock().unwrap().clone();
            if Arc::strong_count(&self.stderr) == 1 || Instant::now() >= deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            cmd: self.cmd.clone(),
            status,
            pid: self.pid(),
            stdout,
            stderr,
            events: std::mem::take(&mut self.seen),
        }
    }

    /// Fails the test with the command, stdout and stderr so far.
    pub fn fail(&mut self, why: &str) -> ! {
        self.kill_group();
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        panic!("{why}\ncommand: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}", self.cmd);
    }

    fn kill_group(&mut self) {
        if self.finished.is_none() {
            self.signal_group(nix::sys::signal::Signal::SIGKILL);
            self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
            self.finished = self.child.try_wait().ok().flatten();
        }
        // Anything else left in the session (it should be nothing) is killed too.
        for p in session_members(self.pid()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// What one trial of [`kill_a_random_child`] did.
#[derive(Debug)]
pub struct Trial {
    /// The process killed with SIGKILL (pid, name, whether the demo was its parent), if one
    /// was found before the demo ended.
    pub victim: Option<(i32, String, bool)>,
    /// How long after its start the demo was when the victim was killed.
    pub at: Duration,
    pub out: Output,
}

/// Starts `bin_name --json args`, waits a random moment (up to `within`, from `rng`), then
/// SIGKILLs one random live process of the demo's session other than the demo itself (waiting
/// for one to appear if there is none yet), and waits up to `bound` for the demo to end.
/// Fails unless it ends within the bound, exits 0 or 1, leaves no process behind, and, when it
/// exits 1, says which child it lost (a `child_lost` event naming the victim, or one of its
/// descendants' lost work).
pub fn kill_a_random_child(
    bin_name: &str,
    args: &[&str],
    rng: &mut fastrand::Rng,
    within: Duration,
    bound: Duration,
) -> Trial {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let mut demo = Demo::start(bin_name, &all);
    let started = Instant::now();
    let moment = started + within.mul_f64(rng.f64());
    let mut victim = None;
    let mut at = Duration::ZERO;
    loop {
        if !matches!(demo.child.try_wait(), Ok(None)) || started.elapsed() > DEADLINE {
            break;
        }
        if Instant::now() >= moment {
            let live: Vec<ps::ProcInfo> = descendants(demo.pid())
                .into_iter()
                .filter_map(ps::stat)
                // Any of them: the fork server too, and a child still being born (the fork
                // server killed before its exec included): the demo must survive every loss.
                .filter(|p| p.sid == demo.pid() && p.state != 'Z' && p.state != 'X')
                .collect();
            if !live.is_empty() {
                let p = &live[rng.usize(..live.len())];
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                at = started.elapsed();
                victim = Some((p.pid, p.comm.clone(), p.ppid == demo.pid()));
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    if let Some(victim) = &victim {
        eprintln!("    SIGKILL to {victim:?} at {at:?}");
    }
    let out = demo.finish_within(bound + at.min(bound));
    match out.code() {
        Some(0) => {}
        Some(1) => {
            let lost = out.named("child_lost");
            // A direct child is named; a grandchild's loss is reported through its parent.
            let named = match &victim {
                Some((pid, _, true)) => lost.iter().any(|e| e["data"]["pid"] == *pid),
                _ => !lost.is_empty(),
            };
            if !named {
                out.fail(&format!("exit 1 without a child_lost event for {victim:?} at {at:?}"));
            }
        }
        _ => out.fail(&format!("expected exit 0 or 1 after killing {victim:?} at {at:?}")),
    }
    out.assert_nothing_left();
    Trial { victim, at, out }
}

/// The test that kills a random child at a random moment: for every part of `parts`, runs
/// [`kill_a_random_child`] `per_part` times, each at a random moment up to `within` (halved
/// and tried again, up to six times, when the part ended before a child could be killed),
/// each with `bound`. Seeded (`seed`, or `$CHAOS_SEED`): a failure prints the seed, so the
/// same runs can be repeated. Returns the runs that killed a child.
pub fn kill_random_children(
    bin_name: &str,
    parts: &[&[&str]],
    per_part: usize,
    within: Duration,
    bound: Duration,
    seed: u64,
) -> Vec<Trial> {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
    eprintln!("{bin_name}: killing random children, seed {seed} (CHAOS_SEED={seed} repeats it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut done = Vec::new();
    for part in parts {
        for _ in 0..per_part {
            let mut within = within;
            for _ in 0..6 {
                let trial = kill_a_random_child(bin_name, part, &mut rng, within, bound);
                eprintln!(
                    "  {part:?}: killed {:?} at {:?}; exit {:?}; {} child_lost event(s)",
                    trial.victim,
                    trial.at,
                    trial.out.code(),
                    trial.out.named("child_lost").len()
                );
                if trial.victim.is_some() {
                    done.push(trial);
                    break;
                }
                within /= 2;
            }
        }
    }
    assert!(!done.is_empty(), "{bin_name}: no run had a child to kill (seed {seed})");
    done
}

/// The pids of `pid`'s descendants, from `/proc/PID/task/TID/children` (much faster than a
/// scan of `/proc`, so short-lived children are seen too).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else { continue };
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in text.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

/// Every process whose session id is `sid` (a demo started by [`Demo::start`] leads its own).
pub fn session_members(sid: i32) -> Vec<ps::ProcInfo> {
    ps::all().into_iter().filter(|p| p.sid == sid).collect()
}

/// What a finished demo did.
#[derive(Debug)]
pub struct Output {
    pub cmd: String,
    pub status: ExitStatus,
    pub pid: i32,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<Value>,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the full diagnostics unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Output {
        if self.code() != Some(code) {
            self.fail(&format!("expected exit code {code}, got {:?}", self.status));
        }
        self
    }

    /// Events named `name`, in order.
    pub fn named(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }

    /// The only event named `name`; fails otherwise.
    pub fn one(&self, name: &str) -> &Value {
        let found = self.named(name);
        if found.len() != 1 {
            self.fail(&format!("expected one {name:?} event, found {}", found.len()));
        }
        found[0]
    }

    /// The texts of the `say` events (the lines for people) that begin with `start`, in order.
    pub fn said(&self, start: &str) -> Vec<String> {
        self.named("say")
            .iter()
            .filter_map(|e| e["data"]["text"].as_str())
            .filter(|text| text.starts_with(start))
            .map(str::to_string)
            .collect()
    }

    /// The `answer` event of the `--predict` question `id`; fails if there is none.
    pub fn answer(&self, id: &str) -> &Value {
        self.named("answer")
            .into_iter()
            .find(|e| e["data"]["id"] == id)
            .unwrap_or_else(|| self.fail(&format!("no answer to the question {id:?}")))
    }

    /// Fails unless no process of the demo's session is left (alive or zombie).
    pub fn assert_nothing_left(&self) -> &Output {
        let left = session_members(self.pid);
        if !left.is_empty() {
            for p in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            self.fail(&format!("processes left behind: {left:?}"));
        }
        self
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\ncommand: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.status, self.stdout, self.stderr
        );
    }
}

/// Runs a demo to the end (with the deadline) and returns what it did.
pub fn run(bin_name: &str, args: &[&str]) -> Output {
    Demo::start(bin_name, args).finish()
}

/// Runs a demo with `--json` and fails unless it exits 0 and leaves no process behind.
pub fn run_ok(bin_name: &str, args: &[&str]) -> Output {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(bin_name, &all);
    out.assert_code(0).assert_nothing_left();
    out
}

/// Runs `bin_name part FLAG VALUE` for each pair: each must be a usage error (exit 2) that names
/// the flag, runs nothing and leaves nothing behind. An unknown part (`no-such-part`) must be
/// one too, named in the error.
pub fn assert_usage_errors(bin_name: &str, part: &str, bad: &[(&str, &str)]) {
    let out = run(bin_name, &["no-such-part"]);
    out.assert_code(2).assert_nothing_left();
    assert!(out.stderr.contains("no-such-part"), "an unknown part is named: {}", out.stderr);
    for (flag, value) in bad {
        let out = run(bin_name, &[part, flag, value]);
        out.assert_code(2).assert_nothing_left();
        assert!(out.stderr.contains(flag), "{flag} {value}: {}", out.stderr);
        assert!(out.events.is_empty() && !out.stdout.contains("=="), "nothing ran: {}", out.stdout);
    }
}

/// A pid carried by an event.
pub fn pid_of(value: &Value) -> i32 {
    value.as_i64().unwrap_or_else(|| panic!("not a pid: {value}")) as i32
}

/// Waits until `pred` holds for the state of the OS (a `/proc` reading), polling with a
/// deadline; for facts the demo cannot announce, such as a state letter the kernel sets.
pub fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fails unless the count flag `flag` of `part` is capped at `cap`: `--help` says "at most
/// {cap}", and `cap + 1` is refused with exit 2 before anything starts (no event, no process
/// left), in a message naming the flag and the cap.
pub fn assert_capped(bin_name: &str, part: &[&str], flag: &str, cap: usize) {
    let mut help = part.to_vec();
    help.push("--help");
    let out = run(bin_name, &help);
    out.assert_code(0);
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    if !text.contains(&format!("at most {cap}")) {
        out.fail(&format!("--help must give {flag}'s cap: at most {cap}"));
    }
    let beyond = (cap + 1).to_string();
    let mut args = vec!["--json"];
    args.extend_from_slice(part);
    args.extend([flag, beyond.as_str()]);
    let out = run(bin_name, &args);
    out.assert_code(2).assert_nothing_left();
    if !out.stderr.contains(flag) || !out.stderr.contains(&cap.to_string()) {
        out.fail(&format!("the message must name {flag} and its cap {cap}"));
    }
    if !out.events.is_empty() {
        out.fail(&format!("{flag} {beyond}: something started before the refusal"));
    }
}

/// A demo with a pseudo-terminal on its standard input, as a learner at a terminal runs it
/// (its stdout is a pipe the test reads as text). It leads its own session; dropping it kills
/// that session's processes.
#[derive(Debug)]
pub struct TtyDemo {
    child: Child,
    terminal: std::fs::File,
    output: Receiver<Vec<u8>>,
    /// Everything read from its stdout so far.
    pub seen: String,
    reaped: bool,
}

impl TtyDemo {
    pub fn start(bin_name: &str, args: &[&str]) -> TtyDemo {
        let (master, slave) = openpty();
        let mut command = Command::new(bin(bin_name));
        command.args(args).stdin(Stdio::from(slave)).stdout(Stdio::piped()).stderr(Stdio::null());
        // Safety: setsid is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawning {bin_name}: {e}"));
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 || tx.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        TtyDemo {
            child,
            terminal: std::fs::File::from(master),
            output,
            seen: String::new(),
            reaped: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits (up to [`DEADLINE`]) until `text` has appeared `n` times in the output.
    pub fn wait_for(&mut self, text: &str, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.seen.matches(text).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(bytes) = self.output.recv_timeout(left) else {
                panic!("never saw {text:?} {n} time(s); output so far:\n{}", self.seen);
            };
            self.seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }

    /// Types `line` at the terminal.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        self.terminal.write_all(line.as_bytes()).expect("typing at the terminal");
    }

    /// Waits for the demo to exit and reads the rest of its output; fails unless it exited 0
    /// and left nothing behind.
    pub fn finish_ok(mut self) -> String {
        let status = self.child.wait().expect("waiting for the demo");
        self.reaped = true;
        while let Ok(bytes) = self.output.recv_timeout(DEADLINE) {
            self.seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        assert!(status.success(), "{status:?}\n{}", self.seen);
        assert!(session_members(self.pid()).is_empty(), "processes left behind");
        std::mem::take(&mut self.seen)
    }
}

impl Drop for TtyDemo {
    fn drop(&mut self) {
        // Once reaped, its pid may name somebody else's group: kill only a demo still ours.
        if !self.reaped {
            let pid = nix::unistd::Pid::from_raw(self.pid());
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A pseudo-terminal pair `(master, slave)`: a test that plays a learner at a terminal gives
/// the slave to the demo as its stdin and types on the master.
fn openpty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    (pty.master, pty.slave)
}

/// Runs `bin_name` with `args` and `--answer ID=GUESS` (and `--json`), fails unless it exits 0
/// and leaves nothing behind, and returns the `answer` event of the question `id`.
pub fn answer_of(bin_name: &str, args: &[&str], id: &str, guess: &str) -> Value {
    let given = format!("{id}={guess}");
    let mut all = args.to_vec();
    all.extend(["--answer", &given]);
    run_ok(bin_name, &all).answer(id).clone()
}

/// A prediction judged both ways against one run's figure: the guess `wrong` is judged wrong,
/// the answer's `actual` is `expected` (the run's own figure), and a second run that guesses
/// that figure is judged right.
pub fn judged_both_ways(
    bin_name: &str,
    args: &[&str],
    id: &str,
    wrong: &str,
    expected: impl Into<Value>,
) {
    let expected = expected.into();
    let answer = answer_of(bin_name, args, id, wrong);
    assert_eq!(answer["data"]["actual"], expected, "the run's own figure: {answer}");
    assert_eq!(answer["data"]["right"], false, "{wrong} is judged wrong: {answer}");
    let actual = match &answer["data"]["actual"] {
        Value::String(text) => text.clone(),
        figure => figure.to_string(),
    };
    let right = answer_of(bin_name, args, id, &actual);
    assert_eq!(right["data"]["right"], true, "{actual} is judged right: {right}");
}
