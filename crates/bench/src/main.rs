//! bench — `make bench`: the demos' figures in Rust beside the Python originals, as ratios.
//!
//! Every suite measures a few figures in Rust, the way a user of this workspace's `common`
//! pays for them, and runs a small Python script from `python/` that measures the same thing
//! the notes' way, in the same run (Rust and Python alternate run by run, so both see the same
//! machine). The table shows, for each figure, the median of `--runs` runs on each side, how
//! many times better Rust is (`ratio`), the target set for the project and whether it was met:
//!
//! ```text
//! figure                    rust      python     ratio   target  met?
//! thread start+join (µs)    25.3       147.3      5.8x     >= 2x  yes
//! ```
//!
//! Without `python3` on PATH, or when a script fails, the Rust figures are printed and the
//! comparison is said to be skipped. A benchmark never fails the tests: `make test` does not
//! run it, and a missed target is reported, not turned into an error.
//!
//! **Peers**: the suites named `*-peers` put ours beside the Rust crates a user would pick
//! instead (crossbeam-channel, flume, std's mpsc, ipc-channel, rayon, smol's executor), on the
//! same work in the same run; their second column is the peer's figure, not Python's. The
//! crates are compiled only with `--features peers` (which `make bench` turns on); without it
//! those suites say so and the others run.
//!
//! **Run it**: `make bench` (= `cargo run --release -q -p bench --features peers`); one suite,
//! more runs: `cargo run --release -q -p bench -- --only start --runs 9`; `--json` prints one
//! event per row. Measure release builds only: a debug build measures the debug build.
//!
//! **Adding a suite**: a module with `pub fn run(&Settings) -> anyhow::Result<Outcome>` that
//! builds its rows with `measure`'s types, one line in [`SUITES`], and its Python script in
//! `python/` printing one JSON object on stdout.

mod coroutine;
mod gil;
mod io;
mod measure;
mod peers;
mod start;
// The suites built on py-multiprocessing's shared memory (a memfd, futexes) are Linux's;
// elsewhere each is `elsewhere.rs`, a run that says so.
#[cfg(not(target_os = "linux"))]
mod elsewhere;
#[cfg(target_os = "linux")]
mod ipc;
#[cfg(target_os = "linux")]
mod pool;
#[cfg(target_os = "linux")]
mod queue;
#[cfg(target_os = "linux")]
mod semaphore;
#[cfg(not(target_os = "linux"))]
use elsewhere::{self as ipc, self as pool, self as queue, self as semaphore};
mod thread_queue;
mod threads;
mod ticket;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use clap::builder::PossibleValuesParser;
use common::report;

use crate::measure::{Against, Outcome, Settings};

/// One benchmark suite: a name for `--only`, what it measures, what its second column holds,
/// and the function that does it.
struct Suite {
    name: &'static str,
    about: &'static str,
    against: Against,
    run: fn(&Settings) -> anyhow::Result<Outcome>,
}

