//! Processes and what they share: starting and stopping them, reaping them, and
//! saying what was lost when one dies unasked.

mod dispatch;
pub mod forkserver;
pub mod lost;
pub mod process;
mod reap;
mod registry;
pub mod signals;
pub mod startcost;
