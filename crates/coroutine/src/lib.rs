//! coroutine (the library part) — the two switch loops of part 5 that the bench times as well,
//! so that the figures in BENCH.md come from the very code the demo runs.

use std::time::Instant;

use anyhow::Result;
use corosensei::{Coroutine, CoroutineResult};

/// Nanoseconds per switch of `f`, which makes `switches` of them.
pub fn per_switch(switches: usize, f: impl FnOnce()) -> f64 {
    let began = Instant::now();
    f();
    began.elapsed().as_secs_f64() * 1e9 / switches.max(1) as f64
}

/// Greenlet-like: resume a stackful coroutine, which suspends back, `n` times (a round trip).
pub fn stackful_switch(n: usize) -> f64 {
    let mut coroutine = Coroutine::new(|yielder, mut input: u64| {
        loop {
            input = yielder.suspend(input.wrapping_add(1));
        }
    });
    per_switch(n, || {
        let mut x = 0u64;
        for _ in 0..n {
            // The coroutine never returns, so every resume ends in a yield.
            let CoroutineResult::Yield(y) = coroutine.resume(x);
            x = std::hint::black_box(y);
        }
    })
}

/// gevent-like: two tasks on a current-thread runtime, each yielding to the other `n` times.
pub fn event_loop_switch(n: usize) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    Ok(per_switch(2 * n, || {
        runtime.block_on(async {
            let a = tokio::spawn(async move {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
            });
            let b = tokio::spawn(async move {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
            });
            let _ = a.await;
            let _ = b.await;
        });
    }))
}
