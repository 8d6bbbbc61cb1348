//! multiprogramming — 多道技术 and the process (进程理论) on the real kernel: OSTEP's
//! `process-run.py` predicts, the kernel runs the same jobs, and the two tables stand side by side.
//!
//! What happens, part by part (no subcommand runs them all, in a few seconds):
//! - `run`: a job mix in OSTEP's own syntax (`--jobs 5:100,4:25 --seed 1` or `--program
//!   c3,i,c1:c4`, also `-l`, `-P`, `-L`, `-S`, `-I`, `-s`, `-c`). First `process-run.py`'s table,
//!   tick by tick; then the jobs as real processes pinned to one CPU (a CPU tick is the job's own
//!   CPU time; an IO is a `read(2)` a device process answers later), measured from `/proc`; then
//!   both tables side by side and why they differ.
//! - `batch`: 批处理 against 多道 on an IO-heavy and a CPU-heavy mix; then two CPU-bound jobs
//!   interleaved by the kernel against the same two one after the other: the switches and their
//!   cost ("用户感觉不到").
//! - `states`: running, blocked (S) and ready, seen in `/proc` while they happen: a woken job
//!   waits in the run queue (schedstat) before it runs; and D, blocked too: a parent in
//!   `vfork`-like `clone`.
//! - `space`: 空间上的复用: one virtual address, a physical frame per process
//!   (`/proc/PID/pagemap`); copy-on-write after `fork`; a `MAP_SHARED` page, one frame for all.
//! - `program`: 进程与程序: one program file (`/proc/PID/exe`: device and inode), three processes;
//!   the four ways a process is started, seen on this machine.
//! - `serial-concurrent-parallel`: 串行, 并发, 并行: wall time, CPU time, switches, and which CPU
//!   ran whom (sampled `psr`).
//! - `fewer-io`: "最核心的优化就是减少IO操作": one `write(2)` a line, buffered, `fsync` each line.
//!
//! **What to watch for**: in `batch`, CPU busy under `on-io` well above `on-end` for the IO-heavy
//! mix; in `run`, the jobs `S` in `anon_pipe_read` (older kernels: `pipe_read`) while their IO is
//! in flight, `R` on one `PSR`;
//! in `states`, `D` with wchan `kernel_clone`; in `space`, one address and four frames.
//!
//! **Run it**: `make demo-multiprogramming` (all parts), or one part with a pause:
//! `make demo-multiprogramming ARGS='run -l 3:50,3:50 -s 1 --tick-ms 100 --hold 20'`, and in a
//! second terminal the command it prints, e.g. `ps -o pid,stat,psr,wchan:20,comm -p 4182,4183`.
//!
//! ```text
//! == run: 多道技术, process-run.py's prediction, then the same jobs on the real kernel ==
//!   0.001s [  4182 multiprogramming] the default --program c1,i,c1,i,c1:c8: job 0: c1,i,c1,i,c1; job 1: c8
//!   0.002s [  4182 multiprogramming] predicted by process-run.py's rules (-S SWITCH_ON_IO -I
//!                                    IO_RUN_LATER -L 5), as `process-run.py -c -p` prints it:
//! Time        PID: 0        PID: 1           CPU           IOs
//!   1        RUN:cpu         READY             1
//!   2         RUN:io         READY             1
//!   3        BLOCKED       RUN:cpu             1             1
//! ...
//!  20        RUN:cpu          DONE             1
//!
//! Stats: Total Time 20
//! Stats: CPU Busy 15 (75.00%)
//! Stats: IO Busy  10 (50.00%)
//!   0.005s [  4182 multiprogramming] 2 job(s) loaded as processes [4185, 4186], all pinned to CPU 1 ...
//!   0.208s [  4182 multiprogramming] measured on CPU 1: Total Time 20.1 ticks (201.2 ms), CPU Busy 74.9 % ...
//! ```
//!
//! Platform notes: Linux only (`sched_setaffinity`, `/proc`, `clone`); `--policy fifo` needs
//! root, CAP_SYS_NICE or an RLIMIT_RTPRIO above its priority (sched(7)), and `space`'s frame
//! numbers CAP_SYS_ADMIN (proc(5)); without them the demo says so.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]
// Elsewhere `main` only says the demo needs Linux, which leaves the rest unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::cli::CommonArgs;

mod jobs;
mod sim;

// Each of these parts is Linux-only (`#![cfg(target_os = "linux")]` at its top).
mod batch;
mod fewer_io;
mod kernel;
mod program;
mod real;
mod run;
mod scp;
mod space;
mod states;

