//! daemon: Python's daemonic children and a real Unix daemon, each claim checked from the
//! `--json` events and from `/proc` read here, in the test.

mod support;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{DEADLINE, Demo, Output, TempDir, ps, run, wait_until};

const BIN: &str = "daemon";

/// The pid in `data.<key>` of an event.
fn pid(event: &Value, key: &str) -> i32 {
    event["data"][key].as_i64().unwrap_or_else(|| panic!("no pid {key:?} in {event}")) as i32
}

/// The `started` event of the child called `name`.
fn started<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "started" && e["data"]["name"] == name)
        .unwrap_or_else(|| panic!("no started event for {name}"))
}

fn printed(events: &[Value], who: &str, text: &str) -> bool {
    events.iter().any(|e| e["event"] == "print" && e["who"] == who && e["data"]["text"] == text)
}

/// True while `pid` runs and is the daemon (not a zombie, not a reused pid).
fn daemon_alive(pid: i32) -> bool {
    ps::stat(pid).is_some_and(|i| i.state != 'Z' && i.comm == "daemond")
}

/// A temporary directory for the Unix daemon; dropping it kills any daemon it started, pass
/// or fail (the daemon is in a session of its own, out of reach of the harness's cleanup).
struct DaemonDir {
    dir: TempDir,
    seen: RefCell<Vec<i32>>,
}

impl DaemonDir {
    fn new(label: &str) -> DaemonDir {
        DaemonDir { dir: TempDir::new(label), seen: RefCell::new(Vec::new()) }
    }
    fn arg(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temp path")
    }
    fn pidfile(&self) -> PathBuf {
        self.dir.join("daemon.pid")
    }
    /// The pid in the pidfile, remembered for cleanup.
    fn daemon_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.pidfile()).expect("reading the pidfile");
        let pid = text.trim().parse().unwrap_or_else(|_| panic!("pidfile holds {text:?}"));
        self.seen.borrow_mut().push(pid);
        pid
    }
    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--json", "--dir", self.arg()]);
        run(BIN, &all)
    }
}

