//! The registry of started children, shared by [`Process`](super::process::Process), the end of
//! `main` and the signal watcher: one lock, taken while a child is born, so that the watcher
//! cannot miss a child, and after shutdown began no new child starts.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

#[derive(Debug, Clone)]
pub(super) struct ChildEntry {
    pub(super) name: String,
    pub(super) daemon: bool,
    /// A fork server's child: the read end of the pipe where the server writes its exit code
    /// (it is not this process's child, so `waitpid` cannot see it). `None` for a child of
    /// ours, and once the server has died (its children are then reparented to us).
    pub(super) status: Option<Arc<OwnedFd>>,
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) children: HashMap<i32, ChildEntry>,
    /// Exit codes of children that someone else (the watcher) reaped before their owner asked.
    pub(super) reaped: HashMap<i32, Option<i32>>,
    pub(super) shutting_down: bool,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
/// Whether this process is a daemonic child (which may not start children of its own).
pub(super) static IS_DAEMONIC: AtomicBool = AtomicBool::new(false);

pub(super) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pids and names of the children started through [`Process`](super::process::Process) that
/// have not been reaped.
pub fn live_children() -> Vec<(i32, String)> {
    let mut v: Vec<_> = registry().children.iter().map(|(p, c)| (*p, c.name.clone())).collect();
    v.sort();
    v
}

/// The registry's guard, held from just before a child is born until it is recorded.
pub(super) type Births = MutexGuard<'static, Registry>;

/// The registry, locked for a birth; once shutdown began, this thread waits instead for the
/// watcher to end the process. Unflushed output is written first: a forked child would print
/// it a second time (the fix that `fork-vs-spawn` shows).
pub(super) fn lock_for_a_birth() -> Births {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let guard = registry();
    if guard.shutting_down {
        drop(guard);
        loop {
            std::thread::park();
        }
    }
    guard
}

/// Records the newborn `pid` and unlocks the registry.
pub(super) fn record_birth(
    mut births: Births,
    pid: i32,
    name: &str,
    daemon: bool,
    status: Option<OwnedFd>,
) -> i32 {
    let entry = ChildEntry { name: name.to_string(), daemon, status: status.map(Arc::new) };
    births.children.insert(pid, entry);
    pid
}

/// In a forked child: the registry copied from the parent lists the parent's children,
/// which are not this child's; empty it and unlock it.
pub(super) fn forget_the_parents_children(mut births: Births) {
    births.children.clear();
    births.reaped.clear();
}
