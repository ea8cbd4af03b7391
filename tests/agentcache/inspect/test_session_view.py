"""`agentcache inspect [SESSION]`: every printed number checked against the raw session records, recomputed here."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

import agentcache

from agentcache.agent import Agent
from agentcache.backends.local import LocalBackend
from agentcache.cache_dir import models_dir
from agentcache.cli import main
from agentcache.config import RunConfig
from agentcache.inspect.session_view import reusable_tokens
from agentcache.session import Session
from engine import Engine, load_model
from layers import Block, Layer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "repo"
USAGE = ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens")


@pytest.fixture(scope="module")
def session_repo(tmp_path_factory):
    """A repo with one real 4-request session, run on a fresh engine so nothing is cached before it."""
    repo = tmp_path_factory.mktemp("inspect") / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    model = load_model("random-tiny-chat", cache_dir=models_dir())
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
    """The previous prompt's length, capped at the current prompt minus one, in whole pages."""
    if previous is None:
        return 0
    page = current["trace"]["page_size"]
    tokens = min(previous["usage"]["prompt_tokens"], current["usage"]["prompt_tokens"] - 1)
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
    kept = sum(min(r["usage"]["cached_tokens"], expected_reusable(p, r)) for p, r in zip([None, *records], records))
    assert totals["reusable_hit_rate"] == pytest.approx(kept / reusable) and totals["reusable_hit_rate"] <= 1
    assert totals["cached_beyond_reusable"] == cached - kept


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
    assert "cached / prompt tokens" in out and "reusable tokens served from cache" in out
    assert out.count("█") > 0 and "per turn" in out


