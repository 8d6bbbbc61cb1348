//! Parts 4, 5, 8 and 9: start and join with several children, seed 000's `send_mail` loop, and
//! the order of children after `start`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::process::{Process, Role};
use common::report;
use common::timeline::{Record, Recording, Style};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::starts::{MyProcess, TASK, TaskArgs};
use crate::{Cli, args, child, ms, recorded, secs, sleep_ms, wait_at_exit};

/// Seed 002's four tasks sleep 5, 3, 2 and 1 seconds.
const TASK_SECONDS: [f64; 4] = [5.0, 3.0, 2.0, 1.0];
/// Seed 001: `r1` sleeps 2 seconds per loop, `r2` 2 or 5.
const R1_SECONDS: f64 = 2.0;
const R2_LONG_SECONDS: f64 = 5.0;
/// Sending a mail takes time: mail `i` of `n` takes `MAIL_SECONDS * (n - i) / n`, so the last
/// one, the only one the notes' loop joins, is the quickest.
const MAIL_SECONDS: f64 = 5.0;
/// Work each child of the order part does before it reports (a start-up, like Python's
/// imports): long enough that the scheduler, not the order of `start`, decides who is first.
const ORDER_WORK: Duration = Duration::from_millis(3);

/// The arguments of seed 001's `r1` and `r2`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RArgs {
    label: String,
    loops: usize,
    sleep_ms: u64,
}

/// Seed 001's `r1`/`r2`: print `name ** pid` and sleep, a few times.
pub static R: Role = Role::new("r", r);

fn r(value: Value) -> Result<()> {
    let a: RArgs = args("r", value)?;
    for i in 1..=a.loops {
        common::event!("tick", { "i": i, "of": a.loops }, "{} ** {}", a.label, std::process::id());
        sleep_ms(a.sleep_ms);
    }
    common::event!("done", { "loops": a.loops }, "{} done", a.label);
    Ok(())
}

/// Part 4: seed 001's five examples, each with its own recording (drawn with `--timeline`).
pub fn examples(cli: &Cli, only: Option<u8>) -> Result<()> {
    report::section("4. seed 001's examples of start and join (例子一 to 例子五)");
    for n in 1..=5u8 {
        if only.is_none_or(|o| o == n) {
            example(cli, n)?;
        }
    }
    Ok(())
}

fn example(cli: &Cli, n: u8) -> Result<()> {
    let (name, title, lesson) = match n {
        1 => (
            "例子一",
            "start p1 and p2, join both",
            "with both joins, the parent's end comes after every line of both children",
        ),
        2 => (
            "例子二",
            "no target: the work is the process's own run method",
            "Process::from_run runs MyProcess::run in the child (the notes assign p.run = r)",
        ),
        3 => (
            "例子三",
            "start p1 and p2, join neither",
            "without join the parent's code ends first and the children go on printing",
        ),
        4 => (
            "例子四",
            "p2 sleeps 5 s a loop; join only p1",
            "the parent waits for p1 only; its code ends while p2 goes on",
        ),
        _ => (
            "例子五",
            "start p1, join p1, then start p2",
            "p2 does not even start until p1 has ended: serial, so it takes the sum of both; \
             that is why you start all, then join all (part 5 measures it)",
        ),
    };
    common::event!("example", { "n": n, "title": title }, "{name}: {title}");
    let loops = cli.loops;
    let r1 = ms(cli.common.notes_sleep(R1_SECONDS));
    let r2 = ms(cli.common.notes_sleep(if n >= 4 { R2_LONG_SECONDS } else { R1_SECONDS }));
    let proc1 =
        || child(cli, "process1", &R, RArgs { label: "process1".into(), loops, sleep_ms: r1 });
    let proc2 =
        || child(cli, "process2", &R, RArgs { label: "process2".into(), loops, sleep_ms: r2 });
    let style = Style::new().mark("tick", '*').mark("parent_end", 'E');
    recorded(cli, &format!("{name}: {title}"), &style, || {
        let me = std::process::id();
        common::event!("parent_run", {}, "parent process {me} run...");
        match n {
            1 | 3 | 4 => {
                let (mut p1, mut p2) = (proc1(), proc2());
                p1.start()?;
                p2.start()?;
                if n != 3 {
                    crate::joined(&mut p1)?;
                }
                if n == 1 {
                    crate::joined(&mut p2)?;
                }
            }
            2 => {
                let way_two = |name: &str| {
                    Process::from_run(name, MyProcess { name: name.into(), sleep_ms: 0 })
                        .start_method(cli.common.start_method)
                };
                let (mut p1, mut p2) = (way_two("p1"), way_two("p2"));
                p1.start()?;
                p2.start()?;
                crate::joined(&mut p1)?;
                crate::joined(&mut p2)?;
            }
            _ => {
                let (mut p1, mut p2) = (proc1(), proc2());
                p1.start()?;
                crate::joined(&mut p1)?;
                p2.start()?;
            }
        }
        common::event!("parent_end", {}, "parent process {me} end");
        wait_at_exit()?;
        Ok(())
    })?;
    report::say(lesson);
    Ok(())
}

