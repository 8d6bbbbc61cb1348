//! Part B, beyond the notes: a real Unix daemon (精灵进程): `start` (double fork, setsid,
//! pidfile under flock), `status` from `/proc`, `stop` with SIGTERM through a pidfd.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::daemonize::{self, Claim, DaemonSetup, PidFile, Probe, ProcessHandle, Ready};
use anyhow::{Context, Result, bail};
use common::process;
use common::{ps, report, signals};

use crate::{Cli, DEFAULT_STOP_TIMEOUT_SECS, SIGHUP, SIGTERM};

/// The directory under `$XDG_RUNTIME_DIR` (or `~/.cache`) for the daemon's pidfile and log.
const APP_DIR: &str = "concurrency-demos";
const PIDFILE_NAME: &str = "daemon.pid";
const LOG_NAME: &str = "daemon.log";
/// The daemon's name in `ps -o comm` and in its log lines.
const DAEMON_NAME: &str = "daemond";
/// How long `start` waits for the daemon's "ready" (it takes milliseconds).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Paths {
    pub dir: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    pub fn new(dir: PathBuf) -> Paths {
        Paths { pidfile: dir.join(PIDFILE_NAME), log: dir.join(LOG_NAME), dir }
    }
}

/// `--dir`, or the per-user runtime directory.
pub fn daemon_dir(cli: &Cli) -> Result<PathBuf> {
    match &cli.dir {
        Some(dir) => daemonize::prepare_dir(dir),
        None => daemonize::runtime_dir(APP_DIR),
    }
}

/// `daemon start`: claims the pidfile, double-forks the daemon, waits for its "ready", and
/// checks in `/proc` that it is detached. Returns the daemon's pid.
pub fn start(cli: &Cli, paths: &Paths, heartbeat: Duration, hold: bool) -> Result<i32> {
    report::section("Part B: a real Unix daemon (精灵进程): start");
    report::say(
        "fork -> setsid (a new session, no terminal) -> fork again, the middle process exits \
         (the daemon is not the session leader) -> umask 027, chdir /, output to a log file",
    );
    let me = std::process::id() as i32;
    let launcher = ps::stat(me).context("reading /proc/self/stat")?;
    // The runner made this process a child subreaper, so that orphans come back to it. The
    // daemon must not: when its middle parent exits it would become our child again, tied
    // to the launcher. Turned off before the double fork.
    signals::set_child_subreaper(false);
    let pidfile = match PidFile::claim(&paths.pidfile)? {
        Claim::HeldBy(pid) => {
            let who = pid.map_or("a daemon that is starting".to_string(), |p| format!("pid {p}"));
            common::event!("already_running", { "pid": pid, "pidfile": paths.pidfile }, "{} is locked by {who}", paths.pidfile.display());
            bail!(
                "a daemon is already running ({who}; {} is locked): run `daemon stop` first",
                paths.pidfile.display()
            );
        }
        Claim::Claimed { pidfile, stale } => {
            if let Some(pid) = stale {
                report::say(format!(
                    "{} names pid {pid}, but nobody holds its lock: that daemon died without \
                     cleaning up (SIGKILL?). Taking the pidfile over.",
                    paths.pidfile.display()
                ));
            }
            pidfile
        }
    };
    let setup = DaemonSetup { name: DAEMON_NAME, log: &paths.log, ready_timeout: READY_TIMEOUT };
    // fork, setsid, fork: see daemonize.rs. Returns here, in the launcher, after "ready".
    let pid = daemonize::spawn_daemon(&setup, pidfile, move |pidfile, ready| {
        daemon_main(pidfile, ready, heartbeat)
    })?;
    let daemon = ps::stat(pid).context("the daemon vanished right after it reported ready")?;
    let mut table = String::from("    PID    PPID    PGID     SID  TTY  STAT  COMMAND");
    for (p, role) in [(&launcher, "launcher (this process)"), (&daemon, "the daemon")] {
        let tty = if p.tty_nr == 0 { "?".to_string() } else { p.tty_nr.to_string() };
        table.push_str(&format!(
            "\n{:>7} {:>7} {:>7} {:>7}  {tty:<4} {:<5} {}   <- {role}",
            p.pid, p.ppid, p.pgid, p.sid, p.state, p.comm
        ));
    }
    common::event!("daemon_started", { "pid": pid, "ppid": daemon.ppid, "pgid": daemon.pgid, "sid": daemon.sid,
                "tty_nr": daemon.tty_nr, "launcher": me, "launcher_sid": launcher.sid,
                "pidfile": paths.pidfile, "log": paths.log }, "started the daemon: pid {pid}, pidfile {}, log {}\n{table}",
            paths.pidfile.display(),
            paths.log.display());
    // The demo checks its own claims.
    let mut broken = Vec::new();
    if daemon.sid == launcher.sid {
        broken.push("it is in the launcher's session");
    }
    if daemon.sid == daemon.pid {
        broken.push("it leads its session");
    }
    if daemon.tty_nr != 0 {
        broken.push("it has a controlling terminal");
    }
    if daemon.ppid == me {
        broken.push("its parent is the launcher");
    }
    if !broken.is_empty() {
        let _ = stop(paths, Duration::from_secs_f64(DEFAULT_STOP_TIMEOUT_SECS));
        bail!("the daemon is not detached: {}", broken.join(", "));
    }
    report::say(format!(
        "checked in /proc: session {} is not the launcher's ({}), the daemon does not lead it \
         (sid != pid), no controlling terminal (tty ?), parent {} is not the launcher",
        daemon.sid, launcher.sid, daemon.ppid
    ));
    if hold {
        cli.common.hold("the daemon runs detached; its launcher is still here", &[me, pid]);
    }
    Ok(pid)
}

