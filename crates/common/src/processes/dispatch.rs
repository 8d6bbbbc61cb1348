//! Roles: what a child runs, found by name (a [`Role`], or a type that implements [`Run`]), and
//! [`dispatch`], the `__main__` guard that runs one in a spawned child; a fork server's child
//! runs its role the same way ([`run_role`]).

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[cfg(doc)]
use super::process::Process;
use super::process::name_this_process;
use super::registry::IS_DAEMONIC;
use crate::report;

/// A named function a child process can run, with its arguments as JSON. A spawned child finds
/// it by name in the list given to [`dispatch`].
#[derive(Debug)]
pub struct Role {
    /// The name a spawned child is told to run; unique within a demo.
    pub name: &'static str,
    /// The function itself; it receives the arguments given to [`Process::new`].
    pub run: fn(Value) -> Result<()>,
}

impl Role {
    pub const fn new(name: &'static str, run: fn(Value) -> Result<()>) -> Role {
        Role { name, run }
    }

    /// The role of a type that implements [`Run`]: the "subclass Process, override run" way.
    pub const fn of<T: Run>() -> Role {
        Role { name: T::ROLE, run: run_value::<T> }
    }
}

pub(super) fn run_value<T: Run>(value: Value) -> Result<()> {
    let target: T = serde_json::from_value(value)
        .with_context(|| format!("decoding the arguments of role {}", T::ROLE))?;
    target.run()
}

/// A type whose value is a process's work: Python's `class MyProcess(Process)` with `run`.
/// It is serializable because a spawned child must receive it; it is not shared, it is copied.
pub trait Run: Serialize + DeserializeOwned + 'static {
    /// The role name under which a spawned child finds this type (see [`Role::of`]).
    const ROLE: &'static str;
    fn run(self) -> Result<()>;
}

/// An error a child returns to end with a chosen exit code, like `sys.exit(3)`.
#[derive(Debug, thiserror::Error)]
#[error("exit with code {0}")]
pub struct ExitWith(pub i32);

static ROLES: Mutex<Vec<&'static Role>> = Mutex::new(Vec::new());

pub(super) fn registered_role(name: &str) -> Option<&'static Role> {
    ROLES.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().find(|r| r.name == name)
}

/// The argument that marks a spawned child: `<demo> __role=<role> <name>`.
pub(super) const ROLE_ARG_PREFIX: &str = "__role=";
/// Environment variables carrying a spawned child's arguments (JSON) and daemonic flag.
pub(super) const ENV_ARGS: &str = "CONCURRENCY_DEMOS_ARGS";
pub(super) const ENV_DAEMONIC: &str = "CONCURRENCY_DEMOS_DAEMONIC";

/// The `if __name__ == '__main__':` guard. Called first in every demo's `main` with the roles
/// the demo's children can run: in a spawned child it runs the requested role and exits (never
/// returning); in the program a user started it returns at once and `main` goes on.
pub fn dispatch(roles: &[&'static Role]) {
    ROLES.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(roles);
    let mut args = std::env::args().skip(1);
    let Some(role) = args.next().and_then(|a| a.strip_prefix(ROLE_ARG_PREFIX).map(String::from))
    else {
        return;
    };
    let name = args.next().unwrap_or_else(|| role.clone());
    report::init_from_env(&std::env::var(report::ENV_REPORT).unwrap_or_default(), &name);
    #[cfg(target_os = "linux")]
    if role == crate::forkserver::ROLE {
        name_this_process(&name);
        crate::forkserver::serve();
    }
    let args = std::env::var(ENV_ARGS).ok().and_then(|a| serde_json::from_str(&a).ok());
    let daemon = std::env::var_os(ENV_DAEMONIC).is_some();
    std::process::exit(run_role(&role, &name, args.unwrap_or(Value::Null), daemon));
}

/// A spawned or fork server's child: runs the role listed under `role` ([`run_as_child`]);
/// exit code 2 if the program has none by that name.
pub(crate) fn run_role(role: &str, name: &str, args: Value, daemon: bool) -> i32 {
    match registered_role(role) {
        Some(role) => run_as_child(name, daemon, || (role.run)(args)),
        None => {
            let roles = ROLES.lock().unwrap_or_else(|e| e.into_inner());
            let known: Vec<&str> = roles.iter().map(|r| r.name).collect();
            report::write_stderr(&format!(
                "{name}: this program has no role {role:?} (known: {})",
                known.join(", ")
            ));
            2
        }
    }
}

/// In a new child, whatever its start method: takes the child's name and daemonic flag, runs
/// its work and returns its exit code: 0, the code of an [`ExitWith`], or 1 for any other error
/// or a panic (Python's exit code for an uncaught exception), after printing it. What the work
/// printed is flushed: a forked child leaves with `_exit`, which would drop it.
pub(super) fn run_as_child(name: &str, daemon: bool, work: impl FnOnce() -> Result<()>) -> i32 {
    IS_DAEMONIC.store(daemon, Ordering::Relaxed);
    name_this_process(name);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the child panicked")));
    let code = match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith(code)) => *code,
            None => {
                report::write_stderr(&format!("{}: error: {e:#}", report::who()));
                1
            }
        },
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    code
}
