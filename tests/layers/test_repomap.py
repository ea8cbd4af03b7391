import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layers import FunctionCounter, L2Config, TiktokenCounter, build_l2, lookup
from layers.repo import list_files, open_repo
from layers.repomap import file_outlines, pagerank, ranked_paths, reference_graph
from tests.layers.conftest import git, write_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repo"
LINES = FunctionCounter(lambda text: len(text.splitlines()))  # one "token" per map line: budgets easy to reason on

# base.py is used by store.py, app.py and the test; store.py by app.py and the test; nothing uses app.py or the test.
GRAPH_REPO = {
    "lib/base.py": 'class BaseStore:\n    """Where values live."""\n\n\ndef make_store_key(name: str) -> str:\n'
                   '    return name\n',
    "lib/store.py": "from lib.base import BaseStore, make_store_key\n\n\nclass MemoryStore(BaseStore):\n"
                    "    def put(self, name):\n        return make_store_key(name)\n",
    "app.py": "from lib.store import MemoryStore\nfrom lib.base import make_store_key\n\n\ndef run_app():\n"
              "    return MemoryStore().put(make_store_key('a'))\n",
    "tests/test_store.py": "from lib.store import MemoryStore\nfrom lib.base import BaseStore\n\n\n"
                           "def test_memory_store():\n    assert isinstance(MemoryStore(), BaseStore)\n",
    "README.md": "# Graph\n",
}


def maps(blocks):
    return [b for b in blocks if b.kind == "map"]


def repo_with(tmp_path: Path, files: dict[str, str], use_git: bool = False) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    write_files(root, files)
    if use_git:
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "init")
    return root


def outlines_of(root: Path):
    base = open_repo(root)
    return file_outlines(base, list_files(base))


def test_the_reference_graph_decides_the_rank(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO)
    graph = reference_graph(outlines_of(root))
    assert set(graph["app.py"]) == {"lib/base.py", "lib/store.py"}
    assert set(graph["lib/store.py"]) == {"lib/base.py"}
    assert graph["lib/base.py"] == {}
    assert ranked_paths(outlines_of(root)) == ["lib/base.py", "lib/store.py", "app.py", "tests/test_store.py"]


def test_pagerank_of_small_graphs():
    two = pagerank({"a": {"b": 1.0}, "b": {"a": 1.0}})
    assert two["a"] == pytest.approx(0.5) and two["b"] == pytest.approx(0.5)
    star = pagerank({"hub": {}, "x": {"hub": 1.0}, "y": {"hub": 1.0}})
    assert sum(star.values()) == pytest.approx(1.0)
    d = 0.85  # solved by hand: x = (1 - d)/3 + d*hub/3 (hub has no out-link, so it spreads) and hub = x + 2*d*x
    x = (1 - d) / (3 - d * (1 + 2 * d))
    assert star["x"] == pytest.approx(x, rel=1e-3) and star["y"] == star["x"]
    assert star["hub"] == pytest.approx(x * (1 + 2 * d), rel=1e-3)


def test_names_a_file_defines_itself_are_not_references_elsewhere(tmp_path):
    files = {"a.py": "def shared_name():\n    pass\n", "b.py": "def shared_name():\n    return shared_name\n"}
    graph = reference_graph(outlines_of(repo_with(tmp_path, files)))
    assert graph == {"a.py": {}, "b.py": {}}


def test_map_lines_show_line_signature_and_docstring(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO)
    blocks = {b.key: b.text for b in maps(build_l2(root))}
    assert blocks["lib/base.py"] == "   1 class BaseStore  # Where values live.\n   5 def make_store_key(name: str) -> str\n"
    assert blocks["lib/store.py"] == "   4 class MemoryStore(BaseStore)\n   5     def put(self, name)\n"


def test_map_comes_after_docs_in_path_order(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO)
    blocks = build_l2(root)
    assert [(b.kind, b.key) for b in blocks] == [
        ("tree", "."), ("doc", "README.md"), ("map", "app.py"), ("map", "lib/base.py"), ("map", "lib/store.py"),
        ("map", "tests/test_store.py"),
    ]


