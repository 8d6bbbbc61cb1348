//! The counter of parts 4 and 5: `--processes` processes each add 1 to one shared number
//! `--increments` times, in shared memory, in a file, or through a pipe, with or without a lock.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::process::{Process, Role, Run};
use common::report;
use py_multiprocessing::shm::{RobustMutex, Shareable, SharedBlock, Wait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kit::{self, Meeting, close_inherited, fd, raw};
use crate::{Cli, inherited, join_all};

pub static INCREMENTER: Role = Role::of::<Incrementer>();

/// The name the kernel shows for the counter's memory: `/memfd:ipc-counter (deleted)`.
pub const BLOCK_NAME: &std::ffi::CStr = c"ipc-counter";

/// What lives in the shared memory: a process-shared lock and the counter.
#[repr(C)]
pub struct Counter {
    lock: RobustMutex,
    value: AtomicU32,
}

// Safety: zeroes are a valid counter and a mutex-to-be (initialised in `create` before the
// block is shared); the counter is an atomic and the mutex is process-shared.
unsafe impl Shareable for Counter {}

/// How the processes add 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Way {
    /// Shared memory, `v = counter; counter = v + 1`: Python's `v.value += 1`.
    ShmNoLock,
    /// The same under the process-shared lock: `with v.get_lock(): v.value += 1`.
    ShmLock,
    /// One atomic instruction, `fetch_add` (Python has no such thing).
    ShmAtomic,
    /// A file: open, read the number, truncate, write the number + 1, close.
    FileNoLock,
    /// The same under `flock(2)`.
    FileLock,
    /// The number travels in a pipe as one message: whoever reads it holds it, adds 1, and
    /// writes it back. The pipe is the lock (like a `Queue(1)`).
    PipeToken,
}

impl Way {
    pub fn label(self) -> &'static str {
        match self {
            Way::ShmNoLock => "shared memory, no lock",
            Way::ShmLock => "shared memory + lock",
            Way::ShmAtomic => "shared memory, atomic",
            Way::FileNoLock => "file, no lock",
            Way::FileLock => "file + flock",
            Way::PipeToken => "pipe (the count as a message)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Way::ShmNoLock => "shm-no-lock",
            Way::ShmLock => "shm-lock",
            Way::ShmAtomic => "shm-atomic",
            Way::FileNoLock => "file-no-lock",
            Way::FileLock => "file-lock",
            Way::PipeToken => "pipe",
        }
    }

    /// True where nothing but the way itself keeps updates from being lost.
    pub fn safe(self) -> bool {
        !matches!(self, Way::ShmNoLock | Way::FileNoLock)
    }

    /// The line each process runs, for people.
    pub fn code(self) -> &'static str {
        match self {
            Way::ShmNoLock => "v = counter; counter = v + 1",
            Way::ShmLock => "lock(); v = counter; counter = v + 1; unlock()",
            Way::ShmAtomic => "counter.fetch_add(1)",
            Way::FileNoLock => "open; v = read(); truncate; write(v + 1); close",
            Way::FileLock => "open; flock(LOCK_EX); v = read(); truncate; write(v + 1); close",
            Way::PipeToken => "v = read(pipe); write(pipe, v + 1)",
        }
    }
}

/// The things the counter lives in, made by the parent.
pub struct Stores {
    pub block: SharedBlock<Counter>,
    /// The counter file: `O_TMPFILE`, a file with no name (nothing left behind, even after
    /// Ctrl-C); each process opens it through `/proc/self/fd/N`, which works like a path.
    pub file: OwnedFd,
    pub file_kind: String,
    pub token: (OwnedFd, OwnedFd),
}

impl Stores {
    pub fn new() -> Result<Stores> {
        let block = SharedBlock::<Counter>::create(BLOCK_NAME, |c| {
            // Safety: the block is not shared yet.
            unsafe { (*c).lock.init() }
        })
        .context("the counter's shared memory")?;
        let (file, file_kind) = counter_file()?;
        Ok(Stores { block, file, file_kind, token: kit::pipe()? })
    }

