//! Part 1, isolation (数据隔离; 不同操作系统进程间内存分配): a child's write never reaches the
//! parent; after fork the same address holds different contents (copy-on-write, 写时复制).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::predict;
use common::process::{Process, Run, StartMethod};
use common::{ps, report};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Cli;
use crate::answers::{WorkDir, post, read_answer, succeeded};

/// The notes' `a = 50`.
const PARENT_VALUE: i64 = 50;
/// What every child writes into its `a`.
const CHILD_WRITES: i64 = 99;
/// How long the parent waits for a child's answer before it gives up.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// The notes' module-level `a`: a global whose value the parent sets at run time. It starts as 0
/// in every freshly started program.
static VALUE: AtomicI64 = AtomicI64::new(0);

/// The child of part 1, written the "subclass Process and override run" way.
#[derive(Debug, Serialize, Deserialize)]
pub struct Isolated {
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

pub fn run(cli: &Cli, work: &WorkDir) -> Result<()> {
    report::section("1. isolation (数据隔离): a child's write never reaches the parent");
    VALUE.store(PARENT_VALUE, Ordering::SeqCst);
    let address = address_of_value();
    common::event!("parent-value", { "address": address, "value": PARENT_VALUE }, "parent: a = {PARENT_VALUE} at address {address}");

    let guess = predict::ask(
        &cli.common,
        "parent-reads",
        format!(
            "a fork child and a spawn child each write {CHILD_WRITES} into the parent's a = \
                 {PARENT_VALUE}: what does the parent read afterwards?"
        ),
        predict::Expect::Count,
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
    common::event!("isolation", {
        "address": address, "before": PARENT_VALUE, "after": after, "unchanged": unchanged,
        "fork": fork, "spawn": spawn, "fork_same_address": fork_same,
        "spawn_same_address": spawn_same, "randomize_va_space": aslr,
    }, "parent after both children wrote {CHILD_WRITES}: a = {after} at {address}\n\
         fork: {}\n{spawn_note}",
        if fork_same {
            "same address, different contents: copy-on-write (写时复制), not sharing"
        } else {
            "a different address (unexpected after fork)"
        });
    report::say(
        "Python's id(a) is an address too. The notes saw one id(50) in parent and child and \
         called the small-int pool (小数池) 'third-party memory shared between processes'. It is \
         not shared: after fork the child's objects are copies at the same virtual addresses \
         (hence the same id), after spawn an equal id is a coincidence of layout, and a write in \
         one process is never seen by the other, as the 99 above shows.",
    );
    guess.reveal(after, "each child writes its own copy of a (copy-on-write after fork)");
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
