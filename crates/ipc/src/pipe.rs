//! Part 1: a pipe from parent to child, one way; end-of-file; the notes' `ps aux | grep`.

#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::predict::{self, Expect};
use common::process::{Role, Run, exitcode_name};
use common::report;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kit::{self, close_inherited, fd, raw};
use crate::{Cli, PIPE_MESSAGES, inherited, join_all};

pub static READER: Role = Role::of::<Reader>();
pub static PS_AUX: Role = Role::of::<PsAux>();
pub static GREP: Role = Role::of::<Grep>();

/// How long the fixed reader may take to see end-of-file before the demo calls it a failure.
const FIXED_BOUND: Duration = Duration::from_secs(30);

/// The child at the read end. It has the write end too, as every forked child has a copy of
/// each descriptor its parent had (a spawned one was given it here on purpose, to be the same).
#[derive(Serialize, Deserialize)]
pub struct Reader {
    read_fd: RawFd,
    write_fd: RawFd,
    /// The fix: close this process's own copy of the write end before reading.
    close_write_end: bool,
}

impl Run for Reader {
    const ROLE: &'static str = "pipe-reader";
    fn run(self) -> Result<()> {
        let me = report::who();
        if self.close_write_end {
            close_inherited(&[self.write_fd]); // the fix: only the parent holds a write end now
            common::event!("closed_write_end", { "reader": me, "fd": self.write_fd }, "{me} closed its own copy of the write end (fd {}) first", self.write_fd);
        } else {
            common::event!("kept_write_end", { "reader": me, "fd": self.write_fd }, "{me} keeps its copy of the write end (fd {}) open, as a forked child has it",
                    self.write_fd);
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut lines = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            // read(2) on an empty pipe sleeps until bytes come, or until no write end is open
            // anywhere: then it returns 0, end-of-file.
            let n = loop {
                match nix::unistd::read(fd(self.read_fd), &mut buf) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.context("read() on the pipe")?,
                }
            };
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                lines += 1;
                common::event!("received", { "reader": me, "line": line, "n": lines }, "{me} read: {line:?}");
            }
        }
        common::event!("eof", { "reader": me, "lines": lines }, "{me}: read() returned 0: end-of-file (every write end is closed); {lines} \
                 line(s) received");
        Ok(())
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("1. A pipe, one way: parent -> child (管道)");
    report::say(
        "pipe() gives two descriptors, a read end and a write end; what the parent writes into \
         one, the child reads from the other, first in first out. A reader sees end-of-file \
         only when no process anywhere holds a write end any more",
    );
    let guess = predict::ask(
        &cli.common,
        "eof",
        "the parent writes its lines and closes its write end; the reader keeps its own copy of \
         the write end (as a forked child has it): does it see end-of-file (read() -> 0)?",
        Expect::Choice(&["yes", "no"]),
    );
    one_way(cli, 1, false)?; // Ok only when the reader was seen stuck in read(2)
    guess.reveal(
        "no",
        "end-of-file comes only when no process anywhere holds a write end, and the reader \
         holds one itself: it waits for ever (the fix: close the end you do not use)",
    );
    one_way(cli, 2, true)?;
    ps_grep(cli)
}

