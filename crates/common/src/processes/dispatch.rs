//! The spawn-role dispatch: Rust's `if __name__ == '__main__':` guard. A spawned child is this
//! program run again with a hidden role argument; [`dispatch`], first thing in every demo's
//! `main`, runs the role and exits. A fork server's child runs its role the same way
//! (`run_forkserver_child`).

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};
use serde_json::Value;

use super::process::{ExitWith, Role, name_in_kernel};
use super::registry::IS_DAEMONIC;
use crate::report;

static ROLES: Mutex<Vec<&'static Role>> = Mutex::new(Vec::new());

/// The role listed under `name` in the program's [`dispatch`].
pub(super) fn registered_role(name: &str) -> Option<&'static Role> {
    ROLES.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().find(|r| r.name == name)
}

/// The argument that marks a spawned child: `<demo> __role=<role> <name>`.
pub(super) const ROLE_ARG_PREFIX: &str = "__role=";
/// Environment variable carrying a spawned child's arguments (JSON) and flags.
pub(super) const ENV_ARGS: &str = "CONCURRENCY_DEMOS_ARGS";
pub(super) const ENV_DAEMONIC: &str = "CONCURRENCY_DEMOS_DAEMONIC";

/// The `if __name__ == '__main__':` guard. Called first in every demo's `main` with the roles
/// the demo's children can run: in a spawned child it runs the requested role and exits (never
/// returning); in the program a user started it returns at once and `main` goes on.
pub fn dispatch(roles: &[&'static Role]) {
    ROLES.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(roles);
    let mut args = std::env::args().skip(1);
    let Some(role_name) =
        args.next().and_then(|a| a.strip_prefix(ROLE_ARG_PREFIX).map(String::from))
    else {
        return;
    };
    let name = args.next().unwrap_or_else(|| role_name.clone());
    report::init_from_env(&std::env::var(report::ENV_REPORT).unwrap_or_default(), &name);
    #[cfg(unix)]
    if role_name == crate::forkserver::ROLE {
        name_in_kernel(&name);
        crate::forkserver::serve(run_forkserver_child);
    }
    IS_DAEMONIC.store(std::env::var_os(ENV_DAEMONIC).is_some(), Ordering::Relaxed);
    name_in_kernel(&name);
    let code = match registered_role(&role_name) {
        Some(role) => {
            let args = std::env::var(ENV_ARGS)
                .ok()
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or(Value::Null);
            child_exit_code(catch_run(|| (role.run)(args)))
        }
        None => {
            report::write_stderr(&format!(
                "{name}: this program has no role {role_name:?} (known: {})",
                roles.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
            ));
            2
        }
    };
    std::process::exit(code);
}

/// The body of a fork server's child: like a spawned child's, from the request's fields.
#[cfg(unix)]
fn run_forkserver_child(role: String, name: String, args: Value, daemon: bool, env: String) -> ! {
    report::init_from_env(&env, &name);
    IS_DAEMONIC.store(daemon, Ordering::Relaxed);
    name_in_kernel(&name);
    let code = match registered_role(&role) {
        Some(role) => child_exit_code(catch_run(|| (role.run)(args))),
        None => {
            report::write_stderr(&format!("{name}: this program has no role {role:?}"));
            2
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Safety: _exit ends this copy of the fork server at once, running none of its destructors.
    unsafe { libc::_exit(code) }
}

/// Runs a child's target, turning a panic into an error so the child still exits cleanly.
pub(super) fn catch_run(f: impl FnOnce() -> Result<()>) -> Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => bail!("the child panicked"),
    }
}

/// 0 on success; the chosen code for [`ExitWith`]; 1 for any other error (Python's exit code
/// for an uncaught exception), after printing it.
pub(super) fn child_exit_code(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith(code)) => *code,
            None => {
                report::write_stderr(&format!("{}: error: {e:#}", report::who()));
                1
            }
        },
    }
}
