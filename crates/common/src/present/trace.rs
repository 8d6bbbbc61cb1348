//! trace — every run as a picture: `--trace FILE` (Chrome's Trace Event JSON, which Perfetto's
//! UI and `chrome://tracing` open as it is) and `--svg FILE` ([`crate::svg`], one picture).
//!
//! Both are drawn from what the run did and nothing else: the **events** its processes emitted
//! (the lines `--json` prints, recorded to one shared file by [`crate::timeline`]'s recording,
//! started before anything else), with the phase marks of [`crate::phase`] (a span such as
//! `critical section`, recorded but never printed); and the **kernel's view**, each thread's
//! state sampled from `/proc` by [`crate::sampler`].
//!
//! What the trace holds ([`Model`] is the common ground of both outputs):
//! - a track per process and per thread, named as `ps` names them (`comm`), and beside each
//!   thread a second track, `<name> (kernel)`, with its sampled states as slices ([`KernelState`]).
//!   They are a separate track because the kernel's slices and the demo's spans cross each other
//!   and Trace Event slices on one track must nest;
//! - the demo's phases as `B`/`E` slices on the thread's track;
//! - every event as an instant (`i`), the lifecycle ones (fork, exec, exit, kill, reap,
//!   signals) in the category `lifecycle`;
//! - flow arrows (`s` → `f`) from a `put` to the `get` of the same message, and from a task's
//!   submission to its result: by the ids that a traced run's process `Queue` (in its frames)
//!   and `Pool` record at both ends (`queue_put`/`queue_got`, `task_submitted`/`task_result`),
//!   elsewhere by the item the demo's events name, first in, first out;
//! - counters (`C`) for the shared values the events carry: the tickets left, a queue's size,
//!   a balance.
//!
//! The file is written whole at the end (a temporary file beside it, then `rename`), also after
//! Ctrl-C (the signal watcher writes it once every child is reaped) and after a lost child
//! (the demo's error path goes through the same end).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::phase::Mark;
use crate::sampler::{DEFAULT_INTERVAL, Sample, Sampler};
use crate::timeline::{Record, Recording};
use crate::{demo, report};

/// The recorded event that carries a phase mark (never printed).
pub const PHASE_EVENT: &str = "phase";

/// A thread's kernel track has this added to its tid: above any pid the kernel hands out
/// (`pid_max` is at most 2^22), so it never meets a real thread's track.
pub const KERNEL_TRACK_OFFSET: i32 = 1 << 23;

/// The run being traced, for the signal watcher's end (see [`finish_on_signal`]).
static SESSION: Mutex<Option<Session>> = Mutex::new(None);

/// Where the pictures go: the paths of `--trace` and `--svg`.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub trace: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

impl Outputs {
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
    if path.as_os_str().is_empty() {
        return Err(demo::bad_input(format!("{flag}: the file name is empty")));
    }
    let bad = |why: String| Err(demo::bad_input(format!("{flag} {}: {why}", path.display())));
    if path.is_dir() {
        return bad("is a directory, not a file".into());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return bad(format!("the directory {} does not exist", dir.display()));
    }
    // The file is written as a temporary file beside it, then renamed: that needs the right to
    // create files in the directory, whatever the file's own mode. Try it, and leave nothing.
    let probe = temp_path(path);
    if let Err(e) = std::fs::File::create_new(&probe) {
        return bad(format!("cannot write in {}: {e}", dir.display()));
    }
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` whole or not at all.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// The phase listener: a mark becomes one recorded line (never printed).
pub fn on_mark(mark: &Mark<'_>) {
    let (ph, name) = match mark {
        Mark::Step(name) => ("i", name),
        Mark::Begin(name) => ("B", name),
        Mark::End(name) => ("E", name),
    };
    report::record_only(PHASE_EVENT, json!({ "ph": ph, "name": name }));
}

#[derive(Debug)]
struct Session {
    outputs: Outputs,
    recording: Recording,
    sampler: Sampler,
}

/// Starts tracing the run if `outputs` asks for it. Call once, early: after the signal watcher
/// (the sampler is a thread) and before the demo starts any child.
pub fn start(outputs: Outputs) -> Result<()> {
    if outputs.trace.is_none() && outputs.svg.is_none() {
        return Ok(());
    }
    let recording = Recording::start_run()?;
    report::set_tracing(true);
    crate::phase::install_tracer(on_mark);
    let watched = recording.file.try_clone().ok();
    let sampler = Sampler::start(std::process::id() as i32, DEFAULT_INTERVAL, watched)?;
    let session = Session { outputs, recording, sampler };
    *SESSION.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
    Ok(())
}

/// Ends the traced run (if any) and writes its pictures. The session stays locked while they
/// are written, so that a Ctrl-C meanwhile waits for them rather than cutting a write short.
pub fn finish() -> Result<()> {
    let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    session.take().map_or(Ok(()), Session::finish)
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
        let model = Model::build(&records, &samples, DEFAULT_INTERVAL.as_micros() as u64);
        if let Some(path) = &self.outputs.trace {
            let text = serde_json::to_string(&model.to_trace())? + "\n";
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
