//! queue — `Queue` and `JoinableQueue` across processes: a pipe plus locks (进程queue=管道+锁).
//!
//! Python's `multiprocessing.Queue`, rebuilt from the parts the notes name, and shared by many
//! producer and many consumer processes at once, started with fork or spawn.
//!
//! ## The parts
//! - **A pipe** carries the items. Each item is one *frame*: a 4-byte length (little endian),
//!   then the item as JSON. A frame is at most `max_message` bytes of JSON
//!   ([`DEFAULT_MAX_MESSAGE`], 64 KiB, unless the queue was made with another limit): `put`
//!   refuses a bigger one with [`QueueError::TooLarge`], and a reader checks every length it reads
//!   against the limit *before* allocating, so a corrupt length can never make it allocate
//!   without bound. The pipe is made as large as the kernel allows an unprivileged process
//!   ([`PIPE_CAPACITY`], 1 MiB, with `F_SETPIPE_SZ`; 64 KiB if refused).
//! - **No lock for small writes**: a `write(2)` of at most `PIPE_BUF` (4096) bytes to a pipe is
//!   atomic, the kernel never interleaves it with another, so a frame that small is written in
//!   one call by any number of writers at once, with no lock at all.
//! - **A lock for big writes**. A bigger frame is written in pieces that *can* interleave with
//!   other writers' bytes. Such a frame goes to a second pipe: under the big-writer lock, the
//!   writer puts a 4-byte *marker* in the main pipe (the item's place in the queue) and then the
//!   frame in the big pipe; the lock keeps the big frames in the order of their markers. A
//!   reader that meets a marker reads the next frame of the big pipe.
//! - **A reader lock**. A pipe keeps no message boundaries: a `read(2)` returns whatever bytes are
//!   there, part of a frame or several frames. So a reader takes the reader lock, reads as much
//!   as the pipe holds in one `read(2)` into a *staging area* in shared memory, takes the first
//!   frame from it, and leaves the rest there for the next reader, in any process: staged bytes
//!   are still in the queue, only one system call nearer. Without the lock, two readers would
//!   split frames between them. A reader that finds the pipe empty watches the count of frames
//!   written for a few microseconds before it sleeps in `poll(2)`, so that a steady stream of
//!   items costs no sleep and wake-up per item.
//! - **Counters** in a small block of shared memory: the free places of a bounded queue (a
//!   counting semaphore: `put` takes one, `get` gives it back; `put` sleeps on a futex while there
//!   is none), items put, items taken (`qsize` is the difference) and, for a [`JoinableQueue`],
//!   tasks done (`join` sleeps on a futex until they equal the items put). Writers' and readers'
//!   counters sit on separate cache lines.
//!
//! ## Which lock, and what happens when a holder dies
//! The locks are POSIX *robust*, process-shared mutexes (`pthread_mutex_t`) in the shared block,
//! which is a `memfd` mapped `MAP_SHARED` by every process that uses the queue:
//! - they cost no system call when nobody else holds them (a `flock(2)` pair costs two; on this
//!   project's machine about 1 µs, as much as the pipe write itself);
//! - like a `flock`, a robust mutex is released when its holder dies; unlike a `flock`, the next
//!   process to take it is *told* (`EOWNERDEAD`). Each holder records whether it is in the middle
//!   of a frame; if a process died mid-frame, the pipe's bytes no longer start at a frame
//!   boundary, and the queue answers [`QueueError::Broken`] from then on instead of decoding
//!   garbage. A process that dies between frames, while waiting for an item, or with frames
//!   staged, harms nothing; a writer of a small frame never holds a lock, and its one write is
//!   all or nothing.
//! - CPython's `Queue` uses a named POSIX semaphore as its lock: a process killed while holding it
//!   (in the middle of `get`) never releases it, and every other reader hangs forever.
//!
//! What a death costs (the same holds in CPython unless said otherwise):
//! - killed after taking an item: the item is gone with it; in a [`JoinableQueue`] its task is
//!   never done, so `join` would wait forever. Here [`JoinableQueue::join_timeout`] returns
//!   [`QueueError::Timeout`] with the unfinished count (Python's `join` just hangs);
//! - killed between taking a free place and writing its frame (or reading a frame and giving the
//!   place back): the bound shrinks by one for the queue's life;
//! - killed in the middle of a frame while holding a lock: the queue is [`QueueError::Broken`]
//!   (CPython: torn data or a lock that is never released).
//!
//! ## Sharing a queue with a child
//! A forked child has every descriptor and the shared block already. A spawned child starts from
//! `main` with nothing: Rust opens every descriptor close-on-exec, so the parent passes the
//! queue's five descriptors with [`crate::process::Process::pass_fds`] and the queue itself in
//! the child's arguments. A `Queue` serializes to a [`QueueDescriptor`] (the descriptor numbers
//! and the queue's id), and deserializes in the child with [`Queue::from_descriptor`], which
//! checks that the numbers really are this queue's pipe and shared block.
//!
//! ```ignore
//! let q: JoinableQueue<String> = JoinableQueue::new(0)?;
//! let mut c = Process::new("consumer-1", &CONSUMER, json!({ "queue": q }))
//!     .start_method(method)
//!     .pass_fds(&q.fds());
//! ```
//!
//! A pipe reports end-of-file only when *every* write end is closed: a reader waiting for EOF
//! waits forever while some process, perhaps itself, still holds a write end. Every handle of
//! this queue holds both ends (a consumer may put too), so the queue never ends by EOF; its
//! consumers end with a sentinel (`None`), or as daemons with [`JoinableQueue`]. Descriptors of
//! other queues and pipes are not leaked into spawned children (close-on-exec, only the passed
//! ones survive); a forked child has copies of all of its parent's, which matters to a design
//! that ends by EOF (close the unused ends in every process), not to this one.
//!
//! ## Differences from Python
//! - `put` writes the frame before it returns; CPython's `put` hands the item to a feeder thread
//!   and returns at once, so right after `q.put(x)` another process may still see `q.empty()`.
//! - An unbounded queue is bounded by the pipe's capacity in bytes (1 MiB here): when nobody
//!   reads, `put` blocks like a full queue (`put_nowait` says [`QueueError::Full`]). CPython's
//!   feeder thread buffers in memory instead, and a process then hangs at exit until its
//!   buffered items are read.
//! - Items are JSON values, not pickles: any `serde` type, not any Python object.
//! - `task_done` refuses to be called more times than items were *taken* with `get`, as the
//!   notes say; CPython only refuses more calls than items *put*.
//! - `qsize`, `empty` and `full` are snapshots, as in Python ("not reliable"): another process
//!   may change the queue before the answer is used.
//!
//! Linux only: `memfd_create`, robust mutexes, futexes and `F_SETPIPE_SZ` are Linux system calls.

#![cfg(target_os = "linux")]

use std::borrow::Borrow;
use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::processes::shm::{
    RobustGuard, RobustMutex, Shareable, SharedBlock, ShmError, Taken, Wait, futex_wait,
    futex_wake, random_id,
};

/// The largest item, in bytes of JSON, a queue accepts unless made with another limit.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// The largest `max_message` a queue may be given.
pub const MAX_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;
/// The largest `maxsize` (CPython's `SEM_VALUE_MAX`).
pub const MAX_MAXSIZE: usize = i32::MAX as usize;
/// The pipe size the queue asks for (`F_SETPIPE_SZ`); the default of 64 KiB if refused.
pub const PIPE_CAPACITY: usize = 1024 * 1024;
/// Writes of at most this many bytes to a pipe are atomic (POSIX `PIPE_BUF`; 4096 on Linux).
pub const PIPE_BUF: usize = libc::PIPE_BUF;
/// The largest frame buffer `put_encoded` keeps for the next put (a chunk of `map` is some
/// hundred KiB).
const KEPT_FRAME: usize = 1024 * 1024;
/// Bytes of the length prefix of every frame.
const HEADER: usize = 4;
/// The length prefix that means "this item's frame is in the big pipe".
const MARKER: u32 = u32::MAX;
/// How long a reader watches for an item before it sleeps in poll(2) (see `spin_for_item`).
const SPIN: Duration = Duration::from_micros(50);
/// How often a reader stuck in the middle of a frame checks that its writer is still alive.
const TORN_CHECK: Duration = Duration::from_millis(100);

