//! Part 1: seed 001's experiment (为什么说多线程是鸡肋): count N down to 0 by one thread, by
//! two threads each N, by one thread 2N in a row, and by two processes each N, and say what
//! the notes' `print(cost/2)` means (the time per N: no speed-up).

#![cfg(target_os = "linux")]

use std::sync::{Barrier, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::process::{Process, Role};
use common::threads::named;
use common::{ps, report};
use gil::countdown::{children_cpu, countdown, ms, thread_cpu};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Cli, N};

/// CPython 3.11.7's countdown, CPU time per decrement (BENCH.md, suite gil): a reference
/// figure, not measured by this run.
const CPYTHON_NS_PER_DECREMENT: f64 = 29.4;
/// CPython 3.11.7, two threads each N over one thread N, wall time (BENCH.md, suite gil).
const CPYTHON_TWO_OVER_ONE: f64 = 1.71;

/// A child process of the two-process run: counts its N down (the role a spawned child finds).
pub static COUNTDOWN: Role = Role::new("countdown", countdown_role);

fn countdown_role(args: Value) -> Result<()> {
    let n = args.as_u64().context("the countdown's N")?;
    let done = countdown(n);
    common::event!("counted", { "n": n, "done": done, "cpu_ms": ms(gil::countdown::process_cpu()) }, "counted {done} down to 0");
    if done != n {
        bail!("counted {done} of {n}");
    }
    Ok(())
}

/// One thread's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadRun {
    pub name: String,
    pub tid: i32,
    /// Decrements it made: N when it finished.
    pub done: u64,
    pub cpu_ms: f64,
    /// From `/proc/PID/task/TID/` once it finished: the CPU it last ran on, its switches.
    pub psr: i32,
    pub voluntary: u64,
    pub involuntary: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Run {
    run: &'static str,
    n: u64,
    wall_ms: f64,
    /// `None` where this process cannot know it: children started by a fork server are the
    /// server's children, so their CPU time is not added to ours.
    cpu_ms: Option<f64>,
    threads: Vec<ThreadRun>,
}

/// CPUs of the machine (`_SC_NPROCESSORS_ONLN`, Python's `multiprocessing.cpu_count()`) and
/// CPUs this program may run on (its affinity mask, `nproc`).
pub fn cpu_counts() -> (usize, usize) {
    // Safety: sysconf only reads a configuration value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    (online, usable)
}

/// CPUs in this process's affinity mask (`sched_getaffinity`, what `taskset -p` shows).
fn affinity_cpus() -> Option<usize> {
    // Safety: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Safety: the size passed is the set's own; pid 0 is this thread.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } == 0;
    // Safety: CPU_COUNT only reads the set.
    ok.then(|| unsafe { libc::CPU_COUNT(&set) } as usize)
}

/// Physical cores: the distinct `core_cpus_list` of the CPUs in sysfs (hardware threads of a
/// core share one).
fn physical_cores() -> Option<usize> {
    let cores: std::collections::HashSet<String> = std::fs::read_dir("/sys/devices/system/cpu")
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("cpu")?.parse::<u32>().ok()?;
            std::fs::read_to_string(format!(
                "/sys/devices/system/cpu/{name}/topology/core_cpus_list"
            ))
            .ok()
        })
        .collect();
    (!cores.is_empty()).then_some(cores.len())
}

/// Starts one named thread per entry of `work` (each runs its closure after a common start
/// gate); returns the wall time from the gate to the last thread's end, and each thread's
/// share. The threads stay alive, parked, until `while_alive` has looked at them (their
/// `/proc` rows), then they are joined.
pub fn run_threads<F>(
    names: &[String],
    work: F,
    while_alive: impl FnOnce(&[ThreadRun]),
) -> Result<(Duration, Vec<ThreadRun>)>
where
    F: Fn(usize) -> u64 + Sync,
{
    let pid = std::process::id() as i32;
    let start = Barrier::new(names.len() + 1);
    let leave = Barrier::new(names.len() + 1);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for (i, name) in names.iter().enumerate() {
            let (tx, start, leave, work) = (tx.clone(), &start, &leave, &work);
            named::spawn_scoped(s, name, move || {
                start.wait();
                let done = work(i);
                let cpu = thread_cpu();
                let _ = tx.send((i, named::gettid(), done, cpu));
                // Stay alive (asleep) until the main thread has read this thread's /proc row.
                leave.wait();
            })
            .with_context(|| format!("starting thread {name}"))?;
        }
        drop(tx);
        // The clock starts before the gate opens: a main thread descheduled right after the
        // gate would otherwise read it after the threads had counted down.
        let began = Instant::now();
        start.wait();
        let mut got: Vec<(usize, i32, u64, Duration)> = rx.iter().take(names.len()).collect();
        let wall = began.elapsed();
        got.sort_by_key(|g| g.0);
        let threads: Vec<ThreadRun> = got
            .into_iter()
            .map(|(i, tid, done, cpu)| {
                let row = ps::thread(pid, tid);
                ThreadRun {
                    name: names[i].clone(),
                    tid,
                    done,
                    cpu_ms: ms(cpu),
                    psr: row.as_ref().map_or(-1, |r| r.processor),
                    voluntary: row.as_ref().map_or(0, |r| r.voluntary_ctxt_switches),
                    involuntary: row.as_ref().map_or(0, |r| r.nonvoluntary_ctxt_switches),
                }
            })
            .collect();
        while_alive(&threads);
        leave.wait();
        Ok((wall, threads))
    })
}

