"""The `agentcache` command line: one typer app, a module per command, and errors as one line."""
from __future__ import annotations

import sys

import typer

from agentcache.cli import inspect, run, script, serve, trust
from agentcache.cli.cache import cache_app
from agentcache.cli.fleet import fleet_app
from agentcache.cli.models import models_app
from agentcache.cli.options import Debug
from agentcache.errors import AgentcacheError
from layers import LayersError

app = typer.Typer(
    name="agentcache",
    help="A cache-aware agent harness: byte-stable layered prompts on a shared-prefix KV engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(cache_app, name="cache")
app.add_typer(fleet_app, name="fleet")
app.add_typer(models_app, name="models")
for command in (inspect.inspect, run.run, serve.serve, script.script, trust.trust):
    app.command()(command)


@app.callback()
def root(debug: Debug = False) -> None:
    """Assemble context in layers (L1 role+tools, L2 repo, L3 turns) so the prefix stays cached."""


def _user_error_types() -> tuple[type[Exception], ...]:
    types: list[type[Exception]] = [LayersError, AgentcacheError]
    engine_errors = sys.modules.get("engine.errors")
    if engine_errors is not None:
        types.append(engine_errors.EngineError)
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="agentcache")
    except Exception as exc:
        if "--debug" in args or not isinstance(exc, _user_error_types()):
            raise
        from agentcache.terminal import inert

        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {inert(message)}", file=sys.stderr)
        raise SystemExit(2) from None
