//! process-basics — the first lesson of every seed: pid and ppid, two ways to start a process,
//! `start` versus `join`, the attributes of a process object, and the ways a process ends.
//!
//! Nine short parts, each a subcommand (no subcommand runs them all). Each starts real child
//! processes with `fork` (or `--start-method spawn`) and shows what the notes claim, by
//! experiment: who is whose parent, that `start` does not wait and `join` does, why you start
//! all children before joining any, what `exitcode` says after a normal exit, an error exit
//! and a kill, and two places where the notes mislead: the `send_mail` loop that joins only
//! its last process, and the order of children, which nothing controls once they are started.
//!
//! **What to watch for**
//! - every child's PPID is this program's PID; this program's PPID is the shell (or `make`)
//!   that started it, as "every program started from PyCharm is PyCharm's child";
//! - `start` returns in about a millisecond (异步); `join` blocks until the child ends (阻塞);
//! - four tasks sleeping 5, 3, 2, 1: start all then join all takes about the longest (5), start
//!   and join each in turn takes the sum (11); `--timeline` draws one lane per process;
//! - `exitcode`: `0`, the code the child chose (`sys.exit(3)`), `1` for an error, `-6`, `-9`,
//!   `-15` when a signal ended it (`ps aux | grep` to find it, `kill -9 PID` to end it);
//! - the notes' `send_mail`: "all mails sent" is printed while mails are still going out;
//! - the children's order changes from one run of the same code to the next.
//!
//! **Run it**
//! ```text
//! make demo-process-basics                            # all nine parts, about 12 s
//! make demo-process-basics ARGS='tasks --timeline'    # one part, with lanes
//! make demo-process-basics ARGS='pids --hold 20'      # pauses; in a second terminal:
//! ps -o pid,ppid,stat,comm,args -p <the pids it prints>      # or: ps aux | grep process-basics
//! ```
//!
//! Expected output (abridged; pids and times differ):
//! ```text
//! == 1. pid and ppid (查看进程的pid和ppid) ==
//!   0.000s [ 15890 process-basics] I am pid 15890; my parent is pid 15888 (bash): ...
//!   0.000s [ 15892 child-1] 15892 is running, parent is <15890>   (os.getpid(), os.getppid())
//! == 3. start is asynchronous, join blocks (异步非阻塞 / 同步阻塞) ==
//!   0.504s [ 15890 process-basics] p.start() returned after 0.2 ms (fork): it asks the OS ...
//! == 5. four tasks sleeping 5, 3, 2, 1 (seed 002: join with several children) ==
//!   9.332s [ 15890 process-basics] start all, then join all: 0.502 s (longest task 0.500 s, sum 1.100 s)
//!  10.446s [ 15890 process-basics] start and join each in turn: 1.113 s (the sum is 1.100 s)
//! == 6. a process object's attributes (进程对象的常用属性) ==
//!  10.553s [ 15890 process-basics] p.join(0.1) returned after 0.107 s with the child still running: ...
//! == 8. the notes' send_mail loop (seed 000 §join方法) ==
//!  11.081s [ 15890 process-basics] the notes' loop: li.append(p) after the loop: 9 of 10 mails were sent after "all sent" was printed
//! == 9. the order after start is not controllable (多进程的执行顺序) ==
//!  11.731s [ 15890 process-basics] the same start gave 5 different orders in 5 rounds: ...
//! ```
//!
//! With `--timeline`, each drawing is one lane per process (`*` a line printed, `E` the end of
//! the parent's code):
//! ```text
//! 例子四: p2 sleeps 5 s a loop; join only p1 (1 column = 50 ms; | first and last event, = alive, ...)
//!   process-basics 23946 |===================E=============================|
//!   process1 23971       *===*===*===*===*===|
//!   process2 23972       *=========*=========*=========*=========*=========|
//!                        +---------+---------+---------+---------+---------+
//!                        2.0s      2.5s      3.0s      3.5s      4.0s      4.5s
//! ```
//!
//! Platform notes: Linux first. The pid checks read `/proc/PID/stat`; children are named for
//! `ps -o comm` with `prctl(PR_SET_NAME)`; the timeline's shared file is made with `O_TMPFILE`
//! and never has a name. Windows has no fork, no signals and no `/proc`: the notes'
//! `tasklist | findstr python` and `taskkill /F /PID` play the part of `ps aux | grep` and
//! `kill -9` there.
//!
//! **Differences from Python** (also the end of `--help`):
#![doc = include_str!("differences.txt")]

