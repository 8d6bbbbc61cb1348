//! mutex-ticket: does the race oversell, does the file lock fix it, what does join cost, and does
//! the database survive a buyer killed while it holds the lock?
//!
//! Every test works on its own database in a temp folder (`--db`), never on data/db.json, and
//! reads the file itself at the end.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{DEADLINE, Demo, Output, TempDir, wait_until};

const BIN: &str = "mutex-ticket";

/// A database file holding `content`, in its own temp folder.
fn db_with(dir: &TempDir, content: &[u8]) -> PathBuf {
    let path = dir.join("db.json");
    std::fs::write(&path, content).unwrap();
    path
}

/// Reads the database as a test must: the whole file is one JSON object with a whole count.
fn read_db(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("{} is not valid JSON ({e}): {:?}", path.display(), String::from_utf8_lossy(&bytes))
    });
    assert!(value["count"].is_u64(), "{} has no whole count: {value}", path.display());
    value
}

fn count_in(path: &Path) -> u64 {
    read_db(path)["count"].as_u64().unwrap()
}

/// The names in a folder, sorted.
fn names(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `args` plus `--json --db PATH`.
fn with_db<'a>(args: &[&'a str], db: &'a Path) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--json", "--db", db.to_str().unwrap()]);
    all
}

fn run_on(db: &Path, args: &[&str]) -> Output {
    support::run(BIN, &with_db(args, db))
}

fn summary(out: &Output) -> &Value {
    &out.one("summary")["data"]
}

fn num(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {value}"))
}

#[test]
fn without_the_lock_more_than_one_buyer_buys_the_one_ticket() {
    // The demo's default pauses, as the claim is about them: 10 buyers, 1 ticket.
    for method in ["fork", "spawn"] {
        let dir = TempDir::new("race");
        let db = db_with(&dir, b"{\"count\": 1}");
        let out = run_on(&db, &["run", "--no-lock", "--start-method", method]);
        out.assert_code(0).assert_nothing_left();
        let bought = out.named("bought").len() as u64;
        if bought < 2 {
            out.fail(&format!("{method}: only {bought} buyer(s) bought: the race did not show"));
        }
        let s = summary(&out);
        assert_eq!(s["mode"], "no-lock");
        assert_eq!(num(s, "sold"), bought);
        assert_eq!(num(s, "remaining"), 0);
        assert_eq!(s["oversold"].as_i64(), Some(bought as i64 - 1), "{s}");
        assert_eq!(s["invariant_holds"], false);
        assert_eq!(count_in(&db), 0, "the file must still be whole");
        // No lock was ever taken: not even the sidecar exists.
        assert_eq!(names(&dir), ["db.json"]);
    }
}

#[test]
fn with_the_lock_exactly_min_tickets_buyers_succeed_with_either_start_method() {
    for (tickets, buyers, method) in [(1, 10, "fork"), (3, 5, "spawn"), (7, 4, "fork")] {
        let dir = TempDir::new("lock");
        let db = db_with(&dir, format!("{{\"count\": {tickets}}}").as_bytes());
        let buyers_arg = buyers.to_string();
        let args = ["run", "--buyers", &buyers_arg, "--start-method", method];
        let out = run_on(&db, &[&args[..], &["--search-ms", "20", "--buy-ms", "20"]].concat());
        out.assert_code(0).assert_nothing_left();
        let sold = tickets.min(buyers);
        let what = format!("{tickets} tickets, {buyers} buyers, {method}");
        assert_eq!(out.named("bought").len() as u64, sold, "{what}");
        assert_eq!(out.named("sold_out").len() as u64, buyers - sold, "{what}");
        // Serialized: every sale saw a different count, one lower each time.
        let mut seen: Vec<u64> =
            out.named("bought").iter().map(|e| num(&e["data"], "before")).collect();
        seen.sort_unstable();
        let expected: Vec<u64> = (tickets - sold + 1..=tickets).collect();
        assert_eq!(seen, expected, "{what}");
        let s = summary(&out);
        assert_eq!((num(s, "sold"), num(s, "remaining")), (sold, tickets - sold), "{what}");
        assert_eq!(s["invariant_holds"], true, "{what}");
        assert_eq!(count_in(&db), tickets - sold, "{what}");
        assert_eq!(names(&dir), ["db.json", "db.json.lock"], "{what}: a temp file was left");
    }
}

