"""The package installs: a wheel of the project, installed non-editable into a fresh venv, runs `inspect --layers`
and a one-turn `run` from outside the source tree, on the files it shipped (prompts included)."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from layers import build_l1

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "agentcache", "layers", "engine")
IMPORTED_FROM = ("import json, agentcache, layers, engine\n"
                 "files = [m.__file__ for m in (agentcache, layers, engine)]\n"
                 "print(json.dumps([*files, str(agentcache.PROMPTS_DIR)]))")


def build_wheel(work: Path) -> Path:
    """A wheel built offline from a copy of the sources, so the tree gets no build/ or egg-info of its own."""
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip(sys.executable, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(work / "dist"), str(src))
    (wheel,) = (work / "dist").glob("agentcache-*.whl")
    return wheel


def fresh_venv(where: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; the current venv's dependencies are visible to it through a .pth of plain
    paths (a path in a .pth runs no .pth found there, so the source tree's editable install stays out)."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    pip(sys.executable, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], where).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()), encoding="utf-8")
    return python


def pip(python: str, *args: str) -> None:
    run([python, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q", *args], ROOT)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command[1:3]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    return fresh_venv(work / "venv", build_wheel(work))


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "repo", target, ignore=shutil.ignore_patterns("__pycache__", ".agentcache"))
    return target


def test_the_wheel_ships_the_prompts(installed: Path) -> None:
    (wheel,) = installed.parents[2].glob("dist/agentcache-*.whl")
    names = set(subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True,
                               check=True).stdout.split())
    bundled = {p.relative_to(ROOT).as_posix() for p in (ROOT / "agentcache" / "prompts").rglob("*") if p.is_file()}
    assert bundled and {"agentcache/prompts/system.md", "agentcache/prompts/roles/coder.md"} <= bundled
    assert bundled <= names


def test_the_installed_package_is_what_runs(installed: Path, tmp_path: Path) -> None:
    files = json.loads(run([str(installed), "-c", IMPORTED_FROM], tmp_path).stdout)
    venv_root = installed.parents[1]
    for file in files:
        assert Path(file).is_relative_to(venv_root) and not Path(file).is_relative_to(ROOT), file


def test_inspect_layers_and_a_one_turn_run_from_outside_the_tree(installed: Path, tmp_path: Path, repo: Path) -> None:
    agentcache = str(installed.parent / "agentcache")
    report = json.loads(run([agentcache, "inspect", "--layers", "--repo", str(repo), "--json"], tmp_path).stdout)
    l1 = [(b["kind"], b["key"], b["hash"]) for b in report["blocks"] if b["layer"] == "L1"]
    assert [(kind, key) for kind, key, _ in l1] == [("system", "system.md"), ("role", "roles/coder.md"),
                                                    ("tools", "tools")]
    assert [digest for *_, digest in l1] == [b.hash for b in build_l1("coder", ROOT / "agentcache" / "prompts")]
    assert any(b["layer"] == "L2" for b in report["blocks"])
    summary = json.loads(run([agentcache, "run", "Where are words counted?", "--repo", str(repo), "--model",
                              "random-tiny-chat", "--max-turns", "1", "--max-tokens", "8", "--no-disk-cache", "--json"],
                             tmp_path).stdout)
    assert summary["turns"] == 1 and len(summary["requests"]) == 1
    assert summary["requests"][0]["usage"]["prompt_tokens"] > 0
    assert len(list((repo / ".agentcache" / "sessions").glob("*.jsonl"))) == 1
