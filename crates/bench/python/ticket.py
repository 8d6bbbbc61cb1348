"""What safety costs: read-modify-write transactions on db.json at each level of safety, in CPython.

The Python side of `make bench`'s `ticket` suite (the mutex-ticket demo). PROCESSES processes
each run TRANSACTIONS transactions `count += 1` on one db.json, with no pauses, at each level:

  no-lock   read, then write a temp file and os.replace it: fast, and updates are lost
  in-place  fcntl.flock on the sidecar db.json.lock, read, rewrite db.json in place
  rename    flock, read, write a temp file, os.replace it over db.json (the demo's default)
  fsync     as rename, plus os.fsync of the temp file and of the directory

The protocol is the Rust store's (common::store): the sidecar is opened anew for each
transaction and locked with fcntl.flock (not fcntl.lockf, a record lock that flock does not
see); db.json is opened only once the lock is held; json.load, json.dump plus a newline.
The processes wait at a start gate, so the clock runs only while they work.

Prints one JSON object on stdout:
{"python": "3.11.7", "processes": P, "transactions": T,
 "levels": {"rename": {"seconds": s, "final": n, "failed": 0}, ...}}
where final is the count at the end (P * T when no update was lost).
"""

import argparse
import fcntl
import json
import multiprocessing
import os
import platform
import tempfile
import time

LEVELS = ["no-lock", "in-place", "rename", "fsync"]


def read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write(path, data, level):
    if level == "in-place":
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.write("\n")
        return
    temp = "%s.tmp.%d" % (path, os.getpid())
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.write("\n")
        if level == "fsync":
            f.flush()
            os.fsync(f.fileno())  # the contents on disk before the name points at them
    os.replace(temp, path)
    if level == "fsync":
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)  # and the rename itself
        finally:
            os.close(directory)


def transaction(path, level):
    """count += 1, as one buyer's buy without the pause."""
    if level == "no-lock":
        data = read(path)
        data["count"] += 1
        write(path, data, "rename")
        return
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read(path)
        data["count"] += 1
        write(path, data, level)
    # closing the sidecar released the lock


def worker(path, level, transactions, gate):
    gate.wait()
    for _ in range(transactions):
        transaction(path, level)


def measure(folder, level, processes, transactions):
    path = os.path.join(folder, "db.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"count": 0}\n')
    context = multiprocessing.get_context("fork")
    gate = context.Event()
    workers = [context.Process(target=worker, args=(path, level, transactions, gate))
               for _ in range(processes)]
    for w in workers:
        w.start()
    began = time.perf_counter()
    gate.set()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - began
    failed = sum(1 for w in workers if w.exitcode != 0)
    return {"seconds": seconds, "final": read(path)["count"], "failed": failed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--transactions", type=int, default=200, help="per process")
    parser.add_argument("--level", choices=LEVELS, action="append")
    args = parser.parse_args()
    levels = {}
    for level in args.level or LEVELS:
        with tempfile.TemporaryDirectory(prefix="bench-ticket-py-") as folder:
            levels[level] = measure(folder, level, args.processes, args.transactions)
    print(json.dumps({"python": platform.python_version(), "processes": args.processes,
                      "transactions": args.transactions, "levels": levels}))


if __name__ == "__main__":
    main()
