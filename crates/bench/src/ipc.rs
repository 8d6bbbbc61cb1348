//! ipc — what each way of sharing data between processes costs (the ipc demo), beside CPython
//! doing the same (`python/ipc.py`). Forked children on both sides; every run checks its result.
//!
//! - pipe throughput: a child writes [`PIPE_BYTES`] in 64 KiB `write(2)`s, the parent reads
//!   64 KiB at a time (Python: `os.write`, `os.read`);
//! - pipe small messages: a child writes [`MESSAGES`] frames (a 4-byte length, 16 bytes), each
//!   in one `write(2)` as the demo's lesson wants (at most `PIPE_BUF`: atomic); the parent reads
//!   them through a `BufReader` (Python: `os.read(4)` and `os.read(n)` per message, as
//!   `multiprocessing.Connection` reads);
//! - duplex ping-pong: round trips of a small framed message through a socketpair, each side
//!   blocking in `read(2)` for the other (Python: `multiprocessing.Pipe()`, `send`/`recv`);
//! - shared-memory counter: [`PROCESSES`] processes add 1 [`INCREMENTS`] times each, under a
//!   robust process-shared mutex, or with an atomic `fetch_add` (Python: `Value('i')` and
//!   `with v.get_lock(): v.value += 1` for both rows: Python has no atomic increment);
//! - file counter: the same processes, [`FILE_INCREMENTS`] transactions each: open, `flock`,
//!   read, write the new number at the start, truncate to its length, close (the same protocol
//!   in Python with `fcntl.flock`);
//! - the same, truncating to zero *before* writing, as Python's `open(path, 'w')` does (the
//!   demo's way): on ext4 a file truncated to zero and written again is flushed at `close`
//!   (`auto_da_alloc`), so both sides then wait for the disk; no target on that row.
//!
//! The clock starts when the children leave a start gate (a byte each on a pipe) and stops when
//! the parent has everything (or every child is joined). The target: at least 5× Python on every
//! row but the file row, which the file system bounds (at least 1.3× there).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::process::Process;
use py_multiprocessing::shm::{RobustMutex, Shareable, SharedBlock, Wait};

use crate::measure::{Better, Outcome, Samples, Settings, median};

/// Bytes through the pipe per throughput run.
const PIPE_BYTES: usize = 128 << 20;
const CHUNK: usize = 64 << 10;
/// Small messages per run, and their body.
const MESSAGES: usize = 200_000;
const BODY: usize = 16;
/// Ping-pong round trips per run.
const ROUND_TRIPS: usize = 20_000;
/// Processes on the shared counters, and increments (transactions for the file) each.
const PROCESSES: usize = 4;
const INCREMENTS: usize = 100_000;
const FILE_INCREMENTS: usize = 500;
/// The goals.
const TARGET: f64 = 5.0;
const FILE_TARGET: f64 = 1.3;

/// The rows: key in the Python output, figure, unit, target.
const CASES: [(&str, &str, &str, Option<f64>); 7] = [
    ("pipe_mb", "pipe throughput, 64 KiB writes", "MB/s", Some(TARGET)),
    ("pipe_msgs", "pipe, small messages", "msg/s", Some(TARGET)),
    ("duplex", "duplex ping-pong", "round trips/s", Some(TARGET)),
    ("shm_lock", "shared counter, lock", "incr/s", Some(TARGET)),
    ("shm_atomic", "shared counter, atomic (Python: lock)", "incr/s", Some(TARGET)),
    ("file", "file counter under flock", "transactions/s", Some(FILE_TARGET)),
    ("file_trunc", "file counter, truncate then write", "transactions/s", None),
];

/// A start gate: children block reading one byte each until the parent opens it.
struct Gate {
    read: std::io::PipeReader,
    write: std::io::PipeWriter,
}

impl Gate {
    fn new() -> Result<Gate> {
        let (read, write) = std::io::pipe().context("pipe() for the gate")?;
        Ok(Gate { read, write })
    }

    fn pass(read: &mut std::io::PipeReader) -> Result<()> {
        read.read_exact(&mut [0u8]).context("waiting at the gate")
    }

    fn open(&mut self, children: usize) -> Result<Instant> {
        let began = Instant::now();
        self.write.write_all(&vec![1u8; children]).context("opening the gate")?;
        Ok(began)
    }
}

