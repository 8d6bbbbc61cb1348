//! Part 4, `space`: 空间上的复用. Several processes of one program hold a variable at the same
//! virtual address, each in a physical frame of its own (`/proc/PID/pagemap`); after `fork`
//! parent and child share one frame until one of them writes (copy-on-write); a `MAP_SHARED`
//! page is one frame for all. The isolation the notes (seed 003) call "物理级别隔离" is virtual
//! memory: one address, a page table per process.
//!
//! Pitfalls handled here: the variable has a page of its own, written before anyone looks (an
//! untouched page maps the shared zero page, one frame for everyone); and it is mapped at a
//! chosen address with `MAP_FIXED_NOREPLACE`, because separately executed processes get
//! different addresses under ASLR (forked ones inherit the parent's layout).
#![cfg(target_os = "linux")]

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;

use anyhow::{Context, Result, bail};
use common::process::Process;
use common::{predict, report};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

use crate::kernel;

/// The addresses tried for the variable's page, in turn (the first that is free in every
/// process is used): far from where the kernel puts the program, its heap and its libraries.
const ADDRESSES: [usize; 4] =
    [0x6000_0000_0000, 0x6100_0000_0000, 0x5f00_0000_0000, 0x4000_0000_0000];

fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // Safety: the number was open in the demo when the child was forked and the child never
    // closes it.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

fn page_size() -> usize {
    // Safety: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize
}

