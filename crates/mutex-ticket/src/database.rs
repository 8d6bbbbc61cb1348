//! The database the buyers share: `--db` as it is, or a fresh copy of the template
//! `data/db.json`; strict validation, and the cleanup of temp files that killed writers left.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::demo::bad_input;
use common::report;
use mutex_ticket::store::{Durability, StoreError, TicketDb};

/// The tracked template `data/db.json`, built into the program so it runs from any folder on a
/// fresh machine. It is only ever read.
const TEMPLATE: &str = include_str!("../../../data/db.json");

/// The database for this run, validated strictly before anything is written (so a bad file is
/// left exactly as it was), with `--tickets` applied; returns it and the count on sale.
pub fn open(db: Option<&Path>, tickets: Option<u64>) -> Result<(TicketDb, u64)> {
    let (db, fresh) = match db {
        Some(path) => (TicketDb::new(path), false),
        None => (fresh_copy_of_template()?, true),
    };
    let found = db.read_count().map_err(store_error)?;
    let initial = tickets.unwrap_or(found);
    if initial != found {
        set_count(&db, initial)?;
    }
    let text = fs::read_to_string(db.path()).unwrap_or_default();
    let whence = if fresh {
        "a fresh copy of data/db.json, kept after the run: cat it"
    } else {
        "--db, used as it is"
    };
    common::event!("database", { "path": db.path(), "lock_path": db.lock_path(), "count": initial, "fresh": fresh }, "database {} holds {} ({whence})", db.path().display(), text.trim_end());
    Ok((db, initial))
}

/// A new private folder (mode 0700) under the system's temp folder holding `db.json`, written
/// from the built-in template by temp file and rename, so it is never seen half-written.
fn fresh_copy_of_template() -> Result<TicketDb> {
    let base = std::env::temp_dir();
    let mut attempt = 0u64;
    let dir = loop {
        let stamp = report::monotonic_ns().wrapping_add(attempt);
        let dir = base.join(format!("mutex-ticket-{}-{stamp:x}", std::process::id()));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    };
    let db = TicketDb::new(dir.join("db.json"));
    let temp = db.temp_path(std::process::id());
    fs::write(&temp, TEMPLATE).with_context(|| format!("writing {}", temp.display()))?;
    fs::rename(&temp, db.path()).with_context(|| format!("renaming to {}", db.path().display()))?;
    // The template is checked like any database: a broken data/db.json is this program's bug.
    db.read_count().context("the built-in template data/db.json is not a valid database")?;
    Ok(db)
}

/// Sets the count under the lock, keeping the file's other keys.
pub fn set_count(db: &TicketDb, count: u64) -> Result<()> {
    let mut guard = db.lock().map_err(store_error)?;
    guard.read_count().map_err(store_error)?;
    guard.write_count(count, Durability::Rename).map_err(store_error)
}

/// A bad file is bad input (exit 2); an I/O failure while locking or writing is exit 1.
pub fn store_error(error: StoreError) -> anyhow::Error {
    if error.is_bad_input() {
        bad_input(format!("bad database: {error}"))
    } else {
        anyhow::Error::new(error)
    }
}

/// Temp files `db.json.tmp.<pid>` beside the database right now (the victim's, in the crash),
/// with the pid in their names.
fn temps(db: &TicketDb) -> Vec<(PathBuf, Option<i32>)> {
    let Some(name) = db.path().file_name().map(|n| format!("{}.tmp.", n.to_string_lossy())) else {
        return Vec::new();
    };
    let dir = db.path().parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut found: Vec<(PathBuf, Option<i32>)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let pid = file_name.strip_prefix(&name)?;
            // Only plain decimal, as `process::id()` prints it, names a writer.
            let pid = pid.parse().ok().filter(|_| !pid.starts_with('0') && !pid.starts_with('+'));
            Some((e.path(), pid))
        })
        .collect();
    found.sort();
    found
}

pub fn stray_temps(db: &TicketDb) -> Vec<String> {
    temps(db).into_iter().map(|(path, _)| path.display().to_string()).collect()
}

/// Removes the temp files of writers that died before their rename, and returns them. A live
/// writer's (or a zombie's: `kill(pid, 0)` still finds it) is kept: it may be about to rename.
fn remove_dead_temps(db: &TicketDb) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for (path, pid) in temps(db) {
        let Some(pid) = pid else { continue };
        let dead = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if dead && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Removes the temp files of writers that died before their rename, and says which.
pub fn clean_stray_temps(db: &TicketDb) -> Result<()> {
    let removed = remove_dead_temps(db);
    if !removed.is_empty() {
        let list: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        common::event!("cleaned", { "removed": list },
                       "removed the stray temp file(s) of dead writers: {}", list.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dead_writers_temp_file_is_removed() {
        let dir = std::env::temp_dir().join(format!("ticket-temps-{}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        let db = TicketDb::new(dir.join("db.json"));
        fs::write(db.path(), "{\"count\": 1}").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        assert!(child.wait().unwrap().success()); // reaped: no such process any more
        let own_pid = std::process::id();
        let dead = dir.join(format!("db.json.tmp.{dead_pid}"));
        let kept = [
            format!("db.json.tmp.{own_pid}"), // alive: a writer may be about to rename it
            format!("other.json.tmp.{dead_pid}"), // another database's
            "db.json.tmp.abc".to_owned(),     // not a pid
            format!("db.json.tmp.0{dead_pid}"), // not as process::id() prints it
        ];
        for name in kept.iter().chain([&format!("db.json.tmp.{dead_pid}")]) {
            fs::write(dir.join(name), b"{\"count\"").unwrap();
        }
        let removed = remove_dead_temps(&db);
        let left: Vec<bool> = kept.iter().map(|n| dir.join(n).exists()).collect();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(removed, [dead]);
        assert_eq!(left, [true; 4], "{kept:?}");
    }
}
