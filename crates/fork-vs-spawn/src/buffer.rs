//! Part 4, the fork pitfall: a line still in a user-space buffer at fork is copied into the
//! child and written twice; flushing before fork writes it once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use common::process::Process;
use common::report;

use crate::Cli;
use crate::answers::{WorkDir, succeeded};

pub fn run(cli: &Cli, work: &WorkDir) -> Result<()> {
    report::section("4. the fork pitfall: a buffer copied by fork is written twice");
    let me = std::process::id();
    let line = format!("written by parent {me} before fork");
    let guess = common::predict::ask(
        &cli.common,
        "copies",
        "the parent writes one line into a BufWriter (not flushed), forks, and the child and \
         the parent each flush their copy: how many times is that line in the file?",
        common::predict::Expect::Count,
    );
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
        common::event!("buffer", { "flush_before_fork": flush_before_fork, "path": path, "copies": copies,
                    "expected": expected, "lines": text.lines().collect::<Vec<_>>() }, "{} flush before fork: the parent's line is in {} {copies} time{}\n{}",
                if flush_before_fork { "with" } else { "without" },
                path.display(),
                if copies == 1 { "" } else { "s" },
                text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"));
    }
    guess.reveal(
        copies_seen.first().copied().unwrap_or(0),
        "fork copied the BufWriter with the unwritten line inside it; each process flushed its own copy",
    );
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
