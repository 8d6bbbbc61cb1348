//! Part 3: what a coroutine is (什么是协程): concurrency on one thread is *switching plus saving
//! state* (切换+保存状态). First a state machine written by hand, which can stop and resume; then
//! `async fn`, whose future *is* such a state machine, made by the compiler: its size is the
//! state it saves. Then the two kinds of switch: on a wait (IO: it helps) and in CPU work (a
//! yield: it only costs).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::predict;
use common::report;

use crate::mini::{Executor, yield_now};
use crate::{Cli, calls::countdown};

/// A countdown that can stop after each number and resume later: Python's
/// `def countdown(n): while n > 0: yield n; n -= 1`, with its saved state spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Countdown {
    /// Not started (a generator object before the first `next`).
    Start { n: u32 },
    /// Stopped after yielding `n` (the saved state: where it was, and its local).
    Yielded { n: u32 },
    /// Returned (`StopIteration`).
    Done,
}

impl Countdown {
    /// `next(gen)`: runs to the next `yield` and stops there, or finishes.
    pub fn resume(&mut self) -> Option<u32> {
        let next = match *self {
            Countdown::Start { n } => n,
            Countdown::Yielded { n } => n - 1,
            Countdown::Done => return None,
        };
        *self = if next > 0 { Countdown::Yielded { n: next } } else { Countdown::Done };
        (next > 0).then_some(next)
    }
}

async fn nothing_across_await() {
    yield_now().await;
}

async fn a_u64_across_await(x: u64) -> u64 {
    yield_now().await;
    x + 1
}

async fn a_buffer_across_await() -> u8 {
    let buffer = [7u8; 1024];
    yield_now().await;
    std::hint::black_box(&buffer)[1023]
}

async fn awaiting_the_buffer_one() -> u8 {
    a_buffer_across_await().await + 1
}

/// The futures whose size the part prints: (what lives across its `.await`, bytes).
pub fn future_sizes() -> Vec<(&'static str, usize)> {
    fn size<F: Future>(f: F) -> usize {
        std::mem::size_of_val(&f)
    }
    vec![
        ("async fn holding nothing across its await", size(nothing_across_await())),
        ("async fn holding a u64 across its await", size(a_u64_across_await(1))),
        ("async fn holding a 1 KiB buffer across its await", size(a_buffer_across_await())),
        ("async fn awaiting the one above (its state inside)", size(awaiting_the_buffer_one())),
    ]
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("3. A coroutine is a switch plus a saved state (切换+保存状态)");
    let mut generator = Countdown::Start { n: 3 };
    common::event!("generator", { "state": format!("{generator:?}") }, "gen = countdown(3): {generator:?}");
    while let Some(n) = generator.resume() {
        common::event!("generator", { "yielded": n, "state": format!("{generator:?}") }, "next(gen) -> {n}; saved state: {generator:?} (the caller may do anything else now)");
    }
    common::event!("generator", { "state": format!("{generator:?}") }, "next(gen) -> StopIteration; state {generator:?}");

    let question = "An async fn keeps a 1 KiB buffer across its .await: how many bytes is its \
                    future (its saved state, 保存状态)?";
    let guess = predict::ask(&cli.common, "future-bytes", question, predict::Expect::Count);
    let sizes = future_sizes();
    for &(what, bytes) in &sizes {
        common::event!("future_size", { "future": what, "bytes": bytes }, "size_of_val: {bytes:>5} bytes  {what}");
    }
    let why = "what lives across an .await is saved inside the future: the 1024 bytes, plus its \
               state's tag and padding";
    guess.reveal(sizes[2].1, why);
    report::say(
        "the compiler turns each async fn into such a state machine: an enum of the places it can \
         stop, holding what lives across each .await; its size is known before it runs (a \
         Python coroutine keeps a whole frame on the heap, and it grows with the locals: \
         sys.getsizeof gives 176 bytes for a generator with none, 976 with 100 locals, \
         CPython 3.11)",
    );

    // The two kinds of switch. On a wait: ten tasks that each wait (part 4 shows it) take one
    // wait in all. In CPU work: the same computation, with a switch after every step or none.
    let steps = cli.switch_steps;
    let plain = cpu_tasks(steps, false);
    let yielding = cpu_tasks(steps, true);
    common::event!("cpu_switch", { "steps": steps, "plain_ms": ms(plain), "yielding_ms": ms(yielding) }, "two CPU-bound tasks, {steps} steps each, on one thread: {:.1} ms run to the end, {:.1} ms \
             with a switch after every step: switching in CPU work only costs (两类切换: on IO it \
             helps, in computation it hurts)",
            ms(plain),
            ms(yielding));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Two tasks on the minimal executor, one thread, each `steps` small computations, switching
/// after each step or never.
fn cpu_tasks(steps: usize, switch: bool) -> Duration {
    let executor = Executor::new();
    for _ in 0..2 {
        executor.spawn(async move {
            for _ in 0..steps {
                std::hint::black_box(countdown(100));
                if switch {
                    yield_now().await;
                }
            }
        });
    }
    let began = Instant::now();
    executor.run(1);
    began.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_generator_yields_three_two_one_then_stops() {
        let mut g = Countdown::Start { n: 3 };
        let out: Vec<u32> = std::iter::from_fn(|| g.resume()).collect();
        assert_eq!(out, [3, 2, 1]);
        assert_eq!(g, Countdown::Done);
    }

    #[test]
    fn the_printed_sizes_are_size_of_val_and_the_buffer_lives_in_the_future() {
        let sizes = future_sizes();
        assert_eq!(sizes[0].1, std::mem::size_of_val(&nothing_across_await()));
        assert_eq!(sizes[2].1, std::mem::size_of_val(&a_buffer_across_await()));
        assert!(sizes[0].1 < 64);
        assert!(sizes[2].1 >= 1024);
        assert!(sizes[3].1 >= sizes[2].1);
    }
}
