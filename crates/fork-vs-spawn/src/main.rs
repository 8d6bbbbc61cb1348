//! fork-vs-spawn — what a child process gets from its parent, by fork and by spawn.
//!
//! Five experiments from the notes (多进程, 开启进程 windows/linux 区别, 不同操作系统进程间内存分配,
//! 不同操作系统开启子进程的区别), each a subcommand; with none, the tour runs all five:
//!
//! 1. `isolation` (数据隔离): a child writes 99 into the parent's `a = 50`; the parent still reads
//!    50. After fork the child's `a` sits at the *same virtual address* with different contents:
//!    copy-on-write (写时复制), the Rust counterpart of the notes' `id(a)` experiment.
//! 2. `inherit`: a value the parent sets at run time is in a fork child (a copy of the parent's
//!    memory), not in a spawn child (the program started again from `main`: seed 003's Windows
//!    `NameError`), unless it is passed as an argument.
//! 3. `guard`: a spawned child that runs the parent's code because the `__main__` guard is
//!    missing starts a child, which starts a child... Shown safely: each level runs this program
//!    again without its role argument, and a depth counter stops the chain at `--cap`.
//! 4. `buffer`: the fork pitfall. A line still in a user-space buffer at fork is copied into the
//!    child and written twice to a file or pipe; flushing before fork writes it once.
//! 5. `cost`: start+join of N threads, fork children and spawn children, in microseconds, so
//!    "线程的开销远远小于进程" is measured here, not asserted.
//!
//! Every part checks its own claim and says so; a broken claim makes the demo exit 1.
//!
//! **What to watch for**: in the `isolation` table the fork child's command line is the parent's
//! (it *is* a copy of the parent), the spawn child's is `fork-vs-spawn __role=isolated ...`
//! (the program run again); the same address printed by parent and fork child with 50 and 99 in
//! it; in `guard` a chain of pids, each the parent (PPID) of the next, all reaped at the end.
//!
//! **Run it**:
//! ```text
//! make demo-fork-vs-spawn                               # the tour, a few seconds
//! make demo-fork-vs-spawn ARGS='isolation --hold 20'    # pause while both children are alive
//! ps -o pid,ppid,stat,comm,args -p <the pids it prints> # in a second terminal
//! ```
//!
//! Expected output (abridged; pids and addresses differ from run to run):
//! ```text
//! == 1. isolation (数据隔离): a child's write never reaches the parent ==
//!   0.000s [ 14202 fork-vs-spawn] parent: a = 50 at address 0x560fc4008738
//!   0.002s [ 14204 isolated-fork] fork child: found a = 50 at 0x560fc4008738, wrote 99, reads 99
//!   0.003s [ 14205 isolated-spawn] spawn child: found a = 0 at 0x55e64b40c738, wrote 99, reads 99
//!   0.004s [ 14202 fork-vs-spawn] both children are alive and waiting; ps shows them like this
//!                                     PID    PPID COMM            COMMAND LINE
//!                                   14202   13277 fork-vs-spawn   target/debug/fork-vs-spawn   (parent)
//!                                   14204   14202 isolated-fork   target/debug/fork-vs-spawn   (fork child)
//!                                   14205   14202 isolated-spawn  fork-vs-spawn __role=isolated isolated-spawn   (spawn child)
//!   0.004s [ 14202 fork-vs-spawn] parent after both children wrote 99: a = 50 at 0x560fc4008738
//!                                 fork: same address, different contents: copy-on-write (写时复制), not sharing
//! == 3. the __main__ guard: without it a spawn child starts children again ==
//!   0.015s [ 14202 fork-vs-spawn] depth 0: pid 14202, parent 13277: the program you started
//!   0.000s [ 14209 unguarded-1] depth 1: pid 14209, parent 14202: running the parent's code from main
//!   0.000s [ 14211 unguarded-2] depth 2: pid 14211, parent 14209: running the parent's code from main
//!   0.001s [ 14213 unguarded-3] depth 3: pid 14213, parent 14211: running the parent's code from main
//! == 4. the fork pitfall: a buffer copied by fork is written twice ==
//!   0.034s [ 14202 fork-vs-spawn] without flush before fork: the parent's line is in .../buffer-unflushed.txt 2 times
//!   0.038s [ 14202 fork-vs-spawn] with flush before fork: the parent's line is in .../buffer-flushed.txt 1 time
//! == 5. the cost of a start: threads, fork children, spawn children ==
//!                                 kind      µs per start  × a thread
//!                                 thread            74.6        1.0
//!                                 fork             835.3       11.2
//!                                 spawn           2365.0       31.7
//! ```
//! (Each level of the unguarded chain is a freshly started program: its clock starts at 0.)
//!
//! Platform notes: Linux first (`/proc` for the table, `PR_SET_NAME` for the names). The fork
//! parts need a Unix system; on Windows only spawn exists, which is why Python's notes see the
//! `NameError` there. With ASLR off (`/proc/sys/kernel/randomize_va_space` = 0, or
//! `setarch -R`) a spawn child's address can equal the parent's: equal numbers, separate memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use common::cli::CommonArgs;
use common::process::{Process, Role, Run, StartMethod};
use common::startcost::{self, Starter};
use common::{ps, report};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The notes' `a = 50`.
const PARENT_VALUE: i64 = 50;
/// What every child writes into its `a`.
const CHILD_WRITES: i64 = 99;
/// How deep the unguarded chain of `guard` may go (`--cap`), and the most a user may ask for.
const DEFAULT_CAP: usize = 3;
const MAX_CAP: usize = 8;
/// Children started and joined per round in `cost` (`--count`), and rounds (`--rounds`).
const DEFAULT_COUNT: usize = 50;
const DEFAULT_ROUNDS: usize = 3;
/// How long the parent waits for a child's answer before it gives up.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// Carries the depth of the unguarded chain to the next level (see `guard`).
const ENV_UNGUARDED_DEPTH: &str = "FORK_VS_SPAWN_UNGUARDED_DEPTH";

