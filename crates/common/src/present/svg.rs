//! svg — a run as one self-contained picture (`--svg FILE`), for a slide or a guide.
//!
//! One lane per process and per thread (but for the machinery's threads: the signal watcher and
//! the sampler), and on each lane:
//! - a band coloured by the kernel's sampled state (running, ready, S, D, T, Z);
//! - above it, bars for the spans the demo marks (holding a lock, a critical section, a task);
//! - dots for its lifecycle events (fork, exit, kill, reap, signals);
//! - diamonds for the steps of a race (`search`, `read`, `lock A`), numbered in the order they
//!   ran; under `--schedule` or `--step`, the order the scheduler granted them, with their
//!   numbers beside them and, under the time axis, a strip of that schedule;
//!
//! and across the lanes arrows for messages and results, a time axis, the shared counters as
//! small step lines, and a legend. Everything is drawn from the same [`Model`] as the trace.
//!
//! The elements carry what a picture's *skeleton* is made of, for the test that checks the
//! guides' pictures against the current code: `class="lane"` with `data-kind` (process or
//! thread) and `data-role` (its name without the number), `class="legend-item"` with
//! `data-name`, `class="span"` with `data-name`, `class="mark"` with `data-kind`.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use crate::report;
use crate::timeline::round_step;
use crate::trace::{HELPER_THREADS, Instant, KernelState, Model, Track};

const WIDTH: f64 = 1100.0;
const LABEL: f64 = 200.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const LANE: f64 = 26.0;
const COUNTER_LANE: f64 = 34.0;

/// Colours for the demo's spans, in the order their names first appear.
const SPAN_COLOURS: &[&str] = &["#6a1b9a", "#00838f", "#c62828", "#ef6c00", "#283593", "#558b2f"];

/// Colours of the lifecycle marks.
const MARKS: &[(&str, &str, &str)] = &[
    ("fork", "#1565c0", "fork / start"),
    ("exec", "#00897b", "exec"),
    ("exit", "#212121", "exit"),
    ("kill", "#d50000", "kill"),
    ("reap", "#8d6e63", "reap / join"),
    ("signal", "#f9a825", "signal"),
    ("step", "#37474f", "step, numbered in the order it ran"),
];

/// The granted steps are labelled, and their strip drawn, when a run has at most this many
/// (every schedule the demos accept has fewer); beyond, the labels would run into each other.
const LABELLED_STEPS: usize = 40;
/// A worker's row in the strip of steps.
const STRIP_ROW: f64 = 18.0;

/// A diamond of half-width `r` centred on (`cx`, `cy`), as a path.
fn diamond(cx: f64, cy: f64, r: f64) -> String {
    format!("M{cx:.1} {:.1}l{r:.1} {r:.1}l-{r:.1} {r:.1}l-{r:.1} -{r:.1}z", cy - r)
}

const FLOW_COLOUR: &str = "#7b1fa2";

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The distinct names, in the order they first appear.
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    names.filter(|name| seen.insert(*name)).collect()
}

