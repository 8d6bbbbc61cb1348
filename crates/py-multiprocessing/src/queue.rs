//! queue — `Queue` across processes: a pipe plus a lock (进程queue=管道+锁), Python's
//! `multiprocessing.Queue`; [`JoinableQueue`] adds `task_done` and `join` on top.
//!
//! - **A pipe** carries the items, each as one *frame*: a 4-byte length (little endian), then
//!   the item as JSON.
//! - **A writer lock**: a frame bigger than `PIPE_BUF` is written in pieces, which the kernel
//!   may interleave with another writer's bytes; the lock keeps each frame whole.
//! - **A reader lock**: a pipe keeps no boundaries (a `read(2)` returns whatever bytes are
//!   there), so a reader takes the lock, reads one length and that many bytes, and lets go.
//! - **Counters** in a block of memory every process shares (a `memfd`): the free places of a
//!   bounded queue (a counting semaphore that `put` sleeps on, with a futex), items put, taken.
//! - **A message id** only in a traced run (`--trace`, `--svg`): the length's top bit set, then
//!   8 bytes naming the message, for the trace's arrow from each `put` to its `get`.
//!
//! The locks are robust, process-shared mutexes ([`crate::shm::RobustMutex`]): a holder's death
//! releases them and tells the next holder. Each holder records whether it is in the middle of
//! a frame; if it died there, the pipe no longer starts at a frame boundary and the queue
//! answers [`QueueError::Broken`] from then on. CPython's queue locks with a named semaphore,
//! which a killed holder never gives back.
//!
//! Beside this file: `pipe.rs` (its system calls), `bound.rs` (`maxsize`), `setup.rs` (the
//! shared block, making a queue, handing it to a child), `joinable.rs`, `handle.rs` (`_nowait`,
//! `_timeout`, snapshots), and, kept out of the lesson, `speed.rs` (only for speed). Unlike
//! Python's, `put` writes before it returns (no feeder thread), so an unbounded queue is bounded
//! by the pipe's bytes; items are JSON, not pickles. Linux only.

#![cfg(target_os = "linux")]

mod bound;
mod handle;
mod joinable;
mod pipe;
mod setup;
mod speed;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::PollFlags;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use joinable::JoinableQueue;
use setup::{BROKEN_BAD_LENGTH, BROKEN_READER_DIED, BROKEN_TORN_EOF, BROKEN_WRITER_DIED};
pub use setup::{QueueDescriptor, QueueError};

use crate::shm::{RobustGuard, SharedBlock, Taken, Wait, own_pid};
use pipe::{bytes_in_pipe, poll_fd, write_all};
use setup::{Control, os_error};

/// The largest item, in bytes of JSON, a queue accepts unless made with another limit.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// The largest `max_message` a queue may be given.
pub const MAX_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;
/// The largest `maxsize` (CPython's `SEM_VALUE_MAX`).
pub const MAX_MAXSIZE: usize = i32::MAX as usize;
/// The pipe size the queue asks for (`F_SETPIPE_SZ`); the default of 64 KiB if refused.
pub const PIPE_CAPACITY: usize = 1024 * 1024;
/// Bytes of the length in front of every frame.
const HEADER: usize = 4;
/// The length's top bit: a message id of [`ID`] bytes follows (a traced run). Lengths never
/// reach it ([`MAX_MESSAGE_LIMIT`] is far below 2^31).
const WITH_ID: u32 = 1 << 31;
const ID: usize = 8;
/// How often a reader in the middle of a frame checks that its writer is still alive.
const TORN_CHECK: Duration = Duration::from_millis(100);

/// One process's handle on a queue: the pipe's two ends and its mapping of the shared block.
struct Core {
    read: OwnedFd,
    write: OwnedFd,
    block: SharedBlock<Control>,
}

