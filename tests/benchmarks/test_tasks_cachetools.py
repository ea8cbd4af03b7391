"""benchmarks.tasks_cachetools: each question's checker on right answers (each resting on a line of the snapshot),
wrong values and non-answers; each edit's hidden test failing on a fresh (planted) copy and passing on one fixed by
hand, beside the project's shipped tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.task_checks import NUMBER, PATH, module_named, whole
from benchmarks.task_set import fresh_copy
from benchmarks.tasks_cachetools import CACHETOOLS, TASKS
from tests.benchmarks.repo_files import everything_read, replace

BY_ID = {task.id: task for task in TASKS}
QUESTIONS = [task for task in TASKS if task.kind != "edit"]
EDITS = [task for task in TASKS if task.kind == "edit"]


def source(path: str) -> str:
    return (CACHETOOLS / path).read_text(encoding="utf-8")


INIT, KEYS, FUNC = "src/cachetools/__init__.py", "src/cachetools/keys.py", "src/cachetools/func.py"
RIGHT = {  # an answer, the file it rests on, the text there that shows it
    "ct-where-typedkey": ("It is defined in src/cachetools/keys.py.", KEYS, "def typedkey(*args, **kwargs):"),
    "ct-where-ttl-cache": ("`cachetools/func.py`", FUNC, "def ttl_cache(maxsize=128, ttl=600,"),
    "ct-ttl-default": ("600 seconds", FUNC, "ttl=600"),
    "ct-timer-default": ("It uses `time.monotonic`.", INIT, "timer=time.monotonic"),
    "ct-too-large": ("ValueError", INIT, 'raise ValueError("value too large")'),
    "ct-kwmark-class": ("The marker is made from `_HashedTuple` in keys.py.", KEYS, "_kwmark = (_HashedTuple,)"),
    "ct-rr-choice": ("random.choice", INIT, "choice=random.choice"),
    "ct-cacheinfo-fields": ("CacheInfo has 4 fields.", INIT, '"CacheInfo", "hits misses maxsize currsize"'),
}
NON_ANSWERS = ["I will search for the definition first.", "You can search for it with the `search` tool.",
               '{"name": "search", "arguments": {"pattern": "def "}}', "```python\nprint(1)\n```", ""]
WRONG = {
    "ct-where-typedkey": ["src/cachetools/__init__.py", "keys.py or func.py", "tests/test_keys.py"],
    "ct-where-ttl-cache": ["src/cachetools/__init__.py", "func.py, __init__.py"],
    "ct-ttl-default": ["60", "128", "600 or 60"],
    "ct-timer-default": ["time.time", "`time.time` or `time.monotonic`"],
    "ct-too-large": ["KeyError", "ValueError or KeyError"],
    "ct-kwmark-class": ["tuple", "`_HashedTuple` or `tuple`"],
    "ct-rr-choice": ["random.randrange", "`random.choice` or `random.shuffle`"],
    "ct-cacheinfo-fields": ["3", "5", "4 or 5"],
}


def test_every_question_has_right_and_wrong_answers():
    assert set(RIGHT) == set(WRONG) == {task.id for task in QUESTIONS}
    assert len(QUESTIONS) >= 6 and len(EDITS) >= 6


@pytest.mark.parametrize("task_id", sorted(RIGHT))
def test_a_question_checker_accepts_the_right_answer(task_id):
    answer, path, evidence = RIGHT[task_id]
    assert evidence in source(path)
    verdict = BY_ID[task_id].check(answer, CACHETOOLS, everything_read(CACHETOOLS))
    assert verdict.passed, verdict.detail


@pytest.mark.parametrize("task_id", sorted(WRONG))
def test_a_question_checker_rejects_wrong_answers_and_non_answers(task_id):
    for answer in WRONG[task_id] + NON_ANSWERS:
        assert not BY_ID[task_id].check(answer, CACHETOOLS, everything_read(CACHETOOLS)).passed, answer


@pytest.mark.parametrize("task_id", ["ct-kwmark-class", "ct-rr-choice", "ct-cacheinfo-fields"])
def test_a_find_then_read_question_needs_its_line_shown(task_id):
    answer, _, _ = RIGHT[task_id]
    assert not BY_ID[task_id].check(answer, CACHETOOLS, []).passed
    assert not BY_ID[task_id].check(answer, CACHETOOLS, None).passed


@pytest.mark.parametrize("task", QUESTIONS, ids=lambda t: t.id)
def test_the_expected_answer_is_not_in_the_question(task):
    expected = task.check.expected(CACHETOOLS)
    assert str(expected) not in NUMBER.findall(task.text)
    assert not whole(task.text, str(expected))
    assert expected not in {module_named(token, CACHETOOLS) for token in PATH.findall(task.text)}
    assert not task.check(task.text, CACHETOOLS, everything_read(CACHETOOLS)).passed


FIXES = {  # path, old, new: a right fix of each edit task, by hand
    "ct-add-lru-peek": (INIT, '    """Least Recently Used (LRU) cache implementation."""\n',
                        '    """Least Recently Used (LRU) cache implementation."""\n\n'
                        "    def peek(self, key, default=None):\n"
                        "        return Cache.__getitem__(self, key) if key in self else default\n"),
    "ct-add-hit-ratio": (INIT, "            return cls(hits, misses, None, len(cache))\n",
                         "            return cls(hits, misses, None, len(cache))\n\n"
                         "    @property\n    def hit_ratio(self):\n"
                         "        calls = self.hits + self.misses\n"
                         "        return self.hits / calls if calls else 0.0\n"),
    "ct-add-strkey": (KEYS, "\n\ndef methodkey(",
                      "\n\ndef strkey(*args, **kwargs):\n"
                      "    return hashkey(*map(str, args), **{k: str(v) for k, v in kwargs.items()})\n"
                      "\n\ndef methodkey("),
    "ct-fix-lru-read": (INIT, "            self.__order[key]\n", "            self.__order.move_to_end(key)\n"),
    "ct-fix-ttl-expiry": (INIT, "expires = time + self.__ttl + 1", "expires = time + self.__ttl"),
    "ct-fix-kwargs-order": (KEYS, "        return args + _kwmark + tuple(kwargs.items())",
                            "        return args + _kwmark + tuple(sorted(kwargs.items()))"),
}


def test_every_edit_task_has_a_fix():
    assert set(FIXES) == {task.id for task in EDITS}


@pytest.mark.parametrize("task", EDITS, ids=lambda t: t.id)
def test_an_edit_checker_fails_on_the_fresh_copy_and_passes_on_a_fixed_one(task, tmp_path):
    copy = fresh_copy(task.repo, tmp_path / "repo", task.plant)
    verdict = task.check(task.text, copy)
    assert not verdict.passed, verdict.detail
    replace(copy, *FIXES[task.id])
    verdict = task.check(None, copy)
    assert verdict.passed, verdict.detail
    assert "480 passed" not in verdict.detail and "passed" in verdict.detail


def test_a_plant_changes_only_the_copy(tmp_path):
    task = BY_ID["ct-fix-kwargs-order"]
    before = source(KEYS)
    copy = fresh_copy(task.repo, tmp_path / "repo", task.plant)
    assert source(KEYS) == before and (copy / KEYS).read_text(encoding="utf-8") != before