def test_budget_keeps_the_best_ranked_whole_files(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO)
    sizes = {b.key: LINES.count(b.text) for b in maps(build_l2(root, counter=LINES))}
    assert sizes == {"lib/base.py": 2, "lib/store.py": 2, "app.py": 1, "tests/test_store.py": 1}
    assert [b.key for b in maps(build_l2(root, L2Config(map_tokens=2), counter=LINES))] == ["lib/base.py"]
    # store.py (2 lines) does not fit in the 1 left: skipped whole, and the next best file that fits is kept
    assert [b.key for b in maps(build_l2(root, L2Config(map_tokens=3), counter=LINES))] == ["app.py", "lib/base.py"]
    assert maps(build_l2(root, L2Config(map_tokens=1), counter=LINES)) == [
        b for b in maps(build_l2(root, counter=LINES)) if b.key == "app.py"]
    assert maps(build_l2(root, L2Config(map_tokens=0))) == []


def test_map_tokens_fit_the_budget_with_the_real_counter():
    counter = TiktokenCounter()
    for budget in (50, 200, 1024):
        kept = maps(build_l2(EXAMPLE, L2Config(map_tokens=budget), counter))
        assert sum(counter.count(b.text) for b in kept) <= budget


def test_secrets_ignored_and_unreadable_files_never_appear(tmp_path):
    files = {
        **GRAPH_REPO,
        ".gitignore": "build/\n",
        ".env": "def leaked_secret_fn():\n    pass\n",
        ".env.py": "def leaked_env_fn():\n    pass\n",
        "build/generated.py": "def generated_fn():\n    pass\n",
        "keys/deploy.py": "KEY = '''-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----'''\n"
                          "def private_key_fn():\n    pass\n",
        "broken.py": "def broken_fn(:\n",
    }
    root = repo_with(tmp_path, files, use_git=True)
    texts = "".join(b.text for b in maps(build_l2(root)))
    keys = {b.key for b in maps(build_l2(root))}
    assert keys == {"app.py", "lib/base.py", "lib/store.py", "tests/test_store.py"}
    for name in ("leaked_secret_fn", "leaked_env_fn", "generated_fn", "private_key_fn", "broken_fn", "BEGIN"):
        assert name not in texts
        assert lookup(root, f"look at {name}") is None


def test_builds_are_byte_identical_and_a_doc_edit_touches_only_the_doc(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO, use_git=True)
    first = build_l2(root)
    assert build_l2(root) == first
    (root / "README.md").write_text("# Graph\nMore words.\n", encoding="utf-8")
    after = build_l2(root)
    assert maps(after) == maps(first)
    assert [b.key for b, c in zip(first, after) if b != c] == ["README.md"]


def test_an_edited_source_changes_its_own_block_and_goes_last(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO, use_git=True)
    first = {b.key: b for b in maps(build_l2(root))}
    path = root / "lib" / "base.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef extra_helper():\n    pass\n", encoding="utf-8")
    after = maps(build_l2(root))
    assert [b.key for b in after] == ["app.py", "lib/store.py", "tests/test_store.py", "lib/base.py"]
    assert [b.key for b in after if first[b.key] != b] == ["lib/base.py"]
    assert after[-1].text.endswith("   9 def extra_helper()\n")


def test_other_languages_join_the_map(tmp_path):
    files = {"web/util.ts": "export function formatName(n: string): string { return n; }\n",
             "web/app.ts": "import { formatName } from './util';\nexport function main() { formatName('a'); }\n",
             "cmd/main.go": "package main\n\n// Run starts it.\nfunc Run() {}\n"}
    root = repo_with(tmp_path, files)
    blocks = {b.key: b.text for b in maps(build_l2(root))}
    assert blocks["web/util.ts"] == "   1 function formatName(n: string): string\n"
    assert blocks["cmd/main.go"] == "   4 func Run()  # Run starts it.\n"
    assert ranked_paths(outlines_of(root))[0] == "web/util.ts"


