"""benchmarks.tasks: every task's checker against hand-written right and wrong answers and the echoed question, the
edit checkers on unmodified and hand-fixed copies, and a smoke run on the real embedded model. The checkers' rules on
their own (non-answers, candidates, undoing test changes) are tests/benchmarks/test_task_checks.py."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from benchmarks import tasks
from benchmarks.task_checks import NUMBER, PATH, module_named, whole
from benchmarks.task_set import EXAMPLE, KINDS, fresh_copy
from benchmarks.tasks_textstats import LONG_TASKS, TASKS
from tests.benchmarks.repo_files import everything_read, replace

BY_ID = {task.id: task for task in TASKS}
QUESTIONS = [task for task in TASKS if task.kind != "edit"]
EDITS = [task for task in TASKS if task.kind == "edit"]


def source(path: str) -> str:
    return (EXAMPLE / path).read_text(encoding="utf-8")


def test_tests_in_the_example_repo_by_a_plain_text_count():
    shipped = [p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.glob("tests/test_*.py")]
    count = sum(len(re.findall(r"^def test_", source(p), re.MULTILINE)) for p in shipped)
    assert count == 11  # 2 in test_cli, 2 in test_readability, 3 in test_stats, 4 in test_words


# Right answers written by hand from the repo; each is checked against the files by the grep beside it.
RIGHT = {
    "where-split-sentences": ("It is defined in textstats/words.py.", "textstats/words.py", "def split_sentences("),
    "where-text-stats": ("`textstats/stats.py`", "textstats/stats.py", "class TextStats:"),
    "where-syllables": ("readability.py", "textstats/readability.py", "def syllables("),
    "syllables-of-banana": ("It returns 3.", "textstats/readability.py", 'VOWEL_GROUP = re.compile(r"[aeiouy]+")'),
    "top-default": ("5 words by default", "textstats/cli.py", '"--top", type=int, default=5,'),
    "count-tests": ("There are 11 test functions.", "tests/test_words.py", "def test_split_sentences"),
    "count-fields": ("TextStats has 5 fields.", "textstats/stats.py", "    top_words: list[tuple[str, int]]\n\n"),
    "vowel-pattern": ("textstats/readability.py uses `[aeiouy]+`", "textstats/readability.py", 'r"[aeiouy]+"'),
    "rank-helper": ("It is `top_words`.", "textstats/stats.py", "top_words=top_words(tokens, top)"),
    "rounding-places": ("to 2 decimal places", "textstats/stats.py", "round(average, 2)"),
    "cli-test-words": ("The test expects 4 words.", "tests/test_cli.py", 'assert data["words"] == 4'),
}
WRONG = {
    "where-split-sentences": ["textstats/stats.py", "textstats/words.py or textstats/stats.py", "test_words.py",
                              None],
    "where-text-stats": ["textstats/cli.py", "stats.py, cli.py"],
    "where-syllables": ["textstats/words.py", "tests/test_readability.py"],
    "syllables-of-banana": ["2", "33", "3.5", "1, 2, 3, 4 or 5"],
    "top-default": ["10", "15", "5.5"],
    "count-tests": ["9", "111", "1 2 3 4 5 6 7 8 9 10 11 12", "There are 11 test functions in 4 files."],
    "count-fields": ["4", "1, 2, 3, 4, 5", "50"],
    "vowel-pattern": ["[aeiou]+", "aeiouy"],
    "rank-helper": ["Counter", "compute_top_words", "top", "compute_stats calls top_words"],
    "rounding-places": ["to 3 places", "12", "2.5"],
    "cli-test-words": ["3", "44", ""],
}


def test_every_question_has_a_right_and_a_wrong_answer():
    assert set(RIGHT) == set(WRONG) == {task.id for task in QUESTIONS}
    assert len(TASKS) >= 15 and {task.kind for task in TASKS + LONG_TASKS} == set(KINDS)
    assert len(QUESTIONS) - sum(t.kind == "multi-step" for t in QUESTIONS) >= 7 and len(EDITS) >= 4


@pytest.mark.parametrize("task_id", sorted(RIGHT))
def test_a_question_checker_accepts_the_right_answer(task_id):
    answer, path, evidence = RIGHT[task_id]
    assert evidence in source(path)
    assert BY_ID[task_id].check(answer, EXAMPLE, everything_read(EXAMPLE)).passed


@pytest.mark.parametrize("task_id", sorted(WRONG))
def test_a_question_checker_rejects_wrong_answers(task_id):
    for answer in WRONG[task_id]:
        assert not BY_ID[task_id].check(answer, EXAMPLE, everything_read(EXAMPLE)).passed, answer


@pytest.mark.parametrize("task", QUESTIONS, ids=lambda t: t.id)
def test_the_expected_answer_is_not_in_the_question(task):
    expected = task.check.expected(EXAMPLE)
    assert expected not in NUMBER.findall(task.text)
    assert not whole(task.text, expected)
    assert expected not in {module_named(token, EXAMPLE) for token in PATH.findall(task.text)}
    assert not task.check(task.text, EXAMPLE, everything_read(EXAMPLE)).passed


@pytest.fixture()
def copy(tmp_path) -> Path:
    return fresh_copy(EXAMPLE, tmp_path / "repo")


FIXES = {  # path, old, new: a right fix of each edit task, by hand
    "fix-syllables-case": ("textstats/readability.py", "    count = len(VOWEL_GROUP.findall(word))",
                           "    word = word.lower()\n    count = len(VOWEL_GROUP.findall(word))"),
    "fix-words-per-sentence": ("textstats/readability.py", "len(words(text)) // len(sentences)",
                               "len(words(text)) / len(sentences)"),
    "add-longest-word": ("textstats/stats.py", "        top_words=top_words(tokens, top),\n",
                         "        top_words=top_words(tokens, top),\n"
                         "        longest_word=max(tokens, key=len, default=''),\n"),
    "add-syllables-per-word": ("textstats/readability.py", "\n\ndef words_per_sentence",
                               "\n\ndef syllables_per_word(text: str) -> float:\n"
                               "    found = words(text)\n"
                               "    return round(sum(map(syllables, found)) / len(found), 2) if found else 0.0\n"
                               "\n\ndef words_per_sentence"),
}


def fix(repo: Path, task_id: str) -> None:
    replace(repo, *FIXES[task_id])
    if task_id == "add-longest-word":
        replace(repo, "textstats/stats.py", "    top_words: list[tuple[str, int]]\n",
                "    top_words: list[tuple[str, int]]\n    longest_word: str\n")


def test_every_edit_task_has_a_fix():
    assert set(FIXES) == {task.id for task in EDITS}


@pytest.mark.parametrize("task", EDITS, ids=lambda t: t.id)
def test_an_edit_checker_fails_on_the_unmodified_copy_and_passes_on_a_fixed_one(task, copy):
    assert not task.check(task.text, copy).passed
    fix(copy, task.id)
    verdict = task.check(None, copy)
    assert verdict.passed, verdict.detail


def test_an_edit_checker_fails_when_the_fix_breaks_a_shipped_test(copy):
    task = BY_ID["fix-words-per-sentence"]
    fix(copy, task.id)
    replace(copy, "textstats/stats.py", "words=len(tokens),", "words=len(tokens) + 1,")
    assert not task.check(None, copy).passed


def test_the_copy_is_fresh_and_neither_it_nor_the_source_is_touched_by_a_check(copy):
    def files(root: Path) -> dict[Path, bytes]:
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}

    before, copied = files(EXAMPLE), files(copy)
    assert copied == before
    (copy / "tests" / "test_stats.py").unlink()
    BY_ID["fix-syllables-case"].check(None, copy)
    assert files(EXAMPLE) == before
    assert files(copy) == {p: data for p, data in copied.items() if p != Path("tests/test_stats.py")}


def test_select_caps_turns_and_refuses_unknown_ids(capsys):
    chosen = tasks.select("count-tests,fix-syllables-case", 3)
    assert [(t.id, t.max_turns) for t in chosen] == [("count-tests", 3), ("fix-syllables-case", 3)]
    assert tasks.main(["--tasks", "count-tests,no-such-task"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'no-such-task'") and len(err.strip().splitlines()) == 1
    assert tasks.main(["--max-turns", "0"]) == 2


def session_requests(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if record["type"] == "request"]


@pytest.mark.slow
def test_a_two_task_run_on_the_real_model(tmp_path):
    out, keep = tmp_path / "tasks.json", tmp_path / "runs"
    ids = ["where-syllables", "fix-syllables-case"]
    records = tmp_path / "records.jsonl"
    args = ["--tasks", ",".join(ids), "--max-turns", "2", "--seeds", "1", "--records", str(records)]
    assert tasks.main([*args, "--json", str(out), "--keep", str(keep)]) == 0
    report = json.loads(out.read_text())
    stored = [json.loads(line) for line in records.read_text().splitlines()]
    assert [(r["seed"], r["id"]) for r in stored] == [(None, ids[0]), (None, ids[1]), (1, ids[0]), (1, ids[1])]
    assert all(isinstance(r["tool_outputs"], list) for r in stored)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(tasks.__file__).parent).stdout.strip()
    assert {r["revision"].removesuffix("+changes") for r in stored} == {head}  # which harness ran each record
    again = tmp_path / "again.json"  # a rerun on the same records runs nothing: no engine is loaded
    assert tasks.main([*args, "--json", str(again)]) == 0
    rerun = json.loads(again.read_text())["models"][0]
    assert rerun["load_s"] is None and report["models"][0]["load_s"] > 0
    assert {**rerun, "load_s": None} == {**report["models"][0], "load_s": None}
    assert tasks.main(["--report", "--tasks", ",".join(ids), "--records", str(records), "--json", str(again)]) == 0
    assert json.loads(again.read_text())["models"] == [rerun]  # the same report from the records alone
    [model] = report["models"]
    assert model["name"] == "smollm2-135m" and [t["id"] for t in model["tasks"]] == ids
    assert model["harness"] == "agentcache" and model["pass_rate"] == sum(t["passed"] for t in model["tasks"]) / 2
    assert model["kind_pass_rate"] == {t["kind"]: float(t["passed"]) for t in model["tasks"]}
    [sampled] = model["sampled"]
    assert sampled["seed"] == 1 and [t["id"] for t in sampled["tasks"]] == ids
    assert model["sampled_pass_rates"] == [sum(t["passed"] for t in sampled["tasks"]) / 2]
    runs = keep / "agentcache" / "smollm2-135m"
    assert sorted(p.name for p in runs.iterdir()) == ["greedy", "seed-1"]
    keep = runs / "greedy"
    for record in model["tasks"]:
        assert {"id", "passed", "turns", "wall_s", "cached_over_prefix_min"} <= set(record)
        assert isinstance(record["passed"], bool) and record["wall_s"] > 0
        session = keep / record["id"] / ".agentcache" / "sessions"
        requests = session_requests(session / f"{record['session_id']}.jsonl")
        assert record["turns"] == len(requests)
        for name in ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens"):
            assert record[name] == sum(r["usage"][name] for r in requests)
        ratios = [r["usage"]["cached_tokens"] / r["prefix_tokens"] for r in requests[1:]]
        assert record["cached_over_prefix_min"] == (round(min(ratios), 3) if ratios else None)
        assert record["tools"] == [r["tool_call"]["name"] for r in requests if r.get("tool_call")]
    edited = keep / "fix-syllables-case"
    assert BY_ID["fix-syllables-case"].check(None, edited).passed == model["tasks"][1]["passed"]
    warm = [round(r["timings"]["total_s"], 3) for run in ("greedy", "seed-1") for t in model["tasks"]  # medians:
            # every run's, each turn kept to the ms as the records keep it
            for r in session_requests(next((runs / run / t["id"] / ".agentcache" / "sessions").glob("*.jsonl")))[1:]]
    assert model["median_warm_turn_s"] == (round(statistics.median(warm), 3) if warm else None)


LONG = {task.id: task for task in tasks.LONG_TASKS}
LONG_RIGHT = {
    "long-all-functions": "main, syllables, words_per_sentence, top_words, compute_stats, words and split_sentences",
    "long-assert-count": "There are 18 assert statements.",
    "long-re-imports": "textstats/readability.py and words.py import re.",
}
LONG_WRONG = {
    "long-all-functions": ["main, syllables, words_per_sentence, top_words, compute_stats and words", None],
    "long-assert-count": ["17", "11 tests with 18.5 asserts"],
    "long-re-imports": ["readability.py", "words_per_sentence in readability.py", "stats.py and cli.py"],
}


def test_the_long_tasks_expected_answers_by_a_plain_text_reading():
    sources = {p.name: p.read_text() for p in (EXAMPLE / "textstats").glob("*.py")}
    functions = [name for text in sources.values() for name in re.findall(r"^def (\w+)\(", text, re.MULTILINE)]
    assert sorted(LONG["long-all-functions"].check.expected(EXAMPLE)) == sorted(functions)
    asserts = sum(len(re.findall(r"^\s+assert ", p.read_text(), re.MULTILINE)) for p in (EXAMPLE / "tests").glob("*.py"))
    assert int(LONG["long-assert-count"].check.expected(EXAMPLE)) == asserts
    importing = sorted(name for name, text in sources.items() if re.search(r"^import re$", text, re.MULTILINE))
    assert sorted(LONG["long-re-imports"].check.expected(EXAMPLE)) == importing


@pytest.mark.parametrize("task_id", sorted(LONG))
def test_a_long_task_checker_takes_the_right_answer_and_refuses_wrong_ones(task_id):
    check = LONG[task_id].check
    assert check(LONG_RIGHT[task_id], EXAMPLE).passed
    assert not [wrong for wrong in LONG_WRONG[task_id] if check(wrong, EXAMPLE).passed]
    assert not check(LONG[task_id].text, EXAMPLE).passed  # the question does not give its answer


def test_the_long_suite_is_selected_by_name():
    assert [t.id for t in tasks.select(None, None, "long")] == list(LONG)
    with pytest.raises(Exception, match="unknown task"):
        tasks.select("where-syllables", None, "long")


def stored(task_id: str, answer: str, harness: str = "agentcache", seed: int | None = None,
           revision: str = "r1") -> dict:
    """A stored question run as the suite writes one (its verdict is graded again by the report)."""
    return {"id": task_id, "kind": "question", "harness": harness, "model": "m", "quant": "auto", "seed": seed,
            "revision": revision, "answer": answer, "answer_chars": len(answer), "tool_outputs": [],
            "passed": False, "check": "", "turns": 1, "wall_s": 1.0, "reason": "answered", "warm_turn_s": [],
            "unparseable": 0, "unexplained_misses": 0, "compactions": [], "misses": {}, "cached_over_prefix_min": None,
            **{name: 0 for name in tasks.USAGE_FIELDS}}


def test_one_report_from_record_files_stored_apart(tmp_path):
    """agentcache gets a row per file, naming the revisions in it; a peer's records make one row across files; a
    later record of the same run replaces an earlier one; answers are graded again."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [
        stored("count-tests", "11", revision="r1"), stored("count-fields", "3", revision="r2"),
        stored("count-tests", "4", harness="aider")]) + "\n")
    second.write_text("\n".join(json.dumps(r) for r in [
        stored("count-tests", "4", revision="r3"), stored("count-fields", "5", revision="r3"),
        stored("count-fields", "5", seed=1, revision="r3"), stored("count-fields", "5", harness="aider"),
        stored("count-fields", "4", harness="aider")]) + "\n")
    out = tmp_path / "report.json"
    args = ["--report", "--tasks", "count-tests,count-fields", "--also", str(first), "--records", str(second)]
    assert tasks.main([*args, "--json", str(out)]) == 0
    rows = {(r["harness"], tuple(r["revisions"])): r for r in json.loads(out.read_text())["models"]}
    assert set(rows) == {("agentcache", ("r1", "r2")), ("agentcache", ("r3",)), ("aider", ())}
    assert [t["passed"] for t in rows["agentcache", ("r1", "r2")]["tasks"]] == [True, False]
    assert [t["passed"] for t in rows["agentcache", ("r3",)]["tasks"]] == [False, True]
    assert rows["agentcache", ("r3",)]["sampled_pass_rates"] == [1.0]
    assert [(t["id"], t["answer"]) for t in rows["aider", ()]["tasks"]] == [("count-tests", "4"), ("count-fields", "4")]
    assert tasks.main([*args[:-2], "--also", str(tmp_path / "none.jsonl"), "--records", str(second)]) == 2
