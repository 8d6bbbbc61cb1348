//! A suite built on py-multiprocessing's shared memory, on a system other than Linux: its run
//! says it cannot run here (main.rs names this module after each such suite).

pub fn run(_: &crate::measure::Settings) -> anyhow::Result<crate::measure::Outcome> {
    anyhow::bail!("this suite needs Linux (py-multiprocessing's shared memory: a memfd, futexes)")
}
