//! Threads: named threads and which thread printed a line (Python's `threading` primitives
//! are in the `py-threading` crate).

pub mod named;