    /// Every descriptor a spawned child needs.
    pub fn fds(&self) -> Vec<RawFd> {
        vec![self.block.raw_fd(), raw(&self.file), raw(&self.token.0), raw(&self.token.1)]
    }

    /// Sets the counter to 0 wherever `way` keeps it.
    fn reset(&self, way: Way) -> Result<()> {
        match way {
            Way::ShmNoLock | Way::ShmLock | Way::ShmAtomic => {
                self.block.get().value.store(0, Ordering::SeqCst);
            }
            Way::FileNoLock | Way::FileLock => write_file(raw(&self.file), 0)?,
            Way::PipeToken => kit::write_all(self.token.1.as_fd(), &0u64.to_le_bytes())?,
        }
        Ok(())
    }

    /// The counter's final value.
    fn value(&self, way: Way) -> Result<u64> {
        Ok(match way {
            Way::ShmNoLock | Way::ShmLock | Way::ShmAtomic => {
                u64::from(self.block.get().value.load(Ordering::SeqCst))
            }
            Way::FileNoLock | Way::FileLock => read_file(raw(&self.file))?.unwrap_or(0),
            Way::PipeToken => {
                let mut token = [0u8; 8];
                kit::read_full(self.token.0.as_fd(), &mut token)?;
                u64::from_le_bytes(token)
            }
        })
    }
}

/// An anonymous file in the temporary folder (`O_TMPFILE`), or a memfd where the filesystem
/// has no `O_TMPFILE`.
fn counter_file() -> Result<(OwnedFd, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let opened = File::options().read(true).write(true).custom_flags(libc::O_TMPFILE).open(&dir);
    let (file, kind) = match opened {
        Ok(file) => (OwnedFd::from(file), format!("a file with no name in {}", dir.display())),
        Err(_) => {
            let fd = nix::sys::memfd::memfd_create(
                c"ipc-counter-file",
                nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
            )
            .context("memfd_create() for the counter file")?;
            (fd, "a memfd (the temporary folder has no O_TMPFILE)".to_string())
        }
    };
    write_file(raw(&file), 0)?;
    Ok((file, kind))
}

/// Opens the counter file anew, as a path: a description of this process's own, so that a
/// flock on it excludes the other processes (a shared, inherited description would not).
fn open_file(number: RawFd) -> Result<File> {
    let path = format!("/proc/self/fd/{number}");
    File::options().read(true).write(true).open(&path).with_context(|| format!("open({path})"))
}

/// The number in the file; `None` if the file does not hold a number (a torn read).
fn read_file(number: RawFd) -> Result<Option<u64>> {
    let mut text = String::new();
    open_file(number)?.read_to_string(&mut text).context("read() of the counter file")?;
    Ok(text.trim().parse().ok())
}

fn write_file(number: RawFd, value: u64) -> Result<()> {
    let mut file = open_file(number)?;
    file.set_len(0).context("ftruncate() of the counter file")?;
    file.write_all(value.to_string().as_bytes()).context("write() of the counter file")
}

/// One process of the counter: adds 1, `increments` times, the way it is told.
#[derive(Serialize, Deserialize)]
pub struct Incrementer {
    way: Way,
    /// The shared block, the counter file, and the token pipe's ends.
    block_fd: RawFd,
    file_fd: RawFd,
    token: (RawFd, RawFd),
    increments: usize,
    meeting: Meeting,
    meet_every: usize,
    results_fd: RawFd,
    close: Vec<RawFd>,
    /// Report where this process mapped the shared memory.
    show_map: bool,
}