/// The job mix `run` uses without `--jobs` or `--program`: an IO-bound job beside a CPU-bound one.
const DEFAULT_PROGRAM: &str = "c1,i,c1,i,c1:c8";
/// A tick, unless `--tick-ms` says otherwise: long enough for the kernel's own costs (a switch,
/// a wake-up: microseconds) to stay small beside it.
const DEFAULT_TICK_MS: u64 = 10;
/// An IO's length in ticks, as process-run.py's default `-L 5`.
pub const DEFAULT_IO_LENGTH: u64 = 5;

/// 多道技术 and the process on the real kernel, beside OSTEP's process-run.py.
///
/// A job mix in OSTEP's syntax is predicted tick by tick as process-run.py does, then run as
/// real processes pinned to one CPU and measured from /proc.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
pub struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

impl common::demo::DemoCli for Cli {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A job mix predicted by process-run.py's rules, then run on one CPU and measured
    Run(RunArgs),
    /// 批处理 against 多道, and the cost of switching between CPU-bound jobs
    Batch {
        #[command(flatten)]
        tick: TickArg,
    },
    /// Running, ready and blocked (S, and D), seen in /proc while they happen
    States,
    /// One virtual address, a frame per process; copy-on-write; a MAP_SHARED page
    Space {
        /// Processes holding the variable at the same address, at most 16
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u32).range(2..=16))]
        processes: u32,
    },
    /// One program file, three processes; the four ways a process starts
    Program,
    /// The same CPU-bound jobs one after another, interleaved on one CPU, and on two
    SerialConcurrentParallel {
        /// CPU time of each job in ms, at most 2000
        #[arg(long, value_name = "MS", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=2000))]
        work_ms: u64,
    },
    /// The same lines written one write(2) each, buffered, with fsync each line and once
    FewerIo {
        /// Lines to write, at most 100000
        #[arg(long, value_name = "N", default_value_t = 2000,
              value_parser = clap::value_parser!(u64).range(1..=100_000))]
        lines: u64,
        /// The folder to write the scratch file in (default: the system's temp folder)
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// `--tick-ms`: the length of a tick.
#[derive(Debug, Clone, Args)]
pub struct TickArg {
    /// Length of one tick in ms of CPU time (a CPU tick) or wall time (an IO's tick), 1 to 1000
    #[arg(long = "tick-ms", value_name = "MS", default_value_t = DEFAULT_TICK_MS,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    tick_ms: u64,
}

impl TickArg {
    fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

/// `run`'s flags: OSTEP's job syntax and switches, and how the real run is made.
#[derive(Debug, Args)]
struct RunArgs {
    /// Jobs drawn at random with --seed, as process-run.py -l: X:Y,... (X instructions, at most
    /// 100; Y percent chance that one is CPU, else an IO; at most 10 jobs)
    #[arg(long = "jobs", short = 'l', value_name = "X:Y,...", conflicts_with = "program",
          value_parser = |s: &str| jobs::parse_jobs(s).map(Mixes))]
    jobs: Option<Mixes>,
    /// Exact programs, as process-run.py -P: cN (N CPU ticks) and i (one IO) separated by `,`,
    /// jobs by `:` (c3,i,c1:c4); at most 10 jobs of at most 100 instructions
    #[arg(long, short = 'P', value_name = "PROGRAM",
          value_parser = |s: &str| jobs::parse_program(s).map(Programs))]
    program: Option<Programs>,
    /// The seed of --jobs' draws (CPython's random.seed), as process-run.py -s
    #[arg(long, short = 's', value_name = "N", default_value_t = 0, allow_negative_numbers = true)]
    seed: i64,
    /// Ticks an IO takes, as process-run.py -L (0 to 100)
    #[arg(long = "io-length", short = 'L', value_name = "TICKS", default_value_t = DEFAULT_IO_LENGTH,
          value_parser = clap::value_parser!(u64).range(0..=100))]
    io_length: u64,
    /// When the CPU passes to another job (-S SWITCH_ON_IO / SWITCH_ON_END)
    #[arg(long, short = 'S', value_enum, default_value_t = sim::Switch::OnIo)]
    switch: sim::Switch,
    /// What a job whose IO ended does (-I IO_RUN_LATER / IO_RUN_IMMEDIATE)
    #[arg(long = "io-done", short = 'I', value_enum, default_value_t = sim::IoDone::Later)]
    io_done: sim::IoDone,
    #[command(flatten)]
    tick: TickArg,
    /// The jobs' scheduling policy in the real run: normal (the kernel's default) or fifo
    /// (SCHED_FIFO, needs root: a job runs until it blocks, as in the simulator)
    #[cfg(target_os = "linux")]
    #[arg(long, value_enum, default_value_t = kernel::Policy::Normal)]
    policy: kernel::Policy,
    /// Print the prediction only, no real run (process-run.py -c)
    #[arg(long = "predict-only", short = 'c')]
    predict_only: bool,
    /// Accepted for process-run.py's -p; the stats are always printed
    #[arg(short = 'p', hide = true)]
    print_stats: bool,
}