/// The daemon itself, after `daemonize` detached it: cwd `/`, umask 027, output to
/// the log. It is not under the demo runner's signal watcher any more (that thread stayed in
/// the launcher), so it handles its own signals: blocked, and taken with `sigtimedwait`.
fn daemon_main(mut pidfile: PidFile, ready: &mut Ready, heartbeat: Duration) -> Result<()> {
    // Blocked before "ready": a SIGTERM sent the moment `start` returns waits, pending.
    daemonize::block_stop_signals()?;
    let me = std::process::id() as i32;
    pidfile.write_pid(me)?;
    let info = ps::stat(me).context("reading /proc/self/stat")?;
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    common::event!("daemon_ready", { "pid": me, "sid": info.sid, "pgid": info.pgid, "tty_nr": info.tty_nr,
                "cwd": cwd, "umask": format!("{:03o}", daemonize::DAEMON_UMASK) }, "ready: session {}, no terminal, cwd {cwd}, umask {:03o}, pidfile {}",
            info.sid,
            daemonize::DAEMON_UMASK,
            pidfile.path().display());
    ready.notify()?;
    let mut beats = 0u64;
    loop {
        match daemonize::wait_for_stop_signal(heartbeat)? {
            None => {
                beats += 1;
                let ppid = parent_pid();
                common::event!("heartbeat", { "n": beats, "ppid": ppid }, "heartbeat {beats} (parent {ppid})");
            }
            Some(SIGHUP) => common::event!(
                "sighup",
                {},
                "SIGHUP: a daemon has no terminal to lose; by convention it means \"reload\""
            ),
            Some(signo) => {
                let name = process::signal_name(signo).unwrap_or("signal");
                common::event!("stopping", { "signal": name }, "{name}: removing {} and exiting", pidfile.path().display());
                // Removed while the lock is still held; exiting releases the lock.
                pidfile.remove()?;
                common::event!("stopped", {}, "exited cleanly");
                return Ok(());
            }
        }
    }
}