#[test]
fn join_sells_as_many_as_the_lock_but_takes_longer() {
    const BUYERS: u64 = 4;
    const SEARCH_MS: u64 = 400;
    let dir = TempDir::new("join");
    let db = db_with(&dir, b"{\"count\": 1}");
    let common = ["--buyers", "4", "--search-ms", "400", "--buy-ms", "10", "--tickets", "1"];
    let lock = run_on(&db, &[&["run"][..], &common].concat());
    lock.assert_code(0).assert_nothing_left();
    let join = run_on(&db, &[&["run", "--join"][..], &common].concat());
    join.assert_code(0).assert_nothing_left();

    let (lock_s, join_s) = (summary(&lock), summary(&join));
    assert_eq!((num(lock_s, "sold"), num(join_s, "sold")), (1, 1));
    assert_eq!(join_s["invariant_holds"], true);
    assert_eq!(count_in(&db), 0);
    // join runs the searches one after another too: at least BUYERS × the search pause...
    let (lock_ms, join_ms) = (num(lock_s, "wall_ms"), num(join_s, "wall_ms"));
    assert!(join_ms >= BUYERS * SEARCH_MS, "join took {join_ms} ms");
    // ...while the lock lets them search at the same time.
    assert!(join_ms > lock_ms, "join {join_ms} ms is not longer than the lock {lock_ms} ms");
    // And strictly in turn: buyer i searches only after buyer i-1 has finished.
    // (usize::MAX when there is no such event: a buyer either bought or found none.)
    let position = |event: &str, buyer: u64| {
        join.events
            .iter()
            .position(|e| e["event"] == event && e["data"]["buyer"] == buyer)
            .unwrap_or(usize::MAX)
    };
    for buyer in 1..BUYERS {
        let done = position("bought", buyer - 1).min(position("sold_out", buyer - 1));
        let searched = position("searched", buyer);
        assert!(searched > done, "buyer {buyer} searched before buyer {} ended", buyer - 1);
    }
}

#[test]
fn a_buyer_killed_inside_the_locked_section_leaves_a_whole_file_and_the_others_finish() {
    for method in ["fork", "spawn"] {
        let dir = TempDir::new("crash");
        let db = db_with(&dir, b"{\"count\": 2, \"show\": \"concert\"}");
        let args =
            ["crash", "--victim", "1", "--buyers", "4", "--search-ms", "10", "--buy-ms", "10"];
        let out = run_on(&db, &[&args[..], &["--start-method", method]].concat());
        out.assert_code(0).assert_nothing_left();

        let stopped = out.one("in_critical_section");
        assert_eq!(stopped["who"], "buyer-1");
        let victim = stopped["pid"].as_i64().unwrap() as i32;
        let temp = stopped["data"]["temp"].as_str().unwrap().to_owned();
        // While it was stopped, the demo saw it in state T holding the lock, the others waiting.
        let view = &out.one("lock_view")["data"];
        assert_eq!(view["holders"], serde_json::json!([victim]), "{view}");
        assert_eq!(view["waiters"].as_array().unwrap().len(), 3, "{view}");
        let row = view["rows"].as_array().unwrap().iter().find(|r| r["pid"] == victim).unwrap();
        assert_eq!(row["state"], "T", "{row}");

        let killed = &out.one("killed")["data"];
        assert_eq!(killed["exitcode"], -9);
        assert_eq!(killed["exitcode_name"], "-SIGKILL");
        assert!(support::ps::stat(victim).is_none(), "the victim {victim} is still there");

        // The other three bought the two tickets the victim never got to sell.
        assert_eq!(out.named("bought").len(), 2, "{method}");
        assert!(out.named("bought").iter().all(|e| e["who"] != "buyer-1"));
        let s = summary(&out);
        assert_eq!((num(s, "sold"), num(s, "killed"), num(s, "remaining")), (2, 1, 0));
        assert_eq!(s["invariant_holds"], true);
        let file = read_db(&db);
        assert_eq!((file["count"].as_u64(), file["show"].as_str()), (Some(0), Some("concert")));
        // Its half-written temp file was found and removed.
        let cleaned = &out.one("cleaned")["data"]["removed"];
        assert_eq!(cleaned, &serde_json::json!([temp]), "{method}");
        assert_eq!(names(&dir), ["db.json", "db.json.lock"], "{method}");
    }
}

