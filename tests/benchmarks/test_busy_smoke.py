"""benchmarks.busy at smoke sizes: both thread policies measured quiet and busy, each in its own process, and the
ratios it prints computed from the measurements it recorded."""

from __future__ import annotations

import pytest

from benchmarks import busy


def test_busy_reports_both_policies_and_their_ratios(tmp_path, monkeypatch):
    for name, value in busy.speed.QUICK.items():  # what --quick sets, undone after the test
        monkeypatch.setattr(busy.speed, name, value)
    monkeypatch.setattr(busy.speed, "child_flags", ["--quick"])
    report = busy.main(["--model", "random-tiny-chat", "--rounds", "1", "--json", str(tmp_path / "b.json")])
    rows = {row["threads"]: row for row in report["models"][0]["rows"]}
    assert set(rows) == {"auto", "all"}
    for row in rows.values():
        assert row["tpot_quiet_ms"] == row["rounds"]["quiet"][0] > 0
        assert row["busy_ratio"] == pytest.approx(row["rounds"]["busy"][0] / row["rounds"]["quiet"][0])
    assert rows["all"]["threads_when_busy"] == [busy.speed.machine()["threads"]]  # 'all' never drops a thread
    assert (tmp_path / "b.json").is_file()
