"""Text the CLI did not write (model replies, file names, session fields) reaches the terminal inert: no escape, C1
or bidi character, no rich markup applied, no traceback; `--json` stays ASCII. The real CLI runs as a subprocess on a
real session whose fields and file names are hostile, and against a loopback server whose replies are; a script
string with a lone surrogate is one error line."""

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from agentcache.script.format import ScriptError, parse_script
from agentcache.terminal import cell, console, inert, write_json
from tests.agentcache.http_helpers import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repo"
BIDI = {chr(c) for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
OSC52 = "\x1b]52;c;aGVsbG8=\x07"  # writes "hello" to the clipboard
CLEAR = "\x1b[2J\x1b[H"
HOSTILE = f"[bold red]x[/]{OSC52}{CLEAR}\x9b31m\u202eab\u2066c\x00\x7f\r:smile:"
SESSION_ID = "20991231-000000-000000-[bold red]x\x1b[2J\x9b\u202e"  # no "/" in a file name: no "[/]" either
SKILL = "skills/[bold red]x[/]:smile:evil.md"  # "[/]" across a folder; control and bidi names are left out of layers


def unsafe(text: str) -> list[str]:
    """The characters a terminal could act on, by Unicode category (independent of agentcache.terminal)."""
    return [c for c in text if (unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n") or c in BIDI]


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "agentcache.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)
    return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")


def assert_clean(code: int, out: str, err: str) -> None:
    assert code == 0, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    assert unsafe(out) == [] and unsafe(err) == [], (unsafe(out), unsafe(err))


# --- the function ----------------------------------------------------------------------------------------------

def test_every_unsafe_code_point_is_escaped_and_every_other_kept():
    for code in range(0x110000):
        char = chr(code)
        shown = inert(char)
        assert unsafe(shown) == []
        if unsafe(char):
            assert shown == (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"), hex(code)
        else:
            assert shown == char, hex(code)


def test_escape_sequences_become_visible_text():
    assert inert(OSC52) == "\\x1b]52;c;aGVsbG8=\\x07"
    assert inert(CLEAR) == "\\x1b[2J\\x1b[H"
    assert inert("\u202egnp.exe") == "\\u202egnp.exe"
    assert inert("a\tb\nc\r\n") == "a\tb\nc\\x0d\n"
    assert inert("\x9b31m red \x85 \u2066x\u2069") == "\\x9b31m red \\x85 \\u2066x\\u2069"
    assert inert("\ud83d lone") == "\\ud83d lone"
    plain = "naïve 日本語 😀 [bold] \\x1b \u2028 \u00a0 e\u0301"
    assert inert(plain) == plain  # printable text, markup-looking text and a literal backslash are kept
    assert inert(inert(HOSTILE)) == inert(HOSTILE)


def test_cells_print_data_as_given():
    out = Console(record=True, width=400, highlight=False, emoji=False)
    table = Table(title=cell("[/] title"))
    table.add_row(cell("[bold red]row[/]"), cell(42), cell(r"[link=file:///etc]x\[y"), cell(HOSTILE))
    out.print(table)
    text = out.export_text()
    assert "[/] title" in text and "[bold red]row[/]" in text and " 42 " in text and inert(HOSTILE) in text
    assert r"[link=file:///etc]x\[y" in text
    assert unsafe(text) == []
    assert cell(HOSTILE).spans == [] and cell(HOSTILE).plain == inert(HOSTILE)


def test_the_console_leaves_emoji_codes_and_the_json_is_ascii(capsys):
    console().print(inert(":smile: :warning:"), markup=False)
    assert capsys.readouterr().out == ":smile: :warning:\n"
    value = {"answer": HOSTILE, "key": SKILL}
    raw = json.dumps(value, ensure_ascii=False)
    assert "\x9b" in raw and "\u202e" in raw  # why --json is ASCII: ensure_ascii=False writes C1 and bidi raw
    write_json(value)
    out = capsys.readouterr().out
    assert out.isascii() and json.loads(out) == value


# --- inspect on a hostile session, every view --------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_repo(tmp_path_factory) -> Path:
    """A real session (random weights) in a repo with a hostile skill file name, then its fields made hostile,
    its file renamed to a hostile id and a bad line added."""
    repo = tmp_path_factory.mktemp("hostile") / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    (repo / SKILL).parent.mkdir(parents=True)
    text = HOSTILE.replace("\x00", "")  # a NUL makes a file binary, and cannot be in an argument
    (repo / SKILL).write_text(f"# Skill\n\nBuilt 2024-05-01 in /tmp/build-1. {text}\n")
    code, out, err = run_cli("run", f"Say hi. {text}", "--repo", str(repo), "--model",
                             "random-tiny-chat", "--max-tokens", "16", "--max-turns", "2")
    assert code == 0, err
    [path] = (repo / ".agentcache" / "sessions").glob("*.jsonl")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    requests = [r for r in records if r["type"] == "request"]
    assert any(b["key"] == SKILL for b in requests[0]["blocks"])
    first, last = requests[0], requests[-1]
    first.update(model=HOSTILE, purpose=HOSTILE, stop_reason=HOSTILE, reply=HOSTILE, error=HOSTILE,
                 routing_key=HOSTILE, replica=HOSTILE)
    last["usage"].update(cached_tokens=0, computed_tokens=last["usage"]["prompt_tokens"])  # a miss to explain
    last.update(backend=HOSTILE, stop_reason=HOSTILE, reply=HOSTILE, error=None, routing_key=HOSTILE,
                replica=HOSTILE, tool_call={"name": HOSTILE, "arguments": {HOSTILE: HOSTILE}},
                tool_result={"output": HOSTILE, "is_error": True})
    for block in last["blocks"]:
        if block["layer"] == "L3":
            block.update(key=HOSTILE, kind=HOSTILE)
    last["blocks"][0]["key"] = HOSTILE  # where explain places the miss (a model change: at the first block)
    lines = [json.dumps(r, ensure_ascii=False) for r in records] + [f"not json {CLEAR}"]
    path.unlink()
    (path.parent / f"{SESSION_ID}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return repo


VIEWS = {
    "session": [], "explain": ["--explain"], "diff": ["--diff", f"{SESSION_ID}:1", f"{SESSION_ID}:-1"],
    "layers": ["--layers"],
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_inspect_view_prints_hostile_data_inert(hostile_repo, view):
    code, out, err = run_cli("inspect", *VIEWS[view], "--repo", str(hostile_repo))
    assert_clean(code, out, err)
    assert "red]x" in out and "\\x9b" in out, out  # the markup shown (a title may wrap at its space), C1 escaped
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and inert(SESSION_ID) in warnings[0] and "not valid JSON" in warnings[0], err
    if view == "session":
        assert f"session {inert(SESSION_ID)}" in out and inert(HOSTILE) in out  # the action column: its purpose
        assert f"cost ({inert(HOSTILE)} backend)" in out and "[prices of " in out
    if view in ("diff", "explain"):
        assert inert(HOSTILE) in out  # a block's key and kind
    if view == "layers":
        assert f"volatile content in L2 skill {inert(SKILL)}" in out


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_inspect_view_as_json_is_ascii_and_keeps_the_data(hostile_repo, view):
    code, out, err = run_cli("inspect", *VIEWS[view], "--json", "--repo", str(hostile_repo))
    assert_clean(code, out, err)
    assert out.isascii()
    report = json.loads(out)
    if view in ("session", "explain"):
        assert report["session_id"] == SESSION_ID
    if view == "layers":
        assert SKILL in [b["key"] for b in report["blocks"]]
    if view == "diff":
        assert HOSTILE in [b["key"] for b in report["diff"][0]["blocks"]]


# --- run and script: a loopback server's hostile replies ----------------------------------------------------------

NO_MODEL_CARDS = (200, {"object": "list", "data": []})
NO_CONTEXTS = (404, {"error": {"message": "Not Found"}})


def completion(reply: dict) -> tuple[int, dict]:
    return (200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(reply)},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


REPLIES = [completion({"name": "read_file", "arguments": {"path": f"{CLEAR}{SKILL}"}}),
           completion({"answer": HOSTILE})]
# a turn line shows the call's arguments as JSON: C0 as \u001b escapes already, C1 and bidi by inert
CALL_SHOWN = "read_file " + inert(json.dumps({"path": f"{CLEAR}{SKILL}"}, ensure_ascii=False))


@pytest.fixture()
def small_repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("# demo\n")
    return repo


@pytest.mark.parametrize("as_json", [False, True])
def test_run_prints_a_hostile_answer_and_turn_lines_inert(small_repo, as_json):
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *REPLIES], repeat_last=True) as server:
        code, out, err = run_cli("run", "Read the skill.", "--repo", str(small_repo), "--backend", "openai",
                                 "--base-url", server.url + "/v1", "--model", "m", "--max-turns", "3",
                                 *(["--json"] if as_json else []))
    assert_clean(code, out, err)
    lines = err if as_json else out
    assert f"-> {CALL_SHOWN}\n" in lines  # the turn line
    if as_json:
        assert out.isascii() and json.loads(out)["answer"] == HOSTILE
    else:
        assert out.rstrip("\n").endswith(inert(HOSTILE)), out[-500:]


def test_run_resuming_a_session_with_a_hostile_id_prints_it_inert(small_repo):
    for resume in ([], ["--resume", "latest"]):
        with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *REPLIES], repeat_last=True) as server:
            code, out, err = run_cli("run", "Read the skill.", *resume, "--repo", str(small_repo), "--backend",
                                     "openai", "--base-url", server.url + "/v1", "--model", "m", "--routing", "none")
            # (routing: session would send the id as an HTTP header, where a non-ASCII id cannot go)
        if not resume:
            assert code == 0, err
            [path] = (small_repo / ".agentcache" / "sessions").glob("*.jsonl")
            path.rename(path.with_name(f"{SESSION_ID}.jsonl"))
    assert_clean(code, out, err)
    assert f"resume: verified against the last request of session {inert(SESSION_ID)}" in out
    assert f"answered after 4 turns; session {inert(SESSION_ID)}\n" in out


def test_script_prints_hostile_answers_and_its_file_name_inert(small_repo):
    script = small_repo / "[bold red]s\x9b\u202e.yaml"
    script.write_text("agents:\n  - name: a\n    role: coder\nsteps:\n  - run: a\n    task: Read the skill.\n")
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *REPLIES], repeat_last=True) as server:
        (small_repo / "agentcache.yaml").write_text(f"backend: openai\nbase_url: {server.url}/v1\nmodel: m\n")
        assert run_cli("trust", "--repo", str(small_repo))[0] == 0
        code, out, err = run_cli("script", str(script), "--repo", str(small_repo))
    assert_clean(code, out, err)
    assert "script [bold red]s\\x9b\\u202e" in out  # the report's title: the file name, not styled
    assert f"-> {CALL_SHOWN}\n" in out and "[a] turn 1: " in out  # plain event lines (no terminal: no live table)
    assert f"{inert('[bold red]x[/]' + OSC52 + CLEAR)}\\x9b31m" in out  # the answer in the report


