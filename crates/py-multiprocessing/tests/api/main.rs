//! `py-multiprocessing` through its public API, tested from outside the crate: one test
//! binary, a module per part.

mod pool;
mod queue;
mod shm;
mod sync;
