//! Part 3, `compare` (the tour): every model in turn as a child process, driven by the same
//! load client with the same load; then one table and the lessons in words.

#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use common::predict;
use common::report;
use io_models::client::{self, Spec};

use crate::child::{Sampler, ServerChild};
use crate::model::Model;
use crate::models::uring;
use crate::server::{Limits, Snapshot};
use crate::{Cli, CompareArgs};

/// One model's figures under load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub model: Model,
    /// Why the model did not run, if it did not.
    pub skipped: Option<String>,
    pub completed: u64,
    pub expected: u64,
    pub all_good: bool,
    pub requests_per_sec: f64,
    pub p99_us: f64,
    /// The slowest round trip, µs.
    pub max_us: f64,
    pub server_user_us: f64,
    pub server_sys_us: f64,
    pub syscalls_per_request: f64,
    pub eagain_per_request: f64,
    pub wakeups_per_request: f64,
    pub signals_per_request: f64,
    /// Phase 1 as the process sees it, µs per request (waiting or spinning).
    pub wait_us: f64,
    /// Phase 2 in its own call, µs per request.
    pub copy_us: f64,
    /// Both phases in one blocking call, µs per request.
    pub both_us: f64,
    /// The most threads (and child processes' threads) at once.
    pub tasks: u64,
    /// The most connections the server had open at once.
    pub max_open: u64,
    pub pss_kib: u64,
    /// Clients the server refused (their error line).
    pub refused: Vec<String>,
}

impl Row {
    pub fn server_us(&self) -> f64 {
        self.server_user_us + self.server_sys_us
    }

    fn skipped(model: Model, why: String) -> Row {
        Row {
            model,
            skipped: Some(why),
            completed: 0,
            expected: 0,
            all_good: false,
            requests_per_sec: 0.0,
            p99_us: 0.0,
            max_us: 0.0,
            server_user_us: 0.0,
            server_sys_us: 0.0,
            syscalls_per_request: 0.0,
            eagain_per_request: 0.0,
            wakeups_per_request: 0.0,
            signals_per_request: 0.0,
            wait_us: 0.0,
            copy_us: 0.0,
            both_us: 0.0,
            tasks: 0,
            max_open: 0,
            pss_kib: 0,
            refused: Vec::new(),
        }
    }
}

/// The bounds of a measured server: room for every client of the load.
pub fn limits_for(connections: usize) -> Limits {
    Limits {
        max_connections: connections + 16,
        max_line: client::MAX_SIZE + 1,
        idle: Duration::from_secs(60),
    }
}

/// Runs `model` as a child, drives it with `spec` (its port filled in), and measures.
pub fn measure(model: Model, spec: &Spec) -> Result<Row> {
    if model == Model::Uring
        && let Some(why) = uring::refused()
    {
        return Ok(Row::skipped(model, why));
    }
    let child = ServerChild::start(model, limits_for(spec.connections))?;
    let before: Snapshot = child.stats.snapshot();
    let (u0, s0) = child.cpu();
    let sampler = Sampler::start(child.pid, model == Model::Fork)?;
    let result = client::run(&Spec { port: child.port, ..spec.clone() });
    child.wait_all_closed(Duration::from_secs(3));
    let peak = sampler.finish();
    let (u1, s1) = child.cpu();
    let stats = child.stats.snapshot().since(&before);
    child.stop()?;
    let result = result?;
    let n = result.completed.max(1) as f64;
    let per = |v: u64| v as f64 / n;
    Ok(Row {
        model,
        skipped: None,
        completed: result.completed,
        expected: result.expected,
        all_good: result.all_good(),
        requests_per_sec: result.requests_per_sec(),
        p99_us: result.latency.p99_us,
        max_us: result.latency.max_us,
        server_user_us: (u1 - u0).as_secs_f64() * 1e6 / n,
        server_sys_us: (s1 - s0).as_secs_f64() * 1e6 / n,
        syscalls_per_request: per(stats.syscalls),
        eagain_per_request: per(stats.eagain),
        wakeups_per_request: per(stats.wakeups),
        signals_per_request: per(stats.signals),
        wait_us: per(stats.wait_ns) / 1000.0,
        copy_us: per(stats.copy_ns) / 1000.0,
        both_us: per(stats.both_ns) / 1000.0,
        tasks: peak.tasks,
        max_open: stats.max_open,
        pss_kib: peak.pss_kib,
        refused: result.ended.iter().filter(|e| e.refused).map(|e| e.why.clone()).collect(),
    })
}

