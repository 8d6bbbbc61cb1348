"""Messages per second through multiprocessing.Queue and JoinableQueue, in CPython.

The Python side of `make bench`'s `queue` suite (the joinable-queue demo). Small messages, a
tuple (producer, number), with the fork start method:

  1to1      1 producer -> 1 consumer through a Queue(); the consumer stops at a None sentinel
  3to2      3 producers -> 2 consumers, one None per consumer once the producers are joined
  joinable  the main process puts every message into a JoinableQueue(), one daemonic consumer
            calls get() and task_done() for each, and the main process join()s the queue

The clock starts when the producers are released from a start gate (a multiprocessing.Event;
the children are already started and waiting) and stops when the consumers have reported their
counts (1to1, 3to2) or when join() returns (joinable).

Prints one JSON object on stdout:
{"python": "3.11.7", "messages": N,
 "cases": {"1to1": {"seconds": s, "received": N}, "3to2": {...}, "joinable": {...}}}
"""

import json
import multiprocessing
import platform
import time

import harness


def producer(q, k, count, gate):
    gate.wait()
    for i in range(count):
        q.put((k, i))


def consumer(q, done):
    n = 0
    while True:
        item = q.get()
        if item is None:
            break
        n += 1
    done.put(n)


def joinable_consumer(q):
    while True:
        q.get()
        q.task_done()


def many(context, producers, consumers, messages):
    q = context.Queue()
    done = context.Queue()
    gate = context.Event()
    cs = [context.Process(target=consumer, args=(q, done)) for _ in range(consumers)]
    per = messages // producers
    ps = [context.Process(target=producer, args=(q, k, per, gate)) for k in range(producers)]
    for p in cs + ps:
        p.start()
    began = time.perf_counter()
    gate.set()
    for p in ps:
        p.join()
    for _ in cs:
        q.put(None)
    received = sum(done.get() for _ in cs)
    seconds = time.perf_counter() - began
    for c in cs:
        c.join()
    return {"seconds": seconds, "received": received}


def joinable(context, messages):
    q = context.JoinableQueue()
    c = context.Process(target=joinable_consumer, args=(q,), daemon=True)
    c.start()
    began = time.perf_counter()
    for i in range(messages):
        q.put((0, i))
    q.join()
    seconds = time.perf_counter() - began
    c.terminate()
    c.join()
    return {"seconds": seconds, "received": messages}


def main():
    args = harness.flags(__doc__, messages=100000)
    context = multiprocessing.get_context("fork")
    n = args.messages
    cases = {
        "1to1": many(context, 1, 1, n),
        "3to2": many(context, 3, 2, n - n % 3),
        "joinable": joinable(context, n),
    }
    print(json.dumps({"python": platform.python_version(), "messages": n, "cases": cases}))


if __name__ == "__main__":
    main()
