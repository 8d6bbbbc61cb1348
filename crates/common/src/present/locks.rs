//! locks — who holds a file lock and who waits for it, read from `/proc/locks`.
//!
//! The kernel lists every file lock in `/proc/locks`, one per line; `lslocks(8)` formats the
//! same table. A process blocked in `flock(2)` appears too, on a line marked `->`, below the
//! lock it waits for:
//!
//! ```text
//! 1: FLOCK  ADVISORY  WRITE 4182 fe:00:10010635 0 EOF        <- pid 4182 holds it
//! 1: -> FLOCK  ADVISORY  WRITE 4183 fe:00:10010635 0 EOF     <- pid 4183 waits for it
//! ```
//!
//! The file is named by `MAJOR:MINOR:INODE` (device numbers in hex). A file's locks are found by
//! inode only: on an overlay file system the device the kernel prints is the lower file
//! system's, not the one `stat` reports, while the inode number agrees on both.
//!
//! The pid is the process that *took* the lock; a descriptor inherited through `fork` still
//! shows the original taker. A process blocked in `flock` is in state `S` (阻塞态).

use std::io;
use std::path::Path;

/// One line of `/proc/locks` that concerns the file asked about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileLock {
    /// The process that holds the lock or waits for it.
    pub pid: i32,
    /// `FLOCK` (flock(2), `flock(1)`, Python's `fcntl.flock`), `POSIX` (fcntl/lockf record
    /// locks, Python's `fcntl.lockf`) or `OFDLCK` (open file description locks).
    pub kind: String,
    /// `WRITE` (exclusive) or `READ` (shared).
    pub access: String,
    /// True for a process blocked waiting for the lock (`->` in `/proc/locks`).
    pub waiting: bool,
}

/// The pids holding a lock on the file at `path` right now and the pids waiting for one:
/// `(holders, waiters)`, each in the kernel's order.
#[cfg(target_os = "linux")]
pub fn holders_and_waiters(path: &Path) -> io::Result<(Vec<i32>, Vec<i32>)> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path)?.ino();
    let table = std::fs::read_to_string("/proc/locks")?;
    let on_file = table.lines().filter_map(parse_line).filter(|(ino, _)| *ino == inode);
    let (waiting, holding): (Vec<_>, Vec<_>) = on_file.map(|(_, l)| l).partition(|l| l.waiting);
    let pids = |locks: Vec<FileLock>| locks.into_iter().map(|l| l.pid).collect();
    Ok((pids(holding), pids(waiting)))
}

/// Without `/proc/locks` there is no way to list locks: says so.
#[cfg(not(target_os = "linux"))]
pub fn holders_and_waiters(_path: &Path) -> io::Result<(Vec<i32>, Vec<i32>)> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "/proc/locks exists on Linux only"))
}

/// Parses `1: -> FLOCK  ADVISORY  WRITE 4183 fe:00:10010635 0 EOF` into the inode and the lock.
/// Read here rather than with `procfs::locks()`, which skips the `->` and so cannot tell a
/// waiter from a holder: the one thing this module is for.
pub fn parse_line(line: &str) -> Option<(u64, FileLock)> {
    let mut fields = line.split_whitespace().skip(1).peekable(); // skip "1:"
    let waiting = fields.next_if_eq(&"->").is_some();
    let kind = fields.next()?.to_owned();
    let _mode = fields.next()?; // ADVISORY or MANDATORY
    let access = fields.next()?.to_owned();
    let pid = fields.next()?.parse().ok()?;
    let inode = fields.next()?.rsplit(':').next()?.parse().ok()?;
    Some((inode, FileLock { pid, kind, access, waiting }))
}
