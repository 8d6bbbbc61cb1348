//! timeline — one ASCII lane per process, drawn from the events every process recorded.
//!
//! Children print their events straight to standard output, so the parent never sees them. To
//! draw who ran when, a [`Recording`] makes every process of the demo *also* append its events
//! to one shared file, and the parent reads that file back at the end:
//! - the parent creates a temporary file opened with `O_APPEND` and hands its descriptor to
//!   [`report::record_to`]; from then on every [`report::event`] is also one JSON line there,
//!   written with a single `write(2)`. On Linux an append to a regular file happens in one
//!   piece, so the lines of different processes never mix, and their order in the file is the
//!   order in which they were written;
//! - a forked child inherits the descriptor (and the atomic that holds its number); a spawned
//!   child inherits it through `exec`, because it has no close-on-exec flag, and learns its
//!   number from `CONCURRENCY_DEMOS_REPORT` (see [`report`]);
//! - the file has no name: on Linux it is made with `O_TMPFILE` (elsewhere it is created and
//!   unlinked at once), so nothing is left behind, not even after Ctrl-C or SIGKILL;
//! - [`draw`] is a pure function from records to text: a row per process (name and pid), a
//!   time axis, `|` at a process's first and last event, `=` between, a symbol for each event
//!   the [`Style`] names, and a fill for spans between two events (a producer blocked on a
//!   full queue, a task running in a pool worker).
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

use std::fmt::Write as _;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::report;

/// The nameless temporary file the timeline records to (also the tour's answers file).
#[cfg(unix)]
pub use imp::nameless_file;

/// Columns of the time axis when a [`Style`] does not say otherwise.
pub const DEFAULT_WIDTH: usize = 60;

/// One recorded event: the JSON line [`report::event`] writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the demo started (the same clock in every process).
    pub t_ms: u64,
    /// The same moment in microseconds (0 in records made before it was recorded).
    #[serde(default)]
    pub t_us: u64,
    pub pid: i32,
    #[serde(default)]
    pub ppid: i32,
    pub who: String,
    /// The thread that recorded it (`gettid`); the pid for the main thread. 0 in records made
    /// before threads were recorded.
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
}

/// Parses recorded JSON lines, in order; a line that is not a record is skipped.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// A recording in progress: while it lives, every event of this process and of every child
/// started meanwhile is appended to its file. [`Recording::finish`] stops it and returns what
/// was recorded; dropping it stops it too. One recording at a time.
///
/// Under `--trace` or `--svg` the whole run is already being recorded (see [`crate::trace`]):
/// a demo's recording then reads its part of that same file, from where the file stood when it
/// started, and leaves the run's recording on when it finishes.
#[derive(Debug)]
pub struct Recording {
    file: std::fs::File,
    /// Where this recording's records begin in the file.
    from: u64,
    /// True when the file is the run's trace recording, which this one only reads.
    shared: bool,
}

impl Recording {
    /// Creates the nameless recording file and starts recording to it.
    pub fn start() -> Result<Recording> {
        if let Some(fd) = report::recording_fd() {
            if let Some(file) = crate::trace::shared_recording(fd) {
                let from = file.metadata().map(|m| m.len()).unwrap_or(0);
                return Ok(Recording { file, from, shared: true });
            }
            anyhow::bail!("starting a timeline recording: another one is already in progress");
        }
        let file = imp::open_anonymous()?;
        report::record_to(Some(imp::raw_fd(&file)));
        Ok(Recording { file, from: 0, shared: false })
    }

    /// A new recording file for the whole run (`--trace`), which [`Recording::start`] then
    /// shares rather than refuses.
    pub(crate) fn start_run() -> Result<(Recording, i32)> {
        let recording = Recording::start()?;
        let fd = imp::raw_fd(&recording.file);
        Ok((recording, fd))
    }

