//! `common` through its public API, tested from outside the crate: one test binary, a module
//! per part.

mod present;
mod processes;
