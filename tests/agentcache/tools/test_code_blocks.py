"""Code a reply writes as prose is the edit it is: a fenced block naming a file of the repo is merged into it by
definition (what the block leaves out is kept), refused with the file unchanged when it or the result does not
parse; end to end, a run in edit mode applies the reply the task suite saw the 1.5B write, records the change, and
goes on to the answer. In read-only mode the same reply is an answer (a plan, here) as before."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentcache.tools import ToolBox
from agentcache.tools.code_blocks import code_blocks
from tests.agentcache.http_helpers import chat_reply, run_scripted

MODULE = (Path(__file__).parent / "data" / "count.py").read_text()
REPLY = ("To fix it, we need to lower-case the word. Here's the updated code:\n\n```python\n# count.py\n"
         "import math\n\n\ndef first(xs):\n    return xs[0] if xs else None\n```\n\nThe tests will pass.")


@pytest.fixture
def module(repo: Path) -> Path:
    (repo / "count.py").write_text(MODULE)
    return repo / "count.py"


def test_blocks_are_found_by_a_path_comment_or_the_path_just_before_them(box: ToolBox, module: Path) -> None:
    found = code_blocks(REPLY, box.workspace)
    assert [(b.path, b.code) for b in found] == [("count.py", "import math\n\n\ndef first(xs):\n"
                                                               "    return xs[0] if xs else None\n")]
    before = "The updated `count.py`:\n```python\nLIMIT = 4\n```\n"
    assert [(b.path, b.code) for b in code_blocks(before, box.workspace)] == [("count.py", "LIMIT = 4\n")]
    assert code_blocks("```python\n# missing.py\nX = 1\n```\n", box.workspace) == []
    assert code_blocks("Run `count.py` like this:\n```\n$ python count.py\n```\n", box.workspace)[0].path == \
        "count.py"  # found; applying it is refused (it defines nothing)
    assert code_blocks("no code here, only count.py", box.workspace) == []
    for info in ("bash", "sh", "console", "json"):  # a command or data after the path is not the file's code
        assert code_blocks(f"Test `count.py` with:\n```{info}\npython -m pytest\n```\n", box.workspace) == []
        assert code_blocks(f"```{info}\n# count.py\nx\n```\n", box.workspace) == []
    assert [b.path for b in code_blocks("```py3\n# count.py\nX = 1\n```\n", box.workspace)] == ["count.py"]
    (module.parent / "other.py").write_text("def first(ys):\n    return ys\n\n\ndef second():\n    pass\n")
    by_names = "Here is the fix:\n```python\ndef first(xs):\n    return None\n\n\nclass Counter:\n    pass\n```\n"
    assert [b.path for b in code_blocks(by_names, box.workspace)] == ["count.py"]  # defines 2 of its names
    tie = "Here is the fix:\n```python\ndef first(xs):\n    return None\n```\n"
    assert code_blocks(tie, box.workspace) == []  # count.py and other.py both define first
    assert code_blocks(by_names.replace("```python", "```"), box.workspace) == []  # no language, no guess


def test_a_block_replaces_the_definitions_it_has_and_keeps_the_rest(box: ToolBox, module: Path) -> None:
    [(path, outcome)] = box.apply_code(REPLY)
    assert path == "count.py" and not outcome.is_error
    assert outcome.output == "applied the code block to count.py: replaced `first` (lines 7-8); added 1 import"
    assert module.read_text() == MODULE.replace("import re\n", "import re\nimport math\n").replace(
        "    return xs[0]\n", "    return xs[0] if xs else None\n")
    assert outcome.change is not None and outcome.change.before == MODULE and outcome.change.after == \
        module.read_text()


def test_a_partial_class_has_only_its_methods_replaced_and_new_ones_added(box: ToolBox, module: Path) -> None:
    reply = ("```python\n# count.py\nclass Counter:\n    def add(self, k):\n        self.n += 2 * k\n"
             "        return self.n\n\n    def reset(self):\n        self.n = 0\n```\n")
    [(_, outcome)] = box.apply_code(reply)
    assert outcome.output == "applied the code block to count.py: replaced `Counter.add` (lines 19-21); " \
                             "added `Counter.reset`"
    text = module.read_text()
    assert "        self.n += 2 * k\n" in text and text.endswith("\n    def reset(self):\n        self.n = 0\n")
    assert "    @property\n    def twice(self):\n" in text and "def first(xs):" in text


def test_new_definitions_go_at_the_end_and_a_decorated_one_is_replaced_whole(box: ToolBox, module: Path) -> None:
    reply = ("`count.py`:\n```python\nclass Counter:\n    def __init__(self):\n        self.n = 1\n\n"
             "    @property\n    def twice(self):\n        return self.n * 2\n\n    def add(self, k):\n"
             "        return k\n\n\ndef last(xs):\n    return xs[-1]\n```\n")
    [(_, outcome)] = box.apply_code(reply)
    assert outcome.output == "applied the code block to count.py: replaced `Counter` (lines 11-21); added `last`"
    text = module.read_text()
    assert text.count("@property") == 1 and text.endswith("\n\n\ndef last(xs):\n    return xs[-1]\n")


def test_blocks_that_do_not_parse_or_change_nothing_leave_the_file_as_it_was(box: ToolBox, module: Path) -> None:
    for reply, message in (("```python\n# count.py\ndef first(xs:\n```\n", "the code block for count.py does not "
                                                                             "parse (line 1"),
                           ("```python\n# count.py\n$ run it\n```\n", "does not parse"),
                           ("```python\n# count.py\nLIMIT = 3\n```\n", "the code block matches count.py; nothing "
                                                                       "changed")):
        [(_, outcome)] = box.apply_code(reply)
        assert message in outcome.output and outcome.change is None
        assert module.read_text() == MODULE


def test_read_only_applies_nothing(repo: Path, module: Path) -> None:
    box = ToolBox(repo, enabled={"list_files", "read_file", "search", "finish"})
    assert box.apply_code(REPLY) == [] and module.read_text() == MODULE


def test_a_run_applies_a_prose_code_reply_records_it_and_answers(module: Path) -> None:
    repo = module.parent
    run = run_scripted(repo, "Make first() return None for an empty list.",
                       [chat_reply({"name": "read_file", "arguments": {"path": "count.py"}}),
                        chat_reply({"answer": REPLY}), chat_reply({"answer": REPLY})],
                       "--max-turns", "4")
    assert run.summary["reason"] == "answered" and run.summary["answer"] == REPLY  # the same code again: a report
    assert len(run.requests) == 3 and "tool_call" not in run.requests[2]
    assert "return xs[0] if xs else None" in module.read_text()
    applied = run.requests[1]
    assert applied["tool_call"] == {"name": "code_block", "arguments": {"paths": ["count.py"]}}
    [change] = applied["tool_result"]["changes"]
    assert change["before"] == MODULE and change["after"] == module.read_text()
    assert json.loads(applied["reply"]) == {"answer": REPLY} and applied.get("error") is None
    read_only = run_scripted(repo, "Where is first?", [chat_reply({"answer": REPLY})], "--mode", "read-only",
                             "--max-turns", "1")
    assert read_only.requests[0]["error"].startswith("that reply is a plan")


def test_code_for_no_file_is_sent_back_saying_how_to_name_one(module: Path) -> None:
    """The reply the suite saw the 1.5B write three times on ct-fix-kwargs-order: the README's example, fixed, with
    no path. It changes nothing and goes back saying how to place code; the run's retries still run out."""
    stray = ("To fix the bug, we need to pass the same arguments. Here's the corrected code:\n\n```python\n"
             "@cached(cache={})\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n```")
    run = run_scripted(module.parent, "Make first() return None for an empty list.", [chat_reply({"answer": stray})],
                       "--max-turns", "4")
    assert run.summary["reason"] == "invalid_output" and module.read_text() == MODULE
    assert run.requests[0]["error"].startswith("that reply's code names no file of the repository")
    assert "`# path/to/file.py`" in run.sent[1]["messages"][-1]["content"]
