//! demo — the `main` every demo shares.
//!
//! ```ignore
//! fn main() -> ExitCode {
//!     common::demo::main(&[&BUYER], run)
//! }
//! ```
//!
//! In order: the `__main__` guard ([`process::dispatch`]: a spawned child runs its role and
//! never comes back), the flags (a usage error exits 2), the signal watcher, the demo itself,
//! then Python's end of the main process (terminate daemonic children, join the others), and
//! the exit code: 0 the demo ran, 1 it failed, 2 bad usage or input.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::CommonArgs;
use crate::processes::lost;
use crate::{process, report, signals, trace};

/// The demo crates, in the order `crates/demos.txt` lists them: the one list that the
/// Makefile's demo targets, the tour and the tests read. A crate not listed there (this
/// library, the benchmark, the tour) is not a demo.
pub fn demos() -> Vec<&'static str> {
    include_str!("../../../demos.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// A demo's command line: it carries the shared flags.
pub trait DemoCli: Parser {
    /// The shared flags, flattened into the demo's own.
    fn common(&self) -> &CommonArgs;
}

/// A demo's command line whose subcommands are its parts.
pub trait PartsCli: DemoCli {
    type Part: PartialEq + Copy;
    fn part(&self) -> Option<Self::Part>;
}

/// `impl DemoCli for Cli` for a demo whose shared flags are its field `common`
/// (`#[command(flatten)] common: CommonArgs`): `common::demo_cli!(Cli);`. With the parts'
/// subcommand, held in the field `cmd: Option<Cmd>`, it also makes `Cli` a [`PartsCli`]:
/// `common::demo_cli!(Cli, Cmd);`.
#[macro_export]
macro_rules! demo_cli {
    ($cli:ty) => {
        impl $crate::demo::DemoCli for $cli {
            fn common(&self) -> &$crate::cli::CommonArgs {
                &self.common
            }
        }
    };
    ($cli:ty, $part:ty) => {
        $crate::demo_cli!($cli);
        impl $crate::demo::PartsCli for $cli {
            type Part = $part;
            fn part(&self) -> Option<$part> {
                self.cmd
            }
        }
    };
}

/// Bad usage or bad input: the demo exits 2 and says why. The message names the flag or file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Wraps a message as [`BadInput`] (exit code 2).
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    BadInput(message.into()).into()
}

/// Runs a demo: see the module documentation. A part that fails (a child lost, a check
/// broken) may leave children waiting for something that will never come: they are stopped
/// and reaped before the error is reported ([`lost::stop_children_on_error`]), so a failure
/// never waits for ever.
pub fn main<C: DemoCli>(
    roles: &[&'static process::Role],
    run: impl FnOnce(C) -> anyhow::Result<()>,
) -> ExitCode {
    process::dispatch(roles);
    let cli = C::parse();
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&arg0).file_name();
    let program = name.map_or("main".into(), |name| name.to_string_lossy().into_owned());
    let fail = |e: anyhow::Error, code: u8| {
        report::write_stderr(&format!("{program}: error: {e:#}"));
        ExitCode::from(code)
    };
    // The pictures' paths are checked before anything starts (exit 2 naming the flag).
    let outputs = cli.common().trace_outputs();
    if let Err(e) = outputs.check() {
        return fail(e, 2);
    }
    report::init(cli.common().json, &program);
    if let Err(e) = signals::install().context("installing the signal watcher") {
        return fail(e, 1);
    }
    // Orphaned descendants come back to this process to be reaped (see `signals`).
    signals::set_child_subreaper(true);
    // --trace, --svg: every event recorded and the kernel sampled from here on.
    if let Err(e) = trace::start(outputs).context("starting the trace") {
        return fail(e, 1);
    }
    let result = lost::stop_children_on_error(run(cli));
    // A Ctrl-C to the whole group can kill a child, and so end `run` early, before the watcher
    // has finished stopping everything: leave the ending (and its exit code, 130 or 143) to it.
    if signals::stopping() {
        loop {
            std::thread::park();
        }
    }
    process::finish_main();
    // The pictures, once every child has ended (a failed run is drawn too: it shows why), and
    // then the run's own error, if any.
    let result = match (result, trace::finish()) {
        (Err(e), Err(unwritten)) => {
            fail(unwritten, 1);
            Err(e)
        }
        (result, written) => result.and(written),
    };
    let Err(e) = result else { return ExitCode::SUCCESS };
    let bad = e.chain().any(|c| c.is::<BadInput>());
    fail(e, if bad { 2 } else { 1 })
}

/// The `main` of a Linux-only demo built for another system: the flags are still read
/// (`--help` works, bad usage exits 2), then it prints `needs` (what the demo needs) and
/// exits 1.
pub fn linux_only<C: Parser>(needs: &str) -> ExitCode {
    let _ = C::parse();
    eprintln!("{needs}");
    ExitCode::from(1)
}

/// The stand-in, on other systems, for a part that needs Linux: `linux_only_part!(processes,
/// "memfd, futexes, /proc")` beside `#[cfg(target_os = "linux")] mod processes;` gives a
/// `processes` module with no child roles whose `run` says what the part needs.
#[macro_export]
macro_rules! linux_only_part {
    ($part:ident, $needs:literal) => {
        #[cfg(not(target_os = "linux"))]
        mod $part {
            pub static ROLES: [&$crate::process::Role; 0] = [];
            pub fn run(_cli: &super::Cli) -> anyhow::Result<()> {
                anyhow::bail!("the {} part needs Linux ({})", stringify!($part), $needs)
            }
        }
    };
}

/// One part of a demo: its subcommand and the function that runs it.
pub type Part<C, K> = (K, fn(&C) -> anyhow::Result<()>);

/// The `main` of a demo that runs its parts and nothing else: [`main`] with [`run_parts`].
pub fn main_parts<C: PartsCli>(
    roles: &[&'static process::Role],
    parts: &[Part<C, C::Part>],
) -> ExitCode {
    main(roles, |cli: C| run_parts(&cli, parts))
}

/// Runs a demo's parts, each also a subcommand: the chosen one, or, with no subcommand, every
/// one in the order given (the demo's tour), after a line that says so.
pub fn run_parts<C: PartsCli>(cli: &C, parts: &[Part<C, C::Part>]) -> anyhow::Result<()> {
    if let Some(chosen) = cli.part() {
        let (_, part) =
            parts.iter().find(|(k, _)| *k == chosen).expect("every subcommand is a part");
        return part(cli);
    }
    const WORDS: [&str; 10] =
        ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let count = WORDS.get(parts.len()).map_or_else(|| parts.len().to_string(), |w| w.to_string());
    let demo = C::command().get_name().to_owned();
    report::say(format!(
        "the tour: {count} parts, each also a subcommand ({demo} --help lists them)"
    ));
    parts.iter().try_for_each(|(_, part)| part(cli))
}
