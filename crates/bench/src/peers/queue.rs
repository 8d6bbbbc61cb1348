//! queue-peers — messages per second through `py_multiprocessing::queue::Queue` between processes beside
//! ipc-channel (Servo's channel between processes), on the work of the queue suite: small
//! messages `(producer, number)`, forked children waiting at a start gate, one `None` per
//! consumer once the producers are joined, every message counted.
//!
//! ipc-channel is many-to-one: an `IpcSender` can be cloned into many processes, but an
//! `IpcReceiver` has one owner (it is not `Clone`). So 1 → 1 is the same work on both sides,
//! and 3 → 2 measures the nearest thing it does: one channel per consumer, each producer
//! dealing its messages to the two in turn (message `i` to consumer `i % 2`). That split is
//! fixed when the message is sent, where our two consumers take whatever comes next from one
//! queue, so a slow consumer's backlog waits for it. ipc-channel has no `task_done`/`join`
//! either: the JoinableQueue figure has no peer row.


use anyhow::{Context, Result};
use common::process::Process;
use py_multiprocessing::queue::Queue;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};

use super::{peers_outcome, target_the_fastest};
use crate::measure::{Better, Outcome, Row, Settings, median};
use crate::queue::{self, MESSAGES, many};

type Item = Option<(u32, u32)>;

/// `producers` → `consumers` over ipc-channel (one channel per consumer, messages dealt in
/// turn); seconds from the gate's opening to the consumers' reports.
fn ipc_many(producers: usize, consumers: usize, messages: usize) -> Result<f64> {
    let mut senders: Vec<IpcSender<Item>> = Vec::new();
    let mut receivers: Vec<IpcReceiver<Item>> = Vec::new();
    for _ in 0..consumers {
        let (tx, rx) = ipc::channel::<Item>()?;
        senders.push(tx);
        receivers.push(rx);
    }
    let (done_tx, done_rx) = ipc::channel::<u64>()?;
    // The same start gate as the queue suite's: the children are up before the clock starts.
    let gate: Queue<()> = Queue::new(0)?;
    let per = messages / producers;
    let mut children = Vec::new();
    for (n, rx) in receivers.into_iter().enumerate() {
        let done = done_tx.clone();
        children.push(Process::from_fn(format!("bench-ipc-consumer-{n}"), move || {
            let mut received = 0u64;
            while rx.recv().context("recv")?.is_some() {
                received += 1;
            }
            done.send(received)?;
            Ok(())
        }));
    }
    for k in 0..producers {
        let (senders, gate) = (senders.clone(), gate.clone());
        children.push(Process::from_fn(format!("bench-ipc-producer-{k}"), move || {
            gate.get()?;
            for i in 0..per {
                senders[i % senders.len()].send(Some((k as u32, i as u32)))?;
            }
            Ok(())
        }));
    }
    let end = || senders.iter().try_for_each(|tx| Ok(tx.send(None)?));
    let count = || done_rx.recv().context("a consumer's count");
    queue::timed(&mut children, consumers, &gate, (per * producers) as u64, end, count)
}

/// The shapes: label, producers, consumers.
const SHAPES: [(&str, usize, usize); 2] = [
    ("1 -> 1: vs ipc-channel", 1, 1),
    ("3 -> 2: vs ipc-channel, a channel per consumer (nearest)", 3, 2),
];

pub fn run(settings: &Settings) -> Result<Outcome> {
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    let mut peer: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    for _ in 0..settings.runs {
        for (s, (_, producers, consumers)) in SHAPES.iter().enumerate() {
            let n = MESSAGES - MESSAGES % producers;
            ours[s].push(n as f64 / many(*producers, *consumers, n)?);
            peer[s].push(n as f64 / ipc_many(*producers, *consumers, n)?);
        }
    }
    let mut rows: Vec<Row> = SHAPES
        .iter()
        .enumerate()
        .map(|(s, (figure, ..))| Row {
            figure: figure.to_string(),
            unit: "msg/s",
            better: Better::Higher,
            rust: median(&ours[s]),
            python: Some(median(&peer[s])),
            target: None,
        })
        .collect();
    // One peer per shape: each row is its shape's fastest.
    for row in &mut rows {
        target_the_fastest(std::slice::from_mut(row));
    }
    Ok(peers_outcome(
        rows,
        vec![
            format!(
                "each run: {MESSAGES} small messages (producer, number) between forked children; \
                 ours through py_multiprocessing::queue (a pipe, robust mutexes and futex counters in shared \
                 memory), the peer through ipc-channel (a Unix SOCK_SEQPACKET socket per \
                 channel, bincode; built here as version 0.20)"
            ),
            "what ipc-channel does that ours does not: it sends each message as one datagram \
             (sendmsg) that one recvmsg takes whole, so no lock and no counter around it, and it \
             can carry channels and shared memory across processes. Ours keeps Python's \
             multiprocessing.Queue: any number of consumers take from one queue (a robust mutex \
             in shared memory keeps two from reading the same frame, and a killed holder gives \
             it back), a maxsize that blocks put, qsize, and JoinableQueue's task_done/join; \
             ipc-channel has one receiver per channel and none of these"
                .to_string(),
        ],
    ))
}
