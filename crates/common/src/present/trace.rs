//! trace — every run as a picture: `--trace FILE` (Chrome's Trace Event JSON, which Perfetto's
//! UI and `chrome://tracing` open as it is) and `--svg FILE` (one self-contained picture).
//!
//! Both are drawn from two sources and nothing else, so nothing is drawn that the run did not
//! do:
//! - the **events** the demo's processes emitted (the same lines `--json` prints), recorded to
//!   one shared file by every process of the run ([`crate::timeline`]'s recording, started
//!   before anything else), plus the phase marks of [`crate::phase`] (a span such as
//!   `critical section`), which go to that file only and never to the demo's output;
//! - the **kernel's view**, sampled from `/proc` by [`crate::sampler`] every
//!   [`sampler::DEFAULT_INTERVAL`]: each thread's state letter and its time running and ready.
//!
//! What the trace holds ([`Model`] is the common ground of both outputs):
//! - a track per process and per thread, named as `ps` names them (`comm`), and beside each
//!   thread a second track, `<name> (kernel)`, with its sampled states as slices: `running`,
//!   `ready` (runnable, waiting for a CPU: `R` with its wait time growing), `S`, `D`, `T`, `Z`,
//!   each with its colour. They are a separate track because the kernel's slices and the
//!   demo's spans cross each other and Trace Event slices on one track must nest;
//! - the demo's phases as `B`/`E` slices on the thread's track;
//! - every event as an instant (`i`), the lifecycle ones (fork, exec, exit, kill, reap,
//!   signals) in the category `lifecycle`;
//! - flow arrows (`s` → `f`) from a `put` to the `get` of the same message, and from a task's
//!   submission to its result. In a traced run the process `Queue` carries a message id in its
//!   frames and records both ends with it (`queue_put`, `queue_got`), and the `Pool` records
//!   its jobs' (`task_submitted`, `task_result`); elsewhere the demo's events are paired by the
//!   item they name, first in, first out;
//! - counters (`C`) for the shared values the events carry: the tickets left, a queue's size,
//!   a balance.
//!
//! The file is written whole at the end (a temporary file beside it, then `rename`), also after
//! Ctrl-C (the signal watcher writes it once every child is reaped) and after a lost child
//! (the demo's error path goes through the same end).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::phase::Mark;
use crate::sampler::{self, Sample, Sampler};
use crate::timeline::{Record, Recording};
use crate::{demo, report};

/// The recorded event that carries a phase mark (never printed).
pub const PHASE_EVENT: &str = "phase";

/// A thread's kernel track has this added to its tid: above any pid the kernel hands out
/// (`pid_max` is at most 2^22), so it never meets a real thread's track.
pub const KERNEL_TRACK_OFFSET: i32 = 1 << 23;

/// The descriptor of the run's recording, in the process that started it (or -1).
static RUN_FD: AtomicI32 = AtomicI32::new(-1);

/// The run being traced, for the signal watcher's end (see [`finish_on_signal`]).
static SESSION: Mutex<Option<Session>> = Mutex::new(None);

/// Where the pictures go: the paths of `--trace` and `--svg`.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub trace: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

impl Outputs {
    /// True when neither picture was asked for.
    pub fn is_empty(&self) -> bool {
        self.trace.is_none() && self.svg.is_none()
    }

    /// Checks both paths before anything starts: each must name a file (not a directory) in a
    /// directory this process can create files in. Bad input (exit 2) naming the flag.
    pub fn check(&self) -> Result<()> {
        for (flag, path) in [("--trace", &self.trace), ("--svg", &self.svg)] {
            if let Some(path) = path {
                check_output(flag, path)?;
            }
        }
        if self.trace.is_some() && self.trace == self.svg {
            return Err(demo::bad_input("--trace and --svg name the same file"));
        }
        Ok(())
    }
}

