//! Part 1: `Semaphore(3)` and ten threads wanting in (ten people, three rooms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::predict::{self, Expect};
use common::threads::named::spawn_scoped;
use common::timeline::{self, Recording, Style};
use common::{ps, report};
use py_threading::sync::{Event, Semaphore};

use crate::{Cli, check_rooms, stay_ms};

/// How long the main thread waits for the moment it shows (every place taken, the others
/// asleep in `acquire`) before it shows the threads anyway.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// What the people share: the semaphore, and the counters taken inside it.
#[derive(Debug)]
struct Rooms {
    sem: Semaphore,
    /// People inside now: incremented right after `acquire`, decremented right before
    /// `release`, so it can only exceed the places if the semaphore lets too many in.
    inside: AtomicUsize,
    max_inside: AtomicUsize,
    /// People between wanting in and getting in.
    waiting: AtomicUsize,
    entered: AtomicUsize,
    /// Set from the start, except with `--hold`: then the people inside wait for the end of
    /// the hold before their stay, so the thread table stays true while it is looked at.
    doors_open: Event,
}

pub fn run(cli: &Cli) -> Result<()> {
    let (people, places) = (cli.people, cli.places);
    report::section(format!(
        "1. Semaphore({places}): {people} people, {places} room(s) (信号量; Semaphore(1) excludes \
         as a lock does)"
    ));
    report::say(format!(
        "sem = Semaphore({places}): {places} free place(s). Each of {people} threads: \
         sem.acquire(), inside for a random moment (random.randint(1, 3) s, scaled by --speed), \
         sem.release(); a counter taken inside says how many are in"
    ));
    let rooms = Rooms {
        sem: Semaphore::new(places),
        inside: AtomicUsize::new(0),
        max_inside: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        entered: AtomicUsize::new(0),
        doors_open: Event::new(),
    };
    if cli.common.hold.is_none() {
        rooms.doors_open.set();
    }
    let mut rng = fastrand::Rng::new();
    let stays: Vec<u64> = (0..people).map(|_| stay_ms(cli, &mut rng)).collect();
    let guess = predict::ask(
        &cli.common,
        "max-inside",
        format!(
            "{people} threads, Semaphore({places}) (信号量): at most how many are inside at once?"
        ),
        Expect::Count,
    );
    let recording = if cli.timeline { Some(Recording::start()?) } else { None };

    std::thread::scope(|s| -> Result<()> {
        let rooms = &rooms;
        for (i, &stay) in stays.iter().enumerate() {
            let name = format!("person-{}", i + 1);
            if let Err(e) = spawn_scoped(s, &name, move || person(rooms, stay)) {
                rooms.doors_open.set();
                return Err(anyhow::Error::new(e).context(format!("starting thread {name}")));
            }
        }
        show_the_moment(cli, rooms);
        rooms.doors_open.set();
        Ok(())
    })?;

    if let Some(recording) = recording {
        let records = recording.finish()?;
        let style = Style::new().per_thread().span("enter", "leave", '#').mark("wait", '.');
        timeline::show(
            &format!("{people} threads through Semaphore({places}): # inside"),
            &records,
            &style,
        );
    }
    let max_inside = rooms.max_inside.load(Ordering::SeqCst);
    guess.reveal(
        max_inside,
        format!(
            "acquire() takes one of {places} places or sleeps until a release gives one back: \
             never more than {places} inside, and {places} whenever that many want in at once"
        ),
    );
    check_rooms("threads", people, places, rooms.entered.load(Ordering::SeqCst), max_inside)
}

/// One person: the classic example's `sem.acquire()`, a random moment inside, `sem.release()`.
fn person(rooms: &Rooms, stay_ms: u64) {
    let me = common::threads::named::current_name();
    rooms.waiting.fetch_add(1, Ordering::SeqCst);
    // Spans for --trace and --svg (nothing without them): waiting for a place, holding one.
    let waiting = common::phase::span("waiting for a place");
    if !rooms.sem.try_acquire() {
        common::event!("wait", { "person": me }, "{me} waits in sem.acquire(): every place is taken");
        rooms.sem.acquire();
    }
    drop(waiting);
    let holding = common::phase::span("holding a place");
    rooms.waiting.fetch_sub(1, Ordering::SeqCst);
    let now = rooms.inside.fetch_add(1, Ordering::SeqCst) + 1;
    rooms.max_inside.fetch_max(now, Ordering::SeqCst);
    common::event!("enter", { "person": me, "inside": now, "stay_ms": stay_ms }, "{me} is in ({now} inside), for {:.1}s", stay_ms as f64 / 1000.0);
    rooms.doors_open.wait();
    std::thread::sleep(Duration::from_millis(stay_ms));
    let left = rooms.inside.fetch_sub(1, Ordering::SeqCst) - 1;
    rooms.entered.fetch_add(1, Ordering::SeqCst);
    common::event!("leave", { "person": me, "inside": left }, "{me} leaves ({left} inside)");
    drop(holding);
    rooms.sem.release();
}

/// Shows the thread table at the moment every place is taken and the others sleep in
/// `acquire` (or as soon after as the people allow), and holds there with `--hold`.
fn show_the_moment(cli: &Cli, rooms: &Rooms) {
    let full = cli.places.min(cli.people);
    let pid = std::process::id() as i32;
    // Asleep in acquire: a person's thread in a futex before it got in.
    let asleep = || {
        ps::threads(pid)
            .iter()
            .filter(|t| t.comm.starts_with("person-") && t.wchan.contains("futex"))
            .count()
    };
    let began = Instant::now();
    while began.elapsed() < SNAPSHOT_WAIT {
        let inside = rooms.inside.load(Ordering::SeqCst);
        let waiting = rooms.waiting.load(Ordering::SeqCst);
        if (inside == full && waiting == cli.people - full && asleep() == waiting)
            || rooms.entered.load(Ordering::SeqCst) == cli.people
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    ps::show_threads(
        &format!(
            "the threads now: {} inside (asleep in their stay: hrtimer_nanosleep, or waiting \
             for the hold to end), {} asleep in sem.acquire() (futex_do_wait: no CPU)",
            rooms.inside.load(Ordering::SeqCst),
            rooms.waiting.load(Ordering::SeqCst)
        ),
        pid,
    );
    cli.common.hold_threads("every place taken, the others asleep in sem.acquire()", pid);
}
