"""Start+join cost of a thread and of a process (fork, spawn, forkserver start methods) in CPython.

The Python side of `make bench`'s `start` suite. Prints one JSON object on stdout:
{"python": "3.11.7", "count": N, "runs": R,
 "thread_us": median, "fork_us": median, "spawn_us": median, "forkserver_us": median,
 "rounds": {...}}
Each figure is the median over R rounds of (time to start and join N children one after
another) / N, in microseconds: the same loop the Rust side runs. A few untimed starts of each
kind come first (--warmup), so that no figure pays for a cold interpreter (nor for starting the
fork server, which forkserver's first child does).
Usage: python3 start.py [--count N] [--runs R] [--only thread|fork|spawn|forkserver ...]
                        [--warmup W]
"""

import argparse
import json
import multiprocessing
import platform
import statistics
import threading
import time


def noop():
    """The child's whole work: nothing, so only the start and the join are measured."""


def thread_round(count):
    begin = time.perf_counter()
    for _ in range(count):
        t = threading.Thread(target=noop)
        t.start()
        t.join()
    return (time.perf_counter() - begin) / count * 1e6


def process_round(context, count):
    begin = time.perf_counter()
    for _ in range(count):
        p = context.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a {context.get_start_method()} child exited with {p.exitcode}")
    return (time.perf_counter() - begin) / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=["thread", "fork", "spawn", "forkserver"],
                        action="append")
    parser.add_argument("--warmup", type=int, default=3,
                        help="children started untimed first, so no figure pays for a cold start")
    args = parser.parse_args()
    kinds = args.only or ["thread", "fork", "spawn", "forkserver"]
    rounds = {kind: [] for kind in kinds}
    for kind in kinds:
        if args.warmup > 0:
            if kind == "thread":
                thread_round(args.warmup)
            else:
                process_round(multiprocessing.get_context(kind), args.warmup)
    # Rounds alternate between the kinds, as the Rust side does, so that a slow moment of a
    # shared machine does not fall on one kind only.
    for _ in range(args.runs):
        for kind in kinds:
            if kind == "thread":
                rounds[kind].append(thread_round(args.count))
            else:
                ctx = multiprocessing.get_context(kind)
                rounds[kind].append(process_round(ctx, args.count))
    result = {"python": platform.python_version(), "count": args.count, "runs": args.runs}
    for kind in kinds:
        result[f"{kind}_us"] = statistics.median(rounds[kind])
    result["rounds"] = rounds
    print(json.dumps(result))


if __name__ == "__main__":
    main()