def line_of(path: Path, prefix: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.startswith(prefix))


def test_lookup_finds_definitions_named_in_a_task():
    line = line_of(EXAMPLE / "textstats" / "words.py", "def split_sentences(")
    note = lookup(EXAMPLE, "split_sentences drops the last sentence when it has no period")
    assert note == f"textstats/words.py:{line}  def split_sentences(text: str) -> list[str]"


def test_lookup_finds_qualified_names_and_files():
    stats = line_of(EXAMPLE / "textstats" / "stats.py", "class TextStats")
    note = lookup(EXAMPLE, "Add a field to TextStats.foo, and see words.py")
    assert note is not None
    lines = note.splitlines()
    assert lines[0] == f"textstats/stats.py:{stats}  class TextStats"
    assert lines[1].startswith("textstats/words.py  (") and lines[1].endswith(" definitions)")


def test_lookup_of_a_method_keeps_the_classes_the_task_names(tmp_path):
    files = {"caches.py": "class FifoCache:\n    def popitem(self):\n        pass\n\n\n"
                          "class LruCache:\n    def popitem(self):\n        pass\n"}
    root = repo_with(tmp_path, files)
    both = ["caches.py:2  def popitem(self)  (in FifoCache)", "caches.py:7  def popitem(self)  (in LruCache)"]
    assert lookup(root, "popitem is wrong") == "\n".join(both)
    assert lookup(root, "popitem of LruCache is wrong") == "caches.py:6  class LruCache\n" + both[1]
    assert lookup(root, "LruCache.popitem is wrong") == both[1]


def test_lookup_misses_and_limits(tmp_path):
    assert lookup(EXAMPLE, "Why is the sky blue? Please explain it to me.") is None
    files = {"a.py": "".join(f"def handler_{i}():\n    pass\n" for i in range(12)), "b.py": "def f(): pass\n"}
    root = repo_with(tmp_path, files)
    note = lookup(root, " ".join(f"handler_{i}" for i in range(12)), limit=5)
    assert note is not None and note.splitlines() == [f"a.py:{2 * i + 1}  def handler_{i}()" for i in range(5)]
    assert lookup(root, "call f now") is None  # a definition shorter than three characters is never a hit


def test_lookup_uses_files_the_budget_left_out(tmp_path):
    root = repo_with(tmp_path, GRAPH_REPO)
    assert maps(build_l2(root, L2Config(map_tokens=1), counter=LINES))[0].key == "app.py"
    assert lookup(root, "make_store_key") == "lib/base.py:5  def make_store_key(name: str) -> str"


def test_inspect_layers_lists_the_map_blocks():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def blocks(*extra: str) -> list[dict]:
        result = subprocess.run([sys.executable, "-m", "agentcache.cli", "inspect", "--layers", "--json",
                                 "--repo", str(EXAMPLE), *extra], cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["blocks"]

    expected = [b.key for b in maps(build_l2(EXAMPLE))]
    assert "textstats/words.py" in expected
    assert [b["key"] for b in blocks() if b["kind"] == "map"] == expected
    assert [b for b in blocks("--map-tokens", "0") if b["kind"] == "map"] == []


def test_lookup_puts_names_written_as_code_before_plain_words(tmp_path):
    files = {"tests/test_func.py": "class Mixin:\n    def decorator(self):\n        pass\n",
             "func.py": "def ttl_cache(maxsize=128):\n    pass\n"}
    root = repo_with(tmp_path, files)
    note = lookup(root, "Which file defines the decorator `ttl_cache`?")
    assert note == "func.py:1  def ttl_cache(maxsize=128)\ntests/test_func.py:2  def decorator(self)  (in Mixin)"
    assert lookup(root, "Which file defines the decorator ttl_cache?") == note
    assert lookup(root, "the decorator is wrong") == "tests/test_func.py:2  def decorator(self)  (in Mixin)"