/// Part 5: seed 002's four tasks, started all then joined all, then started and joined one by
/// one. Prints both wall times and checks that the first is under the sum and the second not.
pub fn tasks(cli: &Cli) -> Result<()> {
    report::section("5. four tasks sleeping 5, 3, 2, 1 (seed 002: join with several children)");
    let sleeps: Vec<Duration> = TASK_SECONDS.iter().map(|s| cli.common.notes_sleep(*s)).collect();
    let longest = sleeps.iter().copied().max().unwrap_or_default();
    let sum: Duration = sleeps.iter().sum();
    let make = |i: usize| {
        let name = format!("task-{}", i + 1);
        child(cli, &name, &TASK, TaskArgs { name: name.clone(), sleep_ms: ms(sleeps[i]) })
    };
    let wall_event = |mode: &str, wall: Duration, text: String| {
        report::event(
            "wall",
            json!({ "mode": mode, "wall_ms": wall.as_secs_f64() * 1e3,
                    "longest_ms": ms(longest), "sum_ms": ms(sum) }),
            text,
        );
    };
    let style = Style::new();
    let question = "tasks sleeping 5, 3, 2, 1 s: start all, then join all: how many seconds in all \
                    (at the notes' speed)?";
    let within = common::predict::Expect::About { within: 0.3 };
    let guess = common::predict::ask(&cli.common, "start-all", question, within);
    let (concurrent, _) = recorded(cli, "start all, then join all", &style, || {
        report::say("for p in p_l: p.start()   then   for p in p_l: p.join()");
        let t = Instant::now();
        let mut all: Vec<Process> = (0..sleeps.len()).map(make).collect();
        for p in &mut all {
            p.start()?;
        }
        for p in &mut all {
            crate::joined(p)?;
        }
        let wall = t.elapsed();
        wall_event(
            "start all, then join all",
            wall,
            format!(
                "start all, then join all: {} (longest task {}, sum {})",
                secs(wall),
                secs(longest),
                secs(sum)
            ),
        );
        Ok(wall)
    })?;
    let notes_secs = concurrent.as_secs_f64() * cli.common.speed;
    guess.reveal(notes_secs, "the four sleep at the same time: the longest task sets the time");
    let (serial, _) = recorded(cli, "start and join each in turn", &style, || {
        report::say("for p in p_l: p.start(); p.join()");
        let t = Instant::now();
        for i in 0..sleeps.len() {
            let mut p = make(i);
            p.start()?;
            crate::joined(&mut p)?;
        }
        let wall = t.elapsed();
        wall_event(
            "start and join each in turn",
            wall,
            format!("start and join each in turn: {} (the sum is {})", secs(wall), secs(sum)),
        );
        Ok(wall)
    })?;
    let holds = concurrent < sum && serial >= sum;
    report::event(
        "verdict",
        json!({ "concurrent_ms": concurrent.as_secs_f64() * 1e3,
                "serial_ms": serial.as_secs_f64() * 1e3, "holds": holds }),
        if holds {
            "start all, then join all takes about the longest task; start and join each takes \
             the sum: start every child before you join any"
                .to_string()
        } else {
            format!(
                "this time the machine was too busy to show it: {} started together against a \
                 sum of {}",
                secs(concurrent),
                secs(sum)
            )
        },
    );
    Ok(())
}

