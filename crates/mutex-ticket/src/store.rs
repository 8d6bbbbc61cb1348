//! The ticket database: `db.json` holding `{"count": 1}`, read strictly (one JSON object, a
//! whole `count` from 0 to [`MAX_TICKETS`], anything else refused with a [`StoreError`] naming
//! the file, never repaired), and its sidecar lock file `db.json.lock`. The buyer's own file
//! shows the calls of the lesson: `flock` on the sidecar, the temp file renamed over `db.json`.
//!
//! Why a sidecar: every write replaces `db.json` by a rename, and a lock belongs to the file
//! (the inode) that was open, not to the name. A buyer that opened `db.json` and waited for a
//! lock on it would wake up holding a lock on the old, replaced file and read a stale count.
//! `flock(1)` and Python's `fcntl.flock` take the same lock (`fcntl.lockf` is a record lock).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// The largest `count` read or written: one billion tickets.
pub const MAX_TICKETS: u64 = 1_000_000_000;

/// How a buyer writes `db.json` back (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum Durability {
    /// Truncate db.json and rewrite it, as the notes' json.dump(dic, open('db.json', 'w'))
    InPlace,
    /// Write a temp file beside db.json, then rename it over db.json (a killed buyer never tears it)
    #[default]
    Rename,
    /// Rename, plus fsync of the temp file and of the directory (survives a power loss too)
    Fsync,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::InPlace => "in-place",
            Durability::Rename => "rename",
            Durability::Fsync => "fsync",
        }
    }
}

/// What can go wrong; every message starts with the file's path. [`StoreError::is_bad_input`]:
/// the file is unusable and nothing was modified (exit 2), or an I/O failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: is a directory, not a JSON file")]
    IsDirectory { path: PathBuf },
    /// A FIFO, socket, device or symbolic link: refused without blocking or following it.
    #[error("{path}: is {kind}, not a regular file; {advice}")]
    NotARegularFile { path: PathBuf, kind: &'static str, advice: &'static str },
    #[error("{path}: not allowed to read it ({error})")]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("{path}: the file is empty; it must hold one JSON object like {{\"count\": 1}}")]
    Empty { path: PathBuf },
    #[error("{path}: not valid JSON: {detail}")]
    NotJson { path: PathBuf, detail: String },
    #[error(
        "{path}: extra data after the JSON object (at line {line} column {column}); \
         the file must hold exactly one JSON object"
    )]
    TrailingData { path: PathBuf, line: usize, column: usize },
    #[error("{path}: the top level is {found}, not a JSON object like {{\"count\": 1}}")]
    NotAnObject { path: PathBuf, found: String },
    #[error("{path}: \"count\" is missing; the file must look like {{\"count\": 1}}")]
    CountMissing { path: PathBuf },
    /// `problem` says what is wrong with the value: "negative (-1)", "too large (2e9)".
    #[error(
        "{path}: \"count\" is {problem}; it must be a whole number of tickets from 0 to {MAX_TICKETS}"
    )]
    BadCount { path: PathBuf, problem: String },
    #[error(
        "{path}: cannot create or open the lock file ({error}); \
         the database's directory must be writable, or the lock file must already exist"
    )]
    LockFile { path: PathBuf, error: io::Error },
    #[error("{path}: {action}: {error}")]
    Io { path: PathBuf, action: String, error: io::Error },
}

impl StoreError {
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, StoreError::Io { .. })
    }
}

/// The database at one path and its lock file `<path>.lock`. Nothing is opened in advance: a
/// flock belongs to an open file description, which `fork` shares, so each locker opens its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketDb {
    path: PathBuf,
    lock_path: PathBuf,
}