/// The notes' module-level `a`: a global whose value the parent sets at run time. It starts as 0
/// in every freshly started program.
static VALUE: AtomicI64 = AtomicI64::new(0);
/// A value that exists only once the parent's `run` has computed it (part 2).
static RUNTIME_VALUE: OnceLock<String> = OnceLock::new();
/// A value compiled into the program: every process running it has it, fork or spawn (like a
/// Python name defined at module level, which a spawn child defines again on import).
static COMPILED_IN: &str = "compiled into the program";

const ABOUT: &str = "\
fork copies the running parent (its memory, values, unflushed buffers); spawn runs the program
again from main. Five experiments: isolation, inherit, guard, buffer, cost (none: all five).";

const DIFFERENCES: &str = "\
Differences from Python:
  * Python's default start method differs by platform and version: fork on Linux up to 3.13,
    forkserver from 3.14, spawn on macOS (3.8+) and Windows. Here every part shows fork and
    spawn side by side, so --start-method changes nothing.
  * id(a) is an address, like `&a as *const _` here. Equal ids in two processes are not shared
    memory: after fork they are copies at the same virtual address; after spawn they are equal
    only by layout (on Windows a DLL such as python3X.dll sits at one address in every process
    until reboot). The notes' small-int pool (小数池) is not shared between processes.
  * Rust has no NameError: an undefined name does not compile. What a spawn child lacks is a
    value set at run time; a Python spawn child re-runs module-level code, so names defined
    there exist again, like a Rust static initialised at compile time.
  * CPython stops the unguarded chain at the first child: Process.start() during the child's
    import of the main module raises RuntimeError (\"An attempt has been made to start a new
    process before the current process has finished its bootstrapping phase\"). The endless
    chain is simulated here and stopped by --cap.
  * multiprocessing flushes sys.stdout and sys.stderr before it forks, as this crate's Process
    does; a bare os.fork() after print() into a pipe prints the line twice. Rust's stdout is
    line-buffered even into a pipe; these demos write every line with one write(2), no buffer.
  * Python 3.12+ warns (DeprecationWarning) when os.fork() runs in a process with threads: the
    child gets only the forking thread, and a lock another thread held stays locked. This
    crate's fork child runs only the code given to it, then _exit.
  * No GIL: Rust threads run in parallel. `cost` measures Rust's own figures; `make bench` puts
    them beside Python's threading.Thread and multiprocessing.Process.";

/// The command line; `--help` shows [`ABOUT`], the flags, then [`DIFFERENCES`].
#[derive(Debug, Parser)]
#[command(name = "fork-vs-spawn", about = ABOUT, long_about = None, after_help = DIFFERENCES)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Folder for the children's answers and the buffer files (kept); default: a temporary
    /// folder removed at the end
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// How deep the unguarded chain of `guard` may go
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_CAP,
          value_parser = parse_cap)]
    cap: usize,

    /// Children (and threads) started and joined per round in `cost`
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_COUNT,
          value_parser = parse_count)]
    count: usize,

    /// Rounds in `cost`; the table shows each figure's median
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_ROUNDS,
          value_parser = parse_rounds)]
    rounds: usize,

    #[command(flatten)]
    common: CommonArgs,
}

