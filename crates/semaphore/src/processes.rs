//! Part 3: the semaphore across processes, and a holder killed inside: ours
//! (`py_multiprocessing::sync::ProcessSemaphore`) beside a POSIX named semaphore (`sem_open`).

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::predict::{self, Expect};
use common::process::{Process, Role, Run};
use common::processes::lost;
use common::{ps, report};
use py_multiprocessing::shm::{Shareable, SharedBlock, futex_wait, futex_wake};
use py_multiprocessing::sync::{ProcessEvent, ProcessSemaphore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::{Cli, check_rooms, stay_ms};

/// The roles a spawned child may run (the `__main__` guard finds them by name).
pub static ROLES: [&Role; 5] = [&PERSON, &HOLDER, &LATE_COMER, &POSIX_HOLDER, &POSIX_LATE_COMER];
static PERSON: Role = Role::of::<Person>();
static HOLDER: Role = Role::of::<Holder>();
static LATE_COMER: Role = Role::of::<LateComer>();
static POSIX_HOLDER: Role = Role::of::<PosixHolder>();
static POSIX_LATE_COMER: Role = Role::of::<PosixLateComer>();

/// How long the parent waits for a child's step (every holder inside, the late-comer asleep)
/// before it calls the run failed.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// The notes-seconds the POSIX late-comer waits before it gives up (`sem_timedwait`), and the
/// least it waits whatever `--speed` says: ten of our death checks, so the comparison is fair.
const GIVE_UP_S: f64 = 2.0;
const GIVE_UP_MIN: Duration = Duration::from_millis(200);
/// The names of the POSIX semaphores this demo makes: `/dev/shm/sem.semaphore-demo-PID`.
const POSIX_PREFIX: &str = "semaphore-demo-";

/// Counters every process of a round shares, in a block of shared memory of their own: the
/// checks do not trust the semaphore they check.
#[repr(C)]
#[derive(Debug)]
struct Counters {
    /// Inside now: incremented right after getting a place, decremented right before giving it
    /// back; and the most ever seen.
    inside: AtomicU32,
    max_inside: AtomicU32,
    entered: AtomicU32,
    /// Holders inside; processes that opened the POSIX semaphore; the late-comer got in (1).
    holding: AtomicU32,
    opened: AtomicU32,
    late_in: AtomicU32,
}

// Safety: all-zero counters are valid, and they change only through atomics.
unsafe impl Shareable for Counters {}

/// A handle on the shared counters; it serializes to its descriptor number, for spawned
/// children (who are passed the descriptor).
#[derive(Debug, Clone)]
struct Board(Arc<SharedBlock<Counters>>);

impl Board {
    fn new() -> Result<Board> {
        Ok(Board(Arc::new(SharedBlock::create(c"semaphore-demo-counters", |_| Ok(()))?)))
    }

    fn get(&self) -> &Counters {
        self.0.get()
    }

    fn fd(&self) -> i32 {
        self.0.raw_fd()
    }

    /// Adds one to `word` and wakes whoever waits for it to change.
    fn bump(word: &AtomicU32) {
        word.fetch_add(1, Ordering::SeqCst);
        futex_wake(word, i32::MAX);
    }
}

impl Serialize for Board {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fd().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Board {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Board, D::Error> {
        let fd = i32::deserialize(d)?;
        // Safety: the parent made the counters' block with SharedBlock::<Counters>::create and
        // passed this number.
        let block =
            unsafe { SharedBlock::<Counters>::map_passed(fd) }.map_err(serde::de::Error::custom)?;
        Ok(Board(Arc::new(block)))
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section(format!(
        "3. Processes: ProcessSemaphore({}), then a holder killed inside (ours beside sem_open's)",
        cli.places
    ));
    people_through(cli)?;
    let places = cli.places;
    let guess = predict::ask(
        &cli.common,
        "killed-holder",
        format!(
            "a POSIX named semaphore (sem_open, what CPython's multiprocessing.Semaphore is) of \
             {places} place(s): a holder is killed with SIGKILL inside, every other holder goes \
             home: how many places are free then (sem_getvalue)?"
        ),
        Expect::Count,
    );
    killed_holder_ours(cli)?;
    let value = killed_holder_posix(cli)?;
    guess.reveal(
        value,
        format!(
            "sem_open's semaphore is a bare counter that knows no holder: the dead one never \
             posted, so {} place(s) are lost for good; ours (a robust mutex per place) came \
             back to {places}",
            places.saturating_sub(value)
        ),
    );
    report::say(
        "a holder's death: ours gives the place back (one robust mutex per place: the kernel \
         releases what a dead thread held, and the next taker is told); a POSIX named \
         semaphore is a bare counter that knows no holder, so the place is gone for good",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Round 1: the ten people as processes.

/// A person as a process: `sem.acquire()`, a moment inside, `sem.release()`.
#[derive(Debug, Serialize, Deserialize)]
struct Person {
    sem: ProcessSemaphore,
    board: Board,
    stay_ms: u64,
}

impl Run for Person {
    const ROLE: &'static str = "semaphore-person";
    fn run(self) -> Result<()> {
        let me = report::who();
        let place = match self.sem.try_acquire()? {
            Some(place) => place,
            None => {
                common::event!("wait", { "person": me }, "{me} waits in sem.acquire(): every place is taken");
                self.sem.acquire()?
            }
        };
        let c = self.board.get();
        let now = c.inside.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_inside.fetch_max(now, Ordering::SeqCst);
        common::event!("enter", { "person": me, "inside": now, "place": place.index(), "stay_ms": self.stay_ms }, "{me} is in place {} ({now} inside)", place.index());
        sleep_ms(self.stay_ms);
        let left = c.inside.fetch_sub(1, Ordering::SeqCst) - 1;
        c.entered.fetch_add(1, Ordering::SeqCst);
        common::event!("leave", { "person": me, "inside": left }, "{me} leaves ({left} inside)");
        place.release();
        Ok(())
    }
}

fn people_through(cli: &Cli) -> Result<()> {
    let (people, places) = (cli.people, cli.places);
    let sem = ProcessSemaphore::new(places)?;
    let board = Board::new()?;
    report::say(format!(
        "sem = ProcessSemaphore({places}): one block of shared memory (a memfd), one robust \
         mutex per place; {people} person processes, started by {}",
        cli.common.start_method
    ));
    let fds = [sem.fds()[0], board.fd()];
    let mut rng = fastrand::Rng::new();
    let mut children: Vec<Process> = (1..=people)
        .map(|n| {
            let person =
                Person { sem: sem.clone(), board: board.clone(), stay_ms: stay_ms(cli, &mut rng) };
            cli.common.child(format!("person-{n}"), person, &fds)
        })
        .collect();
    for c in &mut children {
        c.start()?;
    }
    if let Some(i) = lost::join_all(&mut children)? {
        return Err(lost::report(&children[i], "places", 0));
    }
    let c = board.get();
    check_rooms(
        "processes",
        people,
        places,
        c.entered.load(Ordering::SeqCst) as usize,
        c.max_inside.load(Ordering::SeqCst) as usize,
    )
}

// ---------------------------------------------------------------------------------------------
// Rounds 2 and 3: every place held, a late-comer asleep, a holder killed inside.

/// A holder of ours: takes a place and keeps it until told to go home (or killed).
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    sem: ProcessSemaphore,
    board: Board,
    home: ProcessEvent,
}

impl Run for Holder {
    const ROLE: &'static str = "semaphore-holder";
    fn run(self) -> Result<()> {
        let me = report::who();
        let place = self.sem.acquire()?;
        common::event!("holding", { "who": me, "place": place.index(), "kind": "ours" }, "{me} holds place {}, until told to go home", place.index());
        Board::bump(&self.board.get().holding);
        self.home.wait();
        place.release();
        Ok(())
    }
}

/// The late-comer of ours: sleeps in `acquire` until a place comes back.
#[derive(Debug, Serialize, Deserialize)]
struct LateComer {
    sem: ProcessSemaphore,
    board: Board,
    home: ProcessEvent,
}

impl Run for LateComer {
    const ROLE: &'static str = "semaphore-late-comer";
    fn run(self) -> Result<()> {
        let me = report::who();
        common::event!("wait", { "person": me, "kind": "ours" }, "{me} waits in sem.acquire(): every place is taken");
        let place = self.sem.acquire()?;
        let dead = place.recovered_from();
        report::event(
            "entered",
            json!({ "who": me, "kind": "ours", "place": place.index(), "recovered_from": dead }),
            match dead {
                Some(pid) => format!(
                    "{me} is in (place {}): its holder, pid {pid}, died holding it; the kernel \
                     gave it back (EOWNERDEAD) and we are told",
                    place.index()
                ),
                None => format!("{me} is in (place {})", place.index()),
            },
        );
        Board::bump(&self.board.get().late_in);
        self.home.wait();
        place.release();
        Ok(())
    }
}

fn killed_holder_ours(cli: &Cli) -> Result<()> {
    let places = cli.places;
    report::say(format!(
        "ours: {places} holder(s) take every place of a ProcessSemaphore({places}) and stay; a \
         late-comer sleeps in acquire(); then a holder is killed with SIGKILL inside"
    ));
    let sem = ProcessSemaphore::new(places)?;
    let home = ProcessEvent::new()?;
    let board = Board::new()?;
    let fds = [sem.fds()[0], home.fds()[0], board.fd()];
    let mut holders: Vec<Process> = (1..=places)
        .map(|n| {
            let h = Holder { sem: sem.clone(), board: board.clone(), home: home.clone() };
            cli.common.child(format!("holder-{n}"), h, &fds)
        })
        .collect();
    let mut late: Vec<Process> = Vec::new();
    let result = (|| -> Result<()> {
        for h in &mut holders {
            h.start()?;
        }
        wait_count(&board.get().holding, places as u32, &mut holders, "its place")?;
        let late_comer = LateComer { sem: sem.clone(), board: board.clone(), home: home.clone() };
        late.push(cli.common.child("late-comer", late_comer, &fds));
        late[0].start()?;
        let late_pid = late[0].pid().unwrap_or(0);
        lost::wait_asleep_in_futex(&[late_pid], &mut late, STEP_DEADLINE)?;
        let victim_pid = holders[0].pid().unwrap_or(0);
        let place = sem.holders().iter().position(|&p| p == victim_pid);
        show_asleep(cli, &holders, late_pid, "ours");
        kill_holder(&mut holders[0], place)?;
        wait_count(&board.get().late_in, 1, &mut late, "the place it waited for")?;
        home.set();
        join_ok(&mut holders[1..])?;
        join_ok(&mut late)?;
        let value = sem.value()?;
        common::event!("after_kill", { "kind": "ours", "places": places, "value": value, "late_comer_got_in": true,
                    "recovered": sem.recovered(), "victim": victim_pid }, "ours: the late-comer got the dead holder's place; with everyone gone home the \
                 value is {value} of {places}: the place came back");
        if value != places {
            bail!("ProcessSemaphore({places}) has {value} free places with nobody inside");
        }
        Ok(())
    })();
    if result.is_err() {
        home.set();
        let _ = lost::stop_running(&mut holders);
        let _ = lost::stop_running(&mut late);
    }
    result
}

/// A holder of the POSIX named semaphore: `sem_open` by name, `sem_wait`, and keep the place
/// until told to go home (or killed).
#[derive(Debug, Serialize, Deserialize)]
struct PosixHolder {
    name: String,
    board: Board,
    home: ProcessEvent,
}

impl Run for PosixHolder {
    const ROLE: &'static str = "semaphore-posix-holder";
    fn run(self) -> Result<()> {
        let me = report::who();
        let sem = NamedSemaphore::open(&self.name)?;
        Board::bump(&self.board.get().opened);
        sem.wait()?;
        common::event!("holding", { "who": me, "kind": "posix" }, "{me} holds a place of sem_open({:?}), until told to go home", self.name);
        Board::bump(&self.board.get().holding);
        self.home.wait();
        sem.post()?;
        Ok(())
    }
}

/// The late-comer of the POSIX semaphore: `sem_timedwait`, giving up after a while.
#[derive(Debug, Serialize, Deserialize)]
struct PosixLateComer {
    name: String,
    board: Board,
    give_up_ms: u64,
}

impl Run for PosixLateComer {
    const ROLE: &'static str = "semaphore-posix-late-comer";
    fn run(self) -> Result<()> {
        let me = report::who();
        let sem = NamedSemaphore::open(&self.name)?;
        Board::bump(&self.board.get().opened);
        common::event!("wait", { "person": me, "kind": "posix" }, "{me} waits in sem_timedwait(): every place is taken");
        let began = Instant::now();
        if sem.wait_timeout(Duration::from_millis(self.give_up_ms))? {
            common::event!("entered", { "who": me, "kind": "posix", "recovered_from": null }, "{me} is in");
            Board::bump(&self.board.get().late_in);
            sem.post()?;
        } else {
            let waited = began.elapsed().as_millis() as u64;
            common::event!("gave_up", { "who": me, "kind": "posix", "waited_ms": waited }, "{me} gave up after {:.1}s: no place came free, and none ever will (without \
                     the timeout it would sleep for ever)",
                    waited as f64 / 1000.0);
        }
        Ok(())
    }
}

/// Returns the value left with every living holder gone home.
fn killed_holder_posix(cli: &Cli) -> Result<usize> {
    let places = cli.places;
    remove_stale_posix_names();
    let name = format!("/{POSIX_PREFIX}{}", std::process::id());
    let path = format!("/dev/shm/sem.{}", &name[1..]);
    let sem = NamedSemaphore::create(&name, places)?;
    let mut unlink = Unlink(Some(name.clone()));
    common::event!("posix_created", { "name": name, "path": path, "exists": std::path::Path::new(&path).exists() }, "sem_open({name:?}, O_CREAT, 0600, {places}): a POSIX named semaphore, the file {path} \
             (what CPython's multiprocessing.Semaphore is); {places} holder(s) take every place");
    let home = ProcessEvent::new()?;
    let board = Board::new()?;
    let fds = [home.fds()[0], board.fd()];
    let give_up = cli.common.notes_sleep(GIVE_UP_S).max(GIVE_UP_MIN);
    let mut holders: Vec<Process> = (1..=places)
        .map(|n| {
            let h = PosixHolder { name: name.clone(), board: board.clone(), home: home.clone() };
            cli.common.child(format!("holder-{n}"), h, &fds)
        })
        .collect();
    let mut late: Vec<Process> = Vec::new();
    let result = (|| -> Result<usize> {
        for h in &mut holders {
            h.start()?;
        }
        wait_count(&board.get().holding, places as u32, &mut holders, "its place")?;
        let late_comer = PosixLateComer {
            name: name.clone(),
            board: board.clone(),
            give_up_ms: give_up.as_millis() as u64,
        };
        late.push(cli.common.child("late-comer", late_comer, &fds));
        late[0].start()?;
        let late_pid = late[0].pid().unwrap_or(0);
        wait_count(&board.get().opened, places as u32 + 1, &mut late, "its sem_open")?;
        // Every process has it open: the name can go (CPython unlinks at once under fork).
        unlink.now();
        report::say(format!(
            "sem_unlink({name:?}): {path} is gone now that every process has the semaphore \
             open; the semaphore itself lives on in their mappings"
        ));
        lost::wait_asleep_in_futex(&[late_pid], &mut late, STEP_DEADLINE)?;
        show_asleep(cli, &holders, late_pid, "sem_open's");
        kill_holder(&mut holders[0], None)?;
        join_ok(&mut late)?;
        let got_in = board.get().late_in.load(Ordering::SeqCst) == 1;
        home.set();
        join_ok(&mut holders[1..])?;
        let value = sem.value()?;
        common::event!("after_kill", { "kind": "posix", "places": places, "value": value,
                    "late_comer_got_in": got_in, "lost": places.saturating_sub(value) }, "sem_open's: the late-comer never got in; with every living holder gone home \
                 the value is {value} of {places}: {} place(s) lost for good (sem_getvalue)",
                places.saturating_sub(value));
        Ok(value)
    })();
    if result.is_err() {
        home.set();
        let _ = lost::stop_running(&mut holders);
        let _ = lost::stop_running(&mut late);
    }
    result
}

/// Waits until `word` reaches `target` (children bump it and wake its futex), watching
/// `children`: one that dies first fails the run.
fn wait_count(word: &AtomicU32, target: u32, children: &mut [Process], what: &str) -> Result<()> {
    let began = Instant::now();
    let answer = lost::wait_watching(children, |slice| {
        let now = word.load(Ordering::SeqCst);
        if now >= target {
            return Ok(Some(()));
        }
        if began.elapsed() > STEP_DEADLINE {
            bail!("waited {STEP_DEADLINE:?} for the children ({now} of {target} ready)");
        }
        futex_wait(word, now, Some(slice));
        Ok(None)
    })?;
    answer.map_err(|i| lost::report(&children[i], what, 1))
}

/// The holders and the late-comer as `ps` shows them (state and wchan), then `--hold`.
fn show_asleep(cli: &Cli, holders: &[Process], late_pid: i32, kind: &str) {
    let mut pids: Vec<i32> = holders.iter().filter_map(Process::pid).collect();
    pids.push(late_pid);
    let title = format!("{kind}: every place held, the late-comer asleep (S) in acquire");
    let (rows, text) = ps::sleep_table(&title, &pids);
    report::event("asleep", json!({ "kind": kind, "late_comer": late_pid, "rows": rows }), text);
    cli.common.hold("every place held, the late-comer asleep; holder-1 is killed next", &pids);
}

/// `kill -9` of a holder inside, and its exit code.
fn kill_holder(holder: &mut Process, place: Option<usize>) -> Result<()> {
    let pid = holder.pid().unwrap_or(0);
    holder.kill()?;
    let exitcode = holder.join()?;
    common::event!("killed", { "pid": pid, "name": holder.name(), "place": place, "exitcode": exitcode }, "kill -9 {pid} ({}, inside{}): {}",
            holder.name(),
            place.map_or(String::new(), |p| format!(" place {p}")),
            common::process::exitcode_name(exitcode));
    Ok(())
}

/// Joins `children`; any that did not end with 0 fails the run.
fn join_ok(children: &mut [Process]) -> Result<()> {
    if let Some(i) = lost::join_all(children)? {
        return Err(lost::report(&children[i], "its place", 1));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The POSIX named semaphore, beside ours.

/// A POSIX named semaphore (`sem_open`): a counter in `/dev/shm/sem.NAME`, mapped by every
/// process that opens it. glibc's `sem_wait` sleeps on a futex in it; nothing records who took
/// a place.
#[derive(Debug)]
struct NamedSemaphore {
    sem: *mut libc::sem_t,
}

impl NamedSemaphore {
    /// `sem_open(name, O_CREAT | O_EXCL, 0600, value)`.
    fn create(name: &str, value: usize) -> Result<NamedSemaphore> {
        let c = CString::new(name)?;
        // Safety: a NUL-terminated name; with O_CREAT sem_open takes a mode and a value.
        let sem = unsafe {
            libc::sem_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
                value as libc::c_uint,
            )
        };
        if sem == libc::SEM_FAILED {
            return Err(std::io::Error::last_os_error())
                .context(format!("sem_open({name:?}, O_CREAT)"));
        }
        Ok(NamedSemaphore { sem })
    }

    /// `sem_open(name, 0)`: the semaphore another process made.
    fn open(name: &str) -> Result<NamedSemaphore> {
        let c = CString::new(name)?;
        // Safety: a NUL-terminated name; without O_CREAT no more arguments are read.
        let sem = unsafe { libc::sem_open(c.as_ptr(), 0) };
        if sem == libc::SEM_FAILED {
            return Err(std::io::Error::last_os_error()).context(format!("sem_open({name:?})"));
        }
        Ok(NamedSemaphore { sem })
    }

    /// `sem_wait`: takes a place, sleeping while there is none.
    fn wait(&self) -> Result<()> {
        loop {
            // Safety: `sem` is an open semaphore for as long as `self` lives.
            if unsafe { libc::sem_wait(self.sem) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("sem_wait");
            }
        }
    }

    /// `sem_timedwait`: `false` if no place came free within `timeout`.
    fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)?;
        let end = Duration::new(now.tv_sec() as u64, now.tv_nsec() as u32) + timeout;
        let abs = libc::timespec {
            tv_sec: end.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(end.subsec_nanos()),
        };
        loop {
            // Safety: as in `wait`; `abs` lives on our stack for the call.
            if unsafe { libc::sem_timedwait(self.sem, &abs) } == 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) => return Ok(false),
                _ => return Err(e).context("sem_timedwait"),
            }
        }
    }

    /// `sem_post`: gives a place back.
    fn post(&self) -> Result<()> {
        // Safety: as in `wait`.
        if unsafe { libc::sem_post(self.sem) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sem_post");
        }
        Ok(())
    }

    /// `sem_getvalue`: the free places now.
    fn value(&self) -> Result<usize> {
        let mut value: libc::c_int = 0;
        // Safety: as in `wait`; `value` is ours to fill.
        if unsafe { libc::sem_getvalue(self.sem, &mut value) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sem_getvalue");
        }
        Ok(value.max(0) as usize)
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        // Safety: `sem` came from sem_open and is closed once, here.
        unsafe {
            libc::sem_close(self.sem);
        }
    }
}

/// Removes a POSIX semaphore's name (`sem_unlink`) once, now or when dropped: the name must not
/// outlive the round, whatever happens in it.
#[derive(Debug)]
struct Unlink(Option<String>);

impl Unlink {
    fn now(&mut self) {
        if let Some(name) = self.0.take()
            && let Ok(c) = CString::new(name)
        {
            // Safety: a NUL-terminated name.
            unsafe {
                libc::sem_unlink(c.as_ptr());
            }
        }
    }
}

impl Drop for Unlink {
    fn drop(&mut self) {
        self.now();
    }
}

/// A run interrupted (Ctrl-C, SIGKILL) between `sem_open` and `sem_unlink` leaves its name in
/// `/dev/shm`: remove those whose demo is gone.
fn remove_stale_posix_names() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return };
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix("sem.").and_then(|n| n.strip_prefix(POSIX_PREFIX)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if ps::state_of(pid).is_none() {
            Unlink(Some(format!("/{POSIX_PREFIX}{pid}"))).now();
        }
    }
}
