//! Part 2: connect and retry. A slow `server` thread sets the event when it is ready; a
//! `client` thread tries a few times, `event.wait(timeout)` each, and each returns `false`
//! while the server is not ready (the course's classic `conn_mysql` and `check_mysql`; not in
//! the notes).

use std::time::Instant;

use anyhow::{Result, bail};
use common::predict::{self, Expect};
use common::report;
use common::threads::named::spawn_scoped;
use py_threading::sync::Event;

use crate::{ATTEMPT_S, Cli, secs};

pub fn run(cli: &Cli) -> Result<()> {
    let timeout = cli.common.notes_sleep(ATTEMPT_S);
    let delay = cli.common.notes_sleep(cli.server_delay);
    report::section("2. Connect and retry: wait(timeout) returns False until the server is ready");
    report::say(format!(
        "ready = Event(); the server thread needs {} to start, then ready.set(); the client \
         tries {} time(s), ready.wait({}) each (the classic example's wait(0.5), scaled by --speed)",
        secs(delay),
        cli.tries,
        secs(timeout)
    ));
    let guess = predict::ask(
        &cli.common,
        "timed-out",
        format!(
            "the server needs {} to start; the client tries {} time(s), ready.wait({}) each: \
             how many of those waits return False (链接超时)?",
            secs(delay),
            cli.tries,
            secs(timeout)
        ),
        Expect::Count,
    );
    let ready = Event::new();
    let (connected, timed_out) = std::thread::scope(|s| -> Result<(bool, usize)> {
        let ready = &ready;
        spawn_scoped(s, "server", move || {
            common::event!("server_starting", { "delay_ms": delay.as_millis() as u64 }, "server: checking mysql, starting up...");
            std::thread::sleep(delay);
            common::event!("server_ready", {}, "server: ready: ready.set()");
            ready.set();
        })?;
        let client = spawn_scoped(s, "client", move || client(cli, ready))?;
        client.join().map_err(|_| anyhow::anyhow!("the client thread panicked"))
    })?;
    guess.reveal(
        timed_out,
        format!(
            "each wait({}) returns False after its whole timeout while the event is clear, and \
             True as soon as the server's set() comes",
            secs(timeout)
        ),
    );
    if !connected {
        bail!("the client never connected");
    }
    Ok(())
}

/// The client: `tries` timed waits, then (where Python would raise) one wait without a
/// timeout. `true` once connected, and how many timed waits returned `false`.
fn client(cli: &Cli, ready: &Event) -> (bool, usize) {
    let timeout = cli.common.notes_sleep(ATTEMPT_S);
    let began = Instant::now();
    for attempt in 1..=cli.tries {
        let started = Instant::now();
        let result = ready.wait_timeout(timeout);
        let waited = started.elapsed();
        common::event!("attempt", { "attempt": attempt, "result": result, "waited_ms": waited.as_millis() as u64,
                    "timeout_ms": timeout.as_millis() as u64 }, "<client> attempt {attempt} (第{attempt}次尝试链接): ready.wait({}) -> {} after {}",
                secs(timeout),
                if result { "True" } else { "False" },
                secs(waited));
        if result {
            common::event!("connected", { "attempts": attempt, "after_timeout_error": false,
                        "after_ms": began.elapsed().as_millis() as u64 }, "<client> connected (链接成功) on attempt {attempt}");
            return (true, attempt - 1);
        }
    }
    common::event!("timeout_error", { "attempts": cli.tries }, "TimeoutError: 链接超时 (connection timed out) after {} attempt(s): the classic \
             conn_mysql raises it here (Event.wait itself only returns False); this client \
             waits on, without a timeout: ready.wait()",
            cli.tries);
    let started = Instant::now();
    let result = ready.wait();
    common::event!("connected", { "attempts": cli.tries, "after_timeout_error": true, "result": result,
                "after_ms": began.elapsed().as_millis() as u64 }, "<client> connected: ready.wait() -> True, {} later (as soon as the server set it)",
            secs(started.elapsed()));
    (result, cli.tries)
}
