//! Does every guide's **Where the mechanism is** table still point at the call it names?
//!
//! Each demo's guide (`crates/<demo>/README.md`) has a section headed `## Where the mechanism
//! is`, a table whose rows read `| step | `src/file.rs:LINE` | `call` |`: the call's text must
//! stand on that line of that file. When a row breaks (the code moved), the failure says where
//! the call stands now, so the row is easy to fix.

use std::path::{Path, PathBuf};

const HEADING: &str = "## Where the mechanism is";

/// Demos whose table is not written yet. A demo listed here that has a table fails the test,
/// so that this list only shrinks.
const NOT_YET: &[&str] = &[];

/// One row of a table: the step, the file (relative to the crate), the line, the call.
#[derive(Debug)]
struct Row {
    step: String,
    file: String,
    line: usize,
    call: String,
}

/// The text inside the first code span (`...`) of `cell`.
fn code_span(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let end = start + cell[start..].find('`')?;
    Some(&cell[start..end])
}

/// The rows of the section's table, or `None` when the guide has no such section. A row that
/// does not parse is an error naming it.
fn table(guide: &str) -> Option<Result<Vec<Row>, String>> {
    let at = guide.find(HEADING)?;
    let section = &guide[at + HEADING.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut rows = Vec::new();
    for line in section.lines().map(str::trim).filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[0].starts_with("---") || cells[1].starts_with("---") {
            continue;
        }
        let Some(place) = code_span(cells[1]) else {
            if rows.is_empty() {
                continue; // the header row
            }
            return Some(Err(format!("no `src/file.rs:LINE` in the row {line}")));
        };
        let parsed = place.rsplit_once(':').and_then(|(f, n)| Some((f, n.parse().ok()?)));
        let (Some((file, number)), Some(call)) = (parsed, code_span(cells[2])) else {
            return Some(Err(format!("the row {line} is not | step | `file:LINE` | `call` |")));
        };
        rows.push(Row {
            step: cells[0].to_string(),
            file: file.into(),
            line: number,
            call: call.into(),
        });
    }
    Some(Ok(rows))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Where `call` stands now in the crate's sources: `src/file.rs:LINE` for every line holding it.
fn where_now(crate_dir: &Path, call: &str) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&crate_dir.join("src"), &mut files);
    files.sort();
    let mut places = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let shown = file.strip_prefix(crate_dir).unwrap_or(&file).display().to_string();
        for (i, line) in text.lines().enumerate() {
            if line.contains(call) {
                places.push(format!("{shown}:{}", i + 1));
            }
        }
    }
    places
}

/// What is wrong with one row, if anything.
fn check(crate_dir: &Path, row: &Row) -> Option<String> {
    let path = crate_dir.join(&row.file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let line = text.lines().nth(row.line.wrapping_sub(1)).unwrap_or("");
    if line.contains(&row.call) {
        return None;
    }
    let now = where_now(crate_dir, &row.call);
    Some(format!(
        "{}:{} ({}) does not hold `{}`; the line is now {:?}; the call stands at: {}",
        row.file,
        row.line,
        row.step,
        row.call,
        line.trim(),
        if now.is_empty() { "nowhere in src/".to_string() } else { now.join(", ") }
    ))
}

#[test]
fn does_every_row_of_every_mechanism_table_name_a_line_that_holds_its_call() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for demo in common::demo::demos() {
        let crate_dir = root.join("crates").join(demo);
        let guide = std::fs::read_to_string(crate_dir.join("README.md")).unwrap_or_default();
        match (table(&guide), NOT_YET.contains(&demo)) {
            (None, true) => continue,
            (Some(_), true) => broken.push(format!("{demo}: has its table; take it off NOT_YET")),
            (None, false) => broken.push(format!("crates/{demo}/README.md: no `{HEADING}`")),
            (Some(Err(e)), false) => broken.push(format!("crates/{demo}/README.md: {e}")),
            (Some(Ok(rows)), false) => {
                if rows.is_empty() {
                    broken.push(format!("crates/{demo}/README.md: `{HEADING}` has no rows"));
                }
                for row in &rows {
                    checked += 1;
                    if let Some(wrong) = check(&crate_dir, row) {
                        broken.push(format!("crates/{demo}/{wrong}"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "{} broken row(s):\n{}", broken.len(), broken.join("\n"));
    assert!(checked > 0);
}

#[test]
fn does_a_moved_call_fail_the_check_and_say_where_it_stands_now() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crate_dir = root.join("crates/zombie-orphan");
    let text = std::fs::read_to_string(crate_dir.join("src/zombie.rs")).expect("zombie.rs");
    let at = text.lines().position(|l| l.contains("fork()")).expect("zombie.rs calls fork()") + 1;
    let right =
        Row { step: "fork".into(), file: "src/zombie.rs".into(), line: at, call: "fork()".into() };
    assert_eq!(check(&crate_dir, &right), None);
    let moved = Row { line: at + 1, ..right };
    let message = check(&crate_dir, &moved).expect("a row one line off fails");
    assert!(message.contains(&format!("src/zombie.rs:{at}")), "{message}");
}
