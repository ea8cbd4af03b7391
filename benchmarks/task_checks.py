"""The task suite's checkers: an agent's final answer (or its edited repo copy) in, a verdict out.

A question passes only on a final answer (`non_answer`): no tool call written as JSON, no code fence, no plan or
refusal ("I will...", "you can search...", "here is..."), no tool named, at most MAX_FRAME_WORDS words around the
answer; and with exactly one candidate of the kind asked for: one module path (`DefinedIn`), one number (`Number`),
one name or pattern (`Text`); a list (`AllOf`) names every expected item and nothing else that looks like code.
Expected values are worked out from the repo's files, never typed in. A find-then-read task (`Read`) also needs one of
the session's tool outputs to have shown the line of the repo its answer stands on. An edit (`Edit`) is checked on a
scratch copy of the agent's repo after its shipped tests are restored byte for byte from the snapshot and the test
configuration it added is undone (`undo_test_changes`), with the suite's hidden test written beside them.
"""

from __future__ import annotations

import ast
import configparser
import functools
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")
NUMBER_WORDS = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORD = re.compile(rf"\b(?:{'|'.join(NUMBER_WORDS)})\b", re.IGNORECASE)
PATH = re.compile(r"(?<![\w./-])[\w./-]*\w\.py\b")  # a token naming a .py file: words.py, textstats/words.py
SPAN = re.compile(r"`([^`\n]+)`")
QUOTED = re.compile(r"""(?<![\w"'])r?(["'])([^"'\n]+)\1(?!\w)""")
CODE_SHAPED = re.compile(r"[\[\]{}*+?|\\^$=/<>]|\w_|_\w|\w\.\w|\w\(|[a-z][A-Z]")  # what marks a bare word as code:
# a bracket or operator, an underscore, a dot inside, a call, a capital inside (KeyError)
NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\(.*\))?")  # a name, dotted or called: stats.top_words(x)
TOOL_JSON = re.compile(r"""\{\s*["']\w+["']\s*:|</?tool_call>""")
PLAN = re.compile(r"""
    \b(?:I|we|you)(?:['’](?:ll|d)|\s+(?:will|would|need|needs|must|should|can|could|have\s+to|might|may
                                          |am\s+going\s+to|are\s+going\s+to))\b
    | \bI\s+(?:cannot|can['’]t|am\s+unable|apologi[sz]e)\b
    | \blet(?:['’]s|\s+(?:me|us))\b""", re.IGNORECASE | re.VERBOSE)
MAX_FRAME_WORDS = 30  # words an answer may put around its candidate (code spans not counted)
SUITE_TEST = "tests/test_task_check.py"  # where an edit checker writes its test, in its scratch copy only
NOT_SOURCE = ("tests", "docs", ".agentcache")  # top-level folders whose .py files are not the repo's modules
TESTS = "tests"  # the snapshot's test folder, restored exactly before an edit is checked
PYTEST_CONFIGS = ("pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")
SCRATCH_IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache")
PYTEST_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    detail: str


class Checker(Protocol):
    """`seen`: what the agent was shown of the repo: its harness's context (for agentcache, L2 and the lookup note)
    and the outputs of its tool calls, in order (None where they were not recorded). `asked`: the
    task's text; what the answer repeats of it is the sentence frame, not a rival candidate ("`parse_float` of
    `loads` defaults to `float`")."""

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict: ...


def modules(repo: Path) -> list[str]:
    """The repo's source modules (every .py file outside tests/, docs/ and the harness's state), repo-relative."""
    found = (p.relative_to(repo).as_posix() for p in repo.rglob("*.py"))
    return sorted(p for p in found if p.split("/")[0] not in NOT_SOURCE and "__pycache__" not in p)


