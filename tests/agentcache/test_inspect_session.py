"""`agentcache inspect [SESSION]`: every printed number checked against the raw session records, recomputed here."""

import json
import shutil
from pathlib import Path

import pytest

from agentcache.agent import Agent
from agentcache.backends.local import LocalBackend
from agentcache.cli import main
from agentcache.config import RunConfig
from agentcache.inspect_session import reusable_tokens
from agentcache.session import Session
from engine import Engine, load_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"
USAGE = ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens")


@pytest.fixture(scope="module")
def session_repo(tmp_path_factory):
    """A repo with one real 4-request session, run on a fresh engine so nothing is cached before it."""
    repo = tmp_path_factory.mktemp("inspect") / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    model = load_model("random-tiny-chat")
    backend = LocalBackend(model, Engine(model, capacity_bytes=64 << 20))
    session = Session.create(repo)
    Agent(repo, backend, RunConfig(max_turns=4, max_tokens=40, retries=10), session).run("Do it.")
    return repo, session


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def raw_requests(session: Session) -> list[dict]:
    lines = session.path.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "request"]


def expected_reusable(previous: dict | None, current: dict) -> int:
    if previous is None:
        return 0
    same = 0
    while (same < min(len(previous["blocks"]), len(current["blocks"]))
           and previous["blocks"][same]["hash"] == current["blocks"][same]["hash"]):
        same += 1
    page = current["trace"]["page_size"]
    tokens = min(sum(current["segment_tokens"][:same]), current["usage"]["prompt_tokens"] - 1)
    return tokens - tokens % page


def test_json_numbers_match_the_raw_records(session_repo, capsys):
    repo, session = session_repo
    code, out, err = cli(capsys, "inspect", "latest", "--repo", str(repo), "--json")
    assert code == 0, err
    view = json.loads(out)
    records = raw_requests(session)
    assert view["session_id"] == session.id and len(records) >= 2
    assert len(view["requests"]) == len(records)
    for previous, record, row in zip([None, *records], records, view["requests"]):
        assert row["turn"] == record["turn"]
        for name in USAGE:
            assert row[name] == record["usage"][name]
        assert row["hit_rate"] == pytest.approx(record["usage"]["cached_tokens"] / record["usage"]["prompt_tokens"])
        assert row["reusable_tokens"] == expected_reusable(previous, record)
        assert row["ttft_s"] == record["timings"]["ttft_s"]
        assert row["stop_reason"] == record["trace"]["stop_reason"]
    totals = view["totals"]
    for name in USAGE:
        assert totals[name] == sum(r["usage"][name] for r in records)
    reusable = sum(expected_reusable(p, r) for p, r in zip([None, *records], records))
    assert totals["reusable_tokens"] == reusable > 0
    cached = sum(r["usage"]["cached_tokens"] for r in records)
    assert totals["hit_rate"] == pytest.approx(cached / sum(r["usage"]["prompt_tokens"] for r in records))
    assert totals["reusable_hit_rate"] == pytest.approx(cached / reusable)


def test_reusable_tokens_are_what_a_fresh_engine_actually_hits(session_repo, capsys):
    repo, session = session_repo
    view = json.loads(cli(capsys, "inspect", session.id, "--repo", str(repo), "--json")[1])
    first, *rest = view["requests"]
    assert first["reusable_tokens"] == 0 and first["cached_tokens"] == 0
    for row in rest:
        assert row["cached_tokens"] >= row["reusable_tokens"] > 0


def test_table_shows_every_turn_totals_and_both_hit_rates(session_repo, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    repo, session = session_repo
    code, out, err = cli(capsys, "inspect", "--repo", str(repo))
    assert code == 0, err
    records = raw_requests(session)
    lines = out.splitlines()
    for record in records:
        action = "error" if record.get("error") else (record.get("tool_call") or {}).get("name", "answer")
        row = [line for line in lines if line.strip("│ ").startswith(f"{record['turn']} ")]
        assert row and str(record["usage"]["prompt_tokens"]) in row[0] and action in row[0]
    total_prompt = sum(r["usage"]["prompt_tokens"] for r in records)
    assert any("total" in line and str(total_prompt) in line for line in lines)
    assert "cached / prompt tokens" in out and "cached / reusable tokens" in out
    assert out.count("█") > 0 and "per turn" in out


def synthetic(hashes: list[str], segments: list[int], prompt: int, page: int = 4) -> dict:
    return {"blocks": [{"hash": h} for h in hashes], "segment_tokens": segments,
            "usage": {"prompt_tokens": prompt}, "trace": {"page_size": page}}


def test_reusable_tokens_stop_at_the_first_changed_block_floor_to_pages_and_cap():
    previous = synthetic(["a", "b", "c"], [5, 6, 7, 2], 20)
    assert reusable_tokens(None, previous) == 0
    assert reusable_tokens(previous, synthetic(["a", "b", "x", "d"], [5, 6, 9, 3, 2], 25)) == 8  # 11 -> 8
    assert reusable_tokens(previous, synthetic(["x", "b", "c"], [5, 6, 7, 2], 20)) == 0
    assert reusable_tokens(previous, synthetic(["a", "b", "c"], [5, 6, 7, 2], 20)) == 16  # 18 -> 16, cap 16
    aligned = synthetic(["a", "b", "c"], [4, 4, 4], 12)
    assert reusable_tokens(aligned, aligned) == 8  # all 12 shared, capped at (12 - 1) // 4 * 4


@pytest.mark.parametrize("args, message", [
    (["inspect", "nope-123"], "no session 'nope-123'"),
    (["inspect", "latest"], "no sessions"),
    (["inspect", "--repo", "{tmp}/absent"], "does not exist"),
    (["inspect", "--repo", "{tmp}/file.txt"], "not a directory"),
])
def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--repo" not in args:
        args += ["--repo", str(tmp_path)]
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