/// The arguments of [`SEND_MAIL`].
#[derive(Debug, Serialize, Deserialize)]
pub struct MailArgs {
    i: usize,
    sleep_ms: u64,
}

/// Seed 000's `send_mail(i)`, with the time sending takes.
pub static SEND_MAIL: Role = Role::new("send-mail", send_mail_child);

fn send_mail_child(value: Value) -> Result<()> {
    let a: MailArgs = args("send-mail", value)?;
    common::event!("sending", { "i": a.i }, "sending mail {}", a.i);
    sleep_ms(a.sleep_ms);
    common::event!("sent", { "i": a.i }, "邮件已发送 {} (mail {} sent)", a.i, a.i);
    Ok(())
}

/// Part 8: the notes' loop appends to the list after the loop, so only the last process is
/// joined and "all sent" comes too early; the fixed loop appends inside it.
pub fn send_mail(cli: &Cli) -> Result<()> {
    report::section("8. the notes' send_mail loop (seed 000 §join方法)");
    let n = cli.mails;
    let mail = |i: usize| {
        let seconds = MAIL_SECONDS * (n - i) as f64 / n as f64;
        let sleep_ms = ms(cli.common.notes_sleep(seconds));
        child(cli, format!("mail-{i}"), &SEND_MAIL, MailArgs { i, sleep_ms })
    };
    let style = Style::new().mark("all_sent", 'A');
    for fixed in [false, true] {
        let version = if fixed { "fixed" } else { "notes" };
        let title = if fixed {
            "the fixed loop: li.append(p) inside the loop"
        } else {
            "the notes' loop: li.append(p) after the loop"
        };
        let guess = (!fixed).then(|| {
            let question = format!(
                "{n} mails, the notes' loop (li.append(p) after the loop, so only the last is \
                 joined): how many mails are sent after \"all sent\" is printed?"
            );
            common::predict::ask(
                &cli.common,
                "late-mails",
                question,
                common::predict::Expect::Count,
            )
        });
        let (joined, records) = recorded(cli, title, &style, || {
            report::say(if fixed {
                "for i in range(n): p = Process(...); p.start(); li.append(p)   # inside the loop"
            } else {
                "for i in range(n): p = Process(...); p.start()\nli.append(p)   # after the loop: \
                 only the last p\nfor p in li: p.join()\nprint('100封邮件已发送')"
            });
            let mut li: Vec<Process> = Vec::new();
            if fixed {
                for i in 0..n {
                    let mut p = mail(i);
                    p.start()?;
                    li.push(p);
                }
            } else {
                let mut last = None;
                for i in 0..n {
                    let mut p = mail(i);
                    p.start()?;
                    last = Some(p);
                }
                li.extend(last); // the notes' `li.append(p)`, one line too far left
            }
            for p in &mut li {
                crate::joined(p)?;
            }
            common::event!("all_sent", { "version": version, "joined": li.len(), "started": n }, "100封邮件已发送 (all mails sent), having joined {} of {n} processes",
                    li.len());
            wait_at_exit()?;
            Ok(li.len())
        })?;
        let late = sent_after(&records, "all_sent");
        common::event!("verdict", { "version": version, "joined": joined, "mails": n,
                    "sent_after_all_sent": late }, "{title}: {late} of {n} mails were sent after \"all sent\" was printed");
        if let Some(guess) = guess {
            guess.reveal(
                late,
                "only the last mail, the quickest, was joined; the others were still sleeping \
                 when the parent printed \"all sent\"",
            );
        }
        if fixed && late != 0 {
            bail!("the fixed loop joined every mail, yet {late} were sent after \"all sent\"");
        }
    }
    report::say(
        "Seed 000's comment args必须是元组 (args must be a tuple) is stricter than CPython: any \
         iterable works (args=[i] passes i, checked on 3.11). The trap is the comma: args=(i) is \
         i itself, not a tuple (TypeError: 'int' object is not iterable), args=(i,) is a tuple \
         of one, and args=('ab') passes 'a' and 'b'. Here a child's arguments are one typed \
         value, so there is no such trap.",
    );
    Ok(())
}

