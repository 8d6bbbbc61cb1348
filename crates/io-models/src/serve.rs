//! Part 1, `serve`: one server on 127.0.0.1 in the chosen model, until Ctrl-C or SIGTERM (the
//! signal watcher then ends the process, which closes every connection). Its first line is the
//! address; a `stats` line follows whenever the counters changed. What the model then does with
//! the listener is its own file's (`main.rs` hands it over: `serve_with`).

#![cfg(target_os = "linux")]

use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use io_models::client::process_cpu;

use crate::ServeArgs;
use crate::model::Model;
use crate::models;
use crate::server::{Stats, listen_localhost, shared_stats};

/// The listening socket and the counters, the address said, the stats thread started: all a
/// model needs to serve.
pub fn start(args: &ServeArgs) -> Result<(OwnedFd, &'static Stats)> {
    if args.model == Model::Uring
        && let Some(why) = models::uring::refused()
    {
        common::event!("skipped", { "model": "uring", "reason": why }, "the uring model is skipped: {why}");
        bail!("io_uring is refused here: {why}");
    }
    let (listener, port) = listen_localhost(args.port)?;
    let pid = std::process::id();
    common::event!("listening", { "address": format!("127.0.0.1:{port}"), "port": port, "model": args.model,
                "pid": pid }, "listening on 127.0.0.1:{port} (model {}, pid {pid}); try: nc 127.0.0.1 {port}",
            args.model);
    let stats = shared_stats()?;
    let every = Duration::from_millis(args.stats_ms);
    common::threads::named::spawn("stats", move || report_stats(stats, every))
        .context("starting the stats thread")?;
    Ok((listener, stats))
}

/// Every `every`, when something changed: the counters, per request, and the CPU used so far.
fn report_stats(stats: &'static Stats, every: Duration) {
    let mut last = stats.snapshot();
    loop {
        std::thread::sleep(every);
        let now = stats.snapshot();
        if now.requests == last.requests && now.accepted == last.accepted && now.open == last.open {
            continue;
        }
        last = now;
        let (user, sys) = process_cpu(std::process::id() as i32).unwrap_or_default();
        let cpu_us = (user + sys).as_secs_f64() * 1e6;
        let per = |v: u64| now.per_request(v);
        common::event!("stats", {
                "requests": now.requests, "syscalls": now.syscalls, "eagain": now.eagain,
                "wakeups": now.wakeups, "signals": now.signals, "accepted": now.accepted,
                "refused": now.refused, "open": now.open, "max_open": now.max_open,
                "reaped": now.reaped, "syscalls_per_request": per(now.syscalls),
                "wait_ns": now.wait_ns, "copy_ns": now.copy_ns, "both_ns": now.both_ns,
                "cpu_us": cpu_us,
            }, "stats: {} lines echoed, {:.2} system calls/line, {} EAGAIN, {} open ({} accepted, \
                 {} refused), CPU {:.0} ms",
                now.requests,
                per(now.syscalls),
                now.eagain,
                now.open,
                now.accepted,
                now.refused,
                cpu_us / 1000.0);
    }
}