/// A child process killed (and reaped) when dropped, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn buyers_wait_while_flock_1_holds_the_sidecar_and_go_on_when_it_lets_go() {
    let dir = TempDir::new("flock1");
    let db = db_with(&dir, b"{\"count\": 1}");
    let lock_path = dir.join("db.json.lock");
    let spawned = Command::new("flock")
        .arg("-x")
        .arg(&lock_path)
        .args(["-c", "echo held; read x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut holder = match spawned {
        Ok(child) => KillOnDrop(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: flock(1) (util-linux) is not installed");
            return;
        }
        Err(e) => panic!("spawning flock: {e}"),
    };
    let stdout = holder.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    assert_eq!(rx.recv_timeout(DEADLINE).expect("flock(1) never said held"), "held\n");

    let args = with_db(&["run", "--buyers", "3", "--search-ms", "0", "--buy-ms", "0"], &db);
    let mut demo = Demo::start(BIN, &args);
    let mut pids = Vec::new();
    for _ in 0..3 {
        let event = demo.wait_event("waiting_for_lock");
        pids.push(event["pid"].as_i64().unwrap() as i32);
    }
    // The kernel shows all three blocked on the sidecar, asleep (S), behind flock(1).
    wait_until("the three buyers wait for the lock in /proc/locks", || {
        let (_, mut waiters) = common::locks::holders_and_waiters(&lock_path).unwrap();
        waiters.sort_unstable();
        let mut expected = pids.clone();
        expected.sort_unstable();
        waiters == expected
    });
    for pid in &pids {
        assert_eq!(support::ps::state_of(*pid), Some('S'), "buyer {pid} is not asleep");
    }
    assert!(
        demo.events().iter().all(|e| e["event"] != "bought" && e["event"] != "locked"),
        "a buyer went on while flock(1) held the lock"
    );
    assert_eq!(count_in(&db), 1);

    // Let go: answer `read x`; the shell ends and flock(1) unlocks.
    let mut stdin = holder.0.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let out = demo.finish();
    out.assert_code(0).assert_nothing_left();
    assert_eq!(out.named("bought").len(), 1);
    assert_eq!(out.named("sold_out").len(), 2);
    assert_eq!(count_in(&db), 0);
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Elsewhere there are no capability sets to lower, and root reads the file anyway: there, run
/// the tests as another user.
#[cfg(not(target_os = "linux"))]
fn run_without_dac_capabilities(_: &[&str]) -> (Option<i32>, String) {
    panic!(
        "as root, the unreadable-file case needs Linux's capabilities: run the tests as another user"
    );
}

/// Runs the demo as root without the two capabilities that let root read any file
/// (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`), for the unreadable-file case when the tests run
/// as root. It stays root, so it can still reach its binary and the test's folder wherever the
/// checkout is, even under a private (0700) folder that another user could not enter.
#[cfg(target_os = "linux")]
fn run_without_dac_capabilities(args: &[&str]) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(support::bin(BIN));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Safety: prctl and the capget/capset system calls are async-signal-safe, allocate
    // nothing, and change only the child.
    unsafe {
        command.pre_exec(drop_dac_capabilities);
    }
    let mut child =
        KillOnDrop(command.spawn().expect("spawning the demo without DAC capabilities"));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo run without DAC capabilities did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// In a child before exec: removes `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` from the
/// bounding set (else exec as root would give them back) and from the effective, permitted and
/// inheritable sets. Only async-signal-safe calls: it runs between fork and exec.
#[cfg(target_os = "linux")]
fn drop_dac_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522; // _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    const DAC: [u32; 2] = [1, 2]; // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    let check = |r: libc::c_long| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    for cap in DAC {
        // Safety: PR_CAPBSET_DROP only changes this process's bounding set.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) }.into())?;
    }
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // Safety: capget writes two `Data` words into `data`, as version 3 says.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    let mask = !DAC.iter().fold(0u32, |m, cap| m | (1 << cap));
    data[0].effective &= mask;
    data[0].permitted &= mask;
    data[0].inheritable &= mask;
    // Safety: capset reads the header and two `Data` words; lowering capabilities is allowed.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    Ok(())
}

#[test]
fn every_kind_of_bad_database_is_refused_with_exit_2_and_left_unchanged() {
    let cases: &[(&str, Option<&[u8]>, &str)] = &[
        ("missing", None, "no such file"),
        ("empty", Some(b""), "empty"),
        ("not JSON", Some(b"{count: 1}"), "not valid JSON"),
        ("not an object", Some(b"[1]"), "not a JSON object"),
        ("count missing", Some(b"{\"tickets\": 1}"), "\"count\" is missing"),
        ("negative", Some(b"{\"count\": -1}"), "negative"),
        ("fractional", Some(b"{\"count\": 0.5}"), "not written as a whole number"),
        ("not a number", Some(b"{\"count\": \"1\"}"), "not a number"),
        ("too large", Some(b"{\"count\": 1000000001}"), "too large"),
        ("garbage after the object", Some(b"{\"count\": 1} x"), "extra data"),
    ];
    for &(what, content, message) in cases {
        // Both a plain run and one asking to set the count: a bad file is never repaired.
        for extra in [&[][..], &["--tickets", "5"][..]] {
            let dir = TempDir::new("bad");
            let db = dir.join("db.json");
            if let Some(content) = content {
                std::fs::write(&db, content).unwrap();
            }
            let out = run_on(&db, &[&["run"][..], extra].concat());
            out.assert_code(2).assert_nothing_left();
            let path = db.display().to_string();
            if !out.stderr.contains(&path) || !out.stderr.contains(message) {
                out.fail(&format!("{what}: the message must name {path} and say {message:?}"));
            }
            match content {
                Some(content) => assert_eq!(std::fs::read(&db).unwrap(), content, "{what}"),
                None => assert!(!db.exists(), "{what}: the file was created"),
            }
            let expected: &[&str] = if content.is_some() { &["db.json"] } else { &[] };
            assert_eq!(names(&dir), expected, "{what}: another file appeared");
        }
    }

    let dir = TempDir::new("bad-dir");
    let db = dir.join("db.json");
    std::fs::create_dir(&db).unwrap();
    let out = run_on(&db, &["run"]);
    out.assert_code(2);
    assert!(out.stderr.contains(&db.display().to_string()) && out.stderr.contains("directory"));
    assert!(db.is_dir() && std::fs::read_dir(&db).unwrap().next().is_none());

    // Unreadable: chmod 000. Root reads it anyway, so as root the demo runs without the
    // capabilities that allow that (not as `nobody`, who may not reach a checkout under a
    // private folder).
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("bad-unreadable");
    let db = db_with(&dir, b"{\"count\": 1}");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o000)).unwrap();
    let args = with_db(&["run"], &db);
    let (code, stderr) = if is_root() {
        run_without_dac_capabilities(&args)
    } else {
        let out = support::run(BIN, &args);
        (out.code(), out.stderr)
    };
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&db.display().to_string()) && stderr.contains("not allowed to read"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), b"{\"count\": 1}");
    assert_eq!(names(&dir), ["db.json"]);
}