/// What can go wrong with a queue. Callers match on the variants (`Full`, `Empty`, ...).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// `put_nowait`, or `put` with a timeout, found no free place (Python's `queue.Full`).
    #[error("queue.Full: no free place in the queue")]
    Full,
    /// `get_nowait`, or `get` with a timeout, found no item (Python's `queue.Empty`).
    #[error("queue.Empty: no item in the queue")]
    Empty,
    /// `join_timeout` gave up while tasks were still unfinished.
    #[error("join timed out with {unfinished} unfinished task(s)")]
    Timeout {
        /// Items put and not yet marked done with `task_done`.
        unfinished: usize,
    },
    /// The item is bigger than the queue's `max_message`; nothing was written.
    #[error("the item is {size} bytes of JSON, more than this queue's max_message of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// Every write end (for `get`) or every read end (for `put`) of the pipe is closed.
    #[error("the queue is closed: no process holds the other end of its pipe any more")]
    Closed,
    /// More `task_done` calls than items taken (Python's `ValueError`).
    #[error("task_done() called too many times (more than items taken with get)")]
    TaskDoneTooManyTimes,
    /// A process died in the middle of a frame, or a frame was corrupt: the pipe's bytes no
    /// longer start at a frame boundary, so nothing more can be read safely.
    #[error("the queue is broken: {0}")]
    Broken(&'static str),
    /// The item could not be encoded as JSON.
    #[error("encoding the item as JSON: {0}")]
    Encode(serde_json::Error),
    /// A frame was read whole but is not JSON of the expected type.
    #[error("decoding an item from the queue: {0}")]
    Decode(serde_json::Error),
    /// A descriptor that does not name this kind of queue in this process.
    #[error("rebuilding a queue from its descriptor: {0}")]
    BadDescriptor(String),
    /// A bad `maxsize` or `max_message`.
    #[error("making a queue: {0}")]
    Invalid(String),
    /// A system call failed; `call` names it.
    #[error("{call}: {error}")]
    Io { call: &'static str, error: io::Error },
}

fn os_error(call: &'static str, errno: Errno) -> QueueError {
    QueueError::Io { call, error: io::Error::from_raw_os_error(errno as i32) }
}

impl From<ShmError> for QueueError {
    fn from(e: ShmError) -> QueueError {
        os_error(e.call, e.errno)
    }
}

/// The numbers that name a queue: what a child receives to rebuild it with
/// [`Queue::from_descriptor`]. Valid only in a process that has these descriptors open: a forked
/// child, or a spawned one they were passed to ([`crate::process::Process::pass_fds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDescriptor {
    /// The main pipe's read end.
    pub read_fd: RawFd,
    /// The main pipe's write end.
    pub write_fd: RawFd,
    /// The read end of the pipe for frames bigger than `PIPE_BUF`.
    pub big_read_fd: RawFd,
    /// Its write end.
    pub big_write_fd: RawFd,
    /// The memfd holding the locks and counters.
    pub control_fd: RawFd,
    /// A random number also stored in the shared block: proof the numbers name this queue.
    pub id: u64,
}

impl QueueDescriptor {
    /// The five descriptors, for [`crate::process::Process::pass_fds`].
    pub fn fds(&self) -> [RawFd; 5] {
        [self.read_fd, self.write_fd, self.big_read_fd, self.big_write_fd, self.control_fd]
    }
}

// ---------------------------------------------------------------------------------------------
// The shared block.

const MAGIC: u64 = 0x5155_4555_4521_0001; // "QUEUE!" + version 1

/// Why a queue is broken, as stored in the shared block.
const BROKEN_NO: u32 = 0;
const BROKEN_READER_DIED: u32 = 1;
const BROKEN_WRITER_DIED: u32 = 2;
const BROKEN_BAD_LENGTH: u32 = 3;
const BROKEN_TORN_EOF: u32 = 4;

fn broken_reason(code: u32) -> &'static str {
    match code {
        BROKEN_READER_DIED => "a process died while reading a frame (it held the reader lock)",
        BROKEN_WRITER_DIED => {
            "a process died while writing a big frame (it held the big-writer lock)"
        }
        BROKEN_BAD_LENGTH => "a frame's length was beyond max_message (the stream is corrupt)",
        BROKEN_TORN_EOF => "every writer closed the pipe in the middle of a frame",
        _ => "unknown reason",
    }
}

/// Bytes of the readers' staging area in the shared block (see [`Core::fill`]).
const STAGE: usize = 64 * 1024;

/// Keeps what one side writes on its own cache line, so that a producer and a consumer on two
/// cores do not pass the same line back and forth for every item.
#[repr(C, align(64))]
struct Line<T>(T);

/// Set once by the creator, before the queue is shared; read-only afterwards.
#[repr(C)]
struct Head {
    magic: u64,
    id: u64,
    joinable: u32,
    /// 0: unbounded.
    maxsize: u32,
    max_message: u32,
    /// The pipes' sizes in bytes, as `F_GETPIPE_SZ` said at creation.
    capacity: u32,
    big_capacity: u32,
}

/// What writers share. The counters wrap around (u32); differences of them are the counts.
#[repr(C)]
struct WriterSide {
    /// The big-writer lock (robust: a holder's death is reported to the next one).
    lock: RobustMutex,
    /// The length of the frame the lock holder has started, 0 between frames.
    busy: AtomicU32,
    /// Items put (counted before their frame is written; uncounted if the write fails).
    puts: AtomicU32,
    /// Frames (or markers) whose write into the main pipe has returned: what an idle reader
    /// watches before it sleeps.
    written: AtomicU32,
}

/// What readers share: the lock, the counters, and the staging area's bounds.
#[repr(C)]
struct ReaderSide {
    lock: RobustMutex,
    /// 1 while the lock holder is in a step that a death would leave half done.
    busy: AtomicU32,
    /// Items taken with `get`.
    gets: AtomicU32,
    /// JoinableQueue: tasks marked done (a futex `join` sleeps on).
    done: AtomicU32,
    /// The staged bytes are `stage[start..end]`; changed only under the reader lock.
    start: AtomicU32,
    end: AtomicU32,
}

/// The bound of a bounded queue: a counting semaphore of free places.
#[repr(C)]
struct Slots {
    /// Free places: `put` takes one, `get` gives it back; `put` sleeps on it (a futex) at 0.
    free: AtomicU32,
    /// Processes sleeping on `free`, so that `get` makes the wake-up call only when needed.
    waiters: AtomicU32,
}

/// The block of shared memory every process of a queue maps (a memfd, `MAP_SHARED`).
#[repr(C)]
struct Control {
    head: Line<Head>,
    writer: Line<WriterSide>,
    reader: Line<ReaderSide>,
    slots: Line<Slots>,
    /// A `BROKEN_*` code; once set, never cleared.
    broken: Line<AtomicU32>,
    /// Processes sleeping in `join`.
    join_waiters: Line<AtomicU32>,
    /// Bytes read from the pipe and not yet taken, in stream order: a reader reads as much as
    /// the pipe holds with one `read(2)`, takes its frame, and leaves the rest here for the
    /// next reader (in any process). Touched only under the reader lock.
    stage: UnsafeCell<[u8; STAGE]>,
}

// Safety: zeroed bytes are a valid `Control` (the creator then initialises the mutexes and the
// head before the queue is shared); after that every field that changes is an atomic, a robust
// mutex, or the staging area, touched only under the reader lock.
unsafe impl Shareable for Control {}
// Safety: as above: the shared block is made for concurrent use.
unsafe impl Sync for Control {}

