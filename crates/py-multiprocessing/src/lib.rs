//! py-multiprocessing — the part of Python's `multiprocessing` that the notes teach, rebuilt on
//! the system calls it stands for, written to be read before it is written to be fast.
//!
//! - [`queue`]: `Queue` and `JoinableQueue` across processes: a pipe plus locks
//!   (进程queue=管道+锁). Read `queue.rs` first: one pipe, a writer lock, a reader lock.
//! - [`pool`]: `Pool` (and `ThreadPool`): workers, a task queue each, one result thread;
//!   `apply_async`, `map`, callbacks, a killed worker replaced. Read `pool.rs` first.
//! - [`sync`]: `Semaphore` and `Event` across processes, which survive a holder killed with
//!   SIGKILL.
//! - [`shm`]: the memory they share (a memfd mapped by every process), with robust mutexes and
//!   futex words in it.
//!
//! A library, which the demos `joinable-queue`, `pool`, `semaphore`, `event` and `ipc` use.
//! `Process` stays in `common`, under this crate: the runner all demos share needs it to stop
//! and reap every child on Ctrl-C and to run a spawned child's role (the `__main__` guard).

pub mod pool;
pub mod queue;
pub mod shm;
pub mod sync;
