//! What the children of the zombie, cure and state parts do. Each is a type implementing
//! `Run` (Python's "subclass `Process`, override `run`"), so it works with fork and spawn alike.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use anyhow::Result;
use common::process::{ExitWith, Run};
use serde::{Deserialize, Serialize};

/// Ends after `after_ms` with exit code `code`: the exit status is what a zombie keeps for its
/// parent, which is why the kernel keeps the zombie at all.
#[derive(Debug, Serialize, Deserialize)]
pub struct Quit {
    pub code: i32,
    pub after_ms: u64,
}

impl Run for Quit {
    const ROLE: &'static str = "quit";
    fn run(self) -> Result<()> {
        std::thread::sleep(Duration::from_millis(self.after_ms));
        common::event!("exiting", { "code": self.code }, "my work is done; ending with exit code {}", self.code);
        if self.code == 0 { Ok(()) } else { Err(ExitWith(self.code).into()) }
    }
}

/// Computes without pause for at most `limit_ms` (it must end by itself even if nobody stops
/// it): always runnable, so its state is `R`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Busy {
    pub limit_ms: u64,
}

impl Run for Busy {
    const ROLE: &'static str = "busy";
    fn run(self) -> Result<()> {
        common::event!("busy", { "limit_ms": self.limit_ms }, "computing in a loop (no I/O)");
        let start = Instant::now();
        let limit = Duration::from_millis(self.limit_ms);
        let mut x: u64 = 1;
        // No system call inside the loop: the process never waits for anything, so it is always
        // either on a CPU or in the run queue waiting for one. `black_box` keeps the work real.
        while start.elapsed() < limit {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        std::hint::black_box(x);
        Ok(())
    }
}

/// Sleeps for `limit_ms`: blocked in `nanosleep` until a timer fires, so its state is `S`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sleeper {
    pub limit_ms: u64,
}

impl Run for Sleeper {
    const ROLE: &'static str = "sleeper";
    fn run(self) -> Result<()> {
        common::event!("sleeping", { "limit_ms": self.limit_ms }, "sleeping (blocked until a timer fires)");
        std::thread::sleep(Duration::from_millis(self.limit_ms));
        Ok(())
    }
}
