"""What every benchmark does with its report: write it as JSON where `--json PATH` asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console


def write_json(path: Path | None, report: dict[str, Any], console: Console) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {path}")
