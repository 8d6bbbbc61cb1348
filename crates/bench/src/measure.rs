//! measure — what every suite shares: the settings, medians, rows, the table, and running the
//! Python side.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use common::report;

pub use common::startcost::median;

/// What the command line asks of every suite.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Runs of each side; rows carry medians.
    pub runs: usize,
    /// Children or threads per run, where a suite starts some.
    pub count: usize,
}

/// What a suite's second column holds: Python's figure (the notes' way), or a Rust crate a user
/// would pick instead of ours (a peer, `--features peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    Python,
    Peer,
}

impl Against {
    /// The two columns' headers: ours, then the other side's.
    fn headers(self) -> (&'static str, &'static str) {
        match self {
            Against::Python => ("rust", "python"),
            Against::Peer => ("ours", "peer"),
        }
    }
}

/// Which way a figure is better, so that a ratio always reads "Rust is N times better".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// A time or a cost: less is better (ratio = python / rust).
    Lower,
    /// A rate: more is better (ratio = rust / python). For suites that measure throughput.
    Higher,
}

/// One figure of a suite, as medians.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub unit: &'static str,
    pub better: Better,
    pub rust: f64,
    /// `None` when the Python comparison was skipped.
    pub python: Option<f64>,
    /// The ratio the project set as the goal for this figure, if any.
    pub target: Option<f64>,
}

impl Row {
    /// How many times better Rust is than Python (above 1: Rust is better).
    pub fn ratio(&self) -> Option<f64> {
        let python = self.python?;
        let ratio = match self.better {
            Better::Lower => python / self.rust,
            Better::Higher => self.rust / python,
        };
        ratio.is_finite().then_some(ratio)
    }

    /// Whether the target ratio was reached; `None` without a target or a Python figure.
    pub fn met(&self) -> Option<bool> {
        Some(self.ratio()? >= self.target?)
    }
}

/// What a suite measured: its rows, and what happened on the Python side.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// `Ok(version)` when the Python script ran, `Err(why)` when the comparison was skipped.
    pub python: Result<String, String>,
    /// Anything a reader of the table should know (how the figures were taken).
    pub notes: Vec<String>,
}

/// Runs `python3 python/<script> <args>` and returns the JSON object it printed last on
/// stdout. `Err` says why the comparison is skipped: no `python3` on PATH, the script missing
/// (the binary was moved away from its source tree) or failing, or no JSON printed.
pub fn run_python(script: &str, args: &[String]) -> Result<Value, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(script);
    if !path.is_file() {
        return Err(format!("{} not found", path.display()));
    }
    let output = match Command::new("python3").arg(&path).args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("python3 not found on PATH".to_string());
        }
        Err(e) => return Err(format!("running python3 {}: {e}", path.display())),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("python3 {script} failed ({}): {}", output.status, tail.join(" / ")));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str::<Value>(last)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| format!("python3 {script} printed no JSON object: {last:?}"))
}

/// A suite's samples, run after run: each figure's Rust values and Python values, and what
/// happened on the Python side. A suite measures Rust, then Python, in every run: a busy moment
/// of a shared machine hits both sides.
#[derive(Debug)]
pub struct Samples {
    rust: Vec<Vec<f64>>,
    python: Vec<Vec<f64>>,
    /// `Ok(version)` while the Python script runs; `Err(why)` once it failed (then it is not
    /// run again and the rows have no Python figure).
    pub python_outcome: Result<String, String>,
}

impl Samples {
    /// No sample yet, for `figures` figures.
    pub fn new(figures: usize) -> Samples {
        Samples {
            rust: vec![Vec::new(); figures],
            python: vec![Vec::new(); figures],
            python_outcome: Ok(String::new()),
        }
    }

    /// One Rust value of figure `i`.
    pub fn rust(&mut self, i: usize, value: f64) {
        self.rust[i].push(value);
    }

    /// One run of `python3 python/<script> <args>`, unless an earlier one failed: `read` turns
    /// its answer into one value per figure, in order (`Err` says what is missing, and the
    /// comparison is skipped).
    pub fn python(
        &mut self,
        script: &str,
        args: &[String],
        read: impl FnOnce(&Value) -> Result<Vec<f64>, String>,
    ) {
        self.python_from(|| {
            let answer = run_python(script, args)?;
            Ok((read(&answer)?, answer["python"].as_str().unwrap_or("3").to_string()))
        });
    }

    /// One run of the Python side by `run`, unless an earlier one failed: one value per figure,
    /// in order, and Python's version.
    pub fn python_from(&mut self, run: impl FnOnce() -> Result<(Vec<f64>, String), String>) {
        if self.python_outcome.is_err() {
            return;
        }
        self.python_outcome = run().map(|(values, version)| {
            for (i, value) in values.into_iter().enumerate() {
                self.python[i].push(value);
            }
            version
        });
    }