#[test]
fn bad_flags_exit_2_with_a_message_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--buyers", "0"], "--buyers"),
        (&["--buyers", "1000"], "--buyers"),
        (&["--tickets", "-1"], "--tickets"),
        (&["--search-ms", "soon"], "--search-ms"),
        (&["--durability", "bogus"], "--durability"),
        (&["--durability", "rename", "--fsync"], "--fsync"),
        (&["--no-lock", "--join"], "--join"),
        (&["tour", "--no-lock"], "--no-lock"),
        (&["crash", "--victim", "5", "--buyers", "5"], "--victim"),
    ];
    for &(args, flag) in cases {
        let out = support::run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        if !out.stderr.contains(flag) {
            out.fail(&format!("the message must name {flag}"));
        }
        assert!(out.named("database").is_empty(), "{args:?}: a database was made");
    }
}

#[test]
fn ctrl_c_while_a_buyer_is_stopped_in_the_lock_stops_everything() {
    for to_group in [true, false] {
        let dir = TempDir::new("ctrl-c-hold");
        let db = db_with(&dir, b"{\"count\": 1}");
        let args = ["crash", "--buyers", "3", "--search-ms", "0", "--buy-ms", "0", "--hold", "60"];
        let mut demo = Demo::start(BIN, &with_db(&args, &db));
        let victim = demo.wait_event("in_critical_section")["pid"].as_i64().unwrap() as i32;
        let hold = demo.wait_event("hold");
        // What the kernel says at the moment the demo holds: the victim stopped (T) holding the
        // lock, the two others asleep (S) waiting for it.
        let pids: Vec<i32> = hold["data"]["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(pids.len(), 3);
        assert_eq!(support::ps::state_of(victim), Some('T'));
        let (holders, waiters) =
            common::locks::holders_and_waiters(&dir.join("db.json.lock")).unwrap();
        assert_eq!(holders, [victim]);
        assert_eq!(waiters.len(), 2);
        for pid in waiters {
            assert!(pids.contains(&pid));
            assert_eq!(support::ps::state_of(pid), Some('S'));
        }

        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        assert_eq!(count_in(&db), 1, "nobody bought: the file is whole and unchanged");
    }
}

#[test]
fn ctrl_c_mid_run_exits_130_and_leaves_a_valid_file() {
    for to_group in [true, false] {
        let dir = TempDir::new("ctrl-c-run");
        let db = db_with(&dir, b"{\"count\": 3}");
        let args = ["run", "--buyers", "6", "--search-ms", "0", "--buy-ms", "300"];
        let mut demo = Demo::start(BIN, &with_db(&args, &db));
        demo.wait_event("bought");
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        let left = count_in(&db);
        assert!(left < 3, "the first sale was written: {left}");
    }
}

#[test]
fn without_db_a_fresh_copy_is_used_from_any_folder_and_data_db_json_is_untouched() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/db.json");
    let before = std::fs::read(&template).unwrap();
    let cwd = TempDir::new("any-cwd");
    let args = ["run", "--json", "--buyers", "2", "--search-ms", "1", "--buy-ms", "1"];
    let out = Demo::start_in(BIN, &args, Some(cwd.path())).finish();
    out.assert_code(0).assert_nothing_left();
    let database = &out.one("database")["data"];
    assert_eq!(database["fresh"], true);
    let fresh = PathBuf::from(database["path"].as_str().unwrap());
    let folder = fresh.parent().unwrap().to_owned();
    let folder_name = folder.file_name().unwrap().to_string_lossy().into_owned();
    assert!(folder_name.starts_with("mutex-ticket-"), "{}", fresh.display());
    // The copy is kept, whole, for the learner to cat; the template is not touched.
    let left = count_in(&fresh);
    assert!(fresh.exists() && !fresh.starts_with(env!("CARGO_MANIFEST_DIR")));
    let _ = std::fs::remove_dir_all(&folder);
    assert_eq!(left, 0);
    assert_eq!(std::fs::read(&template).unwrap(), before, "data/db.json was modified");
    assert!(names(&cwd).is_empty(), "the demo wrote into its working folder");
}

#[test]
fn every_durability_level_sells_right_and_keeps_the_other_keys() {
    for level in [&["--durability", "in-place"][..], &["--durability", "rename"], &["--fsync"]] {
        let dir = TempDir::new("durability");
        let db = db_with(&dir, b"{\"count\": 2, \"show\": \"concert\"}");
        let args = ["run", "--buyers", "3", "--search-ms", "5", "--buy-ms", "5"];
        let out = run_on(&db, &[&args[..], level].concat());
        out.assert_code(0).assert_nothing_left();
        assert_eq!(out.named("bought").len(), 2, "{level:?}");
        let file = read_db(&db);
        assert_eq!((file["count"].as_u64(), file["show"].as_str()), (Some(0), Some("concert")));
        assert_eq!(names(&dir), ["db.json", "db.json.lock"], "{level:?}");
    }
}

