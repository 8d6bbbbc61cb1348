//! deadlock (the library beside the demo): what its parts share and what can be checked
//! without running it.
//!
//! - [`waitfor`]: the wait-for graph (who holds which lock, who waits for which), its table
//!   and its cycle, as the demo prints them once a deadlock has been found.
//! - [`rlock`]: Python's `threading.RLock` (an owner and a count) on `parking_lot`'s
//!   `ReentrantMutex`, and the rule that only the owner unlocks: a guard cannot move to another
//!   thread, which the compiler enforces (a `compile_fail` example there).
//!
//! It is a library, not a module of the binary, because `cargo test` runs the examples in the
//! documentation of library targets only: the `compile_fail` example is part of the lesson, so
//! it must run with the tests.

pub mod rlock;
pub mod waitfor;