    /// Figure `i` as a row of medians (with Python's only if the script ran every time).
    pub fn row(
        &self,
        i: usize,
        figure: impl Into<String>,
        unit: &'static str,
        better: Better,
        target: Option<f64>,
    ) -> Row {
        Row {
            figure: figure.into(),
            unit,
            better,
            rust: median(&self.rust[i]),
            python: self.python_outcome.is_ok().then(|| median(&self.python[i])),
            target,
        }
    }
}

/// The figures `answer["cases"][case][key]`, one for each key, that a script gives for `case`.
pub fn case_figures<const N: usize>(
    answer: &Value,
    script: &str,
    case: &str,
    keys: [&str; N],
) -> Result<[f64; N], String> {
    let got = &answer["cases"][case];
    let mut figures = [0.0; N];
    for (figure, key) in figures.iter_mut().zip(keys) {
        *figure =
            got[key].as_f64().ok_or_else(|| format!("{script} gave no figures for {case}"))?;
    }
    Ok(figures)
}

/// Prints a suite's rows: a table for people, or one `row` event each with `--json`; then
/// whether the Python comparison ran.
pub fn print(suite: &str, against: Against, settings: &Settings, outcome: &Outcome) {
    if report::json_mode() {
        for row in &outcome.rows {
            report::event("row", row_json(suite, against, settings, row), "");
        }
    } else {
        report::plain(table(against, &outcome.rows));
    }
    match &outcome.python {
        Ok(_) if against == Against::Peer => report::say(format!(
            "ours and the peers alternate run by run in the same run; medians of {} runs each; \
             ratio = how many times better ours is (below 1: the peer is better)",
            settings.runs
        )),
        Ok(version) => report::say(format!(
            "Python {version} measured in the same run; medians of {} runs each",
            settings.runs
        )),
        Err(why) => {
            common::event!("skipped", { "suite": suite, "reason": why }, "comparison with Python skipped: {why}; the Rust figures stand alone")
        }
    }
    for note in &outcome.notes {
        report::say(note);
    }
}

fn row_json(suite: &str, against: Against, settings: &Settings, row: &Row) -> Value {
    let (ours, other) = against.headers();
    json!({
        "suite": suite, "figure": row.figure, "unit": row.unit, ours: row.rust,
        other: row.python, "ratio": row.ratio(), "target": row.target, "met": row.met(),
        "runs": settings.runs,
    })
}

/// `figure | rust | python | ratio | target | met?` as aligned text (`ours | peer` for a peer
/// suite).
pub fn table(against: Against, rows: &[Row]) -> String {
    let (ours, other) = against.headers();
    let figures: Vec<String> = rows.iter().map(|r| format!("{} ({})", r.figure, r.unit)).collect();
    let width = figures.iter().map(|f| f.chars().count()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$} {:>10} {:>10} {:>8} {:>8}  met?",
        "figure", ours, other, "ratio", "target"
    );
    for (row, figure) in rows.iter().zip(&figures) {
        let python = row.python.map_or("-".to_string(), |p| format!("{p:.1}"));
        let ratio = row.ratio().map_or("-".to_string(), |r| format!("{r:.1}x"));
        let target = row.target.map_or("-".to_string(), |t| format!(">= {}x", short(t)));
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        out.push_str(&format!(
            "\n{figure:<width$} {:>10.1} {python:>10} {ratio:>8} {target:>8}  {met}",
            row.rust
        ));
    }
    out
}

/// A target as people write it: `4`, `2.5`, `0.87` (at most two decimals, no trailing zeros).
fn short(x: f64) -> String {
    let text = format!("{x:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rust: f64, python: Option<f64>, target: Option<f64>) -> Row {
        Row { figure: "x".into(), unit: "µs", better: Better::Lower, rust, python, target }
    }

    #[test]
    fn a_ratio_says_how_many_times_better_rust_is() {
        assert_eq!(row(10.0, Some(80.0), Some(8.0)).ratio(), Some(8.0));
        assert_eq!(row(10.0, Some(80.0), Some(8.0)).met(), Some(true));
        assert_eq!(row(10.0, Some(70.0), Some(8.0)).met(), Some(false));
        assert_eq!(row(10.0, None, Some(8.0)).met(), None);
        let higher = Row { better: Better::Higher, ..row(30.0, Some(10.0), None) };
        assert_eq!(higher.ratio(), Some(3.0));
        assert_eq!(higher.met(), None);
    }

    #[test]
    fn the_table_has_one_line_per_row_under_its_header() {
        let text =
            table(Against::Python, &[row(10.0, Some(80.0), Some(8.0)), row(5.0, None, Some(2.0))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("figure") && lines[0].ends_with("met?"));
        let words = |line: &str| line.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(lines[1])[2..], ["10.0", "80.0", "8.0x", ">=", "8x", "yes"]);
        assert_eq!(words(lines[2])[2..], ["5.0", "-", "-", ">=", "2x", "-"]);
    }

    #[test]
    fn a_missing_script_skips_the_comparison_with_a_reason() {
        let why = run_python("no-such-script.py", &[]).unwrap_err();
        assert!(why.contains("no-such-script.py"), "{why}");
    }
}