    /// What has been recorded so far, in the order it was written (phase marks, which only the
    /// trace draws, left out).
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut records = parse(&imp::read_all(&self.file, self.from)?);
        records.retain(|r| r.event != crate::trace::PHASE_EVENT);
        Ok(records)
    }

    /// Every record, phase marks included (for the trace).
    pub(crate) fn all_records(&self) -> Result<Vec<Record>> {
        Ok(parse(&imp::read_all(&self.file, self.from)?))
    }

    /// Stops recording and returns every record, in the order it was written. Children still
    /// running may go on appending to the file, but nobody reads it any more.
    pub fn finish(self) -> Result<Vec<Record>> {
        self.stop();
        self.records()
    }

    fn stop(&self) {
        if !self.shared && report::recording_fd() == Some(imp::raw_fd(&self.file)) {
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

/// How events are drawn on the lanes. Every process gets a lane from its first to its last
/// recorded event whatever the style; the style adds symbols and spans.
#[derive(Debug, Clone)]
pub struct Style {
    width: usize,
    marks: Vec<(&'static str, char)>,
    per_thread: bool,
    spans: Vec<SpanStyle>,
}

#[derive(Debug, Clone)]
struct SpanStyle {
    begin: &'static str,
    end: &'static str,
    fill: char,
    label: Option<&'static str>,
}

impl Default for Style {
    fn default() -> Style {
        Style::new()
    }
}

impl Style {
    /// Lanes only, [`DEFAULT_WIDTH`] columns wide.
    pub fn new() -> Style {
        Style { width: DEFAULT_WIDTH, marks: Vec::new(), per_thread: false, spans: Vec::new() }
    }

    /// The most columns the time axis may take (at least 10).
    pub fn width(mut self, columns: usize) -> Style {
        self.width = columns.max(10);
        self
    }

    /// One lane per *thread* instead of one per process: for demos whose actors are threads.
    /// A thread's lane is labelled with its name and `pid/tid`; a main thread's as a process's.
    pub fn per_thread(mut self) -> Style {
        self.per_thread = true;
        self
    }

    /// Draws `symbol` where a process recorded `event`.
    pub fn mark(mut self, event: &'static str, symbol: char) -> Style {
        self.marks.push((event, symbol));
        self
    }

    /// Fills the lane with `fill` from an event `begin` to the next `end` of the same process
    /// (to the end of its lane if none comes): a producer blocked on a full queue.
    pub fn span(mut self, begin: &'static str, end: &'static str, fill: char) -> Style {
        self.spans.push(SpanStyle { begin, end, fill, label: None });
        self
    }

    /// Like [`Style::span`], and writes the `begin` event's `data[key]` at the span's start, as
    /// far as it fits: which task a pool worker is running.
    pub fn span_labelled(
        mut self,
        begin: &'static str,
        end: &'static str,
        fill: char,
        key: &'static str,
    ) -> Style {
        self.spans.push(SpanStyle { begin, end, fill, label: Some(key) });
        self
    }

    fn legend(&self) -> String {
        let mut parts = vec!["| first and last event".to_string(), "= alive".to_string()];
        for (event, symbol) in &self.marks {
            parts.push(format!("{symbol} {event}"));
        }
        for span in &self.spans {
            parts.push(format!("{} {} to {}", span.fill, span.begin, span.end));
        }
        parts.join(", ")
    }
}

/// One process's lane (or one thread's, see [`Style::per_thread`]): from its first to its last
/// recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lane {
    pub pid: i32,
    /// The thread of a per-thread lane; the pid for a process's lane.
    pub tid: i32,
    /// The name in the lane's first record: the process's, or for a thread other than the main
    /// one, the thread's.
    pub who: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// How many events it recorded.
    pub events: usize,
}

/// The lanes of `records`, one per pid, in the order the processes first recorded something.
pub fn lanes(records: &[Record]) -> Vec<Lane> {
    lanes_by(records, false)
}

/// The lane a record belongs to: its process's, or with `per_thread` its thread's.
fn lane_key(r: &Record, per_thread: bool) -> (i32, i32) {
    (r.pid, if per_thread { r.thread_id() } else { r.pid })
}

fn lanes_by(records: &[Record], per_thread: bool) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = Vec::new();
    for r in records {
        let (pid, tid) = lane_key(r, per_thread);
        match lanes.iter_mut().find(|l| (l.pid, l.tid) == (pid, tid)) {
            Some(lane) => {
                lane.start_ms = lane.start_ms.min(r.t_ms);
                lane.end_ms = lane.end_ms.max(r.t_ms);
                lane.events += 1;
            }
            None => lanes.push(Lane {
                pid,
                tid,
                who: if tid != pid && !r.thread.is_empty() {
                    r.thread.clone()
                } else {
                    r.who.clone()
                },
                start_ms: r.t_ms,
                end_ms: r.t_ms,
                events: 1,
            }),
        }
    }
    // Stable: processes that started in the same millisecond keep the file's order.
    lanes.sort_by_key(|l| l.start_ms);
    lanes
}

/// Milliseconds per column, from 1-2-5 steps, and where the axis starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scale {
    origin_ms: u64,
    ms_per_col: u64,
    columns: usize,
}

/// Ticks of the axis fall on round times: multiples of this many columns' worth of ms.
const TICK_EVERY: u64 = 10;

