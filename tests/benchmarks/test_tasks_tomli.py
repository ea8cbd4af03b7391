"""benchmarks.tasks_tomli: every question's checker against a hand-written right answer and wrong ones, every edit's
hidden test on the planted (or unmodified) snapshot copy and on a copy fixed by hand, and the sample document the
hidden tests parse against an independent parser (the standard library's tomllib)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from benchmarks.task_checks import NUMBER, PATH, module_named, python_value, repo_env, whole
from benchmarks.task_set import KINDS, fresh_copy
from benchmarks.tasks_tomli import PARSER, RE, SAMPLE, SAMPLE_VALUE, TASKS, TOMLI
from tests.benchmarks.repo_files import everything_read, replace

BY_ID = {task.id: task for task in TASKS}
QUESTIONS = [task for task in TASKS if task.kind != "edit"]
EDITS = [task for task in TASKS if task.kind == "edit"]


def source(path: str) -> str:
    return (TOMLI / path).read_text(encoding="utf-8")


def test_the_task_list_is_tomlis_own():
    assert len(TASKS) in (13, 14) and len(BY_ID) == len(TASKS)
    assert all(task.id.startswith("tomli-") and task.repo == TOMLI and task.kind in KINDS for task in TASKS)
    assert sum(t.kind == "question" for t in TASKS) >= 4 and sum(t.kind == "multi-step" for t in TASKS) >= 3
    assert len(EDITS) >= 6 and sum(t.plant is not None for t in EDITS) >= 3


def test_the_checkers_read_the_src_layout():
    for token in ("src/tomli/_re.py", "tomli/_re.py", "_re.py", "./src/tomli/_re.py", "tomli._re"):
        assert module_named(token, TOMLI) == "src/tomli/_re.py", token
    assert module_named("_regex.py", TOMLI) is None


def test_the_expected_answers_by_a_plain_text_reading():
    defining = [p for p in ("src/tomli/__init__.py", PARSER, RE) if "\ndef match_to_datetime(" in source(p)]
    assert BY_ID["tomli-where-match-to-datetime"].check.expected(TOMLI) == defining[0] == RE
    assert re.search(r"^def loads\(__s: str, \*, parse_float: ParseFloat = (\w+)\)", source(PARSER), re.MULTILINE)[1] \
        == BY_ID["tomli-parse-float-default"].check.expected(TOMLI)
    table = source(PARSER).split("BASIC_STR_ESCAPE_REPLACEMENTS: Final = frozendict(")[1].split("\n)")[0]
    assert int(BY_ID["tomli-escape-count"].check.expected(TOMLI)) == len(re.findall(r': "\\u00[0-9a-f]{2}",', table))
    assert BY_ID["tomli-nesting-limit"].check.expected(TOMLI) == "400"
    assert BY_ID["tomli-key-parts-error"].check.expected(TOMLI) == "RecursionError"


# Right answers written by hand from the snapshot; each is checked against the files by the string beside it.
RIGHT = {
    "tomli-where-match-to-datetime": ("It is defined in src/tomli/_re.py.", RE, "\ndef match_to_datetime("),
    "tomli-parse-float-default": ("It defaults to `float`.", PARSER, "parse_float: ParseFloat = float) -> dict"),
    "tomli-invalid-error": ("It raises `tomli.TOMLDecodeError`.", PARSER, 'raise TOMLDecodeError("Invalid value"'),
    "tomli-escape-count": ("8 escape sequences", PARSER, r'"\\e": "\u001b",  # escape'),
    "tomli-nesting-limit": ("At most 400 levels deep (`MAX_INLINE_NESTING`).", PARSER,
                            "MAX_INLINE_NESTING: Final = 400"),
    "tomli-fraction-digits": ("It keeps at most 6 digits; the rest are dropped.", RE, r"(?:\.([0-9]{1,6})[0-9]*)?"),
    "tomli-key-parts-error": ("It raises `RecursionError`.", PARSER,
                              'f"TOML key has more than the allowed {MAX_KEY_PARTS} parts"'),
}
WRONG = {  # a wrong value, two candidates; the non-answer shapes are added to each below
    "tomli-where-match-to-datetime": ["src/tomli/_parser.py", "src/tomli/_re.py or src/tomli/_parser.py",
                                      "tomli/__init__.py", "_types.py"],
    "tomli-parse-float-default": ["`int`", "`float` or `decimal.Decimal`", "`None`"],
    "tomli-invalid-error": ["`ValueError`", "`TOMLDecodeError` or `ValueError`", "`SyntaxError`"],
    "tomli-escape-count": ["7", "11", "8 or 11", "8.5"],
    "tomli-nesting-limit": ["1000", "401", "400 or 1000"],
    "tomli-fraction-digits": ["9", "3", "6 or 9"],
    "tomli-key-parts-error": ["`TOMLDecodeError`", "`RecursionError` or `ValueError`", "`KeyError`"],
}


def non_answers(value: str) -> list[str]:
    """The shapes that are not final answers, each holding the right value."""
    return [f"I will search for it first, then answer {value}.", f"Let me read the file: {value}",
            f'{{"name": "read_file", "arguments": {{"path": "{value}"}}}}', f"```\n{value}\n```", "", None]


def test_every_question_has_a_right_and_a_wrong_answer():
    assert set(RIGHT) == set(WRONG) == {task.id for task in QUESTIONS}


@pytest.mark.parametrize("task_id", sorted(RIGHT))
def test_a_question_checker_accepts_the_right_answer(task_id):
    answer, path, evidence = RIGHT[task_id]
    assert evidence in source(path)
    verdict = BY_ID[task_id].check(answer, TOMLI, everything_read(TOMLI))
    assert verdict.passed, verdict.detail


@pytest.mark.parametrize("task_id", sorted(WRONG))
def test_a_question_checker_rejects_wrong_answers(task_id):
    expected = BY_ID[task_id].check.expected(TOMLI)
    for answer in WRONG[task_id] + non_answers(expected):
        assert not BY_ID[task_id].check(answer, TOMLI, everything_read(TOMLI)).passed, answer


@pytest.mark.parametrize("task", [t for t in QUESTIONS if t.kind == "multi-step"], ids=lambda t: t.id)
def test_a_find_then_read_answer_fails_unless_a_tool_output_showed_its_line(task):
    answer = RIGHT[task.id][0]
    line = task.check.line(TOMLI)
    assert not task.check(answer, TOMLI, None).passed and not task.check(answer, TOMLI, []).passed
    unread = [text for text in everything_read(TOMLI) if line not in text]
    assert not task.check(answer, TOMLI, unread).passed
    assert task.check(answer, TOMLI, [f"{PARSER}:1: {line}"]).passed


@pytest.mark.parametrize("task", QUESTIONS, ids=lambda t: t.id)
def test_the_expected_answer_is_not_in_the_question(task):
    expected = task.check.expected(TOMLI)
    assert expected not in NUMBER.findall(task.text)
    assert not whole(task.text, expected)
    assert expected not in {module_named(token, TOMLI) for token in PATH.findall(task.text)}
    assert not task.check(task.text, TOMLI, everything_read(TOMLI)).passed


def test_the_sample_value_is_what_the_snapshot_and_tomllib_parse():
    assert python_value(f"import datetime, tomli\ntomli.loads({SAMPLE!r}) == {SAMPLE_VALUE!r}")(TOMLI) == "True"
    assert tomllib.loads(SAMPLE) == SAMPLE_VALUE


@pytest.fixture()
def copy(tmp_path) -> Path:
    return fresh_copy(TOMLI, tmp_path / "repo")


INIT = "src/tomli/__init__.py"
ALL = '__all__ = ("loads", "load", "TOMLDecodeError")'
FIXES = {  # (path, old, new) replacements: a right fix of each edit task, by hand
    "tomli-fix-fraction-micros": [(RE, 'micros_str.rjust(6, "0")', 'micros_str.ljust(6, "0")')],
    "tomli-fix-cr-escape": [(PARSER, r'"\\r": "\u000a",  # carriage return', r'"\\r": "\r",  # carriage return')],
    "tomli-fix-error-column": [(PARSER, r'colno = pos - doc.rindex("\n", 0, pos) + 1',
                                r'colno = pos - doc.rindex("\n", 0, pos)')],
    "tomli-fix-private-use-escape": [(PARSER, "(57344 < codepoint <= 1114111)", "(0xE000 <= codepoint <= 0x10FFFF)")],
    "tomli-add-is-valid": [(INIT, ALL, '__all__ = ("loads", "load", "TOMLDecodeError", "is_valid")'),
                           (INIT, "import TOMLDecodeError, load, loads\n",
                            "import TOMLDecodeError, load, loads\n\n\ndef is_valid(s: str) -> bool:\n    try:\n"
                            "        loads(s)\n    except TOMLDecodeError:\n        return False\n    return True\n")],
    "tomli-add-error-coords": [(PARSER, "        self.colno = colno\n",
                                "        self.colno = colno\n\n    @property\n"
                                "    def coords(self) -> tuple[int, int]:\n        return self.lineno, self.colno\n")],
    "tomli-add-load-path": [(INIT, ALL, '__all__ = ("loads", "load", "load_path", "TOMLDecodeError")'),
                            (INIT, "import TOMLDecodeError, load, loads\n",
                             "import TOMLDecodeError, load, loads\n\n\ndef load_path(path, *, parse_float=float):\n"
                             '    with open(path, "rb") as file:\n'
                             "        return load(file, parse_float=parse_float)\n")],
}


def test_every_edit_task_has_a_fix():
    assert set(FIXES) == {task.id for task in EDITS}


@pytest.mark.parametrize("task", EDITS, ids=lambda t: t.id)
def test_an_edit_checker_fails_on_the_planted_or_unmodified_copy_and_passes_on_a_fixed_one(task, copy):
    if task.plant is not None:
        task.plant(copy)
    before = task.check(task.text, copy)
    assert not before.passed and "1 failed, 1 passed" in before.detail, before.detail  # the sample still parses
    for path, old, new in FIXES[task.id]:
        replace(copy, path, old, new)
    verdict = task.check(None, copy)
    assert verdict.passed, verdict.detail


def test_the_planted_bugs_hidden_tests_pass_on_the_snapshot_as_shipped(copy):
    planted = [task for task in EDITS if task.plant is not None]
    (copy / "tests").mkdir()
    for number, task in enumerate(planted):
        (copy / "tests" / f"test_hidden_{number}.py").write_text(task.check.test, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=copy,
                          env=repo_env(copy), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and f"{2 * len(planted)} passed" in proc.stdout, proc.stdout[-2000:]


def test_an_edit_that_breaks_the_parser_elsewhere_fails_on_the_sample_document(copy):
    task = BY_ID["tomli-add-is-valid"]
    for path, old, new in FIXES[task.id]:
        replace(copy, path, old, new)
    replace(copy, RE, 'sign = 1 if sign_str == "+" else -1', 'sign = 1 if sign_str == "-" else -1')
    verdict = task.check(None, copy)
    assert not verdict.passed and "1 failed, 1 passed" in verdict.detail, verdict.detail
