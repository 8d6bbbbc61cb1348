//! `store` — the ticket database of the ticket-booking demo (练习一：模拟抢票).
//!
//! The database is one small JSON file, `db.json`, holding `{"count": 1}`: the number of tickets
//! still on sale. Buyers are separate processes that *search* (read the count) and *buy* (read,
//! decrement, write back). This module owns everything about that file: how it is locked, how it
//! is written so that a crash cannot tear it, and how strictly it is read.
//!
//! # The lock is on a sidecar file, `db.json.lock`
//! A buyer's read-modify-write is made exclusive with an advisory kernel lock, `flock(2)`
//! (std's [`File::lock`]), taken on a second file beside the database: `<db path>.lock`
//! (`db.json.lock`; for `--db foo/x.json` it is `foo/x.json.lock`). The sidecar is created if
//! missing and never replaced or deleted, and `db.json` is opened only *after* the lock is held.
//!
//! Why not lock `db.json` itself? Because writes replace `db.json` by a rename (below). A lock
//! belongs to the file (the inode) that was open when it was taken, not to the name. A waiter
//! that opened `db.json` and then blocked in `flock` wakes up, after the holder renamed a new file
//! into place, holding a lock on the *old*, replaced file and reads stale data from it. Two buyers
//! would then both see "1 ticket left". The test `locking_db_json_itself_would_read_stale_data`
//! shows exactly that.
//!
//! Why `flock` and not `fcntl`/`lockf` record locks? So that other tools can join in: `flock(1)`
//! from a shell and Python's `fcntl.flock` take the same kind of lock on the same sidecar and
//! exclude our buyers (Python's `fcntl.lockf` takes a *record* lock, which a flock does not see):
//!
//! ```sh
//! flock -x data/db.json.lock -c 'cat data/db.json; sleep 5'   # every buyer waits 5 s
//! ```
//!
//! ```python
//! import fcntl, json
//! with open("db.json.lock", "a") as lock:
//!     fcntl.flock(lock, fcntl.LOCK_EX)      # not fcntl.lockf: that lock is invisible to flock
//!     print(json.load(open("db.json")))
//! ```
//!
//! # Writes: three levels of safety ([`Durability`])
//! - [`Durability::InPlace`]: truncate `db.json` and write the new text into it, as the notes do.
//!   A process killed between the truncate and the end of the write leaves an empty or torn file.
//! - [`Durability::Rename`] (the default): write the whole new text into a temp file in the same
//!   directory, `db.json.tmp.<pid>`, then `rename(2)` it over `db.json`. A rename replaces the name
//!   in one step, so a process killed at any moment leaves either the old file or the new one,
//!   never a torn one; at worst a stray temp file, which [`TicketDb::clean_stray_temps`] removes.
//! - [`Durability::RenameFsync`]: also `fsync` the temp file before the rename and the directory
//!   after it, so the new contents and the new name reach the disk: this protects against a
//!   power loss, not only a killed process, and costs an fsync or two per write.
//!
//! # Strict reading, never repair
//! The file must hold exactly one JSON object whose `count` is a whole number from 0 to
//! [`MAX_TICKETS`]. Anything else (missing, a directory, unreadable, empty, not JSON, extra data
//! after the object, not an object, `count` missing, negative, fractional, not a number, too
//! large) is a distinct [`StoreError`] naming the file and the problem, and nothing is written.
//! Other keys in the object are kept when the count is written back (in their order if
//! serde_json's `preserve_order` feature is on, sorted otherwise).
//!
//! # Example: one locked transaction (a buyer's *buy*)
//! ```no_run
//! use common::store::{Durability, TicketDb};
//!
//! let db = TicketDb::new("db.json");
//! let mut guard = db.lock()?; // flock on db.json.lock: blocks while another buyer holds it
//! let left = guard.read_count()?;
//! if left > 0 {
//!     guard.write_count(left - 1, Durability::Rename)?;
//! }
//! drop(guard); // releases the lock
//! # Ok::<(), common::store::StoreError>(())
//! ```

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// The largest `count` the store accepts (and will write): one billion tickets.
pub const MAX_TICKETS: u64 = 1_000_000_000;

/// How a write replaces the contents of `db.json`. See the module docs for what each protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Truncate `db.json` and rewrite it (the notes' `json.dump(dic, open('db.json', 'w'))`).
    /// Fastest, but a process killed mid-write leaves an empty or torn file, and a reader that
    /// does not hold the lock can see the file half-written.
    InPlace,
    /// Write `db.json.tmp.<pid>`, then rename it over `db.json`: never torn by a killed process.
    #[default]
    Rename,
    /// As [`Durability::Rename`], plus `fsync` of the temp file and of the directory: also
    /// survives a power loss.
    RenameFsync,
}

