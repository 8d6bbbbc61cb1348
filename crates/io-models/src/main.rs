//! io-models — 网络IO模型: a line-echo server in every IO model, a load client, the two phases
//! of a network read made visible, all side by side on this machine's kernel.
//!
//! A read from the network has two phases (网络传输中的两个阶段, Stevens' UNP §6.2): (1) waiting
//! for the data to arrive, (2) copying it from the kernel into the process. The models differ in
//! who waits in each phase, and that decides how many clients one thread can serve and what it
//! costs. The notes' goal, "让服务器能够支持高并发+高性能", and their §多道技术 ("the CPU moves
//! on when a program waits for IO"; "最核心的优化就是减少IO操作") are measured here: system calls
//! per request, CPU per request, threads and memory per connection.
//!
//! The models (`--model`): `blocking` (阻塞IO, one client at a time), `threads` and `fork` (a
//! thread or a process per client: socketserver's ThreadingTCPServer and ForkingTCPServer),
//! `nonblocking` (非阻塞IO, a busy loop on EAGAIN), `select`, `poll`, `epoll` (多路复用),
//! `signal` (SIGIO, Stevens' fifth model), `async` (tokio's current-thread runtime: coroutines
//! serving sockets) and `uring` (io_uring, 异步IO: the kernel does both phases). Each model's
//! system calls are in its own file (`src/models/`), through `nix`; `serve_with` below hands
//! each its listener.
//!
//! Subcommands:
//! 1. `serve --model M [--port P]`: one server on 127.0.0.1 (port 0 by default: the kernel picks
//!    one), until Ctrl-C. Its first line gives the address; `nc 127.0.0.1 PORT` talks to it.
//!    Bounds: `--max-connections`, `--max-line`, `--idle-ms`; past one, that client gets one
//!    `error: ...` line and is closed, and nobody else notices.
//! 2. `load --port P`: the load client (`src/client.rs`, the crate's library: one thread, epoll;
//!    always 127.0.0.1, it has no host flag): checks every echoed byte, prints requests/s,
//!    p50/p99/max latency, its own CPU per request and the server's (found through
//!    `/proc/net/tcp`).
//! 3. `compare` (the tour): every model in turn as a child process, driven by the load client;
//!    one table: requests/s, p99, server CPU per request, system calls per request, threads,
//!    memory.
//! 4. `idle --connections N` (C10K, small): each model holds N idle connections: memory per
//!    connection, threads, CPU while nobody talks.
//! 5. `explain`: who waits in each phase for each model (Stevens' figure), with the phase times
//!    and system calls measured here.
//!
//! **What to watch for**: `blocking` accepts the second client only after the first leaves;
//! `threads` has one `conn-N` thread per client in `ps -L`; `fork` has one `conn-N` child per
//! client, reaped when it ends (no `Z` lingers); `nonblocking` burns a CPU (`R`, 100% in `top`)
//! with nobody talking, every other model sleeps (`S`; wchan `inet_csk_accept` for a blocking
//! accept, `do_epoll_wait` for epoll and async, `poll_schedule_timeout` for select and poll,
//! `do_sigtimedwait` for signal, `io_cqring_wait` for uring); `epoll` makes 2 system calls per
//! request, `uring` a small fraction of one.
//!
//! **Run it**:
//! ```text
//! make demo-io-models                                  # the tour: compare
//! make demo-io-models ARGS='serve --model epoll'       # a server; in a second terminal:
//! nc 127.0.0.1 PORT                                    # type lines, they come back
//! make demo-io-models ARGS='load --port PORT'          # or drive it
//! ps -L -o pid,lwp,stat,wchan:20,psr,comm -p PID       # its threads (threads model: conn-N)
//! make demo-io-models ARGS='idle --connections 2000 --hold 10'
//! ```
//!
//! Expected output of `compare` (abridged; one run of the release build on 2 busy shared
//! cores, figures move a lot from run to run):
//! ```text
//! model           req/s    p99 µs  server µs/req  syscalls/req    tasks   PSS KiB
//! blocking        49568      37.6            9.0          2.01        1       552
//! threads         22181    3854.7           16.0          2.01       21      1412
//! fork            36371    2421.0           15.0          2.04       21      3519
//! nonblocking     24219    4175.5           25.0         20.31        1       774
//! epoll           57532    1249.2            7.0          2.16        1       758
//! signal          42119    2274.7            8.0          3.09        1       773
//! async           66556     401.9            6.0   not counted        1      1243
//! uring           64279     416.4            7.0          0.14        1      1024
//!   2.842s [ 22721 io-models] nonblocking: 18.3 EAGAIN answers per request: it asks every
//!                             socket again and again, and burns a CPU even when nobody talks
//! ```
//!
//! Platform notes: Linux only (epoll, signal-driven IO with `F_SETOWN_EX`, io_uring, `/proc`).
//! io_uring needs kernel 5.11 or later and is often refused in containers (`EPERM`): the
//! `uring` model then says why and is skipped. Every server binds 127.0.0.1 only, and the load
//! client only connects to 127.0.0.1.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]
// Elsewhere `main` only says the demo needs Linux, which leaves the rest unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

