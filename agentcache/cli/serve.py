"""`agentcache serve`: its options; the HTTP app lives in agentcache.serve."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from agentcache.cli.options import Debug, DtypeOption, QuantOption, SpeculateOption


def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    model: Annotated[Optional[str], typer.Option(help="Model: a name from `agentcache models` (default: "
                                                 "$AGENTCACHE_MODEL, else the default one), a local HF dir or a hub id.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' on every request.",
                                                   envvar="AGENTCACHE_SERVE_API_KEY")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Serve a non-loopback --host without --api-key: anyone who can reach it may use "
        "it. Without this flag such a bind is refused.")] = False,
    dtype: DtypeOption = None,
    quant: QuantOption = None,
    speculate: SpeculateOption = None,
    debug: Debug = False,
) -> None:
    """Serve the engine over an OpenAI-compatible HTTP API with explicit context caching.

    Endpoints: POST /v1/chat/completions, GET /v1/models, POST/GET/DELETE /v1/contexts, GET /health, GET /metrics.
    Limits: 4 MiB bodies, 25,000 messages (else 413); a client stalled 10 s mid-request is dropped.
    Example: agentcache serve --port 8000
    """
    from agentcache.config import RunConfig, default_model
    from agentcache.serve.app import serve as run_server

    run_server(host, port, model or default_model(), api_key, log=lambda line: print(line, file=sys.stderr),
               insecure_no_auth=insecure_no_auth, dtype=dtype or "auto", quant=quant or "auto",
               speculate=speculate or RunConfig().speculate)