def module_named(token: str, repo: Path) -> str | None:
    """The source module a path token names: its repo-relative path (also with a folder before it or ./), its
    trailing part where no other module ends so (its bare file name; cachetools/keys.py for src/cachetools/keys.py),
    or its dotted module name (textstats.words)."""
    found, token = modules(repo), token.removeprefix("./")
    if re.fullmatch(r"\w+(?:\.\w+)+", token) and not token.endswith(".py"):
        token = token.replace(".", "/") + ".py"
    exact = [m for m in found if token == m or token.endswith("/" + m)]
    tail = [m for m in found if m.endswith("/" + token)]  # cachetools/keys.py for src/cachetools/keys.py
    return exact[0] if exact else tail[0] if len(tail) == 1 else None


def whole(text: str, value: str) -> bool:
    """`value` occurs in `text` and is not part of a longer word (top_words in top_words_of is not whole)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


def numbers_in(text: str) -> dict[float, str]:
    """The distinct numbers of `text`, in digits or as words (zero to twenty), by value: 2, 2.0 and two are one."""
    found = {float(m): m for m in NUMBER.findall(text)}
    return found | {float(NUMBER_WORDS[m.lower()]): m for m in NUMBER_WORD.findall(text) if
                    float(NUMBER_WORDS[m.lower()]) not in found}


@functools.cache
def tool_names() -> tuple[str, ...]:
    from agentcache.wiring import load_registry

    return tuple(load_registry().names())


def named_tool(answer: str) -> str | None:
    """The agent's tool the answer names: a name with an underscore anywhere, a plain one (search) in backticks, as
    a call or followed by "function" or "tool"."""
    for name in tool_names():
        plain = rf"`{name}`|\b{name}\s*\(|\b{name}\s+(?:function|tool)\b"
        if whole(answer, name) if "_" in name else re.search(plain, answer, re.IGNORECASE):
            return name
    return None


def frame_words(answer: str, items: Sequence[str] = ()) -> int:
    """The words of `answer` outside its code spans, not counting `items` where they stand whole."""
    text = SPAN.sub(" ", answer)
    for item in items:
        text = re.sub(rf"(?<!\w){re.escape(item)}(?!\w)", " ", text)
    return len(text.split())


def non_answer(answer: str | None) -> str | None:
    """Why `answer` is not a final answer (None when it is one): empty, a tool call written as JSON, a code fence,
    a plan or refusal, a tool named."""
    if answer is None or not answer.strip():
        return "no answer"
    if TOOL_JSON.search(answer):
        return "a tool call written as JSON, not an answer"
    if "```" in answer:
        return "a code fence, not an answer"
    if plan := PLAN.search(answer):
        return f"a plan or refusal ({plan.group(0)!r}), not an answer"
    if tool := named_tool(answer):
        return f"names the tool {tool}, not an answer"
    return None


def short_answer(answer: str | None, items: Sequence[str] = ()) -> str | None:
    """`non_answer`, or why the frame around `items` is too long to be a short sentence."""
    if problem := non_answer(answer):
        return problem
    if (words := frame_words(answer or "", items)) > MAX_FRAME_WORDS:
        return f"{words} words around the answer (at most {MAX_FRAME_WORDS})"
    return None


def code_items(answer: str) -> list[str]:
    """What an answer marks as code: its `spans`, its quoted strings, and bare words shaped like code (an
    underscore, a dot or slash inside, a call, a bracket or a regex operator, a capital inside), sentence punctuation
    stripped."""
    items = SPAN.findall(answer)
    rest = SPAN.sub(" ", answer)
    items += [m.group(2) for m in QUOTED.finditer(rest)]
    for word in QUOTED.sub(" ", rest).split():
        word = word.rstrip(".,;:!?")
        word = word.lstrip("(") if ")" not in word else word
        word = word.rstrip(")") if "(" not in word else word
        if CODE_SHAPED.search(word):
            items.append(word)
    return items


def stands_for(item: str, expected: str) -> bool:
    """`item` is `expected`: a name whole in it (stats.top_words, top_words(tokens, n)), a file name as the path's
    last part (textstats/words.py is words.py), other text as all of it or as a string literal in it
    (VOWEL_GROUP = re.compile(r"[aeiouy]+"))."""
    if re.fullmatch(r"\w+", expected):
        return whole(item, expected)
    if expected.endswith(".py"):
        return item.strip().rpartition("/")[2] == expected.rpartition("/")[2]
    literal = rf"""(?<!\w)r?(["']){re.escape(expected)}\1"""
    return item.strip() == expected or re.search(literal, item) is not None


def echoed(item: str, asked: str) -> bool:
    """`item` repeats a name of the question: it stands whole in `asked`, or its last dotted part does (tomli.loads
    where the question says `loads`)."""
    item = item.strip()
    return bool(asked) and (whole(asked, item) or whole(asked, item.rpartition(".")[2]))


def rivals(items: Sequence[str], expected: Sequence[str], repo: Path, asked: str = "") -> list[str]:
    """The items that stand for none of `expected` but are of their kind, so compete with them. Where names are
    expected: other names (a source module's path or dotted name says where they are, not what). Where paths are:
    other paths. Else (a pattern): anything but a name or a source module's path. What the question names
    (`echoed`) is none of them."""
    kind = ("name" if all(re.fullmatch(r"\w+", e) for e in expected) else
            "path" if all(e.endswith(".py") for e in expected) else "other")
    found = []
    for item in items:
        if any(stands_for(item, e) for e in expected) or echoed(item, asked):
            continue
        named = NAME.fullmatch(item.strip()) is not None
        place = module_named(item.strip(), repo) is not None
        if (kind == "name" and named and not place or kind == "path" and PATH.search(item) is not None
                or kind == "other" and not named and not place):
            found.append(item)
    return found


@dataclass(frozen=True, slots=True)
class DefinedIn:
    """The answer's one path names the module that defines `name` (def or class at the top level); several path
    tokens pass only when all name that module (words.py, textstats/words.py)."""

    name: str

    def expected(self, repo: Path) -> str:
        pattern = re.compile(rf"^(?:def|class) {re.escape(self.name)}\b", re.MULTILINE)
        found = [m for m in modules(repo) if pattern.search((repo / m).read_text(encoding="utf-8"))]
        if len(found) != 1:
            raise RuntimeError(f"'{self.name}' is defined in {len(found)} modules of {repo}, not one")
        return found[0]

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict:
        if problem := short_answer(answer):
            return Verdict(False, problem)
        expected = self.expected(repo)
        tokens = [token for token in PATH.findall(answer or "") if not echoed(token, asked)]
        named = {module_named(token, repo) or token for token in tokens}
        if expected not in named:
            return Verdict(False, f"does not name {expected}")
        if len(named) > 1:
            return Verdict(False, f"names {len(named)} paths: {', '.join(sorted(named))}")
        return Verdict(True, expected)


@dataclass(frozen=True, slots=True)
class Number:
    """The answer's one number is the expected one (12 is not 2, 2.5 is not 2; 2.0 and two are): "3 or 4" fails; a
    number the question gave is not a second one."""

    value: Callable[[Path], int]

    def expected(self, repo: Path) -> str:
        return str(self.value(repo))

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict:
        if problem := short_answer(answer):
            return Verdict(False, problem)
        expected, found = self.expected(repo), numbers_in(answer or "")
        found = {value: text for value, text in found.items()
                 if value == float(expected) or value not in numbers_in(asked)}  # the question's own numbers
        if float(expected) not in found:
            return Verdict(False, f"no {expected} in the answer")
        if len(found) > 1:
            return Verdict(False, f"{len(found)} numbers ({', '.join(found.values())}), not one")
        return Verdict(True, expected)


@dataclass(frozen=True, slots=True)
class Text:
    """The expected name or pattern is the answer's one candidate: it stands in the answer (`stands_for`), and nothing
    else the answer marks as code (`code_items`) is of its kind (`rivals`). Plain words are the sentence frame: "the
    helper that ranks the most frequent words is `top_words`"; so is the module it is in."""

    value: Callable[[Path], str]

    def expected(self, repo: Path) -> str:
        return self.value(repo)

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict:
        if problem := short_answer(answer):
            return Verdict(False, problem)
        expected, items = self.expected(repo), code_items(answer or "")
        if others := rivals(items, [expected], repo, asked):
            return Verdict(False, f"other candidates: {', '.join(others)}")
        if not (any(stands_for(i, expected) for i in items) or whole(answer or "", expected)):
            return Verdict(False, f"no {expected!r} in the answer")
        return Verdict(True, expected)


@dataclass(frozen=True, slots=True)
class AllOf:
    """The answer names every expected item, each not as part of a longer word, and no other of their kind
    (`rivals`): a long task's list; the words around the list are as few as around one answer."""

    values: Callable[[Path], list[str]]

    def expected(self, repo: Path) -> list[str]:
        return self.values(repo)

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict:
        expected = self.expected(repo)
        if problem := short_answer(answer, expected):
            return Verdict(False, problem)
        missing = [name for name in expected if not whole(answer or "", name)]
        if missing:
            return Verdict(False, f"misses {len(missing)} of {len(expected)}: {', '.join(missing)}")
        if others := rivals(code_items(answer or ""), expected, repo, asked):
            return Verdict(False, f"names others too: {', '.join(others)}")
        return Verdict(True, ", ".join(expected))


@dataclass(frozen=True, slots=True)
class Read:
    """A find-then-read task: `check` passes on the answer, and `line` (the line of the repo the answer stands on)
    was shown to the agent, by one of its tool outputs or by what its harness put in its context (agentcache's repo
    map and lookup note), so the answer was read there, not guessed from a first look."""

    check: Checker
    line: Callable[[Path], str]

    def expected(self, repo: Path) -> Any:
        return self.check.expected(repo)  # type: ignore[attr-defined]

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict:
        verdict = self.check(answer, repo, asked=asked)
        if not verdict.passed:
            return verdict
        line = self.line(repo)
        if seen is None:
            return Verdict(False, f"the session's tool outputs are not recorded: nothing shows {line!r} was read")
        if not any(line in output for output in seen):
            return Verdict(False, f"nothing the agent was shown held {line!r}")
        return verdict


@dataclass(frozen=True, slots=True)
class Edit:
    """The agent's copy passes its shipped tests and `test` (the suite's check of this task, never shown to the agent),
    run on a scratch copy of it after `undo_test_changes` against `snapshot` (the repo as shipped). The answer is not
    looked at, and the agent's copy is left as it was."""

    test: str
    snapshot: Path

    def __call__(self, answer: str | None, repo: Path, seen: Sequence[str] | None = None,
                 asked: str = "") -> Verdict:
        with tempfile.TemporaryDirectory(prefix="agentcache-check-") as tmp:
            work = Path(tmp) / "repo"
            shutil.copytree(repo, work, symlinks=True, ignore=SCRATCH_IGNORE, copy_function=copy_regular)
            undone = undo_test_changes(work, self.snapshot)
            (work / SUITE_TEST).parent.mkdir(exist_ok=True)  # a snapshot without tests (tomli's sdist)
            (work / SUITE_TEST).write_text(self.test, encoding="utf-8")
            try:
                proc = subprocess.run([sys.executable, "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS],
                                      cwd=work, env=repo_env(work), capture_output=True, text=True,
                                      timeout=PYTEST_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return Verdict(False, f"pytest ran past {PYTEST_TIMEOUT_S}s")
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        detail = lines[-1] if lines else f"pytest exit code {proc.returncode}"
        return Verdict(proc.returncode == 0, detail + (f" (undone: {'; '.join(undone)})" if undone else ""))


def copy_regular(source: str, target: str) -> None:
    """copytree's copy of a file: regular files only (a FIFO the agent made is not opened, so never waited on)."""
    if stat.S_ISREG(os.lstat(source).st_mode):
        shutil.copy2(source, target)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def restore(path: Path, shipped: Path) -> None:
    if path.is_symlink() or path.exists():
        remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped, path)


def same_file(path: Path, shipped: Path) -> bool:
    return path.is_file() and not path.is_symlink() and path.read_bytes() == shipped.read_bytes()


def pytest_settings(path: Path) -> Any:
    """What pytest reads from a config file at the repo root (None: the file or its pytest part is absent)."""
    if not path.is_file() or path.is_symlink():
        return "not a file" if path.is_symlink() or path.exists() else None
    try:
        if path.name == "pyproject.toml":
            tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool")
            return tool.get("pytest") if isinstance(tool, dict) else None
        if path.name in ("tox.ini", "setup.cfg"):
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(path.read_text(encoding="utf-8"))
            section = "pytest" if path.name == "tox.ini" else "tool:pytest"
            return dict(parser[section]) if parser.has_section(section) else None
        return path.read_bytes()
    except (ValueError, UnicodeDecodeError, configparser.Error):
        return "unreadable"


def undo_test_changes(work: Path, snapshot: Path) -> list[str]:
    """Make `work` test as `snapshot` does: top-level entries the snapshot lacks (sitecustomize.py, a pytest.py that
    shadows pytest, a new pytest.ini) removed; its tests/ byte for byte the snapshot's (added files removed);
    every conftest.py restored or removed; a root config file whose pytest settings changed restored. What was
    undone, in words."""
    undone = []
    for entry in sorted(work.iterdir()):
        if not (snapshot / entry.name).exists():
            remove(entry)
            undone.append(f"removed {entry.name}")
    tests = work / TESTS
    if tests.is_symlink() or tests.exists() and not tests.is_dir():
        remove(tests)
    shipped_tests = {p.relative_to(snapshot) for p in (snapshot / TESTS).rglob("*")
                     if p.is_file() and not {"__pycache__", ".pytest_cache"} & set(p.parts)}
    for dirpath, dirnames, filenames in os.walk(tests, topdown=False):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            path = Path(dirpath) / name
            if path.relative_to(work) not in shipped_tests:
                remove(path)
                undone.append(f"removed {path.relative_to(work).as_posix()}")
    for relative in sorted(shipped_tests):
        if not same_file(work / relative, snapshot / relative):
            restore(work / relative, snapshot / relative)
            undone.append(f"restored {relative.as_posix()}")
    for dirpath, _, filenames in os.walk(work):
        if "conftest.py" in filenames and not Path(dirpath).is_relative_to(work / TESTS):
            path = Path(dirpath) / "conftest.py"
            shipped = snapshot / path.relative_to(work)
            if shipped.is_file() and same_file(path, shipped):
                continue
            if shipped.is_file():
                restore(path, shipped)
                undone.append(f"restored {path.relative_to(work).as_posix()}")
            else:
                remove(path)
                undone.append(f"removed {path.relative_to(work).as_posix()}")
    for name in PYTEST_CONFIGS:
        if pytest_settings(work / name) != pytest_settings(snapshot / name):
            restore(work / name, snapshot / name)
            undone.append(f"restored {name} (its pytest settings)")
    return undone


def repo_env(repo: Path) -> dict[str, str]:
    """The environment for running a repo's code: its root (and its src/, for a src layout) first on the path, no
    bytecode written into it, no pytest settings of this process's (PYTEST_ADDOPTS, PYTEST_PLUGINS)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    path = [str(repo)] + ([str(repo / "src")] if (repo / "src").is_dir() else [])
    return {**env, "PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1"}


def python_value(code: str) -> Callable[[Path], str]:
    """What `code` (Python statements ending in an expression) evaluates to in the repo, run in a subprocess so the
    checker reads the repo's code, not a copy of it in this process."""
    *statements, expression = code.strip().split("\n")

    def value(repo: Path) -> str:
        program = "\n".join([*statements, f"print({expression})"])
        proc = subprocess.run([sys.executable, "-B", "-c", program], cwd=repo, env=repo_env(repo),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{expression} failed in {repo}: {proc.stderr.strip()[-300:]}")
        return proc.stdout.strip()

    return value


def python_number(code: str) -> Callable[[Path], int]:
    text = python_value(code)
    return lambda repo: int(text(repo))


def file_match(repo: Path, path: str, pattern: str) -> tuple[re.Match[str], str]:
    """`pattern`'s first match in the repo file at `path`, and the whole line it starts on, stripped."""
    text = (repo / path).read_text(encoding="utf-8")
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no match for {pattern!r} in {path}")
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.start())
    return match, text[start:end if end >= 0 else None].strip()


def file_number(path: str, pattern: str) -> Callable[[Path], int]:
    """The number `pattern`'s first group matches in the repo file at `path`."""
    return lambda repo: int(file_match(repo, path, pattern)[0].group(1))


def file_line(path: str, pattern: str) -> Callable[[Path], str]:
    """The line of the repo file at `path` where `pattern` first matches (what a `Read` task must have shown)."""
    return lambda repo: file_match(repo, path, pattern)[1]


def functions(repo: Path) -> dict[str, tuple[str, ast.FunctionDef]]:
    """The top-level functions of the repo's source modules by name, each with its module."""
    found: dict[str, tuple[str, ast.FunctionDef]] = {}
    for module in modules(repo):
        for node in ast.parse((repo / module).read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = (module, node)
    return found


def calls(node: ast.AST) -> list[ast.Call]:
    return [call for call in ast.walk(node) if isinstance(call, ast.Call)]


def sorts(node: ast.FunctionDef) -> bool:
    """The function ranks: it calls sorted, .sort, .most_common or heapq's nlargest."""
    return any(isinstance(c.func, ast.Name) and c.func.id == "sorted" or
               isinstance(c.func, ast.Attribute) and c.func.attr in ("sort", "most_common", "nlargest")
               for c in calls(node))


def ranking_call(repo: Path) -> tuple[str, str]:
    """The helper that ranks the most frequent words as the command line reaches it, and the line that calls it:
    `main` calls one function of another source module; of the repo's functions that one calls, the one that sorts."""
    defined = functions(repo)
    entry, main = defined["main"]
    imported = {alias.asname or alias.name: node.module for node in ast.walk(ast.parse(
        (repo / entry).read_text(encoding="utf-8"))) if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names}
    outer = {c.func.id for c in calls(main) if isinstance(c.func, ast.Name) and c.func.id in imported
             and c.func.id in defined and defined[c.func.id][0] != entry}
    if len(outer) != 1:
        raise RuntimeError(f"main in {entry} calls {len(outer)} functions of other modules, not one")
    module, caller = defined[outer.pop()]
    ranking = [c for c in calls(caller) if isinstance(c.func, ast.Name) and c.func.id in defined
               and sorts(defined[c.func.id][1])]
    if len({c.func.id for c in ranking}) != 1:  # type: ignore[attr-defined]
        raise RuntimeError(f"{caller.name} calls {len(ranking)} ranking helpers, not one")
    line = (repo / module).read_text(encoding="utf-8").splitlines()[ranking[0].lineno - 1].strip()
    return ranking[0].func.id, line  # type: ignore[attr-defined]


def ranking_helper(repo: Path) -> str:
    return ranking_call(repo)[0]


def ranking_line(repo: Path) -> str:
    return ranking_call(repo)[1]


def count_test_functions(repo: Path) -> int:
    """Test functions (def test_*, also methods) in the .py files under tests/, counted from their syntax trees."""
    count = 0
    for path in sorted((repo / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        count += sum(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")
                     for node in ast.walk(tree))
    return count


def top_level_functions(repo: Path) -> list[str]:
    """The functions defined at the top level of the repo's source modules, from their syntax trees."""
    names = []
    for module in modules(repo):
        tree = ast.parse((repo / module).read_text(encoding="utf-8"))
        names += [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names


def count_asserts(repo: Path) -> int:
    """assert statements in the .py files under tests/, counted from their syntax trees."""
    return sum(isinstance(node, ast.Assert) for path in sorted((repo / "tests").rglob("*.py"))
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def modules_importing(name: str) -> Callable[[Path], list[str]]:
    """The source modules that import `name` (import or from-import, at any depth), by bare file name."""

    def value(repo: Path) -> list[str]:
        found = []
        for module in modules(repo):
            tree = ast.parse((repo / module).read_text(encoding="utf-8"))
            imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
            if name in imported:
                found.append(module.rpartition("/")[2])
        return found

    return value