// Each part is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod child;
mod compare;
mod explain;
mod idle;
mod load;
mod model;
mod models;
mod serve;
mod server;

use clap::{Args, Parser, Subcommand};
use common::cli::{CommonArgs, count_in};

use crate::model::Model;

/// Connections one server accepts at once (`--max-connections`), by default and at most.
const MAX_CONNECTIONS: usize = 512;
const MAX_CONNECTIONS_CAP: usize = 10_000;
/// The longest line, `\n` included (`--max-line`), by default and at most.
const MAX_LINE: usize = 16 * 1024;
const MAX_LINE_CAP: usize = 1024 * 1024;
/// How long a silent client is kept (`--idle-ms`), by default and at most.
const IDLE_MS: u64 = 30_000;
const IDLE_MS_CAP: u64 = 3_600_000;
/// The load client's caps (`io_models::client`, Linux only), for the flags' parsers.
const LOAD_MAX_CONNECTIONS: usize = 10_000;
const LOAD_MAX_REQUESTS: usize = 1_000_000;
const LOAD_MAX_SIZE: usize = 65_536;
const LOAD_MAX_SECONDS: u64 = 600;
#[cfg(target_os = "linux")]
const _: () = {
    use io_models::client;
    assert!(
        LOAD_MAX_CONNECTIONS == client::MAX_CONNECTIONS
            && LOAD_MAX_REQUESTS == client::MAX_REQUESTS
    );
    assert!(LOAD_MAX_SIZE == client::MAX_SIZE && LOAD_MAX_SECONDS == client::MAX_SECONDS);
};

/// io-models: 网络IO模型 — an echo server in every IO model (blocking, threads, fork,
/// nonblocking, select, poll, epoll, signal, async, io_uring), a load client, the two phases.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// 1. One echo server on 127.0.0.1 in the chosen model, until Ctrl-C
    Serve(ServeArgs),
    /// 2. The load client: connections × requests against 127.0.0.1:PORT, every byte checked
    Load(LoadArgs),
    /// 3. Every model in turn, driven by the load client: one table (the tour)
    Compare(CompareArgs),
    /// 4. N idle connections held by each model: memory, threads, CPU while idle (C10K)
    Idle(IdleArgs),
    /// 5. Who waits in each phase, for each model, with the figures measured here
    Explain(ExplainArgs),
}

/// The bounds a client cannot exceed.
#[derive(Debug, Clone, Args)]
struct LimitArgs {
    /// Connections open at once; the next client gets an error line (at most 10000)
    #[arg(long, value_name = "N", default_value_t = MAX_CONNECTIONS,
          value_parser = count_in(1..=MAX_CONNECTIONS_CAP))]
    max_connections: usize,

    /// Longest line in bytes, newline included; a longer one gets an error line (at most 1048576)
    #[arg(long, value_name = "BYTES", default_value_t = MAX_LINE,
          value_parser = count_in(1..=MAX_LINE_CAP))]
    max_line: usize,

    /// A client silent this many milliseconds gets an error line and is closed (at most 3600000)
    #[arg(long, value_name = "MS", default_value_t = IDLE_MS,
          value_parser = clap::value_parser!(u64).range(1..=IDLE_MS_CAP))]
    idle_ms: u64,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// The IO model
    #[arg(long, value_enum)]
    model: Model,

    /// Port on 127.0.0.1 (0: the kernel picks a free one)
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    port: u16,

    #[command(flatten)]
    limits: LimitArgs,

    /// Milliseconds between two `stats` lines (printed only when something changed)
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    stats_ms: u64,
}

#[derive(Debug, Clone, Args)]
struct LoadSpecArgs {
    /// Connections driven at once (at most 10000)
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = count_in(1..=LOAD_MAX_CONNECTIONS))]
    connections: usize,

    /// Round trips on each connection (at most 1000000; connections × requests at most 5000000)
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = count_in(1..=LOAD_MAX_REQUESTS))]
    requests: usize,

    /// Bytes per line, newline included (at most 65536)
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = count_in(1..=LOAD_MAX_SIZE))]
    size: usize,

    /// Each line's length drawn at random from 1 to --size
    #[arg(long)]
    varied: bool,

    /// Stop after this many seconds, finished or not (at most 600)
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=LOAD_MAX_SECONDS))]
    seconds: u64,
}

