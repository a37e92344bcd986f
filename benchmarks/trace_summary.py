"""Where the device's time went in a ``jax.profiler`` trace, by kernel or operation.

    python -m benchmarks.trace_summary /tmp/profile            # the newest trace under the folder
    python -m benchmarks.trace_summary /tmp/profile/sft --top=40  # accelerator.py --profile_dir

Reads the Perfetto JSON (``*.trace.json.gz``) that ``jax.profiler.trace(folder,
create_perfetto_trace=True)`` writes beside its XPlane file, and sums the durations of its complete
events (``"ph": "X"``) by lane and name. Lanes are the threads of the device's processes (those
named ``/device:…``: a GPU's streams, a TPU's op and module lines); a CPU run has none, and the XLA
client's threads (``tf_XLA…``), which execute the compiled programs, stand in, merged into one
lane (its table then holds the host's waits for the worker threads too). An event counts its own
time, less that of the events nested inside it on its thread, so nothing is counted twice within
a lane; each lane has its own table, since lanes such as "XLA Ops" and a stream describe the same
time twice. A GPU kernel names the HLO operation it
computes where the trace gives one (its ``hlo_op`` argument), so a fusion of the backward pass
can be told from the forward's. ``benchmarks/accelerator.py --profile_dir`` prints these tables
after its run, so one call on a lent GPU brings back both the figures and where the time went.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
from typing import NamedTuple


class Row(NamedTuple):
    """One name's share of a lane: ``ms`` summed over ``count`` innermost events."""

    lane: str
    name: str
    ms: float
    count: int


def newest_trace(folder: str) -> str:
    """The newest ``*.trace.json.gz`` under ``folder`` (jax writes one per trace, in a dated
    subfolder); ``FileNotFoundError`` naming the folder if there is none."""
    paths = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {folder} (was the trace taken with "
                                "create_perfetto_trace=True?)")
    return max(paths, key=os.path.getmtime)


def read_events(path: str) -> list[dict]:
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
    """Each event of one thread with its own time in microseconds: its duration less that of
    the events directly inside it. Events on a thread nest or follow each other; one that ends
    after the open event does follows it, also where it starts a little before that one's end
    (a GPU stream's kernels, timed by the device, overlap their neighbours by up to a microsecond)."""
    def end(e):
        return e["ts"] + e.get("dur", 0.0)

    ordered = sorted(events, key=lambda e: (e["ts"], -e.get("dur", 0.0)))
    own, open_ = [e.get("dur", 0.0) for e in ordered], []
    for i, e in enumerate(ordered):
        while open_ and end(ordered[open_[-1]]) < end(e):
            open_.pop()
        if open_:
            own[open_[-1]] -= e.get("dur", 0.0)
        open_.append(i)
    return list(zip(ordered, own))


def device_time(events: list[dict]) -> list[Row]:
    """The rows of a trace, by lane and then most time first (see the module docstring)."""
    process = {e["pid"]: e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
    thread = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
              if e.get("ph") == "M" and e.get("name") == "thread_name"}
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e["pid"], e["tid"]].append(e)
    device = {key: f"{process[key[0]]} {thread.get(key, key[1])}" for key in by_thread
              if process.get(key[0], "").startswith("/device:")}
    lanes = device or {key: "XLA CPU client" for key in by_thread
                       if str(thread.get(key, "")).startswith("tf_XLA")}
    totals, counts = collections.Counter(), collections.Counter()
    for key, lane in lanes.items():
        for e, own in self_times(by_thread[key]):
            op = e.get("args", {}).get("hlo_op")
            name = f"{e['name']} [{op}]" if op and op != e["name"] else e["name"]
            totals[lane, name] += own / 1e3  # microseconds → ms
            counts[lane, name] += 1
    lane_ms = collections.Counter()
    for (lane, _), ms in totals.items():
        lane_ms[lane] += ms
    order = {lane: i for i, (lane, _) in enumerate(lane_ms.most_common())}
    return sorted((Row(lane, name, ms, counts[lane, name]) for (lane, name), ms in totals.items()),
                  key=lambda r: (order[r.lane], -r.ms))


def table(rows: list[Row], top: int) -> str:
    """Per lane, its ``top`` rows with each one's share of the lane, the rest as one line."""
    lines = []
    for lane in dict.fromkeys(r.lane for r in rows):
        own = [r for r in rows if r.lane == lane]
        whole = sum(r.ms for r in own) or 1.0
        lines.append(f"{lane}: {whole:.3f} ms in {sum(r.count for r in own)} events")
        lines += [f"{r.ms:10.3f} {r.ms / whole:6.1%} {r.count:6d}  {r.name[:100]}"
                  for r in own[:top]]
        rest = own[top:]
        if rest:
            ms = sum(r.ms for r in rest)
            lines.append(f"{ms:10.3f} {ms / whole:6.1%} {sum(r.count for r in rest):6d}  "
                         f"({len(rest)} more names)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trace_summary")
    parser.add_argument("folder", help="a jax.profiler trace folder (its newest trace is read)")
    parser.add_argument("--top", type=int, default=15, help="rows per lane before the rest")
    args = parser.parse_args(argv)  # a bad argument: usage, "error: …", exit status 2
    try:
        path = newest_trace(args.folder)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    print(table(device_time(read_events(path)), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
