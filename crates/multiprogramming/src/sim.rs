//! The prediction: OSTEP's `process-run.py` rules, tick by tick, so that a learner can set our
//! table beside the homework's (`process-run.py -c -p`) and find them equal.
//!
//! The rules, as the simulator has them (and as this port keeps them, line for line):
//! - Every instruction takes one tick of the CPU: `cpu`, the `io` that starts an IO, and the
//!   `io_done` that handles its completion (an `i` in a program is `io` then `io_done`).
//! - An IO started at tick `t` ends at the start of tick `t + io_length + 1`: the job is
//!   `BLOCKED` for `io_length` ticks, and the tick where it ends is marked `*`.
//! - `SWITCH_ON_IO`: a job that starts an IO or ends gives the CPU to the next `READY` job
//!   after it (by job number, wrapping round). `SWITCH_ON_END`: only ending does; the CPU idles
//!   through every IO (the batch monitor).
//! - `IO_RUN_LATER`: a job whose IO ends is `READY` and waits its turn (it runs at once only
//!   when nothing else can). `IO_RUN_IMMEDIATE`: it takes the CPU at once, and the job it
//!   preempts is `READY`.
//! - A running job is never preempted otherwise: there is no time slice.

use std::collections::VecDeque;
use std::fmt::Write as _;

use serde::Serialize;

/// One instruction of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// One tick of computing.
    Cpu,
    /// One tick to start an IO; the job then blocks for `io_length` ticks.
    Io,
    /// One tick to handle the end of an IO.
    IoDone,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Cpu => "cpu",
            Op::Io => "io",
            Op::IoDone => "io_done",
        }
    }
}

/// When the CPU passes to another job (`-S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Switch {
    /// When the running job starts an IO or ends (多道: the CPU idles only while all jobs wait).
    #[value(name = "on-io", alias = "SWITCH_ON_IO")]
    OnIo,
    /// Only when the running job ends (批处理: the CPU idles through every IO).
    #[value(name = "on-end", alias = "SWITCH_ON_END")]
    OnEnd,
}

/// What a job whose IO has ended does (`-I`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoDone {
    /// It is ready and waits for its turn.
    #[value(name = "later", alias = "IO_RUN_LATER")]
    Later,
    /// It takes the CPU at once, preempting the running job.
    #[value(name = "immediate", alias = "IO_RUN_IMMEDIATE")]
    Immediate,
}

/// A job's state in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    Running,
    Ready,
    Blocked,
    Done,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "RUNNING",
            State::Ready => "READY",
            State::Blocked => "BLOCKED",
            State::Done => "DONE",
        }
    }
}

/// One job's cell in a row: the instruction it ran this tick, or its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    Run(Op),
    Is(State),
}

impl Cell {
    /// `RUN:cpu`, `READY`, ... as `process-run.py` prints it.
    pub fn text(self) -> String {
        match self {
            Cell::Run(op) => format!("RUN:{}", op.name()),
            Cell::Is(state) => state.name().to_string(),
        }
    }
}

/// One tick of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub tick: u64,
    /// An IO ended at the start of this tick (`*`).
    pub io_ended: bool,
    pub cells: Vec<Cell>,
    /// An instruction ran on the CPU this tick.
    pub cpu: bool,
    /// IOs in flight during this tick.
    pub ios: usize,
}

/// The whole prediction: the rows and `process-run.py`'s three stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prediction {
    pub rows: Vec<Row>,
    pub total: u64,
    pub cpu_busy: u64,
    pub io_busy: u64,
}

impl Prediction {
    pub fn cpu_percent(&self) -> f64 {
        percent(self.cpu_busy, self.total)
    }

