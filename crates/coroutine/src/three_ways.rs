//! Part 5: the notes' three ways to make a coroutine (如何实现协程, 三种), in Rust terms, and
//! what one switch costs in each:
//! - generator-like (Python's `yield`/`send`): a state machine stepped by hand;
//! - greenlet-like: stackful coroutines that switch explicitly (`corosensei`): each has its own
//!   stack, `resume` and `suspend` swap a few registers;
//! - gevent-like: an event loop that switches when a task would wait (tokio's current-thread
//!   runtime; here two tasks that `yield_now` to each other).

use anyhow::Result;
use common::report;
use coroutine::{event_loop_switch, per_switch, stackful_switch};

use crate::Cli;
use crate::switch::Countdown;

/// Generator-like: resume a hand-written state machine `n` times.
pub fn generator_switch(n: usize) -> f64 {
    per_switch(n, || {
        let mut g = Countdown::Start { n: n as u32 + 1 };
        for _ in 0..n {
            std::hint::black_box(g.resume());
        }
    })
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("5. Three ways to make a coroutine (如何实现协程), and what a switch costs");
    let n = cli.switches;
    let rows = [
        (
            "generator-like",
            "a state machine resumed by hand (Python's yield/send)",
            generator_switch(n),
        ),
        (
            "greenlet-like",
            "corosensei: its own stack, resume + suspend (greenlet.switch)",
            stackful_switch(n),
        ),
        (
            "gevent-like",
            "tokio current-thread, yield_now between two tasks (gevent, asyncio)",
            event_loop_switch(n)?,
        ),
    ];
    for (way, how, ns) in rows {
        common::event!("switch_cost", { "way": way, "ns": ns, "switches": n }, "{way:<15} {ns:>8.1} ns per switch   {how}");
    }
    report::say(
        "Python's figures, for reference, not this run (CPython 3.11.7 on a shared 2-core \
         machine; BENCH.md, suite coroutine, has them beside ours): asyncio.sleep(0) between two \
         tasks about 2.3 µs, greenlet.switch there and back about 500 ns (greenlet 3.5.6), a \
         generator's send about 50-70 ns (timeit)",
    );
    report::section("5, continued. Where coroutines pay (协程的应用场景)");
    report::say(
        "many connections that mostly wait, on one thread: `make demo-io-models ARGS='compare'` \
         runs an echo server as tokio tasks (the async model) beside a thread per connection, and \
         `io-models idle` holds thousands of idle connections with one thread",
    );
    Ok(())
}
