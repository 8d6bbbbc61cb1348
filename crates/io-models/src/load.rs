//! Part 2, `load`: the load client against a server on 127.0.0.1:PORT (always 127.0.0.1: there
//! is no host flag). It checks every echoed byte and reports requests/s, latency, its own CPU per
//! request and, when it can read the server in `/proc`, the server's.

#![cfg(target_os = "linux")]

use anyhow::{Result, bail};

use io_models::client::{self, Report, listener_pid, process_cpu};

use crate::LoadArgs;

pub fn run(args: &LoadArgs) -> Result<()> {
    let spec = args.spec.spec(args.port);
    spec.check().map_err(|e| common::demo::bad_input(format!("{e:#}")))?;
    let server = listener_pid(args.port);
    let cpu_before = server.and_then(process_cpu);
    common::event!("load_started", { "port": args.port, "connections": spec.connections, "requests": spec.requests,
                "size": spec.size, "server_pid": server }, "load: {} connections × {} requests × {} bytes against 127.0.0.1:{}{}",
            spec.connections,
            spec.requests,
            spec.size,
            args.port,
            server.map(|p| format!(" (server pid {p})")).unwrap_or_default());
    let result = client::run(&spec)?;
    let server_cpu = match (server, cpu_before) {
        (Some(pid), Some((u0, s0))) => process_cpu(pid).map(|(u1, s1)| (u1 - u0, s1 - s0)),
        _ => None,
    };
    print_report(&result, server_cpu);
    if result.mismatches > 0 {
        bail!("{} connection(s) got bytes other than their echo", result.mismatches);
    }
    if result.timed_out {
        bail!(
            "the time limit passed with {} of {} round trips done",
            result.completed,
            result.expected
        );
    }
    Ok(())
}

/// The `load` event: what the client saw, and the server's CPU per request when known.
pub fn print_report(r: &Report, server_cpu: Option<(std::time::Duration, std::time::Duration)>) {
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / r.completed.max(1) as f64;
    let server = server_cpu.map(|(u, s)| (per(u), per(s)));
    let refused: Vec<&str> = r.ended.iter().filter(|e| e.refused).map(|e| e.why.as_str()).collect();
    common::event!("load", {
        "completed": r.completed, "expected": r.expected, "mismatches": r.mismatches,
        "requests_per_sec": r.requests_per_sec(), "p50_us": r.latency.p50_us,
        "p99_us": r.latency.p99_us, "max_us": r.latency.max_us,
        "client_cpu_us_per_request": r.client_cpu_us_per_request(),
        "server_cpu_us_per_request": server.map(|(u, s)| u + s),
        "server_user_us_per_request": server.map(|(u, _)| u),
        "server_sys_us_per_request": server.map(|(_, s)| s),
        "ended": r.ended, "timed_out": r.timed_out, "elapsed_ms": r.elapsed.as_millis() as u64,
    }, "{} of {} round trips in {:.2}s: {:.0} requests/s, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; \
         client CPU {:.1} µs/request{}{}{}",
        r.completed,
        r.expected,
        r.elapsed.as_secs_f64(),
        r.requests_per_sec(),
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.max_us,
        r.client_cpu_us_per_request(),
        server
            .map(|(u, s)| format!(
                ", server CPU {:.1} µs/request ({u:.1} user + {s:.1} sys)",
                u + s
            ))
            .unwrap_or_else(|| ", server CPU unknown (not visible in /proc)".into()),
        if refused.is_empty() {
            String::new()
        } else {
            format!("; {} refused: {}", refused.len(), refused[0])
        },
        if r.mismatches > 0 {
            format!("; {} WRONG ECHOES", r.mismatches)
        } else {
            String::new()
        });
}