/// `--jobs`, parsed.
#[derive(Debug, Clone)]
struct Mixes(Vec<jobs::Mix>);

/// `--program`, parsed.
#[derive(Debug, Clone)]
struct Programs(Vec<Vec<sim::Op>>);

impl RunArgs {
    /// The jobs' programs, and how they were chosen.
    fn programs(&self) -> (Vec<Vec<sim::Op>>, String) {
        match (&self.program, &self.jobs) {
            (Some(Programs(p)), _) => (p.clone(), "--program".into()),
            (None, Some(Mixes(m))) => {
                (jobs::draw(m, self.seed), format!("--jobs drawn with --seed {}", self.seed))
            }
            (None, None) => (
                jobs::parse_program(DEFAULT_PROGRAM).unwrap_or_default(),
                format!("the default --program {DEFAULT_PROGRAM}"),
            ),
        }
    }
}

/// With `--hold`, pauses and prints the `ps` command that shows what the kernel sees of
/// `pids`: state, CPU, what each sleeps in (event `hold`, with the pids).
#[cfg(target_os = "linux")]
pub fn hold(common: &CommonArgs, moment: &str, pids: &[i32]) {
    let Some(seconds) = common.hold else { return };
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let command = format!("ps -o pid,stat,psr,wchan:20,comm -p {}", list.join(","));
    common::event!(
        "hold",
        { "moment": moment, "seconds": seconds, "pids": pids, "command": command },
        "holding {seconds}s at: {moment}\n  in another terminal run: {command}"
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

#[cfg(target_os = "linux")]
fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.common.own_children("the batch monitor loads, watches and reaps its own jobs");
    if cli.common.start_method == common::process::StartMethod::Spawn {
        common::event!(
            "start_method_replaced",
            { "asked": "spawn", "used": "fork" },
            "--start-method spawn: every job, the device and each part's children are forked \
             by this monitor (their work is code of this program, handed over by fork)"
        );
    }
    if cli.common.speed != common::cli::DEFAULT_SPEED {
        let speed = cli.common.speed;
        common::event!("speed_ignored", { "speed": speed }, "--speed {speed}: this demo has none of the notes' sleeps to scale (its ticks are CPU time and its IOs real reads, measured), so it changes nothing here");
    }
    let cmd = cli.cmd.take();
    match cmd {
        Some(Cmd::Run(args)) => run_part(&cli, &args),
        Some(Cmd::Batch { tick }) => batch::batch(&cli, &tick),
        Some(Cmd::States) => states::states(&cli),
        Some(Cmd::Space { processes }) => space::space(&cli, processes),
        Some(Cmd::Program) => program::program(&cli),
        Some(Cmd::SerialConcurrentParallel { work_ms }) => {
            scp::serial_concurrent_parallel(&cli, work_ms)
        }
        Some(Cmd::FewerIo { lines, dir }) => fewer_io::fewer_io(&cli, lines, dir),
        None => {
            run_part(&cli, &RunArgs::parse_default())?;
            batch::batch(&cli, &TickArg { tick_ms: DEFAULT_TICK_MS })?;
            states::states(&cli)?;
            space::space(&cli, 4)?;
            program::program(&cli)?;
            scp::serial_concurrent_parallel(&cli, 100)?;
            fewer_io::fewer_io(&cli, 2000, None)
        }
    }
}

#[cfg(target_os = "linux")]
impl RunArgs {
    fn parse_default() -> RunArgs {
        RunArgs {
            jobs: None,
            program: None,
            seed: 0,
            io_length: DEFAULT_IO_LENGTH,
            switch: sim::Switch::OnIo,
            io_done: sim::IoDone::Later,
            tick: TickArg { tick_ms: DEFAULT_TICK_MS },
            policy: kernel::Policy::Normal,
            predict_only: false,
            print_stats: false,
        }
    }
}

#[cfg(target_os = "linux")]
fn run_part(cli: &Cli, args: &RunArgs) -> anyhow::Result<()> {
    // -p is accepted for process-run.py's command lines; the stats are always printed.
    let _ = args.print_stats;
    let (programs, how) = args.programs();
    let setup = real::Setup {
        jobs: programs.clone(),
        switch: args.switch,
        io_done: args.io_done,
        io_length: args.io_length,
        tick: args.tick.tick(),
        policy: args.policy,
    };
    run::run(cli, programs, &how, setup, args.predict_only)
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    common::demo::main(&[], run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    fn run(_cli: Cli) -> anyhow::Result<()> {
        anyhow::bail!("this demo pins processes to a CPU and reads /proc: it runs on Linux only")
    }
    common::demo::main(&[], run)
}