/// Every suite, in the order they run.
const SUITES: &[Suite] = &[
    Suite {
        name: "start",
        about: "start+join of a thread, a fork, a spawn and a fork-server child (fork-vs-spawn)",
        against: Against::Python,
        run: start::run,
    },
    Suite {
        name: "ticket",
        about: "what safety costs: locked read-modify-write transactions on db.json (mutex-ticket)",
        against: Against::Python,
        run: ticket::run,
    },
    Suite {
        name: "ipc",
        about: "pipe, duplex pipe, shared-memory and file counters between processes (ipc)",
        against: Against::Python,
        run: ipc::run,
    },
    Suite {
        name: "queue",
        about: "messages per second through Queue / JoinableQueue (joinable-queue)",
        against: Against::Python,
        run: queue::run,
    },
    Suite {
        name: "queue-peers",
        about: "process Queue beside ipc-channel, Servo's channel between processes",
        against: Against::Peer,
        run: peers::queue,
    },
    Suite {
        name: "io",
        about: "echo servers under one load client: epoll, async, io_uring vs socketserver, asyncio (io-models)",
        against: Against::Python,
        run: io::run,
    },
    Suite {
        name: "pool",
        about: "what a trivial task costs through a pool of 2 worker processes (pool)",
        against: Against::Python,
        run: pool::run,
    },
    Suite {
        name: "pool-peers",
        about: "ThreadPool and Pool map beside rayon's par_iter",
        against: Against::Peer,
        run: peers::pool,
    },
    Suite {
        name: "semaphore",
        about: "an acquire+release pair of a thread and a process semaphore (semaphore)",
        against: Against::Python,
        run: semaphore::run,
    },
    Suite {
        name: "thread-queue",
        about: "items per second through Python's queue.Queue rebuilt for threads (thread-queue)",
        against: Against::Python,
        run: thread_queue::run,
    },
    Suite {
        name: "thread-queue-peers",
        about: "thread Queue beside crossbeam-channel, flume and std's mpsc",
        against: Against::Peer,
        run: peers::thread_queue,
    },
    Suite {
        name: "threads",
        about: "the balance loop racy, locked, atomic; thread vs process switches (threads)",
        against: Against::Python,
        run: threads::run,
    },
    Suite {
        name: "gil",
        about: "the notes' countdown by 1 and 2 threads, a simulated GIL, the convoy (gil)",
        against: Against::Python,
        run: gil::run,
    },
    Suite {
        name: "coroutine",
        about: "a task switch, a stackful switch, 10,000 sleeping tasks vs asyncio, greenlet (coroutine)",
        against: Against::Python,
        run: coroutine::run,
    },
    Suite {
        name: "coroutine-peers",
        about: "tokio's current-thread runtime beside smol's executor (async-executor, async-io)",
        against: Against::Peer,
        run: peers::coroutine,
    },
];

/// Runs of each side; the table shows medians. Nine, because on a shared 2-core machine a
/// median of five still moves by a third from one `make bench` to the next.
const DEFAULT_RUNS: usize = 9;
/// Children or threads started and joined per run (Python's spawn takes ~50-100 ms each).
const DEFAULT_COUNT: usize = 20;

/// The demos' figures in Rust beside the Python originals, measured in the same run.
/// Each figure is a median of several runs; `ratio` is how many times better Rust is.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    /// Run only this suite
    #[arg(long, value_name = "SUITE", value_parser = suite_names())]
    only: Option<String>,

    /// Runs of each side per figure; the table shows the medians
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RUNS, value_parser = parse_runs)]
    runs: usize,

    /// Children or threads started and joined in each run
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COUNT, value_parser = parse_count)]
    count: usize,

    /// Print one JSON event per line (a `row` per figure) instead of the table
    #[arg(long)]
    json: bool,

    /// Run as a traced demo does (`--trace`), without writing a trace: the process Queue's
    /// frames carry a message id, to measure its price (BENCH.md, the queue's notes)
    #[arg(long)]
    message_ids: bool,
}

fn suite_names() -> PossibleValuesParser {
    PossibleValuesParser::new(SUITES.iter().map(|s| s.name))
}

fn parse_runs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=101).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number of runs from 1 to 101")),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number of children from 1 to 10000")),
    }
}

fn main() -> ExitCode {
    // The `__main__` guard: a spawn child measured by a suite runs this program again and must
    // do its (empty) work and leave, not run the benchmark.
    common::process::dispatch(&[&common::startcost::NOOP]);
    let cli = Cli::parse();
    report::init(cli.json, "bench");
    report::set_tracing(cli.message_ids);
    let settings = Settings { runs: cli.runs, count: cli.count };
    let mut failed = false;
    for suite in SUITES.iter().filter(|s| cli.only.as_deref().is_none_or(|only| only == s.name)) {
        if suite.against == Against::Peer && !peers::COMPILED && cli.only.is_none() {
            // A whole run without the feature is the Python comparison alone, not a failure;
            // `--only` naming a peer suite still says why it cannot run.
            report::say(format!(
                "{}: skipped, the peer crates are compiled only with --features peers (make bench)",
                suite.name
            ));
            continue;
        }
        report::section(format!("{}: {}", suite.name, suite.about));
        let began = Instant::now();
        let outcome = (suite.run)(&settings);
        // The time a suite takes, so that the whole `make bench` can be kept short.
        let seconds = began.elapsed().as_secs_f64();
        match outcome {
            Ok(outcome) => {
                measure::print(suite.name, suite.against, &settings, &outcome);
                report::say(format!("suite {} took {seconds:.1} s", suite.name));
            }
            Err(e) => {
                report::write_stderr(&format!("bench: error: suite {}: {e:#}", suite.name));
                failed = true;
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