impl TicketDb {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        TicketDb { lock_path: with_suffix(&path, ".lock"), path }
    }

    /// Creates (or replaces, by rename under the lock) `path` holding `{"count": count}`.
    pub fn create(path: impl Into<PathBuf>, count: u64) -> Result<TicketDb, StoreError> {
        let db = TicketDb::new(path);
        let mut object = Map::new();
        object.insert("count".to_owned(), Value::from(count));
        db.text(&object, count)?; // a count too large is refused before any file is made
        let _lock = db.lock()?;
        db.write_object(&object, count, Durability::Rename)?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// `<db path>.tmp.<pid>`: where process `pid` writes the new text before the rename.
    pub fn temp_path(&self, pid: u32) -> PathBuf {
        with_suffix(&self.path, &format!(".tmp.{pid}"))
    }

    /// Reads and checks the count, without the lock (the notes' `search`).
    pub fn read_count(&self) -> Result<u64, StoreError> {
        read(&self.path).map(|(_, count)| count)
    }

    /// Writes `count` (keeping the other keys) without the lock: the race of `--no-lock`.
    pub fn write_count(&self, count: u64, durability: Durability) -> Result<(), StoreError> {
        let (object, _) = read(&self.path)?;
        self.write_object(&object, count, durability)
    }

    /// The sidecar lock file, opened anew (created if missing; never truncated, never
    /// blocking: a FIFO there fails at once). Locking it is the caller's: see the buyer.
    pub fn open_lock_file(&self) -> Result<File, StoreError> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
        let opened = options.open(&self.lock_path).or_else(|error| match error.kind() {
            // A sidecar we may not write: a read-only descriptor can hold a flock too.
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                File::open(&self.lock_path).map_err(|_| error)
            }
            _ => Err(error),
        });
        opened.map_err(|error| match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                StoreError::Missing { path: self.path.clone() }
            }
            _ => StoreError::LockFile { path: self.lock_path.clone(), error },
        })
    }

    /// Waits for the exclusive flock on the sidecar: the buyer's own [`crate::buyer::lock_sidecar`].
    pub fn lock(&self) -> Result<DbGuard<'_>, StoreError> {
        Ok(DbGuard { db: self, _lock_file: crate::buyer::lock_sidecar(self)?, object: None })
    }

    /// Writes `object` with its count set to `count`, at `durability`.
    fn write_object(
        &self,
        object: &Map<String, Value>,
        count: u64,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let text = self.text(object, count)?;
        crate::buyer::write_back(self, &text, durability)
            .map_err(|error| io_error(&self.path, "cannot write it", error))
    }

    /// The file's new text: `object` with `count`, as Python's `json.dump` lays it out.
    pub fn text(&self, object: &Map<String, Value>, count: u64) -> Result<Vec<u8>, StoreError> {
        if count > MAX_TICKETS {
            let problem = format!("too large ({count})");
            return Err(StoreError::BadCount { path: self.path.clone(), problem });
        }
        let mut object = object.clone();
        object.insert("count".to_owned(), Value::from(count));
        let mut text = Vec::with_capacity(64);
        let mut serializer = serde_json::Serializer::with_formatter(&mut text, PythonStyle);
        object.serialize(&mut serializer).expect("a JSON map serializes into memory");
        text.push(b'\n');
        Ok(text)
    }
}

/// Holding the flock on a [`TicketDb`]; the lock goes when the guard is dropped (the file
/// closed). A read and a write through it are one transaction: the write reuses the object read.
#[derive(Debug)]
pub struct DbGuard<'a> {
    db: &'a TicketDb,
    _lock_file: File,
    object: Option<Map<String, Value>>,
}

impl DbGuard<'_> {
    pub fn read_count(&mut self) -> Result<u64, StoreError> {
        let (object, count) = read(&self.db.path)?;
        self.object = Some(object);
        Ok(count)
    }

    pub fn write_count(&mut self, count: u64, durability: Durability) -> Result<(), StoreError> {
        let object = match self.object.take() {
            Some(object) => object,
            None => read(&self.db.path)?.0,
        };
        self.db.write_object(&object, count, durability)?;
        self.object = Some(object);
        Ok(())
    }
}

