//! stage — the queue's speed-up for readers, kept apart from its lesson. The lesson's reader
//! makes two `read(2)` calls per item: its length, then its bytes. Here one `read(2)` takes as
//! much as the pipe holds (up to [`STAGE`] bytes) into a staging area in the shared block, and
//! the next readers, in any process, take their bytes from there under the reader lock: staged
//! bytes are still in the queue, only one system call nearer. A reader killed with frames
//! staged harms nobody; one killed in the middle of a frame is judged by the core's busy mark,
//! which covers every call of [`Core::read_stream`].

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::Core;

/// Bytes of the readers' staging area.
pub(super) const STAGE: usize = 64 * 1024;

impl Core {
    /// Under the reader lock: `read(2)` of the queue's byte stream into `buf`: the staged bytes
    /// first; when none are staged, one read of the pipe refills the stage (or goes straight
    /// into `buf`, if that is as large). As `read(2)`: `Ok(0)` at end-of-file, `EAGAIN` when
    /// nothing is there.
    pub(super) fn read_stream(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let c = self.ctl();
        let (start, end) = (
            c.stage_start.load(Ordering::Relaxed) as usize,
            c.stage_end.load(Ordering::Relaxed) as usize,
        );
        let stage = c.stage.get().cast::<u8>();
        if start < end {
            let n = buf.len().min(end - start);
            // Safety: `start + n <= end <= STAGE`: inside the staging area, which only the
            // reader-lock holder (this thread) touches; `buf` is ours and does not overlap it.
            unsafe { std::ptr::copy_nonoverlapping(stage.add(start), buf.as_mut_ptr(), n) };
            c.stage_start.store((start + n) as u32, Ordering::Relaxed);
            return Ok(n);
        }
        if buf.len() >= STAGE {
            return nix::unistd::read(&self.read, buf);
        }
        // Safety: reads at most STAGE bytes into the staging area (see above).
        let n = unsafe { libc::read(self.read.as_raw_fd(), stage.cast(), STAGE) };
        if n < 0 {
            return Err(Errno::last());
        }
        let n = n as usize;
        let taken = buf.len().min(n);
        // Safety: `taken <= n <= STAGE`, inside the staging area; `buf` is ours.
        unsafe { std::ptr::copy_nonoverlapping(stage, buf.as_mut_ptr(), taken) };
        c.stage_start.store(taken as u32, Ordering::Relaxed);
        c.stage_end.store(n as u32, Ordering::Relaxed);
        Ok(taken)
    }
}
