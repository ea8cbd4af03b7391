"""`agentcache cache stats|clear|prune`: look at and manage the KV pages kept on disk between runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from agentcache import cache_dir, terminal
from agentcache.errors import AgentcacheError

cache_app = typer.Typer(help="See and manage the KV pages kept on disk between runs.", no_args_is_help=True)

Dir = Annotated[Optional[Path], typer.Option("--dir", help="KV directory (default: <cache dir>/kv).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


def _kv_dir() -> Any:
    from engine.kv import disk_dir as kv_dir  # imports torch: only when a cache command runs

    return kv_dir


def _root(directory: Path | None) -> Path:
    """The KV directory: --dir or the default. One that does not exist yet is an empty cache; a file is an error."""
    root = directory if directory is not None else cache_dir.kv_dir()
    if root.exists() and not root.is_dir():
        raise AgentcacheError(f"--dir {root} is not a directory")
    return root


def _emit(report: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        terminal.write_json(report)
        return
    console = terminal.console()
    for line in lines:
        console.print(terminal.inert(line), markup=False)


@cache_app.command()
def stats(directory: Dir = None, as_json: Json = False) -> None:
    """Files, bytes and bytes per token of the KV disk cache, per model."""
    report = _kv_dir().stats(_root(directory))
    if as_json:
        _emit(report, True, [])
        return
    table = Table(title=terminal.cell(f"KV disk cache {report['dir']}"))
    for column in ("model", "fingerprint", "files", "bytes", "tokens", "bytes/token"):
        table.add_column(column, justify="left" if column in ("model", "fingerprint") else "right")
    for m in report["models"] + [{**report, "model": "total", "fingerprint": ""}]:
        per_token = f"{m['bytes_per_token']:.0f}" if m["bytes_per_token"] else "-"
        table.add_row(*map(terminal.cell, (m["model"] or "?", m["fingerprint"][:12], m["files"], m["bytes"],
                                           m["tokens"], per_token)))
    terminal.console().print(table)


@cache_app.command()
def clear(directory: Dir = None, as_json: Json = False) -> None:
    """Delete every KV page on disk (and our temp files and model records). Refuses, deleting nothing, a
    directory holding anything else."""
    root = _root(directory)
    files, size = _kv_dir().clear(root)
    report = {"dir": str(root), "removed_files": files, "removed_bytes": size}
    _emit(report, as_json, [f"removed {files} page files ({size} bytes) from {root}"])


@cache_app.command()
def prune(
    max_bytes: Annotated[Optional[int], typer.Option(
        min=0, help="Keep at most this many bytes, least recently used go first (default: the run's cap, 4 GiB).")]
    = None,
    directory: Dir = None,
    as_json: Json = False,
) -> None:
    """Delete damaged page files and dead writers' temp files, then old pages beyond --max-bytes. Refuses,
    deleting nothing, a directory holding anything else."""
    root, kv_dir = _root(directory), _kv_dir()
    max_bytes = kv_dir.DEFAULT_DISK_BYTES if max_bytes is None else max_bytes
    before = kv_dir.stats(root)
    damaged = kv_dir.prune_damaged(root)
    after_damaged = kv_dir.stats(root)
    kv_dir.prune_to(root, max_bytes)
    after = kv_dir.stats(root)
    report = {"dir": str(root), "max_bytes": max_bytes, "removed_damaged": damaged,
              "removed_lru": after_damaged["files"] - after["files"], "files": after["files"],
              "bytes": after["bytes"], "bytes_before": before["bytes"]}
    _emit(report, as_json, [f"removed {damaged} damaged or stale files and {report['removed_lru']} least "
                            f"recently used pages; {after['files']} files, {after['bytes']} bytes left "
                            f"(cap {max_bytes})"])