#[test]
fn the_tour_shows_the_race_then_the_fixes_then_the_crash() {
    let dir = TempDir::new("tour");
    let db = db_with(&dir, b"{\"count\": 1}");
    let out = run_on(&db, &[]);
    out.assert_code(0).assert_nothing_left();
    let summaries: Vec<&Value> = out.named("summary").iter().map(|e| &e["data"]).collect();
    let modes: Vec<&str> = summaries.iter().map(|s| s["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["no-lock", "lock", "join", "crash"]);
    assert!(summaries[0]["oversold"].as_i64().unwrap() >= 1, "the race did not oversell");
    for s in &summaries[1..] {
        assert_eq!(s["invariant_holds"], true, "{s}");
        assert_eq!((num(s, "initial"), num(s, "sold")), (1, 1), "{s}");
    }
    let comparison = &out.one("comparison")["data"];
    assert!(num(comparison, "join_ms") > num(comparison, "lock_ms"), "{comparison}");
    out.one("tour_summary");
    assert_eq!(count_in(&db), 0);
    assert_eq!(names(&dir), ["db.json", "db.json.lock"]);
}

#[test]
fn buyers_killed_at_any_moment_never_leave_a_torn_file_or_a_stray_temp() {
    let dir = TempDir::new("kill-any-moment");
    let db = db_with(&dir, b"{\"count\": 1000}");
    let lock_path = dir.join("db.json.lock");
    let args = ["run", "--buyers", "60", "--search-ms", "0", "--buy-ms", "0"];
    let demo = Demo::start(BIN, &with_db(&args, &db));
    // Watch /proc/locks without pausing and SIGKILL every other buyer seen holding the lock:
    // just locked, reading, half-way through writing its temp file, renamed but not unlocked.
    // Where each kill lands is chance; the claims below hold wherever it lands.
    let (mut seen, mut killed) = (Vec::new(), 0);
    let deadline = Instant::now() + DEADLINE;
    while !matches!(support::ps::state_of(demo.pid()), Some('Z') | None) {
        assert!(Instant::now() < deadline, "the demo did not end in time");
        let (holders, _) = common::locks::holders_and_waiters(&lock_path).unwrap_or_default();
        for pid in holders {
            if !seen.contains(&pid) && support::ps::stat(pid).is_some_and(|p| p.ppid == demo.pid())
            {
                seen.push(pid);
                if seen.len() % 2 == 1 {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                    killed += 1;
                }
            }
        }
        std::thread::yield_now();
    }
    let out = demo.finish();
    out.assert_nothing_left();
    if killed > 0 && out.code() != Some(1) {
        out.fail(&format!("{killed} buyers were killed: the demo must report them and exit 1"));
    }
    // The file is whole whenever a writer died: it parses, with a count no sale invented.
    let left = count_in(&db);
    assert!(left <= 1000, "{left}");
    // Every temp file a killed writer left was removed by the demo once its buyers were reaped.
    assert_eq!(names(&dir), ["db.json", "db.json.lock"], "{killed} killed");
}

/// Whatever buyer is killed (SIGKILL, at a random moment of any part), does the demo still end
/// within a bound, reap everyone, and, when it exits 1, say which buyer and how many tickets
/// were lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let dir = TempDir::new("chaos");
    let db = dir.join("db.json");
    std::fs::write(&db, "{\"count\": 3}\n").unwrap();
    let db = db.to_str().unwrap();
    let fast = ["--search-ms", "30", "--buy-ms", "30", "--buyers", "6", "--db", db];
    let parts: Vec<Vec<&str>> =
        [&["run"][..], &["run", "--no-lock"], &["run", "--join"], &["crash"]]
            .iter()
            .map(|part| part.iter().chain(&fast).copied().collect())
            .collect();
    let parts: Vec<&[&str]> = parts.iter().map(Vec::as_slice).collect();
    let ms = Duration::from_millis;
    let trials = support::kill_random_children(BIN, &parts, 2, ms(300), ms(20_000), 17);
    for trial in trials {
        // A reported loss counts the tickets that left the file without a buyer's sale.
        for lost in trial.out.named("child_lost") {
            assert_eq!(lost["data"]["lost"]["what"], "tickets", "{lost}");
        }
    }
}

/// Is a --db that is not a regular file (a FIFO, a socket, a device, a directory) refused at
/// once, with exit 2, without blocking in open and without touching it? And a symbolic link:
/// refused too (every write replaces db.json by a rename, which would replace the link and
/// leave its target behind), its target unchanged.
#[test]
fn a_db_that_is_not_a_regular_file_is_refused_with_exit_2_without_blocking() {
    let dir = TempDir::new("not-regular");
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let socket = dir.join("socket.json");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let directory = dir.join("dir.json");
    std::fs::create_dir(&directory).unwrap();
    let target = dir.join("target.json");
    std::fs::write(&target, "{\"count\": 4}\n").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let cases = [
        (fifo.as_path(), "a FIFO"),
        (socket.as_path(), "a socket"),
        (Path::new("/dev/null"), "a character device"),
        (directory.as_path(), "a directory"),
        (link.as_path(), "a symbolic link"),
    ];
    for (path, kind) in cases {
        // A bound below the harness's deadline: a FIFO used to block open() for ever.
        let out = Demo::start(BIN, &with_db(&["run", "--tickets", "2"], path))
            .finish_within(Duration::from_secs(20));
        out.assert_code(2).assert_nothing_left();
        if !out.stderr.contains(&path.display().to_string()) || !out.stderr.contains(kind) {
            out.fail(&format!("the message must name {} and say {kind:?}", path.display()));
        }
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"count\": 4}\n", "target unchanged");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "link kept");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "FIFO kept");
}