/// Everything that can go wrong with the ticket database. Every message starts with the path
/// of the file it is about.
///
/// [`StoreError::is_bad_input`] tells the two kinds apart: the file (its absence, its shape, its
/// contents) is unusable and nothing was modified — exit code 2; or a genuine I/O failure while
/// locking or writing — exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },

    #[error("{path}: is a directory, not a JSON file")]
    IsDirectory { path: PathBuf },

    /// A FIFO, socket, device or symbolic link where the database should be: refused without
    /// blocking (a FIFO would block `open` until a writer came) and without following a link
    /// (the rename of every write would replace the link itself and leave its target unchanged).
    #[error("{path}: is {kind}, not a regular file; {advice}")]
    NotARegularFile { path: PathBuf, kind: &'static str, advice: &'static str },

    #[error("{path}: not allowed to read it ({error})")]
    Unreadable { path: PathBuf, error: io::Error },

    #[error("{path}: the file is empty; it must hold one JSON object like {{\"count\": 1}}")]
    Empty { path: PathBuf },

    /// `detail` is serde_json's message, which ends with "at line L column C".
    #[error("{path}: not valid JSON: {detail}")]
    NotJson { path: PathBuf, line: usize, column: usize, detail: String },

    #[error(
        "{path}: extra data after the JSON object (at line {line} column {column}); \
         the file must hold exactly one JSON object"
    )]
    TrailingData { path: PathBuf, line: usize, column: usize },

    #[error("{path}: the top level is {found}, not a JSON object like {{\"count\": 1}}")]
    NotAnObject { path: PathBuf, found: &'static str },

    #[error("{path}: \"count\" is missing; the file must look like {{\"count\": 1}}")]
    CountMissing { path: PathBuf },

    #[error(
        "{path}: \"count\" is negative ({value}); \
         it must be a whole number of tickets from 0 to {max}",
        max = MAX_TICKETS
    )]
    CountNegative { path: PathBuf, value: Number },

    /// Also for a whole value written as a float (`1.0`, `1e3`): JSON text that is not an integer.
    #[error(
        "{path}: \"count\" is {value}, which is not written as a whole number; \
         it must be a whole number of tickets from 0 to {max}",
        max = MAX_TICKETS
    )]
    CountFractional { path: PathBuf, value: Number },

    /// `found` describes the value, e.g. `a string ("1")`.
    #[error(
        "{path}: \"count\" is {found}, not a number; \
         it must be a whole number of tickets from 0 to {max}",
        max = MAX_TICKETS
    )]
    CountNotANumber { path: PathBuf, found: String },

    #[error(
        "{path}: \"count\" is too large ({value}); \
         it must be a whole number of tickets from 0 to {max}",
        max = MAX_TICKETS
    )]
    CountTooLarge { path: PathBuf, value: Number },

    /// The sidecar lock file could neither be created nor opened (for example a read-only
    /// directory where it does not exist yet). `path` is the lock file's path.
    #[error(
        "{path}: cannot create or open the lock file ({error}); \
         the database's directory must be writable, or the lock file must already exist"
    )]
    LockFile { path: PathBuf, error: io::Error },

    /// A genuine I/O failure: `action` says what was being done to `path`.
    #[error("{path}: {action}: {error}")]
    Io { path: PathBuf, action: String, error: io::Error },
}

impl StoreError {
    /// True when the database file itself is unusable (absent, unreadable, malformed, a count out
    /// of range) or its lock file cannot be set up — bad input, exit code 2, nothing modified.
    /// False for a genuine I/O failure while locking or writing — exit code 1.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, StoreError::Io { .. })
    }
}

/// The ticket database at one path, and its sidecar lock file `<path>.lock`.
///
/// Creating a `TicketDb` touches no file; every method opens what it needs anew. That matters for
/// the lock: a flock belongs to an *open file description*, which `fork` shares between parent
/// and child, so a lock file opened once and inherited would be shared instead of competed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketDb {
    path: PathBuf,
    lock_path: PathBuf,
}

impl TicketDb {
    /// The database at `path`; its lock file is `path` with `.lock` appended.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let lock_path = with_suffix(&path, ".lock");
        TicketDb { path, lock_path }
    }

    /// Creates `path` holding exactly `{"count": count}`, replacing any file there (by rename,
    /// under the lock, so a buyer working on it meanwhile sees the old or the new file, whole).
    /// The directory must exist. Fails with [`StoreError::CountTooLarge`] above [`MAX_TICKETS`].
    pub fn create(path: impl Into<PathBuf>, count: u64) -> Result<TicketDb, StoreError> {
        let db = TicketDb::new(path);
        check_new_count(&db.path, count)?;
        let mut object = Map::new();
        object.insert("count".to_owned(), Value::from(count));
        let guard = db.lock()?;
        write_object(&db.path, &object, Durability::Rename)?;
        drop(guard);
        Ok(db)
    }

    /// The database file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sidecar lock file's path: the database path with `.lock` appended.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The temp file a writer with process id `pid` creates beside the database before renaming
    /// it over `db.json` ([`Durability::Rename`]): `<db path>.tmp.<pid>`. A writer killed before
    /// its rename leaves it behind; [`TicketDb::clean_stray_temps`] removes it.
    pub fn temp_path(&self, pid: u32) -> PathBuf {
        with_suffix(&self.path, &format!(".tmp.{pid}"))
    }

    /// Reads and strictly validates the count *without* taking the lock: the notes' `search`,
    /// which runs concurrently with other buyers. With [`Durability::Rename`] writers it always
    /// sees a whole file (old or new); with [`Durability::InPlace`] writers it can catch one
    /// half-written and fail with [`StoreError::Empty`] or [`StoreError::NotJson`].
    pub fn read_count(&self) -> Result<u64, StoreError> {
        read_contents(&self.path).map(|contents| contents.count)
    }

    /// Sets the count *without* taking the lock (the `--no-lock` race), keeping the object's
    /// other keys: reads the current file strictly, then writes it back with `count` replaced.
    /// A bad file is refused and left untouched; on any error the file is unchanged (except, with
    /// [`Durability::InPlace`], an I/O failure in the middle of the rewrite).
    pub fn write_count(&self, count: u64, durability: Durability) -> Result<(), StoreError> {
        check_new_count(&self.path, count)?;
        let mut object = read_contents(&self.path)?.object;
        set_count(&mut object, count);
        write_object(&self.path, &object, durability)
    }

    /// Blocks until this process holds the exclusive flock on the sidecar lock file (creating it
    /// if missing), and returns the guard through which the locked file is read and written.
    /// Dropping the guard releases the lock; so does the kernel if the process dies.
    pub fn lock(&self) -> Result<DbGuard<'_>, StoreError> {
        let file = self.open_lock_file()?;
        loop {
            // The key line of the demo: flock(fd, LOCK_EX) on the sidecar.
            match file.lock() {
                Ok(()) => break,
                // A signal handler ran while we waited; keep waiting.
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error(&self.lock_path, "cannot lock it", error)),
            }
        }
        Ok(DbGuard { db: self, lock_file: file, object: None })
    }

    /// Like [`TicketDb::lock`] but never waits: `Ok(None)` when another holder (one of our
    /// buyers, `flock(1)`, Python's `fcntl.flock`) has the lock right now.
    pub fn try_lock(&self) -> Result<Option<DbGuard<'_>>, StoreError> {
        let file = self.open_lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DbGuard { db: self, lock_file: file, object: None })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(error)) => {
                Err(io_error(&self.lock_path, "cannot lock it", error))
            }
        }
    }

    /// Removes the temp files `<db file name>.tmp.<pid>` in the database's directory whose pid
    /// is not a live process — left behind by a writer killed between creating its temp file and
    /// renaming it — and returns the paths it removed. A temp file of a live process (or of a
    /// killed one not yet reaped: a zombie still counts as alive) is left alone, since its writer
    /// may be about to rename it. Other files are never touched.
    pub fn clean_stray_temps(&self) -> Result<Vec<PathBuf>, StoreError> {
        let Some(name) = self.path.file_name() else { return Ok(Vec::new()) };
        let mut prefix = name.as_encoded_bytes().to_vec();
        prefix.extend_from_slice(b".tmp.");
        let dir = parent_dir(&self.path);
        let entries =
            fs::read_dir(dir).map_err(|error| io_error(dir, "cannot list the directory", error))?;
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| io_error(dir, "cannot list the directory", error))?;
            let file_name = entry.file_name();
            let Some(pid) =
                file_name.as_encoded_bytes().strip_prefix(&prefix[..]).and_then(parse_pid)
            else {
                continue;
            };
            if process_is_alive(pid) {
                continue;
            }
            let temp = entry.path();
            match fs::remove_file(&temp) {
                Ok(()) => removed.push(temp),
                // Another cleaner got there first: the file is gone either way.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&temp, "cannot remove stray temp file", error)),
            }
        }
        Ok(removed)
    }

    /// Opens the sidecar, creating it if missing. Opened anew on every call, never cached: see
    /// the type's docs (a shared open file description would share the lock).
    fn open_lock_file(&self) -> Result<File, StoreError> {
        // Open for writing where we can (flock over NFS is emulated with a write lock, which needs
        // a writable descriptor); fall back to read-only for an existing sidecar in a directory
        // or file we may not write to. Never truncate: the file's contents do not matter, and
        // other lockers have it open.
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(false);
        // Never block in open: a FIFO in the lock file's place fails with ENXIO instead.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
        let opened = options.open(&self.lock_path);
        let opened = match opened {
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                File::open(&self.lock_path).map_err(|_| error)
            }
            other => other,
        };
        opened.map_err(|error| match error.kind() {
            // No directory to put the lock file in means no database either.
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                StoreError::Missing { path: self.path.clone() }
            }
            _ => StoreError::LockFile { path: self.lock_path.clone(), error },
        })
    }
}

