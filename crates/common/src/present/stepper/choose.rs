//! Who goes next, and what the learner sees: the choosers (a terminal, a schedule, a seeded
//! random choice), the loop that grants the steps ([`drive`]), each worker's line with the
//! source line of its next step, and the timeline.

use std::io::IsTerminal;

use anyhow::{Result, anyhow};
// A name's width in columns at a terminal: two for each Chinese character (路人0 takes five).
use unicode_width::UnicodeWidthStr;

use super::{Controller, Probe, State};
use crate::demo::bad_input;

/// How a stepped run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every worker is done.
    Finished,
    /// Workers are left and every one of them is blocked in the kernel.
    Deadlock,
}

/// Runs the workers step by step: settle, then (at a terminal) `show` the state, then let
/// `chooser` pick the worker to grant, until every worker is done or they deadlock. `quiet`
/// prints nothing per step; otherwise each grant is a `step` event (unless a terminal is
/// asking: the learner saw the state). A bad schedule is bad input (exit 2) naming its position.
pub fn drive(
    ctl: &mut Controller,
    chooser: &mut Chooser,
    quiet: bool,
    mut probe: impl FnMut(&Controller, usize) -> Probe,
    mut show: impl FnMut(&Controller),
) -> Result<Ending> {
    let asking = matches!(chooser, Chooser::Ask);
    loop {
        ctl.settle(&mut probe)?;
        let position = ctl.granted.len() + 1;
        let left = || ctl.workers.iter().filter(|w| w.state != State::Done);
        let ended = if left().next().is_none() {
            Some(Ending::Finished)
        } else if left().all(|w| matches!(w.state, State::Blocked(..))) {
            Some(Ending::Deadlock)
        } else {
            None
        };
        if let Some(ended) = ended {
            chooser.check_used_up(position - 1, ended)?;
            return Ok(ended);
        }
        if asking {
            show(ctl);
        }
        let i = chooser.next(ctl, position)?;
        if !quiet && !asking {
            let w = &ctl.workers[i];
            let step = if let State::At(step) = &w.state { step.as_str() } else { "" };
            let name = &w.name;
            crate::event!("step", { "position": position, "worker": i, "step": step },
                          "step {position}: {name} {step}");
        }
        ctl.grant(i)?;
    }
}

/// The chooser a demo's flags ask for: `--schedule` (checked here for unknown workers), the
/// learner at a terminal, or, without one, a random schedule from `--seed` (or a seed drawn
/// now), said at once so the run can be replayed.
pub fn chooser_for(schedule: Option<&str>, seed: Option<u64>, workers: usize) -> Result<Chooser> {
    if let Some(text) = schedule {
        return parse_schedule(text, workers).map(Chooser::Schedule).map_err(bad_input);
    }
    if seed.is_none() && std::io::stdin().is_terminal() && !crate::report::json_mode() {
        return Ok(Chooser::Ask);
    }
    let seed = seed.unwrap_or_else(|| crate::report::monotonic_ns() % 1_000_000);
    crate::event!("seed", { "seed": seed },
                  "no terminal to ask: a random schedule from --seed {seed} (the schedule is printed at the end)");
    Ok(Chooser::seeded(seed))
}

/// Each worker's line: its number, name, private state, where it is, and the source line
/// its next step runs (from the guide's table).
pub fn lanes(ctl: &Controller, table: &[(String, String, String)]) -> String {
    let width = ctl.workers.iter().map(|w| w.name.width()).max().unwrap_or(0);
    let states: Vec<String> = ctl.workers.iter().map(|w| describe(&w.state)).collect();
    // Only the workers at a step have a source line to line up.
    let state_width = (ctl.workers.iter().zip(&states))
        .filter(|(w, _)| matches!(w.state, State::At(_)))
        .map(|(_, s)| s.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, (w, state)) in ctl.workers.iter().zip(&states).enumerate() {
        let line = match &w.state {
            State::At(step) => source_of(table, step, &w.name)
                .map_or(String::new(), |(_, at, call)| format!("   {at}  {call}")),
            _ => String::new(),
        };
        let note = if w.note.is_empty() { "-" } else { &w.note };
        let pad = " ".repeat(width - w.name.width());
        let line = format!("  {i} {}{pad}  {note:<16} {state:<state_width$}{line}", w.name);
        out.push('\n');
        out.push_str(line.trim_end());
    }
    out
}

