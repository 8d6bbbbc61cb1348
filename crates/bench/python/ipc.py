"""What each way of sharing data between processes costs, in CPython.

The Python side of `make bench`'s `ipc` suite (the ipc demo). Forked children (the fork start
method), each waiting at a start gate (one byte each on an os.pipe) before the clock starts:

  pipe_mb    a child os.write()s --pipe-bytes in 64 KiB chunks; the parent os.read()s 64 KiB
  pipe_msgs  a child writes --messages frames (4-byte length + 16 bytes), one os.write each;
             the parent reads os.read(4) then os.read(n) per message, as
             multiprocessing.Connection.recv_bytes reads
  duplex     --round-trips round trips of a small object through multiprocessing.Pipe()
  shm_lock   --processes processes each do `with v.get_lock(): v.value += 1` --increments
             times on one Value('i')
  file       --processes processes each run --file-increments transactions on one file:
             open, fcntl.flock(LOCK_EX), int(read()), seek(0), write(str(n + 1)), truncate(),
             close
  file_trunc the same with truncate() before write(), as open(path, 'w') does

Prints one JSON object on stdout, rates per second (MB/s for pipe_mb), and the CPU time (user +
system, this process and its children) per item in µs (per MB for pipe_mb):
{"python": "3.11.7", "cases": {"pipe_mb": x, "pipe_msgs": x, "duplex": x, "shm_lock": x,
 "file": x,
 "file_trunc": x},
 "cpu_us": {"pipe_mb": x, ...}}
"""

import fcntl
import json
import multiprocessing
import os
import platform
import struct
import tempfile
import time

import harness

CHUNK = 64 * 1024
BODY = 16


def gate_pass(gate_r):
    os.read(gate_r, 1)


def gate_open(gate_w, children):
    began = time.perf_counter()
    os.write(gate_w, b"\x01" * children)
    return began


def pipe_writer(w, gate_r, total):
    gate_pass(gate_r)
    chunk = b"\x07" * CHUNK
    for _ in range(total // CHUNK):
        os.write(w, chunk)


def writer_behind_gate(ctx, target, arg):
    """Starts `target(w, gate_r, arg)` in a child writing to a new pipe, then opens its gate:
    the read end, the child, and the moment the clock starts."""
    r, w = os.pipe()
    gate_r, gate_w = os.pipe()
    p = ctx.Process(target=target, args=(w, gate_r, arg))
    p.start()
    os.close(w)
    return r, p, gate_open(gate_w, 1)


def pipe_mb(ctx, total):
    r, p, began = writer_behind_gate(ctx, pipe_writer, total)
    got = 0
    while True:
        b = os.read(r, CHUNK)
        if not b:
            break
        got += len(b)
    seconds = time.perf_counter() - began
    p.join()
    os.close(r)
    assert got == total, (got, total)
    return got / 1e6 / seconds


def msg_writer(w, gate_r, messages):
    gate_pass(gate_r)
    header = struct.pack("<I", BODY)
    for i in range(messages):
        os.write(w, header + struct.pack("<Q", i) + b"\x00" * (BODY - 8))


def pipe_msgs(ctx, messages):
    r, p, began = writer_behind_gate(ctx, msg_writer, messages)
    got = 0
    while True:
        header = os.read(r, 4)
        if not header:
            break
        (n,) = struct.unpack("<I", header)
        os.read(r, n)
        got += 1
    seconds = time.perf_counter() - began
    p.join()
    os.close(r)
    assert got == messages, (got, messages)
    return got / seconds


def pong(conn, other):
    # A forked child holds a copy of the parent's end too: without closing it, recv() would
    # never meet end-of-file (the ipc demo's part 1).
    other.close()
    while True:
        try:
            n = conn.recv()
        except EOFError:
            break
        conn.send(n)


def duplex(ctx, trips):
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=pong, args=(theirs, mine))
    p.start()
    theirs.close()
    began = time.perf_counter()
    for n in range(trips):
        mine.send(n)
        assert mine.recv() == n
    seconds = time.perf_counter() - began
    mine.close()
    p.join()
    return trips / seconds


def adder(v, gate_r, n):
    gate_pass(gate_r)
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def adders_timed(ctx, processes, target, args):
    """Starts `processes` children running target(*args(gate_r)), lets them go together, and
    returns the seconds from the gate to the last join."""
    gate_r, gate_w = os.pipe()
    ps = [ctx.Process(target=target, args=args(gate_r)) for _ in range(processes)]
    for p in ps:
        p.start()
    began = gate_open(gate_w, processes)
    for p in ps:
        p.join()
    return time.perf_counter() - began


def shm_lock(ctx, processes, n):
    v = ctx.Value("i", 0)
    seconds = adders_timed(ctx, processes, adder, lambda gate_r: (v, gate_r, n))
    assert v.value == processes * n, (v.value, processes * n)
    return v.value / seconds


def file_adder(path, gate_r, n, truncate_first):
    gate_pass(gate_r)
    for _ in range(n):
        with open(path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            value = int(f.read())
            f.seek(0)
            if truncate_first:
                f.truncate()
                f.write(str(value + 1))
            else:
                f.write(str(value + 1))
                f.truncate()


def file_counter(ctx, processes, n, truncate_first):
    fd, path = tempfile.mkstemp(prefix="bench-ipc-counter-")
    try:
        os.write(fd, b"0")
        os.close(fd)
        seconds = adders_timed(
            ctx, processes, file_adder, lambda gate_r: (path, gate_r, n, truncate_first)
        )
        with open(path) as f:
            value = int(f.read())
    finally:
        os.unlink(path)
    assert value == processes * n, (value, processes * n)
    return value / seconds


def main():
    args = harness.flags(
        __doc__,
        pipe_bytes=128 << 20,
        messages=200000,
        round_trips=20000,
        processes=4,
        increments=10000,
        file_increments=500,
    )
    ctx = multiprocessing.get_context("fork")
    p = args.processes
    runs = {
        "pipe_mb": (lambda: pipe_mb(ctx, args.pipe_bytes), args.pipe_bytes / 1e6),
        "pipe_msgs": (lambda: pipe_msgs(ctx, args.messages), args.messages),
        "duplex": (lambda: duplex(ctx, args.round_trips), args.round_trips),
        "shm_lock": (lambda: shm_lock(ctx, p, args.increments), p * args.increments),
        "file": (
            lambda: file_counter(ctx, p, args.file_increments, False),
            p * args.file_increments,
        ),
        "file_trunc": (
            lambda: file_counter(ctx, p, args.file_increments, True),
            p * args.file_increments,
        ),
    }
    cases, cpu_us = {}, {}
    for key, (run, items) in runs.items():
        before = sum(os.times()[:4])  # user, system, and those of the reaped children
        cases[key] = run()
        cpu_us[key] = (sum(os.times()[:4]) - before) * 1e6 / items
    print(json.dumps({"python": platform.python_version(), "cases": cases, "cpu_us": cpu_us}))


if __name__ == "__main__":
    main()