impl Run for Incrementer {
    const ROLE: &'static str = "incrementer";
    fn run(self) -> Result<()> {
        close_inherited(&self.close);
        let me = report::who();
        // Safety: the parent made the block with SharedBlock::<Counter>::create and passed
        // this number.
        let block = unsafe { SharedBlock::<Counter>::map_passed(self.block_fd) }
            .context("mapping the counter's shared memory")?;
        if self.show_map {
            let line = maps_line(block.addr());
            common::event!("mapped", { "addr": format!("{:#x}", block.addr()), "maps": line,
                        "inode": line.as_deref().and_then(maps_inode) }, "{me} mapped the counter at {:#x}: {}",
                    block.addr(),
                    line.as_deref().unwrap_or("?"));
        }
        let counter = block.get();
        let mut torn_reads = 0u64;
        self.meeting.wait()?; // everyone starts together
        let began = Instant::now();
        for i in 0..self.increments {
            let meet = self.meet_every > 0 && i % self.meet_every == 0;
            match self.way {
                Way::ShmNoLock => {
                    let v = counter.value.load(Ordering::Relaxed);
                    if meet {
                        self.meeting.wait()?; // every process has read the same v
                    }
                    counter.value.store(v + 1, Ordering::Relaxed);
                }
                Way::ShmLock => {
                    if meet {
                        self.meeting.wait()?;
                    }
                    let (_, guard) = counter.lock.lock(Wait::Forever)?.context("the lock")?;
                    let v = counter.value.load(Ordering::Relaxed);
                    counter.value.store(v + 1, Ordering::Relaxed);
                    drop(guard);
                }
                Way::ShmAtomic => {
                    if meet {
                        self.meeting.wait()?;
                    }
                    counter.value.fetch_add(1, Ordering::Relaxed);
                }
                Way::FileNoLock | Way::FileLock => {
                    let locked = self.way == Way::FileLock;
                    if meet && locked {
                        self.meeting.wait()?;
                    }
                    let mut file = open_file(self.file_fd)?;
                    if locked {
                        file.lock().context("flock(LOCK_EX)")?;
                    }
                    let mut text = String::new();
                    file.read_to_string(&mut text).context("read() of the counter file")?;
                    let v = match text.trim().parse::<u64>() {
                        Ok(v) => v,
                        Err(_) => {
                            // Another process had emptied the file and not yet written: Python's
                            // int('') raises ValueError here.
                            torn_reads += 1;
                            0
                        }
                    };
                    if meet && !locked {
                        self.meeting.wait()?;
                    }
                    file.seek(SeekFrom::Start(0)).context("lseek()")?;
                    file.set_len(0).context("ftruncate()")?;
                    file.write_all((v + 1).to_string().as_bytes()).context("write()")?;
                    drop(file); // close(2) also releases the flock
                }
                Way::PipeToken => {
                    if meet {
                        self.meeting.wait()?;
                    }
                    let mut token = [0u8; 8];
                    if kit::read_full(fd(self.token.0), &mut token)? < 8 {
                        bail!("end-of-file on the token pipe");
                    }
                    let v = u64::from_le_bytes(token);
                    kit::write_all(fd(self.token.1), &(v + 1).to_le_bytes())?;
                }
            }
        }
        let seconds = began.elapsed().as_secs_f64();
        kit::send_result(
            self.results_fd,
            &json!({ "who": me, "seconds": seconds, "torn_reads": torn_reads,
                     "addr": format!("{:#x}", block.addr()) }),
        )
    }
}

/// The line of `/proc/self/maps` of the mapping at `addr`, as the kernel writes it (the line
/// itself is what the part prints, so it is found here rather than rebuilt from `procfs`).
pub fn maps_line(addr: usize) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    text.lines()
        .find(|l| l.split('-').next().and_then(|a| usize::from_str_radix(a, 16).ok()) == Some(addr))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The inode field of a maps line.
pub fn maps_inode(line: &str) -> Option<u64> {
    line.split_whitespace().nth(4)?.parse().ok()
}