/// Proof that this process holds the exclusive lock on a [`TicketDb`]; reads and writes through
/// it are one transaction. Dropping it releases the lock.
///
/// Contract: while the guard lives, every cooperating writer is excluded, so the object read by
/// [`DbGuard::read_count`] is reused by [`DbGuard::write_count`] — a transaction reads the file
/// once and writes it once.
#[derive(Debug)]
pub struct DbGuard<'a> {
    db: &'a TicketDb,
    /// The locked sidecar; the lock lives as long as this descriptor (or until unlocked).
    lock_file: File,
    /// The object as last read or written under this lock (other keys are kept from it).
    object: Option<Map<String, Value>>,
}

impl DbGuard<'_> {
    /// The database this guard locks.
    pub fn db(&self) -> &TicketDb {
        self.db
    }

    /// Reads and strictly validates the count. `db.json` is opened here, after the lock was
    /// taken, so this is the file as the previous holder left it, even if it replaced it.
    pub fn read_count(&mut self) -> Result<u64, StoreError> {
        self.object = None;
        let contents = read_contents(&self.db.path)?;
        self.object = Some(contents.object);
        Ok(contents.count)
    }

    /// Writes `count`, keeping the object's other keys. Reuses the object from the last
    /// [`DbGuard::read_count`] (or write) under this lock, else reads the file strictly first.
    pub fn write_count(&mut self, count: u64, durability: Durability) -> Result<(), StoreError> {
        check_new_count(&self.db.path, count)?;
        let mut object = match self.object.take() {
            Some(object) => object,
            None => read_contents(&self.db.path)?.object,
        };
        set_count(&mut object, count);
        write_object(&self.db.path, &object, durability)?;
        self.object = Some(object);
        Ok(())
    }
}

impl Drop for DbGuard<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release the lock too, unless a child forked while we held
        // it still has a copy; unlocking releases it for every copy. An error here cannot be
        // acted on, and the close right after releases the lock in the usual case.
        let _ = self.lock_file.unlock();
    }
}

/// A parsed, validated database file.
struct Contents {
    /// The whole top-level object, so a write keeps keys other than `count`.
    object: Map<String, Value>,
    count: u64,
}

/// Reads `path` and validates it strictly (see the module docs).
fn read_contents(path: &Path) -> Result<Contents, StoreError> {
    let classify = |error: io::Error| match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            StoreError::Missing { path: path.to_owned() }
        }
        // Opening a directory read-only succeeds on Linux; reading it fails with EISDIR. Saves a
        // stat on every read.
        io::ErrorKind::IsADirectory => StoreError::IsDirectory { path: path.to_owned() },
        io::ErrorKind::PermissionDenied => StoreError::Unreadable { path: path.to_owned(), error },
        _ => io_error(path, "cannot read it", error),
    };
    let mut file = open_regular(path).map_err(|e| match e {
        Opened::NotRegular(kind, advice) => {
            StoreError::NotARegularFile { path: path.to_owned(), kind, advice }
        }
        Opened::Io(error) => classify(error),
    })?;
    // A plain read loop: `File::read_to_end` would first stat and seek the file for a size hint,
    // two syscalls per transaction that a file of a dozen bytes does not need.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(classify(error)),
        }
    }
    parse(path, &bytes)
}

/// Why [`open_regular`] did not give a file.
enum Opened {
    NotRegular(&'static str, &'static str),
    Io(io::Error),
}

