"""benchmarks.speed_pairs: the ratios it reports, from hand-made rows, and a model without a llama.cpp row stopping
with one line. (Its rounds against llama.cpp need llama-cpp-python, which `make peers` installs, not `make test`.)"""

from __future__ import annotations

import pytest
from rich.console import Console

from benchmarks import speed, speed_pairs


def test_ratios_are_agentcache_over_llama_cpp():
    ours = {"tpot_ms_1k": 30.0, "warm_turn_s": 2.4, "prefill_long": 225.0}
    theirs = {"tpot_ms_1k": 32.0, "warm_turn_s": 3.2, "prefill_long": 150.0}
    assert speed_pairs.ratios(ours, theirs) == pytest.approx({"tpot": 0.9375, "warm_turn": 0.75, "prefill_long": 1.5})
    row = {"tpot_ms_1k": 1.0, "warm_turn_s": 2.0, "prefill_tok_s": {"512": 3.0, "2048": 4.0}}
    assert speed_pairs.metrics(row) == {"tpot_ms_1k": 1.0, "warm_turn_s": 2.0, "prefill_long": 4.0}


def test_a_model_without_a_llama_cpp_row_stops_with_one_line(monkeypatch):
    monkeypatch.setattr(speed, "child_flags", ["--quick"])
    monkeypatch.setattr(speed, "PREFILLS", speed.QUICK["PREFILLS"])
    with pytest.raises(SystemExit, match="no llama.cpp row for random-tiny-chat"):
        speed_pairs.measure("random-tiny-chat", 1, Console(quiet=True))


def test_against_a_baseline_checkout_each_round_runs_both_in_abba_order_and_records_the_commits(monkeypatch):
    """This checkout as its own baseline: both sides measured each round, agentcache first in odd rounds and second
    in even ones, ratios from the two sides' medians."""
    monkeypatch.setattr(speed, "child_flags", ["--quick"])
    monkeypatch.setattr(speed, "PREFILLS", speed.QUICK["PREFILLS"])
    model = speed_pairs.measure("random-tiny-chat", 2, Console(quiet=True), scheme="none", baseline=speed.REPO)
    assert model["peer"] == "baseline" and set(model["commits"]) == {"agentcache", "baseline"}
    assert [pair["first"] for pair in model["rounds"]] == ["agentcache", "baseline"]
    for pair in model["rounds"]:
        assert pair["agentcache"]["tpot_ms_1k"] > 0 and pair["baseline"]["tpot_ms_1k"] > 0
    median = {side: sorted(p[side]["tpot_ms_1k"] for p in model["rounds"]) for side in ("agentcache", "baseline")}
    assert model["ratios"]["tpot"] == pytest.approx(sum(median["agentcache"]) / sum(median["baseline"]))


def test_the_best_row_is_the_fastest_per_metric():
    rows = [{"config": "a", "tpot_ms_1k": 30.0, "warm_turn_s": 2.0, "prefill_long": 150.0},
            {"config": "b", "tpot_ms_1k": 28.0, "warm_turn_s": 2.5, "prefill_long": 140.0}]
    assert [speed_pairs.best_of(rows, m)["config"] for m in speed_pairs.METRICS] == ["b", "a", "a"]


def test_llama_cpp_configurations_cover_the_tuning_grid():
    configs = speed.llama_configs()
    assert len(set(configs)) == 8 and speed.LLAMA_DEFAULT in configs
    settings = [speed.llama_settings(c) for c in configs]
    assert {(s["flash_attn"], s["n_ubatch"], s["use_mmap"]) for s in settings} == {
        (fa, ub, mmap) for fa in (False, True) for ub in (512, 2048) for mmap in (False, True)}
    assert all(s["n_batch"] >= s["n_ubatch"] and s["n_threads"] == s["n_threads_batch"] >= 1 for s in settings)
    with pytest.raises(ValueError, match="unknown llama.cpp configuration 'fast'"):
        speed.llama_settings("fast")


def test_the_peers_configurations_are_the_tunings_best_else_its_defaults(tmp_path):
    import json

    from benchmarks.peer_tune import best_configs

    path = tmp_path / "tuning.json"
    assert best_configs("m", path) == [speed.LLAMA_DEFAULT]
    best = {"tpot_ms_1k": "fa1-ub512-mmap0", "warm_turn_s": "fa1-ub2048-mmap0", "prefill_long": "fa1-ub2048-mmap0"}
    path.write_text(json.dumps({"models": [{"name": "m", "best": best}]}))
    assert best_configs("m", path) == ["fa1-ub512-mmap0", "fa1-ub2048-mmap0"]
    assert best_configs("other", path) == [speed.LLAMA_DEFAULT]
