//! cli — the flags every demo shares, for `#[command(flatten)]` in each demo's `Cli`.
//!
//! They are `global`, so they are accepted before or after any subcommand.

use std::ops::RangeInclusive;
use std::time::Duration;

use clap::Args;
use clap::builder::RangedU64ValueParser;

use crate::process::{Process, Run, StartMethod};

/// The notes sleep 1 to 5 seconds at every step; by default the demos run this many times
/// faster, so that a whole demo takes a few seconds. `--speed 1` restores the notes' timing.
pub const DEFAULT_SPEED: f64 = 10.0;

/// Flags shared by every demo.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Print events as JSON lines (one object per line) instead of people's lines
    #[arg(long, global = true)]
    pub json: bool,

    /// Pause SECS at the interesting moment and print the ps command to run in another terminal
    #[arg(long, global = true, value_name = "SECS",
          value_parser = number_in(0.0..=3600.0, "a number of seconds"))]
    pub hold: Option<f64>,

    /// How many times faster than the notes' sleeps to run (1 = the notes' own timing)
    #[arg(long, global = true, value_name = "FACTOR", default_value_t = DEFAULT_SPEED,
          value_parser = number_in(0.01..=10_000.0, "a speed factor"))]
    pub speed: f64,

    /// How children are started: fork (copy this process), spawn (run this program again) or
    /// forkserver (a single-threaded server, started once, forks them)
    #[arg(long, global = true, value_enum, value_name = "METHOD",
          default_value_t = crate::process::default_start_method())]
    pub start_method: StartMethod,

    /// Guess first, then see: ask a question before each reveal, then judge the guess against
    /// this run (a terminal is asked, Enter skips; without one, or with --json, never waits)
    #[arg(long, global = true)]
    pub predict: bool,

    /// A guess given up front (implies --predict): used for the questions in turn, or for one
    /// by its id (--answer oversold=9); may be repeated
    #[arg(long, global = true, value_name = "VALUE")]
    pub answer: Vec<String>,

    /// Write the run as Chrome Trace Event JSON to FILE (open it in Perfetto or
    /// chrome://tracing): every process and thread, its kernel state sampled from /proc, the
    /// demo's phases, events, messages and shared counters
    #[arg(long, global = true, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,

    /// Write the run as one self-contained SVG picture to FILE: a lane per process and thread,
    /// their states, the spans the demo marks, its messages, a time axis and a legend
    #[arg(long, global = true, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
}

impl CommonArgs {
    /// The pictures asked for (`--trace`, `--svg`).
    pub fn trace_outputs(&self) -> crate::trace::Outputs {
        crate::trace::Outputs { trace: self.trace.clone(), svg: self.svg.clone() }
    }

    /// A pause that the notes write as `time.sleep(seconds)`, scaled by `--speed`.
    pub fn notes_sleep(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds / self.speed)
    }

    /// For a demo whose lesson is the parent–child relation itself (a zombie only its parent
    /// can reap, a child seen to stop with `waitpid(WUNTRACED)`, a child's PPID): a fork
    /// server's child is the server's, not this program's, so `--start-method forkserver`
    /// becomes `fork` here, and the demo says so (event `start_method_replaced`). Call it first
    /// in `run`; any other method is kept.
    pub fn own_children(&mut self, why: &str) {
        if self.start_method != StartMethod::Forkserver {
            return;
        }
        self.start_method = StartMethod::Fork;
        crate::event!("start_method_replaced", { "asked": "forkserver", "used": "fork", "why": why }, "--start-method forkserver: a fork server's children are its own, not this \
                 program's, and {why}: this demo uses fork instead");
    }

    /// With `--hold`, pauses at an interesting moment so a learner can look with `ps` from
    /// another terminal, and says exactly what to run. Emits the event `hold` with the pids
    /// (tests wait for it). Without `--hold`, does nothing.
    pub fn hold(&self, moment: &str, pids: &[i32]) {
        let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let command = format!("ps -o pid,ppid,stat,comm,args -p {}", list.join(","));
        self.hold_showing(moment, pids, command);
    }

    /// Like [`CommonArgs::hold`], for a moment whose actors are the threads of `pid`: prints
    /// the `ps -L` command that shows them.
    pub fn hold_threads(&self, moment: &str, pid: i32) {
        let command = format!("ps -L -o pid,lwp,stat,wchan:20,psr,comm -p {pid}");
        self.hold_showing(moment, &[pid], command);
    }

    fn hold_showing(&self, moment: &str, pids: &[i32], command: String) {
        let Some(seconds) = self.hold else { return };
        crate::event!(
            "hold",
            { "moment": moment, "seconds": seconds, "pids": pids, "command": command },
            "holding {seconds}s at: {moment}\n  in another terminal run: {command}"
        );
        std::thread::sleep(Duration::from_secs_f64(seconds));
    }

    /// A child process running `value` (a type with a `run` method), started by the method
    /// `--start-method` chose, with `fds` kept open for a spawned child or a fork server's.
    pub fn child<T: Run>(&self, name: impl Into<String>, value: T, fds: &[i32]) -> Process {
        Process::from_run(name, value).start_method(self.start_method).pass_fds(fds)
    }
}

/// A `usize` count flag within `range` (a typo must not become a fork bomb), by clap's own
/// range check on a `u64` (a `usize` has no `value_parser!`): `value_parser = count_in(1..=MAX)`.
/// Beyond it clap exits 2, naming the flag and the range.
pub fn count_in(range: RangeInclusive<usize>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(*range.start() as u64..=*range.end() as u64)
}

/// The one parser of the number flags (`--hold`, `--speed`, seconds): a finite number within
/// `range`, or the message `"x" is not {what} from {min} to {max}`, which clap prints after the
/// flag's name (exit 2): `value_parser = number_in(0.0..=60.0, "a number of seconds")`.
pub fn number_in(
    range: RangeInclusive<f64>,
    what: &'static str,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| match text.parse::<f64>() {
        Ok(x) if x.is_finite() && range.contains(&x) => Ok(x),
        _ => Err(format!("{text:?} is not {what} from {} to {}", range.start(), range.end())),
    }
}
