//! Processes and what they share: starting and stopping them, and the queues, pools, files
//! and memory they use together.

pub mod daemonize;
pub mod forkserver;
pub mod lost;
pub mod pool;
pub mod process;
pub mod queue;
pub mod shm;
pub mod signals;
pub mod startcost;
pub mod sync;