pub fn run(cli: &Cli) -> Result<()> {
    let n = cli.n_or(N);
    report::section(format!(
        "1. the notes' experiment: count {n} down to 0, by one thread and by two (为什么说多线程是鸡肋)"
    ));
    let (online, usable) = cpu_counts();
    let (affinity, cores) = (affinity_cpus(), physical_cores());
    common::event!("cpus", { "online": online, "usable": usable, "affinity": affinity, "cores": cores }, "this machine has {online} logical CPUs (自己电脑上CPU的核数为{online}核; {}), this \
             program may use {usable} (its affinity mask allows {}, and a cgroup CPU quota may \
             allow fewer). Seed 003's 并行进程数 = CPU核数, more exactly: as many run at once as \
             there are logical CPUs this process may use",
            cores.map_or("physical cores unknown".to_string(), |c| format!(
                "{c} physical core(s): a core's hardware threads count as CPUs"
            )),
            affinity.map_or("?".to_string(), |a| a.to_string()));
    let question = "two threads each count N down: how many times one thread's wall time?";
    let expect = common::predict::Expect::About { within: 0.3 };
    let guess = common::predict::ask(&cli.common, "two-over-one", question, expect);
    let pid = std::process::id() as i32;
    let mut runs = Vec::new();

    // 1 thread × N, in the main thread, as the notes do.
    let cpu0 = thread_cpu();
    let began = Instant::now();
    let done = countdown(n);
    let wall = began.elapsed();
    let main = ThreadRun {
        name: "main".into(),
        tid: pid,
        done,
        cpu_ms: ms(thread_cpu() - cpu0),
        psr: ps::thread(pid, pid).map_or(-1, |r| r.processor),
        voluntary: 0,
        involuntary: 0,
    };
    runs.push(Run {
        run: "1 thread x N",
        n,
        wall_ms: ms(wall),
        cpu_ms: Some(main.cpu_ms),
        threads: vec![main],
    });

    // 2 threads × N each.
    let names = ["countdown-1".to_string(), "countdown-2".to_string()];
    let (wall, threads) = run_threads(
        &names,
        |_| countdown(n),
        |threads| {
            for t in threads {
                report::event(
                    "thread_counted",
                    json!(t),
                    format!(
                        "{} (tid {}) counted {} down to 0 on CPU {}: {:.1} ms of CPU",
                        t.name, t.tid, t.done, t.psr, t.cpu_ms
                    ),
                );
            }
            ps::show_threads(&format!("the threads of pid {pid}, from /proc/{pid}/task"), pid);
            cli.common.hold_threads("two threads have counted down and wait to be joined", pid);
        },
    )?;
    for t in &threads {
        if t.done != n {
            bail!("{} counted {} of {n}", t.name, t.done);
        }
    }
    let cpu = threads.iter().map(|t| t.cpu_ms).sum();
    runs.push(Run { run: "2 threads x N each", n, wall_ms: ms(wall), cpu_ms: Some(cpu), threads });

    // 1 thread × 2N: the same work as the two threads, one after the other.
    let cpu0 = thread_cpu();
    let began = Instant::now();
    countdown(2 * n);
    runs.push(Run {
        run: "1 thread x 2N in a row",
        n: 2 * n,
        wall_ms: ms(began.elapsed()),
        cpu_ms: Some(ms(thread_cpu() - cpu0)),
        threads: Vec::new(),
    });

    // 2 processes × N each: each has its own memory (and, in Python, its own GIL).
    let before = children_cpu();
    let began = Instant::now();
    let mut children: Vec<Process> = (1..=2)
        .map(|i| {
            Process::new(format!("countdown-p{i}"), &COUNTDOWN, n)
                .start_method(cli.common.start_method)
        })
        .collect();
    for child in &mut children {
        child.start()?;
    }
    let pids: Vec<i32> = children.iter().filter_map(Process::pid).collect();
    common::event!("processes_started", { "pids": pids, "start_method": cli.common.start_method.to_string() }, "two processes started by {} ({pids:?}), each counting {n} down",
            cli.common.start_method);
    for child in &mut children {
        if child.join()? != Some(0) {
            bail!("{child} failed");
        }
    }
    runs.push(Run {
        run: "2 processes x N each",
        n,
        wall_ms: ms(began.elapsed()),
        cpu_ms: Some(ms(children_cpu() - before)).filter(|cpu| *cpu > 0.0),
        threads: Vec::new(),
    });

    let one = runs[0].wall_ms.max(1e-6);
    let mut table =
        format!("  {:<28} {:>10} {:>9} {:>16}", "run", "wall ms", "CPU ms", "wall / 1 thread");
    for r in &runs {
        table.push_str(&format!(
            "\n  {:<28} {:>10.1} {:>9} {:>16.2}",
            r.run,
            r.wall_ms,
            r.cpu_ms.map_or("-".to_string(), |cpu| format!("{cpu:.1}")),
            r.wall_ms / one
        ));
    }
    let ratio = runs[1].wall_ms / one;
    common::event!("experiment", { "n": n, "runs": runs, "two_threads_over_one": ratio, "usable_cpus": usable }, "wall and CPU time of each run, measured now:");
    report::plain(table);
    // The verdict is read off this run's ratio: a ratio near 1 is parallelism, near 2 is
    // taking turns, whatever the machine was expected to give.
    let (verdict_key, verdict) = if usable >= 2 && ratio < 1.5 {
        (
            "parallel",
            "both threads ran at the same time, on two CPUs (parallelism, 并行): twice the work \
             in less than one and a half times the time of one. Rust has no GIL.",
        )
    } else if usable < 2 {
        (
            "took_turns_one_cpu",
            "this program may use one CPU only, so the two threads took turns on it \
             (concurrency, 并发).",
        )
    } else {
        (
            "took_turns_busy",
            "this program may use two CPUs, but the two threads took at least one and a half \
             times one thread's time: other programs kept the CPUs busy, so the threads mostly \
             took turns. Nothing made them wait for each other (no lock, no GIL): compare each \
             thread's CPU time above with one thread's. Run it again on a quieter \
             machine.",
        )
    };
    common::event!(
        "experiment_verdict",
        { "two_threads_over_one": ratio, "usable_cpus": usable, "verdict": verdict_key },
        "two threads / one thread = {ratio:.2}: {verdict}"
    );
    guess.reveal(ratio, format!("{usable} usable CPU(s), and no GIL: {verdict}"));
    // Fixed figures of CPython, labelled with where they come from; the ones that depend on N
    // are scaled to this run's N.
    let python_s = n as f64 * CPYTHON_NS_PER_DECREMENT / 1e9;
    report::say(format!(
        "The notes print cost/2 for their two threads: 16.10 s there, against 16.04 s for one \
         thread. cost/2 is the time per N, not the run's time: their two threads took 32.2 s \
         for 2N, the time one thread takes for the same work in a row. That is no speed-up, \
         not a slowdown: 16.10 against 16.04 is 0.4 %, within the noise of one run, so it does \
         not show the notes' 多线程不快反而慢 (and the comment `#single thread` above their \
         two-thread code is a slip). Reference figures of CPython 3.11.7, not of this run \
         (BENCH.md, make bench suite gil, a shared 2-core machine): {CPYTHON_NS_PER_DECREMENT} \
         ns of CPU per decrement, so N = {n} would take about {python_s:.2} s in one thread, \
         and two threads {CPYTHON_TWO_OVER_ONE} times that; run `gil experiment --python` to \
         measure it here. Python's threads are not slower because they switch; they are not \
         faster because only one runs Python code at a time. Seed 001's 即使100个线程跑在100核CPU上，\
         也只能用到1个核 holds for Python code only: C code that releases the GIL runs in \
         parallel (hashlib on buffers over 2047 bytes, per its documentation; zlib, I/O); \
         --python measures sha256 in two threads."
    ));
    if cli.python {
        python(n)?;
    }
    Ok(())
}