/// The parent writes lines and closes its write end; the child reads until end-of-file. With
/// `fixed` false the child still holds a write end itself, and waits for ever.
fn one_way(cli: &Cli, n: usize, fixed: bool) -> Result<()> {
    let (r, w) = kit::pipe()?;
    let link = kit::fd_link(std::process::id() as i32, raw(&r));
    let name = format!("reader-{n}");
    let reader = Reader { read_fd: raw(&r), write_fd: raw(&w), close_write_end: fixed };
    let mut c = cli.common.child(&name, reader, &[raw(&r), raw(&w)]);
    c.start()?;
    let pid = c.pid().unwrap_or(0);
    common::event!("pipe", { "reader": name, "pid": pid, "pipe": link, "read_fd": raw(&r), "write_fd": raw(&w),
        "fixed": fixed }, "{link}: read end fd {}, write end fd {}; started {c}, which {}",
    raw(&r),
    raw(&w),
    if fixed {
        "closes its copy of the write end before reading (the fix)"
    } else {
        "keeps its copy of the write end"
    });
    let lines = cli.messages(PIPE_MESSAGES);
    for i in 1..=lines {
        let line = format!("line {i} from the parent");
        kit::write_all(w.as_fd(), format!("{line}\n").as_bytes()).context("write() to the pipe")?;
        common::event!("sent", { "line": line, "n": i }, "parent wrote: {line:?}");
    }
    drop(w); // the parent's write end: closed, the parent has nothing more to say
    common::event!("parent_closed", { "reader": name }, "parent closed its write end: the reader should now see end-of-file after the last line");
    if fixed {
        if c.join_timeout(FIXED_BOUND)?.is_none() {
            c.kill()?;
            c.join()?;
            bail!(
                "{name} closed its write end and still saw no end-of-file within {FIXED_BOUND:?}"
            );
        }
        if c.exitcode() != Some(0) {
            return Err(common::processes::lost::report(&c, "lines", 0));
        }
        common::event!("eof_fixed", { "reader": name, "pid": pid, "exitcode": c.exitcode() }, "{c}: it saw end-of-file and ended by itself");
        return Ok(());
    }

    // The reader cannot end: wait for it up to the deadline, as a careful parent would.
    let deadline = Duration::from_millis(cli.deadline_ms);
    if c.join_timeout(deadline)?.is_some() {
        return Err(common::processes::lost::report(&c, "lines", 0));
    }
    // It is still there; is it really waiting for end-of-file, and not merely slow? It must be
    // asleep in read(2) on the pipe, with nothing left in the pipe to read.
    let empty = || kit::bytes_in_pipe(r.as_fd()) == 0;
    let (now, stuck) =
        kit::wait_doing(pid, FIXED_BOUND, |d| d.asleep_in("read", Some(raw(&r))) && empty());
    if !stuck {
        if !c.is_alive() {
            return Err(common::processes::lost::report(&c, "lines", 0));
        }
        c.kill()?;
        c.join()?;
        bail!("{name} should be asleep in read(2) on an empty pipe, but is {now:?}");
    }
    let now = now.expect("read when stuck");
    let own_write_ends: Vec<RawFd> = kit::fds_pointing_to(pid, &link)
        .into_iter()
        .filter(|&f| kit::fd_mode(pid, f) == "w")
        .collect();
    common::event!("eof_hang", { "reader": name, "pid": pid, "deadline_ms": cli.deadline_ms, "state": now.state,
                "syscall": now.syscall, "fd": now.fd, "pipe": link,
                "own_write_fds": own_write_ends }, "{name} has received everything and still waits, {}ms later: {}; its own fd {:?} is \
             the pipe's write end, so end-of-file never comes (it would wait for ever)",
            cli.deadline_ms,
            now.describe(),
            own_write_ends);
    cli.common.hold("the reader waiting for an end-of-file that never comes", &[pid]);
    c.terminate()?;
    c.join()?;
    common::event!("eof_hang_ended", { "reader": name, "pid": pid, "exitcode": c.exitcode(),
                "status": exitcode_name(c.exitcode()) }, "deadline passed: {c} was terminated. The fix: close the end you do not use");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `ps aux | grep ipc`: two programs joined by a pipe, as a shell runs them.

/// The left side of `ps aux | grep`: writes one line per process on the machine, then ends.
#[derive(Serialize, Deserialize)]
pub struct PsAux {
    write_fd: RawFd,
    ready_fd: RawFd,
    gate_fd: RawFd,
    close: Vec<RawFd>,
}

impl Run for PsAux {
    const ROLE: &'static str = "ps-aux";
    fn run(self) -> Result<()> {
        close_inherited(&self.close);
        kit::write_all(fd(self.ready_fd), b"w").context("saying ready")?;
        kit::read_full(fd(self.gate_fd), &mut [0u8]).context("waiting at the start gate")?;
        let mut out = String::new();
        for p in common::ps::all() {
            let command = if p.cmdline.is_empty() { format!("[{}]", p.comm) } else { p.cmdline };
            out.push_str(&format!(
                "{:>7} {:>7} {} {:<15} {command}\n",
                p.pid, p.ppid, p.state, p.comm
            ));
        }
        // Ending closes the write end: the last one, so grep sees end-of-file.
        kit::write_all(fd(self.write_fd), out.as_bytes()).context("writing to the pipe")
    }
}

/// The right side: reads lines until end-of-file and keeps those with the pattern.
#[derive(Serialize, Deserialize)]
pub struct Grep {
    read_fd: RawFd,
    ready_fd: RawFd,
    pattern: String,
    close: Vec<RawFd>,
}

impl Run for Grep {
    const ROLE: &'static str = "grep";
    fn run(self) -> Result<()> {
        close_inherited(&self.close);
        kit::write_all(fd(self.ready_fd), b"r").context("saying ready")?;
        let mut text = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = kit::read_full(fd(self.read_fd), &mut buf).context("read() on the pipe")?;
            text.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                break; // end-of-file
            }
        }
        let text = String::from_utf8_lossy(&text);
        let mut matched = 0;
        for line in text.lines().filter(|l| l.contains(&self.pattern)) {
            matched += 1;
            common::event!("grep_match", { "line": line }, "| {line}");
        }
        common::event!("grep_done", { "lines": text.lines().count(), "matched": matched, "pattern": self.pattern }, "grep read {} line(s) until end-of-file, {matched} with {:?}",
                text.lines().count(),
                self.pattern);
        Ok(())
    }
}

