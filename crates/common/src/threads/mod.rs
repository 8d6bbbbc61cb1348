//! Threads: named threads and which thread printed a line, and Python's `threading`
//! primitives rebuilt on std's `Mutex` and `Condvar`.

pub mod named;
pub mod queue;
pub mod sync;