/// Opens `path` for reading only if it is a regular file (or a directory, which the read then
/// reports). Never blocks: `O_NONBLOCK` makes a FIFO open at once (and `fstat` then refuses it);
/// `O_NOFOLLOW` refuses a symbolic link (ELOOP) rather than follow it; a socket fails with ENXIO.
fn open_regular(path: &Path) -> Result<File, Opened> {
    const PASS_TARGET: &str = "pass the path of the file it points to (every write replaces \
                               db.json by a rename, which would replace the link, not its target)";
    const REGULAR: &str = "the database must be a regular file holding {\"count\": N}";
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)
            .map_err(|error| match error.raw_os_error() {
                Some(libc::ELOOP) => Opened::NotRegular("a symbolic link", PASS_TARGET),
                Some(libc::ENXIO) => Opened::NotRegular("a socket", REGULAR),
                _ => Opened::Io(error),
            })?;
        let kind = file.metadata().map_err(Opened::Io)?.file_type();
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            return Ok(file);
        };
        Err(Opened::NotRegular(what, REGULAR))
    }
    #[cfg(not(unix))]
    {
        let _ = (PASS_TARGET, REGULAR);
        File::open(path).map_err(Opened::Io)
    }
}

/// The strict parser: exactly one JSON object, with a valid `count`.
fn parse(path: &Path, bytes: &[u8]) -> Result<Contents, StoreError> {
    // Only JSON's own whitespace counts as "empty"; anything else is left to the parser.
    if bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Err(StoreError::Empty { path: path.to_owned() });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Value::deserialize(&mut de).map_err(|error| StoreError::NotJson {
        path: path.to_owned(),
        line: error.line(),
        column: error.column(),
        detail: error.to_string(),
    })?;
    let object = match value {
        Value::Object(object) => object,
        other => {
            return Err(StoreError::NotAnObject { path: path.to_owned(), found: kind_of(&other) });
        }
    };
    // `Value::deserialize` stops after the object; `end` refuses anything but whitespace after
    // it (`{"count": 1} x`, or two objects), which a lenient reader would silently ignore.
    de.end().map_err(|error| StoreError::TrailingData {
        path: path.to_owned(),
        line: error.line(),
        column: error.column(),
    })?;
    let count = check_count(path, object.get("count"))?;
    Ok(Contents { object, count })
}

/// Validates the `count` value read from the file.
fn check_count(path: &Path, count: Option<&Value>) -> Result<u64, StoreError> {
    let path = || path.to_owned();
    let number = match count {
        None => return Err(StoreError::CountMissing { path: path() }),
        Some(Value::Number(number)) => number,
        Some(other) => {
            return Err(StoreError::CountNotANumber { path: path(), found: describe(other) });
        }
    };
    // serde_json keeps a JSON integer as u64 (or i64 if negative), and anything written with a
    // fraction or exponent — and an integer too big for 64 bits — as f64.
    if let Some(count) = number.as_u64() {
        if count > MAX_TICKETS {
            return Err(StoreError::CountTooLarge { path: path(), value: number.clone() });
        }
        return Ok(count);
    }
    if number.as_i64().is_some() {
        return Err(StoreError::CountNegative { path: path(), value: number.clone() });
    }
    let value = number.as_f64().unwrap_or(f64::NAN);
    let error = if value < 0.0 {
        StoreError::CountNegative { path: path(), value: number.clone() }
    } else if value > MAX_TICKETS as f64 {
        StoreError::CountTooLarge { path: path(), value: number.clone() }
    } else {
        StoreError::CountFractional { path: path(), value: number.clone() }
    };
    Err(error)
}

/// Refuses to write a count the reader would refuse.
fn check_new_count(path: &Path, count: u64) -> Result<(), StoreError> {
    if count > MAX_TICKETS {
        return Err(StoreError::CountTooLarge { path: path.to_owned(), value: count.into() });
    }
    Ok(())
}

fn set_count(object: &mut Map<String, Value>, count: u64) {
    // The key is always there after a strict read; this avoids allocating it again.
    match object.get_mut("count") {
        Some(slot) => *slot = Value::from(count),
        None => {
            object.insert("count".to_owned(), Value::from(count));
        }
    }
}

/// "an array", "a string", ... for messages about the wrong kind of JSON value.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The kind of a value plus its JSON text when that is short: `a string ("1")`.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::String(_) => {
            let text = value.to_string();
            if text.len() <= 40 {
                format!("{} ({text})", kind_of(value))
            } else {
                kind_of(value).to_owned()
            }
        }
        _ => kind_of(value).to_owned(),
    }
}

/// Writes `object` to `path` as one line of JSON, at the given durability.
fn write_object(
    path: &Path,
    object: &Map<String, Value>,
    durability: Durability,
) -> Result<(), StoreError> {
    let text = to_json_line(object);
    match durability {
        Durability::InPlace => write_in_place(path, &text),
        Durability::Rename => replace(path, &text, false),
        Durability::RenameFsync => replace(path, &text, true),
    }
}

/// `{"count": 1}` plus a newline: the layout of Python's `json.dump` (and of `data/db.json`),
/// so the file looks the same whichever side of the comparison wrote it.
fn to_json_line(object: &Map<String, Value>) -> Vec<u8> {
    let mut text = Vec::with_capacity(64);
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, PythonStyle);
    object
        .serialize(&mut serializer)
        .expect("a JSON map with string keys always serializes into memory");
    text.push(b'\n');
    text
}

/// serde_json's compact layout with Python's default separators: `", "` and `": "`.
struct PythonStyle;

impl serde_json::ser::Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// [`Durability::InPlace`]: truncate and rewrite. Between the truncate and the end of
/// `write_all` the file is empty or partial — what a killed writer leaves behind.
fn write_in_place(path: &Path, text: &[u8]) -> Result<(), StoreError> {
    // No `create`: the file was just read, and this level never makes a new file.
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|error| io_error(path, "cannot open it for writing", error))?;
    file.write_all(text).map_err(|error| io_error(path, "cannot write it", error))
}

