//! Part 2: one release too many. `Semaphore` grows by a place, silently; `BoundedSemaphore`
//! refuses with Python's `ValueError`.

use anyhow::{Result, bail};
use common::predict::{self, Expect};
use common::report;
use py_threading::sync::{BoundedSemaphore, Semaphore};

use crate::Cli;

pub fn run(cli: &Cli) -> Result<()> {
    let places = cli.places;
    report::section("2. One release too many: Semaphore grows, BoundedSemaphore refuses");
    report::say(
        "the bug: a code path that calls release() twice (an error handler and a finally, say)",
    );

    let guess = predict::ask(
        &cli.common,
        "extra-release",
        format!(
            "Semaphore({places}): acquire(), release(), then release() once more: how many \
             acquire(blocking=False) in a row succeed now?"
        ),
        Expect::Count,
    );
    let sem = Semaphore::new(places);
    sem.acquire();
    sem.release();
    sem.release(); // One too many: nobody holds a place.
    let value = sem.value();
    let fits = count_free(|| sem.try_acquire());
    common::event!("extra_release", { "kind": "Semaphore", "initial": places, "value": value, "error": null,
                "fits": fits }, "Semaphore({places}): acquire(), release(), release() once too often: no error, \
             and now value {value}: {fits} acquire(blocking=False) in a row succeed");

    guess.reveal(
        fits,
        format!(
            "a Semaphore is a bare counter: release() adds 1 without asking whether anyone held \
             a place, so it grew from {places} to {value}"
        ),
    );

    let bounded = BoundedSemaphore::new(places);
    bounded.acquire();
    bounded.release()?;
    let refused = bounded.release(); // One too many.
    let value = bounded.value();
    let fits = count_free(|| bounded.try_acquire());
    let Err(error) = refused else {
        bail!("BoundedSemaphore({places}) accepted a release with every place free");
    };
    common::event!("extra_release", { "kind": "BoundedSemaphore", "initial": places, "value": value,
                "error": error.to_string(), "fits": fits }, "BoundedSemaphore({places}): release() once too often -> {error}; the value stays \
             {value}, and {fits} acquire(blocking=False) succeed");
    report::say(
        "use BoundedSemaphore when every release answers an acquire: the extra release is a bug, \
         and it is caught where it happens instead of letting one more in for ever",
    );
    Ok(())
}

/// How many places can be taken now, one after the other without waiting.
fn count_free(mut try_acquire: impl FnMut() -> bool) -> usize {
    let mut n = 0;
    while try_acquire() {
        n += 1;
    }
    n
}
