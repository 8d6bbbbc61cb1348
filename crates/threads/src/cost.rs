//! Part 4: what a thread costs (线程的开销): seed 000's "创建、销毁、切换开销远远小于进程",
//! measured. Start+join of a thread, a fork child and a spawn child (`common::startcost`, the
//! same measurement as `fork-vs-spawn` and `make bench`), then a switch: a ping-pong of one
//! byte through two pipes, between two threads and between two processes. Each round trip is
//! two wake-ups of a task sleeping in `read`; between processes each also switches address
//! spaces.

use anyhow::{Context, Result, anyhow, bail};
use common::process::{Process, StartMethod};
use common::report;
use common::startcost::{self, Starter, median};
use common::threads::named;
use serde_json::json;
use threads::{ping, pong};

use crate::Cli;

/// Ping-pong with a partner thread of this process; µs per round trip.
pub fn round_trip_threads(n: usize) -> Result<f64> {
    let (mut a_read, mut a_write) = std::io::pipe()?;
    let (mut b_read, mut b_write) = std::io::pipe()?;
    let partner = named::spawn("pong-thread", move || pong(n + 1, &mut a_read, &mut b_write))?;
    let us = ping(n, &mut a_write, &mut b_read)?;
    partner.join().map_err(|_| anyhow!("pong-thread panicked"))?.context("pong-thread")?;
    Ok(us)
}

/// Ping-pong with a forked partner process; µs per round trip.
pub fn round_trip_processes(n: usize) -> Result<f64> {
    let (mut a_read, mut a_write) = std::io::pipe()?;
    let (mut b_read, mut b_write) = std::io::pipe()?;
    let mut partner = Process::from_fn("pong-process", move || {
        pong(n + 1, &mut a_read, &mut b_write)?;
        Ok(())
    })
    .start_method(StartMethod::Fork);
    partner.start()?;
    let us = ping(n, &mut a_write, &mut b_read)?;
    if partner.join()? != Some(0) {
        bail!("{partner}: the ping-pong partner failed");
    }
    Ok(us)
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("4. what a thread costs: start+join and switches, threads against processes");
    let (count, rounds, trips) = (cli.count, cli.rounds, cli.round_trips);
    let measured = startcost::measure(Starter::ALL, count, rounds)?;
    let start = |kind: Starter| {
        measured.iter().find(|(k, _)| *k == kind).map_or(f64::NAN, |(_, v)| median(v))
    };
    let (thread, fork, spawn) =
        (start(Starter::Thread), start(Starter::Fork), start(Starter::Spawn));
    let (mut by_threads, mut by_processes) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        by_threads.push(round_trip_threads(trips)?);
        by_processes.push(round_trip_processes(trips)?);
    }
    let (switch_t, switch_p) = (median(&by_threads), median(&by_processes));
    let text = format!(
        "start+join ({count} per round) and ping-pong ({trips} round trips per round); medians \
         of {rounds} round(s)\n\
         \x20 what                          µs    × a thread's\n\
         \x20 thread start+join      {thread:>10.1}  {:>8.1}\n\
         \x20 fork child start+join  {fork:>10.1}  {:>8.1}\n\
         \x20 spawn child start+join {spawn:>10.1}  {:>8.1}\n\
         \x20 round trip, 2 threads  {switch_t:>10.1}  {:>8.1}\n\
         \x20 round trip, 2 processes{switch_p:>10.1}  {:>8.1}",
        1.0,
        fork / thread,
        spawn / thread,
        1.0,
        switch_p / switch_t
    );
    report::event(
        "cost",
        json!({ "count": count, "rounds": rounds, "round_trips": trips,
                "thread_us": thread, "fork_us": fork, "spawn_us": spawn,
                "switch_threads_us": switch_t, "switch_processes_us": switch_p }),
        text,
    );
    let verdict = if thread < fork && thread < spawn {
        format!(
            "Measured here: starting and joining a thread is {:.0}x cheaper than a fork child and \
             {:.0}x cheaper than a spawn child",
            fork / thread,
            spawn / thread
        )
    } else {
        "Measured here, a thread was not the cheapest start this time (a busy machine?)".into()
    };
    report::say(format!(
        "{verdict}: a thread needs a stack and a kernel task, fork also \
         copies the page tables, spawn also loads the program and runs it from main. A switch \
         between threads of one process keeps the address space; between processes it changes \
         it. On a busy 2-core machine the round trips are noisy: the two sides often sit on \
         different cores, and then no switch is saved. `make bench` puts these beside Python's \
         threading and multiprocessing."
    ));
    Ok(())
}