/// A tick's label: milliseconds on a short run, seconds with as many decimals as the step needs.
fn time_label(us: u64, step: u64) -> String {
    if us == 0 {
        "0".into()
    } else if step < 100_000 {
        format!("{}ms", us as f64 / 1000.0)
    } else if step.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

/// The picture of `model`, as SVG text.
pub fn render(model: &Model) -> String {
    let helper = |t: &&Track| !t.is_process() && HELPER_THREADS.contains(&t.name.as_str());
    let lanes: Vec<&Track> = model.tracks.iter().filter(|t| !helper(t)).collect();
    let end = model.end_us.max(1);
    let plot = WIDTH - LABEL - RIGHT;
    let x = |t: u64| LABEL + plot * (t.min(end) as f64 / end as f64);
    let lane_y = |pid: i32, tid: i32| {
        lanes.iter().position(|t| t.pid == pid && t.tid == tid).map(|i| TOP + i as f64 * LANE)
    };
    let counter_names = distinct(model.counters.iter().map(|c| c.name));
    let span_names = distinct(model.spans.iter().map(|s| s.name.as_str()));
    let span_colour = |name: &str| {
        SPAN_COLOURS[span_names.iter().position(|n| *n == name).unwrap_or(0) % SPAN_COLOURS.len()]
    };
    // The steps in the order they ran (the instants are in time order).
    let steps: Vec<&Instant> = model.instants.iter().filter(|i| i.kind == "step").collect();
    let step_number = |m: &Instant| {
        let at = |s: &&Instant| (s.pid, s.tid, s.t_us) == (m.pid, m.tid, m.t_us);
        steps.iter().position(at).map_or(0, |k| k + 1)
    };
    let counters_top = TOP + lanes.len() as f64 * LANE + 6.0;
    let axis_y = counters_top + counter_names.len() as f64 * COUNTER_LANE + 4.0;
    // A chosen schedule's steps in the order they ran, a column each, a row per worker, under
    // the time axis: there the steps close together in time are told apart.
    let strip_lanes: Vec<&&Track> =
        lanes.iter().filter(|l| steps.iter().any(|s| (s.pid, s.tid) == (l.pid, l.tid))).collect();
    let labelled = model.stepped && steps.len() <= LABELLED_STEPS;
    let strip = labelled && !steps.is_empty();
    let strip_top = axis_y + 40.0;
    let legend_y = match strip {
        true => strip_top + 22.0 + strip_lanes.len() as f64 * STRIP_ROW + 16.0,
        false => axis_y + 34.0,
    };
    // The legend, four items a row: the states, spans and marks drawn, and the arrows.
    let mut items: Vec<(String, String)> = Vec::new();
    for s in KernelState::ALL.iter().filter(|s| model.states.iter().any(|x| x.state == **s)) {
        items.push((s.name.to_string(), format!(r##"<rect x="0" y="-9" width="14" height="10" fill="{}" stroke="#999" stroke-width="0.5"/><text x="19" y="0">{}</text>"##, s.colour, esc(s.meaning))));
    }
    for name in &span_names {
        items.push((name.to_string(), format!(r#"<rect x="0" y="-7" width="14" height="4" fill="{}"/><text x="19" y="0">{}</text>"#, span_colour(name), esc(name))));
    }
    for (kind, colour, text) in
        MARKS.iter().filter(|m| model.instants.iter().any(|i| i.kind == m.0))
    {
        let shape = match *kind {
            "step" => format!(r#"<path d="{}" fill="{colour}"/>"#, diamond(7.0, -4.0, 4.0)),
            _ => format!(r#"<circle cx="7" cy="-4" r="3.5" fill="{colour}"/>"#),
        };
        items.push((kind.to_string(), format!(r#"{shape}<text x="19" y="0">{text}</text>"#)));
    }
    if !model.flows.is_empty() {
        let names: BTreeSet<&str> = model.flows.iter().map(|f| f.name).collect();
        let flow_names = Vec::from_iter(names).join(", ");
        items.push(("arrow".into(), format!(r#"<line x1="0" y1="-4" x2="13" y2="-4" stroke="{FLOW_COLOUR}" stroke-width="1.3" marker-end="url(#arrow)"/><text x="19" y="0">{}</text>"#, esc(&flow_names))));
    }
    let legend_rows = items.len().div_ceil(4).max(1);
    let height = legend_y + legend_rows as f64 * 20.0 + 10.0;

    let mut lines: Vec<String> = Vec::new();
    lines.push(format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">"#
    ));
    lines.push(format!(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{FLOW_COLOUR}"/></marker></defs>"#
    ));
    lines.push(format!(r#"<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="white"/>"#));
    let title = format!("{} — {} lanes, {:.3}s", report::who(), lanes.len(), end as f64 / 1e6);
    let title = esc(&title);
    lines.push(format!(r#"<text x="12" y="24" font-size="15" font-weight="bold">{title}</text>"#));

    for (i, lane) in lanes.iter().enumerate() {
        let y = TOP + i as f64 * LANE;
        // A thread's lane sits under its process's, indented, with its own tid.
        let (kind, indent, branch, id) = match lane.is_process() {
            true => ("process", 10.0, "", lane.pid),
            false => ("thread", 22.0, "└ ", lane.tid),
        };
        let (pid, tid, role, name) = (lane.pid, lane.tid, esc(lane.role()), esc(&lane.name));
        lines.push(format!(
            r#"<g class="lane" data-kind="{kind}" data-role="{role}" data-pid="{pid}" data-tid="{tid}">"#
        ));
        if i % 2 == 1 {
            lines.push(format!(
                r##"<rect x="0" y="{y}" width="{WIDTH}" height="{LANE}" fill="#f6f7f9"/>"##
            ));
        }
        let text_y = y + 17.0;
        lines.push(format!(r#"<text x="{indent}" y="{text_y:.1}">{branch}{name} {id}</text>"#));
        // The state band: one path per state, a rectangle per slice (a thread that flips
        // between running and ready every reading makes hundreds; a path keeps them small).
        for state in KernelState::ALL {
            let mut d = String::new();
            for s in model.states.iter().filter(|s| (s.pid, s.tid, s.state) == (pid, tid, state)) {
                let (x0, w) = (x(s.start_us), (x(s.end_us) - x(s.start_us)).max(0.8));
                let _ = write!(d, "M{x0:.1} {:.0}h{w:.1}v12h-{w:.1}z", y + 11.0);
            }
            let KernelState { name, colour, meaning, .. } = state;
            if !d.is_empty() {
                lines.push(format!(
                    r#"<path class="state" data-state="{name}" d="{d}" fill="{colour}"><title>{meaning}</title></path>"#
                ));
            }
        }
        // Spans just above the band; one opened inside another drawn a row higher.
        let mine: Vec<_> = model.spans.iter().filter(|s| (s.pid, s.tid) == (pid, tid)).collect();
        for s in &mine {
            let inside = mine.iter().any(|o| o.start_us < s.start_us && o.end_us >= s.end_us);
            let (name, fill) = (esc(&s.name), span_colour(&s.name));
            let (x0, top) = (x(s.start_us), y + if inside { 1.5 } else { 6.0 });
            let width = (x(s.end_us) - x0).max(1.5);
            let (from_ms, to_ms) = (s.start_us as f64 / 1000.0, s.end_us as f64 / 1000.0);
            lines.push(format!(
                r#"<rect class="span" data-name="{name}" x="{x0:.1}" y="{top:.1}" width="{width:.1}" height="4" fill="{fill}"><title>{name} {from_ms:.1}–{to_ms:.1} ms</title></rect>"#
            ));
        }
        // Where this lane's last step label ends, in each of its two rows (above the band, and
        // below it for a label that would run into the one before).
        let mut label_ends = [f64::MIN; 2];
        for m in model.instants.iter().filter(|m| (m.pid, m.tid) == (pid, tid)) {
            let Some((kind, colour, _)) = MARKS.iter().find(|(k, ..)| *k == m.kind) else {
                continue;
            };
            let (name, cx, ms) = (esc(&m.name), x(m.t_us), m.t_us as f64 / 1000.0);
            if *kind != "step" {
                lines.push(format!(
                    r#"<circle class="mark" data-kind="{kind}" cx="{cx:.1}" cy="{text_y:.1}" r="3.5" fill="{colour}" stroke="white" stroke-width="1"><title>{name} at {ms:.1} ms</title></circle>"#
                ));
                continue;
            }
            let (k, d) = (step_number(m), diamond(cx, text_y, 4.0));
            lines.push(format!(
                r#"<path class="mark" data-kind="step" data-order="{k}" data-name="{name}" d="{d}" fill="{colour}" stroke="white" stroke-width="0.8"><title>step {k}: {name} at {ms:.3} ms</title></path>"#
            ));
            if labelled {
                let x0 = cx - 2.0;
                let row = if x0 >= label_ends[0] { 0 } else { 1 };
                label_ends[row] = x0 + 5.5 * k.to_string().len() as f64 + 2.0;
                let label_y = y + if row == 0 { 9.0 } else { 25.5 };
                lines.push(format!(
                    r#"<text class="step-label" x="{x0:.1}" y="{label_y:.1}" font-size="9" fill="{colour}" stroke="white" stroke-width="2.5" paint-order="stroke">{k}</text>"#
                ));
            }
        }
        lines.push("</g>".into());
    }

    for f in &model.flows {
        let (Some(y0), Some(y1)) = (lane_y(f.from.0, f.from.1), lane_y(f.to.0, f.to.1)) else {
            continue;
        };
        let (name, x1, x2, y1, y2) = (f.name, x(f.from.2), x(f.to.2), y0 + 17.0, y1 + 17.0);
        lines.push(format!(
            r#"<line class="flow" data-name="{name}" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{FLOW_COLOUR}" stroke-width="1.3" marker-end="url(#arrow)"/>"#
        ));
    }

    for (i, name) in counter_names.iter().enumerate() {
        let top = counters_top + i as f64 * COUNTER_LANE;
        let points: Vec<_> = model.counters.iter().filter(|c| c.name == *name).collect();
        let max = points.iter().map(|c| c.value).fold(0.0f64, f64::max).max(1.0);
        let yv = |v: f64| top + COUNTER_LANE - 6.0 - (COUNTER_LANE - 12.0) * (v / max);
        let mut path = format!("M{:.1},{:.1}", x(points[0].t_us), yv(points[0].value));
        for c in &points[1..] {
            let _ = write!(path, " H{:.1} V{:.1}", x(c.t_us), yv(c.value));
        }
        let last = points.last().map_or(0.0, |c| c.value);
        let (name, name_y, x_end, last_y) = (esc(name), top + 20.0, x(end), yv(last) + 3.0);
        let last_x = x_end + 2.0;
        lines.push(format!(
            r##"<g class="counter" data-name="{name}"><text x="10" y="{name_y:.1}">{name} (0–{max})</text><path d="{path} H{x_end:.1}" fill="none" stroke="#37474f" stroke-width="1.5"/><text x="{last_x:.1}" y="{last_y:.1}" font-size="10">{last}</text></g>"##
        ));
    }

    if strip {
        let width = plot / steps.len() as f64;
        let head_y = strip_top + 12.0;
        lines.push(format!(
            r##"<g class="step-strip"><text x="10" y="{head_y:.1}" font-weight="bold">steps in the order they ran</text>"##
        ));
        for k in 1..=steps.len() {
            let cx = LABEL + width * (k as f64 - 0.5);
            lines.push(format!(
                r##"<text x="{cx:.1}" y="{head_y:.1}" font-size="10" fill="#555" text-anchor="middle">{k}</text>"##
            ));
        }
        for (row, lane) in strip_lanes.iter().enumerate() {
            let y = strip_top + 22.0 + row as f64 * STRIP_ROW;
            if row % 2 == 0 {
                lines.push(format!(
                    r##"<rect x="0" y="{y:.1}" width="{WIDTH}" height="{STRIP_ROW}" fill="#f6f7f9"/>"##
                ));
            }
            let (pid, tid, text_y) = (lane.pid, lane.tid, y + 13.0);
            let (name, id) = (esc(&lane.name), if lane.is_process() { pid } else { tid });
            lines.push(format!(r#"<text x="10" y="{text_y:.1}">{name} {id}</text>"#));
            for m in steps.iter().filter(|m| (m.pid, m.tid) == (pid, tid)) {
                let (k, name) = (step_number(m), esc(&m.name));
                let cx = LABEL + width * (k as f64 - 0.5);
                lines.push(format!(
                    r##"<text class="step-cell" data-order="{k}" data-pid="{pid}" data-tid="{tid}" x="{cx:.1}" y="{text_y:.1}" font-size="11" text-anchor="middle" fill="#37474f">{name}</text>"##
                ));
            }
        }
        lines.push("</g>".into());
    }

    let step = round_step(|step| end / step <= 10);
    let (right, tick_y, label_y) = (WIDTH - RIGHT, axis_y + 5.0, axis_y + 18.0);
    lines.push(format!(
        r##"<g class="axis"><line x1="{LABEL}" y1="{axis_y:.1}" x2="{right:.1}" y2="{axis_y:.1}" stroke="#555"/>"##
    ));
    for t in (0..=end).step_by(step as usize) {
        let (tx, label) = (x(t), time_label(t, step));
        lines.push(format!(
            r##"<line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{tick_y:.1}" stroke="#555"/><line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{axis_y:.1}" stroke="#000" stroke-opacity="0.07"/><text x="{tx:.1}" y="{label_y:.1}" text-anchor="middle" font-size="11">{label}</text>"##
        ));
    }
    lines.push("</g>".into());

    lines.push(r#"<g class="legend">"#.into());
    for (i, (name, body)) in items.iter().enumerate() {
        let name = esc(name);
        let (left, top) = (12.0 + (i % 4) as f64 * 270.0, legend_y + (i / 4) as f64 * 20.0);
        lines.push(format!(
            r#"<g class="legend-item" data-name="{name}" transform="translate({left:.1},{top:.1})">{body}</g>"#
        ));
    }
    lines.extend(["</g>".into(), "</svg>\n".into()]);
    lines.join("\n")
}