/// Waits until `fd` is ready for `events` (POLLIN or POLLOUT). `Ok(false)`: the wait ran out.
fn poll_fd(fd: BorrowedFd<'_>, events: libc::c_short, wait: Wait) -> Result<bool, QueueError> {
    loop {
        let ms = match wait.remaining() {
            None => -1,
            // Round up, so a short timeout does not become a busy loop of zero-length polls.
            Some(left) => left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        };
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
        // Safety: one valid pollfd on our stack, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(true);
        }
        if n == 0 {
            if wait.expired() {
                return Ok(false);
            }
            continue;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(os_error("poll", e)),
        }
    }
}

/// Writes all of `bytes` to a non-blocking pipe. Until the first byte is in, it waits for room
/// only as `wait` allows ([`QueueError::Full`] after that); once a byte is in, it finishes.
/// `busy(true)` is called before each write(2) and `busy(false)` while waiting with nothing
/// written, so that a death can be judged by whoever takes a lock next.
fn write_some(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    wait: Wait,
    busy: impl Fn(bool),
) -> Result<(), QueueError> {
    let mut written = 0;
    while written < bytes.len() {
        busy(true);
        match nix::unistd::write(fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(Errno::EAGAIN) if written == 0 => {
                busy(false);
                if !poll_fd(fd, libc::POLLOUT, wait)? {
                    return Err(QueueError::Full);
                }
            }
            Err(Errno::EAGAIN) => {
                poll_fd(fd, libc::POLLOUT, Wait::Forever)?;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => return Err(QueueError::Closed),
            Err(e) => return Err(os_error("write(the queue's pipe)", e)),
        }
    }
    Ok(())
}

/// Bytes waiting in a pipe (`ioctl(FIONREAD)`, which Linux answers on either end).
fn bytes_in_pipe(fd: BorrowedFd<'_>) -> Result<usize, QueueError> {
    let mut n: libc::c_int = 0;
    // Safety: FIONREAD writes one int to the pointer we give.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        return Err(os_error("ioctl(FIONREAD)", Errno::last()));
    }
    Ok(n.max(0) as usize)
}

/// (pid, queue id) of every queue this process made or rebuilt: a descriptor is adopted once.
static HELD: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

fn mark_held(id: u64) -> bool {
    let pid = std::process::id();
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.contains(&(pid, id)) {
        return false;
    }
    held.push((pid, id));
    true
}

/// One process's handle on a queue: its five descriptors and its mapping of the shared block.
struct Core {
    read: OwnedFd,
    write: OwnedFd,
    big_read: OwnedFd,
    big_write: OwnedFd,
    /// The shared block: the locks, the counters and the staging area.
    block: SharedBlock<Control>,
}

/// A pipe with non-blocking, close-on-exec ends, as large as the kernel allows; its size.
fn make_pipe() -> Result<(OwnedFd, OwnedFd, u32), QueueError> {
    // Non-blocking ends: every wait is a poll(2) with the caller's timeout, never a read or
    // write that sleeps. O_NONBLOCK belongs to the shared file description, so it holds in
    // every process. Close-on-exec: a spawned child gets the ends only if they are passed.
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| os_error("pipe2", e))?;
    // Best effort: a larger pipe means fewer sleeps and room for more unread items. The kernel
    // allocates the buffer's pages only as bytes arrive.
    // Safety: fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY as libc::c_int);
    }
    // Safety: as above.
    let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    Ok((read, write, if capacity > 0 { capacity as u32 } else { 65536 }))
}

impl Core {
    fn create(maxsize: usize, max_message: usize, joinable: bool) -> Result<Core, QueueError> {
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
        let (read, write, capacity) = make_pipe()?;
        let (big_read, big_write, big_capacity) = make_pipe()?;

        let id = random_id();
        let block = SharedBlock::<Control>::create(c"concurrency-queue", |c| {
            // Safety: the mapping is fresh, zeroed by the kernel, and no other process or
            // thread can see it yet; the writes below initialise it before the queue is shared.
            unsafe {
                (*c).head.0 = Head {
                    magic: MAGIC,
                    id,
                    joinable: u32::from(joinable),
                    maxsize: maxsize as u32,
                    max_message: max_message as u32,
                    capacity,
                    big_capacity,
                };
                (*c).slots.0.free = AtomicU32::new(maxsize as u32);
                (*c).reader.0.lock.init()?;
                (*c).writer.0.lock.init()
            }
        })?;
        let core = Core { read, write, big_read, big_write, block };
        mark_held(id);
        Ok(core)
    }

    fn from_descriptor(d: QueueDescriptor, joinable: bool) -> Result<Core, QueueError> {
        let bad = |why: String| QueueError::BadDescriptor(why);
        let stat = |fd: RawFd, what: &str| -> Result<libc::stat, QueueError> {
            // Safety: fstat on any integer is harmless; it fails with EBADF if it is not open.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // Safety: as above; `st` is ours to fill.
            if unsafe { libc::fstat(fd, &mut st) } < 0 {
                return Err(bad(format!(
                    "the {what} (fd {fd}) is not open in this process: a spawned child must \
                     be given the queue's descriptors with Process::pass_fds"
                )));
            }
            Ok(st)
        };
        let c = stat(d.control_fd, "shared block")?;
        let is_fifo = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFIFO;
        for (read_fd, write_fd) in [(d.read_fd, d.write_fd), (d.big_read_fd, d.big_write_fd)] {
            let (r, w) = (stat(read_fd, "pipe's read end")?, stat(write_fd, "pipe's write end")?);
            if !is_fifo(&r) || !is_fifo(&w) || r.st_ino != w.st_ino {
                return Err(bad(format!(
                    "fds {read_fd} and {write_fd} are not the two ends of one pipe"
                )));
            }
        }
        if c.st_mode & libc::S_IFMT != libc::S_IFREG
            || (c.st_size as usize) < SharedBlock::<Control>::len()
        {
            return Err(bad(format!("fd {} is not a queue's shared block", d.control_fd)));
        }
        // Safety: fcntl(F_GETFL) only reads the flags of an open descriptor.
        let access = |fd| unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
        if access(d.read_fd) != libc::O_RDONLY
            || access(d.write_fd) != libc::O_WRONLY
            || access(d.big_read_fd) != libc::O_RDONLY
            || access(d.big_write_fd) != libc::O_WRONLY
        {
            return Err(bad("the pipe's ends are swapped".into()));
        }
        // Safety: checked above that the descriptor is open and is a regular file of the size;
        // if it turns out to be another block, `into_raw_fd` gives it back unclosed. That it
        // was made for a `Control` is what the magic number and the id check next.
        let block = unsafe { SharedBlock::<Control>::from_raw_fd(d.control_fd) }?;
        // Magic and id are plain integers written once by the creator before it was shared.
        let head = &block.get().head.0;
        let (magic, id, is_joinable) = (head.magic, head.id, head.joinable != 0);
        if magic != MAGIC || id != d.id {
            block.into_raw_fd();
            return Err(bad(format!("fd {} is the shared block of another queue", d.control_fd)));
        }
        if is_joinable != joinable {
            block.into_raw_fd();
            let kind = if is_joinable { "a JoinableQueue" } else { "a Queue" };
            return Err(bad(format!("the descriptor names {kind}")));
        }
        if !mark_held(id) {
            block.into_raw_fd();
            return Err(bad(
                "this process already holds this queue: clone the handle instead of rebuilding it"
                    .into(),
            ));
        }
        // Safety: the five descriptors are open, are this queue's (checked by type, inode and
        // the id in the shared block), and this process adopts them once (checked by
        // `mark_held`): from now on this handle owns and closes them.
        let core = unsafe {
            Core {
                read: OwnedFd::from_raw_fd(d.read_fd),
                write: OwnedFd::from_raw_fd(d.write_fd),
                big_read: OwnedFd::from_raw_fd(d.big_read_fd),
                big_write: OwnedFd::from_raw_fd(d.big_write_fd),
                block,
            }
        };
        // A spawned child got them without close-on-exec; give it back, so that they do not
        // leak into this process's own spawned children unless passed again.
        for fd in d.fds() {
            // Safety: fcntl on a descriptor this handle now owns.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Ok(core)
    }

    fn ctl(&self) -> &Control {
        self.block.get()
    }

    fn descriptor(&self) -> QueueDescriptor {
        QueueDescriptor {
            read_fd: self.read.as_raw_fd(),
            write_fd: self.write.as_raw_fd(),
            big_read_fd: self.big_read.as_raw_fd(),
            big_write_fd: self.big_write.as_raw_fd(),
            control_fd: self.block.raw_fd(),
            id: self.ctl().head.0.id,
        }
    }

    fn head(&self) -> &Head {
        &self.ctl().head.0
    }

    fn check_broken(&self) -> Result<(), QueueError> {
        match self.ctl().broken.0.load(Ordering::Acquire) {
            BROKEN_NO => Ok(()),
            code => Err(QueueError::Broken(broken_reason(code))),
        }
    }

    fn set_broken(&self, code: u32) -> QueueError {
        let broken = &self.ctl().broken.0;
        let _ = broken.compare_exchange(BROKEN_NO, code, Ordering::AcqRel, Ordering::Acquire);
        QueueError::Broken(broken_reason(broken.load(Ordering::Acquire)))
    }

    fn lock_reader(&self, wait: Wait) -> Result<Option<RobustGuard<'_>>, QueueError> {
        let r = &self.ctl().reader.0;
        let Some((taken, guard)) = r.lock.lock(wait)? else { return Ok(None) };
        if taken == Taken::OwnerDied && r.busy.swap(0, Ordering::AcqRel) != 0 {
            // The dead holder was inside a read or a move of the staged bytes: where the
            // stream's next frame starts is no longer known.
            return Err(self.set_broken(BROKEN_READER_DIED));
        }
        self.check_broken()?;
        Ok(Some(guard))
    }

