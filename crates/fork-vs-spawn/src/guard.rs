//! Part 3, the `__main__` guard (不同操作系统开启子进程的区别): without it a spawn child runs
//! the parent's code and starts a child again, and again; shown safely, stopped at `--cap`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use common::process::Process;
use common::{ps, report};
use serde_json::json;

use crate::answers::{WorkDir, post, read_answer, succeeded};
use crate::{Cli, MAX_CAP};

/// Carries the depth of the unguarded chain to the next level (see `guard`).
const ENV_UNGUARDED_DEPTH: &str = "FORK_VS_SPAWN_UNGUARDED_DEPTH";

/// The part runs the same code at every level of the chain: the program the user started is
/// depth 0; each level it starts runs this program again (without the `__role=` argument that
/// the guard would recognise), reaches this function again, and starts the next level.
pub fn run(cli: &Cli, work: &WorkDir) -> Result<()> {
    let depth: usize = match std::env::var(ENV_UNGUARDED_DEPTH) {
        Ok(text) => text.parse().with_context(|| format!("{ENV_UNGUARDED_DEPTH}={text:?}"))?,
        Err(_) => 0,
    };
    let (me, parent) = (std::process::id() as i32, parent_pid());
    if depth == 0 {
        report::section("3. the __main__ guard: without it a spawn child starts children again");
        report::say(format!(
            "A spawn child runs the program from the top. Python's `if __name__ == '__main__':` \
             keeps the parent's code from running there; in these demos the `__role=` dispatch \
             at the top of main does. Here it is bypassed on purpose: each level runs this \
             program again with the same arguments and no role, so it reaches the line that \
             starts a child and starts one. A depth counter stops the chain at --cap {}.",
            cli.cap
        ));
        for old in 1..=MAX_CAP {
            work.fresh(&format!("guard-{old}.json"))?;
        }
    } else {
        report::set_who(&format!("unguarded-{depth}"));
        post(
            &work.path.join(format!("guard-{depth}.json")),
            &json!({ "depth": depth, "pid": me, "ppid": parent }),
        )?;
    }
    report::event(
        "guard-level",
        json!({ "depth": depth, "cap": cli.cap, "pid": me, "ppid": parent }),
        if depth == 0 {
            format!("depth 0: pid {me}, parent {parent}: the program you started")
        } else {
            format!("depth {depth}: pid {me}, parent {parent}: running the parent's code from main")
        },
    );
    if depth >= cli.cap {
        report::say(format!(
            "depth {depth} = --cap: this level starts no child. Without the cap the chain would \
             grow until the process table or the user's process limit was full."
        ));
        cli.common.hold("the unguarded chain at its cap", &chain_up(me, depth));
        return Ok(());
    }

    let guess = (depth == 0).then(|| {
        let question = format!(
            "without the guard each spawn child starts a child again; stopped at --cap {}: how \
             many processes does the unguarded chain start (the demo itself not counted)?",
            cli.cap
        );
        common::predict::ask(&cli.common, "chain", question, common::predict::Expect::Count)
    });
    // The line a guard would keep from running in a child: start a child running this program.
    let mut child_args = vec!["guard".to_string(), "--cap".into(), cli.cap.to_string()];
    child_args.extend(["--dir".to_string(), work.path.display().to_string()]);
    if report::json_mode() {
        child_args.push("--json".into());
    }
    if let Some(hold) = cli.common.hold {
        // Passed down the chain; only the deepest level holds.
        child_args.extend(["--hold".to_string(), hold.to_string()]);
    }
    let exe = std::env::current_exe().context("finding this program to run it again")?;
    let next = depth + 1;
    let mut child =
        Process::from_fn(format!("unguarded-{next}"), move || run_again(&exe, &child_args, next));
    child.start()?;
    child.join()?;
    succeeded(&child, &format!("level {next} of the unguarded chain"))?;
    match guess {
        Some(guess) => {
            let levels = check_chain(cli.cap, work)?;
            guess.reveal(
                levels,
                "each level ran main again and started one child, until the depth counter said stop",
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// In the child of a level: replace this process with the program, started again without a
/// role, as a spawn with a missing guard would. Returns only if exec failed.
fn run_again(exe: &Path, args: &[String], depth: usize) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = std::process::Command::new(exe)
            .arg0("fork-vs-spawn")
            .args(args)
            .env(ENV_UNGUARDED_DEPTH, depth.to_string())
            .exec();
        Err(error).with_context(|| format!("exec {}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        let _ = (exe, args, depth);
        bail!("the guard chain needs a Unix system")
    }
}

/// The pids from the program the user started down to this level.
fn chain_up(me: i32, depth: usize) -> Vec<i32> {
    let mut chain = vec![me];
    for _ in 0..depth {
        match ps::stat(*chain.last().unwrap_or(&me)) {
            Some(info) => chain.push(info.ppid),
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// At depth 0, after the chain ended: every level answered, each the child of the one before,
/// all distinct, and none of them is left (alive or zombie). Returns how many levels answered.
fn check_chain(cap: usize, work: &WorkDir) -> Result<usize> {
    let me = std::process::id() as i32;
    let mut chain = Vec::new();
    let mut expected_parent = me;
    let mut linked = true;
    for depth in 1..=cap {
        let path = work.path.join(format!("guard-{depth}.json"));
        let level = read_answer(&path)?.ok_or_else(|| {
            anyhow!("level {depth} of the chain never answered ({})", path.display())
        })?;
        let pid = level["pid"].as_i64().unwrap_or(0) as i32;
        linked &= level["ppid"].as_i64() == Some(i64::from(expected_parent));
        expected_parent = pid;
        chain.push(level);
    }
    let mut pids: Vec<i64> = chain.iter().filter_map(|l| l["pid"].as_i64()).collect();
    pids.push(i64::from(me));
    pids.sort_unstable();
    pids.dedup();
    let distinct = pids.len() == cap + 1;
    let mut left: Vec<i32> = ps::children_of(me);
    left.extend(chain.iter().filter_map(|l| l["pid"].as_i64()).map(|p| p as i32).filter(|p| {
        ps::stat(*p).is_some_and(|info| info.sid == ps::stat(me).map_or(-1, |m| m.sid))
    }));
    left.sort_unstable();
    left.dedup();
    common::event!("guard", { "cap": cap, "levels": chain.len(), "chain": chain, "linked": linked,
                "distinct": distinct, "left": left }, "the chain stopped at depth {cap}: {} unguarded levels, each the child of the one \
             before: {linked}; every one reaped: {}.\n\
             CPython stops it earlier: in a spawn child that is still importing the main module, \
             Process.start() raises RuntimeError ('An attempt has been made to start a new \
             process before the current process has finished its bootstrapping phase'); that \
             child exits with 1 and the parent goes on.",
            chain.len(),
            left.is_empty());
    if !linked || !distinct || !left.is_empty() {
        bail!("the unguarded chain is not as expected (linked {linked}, left {left:?})");
    }
    Ok(chain.len())
}

fn parent_pid() -> i32 {
    ps::stat(std::process::id() as i32).map_or(0, |info| info.ppid)
}