/// Maps one private page at exactly `address` (MAP_FIXED_NOREPLACE: fails with EEXIST instead
/// of replacing whatever is there) and writes `value` in it, so it has a frame of its own.
fn map_at(address: usize, value: u64) -> Result<*mut u64> {
    let len = NonZeroUsize::new(page_size()).context("page size")?;
    // Safety: a new anonymous mapping at an address that MAP_FIXED_NOREPLACE guarantees was
    // free: nothing of this process is replaced.
    let page = unsafe {
        mmap_anonymous(
            NonZeroUsize::new(address),
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    }
    .with_context(|| format!("mmap(MAP_FIXED_NOREPLACE) at {address:#x}"))?;
    let ptr = page.as_ptr().cast::<u64>();
    if ptr as usize != address {
        bail!("mmap gave {:#x}, not {address:#x} (a kernel older than 4.17?)", ptr as usize);
    }
    // Safety: the page was just mapped readable and writable, and is this process's alone.
    unsafe { ptr.write_volatile(value) };
    Ok(ptr)
}

/// The physical frame behind `address` in `pid` (`/proc/PID/pagemap`), `Some(0)` when the
/// kernel hides it (frame numbers need CAP_SYS_ADMIN), `None` when no page is present.
pub fn frame(pid: i32, address: usize) -> Option<u64> {
    let mut map = procfs::process::Process::new(pid).ok()?.pagemap().ok()?;
    match map.get_info(address / page_size()).ok()? {
        procfs::process::PageInfo::MemoryPage(flags) => flags
            .contains(procfs::process::MemoryPageFlags::PRESENT)
            .then(|| flags.get_page_frame_number().0),
        procfs::process::PageInfo::SwapPage(_) => None,
    }
}

fn frame_text(f: Option<u64>) -> String {
    match f {
        Some(0) => "hidden (0)".into(),
        Some(f) => format!("{f:#x}"),
        None => "none".into(),
    }
}

pub fn space(cli: &crate::Cli, processes: u32) -> Result<()> {
    report::section("space: 空间上的复用, one virtual address, a physical frame per process");
    // The kernel's own answer, not a guess from the uid: a frame number of a page of ours
    // (this stack's) reads 0 without CAP_SYS_ADMIN, which root in a container may lack.
    let probe = 0u8;
    let readable = frame(std::process::id() as i32, std::ptr::addr_of!(probe) as usize)
        .is_some_and(|f| f != 0);
    common::event!(
        "pagemap",
        { "readable": readable },
        "{}",
        if readable {
            "frame numbers come from /proc/PID/pagemap (readable here: this process has \
             CAP_SYS_ADMIN)"
        } else {
            "frame numbers come from /proc/PID/pagemap, which shows them only to a process \
             with CAP_SYS_ADMIN (root has it, outside a container): here the kernel gives \
             zeros, so the frames cannot be compared; run as root to see them"
        }
    );
    let address = same_address(cli, processes, readable)?;
    copy_on_write(cli, address, readable)
}

/// N children map the variable's page at one address and write their own value in it.
fn same_address(cli: &crate::Cli, n: u32, readable: bool) -> Result<usize> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2");
    // Choose an address free here; a forked child has the same layout, so it is free there too.
    let address = ADDRESSES
        .iter()
        .copied()
        .find(|&a| map_at(a, 0).map(unmap).is_ok())
        .context("none of the chosen addresses is free for MAP_FIXED_NOREPLACE")?;
    let (ready_r, ready_w) = pipe()?;
    let (release_r, release_w) = pipe()?;
    let (ready, release) = (ready_w.as_raw_fd(), release_r.as_raw_fd());
    let mut children = Vec::new();
    for i in 1..=n {
        let value = u64::from(i) * 111;
        let mut child = Process::from_fn(format!("space-{i}"), move || {
            map_at(address, value)?;
            kernel::write_all(fd(ready), &[1])?;
            let mut byte = [0u8; 1];
            kernel::read_exact(fd(release), &mut byte)?;
            Ok(())
        });
        child.start()?;
        children.push(child);
    }
    for _ in 0..n {
        let mut byte = [0u8; 1];
        let mut watched: Vec<&mut Process> = children.iter_mut().collect();
        kernel::read_watching(ready_r.as_fd(), &mut byte, &mut watched, "pages mapped")?;
    }
    let question = format!(
        "{n} processes each wrote their own value into a variable at the same virtual address \
         {address:#x}: how many physical frames hold them?"
    );
    let guess =
        readable.then(|| predict::ask(&cli.common, "frames", question, predict::Expect::Count));
    let rows: Vec<(i32, u64, Option<u64>)> = children
        .iter()
        .zip(1u64..)
        .filter_map(|(c, i)| c.pid().map(|pid| (pid, i * 111, frame(pid, address))))
        .collect();
    let mut distinct: Vec<u64> = rows.iter().filter_map(|r| r.2).filter(|f| *f != 0).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let mut text = format!(
        "{n} processes, one virtual address {address:#x} (mapped there with MAP_FIXED_NOREPLACE), \
         {} physical frame(s):\n{:>8} {:>16} {:>6} {:>14}",
        if readable { distinct.len().to_string() } else { "? (hidden)".into() },
        "pid",
        "virtual address",
        "value",
        "frame"
    );
    for (pid, value, f) in &rows {
        text.push_str(&format!("\n{pid:>8} {address:>#16x} {value:>6} {:>14}", frame_text(*f)));
    }
    let data: Vec<serde_json::Value> = rows
        .iter()
        .map(|(pid, value, f)| serde_json::json!({ "pid": pid, "address": address, "value": value, "frame": f }))
        .collect();
    common::event!(
        "frames",
        { "address": address, "processes": data, "distinct": distinct.len(), "readable": readable },
        "{text}"
    );
    if let Some(guess) = guess {
        guess.reveal(
            distinct.len() as u64,
            "a page table per process maps the same address to its own frame",
        );
    }
    let mut pids = vec![std::process::id() as i32];
    pids.extend(rows.iter().map(|r| r.0));
    crate::hold(&cli.common, "processes with the variable at one address", &pids);
    kernel::write_all(release_w.as_fd(), &vec![1u8; n as usize])?;
    for c in &mut children {
        c.join()?;
        if c.exitcode() != Some(0) {
            return Err(common::processes::lost::report(c, "pages", 1));
        }
    }
    drop(release_r);
    drop(ready_w);
    Ok(address)
}

fn unmap(p: *mut u64) {
    if let Some(ptr) = NonNull::new(p.cast::<std::ffi::c_void>()) {
        // Safety: `p` is a page this module mapped and nobody else uses.
        let _ = unsafe { nix::sys::mman::munmap(ptr, page_size()) };
    }
}