fn check_joined(children: &mut [Process]) -> Result<()> {
    for c in children {
        if c.join()? != Some(0) {
            bail!("{c} failed");
        }
    }
    Ok(())
}

fn pipe_throughput() -> Result<f64> {
    let (mut r, w) = std::io::pipe()?;
    let mut gate = Gate::new()?;
    let mut gate_r = gate.read.try_clone()?;
    let mut writer = Process::from_fn("bench-pipe-writer", move || {
        let mut w = w;
        Gate::pass(&mut gate_r)?;
        let chunk = vec![7u8; CHUNK];
        for _ in 0..PIPE_BYTES / CHUNK {
            w.write_all(&chunk)?;
        }
        Ok(())
    });
    writer.start()?; // the parent's copy of the write end is dropped with the closure
    let began = gate.open(1)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let seconds = began.elapsed().as_secs_f64();
    check_joined(std::slice::from_mut(&mut writer))?;
    if total != PIPE_BYTES {
        bail!("{total} bytes read of {PIPE_BYTES}");
    }
    Ok(total as f64 / 1e6 / seconds)
}

fn pipe_messages() -> Result<f64> {
    let (r, w) = std::io::pipe()?;
    let mut gate = Gate::new()?;
    let mut gate_r = gate.read.try_clone()?;
    let mut writer = Process::from_fn("bench-msg-writer", move || {
        let mut w = w;
        Gate::pass(&mut gate_r)?;
        let mut frame = [0u8; 4 + BODY];
        frame[..4].copy_from_slice(&(BODY as u32).to_le_bytes());
        for i in 0..MESSAGES {
            frame[4..12].copy_from_slice(&(i as u64).to_le_bytes());
            w.write_all(&frame)?; // one write(2) per message
        }
        Ok(())
    });
    writer.start()?;
    let began = gate.open(1)?;
    let mut reader = BufReader::with_capacity(CHUNK, r);
    let mut header = [0u8; 4];
    let mut body = [0u8; 64];
    let mut received = 0;
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > body.len() {
            bail!("a frame of {len} bytes");
        }
        reader.read_exact(&mut body[..len])?;
        received += 1;
    }
    let seconds = began.elapsed().as_secs_f64();
    check_joined(std::slice::from_mut(&mut writer))?;
    if received != MESSAGES {
        bail!("{received} messages of {MESSAGES}");
    }
    Ok(received as f64 / seconds)
}

fn send(s: &mut UnixStream, n: u64) -> std::io::Result<()> {
    let mut frame = [0u8; 12];
    frame[..4].copy_from_slice(&8u32.to_be_bytes());
    frame[4..].copy_from_slice(&n.to_le_bytes());
    s.write_all(&frame)
}

fn recv(s: &mut UnixStream) -> std::io::Result<Option<u64>> {
    let mut header = [0u8; 4];
    match s.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = [0u8; 8];
    s.read_exact(&mut body)?;
    Ok(Some(u64::from_le_bytes(body)))
}

