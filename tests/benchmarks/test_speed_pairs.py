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


def test_against_a_baseline_checkout_each_round_runs_both_and_records_the_commits(monkeypatch):
    """This checkout as its own baseline: both sides measured each round, ratios from the two sides' medians."""
    monkeypatch.setattr(speed, "child_flags", ["--quick"])
    monkeypatch.setattr(speed, "PREFILLS", speed.QUICK["PREFILLS"])
    model = speed_pairs.measure("random-tiny-chat", 1, Console(quiet=True), scheme="none", baseline=speed.REPO)
    assert model["peer"] == "baseline" and set(model["commits"]) == {"agentcache", "baseline"}
    pair = model["rounds"][0]
    assert pair["agentcache"]["tpot_ms_1k"] > 0 and pair["baseline"]["tpot_ms_1k"] > 0
    assert model["ratios"]["tpot"] == pytest.approx(pair["agentcache"]["tpot_ms_1k"] / pair["baseline"]["tpot_ms_1k"])
