//! Drawing the lanes: a pure function from records to text, so it is tested on its own.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::Record;
use crate::report;

/// Columns of the time axis when a [`Style`] does not say otherwise.
pub const DEFAULT_WIDTH: usize = 60;

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
        let marks = self.marks.iter().map(|(event, symbol)| format!("{symbol} {event}"));
        let spans = self.spans.iter().map(|s| format!("{} {} to {}", s.fill, s.begin, s.end));
        let lane = ["| first and last event".to_string(), "= alive".to_string()];
        lane.into_iter().chain(marks).chain(spans).collect::<Vec<_>>().join(", ")
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

/// The lane a record belongs to: its process's, or with `per_thread` its thread's.
fn lane_key(r: &Record, per_thread: bool) -> (i32, i32) {
    (r.pid, if per_thread { r.thread_id() } else { r.pid })
}

/// The lanes of `records`, one per process (with `per_thread`, one per thread), in the order
/// they first recorded something.
pub fn lanes(records: &[Record], per_thread: bool) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = Vec::new();
    for r in records {
        let (pid, tid) = lane_key(r, per_thread);
        match lanes.iter_mut().find(|l| (l.pid, l.tid) == (pid, tid)) {
            Some(lane) => {
                lane.start_ms = lane.start_ms.min(r.t_ms);
                lane.end_ms = lane.end_ms.max(r.t_ms);
                lane.events += 1;
            }
            None => {
                let who = if per_thread { r.name() } else { &r.who }.to_string();
                lanes.push(Lane { pid, tid, who, start_ms: r.t_ms, end_ms: r.t_ms, events: 1 });
            }
        }
    }
    // Stable: processes that started in the same millisecond keep the file's order.
    lanes.sort_by_key(|l| l.start_ms);
    lanes
}

/// Milliseconds per column, a round step (see [`round_step`]), and where the axis starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scale {
    origin_ms: u64,
    ms_per_col: u64,
    columns: usize,
}

/// Ticks of the axis fall on round times: multiples of this many columns' worth of ms.
const TICK_EVERY: u64 = 10;

/// The smallest round step (1, 2 or 5 × 10^n) for which `fits` holds: a time axis's unit.
pub(crate) fn round_step(fits: impl Fn(u64) -> bool) -> u64 {
    let mut power = 1;
    loop {
        if let Some(step) = [power, 2 * power, 5 * power].into_iter().find(|s| fits(*s)) {
            return step;
        }
        power *= 10;
    }
}

impl Scale {
    /// The finest step that fits `start..=end` in `width` columns, the axis starting on a
    /// multiple of it.
    fn fit(start: u64, end: u64, width: usize) -> Scale {
        let scale = |ms_per_col: u64| {
            let origin_ms = start / ms_per_col * ms_per_col;
            Scale { origin_ms, ms_per_col, columns: ((end - origin_ms) / ms_per_col) as usize + 1 }
        };
        scale(round_step(|step| scale(step).columns <= width || step >= 1_000_000_000))
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
        let decimals = [1000, 100, 10].iter().position(|d| tick.is_multiple_of(*d)).unwrap_or(3);
        format!("{:.*}s", decimals, ms as f64 / 1000.0)
    }
}

/// Draws `records` as lanes under `title`.
pub fn draw(title: &str, records: &[Record], style: &Style) -> String {
    let lanes = lanes(records, style.per_thread);
    let (Some(start), Some(end)) =
        (lanes.iter().map(|l| l.start_ms).min(), lanes.iter().map(|l| l.end_ms).max())
    else {
        return format!("{title}: nothing was recorded\n");
    };
    let scale = Scale::fit(start, end, style.width);
    let labels: Vec<String> = lanes
        .iter()
        .map(|l| match l.tid == l.pid {
            true => format!("{} {}", l.who, l.pid),
            false => format!("{} {}/{}", l.who, l.pid, l.tid),
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
        let _ = writeln!(out, "  {label:<label_width$} {}", row.trim_end());
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
    cells[first..=last].fill('=');
    // Spans: each `begin` opens one, the next matching `end` of this process closes it.
    let mut open: Vec<(usize, u64, String)> = Vec::new();
    let mut closed: Vec<(usize, u64, u64, String)> = Vec::new();
    for r in records {
        for (i, span) in style.spans.iter().enumerate() {
            if r.event == span.end
                && let Some(pos) = open.iter().rposition(|(j, _, _)| *j == i)
            {
                let (_, begin, label) = open.remove(pos);
                closed.push((i, begin, r.t_ms, label));
            }
            if r.event == span.begin {
                let label = match span.label.map(|key| &r.data[key]) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                open.push((i, r.t_ms, label));
            }
        }
    }
    closed.extend(open.into_iter().map(|(i, begin, label)| (i, begin, lane.end_ms, label)));
    for (i, begin, end, label) in closed {
        let (a, b) = (scale.col(begin), scale.col(end));
        cells[a..=b].fill(style.spans[i].fill);
        for (cell, ch) in cells[a..=b].iter_mut().zip(label.chars()) {
            *cell = ch;
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
        json!({ "title": title, "lanes": lanes(records, style.per_thread), "text": text }),
        head,
    );
    report::plain(body.trim_end());
}
