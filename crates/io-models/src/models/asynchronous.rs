//! `async`: tokio's current-thread runtime: one thread, one task (a coroutine) per connection.
//! Each task reads as if it were blocking; when a read would block, the task yields and the
//! runtime polls another; the runtime's own `epoll_wait` is the one place the thread sleeps. The
//! system calls are tokio's (epoll underneath): what this model shows is the programming model,
//! the coroutines of the `coroutine` demo serving sockets.

use std::os::fd::OwnedFd;
use std::rc::Rc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::server::{
    Limits, Lines, RECV_BUF, Reason, Stats, TooLong, error_line, idle_too_long, next_conn_id,
    report_accepted, report_closed, report_refused, server_full, too_long,
};

pub fn serve(listener: OwnedFd, limits: Limits, stats: &'static Stats) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("building tokio's current-thread runtime")?;
    let std_listener = std::net::TcpListener::from(listener);
    std_listener.set_nonblocking(true).context("O_NONBLOCK on the listener")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(std_listener).context("registering the listener")?;
        let limits = Rc::new(limits);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and the like: the client stays in the backlog for a moment.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    let _ = e;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let limits = limits.clone();
            if stats.open_now() >= limits.max_connections {
                let why = server_full(&limits);
                Stats::add(&stats.refused, 1);
                report_refused(&why);
                tokio::task::spawn_local(refuse(stream, why));
                continue;
            }
            let conn = next_conn_id();
            let open = stats.opened();
            report_accepted(conn, std::os::fd::AsRawFd::as_raw_fd(&stream), open);
            // The model's key step: a task per connection, all on this one thread.
            tokio::task::spawn_local(async move {
                let (reason, requests) = echo(stream, &limits, stats).await;
                stats.closed();
                report_closed(conn, &reason, requests);
            });
        }
    })
}

/// One connection's task: read, echo the complete lines, until the client leaves, or stays
/// silent for `limits.idle`.
///
/// The idle bound is one deadline per connection, not a `tokio::time::timeout` around each
/// read: a timeout arms a timer in the runtime's wheel for every read and takes it out again
/// when the read completes first, which is nearly always. Here one `Sleep` is armed when the
/// connection opens; a read only notes the time, and when the sleep fires after activity it is
/// moved to the last activity + `idle` (at most once per `idle`), so a busy connection touches
/// the timer wheel almost never. What the client sees is the same: silence for `idle` after
/// its last echo closes it.
async fn echo(mut stream: TcpStream, limits: &Limits, stats: &Stats) -> (Reason, u64) {
    let mut lines = Lines::default();
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    let mut requests = 0;
    // When the connection last saw activity: its opening, or the end of its last echo.
    let mut active = Instant::now();
    let idle = tokio::time::sleep_until(active + limits.idle);
    tokio::pin!(idle);
    loop {
        // The await is where the task gives the thread back until its data is ready, or the
        // deadline passes. `biased`: data that is there is read before the clock is looked at.
        let read = tokio::select! {
            biased;
            read = stream.read(&mut buf) => read,
            () = &mut idle => {
                if active.elapsed() >= limits.idle {
                    let why = idle_too_long(limits);
                    close_with(&mut stream, &why).await;
                    return (Reason::Error(why), requests);
                }
                // Activity since the deadline was set: move it, and wait again.
                idle.as_mut().reset(active + limits.idle);
                continue;
            }
        };
        let n = match read {
            Ok(0) => {
                let _ = stream.write_all(&lines.take_rest()).await;
                return (Reason::Left, requests);
            }
            Ok(n) => n,
            Err(e) => return (Reason::Failed(format!("read: {e}")), requests),
        };
        out.clear();
        match lines.feed(&buf[..n], limits.max_line, &mut out) {
            Ok(count) => {
                if let Err(e) = stream.write_all(&out).await {
                    return (Reason::Failed(format!("write: {e}")), requests);
                }
                requests += count;
                Stats::add(&stats.requests, count);
            }
            Err(TooLong) => {
                let why = too_long(limits);
                close_with(&mut stream, &why).await;
                return (Reason::Error(why), requests);
            }
        }
        active = Instant::now();
    }
}

async fn refuse(mut stream: TcpStream, why: String) {
    close_with(&mut stream, &why).await;
}

/// The error line, the write side shut, and what the client still sends drained for a moment
/// (closing with unread bytes would reset the connection and could lose the line).
async fn close_with(stream: &mut TcpStream, why: &str) {
    let _ = stream.write_all(&error_line(why)).await;
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(crate::server::REFUSE_GRACE, drain).await;
}
