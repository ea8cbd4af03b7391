"""Billed cost per cache TTL: Anthropic cache writes at 1.25x (5 minutes) or 2x (1 hour) of base input, cache reads
at 0.1x; OpenAI's cached input discounted with no write surcharge. Expected values use the documented multipliers
on each provider's base input price, not the computed prices."""

import json

import pytest
import yaml

from agentcache.cli import main
from agentcache.errors import AgentcacheError
from agentcache.inspect.cost import PRICES_FILE, cost_view
from agentcache.session import Session

ROWS = [{"prompt_tokens": 5000, "cached_tokens": 3000, "computed_tokens": 2000, "completion_tokens": 100},
        {"prompt_tokens": 7000, "cached_tokens": 6000, "computed_tokens": 1000, "completion_tokens": 50}]
CACHED, COMPUTED, OUTPUT = 9000, 3000, 150  # sums of ROWS
WRITE_MULTIPLIER = {"5m": 1.25, "1h": 2.0}


def providers() -> dict:
    return yaml.safe_load(PRICES_FILE.read_text(encoding="utf-8"))["providers"]


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_anthropic_cache_writes_cost_the_ttl_multiplier_of_base_input(ttl):
    table = providers()["anthropic"]
    base = table["input"]
    expected = (CACHED * 0.1 * base + COMPUTED * WRITE_MULTIPLIER[ttl] * base + OUTPUT * table["output"]) / 1e6
    billed = cost_view(ROWS, "anthropic", ttl)["billed"]
    assert billed["cache_ttl"] == ttl
    assert billed["usd"]["anthropic"] == pytest.approx(expected)


def test_the_1h_ttl_costs_exactly_the_extra_write_surcharge():
    base = providers()["anthropic"]["input"]
    five, hour = (cost_view(ROWS, "anthropic", ttl)["billed"]["usd"]["anthropic"] for ttl in ("5m", "1h"))
    assert hour - five == pytest.approx(COMPUTED * (2.0 - 1.25) * base / 1e6) and hour > five


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_openai_discounts_cached_input_and_charges_no_write_surcharge(ttl):
    table = providers()["openai"]
    assert table["cached_input"] < table["input"]
    expected = (CACHED * table["cached_input"] + COMPUTED * table["input"] + OUTPUT * table["output"]) / 1e6
    assert cost_view(ROWS, "openai", ttl)["billed"]["usd"]["openai"] == pytest.approx(expected)
    assert cost_view(ROWS, "openai", ttl)["billed"]["usd"]["local"] == 0


def test_an_unknown_ttl_is_an_error():
    with pytest.raises(AgentcacheError, match="'2h' is not one of 5m, 1h"):
        cost_view(ROWS, "anthropic", "2h")


def session_repo(tmp_path, config: str | None, recorded: str | None = None):
    repo = tmp_path / "repo"
    repo.mkdir()
    if config is not None:
        (repo / "agentcache.yaml").write_text(config)
    session = Session.create(repo)
    for turn, row in enumerate(ROWS, 1):
        ttl = {"cache_ttl": recorded} if recorded else {}
        session.append({"type": "request", "turn": turn, "backend": "anthropic", "usage": row,
                        "trace": {"page_size": 1}, "timings": {"ttft_s": 0.5}, **ttl})
    return repo


@pytest.mark.parametrize("config, recorded, flag, ttl", [
    (None, None, [], "5m"),  # the default
    ("cache_ttl: 1h\n", None, [], "1h"),  # the repo's setting, for sessions that recorded none
    ("cache_ttl: 5m\n", "1h", [], "1h"),  # the TTL the session's requests ran with beats today's setting
    ("cache_ttl: 1h\n", "1h", ["--cache-ttl", "5m"], "5m"),  # the flag wins
    (None, None, ["--cache-ttl", "1h"], "1h"),
])
def test_inspect_prices_cache_writes_for_the_selected_ttl(tmp_path, capsys, config, recorded, flag, ttl):
    repo = session_repo(tmp_path, config, recorded)
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--json", "--repo", str(repo), *flag])
    assert (exit_info.value.code or 0) == 0
    billed = json.loads(capsys.readouterr().out)["cost"]["billed"]
    table = providers()["anthropic"]
    expected = (CACHED * 0.1 * table["input"] + COMPUTED * WRITE_MULTIPLIER[ttl] * table["input"]
                + OUTPUT * table["output"]) / 1e6
    assert billed["cache_ttl"] == ttl and billed["usd"]["anthropic"] == pytest.approx(expected)


def test_inspect_rejects_an_unknown_ttl_in_one_line(tmp_path, capsys):
    repo = session_repo(tmp_path, None)
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--repo", str(repo), "--cache-ttl", "2h"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "2h" in err