fn duplex() -> Result<f64> {
    let (mut mine, theirs) = UnixStream::pair().context("socketpair()")?;
    let parent_end = mine.as_raw_fd();
    let mut pong = Process::from_fn("bench-pong", move || {
        // A forked child has a copy of the parent's end too: closed here, or the child's recv
        // would never meet end-of-file once the parent closes its own (the demo's part 1).
        // Safety: this process inherited the descriptor and nothing else in it uses it.
        drop(unsafe { OwnedFd::from_raw_fd(parent_end) });
        let mut s = theirs;
        while let Some(n) = recv(&mut s)? {
            send(&mut s, n)?;
        }
        Ok(())
    });
    pong.start()?;
    let began = Instant::now();
    for n in 0..ROUND_TRIPS as u64 {
        send(&mut mine, n)?;
        if recv(&mut mine)? != Some(n) {
            bail!("round trip {n} came back wrong");
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    drop(mine);
    check_joined(std::slice::from_mut(&mut pong))?;
    Ok(ROUND_TRIPS as f64 / seconds)
}

#[repr(C)]
struct Counter {
    lock: RobustMutex,
    value: AtomicU32,
}

// Safety: zeroes are a valid counter and a mutex-to-be (initialised before sharing); both are
// made to be used by many processes at once.
unsafe impl Shareable for Counter {}

/// Starts [`PROCESSES`] children named `name-K`, each running `work` once the gate opens, and
/// joins them: the seconds from the gate to the last join.
fn gated_adders(name: &str, work: impl Fn() -> Result<()> + Clone + Send + 'static) -> Result<f64> {
    let mut gate = Gate::new()?;
    let mut children = Vec::new();
    for k in 0..PROCESSES {
        let (work, mut gate_r) = (work.clone(), gate.read.try_clone()?);
        children.push(Process::from_fn(format!("{name}-{k}"), move || {
            Gate::pass(&mut gate_r)?;
            work()
        }));
    }
    for c in &mut children {
        c.start()?;
    }
    let began = gate.open(PROCESSES)?;
    check_joined(&mut children)?;
    Ok(began.elapsed().as_secs_f64())
}

fn shared_counter(atomic: bool) -> Result<f64> {
    let block = SharedBlock::<Counter>::create(c"bench-ipc-counter", |c| {
        // Safety: the block is not shared yet.
        unsafe { (*c).lock.init() }
    })?;
    let block = std::sync::Arc::new(block);
    let adder = block.clone();
    let seconds = gated_adders("bench-adder", move || {
        let counter = adder.get();
        for _ in 0..INCREMENTS {
            if atomic {
                counter.value.fetch_add(1, Ordering::Relaxed);
            } else {
                let (_, guard) = counter.lock.lock(Wait::Forever)?.context("the lock")?;
                let v = counter.value.load(Ordering::Relaxed);
                counter.value.store(v + 1, Ordering::Relaxed);
                drop(guard);
            }
        }
        Ok(())
    })?;
    let value = block.get().value.load(Ordering::SeqCst) as usize;
    if value != PROCESSES * INCREMENTS {
        bail!("the counter is {value}, not {}", PROCESSES * INCREMENTS);
    }
    Ok(value as f64 / seconds)
}

/// The file counter; `truncate_first`: empty the file, then write (Python's `open(path, 'w')`
/// way), else write the new number over the old one, then cut the file to its length.
fn file_counter(truncate_first: bool) -> Result<f64> {
    let path: PathBuf =
        std::env::temp_dir().join(format!("bench-ipc-counter-{}", std::process::id()));
    std::fs::write(&path, "0").with_context(|| format!("writing {}", path.display()))?;
    let file = path.clone();
    let timed = gated_adders("bench-file", move || {
        for _ in 0..FILE_INCREMENTS {
            let mut f = File::options().read(true).write(true).open(&file)?;
            f.lock()?;
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            let v: u64 = text.trim().parse()?;
            let text = (v + 1).to_string();
            f.seek(SeekFrom::Start(0))?;
            if truncate_first {
                f.set_len(0)?;
                f.write_all(text.as_bytes())?;
            } else {
                f.write_all(text.as_bytes())?;
                f.set_len(text.len() as u64)?;
            }
        }
        Ok(())
    });
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let seconds = timed?;
    let value: usize = text?.trim().parse()?;
    if value != PROCESSES * FILE_INCREMENTS {
        bail!("the file says {value}, not {}", PROCESSES * FILE_INCREMENTS);
    }
    Ok(value as f64 / seconds)
}

/// CPU time, user and kernel, of this process and of its children already reaped (the
/// `utime stime cutime cstime` of `/proc/self/stat`), in seconds.
fn cpu_seconds() -> f64 {
    let stat = procfs::process::Process::myself().and_then(|me| me.stat());
    let ticks = stat.map_or(0, |s| s.utime + s.stime + (s.cutime + s.cstime).max(0) as u64);
    common::ps::ticks_to_duration(ticks).as_secs_f64()
}

/// How many items a case's rate counts (MB for the throughput): for CPU per item.
fn items(case: &str) -> f64 {
    match case {
        "pipe_mb" => PIPE_BYTES as f64 / 1e6,
        "pipe_msgs" => MESSAGES as f64,
        "duplex" => ROUND_TRIPS as f64,
        "shm_lock" | "shm_atomic" => (PROCESSES * INCREMENTS) as f64,
        _ => (PROCESSES * FILE_INCREMENTS) as f64,
    }
}

/// The rate, and the CPU time all processes spent per item, in µs.
fn measure_rust(case: &str) -> Result<(f64, f64)> {
    let before = cpu_seconds();
    let rate = measure_case(case)?;
    Ok((rate, (cpu_seconds() - before) * 1e6 / items(case)))
}

fn measure_case(case: &str) -> Result<f64> {
    match case {
        "pipe_mb" => pipe_throughput(),
        "pipe_msgs" => pipe_messages(),
        "duplex" => duplex(),
        "shm_lock" => shared_counter(false),
        "shm_atomic" => shared_counter(true),
        "file" => file_counter(false),
        _ => file_counter(true),
    }
}

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut samples = Samples::new(CASES.len());
    let mut rust_cpu: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut python_cpu: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let args: Vec<String> = [
        ("--pipe-bytes", PIPE_BYTES),
        ("--messages", MESSAGES),
        ("--round-trips", ROUND_TRIPS),
        ("--processes", PROCESSES),
        ("--increments", INCREMENTS / 10),
        ("--file-increments", FILE_INCREMENTS),
    ]
    .iter()
    .flat_map(|(flag, n)| [flag.to_string(), n.to_string()])
    .collect();
    for _ in 0..settings.runs {
        for (i, (case, ..)) in CASES.iter().enumerate() {
            let (rate, cpu) = measure_rust(case)?;
            samples.rust(i, rate);
            rust_cpu[i].push(cpu);
        }
        samples.python("ipc.py", &args, |answer| {
            let mut rates = Vec::new();
            for (i, (case, ..)) in CASES.iter().enumerate() {
                // Python has no atomic increment: its row is Value with its lock.
                let key = if *case == "shm_atomic" { "shm_lock" } else { case };
                let Some(rate) = answer["cases"][key].as_f64() else {
                    return Err(format!("ipc.py gave no figure for {key}"));
                };
                rates.push(rate);
                if let Some(cpu) = answer["cpu_us"][key].as_f64() {
                    python_cpu[i].push(cpu);
                }
            }
            Ok(rates)
        });
    }
    let rows = CASES
        .iter()
        .enumerate()
        .map(|(i, (_, figure, unit, target))| {
            samples.row(i, *figure, unit, Better::Higher, *target)
        })
        .collect();
    // What scales where the kernel is the limit: the CPU each side spends per item.
    let cpu: Vec<String> = CASES
        .iter()
        .enumerate()
        .filter(|(i, _)| !python_cpu[*i].is_empty())
        .map(|(i, (_, figure, unit, _))| {
            let (r, p) = (median(&rust_cpu[i]), median(&python_cpu[i]));
            let per = if *unit == "MB/s" { "MB" } else { "item" };
            // One clock tick (10 ms) over the run's items: the finest figure /proc gives.
            let tick = common::ps::ticks_to_duration(1).as_secs_f64() * 1e6 / items(CASES[i].0);
            if r < tick {
                format!("{figure}: under {tick:.3} (one clock tick) against {p:.2} µs per {per}")
            } else {
                format!("{figure}: {r:.2} against {p:.2} µs per {per} ({:.1}x)", p / r)
            }
        })
        .collect();
    let cpu_note = (!cpu.is_empty()).then(|| {
        format!(
            "CPU time (user + kernel, every process of the run) per item, Rust against Python: \
             {}",
            cpu.join("; ")
        )
    });
    Ok(Outcome {
        rows,
        python: samples.python_outcome,
        notes: vec![
            format!(
                "forked children on both sides; pipe: {} MiB in 64 KiB writes, {MESSAGES} \
                 messages of {BODY} bytes each in its own write(2); duplex: {ROUND_TRIPS} round \
                 trips; counters: {PROCESSES} processes, {INCREMENTS} increments each in Rust, \
                 a tenth as many in Python (rates compare), {FILE_INCREMENTS} file transactions \
                 each",
                PIPE_BYTES >> 20
            ),
            "the pipe and duplex rows are bound by the kernel, not by either language: both \
             sides make the same write(2)s (one per 64 KiB, one per small message, two per \
             round trip) and the kernel copies every byte and wakes every sleeper; what Rust \
             saves is the interpreter's share and, for small messages, the reads: a BufReader \
             takes about 3000 messages per read(2) where Python's os.read(4) + os.read(n) makes \
             two per message. The file rows are bound by the file system (lock hand-offs, and \
             with truncate-then-write a flush at close)"
                .to_string(),
        ]
        .into_iter()
        .chain(cpu_note)
        .collect(),
    })
}
