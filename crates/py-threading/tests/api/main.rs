//! `py-threading` through its public API, tested from outside the crate: one test binary, a module
//! per part.

mod event;
mod queue;
mod semaphore;