mod ends;
mod joins;
mod starts;

use std::time::Duration;

use clap::{Parser, Subcommand};
use common::cli::{CommonArgs, count_in};
use common::process::{Process, Role};
use common::report;
use common::timeline::{self, Record, Recording, Style};
use serde::Serialize;

/// The notes' seed 001 loops five times in `r1` and `r2`.
const LOOPS: usize = 5;
/// Seed 000 sends ten mails.
const MAILS: usize = 10;
/// Children started in each round of the order experiment, and the number of rounds.
const ORDER_CHILDREN: usize = 5;
const ORDER_ROUNDS: usize = 5;
/// The caps of the count flags (exit 2 beyond, before anything starts): every mail and every
/// child of the order part is a process, every loop a sleep.
const MAX_LOOPS: usize = 100;
const MAX_MAILS: usize = 200;
const MAX_ORDER_CHILDREN: usize = 32;
const MAX_ORDER_ROUNDS: usize = 100;
/// The exit code a child chooses, as `sys.exit(3)`.
const ERROR_CODE: i32 = 3;

/// process-basics: pid and ppid, two ways to start a process, start versus join, a process's
/// attributes (pid, name, is_alive, join with a timeout, terminate, exitcode) and how it ends.
#[derive(Debug, Parser)]
#[command(after_help = include_str!("differences.txt"))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    common: CommonArgs,

    /// Draw one lane per process (parts examples, tasks and send-mail)
    #[arg(long, global = true)]
    timeline: bool,

    /// How many times the children of seed 001's examples print and sleep, at most 100
    #[arg(long, global = true, value_name = "N", default_value_t = LOOPS,
          value_parser = count_in(1..=MAX_LOOPS))]
    loops: usize,

    /// How many mails the send_mail part sends (one process each), at most 200
    #[arg(long, global = true, value_name = "N", default_value_t = MAILS,
          value_parser = count_in(1..=MAX_MAILS))]
    mails: usize,

    /// Children per round in the order part, at most 32
    #[arg(long, global = true, value_name = "N", default_value_t = ORDER_CHILDREN,
          value_parser = count_in(1..=MAX_ORDER_CHILDREN))]
    children: usize,

    /// Rounds in the order part, at most 100
    #[arg(long, global = true, value_name = "N", default_value_t = ORDER_ROUNDS,
          value_parser = count_in(1..=MAX_ORDER_ROUNDS))]
    rounds: usize,

    /// The exit code the child of the exits part chooses (1 to 255)
    #[arg(long, global = true, value_name = "CODE", default_value_t = ERROR_CODE,
          value_parser = clap::value_parser!(i32).range(1..=255))]
    code: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Subcommand)]
enum Cmd {
    /// 1. pid and ppid: this program's, its children's, and its own parent's
    Pids,
    /// 2. Two ways to start a process: a target function, or a type with a run method
    TwoWays,
    /// 3. start returns at once; join blocks until the child ends
    StartJoin,
    /// 4. Seed 001's five examples of start and join (all, or only example N)
    Examples {
        /// Run only this example (1 to 5)
        #[arg(value_parser = clap::value_parser!(u8).range(1..=5))]
        only: Option<u8>,
    },
    /// 5. Four tasks sleeping 5, 3, 2, 1: start all then join all, against start-join each
    Tasks,
    /// 6. pid, name, is_alive, join with a timeout, terminate, exitcode
    Attributes,
    /// 7. Ways a process ends: exit 0, an exit code, an error, abort, kill -9, kill -15
    Exits,
    /// 8. The notes' send_mail loop joins only its last process; the fixed loop
    SendMail,
    /// 9. Start the same children several times: their order is not controllable
    Order,
}

