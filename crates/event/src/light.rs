//! Part 1: the traffic light (红绿灯). The event is the green light: the `light` thread sets and
//! clears it; a car that finds it clear waits for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::predict::{self, Expect};
use common::report;
use common::threads::named::{current_name, spawn_scoped};
use py_threading::sync::Event;

use crate::{ARRIVALS_S, Cli, GREEN_S, RED_S, secs};

/// The light gives up after this many cycles even if a car never came (it always comes: the
/// arrivals fall within the first cycle and a half, so two or three cycles are the rule).
const MAX_CYCLES: usize = 20;

#[derive(Debug)]
struct Road {
    /// Set: green; clear: red.
    green: Event,
    passed: AtomicUsize,
    waited: AtomicUsize,
}

pub fn run(cli: &Cli) -> Result<()> {
    let cars = cli.cars;
    report::section("1. The traffic light (红绿灯): set() is green, clear() is red");
    report::say(format!(
        "event = Event(): a light thread clears it (red, {red}) and sets it (green, {green}) in \
         turn; {cars} cars arrive at random moments within {window}: if event.is_set() a car \
         goes on, else it waits in event.wait() (the course's classic example; seed 004 only \
         names Event事件)",
        red = secs(cli.common.notes_sleep(RED_S)),
        green = secs(cli.common.notes_sleep(GREEN_S)),
        window = secs(cli.common.notes_sleep(ARRIVALS_S)),
    ));
    let road =
        Road { green: Event::new(), passed: AtomicUsize::new(0), waited: AtomicUsize::new(0) };
    let window = cli.common.notes_sleep(ARRIVALS_S);
    let mut rng = fastrand::Rng::new();
    let arrivals: Vec<Duration> = (0..cars).map(|_| window.mul_f64(rng.f64())).collect();
    common::event!("light", { "color": "red" }, "light is RED: a new Event() is clear (event.is_set() is False)");
    let guess = predict::ask(
        &cli.common,
        "waited",
        format!(
            "{cars} cars arrive at random moments within {}, the light red for {} then green \
             for {} (红绿灯): how many cars wait at a red light?",
            secs(window),
            secs(cli.common.notes_sleep(RED_S)),
            secs(cli.common.notes_sleep(GREEN_S))
        ),
        Expect::Count,
    );
    let cycles = std::thread::scope(|s| -> Result<usize> {
        let road = &road;
        let light = spawn_scoped(s, "light", move || light(cli, road))?;
        for (i, &arrive) in arrivals.iter().enumerate() {
            let spawned = spawn_scoped(s, &format!("car-{}", i + 1), move || car(road, arrive));
            if let Err(e) = spawned {
                // The light must not wait for a car that will never come.
                road.passed.fetch_add(cars, Ordering::SeqCst);
                road.green.set();
                return Err(e.into());
            }
        }
        light.join().map_err(|_| anyhow::anyhow!("the light thread panicked"))
    })?;
    let passed = road.passed.load(Ordering::SeqCst);
    let waited = road.waited.load(Ordering::SeqCst);
    guess.reveal(
        waited,
        "a car that finds event.is_set() False sleeps in event.wait() until the next set(); \
         one that arrives while the light is green goes on without waiting",
    );
    common::event!("traffic", { "cars": cars, "passed": passed, "waited": waited, "cycles": cycles }, "{passed} of {cars} cars went on, {waited} of them after waiting at a red light; the \
             light changed for {cycles} cycle(s): one set() woke every car waiting at red");
    if passed != cars {
        bail!("{} car(s) never passed the light", cars - passed);
    }
    Ok(())
}

/// The light: red (as the event starts: clear), then green, then red again, until every car
/// has passed. Each change is announced *before* it is made, so that in the output a car's
/// wait always follows a red line and its start a green one.
fn light(cli: &Cli, road: &Road) -> usize {
    let cars = cli.cars;
    let mut cycles = 0;
    loop {
        cycles += 1;
        std::thread::sleep(cli.common.notes_sleep(RED_S));
        common::event!("light", { "color": "green" }, "light turns GREEN: event.set()");
        road.green.set();
        std::thread::sleep(cli.common.notes_sleep(GREEN_S));
        if road.passed.load(Ordering::SeqCst) >= cars || cycles >= MAX_CYCLES {
            break;
        }
        common::event!("light", { "color": "red" }, "light turns RED: event.clear()");
        road.green.clear();
    }
    // Whatever happened, no car is left waiting: the light stays green.
    road.green.set();
    cycles
}

/// A car: arrives, looks at the light, waits if it is red, goes.
fn car(road: &Road, arrive: Duration) {
    std::thread::sleep(arrive);
    let me = current_name();
    if road.green.is_set() {
        common::event!("go", { "car": me, "waited": false }, "{me} goes: the light is green (event.is_set() is True)");
    } else {
        common::event!("wait_red", { "car": me }, "{me} waits at the red light: event.wait()");
        let began = Instant::now();
        road.green.wait();
        road.waited.fetch_add(1, Ordering::SeqCst);
        let waited = began.elapsed();
        common::event!("go", { "car": me, "waited": true, "waited_ms": waited.as_millis() as u64 }, "{me} goes (it waited {} for the green light)", secs(waited));
    }
    road.passed.fetch_add(1, Ordering::SeqCst);
}
