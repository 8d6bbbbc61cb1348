//! named — threads with names the kernel shows, and which thread is running now.
//!
//! Every thread a demo starts is named, so that `ps -L`, `top -H` and `/proc/PID/task/TID/comm`
//! show what it is. std's [`std::thread::Builder::name`] hands the name to the kernel
//! (`pthread_setname_np`, i.e. `prctl(PR_SET_NAME)` on Linux), which keeps only its first 15
//! bytes: [`kernel_name`] shows what survives.
//!
//! A thread's kernel id (`gettid`, the `LWP` column of `ps -L`) is what `/proc/PID/task/`
//! lists; the main thread's is the pid itself. Python's names differ: its main thread is
//! `MainThread` and an unnamed thread is `Thread-N (target)` (3.10+); Rust's main thread is
//! `main` and an unnamed thread has no name at all (the kernel then shows the program's name).

use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

/// The longest name the kernel keeps for a thread (`TASK_COMM_LEN` is 16, with the NUL).
pub const KERNEL_NAME_BYTES: usize = 15;

/// Starts a thread named `name` running `f`, as `threading.Thread(target=f, name=name)`.
pub fn spawn<F, T>(name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name.to_string()).spawn(f)
}

/// Starts a thread named `name` inside a [`std::thread::scope`]: it may borrow from the
/// caller, and the scope joins it before it returns (Python's non-daemon thread, made a rule).
pub fn spawn_scoped<'scope, 'env, F, T>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    f: F,
) -> std::io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    Builder::new().name(name.to_string()).spawn_scoped(scope, f)
}

/// The kernel's id of the calling thread (`gettid(2)`); -1 where the system has no such id.
pub fn gettid() -> i32 {
    #[cfg(target_os = "linux")]
    return nix::unistd::gettid().as_raw();
    #[cfg(not(target_os = "linux"))]
    -1
}

/// `main` for the main thread, `unnamed` for a thread started without a name.
pub fn current_name() -> String {
    std::thread::current().name().unwrap_or("unnamed").to_string()
}

/// What the kernel keeps of `name`: its first [`KERNEL_NAME_BYTES`] bytes (cut at a character
/// boundary here; the kernel cuts bytes).
pub fn kernel_name(name: &str) -> &str {
    let mut end = name.len().min(KERNEL_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