/// A FIFO queue of `T` shared by processes (Python's `multiprocessing.Queue`). Cloning makes
/// another handle in the same process; a child gets one by fork, or by its descriptor (spawn).
pub struct Queue<T> {
    core: Arc<Core>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue of at most `maxsize` items (0: no limit but the pipe's capacity), each at most
    /// [`DEFAULT_MAX_MESSAGE`] bytes of JSON.
    pub fn new(maxsize: usize) -> Result<Queue<T>, QueueError> {
        Queue::with_max_message(maxsize, DEFAULT_MAX_MESSAGE)
    }

    /// Like [`Queue::new`], with another limit on an item's size in bytes of JSON.
    pub fn with_max_message(maxsize: usize, max_message: usize) -> Result<Queue<T>, QueueError> {
        Ok(Queue::from_core(Core::create(maxsize, max_message, false)?))
    }

    /// Puts `item`, blocking while the queue is full (Python's `q.put(item)`).
    pub fn put(&self, item: impl Borrow<T>) -> Result<(), QueueError> {
        self.put_json(item.borrow(), Wait::Forever)
    }

    fn put_json(&self, item: &T, wait: Wait) -> Result<(), QueueError> {
        let json = serde_json::to_vec(item).map_err(QueueError::Encode)?;
        self.core.put_frame(&json, wait)
    }

    /// Takes the oldest item, blocking while the queue is empty (Python's `q.get()`).
    pub fn get(&self) -> Result<T, QueueError> {
        self.get_json(Wait::Forever)
    }

    fn get_json(&self, wait: Wait) -> Result<T, QueueError> {
        serde_json::from_slice(&self.core.get_frame(wait)?).map_err(QueueError::Decode)
    }
}

impl Core {
    /// Puts one frame: takes a free place (bounded queue), counts the item, writes the frame.
    /// On failure nothing was written and every count is as before.
    fn put_frame(&self, body: &[u8], wait: Wait) -> Result<(), QueueError> {
        self.check_broken()?;
        let max = self.ctl().max_message as usize;
        if body.len() > max {
            return Err(QueueError::TooLarge { size: body.len(), max });
        }
        if !self.acquire_slot(wait) {
            return Err(QueueError::Full);
        }
        // Counted before the bytes reach the pipe, so that no reader can take the item and
        // finish its task before it is counted (`join` must never see a false zero).
        self.ctl().puts.fetch_add(1, Ordering::SeqCst);
        let id = common::report::tracing().then(message_id);
        let mut frame = Vec::with_capacity(HEADER + ID + body.len());
        let len = body.len() as u32 | if id.is_some() { WITH_ID } else { 0 };
        frame.extend_from_slice(&len.to_le_bytes());
        if let Some(id) = id {
            frame.extend_from_slice(&id.to_le_bytes());
            // Recorded before the write, so that it comes before the `got` of any reader.
            record_message("queue_put", id);
        }
        frame.extend_from_slice(body);
        self.write_frame(&frame, wait).inspect_err(|_| {
            self.ctl().puts.fetch_sub(1, Ordering::SeqCst);
            self.wake_joiners_if_all_done();
            self.release_slot();
        })
    }

    fn write_frame(&self, frame: &[u8], wait: Wait) -> Result<(), QueueError> {
        let Some(_writer) = self.lock(true, wait)? else { return Err(QueueError::Full) };
        if frame.len() <= libc::PIPE_BUF {
            // One write(2) of at most PIPE_BUF bytes is atomic: all of it or nothing (EAGAIN),
            // so a writer killed here leaves the stream whole, and needs no busy mark.
            return write_all(self.write.as_fd(), frame, wait);
        }
        // Bigger: several writes. With a deadline, wait for room for the whole frame first:
        // once its first byte is in, the rest must follow whatever the deadline.
        if wait != Wait::Forever {
            let capacity = self.ctl().capacity as usize;
            let need = frame.len().min(capacity);
            while capacity.saturating_sub(bytes_in_pipe(self.write.as_fd())?) < need {
                let Some(left) = wait.remaining().filter(|l| !l.is_zero()) else {
                    return Err(QueueError::Full);
                };
                std::thread::sleep(left.min(Duration::from_millis(1)));
            }
        }
        // A death from the first byte until the last leaves half a frame: busy says so.
        let busy = &self.ctl().writer_busy;
        busy.store(1, Ordering::Release);
        let written = write_all(self.write.as_fd(), frame, Wait::Forever);
        busy.store(0, Ordering::Release);
        written
    }

