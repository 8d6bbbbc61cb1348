//! ps — the demo's own process table, read from `/proc` as `ps -o pid,ppid,stat,comm` would
//! show it, so a learner sees the states without a second terminal.
//!
//! The state letters (`man 5 proc`, field 3 of `/proc/PID/stat`):
//! `R` running *or* ready to run (the notes' 运行态 and 就绪态 are one letter; `schedstat`'s run
//! and wait times tell them apart over time), `S` interruptible sleep and `D` uninterruptible
//! sleep (both blocked, 阻塞态), `T` stopped by a signal, `Z` zombie (僵尸进程): ended but not
//! yet reaped by its parent. The words are the README's Glossary.

use std::time::Duration;

#[cfg(target_os = "linux")]
use procfs::FromRead;
use serde::Serialize;

/// One row of the process table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The state letter: R, S, D, T, t, Z, X, I.
    pub state: char,
    /// The short name (`comm`): what `ps -o comm` and `top` show; set by `PR_SET_NAME`.
    pub comm: String,
    /// The command line (`args`); empty for a zombie, whose memory is already gone.
    pub cmdline: String,
    /// The controlling terminal's device number; 0 means none (`?` in `ps`).
    pub tty_nr: i32,
    /// When it started, in clock ticks since boot (field 22). With the pid it names one process
    /// for good: a pid is reused only after its owner is reaped, and the newcomer starts later.
    pub start_ticks: u64,
}

/// What a state letter means, with the notes' term where there is one.
pub fn state_meaning(state: char) -> &'static str {
    match state {
        'R' => "running or ready to run (运行态/就绪态)",
        'S' => "interruptible sleep: blocked (阻塞态), waiting for an event",
        'D' => "uninterruptible sleep: blocked (阻塞态), deaf to signals, usually disk I/O",
        'T' => "stopped: suspended by a signal",
        't' => "stopped by a debugger",
        'Z' => "zombie (僵尸进程): ended, not yet reaped",
        'X' => "dead",
        'I' => "idle kernel thread",
        _ => "unknown",
    }
}

/// Reads `/proc/PID/stat` (and `cmdline`). `None` once the process is gone entirely.
pub fn stat(pid: i32) -> Option<ProcInfo> {
    let mut info = stat_only(pid)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<_> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
    info.cmdline = String::from_utf8_lossy(&args.join(&b' ')).into_owned();
    Some(info)
}

/// `/proc/PID/stat` without the command line.
fn stat_only(pid: i32) -> Option<ProcInfo> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The state letter of `pid`, or `None` if there is no such process.
pub fn state_of(pid: i32) -> Option<char> {
    stat_only(pid).map(|i| i.state)
}

/// Parses one `/proc/PID/stat` line (with the `procfs` crate, which finds the fields after
/// the name from its *last* `)`: a name may itself contain spaces and parentheses).
#[cfg(target_os = "linux")]
pub fn parse_stat(text: &str) -> Option<ProcInfo> {
    let s = procfs::process::Stat::from_read(text.as_bytes()).ok()?;
    Some(ProcInfo {
        pid: s.pid,
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        state: s.state,
        comm: s.comm,
        cmdline: String::new(),
        tty_nr: s.tty_nr,
        start_ticks: s.starttime,
    })
}

/// Where there is no `/proc`, there is nothing to parse.
#[cfg(not(target_os = "linux"))]
pub fn parse_stat(_text: &str) -> Option<ProcInfo> {
    None
}

/// When `pid` started, in clock ticks since boot (see [`ProcInfo::start_ticks`]); `None` if
/// there is no such process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat_only(pid).map(|i| i.start_ticks)
}

/// The numbered entries of a `/proc` folder: the pids of `/proc`, the tids of `/proc/PID/task`.
pub(crate) fn numbered(dir: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(dir) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Every process on the machine that can be read now.
pub fn all() -> Vec<ProcInfo> {
    let mut all: Vec<ProcInfo> = numbered("/proc").into_iter().filter_map(stat).collect();
    all.sort_by_key(|p| p.pid);
    all
}

/// Pids whose parent is `pid` right now (including zombies not yet reaped).
pub fn children_of(pid: i32) -> Vec<i32> {
    let is_child = |child: &i32| stat_only(*child).is_some_and(|i| i.ppid == pid);
    numbered("/proc").into_iter().filter(is_child).collect()
}

/// Prints this process and its descendants, depth first, as a table (and, with `--json`, the
/// event `ps` with the rows).
pub fn show_tree(title: &str) {
    fn walk(all: &[ProcInfo], pid: i32, depth: usize, out: &mut Vec<(usize, ProcInfo)>) {
        if let Some(info) = all.iter().find(|p| p.pid == pid) {
            out.push((depth, info.clone()));
            for child in all.iter().filter(|p| p.ppid == pid && p.pid != pid) {
                walk(all, child.pid, depth + 1, out);
            }
        }
    }
    let mut rows = Vec::new();
    walk(&all(), std::process::id() as i32, 0, &mut rows);
    show(title, &rows);
}

/// Prints the given rows as a table (and, with `--json`, the event `ps` with the rows).
pub fn show(title: &str, rows: &[(usize, ProcInfo)]) {
    let mut text = format!("{title}\n    PID    PPID STAT  COMMAND    (STAT: README.md#glossary)");
    for (depth, p) in rows {
        let command =
            if p.state == 'Z' { format!("[{}] <defunct>", p.comm) } else { p.comm.clone() };
        let indent = "  ".repeat(*depth);
        text.push_str(&format!("\n{:>7} {:>7} {:<5} {indent}{command}", p.pid, p.ppid, p.state));
    }
    let data: Vec<&ProcInfo> = rows.iter().map(|(_, p)| p).collect();
    crate::event!("ps", { "title": title, "rows": data }, "{text}");
}

/// One row of a process's thread table (`ps -L`), from `/proc/PID/task/TID/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadInfo {
    /// The kernel's thread id (`LWP` in `ps -L`); the main thread's is the pid.
    pub tid: i32,
    /// The thread's name as the kernel keeps it (15 bytes at most).
    pub comm: String,
    /// The state letter, as for a process (see [`state_meaning`]).
    pub state: char,
    /// The kernel function the thread sleeps in (`futex_wait_queue`, `do_poll`, ...), or `-`
    /// when it is running or the kernel does not tell.
    pub wchan: String,
    /// The CPU it last ran on (`PSR` in `ps`).
    pub processor: i32,
    /// CPU time in user and in kernel mode, in clock ticks (`sysconf(_SC_CLK_TCK)` a second).
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// Times it gave the CPU up by waiting (voluntary) or was made to (involuntary: preempted).
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
}

