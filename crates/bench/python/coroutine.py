"""What a coroutine switch costs and what a waiting task weighs, in CPython.

The Python side of `make bench`'s `coroutine` suite (the coroutine demo):

  asyncio   two asyncio tasks, each doing `await asyncio.sleep(0)` --yields times: ns per yield
  greenlet  g.switch() from the main greenlet, answered by main.switch(), --round-trips times:
            ns per round trip; skipped (with the reason) when greenlet cannot be imported
  sleepers  --tasks asyncio tasks that each sleep --sleep-ms: the seconds from the first
            create_task to the end of gather(), and the resident memory grown by the moment all
            of them wait (VmRSS of /proc/self/status), per task

The sleepers run first, in a process that has made no task yet. Prints one JSON object:
{"python": "3.11.7", "asyncio_switch_ns": ns, "greenlet": {"round_trip_ns": ns} or
 {"skipped": why}, "sleepers": {"seconds": s, "bytes_per_task": b, "tasks": n}}
"""

import asyncio
import json
import platform
import time

import harness


def rss_bytes():
    """VmRSS of /proc/self/status (statm's resident pages, in KiB), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


async def sleepers(tasks, sleep_ms):
    started = 0

    async def sleeper():
        nonlocal started
        started += 1
        await asyncio.sleep(sleep_ms / 1000)

    before = rss_bytes()
    began = time.perf_counter()
    running = [asyncio.create_task(sleeper()) for _ in range(tasks)]
    # A task counts itself before its sleep: once all have, all of them are waiting.
    while started < tasks:
        await asyncio.sleep(0)
    during = rss_bytes()
    await asyncio.gather(*running)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "bytes_per_task": max(0, during - before) / tasks, "tasks": tasks}


async def asyncio_switch(yields):
    async def yielder():
        for _ in range(yields):
            await asyncio.sleep(0)

    began = time.perf_counter()
    await asyncio.gather(yielder(), yielder())
    return (time.perf_counter() - began) * 1e9 / (2 * yields)


def greenlet_switch(round_trips):
    try:
        import greenlet
    except ImportError:
        return {"skipped": f"greenlet is not importable by python3 {platform.python_version()}"}
    main = greenlet.getcurrent()

    def body():
        while True:
            main.switch()

    g = greenlet.greenlet(body)
    g.switch()  # started: it now waits in main.switch()
    began = time.perf_counter()
    for _ in range(round_trips):
        g.switch()
    ns = (time.perf_counter() - began) * 1e9 / round_trips
    return {"round_trip_ns": ns, "version": greenlet.__version__}


def main():
    args = harness.flags(__doc__, yields=50000, round_trips=200000, tasks=10000, sleep_ms=10.0)
    result = {"python": platform.python_version()}
    result["sleepers"] = asyncio.run(sleepers(args.tasks, args.sleep_ms))
    result["asyncio_switch_ns"] = asyncio.run(asyncio_switch(args.yields))
    result["greenlet"] = greenlet_switch(args.round_trips)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