impl Scale {
    /// The finest 1-2-5 step that fits `start..=end` in `width` columns.
    fn fit(start: u64, end: u64, width: usize) -> Scale {
        let mut step = 1u64;
        loop {
            for m in [1, 2, 5] {
                let ms_per_col = step * m;
                let origin_ms = start / ms_per_col * ms_per_col;
                let columns = ((end - origin_ms) / ms_per_col) as usize + 1;
                if columns <= width || ms_per_col >= 1_000_000_000 {
                    return Scale { origin_ms, ms_per_col, columns };
                }
            }
            step *= 10;
        }
    }

    fn col(&self, t_ms: u64) -> usize {
        (((t_ms.saturating_sub(self.origin_ms)) / self.ms_per_col) as usize).min(self.columns - 1)
    }

    fn is_tick(&self, col: usize) -> bool {
        (self.origin_ms + col as u64 * self.ms_per_col).is_multiple_of(self.ms_per_col * TICK_EVERY)
    }

    fn label(&self, col: usize) -> String {
        let ms = self.origin_ms + col as u64 * self.ms_per_col;
        let tick = self.ms_per_col * TICK_EVERY;
        let decimals = if tick.is_multiple_of(1000) {
            0
        } else if tick.is_multiple_of(100) {
            1
        } else if tick.is_multiple_of(10) {
            2
        } else {
            3
        };
        format!("{:.*}s", decimals, ms as f64 / 1000.0)
    }
}

/// Draws `records` as lanes under `title`: a pure function, so it is tested on its own.
pub fn draw(title: &str, records: &[Record], style: &Style) -> String {
    let lanes = lanes_by(records, style.per_thread);
    let (Some(start), Some(end)) =
        (lanes.iter().map(|l| l.start_ms).min(), lanes.iter().map(|l| l.end_ms).max())
    else {
        return format!("{title}: nothing was recorded\n");
    };
    let scale = Scale::fit(start, end, style.width);
    let labels: Vec<String> = lanes
        .iter()
        .map(|l| {
            if l.tid == l.pid {
                format!("{} {}", l.who, l.pid)
            } else {
                format!("{} {}/{}", l.who, l.pid, l.tid)
            }
        })
        .collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);

    let mut out = format!("{title} (1 column = {} ms; {})\n", scale.ms_per_col, style.legend());
    for (lane, label) in lanes.iter().zip(&labels) {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| lane_key(r, style.per_thread) == (lane.pid, lane.tid))
            .collect();
        let row = draw_lane(lane, &mine, style, &scale);
        let pad = label_width - label.chars().count();
        let _ = writeln!(out, "  {label}{} {}", " ".repeat(pad), row.trim_end());
    }
    let indent = " ".repeat(label_width + 3);
    // The axis runs on to the first tick at or after the last column, so that it ends labelled.
    let axis_columns = (scale.columns - 1..).find(|c| scale.is_tick(*c)).unwrap_or(0) + 1;
    let axis: String =
        (0..axis_columns).map(|c| if scale.is_tick(c) { '+' } else { '-' }).collect();
    let mut tick_labels = String::new();
    for col in (0..axis_columns).filter(|c| scale.is_tick(*c)) {
        let used = tick_labels.chars().count();
        if col == 0 || col > used {
            tick_labels.push_str(&" ".repeat(col - used));
            tick_labels.push_str(&scale.label(col));
        }
    }
    let _ = writeln!(out, "{indent}{axis}");
    let _ = writeln!(out, "{indent}{tick_labels}");
    out
}

fn draw_lane(lane: &Lane, records: &[&Record], style: &Style, scale: &Scale) -> String {
    let mut cells = vec![' '; scale.columns];
    let (first, last) = (scale.col(lane.start_ms), scale.col(lane.end_ms));
    for cell in &mut cells[first..=last] {
        *cell = '=';
    }
    // Spans: each `begin` opens one, the next matching `end` of this process closes it.
    let mut open: Vec<(usize, u64, Option<String>)> = Vec::new();
    let mut closed: Vec<(usize, u64, u64, Option<String>)> = Vec::new();
    for r in records {
        for (i, span) in style.spans.iter().enumerate() {
            if r.event == span.end
                && let Some(pos) = open.iter().rposition(|(j, _, _)| *j == i)
            {
                let (_, begin, label) = open.remove(pos);
                closed.push((i, begin, r.t_ms, label));
            }
            if r.event == span.begin {
                let label = span.label.and_then(|key| match &r.data[key] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                });
                open.push((i, r.t_ms, label));
            }
        }
    }
    closed.extend(open.into_iter().map(|(i, begin, label)| (i, begin, lane.end_ms, label)));
    for (i, begin, end, label) in closed {
        let (a, b) = (scale.col(begin), scale.col(end));
        for cell in &mut cells[a..=b] {
            *cell = style.spans[i].fill;
        }
        if let Some(label) = label {
            for (cell, ch) in cells[a..=b].iter_mut().zip(label.chars()) {
                *cell = ch;
            }
        }
    }
    cells[first] = '|';
    cells[last] = '|';
    // A marked event wins over everything, even the ends of the lane: a parent whose code ends
    // at once (`E====|`) must show it.
    for r in records {
        if let Some((_, symbol)) = style.marks.iter().find(|(event, _)| r.event == *event) {
            cells[scale.col(r.t_ms)] = *symbol;
        }
    }
    cells.into_iter().collect()
}

