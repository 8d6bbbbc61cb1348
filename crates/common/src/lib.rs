//! common — the machinery every demo stands on.
//!
//! - [`process`]: `Process` (fork or spawn), the `__main__` guard ([`process::dispatch`]).
//! - [`report`]: people's lines and `--json` events, one `write(2)` per line.
//! - [`cli`]: the shared flags (`--json`, `--hold`, `--speed`, `--start-method`).
//! - [`signals`]: Ctrl-C / SIGTERM stop and reap every child; exit 130 / 143.
//! - [`ps`]: the demo's own process table from `/proc`.
//! - [`queue`]: `Queue` and `JoinableQueue` across processes: a pipe plus locks (Linux).
//! - [`store`]: the ticket `db.json`: strict, locked on a sidecar, replaced by rename.
//! - [`pool`]: a pool of worker processes (or threads): `apply_async`, `map`, callbacks, faults.
//! - [`locks`]: who holds a file lock and who waits for it, from `/proc/locks`.
//! - [`timeline`]: every process records its events to one shared file; lanes drawn from it.
//! - [`startcost`]: what a start+join of a thread, a fork child or a spawn child costs.
//! - [`daemonize`]: a real Unix daemon (double fork, `setsid`), its pidfile under a lock.
//! - [`demo`]: the `main` every demo shares: guard, flags, signals, errors to exit codes.

pub mod cli;
pub mod daemonize;
pub mod demo;
pub mod locks;
pub mod pool;
pub mod process;
pub mod ps;
pub mod queue;
pub mod report;
pub mod signals;
pub mod startcost;
pub mod store;
pub mod timeline;