/// Can a typo start thousands of buyers? No: --buyers has a cap, given in --help, and beyond
/// it the demo exits 2 before anything starts.
#[test]
fn the_buyers_flag_has_a_cap_and_beyond_it_nothing_starts() {
    support::assert_capped(BIN, &["run"], "--buyers", 200);
}

#[test]
fn is_a_guess_of_whether_db_json_survives_the_kill_whole_judged_against_this_run() {
    let answer = |guess: &str| {
        let dir = TempDir::new("crash-predict");
        let db = db_with(&dir, b"{\"count\": 2}");
        let given = format!("whole={guess}");
        let args = ["crash", "--buyers", "2", "--search-ms", "10", "--buy-ms", "10"];
        let out = run_on(&db, &[&args[..], &["--answer", &given]].concat());
        out.assert_code(0).assert_nothing_left();
        let answer = out.named("answer").into_iter().find(|e| e["data"]["id"] == "whole").cloned();
        let answer = answer.unwrap_or_else(|| panic!("no answer to whole in {:?}", out.events));
        // The run's own outcome: the file as it reads after the demo.
        read_db(&db);
        answer
    };
    let wrong = answer("no");
    assert_eq!(wrong["data"]["actual"], "yes", "rename keeps db.json whole: {wrong}");
    assert_eq!(wrong["data"]["right"], false, "{wrong}");
    let right = answer("yes");
    assert_eq!(right["data"]["right"], true, "{right}");
}

// ---------------------------------------------------------------------------------------------
// Be the scheduler: --step, --schedule, census

/// The files of `dir` but the sidecar lock file (made only by runs that lock).
fn files_but_the_lock(dir: &TempDir) -> Vec<String> {
    names(dir).into_iter().filter(|n| n != "db.json.lock").collect()
}

/// A stepped run's `schedule` event.
fn schedule_event(out: &Output) -> &Value {
    &out.one("schedule")["data"]
}

#[test]
fn a_serial_schedule_sells_exactly_the_tickets_there_are_with_and_without_the_lock() {
    for (args, schedule) in
        [(&["run", "--no-lock"][..], "0,0,0,0,1,1,1,1"), (&["run"][..], "0,0,0,0,0,0,1,1,1,1,1,1")]
    {
        let dir = TempDir::new("serial");
        let db = db_with(&dir, b"{\"count\": 1}");
        let mut all = args.to_vec();
        all.extend(["--schedule", schedule]);
        let out = run_on(&db, &all);
        out.assert_code(0).assert_nothing_left();
        let s = summary(&out);
        assert_eq!((num(s, "sold"), num(s, "remaining")), (1, 0), "{s}");
        assert_eq!(count_in(&db), 0);
        assert_eq!(schedule_event(&out)["schedule"], schedule);
        assert_eq!(schedule_event(&out)["won"], false);
        // One `step` event per granted step, in the schedule's order.
        let granted: Vec<String> =
            out.named("step").iter().map(|e| e["data"]["worker"].to_string()).collect();
        assert_eq!(granted.join(","), schedule);
        assert_eq!(files_but_the_lock(&dir), ["db.json"], "no temp file left");
    }
}

#[test]
fn both_searching_and_reading_before_either_writes_oversells_the_one_ticket() {
    let dir = TempDir::new("classic");
    let db = db_with(&dir, b"{\"count\": 1}");
    let out = run_on(&db, &["run", "--no-lock", "--schedule", "0,1,0,1,0,1,0,1"]);
    out.assert_code(0).assert_nothing_left();
    let s = summary(&out);
    assert_eq!(num(s, "sold"), 2, "both bought the one ticket: {s}");
    assert_eq!(count_in(&db), 0, "and the file says 0 left");
    assert_eq!(s["oversold"], 1);
    assert_eq!(schedule_event(&out)["won"], true);
    // Both buyers read count 1 from the file itself (their own `searched` lines).
    let seen: Vec<u64> = out.named("searched").iter().map(|e| num(&e["data"], "count")).collect();
    assert_eq!(seen, [1, 1]);
}

