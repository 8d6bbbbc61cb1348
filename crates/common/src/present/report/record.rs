//! Recording: every event also appended, as its JSON line, to one file that every process of
//! the run shares; and what a spawned child is told of the run (clock, mode, recording, trace).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::{JSON, T0_NS, json_mode, monotonic_ns, set_who};

/// Environment variable through which a spawned child learns the demo's clock and output mode.
pub(crate) const ENV_REPORT: &str = "CONCURRENCY_DEMOS_REPORT";

/// The file descriptor events are also recorded to (see [`record_to`]), or -1. A raw number in
/// an atomic: a forked child inherits both the number and the open file behind it.
static RECORD_FD: AtomicI32 = AtomicI32::new(-1);
/// True while the run is traced (`--trace`, `--svg`): children are told, so that their phase
/// marks are recorded too (see [`crate::trace`]).
static TRACING: AtomicBool = AtomicBool::new(false);
/// The suffix of [`env_value`] that tells a spawned child the run is traced.
const TRACING_SUFFIX: &str = "/trace";

/// What a spawned child needs to print on the same clock and in the same mode as its parent:
/// `T0:JSON`, and while recording `T0:JSON:FD:INODE` (see [`record_to`]).
pub(crate) fn env_value() -> String {
    let base = format!("{}:{}", T0_NS.load(Ordering::Relaxed), u8::from(json_mode()));
    let tracing = if TRACING.load(Ordering::Relaxed) { TRACING_SUFFIX } else { "" };
    match recording_env() {
        Some(recording) => format!("{base}:{recording}{tracing}"),
        None => format!("{base}{tracing}"),
    }
}

/// Says whether the run is traced; a spawned child learns it through [`env_value`] and then
/// records its phase marks as well. Public for the bench, which turns it on without a trace to
/// measure what the queue's message ids cost.
pub fn set_tracing(on: bool) {
    TRACING.store(on, Ordering::Relaxed);
}

/// True while the run is traced (`--trace`, `--svg`), in the process that asked and in every
/// child: what a queue or a pool checks before it pays for a message id.
pub fn tracing() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Restores the clock and mode in a spawned child from [`env_value`]'s string.
pub(crate) fn init_from_env(value: &str, who: &str) {
    let (value, tracing) = match value.strip_suffix(TRACING_SUFFIX) {
        Some(value) => (value, true),
        None => (value, false),
    };
    if tracing {
        TRACING.store(true, Ordering::Relaxed);
        crate::phase::install_tracer(crate::trace::on_mark);
    }
    let (t0, json) = value.split_once(':').unwrap_or(("0", "0"));
    let (json, recording) = match json.split_once(':') {
        Some((json, recording)) => (json, Some(recording)),
        None => (json, None),
    };
    T0_NS.store(t0.parse().unwrap_or_else(|_| monotonic_ns()), Ordering::Relaxed);
    JSON.store(json == "1", Ordering::Relaxed);
    set_who(who);
    if let Some(recording) = recording {
        adopt_inherited_recording(recording);
    }
}

/// From now on, also appends every [`event`](super::event) as its JSON line to `fd` (`Some`),
/// or stops (`None`); returns the descriptor recorded to before. Children started afterwards
/// record to the same file: a forked child inherits the descriptor, a spawned child is told its
/// number through `CONCURRENCY_DEMOS_REPORT` (the descriptor must then lack close-on-exec, so
/// that `exec` keeps it).
///
/// Contract: `fd` is a regular file opened with `O_APPEND` (one `write(2)` per line then never
/// mixes lines of different processes); the caller keeps it open while it is set, and calls
/// `record_to(None)` before closing it. [`crate::timeline::Recording`] does all of this.
pub fn record_to(fd: Option<i32>) -> Option<i32> {
    let previous = RECORD_FD.swap(fd.unwrap_or(-1), Ordering::AcqRel);
    (previous >= 0).then_some(previous)
}

/// The descriptor events are recorded to, if [`record_to`] set one.
pub fn recording_fd() -> Option<i32> {
    let fd = RECORD_FD.load(Ordering::Acquire);
    (fd >= 0).then_some(fd)
}

/// `FD:INODE` of the recording file, for a spawned child; the inode lets the child check that
/// the descriptor it inherited is really that file.
fn recording_env() -> Option<String> {
    #[cfg(unix)]
    {
        let fd = recording_fd()?;
        // Safety: `record_to`'s contract keeps `fd` open while it is set.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let stat = nix::sys::stat::fstat(borrowed).ok()?;
        Some(format!("{fd}:{}", stat.st_ino))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// In a spawned child: records to the inherited descriptor named by `FD:INODE`, if it is open
/// and is that very file (anything else is ignored: the child then records nothing).
fn adopt_inherited_recording(recording: &str) {
    #[cfg(unix)]
    {
        let Some((fd, ino)) = recording.split_once(':') else { return };
        let Ok(fd) = fd.parse::<i32>() else { return };
        if fd < 0 {
            return;
        }
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // Safety: fstat fills the `struct stat` it is given; a number that is not open yields
        // EBADF and writes nothing.
        if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
            return;
        }
        // Safety: fstat returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        if stat.st_ino.to_string() == ino && (stat.st_mode & libc::S_IFMT) == libc::S_IFREG {
            record_to(Some(fd));
        }
    }
    #[cfg(not(unix))]
    let _ = recording;
}

/// Appends one line to the recording file in one `write(2)`; errors are ignored (a demo must not
/// fail half-way because its timeline could not be written).
pub(super) fn write_record(fd: i32, bytes: &[u8]) {
    #[cfg(unix)]
    {
        // Safety: `record_to`'s contract keeps `fd` open while it is set.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut rest = bytes;
        while !rest.is_empty() {
            match nix::unistd::write(borrowed, rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (fd, bytes);
}
