//! common — what every demo shares: how a demo presents itself (lines, events, the `ps` view,
//! hold, predict, the timeline, the trace and the picture), the runner, Ctrl-C and reaping,
//! grouped by layer. The Python-API machinery the notes teach lives beside it, in the library
//! crates `py-multiprocessing` (`Queue`, `Pool`, process `Semaphore`/`Event`) and
//! `py-threading` (thread `Semaphore`/`Event`, the `queue` module).
//!
//! **Processes and what they share** ([`processes`]; Linux's calls, `prctl` and `signalfd`, with
//! stand-ins elsewhere, except in the fork server, which needs Linux):
//! - [`process`]: `Process` (fork, spawn, forkserver); the `__main__` guard, [`process::dispatch`].
//! - [`forkserver`]: the single-threaded server that forks children on request (Python 3.14's
//!   default start method on Linux).
//! - [`signals`]: Ctrl-C / SIGTERM stop and reap every child; exit 130 / 143.
//! - [`processes::lost`]: a child that died unasked: who, how, and what was lost with it.
//! - [`startcost`]: what a start+join of a thread, a fork child or a spawn child costs.
//!
//! **Threads** ([`threads`]):
//! - [`threads::named`]: named threads, their kernel ids, what the kernel keeps of a name.
//!
//! **Presentation** ([`present`]):
//! - [`report`]: people's lines and `--json` events, one `write(2)` per line, `[pid/tid name]`.
//! - [`ps`]: the demo's own process and thread tables from `/proc`.
//! - [`sampler`]: every process and thread's state, CPU, time running and time ready, from `/proc`.
//! - [`trace`]: `--trace` (Trace Event JSON for Perfetto) and `--svg` ([`svg`], a picture for
//!   slides): the run's events, phase spans and sampled kernel states, written at the end.
//! - [`timeline`]: every process records its events to one shared file; lanes drawn from it,
//!   one per process or one per thread.
//! - [`locks`]: who holds a file lock and who waits for it, from `/proc/locks`.
//! - [`cli`]: the shared flags (`--json`, `--hold`, `--speed`, `--start-method`, `--predict`, ...).
//! - [`phase`]: one call marks a step or a span, for the stepper (`--step`) and the tracer.
//! - [`predict`]: a question before the reveal, judged against what happened in this run.
//! - [`demo`]: the `main` every demo shares: guard, flags, signals, errors to exit codes.
//!
//! Every module is re-exported at the top (`common::process`, `common::report`, ...), so a
//! demo's paths stay short whatever layer a module lives in.

// The crate's own modules may name it as every crate that uses it does (`common::report`), so
// that a module reads the same wherever it lives.
extern crate self as common;

pub mod present;
pub mod processes;
pub mod threads;

pub use present::{
    cli, demo, locks, phase, predict, ps, report, sampler, stepper, svg, timeline, trace,
};

pub use processes::{forkserver, process, signals, startcost};
#[doc(hidden)]
pub use serde_json as __serde_json;
