//! timeline — one ASCII lane per process, drawn from the events every process recorded.
//!
//! Children print their events straight to standard output, which the parent never sees. To
//! draw who ran when, a [`Recording`] makes every process of the demo *also* append its events
//! to one shared file, which the parent reads back at the end:
//! - the parent creates a temporary file opened with `O_APPEND` and hands its descriptor to
//!   [`report::record_to`]; from then on every [`report::event`] is also one JSON line there,
//!   written with a single `write(2)`. On Linux an append to a regular file happens in one
//!   piece, so the lines of different processes never mix and the file holds them in the order
//!   they were written;
//! - a forked child inherits the descriptor (and the atomic that holds its number); a spawned
//!   child inherits it through `exec`, as it has no close-on-exec flag, and learns its number
//!   from `CONCURRENCY_DEMOS_REPORT` (see [`report`]);
//! - the file has no name ([`nameless_file`]): nothing is left behind, even after SIGKILL;
//! - [`draw`] makes the text: a row per process, `|` at its first and last event, `=` between,
//!   and what the [`Style`] adds (a symbol for an event, a fill between two events).
//!
//! A process records only if it is the recorder or was started while the recording was on:
//! start the recording before the workers whose lanes you want.
//!
//! ```ignore
//! let recording = Recording::start()?;
//! // ... start workers (fork or spawn), let them work, join them ...
//! let records = recording.finish()?;
//! let style = Style::new().mark("put", '*').span_labelled("task_start", "task_end", '#', "task");
//! timeline::show("a pool of three workers", &records, &style);
//! ```
//!
//! ```text
//! start all, then join all (1 column = 10 ms; | first and last event, = alive)
//!   process-basics 23911 |=================================================|
//!   task-2 23915         |=============================|
//!   task-3 23916         |===================|
//!   task-4 23917         |=========|
//!   task-1 23914         |=================================================|
//!                        +---------+---------+---------+---------+---------+
//!                        0.0s      0.1s      0.2s      0.3s      0.4s      0.5s
//! ```

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report;

mod draw;
pub(crate) use draw::round_step;
pub use draw::{DEFAULT_WIDTH, Lane, Style, draw, lanes, show};

/// One recorded event: the JSON line [`report::event`] writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the demo started (the same clock in every process).
    pub t_ms: u64,
    /// The same moment in microseconds (0 in older records).
    #[serde(default)]
    pub t_us: u64,
    pub pid: i32,
    #[serde(default)]
    pub ppid: i32,
    pub who: String,
    /// The thread that recorded it (`gettid`, the pid for the main one); 0 in older records.
    #[serde(default)]
    pub tid: i32,
    /// That thread's name (`main` for the main thread).
    #[serde(default)]
    pub thread: String,
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

impl Record {
    /// The thread that recorded it, counting an unknown thread as the main one.
    pub fn thread_id(&self) -> i32 {
        if self.tid == 0 { self.pid } else { self.tid }
    }

    /// Who recorded it: its thread's name, or for the main thread its process's.
    pub fn name(&self) -> &str {
        if self.thread_id() == self.pid || self.thread.is_empty() {
            &self.who
        } else {
            &self.thread
        }
    }
}

/// Parses recorded JSON lines, in order; a line that is not a record is skipped.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// The run's own recording under `--trace`: its descriptor, and a second handle on its file.
static RUN: OnceLock<(i32, File)> = OnceLock::new();

/// A recording in progress: while it lives, every event of this process and of every child
/// started meanwhile is appended to its file. [`Recording::finish`] stops it and returns what
/// was recorded; dropping it stops it too. One recording at a time.
///
/// Under `--trace` or `--svg` the whole run is already being recorded (see [`crate::trace`]):
/// a demo's recording then reads its part of that same file, from where the file stood when it
/// started, and leaves the run's recording on when it finishes.
#[derive(Debug)]
pub struct Recording {
    pub(crate) file: File,
    /// Where this recording's records begin in the file.
    from: u64,
    /// True when the file is the run's trace recording, which this one only reads.
    shared: bool,
}

impl Recording {
    /// Creates the nameless recording file and starts recording to it.
    pub fn start() -> Result<Recording> {
        if let Some(fd) = report::recording_fd() {
            if let Some((_, file)) = RUN.get().filter(|(run_fd, _)| *run_fd == fd)
                && let Ok(file) = file.try_clone()
            {
                let from = file.metadata().map(|m| m.len()).unwrap_or(0);
                return Ok(Recording { file, from, shared: true });
            }
            anyhow::bail!("starting a timeline recording: another one is already in progress");
        }
        let file = nameless_file()?;
        // Rust opens every file close-on-exec; a spawned child must keep this one across exec.
        fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty()))
            .context("fcntl(F_SETFD) on the timeline file")?;
        report::record_to(Some(file.as_raw_fd()));
        Ok(Recording { file, from: 0, shared: false })
    }

    /// A new recording file for the whole run (`--trace`), which [`Recording::start`] then
    /// shares rather than refuses.
    pub(crate) fn start_run() -> Result<Recording> {
        let recording = Recording::start()?;
        let file = recording.file.try_clone().context("duplicating the run's recording")?;
        let _ = RUN.set((recording.file.as_raw_fd(), file));
        Ok(recording)
    }

    /// What has been recorded so far, in the order it was written (phase marks, which only the
    /// trace draws, left out).
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut records = self.all_records()?;
        records.retain(|r| r.event != crate::trace::PHASE_EVENT);
        Ok(records)
    }

    /// Every record, phase marks included (for the trace).
    pub(crate) fn all_records(&self) -> Result<Vec<Record>> {
        let mut bytes = Vec::new();
        read_from(&self.file, self.from, &mut bytes).context("reading the timeline file")?;
        Ok(parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Stops recording and returns every record, in the order it was written. Children still
    /// running may go on appending to the file, but nobody reads it any more.
    pub fn finish(self) -> Result<Vec<Record>> {
        self.stop();
        self.records()
    }

    fn stop(&self) {
        if !self.shared && report::recording_fd() == Some(self.file.as_raw_fd()) {
            report::record_to(None);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Stop before the descriptor closes, so no event is written to a number reused later.
        self.stop();
    }
}

/// A file with no name in the temporary folder, open for reading and appending, that nothing
/// else can open and nothing leaves behind, even at Ctrl-C: `O_TMPFILE`, or where the file
/// system has none, a file removed once created (alive until its last descriptor closes).
pub fn nameless_file() -> Result<File> {
    let file = tempfile::tempfile().context("creating a nameless file")?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::O_APPEND)).context("fcntl(F_SETFL, O_APPEND)")?;
    Ok(file)
}

/// Appends to `buf` the file's bytes from `offset` on; `pread` leaves the file offset, which
/// the processes that inherited the file share, alone.
pub(crate) fn read_from(file: &File, mut offset: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, offset)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        offset += n as u64;
    }
}
