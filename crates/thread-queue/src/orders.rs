//! Part 1: the same items through the three kinds of queue; only the order differs.

use anyhow::Result;
use common::cli::CommonArgs;
use common::predict;
use common::report;
use py_threading::queue::{LifoQueue, PriorityQueue, Queue, QueueError};

/// Takes every item, without blocking, until the queue says `Empty`.
fn drain<T>(get: impl Fn() -> Result<T, QueueError>) -> Vec<T> {
    std::iter::from_fn(|| get().ok()).collect()
}

fn join(items: &[impl ToString]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

pub fn run(common: &CommonArgs) -> Result<()> {
    report::section(
        "1. Queue, LifoQueue, PriorityQueue: the same items, three orders (队列, 堆栈, 优先级队列)",
    );
    let items = [1, 3, 2];

    let fifo = Queue::new(0);
    let lifo = LifoQueue::new(0);
    for i in items {
        fifo.put(i)?;
        lifo.put(i)?;
    }
    let question = format!("LifoQueue: put {} in that order; which comes out first?", join(&items));
    let guess = predict::ask(common, "lifo-first", question, predict::Expect::Count);
    let mut lifo_first = None;
    for (kind, got, rule) in [
        ("Queue", drain(|| fifo.get_nowait()), "first in, first out"),
        ("LifoQueue", drain(|| lifo.get_nowait()), "last in, first out: a stack"),
    ] {
        lifo_first = got.first().copied();
        common::event!("order", { "kind": kind, "put": items, "got": got }, "{:<16} put {} -> get {}  ({rule})",
                format!("{kind}():"),
                join(&items),
                join(&got));
    }

    guess.reveal(
        lifo_first.unwrap_or(0),
        "a LifoQueue is a stack: the last one put is the first got",
    );

    let prioritized = [(2, "p2"), (1, "p1"), (3, "p3")];
    let question = "PriorityQueue: put (2, 'p2'), (1, 'p1'), (3, 'p3'); which comes out first?";
    let guess = predict::ask(
        common,
        "priority-first",
        question,
        predict::Expect::Choice(&["p2", "p1", "p3"]),
    );
    let priority = PriorityQueue::new(0);
    for item in prioritized {
        priority.put(item)?;
    }
    let got: Vec<&str> =
        drain(|| priority.get_nowait()).into_iter().map(|(_, name)| name).collect();
    let put: Vec<String> = prioritized.iter().map(|(p, n)| format!("({p}, '{n}')")).collect();
    common::event!("order", { "kind": "PriorityQueue", "put": prioritized, "got": got }, "PriorityQueue(): put {} -> get {}  (lowest first: tuples compare field by field)",
            put.join(", "),
            join(&got));
    let why = "the lowest priority number is got first (a heap), whatever the order of put";
    guess.reveal(got.first().copied().unwrap_or("none"), why);
    report::say(
        "the three share one mutex and three conditions (not_empty, not_full, all_tasks_done); \
         only the container differs: a deque, a list, a heap (heapq)",
    );
    Ok(())
}