/// Seed 001's single-thread program, printing the real time.
const PY_ONE: &str = r#"
import threading, multiprocessing, time, sys
print("thread %s is running..." % threading.current_thread().name)
n = multiprocessing.cpu_count()
print("自己电脑上CPU的核数为%s核！！！" % n)
def decrement(n):
    while n > 0:
        n -= 1
start = time.time()
decrement(int(sys.argv[1]))
cost = time.time() - start
print("cost", cost)
print("thread %s ended" % threading.current_thread().name)
"#;

/// Seed 001's two-thread program, corrected: it prints `cost`, and what the notes printed.
const PY_TWO: &str = r#"
import threading, multiprocessing, time, sys
print("thread %s is running..." % threading.current_thread().name)
n = multiprocessing.cpu_count()
print("自己电脑上CPU的核数为%s核！！！" % n)
def decrement(n):
    while n > 0:
        n -= 1
start = time.time()
N = int(sys.argv[1])
t1 = threading.Thread(target=decrement, args=(N,))
t2 = threading.Thread(target=decrement, args=(N,))
t1.start()
t2.start()
t1.join()
t2.join()
cost = time.time() - start
print("cost", cost)
print("the notes print cost/2:", cost / 2)
print("thread %s ended" % threading.current_thread().name)
"#;