#[test]
fn bad_schedules_exit_2_naming_the_position_and_leave_the_file_whole() {
    let cases: [(&[&str], &str, &[&str]); 5] = [
        (&["run", "--no-lock"], "0,7", &["position 2", "worker 7", "unknown"]),
        (&["run"], "0,0,1,1,1", &["position 5", "blocked", "lock"]),
        (&["run", "--no-lock"], "0,0,0,0,0", &["position 5", "done"]),
        (&["run", "--no-lock"], "0,1,0", &["too few", "position 3"]),
        (&["run", "--no-lock"], "0,0,0,0,1,1,1,1,1", &["too many", "position 8"]),
    ];
    for (args, schedule, words) in cases {
        let dir = TempDir::new("bad-schedule");
        let db = db_with(&dir, b"{\"count\": 1}");
        let mut all = args.to_vec();
        all.extend(["--schedule", schedule]);
        let out = run_on(&db, &all);
        out.assert_code(2).assert_nothing_left();
        for word in words {
            if !out.stderr.contains(word) {
                out.fail(&format!("the message must say {word:?}"));
            }
        }
        read_db(&db); // whole
        assert_eq!(files_but_the_lock(&dir), ["db.json"], "{schedule}: something left behind");
    }
}

#[test]
fn without_a_terminal_step_never_waits_and_its_seeded_schedule_replays_to_the_same_outcome() {
    let dir = TempDir::new("seeded");
    let db = db_with(&dir, b"{\"count\": 1}");
    // stdin is a pipe here: nothing can be asked, so a random schedule is drawn and printed.
    let first = run_on(&db, &["run", "--no-lock", "--tickets", "1", "--step", "--seed", "7"]);
    first.assert_code(0).assert_nothing_left();
    assert_eq!(first.one("seed")["data"]["seed"], 7);
    let schedule = schedule_event(&first)["schedule"].as_str().unwrap().to_owned();
    assert_eq!(schedule.split(',').count(), 8, "4 steps for each of 2 buyers: {schedule}");
    let again = run_on(&db, &["run", "--no-lock", "--tickets", "1", "--step", "--seed", "7"]);
    assert_eq!(
        schedule_event(&again)["schedule"],
        schedule.as_str(),
        "the same seed, the same schedule"
    );
    let replay = run_on(&db, &["run", "--no-lock", "--tickets", "1", "--schedule", &schedule]);
    replay.assert_code(0);
    for key in ["sold", "remaining", "oversold"] {
        assert_eq!(summary(&first)[key], summary(&replay)[key], "{key}");
    }
}

#[test]
fn step_at_a_terminal_waits_for_the_answer_and_takes_it() {
    let dir = TempDir::new("tty");
    let db = db_with(&dir, b"{\"count\": 1}");
    let args = ["run", "--no-lock", "--step", "--db", db.to_str().unwrap()];
    let mut demo = support::TtyDemo::start(BIN, &args);
    demo.wait_for("who goes next?", 1);
    assert!(demo.seen.contains("goal: make it oversell"), "{}", demo.seen);
    assert!(demo.seen.contains("next: search"), "{}", demo.seen);
    // The line each buyer's next step runs, from the guide's "Where the mechanism is" table.
    assert!(demo.seen.contains("src/buyer.rs:"), "{}", demo.seen);
    // It waits: asleep in a read of the terminal, and nothing was granted yet.
    wait_until("the demo sleeps reading the terminal", || {
        support::ps::state_of(demo.pid()) == Some('S')
    });
    assert!(!demo.seen.contains("查看到剩余票数"), "no buyer searched before an answer");
    for (k, answer) in ["0", "1", "0", "1", "0", "1", "0", "1"].iter().enumerate() {
        demo.wait_for("who goes next?", k + 1);
        demo.type_line(&format!("{answer}\n"));
    }
    let seen = demo.finish_ok();
    assert!(seen.contains("you made it oversell by 1 in 8 steps"), "{seen}");
    assert!(seen.contains("schedule: 0,1,0,1,0,1,0,1"), "{seen}");
    assert_eq!(count_in(&db), 0);
}

#[test]
fn ctrl_c_in_the_middle_of_a_step_exits_130_leaves_nothing_and_a_whole_file() {
    let dir = TempDir::new("ctrl-c-step");
    let db = db_with(&dir, b"{\"count\": 1}");
    // Paying takes 30 s: the Ctrl-C comes while 路人0 is inside its granted `pay` step.
    let args = ["run", "--schedule", "0,0,0,0,0,0,1,1,1,1,1,1", "--buy-ms", "30000"];
    let mut demo = Demo::start(BIN, &with_db(&args, &db));
    demo.wait_for("the pay step granted", |e| e["event"] == "step" && e["data"]["step"] == "pay");
    let out = demo.interrupt(true);
    out.assert_code(130).assert_nothing_left();
    assert_eq!(count_in(&db), 1, "nobody wrote");
    let tmp = std::env::temp_dir();
    let pipes = format!("steps-{}-", out.pid);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&pipes))
        .collect();
    assert!(left.is_empty(), "the pipes' folder was left: {left:?}");
}