/// Reads `path` strictly: the object and its count.
pub fn read(path: &Path) -> Result<(Map<String, Value>, u64), StoreError> {
    let p = || path.to_owned();
    let mut file = open_regular(path)?;
    // A plain read loop: `read_to_end` would first stat and seek for a size hint, two system
    // calls per transaction that a file of a dozen bytes does not need.
    let (mut bytes, mut chunk) = (Vec::new(), [0u8; 512]);
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path, "cannot read it", e)),
        }
    }
    if bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Err(StoreError::Empty { path: p() });
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = Value::deserialize(&mut de)
        .map_err(|error| StoreError::NotJson { path: p(), detail: error.to_string() })?;
    // Anything but whitespace after the object (`{"count": 1} x`) is refused too.
    de.end().map_err(|e| StoreError::TrailingData {
        path: p(),
        line: e.line(),
        column: e.column(),
    })?;
    let Value::Object(object) = value else {
        let found = describe(&value).split(" (").next().unwrap_or_default().to_owned();
        return Err(StoreError::NotAnObject { path: p(), found });
    };
    let count = match object.get("count") {
        None => return Err(StoreError::CountMissing { path: p() }),
        Some(Value::Number(n)) => {
            check_count(n).map_err(|problem| StoreError::BadCount { path: p(), problem })?
        }
        Some(other) => {
            let problem = format!("{}, not a number", describe(other));
            return Err(StoreError::BadCount { path: p(), problem });
        }
    };
    Ok((object, count))
}

/// The count, or what is wrong with it. serde_json keeps a JSON integer as u64 (i64 when
/// negative) and anything with a fraction or exponent, or too big for 64 bits, as f64.
fn check_count(n: &Number) -> Result<u64, String> {
    match (n.as_u64(), n.as_i64(), n.as_f64().unwrap_or(f64::NAN)) {
        (Some(count), _, _) if count <= MAX_TICKETS => Ok(count),
        (Some(_), _, _) => Err(format!("too large ({n})")),
        (None, Some(_), _) => Err(format!("negative ({n})")),
        (_, _, v) if v < 0.0 => Err(format!("negative ({n})")),
        (_, _, v) if v > MAX_TICKETS as f64 => Err(format!("too large ({n})")),
        _ => Err(format!("{n}, which is not written as a whole number")),
    }
}

/// Opens `path` for reading if it is a regular file, without blocking (`O_NONBLOCK`: a FIFO
/// opens at once and is refused) or following a symbolic link (`O_NOFOLLOW`).
fn open_regular(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    const TARGET: &str = "pass the path of the file it points to (every write replaces db.json \
                          by a rename, which would replace the link, not its target)";
    const REGULAR: &str = "the database must be a regular file holding {\"count\": N}";
    let refuse = |kind, advice| StoreError::NotARegularFile { path: path.to_owned(), kind, advice };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| match (error.raw_os_error(), error.kind()) {
            (Some(libc::ELOOP), _) => refuse("a symbolic link", TARGET),
            (Some(libc::ENXIO), _) => refuse("a socket", REGULAR),
            (_, io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                StoreError::Missing { path: path.to_owned() }
            }
            (_, io::ErrorKind::PermissionDenied) => {
                StoreError::Unreadable { path: path.to_owned(), error }
            }
            _ => io_error(path, "cannot read it", error),
        })?;
    let kind = file.metadata().map_err(|e| io_error(path, "cannot read it", e))?.file_type();
    match () {
        _ if kind.is_dir() => Err(StoreError::IsDirectory { path: path.to_owned() }),
        _ if kind.is_fifo() => Err(refuse("a FIFO (named pipe)", REGULAR)),
        _ if kind.is_socket() => Err(refuse("a socket", REGULAR)),
        _ if kind.is_char_device() => Err(refuse("a character device", REGULAR)),
        _ if kind.is_block_device() => Err(refuse("a block device", REGULAR)),
        _ => Ok(file),
    }
}

/// The notes' way: truncate and rewrite; a kill in between leaves the file empty or torn.
pub fn write_in_place(path: &Path, text: &[u8]) -> io::Result<()> {
    OpenOptions::new().write(true).truncate(true).open(path)?.write_all(text)
}

/// serde_json's compact layout with Python's separators `", "` and `": "`.
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

/// What a JSON value is (`a string`), with its text when short: `a string ("1")`.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    match value {
        Value::Bool(_) | Value::String(_) if text.len() <= 40 => format!("{kind} ({text})"),
        _ => kind.to_owned(),
    }
}

/// `db.json` + `.lock` = `db.json.lock`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

pub(crate) fn io_error(path: &Path, action: &str, error: io::Error) -> StoreError {
    StoreError::Io { path: path.to_owned(), action: action.to_owned(), error }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
