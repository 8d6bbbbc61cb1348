//! Part 3: the convoy effect (David Beazley, bugs.python.org/issue7946; not in the notes): an
//! I/O thread answering tiny requests, alone and beside a CPU-bound thread, under the
//! simulated GIL and as plain Rust threads.

#![cfg(target_os = "linux")]

use anyhow::Result;
use common::predict;
use common::report;
use gil::echo::{self, Latencies};
use gil::sim::{Gil, Rule};
use serde_json::json;

use crate::{Cli, rule_text};

pub fn run(cli: &Cli) -> Result<()> {
    let rule = cli.rule();
    report::section("3. the convoy effect: an I/O thread beside a CPU-bound thread");
    report::say(format!(
        "The main thread sends {} one-byte requests on a socketpair, one at a time, {} µs apart, \
         to an I/O thread that echoes them; recv and send drop the GIL while they block, as \
         CPython's do. \
         Four cases: with the simulated GIL ({}) or plain Rust threads, the I/O thread alone or \
         beside a thread that only computes.",
        cli.round_trips,
        echo::THINK.as_micros(),
        rule_text(rule)
    ));
    let question = "Under the GIL, beside a thread that only computes: the I/O thread's 99th \
                    percentile round trip, in ms?";
    let guess =
        predict::ask(&cli.common, "convoy-p99", question, predict::Expect::About { within: 0.5 });
    let mut rows = Vec::new();
    for (gil_kind, with_cpu) in [
        ("simulated GIL", false),
        ("simulated GIL", true),
        ("plain threads", false),
        ("plain threads", true),
    ] {
        let gil = (gil_kind == "simulated GIL").then(|| Gil::new(rule));
        let l = echo::measure(gil.as_ref(), with_cpu, cli.round_trips, echo::THINK)?;
        let overlaps = gil.as_ref().map_or(0, |g| g.stats().overlaps);
        if overlaps != 0 {
            anyhow::bail!("the simulated GIL let two threads in at once {overlaps} times");
        }
        rows.push((gil_kind, with_cpu, l, gil.map(|g| g.stats())));
    }
    let label = |kind: &str, cpu: bool| {
        format!("{kind}, {}", if cpu { "+ CPU-bound thread" } else { "I/O thread alone" })
    };
    let mut table = format!(
        "  {:<36} {:>11} {:>11} {:>11} {:>14}",
        "case", "p50 µs", "p99 µs", "max µs", "round trips/s"
    );
    for (kind, cpu, l, _) in &rows {
        table.push_str(&format!(
            "\n  {:<36} {:>11.1} {:>11.1} {:>11.1} {:>14.0}",
            label(kind, *cpu),
            l.p50_us,
            l.p99_us,
            l.max_us,
            l.per_second
        ));
    }
    let data: Vec<_> = rows
        .iter()
        .map(|(kind, cpu, l, stats): &(&str, bool, Latencies, _)| {
            json!({ "gil": kind, "cpu_thread": cpu, "latency": l, "gil_stats": stats })
        })
        .collect();
    let interval_ms = match rule {
        Rule::SwitchInterval(d) => Some(d.as_secs_f64() * 1e3),
        Rule::CheckInterval(_) => None,
    };
    common::event!("convoy", {
            "rows": data, "switch_interval_ms": interval_ms, "round_trips": cli.round_trips,
            "think_us": echo::THINK.as_micros() as u64,
        }, "round-trip latency, measured now:");
    report::plain(table);
    let convoy = &rows[1].2;
    let plain = &rows[3].2;
    let reveal_why = match rule {
        Rule::SwitchInterval(_) => {
            "a request waits for the computing thread to drop the GIL: a switch interval or more"
        }
        Rule::CheckInterval(_) => {
            "the computing thread drops the GIL every few bytecodes: the wait is short"
        }
    };
    guess.reveal(convoy.p99_us / 1e3, reveal_why);
    let why = match rule {
        Rule::SwitchInterval(_) => {
            "every time the I/O thread comes back from recv or send, the CPU thread holds the \
             GIL, and the I/O thread must wait a whole switch interval before its request makes \
             it let go. Reference figures, not this run: CPython 3.11.7 on a shared 2-core \
             machine gave a p99 of 6.3-10.5 ms and about 100 times fewer round trips than alone \
             (BENCH.md, suite gil: p99 10.6 ms)"
        }
        Rule::CheckInterval(_) => {
            "under the rule before Python 3.2 the CPU thread drops the GIL every few bytecodes, \
             so the I/O thread gets it back within microseconds; the convoy came with the \
             switch interval of 3.2 (Beazley's bugs.python.org/issue7946, 2010, closed unfixed)"
        }
    };
    // Compared in this run's figures: "N times" only when it is clearly more.
    let times = convoy.p99_us / plain.p99_us.max(1e-3);
    let against = if times >= 1.5 {
        format!("{times:.0} times the plain threads' {}", micros(plain.p99_us))
    } else {
        format!("about the plain threads' {} ({times:.1} times)", micros(plain.p99_us))
    };
    report::say(format!(
        "With the simulated GIL and a CPU-bound thread the 99th percentile is {}, {against}: \
         {why}. Plain Rust threads have no GIL: the CPU thread runs on its own CPU (or the \
         kernel preempts it within a time slice), and the I/O thread answered in {} at the \
         median.",
        micros(convoy.p99_us),
        micros(plain.p50_us)
    ));
    Ok(())
}

/// `47 µs` or `10.0 ms`.
fn micros(us: f64) -> String {
    if us >= 1000.0 { format!("{:.1} ms", us / 1e3) } else { format!("{us:.0} µs") }
}