/// After `fork`: one frame until the child writes (copy-on-write), then two; a `MAP_SHARED`
/// page stays one frame for both.
fn copy_on_write(cli: &crate::Cli, address: usize, readable: bool) -> Result<()> {
    let private = map_at(address, 42)?;
    let len = NonZeroUsize::new(page_size()).context("page size")?;
    // Safety: a new anonymous shared mapping wherever the kernel chooses.
    let shared = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .context("mmap(MAP_SHARED)")?
    .as_ptr()
    .cast::<u64>();
    // Safety: both pages were just mapped readable and writable by this process.
    unsafe { shared.write_volatile(7) };
    let result = cow_child(cli, address, private, shared, readable);
    unmap(private);
    unmap(shared);
    result
}

fn cow_child(
    cli: &crate::Cli,
    address: usize,
    private: *mut u64,
    shared: *mut u64,
    readable: bool,
) -> Result<()> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2");
    let (go_r, go_w) = pipe()?;
    let (ack_r, ack_w) = pipe()?;
    let (go, ack) = (go_r.as_raw_fd(), ack_w.as_raw_fd());
    let (private_at, shared_at) = (private as usize, shared as usize);
    let mut child = Process::from_fn("cow-child", move || {
        let mut byte = [0u8; 1];
        // First command: write both pages; second: end.
        kernel::read_exact(fd(go), &mut byte)?;
        // Safety: the pages were mapped by the parent before fork; this process has them too.
        unsafe {
            (private_at as *mut u64).write_volatile(43);
            (shared_at as *mut u64).write_volatile(8);
        }
        kernel::write_all(fd(ack), &[1])?;
        kernel::read_exact(fd(go), &mut byte)?;
        Ok(())
    });
    child.start()?;
    let me = std::process::id() as i32;
    let kid = child.pid().context("no pid")?;
    let before = (frame(me, address), frame(kid, address));
    let shared_before = (frame(me, shared_at), frame(kid, shared_at));
    kernel::write_all(go_w.as_fd(), &[1])?;
    let mut byte = [0u8; 1];
    kernel::read_watching(ack_r.as_fd(), &mut byte, &mut [&mut child], "writes")?;
    let after = (frame(me, address), frame(kid, address));
    let shared_after = (frame(me, shared_at), frame(kid, shared_at));
    // Safety: this process's own pages, mapped above and still mapped.
    let (mine, seen_shared) = unsafe { (private.read_volatile(), shared.read_volatile()) };
    common::event!(
        "cow",
        { "address": address, "parent": me, "child": kid, "readable": readable,
          "before": { "parent": before.0, "child": before.1 },
          "after": { "parent": after.0, "child": after.1 }, "parent_value": mine },
        "copy-on-write (写时复制) at {address:#x}: after fork, before any write, parent {me} and \
         child {kid} map frames {} and {} ({}); the child wrote 43: now {} and {} ({}); the \
         parent still reads {mine}",
        frame_text(before.0),
        frame_text(before.1),
        if !readable { "hidden" } else if before.0 == before.1 { "one frame, shared" } else { "two frames" },
        frame_text(after.0),
        frame_text(after.1),
        if !readable { "hidden" } else if after.0 == after.1 { "still one" } else { "two frames: the write copied the page" },
    );
    common::event!(
        "shared",
        { "address": shared_at, "before": { "parent": shared_before.0, "child": shared_before.1 },
          "after": { "parent": shared_after.0, "child": shared_after.1 }, "parent_reads": seen_shared,
          "readable": readable },
        "a MAP_SHARED page at {shared_at:#x}: parent and child map frames {} and {} after the \
         child wrote 8, and the parent reads {seen_shared}: {}",
        frame_text(shared_after.0),
        frame_text(shared_after.1),
        if !readable {
            "the child's write is the parent's too (the frames are hidden here)"
        } else if shared_after.0 == shared_after.1 {
            "one frame for both, no copy"
        } else {
            "two frames: not what a shared mapping should show"
        }
    );
    crate::hold(&cli.common, "parent and child after the copy-on-write", &[me, kid]);
    kernel::write_all(go_w.as_fd(), &[1])?;
    child.join()?;
    if child.exitcode() != Some(0) {
        return Err(common::processes::lost::report(&child, "writes", 1));
    }
    drop((go_r, ack_w));
    Ok(())
}
