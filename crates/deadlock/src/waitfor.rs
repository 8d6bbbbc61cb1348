//! waitfor — the wait-for graph of a deadlock: a table of who holds what and waits for what,
//! and the cycle that closes it.
//!
//! A thread that waits for a lock points at the thread holding it. Threads that point at each
//! other in a ring wait for ever: that ring is the deadlock (死锁). With two scientists:
//!
//! ```text
//! scientist-1 --fork--> scientist-2 --noodles--> scientist-1
//! ```
//!
//! reads "scientist-1 waits for the fork, which scientist-2 holds; scientist-2 waits for the
//! noodles, which scientist-1 holds".

use serde::Serialize;

/// One thread (or process) of the graph: what it holds and what it waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Waiter {
    /// Its name (`scientist-1`, `philosopher-3`, `locker-2`).
    pub name: String,
    /// Its kernel thread id (or pid, for a process); 0 when unknown.
    pub tid: i32,
    /// The locks it holds, in the order it took them.
    pub holds: Vec<String>,
    /// The lock it is waiting for, if any.
    pub waits_for: Option<String>,
}

/// One edge of a cycle: `waiter` waits for `lock`, which `holder` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub waiter: String,
    pub lock: String,
    pub holder: String,
}

/// Who holds `lock`, if anyone.
pub fn holder<'a>(rows: &'a [Waiter], lock: &str) -> Option<&'a Waiter> {
    rows.iter().find(|w| w.holds.iter().any(|h| h == lock))
}

/// The first cycle of the wait-for graph, as edges in order (the last edge's holder is the
/// first edge's waiter), or `None` if no thread waits in a ring.
pub fn cycle(rows: &[Waiter]) -> Option<Vec<Edge>> {
    for start in 0..rows.len() {
        // Follow "waits for a lock held by" from `start`; a thread waits for one lock at most,
        // so the path is a chain, and it either ends or comes back to a thread already on it.
        let mut path: Vec<usize> = vec![start];
        loop {
            let at = &rows[*path.last().expect("the path is never empty")];
            let Some(lock) = &at.waits_for else { break };
            let Some(next) = rows.iter().position(|w| w.holds.contains(lock)) else { break };
            if let Some(first) = path.iter().position(|&p| p == next) {
                let ring = &path[first..];
                let edges = ring
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        let holder = ring[(i + 1) % ring.len()];
                        Edge {
                            waiter: rows[p].name.clone(),
                            lock: rows[p].waits_for.clone().unwrap_or_default(),
                            holder: rows[holder].name.clone(),
                        }
                    })
                    .collect();
                return Some(edges);
            }
            path.push(next);
        }
    }
    None
}

/// `scientist-1 --fork--> scientist-2 --noodles--> scientist-1`.
pub fn cycle_text(edges: &[Edge]) -> String {
    let Some(first) = edges.first() else { return String::new() };
    let mut text = first.waiter.clone();
    for edge in edges {
        text.push_str(&format!(" --{}--> {}", edge.lock, edge.holder));
    }
    text
}

/// The table: one row per thread (`what` heads the names, `id` the ids), what it holds, what
/// it waits for, and who holds that.
pub fn table(rows: &[Waiter], what: &str, id: &str) -> String {
    let width = rows.iter().map(|w| w.name.len()).max().unwrap_or(0).max(what.len());
    let mut text = format!("  {what:<width$}  {id:>7}  {:<12}  waits for", "holds");
    for w in rows {
        let holds = if w.holds.is_empty() { "-".to_string() } else { w.holds.join(", ") };
        let waits = match &w.waits_for {
            Some(lock) => match holder(rows, lock) {
                Some(h) => format!("{lock} (held by {})", h.name),
                None => lock.clone(),
            },
            None => "-".to_string(),
        };
        text.push_str(&format!("\n  {:<width$}  {:>7}  {holds:<12}  {waits}", w.name, w.tid));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, holds: &[&str], waits: Option<&str>) -> Waiter {
        Waiter {
            name: name.into(),
            tid: 0,
            holds: holds.iter().map(|h| h.to_string()).collect(),
            waits_for: waits.map(String::from),
        }
    }

    #[test]
    fn two_threads_in_opposite_orders_make_a_ring_of_two() {
        let rows = [
            w("scientist-1", &["noodles"], Some("fork")),
            w("scientist-2", &["fork"], Some("noodles")),
        ];
        let edges = cycle(&rows).unwrap();
        assert_eq!(edges.len(), 2);
        assert_eq!(
            cycle_text(&edges),
            "scientist-1 --fork--> scientist-2 --noodles--> scientist-1"
        );
        assert!(table(&rows, "thread", "tid").contains("fork (held by scientist-2)"));
    }

    #[test]
    fn a_chain_that_ends_at_a_running_thread_is_no_deadlock() {
        let rows = [w("a", &["x"], Some("y")), w("b", &["y"], None), w("c", &[], Some("x"))];
        assert_eq!(cycle(&rows), None);
    }

    #[test]
    fn a_thread_waiting_on_a_ring_is_not_part_of_it() {
        let rows = [
            w("outsider", &[], Some("fork-1")),
            w("p1", &["fork-1"], Some("fork-2")),
            w("p2", &["fork-2"], Some("fork-3")),
            w("p3", &["fork-3"], Some("fork-1")),
        ];
        let edges = cycle(&rows).unwrap();
        assert_eq!(edges.len(), 3);
        assert!(edges.iter().all(|e| e.waiter != "outsider"));
        assert_eq!(edges[0].waiter, "p1");
    }

    #[test]
    fn a_thread_relocking_its_own_lock_is_a_ring_of_one() {
        let rows = [w("relocker", &["m"], Some("m"))];
        assert_eq!(cycle_text(&cycle(&rows).unwrap()), "relocker --m--> relocker");
    }
}