fn check_output(flag: &str, path: &Path) -> Result<()> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(demo::bad_input(format!("{flag}: the file name is empty")));
    }
    if path.is_dir() {
        return Err(demo::bad_input(format!("{flag} {shown}: is a directory, not a file")));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(demo::bad_input(format!(
            "{flag} {shown}: the directory {} does not exist",
            dir.display()
        )));
    }
    // The file is written as a temporary file beside it, then renamed: that needs the right to
    // create files in the directory, whatever the file's own mode. Try it, and leave nothing.
    let probe = temp_path(path);
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => {
            Err(demo::bad_input(format!("{flag} {shown}: cannot write in {}: {e}", dir.display())))
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it, then `rename`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let temp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// In the process that records the whole run: a second handle on the run's recording file,
/// for a demo's own [`Recording`] to read its part of it.
pub(crate) fn shared_recording(fd: i32) -> Option<std::fs::File> {
    #[cfg(unix)]
    {
        if fd < 0 || RUN_FD.load(Ordering::Acquire) != fd {
            return None;
        }
        // Safety: the run's recording keeps `fd` open while RUN_FD names it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        borrowed.try_clone_to_owned().ok().map(std::fs::File::from)
    }
    #[cfg(not(unix))]
    {
        let _ = fd;
        None
    }
}

/// The phase listener: a mark becomes one recorded line (never printed).
pub fn on_mark(mark: &Mark<'_>) {
    let (ph, name) = match mark {
        Mark::Step(name) => ("i", name),
        Mark::Begin(name) => ("B", name),
        Mark::End(name) => ("E", name),
    };
    report::record_only(PHASE_EVENT, json!({ "ph": ph, "name": name }));
}

/// A traced run: the recording of every event and the sampler.
#[derive(Debug)]
pub struct Session {
    outputs: Outputs,
    recording: Recording,
    sampler: Sampler,
    interval_us: u64,
}

/// Starts tracing the run if `outputs` asks for it. Call once, early: after the signal watcher
/// (the sampler is a thread) and before the demo starts any child.
pub fn start(outputs: Outputs) -> Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let (recording, fd) = Recording::start_run()?;
    RUN_FD.store(fd, Ordering::Release);
    report::set_tracing(true);
    crate::phase::install_tracer(on_mark);
    let interval = sampler::DEFAULT_INTERVAL;
    let sampler = Sampler::start(std::process::id() as i32, interval)?;
    if let Some(file) = shared_recording(fd) {
        sampler.watch_recording(file);
    }
    let session = Session { outputs, recording, sampler, interval_us: interval.as_micros() as u64 };
    *SESSION.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
    Ok(())
}

/// Ends the traced run (if any) and writes its pictures. The session stays locked while they
/// are written, so that a Ctrl-C meanwhile waits for them rather than cutting a write short.
pub fn finish() -> Result<()> {
    let mut guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    match guard.take() {
        Some(session) => session.finish(),
        None => Ok(()),
    }
}

/// The signal watcher's end: writes the pictures of the run so far, once every child is
/// reaped; if the main thread is writing them at that moment, waits for it to be done.
pub fn finish_on_signal() {
    let session = SESSION.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(session) = session
        && let Err(e) = session.finish()
    {
        report::write_stderr(&format!("{}: error: {e:#}", report::who()));
    }
}

impl Session {
    fn finish(self) -> Result<()> {
        let samples = self.sampler.stop();
        let records = self.recording.all_records()?;
        report::set_tracing(false);
        let model = Model::build(&records, &samples, self.interval_us);
        if let Some(path) = &self.outputs.trace {
            let mut text = serde_json::to_string(&model.to_trace())?;
            text.push('\n');
            write_atomically(path, text.as_bytes())?;
        }
        if let Some(path) = &self.outputs.svg {
            write_atomically(path, crate::svg::render(&model).as_bytes())?;
        }
        Ok(())
    }
}

mod chrome;
mod flows;
mod model;
mod states;
pub use flows::*;
pub use model::*;
pub use states::*;

#[cfg(test)]
mod tests {
    use super::flows::FLOW_ENDS;
    use super::states::state_slices;
    use super::*;

    fn rec(t_us: u64, pid: i32, tid: i32, event: &str, data: Value) -> Record {
        Record {
            t_ms: t_us / 1000,
            t_us,
            pid,
            ppid: 1,
            who: format!("buyer-{pid}"),
            tid,
            thread: "main".into(),
            event: event.into(),
            data,
        }
    }

    fn sample(t_us: u64, pid: i32, state: char, run_ns: u64, wait_ns: u64) -> Sample {
        Sample { t_us, pid, tid: pid, comm: format!("buyer-{pid}"), state, cpu: 0, run_ns, wait_ns }
    }