    fn lock_writer(&self, wait: Wait) -> Result<Option<RobustGuard<'_>>, QueueError> {
        let w = &self.ctl().writer.0;
        let Some((taken, guard)) = w.lock.lock(wait)? else { return Ok(None) };
        if taken == Taken::OwnerDied && w.busy.swap(0, Ordering::AcqRel) != 0 {
            // The dead holder may have left a marker without its frame, or half a frame.
            return Err(self.set_broken(BROKEN_WRITER_DIED));
        }
        self.check_broken()?;
        Ok(Some(guard))
    }

    // -- counts: all are differences of wrapping counters ------------------------------------

    fn qsize(&self) -> usize {
        let c = self.ctl();
        c.writer.0.puts.load(Ordering::SeqCst).wrapping_sub(c.reader.0.gets.load(Ordering::SeqCst))
            as usize
    }

    fn unfinished(&self) -> u32 {
        let c = self.ctl();
        c.writer.0.puts.load(Ordering::SeqCst).wrapping_sub(c.reader.0.done.load(Ordering::SeqCst))
    }

    fn in_progress(&self) -> u32 {
        let r = &self.ctl().reader.0;
        r.gets.load(Ordering::SeqCst).wrapping_sub(r.done.load(Ordering::SeqCst))
    }

    // -- the bound: a counting semaphore of free places -----------------------------------

    fn bounded(&self) -> bool {
        self.head().maxsize != 0
    }

    /// Takes a free place, waiting as `wait` allows. False: none in time.
    fn acquire_slot(&self, wait: Wait) -> bool {
        let slots = &self.ctl().slots.0;
        loop {
            let free = slots.free.load(Ordering::Acquire);
            if free > 0 {
                if slots
                    .free
                    .compare_exchange_weak(free, free - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if wait.expired() {
                return false;
            }
            // Register as a sleeper before sleeping; FUTEX_WAIT re-checks `free == 0` atomically,
            // so a place given back in between is never missed (SeqCst pairs with release_slot).
            slots.waiters.fetch_add(1, Ordering::SeqCst);
            futex_wait(&slots.free, 0, wait.remaining());
            slots.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn release_slot(&self) {
        let slots = &self.ctl().slots.0;
        slots.free.fetch_add(1, Ordering::SeqCst);
        if slots.waiters.load(Ordering::SeqCst) > 0 {
            futex_wake(&slots.free, 1);
        }
    }

    // -- unfinished tasks (JoinableQueue) ---------------------------------------------------

    /// Wakes the processes in `join` if every task put is now done.
    fn wake_joiners_if_all_done(&self) {
        let c = self.ctl();
        if c.join_waiters.0.load(Ordering::SeqCst) > 0 && self.unfinished() == 0 {
            futex_wake(&c.reader.0.done, i32::MAX);
        }
    }

    fn task_done(&self) -> Result<(), QueueError> {
        let r = &self.ctl().reader.0;
        loop {
            let done = r.done.load(Ordering::SeqCst);
            if r.gets.load(Ordering::SeqCst).wrapping_sub(done) == 0 {
                return Err(QueueError::TaskDoneTooManyTimes);
            }
            if r.done
                .compare_exchange_weak(
                    done,
                    done.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
            {
                break;
            }
        }
        self.wake_joiners_if_all_done();
        Ok(())
    }

    fn join(&self, wait: Wait) -> Result<(), QueueError> {
        let c = self.ctl();
        loop {
            // Registered before looking, so a task_done that finishes the last task after our
            // look sees a waiter and wakes us; FUTEX_WAIT returns at once if `done` moved.
            c.join_waiters.0.fetch_add(1, Ordering::SeqCst);
            let done = c.reader.0.done.load(Ordering::SeqCst);
            let unfinished = c.writer.0.puts.load(Ordering::SeqCst).wrapping_sub(done);
            if unfinished == 0 {
                c.join_waiters.0.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            if wait.expired() {
                c.join_waiters.0.fetch_sub(1, Ordering::SeqCst);
                return Err(QueueError::Timeout { unfinished: unfinished as usize });
            }
            futex_wait(&c.reader.0.done, done, wait.remaining());
            c.join_waiters.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    // -- frames -------------------------------------------------------------------------------

    /// Puts one encoded frame (header included): a free place, then the frame under the writer
    /// lock. On failure nothing was written and every count is as before.
    fn send(&self, frame: &[u8], wait: Wait) -> Result<(), QueueError> {
        self.check_broken()?;
        if self.bounded() && !self.acquire_slot(wait) {
            return Err(QueueError::Full);
        }
        // Counted before the bytes reach the pipe, so that no reader can take the item and
        // finish its task before it is counted (`join` must never see a false zero).
        let puts = &self.ctl().writer.0.puts;
        puts.fetch_add(1, Ordering::SeqCst);
        let result = self.write_frame(frame, wait);
        if result.is_err() {
            puts.fetch_sub(1, Ordering::SeqCst);
            self.wake_joiners_if_all_done();
            if self.bounded() {
                self.release_slot();
            }
        }
        result
    }

    fn write_frame(&self, frame: &[u8], wait: Wait) -> Result<(), QueueError> {
        if frame.len() <= PIPE_BUF {
            // One atomic write(2): the kernel never interleaves it with another writer's bytes,
            // so no lock is needed. Non-blocking: all of it, or EAGAIN and nothing.
            write_some(self.write.as_fd(), frame, wait, |_| {})?;
            self.ctl().writer.0.written.fetch_add(1, Ordering::Release);
            return Ok(());
        }
        // Bigger: under the big-writer lock, a marker in the main pipe, where this item's place
        // in the queue is, then the frame in the big pipe. The lock keeps the big pipe's frames
        // in the order of their markers.
        let w = &self.ctl().writer.0;
        let Some(_guard) = self.lock_writer(wait)? else { return Err(QueueError::Full) };
        let capacity = self.head().big_capacity as usize;
        let len = frame.len();
        // With a deadline, wait until the whole frame fits before writing the marker: once the
        // marker is in, the frame must follow whatever the deadline.
        if wait != Wait::Forever && len <= capacity {
            let mut pause = Duration::from_micros(100);
            while capacity.saturating_sub(bytes_in_pipe(self.big_write.as_fd())?) < len {
                let Some(left) = wait.remaining().filter(|l| !l.is_zero()) else {
                    return Err(QueueError::Full);
                };
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
        // A death from here until the frame is whole leaves a marker without its frame: busy.
        let busy = |on: bool| w.busy.store(if on { len as u32 } else { 0 }, Ordering::Release);
        let result =
            write_some(self.write.as_fd(), &MARKER.to_le_bytes(), wait, busy).and_then(|()| {
                w.written.fetch_add(1, Ordering::Release);
                write_some(self.big_write.as_fd(), frame, Wait::Forever, busy)
            });
        busy(false);
        result
    }

    fn stage_ptr(&self) -> *mut u8 {
        self.ctl().stage.get().cast()
    }

    /// Under the reader lock: makes sure at least `need` (≤ [`STAGE`]) bytes of the stream are
    /// staged, reading from the pipe as much as it holds at once. `Ok(false)`: no byte of a
    /// frame was there and `wait` ran out. Frames in the main pipe are written whole, so once
    /// part of one is staged the rest is already in the pipe.
    fn fill(&self, need: usize, wait: Wait) -> Result<bool, QueueError> {
        let r = &self.ctl().reader.0;
        loop {
            let start = r.start.load(Ordering::Acquire) as usize;
            let end = r.end.load(Ordering::Acquire) as usize;
            let staged = end - start;
            if staged >= need {
                return Ok(true);
            }
            if staged == 0 && start != 0 {
                r.start.store(0, Ordering::Release);
                r.end.store(0, Ordering::Release);
                continue;
            }
            if STAGE - start < need {
                // Move the staged bytes to the front; a death half way would scramble them.
                r.busy.store(1, Ordering::Release);
                // Safety: both ranges lie inside the staging area, which only the reader-lock
                // holder (this thread) touches; `copy` allows the overlap.
                unsafe { std::ptr::copy(self.stage_ptr().add(start), self.stage_ptr(), staged) };
                r.start.store(0, Ordering::Release);
                r.end.store(staged as u32, Ordering::Release);
                r.busy.store(0, Ordering::Release);
                continue;
            }
            // A death between the read and the new `end` would lose the bytes read: busy.
            r.busy.store(1, Ordering::Release);
            // Safety: reads into `stage[end..STAGE]`, inside the mapping, which only the
            // reader-lock holder (this thread) touches.
            let n = unsafe {
                libc::read(self.read.as_raw_fd(), self.stage_ptr().add(end).cast(), STAGE - end)
            };
            if n > 0 {
                r.end.store((end + n as usize) as u32, Ordering::Release);
                r.busy.store(0, Ordering::Release);
                continue;
            }
            r.busy.store(0, Ordering::Release);
            if n == 0 {
                // EOF: every write end in every process is closed.
                return Err(if staged == 0 {
                    QueueError::Closed
                } else {
                    self.set_broken(BROKEN_TORN_EOF)
                });
            }
            match Errno::last() {
                Errno::EAGAIN if staged == 0 => {
                    if wait != Wait::Now && self.spin_for_item() {
                        continue;
                    }
                    if !poll_fd(self.read.as_fd(), libc::POLLIN, wait)? {
                        return Ok(false);
                    }
                }
                Errno::EAGAIN => {
                    // Frames in the main pipe are written whole, so the rest of a staged part
                    // is already in the pipe; this wait is only a safeguard.
                    poll_fd(self.read.as_fd(), libc::POLLIN, Wait::from_timeout(TORN_CHECK))?;
                    self.check_broken()?;
                }
                Errno::EINTR => {}
                e => return Err(os_error("read(the queue's pipe)", e)),
            }
        }
    }

    /// Before sleeping in poll(2) on an empty pipe, watches the shared count of frames written
    /// for a few microseconds, yielding the core between looks (on a busy machine the writer
    /// may be waiting for it): when items come quickly, the next one is taken without a sleep
    /// and a wake-up (which the writer would pay for in its write(2)). True: a frame has been
    /// written since the call began.
    fn spin_for_item(&self) -> bool {
        let written = &self.ctl().writer.0.written;
        let before = written.load(Ordering::Acquire);
        let began = Instant::now();
        loop {
            // Give the core away at once if another process wants it (the writer, perhaps).
            std::thread::yield_now();
            if written.load(Ordering::Acquire) != before {
                return true;
            }
            if began.elapsed() >= SPIN {
                return false;
            }
        }
    }

    /// Copies `len` staged bytes from `stage[at..]`.
    fn copy_staged(&self, at: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        // Safety: `at + len <= end <= STAGE` (checked by the caller through `fill`); the
        // staging area is touched only by the reader-lock holder, this thread.
        unsafe { std::ptr::copy_nonoverlapping(self.stage_ptr().add(at), out.as_mut_ptr(), len) };
        out
    }

    /// Takes one frame's body: the reader lock, the length, the body; then gives back a place.
    fn recv(&self, wait: Wait) -> Result<Vec<u8>, QueueError> {
        let r = &self.ctl().reader.0;
        let body = {
            let Some(_guard) = self.lock_reader(wait)? else { return Err(QueueError::Empty) };
            if !self.fill(HEADER, wait)? {
                return Err(QueueError::Empty);
            }
            let start = r.start.load(Ordering::Acquire) as usize;
            let header = self.copy_staged(start, HEADER);
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if len == MARKER {
                // The item is in the big pipe. From taking the marker until the frame is read,
                // the item exists only in this process: a death would orphan the frame.
                r.busy.store(1, Ordering::Release);
                r.start.store((start + HEADER) as u32, Ordering::Release);
                let body = self.read_big_frame()?;
                r.busy.store(0, Ordering::Release);
                body
            } else {
                let len = len as usize;
                // Checked before allocating: a corrupt length must never become an allocation.
                if HEADER + len > PIPE_BUF || len > self.head().max_message as usize {
                    return Err(self.set_broken(BROKEN_BAD_LENGTH));
                }
                self.fill(HEADER + len, Wait::Forever)?;
                let start = r.start.load(Ordering::Acquire) as usize; // `fill` may move it
                let body = self.copy_staged(start + HEADER, len);
                // The frame leaves the queue here, in one store.
                r.start.store((start + HEADER + len) as u32, Ordering::Release);
                body
            }
        };
        r.gets.fetch_add(1, Ordering::SeqCst);
        if self.bounded() {
            self.release_slot();
        }
        Ok(body)
    }

    /// Reads the next frame of the big pipe: its length, then its body, waiting for the writer
    /// (who may still be writing it) and checking that the writer is alive.
    fn read_big_frame(&self) -> Result<Vec<u8>, QueueError> {
        let mut header = [0u8; HEADER];
        self.read_big(&mut header)?;
        let len = u32::from_le_bytes(header) as usize;
        // Checked before allocating: a corrupt length must never become a huge allocation.
        if len > self.head().max_message as usize {
            return Err(self.set_broken(BROKEN_BAD_LENGTH));
        }
        let mut body = vec![0u8; len];
        self.read_big(&mut body)?;
        Ok(body)
    }

    fn read_big(&self, buf: &mut [u8]) -> Result<(), QueueError> {
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&self.big_read, &mut buf[got..]) {
                Ok(0) => return Err(self.set_broken(BROKEN_TORN_EOF)),
                Ok(n) => got += n,
                Err(Errno::EAGAIN) => self.wait_rest_of_frame()?,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(os_error("read(the queue's big pipe)", e)),
            }
        }
        Ok(())
    }

    /// A big frame has not (all) arrived: its writer is still writing (it holds the big-writer
    /// lock), or it died. Checks every [`TORN_CHECK`] so a dead writer cannot make every reader
    /// hang.
    fn wait_rest_of_frame(&self) -> Result<(), QueueError> {
        if poll_fd(self.big_read.as_fd(), libc::POLLIN, Wait::from_timeout(TORN_CHECK))? {
            return Ok(());
        }
        self.check_broken()?;
        // If the big-writer lock can be taken, nobody is writing: the rest will never come.
        let w = &self.ctl().writer.0;
        match w.lock.lock(Wait::Now)? {
            None => Ok(()), // the writer holds it: still writing
            Some((_, _guard)) => {
                w.busy.store(0, Ordering::Release);
                Err(self.set_broken(BROKEN_WRITER_DIED))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The typed queues.

/// A FIFO queue of `T` shared by processes (Python's `multiprocessing.Queue`). Cloning makes
/// another handle in the same process; a child gets one by fork, or by its descriptor (spawn).
pub struct Queue<T> {
    core: Arc<Core>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { core: self.core.clone(), _items: PhantomData }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.core.descriptor();
        write!(
            f,
            "<Queue maxsize={} pipe fds {}<-{} shared block fd {}>",
            self.maxsize(),
            d.read_fd,
            d.write_fd,
            d.control_fd
        )
    }
}

impl<T> Queue<T> {
    /// The bound given at creation; 0 for an unbounded queue.
    pub fn maxsize(&self) -> usize {
        self.core.head().maxsize as usize
    }

    /// The largest item this queue accepts, in bytes of JSON.
    pub fn max_message(&self) -> usize {
        self.core.head().max_message as usize
    }

    /// The pipe's size in bytes (what `F_GETPIPE_SZ` said at creation).
    pub fn pipe_capacity(&self) -> usize {
        self.core.head().capacity as usize
    }

    /// Items in the queue now (put, or being put, and not yet taken). A snapshot: by the time it
    /// is used another process may have changed it (Python: "not reliable").
    pub fn qsize(&self) -> usize {
        self.core.qsize()
    }

    /// Whether the queue holds no item now (a snapshot, like [`Queue::qsize`]).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue has no free place now (a snapshot). Always false when unbounded.
    pub fn full(&self) -> bool {
        self.core.bounded() && self.core.ctl().slots.0.free.load(Ordering::SeqCst) == 0
    }

    /// Processes (or threads) asleep in `put` because the queue is full (a snapshot).
    pub fn waiting_putters(&self) -> usize {
        self.core.ctl().slots.0.waiters.load(Ordering::SeqCst) as usize
    }

    /// How many items were ever taken from this queue, by every process.
    /// Wraps around at 2^32.
    pub fn total_taken(&self) -> u32 {
        self.core.ctl().reader.0.gets.load(Ordering::SeqCst)
    }

    /// The queue's five descriptors, to pass to a spawned child with
    /// [`crate::process::Process::pass_fds`].
    pub fn fds(&self) -> Vec<RawFd> {
        self.core.descriptor().fds().to_vec()
    }

    /// The numbers that name this queue, for a child ([`Queue::from_descriptor`]).
    pub fn descriptor(&self) -> QueueDescriptor {
        self.core.descriptor()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue that holds at most `maxsize` items; 0 means no limit but the pipe's capacity
    /// (Python's `maxsize <= 0`). Items may be up to [`DEFAULT_MAX_MESSAGE`] bytes of JSON.
    pub fn new(maxsize: usize) -> Result<Queue<T>, QueueError> {
        Queue::with_max_message(maxsize, DEFAULT_MAX_MESSAGE)
    }

    /// Like [`Queue::new`], with another limit on an item's size in bytes of JSON.
    pub fn with_max_message(maxsize: usize, max_message: usize) -> Result<Queue<T>, QueueError> {
        Ok(Queue::from_core(Core::create(maxsize, max_message, false)?))
    }

    fn from_core(core: Core) -> Queue<T> {
        Queue { core: Arc::new(core), _items: PhantomData }
    }

    /// Rebuilds the queue in a child from the numbers its parent sent. The descriptors must be
    /// open here (fork: always; spawn: passed with `Process::pass_fds`); they are checked to be
    /// this queue's pipe and shared block, and this handle owns them from now on. Once per
    /// process: clone the handle to have more.
    pub fn from_descriptor(d: QueueDescriptor) -> Result<Queue<T>, QueueError> {
        Ok(Queue::from_core(Core::from_descriptor(d, false)?))
    }

    /// Puts `item`, blocking while the queue is full (Python's `q.put(item)`).
    pub fn put(&self, item: impl Borrow<T>) -> Result<(), QueueError> {
        self.put_wait(item.borrow(), Wait::Forever)
    }

    /// Puts `item`, waiting at most `timeout` for a free place; [`QueueError::Full`] after that.
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<(), QueueError> {
        self.put_wait(item.borrow(), Wait::from_timeout(timeout))
    }

    /// Puts `item` only if there is a free place now; [`QueueError::Full`] otherwise.
    pub fn put_nowait(&self, item: impl Borrow<T>) -> Result<(), QueueError> {
        self.put_wait(item.borrow(), Wait::Now)
    }

    fn put_wait(&self, item: &T, wait: Wait) -> Result<(), QueueError> {
        thread_local! {
            /// The frame buffer, reused from put to put (no allocation per item).
            static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        FRAME.with_borrow_mut(|frame| {
            encode_into(item, self.max_message(), frame)?;
            let sent = self.core.send(frame, wait);
            if frame.capacity() > STAGE {
                *frame = Vec::new(); // do not keep a big item's buffer for ever
            }
            sent
        })
    }

    /// Takes the oldest item, blocking while the queue is empty (Python's `q.get()`).
    pub fn get(&self) -> Result<T, QueueError> {
        self.get_wait(Wait::Forever)
    }

    /// Takes the oldest item, waiting at most `timeout`; [`QueueError::Empty`] after that.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, QueueError> {
        self.get_wait(Wait::from_timeout(timeout))
    }

    /// Takes the oldest item only if there is one now; [`QueueError::Empty`] otherwise.
    pub fn get_nowait(&self) -> Result<T, QueueError> {
        self.get_wait(Wait::Now)
    }

    fn get_wait(&self, wait: Wait) -> Result<T, QueueError> {
        let body = self.core.recv(wait)?;
        serde_json::from_slice(&body).map_err(QueueError::Decode)
    }

    /// Puts `body`, bytes already encoded by the caller, as one item's frame, blocking while the
    /// queue is full: the frame [`Queue::put`] would write for an item whose encoding is `body`,
    /// with the same limit ([`QueueError::TooLarge`] beyond `max_message`, nothing written) and
    /// the same guarantees (small frames atomic, big ones through the big pipe). The queue does
    /// not look inside: a reader that takes it with [`Queue::get`] decodes it as JSON of `T`, so
    /// `body` is either that or read only with [`Queue::get_encoded`] by readers that know its
    /// layout. No escaping, no copy into a JSON string: for a text encoded once elsewhere.
    pub fn put_encoded(&self, body: &[u8]) -> Result<(), QueueError> {
        self.put_encoded_wait(body, Wait::Forever)
    }

    /// [`Queue::put_encoded`] only if there is a free place now; [`QueueError::Full`] otherwise.
    pub fn put_encoded_nowait(&self, body: &[u8]) -> Result<(), QueueError> {
        self.put_encoded_wait(body, Wait::Now)
    }

    fn put_encoded_wait(&self, body: &[u8], wait: Wait) -> Result<(), QueueError> {
        thread_local! {
            /// The frame buffer, reused from put to put: a fresh buffer for every big frame
            /// showed in the profile as page faults.
            static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let max = self.max_message();
        if body.len() > max {
            return Err(QueueError::TooLarge { size: body.len(), max });
        }
        FRAME.with_borrow_mut(|frame| {
            frame.clear();
            frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
            frame.extend_from_slice(body);
            let sent = self.core.send(frame, wait);
            if frame.capacity() > KEPT_FRAME {
                *frame = Vec::new(); // do not keep a huge item's buffer for ever
            }
            sent
        })
    }

    /// Takes the oldest item's frame body as it is, undecoded (what [`Queue::put_encoded`], or
    /// [`Queue::put`] as JSON, wrote), blocking while the queue is empty.
    pub fn get_encoded(&self) -> Result<Vec<u8>, QueueError> {
        self.core.recv(Wait::Forever)
    }

    /// [`Queue::get_encoded`] waiting at most `timeout`; [`QueueError::Empty`] after that.
    pub fn get_encoded_timeout(&self, timeout: Duration) -> Result<Vec<u8>, QueueError> {
        self.core.recv(Wait::from_timeout(timeout))
    }

    /// [`Queue::get_encoded`] only if there is an item now; [`QueueError::Empty`] otherwise.
    pub fn get_encoded_nowait(&self) -> Result<Vec<u8>, QueueError> {
        self.core.recv(Wait::Now)
    }
}

/// The frame of an item: its JSON behind a 4-byte little-endian length, in one buffer so that a
/// small frame goes to the pipe in one atomic write.
fn encode_into<T: Serialize>(
    item: &T,
    max_message: usize,
    frame: &mut Vec<u8>,
) -> Result<(), QueueError> {
    frame.clear();
    frame.extend_from_slice(&[0; HEADER]);
    serde_json::to_writer(&mut *frame, item).map_err(QueueError::Encode)?;
    let size = frame.len() - HEADER;
    if size > max_message {
        return Err(QueueError::TooLarge { size, max: max_message });
    }
    frame[..HEADER].copy_from_slice(&(size as u32).to_le_bytes());
    Ok(())
}

#[cfg(test)]
fn encode<T: Serialize>(item: &T, max_message: usize) -> Result<Vec<u8>, QueueError> {
    let mut frame = Vec::new();
    encode_into(item, max_message, &mut frame)?;
    Ok(frame)
}

/// A [`Queue`] whose consumers say when they have finished each item (`task_done`), so that a
/// producer can wait until every item it put has been processed (`join`): Python's
/// `multiprocessing.JoinableQueue`. Every `Queue` method works on it too (it derefs to one).
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<JoinableQueue unfinished={} {:?}>", self.unfinished(), self.queue)
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> JoinableQueue<T> {
    /// Items put and not yet marked done (a snapshot).
    pub fn unfinished(&self) -> usize {
        self.queue.core.unfinished() as usize
    }

    /// Items taken with `get` and not yet marked done (a snapshot): items being processed, or
    /// held by a consumer that died.
    pub fn in_progress(&self) -> usize {
        self.queue.core.in_progress() as usize
    }

    /// Marks one taken item as processed. More calls than items taken with `get` is an error
    /// ([`QueueError::TaskDoneTooManyTimes`], Python's `ValueError`).
    pub fn task_done(&self) -> Result<(), QueueError> {
        self.queue.core.task_done()
    }

    /// Blocks until every item ever put has been marked done. If a consumer died holding an
    /// item this waits forever, as Python's `join` does: prefer [`JoinableQueue::join_timeout`]
    /// where consumers may die.
    pub fn join(&self) -> Result<(), QueueError> {
        self.queue.core.join(Wait::Forever)
    }

    /// Like [`JoinableQueue::join`], giving up after `timeout` with [`QueueError::Timeout`],
    /// which carries how many tasks are unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        self.queue.core.join(Wait::from_timeout(timeout))
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue of at most `maxsize` items (0: no limit but the pipe's capacity).
    pub fn new(maxsize: usize) -> Result<JoinableQueue<T>, QueueError> {
        JoinableQueue::with_max_message(maxsize, DEFAULT_MAX_MESSAGE)
    }

    /// Like [`JoinableQueue::new`], with another limit on an item's size in bytes of JSON.
    pub fn with_max_message(
        maxsize: usize,
        max_message: usize,
    ) -> Result<JoinableQueue<T>, QueueError> {
        Ok(JoinableQueue { queue: Queue::from_core(Core::create(maxsize, max_message, true)?) })
    }

    /// Rebuilds the queue in a child (see [`Queue::from_descriptor`]).
    pub fn from_descriptor(d: QueueDescriptor) -> Result<JoinableQueue<T>, QueueError> {
        Ok(JoinableQueue { queue: Queue::from_core(Core::from_descriptor(d, true)?) })
    }
}

// A queue travels to a child as its descriptor, the way Python pickles a Queue into a child's
// arguments: serializing gives the numbers, deserializing in the child rebuilds the handle.

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.descriptor().serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let descriptor = QueueDescriptor::deserialize(d)?;
        Queue::from_descriptor(descriptor).map_err(serde::de::Error::custom)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.descriptor().serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let descriptor = QueueDescriptor::deserialize(d)?;
        JoinableQueue::from_descriptor(descriptor).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    //! Single-process tests (threads at most): forking inside the multi-threaded test runner is
    //! unsafe, so the multi-process behaviour is tested through the `joinable-queue` demo.
    use super::*;

    #[test]
    fn items_come_out_in_the_order_they_went_in() {
        let q: Queue<(u32, String)> = Queue::new(0).unwrap();
        for i in 0..100 {
            q.put((i, format!("包子{i}"))).unwrap();
        }
        assert_eq!(q.qsize(), 100);
        for i in 0..100 {
            assert_eq!(q.get().unwrap(), (i, format!("包子{i}")));
        }
        assert!(q.empty());
    }

    #[test]
    fn a_full_queue_refuses_put_nowait_and_an_empty_one_get_nowait() {
        let q: Queue<i32> = Queue::new(3).unwrap();
        for i in 1..=3 {
            q.put(i).unwrap();
        }
        assert!(q.full());
        assert!(matches!(q.put_nowait(4), Err(QueueError::Full)));
        let t = Instant::now();
        assert!(matches!(q.put_timeout(4, Duration::from_millis(50)), Err(QueueError::Full)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!((q.get().unwrap(), q.get().unwrap(), q.get().unwrap()), (1, 2, 3));
        assert!(q.empty());
        assert!(matches!(q.get_nowait(), Err(QueueError::Empty)));
        let t = Instant::now();
        assert!(matches!(q.get_timeout(Duration::from_millis(50)), Err(QueueError::Empty)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        // A refused put left the counts as they were: the three places are free again.
        for i in 0..3 {
            q.put_nowait(i).unwrap();
        }
        assert_eq!(q.qsize(), 3);
    }

    #[test]
    fn an_item_beyond_max_message_is_refused_and_nothing_is_written() {
        let q: Queue<String> = Queue::with_max_message(2, 100).unwrap();
        match q.put("x".repeat(200)) {
            Err(QueueError::TooLarge { size, max }) => assert_eq!((size, max), (202, 100)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(q.empty());
        assert!(!q.full());
        q.put("small".to_string()).unwrap();
        assert_eq!(q.get().unwrap(), "small");
    }

    #[test]
    fn encoded_bytes_travel_as_they_are_and_keep_the_frame_limits() {
        let q: Queue<String> = Queue::with_max_message(0, 100_000).unwrap();
        q.put_encoded(b"\"typed\"").unwrap();
        assert_eq!(q.get().unwrap(), "typed", "an encoded item is read by get as JSON of T");
        let big: Vec<u8> = (0..90_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        q.put("x".to_string()).unwrap();
        q.put_encoded(&big).unwrap();
        q.put_encoded(b"not json\n").unwrap();
        assert_eq!(q.get_encoded().unwrap(), b"\"x\"", "get_encoded gives put's JSON");
        assert_eq!(q.get_encoded().unwrap(), big, "a big frame, whole and in its place");
        assert_eq!(q.get_encoded_nowait().unwrap(), b"not json\n");
        assert!(matches!(q.get_encoded_nowait(), Err(QueueError::Empty)));
        let e = q.put_encoded(&vec![b'x'; 100_001]).unwrap_err();
        assert!(matches!(e, QueueError::TooLarge { size: 100_001, max: 100_000 }), "{e}");
        assert!(q.empty(), "nothing was written");
    }

    #[test]
    fn a_frame_larger_than_pipe_buf_arrives_whole() {
        let q: Queue<String> = Queue::new(0).unwrap();
        let big = "包".repeat(20_000); // 60,000 bytes of JSON: many PIPE_BUFs
        q.put(&big).unwrap();
        q.put("after".to_string()).unwrap();
        assert_eq!(q.get().unwrap(), big);
        assert_eq!(q.get().unwrap(), "after");
    }

    #[test]
    fn a_frame_larger_than_the_big_pipe_streams_through_it() {
        let q: Queue<String> = Queue::with_max_message(0, 4 * PIPE_CAPACITY).unwrap();
        q.put("before".to_string()).unwrap();
        // Twice the pipe's capacity: the writer can finish only while a reader reads.
        let huge = "z".repeat(2 * PIPE_CAPACITY);
        let writer = {
            let (q, huge) = (q.clone(), huge.clone());
            std::thread::spawn(move || q.put(huge))
        };
        assert_eq!(q.get().unwrap(), "before");
        assert_eq!(q.get().unwrap(), huge);
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn a_corrupt_length_breaks_the_queue_instead_of_allocating() {
        let q: Queue<String> = Queue::with_max_message(0, 1000).unwrap();
        // A length of 4 GiB written straight into the pipe, as a corrupt writer would.
        nix::unistd::write(&q.core.write, &u32::MAX.to_le_bytes()).unwrap();
        q.core.ctl().writer.0.puts.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(q.get_nowait(), Err(QueueError::Broken(_))));
        // And it stays broken for everyone.
        assert!(matches!(q.put("x".to_string()), Err(QueueError::Broken(_))));
    }

    #[test]
    fn task_done_more_times_than_items_taken_is_an_error() {
        let q: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        // Nothing taken yet: CPython would accept this call (2 unfinished); the notes say no.
        assert!(matches!(q.task_done(), Err(QueueError::TaskDoneTooManyTimes)));
        q.get().unwrap();
        q.task_done().unwrap();
        assert!(matches!(q.task_done(), Err(QueueError::TaskDoneTooManyTimes)));
        assert_eq!(q.unfinished(), 1);
    }

    #[test]
    fn join_waits_for_the_last_task_done_and_join_timeout_reports_what_is_unfinished() {
        let q: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
        q.join().unwrap(); // nothing put: returns at once
        for i in 0..3 {
            q.put(i).unwrap();
        }
        match q.join_timeout(Duration::from_millis(20)) {
            Err(QueueError::Timeout { unfinished }) => assert_eq!(unfinished, 3),
            other => panic!("expected Timeout, got {other:?}"),
        }
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    q.get().unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                    q.task_done().unwrap();
                }
            })
        };
        q.join().unwrap();
        assert_eq!(q.unfinished(), 0);
        consumer.join().unwrap();
    }

    #[test]
    fn a_blocked_put_returns_once_a_get_frees_a_place() {
        let q: Queue<i32> = Queue::new(1).unwrap();
        q.put(1).unwrap();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.put(2))
        };
        // Wait until the producer is asleep in put, then free the place.
        let deadline = Instant::now() + Duration::from_secs(30);
        while q.waiting_putters() == 0 {
            assert!(Instant::now() < deadline, "the producer never blocked");
            std::thread::yield_now();
        }
        assert_eq!(q.get().unwrap(), 1);
        producer.join().unwrap().unwrap();
        assert_eq!(q.get().unwrap(), 2);
    }

    #[test]
    fn many_threads_lose_and_duplicate_nothing() {
        let q: Queue<Option<(u32, u32)>> = Queue::new(8).unwrap();
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        q.put(Some((p, i))).unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while let Some(item) = q.get().unwrap() {
                        seen.push(item);
                    }
                    seen
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        for _ in 0..2 {
            q.put(None).unwrap(); // one sentinel per consumer
        }
        let mut all: Vec<(u32, u32)> = Vec::new();
        for c in consumers {
            let seen = c.join().unwrap();
            // Per producer, each consumer sees increasing numbers (FIFO).
            for p in 0..3 {
                let mine: Vec<u32> = seen.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {p} out of order");
            }
            all.extend(seen);
        }
        all.sort_unstable();
        let expected: Vec<(u32, u32)> =
            (0..3).flat_map(|p| (0..2000).map(move |i| (p, i))).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn a_reader_that_dies_between_frames_harms_nobody() {
        let q: Queue<i32> = Queue::new(0).unwrap();
        let core = q.core.clone();
        // A thread takes the reader lock and ends without unlocking: a robust mutex passes on.
        std::thread::spawn(move || std::mem::forget(core.lock_reader(Wait::Forever).unwrap()))
            .join()
            .unwrap();
        assert!(matches!(q.get_nowait(), Err(QueueError::Empty)));
        q.put(7).unwrap();
        assert_eq!(q.get().unwrap(), 7);
    }

    #[test]
    fn a_reader_that_dies_inside_a_read_breaks_the_queue_for_everyone() {
        let q: Queue<i32> = Queue::new(0).unwrap();
        q.put(1).unwrap();
        let core = q.core.clone();
        std::thread::spawn(move || {
            let guard = core.lock_reader(Wait::Forever).unwrap();
            // Dies as if killed inside read(2): whether the bytes left the pipe is unknown.
            core.ctl().reader.0.busy.store(1, Ordering::SeqCst);
            std::mem::forget(guard);
        })
        .join()
        .unwrap();
        assert!(matches!(q.get(), Err(QueueError::Broken(_))));
        assert!(matches!(q.get_nowait(), Err(QueueError::Broken(_))));
    }

    #[test]
    fn a_reader_that_dies_with_frames_staged_harms_nobody() {
        let q: Queue<i32> = Queue::new(0).unwrap();
        for i in 1..=3 {
            q.put(i).unwrap();
        }
        let core = q.core.clone();
        std::thread::spawn(move || {
            // One read(2) stages all three frames; then the reader dies holding the lock.
            let guard = core.lock_reader(Wait::Forever).unwrap();
            assert!(core.fill(HEADER, Wait::Now).unwrap());
            std::mem::forget(guard);
        })
        .join()
        .unwrap();
        assert_eq!(bytes_in_pipe(q.core.read.as_fd()).unwrap(), 0, "all staged");
        assert_eq!((q.get().unwrap(), q.get().unwrap(), q.get().unwrap()), (1, 2, 3));
    }

    #[test]
    fn a_writer_that_dies_inside_a_big_frame_does_not_make_readers_hang() {
        let q: Queue<String> = Queue::new(0).unwrap();
        let core = q.core.clone();
        std::thread::spawn(move || {
            let frame = encode(&"x".repeat(10_000), DEFAULT_MAX_MESSAGE).unwrap();
            let guard = core.lock_writer(Wait::Forever).unwrap();
            core.ctl().writer.0.puts.fetch_add(1, Ordering::SeqCst);
            core.ctl().writer.0.busy.store(frame.len() as u32, Ordering::SeqCst);
            nix::unistd::write(&core.write, &MARKER.to_le_bytes()).unwrap();
            nix::unistd::write(&core.big_write, &frame[..5000]).unwrap();
            std::mem::forget(guard); // dies with half the frame written
        })
        .join()
        .unwrap();
        assert!(matches!(q.get(), Err(QueueError::Broken(_))));
    }

    #[test]
    fn a_descriptor_names_its_queue_and_is_adopted_once() {
        let q: Queue<i32> = Queue::new(0).unwrap();
        let d = q.descriptor();
        // The creator already holds it: rebuilding would make two owners of the same fds.
        assert!(matches!(Queue::<i32>::from_descriptor(d), Err(QueueError::BadDescriptor(_))));
        // A joinable queue's descriptor is not a plain queue's, and vice versa.
        let j: JoinableQueue<i32> = JoinableQueue::new(0).unwrap();
        assert!(matches!(
            Queue::<i32>::from_descriptor(j.descriptor()),
            Err(QueueError::BadDescriptor(_))
        ));
        // Numbers that are not open here say what to do.
        let wrong = QueueDescriptor {
            read_fd: 900,
            write_fd: 901,
            big_read_fd: 903,
            big_write_fd: 904,
            control_fd: 902,
            id: 1,
        };
        let err = Queue::<i32>::from_descriptor(wrong).unwrap_err().to_string();
        assert!(err.contains("pass_fds"), "{err}");
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(json["read_fd"], d.read_fd);
    }
}
