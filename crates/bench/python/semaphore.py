"""What an acquire+release pair costs, in CPython: threading.Semaphore and
multiprocessing.Semaphore, alone and contended.

The Python side of `make bench`'s `semaphore` suite (the semaphore demo):

  thread_alone    one thread: sem.acquire(); sem.release() on a threading.Semaphore(1)
  thread_two      two threads, each doing as many pairs on one threading.Semaphore(1)
  process_alone   one process: the same on a multiprocessing.Semaphore(1) (a POSIX named
                  semaphore, sem_open)
  process_two     two forked processes, each doing as many pairs on one
                  multiprocessing.Semaphore(1)

The clock starts when the workers are released from a start gate (a Barrier, or an Event for
processes) and stops when all of them are done. Figures are seconds for `pairs` pairs per worker.

Prints one JSON object on stdout:
{"python": "3.11.7", "pairs": N, "cases": {"thread_alone": {"seconds": s, "pairs": N}, ...}}
"""

import json
import multiprocessing
import platform
import threading
import time

import harness


def pairs(sem, n):
    acquire, release = sem.acquire, sem.release
    for _ in range(n):
        acquire()
        release()


def alone(sem, n):
    began = time.perf_counter()
    pairs(sem, n)
    return {"seconds": time.perf_counter() - began, "pairs": n}


def two_threads(n):
    sem = threading.Semaphore(1)
    gate = threading.Barrier(3)

    def worker():
        gate.wait()
        pairs(sem, n)

    workers = [threading.Thread(target=worker) for _ in range(2)]
    return {"seconds": harness.seconds_past_gate(workers, gate), "pairs": 2 * n}


def process_worker(sem, gate, n):
    gate.wait()
    pairs(sem, n)


def two_processes(context, n):
    sem = context.Semaphore(1)
    gate = context.Event()
    workers = [context.Process(target=process_worker, args=(sem, gate, n)) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.05)  # let both reach the gate; not timed
    began = time.perf_counter()
    gate.set()
    for w in workers:
        w.join()
    return {"seconds": time.perf_counter() - began, "pairs": 2 * n}


def main():
    args = harness.flags(__doc__, pairs=100000)
    n = args.pairs
    context = multiprocessing.get_context("fork")
    cases = {
        "thread_alone": alone(threading.Semaphore(1), n),
        "thread_two": two_threads(n),
        "process_alone": alone(context.Semaphore(1), n),
        "process_two": two_processes(context, n),
    }
    print(json.dumps({"python": platform.python_version(), "pairs": n, "cases": cases}))


if __name__ == "__main__":
    main()