/// C code that releases the GIL: hashlib hashes a buffer over 2047 bytes with the GIL released
/// (the hashlib documentation says so), so two threads hashing may run at once. One thread.
const PY_HASH_ONE: &str = r#"
import hashlib, time
data = b"x" * (64 << 20)
start = time.time()
hashlib.sha256(data).hexdigest()
print("cost", time.time() - start)
"#;

/// The same hash in two threads, each its own 64 MiB.
const PY_HASH_TWO: &str = r#"
import hashlib, threading, time
data = b"x" * (64 << 20)
ts = [threading.Thread(target=lambda: hashlib.sha256(data).hexdigest()) for _ in range(2)]
start = time.time()
for t in ts: t.start()
for t in ts: t.join()
print("cost", time.time() - start)
"#;

/// `--python`: the notes' two programs in CPython, beside ours.
fn python(n: u64) -> Result<()> {
    report::say(format!("--python: the notes' two programs with python3, N = {n}"));
    let mut costs = Vec::new();
    let programs = [
        ("one thread", PY_ONE),
        ("two threads", PY_TWO),
        ("sha256 of 64 MiB, one thread", PY_HASH_ONE),
        ("sha256 of 64 MiB each, two threads", PY_HASH_TWO),
    ];
    for (which, program) in programs {
        let mut command = std::process::Command::new("python3");
        command.arg("-c").arg(program).arg(n.to_string());
        // Safety: prctl(PR_SET_PDEATHSIG) only sets a flag of the child: if this program dies
        // (Ctrl-C, kill), the kernel kills python3 too.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let output = match command.output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                common::event!("python_skipped", { "reason": "python3 not found on PATH" }, "python3 is not installed here: the Python run is skipped");
                return Ok(());
            }
            Err(e) => return Err(e).context("running python3"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!("python3 ({which}) failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        report::say(format!("python3, {which}:\n{}", stdout.trim_end()));
        let cost = stdout
            .lines()
            .find_map(|l| l.strip_prefix("cost ")?.trim().parse::<f64>().ok())
            .context("python3 printed no cost")?;
        costs.push(cost);
    }
    let ratio = costs[1] / costs[0];
    common::event!("python", { "n": n, "one_thread_s": costs[0], "two_threads_s": costs[1], "ratio": ratio }, "CPython: one thread {:.2} s, two threads {:.2} s = {ratio:.2} x one thread (the notes' \
             cost/2, the time per N, would say {:.2} s)",
            costs[0],
            costs[1],
            costs[1] / 2.0);
    // Seed 001's "只能用到1个核" is about Python bytecode; C code that drops the GIL is not
    // bound by it. The verdict is this run's.
    let hash_ratio = costs[3] / costs[2];
    let at_once = hash_ratio < 1.5;
    common::event!(
        "python_c_code",
        { "one_thread_s": costs[2], "two_threads_s": costs[3], "ratio": hash_ratio,
          "at_once": at_once },
        "CPython, sha256 (C code that releases the GIL): one thread {:.2} s, two threads \
         {:.2} s = {hash_ratio:.2} x one thread: {}",
        costs[2],
        costs[3],
        if at_once {
            "the two hashes ran at the same time, on two CPUs, GIL or not"
        } else {
            "not at the same time in this run (other programs kept the CPUs busy, or one CPU \
             for this program)"
        }
    );
    Ok(())
}