impl Controller {
    /// One lane per worker, one column per granted step: the step's short name where that
    /// worker made it. Indented by two spaces, to sit under its heading.
    pub fn timeline(&self) -> String {
        let width = self.granted.iter().map(|(_, s)| s.chars().count()).max().unwrap_or(1) + 1;
        let name_width = self.workers.iter().map(|w| w.name.width()).max().unwrap_or(0).max(4);
        let pad = |name: &str| format!("  {name}{}  ", " ".repeat(name_width - name.width()));
        let mut out = pad("step");
        out.extend((1..=self.granted.len()).map(|k| format!("{k:<width$}")));
        for (i, w) in self.workers.iter().enumerate() {
            out.push('\n');
            out.push_str(&pad(&w.name));
            for (j, step) in &self.granted {
                let cell = if *j == i { step.as_str() } else { "·" };
                out.push_str(&format!("{cell:<width$}"));
            }
        }
        out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
    }
}

/// `[0, 1, 1]` as `0,1,1`.
pub fn join_schedule(steps: impl IntoIterator<Item = usize>) -> String {
    steps.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Parses `--schedule 0,0,1,...` (worker numbers from 0, one per step); `workers` is how many
/// there are, so an unknown worker is refused here, naming its position.
pub fn parse_schedule(text: &str, workers: usize) -> Result<Vec<usize>, String> {
    let last = workers.saturating_sub(1);
    (text.split(',').map(str::trim).enumerate())
        .map(|(k, part)| {
            let at = format!("--schedule position {}", k + 1);
            match part.parse::<usize>() {
                Ok(i) if i < workers => Ok(i),
                Ok(i) => Err(format!("{at}: worker {i} is unknown (workers are 0..{last})")),
                Err(_) => Err(format!("{at}: {part:?} is not a worker number (0..{last})")),
            }
        })
        .collect()
}

/// Who chooses the next step.
#[derive(Debug)]
pub enum Chooser {
    /// The learner at a terminal.
    Ask,
    /// A given schedule, in order.
    Schedule(Vec<usize>),
    /// A random choice among the choosable workers, from this seed.
    Random(fastrand::Rng),
}

impl Chooser {
    /// A random choice among the choosable workers, the same for the same seed.
    pub fn seeded(seed: u64) -> Chooser {
        Chooser::Random(fastrand::Rng::with_seed(seed))
    }

    /// The next worker to grant, or why there is none: a bad `--schedule` (exit 2, naming the
    /// position) or the end of input. `position` counts the grants from 1.
    fn next(&mut self, ctl: &Controller, position: usize) -> Result<usize> {
        let choosable = ctl.choosable();
        match self {
            Chooser::Schedule(list) => {
                let Some(&i) = list.get(position - 1) else {
                    let left: Vec<&str> = (ctl.workers.iter())
                        .filter(|w| w.state != State::Done)
                        .map(|w| w.name.as_str())
                        .collect();
                    return Err(bad_input(format!(
                        "--schedule has too few steps: it ends after position {}, with steps \
                         left for {}",
                        position - 1,
                        left.join(", ")
                    )));
                };
                if choosable.contains(&i) {
                    return Ok(i);
                }
                let w = &ctl.workers[i];
                let why = match &w.state {
                    State::Done => "is done".to_owned(),
                    State::Blocked(step, why) => format!("is blocked in `{step}` ({why})"),
                    _ => "cannot go on".to_owned(),
                };
                Err(bad_input(format!(
                    "--schedule position {position}: worker {i} ({}) {why}; choosable: {}",
                    w.name,
                    names(ctl, &choosable)
                )))
            }
            Chooser::Random(rng) => {
                // Never empty: the run ends before, finished or deadlocked.
                Ok(choosable[rng.usize(..choosable.len())])
            }
            Chooser::Ask => ask(ctl, &choosable),
        }
    }

    /// After the last step (`ended`: every worker done, or deadlocked): a schedule with steps
    /// left over is refused, naming the position.
    fn check_used_up(&self, used: usize, ended: Ending) -> Result<()> {
        let how = match ended {
            Ending::Finished => "every worker is done",
            Ending::Deadlock => "the workers are deadlocked (none can go on)",
        };
        match self {
            Chooser::Schedule(list) if list.len() > used => Err(bad_input(format!(
                "--schedule has too many steps: {how} after position {used}, and it goes on to \
                 position {}",
                list.len()
            ))),
            _ => Ok(()),
        }
    }
}

fn names(ctl: &Controller, which: &[usize]) -> String {
    if which.is_empty() {
        return "none".to_owned();
    }
    which.iter().map(|&i| format!("{i} ({})", ctl.workers[i].name)).collect::<Vec<_>>().join(", ")
}

/// Asks at the terminal which worker goes next, until the reply is a choosable worker.
fn ask(ctl: &Controller, choosable: &[usize]) -> Result<usize> {
    loop {
        let who = join_schedule(choosable.iter().copied());
        crate::report::plain(format!("who goes next? {who} > "));
        let mut line = String::new();
        if matches!(std::io::stdin().read_line(&mut line), Ok(0) | Err(_)) {
            return Err(anyhow!("no worker was chosen (end of input): the run ends here"));
        }
        if line.trim().is_empty() && choosable.len() == 1 {
            return Ok(choosable[0]); // Enter: the only one that can go
        }
        match line.trim().parse::<usize>() {
            Ok(i) if choosable.contains(&i) => return Ok(i),
            Ok(i) if i < ctl.workers.len() => crate::report::plain(format!(
                "  {} cannot go now ({}); choose one of {}",
                ctl.workers[i].name,
                describe(&ctl.workers[i].state),
                names(ctl, choosable)
            )),
            _ => crate::report::plain(format!("  type a worker number: {}", names(ctl, choosable))),
        }
    }
}

/// "next: read", "blocked in lock (S, flock_lock_inode_wait)", "done".
pub fn describe(state: &State) -> String {
    match state {
        State::Starting => "starting".to_owned(),
        State::At(step) => format!("next: {step}"),
        State::Running(step) => format!("running {step}"),
        State::Blocked(step, why) => format!("BLOCKED in {step}: {why}"),
        State::Done => "done".to_owned(),
    }
}

/// The source line of each step, from a guide's `## Where the mechanism is` table: rows
/// `| step | `src/file.rs:LINE` | `call` |`, keyed by the step's name (the first column's
/// first word or words up to a colon or parenthesis).
pub fn where_table(guide: &str) -> Vec<(String, String, String)> {
    let Some(start) = guide.find("## Where the mechanism is") else { return Vec::new() };
    let code = |c: &str| c.trim_matches('`').to_owned();
    (guide[start..].lines().skip(1))
        .take_while(|line| !line.starts_with("## "))
        .map(|line| line.trim().trim_matches('|').split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|cells| cells.len() == 3 && cells[1].starts_with('`'))
        .map(|cells| (cells[0].to_owned(), code(cells[1]), code(cells[2])))
        .collect()
}

/// The row of `table` for `worker`'s step `step`: the first whose first column names the step
/// in backquotes for this worker (`` `lock A` by scientist-2 ``), or for every worker (a row
/// that starts with `` `read` `` and names nobody after it).
pub fn source_of<'a>(
    table: &'a [(String, String, String)],
    step: &str,
    worker: &str,
) -> Option<&'a (String, String, String)> {
    let key = format!("`{step}`");
    let mine = format!("{key} by {worker}");
    table.iter().find(|(what, _, _)| what.contains(&mine)).or_else(|| {
        table.iter().find(|(what, _, _)| {
            what.starts_with(&key) && !what[key.len()..].trim_start().starts_with("by ")
        })
    })
}