    #[test]
    fn samples_become_slices_and_r_is_split_into_running_and_ready() {
        let samples = [
            sample(0, 5, 'R', 0, 0),
            sample(2000, 5, 'R', 1_500_000, 100),
            sample(4000, 5, 'R', 1_500_100, 1_900_000),
            sample(6000, 5, 'S', 1_500_200, 1_900_000),
            sample(8000, 5, 'Z', 1_500_200, 1_900_000),
        ];
        let slices = state_slices(&samples, 2000);
        let states: Vec<(&str, u64, u64)> =
            slices.iter().map(|s| (s.state.name(), s.start_us, s.end_us)).collect();
        assert_eq!(
            states,
            [("running", 0, 4000), ("ready", 4000, 6000), ("S", 6000, 8000), ("Z", 8000, 8001)]
        );
    }

    #[test]
    fn a_span_left_open_ends_with_its_thread_and_marks_pair_by_name() {
        let records = [
            rec(10, 7, 7, "phase", json!({"ph": "B", "name": "task running"})),
            rec(20, 7, 7, "phase", json!({"ph": "B", "name": "critical section"})),
            rec(30, 7, 7, "phase", json!({"ph": "E", "name": "critical section"})),
            rec(90, 7, 7, "busy", json!({})),
        ];
        let model = Model::build(&records, &[], 2000);
        let spans: Vec<(&str, u64, u64, bool)> =
            model.spans.iter().map(|s| (s.name.as_str(), s.start_us, s.end_us, s.closed)).collect();
        assert_eq!(spans, [("task running", 10, 90, false), ("critical section", 20, 30, true)]);
    }

    #[test]
    fn a_put_flows_to_the_first_got_of_the_same_item() {
        let records = [
            rec(10, 7, 7, "put", json!({"item": 1, "qsize": 1})),
            rec(11, 7, 7, "put", json!({"item": 2, "qsize": 2})),
            rec(50, 8, 8, "got", json!({"item": 2, "qsize": 1})),
            rec(60, 8, 8, "got", json!({"item": 1, "qsize": 0})),
        ];
        let model = Model::build(&records, &[], 2000);
        let flows: Vec<(u64, u64)> = model.flows.iter().map(|f| (f.from.2, f.to.2)).collect();
        assert_eq!(flows, [(11, 50), (10, 60)]);
        let sizes: Vec<f64> = model.counters.iter().map(|c| c.value).collect();
        assert_eq!(sizes, [1.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn real_message_ids_pair_each_put_with_its_get_and_replace_the_guess() {
        let records = [
            rec(10, 7, 7, "queue_put", json!({"msg": 5})),
            rec(11, 7, 7, "put", json!({"item": 1})),
            rec(12, 7, 7, "queue_put", json!({"msg": 6})),
            rec(13, 7, 7, "put", json!({"item": 1})),
            rec(50, 8, 8, "queue_got", json!({"msg": 6})),
            rec(51, 8, 8, "got", json!({"item": 1})),
            rec(60, 9, 9, "queue_got", json!({"msg": 5})),
            rec(61, 9, 9, "got", json!({"item": 1})),
            rec(70, 7, 7, "task_submitted", json!({"pool": 3, "job": 0})),
            rec(90, 7, 8, "task_result", json!({"pool": 3, "job": 0})),
        ];
        let model = Model::build(&records, &[], 2000);
        let flows: Vec<(&str, Value, u64, u64)> =
            model.flows.iter().map(|f| (f.name, f.key.clone(), f.from.2, f.to.2)).collect();
        assert_eq!(
            flows,
            [
                ("message", json!({"msg": 6}), 12, 50),
                ("message", json!({"msg": 5}), 10, 60),
                ("result", json!({"pool": 3, "job": 0}), 70, 90),
            ]
        );
        // The recorded ends are drawn as their arrows, not as instants of their own.
        assert!(model.instants.iter().all(|i| !FLOW_ENDS.contains(&i.name.as_str())));
    }

    #[test]
    fn bad_output_paths_are_refused_naming_the_flag() {
        let dir = std::env::temp_dir();
        let e = check_output("--svg", &dir).unwrap_err().to_string();
        assert!(e.starts_with("--svg ") && e.contains("directory"), "{e}");
        let missing = dir.join("no-such-dir-for-a-trace").join("t.json");
        let e = check_output("--trace", &missing).unwrap_err().to_string();
        assert!(e.starts_with("--trace ") && e.contains("does not exist"), "{e}");
    }
}
