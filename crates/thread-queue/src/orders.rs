//! Part 1: the same items through the three kinds of queue; only the order differs.

use anyhow::Result;
use common::report;
use common::threads::queue::{LifoQueue, PriorityQueue, Queue, QueueError};
use serde_json::json;

/// Takes every item, without blocking, until the queue says `Empty`.
fn drain<T>(get: impl Fn() -> Result<T, QueueError>) -> Vec<T> {
    std::iter::from_fn(|| get().ok()).collect()
}

fn join(items: &[impl ToString]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

pub fn run() -> Result<()> {
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
    for (kind, got, rule) in [
        ("Queue", drain(|| fifo.get_nowait()), "first in, first out"),
        ("LifoQueue", drain(|| lifo.get_nowait()), "last in, first out: a stack"),
    ] {
        report::event(
            "order",
            json!({ "kind": kind, "put": items, "got": got }),
            format!(
                "{:<16} put {} -> get {}  ({rule})",
                format!("{kind}():"),
                join(&items),
                join(&got)
            ),
        );
    }

    let prioritized = [(2, "p2"), (1, "p1"), (3, "p3")];
    let priority = PriorityQueue::new(0);
    for item in prioritized {
        priority.put(item)?;
    }
    let got: Vec<&str> =
        drain(|| priority.get_nowait()).into_iter().map(|(_, name)| name).collect();
    let put: Vec<String> = prioritized.iter().map(|(p, n)| format!("({p}, '{n}')")).collect();
    report::event(
        "order",
        json!({ "kind": "PriorityQueue", "put": prioritized, "got": got }),
        format!(
            "PriorityQueue(): put {} -> get {}  (lowest first: tuples compare field by field)",
            put.join(", "),
            join(&got)
        ),
    );
    report::say(
        "the three share one mutex and three conditions (not_empty, not_full, all_tasks_done); \
         only the container differs: a deque, a list, a heap (heapq)",
    );
    Ok(())
}