fn parent_pid() -> i32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id() as i32
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// `daemon status`: what the pidfile and `/proc` say.
pub fn status(paths: &Paths) -> Result<()> {
    report::section("Part B: status");
    let file = paths.pidfile.display();
    match daemonize::probe(&paths.pidfile)? {
        Probe::Absent => {
            common::event!("status", { "running": false, "pidfile": paths.pidfile }, "not running: there is no {file}")
        }
        Probe::Stale(pid) => {
            common::event!("status", { "running": false, "stale_pid": pid, "pidfile": paths.pidfile }, "not running: {file} names pid {pid:?} but nobody holds its lock (the daemon was \
                 killed without cleaning up); `daemon start` takes it over")
        }
        Probe::Running(None) => {
            common::event!("status", { "running": true, "pid": null, "pidfile": paths.pidfile }, "starting: {file} is locked but holds no pid yet")
        }
        Probe::Running(Some(pid)) => {
            let info = ps::stat(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
            let uptime = started_ago(pid).unwrap_or_default().as_secs_f64();
            let last = std::fs::read_to_string(&paths.log)
                .ok()
                .and_then(|t| t.lines().last().map(String::from))
                .unwrap_or_default();
            let tty =
                if info.tty_nr == 0 { "none (?)".to_string() } else { info.tty_nr.to_string() };
            common::event!("status", { "running": true, "pid": pid, "state": info.state.to_string(),
                        "ppid": info.ppid, "sid": info.sid, "tty_nr": info.tty_nr,
                        "uptime_s": uptime, "pidfile": paths.pidfile, "log": paths.log,
                        "last_log_line": last }, "running: pid {pid}, state {} ({}), up {uptime:.1}s, parent {}, session {}, \
                     terminal {tty}\n  last log line: {last}",
                    info.state,
                    ps::state_meaning(info.state),
                    info.ppid,
                    info.sid);
        }
    }
    Ok(())
}

/// `daemon stop`: SIGTERM through a pidfd, then wait (bounded) for the daemon to exit.
pub fn stop(paths: &Paths, timeout: Duration) -> Result<()> {
    report::section("Part B: stop");
    let pid = match daemonize::probe(&paths.pidfile)? {
        Probe::Absent => {
            common::event!("stop", { "was_running": false }, "not running: nothing to stop");
            return Ok(());
        }
        Probe::Stale(pid) => {
            common::event!("stop", { "was_running": false, "stale_pid": pid }, "not running ({} is stale): nothing to stop", paths.pidfile.display());
            return Ok(());
        }
        Probe::Running(None) => bail!("the daemon is still starting: run `daemon stop` again"),
        Probe::Running(Some(pid)) => pid,
    };
    // A pidfd names this very process; checking the pidfile again once it is open rules out a
    // pid that was reused in between.
    let handle = ProcessHandle::open(pid)?;
    if daemonize::probe(&paths.pidfile)? != Probe::Running(Some(pid)) {
        bail!("the daemon changed while `stop` looked at it: run `daemon stop` again");
    }
    let t0 = Instant::now();
    handle.send_signal(SIGTERM)?;
    common::event!("sent", { "pid": pid, "signal": "SIGTERM" }, "SIGTERM -> pid {pid}; waiting up to {timeout:?} for it to exit");
    if !handle.wait_exit(timeout)? {
        bail!(
            "pid {pid} did not exit within {timeout:?} after SIGTERM; `kill -KILL {pid}` ends \
             it (its pidfile then stays behind, stale)"
        );
    }
    let pidfile_left = paths.pidfile.exists();
    common::event!("daemon_stopped", { "pid": pid, "waited_ms": t0.elapsed().as_millis() as u64,
                "pidfile_removed": !pidfile_left }, "pid {pid} exited after {:.0?}; its pidfile is {} (its parent, not us, reaps it)",
            t0.elapsed(),
            if pidfile_left { "still there" } else { "removed" });
    if pidfile_left {
        bail!("the daemon exited but left {} behind", paths.pidfile.display());
    }
    Ok(())
}

/// The tour prints what the daemon wrote to its log.
pub fn show_log(paths: &Paths) {
    let text = std::fs::read_to_string(&paths.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    common::event!("log", { "path": paths.log, "lines": lines.len() }, "the daemon's log, {}:", paths.log.display());
    report::plain(lines.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"));
}

/// How long ago `pid` started (`ps -o etime`): its start time against `/proc/uptime`.
fn started_ago(pid: i32) -> Option<Duration> {
    let started = ps::ticks_to_duration(ps::start_ticks(pid)?);
    let uptime: f64 =
        std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(uptime).saturating_sub(started))
}
