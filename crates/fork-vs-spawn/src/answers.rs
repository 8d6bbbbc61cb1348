//! Shared by the parts: the folder for the children's answers, how a child posts its answer
//! and the parent reads it, and the check that a joined child exited with 0.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use common::process::Process;
use common::ps;
use serde_json::Value;

/// Where the children's answers (and the buffer files) go: `--dir`, kept, or a temporary
/// folder removed at the end.
#[derive(Debug)]
pub struct WorkDir {
    pub path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    pub fn new(dir: Option<&Path>) -> Result<WorkDir> {
        let (path, temporary) = match dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => {
                remove_abandoned_folders();
                (std::env::temp_dir().join(format!("{TEMP_PREFIX}{}", std::process::id())), true)
            }
        };
        std::fs::create_dir_all(&path).map_err(|e| {
            let what = if temporary { "the temporary folder" } else { "--dir" };
            common::demo::bad_input(format!("creating {what} {}: {e}", path.display()))
        })?;
        Ok(WorkDir { path, temporary })
    }

    /// The path of `name` in the folder, with any file left there by an earlier run removed.
    pub fn fresh(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
            Err(e) => Err(e).with_context(|| format!("removing the old {}", path.display())),
        }
    }
}

/// The temporary folder of a run is `<temp>/fork-vs-spawn-<pid>`.
const TEMP_PREFIX: &str = "fork-vs-spawn-";

/// Removes the temporary folders of earlier runs whose process is gone: a run ended by Ctrl-C
/// leaves with `_exit` (see `common::signals`), so its folder was never removed.
fn remove_abandoned_folders() {
    if !cfg!(target_os = "linux") {
        return; // `ps::stat` reads /proc: elsewhere it cannot tell a live run from a gone one
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)?.parse::<i32>().ok());
        if pid.is_some_and(|pid| ps::stat(pid).is_none()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Only the process that made the folder gets here: fork children leave with _exit.
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child's answer to its parent. Processes share no memory, so the answer travels through
/// the kernel: a small JSON file here (a pipe or a queue in other demos). It is written under
/// another name and renamed, so the parent never reads half an answer.
pub fn post(path: &Path, answer: &Value) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, answer.to_string())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The answer at `path`, if it is there yet.
pub fn read_answer(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Ok if `child` (joined) exited with 0. (A child killed by the same Ctrl-C that reached the
/// demo is no failure of ours: the runner sees the stop under way and leaves the exit to it.)
pub fn succeeded(child: &Process, what: &str) -> Result<()> {
    if child.exitcode() == Some(0) {
        return Ok(());
    }
    if child.exitcode().is_some_and(|code| code < 0) {
        // Killed by a signal: from elsewhere, since no part kills its children.
        let lost = common::processes::lost::report(child, "answers", 1);
        return Err(lost.context(format!("{child}: {what} failed")));
    }
    bail!("{child}: {what} failed")
}
