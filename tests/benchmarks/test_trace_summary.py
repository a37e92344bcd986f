"""benchmarks/trace_summary.py: own times of nested events, lanes, and the command's errors."""

import gzip
import json
import os

from benchmarks import trace_summary
from benchmarks.trace_summary import Row


def meta(kind: str, pid: int, name: str, tid: int = 0) -> dict:
    return dict(ph="M", name=kind, pid=pid, tid=tid, args=dict(name=name))


def event(pid: int, tid: int, name: str, ts: float, dur: float, **args) -> dict:
    return dict(ph="X", pid=pid, tid=tid, name=name, ts=ts, dur=dur, args=args)


# A GPU: one stream whose kernels follow each other, one "XLA Ops" line where a module span
# [0, 10) holds ops [0, 3) and [5, 8), the first with a marker [1, 2) inside it; and the host,
# whose events must not count when a device lane exists.
GPU = [
    meta("process_name", 1, "/device:GPU:0"), meta("thread_name", 1, "Stream #7", 7),
    meta("thread_name", 1, "XLA Ops", 8), meta("process_name", 2, "/host:CPU"),
    event(1, 7, "gemm_kernel", 0, 4000, hlo_op="dot.1"),
    event(1, 7, "gemm_kernel", 5000, 2000, hlo_op="dot.2"),
    event(1, 7, "loop_fusion", 8000, 500, hlo_op="loop_fusion"),
    event(1, 8, "module", 0, 10000), event(1, 8, "op_a", 0, 3000),
    event(1, 8, "marker", 1000, 1000), event(1, 8, "op_b", 5000, 3000),
    event(2, 3, "python", 0, 99000),
]


def test_each_event_counts_its_own_time_once_per_lane():
    rows = trace_summary.device_time(GPU)
    by_lane = {}
    for r in rows:
        by_lane.setdefault(r.lane, {})[r.name] = r.ms
    assert list(by_lane) == ["/device:GPU:0 XLA Ops", "/device:GPU:0 Stream #7"]
    assert by_lane["/device:GPU:0 XLA Ops"] == dict(module=4.0, op_b=3.0, op_a=2.0, marker=1.0)
    assert by_lane["/device:GPU:0 Stream #7"] == {
        "gemm_kernel [dot.1]": 4.0, "gemm_kernel [dot.2]": 2.0, "loop_fusion": 0.5}
    for lane, names in by_lane.items():  # within a lane, most time first
        assert list(names.values()) == sorted(names.values(), reverse=True)


def test_kernels_that_overlap_their_neighbour_by_timestamp_jitter_follow_it():
    # As an H200's stream recorded them: each kernel starts up to ~0.1 µs before the last ends.
    events = [meta("process_name", 1, "/device:GPU:0"), meta("thread_name", 1, "Stream #14", 14),
              event(1, 14, "loop_select_fusion", 119419.475, 0.896),
              event(1, 14, "input_concatenate_fusion", 119420.275, 2.785),
              event(1, 14, "loop_broadcast_fusion", 119422.963, 1409.561)]
    rows = trace_summary.device_time(events)
    assert [(r.name, round(r.ms * 1e3, 3)) for r in rows] == [
        ("loop_broadcast_fusion", 1409.561), ("input_concatenate_fusion", 2.785),
        ("loop_select_fusion", 0.896)]


def test_a_cpu_trace_falls_back_to_the_xla_client_threads_as_one_lane():
    events = [meta("process_name", 1, "/host:CPU"), meta("thread_name", 1, "python", 1),
              meta("thread_name", 1, "tf_XLAPjRtCpuClient/11", 2),
              meta("thread_name", 1, "tf_XLAEigen/12", 3),
              event(1, 1, "PjitFunction", 0, 9000), event(1, 2, "dot.3", 0, 2000),
              event(1, 3, "fusion.4", 0, 1000), event(1, 3, "dot.3", 5000, 1000)]
    rows = trace_summary.device_time(events)
    assert rows == [Row("XLA CPU client", "dot.3", 3.0, 2), Row("XLA CPU client", "fusion.4", 1.0, 1)]


def test_table_gives_shares_of_each_lane_and_folds_the_rest():
    text = trace_summary.table(trace_summary.device_time(GPU), top=2)
    lines = text.splitlines()
    assert lines[0] == "/device:GPU:0 XLA Ops: 10.000 ms in 4 events"
    assert lines[1].split() == ["4.000", "40.0%", "1", "module"]
    assert lines[3].split() == ["3.000", "30.0%", "2", "(2", "more", "names)"]
    assert lines[4] == "/device:GPU:0 Stream #7: 6.500 ms in 3 events"
    assert lines[5].split()[:2] == ["4.000", "61.5%"]


def test_the_command_reads_the_newest_trace_and_names_a_folder_without_one(tmp_path, capsys):
    assert trace_summary.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: no *.trace.json.gz under {tmp_path}")
    for i, name in enumerate(("old", "new")):
        folder = tmp_path / "plugins" / "profile" / name
        folder.mkdir(parents=True)
        path = folder / "host.trace.json.gz"
        with gzip.open(path, "wt") as f:
            json.dump(dict(traceEvents=GPU if name == "new" else GPU[:4]), f)
        os.utime(path, (1000 + i, 1000 + i))
    assert trace_summary.main([str(tmp_path), "--top=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(os.path.join("new", "host.trace.json.gz"))
    assert out[1] == "/device:GPU:0 XLA Ops: 10.000 ms in 4 events"