#[derive(Debug, Clone, Args)]
struct LoadArgs {
    /// The server's port on 127.0.0.1 (the only address the client ever connects to)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,

    #[command(flatten)]
    spec: LoadSpecArgs,
}

#[derive(Debug, Clone, Args)]
struct CompareArgs {
    /// The models to compare, in order (default: all)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODEL,...")]
    models: Vec<Model>,

    #[command(flatten)]
    spec: LoadSpecArgs,
}

#[derive(Debug, Clone, Args)]
struct IdleArgs {
    /// Idle connections each model holds (at most 10000; the fd limit is raised as far as allowed)
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = count_in(1..=10_000))]
    connections: usize,

    /// The models to measure (default: all but blocking, which holds one client at a time, and
    /// fork, which would start N processes)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODEL,...")]
    models: Vec<Model>,

    /// Milliseconds of silence over which the idle CPU time is measured
    #[arg(long, value_name = "MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    quiet_ms: u64,
}

#[derive(Debug, Clone, Args)]
struct ExplainArgs {
    /// Round trips per model in the measuring run (20 connections each)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = count_in(1..=10_000))]
    requests: usize,
}

common::demo_cli!(Cli);

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    common::demo::main(&[], run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    common::demo::linux_only::<Cli>(
        "io-models: this demo needs Linux (epoll, F_SETOWN_EX, io_uring, /proc)",
    )
}

#[cfg(target_os = "linux")]
fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Some(Cmd::Serve(args)) => {
            let (listener, stats) = serve::start(args)?;
            serve_with(args.model, listener, args.limits.limits(), stats)
        }
        Some(Cmd::Load(args)) => load::run(args),
        Some(Cmd::Compare(args)) => compare::run(&cli, args),
        Some(Cmd::Idle(args)) => idle::run(&cli, args),
        Some(Cmd::Explain(args)) => explain::run(&cli, args),
        None => {
            common::report::say(
                "the tour: compare (io-models --help lists serve, load, idle and explain)",
            );
            let args = CompareArgs::parse_defaults();
            compare::run(&cli, &args)
        }
    }
}

/// Serves on `listener` with `model` until the process is stopped: each arm goes straight to
/// the model's own file, where its key call stands (`epoll.wait` in `models/epoll.rs`, `accept4`
/// in `models/threads.rs`, `submit_with_args` in `models/uring.rs`, `listener.accept()` in
/// `models/asynchronous.rs`, ...).
#[cfg(target_os = "linux")]
fn serve_with(
    model: Model,
    listener: std::os::fd::OwnedFd,
    limits: server::Limits,
    stats: &'static server::Stats,
) -> anyhow::Result<()> {
    use models::{
        asynchronous, blocking, epoll, fork, nonblocking, poll, select, signal, threads, uring,
    };
    match model {
        Model::Blocking => blocking::serve(&listener, &limits, stats),
        Model::Threads => threads::serve(&listener, limits, stats),
        Model::Fork => fork::serve(&listener, &limits, stats),
        Model::Nonblocking => nonblocking::serve(&listener, &limits, stats),
        Model::Select => select::serve(&listener, &limits, stats),
        Model::Poll => poll::serve(&listener, &limits, stats),
        Model::Epoll => epoll::serve(&listener, &limits, stats),
        Model::Signal => signal::serve(&listener, &limits, stats),
        Model::Async => asynchronous::serve(listener, limits, stats),
        Model::Uring => uring::serve(&listener, &limits, stats),
    }
}

#[cfg(target_os = "linux")]
impl CompareArgs {
    /// `compare` with every default, for the tour.
    fn parse_defaults() -> CompareArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: CompareArgs,
        }
        Only::parse_from(["compare"]).args
    }
}

#[cfg(target_os = "linux")]
impl LimitArgs {
    fn limits(&self) -> server::Limits {
        server::Limits {
            max_connections: self.max_connections,
            max_line: self.max_line,
            idle: std::time::Duration::from_millis(self.idle_ms),
        }
    }
}

#[cfg(target_os = "linux")]
impl LoadSpecArgs {
    fn spec(&self, port: u16) -> io_models::client::Spec {
        io_models::client::Spec {
            port,
            connections: self.connections,
            requests: self.requests,
            size: self.size,
            varied: self.varied,
            time_limit: std::time::Duration::from_secs(self.seconds),
            seed: 0x10_4D_E1,
            keep_open: false,
        }
    }
}