/// [`Durability::Rename`] and [`Durability::RenameFsync`]: temp file in the same directory (a
/// rename cannot cross file systems), full contents, then `rename(2)` over `path`.
fn replace(path: &Path, text: &[u8], fsync: bool) -> Result<(), StoreError> {
    // The pid is asked for on every write, never cached: a forked child has a new one, and two
    // processes sharing a temp name would write into each other's file.
    let temp = TempFile { path: with_suffix(path, &format!(".tmp.{}", std::process::id())) };
    let mut file = create_temp(&temp.path)
        .map_err(|error| io_error(&temp.path, "cannot create the temp file", error))?;
    file.write_all(text).map_err(|error| io_error(&temp.path, "cannot write it", error))?;
    if fsync {
        // The contents must be on disk before the name points at them, or a power loss could
        // leave the new name on an empty file.
        file.sync_all().map_err(|error| io_error(&temp.path, "cannot fsync it", error))?;
    }
    drop(file);
    fs::rename(&temp.path, path).map_err(|error| {
        io_error(path, &format!("cannot replace it with {}", temp.path.display()), error)
    })?;
    temp.renamed();
    if fsync {
        // The rename is a change to the directory; fsync the directory to make it durable.
        let dir = parent_dir(path);
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| io_error(dir, "cannot fsync the directory", error))?;
    }
    Ok(())
}

/// Creates the temp file, which must be new: a leftover with our pid in its name was left by an
/// earlier process that had our pid and died mid-write, so it is garbage and is removed first.
fn create_temp(temp: &Path) -> io::Result<File> {
    let create = || OpenOptions::new().write(true).create_new(true).open(temp);
    match create() {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(temp)?;
            create()
        }
        other => other,
    }
}

/// A temp file that is removed on drop — on every error path, even a panic — unless it was
/// renamed into place.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// The rename consumed the temp name: nothing is left to remove.
    fn renamed(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: if even this fails, `clean_stray_temps` removes it after we exit.
        let _ = fs::remove_file(&self.path);
    }
}