# --- a lone surrogate in a script ----------------------------------------------------------------------------------

SURROGATE_SCRIPTS = {
    "yaml.yaml": ('agents:\n  - name: a\n    role: coder\nsteps:\n  - run: a\n    task: "read \\ud800 it"\n', 6, "d800"),
    "json.json": ('{"agents": [{"name": "a", "role": "coder"}],\n "steps": [{"run": "a",\n  "task": "x \\udc00"}]}\n',
                  3, "dc00"),
    "key.yaml": ('agents:\n  - name: a\n    role: coder\n    "\\udbff": 1\nsteps:\n  - run: a\n    task: t\n', 4, "dbff"),
    "end.yaml": ('agents:\n  - name: a\n    role: coder\nsteps:\n  - run: a\n    task: "pair cut \\ud83d"\n', 6, "d83d"),
}


@pytest.mark.parametrize("name", list(SURROGATE_SCRIPTS))
def test_a_lone_surrogate_in_a_script_is_one_error_line_naming_its_line(small_repo, name):
    text, line, code_unit = SURROGATE_SCRIPTS[name]
    script = small_repo / name
    script.write_text(text)
    code, out, err = run_cli("script", str(script), "--repo", str(small_repo), "--model", "random-tiny-chat")
    assert code == 2 and "Traceback" not in err, err
    assert err.splitlines() == [f"error: {name} line {line}: a string holds a lone surrogate \\u{code_unit}, "
                                "which is not text"], err


def test_a_surrogate_pair_escape_in_a_script_is_one_character():
    text = 'agents:\n  - name: a\n    role: coder\nsteps:\n  - run: a\n    task: "smile \\ud83d\\ude00"\n'
    assert parse_script(text, "pair").steps[0][0].task == "smile \U0001f600"
    with pytest.raises(ScriptError, match="line 6: a string holds a lone surrogate"):
        parse_script(text.replace("\\ude00", ""), "cut")