/// How many `sent` records were written after the first `marker` record.
fn sent_after(records: &[Record], marker: &str) -> usize {
    match records.iter().position(|r| r.event == marker) {
        Some(at) => records[at..].iter().filter(|r| r.event == "sent").count(),
        None => 0,
    }
}

/// The arguments of [`HELLO`].
#[derive(Debug, Serialize, Deserialize)]
pub struct HelloArgs {
    round: usize,
    index: usize,
    work_us: u64,
}

/// A child of the order part: a little start-up work, then "hello".
pub static HELLO: Role = Role::new("hello", hello);

fn hello(value: Value) -> Result<()> {
    let a: HelloArgs = args("hello", value)?;
    // Busy work, not a sleep: the child competes for a CPU like a real start-up does.
    let until = Instant::now() + Duration::from_micros(a.work_us);
    let mut spins = 0u64;
    while Instant::now() < until {
        spins = std::hint::black_box(spins + 1);
    }
    common::event!("hello", { "round": a.round, "index": a.index }, "round {}: child {} says hello", a.round, a.index);
    Ok(())
}

/// Part 9: start the same children several times; the order in which they report is the
/// scheduler's, not the order of `start`.
pub fn order(cli: &Cli) -> Result<()> {
    report::section("9. the order after start is not controllable (多进程的执行顺序)");
    report::say(
        "seed 004: 主进程必然先执行 (yes: the parent exists first); 子进程应该在主进程执行后执行 \
         (no: after start() parent and child run in either order, part 3); 一旦子进程启动了 \
         后续的顺序就无法控制了 (yes): the same children, started in the same order, several times",
    );
    let (n, rounds) = (cli.children, cli.rounds);
    let recording = Recording::start()?;
    for round in 1..=rounds {
        let mut kids: Vec<Process> = (0..n)
            .map(|index| {
                let args = HelloArgs { round, index, work_us: ORDER_WORK.as_micros() as u64 };
                child(cli, format!("hello-{index}"), &HELLO, args)
            })
            .collect();
        for p in &mut kids {
            p.start()?;
        }
        for p in &mut kids {
            crate::joined(p)?;
        }
    }
    let records = recording.finish()?;
    let mut orders: Vec<Vec<usize>> = Vec::new();
    for round in 1..=rounds {
        let order: Vec<usize> = records
            .iter()
            .filter(|r| r.event == "hello" && r.data["round"] == round)
            .filter_map(|r| r.data["index"].as_u64().map(|i| i as usize))
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted != (0..n).collect::<Vec<_>>() {
            bail!("round {round}: expected each of {n} children to report once, got {order:?}");
        }
        let shown: Vec<String> = order.iter().map(usize::to_string).collect();
        common::event!("order", { "round": round, "order": order }, "round {round}: {}", shown.join(" "));
        orders.push(order);
    }
    let mut distinct = orders.clone();
    distinct.sort();
    distinct.dedup();
    let differed = distinct.len() > 1;
    report::event(
        "orders",
        json!({ "rounds": rounds, "children": n, "distinct": distinct.len(),
                "differed": differed }),
        if differed {
            format!(
                "the same start gave {} different orders in {rounds} rounds: once started, the \
                 children's order is the scheduler's",
                distinct.len()
            )
        } else {
            format!(
                "this time all {rounds} rounds came out in the same order; nothing promises it \
                 (run it again, with more --children, or with --start-method spawn)"
            )
        },
    );
    Ok(())
}
