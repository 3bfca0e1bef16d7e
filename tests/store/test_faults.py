"""Faults against real builds, a seeded few of each (benchmarks/bench_faults.py runs the full 100):
kill -9 at counted events, a disk that fills half way, rebuilds under a query loop, two builders."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benchmarks"))
import bench_faults  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("HASHTOOL_THREADS", "1")


def test_killed_builds_leave_the_previous_or_the_new_index(tmp_path):
    res = bench_faults.kill_builds(8, seed=3, work=tmp_path)
    assert res["bad"] == []
    assert res["killed"] >= 4  # the kills really happened
    assert res["equal_previous"] + res["equal_new"] == 8


def test_disk_full_half_way_refuses_cleanly(tmp_path):
    res = bench_faults.disk_full_builds(4, seed=1, work=tmp_path)
    assert res["bad"] == [] and res["refused_cleanly"] >= 2
    assert all("No space left on device" in m for m in res["messages"])


def test_no_failed_query_during_rebuilds(tmp_path):
    res = bench_faults.rebuilds_under_queries(4, seed=0, work=tmp_path)
    assert res["queries_failed"] == 0, res["errors"]
    assert res["queries_ok"] > 0


def test_two_builders_one_waits_or_refuses(tmp_path):
    res = bench_faults.two_builders(tmp_path, seed=0)
    assert res["wait"]["exit_codes"] == [0, 0] and res["wait"]["index_equals_new"] and res["wait"]["usable"]
    assert res["no-wait"]["index_equals_new"] and res["no-wait"]["usable"]
    if res["no-wait"]["exit_codes"] == [0, 1]:  # they overlapped: the second was refused with the message
        assert "another process" in res["no-wait"]["refused"][0]
    else:
        assert res["no-wait"]["exit_codes"] == [0, 0]  # one finished before the other started
