"""Typed session records: byte-exact round trips, a session the previous code wrote still loads and inspects the
same, wrong shapes are still refused by the one check, and `run --json` agrees with the raw session lines."""

import json
import shutil
from pathlib import Path

import pytest

from agentcache.agent import Agent
from agentcache.cli import main
from agentcache.config import RunConfig
from agentcache.records import (AgentStart, BlockText, Compaction, Request, Usage, UserTurn, parse_record,
                                record_problem, reusable_after_previous, shared_block_tokens)
from agentcache.session import Session
from agentcache.display import run_request
from tests.agentcache.conftest import random_chat_backend

DATA = Path(__file__).resolve().parent / "data"
PREVIOUS_ID = "20261202-061421-972291-fbc5fb"  # written by the code before the typed records (7 turns, 1 compaction)
FAST = ["--model", "random-tiny-chat", "--max-tokens", "16"]


def raw_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def line_of(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


@pytest.fixture()
def previous_repo(repo):
    sessions = repo / ".agentcache" / "sessions"
    sessions.mkdir(parents=True)
    shutil.copy(DATA / f"{PREVIOUS_ID}.jsonl", sessions)
    return repo


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def test_every_line_the_previous_code_wrote_round_trips_byte_for_byte():
    lines = raw_lines(DATA / f"{PREVIOUS_ID}.jsonl")
    kinds = set()
    for line in lines:
        record = json.loads(line)
        typed = parse_record(record)
        kinds.add(type(typed))
        assert line_of(typed.to_json()) == line
    assert kinds == {UserTurn, BlockText, Request, Compaction}


def test_the_agent_writes_the_keys_the_previous_code_wrote(repo):
    session = Session.create(repo)
    Agent(repo, random_chat_backend(), RunConfig(max_turns=2, max_tokens=16, retries=5), session).run("Do it.")
    old = [json.loads(line) for line in raw_lines(DATA / f"{PREVIOUS_ID}.jsonl")]
    optional = {"tool_call", "tool_result", "error", "layout", "at", "tool_format"}  # "at", "tool_format": new, and
    # older readers ignore them
    keys = {(r["type"], frozenset(set(r) - optional)) for r in old}
    for line in raw_lines(session.path):
        record = json.loads(line)
        assert (record["type"], frozenset(set(record) - optional)) in keys
        assert line_of(parse_record(record).to_json()) == line


def test_the_previous_session_inspects_as_it_did(previous_repo, capsys):
    code, out, _ = cli(capsys, "inspect", "--repo", str(previous_repo), "--json")
    view = json.loads(out)
    assert view.pop("compactions") == []  # new since; its compaction was written without token counts
    assert view["totals"].pop("cached_beyond_reusable") == 0  # new since: its cached tokens never passed the reusable
    assert code == 0 and view == json.loads((DATA / "previous_inspect.json").read_text())
    code, out, _ = cli(capsys, "inspect", "--repo", str(previous_repo), "--explain", "--json")
    view = json.loads(out)
    ledger = view.pop("ledger")  # new since: the miss ledger, and each miss's source, change and ledger tag
    added = [entry["miss"].pop(key) for entry in view["requests"] if entry["miss"]
             for key in ("source", "change", "ledger")]
    expected = json.loads((DATA / "previous_explain.json").read_text())
    assert [rendered_since(entry["miss"]) for entry in view["requests"] if entry["miss"]] == \
        [rendered_since(entry["miss"], expected=True) for entry in expected["requests"] if entry["miss"]]
    assert code == 0 and view == expected
    assert added[0] == "content" and added[1].startswith("L3 user user added at block 9") and added[2] == "compaction"
    assert ledger["causes"]["compaction"] == {"misses": 1, "tokens": 240} and ledger["unexplained"] == 0
    code, out, _ = cli(capsys, "inspect", "--repo", str(previous_repo), "--diff", f"{PREVIOUS_ID}:5",
                       f"{PREVIOUS_ID}:6", "--json")
    view = json.loads(out)
    assert {view["diff"][0]["miss"].pop(key) for key in ("source", "change")} >= {"content"}  # new since
    expected = json.loads((DATA / "previous_diff.json").read_text())
    assert rendered_since(view["diff"][0]["miss"]) == rendered_since(expected["diff"][0]["miss"], expected=True)
    assert code == 0 and view == expected


BYTE_LEVEL = ("byte_offset", "block_byte_offset", "tokens_before", "tokens_after", "previous_tokens_after")


def rendered_since(miss: dict, expected: bool = False) -> int:
    """Takes the byte- and token-level fields out of a miss; returns the first token of the block it is in. The
    session was sent with the format instructions from before raw ``` blocks: rebuilt now, its prompts are not the
    bytes it sent, so inspect says so (prompt_rebuilt false) and explains the miss from its blocks and recorded token
    counts alone: at the first token of the differing block, one before the token it first differed at then (both
    blocks start with <|im_start|>)."""
    fields = [miss.pop(key, None) for key in BYTE_LEVEL]
    assert miss.pop("prompt_rebuilt") is expected and (expected or not any(fields))
    return miss.pop("token_position") - (1 if expected else 0)


def test_the_previous_session_resumes_after_its_compaction(previous_repo):
    session = Session.open(previous_repo, PREVIOUS_ID)
    agent = Agent(previous_repo, random_chat_backend(), RunConfig(), session)
    last_id = agent.resume()
    raw = [json.loads(line) for line in raw_lines(session.path)]
    check = raw.pop()  # what resume found, appended last
    assert check["type"] == "resume" and check["blocks"] > 0
    compaction = next(r for r in raw if r["type"] == "compaction")
    after = raw[raw.index(compaction) + 1:]
    expected_l3 = [e["text"] for e in compaction["l3"]] + [e["text"] for r in after for e in r.get("appended", [])]
    assert [b.text for b in agent.context.l3] == expected_l3
    assert agent.turns_done == 7 and last_id == raw[-1]["context_id"]
    assert agent.stored_blocks == {r["hash"] for r in raw if r["type"] == "block"}


@pytest.mark.parametrize("record, problem", [
    ({"type": "request", "turn": 1, "usage": {"prompt_tokens": "9"}}, "'usage' of a request record must be"),
    ({"type": "request", "usage": {}}, "a request record without 'turn'"),
    ({"type": "compaction", "l3": [{"kind": "user"}]}, "'l3' of a compaction record must be"),
    ({"type": "agent", "forked_from": "parent"}, "'forked_from' of a agent record must be"),
])
def test_wrong_shapes_are_refused_by_the_one_check_before_any_typed_read(repo, record, problem):
    session = Session.create(repo)
    session.append(record)
    records, bad = session.read()
    assert records == [] and len(bad) == 1 and bad[0].problem.startswith(problem)
    assert record_problem(record).startswith(problem)


def test_typed_records_pass_the_check_they_are_read_under():
    usage = Usage(10, 8, 2, 3, extra={"disk_tokens": 4})
    records = [Request(1, usage, tool_call={"name": "list_files", "arguments": {}},
                       tool_result={"output": "a.py", "is_error": False}),
               BlockText("ab", "text"), Compaction([{"kind": "user", "key": "user", "text": "t"}], 3, "c"),
               UserTurn([{"kind": "user", "key": "user", "text": "t"}]), AgentStart("s", "a", "coder")]
    for record in records:
        data = record.to_json()
        assert record_problem(data) is None
        assert parse_record(json.loads(json.dumps(data))) == record
    assert records[0].to_json()["usage"] == {"prompt_tokens": 10, "cached_tokens": 8, "computed_tokens": 2,
                                             "completion_tokens": 3, "disk_tokens": 4}
    assert "error" not in records[0].to_json() and Usage().hit_rate is None and usage.hit_rate == 0.8


def request(prompt: int, hashes: str, segments: list[int]) -> Request:
    return Request(1, Usage(prompt_tokens=prompt), blocks=[{"hash": h} for h in hashes], segment_tokens=segments,
                   trace={"page_size": 4})


def test_the_two_reusable_definitions_differ_where_their_docstrings_say():
    """Inspect's counts the previous prompt's length; scripts' count only the leading blocks shared."""
    earlier, current = request(20, "abc", [8, 8, 4]), request(30, "axc", [8, 12, 10])
    assert reusable_after_previous(earlier, current) == 20  # the whole previous prompt, in pages
    assert shared_block_tokens(earlier, current) == 8  # block "a" only: "b" changed
    assert reusable_after_previous(None, current) == 0
    assert shared_block_tokens(request(40, "abc", [20, 10, 10]), request(22, "abc", [20, 1, 1])) == 20  # capped


def test_run_json_carries_prefix_and_per_request_tokens_read_from_the_session_lines(repo, capsys):
    code, out, err = cli(capsys, "run", "Say hi.", "--repo", str(repo), *FAST, "--max-turns", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    path = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    raw = [r for r in map(json.loads, raw_lines(path)) if r["type"] == "request"]
    assert summary["prefix_tokens"] == raw[-1]["prefix_tokens"] > 0
    for row, line in zip(summary["requests"], raw, strict=True):
        assert row == {"turn": line["turn"], "usage": line["usage"], "prompt_tokens": line["usage"]["prompt_tokens"],
                       "cached_tokens": line["usage"]["cached_tokens"],
                       "computed_tokens": line["usage"]["computed_tokens"], "ttft_s": line["timings"]["ttft_s"],
                       "tool": (line.get("tool_call") or {}).get("name")}


def test_run_request_names_the_tool_of_each_previous_request():
    raw = [r for r in map(json.loads, raw_lines(DATA / f"{PREVIOUS_ID}.jsonl")) if r["type"] == "request"]
    tools = [run_request(Request.from_json(r))["tool"] for r in raw]
    assert tools == [r["tool_call"]["name"] if "tool_call" in r else None for r in raw]
    assert tools[0] == "list_files" and tools[2] is None


def expected_turn_line(record: dict) -> str:
    """The on_turn line of a raw line, from its keys: a request's counts, TTFT and tool call, error or reply."""
    if record["type"] != "request":
        return ""
    usage, call = record["usage"], record.get("tool_call")
    action = f"{call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}" if call else record["reply"]
    if record.get("error"):
        action = f"invalid reply: {record['error']}"
    disk = f" (disk {usage['disk_tokens']})" if usage.get("disk_tokens") else ""
    return (f"turn {record['turn']}: prompt {usage['prompt_tokens']}  cached {usage['cached_tokens']}{disk}  "
            f"computed {usage['computed_tokens']}  completion {usage['completion_tokens']}  "
            f"ttft {record['timings']['ttft_s']:.2f}s  -> {action[:160]}")


def test_the_previous_session_reads_through_the_turn_line_the_table_and_the_layers_status(previous_repo, capsys,
                                                                                         monkeypatch):
    """The readers `inspect --json` does not reach, each against the raw lines: the on_turn printer, the session
    table's action column, and --layers' status against the session's last request."""
    from agentcache.display import turn_line

    raw = [json.loads(line) for line in raw_lines(DATA / f"{PREVIOUS_ID}.jsonl")]
    assert [turn_line(r) for r in raw] == [expected_turn_line(r) for r in raw]
    requests = [r for r in raw if r["type"] == "request"]
    monkeypatch.setenv("COLUMNS", "160")
    code, out, err = cli(capsys, "inspect", "--repo", str(previous_repo))
    assert code == 0, err
    for record in requests:
        action = "error" if record.get("error") else (record.get("tool_call") or {}).get("name", "answer")
        rows = [cells for cells in map(str.split, out.splitlines()) if cells[:1] == [str(record["turn"])]]
        assert rows[0][-1] == action and len(rows[0]) == 10  # the table row (turn ... stop action), then its bar
    code, out, err = cli(capsys, "inspect", "--layers", "--repo", str(previous_repo), "--json")
    assert code == 0, err
    last = {(b["layer"], b["kind"], b["key"]): b["hash"] for b in requests[-1]["blocks"] if b["layer"] != "L3"}
    rows = json.loads(out)["blocks"]
    for row in rows:
        was = last.get((row["layer"], row["kind"], row["key"]))
        assert row["status"] == ("new" if was is None else "same" if was == row["hash"] else "changed")
    shown = {(r["layer"], r["kind"], r["key"]) for r in rows}
    assert {r["status"] for r in rows} >= {"same"} and shown >= set(last)