fn ps_grep(cli: &Cli) -> Result<()> {
    let pattern = report::who().to_string();
    report::say(format!(
        "the notes' `ps aux | grep {pattern}` (`tasklist | findstr python` on Windows): two \
         programs, two processes with separate memories, and the shell's pipe between them. \
         Run here as two children of this demo"
    ));
    let (r, w) = kit::pipe()?;
    let (ready_r, ready_w) = kit::pipe()?;
    let (gate_r, gate_w) = kit::pipe()?;
    let link = kit::fd_link(std::process::id() as i32, raw(&r));
    let ps = PsAux {
        write_fd: raw(&w),
        ready_fd: raw(&ready_w),
        gate_fd: raw(&gate_r),
        close: inherited(cli, &[raw(&r), raw(&ready_r), raw(&gate_w)]),
    };
    let grep = Grep {
        read_fd: raw(&r),
        ready_fd: raw(&ready_w),
        pattern: pattern.clone(),
        close: inherited(cli, &[raw(&w), raw(&ready_r), raw(&gate_r), raw(&gate_w)]),
    };
    let mut children = vec![
        cli.common.child("ps-aux", ps, &[raw(&w), raw(&ready_w), raw(&gate_r)]),
        cli.common.child("grep", grep, &[raw(&r), raw(&ready_w)]),
    ];
    for c in &mut children {
        c.start()?;
    }
    // The parent keeps none of the pipe: with a write end here, grep would never end.
    drop((r, w, ready_w, gate_r));
    kit::read_full_watching(ready_r.as_fd(), &mut [0u8; 2], &mut children, "lines")?;
    let (writer, reader) = (children[0].pid().unwrap_or(0), children[1].pid().unwrap_or(0));
    let ends = |pid: i32| -> Vec<serde_json::Value> {
        kit::fds_pointing_to(pid, &link)
            .into_iter()
            .map(|f| json!({ "fd": f, "mode": kit::fd_mode(pid, f) }))
            .collect()
    };
    let said = |ends: &[serde_json::Value]| -> String {
        let each: Vec<String> = ends
            .iter()
            .map(|e| {
                format!("fd {} ({})", e["fd"], if e["mode"] == "w" { "write" } else { "read" })
            })
            .collect();
        if each.is_empty() { "nothing".to_string() } else { each.join(", ") }
    };
    let (writer_ends, reader_ends) = (ends(writer), ends(reader));
    let parent_ends = ends(std::process::id() as i32);
    let inode = kit::link_inode(&link);
    common::event!("same_pipe", { "pipe": link, "inode": inode,
                "writer": { "name": "ps-aux", "pid": writer, "ends": writer_ends },
                "reader": { "name": "grep", "pid": reader, "ends": reader_ends },
                "parent_ends": parent_ends }, "ps-aux (pid {writer}) holds {} and grep (pid {reader}) holds {} of {link}: one \
             pipe, one inode, a write end in one process and a read end in the other; this \
             demo holds {}",
            said(&writer_ends),
            said(&reader_ends),
            said(&parent_ends));
    cli.common
        .hold(&format!("ps-aux and grep joined by {link} (ls -l /proc/PID/fd)"), &[writer, reader]);
    kit::write_all(gate_w.as_fd(), b"go").context("opening the start gate")?;
    drop(gate_w);
    join_all(&mut children, "lines")?;
    report::say(
        "the shell does the same for `ps aux | grep`: pipe(), two forks, each child moves its \
         end onto stdout or stdin (dup2) and closes the rest, and grep ends at end-of-file, when \
         ps has exited and no write end is left",
    );
    // Seed 003: "命令本质上就是一个脚本文件". Look at the real ps and grep: their first bytes.
    let kinds: Vec<String> = ["ps", "grep"]
        .iter()
        .filter_map(|name| {
            let path = std::env::var_os("PATH")?;
            let found = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())?;
            let mut head = [0u8; 4];
            let kind = match std::fs::File::open(&found)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            {
                Ok(()) if head == *b"\x7fELF" => "an ELF executable (compiled machine code)",
                Ok(()) if head.starts_with(b"#!") => "a script (#!)",
                _ => "unreadable here",
            };
            Some(format!("{} is {kind}", found.display()))
        })
        .collect();
    if !kinds.is_empty() {
        common::event!(
            "commands",
            { "kinds": kinds },
            "{}: a command is a program file the shell runs as a process, usually compiled, \
             not a script as seed 003 says (命令本质上就是一个脚本文件)",
            kinds.join("; ")
        );
    }
    Ok(())
}