    /// Takes one frame's body under the reader lock, then gives back a free place. The lock is
    /// robust: a reader killed holding it (even asleep in `poll`) cannot block the others for ever.
    fn get_frame(&self, wait: Wait) -> Result<Vec<u8>, QueueError> {
        let (body, id) = {
            let Some(_reader) = self.lock(false, wait)? else { return Err(QueueError::Empty) };
            let mut header = [0u8; HEADER];
            if !self.read_exact(&mut header, Some(wait))? {
                return Err(QueueError::Empty);
            }
            let header = u32::from_le_bytes(header);
            let len = (header & !WITH_ID) as usize;
            // Checked before allocating: a corrupt length must never become an allocation.
            if len > self.ctl().max_message as usize {
                return Err(self.set_broken(BROKEN_BAD_LENGTH));
            }
            let mut id = None;
            if header & WITH_ID != 0 {
                let mut bytes = [0u8; ID];
                self.read_exact(&mut bytes, None)?;
                id = Some(u64::from_le_bytes(bytes));
            }
            let mut body = vec![0u8; len];
            self.read_exact(&mut body, None)?;
            self.ctl().reader_busy.store(0, Ordering::Release);
            (body, id)
        };
        self.ctl().gets.fetch_add(1, Ordering::SeqCst);
        self.release_slot();
        if let Some(id) = id {
            record_message("queue_got", id);
        }
        Ok(body)
    }

    /// Under the reader lock: fills `buf` from the pipe. `Some(wait)`: the start of a frame,
    /// waited for as `wait` allows (`Ok(false)`: nothing came); `None`: the rest of a frame,
    /// which its writer is still writing, or died. The reader is busy from the first read(2) of
    /// a frame to its last byte: a death then leaves the stream mid-frame.
    fn read_exact(&self, buf: &mut [u8], start: Option<Wait>) -> Result<bool, QueueError> {
        let busy = &self.ctl().reader_busy;
        let mut got = 0;
        while got < buf.len() {
            busy.store(1, Ordering::Release);
            // read(2) of the queue's byte stream (through the readers' staging area: speed.rs).
            match self.read_stream(&mut buf[got..]) {
                Ok(0) if got > 0 || start.is_none() => return Err(self.set_broken(BROKEN_TORN_EOF)),
                // EOF only once every write end in every process is closed; every handle holds
                // one, so this is a queue whose every other process is gone.
                Ok(0) => return Err(QueueError::Closed),
                Ok(n) => got += n,
                Err(Errno::EAGAIN) => match start {
                    Some(wait) if got == 0 => {
                        busy.store(0, Ordering::Release);
                        if !self.spin_before_poll(wait)
                            && !poll_fd(self.read.as_fd(), PollFlags::POLLIN, wait)?
                        {
                            return Ok(false);
                        }
                    }
                    _ => self.wait_rest_of_frame()?,
                },
                Err(Errno::EINTR) => {}
                Err(e) => return Err(os_error("read(the queue's pipe)", e)),
            }
        }
        Ok(true)
    }

    /// Part of a frame is read, the rest is not in the pipe: its writer is still writing (it
    /// holds the writer lock) or died, checked every [`TORN_CHECK`] so that no reader hangs.
    fn wait_rest_of_frame(&self) -> Result<(), QueueError> {
        if poll_fd(self.read.as_fd(), PollFlags::POLLIN, Wait::from_timeout(TORN_CHECK))? {
            return Ok(());
        }
        // If the writer lock is free, nobody is writing; under it no byte can arrive, so an
        // empty pipe now means the rest will never come.
        match self.lock(true, Wait::Now)? {
            Some(_writer) if bytes_in_pipe(self.read.as_fd())? == 0 => {
                Err(self.set_broken(BROKEN_WRITER_DIED))
            }
            _ => Ok(()),
        }
    }

    /// Takes the writer or the reader lock as `wait` allows (`None`: not in time). If the last
    /// holder died in the middle of a frame, the queue is broken for good.
    fn lock(&self, writer: bool, wait: Wait) -> Result<Option<RobustGuard<'_>>, QueueError> {
        let c = self.ctl();
        let (lock, busy, died) = match writer {
            true => (&c.writer, &c.writer_busy, BROKEN_WRITER_DIED),
            false => (&c.reader, &c.reader_busy, BROKEN_READER_DIED),
        };
        let Some((taken, guard)) = lock.lock(wait)? else { return Ok(None) };
        if taken == Taken::OwnerDied && busy.swap(0, Ordering::AcqRel) != 0 {
            return Err(self.set_broken(died));
        }
        self.check_broken()?;
        Ok(Some(guard))
    }
}

/// A message id unique in the run: this process's pid, then its count of messages.
fn message_id() -> u64 {
    static MESSAGES: AtomicU32 = AtomicU32::new(0);
    (u64::from(own_pid()) << 32) | u64::from(MESSAGES.fetch_add(1, Ordering::Relaxed))
}

/// Records (never prints) one end of a message's way, for the trace's arrow.
fn record_message(end: &str, id: u64) {
    if common::report::recording_fd().is_some() {
        common::report::record_only(end, serde_json::json!({ "msg": id }));
    }
}
