"""Items per second through queue.Queue between threads, in CPython.

The Python side of `make bench`'s `thread-queue` suite (the thread-queue demo). Small items, a
tuple (producer, number), through an unbounded queue.Queue():

  1to1   1 producer thread -> 1 consumer thread; the consumer stops at a None sentinel
  3to2   3 producers -> 2 consumers, one None per consumer once the producers are joined

The clock runs from the threads' start to the last consumer's end. Prints one JSON object:
{"python": "3.11.7", "items": N, "cases": {"1to1": {"seconds": s, "received": N}, "3to2": ...}}
"""

import json
import platform
import queue
import threading
import time

import harness


def many(producers, consumers, items):
    q = queue.Queue()
    per = items // producers
    counts = []

    def producer(k):
        for i in range(per):
            q.put((k, i))

    def consumer():
        n = 0
        while True:
            if q.get() is None:
                break
            n += 1
        counts.append(n)

    cs = [threading.Thread(target=consumer) for _ in range(consumers)]
    ps = [threading.Thread(target=producer, args=(k,)) for k in range(producers)]
    began = time.perf_counter()
    for t in cs + ps:
        t.start()
    for p in ps:
        p.join()
    for _ in cs:
        q.put(None)
    for c in cs:
        c.join()
    return {"seconds": time.perf_counter() - began, "received": sum(counts)}


def main():
    args = harness.flags(__doc__, items=100_000)
    n3 = args.items - args.items % 3
    cases = {"1to1": many(1, 1, args.items), "3to2": many(3, 2, n3)}
    print(json.dumps({"python": platform.python_version(), "items": args.items, "cases": cases}))


if __name__ == "__main__":
    main()
