//! Part 5, `explain`: who waits in each phase (网络传输中的两个阶段) for each model: Stevens'
//! figure as a table, with the time each phase took per request here, and the system calls.

#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::Result;

use common::predict;
use common::report;
use io_models::client::Spec;

use crate::compare::measure;
use crate::model::Model;
use crate::{Cli, ExplainArgs};

pub fn run(cli: &Cli, args: &ExplainArgs) -> Result<()> {
    report::section(
        "the two phases of a read: (1) waiting for the data, (2) copying it to the process",
    );
    report::say(
        "POSIX calls an operation synchronous when it blocks the caller until the IO is done: \
         in every model but io_uring the process is blocked in phase 2 (inside recv), so only \
         uring is asynchronous IO (异步IO); non-blocking IO is not asynchronous, it only \
         refuses to wait in phase 1",
    );
    let spec = Spec {
        port: 1,
        connections: 20,
        requests: args.requests,
        size: 64,
        varied: false,
        time_limit: Duration::from_secs(60),
        seed: 9,
        keep_open: false,
    };
    let mut out = format!(
        "{:<12} {:<44} {:<38} {:>9} {:>9} {:>9} {:>9}",
        "model",
        "phase 1: who waits",
        "phase 2: who waits",
        "wait µs",
        "copy µs",
        "both µs",
        "calls/req"
    );
    let question = "epoll (多路复用): how many system calls per echoed request?";
    let mut guess = Some(predict::ask(
        &cli.common,
        "epoll-calls",
        question,
        predict::Expect::About { within: 0.25 },
    ));
    for model in Model::ALL {
        let row = measure(model, &spec)?;
        let (one, two) = model.phases();
        let measured = if let Some(why) = &row.skipped {
            format!("skipped: {why}")
        } else if model == Model::Async {
            format!("{:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "uncounted")
        } else {
            format!(
                "{:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                row.wait_us, row.copy_us, row.both_us, row.syscalls_per_request
            )
        };
        common::event!("phases", { "model": model, "phase1": one, "phase2": two, "wait_us": row.wait_us,
                    "copy_us": row.copy_us, "both_us": row.both_us,
                    "syscalls_per_request": row.syscalls_per_request, "skipped": row.skipped }, "{model}: phase 1: {one}; phase 2: {two}");
        if model == Model::Epoll
            && let Some(guess) = guess.take()
        {
            let why = "a recv and a send per request; one epoll_wait is shared by every socket \
                       it returns ready";
            guess.reveal(row.syscalls_per_request, why);
        }
        out.push_str(&format!("\n{:<12} {one:<44} {two:<38} {measured}", model.name()));
    }
    report::plain(out);
    report::say(
        "wait µs: time per request the process spent waiting for readiness (blocked in the wait \
         call, or spinning on EAGAIN); copy µs: in recv once the data was there; both µs: in a \
         blocking recv, both phases at once; the per-request wait of a multiplexing model is \
         shared by every socket that one wait returned",
    );
    Ok(())
}