    pub fn io_percent(&self) -> f64 {
        percent(self.io_busy, self.total)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

/// The scheduler of `process-run.py`, one field per piece of its state.
struct Machine {
    code: Vec<VecDeque<Op>>,
    state: Vec<State>,
    io_finish: Vec<Vec<u64>>,
    curr: usize,
}

impl Machine {
    fn runnable(&self) -> usize {
        self.state.iter().filter(|s| matches!(s, State::Ready | State::Running)).count()
    }

    /// `next_proc(pid)`: that job runs.
    fn run(&mut self, pid: usize) {
        self.curr = pid;
        if self.state[pid] == State::Ready {
            self.state[pid] = State::Running;
        }
    }

    /// `next_proc()`: the first ready job after the current one, wrapping round; if none is
    /// ready the current job stays current (and the CPU idles).
    fn next(&mut self) {
        let n = self.state.len();
        let after = (self.curr + 1..n).chain(0..=self.curr);
        if let Some(pid) = after.into_iter().find(|&p| self.state[p] == State::Ready) {
            self.run(pid);
        }
    }

    /// `check_if_done()`: a running job with no instruction left is done; the next one runs.
    fn check_if_done(&mut self) {
        if self.code[self.curr].is_empty() && self.state[self.curr] == State::Running {
            self.state[self.curr] = State::Done;
            self.next();
        }
    }
}

/// Runs `jobs` under `process-run.py`'s rules and returns its table.
pub fn simulate(jobs: &[Vec<Op>], switch: Switch, io_done: IoDone, io_length: u64) -> Prediction {
    let n = jobs.len();
    let mut rows = Vec::new();
    let (mut tick, mut cpu_busy, mut io_busy) = (0u64, 0u64, 0u64);
    if n == 0 {
        return Prediction { rows, total: 0, cpu_busy: 0, io_busy: 0 };
    }
    let mut m = Machine {
        code: jobs.iter().map(|j| j.iter().copied().collect()).collect(),
        state: vec![State::Ready; n],
        io_finish: vec![Vec::new(); n],
        curr: 0,
    };
    m.run(0);
    while m.state.iter().any(|s| *s != State::Done) {
        tick += 1;
        // IOs that end at the start of this tick.
        let mut io_ended = false;
        for pid in 0..n {
            if !m.io_finish[pid].contains(&tick) {
                continue;
            }
            io_ended = true;
            m.state[pid] = State::Ready;
            match io_done {
                IoDone::Immediate => {
                    if m.curr != pid && m.state[m.curr] == State::Running {
                        m.state[m.curr] = State::Ready;
                    }
                    m.run(pid);
                }
                IoDone::Later => {
                    // Under SWITCH_ON_END the job that waited for its IO is the one to go on.
                    if switch == Switch::OnEnd && m.runnable() > 1 {
                        m.run(pid);
                    }
                    // Nothing else can run: it runs.
                    if m.runnable() == 1 {
                        m.run(pid);
                    }
                }
            }
            m.check_if_done();
        }
        // The current job runs one instruction, if it is running and has one.
        let curr = m.curr;
        let ran = if m.state[curr] == State::Running { m.code[curr].pop_front() } else { None };
        cpu_busy += u64::from(ran.is_some());
        let cells = (0..n)
            .map(|pid| match ran {
                Some(op) if pid == curr => Cell::Run(op),
                _ => Cell::Is(m.state[pid]),
            })
            .collect();
        let ios = m.io_finish.iter().flatten().filter(|&&t| t > tick).count();
        io_busy += u64::from(ios > 0);
        rows.push(Row { tick, io_ended, cells, cpu: ran.is_some(), ios });
        // An IO was started: the job blocks until its end, `io_length + 1` ticks later.
        if ran == Some(Op::Io) {
            m.state[curr] = State::Blocked;
            m.io_finish[curr].push(tick + io_length + 1);
            if switch == Switch::OnIo {
                m.next();
            }
        }
        m.check_if_done();
    }
    Prediction { rows, total: tick, cpu_busy, io_busy }
}

/// The table in `process-run.py -c -p`'s own layout, character for character: a header, one
/// line per tick, then the three `Stats:` lines.
pub fn table(p: &Prediction, jobs: usize) -> String {
    let mut out = String::from("Time");
    for pid in 0..jobs {
        let _ = write!(out, "{:>14}", format!("PID:{pid:>2}"));
    }
    let _ = writeln!(out, "{:>14}{:>14}", "CPU", "IOs");
    for row in &p.rows {
        let _ = write!(out, "{:>3}{}", row.tick, if row.io_ended { '*' } else { ' ' });
        for cell in &row.cells {
            let _ = write!(out, "{:>14}", cell.text());
        }
        let _ = write!(out, "{:>14}", if row.cpu { "1" } else { " " });
        if row.ios > 0 {
            let _ = writeln!(out, "{:>14}", row.ios);
        } else {
            let _ = writeln!(out, "{:>10}", " ");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Stats: Total Time {}", p.total);
    let _ = writeln!(out, "Stats: CPU Busy {} ({:.2}%)", p.cpu_busy, p.cpu_percent());
    let _ = write!(out, "Stats: IO Busy  {} ({:.2}%)", p.io_busy, p.io_percent());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::parse_program;

    fn predict(program: &str, switch: Switch, io_done: IoDone, io_length: u64) -> Prediction {
        let jobs = parse_program(program).unwrap();
        simulate(&jobs, switch, io_done, io_length)
    }

    /// The rows of a table without the trailing blanks `process-run.py` leaves.
    fn rows(p: &Prediction, jobs: usize) -> Vec<String> {
        table(p, jobs).lines().map(|l| l.trim_end().to_string()).collect()
    }

    /// Worked by hand: under SWITCH_ON_END job 1 waits through job 0's IO: ticks 2 and 3 are
    /// BLOCKED with the CPU idle, job 0 finishes at 4, job 1 runs 5 and 6.
    #[test]
    fn switch_on_end_idles_the_cpu_through_every_io() {
        let p = predict("i:c2", Switch::OnEnd, IoDone::Later, 2);
        assert_eq!(
            rows(&p, 2),
            [
                "Time        PID: 0        PID: 1           CPU           IOs",
                "  1         RUN:io         READY             1",
                "  2        BLOCKED         READY                           1",
                "  3        BLOCKED         READY                           1",
                "  4*   RUN:io_done         READY             1",
                "  5           DONE       RUN:cpu             1",
                "  6           DONE       RUN:cpu             1",
                "",
                "Stats: Total Time 6",
                "Stats: CPU Busy 4 (66.67%)",
                "Stats: IO Busy  2 (33.33%)",
            ]
        );
    }

    /// Worked by hand: job 0's IO (started at 1, length 1) ends at the start of tick 3. With
    /// IO_RUN_LATER job 1 keeps the CPU to its end (tick 5) and job 0's io_done waits until 6;
    /// with IO_RUN_IMMEDIATE it runs at 3 and job 1 is READY then.
    #[test]
    fn io_run_immediate_preempts_the_running_job_and_later_does_not() {
        let later = predict("i:c4", Switch::OnIo, IoDone::Later, 1);
        let cells = |p: &Prediction| -> Vec<String> {
            p.rows.iter().map(|r| format!("{} {}", r.cells[0].text(), r.cells[1].text())).collect()
        };
        assert_eq!(
            cells(&later),
            [
                "RUN:io READY",
                "BLOCKED RUN:cpu",
                "READY RUN:cpu",
                "READY RUN:cpu",
                "READY RUN:cpu",
                "RUN:io_done DONE",
            ]
        );
        let now = predict("i:c4", Switch::OnIo, IoDone::Immediate, 1);
        assert_eq!(
            cells(&now),
            [
                "RUN:io READY",
                "BLOCKED RUN:cpu",
                "RUN:io_done READY",
                "DONE RUN:cpu",
                "DONE RUN:cpu",
                "DONE RUN:cpu",
            ]
        );
        assert!(now.rows[2].io_ended && later.rows[2].io_ended);
        assert_eq!((later.total, now.total), (6, 6));
    }

    /// Worked by hand: job 0's IO (tick 1, length 1) ends at the start of tick 3, the tick
    /// where job 1 runs its last instruction: tick 3 is marked *, job 0 waits READY (IO_RUN_LATER)
    /// and gets the CPU at once when job 1 ends.
    #[test]
    fn a_job_ending_on_the_tick_anothers_io_ends_hands_it_the_cpu_at_once() {
        let p = predict("i:c2", Switch::OnIo, IoDone::Later, 1);
        assert_eq!(
            rows(&p, 2),
            [
                "Time        PID: 0        PID: 1           CPU           IOs",
                "  1         RUN:io         READY             1",
                "  2        BLOCKED       RUN:cpu             1             1",
                "  3*         READY       RUN:cpu             1",
                "  4    RUN:io_done          DONE             1",
                "",
                "Stats: Total Time 4",
                "Stats: CPU Busy 4 (100.00%)",
                "Stats: IO Busy  1 (25.00%)",
            ]
        );
    }

    /// Worked by hand: job 1 starts its IO on the tick job 0's IO ends (3*); job 0's io_done
    /// runs while job 1 is BLOCKED, and job 1's IO ends (5*) with job 0 DONE, so it runs at once
    /// (the only runnable job) although IO_RUN_LATER.
    #[test]
    fn an_io_that_ends_with_nothing_else_runnable_runs_at_once_under_io_run_later() {
        let p = predict("i:c1,i", Switch::OnIo, IoDone::Later, 1);
        assert_eq!(
            rows(&p, 2),
            [
                "Time        PID: 0        PID: 1           CPU           IOs",
                "  1         RUN:io         READY             1",
                "  2        BLOCKED       RUN:cpu             1             1",
                "  3*         READY        RUN:io             1",
                "  4    RUN:io_done       BLOCKED             1             1",
                "  5*          DONE   RUN:io_done             1",
                "",
                "Stats: Total Time 5",
                "Stats: CPU Busy 5 (100.00%)",
                "Stats: IO Busy  2 (40.00%)",
            ]
        );
    }

    /// Worked by hand: with -L 0 an IO started at tick t ends at the start of t + 1: no
    /// BLOCKED tick, nothing in flight, IO Busy 0.
    #[test]
    fn io_length_zero_ends_an_io_on_the_next_tick_with_no_blocked_tick() {
        let p = predict("i,c1:c1", Switch::OnIo, IoDone::Later, 0);
        assert_eq!(
            rows(&p, 2),
            [
                "Time        PID: 0        PID: 1           CPU           IOs",
                "  1         RUN:io         READY             1",
                "  2*         READY       RUN:cpu             1",
                "  3    RUN:io_done          DONE             1",
                "  4        RUN:cpu          DONE             1",
                "",
                "Stats: Total Time 4",
                "Stats: CPU Busy 4 (100.00%)",
                "Stats: IO Busy  0 (0.00%)",
            ]
        );
    }

    /// Worked by hand: the next job is the first READY one *after* the current, wrapping round:
    /// job 1 blocks at tick 2, so job 2 runs at 3, and job 1's io_done at 4.
    #[test]
    fn the_next_ready_job_is_the_one_after_the_current_wrapping_round() {
        let p = predict("c1:i:c1", Switch::OnIo, IoDone::Later, 1);
        let cpu_job: Vec<Option<usize>> =
            p.rows.iter().map(|r| r.cells.iter().position(|c| matches!(c, Cell::Run(_)))).collect();
        assert_eq!(cpu_job, [Some(0), Some(1), Some(2), Some(1)]);
        assert!(p.rows[3].io_ended);
    }

    /// Worked by hand: an empty job (c0) is RUNNING for one tick with the CPU idle, then DONE,
    /// as process-run.py shows it.
    #[test]
    fn an_empty_job_idles_one_tick_running() {
        let p = predict("c1:c0", Switch::OnIo, IoDone::Later, 1);
        assert_eq!(
            rows(&p, 2)[1..3],
            ["  1        RUN:cpu         READY             1", "  2           DONE       RUNNING"]
        );
        assert_eq!((p.total, p.cpu_busy), (2, 1));
    }
}