common::demo_cli!(Cli, Cmd);

fn main() -> std::process::ExitCode {
    common::demo::main(
        &[
            &starts::PIDS_CHILD,
            &starts::TASK,
            &starts::MY_PROCESS,
            &joins::R,
            &joins::SEND_MAIL,
            &joins::HELLO,
            &ends::SLEEPER,
            &ends::ENDING,
        ],
        run,
    )
}

fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.common.own_children("its children report this program's pid as their parent");
    if let Some(Cmd::Examples { only: Some(only) }) = cli.cmd {
        return joins::examples(&cli, Some(only));
    }
    common::demo::run_parts(
        &cli,
        &[
            (Cmd::Pids, starts::pids),
            (Cmd::TwoWays, starts::two_ways),
            (Cmd::StartJoin, starts::start_join),
            (Cmd::Examples { only: None }, |cli: &Cli| joins::examples(cli, None)),
            (Cmd::Tasks, joins::tasks),
            (Cmd::Attributes, ends::attributes),
            (Cmd::Exits, ends::exits),
            (Cmd::SendMail, joins::send_mail),
            (Cmd::Order, joins::order),
        ],
    )
}

/// A child process running `role` with `args`, started by the method the flags chose.
fn child(cli: &Cli, name: impl Into<String>, role: &'static Role, args: impl Serialize) -> Process {
    Process::new(name, role, args).start_method(cli.common.start_method)
}

/// Milliseconds in a duration, for events.
fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Seconds with three decimals, for people.
fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Runs `body` while every process records its events, then returns what was recorded and,
/// with `--timeline`, draws it as lanes.
fn recorded<T>(
    cli: &Cli,
    title: &str,
    style: &Style,
    body: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<Record>)> {
    let recording = Recording::start()?;
    let value = body()?;
    let records = recording.finish()?;
    if cli.timeline {
        timeline::show(title, &records, style);
    }
    Ok((value, records))
}

/// Reads the arguments a role was given.
fn args<T: serde::de::DeserializeOwned>(role: &str, value: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("decoding the arguments of {role}: {e}"))
}

/// This process's parent pid (`os.getppid()`).
fn parent_pid() -> i32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id() as i32
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// A child's sleep: the notes' `time.sleep(ms)` already scaled by `--speed`.
fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Python's end of the main process, made visible: if children are left unjoined when the
/// main code ends, the interpreter waits for them before the process exits (主进程会等待所有
/// 的子进程结束), and so does this demo before its next part.
fn wait_at_exit() -> anyhow::Result<()> {
    let left = common::process::live_children();
    if left.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = left.iter().map(|(_, name)| name.as_str()).collect();
    report::event(
        "waiting_at_exit",
        serde_json::json!({ "children": names }),
        format!(
            "the main code is over; as Python does at exit, the process still waits for {} \
             unjoined child(ren): {}",
            left.len(),
            names.join(", ")
        ),
    );
    let ended = common::process::end_main_code();
    report::event("reaped", serde_json::json!({ "children": names.len() }), "every child reaped");
    // A child killed while it was waited for at exit did not do its part either.
    match ended.iter().find(|e| e.exitcode != Some(0)) {
        Some(e) => Err(common::processes::lost::report_pid(e.pid, &e.name, e.exitcode, "tasks", 1)),
        None => Ok(()),
    }
}

/// `p.join()` where the child is meant to end with exit code 0: a child that did not (killed
/// by a signal from elsewhere, say) is reported as lost with its task, and the demo exits 1.
fn joined(p: &mut Process) -> anyhow::Result<Option<i32>> {
    let code = p.join()?;
    if code != Some(0) {
        return Err(common::processes::lost::report(p, "tasks", 1));
    }
    Ok(code)
}
