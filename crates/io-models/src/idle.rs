//! Part 4, `idle` (C10K, small): each model holds N idle connections (each answered one echo,
//! then silent): memory per connection, threads, and the CPU the server burns while nobody
//! talks. The open-file limit is raised to its hard limit first, and a limit too low for N is
//! said plainly.

#![cfg(target_os = "linux")]

use std::time::Duration;

use anyhow::Result;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde_json::json;

use common::predict;
use common::report;
use io_models::client::{self, Spec};

use crate::child::{ServerChild, measure, pss_kib};
use crate::model::Model;
use crate::models::uring;
use crate::server::Limits;
use crate::{Cli, IdleArgs};

/// Descriptors a process needs beside its connections (standard streams, listener, epoll...).
const SPARE_FDS: u64 = 64;

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    model: Model,
    skipped: Option<String>,
    held: usize,
    refused: usize,
    refusal: Option<String>,
    tasks: u64,
    pss_kib_per_conn: f64,
    idle_cpu_ms: f64,
}

pub fn run(cli: &Cli, args: &IdleArgs) -> Result<()> {
    let n = args.connections;
    raise_fd_limit(n as u64 + SPARE_FDS)?;
    let models: Vec<Model> = if args.models.is_empty() {
        Model::ALL.into_iter().filter(|m| !matches!(m, Model::Blocking | Model::Fork)).collect()
    } else {
        args.models.clone()
    };
    report::section(format!(
        "idle: {n} connections held by each model (one echo each, then silence for {} ms)",
        args.quiet_ms
    ));
    let threads_asked = models.contains(&Model::Threads).then(|| {
        let question = format!(
            "the threads model (a thread per client) holds {n} idle connections: how many \
             threads has the server then?"
        );
        predict::ask(&cli.common, "idle-threads", question, predict::Expect::Count)
    });
    let mut rows = Vec::new();
    for model in models {
        let row = hold(cli, model, n, Duration::from_millis(args.quiet_ms))?;
        let text = match &row.skipped {
            Some(why) => format!("{model}: skipped: {why}"),
            None => format!(
                "{model}: {} connections held{}, {} threads, {:.1} KiB of user-space memory (PSS) per \
                 connection, {:.0} ms CPU \
                 in {} ms of silence",
                row.held,
                row.refusal
                    .as_ref()
                    .map(|r| format!(" ({} refused: {r})", row.refused))
                    .unwrap_or_default(),
                row.tasks,
                row.pss_kib_per_conn,
                row.idle_cpu_ms,
                args.quiet_ms
            ),
        };
        report::event("idle", json!(row), text);
        rows.push(row);
    }
    if let (Some(guess), Some(t)) =
        (threads_asked, rows.iter().find(|r| r.model == Model::Threads && r.skipped.is_none()))
    {
        let why = format!(
            "a conn-N thread for each of the {} connections held, asleep in recv, and {} of the \
             server's own",
            t.held,
            t.tasks.saturating_sub(t.held as u64)
        );
        guess.reveal(t.tasks, why);
    }
    report::plain(table(&rows, args.quiet_ms));
    report::say(
        "a connection costs what the server keeps for it across the wait: a thread's stack \
         (threads), a task and its buffer (async), the buffer its pending recv will fill \
         (uring), or a table slot (select, poll, epoll); only nonblocking burns CPU while nobody \
         talks, and select cannot watch descriptors from 1024 up (FD_SETSIZE)",
    );
    // What the PSS column leaves out, in figures where the kernel fixes them.
    let kernel_stack_kib = if cfg!(target_arch = "x86_64") { Some(16) } else { None };
    let extra = match (kernel_stack_kib, rows.iter().find(|r| r.model == Model::Threads)) {
        (Some(k), Some(t)) if t.skipped.is_none() && t.held > 0 => format!(
            ": the threads model's {} threads add {} KiB of kernel stacks, {:.1} KiB per \
             connection",
            t.tasks,
            t.tasks * k,
            (t.tasks * k) as f64 / t.held as f64
        ),
        _ => String::new(),
    };
    report::say(format!(
        "PSS KiB/conn is the server's user-space memory (PSS, /proc/PID/smaps_rollup) only. \
         The kernel's memory is not in it: each thread's kernel stack (16 KiB on x86-64, \
         THREAD_SIZE){extra}; each socket's structures, and its buffers while data waits in \
         them (idle sockets hold almost none)"
    ));
    Ok(())
}

