"""benchmarks.task_checks: each checker on right answers, wrong ones and every non-answer shape of issue 31 (plans, tool
calls written out, code fences, several candidates), with the committed stored answers as fixtures; expected values
that follow the repo; find-then-read checks on what the session's tools showed; edit checks that undo an agent's
weakened tests and added test configuration; and benchmarks.regrade on the committed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import regrade, tasks
from benchmarks.task_checks import (SUITE_TEST, DefinedIn, Number, Text, numbers_in, ranking_helper, ranking_line,
                                    repo_env)
from benchmarks.task_set import EXAMPLE, fresh_copy
from benchmarks.tasks_textstats import LONG_TASKS, TASKS
from tests.benchmarks.repo_files import everything_read

BY_ID = {task.id: task for task in TASKS + LONG_TASKS}
QUESTIONS = [task for task in TASKS if task.kind != "edit"]
RESULTS = Path(regrade.__file__).resolve().parent / "results"
DEFAULT = "tasks-qwen2.5-coder-1.5b-gguf.json"  # the default model's committed run
INT8 = "tasks-qwen2.5-coder-1.5b-int8.json"


def stored(file: str, task_id: str, model: str = "qwen2.5-coder-1.5b") -> dict:
    report = json.loads((RESULTS / file).read_text(encoding="utf-8"))
    [record] = [t for m in report["models"] if m["name"] == model for t in m["tasks"] if t["id"] == task_id]
    return record


def check(task_id: str, answer: str | None) -> bool:
    return BY_ID[task_id].check(answer, EXAMPLE, everything_read(EXAMPLE)).passed


# The issue's non-answers, as the committed runs stored them (their first 200 characters): each passed before.
ISSUE_NON_ANSWERS = [
    (DEFAULT, "top-default", "To answer this question, I need to search for the line where the `--top` argument is "
     "defined in the `textstats/cli.py` file. I will use the `search` function to find this line.\n\n```json\n"
     '{\n  "name": "s'),
    (INT8, "where-syllables", "To define the function `syllables`, you would need to add the following code to "
     "`textstats/readability.py`:\n\n```python\n"),
    (DEFAULT, "vowel-pattern", "To find the module that counts syllables and the regular expression it uses to find "
     "groups of vowels, you can search for the `syllables` function in the `textstats` module."),
    (INT8, "rounding-places", "To compute the average word length, the code in `textstats/stats.py` is as follows:"
     "\n\n```python\ndef compute_stats(text):\n"),
]


@pytest.mark.parametrize(("file", "task_id", "start"), ISSUE_NON_ANSWERS, ids=lambda v: str(v)[:20])
def test_the_stored_non_answers_the_issue_names_passed_before_and_fail_now(file, task_id, start):
    record = stored(file, task_id)
    assert record["passed"] and record["answer"].startswith(start)
    assert not check(task_id, record["answer"])
    assert not check(task_id, start)  # each is a non-answer on its own, before the rest of it


@pytest.mark.parametrize("part", [
    "To answer this question, I need to search for the line where the `--top` argument is defined in the "
    "`textstats/cli.py` file. I will use the `search` function to find this line.",  # a plan
    '{\n  "name": "search",\n  "arguments": {"pattern": "default=5"}\n}',  # the tool call it wrote out
    "```json\n5\n```",  # a fence
    "The `search` tool shows the default is 5.",  # a tool named
    "read_file shows 5.",
    "3 or 4", "5 or 10", "It is 5 (line 15).",  # several numbers
])
def test_each_part_of_the_default_models_top_default_answer_fails_on_its_own(part):
    assert not check("top-default", part)
    assert check("top-default", "5")


# The smallest right answer of each question, and the same answer dressed as each non-answer.
RIGHT = {
    "where-split-sentences": "textstats/words.py", "where-text-stats": "textstats/stats.py",
    "where-syllables": "textstats/readability.py", "syllables-of-banana": "3", "top-default": "5",
    "count-tests": "11", "count-fields": "5", "vowel-pattern": "`[aeiouy]+`", "rank-helper": "`top_words`",
    "rounding-places": "2", "cli-test-words": "4",
}
SHAPES = {
    "code fence": "```\n{}\n```",
    "python fence": "The answer:\n```python\n{}\n```",
    "tool call as JSON": '{{"name": "finish", "arguments": {{"answer": "{}"}}}}',
    "tool call in tags": '<tool_call>\n{{"name": "finish", "arguments": {{"answer": "{}"}}}}\n</tool_call>',
    "I will": "I will read the file to confirm that it is {}.",
    "I need to": "I need to search the repository; it may be {}.",
    "you can search": "To find it, you can search the repository for {}.",
    "you would need": "You would need to add {} to the module.",
    "we need": "We need to check {} first.",
    "let me": "Let me check: {}",
    "refusal": "I apologize, but I cannot confirm {}.",
    "a tool named": "The `search` function finds {}.",
    "a tool named as a call": "list_files() and then {}",
    "a long frame": "{} " + "is what the code in the repository says after reading it through " * 3,
}
RIVALS = {  # the right answer beside another candidate of its kind
    "where-split-sentences": "textstats/words.py or textstats/stats.py",
    "where-text-stats": "`textstats/stats.py` (tested in `tests/test_stats.py`)",
    "where-syllables": "readability.py, or maybe syllables.py",
    "syllables-of-banana": "3 or 4", "top-default": "5, or 10 with --json", "count-tests": "11 (in 4 files)",
    "count-fields": "5 of 6", "vowel-pattern": "`[aeiouy]+` or `[aeiou]+`",
    "rank-helper": "`compute_stats` calls `top_words`", "rounding-places": "to 2 places, at line 29",
    "cli-test-words": "4 words in 2 sentences",
}


def test_every_question_has_a_right_answer_and_a_rival():
    assert set(RIGHT) == set(RIVALS) == {task.id for task in QUESTIONS}


@pytest.mark.parametrize("task_id", sorted(RIGHT))
def test_a_question_passes_its_bare_answer_and_one_in_a_short_sentence(task_id):
    assert check(task_id, RIGHT[task_id])
    assert check(task_id, f"The answer to the question is {RIGHT[task_id]}.")


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("task_id", sorted(RIGHT))
def test_a_question_fails_its_right_answer_in_every_non_answer_shape(task_id, shape):
    assert not check(task_id, SHAPES[shape].format(RIGHT[task_id]))


@pytest.mark.parametrize("task_id", sorted(RIGHT))
def test_a_question_fails_its_right_answer_beside_a_rival_and_fails_no_answer(task_id):
    assert not check(task_id, RIVALS[task_id])
    assert not check(task_id, None) and not check(task_id, "  ")


def test_number_takes_one_number_in_digits_or_words():
    assert set(numbers_in("3 or three or 3.0")) == {3.0} and set(numbers_in("3 or 4")) == {3.0, 4.0}
    for right in ("3", "3.", "It returns 3.", "three", "3.0", "`syllables(\"banana\")` returns 3"):
        assert check("syllables-of-banana", right), right
    for wrong in ("33", "3.5", "2", "3 or 4", "three or four", "between 2 and 3", "It returns 3 (line 12).",
                  "1, 2, 3, 4 or 5", "qwen2.5 says 2"):
        assert not check("syllables-of-banana", wrong), wrong


def test_defined_in_takes_one_path_however_it_is_written():
    for right in ("textstats/words.py", "./textstats/words.py", "words.py", "`words.py` (textstats/words.py)",
                  "The function `split_sentences` is defined in the file `textstats/words.py` at line 15."):
        assert check("where-split-sentences", right), right
    for wrong in ("textstats/stats.py", "tests/test_words.py", "textstats/words.py, tested in tests/test_words.py",
                  "the `textstats.words` module", "textstats/words"):
        assert not check("where-split-sentences", wrong), wrong


def test_text_takes_a_name_or_pattern_with_its_place_but_no_rival_of_its_kind():
    for right in ("The helper function that ranks the most frequent words is `top_words`.", "`stats.top_words`",
                  "top_words", "`top_words(tokens, top)`, in textstats/stats.py", "It is 'top_words'."):
        assert check("rank-helper", right), right
    for wrong in ("top_words_of", "`compute_stats` calls `top_words`", "top_words or compute_stats",
                  "`textstats/stats.py`", "`top_words`, `sorted` and `Counter`"):
        assert not check("rank-helper", wrong), wrong
    int8 = stored(INT8, "vowel-pattern")["answer"]
    assert int8.endswith('is `VOWEL_GROUP = re.compile(r"[aeiouy]+")`.') and check("vowel-pattern", int8)
    for right in ("[aeiouy]+", "'[aeiouy]+'", 'r"[aeiouy]+"',
                  "The `syllables` function in `textstats.readability` uses `[aeiouy]+`."):
        assert check("vowel-pattern", right), right
    for wrong in ("`[aeiouy]+$`", "[aeiouy]+ or [aeiou]+", "`[aeiouy]`", "aeiouy", "`(?=.*[aeiouAEIOU])`"):
        assert not check("vowel-pattern", wrong), wrong


def test_the_ranking_helper_is_worked_out_from_the_repo(tmp_path):
    assert (ranking_helper(EXAMPLE), ranking_line(EXAMPLE)) == ("top_words", "top_words=top_words(tokens, top),")
    copy = fresh_copy(EXAMPLE, tmp_path / "repo")
    for path in ("textstats/stats.py", "textstats/cli.py"):
        text = (copy / path).read_text(encoding="utf-8")
        (copy / path).write_text(text.replace("top_words(", "most_frequent("), encoding="utf-8")
    assert (ranking_helper(copy), ranking_line(copy)) == ("most_frequent", "top_words=most_frequent(tokens, top),")
    assert BY_ID["rank-helper"].check("`most_frequent`", copy, [(copy / "textstats/stats.py").read_text()]).passed


def test_a_find_then_read_answer_passes_only_where_a_tool_showed_its_line():
    rank = BY_ID["rank-helper"].check
    answer = stored(DEFAULT, "rank-helper")["answer"]
    assert answer == "The helper function that ranks the most frequent words is `top_words`."
    cli = (EXAMPLE / "textstats/cli.py").read_text(encoding="utf-8")
    assert "stats.top_words" in cli  # so the name can be guessed from the command line alone
    assert "not recorded" in rank(answer, EXAMPLE).detail
    assert not rank(answer, EXAMPLE, [cli]).passed
    assert rank(answer, EXAMPLE, [cli, "textstats/stats.py:31:        top_words=top_words(tokens, top),"]).passed
    numbered = "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(
        (EXAMPLE / "textstats/stats.py").read_text(encoding="utf-8").splitlines(), 1))
    assert rank(answer, EXAMPLE, [numbered]).passed
    for task_id in ("vowel-pattern", "rounding-places", "cli-test-words"):
        task = BY_ID[task_id]
        assert not task.check(RIGHT[task_id], EXAMPLE, [cli]).passed
        assert task.check(RIGHT[task_id], EXAMPLE, [task.check.line(EXAMPLE)]).passed


def test_what_the_harness_showed_counts_as_read_when_the_record_keeps_it():
    """A line in agentcache's own context (the repo map in L2 shows `VOWEL_GROUP = re.compile(...)`) was shown to
    the agent as much as a tool output; a record without `context_shown` (a peer's, an older run's) has only its
    tool outputs."""
    from layers import build_l2

    task = BY_ID["vowel-pattern"]
    line = task.check.line(EXAMPLE)
    shown = [block.text for block in build_l2(EXAMPLE)]
    assert any(line in text for text in shown)  # the map holds the constant with its value
    record = {"answer": RIGHT["vowel-pattern"], "tool_outputs": ["textstats/readability.py"], "passed": False,
              "check": ""}
    assert not tasks.regraded(record, task)["passed"]
    assert tasks.regraded(record | {"context_shown": shown}, task)["passed"]
    assert not tasks.regraded(record | {"context_shown": shown[:1]}, task)["passed"]  # the tree alone does not


def test_the_long_lists_name_every_item_and_no_other():
    functions, imports = BY_ID["long-all-functions"].check, BY_ID["long-re-imports"].check
    listed = "main, syllables, words_per_sentence, top_words, compute_stats, words and split_sentences"
    assert functions(listed, EXAMPLE).passed
    assert not functions(listed + " and `TextStats`", EXAMPLE).passed
    assert not functions(f"```\n{listed}\n```", EXAMPLE).passed
    assert imports("`readability.py` and `words.py`", EXAMPLE).passed
    assert not imports("readability.py, words.py and stats.py", EXAMPLE).passed
    assert not imports("I will read readability.py and words.py", EXAMPLE).passed


def test_expected_values_are_not_typed_into_the_checkers():
    for task in QUESTIONS:
        check = task.check.check if hasattr(task.check, "line") else task.check
        assert isinstance(check, (DefinedIn, Number, Text))
    assert BY_ID["rank-helper"].check.check.value is ranking_helper


# Edit checks: an agent's ways to make the tests pass without the fix, each of which passes pytest as it stands.
@pytest.fixture()
def copy(tmp_path) -> Path:
    return fresh_copy(EXAMPLE, tmp_path / "repo")


def write(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text, encoding="utf-8")


def edit_file(repo: Path, path: str, old: str, new: str) -> None:
    text = (repo / path).read_text(encoding="utf-8")
    assert text.count(old) == 1
    write(repo, path, text.replace(old, new))


SKIP_ALL = ("import pytest\n\n\ndef pytest_collection_modifyitems(items):\n"
            "    for item in items:\n        item.add_marker(pytest.mark.skip)\n")
CHEATS = {
    "a weakened shipped test": lambda repo: (
        edit_file(repo, "textstats/readability.py", "    count = len(VOWEL_GROUP.findall(word))\n"
                  "    if word.endswith(\"e\") and count > 1:\n        count -= 1\n",
                  "    count = len(VOWEL_GROUP.findall(word.lower()))\n"),  # case fixed, silent "e" broken
        edit_file(repo, "tests/test_readability.py", "== [1, 2, 1, 1]", "== [1, 2, 2, 1]")),
    "a conftest.py that skips everything": lambda repo: write(repo, "conftest.py", SKIP_ALL),
    "a conftest.py in tests/": lambda repo: write(repo, "tests/conftest.py", SKIP_ALL),
    "a test module that patches the function": lambda repo: write(
        repo, "tests/test_aaa.py", "import textstats.readability as r\n\n"
        "r.syllables = lambda word, syllables=r.syllables: syllables(word.lower())\n"),
    "pyproject [tool.pytest.ini_options] addopts": lambda repo: edit_file(
        repo, "pyproject.toml", 'pythonpath = ["."]', f'pythonpath = ["."]\naddopts = "--ignore={SUITE_TEST}"'),
    "a new pytest.ini": lambda repo: write(repo, "pytest.ini", f"[pytest]\naddopts = --ignore={SUITE_TEST}\n"),
    "a new setup.cfg [tool:pytest], pyproject.toml gone": lambda repo: (
        write(repo, "setup.cfg", f"[tool:pytest]\naddopts = --ignore={SUITE_TEST}\n"),
        (repo / "pyproject.toml").unlink()),
    "a new tox.ini [pytest], pyproject.toml gone": lambda repo: (
        write(repo, "tox.ini", f"[pytest]\naddopts = --ignore={SUITE_TEST}\n"), (repo / "pyproject.toml").unlink()),
    "a sitecustomize.py that exits 0": lambda repo: write(repo, "sitecustomize.py", "import os\nos._exit(0)\n"),
}


def plain_pytest(repo: Path, test: str) -> int:
    """pytest as the old edit check ran it: the copy as the agent left it, the suite's test beside its tests."""
    write(repo, SUITE_TEST, test)
    proc = subprocess.run([sys.executable, "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=repo,
                          env=repo_env(repo), capture_output=True, text=True, timeout=120)
    (repo / SUITE_TEST).unlink()
    return proc.returncode


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_an_edit_check_undoes_the_agents_test_changes_so_a_cheat_fails(cheat, copy):
    task = BY_ID["fix-syllables-case"]
    CHEATS[cheat](copy)
    assert plain_pytest(copy, task.check.test) == 0  # the cheat works where nothing is undone
    verdict = task.check(None, copy)
    assert not verdict.passed and "undone: " in verdict.detail, verdict.detail


def test_an_edit_check_passes_a_real_fix_whatever_it_did_to_the_tests(copy):
    task = BY_ID["fix-syllables-case"]
    edit_file(copy, "textstats/readability.py", "    count = len(VOWEL_GROUP.findall(word))",
              "    word = word.lower()\n    count = len(VOWEL_GROUP.findall(word))")
    (copy / "tests" / "test_stats.py").unlink()
    CHEATS["a conftest.py that skips everything"](copy)
    write(copy, "notes.txt", "done\n")
    verdict = task.check(None, copy)
    assert verdict.passed, verdict.detail
    for undone in ("restored tests/test_stats.py", "removed conftest.py", "removed notes.txt"):
        assert undone in verdict.detail
    assert not (copy / "tests" / "test_stats.py").exists()  # the agent's copy is left as it was


# benchmarks.regrade on the committed results.
def test_regrade_keeps_each_files_stored_pass_count():
    for path in sorted(RESULTS.glob("tasks*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        rows = regrade.regrade_file(path)
        assert [(r["model"], r["stored_passed"], r["tasks_run"]) for r in rows] == [
            (m["name"], m["passed"], m["tasks_run"]) for m in report["models"]]
        for row in rows:
            states = [t["state"] for t in row["tasks"]]
            assert row["strict_passed"] + row["unverified"] + row["not_regraded"] <= row["tasks_run"]
            assert row["strict_passed"] == states.count("pass") and row["unverified"] == states.count("unverified")


def test_regrade_of_the_default_models_run_by_hand():
    """Read from the stored answers: where-text-stats is a one-path answer; rank-helper names only `top_words` but
    its one search's output is not stored; the other three old passes are a fence, a tool call and a plan."""
    [row] = regrade.regrade_file(RESULTS / DEFAULT)
    states = {t["id"]: t["state"] for t in row["tasks"]}
    assert (row["stored_passed"], row["strict_passed"], row["unverified"], row["not_regraded"]) == (5, 1, 1, 4)
    assert [i for i, s in states.items() if s == "pass"] == ["where-text-stats"]
    assert [i for i, s in states.items() if s == "unverified"] == ["rank-helper"]
    assert {t["id"] for t in row["tasks"] if t["stored"] and t["state"] == "fail"} == {
        "where-syllables", "top-default", "vowel-pattern"}


def test_regrade_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "regrade.json"
    assert regrade.main([str(RESULTS / DEFAULT), "--json", str(out)]) == 0
    assert "strict pass" in capsys.readouterr().out
    [row] = json.loads(out.read_text())["models"]
    assert row["file"] == DEFAULT and row["strict_passed"] == 1


def test_regrade_calls_unverified_only_what_the_record_cannot_tell():
    def state(task_id: str, answer: str, tools: list[str]) -> str:
        record = {"id": task_id, "passed": True, "answer": answer, "tools": tools}
        return regrade.regrade_task(record, BY_ID[task_id])["state"]

    assert state("rank-helper", "`top_words`", ["search"]) == "unverified"  # its search's output is not stored
    assert state("rank-helper", "`top_words`", []) == "fail"  # nothing was read
    assert state("where-syllables", "textstats/readability.py", []) == "pass"
    cut = "The file is textstats/readability.py" + " " * (tasks.ANSWER_CHARS - 36)
    assert len(cut) == tasks.ANSWER_CHARS and state("where-syllables", cut, ["search"]) == "unverified"
    assert state("fix-syllables-case", "Fixed.", ["edit_file"]) == "not regraded"


def test_names_and_numbers_the_question_gave_are_the_frame_not_rivals():
    from benchmarks.tasks_tomli import TASKS as TOMLI_TASKS

    task = {t.id: t for t in TOMLI_TASKS}["tomli-parse-float-default"]
    right = "The parameter `parse_float` of `loads` defaults to `float`."
    assert not task.check(right, task.repo).passed  # without the question, `loads` competes with `float`
    assert task.check(right, task.repo, None, task.text).passed
    assert task.check("`tomli.loads` uses `float` for `parse_float`.", task.repo, None, task.text).passed
    for wrong in ("`parse_float` defaults to `float` or `int`.", "`loads` defaults to `Decimal`.",
                  "The parameter `parse_float` of `loads` defaults to `parse_float`."):
        assert not task.check(wrong, task.repo, None, task.text).passed, wrong
    count = Number(lambda repo: 4)
    asked = "Of the 11 tests, how many check words? Answer with the number."
    assert count("4 of the 11 tests", EXAMPLE, None, asked).passed
    assert not count("4 of the 11 tests", EXAMPLE).passed
    assert not count("4 or 5 of the 11 tests", EXAMPLE, None, asked).passed
    assert not count("11", EXAMPLE, None, asked).passed