/// The test's own enumerator of the ticket's step model, written apart from the demo's: every
/// way to interleave the buyers' steps, with flock as a lock that a blocked buyer waits in
/// (and, where several wait, each one the kernel may pick). Returns (schedules, oversold ones).
fn enumerate(buyers: usize, lock: bool) -> (u64, u64) {
    #[derive(Clone)]
    struct World {
        file: u64,
        sold: u64,
        pc: Vec<usize>,
        seen: Vec<u64>,
        owner: Option<usize>,
        queue: Vec<usize>,
    }
    let program: &[&str] = if lock {
        &["search", "lock", "read", "pay", "write", "unlock"]
    } else {
        &["search", "read", "pay", "write"]
    };
    fn go(w: World, program: &[&str], out: &mut (u64, u64)) {
        let runnable: Vec<usize> =
            (0..w.pc.len()).filter(|&b| w.pc[b] < program.len() && !w.queue.contains(&b)).collect();
        if runnable.is_empty() {
            out.0 += 1;
            if w.sold + w.file > 1 {
                out.1 += 1;
            }
            return;
        }
        for b in runnable {
            let mut n = w.clone();
            let op = program[n.pc[b]];
            n.pc[b] += 1;
            let mut handoff = false;
            match op {
                "lock" => match n.owner {
                    None => n.owner = Some(b),
                    Some(_) => n.queue.push(b),
                },
                "read" => n.seen[b] = n.file,
                "write" if n.seen[b] >= 1 => {
                    n.file = n.seen[b] - 1;
                    n.sold += 1;
                }
                "unlock" => {
                    n.owner = None;
                    handoff = !n.queue.is_empty();
                }
                _ => {}
            }
            if handoff {
                for k in 0..n.queue.len() {
                    let mut m = n.clone();
                    let next = m.queue.remove(k);
                    m.owner = Some(next);
                    go(m, program, out);
                }
            } else {
                go(n, program, out);
            }
        }
    }
    let start = World {
        file: 1,
        sold: 0,
        pc: vec![0; buyers],
        seen: vec![0; buyers],
        owner: None,
        queue: Vec::new(),
    };
    let mut out = (0, 0);
    go(start, program, &mut out);
    out
}

#[test]
fn the_census_counts_what_an_independent_enumerator_counts_and_every_replay_matches() {
    let dir = TempDir::new("census");
    let db = db_with(&dir, b"{\"count\": 1}");
    let out = run_on(&db, &["census", "--buyers", "2"]);
    out.assert_code(0).assert_nothing_left();
    let census = out.named("census");
    assert_eq!(census.len(), 2, "without the lock, then with it");
    for (c, lock) in census.iter().zip([false, true]) {
        let c = &c["data"];
        let (schedules, oversell) = enumerate(2, lock);
        assert_eq!(num(c, "schedules"), schedules, "lock {lock}: {c}");
        assert_eq!(num(c, "oversell"), oversell, "lock {lock}: {c}");
        if !lock {
            // 8! / (4! 4!): the multinomial of two buyers' four steps.
            assert_eq!(schedules, 70);
            assert_eq!(num(c, "multinomial"), 70);
        }
    }
    for r in out.named("replayed") {
        let r = &r["data"];
        assert_eq!(r["all"], true);
        assert_eq!(num(r, "matched"), num(r, "replayed"), "{r}");
    }
    let replayed: Vec<u64> =
        out.named("replayed").iter().map(|r| num(&r["data"], "replayed")).collect();
    assert_eq!(replayed, [70, enumerate(2, true).0], "every schedule of 2 buyers replayed");
    read_db(&db); // whole after 120 replays
}

#[test]
fn the_census_of_three_buyers_without_the_lock_is_the_multinomial_and_its_sample_matches() {
    let dir = TempDir::new("census3");
    let db = db_with(&dir, b"{\"count\": 1}");
    let out =
        run_on(&db, &["census", "--no-lock", "--buyers", "3", "--sample", "4", "--seed", "9"]);
    out.assert_code(0).assert_nothing_left();
    let c = &out.one("census")["data"];
    assert_eq!(num(c, "schedules"), 34_650, "12! / (4!)^3");
    assert_eq!(enumerate(3, false), (34_650, num(c, "oversell")));
    let r = &out.one("replayed")["data"];
    assert_eq!((num(r, "replayed"), num(r, "matched")), (4, 4), "{r}");
}

#[test]
fn is_a_guess_of_the_fraction_that_oversells_judged_against_the_census_count() {
    let dir = TempDir::new("census-predict");
    let db = db_with(&dir, b"{\"count\": 1}");
    let args = ["census", "--no-lock", "--db", db.to_str().unwrap()];
    // 60 of the 70 schedules oversell: 0.857.
    let right = support::answer_of(BIN, &args, "fraction", "0.85");
    assert_eq!(
        (right["data"]["right"].as_bool(), right["data"]["actual"].as_f64()),
        (Some(true), Some(0.857))
    );
    // The census put db.json back as it found it: the same 70 schedules, 60 overselling.
    let left: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&db).unwrap()).unwrap();
    assert_eq!(left["count"], 1, "db.json after the census: {left}");
    let wrong = support::answer_of(BIN, &args, "fraction", "0.5");
    assert_eq!(
        (wrong["data"]["right"].as_bool(), wrong["data"]["actual"].as_f64()),
        (Some(false), Some(0.857))
    );
}
