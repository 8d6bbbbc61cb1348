//! Part 7, `fewer-io`: the notes' "最核心的优化就是减少IO操作". The same lines written with one
//! `write(2)` each, then buffered (a few large writes), then with `fsync` after each line and
//! once at the end. The system calls are counted by the kernel (`/proc/self/io`, `syscw`) and
//! each way is timed; the filesystem is named, because on tmpfs an `fsync` costs nothing.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use common::{predict, report};

/// At most this many lines get an `fsync` each: on a disk each may take milliseconds.
const MAX_FSYNC_LINES: u64 = 200;

/// `write(2)` calls this process has made so far (`/proc/self/io`).
fn syscw() -> u64 {
    procfs::process::Process::myself().and_then(|p| p.io()).map_or(0, |io| io.syscw)
}

/// The filesystem `dir` is on (`statfs(2)`'s `f_type`), named.
fn filesystem(dir: &Path) -> (i64, &'static str) {
    let Ok(fs) = nix::sys::statfs::statfs(dir) else { return (0, "unknown") };
    let kind = fs.filesystem_type().0;
    let name = match kind {
        0x0102_1994 => "tmpfs",
        0xEF53 => "ext4 (or ext2/3)",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x0102_1997 => "9p",
        _ => "another filesystem",
    };
    (kind, name)
}

struct Way {
    name: &'static str,
    lines: u64,
    writes: u64,
    fsyncs: u64,
    seconds: f64,
}

fn line(i: u64) -> String {
    format!("line {i:>6}: the same 64 bytes or so, written one way or another........\n")
}

/// A scratch file in `dir` with no name (`O_TMPFILE`), so that nothing is left behind, even
/// after Ctrl-C; where the filesystem cannot do that, a file removed as soon as it is open.
fn scratch_file(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nameless = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir);
    if let Ok(file) = nameless {
        return Ok(file);
    }
    let path = dir.join(format!(".multiprogramming-fewer-io-{}", std::process::id()));
    let file = std::fs::File::create(&path).map_err(|e| {
        common::demo::bad_input(format!("--dir: cannot create {}: {e}", path.display()))
    })?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Writes `lines` lines to a scratch file in `dir` one way, counting the `write(2)` calls the
/// kernel saw.
fn write_way(
    dir: &Path,
    name: &'static str,
    lines: u64,
    buffered: bool,
    fsync_each: bool,
) -> Result<Way> {
    let file = scratch_file(dir)?;
    let before = syscw();
    let started = Instant::now();
    let mut fsyncs = 0;
    if buffered {
        let mut out = std::io::BufWriter::new(&file);
        for i in 0..lines {
            out.write_all(line(i).as_bytes())?;
        }
        out.flush()?;
    } else {
        let mut out = &file;
        for i in 0..lines {
            // One write(2) per line: the system call is the IO operation the notes count.
            out.write_all(line(i).as_bytes())?;
            if fsync_each {
                file.sync_data().context("fdatasync")?;
                fsyncs += 1;
            }
        }
    }
    if !fsync_each && name.contains("once") {
        file.sync_all().context("fsync")?;
        fsyncs += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let writes = syscw() - before;
    Ok(Way { name, lines, writes, fsyncs, seconds })
}

pub fn fewer_io(cli: &crate::Cli, lines: u64, dir: Option<PathBuf>) -> Result<()> {
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    if !dir.is_dir() {
        return Err(common::demo::bad_input(format!("--dir {}: not a folder", dir.display())));
    }
    report::section("fewer-io: 减少IO操作, the same lines in fewer system calls");
    ways(cli, lines, &dir)
}

fn ways(cli: &crate::Cli, lines: u64, dir: &Path) -> Result<()> {
    let (kind, fs) = filesystem(dir);
    common::event!(
        "filesystem",
        { "dir": dir.display().to_string(), "f_type": kind, "name": fs },
        "writing to {} on {fs} (statfs f_type {kind:#x}){}",
        dir.display(),
        if fs == "tmpfs" {
            ": tmpfs lives in memory, so an fsync has nothing to write and costs almost nothing \
             here; on a disk each one waits for the device"
        } else {
            ""
        }
    );
    let question = format!(
        "{lines} lines written with one write(2) each, then buffered: how many write system calls does the buffered way make?"
    );
    let guess = predict::ask(&cli.common, "buffered-writes", question, predict::Expect::Count);
    let fsync_lines = lines.min(MAX_FSYNC_LINES);
    let ways = [
        write_way(dir, "one write(2) a line", lines, false, false)?,
        write_way(dir, "buffered (8 KiB)", lines, true, false)?,
        write_way(dir, "buffered, fsync once at the end", lines, true, false)?,
        write_way(dir, "one write and one fsync a line", fsync_lines, false, true)?,
    ];
    guess.reveal(ways[1].writes, "a BufWriter gathers 8 KiB before each write(2)");
    crate::hold(
        &cli.common,
        &format!(
            "the lines written to a nameless file in {} (O_TMPFILE: ls -l /proc/PID/fd shows \
             it; cat /proc/PID/io shows syscw)",
            dir.display()
        ),
        &[std::process::id() as i32],
    );
    let per_line = |w: &Way| w.seconds / w.lines.max(1) as f64;
    let base = per_line(&ways[1]).max(1e-12);
    let mut text = format!(
        "{:<34} {:>7} {:>8} {:>7} {:>12} {:>9}",
        "way", "lines", "write(2)", "fsync", "µs per line", "× buffered"
    );
    for w in &ways {
        text.push_str(&format!(
            "\n{:<34} {:>7} {:>8} {:>7} {:>12.2} {:>9.1}",
            w.name,
            w.lines,
            w.writes,
            w.fsyncs,
            per_line(w) * 1e6,
            per_line(w) / base
        ));
    }
    let rows: Vec<serde_json::Value> = ways
        .iter()
        .map(|w| {
            serde_json::json!({ "way": w.name, "lines": w.lines, "writes": w.writes,
                                     "fsyncs": w.fsyncs, "seconds": w.seconds,
                                     "ratio_to_buffered": per_line(w) / base })
        })
        .collect();
    common::event!("fewer_io", { "ways": rows, "filesystem": fs }, "{text}");
    report::say(format!(
        "system calls counted by the kernel (/proc/self/io syscw): {} writes one line at a time \
         against {} buffered, {:.0}× fewer; each line with its own fsync costs {:.0}× a buffered \
         line here{}{}",
        ways[0].writes,
        ways[1].writes,
        ways[0].writes as f64 / ways[1].writes.max(1) as f64,
        per_line(&ways[3]) / base,
        if fsync_lines < lines {
            format!(" (fsync each line for the first {fsync_lines} lines only: a cap)")
        } else {
            String::new()
        },
        if fs == "tmpfs" {
            "; on tmpfs the fsync is nearly free, so most of that is the write(2) calls"
        } else {
            ""
        }
    ));
    Ok(())
}
