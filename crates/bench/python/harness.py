"""What most scripts of the bench's Python side share: their flags and a timed start."""

import argparse
import time


def flags(doc, **defaults):
    """Parses `--name N` for each keyword (`round_trips` is `--round-trips`), typed as its default."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return parser.parse_args()


def seconds_past_gate(workers, gate):
    """Starts the workers, which wait at `gate` (a Barrier for them and us), and times them from
    the gate to the last join: their start-up is not counted."""
    for w in workers:
        w.start()
    gate.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - began
