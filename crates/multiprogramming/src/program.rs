//! Part 5, `program`: 进程与程序. A program is a file; a process is a program running. One
//! program file, three processes: the same `/proc/PID/exe` (device and inode), and different
//! pids, memory, descriptors and states. Then the notes' four ways a process starts (启动进程的
//! 方式), where this machine shows them.
#![cfg(target_os = "linux")]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{Context, Result};
use common::process::Process;
use common::{predict, ps, report};

use crate::kernel;

fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // Safety: the number was open in the demo when the child was forked and the child never
    // closes it.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// What `/proc/PID` says of one process.
#[derive(Debug, serde::Serialize)]
struct Seen {
    pid: i32,
    exe: String,
    dev: u64,
    inode: u64,
    rss_kb: u64,
    fds: usize,
    state: char,
}

fn look(pid: i32) -> Result<Seen> {
    // stat() follows the /proc/PID/exe link to the program file itself.
    let meta = std::fs::metadata(format!("/proc/{pid}/exe"))
        .with_context(|| format!("/proc/{pid}/exe"))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let process = procfs::process::Process::new(pid)?;
    let rss_kb = process.status().ok().and_then(|s| s.vmrss).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let state = ps::state_of(pid).unwrap_or('?');
    Ok(Seen { pid, exe, dev: meta.dev(), inode: meta.ino(), rss_kb, fds, state })
}

pub fn program(cli: &crate::Cli) -> Result<()> {
    report::section("program: 进程与程序, one program file, three processes");
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2");
    let (ready_r, ready_w) = pipe()?;
    let (release_r, release_w) = pipe()?;
    let (ready, release) = (ready_w.as_raw_fd(), release_r.as_raw_fd());
    // Three processes of this program doing different things: computing, waiting, holding
    // memory and files.
    let mut children = Vec::new();
    for (name, what) in [("computes", 0u8), ("waits", 1), ("holds-memory", 2)] {
        let mut child = Process::from_fn(name, move || {
            let mut held = Vec::new();
            let mut files = Vec::new();
            if what == 2 {
                held = vec![1u8; 16 << 20];
                for _ in 0..8 {
                    files.push(std::fs::File::open("/proc/self/stat")?);
                }
            }
            kernel::write_all(fd(ready), &[1])?;
            let mut byte = [0u8; 1];
            if what == 0 {
                // Computes until released (state R), looking at the pipe between slices.
                loop {
                    kernel::burn(Duration::from_millis(2));
                    let mut fds =
                        [nix::poll::PollFd::new(fd(release), nix::poll::PollFlags::POLLIN)];
                    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) > 0 {
                        break;
                    }
                }
            }
            kernel::read_exact(fd(release), &mut byte)?;
            std::hint::black_box((&held, &files));
            Ok(())
        });
        child.start()?;
        children.push(child);
    }
    for _ in 0..children.len() {
        let mut byte = [0u8; 1];
        let mut watched: Vec<&mut Process> = children.iter_mut().collect();
        kernel::read_watching(ready_r.as_fd(), &mut byte, &mut watched, "looks")?;
    }
    // A look that fails because a child was killed from outside is reported as that loss.
    let result = (|| -> Result<()> {
        // The waiting ones are seen asleep (S), the computing one running (R).
        for c in children.iter().skip(1) {
            let pid = c.pid().unwrap_or(0);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while ps::state_of(pid).is_some_and(|s| s != 'S')
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let question = "three processes started from one program file: how many different program \
                        files (device and inode of /proc/PID/exe) do they run?";
        let guess = predict::ask(&cli.common, "exe-inodes", question, predict::Expect::Count);
        let seen: Vec<Seen> =
            children.iter().filter_map(|c| c.pid()).map(look).collect::<Result<_>>()?;
        let mut inodes: Vec<(u64, u64)> = seen.iter().map(|s| (s.dev, s.inode)).collect();
        inodes.sort_unstable();
        inodes.dedup();
        let mut text = format!(
            "one program, {} processes: {} program file(s) (device:inode of /proc/PID/exe)\n{:>8} {:>14} \
             {:>8} {:>4} {:>5}  {}",
            seen.len(),
            inodes.len(),
            "pid",
            "dev:inode",
            "RSS kB",
            "fds",
            "STAT",
            "exe"
        );
        for s in &seen {
            text.push_str(&format!(
                "\n{:>8} {:>14} {:>8} {:>4} {:>5}  {}",
                s.pid,
                format!("{}:{}", s.dev, s.inode),
                s.rss_kb,
                s.fds,
                s.state,
                s.exe
            ));
        }
        common::event!("program", { "processes": seen, "distinct_exe": inodes.len() }, "{text}");
        guess.reveal(
            inodes.len() as u64,
            "a program is one file; each process runs it with its own pid, memory and descriptors",
        );
        let mut pids = vec![std::process::id() as i32];
        pids.extend(seen.iter().map(|s| s.pid));
        crate::hold(&cli.common, "three processes of one program", &pids);
        Ok(())
    })();
    let mut watched: Vec<&mut Process> = children.iter_mut().collect();
    common::processes::lost::blame_dead_child(result, &mut watched, "looks")?;
    kernel::write_all(release_w.as_fd(), &[1, 1, 1])?;
    for c in &mut children {
        c.join()?;
        if c.exitcode() != Some(0) {
            return Err(common::processes::lost::report(c, "looks", 1));
        }
    }
    drop((ready_w, release_r));
    ways_to_start()
}