/// Prints the timeline: for people the title as an event line and the lanes under it as they
/// are (full width, no prefix); with `--json` the event `timeline` carrying the lanes (pid,
/// who, first and last event in ms) and the drawing as `text`.
pub fn show(title: &str, records: &[Record], style: &Style) {
    let text = draw(title, records, style);
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    report::event(
        "timeline",
        json!({ "title": title, "lanes": lanes_by(records, style.per_thread), "text": text }),
        head,
    );
    report::plain(body.trim_end());
}

#[cfg(unix)]
mod imp {
    use std::fs::{File, OpenOptions};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};

    use anyhow::{Context, Result};
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};

    pub fn raw_fd(file: &File) -> i32 {
        file.as_raw_fd()
    }

    /// A temporary file with no name, open for reading and appending, that children inherit
    /// across `fork` and `exec`.
    pub fn open_anonymous() -> Result<File> {
        let file = nameless_file("concurrency-demos-timeline")?;
        // Rust opens every file close-on-exec; a spawned child must keep this one across exec.
        fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty()))
            .context("fcntl(F_SETFD) on the timeline file")?;
        Ok(file)
    }

    /// A file with no name in the temporary folder, open for reading and appending, that
    /// nothing else can open and that nothing leaves behind, even at Ctrl-C: `O_TMPFILE`, or
    /// where the file system has none, `<prefix>-<pid>-<ns>` removed at once (the open
    /// descriptor keeps the file alive until the last process holding it closes it).
    pub fn nameless_file(prefix: &str) -> Result<File> {
        let dir = std::env::temp_dir();
        if let Some(file) = open_tmpfile(&dir)? {
            return Ok(file);
        }
        let path =
            dir.join(format!("{prefix}-{}-{}", std::process::id(), crate::report::monotonic_ns()));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        Ok(file)
    }

    #[cfg(target_os = "linux")]
    fn open_tmpfile(dir: &std::path::Path) -> Result<Option<File>> {
        match OpenOptions::new()
            .read(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(file) => Ok(Some(file)),
            // The file system (or an old kernel) does not support O_TMPFILE.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
                ) =>
            {
                Ok(None)
            }
            Err(e) => {
                Err(e).with_context(|| format!("creating a nameless file in {}", dir.display()))
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn open_tmpfile(_dir: &std::path::Path) -> Result<Option<File>> {
        Ok(None)
    }

    /// The file from offset `from`; `read_at` leaves the shared file offset alone.
    pub fn read_all(file: &File, from: u64) -> Result<String> {
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read_at(&mut buf, from + bytes.len() as u64)
                .context("reading the timeline file")?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[cfg(not(unix))]
mod imp {
    use std::fs::File;

    use anyhow::{Result, bail};

    pub fn raw_fd(_file: &File) -> i32 {
        -1
    }
    pub fn open_anonymous() -> Result<File> {
        bail!("recording a timeline needs a Unix system (fork and inherited file descriptors)")
    }
    pub fn read_all(_file: &File, _from: u64) -> Result<String> {
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_a_round_step_that_fits_the_width() {
        let s = Scale::fit(0, 5000, 60);
        assert_eq!((s.ms_per_col, s.origin_ms), (100, 0));
        assert!(s.columns <= 60);
        let s = Scale::fit(1234, 1300, 60);
        assert_eq!((s.ms_per_col, s.origin_ms), (2, 1234));
        assert_eq!(s.col(1300), 33);
        assert!(s.is_tick(3) && !s.is_tick(0), "ticks fall on round times: 1240 ms");
        assert_eq!(s.label(3), "1.24s");
        assert_eq!(Scale::fit(5, 5, 60).columns, 1);
    }
}
