//! setup — making a queue, its shared block, its errors, and handing it to a child.
//!
//! A forked child has every descriptor and the shared block already. A spawned child starts
//! with nothing (Rust opens every descriptor close-on-exec): the parent passes the queue's three
//! descriptors ([`common::process::Process::pass_fds`]) and, in the child's arguments, the queue
//! as a [`QueueDescriptor`], which `Queue::from_descriptor` checks names this queue's pipe and
//! shared block.
//!
//! Every handle of a queue holds both ends of the pipe (a consumer may put too), so the queue
//! never ends by EOF: its consumers end with a sentinel (`None`), or as daemons.

use std::cell::UnsafeCell;
use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::speed::STAGE;
use super::{Core, JoinableQueue, MAX_MAXSIZE, MAX_MESSAGE_LIMIT, Queue};
use crate::shm::{RobustMutex, Shareable, SharedBlock, ShmError, random_id};

/// What can go wrong with a queue. Callers match on the variants (`Full`, `Empty`, ...).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Python's `queue.Full`, from `put_nowait` or `put` with a timeout.
    #[error("queue.Full: no free place in the queue")]
    Full,
    /// Python's `queue.Empty`, from `get_nowait` or `get` with a timeout.
    #[error("queue.Empty: no item in the queue")]
    Empty,
    #[error("join timed out with {unfinished} unfinished task(s)")]
    Timeout { unfinished: usize },
    /// Nothing was written.
    #[error("the item is {size} bytes of JSON, more than this queue's max_message of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("the queue is closed: no process holds the other end of its pipe any more")]
    Closed,
    /// Python's `ValueError`.
    #[error("task_done() called too many times (more than items taken with get)")]
    TaskDoneTooManyTimes,
    /// A process died in the middle of a frame, or a length was corrupt: the pipe's bytes no
    /// longer start at a frame boundary, so nothing more can be read safely.
    #[error("the queue is broken: {0}")]
    Broken(&'static str),
    #[error("encoding the item as JSON: {0}")]
    Encode(serde_json::Error),
    #[error("decoding an item from the queue: {0}")]
    Decode(serde_json::Error),
    #[error("rebuilding a queue from its descriptor: {0}")]
    BadDescriptor(String),
    /// A bad `maxsize` or `max_message`.
    #[error("making a queue: {0}")]
    Invalid(String),
    #[error("{call}: {error}")]
    Io { call: &'static str, error: io::Error },
}

pub(super) fn os_error(call: &'static str, errno: Errno) -> QueueError {
    QueueError::Io { call, error: io::Error::from_raw_os_error(errno as i32) }
}

impl From<ShmError> for QueueError {
    fn from(e: ShmError) -> QueueError {
        os_error(e.call, e.errno)
    }
}

/// The numbers that name a queue, which a child receives to rebuild it. Valid only in a process
/// that has these descriptors open: a forked child, or a spawned one they were passed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDescriptor {
    pub read_fd: RawFd,
    pub write_fd: RawFd,
    /// The memfd holding the locks and counters.
    pub control_fd: RawFd,
    /// A random number also stored in the shared block: proof the numbers name this queue.
    pub id: u64,
}

const MAGIC: u64 = 0x5155_4555_4521_0002; // "QUEUE!" + version 2
pub(super) const BROKEN_READER_DIED: u32 = 1;
pub(super) const BROKEN_WRITER_DIED: u32 = 2;
pub(super) const BROKEN_BAD_LENGTH: u32 = 3;
pub(super) const BROKEN_TORN_EOF: u32 = 4;

fn broken_reason(code: u32) -> &'static str {
    match code {
        BROKEN_READER_DIED => "a process died while reading a frame (it held the reader lock)",
        BROKEN_WRITER_DIED => "a process died while writing a frame (it held the writer lock)",
        BROKEN_BAD_LENGTH => "a frame's length was beyond max_message (the stream is corrupt)",
        BROKEN_TORN_EOF => "every writer closed the pipe in the middle of a frame",
        _ => "unknown reason",
    }
}

/// The block of shared memory every process of a queue maps (a memfd, `MAP_SHARED`). The first
/// six fields are written once by the creator, before the queue is shared.
#[repr(C)]
pub(super) struct Control {
    magic: u64,
    id: u64,
    joinable: u32,
    /// 0: unbounded.
    pub maxsize: u32,
    pub max_message: u32,
    /// The pipe's size in bytes, as `F_GETPIPE_SZ` said.
    pub capacity: u32,
    pub writer: RobustMutex,
    /// 1 while the writer-lock holder is in the middle of a frame of several writes.
    pub writer_busy: AtomicU32,
    pub reader: RobustMutex,
    /// 1 while the reader-lock holder has read part of a frame.
    pub reader_busy: AtomicU32,
    /// Free places of a bounded queue (a futex `put` sleeps on), and its sleepers.
    pub free: AtomicU32,
    pub free_waiters: AtomicU32,
    /// Items put, taken, and (JoinableQueue) marked done: wrapping counters, whose differences
    /// are the counts. `done` is also a futex that `join` sleeps on.
    pub puts: AtomicU32,
    pub gets: AtomicU32,
    pub done: AtomicU32,
    pub join_waiters: AtomicU32,
    /// A `BROKEN_*` code; once set, never cleared.
    broken: AtomicU32,
    /// The readers' staging area (speed.rs): bytes read from the pipe and not yet taken are
    /// `stage[stage_start..stage_end]`. Touched only under the reader lock.
    pub stage_start: AtomicU32,
    pub stage_end: AtomicU32,
    pub stage: UnsafeCell<[u8; STAGE]>,
}

