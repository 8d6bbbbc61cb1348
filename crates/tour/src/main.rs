//! tour — the course as a path: the demos in the notes' order, one part at a time.
//!
//! Seed 004 is the course's table of contents (操作系统 → 进程 → 线程 → 池 → 单线程下实现并发 →
//! 网络IO模型); the demos are its experiments. The tour runs each demo part in that order as a
//! child process (the built binaries beside this one), headed by its section (`seed 004 §2.6
//! 守护进程`), and ends with a one-screen summary: each part, what it showed, how it ended, and
//! the learner's guesses, right and wrong.
//!
//! With `--predict` each part asks its questions before its reveal (guess first, then see) and
//! judges the guesses against that very run. When stdin is a terminal and `--predict` is on, the
//! tour pauses for Enter between parts; otherwise (a pipe, CI, `--json`) it runs straight
//! through and nothing waits. A demo not built yet is skipped, with a line saying so.
//!
//! **What to watch for**: each part's heading names the notes' section; the questions
//! (`QUESTION (oversold)`) come before the part's outcome and the `ANSWER` after it, with why;
//! the summary counts the guesses. Only one demo runs at a time: `ps -o pid,ppid,stat,comm
//! --ppid <the tour's pid>` shows it.
//!
//! **Run it**:
//! ```text
//! make tour                                   # the whole course, straight through
//! make tour ARGS='--predict'                  # guess first, then see; Enter between parts
//! make tour ARGS='--from threads'             # start at the thread chapter
//! make tour ARGS='--all'                      # every part of every demo, not only the main line
//! make tour ARGS='--list'                     # the parts, without running them
//! ps -o pid,ppid,stat,comm --ppid <tour pid>  # in a second terminal: the part running now
//! ```
//!
//! Expected output (abridged):
//! ```text
//! == seed 004 §2.7 互斥锁与信号量 — mutex-ticket run --no-lock (part 18 of 49) ==
//!   0.000s [ 7711 mutex-ticket] QUESTION (oversold): 10 buyers, 1 ticket, no lock: by how many is it oversold?
//!   ...
//!   0.061s [ 7711 mutex-ticket] ANSWER (oversold): 9 (you said 9: RIGHT)
//! == summary: 49 parts, 49 ran, 0 failed, 0 skipped; guesses: 3 right, 1 wrong, 12 not made ==
//! ```
//!
//! Ctrl-C at any moment reaches the part running (it stops and reaps its own children) and
//! then the tour, which waits for it and exits 130 (143 for SIGTERM): nothing is left behind.
//! Linux (the demos' own platform); elsewhere it says so and exits 1.
#![doc = include_str!("differences.txt")]

mod parts;
mod runner;

use std::process::ExitCode;

use clap::Parser;
use common::cli::CommonArgs;

/// The course as a path: the demos in seed 004's order, one part at a time
#[derive(Debug, Parser)]
#[command(name = "tour", after_help = include_str!("differences.txt"))]
pub struct Cli {
    /// Start at this demo's first part (the ones before are not run)
    #[arg(long, value_name = "DEMO", value_parser = parse_demo)]
    from: Option<String>,

    /// Run only these demos' parts (a comma-separated list), still in the notes' order
    #[arg(long, value_name = "DEMO,...", value_delimiter = ',', value_parser = parse_demo)]
    only: Vec<String>,

    /// Skip this demo (may be repeated; a name the tour does not know is ignored, so that
    /// `make tour` can skip a demo that does not build)
    #[arg(long, value_name = "DEMO")]
    skip: Vec<String>,

    /// Every part of every demo, not only the course's main line
    #[arg(long)]
    all: bool,

    /// List the parts, in order, and exit
    #[arg(long)]
    list: bool,

    #[command(flatten)]
    common: CommonArgs,
}

fn parse_demo(text: &str) -> Result<String, String> {
    let demos = parts::demos();
    if demos.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a demo of the tour ({})", demos.join(", ")))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::report::init(cli.common.json, "tour");
    runner::main(cli)
}
