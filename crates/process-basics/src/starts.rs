//! Parts 1 to 3: who is whose parent, two ways to start a process, `start` versus `join`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::predict;
use common::process::{Process, Role, Run};
use common::{ps, report};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Cli, args, child, ms, parent_pid, secs, sleep_ms};

/// Seed 002's `task` sleeps 3 seconds.
const TASK_SECONDS: f64 = 3.0;

/// The arguments of [`TASK`]: Python's `Process(target=task, args=(name, n))`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TaskArgs {
    pub name: String,
    pub sleep_ms: u64,
}

/// Way one: a named function is the child's target.
pub static TASK: Role = Role::new("task", task);

fn task(value: Value) -> Result<()> {
    let a: TaskArgs = args("task", value)?;
    common::event!("running", { "way": "target function", "name": a.name, "sleep_ms": a.sleep_ms }, "{} is running (pid {}), sleeping {} ms", a.name, std::process::id(), a.sleep_ms);
    sleep_ms(a.sleep_ms);
    common::event!("done", { "name": a.name }, "{} is done", a.name);
    Ok(())
}

/// Way two: `class MyProcess(Process): def run(self): ...`. The value is copied into the child
/// (serialized for spawn), never shared.
#[derive(Debug, Serialize, Deserialize)]
pub struct MyProcess {
    pub name: String,
    pub sleep_ms: u64,
}

impl Run for MyProcess {
    const ROLE: &'static str = "my-process";
    fn run(self) -> Result<()> {
        common::event!("running", { "way": "run method", "name": self.name, "sleep_ms": self.sleep_ms }, "{} is running! (MyProcess::run, pid {})", self.name, std::process::id());
        sleep_ms(self.sleep_ms);
        common::event!("done", { "name": self.name }, "{} is done", self.name);
        Ok(())
    }
}

pub static MY_PROCESS: Role = Role::of::<MyProcess>();

/// A child that says who it and its parent are, then sleeps.
pub static PIDS_CHILD: Role = Role::new("pids-child", pids_child);

fn pids_child(value: Value) -> Result<()> {
    let a: TaskArgs = args("pids-child", value)?;
    let (pid, ppid) = (std::process::id(), parent_pid());
    common::event!("child_pids", { "pid": pid, "ppid": ppid }, "{pid} is running, parent is <{ppid}>   (os.getpid(), os.getppid())");
    sleep_ms(a.sleep_ms);
    common::event!("done", { "pid": pid }, "{pid} is done, parent is <{ppid}>");
    Ok(())
}

/// Part 1: pid and ppid, checked against the kernel's own table.
pub fn pids(cli: &Cli) -> Result<()> {
    report::section("1. pid and ppid (查看进程的pid和ppid)");
    let me = std::process::id() as i32;
    let ppid = parent_pid();
    let parent = ps::stat(ppid);
    let parent_comm = parent.as_ref().map_or("?", |p| p.comm.as_str()).to_string();
    common::event!("pids", { "pid": me, "ppid": ppid, "parent_comm": parent_comm,
                "parent_cmdline": parent.as_ref().map(|p| p.cmdline.clone()) }, "I am pid {me}; my parent is pid {ppid} ({parent_comm}): whatever started me (a \
             shell, make, cargo, an IDE) is my parent, as every program started from PyCharm \
             is PyCharm's child");
    // The children outlive a --hold, so that ps in another terminal finds them running.
    let hold = Duration::from_secs_f64(cli.common.hold.unwrap_or(0.0));
    let sleep = ms(cli.common.notes_sleep(TASK_SECONDS) + hold);
    let mut kids = Vec::new();
    for i in 1..=2 {
        let name = format!("child-{i}");
        let mut p =
            child(cli, &name, &PIDS_CHILD, TaskArgs { name: name.clone(), sleep_ms: sleep });
        p.start()?;
        let pid = p.pid().unwrap_or(0);
        common::event!("started", { "name": name, "pid": pid }, "我有一个儿子是 {pid}: I have a child, pid {pid} ({name})");
        kids.push(p);
    }
    // The kernel's record of each child's parent: field 4 of /proc/PID/stat.
    let checks: Vec<Value> = kids
        .iter()
        .map(|p| {
            let pid = p.pid().unwrap_or(0);
            json!({ "pid": pid, "ppid": ps::stat(pid).map(|i| i.ppid) })
        })
        .collect();
    let all_mine = checks.iter().all(|c| c["ppid"] == me);
    report::event(
        "ppid_check",
        json!({ "children": checks, "all_mine": all_mine }),
        if all_mine {
            format!("/proc/PID/stat of each child says its ppid is {me}: my pid")
        } else {
            format!("a child's ppid in /proc is not my pid {me}: {checks:?}")
        },
    );
    ps::show_tree("this demo's process tree (ps -o pid,ppid,stat,comm)");
    let mut pids = vec![me];
    pids.extend(kids.iter().filter_map(Process::pid));
    cli.common.hold("two children are running", &pids);
    for p in &mut kids {
        crate::joined(p)?;
    }
    if !all_mine {
        bail!("a child's ppid in /proc was not this program's pid {me}: {checks:?}");
    }
    Ok(())
}