impl common::demo::DemoCli for Cli {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Cmd {
    /// A child writes into the parent's value: same address after fork, different contents
    Isolation,
    /// A value set at run time: in a fork child, not in a spawn child unless passed
    Inherit,
    /// A spawned child without the __main__ guard starts children again (stopped at --cap)
    Guard,
    /// Text buffered before fork is written twice; flushing first writes it once
    Buffer,
    /// Microseconds per start+join of a thread, a fork child and a spawn child
    Cost,
}

fn parse_cap(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_CAP).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a depth from 1 to {MAX_CAP}")),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number of children from 1 to 10000")),
    }
}

fn parse_rounds(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number of rounds from 1 to 100")),
    }
}

static ISOLATED: Role = Role::of::<Isolated>();
static INHERITOR: Role = Role::new("inheritor", inheritor);

fn main() -> ExitCode {
    common::demo::main(&[&ISOLATED, &INHERITOR, &startcost::NOOP], run)
}

fn run(cli: Cli) -> Result<()> {
    let work = WorkDir::new(cli.dir.as_deref())?;
    match cli.cmd {
        Some(Cmd::Isolation) => isolation(&cli, &work),
        Some(Cmd::Inherit) => inherit(&work),
        Some(Cmd::Guard) => guard(&cli, &work),
        Some(Cmd::Buffer) => buffer(&work),
        Some(Cmd::Cost) => cost(&cli),
        None => {
            isolation(&cli, &work)?;
            inherit(&work)?;
            guard(&cli, &work)?;
            buffer(&work)?;
            cost(&cli)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. isolation

/// The child of part 1, written the "subclass Process and override run" way.
#[derive(Debug, Serialize, Deserialize)]
struct Isolated {
    method: String,
    /// The parent's value, sent along: a spawn child has no other way to learn it.
    value: i64,
    answer: PathBuf,
}

impl Run for Isolated {
    const ROLE: &'static str = "isolated";

    fn run(self) -> Result<()> {
        // Blocked before answering, so the parent's release, sent after the answer, waits as a
        // pending signal instead of killing this child (SIGUSR1's default action).
        let release = release::block()?;
        let found = VALUE.load(Ordering::SeqCst);
        if found != self.value {
            // A spawn child starts from main: its `a` is the compiled-in 0 until it copies in
            // the value it was sent. A fork child found the parent's 50 already.
            VALUE.store(self.value, Ordering::SeqCst);
        }
        VALUE.store(CHILD_WRITES, Ordering::SeqCst);
        let reads = VALUE.load(Ordering::SeqCst);
        let address = address_of_value();
        let answer = json!({
            "method": self.method, "pid": std::process::id(), "address": address,
            "found": found, "wrote": CHILD_WRITES, "reads": reads,
        });
        report::event(
            "child-value",
            answer.clone(),
            format!(
                "{} child: found a = {found} at {address}, wrote {CHILD_WRITES}, reads {reads}",
                self.method
            ),
        );
        post(&self.answer, &answer)?;
        release::wait(release)
    }
}

fn isolation(cli: &Cli, work: &WorkDir) -> Result<()> {
    report::section("1. isolation (数据隔离): a child's write never reaches the parent");
    VALUE.store(PARENT_VALUE, Ordering::SeqCst);
    let address = address_of_value();
    report::event(
        "parent-value",
        json!({ "address": address, "value": PARENT_VALUE }),
        format!("parent: a = {PARENT_VALUE} at address {address}"),
    );

    let mut children = Vec::new();
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let answer = work.fresh(&format!("isolation-{method}.json"))?;
        let child = Isolated { method: method.to_string(), value: PARENT_VALUE, answer };
        // The spawn child runs this program again as `fork-vs-spawn __role=isolated NAME`.
        let mut process =
            Process::from_run(format!("isolated-{method}"), child).start_method(method);
        process.start()?;
        children.push((process, method));
    }
    let mut answers = Vec::new();
    for (child, method) in &mut children {
        answers.push(collect(&work.path.join(format!("isolation-{method}.json")), child)?);
    }
    let me = std::process::id() as i32;
    let pids: Vec<i32> = children.iter().filter_map(|(c, _)| c.pid()).collect();
    show_processes(
        "both children are alive and waiting; ps shows them like this",
        &[("parent", me), ("fork child", pids[0]), ("spawn child", pids[1])],
    );
    cli.common.hold("fork and spawn children alive", &[me, pids[0], pids[1]]);
    for (child, _) in &mut children {
        release::send(child)?;
        child.join()?;
        succeeded(child, "the isolation child")?;
    }

    let after = VALUE.load(Ordering::SeqCst);
    let (fork, spawn) = (&answers[0], &answers[1]);
    let fork_same = fork["address"] == address.as_str();
    let spawn_same = spawn["address"] == address.as_str();
    let aslr = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
        .ok()
        .and_then(|t| t.trim().parse::<u8>().ok());
    let unchanged = after == PARENT_VALUE;
    let spawn_note = if spawn_same {
        "spawn: the same address here (address randomisation off?), still a separate copy"
    } else {
        "spawn: a different address: a new program, laid out afresh (ASLR, 地址空间布局随机化)"
    };
    report::event(
        "isolation",
        json!({
            "address": address, "before": PARENT_VALUE, "after": after, "unchanged": unchanged,
            "fork": fork, "spawn": spawn, "fork_same_address": fork_same,
            "spawn_same_address": spawn_same, "randomize_va_space": aslr,
        }),
        format!(
            "parent after both children wrote {CHILD_WRITES}: a = {after} at {address}\n\
             fork: {}\n{spawn_note}",
            if fork_same {
                "same address, different contents: copy-on-write (写时复制), not sharing"
            } else {
                "a different address (unexpected after fork)"
            }
        ),
    );
    report::say(
        "Python's id(a) is an address too. The notes saw one id(50) in parent and child and \
         called the small-int pool (小数池) 'third-party memory shared between processes'. It is \
         not shared: after fork the child's objects are copies at the same virtual addresses \
         (hence the same id), after spawn an equal id is a coincidence of layout, and a write in \
         one process is never seen by the other, as the 99 above shows.",
    );
    if !unchanged || !fork_same {
        bail!("isolation broken: parent reads {after}, fork child's address same: {fork_same}");
    }
    Ok(())
}

/// The address of the global `a` in this process, as `{:p}` prints it.
fn address_of_value() -> String {
    format!("{:p}", &VALUE as *const AtomicI64)
}

/// Prints the pid, parent, name and command line of the given processes, read from `/proc`.
fn show_processes(title: &str, who: &[(&str, i32)]) {
    let mut rows = Vec::new();
    let mut text = format!("{title}\n    PID    PPID COMM            COMMAND LINE");
    for (role, pid) in who {
        let Some(info) = ps::stat(*pid) else { continue };
        text.push_str(&format!(
            "\n{:>7} {:>7} {:<15} {}   ({role})",
            info.pid, info.ppid, info.comm, info.cmdline
        ));
        rows.push(json!({
            "role": role, "pid": info.pid, "ppid": info.ppid, "comm": info.comm,
            "cmdline": info.cmdline, "state": info.state.to_string(),
        }));
    }
    report::event("processes", json!({ "title": title, "rows": rows }), text);
}

// ---------------------------------------------------------------------------------------------
// 2. inherited state

#[derive(Debug, Serialize, Deserialize)]
struct InheritArgs {
    method: String,
    /// The parent's run-time value, when the parent passes it explicitly.
    passed: Option<String>,
    answer: PathBuf,
}

/// The child of part 2: what does it find of the parent's run-time value?
fn inheritor(args: Value) -> Result<()> {
    let args: InheritArgs = serde_json::from_value(args).context("decoding the child's args")?;
    let passed = args.passed.is_some();
    if let Some(value) = args.passed {
        // The explicit way, which works with every start method: the value came as an argument.
        let _ = RUNTIME_VALUE.set(value);
    }
    let found = RUNTIME_VALUE.get().cloned();
    let text = match &found {
        Some(v) => format!("{} child (passed: {passed}): has it: {v:?}", args.method),
        None => format!(
            "{} child (passed: {passed}): does not have it; Python says NameError: name 'a' is \
             not defined",
            args.method
        ),
    };
    let answer = json!({
        "method": args.method, "passed": passed, "found": found, "compiled_in": COMPILED_IN,
        "pid": std::process::id(),
    });
    report::event("child-runtime-value", answer.clone(), text);
    post(&args.answer, &answer)
}

fn inherit(work: &WorkDir) -> Result<()> {
    report::section("2. inherited state: a fork child has the parent's values, a spawn child not");
    let value = RUNTIME_VALUE
        .get_or_init(|| {
            format!(
                "set at run time by pid {} at {} ns",
                std::process::id(),
                report::monotonic_ns()
            )
        })
        .clone();
    report::event(
        "parent-runtime-value",
        json!({ "value": value, "compiled_in": COMPILED_IN }),
        format!("parent: a = {value:?} (and a static {COMPILED_IN:?})"),
    );
    let cases = [
        ("inherit-fork", StartMethod::Fork, None),
        ("inherit-spawn", StartMethod::Spawn, None),
        ("inherit-passed", StartMethod::Spawn, Some(value.clone())),
    ];
    let mut results = Vec::new();
    let mut as_expected = true;
    for (i, (name, method, passed)) in cases.into_iter().enumerate() {
        let expect_it = method == StartMethod::Fork || passed.is_some();
        let answer = work.fresh(&format!("inherit-{i}.json"))?;
        let args = InheritArgs { method: method.to_string(), passed, answer: answer.clone() };
        let mut child = Process::new(name, &INHERITOR, args).start_method(method);
        child.start()?;
        child.join()?;
        succeeded(&child, "the inherit child")?;
        let answer = read_answer(&answer)?
            .ok_or_else(|| anyhow!("{child} ended without answering in {}", answer.display()))?;
        let has_it = answer["found"] == value.as_str();
        as_expected &= has_it == expect_it && answer["compiled_in"] == COMPILED_IN;
        results.push(json!({ "name": name, "has_it": has_it, "answer": answer }));
    }
    report::event(
        "inherit",
        json!({ "value": value, "results": results, "as_expected": as_expected }),
        "fork child: has it (a copy of the parent's memory); spawn child: does not (it ran \
             main afresh, like Windows' CreateProcess); spawn child given it as an argument: has \
             it.\nThe static compiled into the program is in all three.",
    );
    if !as_expected {
        bail!("inherited state not as expected: {results:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. the guard

/// The part runs the same code at every level of the chain: the program the user started is
/// depth 0; each level it starts runs this program again (without the `__role=` argument that
/// the guard would recognise), reaches this function again, and starts the next level.
fn guard(cli: &Cli, work: &WorkDir) -> Result<()> {
    let depth: usize = match std::env::var(ENV_UNGUARDED_DEPTH) {
        Ok(text) => text.parse().with_context(|| format!("{ENV_UNGUARDED_DEPTH}={text:?}"))?,
        Err(_) => 0,
    };
    let (me, parent) = (std::process::id() as i32, parent_pid());
    if depth == 0 {
        report::section("3. the __main__ guard: without it a spawn child starts children again");
        report::say(format!(
            "A spawn child runs the program from the top. Python's `if __name__ == '__main__':` \
             keeps the parent's code from running there; in these demos the `__role=` dispatch \
             at the top of main does. Here it is bypassed on purpose: each level runs this \
             program again with the same arguments and no role, so it reaches the line that \
             starts a child and starts one. A depth counter stops the chain at --cap {}.",
            cli.cap
        ));
        for old in 1..=MAX_CAP {
            work.fresh(&format!("guard-{old}.json"))?;
        }
    } else {
        report::set_who(&format!("unguarded-{depth}"));
        post(
            &work.path.join(format!("guard-{depth}.json")),
            &json!({ "depth": depth, "pid": me, "ppid": parent }),
        )?;
    }
    report::event(
        "guard-level",
        json!({ "depth": depth, "cap": cli.cap, "pid": me, "ppid": parent }),
        if depth == 0 {
            format!("depth 0: pid {me}, parent {parent}: the program you started")
        } else {
            format!("depth {depth}: pid {me}, parent {parent}: running the parent's code from main")
        },
    );
    if depth >= cli.cap {
        report::say(format!(
            "depth {depth} = --cap: this level starts no child. Without the cap the chain would \
             grow until the process table or the user's process limit was full."
        ));
        cli.common.hold("the unguarded chain at its cap", &chain_up(me, depth));
        return Ok(());
    }

    // The line a guard would keep from running in a child: start a child running this program.
    let mut child_args = vec!["guard".to_string(), "--cap".into(), cli.cap.to_string()];
    child_args.extend(["--dir".to_string(), work.path.display().to_string()]);
    if report::json_mode() {
        child_args.push("--json".into());
    }
    if let Some(hold) = cli.common.hold {
        // Passed down the chain; only the deepest level holds.
        child_args.extend(["--hold".to_string(), hold.to_string()]);
    }
    let exe = std::env::current_exe().context("finding this program to run it again")?;
    let next = depth + 1;
    let mut child =
        Process::from_fn(format!("unguarded-{next}"), move || run_again(&exe, &child_args, next));
    child.start()?;
    child.join()?;
    succeeded(&child, &format!("level {next} of the unguarded chain"))?;
    if depth == 0 { check_chain(cli.cap, work) } else { Ok(()) }
}

/// In the child of a level: replace this process with the program, started again without a
/// role, as a spawn with a missing guard would. Returns only if exec failed.
fn run_again(exe: &Path, args: &[String], depth: usize) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = std::process::Command::new(exe)
            .arg0("fork-vs-spawn")
            .args(args)
            .env(ENV_UNGUARDED_DEPTH, depth.to_string())
            .exec();
        Err(error).with_context(|| format!("exec {}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        let _ = (exe, args, depth);
        bail!("the guard chain needs a Unix system")
    }
}

/// The pids from the program the user started down to this level.
fn chain_up(me: i32, depth: usize) -> Vec<i32> {
    let mut chain = vec![me];
    for _ in 0..depth {
        match ps::stat(*chain.last().unwrap_or(&me)) {
            Some(info) => chain.push(info.ppid),
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// At depth 0, after the chain ended: every level answered, each the child of the one before,
/// all distinct, and none of them is left (alive or zombie).
fn check_chain(cap: usize, work: &WorkDir) -> Result<()> {
    let me = std::process::id() as i32;
    let mut chain = Vec::new();
    let mut expected_parent = me;
    let mut linked = true;
    for depth in 1..=cap {
        let path = work.path.join(format!("guard-{depth}.json"));
        let level = read_answer(&path)?.ok_or_else(|| {
            anyhow!("level {depth} of the chain never answered ({})", path.display())
        })?;
        let pid = level["pid"].as_i64().unwrap_or(0) as i32;
        linked &= level["ppid"].as_i64() == Some(i64::from(expected_parent));
        expected_parent = pid;
        chain.push(level);
    }
    let mut pids: Vec<i64> = chain.iter().filter_map(|l| l["pid"].as_i64()).collect();
    pids.push(i64::from(me));
    pids.sort_unstable();
    pids.dedup();
    let distinct = pids.len() == cap + 1;
    let mut left: Vec<i32> = ps::children_of(me);
    left.extend(chain.iter().filter_map(|l| l["pid"].as_i64()).map(|p| p as i32).filter(|p| {
        ps::stat(*p).is_some_and(|info| info.sid == ps::stat(me).map_or(-1, |m| m.sid))
    }));
    left.sort_unstable();
    left.dedup();
    report::event(
        "guard",
        json!({ "cap": cap, "levels": chain.len(), "chain": chain, "linked": linked,
                "distinct": distinct, "left": left }),
        format!(
            "the chain stopped at depth {cap}: {} unguarded levels, each the child of the one \
             before: {linked}; every one reaped: {}.\n\
             CPython stops it earlier: in a spawn child that is still importing the main module, \
             Process.start() raises RuntimeError ('An attempt has been made to start a new \
             process before the current process has finished its bootstrapping phase'); that \
             child exits with 1 and the parent goes on.",
            chain.len(),
            left.is_empty()
        ),
    );
    if !linked || !distinct || !left.is_empty() {
        bail!("the unguarded chain is not as expected (linked {linked}, left {left:?})");
    }
    Ok(())
}

fn parent_pid() -> i32 {
    ps::stat(std::process::id() as i32).map_or(0, |info| info.ppid)
}

// ---------------------------------------------------------------------------------------------
// 4. the buffer pitfall

fn buffer(work: &WorkDir) -> Result<()> {
    report::section("4. the fork pitfall: a buffer copied by fork is written twice");
    let me = std::process::id();
    let line = format!("written by parent {me} before fork");
    let mut copies_seen = Vec::new();
    for flush_before_fork in [false, true] {
        let name = if flush_before_fork { "buffer-flushed.txt" } else { "buffer-unflushed.txt" };
        let path = work.fresh(name)?;
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let writer = Arc::new(Mutex::new(BufWriter::new(file)));
        // The line goes into the BufWriter's memory, not yet to the file.
        writeln!(lock(&writer), "{line}").context("writing into the buffer")?;
        if flush_before_fork {
            // The fix: the buffer is empty when fork copies it.
            lock(&writer).flush().with_context(|| format!("flushing {}", path.display()))?;
        }
        let child_writer = Arc::clone(&writer);
        let mut child = Process::from_fn("buffer-child", move || {
            // The child's copy of the BufWriter still holds whatever the parent had buffered.
            let mut w = lock(&child_writer);
            writeln!(w, "child {} was here", std::process::id())?;
            w.flush()?;
            Ok(())
        });
        child.start()?;
        child.join()?;
        succeeded(&child, "the buffer child")?;
        {
            let mut w = lock(&writer);
            writeln!(w, "parent {me} after join")?;
            w.flush().with_context(|| format!("flushing {}", path.display()))?;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading back {}", path.display()))?;
        let copies = text.lines().filter(|l| *l == line).count();
        let expected = if flush_before_fork { 1 } else { 2 };
        copies_seen.push(copies);
        report::event(
            "buffer",
            json!({ "flush_before_fork": flush_before_fork, "path": path, "copies": copies,
                    "expected": expected, "lines": text.lines().collect::<Vec<_>>() }),
            format!(
                "{} flush before fork: the parent's line is in {} {copies} time{}\n{}",
                if flush_before_fork { "with" } else { "without" },
                path.display(),
                if copies == 1 { "" } else { "s" },
                text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
            ),
        );
    }
    report::say(
        "Why: fork copies all memory, user-space buffers included; both copies are flushed \
         sooner or later. Rust's stdout is line-buffered (a LineWriter) even into a pipe, so a \
         println! is written at its newline, but a print! without one would be copied. C's stdio \
         and Python's sys.stdout are block-buffered into a pipe or file: `print(1); os.fork()` \
         piped through `| cat` prints 1 twice (unless PYTHONUNBUFFERED is set). So \
         common::process flushes stdout and stderr before every fork (multiprocessing does the \
         same), and every demo line is one write(2), never buffered.",
    );
    if copies_seen != [2, 1] {
        bail!("buffer copies were {copies_seen:?}, expected [2, 1]");
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// 5. cost

fn cost(cli: &Cli) -> Result<()> {
    report::section("5. the cost of a start: threads, fork children, spawn children");
    let (count, rounds) = (cli.count, cli.rounds);
    let measured = startcost::measure(&Starter::ALL, count, rounds)?;
    let figure = |kind: Starter| {
        measured.iter().find(|(k, _)| *k == kind).map_or(f64::NAN, |(_, v)| startcost::median(v))
    };
    let thread = figure(Starter::Thread);
    let mut text = format!(
        "start+join of {count}, one after another; median of {rounds} round(s)\n\
         kind      µs per start  × a thread"
    );
    for kind in Starter::ALL {
        let us = figure(kind);
        text.push_str(&format!("\n{:<9} {us:>12.1} {:>10.1}", kind.key(), us / thread));
    }
    let fork = figure(Starter::Fork);
    let spawn = figure(Starter::Spawn);
    let rounds_json: serde_json::Map<String, Value> =
        measured.iter().map(|(k, v)| (k.key().to_string(), json!(v))).collect();
    report::event(
        "cost",
        json!({ "count": count, "rounds": rounds, "thread_us": thread, "fork_us": fork,
                "spawn_us": spawn, "per_round_us": rounds_json }),
        text,
    );
    let verdict = if thread < fork && thread < spawn {
        format!(
            "measured here: a thread is {:.0}x cheaper than a fork child and {:.0}x cheaper than a \
             spawn child",
            fork / thread,
            spawn / thread
        )
    } else {
        "measured here, threads were not the cheapest this time (a busy machine?)".to_string()
    };
    report::say(format!(
        "{verdict}. The notes (线程的创建、切换和销毁开销远远小于进程): a thread needs a stack and a \
         kernel task; fork also copies the page tables; spawn also loads and starts the program \
         from main. `make bench` puts these beside Python's."
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The children's answers

/// Where the children's answers (and the buffer files) go: `--dir`, kept, or a temporary
/// folder removed at the end.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> Result<WorkDir> {
        let (path, temporary) = match dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => {
                remove_abandoned_folders();
                (std::env::temp_dir().join(format!("{TEMP_PREFIX}{}", std::process::id())), true)
            }
        };
        std::fs::create_dir_all(&path).map_err(|e| {
            let what = if temporary { "the temporary folder" } else { "--dir" };
            common::demo::bad_input(format!("creating {what} {}: {e}", path.display()))
        })?;
        Ok(WorkDir { path, temporary })
    }

    /// The path of `name` in the folder, with any file left there by an earlier run removed.
    fn fresh(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
            Err(e) => Err(e).with_context(|| format!("removing the old {}", path.display())),
        }
    }
}

/// The temporary folder of a run is `<temp>/fork-vs-spawn-<pid>`.
const TEMP_PREFIX: &str = "fork-vs-spawn-";

/// Removes the temporary folders of earlier runs whose process is gone: a run ended by Ctrl-C
/// leaves with `_exit` (see `common::signals`), so its folder was never removed.
fn remove_abandoned_folders() {
    if !cfg!(target_os = "linux") {
        return; // `ps::stat` reads /proc: elsewhere it cannot tell a live run from a gone one
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)?.parse::<i32>().ok());
        if pid.is_some_and(|pid| ps::stat(pid).is_none()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Only the process that made the folder gets here: fork children leave with _exit.
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child's answer to its parent. Processes share no memory, so the answer travels through
/// the kernel: a small JSON file here (a pipe or a queue in other demos). It is written under
/// another name and renamed, so the parent never reads half an answer.
fn post(path: &Path, answer: &Value) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, answer.to_string())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The answer at `path`, if it is there yet.
fn read_answer(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Waits for the answer of a child that stays alive after answering (it waits to be released),
/// so `join` cannot tell when the answer is there: the file is polled, with a deadline.
fn collect(path: &Path, child: &mut Process) -> Result<Value> {
    let deadline = Instant::now() + ANSWER_DEADLINE;
    loop {
        if let Some(answer) = read_answer(path)? {
            return Ok(answer);
        }
        if !child.is_alive() {
            if let Some(answer) = read_answer(path)? {
                return Ok(answer);
            }
            succeeded(child, "a child that had not answered yet")?;
            bail!("{child} ended without answering in {}", path.display());
        }
        if Instant::now() >= deadline {
            bail!("{child} did not answer in {} within {ANSWER_DEADLINE:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Ok if `child` (joined) exited with 0. (A child killed by the same Ctrl-C that reached the
/// demo is no failure of ours: the runner sees the stop under way and leaves the exit to it.)
fn succeeded(child: &Process, what: &str) -> Result<()> {
    if child.exitcode() == Some(0) {
        return Ok(());
    }
    bail!("{child}: {what} failed")
}

/// The release of a child that waits after answering, so that the parent can show it alive.
#[cfg(unix)]
mod release {
    use anyhow::{Context, Result};
    use common::process::Process;
    use nix::sys::signal::{SigSet, Signal};

    /// Makes SIGUSR1 the only blocked signal of the calling (single-threaded child) process;
    /// see `wait`. The whole mask is set, not added to, so that whatever else was blocked,
    /// Ctrl-C and `terminate` still end this child.
    pub fn block() -> Result<SigSet> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGUSR1);
        set.thread_set_mask().context("sigprocmask(SIG_SETMASK, SIGUSR1)")?;
        Ok(set)
    }

    /// Sleeps until the parent sends SIGUSR1 (or a stop signal ends the child).
    pub fn wait(set: SigSet) -> Result<()> {
        set.wait().context("sigwait(SIGUSR1)")?;
        Ok(())
    }

    /// Lets a waiting child go on and end.
    pub fn send(child: &Process) -> Result<()> {
        child.signal(Signal::SIGUSR1 as i32)
    }
}

#[cfg(not(unix))]
mod release {
    use anyhow::Result;
    use common::process::Process;
    pub fn block() -> Result<()> {
        Ok(())
    }
    pub fn wait(_: ()) -> Result<()> {
        Ok(())
    }
    pub fn send(_: &Process) -> Result<()> {
        Ok(())
    }
}
