//! Part 3: threads share their process's memory, processes do not (进程负责数据隔离，线程负责
//! 执行代码，共享全局资源). One global `a`: a thread writes it and main reads the thread's
//! value at the same address; a forked child writes it and main still reads its own.

use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Result, anyhow, bail};
use common::process::{Process, StartMethod};
use common::report;
use common::threads::named;

use crate::Cli;

/// The notes' global: `a = 50` in the main code.
static A: AtomicI64 = AtomicI64::new(0);
const MAIN_VALUE: i64 = 50;
const WRITTEN: i64 = 99;

fn address() -> String {
    format!("{:p}", &A as *const AtomicI64)
}

/// What the writer (a thread or a child process) does: write 99 and say so.
fn write_a(who: &str) {
    A.store(WRITTEN, Ordering::SeqCst);
    common::event!("wrote", { "who": who, "address": address(), "value": WRITTEN }, "{who}: a = {WRITTEN} at {}", address());
}

pub fn run(cli: &Cli) -> Result<()> {
    report::section("3. shared memory: a thread's write is seen, a child process's is not");
    A.store(MAIN_VALUE, Ordering::SeqCst);
    common::event!("main_value", { "address": address(), "value": MAIN_VALUE }, "main: a = {MAIN_VALUE} at {}", address());

    let question =
        format!("a thread writes {WRITTEN} into main's a = {MAIN_VALUE}: what does main read?");
    let guess =
        common::predict::ask(&cli.common, "thread-write", question, common::predict::Expect::Count);
    named::spawn("writer", || write_a("thread"))?.join().map_err(|_| anyhow!("writer panicked"))?;
    let after_thread = A.load(Ordering::SeqCst);
    guess.reveal(after_thread, "the threads of a process share its memory: one a, one address");
    common::event!("after_thread", { "address": address(), "value": after_thread, "shared": after_thread == WRITTEN }, "main after the thread: a = {after_thread} at {}: the thread wrote this very memory",
            address());

    A.store(MAIN_VALUE, Ordering::SeqCst);
    let question = format!(
        "a forked child writes {WRITTEN} into main's a = {MAIN_VALUE}: what does main read?"
    );
    let guess =
        common::predict::ask(&cli.common, "child-write", question, common::predict::Expect::Count);
    // A closure can only be run by a forked child (the spawn method starts a new program, with
    // a fresh `a`): fork is the interesting case anyway, the same addresses in both.
    let mut child = Process::from_fn("writer-child", || {
        write_a("child");
        Ok(())
    })
    .start_method(StartMethod::Fork);
    child.start()?;
    let code = child.join()?;
    if code != Some(0) {
        bail!("{child}: the writer child failed");
    }
    let after_child = A.load(Ordering::SeqCst);
    guess.reveal(after_child, "a forked child writes its own copy of the memory (copy-on-write)");
    common::event!("after_child", { "address": address(), "value": after_child, "child": child.pid(),
                "isolated": after_child == MAIN_VALUE }, "main after the forked child: a = {after_child} at {}: the child wrote its own copy \
             (copy-on-write after fork), at the same virtual address",
            address());

    // Even a local variable of main can be shared, if the compiler can see that the threads
    // end before it does: thread::scope.
    let mut tickets: Vec<&str> = Vec::new();
    std::thread::scope(|s| {
        named::spawn_scoped(s, "borrower", || tickets.push("from a thread")).map(drop)
    })?;
    common::event!("scoped_borrow", { "len": tickets.len() }, "main's local Vec, pushed to by a scoped thread: {tickets:?} (thread::scope joins \
             the thread before the borrow ends)");
    if after_thread != WRITTEN || after_child != MAIN_VALUE {
        bail!(
            "memory broke its rules: after the thread a = {after_thread}, after the child {after_child}"
        );
    }
    report::say(
        "Threads of a process share one address space (all its globals, heap, open files); a \
         process gets its own copy. That is the notes' 线程：数据共享 / 进程：数据隔离, and why \
         threads need locks (part 6) where processes need pipes and queues.",
    );
    Ok(())
}
