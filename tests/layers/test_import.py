import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_layers_pulls_in_no_torch_engine_or_harness():
    code = (
        "import sys, layers\n"
        "layers.build_prefix('examples/repo', 'agentcache/prompts')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'engine', 'agentcache')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_package_docstring_says_what_it_owns():
    import layers

    assert layers.__doc__.splitlines()[0].startswith("layers:")