pub fn run(cli: &Cli, args: &CompareArgs) -> Result<()> {
    let models: Vec<Model> =
        if args.models.is_empty() { Model::ALL.to_vec() } else { args.models.clone() };
    let spec = args.spec.spec(1);
    spec.check().map_err(|e| common::demo::bad_input(format!("{e:#}")))?;
    report::section(format!(
        "compare: {} connections × {} requests × {} bytes, each model in turn (client and server \
         share this machine's CPUs)",
        spec.connections, spec.requests, spec.size
    ));
    let served = models.contains(&Model::Blocking).then(|| {
        let question = format!(
            "blocking (阻塞IO), {} clients at once: is a second client served before the first \
             leaves?",
            spec.connections
        );
        predict::ask(
            &cli.common,
            "blocking-second",
            question,
            predict::Expect::Choice(&["yes", "no"]),
        )
    });
    let calls = models.contains(&Model::Epoll).then(|| {
        let question = "epoll (多路复用): how many system calls per echoed request?";
        predict::ask(&cli.common, "epoll-calls", question, predict::Expect::About { within: 0.25 })
    });
    let mut rows = Vec::new();
    for model in models {
        let row = measure(model, &spec)?;
        report_row(&row);
        rows.push(row);
    }
    let get = |m: Model| rows.iter().find(|r| r.model == m && r.skipped.is_none());
    if let (Some(guess), Some(b)) = (served, get(Model::Blocking)) {
        let why = format!(
            "the blocking server had at most {} connection(s) open: it accepts the next client \
             only after the one it serves has left; the others wait in the listen queue",
            b.max_open
        );
        guess.reveal(if b.max_open > 1 { "yes" } else { "no" }, why);
    }
    if let (Some(guess), Some(e)) = (calls, get(Model::Epoll)) {
        let why = "a recv and a send per request; one epoll_wait is shared by every socket it \
                   returns ready";
        guess.reveal(e.syscalls_per_request, why);
    }
    report::plain(table(&rows));
    lessons(&rows, spec.connections);
    if let Some(bad) = rows.iter().find(|r| r.skipped.is_none() && !r.all_good) {
        anyhow::bail!(
            "the {} model completed {} of {} round trips with every byte right",
            bad.model,
            bad.completed,
            bad.expected
        );
    }
    Ok(())
}

fn report_row(row: &Row) {
    let text = match &row.skipped {
        Some(why) => format!("{}: skipped: {why}", row.model),
        None => format!(
            "{}: {:.0} requests/s, p99 {:.0} µs, server CPU {:.1} µs/request, system calls {}, \
             {} at most{}",
            row.model,
            row.requests_per_sec,
            row.p99_us,
            row.server_us(),
            if row.model == Model::Async {
                "not counted (tokio makes its own; make bench counts them with strace)".to_string()
            } else {
                format!("{:.2} per request", row.syscalls_per_request)
            },
            if row.model == Model::Fork {
                format!("{} processes (the server and a child per client)", row.tasks)
            } else {
                format!("{} threads", row.tasks)
            },
            if row.all_good { "" } else { "; NOT EVERY ECHO WAS RIGHT" }
        ),
    };
    report::event("model", json!(row), text);
}

