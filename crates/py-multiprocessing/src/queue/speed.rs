//! speed — what the queue does only for speed, kept apart from its lesson, where a reader makes
//! two `read(2)` calls per item (its length, then its bytes) and sleeps in `poll(2)` whenever
//! the pipe is empty.
//!
//! - **A staging area**: one `read(2)` takes as much as the pipe holds (up to [`STAGE`] bytes)
//!   into the shared block, and the next readers, in any process, take their bytes from there
//!   under the reader lock: staged bytes are still in the queue, only one system call nearer. A
//!   reader killed with frames staged harms nobody; one killed in the middle of a frame is
//!   judged by the core's busy mark, which covers every call of [`Core::read_stream`].
//! - **A watch before `poll`**: a reader that finds the pipe empty first watches the count of
//!   items put for a few microseconds. When items come quickly the next one is taken without a
//!   sleep and a wake-up, which the writer would otherwise pay for inside its `write(2)`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::Core;
use crate::shm::Wait;

/// Bytes of the readers' staging area.
pub(super) const STAGE: usize = 64 * 1024;
/// How long a reader watches for an item before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

impl Core {
    /// Under the reader lock: `read(2)` of the queue's byte stream into `buf`: the staged bytes
    /// first; when none are staged, one read of the pipe refills the stage (or goes straight
    /// into `buf`, if that is as large). As `read(2)`: `Ok(0)` at end-of-file, `EAGAIN` when
    /// nothing is there.
    pub(super) fn read_stream(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let c = self.ctl();
        let start = c.stage_start.load(Ordering::Relaxed) as usize;
        let end = c.stage_end.load(Ordering::Relaxed) as usize;
        // Safety: only the reader-lock holder (this thread) touches the staging area.
        let stage = unsafe { &mut *c.stage.get() };
        if start < end {
            let n = buf.len().min(end - start);
            buf[..n].copy_from_slice(&stage[start..start + n]);
            c.stage_start.store((start + n) as u32, Ordering::Relaxed);
            return Ok(n);
        }
        if buf.len() >= STAGE {
            return nix::unistd::read(&self.read, buf);
        }
        let n = nix::unistd::read(&self.read, stage)?;
        let taken = buf.len().min(n);
        buf[..taken].copy_from_slice(&stage[..taken]);
        c.stage_start.store(taken as u32, Ordering::Relaxed);
        c.stage_end.store(n as u32, Ordering::Relaxed);
        Ok(taken)
    }

    /// True if an item was put while we watched (read again); false: sleep in `poll(2)`. A
    /// change of the count, not the count itself, so that an item counted by a writer that died
    /// before writing it never keeps a reader spinning.
    pub(super) fn spin_before_poll(&self, wait: Wait) -> bool {
        if wait == Wait::Now {
            return false;
        }
        let puts = &self.ctl().puts;
        let before = puts.load(Ordering::Acquire);
        let began = Instant::now();
        while began.elapsed() < SPIN {
            // Give the core away at once if another process wants it (the writer, perhaps).
            std::thread::yield_now();
            if puts.load(Ordering::Acquire) != before {
                return true;
            }
        }
        false
    }
}
