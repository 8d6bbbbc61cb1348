"""Seed 001's balance loop in CPython threads, and thread vs process switches.

The Python side of `make bench`'s `threads` suite (the threads demo). Two threads,
change_it(5) and change_it(8), CALLS calls each, released together by a barrier; the clock runs
from the barrier to the last join:

  nolock          the notes' loop without the lock: balance = balance + n; balance = balance - n;
                  changes = changes + 1 (the tally that counts lost updates)
  lock            the notes' loop: lock.acquire(); try: change_it(n) finally: lock.release()
  call_in_window  as nolock, with one Python call between each read and its write
                  (balance = ident(balance) + n): a switch point inside the window

Then a ping-pong of one byte through two pipes, ROUND_TRIPS round trips after one untimed one:
between two threads, and between two processes (os.fork); and the same between two threads
through two queue.Queue objects (Python's channel between threads).

Prints one JSON object on stdout:
{"python": "3.11.7", "calls": N, "cases": {"nolock": {"seconds": s, "changes": c,
 "balance": b}, "lock": {...}, "call_in_window": {...}}, "switch_threads_us": us,
 "handoff_queue_us": us, "switch_processes_us": us}
"""

import json
import os
import platform
import queue
import threading
import time

import harness

balance = 0
changes = 0
lock = threading.Lock()


def ident(x):
    return x


def change_it(n):
    global balance, changes
    balance = balance + n
    balance = balance - n
    changes = changes + 1


def change_it_call(n):
    global balance, changes
    balance = ident(balance) + n
    balance = ident(balance) - n
    changes = ident(changes) + 1


def run_nolock(n, calls, gate):
    gate.wait()
    for _ in range(calls):
        change_it(n)


def run_lock(n, calls, gate):
    gate.wait()
    for _ in range(calls):
        lock.acquire()
        try:
            change_it(n)
        finally:
            lock.release()


def run_call(n, calls, gate):
    gate.wait()
    for _ in range(calls):
        change_it_call(n)


def race(target, calls):
    global balance, changes
    balance, changes = 0, 0
    gate = threading.Barrier(3)
    threads = [threading.Thread(target=target, args=(n, calls, gate)) for n in (5, 8)]
    seconds = harness.seconds_past_gate(threads, gate)
    return {"seconds": seconds, "changes": changes, "balance": balance}


def pong(n, rfd, wfd):
    for _ in range(n):
        os.write(wfd, os.read(rfd, 1))


def ping(n, wfd, rfd):
    os.write(wfd, b"x")
    os.read(rfd, 1)
    began = time.perf_counter()
    for _ in range(n):
        os.write(wfd, b"x")
        os.read(rfd, 1)
    return (time.perf_counter() - began) / n * 1e6


def switch_threads(n):
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    t = threading.Thread(target=pong, args=(n + 1, a_r, b_w))
    t.start()
    us = ping(n, a_w, b_r)
    t.join()
    for fd in (a_r, a_w, b_r, b_w):
        os.close(fd)
    return us


def handoff_queues(n):
    """Ping-pong through two queue.Queue objects: Python's channel between threads."""
    a, b = queue.Queue(), queue.Queue()

    def partner():
        for _ in range(n + 1):
            b.put(a.get())

    t = threading.Thread(target=partner)
    t.start()
    a.put(1)
    b.get()
    began = time.perf_counter()
    for _ in range(n):
        a.put(1)
        b.get()
    us = (time.perf_counter() - began) / n * 1e6
    t.join()
    return us


def switch_processes(n):
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            pong(n + 1, a_r, b_w)
        finally:
            os._exit(0)
    us = ping(n, a_w, b_r)
    os.waitpid(pid, 0)
    for fd in (a_r, a_w, b_r, b_w):
        os.close(fd)
    return us


def main():
    args = harness.flags(__doc__, calls=500000, round_trips=20000)
    cases = {
        "nolock": race(run_nolock, args.calls),
        "lock": race(run_lock, args.calls),
        "call_in_window": race(run_call, args.calls),
    }
    print(json.dumps({
        "python": platform.python_version(),
        "calls": args.calls,
        "cases": cases,
        "switch_threads_us": switch_threads(args.round_trips),
        "handoff_queue_us": handoff_queues(args.round_trips),
        "switch_processes_us": switch_processes(args.round_trips),
    }))


if __name__ == "__main__":
    main()