/// `model  req/s  p99  server µs/req  syscalls/req  threads  PSS`, aligned.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:>8} {:>9} {:>14} {:>13} {:>8} {:>9}",
        "model", "req/s", "p99 µs", "server µs/req", "syscalls/req", "tasks", "PSS KiB"
    );
    for r in rows {
        if let Some(why) = &r.skipped {
            out.push_str(&format!("\n{:<12} skipped: {why}", r.model.name()));
            continue;
        }
        // tokio makes the async model's system calls itself: they are not counted here
        // (`make bench` counts them with strace).
        let calls = if r.model == Model::Async {
            "not counted".to_string()
        } else {
            format!("{:.2}", r.syscalls_per_request)
        };
        out.push_str(&format!(
            "\n{:<12} {:>8.0} {:>9.1} {:>14.1} {:>13} {:>8} {:>9}",
            r.model.name(),
            r.requests_per_sec,
            r.p99_us,
            r.server_us(),
            calls,
            r.tasks,
            r.pss_kib
        ));
    }
    out.push_str(
        "\ntasks: the most threads at once (for fork: processes, the server and its children); \
         async's system calls are tokio's own, not counted here",
    );
    out
}

fn lessons(rows: &[Row], connections: usize) {
    let get = |m: Model| rows.iter().find(|r| r.model == m && r.skipped.is_none());
    if let Some(b) = get(Model::Blocking) {
        // Only a connection's first request waits in the listen queue: the p99 sees that wait
        // only when first requests are at least one in a hundred.
        let per_connection = b.expected / connections.max(1) as u64;
        let p99 = if per_connection > 100 {
            format!(
                "Its p99 ({:.0} µs) is no sign of speed: only a connection's first request waits \
                 in the listen queue, one request in {per_connection}, fewer than one in a \
                 hundred, so the 99th percentile leaves that wait out; the slowest request took \
                 {:.0} µs",
                b.p99_us, b.max_us
            )
        } else {
            format!(
                "A connection's first request waits in the listen queue, one request in \
                 {per_connection}: enough for the p99 ({:.0} µs) to hold that wait",
                b.p99_us
            )
        };
        report::say(format!(
            "blocking served its clients one after another ({:.0} requests/s): each waited in the \
             listen queue until the one before it left. {p99}",
            b.requests_per_sec,
        ));
    }
    if let Some(t) = get(Model::Threads) {
        report::say(format!(
            "threads: at most {} threads seen at once (sampled) for {connections} clients: one \
             thread per client while it is served, plus the accepting one",
            t.tasks
        ));
    }
    if let Some(n) = get(Model::Nonblocking) {
        report::say(format!(
            "nonblocking: {:.1} EAGAIN answers per request: it asks every socket again and again, \
             and burns a CPU even when nobody talks (see idle)",
            n.eagain_per_request
        ));
    }
    if let (Some(e), Some(u)) = (get(Model::Epoll), get(Model::Uring)) {
        report::say(format!(
            "epoll made {:.2} system calls per request (recv + send, the wait shared by many); \
             uring {:.2}: one io_uring_enter submits a batch and collects many completions \
             (partly this server's choice: each enter waits for up to half the connections' \
             completions, and on Linux 6.12+ up to 50 µs after the first)",
            e.syscalls_per_request, u.syscalls_per_request
        ));
    }
    report::say(
        "requests/s is capped by the load client, which shares the same CPUs: compare the server \
         CPU per request, and the system calls per request (减少IO操作: fewer trips into the kernel)",
    );
    // The server's CPU time comes from /proc in clock ticks: say how coarse that makes it.
    if let Some(r) = rows.iter().find(|r| r.skipped.is_none() && r.completed > 0) {
        let tick_us = common::ps::ticks_to_duration(1).as_secs_f64() * 1e6;
        report::say(format!(
            "server CPU is counted in clock ticks ({:.0} ms each, /proc/PID/stat): over {} \
             requests one tick is {:.2} µs per request, so rows that differ by that much or \
             less are equal within the measure (more --requests make it finer)",
            tick_us / 1e3,
            r.completed,
            tick_us / r.completed as f64
        ));
    }
}
