"""Seed 001's GIL experiment and the convoy effect, in CPython.

The Python side of `make bench`'s `gil` suite (the gil demo):

  countdown  `while n > 0: n -= 1` (seed 001's decrement) by one thread, by two threads each
             N, and by two processes each N (fork); wall seconds of each, and the one thread's
             CPU seconds
  convoy     an I/O thread echoing 1-byte requests on a socketpair, alone and beside a thread
             that spins in Python; the client is a forked process (so it has a GIL of its own),
             sends one request at a time, pauses --think-us between an answer and the next
             request, and times each round trip with perf_counter

Prints one JSON object on stdout:
{"python": "3.11.7", "n": N, "one_thread_s": s, "one_thread_cpu_s": s, "two_threads_s": s,
 "two_processes_s": s,
 "switch_interval_s": 0.005,
 "convoy": {"alone": {"p50_us": x, "p99_us": y}, "spinning": {"p50_us": x, "p99_us": y}}}
"""

import json
import math
import multiprocessing
import os
import platform
import socket
import sys
import threading
import time

import harness


def decrement(n):
    while n > 0:
        n -= 1


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def one_thread(n):
    """Wall and CPU seconds (time.thread_time: this thread's CPU) of one countdown."""
    cpu = time.thread_time()
    wall = timed(lambda: decrement(n))
    return wall, time.thread_time() - cpu


def two_threads(n):
    ts = [threading.Thread(target=decrement, args=(n,)) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def two_processes(n):
    context = multiprocessing.get_context("fork")
    ps = [context.Process(target=decrement, args=(n,)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()


def percentile(sorted_values, p):
    """Nearest rank: the value at rank ceil(p * n / 100)."""
    rank = max(1, math.ceil(p * len(sorted_values) / 100))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def client(sock, go, results, round_trips, think):
    """In the forked child: wait for the go byte, time the round trips, send them back."""
    os.read(go, 1)
    latencies = []
    for i in range(round_trips):
        if i:
            time.sleep(think)
        t0 = time.perf_counter()
        sock.sendall(b"a")
        if not sock.recv(1):
            break
        latencies.append((time.perf_counter() - t0) * 1e6)
    os.write(results, json.dumps(latencies).encode() + b"\n")


def echo(sock):
    while True:
        data = sock.recv(64)  # drops the GIL while it waits, takes it back to return
        if not data:
            return
        sock.sendall(data)


def convoy(spinning, round_trips, think):
    server, client_end = socket.socketpair()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    # Fork before any thread starts.
    pid = os.fork()
    if pid == 0:
        server.close()
        try:
            client(client_end, go_r, res_w, round_trips, think)
        finally:
            os._exit(0)
    client_end.close()
    stop = False

    def spin():
        while not stop:
            pass

    threads = [threading.Thread(target=echo, args=(server,))]
    if spinning:
        threads.append(threading.Thread(target=spin))
    for t in threads:
        t.start()
    os.write(go_w, b"g")
    text = b""
    while not text.endswith(b"\n"):
        chunk = os.read(res_r, 65536)
        if not chunk:
            break
        text += chunk
    stop = True
    os.waitpid(pid, 0)
    server.shutdown(socket.SHUT_RDWR)
    for t in threads:
        t.join()
    server.close()
    for fd in (go_r, go_w, res_r, res_w):
        os.close(fd)
    latencies = sorted(json.loads(text))
    return {"p50_us": percentile(latencies, 50), "p99_us": percentile(latencies, 99),
            "round_trips": len(latencies)}


def main():
    args = harness.flags(__doc__, n=30_000_000, round_trips=100, think_us=200.0)
    n = args.n
    think = args.think_us / 1e6
    one_wall, one_cpu = one_thread(n)
    out = {
        "python": platform.python_version(),
        "n": n,
        "switch_interval_s": sys.getswitchinterval(),
        "one_thread_s": one_wall,
        "one_thread_cpu_s": one_cpu,
        "two_threads_s": timed(lambda: two_threads(n)),
        "two_processes_s": timed(lambda: two_processes(n)),
        "convoy": {
            "alone": convoy(False, args.round_trips, think),
            "spinning": convoy(True, args.round_trips, think),
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
