//! Part 5, the cost of a start (线程的开销远远小于进程): start+join of threads, fork children,
//! spawn children and fork-server children, measured here rather than asserted.

use anyhow::Result;
use common::report;
use common::startcost::{self, Starter};
use serde_json::{Value, json};

use crate::Cli;

pub fn run(cli: &Cli) -> Result<()> {
    report::section("5. the cost of a start: threads, fork, spawn and fork-server children");
    let (count, rounds) = (cli.count, cli.rounds);
    let measured = startcost::measure(Starter::ALL, count, rounds)?;
    let figure = |kind: Starter| {
        measured.iter().find(|(k, _)| *k == kind).map_or(f64::NAN, |(_, v)| startcost::median(v))
    };
    let thread = figure(Starter::Thread);
    let mut text = format!(
        "start+join of {count}, one after another; median of {rounds} round(s)\n\
         kind      µs per start  × a thread"
    );
    for &kind in Starter::ALL {
        let us = figure(kind);
        text.push_str(&format!("\n{:<9} {us:>12.1} {:>10.1}", kind.key(), us / thread));
    }
    let fork = figure(Starter::Fork);
    let spawn = figure(Starter::Spawn);
    let forkserver = figure(Starter::Forkserver);
    let rounds_json: serde_json::Map<String, Value> =
        measured.iter().map(|(k, v)| (k.key().to_string(), json!(v))).collect();
    report::event(
        "cost",
        json!({ "count": count, "rounds": rounds, "thread_us": thread, "fork_us": fork,
                "spawn_us": spawn, "forkserver_us": forkserver, "per_round_us": rounds_json }),
        text,
    );
    let verdict = if thread < fork && thread < spawn {
        format!(
            "measured here: a thread is {:.0}x cheaper than a fork child and {:.0}x cheaper than a \
             spawn child",
            fork / thread,
            spawn / thread
        )
    } else {
        "measured here, threads were not the cheapest this time (a busy machine?)".to_string()
    };
    report::say(format!(
        "{verdict}. The notes (线程的创建、切换和销毁开销远远小于进程): a thread needs a stack and a \
         kernel task; fork also copies the page tables; spawn also loads and starts the program \
         from main; a fork-server child is a fork of a small process that is already running \
         (plus a message each way). `make bench` puts these beside Python's."
    ));
    Ok(())
}