/// What one run of the counter gave.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub way: Way,
    pub processes: usize,
    pub increments: usize,
    pub expected: u64,
    pub value: u64,
    pub lost: u64,
    pub torn_reads: u64,
    pub meet_every: usize,
    /// The slowest process's time for its increments; the rate is all increments over it.
    pub seconds: f64,
    pub per_second: f64,
}

/// Runs the counter once: `processes` children add 1 `increments` times each, `way`.
pub fn run_counter(
    cli: &Cli,
    stores: &Stores,
    way: Way,
    increments: usize,
    meet_every: usize,
    show_map: bool,
) -> Result<Outcome> {
    let processes = cli.processes;
    stores.reset(way)?;
    let (results_r, results_w) = kit::pipe()?;
    let (meetings, meeting_fds) = Meeting::group(processes)?;
    let mut fds = stores.fds();
    fds.push(raw(&results_w));
    fds.extend(&meeting_fds);
    let mut children: Vec<Process> = meetings
        .into_iter()
        .enumerate()
        .map(|(i, meeting)| {
            let work = Incrementer {
                way,
                block_fd: stores.block.raw_fd(),
                file_fd: raw(&stores.file),
                token: (raw(&stores.token.0), raw(&stores.token.1)),
                increments,
                meeting,
                meet_every,
                results_fd: raw(&results_w),
                close: inherited(cli, &[raw(&results_r)]),
                show_map,
            };
            cli.common.child(format!("adder-{}", i + 1), work, &fds)
        })
        .collect();
    for c in &mut children {
        c.start()?;
    }
    Meeting::close_group(&meeting_fds);
    join_all(&mut children, "increments")?;
    let results: Vec<Value> = kit::take_results(results_r.as_fd())?;
    if results.len() != processes {
        bail!("{} results from {processes} processes", results.len());
    }
    let value = stores.value(way)?;
    let expected = (processes * increments) as u64;
    let seconds =
        results.iter().filter_map(|r| r["seconds"].as_f64()).fold(0.0_f64, f64::max).max(1e-9);
    let torn_reads = results.iter().filter_map(|r| r["torn_reads"].as_u64()).sum();
    Ok(Outcome {
        way,
        processes,
        increments,
        expected,
        value,
        lost: expected.saturating_sub(value),
        torn_reads,
        meet_every,
        seconds,
        per_second: expected as f64 / seconds,
    })
}

/// `2.48 M/s`, or `5814/s`.
pub fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else {
        format!("{per_second:.0}/s")
    }
}

/// Prints one run's outcome (the event `counter`) and checks it: a safe way must be exact.
pub fn show(outcome: &Outcome) -> Result<()> {
    let o = outcome;
    let verdict = if o.value == o.expected {
        "exact".to_string()
    } else if o.value < o.expected {
        format!("{} updates LOST", o.lost)
    } else {
        format!(
            "{} too MANY (two writes of different lengths overlapped: \"100\", then \"99\" \
             over it, reads \"990\")",
            o.value - o.expected
        )
    };
    let torn = if o.torn_reads > 0 {
        format!("; {} read(s) found the file empty (torn: Python's int('') fails)", o.torn_reads)
    } else {
        String::new()
    };
    common::event!("counter", { "way": o.way.key(), "label": o.way.label(), "processes": o.processes,
                "increments": o.increments, "expected": o.expected, "value": o.value,
                "lost": o.lost, "torn_reads": o.torn_reads, "meet_every": o.meet_every,
                "seconds": o.seconds, "per_second": o.per_second }, "{:<31} counter = {:>7}, expected {} × {} = {}: {verdict}{torn} ({})",
            o.way.label(),
            o.value,
            o.processes,
            o.increments,
            o.expected,
            rate(o.per_second));
    if o.way.safe() && o.value != o.expected {
        bail!("{}: the counter is {} instead of {}", o.way.label(), o.value, o.expected);
    }
    if !o.way.safe() && o.value == o.expected {
        report::say(format!(
            "{}: nothing was lost this time; the race was left to chance and it won",
            o.way.label()
        ));
    }
    Ok(())
}