/// Part 2: a target function, and a type that implements `run`.
pub fn two_ways(cli: &Cli) -> Result<()> {
    report::section("2. two ways to start a process (开启进程的两种方式)");
    let sleep = ms(cli.common.notes_sleep(2.0));
    report::say(
        "way 1: Process::new(name, &TASK, args), Python's Process(target=task, args=(...))",
    );
    let mut p1 = child(cli, "task", &TASK, TaskArgs { name: "task".into(), sleep_ms: sleep });
    report::say(
        "way 2: Process::from_run(name, MyProcess { .. }), Python's class MyProcess(Process) \
         with run()",
    );
    let mut p2 =
        Process::from_run("MyProcess", MyProcess { name: "MyProcess".into(), sleep_ms: sleep })
            .start_method(cli.common.start_method);
    p1.start()?;
    p2.start()?;
    common::event!("started", { "target_function": p1.pid(), "run_method": p2.pid() }, "主: started {p1} and {p2}");
    let codes = (crate::joined(&mut p1)?, crate::joined(&mut p2)?);
    common::event!("joined", { "exitcodes": [codes.0, codes.1] }, "joined both: {p1}, {p2}");
    Ok(())
}

/// Part 3: `start` returns at once, `join` blocks until the child has ended.
pub fn start_join(cli: &Cli) -> Result<()> {
    report::section("3. start is asynchronous, join blocks (异步非阻塞 / 同步阻塞)");
    let sleep = cli.common.notes_sleep(TASK_SECONDS);
    let mut p = child(cli, "task", &TASK, TaskArgs { name: "task".into(), sleep_ms: ms(sleep) });
    let guess = predict::ask(
        &cli.common,
        "first",
        "p.start(); print('主流程'): which line comes first, the parent's 主流程 or the child's \
         'task is running'?",
        predict::Expect::Choice(&["main", "child"]),
    );
    // With --predict, the lines of both processes are recorded, to see whose came first.
    let recording = guess.asked().then(common::timeline::Recording::start).transpose()?;
    let t = Instant::now();
    p.start()?;
    let start_took = t.elapsed();
    // The child exists the moment start() returns: the kernel shows it in /proc already.
    let seen = p.pid().and_then(common::ps::stat);
    common::event!("started", { "pid": p.pid(), "start_ms": start_took.as_secs_f64() * 1e3,
        "method": p.method().to_string(), "in_proc": seen.is_some(),
        "ppid": seen.as_ref().map(|i| i.ppid) }, "p.start() returned after {:.1} ms ({}), and the child {}: start() made it with a \
     system call (fork/clone; for spawn, then exec), not by sending a signal to the OS \
     as seeds 002 and 004 say (给操作系统发送一个信号, 发送信号给操作系统); it does not wait for the child to run",
    start_took.as_secs_f64() * 1e3,
    p.method(),
    match &seen {
        Some(i) => format!("is already in /proc (pid {}, parent {})", i.pid, i.ppid),
        None => format!("(pid {}) is no longer in /proc", p.pid().unwrap_or(0)),
    });
    common::event!("parent_goes_on", { "child_sleep_ms": ms(sleep) }, "主流程: the parent goes on at once, while the child sleeps {}; which of the two runs \
             first is the scheduler's choice (seed 004's 子进程应该在主进程执行后执行 is no rule)",
            secs(sleep));
    let t = Instant::now();
    let code = crate::joined(&mut p)?;
    let waited = t.elapsed();
    common::event!("joined", { "waited_ms": waited.as_secs_f64() * 1e3, "child_sleep_ms": ms(sleep),
                "exitcode": code }, "p.join() blocked {} until the child ended (同步阻塞); then {p}", secs(waited));
    if let Some(recording) = recording {
        let (me, child) = (std::process::id() as i32, p.pid().unwrap_or(0));
        let records = recording.finish()?;
        let first = records.iter().find_map(|r| match r.event.as_str() {
            "parent_goes_on" if r.pid == me => Some("main"),
            "running" if r.pid == child => Some("child"),
            _ => None,
        });
        let first = first.unwrap_or("main");
        guess.reveal(
            first,
            "when start() returns the child exists (fork has made it); only its first run is \
             pending, and which of the two runs first is the scheduler's choice: 主流程 usually \
             wins, but nothing guarantees it (seed 004's 子进程应该在主进程执行后执行 is no rule)",
        );
    }
    Ok(())
}
