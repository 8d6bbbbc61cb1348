"""What a trivial task costs through multiprocessing.Pool and ProcessPoolExecutor, in CPython.

The Python side of `make bench`'s `pool` suite (the pool demo). Two workers, the fork start
method, a task that returns its argument; each pool has started and run one task before the
clock starts. Figures, in microseconds per task (per item for map):

  mp_apply_async  Pool.apply_async for every task, then .get() on each result in order
  cf_submit       ProcessPoolExecutor.submit for every task, then .result() on each future
  mp_map          Pool.map over every item (its default chunksize)
  cf_map          ProcessPoolExecutor.map over every item, given that same chunksize
                  (its own default is 1)
  mp_apply        Pool.apply, one task at a time

Prints one JSON object on stdout:
{"python": "3.11.7", "tasks": N, "items": M, "applies": A, "workers": W, "chunksize": C,
 "mp_apply_async": us, "cf_submit": us, "mp_map": us, "cf_map": us, "mp_apply": us}
"""

import concurrent.futures
import json
import multiprocessing
import platform
import time

import harness


def echo(x):
    return x


def per(began, count):
    return (time.perf_counter() - began) / count * 1e6


def check(values, count):
    if list(values) != list(range(count)):
        raise SystemExit("a pool returned wrong values")


def main():
    args = harness.flags(__doc__, tasks=5000, items=100000, applies=500, workers=2)
    context = multiprocessing.get_context("fork")
    # Pool.map's own default: divmod(len(items), len(pool) * 4), plus one if there is a rest.
    chunksize, extra = divmod(args.items, args.workers * 4)
    chunksize += 1 if extra else 0
    out = {
        "python": platform.python_version(),
        "tasks": args.tasks,
        "items": args.items,
        "applies": args.applies,
        "workers": args.workers,
        "chunksize": chunksize,
    }

    with context.Pool(args.workers) as pool:
        pool.apply(echo, (0,))
        began = time.perf_counter()
        results = [pool.apply_async(echo, (i,)) for i in range(args.tasks)]
        values = [r.get() for r in results]
        out["mp_apply_async"] = per(began, args.tasks)
        check(values, args.tasks)

        began = time.perf_counter()
        values = pool.map(echo, range(args.items))
        out["mp_map"] = per(began, args.items)
        check(values, args.items)

        began = time.perf_counter()
        values = [pool.apply(echo, (i,)) for i in range(args.applies)]
        out["mp_apply"] = per(began, args.applies)
        check(values, args.applies)

    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as executor:
        executor.submit(echo, 0).result()
        began = time.perf_counter()
        futures = [executor.submit(echo, i) for i in range(args.tasks)]
        values = [f.result() for f in futures]
        out["cf_submit"] = per(began, args.tasks)
        check(values, args.tasks)

        began = time.perf_counter()
        values = list(executor.map(echo, range(args.items), chunksize=chunksize))
        out["cf_map"] = per(began, args.items)
        check(values, args.items)

    print(json.dumps(out))


if __name__ == "__main__":
    main()
