//! common — the machinery every demo stands on, grouped by layer.
//!
//! **Processes and what they share** ([`processes`]):
//! - [`process`]: `Process` (fork or spawn), the `__main__` guard ([`process::dispatch`]).
//! - [`signals`]: Ctrl-C / SIGTERM stop and reap every child; exit 130 / 143.
//! - [`daemonize`]: a real Unix daemon (double fork, `setsid`), its pidfile under a lock.
//! - [`queue`]: `Queue` and `JoinableQueue` across processes: a pipe plus locks (Linux).
//! - [`pool`]: a pool of worker processes (or threads): `apply_async`, `map`, callbacks, faults.
//! - [`store`]: the ticket `db.json`: strict, locked on a sidecar, replaced by rename.
//! - [`startcost`]: what a start+join of a thread, a fork child or a spawn child costs.
//!
//! **Threads** ([`threads`]): named threads, the `[pid/tid name]` of a line, Python's
//! `threading` primitives and `queue` module built on `Mutex` + `Condvar`.
//!
//! **Networking** ([`net`]): what the IO-model demos share (the load client).
//!
//! **Presentation** ([`present`]):
//! - [`report`]: people's lines and `--json` events, one `write(2)` per line.
//! - [`ps`]: the demo's own process and thread tables from `/proc`.
//! - [`timeline`]: every process records its events to one shared file; lanes drawn from it.
//! - [`locks`]: who holds a file lock and who waits for it, from `/proc/locks`.
//! - [`cli`]: the shared flags (`--json`, `--hold`, `--speed`, `--start-method`).
//! - [`demo`]: the `main` every demo shares: guard, flags, signals, errors to exit codes.
//!
//! Every module is re-exported at the top (`common::process`, `common::report`, ...), so a
//! demo's paths stay short whatever layer a module lives in.

pub mod net;
pub mod present;
pub mod processes;
pub mod threads;

pub use present::{cli, demo, locks, ps, report, timeline};
pub use processes::{daemonize, pool, process, queue, signals, startcost, store};