impl Drop for DaemonDir {
    fn drop(&mut self) {
        let mut pids = self.seen.borrow().clone();
        if let Some(pid) =
            std::fs::read_to_string(self.pidfile()).ok().and_then(|t| t.trim().parse().ok())
        {
            pids.push(pid);
        }
        for pid in pids.into_iter().filter(|p| daemon_alive(*p)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn is_a_daemonic_child_gone_as_soon_as_main_code_ends_while_a_normal_child_is_waited_for() {
    // --speed 1: Foo sleeps a whole second before `end123`, a wide margin for a busy machine.
    let mut demo = Demo::start(BIN, &["daemonic", "--json", "--speed", "1", "--hold", "60"]);
    demo.wait_event("hold");
    let events = demo.events().to_vec();
    let foo = pid(started(&events, "foo"), "pid");
    assert_eq!(started(&events, "foo")["data"]["daemon"], true);
    assert_eq!(started(&events, "bar")["data"]["daemon"], false);
    // Read /proc now, while the main process still runs: its code has ended, Foo is gone.
    assert!(ps::stat(foo).is_none(), "the daemonic child {foo} is still in /proc");
    assert!(ps::state_of(demo.pid()).is_some_and(|s| s != 'Z'), "the main process still runs");
    let ended: Vec<&Value> = events.iter().filter(|e| e["event"] == "ended").collect();
    let foo_end = ended.iter().find(|e| e["data"]["name"] == "foo").expect("foo ended");
    let bar_end = ended.iter().find(|e| e["data"]["name"] == "bar").expect("bar ended");
    assert_eq!(foo_end["data"]["exitcode"], -15, "Foo was terminated by SIGTERM");
    assert_eq!(bar_end["data"]["exitcode"], 0, "Bar finished");
    assert!(foo_end["data"]["at_ms"].as_u64() <= bar_end["data"]["at_ms"].as_u64());
    assert!(!printed(&events, "foo", "end123"), "Foo's last line never appears");
    assert!(printed(&events, "bar", "456") && printed(&events, "bar", "end456"));
    let main_print = events.iter().position(|e| e["data"]["text"] == "main---------");
    let code_end = events.iter().position(|e| e["event"] == "main_code_ended");
    assert!(main_print.is_some() && main_print < code_end, "main--------- is main's last line");
    // The other way to stop a demo: SIGTERM to the main process alone.
    demo.signal(Signal::SIGTERM);
    demo.finish().assert_code(143).assert_nothing_left();
}

#[test]
fn are_a_late_daemon_flag_and_a_daemonic_childs_child_refused_with_either_start_method() {
    for method in ["fork", "spawn"] {
        let out = run(BIN, &["rules", "--json", "--start-method", method]);
        out.assert_code(0).assert_nothing_left();
        let refused = out.named("refused");
        assert_eq!(refused.len(), 2, "two refusals ({method})");
        let late = refused.iter().find(|e| e["who"] == "daemon").expect("set_daemon refused");
        assert!(late["data"]["error"].as_str().unwrap().contains("before start"), "{late}");
        let nested = refused.iter().find(|e| e["who"] == "daemonic").expect("start refused");
        assert!(
            nested["data"]["error"].as_str().unwrap().contains("not allowed to have children"),
            "{nested}"
        );
        let joined = out.named("joined");
        let daemonic = joined.iter().find(|e| e["data"]["name"] == "daemonic").unwrap();
        assert_eq!(daemonic["data"]["exitcode"], 1, "the refusal ends the daemonic child (1)");
        let allowed = out.one("allowed");
        assert_eq!(allowed["who"], "normal", "a non-daemonic child may start children");
    }
}

#[test]
fn does_a_daemonic_child_outlive_a_parent_killed_with_sigkill() {
    // Two holds: the child under its living parent, then the same child adopted. The test
    // reads /proc right after each `hold` event; 4 s only has to outlast a scheduling delay.
    let mut demo = Demo::start(BIN, &["orphan", "--json", "--hold", "4"]);
    let first = demo.wait_event("hold");
    let held: Vec<i32> =
        first["data"]["pids"].as_array().expect("pids").iter().map(support::pid_of).collect();
    let [_, parent, child] = held[..] else { panic!("the first hold names three pids: {first}") };
    assert_eq!(ps::stat(child).map(|i| i.ppid), Some(parent), "before: PPID = its parent");
    let killed = demo.wait_event("parent_killed");
    assert_eq!((pid(&killed, "parent"), pid(&killed, "child")), (parent, child));
    assert_eq!(killed["data"]["exitcode"], -9);
    demo.wait_event("hold");
    assert!(ps::stat(parent).is_none(), "the parent is dead and reaped");
    let info = ps::stat(child).expect("the daemonic child still exists");
    assert_ne!(info.state, 'Z', "the daemonic child still runs");
    assert_eq!(info.ppid, demo.pid(), "the orphan was reparented to the demo (a subreaper)");
    // Ctrl-C to the whole group during the pause: the orphan is stopped and reaped too.
    demo.signal_group(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();
    assert!(ps::stat(child).is_none(), "the orphan is gone");
}

#[test]
fn does_pdeathsig_end_the_child_when_its_parent_is_killed_with_sigkill() {
    let mut demo = Demo::start(BIN, &["pdeathsig", "--json", "--hold", "60"]);
    let killed = demo.wait_event("parent_killed");
    let child = pid(&killed, "child");
    // The kernel's doing, read here: the child is dead, a zombie under the demo.
    wait_until("the child to be a zombie", || ps::state_of(child) == Some('Z'));
    assert_eq!(ps::stat(child).map(|i| i.ppid), Some(demo.pid()));
    demo.wait_event("hold");
    // Ctrl-C to the demo alone: it still reaps the zombie and exits 130.
    demo.signal(Signal::SIGINT);
    demo.finish().assert_code(130).assert_nothing_left();

    let out = run(BIN, &["pdeathsig", "--json", "--start-method", "spawn"]);
    out.assert_code(0).assert_nothing_left();
    assert_eq!(out.one("died_with_parent")["data"]["exitcode"], -9, "killed by SIGKILL");
}

#[test]
fn does_the_tour_run_every_part_and_leave_nothing_behind() {
    let dir = DaemonDir::new("tour");
    let out = dir.run(&["--speed", "1"]);
    out.assert_code(0).assert_nothing_left();
    let foo = out.named("ended").into_iter().find(|e| e["data"]["name"] == "foo").cloned();
    assert_eq!(foo.expect("foo ended")["data"]["exitcode"], -15);
    assert!(!printed(&out.events, "foo", "end123"));
    assert_eq!(out.named("refused").len(), 2);
    assert_eq!(out.one("orphan_stopped")["data"]["exitcode"], -15);
    assert_eq!(out.one("died_with_parent")["data"]["exitcode"], -9);
    let daemon = pid(out.one("daemon_started"), "pid");
    dir.seen.borrow_mut().push(daemon);
    assert_eq!(out.one("status")["data"]["running"], true);
    assert_eq!(out.one("daemon_stopped")["data"]["pidfile_removed"], true);
    wait_until("the daemon has exited", || !daemon_alive(daemon));
    let left: Vec<_> = std::fs::read_dir(dir.dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the tour removed its directory: {left:?}");
}

#[test]
fn is_the_unix_daemon_detached_from_its_launcher_and_does_it_survive_the_launchers_ctrl_c() {
    let dir = DaemonDir::new("detached");
    let mut launcher = Demo::start(BIN, &["start", "--json", "--dir", dir.arg(), "--hold", "60"]);
    let started = launcher.wait_event("daemon_started");
    launcher.wait_event("hold");
    let daemon = dir.daemon_pid();
    assert_eq!(pid(&started, "pid"), daemon, "the pidfile names the daemon");
    let me = ps::stat(launcher.pid()).expect("the launcher is still holding");
    let info = ps::stat(daemon).expect("the daemon runs");
    assert_ne!(info.sid, me.sid, "a session that is not the launcher's");
    assert_ne!(info.sid, info.pid, "not its session's leader (the second fork)");
    assert_eq!(info.tty_nr, 0, "no controlling terminal");
    assert_ne!(info.ppid, launcher.pid(), "its parent is not the launcher");
    assert_eq!(info.comm, "daemond");
    let cwd = std::fs::read_link(format!("/proc/{daemon}/cwd")).unwrap();
    assert_eq!(cwd, Path::new("/"), "it does not keep a directory busy");
    // Ctrl-C to the launcher's whole group: the launcher stops, the daemon is not in it.
    launcher.signal_group(Signal::SIGINT);
    launcher.finish().assert_code(130).assert_nothing_left();
    assert!(daemon_alive(daemon), "the daemon outlives its launcher");

    let out = dir.run(&["stop"]);
    out.assert_code(0);
    assert_eq!(pid(out.one("daemon_stopped"), "pid"), daemon);
    wait_until("the daemon has exited", || !daemon_alive(daemon));
}

#[test]
fn is_a_second_start_refused_and_does_stop_leave_no_process_and_no_pidfile() {
    let dir = DaemonDir::new("second");
    dir.run(&["start"]).assert_code(0).assert_nothing_left();
    let daemon = dir.daemon_pid();

    let second = dir.run(&["start"]);
    second.assert_code(1).assert_nothing_left();
    if !(second.stderr.contains("already running") && second.stderr.contains(&daemon.to_string())) {
        second.fail("the refusal does not say a daemon runs, with its pid");
    }
    assert_eq!(pid(second.one("already_running"), "pid"), daemon);
    assert_eq!(dir.daemon_pid(), daemon, "the pidfile is untouched");

    let status = dir.run(&["status"]);
    status.assert_code(0);
    let data = &status.one("status")["data"];
    assert_eq!(data["running"], true);
    assert_eq!(data["pid"], daemon);
    // Asleep in sigtimedwait between heartbeats, unless caught writing one.
    assert!(data["state"] == "S" || data["state"] == "R", "state from /proc: {data}");
    assert!(data["uptime_s"].as_f64().is_some_and(|s| s >= 0.0));
    let log = std::fs::read_to_string(dir.dir.join("daemon.log")).unwrap();
    assert!(log.lines().any(|l| l.contains("\"daemon_ready\"")), "the daemon logs: {log}");

    let stop = dir.run(&["stop"]);
    stop.assert_code(0).assert_nothing_left();
    assert_eq!(stop.one("daemon_stopped")["data"]["pidfile_removed"], true);
    wait_until("the daemon has exited", || !daemon_alive(daemon));
    assert!(!dir.pidfile().exists(), "no pidfile is left");
    let log = std::fs::read_to_string(dir.dir.join("daemon.log")).unwrap();
    assert!(log.lines().any(|l| l.contains("\"stopped\"")), "it stopped cleanly: {log}");
    let after = dir.run(&["status"]);
    assert_eq!(after.one("status")["data"]["running"], false);
}

#[test]
fn does_the_daemon_log_heartbeats_and_is_its_pidfile_known_stale_after_a_sigkill() {
    let dir = DaemonDir::new("stale");
    let launcher = dir.run(&["start", "--heartbeat", "0.05"]);
    launcher.assert_code(0);
    let first = dir.daemon_pid();
    // Its loop runs: heartbeats in its log, written by a process whose parent is not the
    // launcher.
    let log = dir.dir.join("daemon.log");
    let mut beat = None;
    wait_until("a heartbeat in the daemon's log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        beat = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "heartbeat");
        beat.is_some()
    });
    let beat = beat.unwrap();
    assert_eq!(beat["pid"], first);
    assert_ne!(beat["ppid"], launcher.pid, "the daemon's parent is not its launcher");
    // SIGKILL: the daemon cannot remove its pidfile, but its lock dies with it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).unwrap();
    wait_until("the daemon has died", || !daemon_alive(first));
    let status = dir.run(&["status"]);
    let data = &status.one("status")["data"];
    assert_eq!(data["running"], false);
    assert_eq!(data["stale_pid"], first);
    dir.run(&["start"]).assert_code(0);
    let second = dir.daemon_pid();
    assert_ne!(second, first);
    assert!(daemon_alive(second));
    dir.run(&["stop"]).assert_code(0);
    wait_until("the daemon has exited", || !daemon_alive(second));
}

/// Runs the demo with a changed environment (the harness does not set variables), with the
/// harness's deadline. Returns (exit code, stderr).
fn run_with_env(args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut command = Command::new(support::bin(BIN));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    command.env_remove("XDG_RUNTIME_DIR").env_remove("XDG_CACHE_HOME");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawning the demo");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not exit in time: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn are_the_default_paths_in_a_private_per_user_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = DaemonDir::new("defaults");
    // $XDG_RUNTIME_DIR first.
    let runtime = tmp.dir.join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, stderr) = run_with_env(&["start"], &[("XDG_RUNTIME_DIR", &runtime)]);
    assert_eq!(code, Some(0), "{stderr}");
    let pidfile = runtime.join("concurrency-demos/daemon.pid");
    let daemon: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    tmp.seen.borrow_mut().push(daemon);
    let (code, stderr) = run_with_env(&["stop"], &[("XDG_RUNTIME_DIR", &runtime)]);
    assert_eq!(code, Some(0), "{stderr}");
    wait_until("the daemon has exited", || !daemon_alive(daemon));
    assert!(!pidfile.exists());

    // Else ~/.cache/concurrency-demos, created private.
    let home = tmp.dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let (code, stderr) = run_with_env(&["status"], &[("HOME", &home)]);
    assert_eq!(code, Some(0), "{stderr}");
    let made = std::fs::metadata(home.join(".cache/concurrency-demos")).unwrap();
    assert_eq!(made.permissions().mode() & 0o777, 0o700);
    // A directory others can enter is refused, not used.
    std::fs::set_permissions(
        home.join(".cache/concurrency-demos"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (code, stderr) = run_with_env(&["start"], &[("HOME", &home)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("open to other users"), "{stderr}");
    assert!(!home.join(".cache/concurrency-demos/daemon.pid").exists(), "nothing was started");
}

#[test]
fn are_bad_flags_refused_with_exit_2_and_a_message_naming_them() {
    let file = TempDir::new("badflags");
    let not_a_dir = file.join("plain-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--speed", "0"], "--speed"),
        (&["start", "--heartbeat", "0"], "--heartbeat"),
        (&["bogus"], "bogus"),
        (&["status", "--dir", not_a_dir.to_str().unwrap()], "--dir"),
    ];
    for (args, named) in cases {
        let out = run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        if !out.stderr.contains(named) {
            out.fail(&format!("the message does not name {named}"));
        }
    }
}

/// Whatever child is killed (SIGKILL, at a random moment of any part A), does the demo still
/// end within a bound, reap everyone, and, when it exits 1, say which child was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] = &[&["daemonic"], &["rules"], &["orphan"], &["pdeathsig"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(60), ms(20_000), 16);
}

#[test]
fn is_a_guess_of_the_nested_daemonic_childs_exitcode_judged_against_this_run() {
    // Its start() failed.
    support::judged_both_ways(BIN, &["rules"], "nested", "0", 1);
}