fn hold(cli: &Cli, model: Model, n: usize, quiet: Duration) -> Result<Row> {
    let mut row = Row {
        model,
        skipped: None,
        held: 0,
        refused: 0,
        refusal: None,
        tasks: 0,
        pss_kib_per_conn: 0.0,
        idle_cpu_ms: 0.0,
    };
    if model == Model::Uring
        && let Some(why) = uring::refused()
    {
        row.skipped = Some(why);
        return Ok(row);
    }
    if model == Model::Blocking {
        row.skipped = Some("it holds one client at a time".into());
        return Ok(row);
    }
    let limits = Limits { max_connections: n + 16, max_line: 1024, idle: Duration::from_secs(600) };
    let child = ServerChild::start(model, limits)?;
    // The server's memory before any client: what it costs empty.
    let spec = Spec {
        port: child.port,
        connections: 1,
        requests: 1,
        size: 64,
        varied: false,
        time_limit: Duration::from_secs(120),
        seed: 7,
        keep_open: false,
    };
    // One echo first, so the server has set up what it needs (its runtime, its ring).
    let _ = client::run(&spec)?;
    child.wait_all_closed(Duration::from_secs(2));
    let before = pss_kib(child.pid).unwrap_or(0);
    let report = client::run(&Spec { connections: n, keep_open: true, ..spec })?;
    row.held = report.kept.len();
    let refused: Vec<_> = report.ended.iter().filter(|e| e.refused).collect();
    row.refused = refused.len();
    row.refusal = refused.first().map(|e| e.why.clone());
    let (tasks, pss) = measure(child.pid, model == Model::Fork, true);
    row.tasks = tasks;
    row.pss_kib_per_conn = pss.unwrap_or(0).saturating_sub(before) as f64 / row.held.max(1) as f64;
    let (u0, s0) = child.cpu();
    cli.common.hold_threads(
        &format!("{} idle connections held by the {model} server", row.held),
        child.pid,
    );
    std::thread::sleep(quiet);
    let (u1, s1) = child.cpu();
    row.idle_cpu_ms = ((u1 - u0) + (s1 - s0)).as_secs_f64() * 1000.0;
    drop(report.kept);
    child.stop()?;
    Ok(row)
}

fn table(rows: &[Row], quiet_ms: u64) -> String {
    let mut out = format!(
        "{:<12} {:>6} {:>8} {:>8} {:>13} {:>14}",
        "model",
        "held",
        "refused",
        "threads",
        "PSS KiB/conn",
        format!("CPU ms/{quiet_ms}ms")
    );
    for r in rows {
        if let Some(why) = &r.skipped {
            out.push_str(&format!("\n{:<12} skipped: {why}", r.model.name()));
            continue;
        }
        out.push_str(&format!(
            "\n{:<12} {:>6} {:>8} {:>8} {:>13.1} {:>14.0}",
            r.model.name(),
            r.held,
            r.refused,
            r.tasks,
            r.pss_kib_per_conn,
            r.idle_cpu_ms
        ));
    }
    out
}

/// Raises the soft open-file limit to the hard one where `need` needs it (children inherit
/// it); says plainly, and refuses the flag, when the hard limit is too low.
fn raise_fd_limit(need: u64) -> Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(common::demo::bad_input(format!(
            "--connections needs {need} open files per process, and the hard limit is {hard} \
             (ulimit -Hn): ask for at most {} connections",
            hard.saturating_sub(SPARE_FDS)
        )));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    common::event!("fd_limit", { "soft": soft, "raised_to": hard }, "raised the open-file limit from {soft} to {hard} (the hard limit) for {need} descriptors");
    Ok(())
}