// Safety: zeroed bytes are a valid `Control` (the creator then initialises the mutexes and the
// head before the queue is shared); after that every field that changes is an atomic, a
// robust mutex, or the staging area, touched only under the reader lock.
unsafe impl Shareable for Control {}
// Safety: as above: the shared block is made for concurrent use.
unsafe impl Sync for Control {}

/// (pid, queue id) of every queue this process made or rebuilt: a descriptor is adopted once.
/// The pid counts: a forked child inherits its parent's list, and may adopt each queue once too.
static HELD: Mutex<BTreeSet<(u32, u64)>> = Mutex::new(BTreeSet::new());

fn mark_held(id: u64) -> bool {
    HELD.lock().unwrap_or_else(PoisonError::into_inner).insert((std::process::id(), id))
}

impl Core {
    pub(super) fn create(
        maxsize: usize,
        max_message: usize,
        joinable: bool,
    ) -> Result<Core, QueueError> {
        if maxsize > MAX_MAXSIZE {
            return Err(QueueError::Invalid(format!(
                "maxsize {maxsize} is more than the largest, {MAX_MAXSIZE}"
            )));
        }
        if max_message == 0 || max_message > MAX_MESSAGE_LIMIT {
            return Err(QueueError::Invalid(format!(
                "max_message {max_message} is not from 1 to {MAX_MESSAGE_LIMIT} bytes"
            )));
        }
        let (read, write, capacity) = super::pipe::make_pipe()?;
        let id = random_id();
        let block = SharedBlock::<Control>::create(c"concurrency-queue", |c| {
            // Safety: the mapping is fresh, zeroed by the kernel, and nobody else sees it yet.
            unsafe {
                (*c).magic = MAGIC;
                (*c).id = id;
                (*c).joinable = u32::from(joinable);
                (*c).maxsize = maxsize as u32;
                (*c).max_message = max_message as u32;
                (*c).capacity = capacity;
                (*c).free = AtomicU32::new(maxsize as u32);
                (*c).reader.init()?;
                (*c).writer.init()
            }
        })?;
        mark_held(id);
        Ok(Core { read, write, block })
    }

    pub(super) fn from_descriptor(d: QueueDescriptor, joinable: bool) -> Result<Core, QueueError> {
        let bad = QueueError::BadDescriptor;
        super::pipe::check_ends(d.read_fd, d.write_fd).map_err(bad)?;
        // Safety: from_raw_fd checks that the descriptor is open and a regular file large
        // enough; if it is another block, `into_raw_fd` gives it back unclosed. That it was
        // made for a `Control` is what the magic number and the id check next.
        let block = unsafe { SharedBlock::<Control>::from_raw_fd(d.control_fd) }.map_err(|_| {
            bad(format!(
                "fd {} is not a queue's shared block open in this process (a spawned child must \
                 be given the queue's descriptors with Process::pass_fds)",
                d.control_fd
            ))
        })?;
        let c = block.get();
        let why = if c.magic != MAGIC || c.id != d.id {
            Some(format!("fd {} is the shared block of another queue", d.control_fd))
        } else if (c.joinable != 0) != joinable {
            let other = ["a Queue", "a JoinableQueue"][!joinable as usize];
            Some(format!("the descriptor names {other}"))
        } else if !mark_held(d.id) {
            Some("this process already holds this queue: clone the handle instead".into())
        } else {
            None
        };
        if let Some(why) = why {
            block.into_raw_fd();
            return Err(bad(why));
        }
        // Safety: both ends are open, are this queue's pipe (checked by type, inode, access
        // mode and the id in the shared block), and are adopted once (checked by `mark_held`).
        let (read, write) =
            unsafe { (OwnedFd::from_raw_fd(d.read_fd), OwnedFd::from_raw_fd(d.write_fd)) };
        // A spawned child got the ends without close-on-exec; giving it back keeps them out of
        // our own spawned children.
        for end in [&read, &write] {
            let _ = fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        Ok(Core { read, write, block })
    }

    pub(super) fn ctl(&self) -> &Control {
        self.block.get()
    }

    pub(super) fn descriptor(&self) -> QueueDescriptor {
        QueueDescriptor {
            read_fd: self.read.as_raw_fd(),
            write_fd: self.write.as_raw_fd(),
            control_fd: self.block.raw_fd(),
            id: self.ctl().id,
        }
    }

    pub(super) fn check_broken(&self) -> Result<(), QueueError> {
        match self.ctl().broken.load(Ordering::Acquire) {
            0 => Ok(()),
            code => Err(QueueError::Broken(broken_reason(code))),
        }
    }

    pub(super) fn set_broken(&self, code: u32) -> QueueError {
        let broken = &self.ctl().broken;
        let _ = broken.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        QueueError::Broken(broken_reason(broken.load(Ordering::Acquire)))
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Rebuilds the queue in a child from the numbers its parent sent. The descriptors must be
    /// open here (fork: always; spawn: passed with `Process::pass_fds`); they are checked to be
    /// this queue's pipe and shared block, and this handle owns them from now on. Once per
    /// process: clone the handle to have more.
    pub fn from_descriptor(d: QueueDescriptor) -> Result<Queue<T>, QueueError> {
        Ok(Queue::from_core(Core::from_descriptor(d, false)?))
    }
}

// A queue travels to a child as its descriptor, as Python pickles a Queue into its arguments.
macro_rules! travels_as_its_descriptor {
    ($($queue:ident),*) => {$(
        impl<T> Serialize for $queue<T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.descriptor().serialize(s)
            }
        }

        impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for $queue<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let descriptor = QueueDescriptor::deserialize(d)?;
                $queue::from_descriptor(descriptor).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
travels_as_its_descriptor!(Queue, JoinableQueue);
