//! The guides' pictures (`crates/<demo>/pictures/*.svg`) come from the current code: each is
//! drawn again by a real run with `--svg`, and its skeleton compared with the committed one.
//! The skeleton is what every run of that part draws — its lanes and their roles, the demo's
//! spans, marks, arrows and counters in the legend — not the pixels, since a race (and the
//! kernel's sampled states) draw differently every time.
//!
//! `make pictures` runs this test with `PICTURES_WRITE=1`: it then writes the new pictures in
//! place instead of comparing.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use support::TempDir;

/// (demo, picture, the demo's arguments, the tickets of a fresh db.json if it needs one).
const PICTURES: &[(&str, &str, &[&str], Option<u32>)] = &[
    ("mutex-ticket", "race.svg", &["run", "--no-lock"], Some(1)),
    ("mutex-ticket", "lock.svg", &["run", "--buyers", "5"], Some(1)),
    // The classic oversell, chosen: both searches (and reads) before either write.
    (
        "mutex-ticket",
        "schedule.svg",
        &[
            "run",
            "--no-lock",
            "--schedule",
            "0,1,0,1,0,1,0,1",
            "--search-ms",
            "10",
            "--buy-ms",
            "10",
        ],
        Some(1),
    ),
    ("zombie-orphan", "zombie.svg", &["zombie"], None),
    ("deadlock", "classic.svg", &["classic"], None),
    ("pool", "fault.svg", &["fault"], None),
    ("joinable-queue", "sentinel.svg", &["sentinel"], None),
    ("semaphore", "threads.svg", &["threads"], None),
];

/// The kernel's states: which of them a run samples varies, so they are not in the skeleton.
const STATES: &[&str] = &["running", "ready", "S", "D", "T", "Z", "other"];

#[derive(Debug, PartialEq, Eq)]
struct Skeleton {
    /// (process or thread, role), sorted.
    lanes: Vec<(String, String)>,
    /// The legend's items but the kernel states: spans, lifecycle marks, arrows.
    legend: BTreeSet<String>,
    /// The counters drawn.
    counters: BTreeSet<String>,
}

fn skeleton(text: &str) -> Skeleton {
    let doc = roxmltree::Document::parse(text).expect("the SVG is well-formed XML");
    let with_class = |class: &'static str| {
        doc.descendants().filter(move |n| n.attribute("class") == Some(class))
    };
    let mut lanes: Vec<(String, String)> = with_class("lane")
        .map(|n| {
            let attr = |a: &str| n.attribute(a).unwrap_or_default().to_string();
            (attr("data-kind"), attr("data-role"))
        })
        .collect();
    lanes.sort();
    let legend = with_class("legend-item")
        .filter_map(|n| n.attribute("data-name"))
        .filter(|name| !STATES.contains(name))
        .map(String::from)
        .collect();
    let counters = with_class("counter").filter_map(|n| n.attribute("data-name")).map(String::from);
    Skeleton { lanes, legend, counters: counters.collect() }
}

fn draw(demo: &str, args: &[&str], tickets: Option<u32>, dir: &TempDir, out: &str) -> String {
    let svg = dir.join(out);
    let db = dir.join(&format!("{out}.db.json"));
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if let Some(n) = tickets {
        std::fs::write(&db, format!("{{\"count\": {n}}}")).unwrap();
        all.extend(["--db".into(), db.to_string_lossy().into_owned()]);
    }
    all.extend(["--svg".into(), svg.to_string_lossy().into_owned()]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    support::run_ok(demo, &all);
    std::fs::read_to_string(&svg).expect("the picture was written")
}

#[test]
fn the_committed_pictures_come_from_the_current_code() {
    let write = std::env::var_os("PICTURES_WRITE").is_some();
    let dir = TempDir::new("pictures");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (demo, name, args, tickets) in PICTURES {
        let fresh = draw(demo, args, *tickets, &dir, &format!("{demo}-{name}"));
        let path = root.join("crates").join(demo).join("pictures").join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &fresh).unwrap();
            println!("wrote {} ({} bytes)", path.display(), fresh.len());
            continue;
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (make pictures draws it)", path.display()));
        let (old, new) = (skeleton(&committed), skeleton(&fresh));
        if old != new {
            stale.push(format!("{}:\n  committed {old:?}\n  now       {new:?}", path.display()));
        }
        assert!(committed.len() < 64 * 1024, "{} is too large for a guide", path.display());
    }
    assert!(
        stale.is_empty(),
        "pictures that the code no longer draws (make pictures):\n{}",
        stale.join("\n")
    );
}
