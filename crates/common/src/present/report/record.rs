//! Recording: every event also appended, as its JSON line, to one file that every process of
//! the run shares; and what a spawned child is told of the run (clock, mode, recording, trace).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

use super::{JSON, T0_NS, json_mode, set_who};

/// Environment variable through which a spawned child learns the demo's clock and output mode.
pub(crate) const ENV_REPORT: &str = "CONCURRENCY_DEMOS_REPORT";

/// The file descriptor events are also recorded to (see [`record_to`]), or -1. A raw number in
/// an atomic: a forked child inherits both the number and the open file behind it.
static RECORD_FD: AtomicI32 = AtomicI32::new(-1);
static TRACING: AtomicBool = AtomicBool::new(false);

/// What a spawned child needs to print on the same clock and in the same mode as its parent,
/// as JSON in [`ENV_REPORT`].
#[derive(Default, Serialize, Deserialize)]
struct Inherited {
    t0_ns: u64,
    json: bool,
    tracing: bool,
    /// The recording file's descriptor and inode: the inode lets the child check that the
    /// descriptor it inherited is really that file.
    recording: Option<(i32, u64)>,
}

/// The value of [`ENV_REPORT`] for a child spawned now.
pub(crate) fn env_value() -> String {
    let recording = recording_fd().and_then(|fd| Some((fd, inode_of(fd)?)));
    let inherited = Inherited {
        t0_ns: T0_NS.load(Ordering::Relaxed),
        json: json_mode(),
        tracing: tracing(),
        recording,
    };
    serde_json::to_string(&inherited).unwrap_or_default()
}

/// Restores the clock and mode in a spawned child from [`env_value`]'s string, and the
/// recording only if the inherited descriptor is still that file (else it records nothing).
pub(crate) fn init_from_env(value: &str, who: &str) {
    let inherited: Inherited = serde_json::from_str(value).unwrap_or_default();
    if inherited.tracing {
        TRACING.store(true, Ordering::Relaxed);
        crate::phase::install_tracer(crate::trace::on_mark);
    }
    T0_NS.store(inherited.t0_ns, Ordering::Relaxed);
    JSON.store(inherited.json, Ordering::Relaxed);
    set_who(who);
    if let Some((fd, inode)) = inherited.recording
        && inode_of(fd) == Some(inode)
    {
        record_to(Some(fd));
    }
}

/// Says whether the run is traced; a spawned child learns it through
/// `CONCURRENCY_DEMOS_REPORT` and then records its phase marks as well. Public for the bench,
/// which turns it on without a trace to measure what the queue's message ids cost.
pub fn set_tracing(on: bool) {
    TRACING.store(on, Ordering::Relaxed);
}

/// True while the run is traced (`--trace`, `--svg`), in the process that asked and in every
/// child: what a queue or a pool checks before it pays for a message id.
pub fn tracing() -> bool {
    TRACING.load(Ordering::Relaxed)
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

/// The inode of the regular file open on `fd`; `None` for a number that is not open or is
/// something else.
fn inode_of(fd: i32) -> Option<u64> {
    #[cfg(unix)]
    {
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // Safety: fstat fills the `struct stat` it is given; a number that is not open yields
        // EBADF and writes nothing.
        if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
            return None;
        }
        // Safety: fstat returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        #[allow(clippy::unnecessary_cast)] // `ino_t` is 64 bits here, not on every unix
        ((stat.st_mode & libc::S_IFMT) == libc::S_IFREG).then_some(stat.st_ino as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = fd;
        None
    }
}