/// Clock ticks (of `/proc/.../stat`) as a duration.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    #[cfg(unix)]
    // Safety: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    #[cfg(not(unix))]
    let per_second = 100u64;
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / per_second))
}

/// The kernel function `pid` (its main thread) sleeps in (`/proc/PID/wchan`: `futex_do_wait`,
/// `do_poll`, ...); empty when it is running, gone, or the kernel does not tell.
pub fn wchan(pid: i32) -> String {
    read_wchan(&format!("/proc/{pid}"))
}

/// `wchan` of the process or thread folder `dir`; a kernel that hides it writes `0`.
fn read_wchan(dir: &str) -> String {
    let text = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
    let text = text.trim();
    if text == "0" { String::new() } else { text.to_string() }
}

/// Reads one thread of `pid` from `/proc/PID/task/TID/`; `None` once it is gone.
#[cfg(target_os = "linux")]
pub fn thread(pid: i32, tid: i32) -> Option<ThreadInfo> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let s = procfs::process::Stat::from_file(format!("{dir}/stat")).ok()?;
    let wchan = read_wchan(&dir);
    let status = procfs::process::Status::from_file(format!("{dir}/status")).ok();
    let status = status.as_ref();
    Some(ThreadInfo {
        tid: s.pid,
        comm: s.comm,
        state: s.state,
        wchan: if wchan.is_empty() { "-".into() } else { wchan },
        processor: s.processor?,
        utime_ticks: s.utime,
        stime_ticks: s.stime,
        voluntary_ctxt_switches: status.and_then(|st| st.voluntary_ctxt_switches).unwrap_or(0),
        nonvoluntary_ctxt_switches: status
            .and_then(|st| st.nonvoluntary_ctxt_switches)
            .unwrap_or(0),
    })
}

/// Where there is no `/proc`, there are no threads to read.
#[cfg(not(target_os = "linux"))]
pub fn thread(_pid: i32, _tid: i32) -> Option<ThreadInfo> {
    None
}

/// Every thread of `pid` right now, by thread id (the main thread first).
pub fn threads(pid: i32) -> Vec<ThreadInfo> {
    let dir = format!("/proc/{pid}/task");
    let mut rows: Vec<ThreadInfo> =
        numbered(&dir).into_iter().filter_map(|tid| thread(pid, tid)).collect();
    rows.sort_by_key(|t| (t.tid != pid, t.tid));
    rows
}

/// Where each of `pids` sleeps, as `ps -o pid,stat,wchan,comm` shows it: the rows (JSON, for
/// the event) and the table (the people's text, under `title`).
pub fn sleep_table(title: &str, pids: &[i32]) -> (Vec<serde_json::Value>, String) {
    let mut rows = Vec::new();
    let mut text = format!("{title}\n    PID STAT WCHAN                COMMAND");
    for (p, wchan) in pids.iter().filter_map(|&pid| stat(pid).map(|p| (p, wchan(pid)))) {
        let shown = if wchan.is_empty() { "-" } else { wchan.as_str() };
        text.push_str(&format!("\n{:>7} {:<4} {:<20} {}", p.pid, p.state, shown, p.comm));
        rows.push(serde_json::json!({
            "pid": p.pid, "state": p.state.to_string(), "wchan": wchan, "comm": p.comm
        }));
    }
    (rows, text)
}

/// Prints the thread table of `pid` (and, with `--json`, the event `threads` with the rows).
pub fn show_threads(title: &str, pid: i32) {
    let rows = threads(pid);
    let mut text = format!(
        "{title}\n    PID     TID STAT WCHAN                 PSR   CPU ms  VOL/INVOL  NAME   \
         (columns: README.md#glossary)"
    );
    for t in &rows {
        let cpu_ms = ticks_to_duration(t.utime_ticks + t.stime_ticks).as_millis();
        let switches = format!("{}/{}", t.voluntary_ctxt_switches, t.nonvoluntary_ctxt_switches);
        text.push_str(&format!(
            "\n{pid:>7} {:>7} {:<4} {:<20.20} {:>4} {cpu_ms:>8} {switches:>10}  {}",
            t.tid, t.state, t.wchan, t.processor, t.comm
        ));
    }
    crate::event!("threads", { "title": title, "pid": pid, "rows": rows }, "{text}");
}
