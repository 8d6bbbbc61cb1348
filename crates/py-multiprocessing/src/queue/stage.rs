//! stage — the queue's speed-up for readers, kept apart from its lesson. The lesson's reader
//! makes two `read(2)` calls per item: its length, then its bytes. Here one `read(2)` takes as
//! much as the pipe holds (up to [`STAGE`] bytes) into a staging area in the shared block, and
//! the next readers, in any process, take their bytes from there under the reader lock: staged
//! bytes are still in the queue, only one system call nearer. A reader killed with frames
//! staged harms nobody; one killed in the middle of a frame is judged by the core's busy mark,
//! which covers every call of [`Core::read_stream`].

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
}