/// `path` with `suffix` appended to its last component: `db.json` + `.lock` = `db.json.lock`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The pid at the end of a temp file name: plain decimal digits as `process::id()` prints them.
fn parse_pid(digits: &[u8]) -> Option<i32> {
    if digits.first().is_none_or(|&first| first == b'0') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether a process with this pid exists (a zombie counts), by `kill(pid, 0)`: no signal is
/// sent, only the existence and permission checks are made.
#[cfg(unix)]
fn process_is_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    // EPERM means it exists but belongs to another user; only ESRCH means no such process.
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Without a way to ask, assume alive: never remove a file a live writer may be renaming.
#[cfg(not(unix))]
fn process_is_alive(_pid: i32) -> bool {
    true
}

fn io_error(path: &Path, action: &str, error: io::Error) -> StoreError {
    StoreError::Io { path: path.to_owned(), action: action.to_owned(), error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// How long any test waits for another thread or process before failing.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A fresh directory per test, removed when the test ends (pass or fail).
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("common-store-test-{}-{n}-{name}", std::process::id()));
            // create_dir, not create_dir_all: a leftover with this name would be a bug.
            fs::create_dir(&dir).unwrap();
            TestDir(dir)
        }

        fn db_path(&self) -> PathBuf {
            self.0.join("db.json")
        }

        /// A `db.json` holding exactly `bytes`.
        fn db_with(&self, bytes: &[u8]) -> TicketDb {
            fs::write(self.db_path(), bytes).unwrap();
            TicketDb::new(self.db_path())
        }

        /// The directory's file names, sorted.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A child process killed and reaped when the test ends, pass or fail.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn wait_with_deadline(child: &mut Child) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child {} did not exit in {DEADLINE:?}", child.id());
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The variant's name, for comparing errors in tables.
    fn variant(error: &StoreError) -> &'static str {
        match error {
            StoreError::Missing { .. } => "Missing",
            StoreError::IsDirectory { .. } => "IsDirectory",
            StoreError::NotARegularFile { .. } => "NotARegularFile",
            StoreError::Unreadable { .. } => "Unreadable",
            StoreError::Empty { .. } => "Empty",
            StoreError::NotJson { .. } => "NotJson",
            StoreError::TrailingData { .. } => "TrailingData",
            StoreError::NotAnObject { .. } => "NotAnObject",
            StoreError::CountMissing { .. } => "CountMissing",
            StoreError::CountNegative { .. } => "CountNegative",
            StoreError::CountFractional { .. } => "CountFractional",
            StoreError::CountNotANumber { .. } => "CountNotANumber",
            StoreError::CountTooLarge { .. } => "CountTooLarge",
            StoreError::LockFile { .. } => "LockFile",
            StoreError::Io { .. } => "Io",
        }
    }

    /// Tries every way of reading and writing `db`, each must fail with `expected` as bad input
    /// and leave the directory exactly as it was (same names, `db.json` byte-for-byte).
    fn assert_refused_everywhere(dir: &TestDir, db: &TicketDb, expected: &str, fragment: &str) {
        // Take the lock once so the sidecar exists before the snapshot of the directory.
        drop(db.lock().unwrap());
        let names_before = dir.names();
        let bytes_before = fs::read(db.path()).ok();

        let mut attempts: Vec<(String, Result<(), StoreError>)> = Vec::new();
        attempts.push(("TicketDb::read_count".into(), db.read_count().map(drop)));
        for durability in [Durability::InPlace, Durability::Rename, Durability::RenameFsync] {
            attempts.push((
                format!("TicketDb::write_count {durability:?}"),
                db.write_count(0, durability),
            ));
            let mut guard = db.lock().unwrap();
            attempts.push((format!("DbGuard::write_count {durability:?}"), {
                guard.write_count(0, durability)
            }));
            attempts.push(("DbGuard::read_count".into(), guard.read_count().map(drop)));
        }

        for (what, result) in attempts {
            let error = result.expect_err(&format!("{what} accepted a bad file ({expected})"));
            let message = error.to_string();
            assert_eq!(variant(&error), expected, "{what}: {message}");
            assert!(error.is_bad_input(), "{what}: {message}");
            assert!(
                message.starts_with(&db.path().display().to_string()),
                "{what}: the message must start with the path: {message}"
            );
            assert!(message.contains(fragment), "{what}: {message:?} lacks {fragment:?}");
        }
        assert_eq!(dir.names(), names_before, "a file was created or removed");
        assert_eq!(fs::read(db.path()).ok(), bytes_before, "db.json was modified");
    }

    #[test]
    fn each_bad_content_gets_its_own_error_and_the_file_is_left_untouched() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"", "Empty", "empty"),
            (b" \n\t\r\n", "Empty", "empty"),
            (b"count: 1", "NotJson", "line 1 column 1"),
            (b"{\"count\": 1", "NotJson", "EOF while parsing"), // torn by a killed writer
            (b"{'count': 1}", "NotJson", "not valid JSON"),
            (b"{\"count\": 1} x", "TrailingData", "extra data after the JSON object"),
            (b"{\"count\": 1}\n{\"count\": 2}", "TrailingData", "at line 2 column 1"),
            (b"[1]", "NotAnObject", "an array"),
            (b"1", "NotAnObject", "a number"),
            (b"null", "NotAnObject", "null"),
            (b"{}", "CountMissing", "\"count\" is missing"),
            (b"{\"Count\": 1}", "CountMissing", "\"count\" is missing"),
            (b"{\"count\": -3}", "CountNegative", "\"count\" is negative (-3)"),
            (b"{\"count\": -1.5}", "CountNegative", "negative (-1.5)"),
            (b"{\"count\": 1.5}", "CountFractional", "1.5, which is not written as a whole"),
            (b"{\"count\": 1.0}", "CountFractional", "1.0, which is not"),
            (b"{\"count\": 1e3}", "CountFractional", "not written as a whole number"),
            (b"{\"count\": \"1\"}", "CountNotANumber", "a string (\"1\"), not a number"),
            (b"{\"count\": true}", "CountNotANumber", "a boolean (true)"),
            (b"{\"count\": null}", "CountNotANumber", "null, not a number"),
            (b"{\"count\": [1]}", "CountNotANumber", "an array, not a number"),
            (b"{\"count\": {\"n\": 1}}", "CountNotANumber", "an object"),
            (b"{\"count\": 1000000001}", "CountTooLarge", "too large (1000000001)"),
            (b"{\"count\": 1e20}", "CountTooLarge", "too large"),
            (b"{\"count\": 99999999999999999999}", "CountTooLarge", "too large"),
        ];
        for &(content, expected, fragment) in cases {
            let dir = TestDir::new("bad-content");
            let db = dir.db_with(content);
            assert_refused_everywhere(&dir, &db, expected, fragment);
        }
    }

    #[test]
    fn messages_name_the_file_the_problem_and_the_rule() {
        let dir = TestDir::new("message");
        let db = dir.db_with(b"{\"count\": -3}");
        let expected = format!(
            "{}: \"count\" is negative (-3); it must be a whole number of tickets from 0 to {}",
            db.path().display(),
            MAX_TICKETS
        );
        assert_eq!(db.read_count().unwrap_err().to_string(), expected);

        let db = dir.db_with(b"{\"count\": 1}\n  garbage");
        match db.read_count().unwrap_err() {
            StoreError::TrailingData { line: 2, column: 3, .. } => {}
            other => panic!("expected trailing data at line 2 column 3, got {other:?}"),
        }
        let db = dir.db_with(b"\n\n  {count: 1}");
        match db.read_count().unwrap_err() {
            StoreError::NotJson { line: 3, column: 4, .. } => {}
            other => panic!("expected not-JSON at line 3 column 4, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_file_is_refused_and_not_created() {
        let dir = TestDir::new("missing");
        let db = TicketDb::new(dir.db_path());
        assert_refused_everywhere(&dir, &db, "Missing", "no such file");
        assert!(!db.path().exists());

        // A missing directory: the lock file cannot be made either, and it is the database that
        // is reported missing.
        let db = TicketDb::new(dir.0.join("no-such-dir").join("db.json"));
        assert_eq!(variant(&db.read_count().unwrap_err()), "Missing");
        let error = db.lock().unwrap_err();
        assert_eq!(variant(&error), "Missing", "{error}");
        assert!(error.to_string().starts_with(&db.path().display().to_string()));
    }

    #[test]
    fn a_directory_in_place_of_the_file_is_refused() {
        let dir = TestDir::new("is-dir");
        fs::create_dir(dir.db_path()).unwrap();
        let db = TicketDb::new(dir.db_path());
        assert_refused_everywhere(&dir, &db, "IsDirectory", "is a directory");
        assert!(db.path().is_dir());
    }

    #[test]
    fn a_fifo_socket_device_or_symlink_in_place_of_the_file_is_refused_without_blocking() {
        let dir = TestDir::new("not-regular");
        let fifo = dir.0.join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let socket = dir.0.join("socket.json");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let target = dir.db_path();
        fs::write(&target, "{\"count\": 4}").unwrap();
        let link = dir.0.join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (socket.as_path(), "a socket"),
            (Path::new("/dev/null"), "a character device"),
            (link.as_path(), "a symbolic link"),
        ] {
            let error = TicketDb::new(path).read_count().unwrap_err();
            assert_eq!(variant(&error), "NotARegularFile", "{error}");
            assert!(error.is_bad_input());
            assert!(error.to_string().contains(kind), "{error}");
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "{\"count\": 4}", "target unchanged");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn an_unreadable_file_is_refused() {
        if is_root() {
            eprintln!("skipped: root reads files whatever their permissions");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = TestDir::new("unreadable");
        let db = dir.db_with(b"{\"count\": 1}");
        fs::set_permissions(db.path(), fs::Permissions::from_mode(0o200)).unwrap();
        assert_refused_everywhere(&dir, &db, "Unreadable", "not allowed to read it");
        fs::set_permissions(db.path(), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(fs::read(db.path()).unwrap(), b"{\"count\": 1}");
    }

    #[test]
    fn a_lock_file_that_cannot_be_created_is_reported_by_its_path() {
        let dir = TestDir::new("lock-file");
        let db = dir.db_with(b"{\"count\": 1}");
        // Something that can never be opened for writing stands where the sidecar goes.
        fs::create_dir(db.lock_path()).unwrap();
        let error = db.lock().unwrap_err();
        assert_eq!(variant(&error), "LockFile", "{error}");
        assert!(error.to_string().starts_with(&db.lock_path().display().to_string()), "{error}");
        assert!(error.is_bad_input());
        fs::remove_dir(db.lock_path()).unwrap();

        if is_root() {
            eprintln!("skipped the read-only directory case: root writes anywhere");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o500)).unwrap();
        let result = db.lock().map(drop);
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o700)).unwrap();
        let error = result.unwrap_err();
        assert_eq!(variant(&error), "LockFile", "{error}");
        assert!(error.to_string().contains("lock file"), "{error}");
    }

    #[test]
    fn edge_values_and_whitespace_are_accepted() {
        let dir = TestDir::new("edges");
        for (content, count) in [
            (&b"{\"count\": 0}"[..], 0),
            (b"{\"count\":1000000000}", MAX_TICKETS),
            (b"\n  {\n  \"count\" : 7\n}\n\n", 7),
            (b"{\"count\": 2, \"count-note\": \"x\"}", 2),
        ] {
            let db = dir.db_with(content);
            assert_eq!(db.read_count().unwrap(), count, "{}", String::from_utf8_lossy(content));
        }
    }

    #[test]
    fn a_count_above_the_maximum_is_never_written() {
        let dir = TestDir::new("write-too-large");
        let db = dir.db_with(b"{\"count\": 1}");
        let error = db.write_count(MAX_TICKETS + 1, Durability::Rename).unwrap_err();
        assert_eq!(variant(&error), "CountTooLarge");
        assert!(error.is_bad_input());
        let error = TicketDb::create(dir.0.join("new.json"), MAX_TICKETS + 1).unwrap_err();
        assert_eq!(variant(&error), "CountTooLarge");
        assert_eq!(fs::read(db.path()).unwrap(), b"{\"count\": 1}");
        assert_eq!(dir.names(), ["db.json"]);
    }

    #[test]
    fn every_durability_round_trips_and_keeps_the_other_keys() {
        let original = br#"{"zone": {"row": 3}, "count": 5, "name": "concert", "seats": [1, 2]}"#;
        // Python's separators; keys in their order with serde_json's `preserve_order` feature
        // (which the workspace enables), sorted without it.
        let kept_order =
            "{\"zone\": {\"row\": 3}, \"count\": 4, \"name\": \"concert\", \"seats\": [1, 2]}\n";
        let sorted =
            "{\"count\": 4, \"name\": \"concert\", \"seats\": [1, 2], \"zone\": {\"row\": 3}}\n";
        for durability in [Durability::InPlace, Durability::Rename, Durability::RenameFsync] {
            let dir = TestDir::new("round-trip");
            let db = dir.db_with(original);
            db.write_count(4, durability).unwrap();
            assert_eq!(db.read_count().unwrap(), 4, "{durability:?}");
            let written = fs::read_to_string(db.path()).unwrap();
            assert!(written == kept_order || written == sorted, "{durability:?}: {written}");
            assert_eq!(dir.names(), ["db.json"], "{durability:?} left a file behind");

            let mut guard = db.lock().unwrap();
            assert_eq!(guard.read_count().unwrap(), 4);
            guard.write_count(3, durability).unwrap();
            guard.write_count(2, durability).unwrap(); // from the cached object
            drop(guard);
            assert_eq!(db.read_count().unwrap(), 2, "{durability:?}");
            let value: Value = serde_json::from_slice(&fs::read(db.path()).unwrap()).unwrap();
            assert_eq!(value["name"], "concert");
            assert_eq!(value["zone"]["row"], 3);
            assert_eq!(dir.names(), ["db.json", "db.json.lock"], "{durability:?}");
        }
    }

    #[test]
    fn create_writes_exactly_the_count_like_python_json_dump() {
        let dir = TestDir::new("create");
        let db = TicketDb::create(dir.db_path(), 3).unwrap();
        assert_eq!(fs::read(db.path()).unwrap(), b"{\"count\": 3}\n");
        assert_eq!(db.lock_path(), dir.0.join("db.json.lock"));
        // Over an existing file, even a bad one: create replaces, it does not read.
        fs::write(db.path(), b"garbage").unwrap();
        let db = TicketDb::create(dir.db_path(), 0).unwrap();
        assert_eq!(db.read_count().unwrap(), 0);
        assert_eq!(dir.names(), ["db.json", "db.json.lock"]);
    }

    #[test]
    fn the_lock_path_is_the_db_path_plus_dot_lock() {
        assert_eq!(TicketDb::new("foo/x.json").lock_path(), Path::new("foo/x.json.lock"));
        assert_eq!(TicketDb::new("db.json").lock_path(), Path::new("db.json.lock"));
    }

    #[test]
    fn a_leftover_temp_file_with_our_pid_is_replaced_not_an_error() {
        let dir = TestDir::new("own-leftover");
        let db = dir.db_with(b"{\"count\": 2}");
        let leftover = dir.0.join(format!("db.json.tmp.{}", std::process::id()));
        fs::write(&leftover, b"{\"cou").unwrap();
        db.write_count(1, Durability::Rename).unwrap();
        assert_eq!(db.read_count().unwrap(), 1);
        assert_eq!(dir.names(), ["db.json"]);
    }

    #[test]
    fn a_failed_rename_removes_the_temp_file() {
        let dir = TestDir::new("failed-rename");
        let db = dir.db_with(b"{\"count\": 2}");
        let mut guard = db.lock().unwrap();
        assert_eq!(guard.read_count().unwrap(), 2);
        // Swap db.json for a non-empty directory: rename(2) cannot replace it.
        fs::remove_file(db.path()).unwrap();
        fs::create_dir(db.path()).unwrap();
        fs::write(db.path().join("keep"), b"").unwrap();
        let error = guard.write_count(1, Durability::Rename).unwrap_err();
        assert_eq!(variant(&error), "Io", "{error}");
        assert!(!error.is_bad_input(), "a failed write is an I/O failure, exit 1");
        drop(guard);
        assert_eq!(dir.names(), ["db.json", "db.json.lock"], "the temp file was left behind");
        assert!(db.path().join("keep").exists());
    }

    #[test]
    fn clean_stray_temps_removes_a_dead_writers_temp_and_keeps_a_live_ones() {
        let dir = TestDir::new("stray");
        let db = dir.db_with(b"{\"count\": 1}");
        let mut child = Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        assert!(wait_with_deadline(&mut child).success());
        let own_pid = std::process::id();
        let dead = dir.0.join(format!("db.json.tmp.{dead_pid}"));
        for name in [
            format!("db.json.tmp.{dead_pid}"),
            format!("db.json.tmp.{own_pid}"), // alive: a writer may be about to rename it
            format!("other.json.tmp.{dead_pid}"), // another database's
            "db.json.tmp.abc".to_owned(),     // not a pid
            format!("db.json.tmp.0{dead_pid}"), // not as process::id() prints it
        ] {
            fs::write(dir.0.join(name), b"{\"count\"").unwrap();
        }
        assert_eq!(db.clean_stray_temps().unwrap(), std::slice::from_ref(&dead));
        assert!(!dead.exists());
        let mut expected = vec![
            "db.json".to_owned(),
            format!("db.json.tmp.{own_pid}"),
            format!("other.json.tmp.{dead_pid}"),
            "db.json.tmp.abc".to_owned(),
            format!("db.json.tmp.0{dead_pid}"),
        ];
        expected.sort();
        assert_eq!(dir.names(), expected);
        assert_eq!(db.clean_stray_temps().unwrap(), Vec::<PathBuf>::new());
        assert_eq!(db.read_count().unwrap(), 1);
    }

    #[test]
    fn the_lock_interoperates_with_flock_1() {
        let dir = TestDir::new("flock-cli");
        let db = TicketDb::create(dir.db_path(), 1).unwrap();
        let spawned = Command::new("flock")
            .arg("-x")
            .arg(db.lock_path())
            .args(["-c", "echo held; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut holder = match spawned {
            Ok(child) => KillOnDrop(child),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                eprintln!("skipped: flock(1) (util-linux) is not installed");
                return;
            }
            Err(error) => panic!("spawning flock: {error}"),
        };

        // Wait, with a deadline, for flock(1) to say it holds the lock.
        let stdout = holder.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(DEADLINE).expect("flock(1) did not print \"held\" in time");
        assert_eq!(line, "held\n");

        assert!(db.try_lock().unwrap().is_none(), "flock(1) holds it: try_lock must fail");

        // Answer `read x` and close its stdin: the shell exits 0, and flock(1) unlocks.
        let mut stdin = holder.0.stdin.take().unwrap();
        stdin.write_all(b"done\n").unwrap();
        drop(stdin);
        assert!(wait_with_deadline(&mut holder.0).success());
        let guard = db.try_lock().unwrap();
        assert!(guard.is_some(), "flock(1) is gone: try_lock must succeed");

        // And the other way round: while we hold it, `flock -n` (never waits) is refused.
        let status = Command::new("flock").arg("-n").arg(db.lock_path()).arg("true").status();
        assert_eq!(status.unwrap().code(), Some(1), "flock -n must fail while we hold the lock");
        drop(guard);
        let status = Command::new("flock").arg("-n").arg(db.lock_path()).arg("true").status();
        assert!(status.unwrap().success(), "flock -n must succeed once our guard is dropped");
    }

    #[test]
    fn the_lock_makes_read_modify_write_transactions_exclusive() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 50;
        let dir = TestDir::new("exclusive");
        let db = TicketDb::create(dir.db_path(), 0).unwrap();
        // Each thread opens its own descriptor on the sidecar, so flock makes them compete as
        // separate processes would.
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..ROUNDS {
                        let mut guard = db.lock().unwrap();
                        let count = guard.read_count().unwrap();
                        guard.write_count(count + 1, Durability::Rename).unwrap();
                    }
                });
            }
        });
        assert_eq!(db.read_count().unwrap(), THREADS * ROUNDS, "an update was lost");
        assert_eq!(dir.names(), ["db.json", "db.json.lock"]);
    }

    /// Waits until `/proc/locks` shows a blocked flock request (`->`) on `path`'s inode. Returns
    /// false if this kernel does not show it (the caller then checks a weaker claim).
    fn wait_for_a_waiter_on(path: &Path) -> bool {
        let inode = format!(":{} ", fs::metadata(path).unwrap().ino());
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let Ok(locks) = fs::read_to_string("/proc/locks") else { return false };
            if locks.lines().any(|line| line.contains("->") && line.contains(&inode)) {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_waiter_reads_the_file_that_replaced_db_json_while_it_waited() {
        let dir = TestDir::new("waiter-new");
        let db = TicketDb::create(dir.db_path(), 1).unwrap();
        let mut holder = db.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = thread::spawn({
            let db = db.clone();
            move || {
                let mut guard = db.lock().unwrap(); // blocks until `holder` is dropped
                tx.send(guard.read_count().unwrap()).unwrap();
            }
        });
        if !wait_for_a_waiter_on(db.lock_path()) {
            eprintln!("note: /proc/locks does not show the waiter; the waiter may not wait");
        }
        assert_eq!(holder.read_count().unwrap(), 1);
        holder.write_count(0, Durability::Rename).unwrap(); // db.json is now a new inode
        drop(holder);
        let seen = rx.recv_timeout(DEADLINE).expect("the waiter never got the lock");
        assert_eq!(seen, 0, "the waiter read stale data");
        waiter.join().unwrap();
    }

    /// Why the sidecar: the same scenario with the lock taken on db.json itself.
    #[test]
    fn locking_db_json_itself_would_read_stale_data() {
        let dir = TestDir::new("waiter-stale");
        let db = TicketDb::create(dir.db_path(), 1).unwrap();
        let holder = File::open(db.path()).unwrap();
        holder.lock().unwrap();
        let (opened_tx, opened_rx) = mpsc::channel();
        let (read_tx, read_rx) = mpsc::channel();
        let path = db.path().to_owned();
        let waiter = thread::spawn(move || {
            let mut file = File::open(&path).unwrap(); // the inode db.json names *now*
            opened_tx.send(()).unwrap();
            file.lock().unwrap(); // waits for `holder`
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            read_tx.send(text).unwrap();
        });
        opened_rx.recv_timeout(DEADLINE).expect("the waiter never opened db.json");
        db.write_count(0, Durability::Rename).unwrap(); // replaces db.json by rename
        holder.unlock().unwrap();
        let text = read_rx.recv_timeout(DEADLINE).expect("the waiter never got the lock");
        assert_eq!(text, "{\"count\": 1}\n", "it locked and read the old, replaced file");
        assert_eq!(db.read_count().unwrap(), 0, "while db.json already says 0");
        waiter.join().unwrap();
    }
}
