"""Files are opened once and read within bounds: a name swapped for a link to a secret between the check and the
read never leaks it; deep folder chains, a one-line file of many megabytes, a huge README and a catastrophic or
malformed glob give bounded answers in bounded time and memory, never a traceback."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.tools import ToolBox
from agentcache.tools.search import TOTAL_BUDGET_S
from layers import Layer, RepoError, build_prefix
from layers.repo import MAX_DEPTH, MAX_DOC_BYTES, list_files
from tests.hostile.repo_factory import GIT

ROOT = Path(__file__).resolve().parents[2]
MARKER = "TOPSECRET-race-7f3a"


def make_repo(root: Path, files: dict[str, str], use_git: bool = False) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if use_git:
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
            subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)
    return root


class Flipper:
    """A thread that keeps swapping `name` between a plain file (or folder) and a link to `target` by renames, until
    stopped; `flips` counts the swaps."""

    def __init__(self, root: Path, name: str, target: str, plain_is_dir: bool = False) -> None:
        self.path, self.link, self.plain = root / name, root / ".flip-link", root / ".flip-plain"
        self.link.symlink_to(target, target_is_directory=plain_is_dir)
        self.flips, self.stop = 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop:
            os.rename(self.path, self.plain)
            os.rename(self.link, self.path)
            os.rename(self.path, self.link)
            os.rename(self.plain, self.path)
            self.flips += 2

    def __enter__(self) -> "Flipper":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop = True
        self.thread.join()


def test_a_file_swapped_for_a_link_to_env_never_leaks_it(tmp_path):
    repo = make_repo(tmp_path, {".env": f"KEY={MARKER}\n", "doc.txt": "plain text\n", "README.md": "# r\n"})
    box = ToolBox(repo)
    leaked_plainly = 0
    with Flipper(repo, "doc.txt", ".env") as flipper:
        for _ in range(250):
            outputs = [box.run("read_file", {"path": "doc.txt"}).output,
                       box.run("search", {"pattern": "KEY|plain", "path": "doc.txt"}).output]
            assert not any(MARKER in out for out in outputs), outputs
            try:
                leaked_plainly += MARKER in (repo / "doc.txt").read_text()  # the control: a plain read does leak
            except OSError:
                pass
    assert flipper.flips > 250 and leaked_plainly > 0


def test_a_folder_swapped_for_a_link_to_an_ignored_one_never_leaks_it(tmp_path):
    repo = make_repo(tmp_path, {".gitignore": "private/\n", "private/doc.txt": f"{MARKER}\n",
                                "docs/doc.txt": "plain doc\n", "README.md": "# r\n"}, use_git=True)
    box = ToolBox(repo)
    with Flipper(repo, "docs", "private", plain_is_dir=True):
        for _ in range(150):
            outputs = [box.run("read_file", {"path": "docs/doc.txt"}).output,
                       box.run("search", {"pattern": "."}).output]
            assert not any(MARKER in out for out in outputs), outputs


def test_a_readme_swapped_for_a_link_to_env_never_enters_l2(tmp_path):
    repo = make_repo(tmp_path, {".env": f"KEY={MARKER}\n", "AGENTS.md": "plain text\n"})
    with Flipper(repo, "AGENTS.md", ".env"):
        for _ in range(100):
            try:
                blocks = build_prefix(repo, PROMPTS_DIR).layer(Layer.L2)
            except RepoError as exc:  # a swap seen mid-read is one clear error, never the secret
                assert MARKER not in str(exc)
                continue
            assert not any(MARKER in block.text for block in blocks)


@pytest.mark.parametrize("use_git", [False, True])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 400])
def test_a_deep_folder_chain_is_bounded_not_a_traceback(tmp_path, use_git, depth):
    deep = "/".join(["d"] * depth)
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n", "top.txt": "x\n", f"{deep}/leaf.txt": "leaf\n",
                                         "/".join(["e"] * 20) + "/ok.txt": "ok\n"}, use_git=use_git)
    listed = list_files(repo)
    assert "top.txt" in listed and "/".join(["e"] * 20) + "/ok.txt" in listed
    assert all(p.count("/") < MAX_DEPTH for p in listed)
    build_prefix(repo, PROMPTS_DIR)
    box = ToolBox(repo)
    for name, args in [("list_files", {}), ("search", {"pattern": "leaf"}), ("read_file", {"path": f"{deep}/leaf.txt"}),
                       ("list_files", {"path": deep}), ("search", {"pattern": "x", "path": "**/leaf.txt"})]:
        outcome = box.run(name, args)
        assert "Traceback" not in outcome.output


def peak_rss_delta_mb(code: str) -> float:
    """Run `code` (after the tools are imported) in a fresh interpreter; how much its peak RSS grew, in MB."""
    script = ("import resource, sys\nfrom agentcache.tools import ToolBox\nfrom layers import build_prefix\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n" + code +
              "\nprint((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.split()[-1])


@pytest.mark.parametrize("size_mb", [48, 80])
def test_a_one_line_file_of_many_megabytes_is_read_in_bounded_memory(tmp_path, size_mb):
    repo = make_repo(tmp_path, {"README.md": "# r\n"})
    with open(repo / "long.txt", "wb") as file:
        file.write(b"needle ")
        for _ in range(size_mb):
            file.write(b"b" * (1 << 20))
        file.write(b"\nneedle\n")
    code = (f"box = ToolBox({str(repo)!r})\nr = box.run('read_file', {{'path': 'long.txt'}})\n"
            "assert not r.is_error and 'line truncated' in r.output and len(r.output) < 10000, r.output[:300]\n"
            "s = box.run('search', {'pattern': 'needle'})\n"
            "assert 'long.txt\\n  1: needle' in s.output and 'first 16 MiB' in s.output, s.output[:300]\n")
    assert peak_rss_delta_mb(code) < size_mb / 2


@pytest.mark.parametrize("size_mb", [20, 6])
def test_a_huge_readme_is_cut_in_l2_without_reading_it_whole(tmp_path, size_mb):
    repo = make_repo(tmp_path, {"AGENTS.md": "# agents\n"})
    line = "a readme line of moderate length, repeated many times over\n"
    (repo / "README.md").write_text(line * (size_mb * (1 << 20) // len(line)))
    code = (f"from layers import Layer\nblocks = build_prefix({str(repo)!r}, {str(PROMPTS_DIR)!r}).layer(Layer.L2)\n"
            "readme = [b for b in blocks if b.key == 'README.md'][0].text\n"
            f"assert len(readme.encode()) < {MAX_DOC_BYTES} + 200 and 'is cut here' in readme\n")
    assert peak_rss_delta_mb(code) < size_mb


@pytest.mark.parametrize("glob", ["**/" * 40 + "*a" * 25 + "b", "*a" * 40 + "c", "**" * 200 + "/x"])
def test_a_catastrophic_glob_stops_at_the_search_budget(tmp_path, glob):
    repo = make_repo(tmp_path, {f"{'a' * 50}/{'a' * 60}{i}": "hit\n" for i in range(30)})
    start = time.monotonic()
    outcome = ToolBox(repo).run("search", {"pattern": "hit", "path": glob})
    assert time.monotonic() - start < TOTAL_BUDGET_S * 3
    assert "Traceback" not in outcome.output
    assert outcome.is_error and "budget" in outcome.output or "no matches" in outcome.output, outcome.output


@pytest.mark.parametrize(("glob", "fragment"), [("[z-a]", "invalid path glob"), ("x" * 600, "longer than"),
                                                ("src/[9-0]*.py", "invalid path glob"), ("/etc/*", "outside")])
def test_a_bad_glob_is_one_clear_error(tmp_path, glob, fragment):
    repo = make_repo(tmp_path, {"a.txt": "x\n"})
    outcome = ToolBox(repo).run("search", {"pattern": "x", "path": glob})
    assert outcome.is_error and fragment in outcome.output and "\n" not in outcome.output, outcome.output


@pytest.mark.parametrize("name", ["invoice\u202efdp.py", "a\x9b31m.md", "b\u2066c.txt", "tab\there.txt", "é-ok.txt"])
def test_a_name_with_control_or_bidi_characters_is_left_out_of_layers(tmp_path, name):
    repo = make_repo(tmp_path, {"README.md": "# r\n", name: "x\n"})
    listed = list_files(repo)
    assert (name in listed) == (name == "é-ok.txt")
    assert ("é-ok.txt" in build_prefix(repo, PROMPTS_DIR).layer(Layer.L2)[0].text) == (name == "é-ok.txt")