def test_speculative_decodings_tokens_per_request_and_in_total(tmp_path, capsys):
    """A session whose engine drafted by prompt lookup: each row's drafted and accepted tokens are the record's, the
    totals their sums, and the table's line says them."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    model = load_model("random-tiny-chat", cache_dir=models_dir())
    backend = LocalBackend(model, Engine(model, capacity_bytes=64 << 20), speculate="lookup")
    session = Session.create(repo)
    Agent(repo, backend, RunConfig(max_turns=3, max_tokens=60, retries=10), session).run("Do it.")
    view = json.loads(cli(capsys, "inspect", session.id, "--repo", str(repo), "--json")[1])
    records = raw_requests(session)
    for record, row in zip(records, view["requests"]):
        assert (row["drafted_tokens"], row["accepted_tokens"]) == (record["usage"]["drafted_tokens"],
                                                                   record["usage"]["accepted_tokens"])
    drafted = sum(r["usage"]["drafted_tokens"] for r in records)
    accepted = sum(r["usage"]["accepted_tokens"] for r in records)
    assert (view["totals"]["drafted_tokens"], view["totals"]["accepted_tokens"]) == (drafted, accepted)
    assert drafted > 0 and 0 <= accepted <= drafted
    out = cli(capsys, "inspect", session.id, "--repo", str(repo))[1]
    assert f"speculative decoding: {drafted} tokens drafted, {accepted} accepted" in " ".join(out.split())


def test_no_speculation_line_where_nothing_was_drafted(session_repo, capsys):
    repo, session = session_repo
    assert all(r["usage"]["drafted_tokens"] == 0 for r in raw_requests(session))
    assert "speculative decoding" not in cli(capsys, "inspect", session.id, "--repo", str(repo))[1]


def synthetic(prompt: int, page: int = 4) -> dict:
    return {"usage": {"prompt_tokens": prompt}, "trace": {"page_size": page}}


def test_reusable_tokens_are_the_previous_prompt_floored_to_pages_and_capped():
    assert reusable_tokens(None, synthetic(20)) == 0
    assert reusable_tokens(synthetic(18), synthetic(25)) == 16  # 18 -> 16
    assert reusable_tokens(synthetic(20), synthetic(20)) == 16  # capped at (20 - 1) // 4 * 4
    assert reusable_tokens(synthetic(30), synthetic(13)) == 12  # a shorter prompt (compaction): its own cap
    assert reusable_tokens(synthetic(3), synthetic(30)) == 0  # less than a page


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


def test_cost_classes_are_recomputed_from_the_records_and_the_price_tables(session_repo, capsys):
    repo, session = session_repo
    cost = json.loads(cli(capsys, "inspect", "--repo", str(repo), "--json")[1])["cost"]
    records = raw_requests(session)
    total = {name: sum(r["usage"][name] for r in records) for name in USAGE}
    assert cost["backend"] == "local"
    assert cost["transmitted"]["prompt_tokens"] == total["prompt_tokens"]
    assert cost["inference"]["attended_tokens"] == total["cached_tokens"] + total["computed_tokens"]
    assert cost["inference"]["computed_tokens"] == total["computed_tokens"]
    prices = yaml.safe_load((Path(agentcache.__file__).parent / "inspect" / "prices.yaml").read_text())
    assert cost["billed"]["prices_date"] == prices["date"] and cost["billed"]["cache_ttl"] == "5m"
    anthropic = prices["providers"]["anthropic"]
    assert anthropic["cache_write"]["5m"] == pytest.approx(1.25 * anthropic["input"])
    assert anthropic["cache_write"]["1h"] == pytest.approx(2.0 * anthropic["input"])
    assert anthropic["cached_input"] == pytest.approx(0.1 * anthropic["input"])
    expected = (total["cached_tokens"] * anthropic["input"] * 0.1 + total["computed_tokens"] * anthropic["input"] * 1.25
                + total["completion_tokens"] * anthropic["output"]) / 1e6
    assert cost["billed"]["usd"]["anthropic"] == pytest.approx(expected)
    assert cost["billed"]["usd"]["local"] == 0


def test_block_texts_are_stored_once_per_hash_and_match_the_logged_hashes(session_repo):
    _, session = session_repo
    raw = [json.loads(line) for line in session.path.read_text(encoding="utf-8").splitlines()]
    stored = [r for r in raw if r["type"] == "block"]
    assert len({r["hash"] for r in stored}) == len(stored)
    texts = {r["hash"]: r["text"] for r in stored}
    for record in raw_requests(session):
        assert record["backend"] == "local" and record["model"] == "random-tiny-chat" and record["salt"] == ""
        for block in record["blocks"]:
            rebuilt = Block(Layer[block["layer"]], block["kind"], block["key"], texts[block["hash"]].encode())
            assert rebuilt.hash == block["hash"]


def test_corrupt_and_truncated_lines_are_reported_by_number_and_skipped(session_repo, tmp_path, capsys):
    repo, session = session_repo
    lines = session.path.read_text(encoding="utf-8").splitlines(keepends=True)
    requests_at = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "request"]
    broken = list(lines)
    broken[requests_at[1]] = "{not json\n"
    broken[-1] = broken[-1][: len(broken[-1]) // 2]  # a run killed mid-write
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    target = copy / ".agentcache" / "sessions" / session.path.name
    target.write_text("".join(broken), encoding="utf-8")
    code, out, err = cli(capsys, "inspect", "--repo", str(copy), "--json")
    assert code == 0
    view = json.loads(out)
    survivors = [json.loads(line) for i, line in enumerate(lines)
                 if i not in (requests_at[1], len(lines) - 1) and json.loads(line)["type"] == "request"]
    assert [r["turn"] for r in view["requests"]] == [r["turn"] for r in survivors]
    assert view["bad_lines"] == [requests_at[1] + 1, len(lines)]
    assert f"line {requests_at[1] + 1} " in err and f"line {len(lines)} " in err
    code, out, err = cli(capsys, "inspect", "--repo", str(copy), "--explain", "--json")
    assert code == 0 and len(json.loads(out)["requests"]) == len(survivors)
    target.write_text("garbage\n{\n", encoding="utf-8")
    code, out, err = cli(capsys, "inspect", "--repo", str(copy))
    assert code == 2 and "line 1 " in err and "no valid record" in err


def test_layers_status_against_the_last_session(session_repo, tmp_path, capsys):
    repo, _ = session_repo
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    rows = json.loads(cli(capsys, "inspect", "--layers", "--repo", str(copy), "--json")[1])["blocks"]
    assert {r["status"] for r in rows} == {"same"}
    (copy / "AGENTS.md").write_text("New rules.\n")
    (copy / "README.md").unlink()
    (copy / "SPEC.md").write_text("A spec.\n")
    rows = json.loads(cli(capsys, "inspect", "--layers", "--repo", str(copy), "--json")[1])["blocks"]
    status = {r["key"]: r["status"] for r in rows}
    assert status["AGENTS.md"] == "changed" and status["README.md"] == "gone" and status["SPEC.md"] == "new"
    assert status["system.md"] == "same"
    empty = tmp_path / "empty"
    shutil.copytree(EXAMPLE, empty, ignore=shutil.ignore_patterns(".agentcache"))
    rows = json.loads(cli(capsys, "inspect", "--layers", "--repo", str(empty), "--json")[1])["blocks"]
    assert {r["status"] for r in rows} == {None} and {r["cause"] for r in rows} == {None}


def expected_blocks(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """(kind, key, status) per block of b against a, then a `gone` row per block of a that b lacks."""
    old = {(x["layer"], x["kind"], x["key"]): x["hash"] for x in a["blocks"]}
    new = {(x["layer"], x["kind"], x["key"]) for x in b["blocks"]}
    rows = [(x["kind"], x["key"], "new" if (x["layer"], x["kind"], x["key"]) not in old else
             "same" if old[(x["layer"], x["kind"], x["key"])] == x["hash"] else "changed") for x in b["blocks"]]
    return rows + [(x["kind"], x["key"], "gone") for x in a["blocks"] if (x["layer"], x["kind"], x["key"]) not in new]


def test_diff_of_two_request_references_matches_the_raw_records(session_repo, capsys):
    repo, session = session_repo
    records = raw_requests(session)
    code, out, err = cli(capsys, "inspect", "--diff", f"{session.id}:1", f"{session.id}:-1", "--repo", str(repo),
                         "--json")
    assert code == 0, err
    entry = json.loads(out)["diff"][0]
    first, last = records[0], records[-1]
    assert (entry["a"], entry["b"]) == (f"{session.id}:1", f"{session.id}:-1")
    assert entry["cached_tokens"] == last["usage"]["cached_tokens"]
    assert entry["reusable_tokens"] == expected_reusable(first, last) > 0
    assert [(r["kind"], r["key"], r["status"]) for r in entry["blocks"]] == expected_blocks(first, last)
    assert {r["status"] for r in entry["blocks"]} >= {"same", "new"}  # the prefix kept, the turns appended
    assert entry["miss"] is None  # the last request cached all of the first one's prompt and more
    code, out, err = cli(capsys, "inspect", "--diff", f"{session.id}:2", f"{session.id}:3", "--repo", str(repo))
    assert code == 0, err
    assert f"{session.id}:2 -> {session.id}:3" in out
    assert f"cached {records[2]['usage']['cached_tokens']} of {expected_reusable(records[1], records[2])}" in out


def planted_request(texts: dict[str, str]) -> list[dict]:
    """Block records and one request record over doc blocks (a model without a tokenizer: no model needed)."""
    blocks = [Block(Layer.L2, "doc", key, text.encode()) for key, text in texts.items()]
    usage = {"prompt_tokens": 10 * len(blocks) + 2, "cached_tokens": 0, "computed_tokens": 10 * len(blocks) + 2,
             "completion_tokens": 1}
    return [*({"type": "block", "hash": b.hash, "text": b.text} for b in blocks),
            {"type": "request", "turn": 1, "backend": "local", "model": "random-tiny", "salt": "", "fingerprint": "f",
             "blocks": [{"layer": "L2", "kind": "doc", "key": b.key, "hash": b.hash} for b in blocks],
             "segment_tokens": [10] * len(blocks) + [2], "usage": usage,
             "trace": {"page_size": 1, "stop_reason": "absent"}, "timings": {"ttft_s": 0.5, "queue_s": 0.0}}]


def test_sessions_created_in_one_second_keep_their_order(tmp_path, capsys, monkeypatch):
    """Two sessions in the same second, the later with the smaller random part: `latest` and the diff's
    earlier/later decision still follow creation order."""
    import time
    from types import SimpleNamespace

    import agentcache.session as session_module

    clock = iter([1_700_000_000_100_000_000, 1_700_000_000_900_000_000])  # 0.8 s apart, one second
    hexes = iter(["ffffff", "000000"])
    monkeypatch.setattr(session_module, "time", SimpleNamespace(
        time_ns=lambda: next(clock), strftime=time.strftime, gmtime=time.gmtime))
    monkeypatch.setattr(session_module, "secrets", SimpleNamespace(token_hex=lambda n: next(hexes)))
    earlier, later = Session.create(tmp_path), Session.create(tmp_path)
    for record in planted_request({"A.md": "alpha\n", "B.md": "beta\n"}):
        earlier.append(record)
    for record in planted_request({"A.md": "alpha\n", "B.md": "beta, edited\n"}):
        later.append(record)
    assert sorted([later.id, earlier.id]) == [earlier.id, later.id]
    code, out, err = cli(capsys, "inspect", "latest", "--repo", str(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)["session_id"] == later.id
    for refs in ((later.id, earlier.id), (earlier.id, later.id)):
        code, out, err = cli(capsys, "inspect", "--diff", *refs, "--repo", str(tmp_path), "--json")
        assert code == 0, err
        entry = json.loads(out)["diff"][0]
        assert (entry["a"], entry["b"]) == (f"{earlier.id}:-1", f"{later.id}:1")
        assert [(r["key"], r["status"]) for r in entry["blocks"]] == [("A.md", "same"), ("B.md", "changed")]
    code, out, err = cli(capsys, "inspect", "--diff", f"{later.id}:1", f"{earlier.id}:-1", "--repo", str(tmp_path),
                         "--json")
    entry = json.loads(out)["diff"][0]  # request references are taken in the order given
    assert code == 0 and (entry["a"], entry["b"]) == (f"{later.id}:1", f"{earlier.id}:-1")
