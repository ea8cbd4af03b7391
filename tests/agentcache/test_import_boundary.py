"""The harness's torch boundary: rendering, records, the remote backends and inspect import neither torch nor
transformers; the local backend, which runs the engine, does (the control that the check can see them)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers")
INSPECT = ["agentcache.inspect"] + sorted(f"agentcache.inspect.{path.stem}"
                                          for path in (ROOT / "agentcache" / "inspect").glob("[!_]*.py"))
WITHOUT_TORCH = ["agentcache.render", "agentcache.records", "agentcache.backends.constrain",
                 "agentcache.backends.openai", "agentcache.backends.anthropic", *INSPECT]


def heavy_imports(module: str) -> list[str]:
    """The top-level heavy packages in sys.modules after importing `module` in a fresh interpreter."""
    code = (f"import importlib, sys\nimportlib.import_module({module!r})\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", WITHOUT_TORCH)
def test_module_imports_no_torch(module):
    assert heavy_imports(module) == []


def test_every_inspect_module_is_checked():
    assert {"agentcache.inspect.prompt_text", "agentcache.inspect.explain"} <= set(INSPECT)


def test_the_local_backend_imports_torch():
    assert "torch" in heavy_imports("agentcache.backends.local")