/// The notes' four ways a process starts, seen on this machine.
fn ways_to_start() -> Result<()> {
    let mut chain = Vec::new();
    let mut pid = std::process::id() as i32;
    while pid > 0 && chain.len() < 64 {
        let Some(info) = ps::stat(pid) else { break };
        chain.push((info.pid, info.comm.clone()));
        if pid == 1 {
            break;
        }
        pid = info.ppid;
    }
    let line: Vec<String> = chain.iter().map(|(p, c)| format!("{p} {c}")).collect();
    let init = chain.last().map(|(p, c)| format!("{p} {c}")).unwrap_or_default();
    common::event!(
        "ancestry",
        { "chain": chain.iter().map(|(p, c)| serde_json::json!({ "pid": p, "comm": c })).collect::<Vec<_>>() },
        "1. system initialisation (系统初始化): this process's ancestry ends at {init}, the first \
         process (the kernel starts it at boot; in a container, the first process of its PID \
         namespace): {}",
        line.join(" <- ")
    );
    const SHELLS: [&str; 6] = ["bash", "sh", "zsh", "fish", "dash", "ksh"];
    let shell = chain.iter().enumerate().skip(1).find(|(_, (_, c))| SHELLS.contains(&c.as_str()));
    common::event!(
        "shell",
        { "shell": shell.map(|(_, (p, c))| serde_json::json!({ "pid": p, "comm": c })) },
        "2. a user's request (用户的交互请求): {}",
        match shell {
            // Only a shell that is the demo's parent forked and executed the demo itself; one
            // further up started a command (make, timeout, ...) that started it.
            Some((1, (p, c))) => format!("the shell {c} ({p}), this demo's parent, forked and executed it"),
            Some((depth, (p, c))) => format!(
                "the shell {c} ({p}) started {}, which started this demo",
                chain[1..depth]
                    .iter()
                    .rev()
                    .map(|(p, c)| format!("{c} ({p})"))
                    .collect::<Vec<_>>()
                    .join(", which started ")
            ),
            None => "no shell above this demo: it was started by a program (a test, make, an IDE), \
                     which is the same system call made by another program"
                .to_string(),
        }
    );
    report::say(
        "3. a system call of a running process (在一个进程中发起了系统调用启动了另一个进程): this demo's own \
         fork() started the three processes above (their PPID is this demo's PID)",
    );
    let all = ps::all();
    let batch: Vec<String> = all
        .iter()
        .filter(|p| ["cron", "crond", "atd", "anacron"].contains(&p.comm.as_str()))
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    let pid1 = all.iter().find(|p| p.pid == 1).map(|p| p.comm.clone()).unwrap_or_default();
    common::event!(
        "batch_jobs",
        { "schedulers": batch, "pid1": pid1 },
        "4. a batch job (批处理作业): {}",
        if !batch.is_empty() {
            format!("this machine runs {}: the jobs it starts have it as their parent", batch.join(", "))
        } else if pid1 == "systemd" {
            "no cron here, but PID 1 is systemd: its timers (systemctl list-timers) start batch \
             jobs as its children"
                .to_string()
        } else {
            format!(
                "no cron, atd or systemd timers here (PID 1 is {pid1}); on a server, cron or a \
                 systemd timer would start them, as children of crond or of PID 1"
            )
        }
    );
    Ok(())
}
