//! The store's tests: strict reading, the three write levels, the sidecar lock with flock(1)
//! and between threads, and why the lock is not on db.json itself.

use super::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The flock on the sidecar if it is free now (flock with LOCK_NB).
fn try_lock(db: &TicketDb) -> Option<File> {
    let file = db.open_lock_file().unwrap();
    file.try_lock().ok().map(|()| file)
}

/// How long any test waits for another thread or process before failing.
const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh directory per test, removed when the test ends (pass or fail).
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir()
            .join(format!("ticket-store-test-{}-{n}-{name}", std::process::id()));
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
        // One variant for a bad count; what is wrong with it is the start of its problem.
        StoreError::BadCount { problem, .. } if problem.starts_with("negative") => "CountNegative",
        StoreError::BadCount { problem, .. } if problem.starts_with("too large") => "CountTooLarge",
        StoreError::BadCount { problem, .. } if problem.ends_with("not a number") => {
            "CountNotANumber"
        }
        StoreError::BadCount { .. } => "CountFractional",
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
    for durability in [Durability::InPlace, Durability::Rename, Durability::Fsync] {
        attempts
            .push((format!("TicketDb::write_count {durability:?}"), db.write_count(0, durability)));
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
        // serde_json's message says where: "... at line 3 column 4".
        StoreError::NotJson { detail, .. } if detail.ends_with("line 3 column 4") => {}
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
    for durability in [Durability::InPlace, Durability::Rename, Durability::Fsync] {
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

    assert!(try_lock(&db).is_none(), "flock(1) holds it: try_lock must fail");

    // Answer `read x` and close its stdin: the shell exits 0, and flock(1) unlocks.
    let mut stdin = holder.0.stdin.take().unwrap();
    stdin.write_all(b"done\n").unwrap();
    drop(stdin);
    assert!(wait_with_deadline(&mut holder.0).success());
    let guard = try_lock(&db);
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
