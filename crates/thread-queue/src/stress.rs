//! Producers and consumers pass many items through one queue; every item is checked: nothing
//! lost, nothing taken twice, and each producer's items come out in the order it put them.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::{Result, bail};
use common::report;
use common::threads::named;
use py_threading::queue::Queue;

use crate::Cli;

pub fn run(cli: &Cli, items: usize, maxsize: usize) -> Result<()> {
    report::section(format!(
        "{} producers -> {} consumers through Queue({maxsize}), {items} items each",
        cli.producers, cli.consumers
    ));
    let q: Queue<(usize, usize)> = Queue::new(maxsize);
    let taken = Mutex::new(Vec::new());
    std::thread::scope(|s| -> Result<()> {
        let mut producers = Vec::new();
        for p in 0..cli.producers {
            let q = &q;
            producers.push(named::spawn_scoped(s, &format!("producer-{}", p + 1), move || {
                (0..items).try_for_each(|i| q.put((p, i)))
            })?);
        }
        for c in 0..cli.consumers {
            let (q, taken) = (&q, &taken);
            named::spawn_scoped(s, &format!("consumer-{}", c + 1), move || {
                let mut mine = Vec::new();
                while let Ok(item) = q.get() {
                    mine.push(item);
                    let _ = q.task_done();
                }
                taken.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
            })?;
        }
        for producer in producers {
            if producer.join().map_err(|_| anyhow::anyhow!("a producer panicked"))?.is_err() {
                bail!("a put was refused");
            }
        }
        q.join();
        q.shutdown(false);
        Ok(())
    })?;
    let taken = taken.into_inner().unwrap_or_else(|e| e.into_inner());
    let total: usize = taken.iter().map(Vec::len).sum();
    let distinct: HashSet<(usize, usize)> = taken.iter().flatten().copied().collect();
    let out_of_order = taken
        .iter()
        .map(|mine| {
            (0..cli.producers)
                .map(|p| {
                    let seq: Vec<usize> = mine.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
                    seq.windows(2).filter(|w| w[0] >= w[1]).count()
                })
                .sum::<usize>()
        })
        .sum::<usize>();
    let expected = cli.producers * items;
    common::event!("stress", { "expected": expected, "taken": total, "distinct": distinct.len(),
                "out_of_order": out_of_order, "per_consumer": taken.iter().map(Vec::len).collect::<Vec<_>>() }, "{total} items taken of {expected}, {} distinct, {out_of_order} out of their producer's order",
            distinct.len());
    if total != expected || distinct.len() != expected || out_of_order != 0 {
        bail!("items lost, repeated or reordered");
    }
    Ok(())
}
