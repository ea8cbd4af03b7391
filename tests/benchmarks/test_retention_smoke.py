"""benchmarks.retention end to end on the tiny random model at small sizes: the JSON names other tools read, the
requests counted, and classes keeping the L1+L2 prefix at least as well as plain LRU."""

from __future__ import annotations

import json

from benchmarks import retention


def test_retention_report(tmp_path, monkeypatch):
    monkeypatch.setattr(retention, "L1", 32)
    monkeypatch.setattr(retention, "L2", 96)
    monkeypatch.setattr(retention, "L3_TURN", 48)
    monkeypatch.setattr(retention, "SESSIONS_PER_PREFIX", 4)
    monkeypatch.setattr(retention, "ROUNDS", 3)
    path = tmp_path / "retention.json"
    retention.main(["--model", "random-tiny", "--json", str(path)])
    report = json.loads(path.read_text())
    asked = (2 * 4 * 3 - 2) * (32 + 96)  # every request but each prefix's first asks for its whole L1+L2
    for name in ("lru", "classes"):
        assert report[name]["l12_tokens"] == asked
        assert report[name]["l12_hit_rate"] == report[name]["l12_cached_tokens"] / asked
    assert report["classes"]["l12_hit_rate"] > report["lru"]["l12_hit_rate"]
