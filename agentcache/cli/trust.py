"""`agentcache trust`: honour (or, with --revoke, stop honouring) a repository's own agentcache.yaml as it is now."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def trust(
    repo: Annotated[Path, typer.Option(help="Repository whose agentcache.yaml to trust.")] = Path("."),
    revoke: Annotated[bool, typer.Option("--revoke", help="Stop trusting the file.")] = False,
) -> None:
    """Trust a repository's agentcache.yaml, by its sha256, so that its widening settings apply.

    Until then, settings that widen what the agent may do or where data goes (mode: full, allow_shell: true, a
    remote backend or base_url, a model given as a path) are ignored, and each run says which. A changed file is
    untrusted again. The trust is kept in the user's config dir ($AGENTCACHE_CONFIG_DIR), never in the repo.
    """
    import json

    from agentcache.config import CONFIG_FILE, MAX_CONFIG_BYTES, load_config, parse_yaml
    from agentcache.errors import AgentcacheError
    from agentcache.terminal import inert
    from agentcache.trust import set_trust, widening_settings
    from layers.repo import open_repo, read_capped

    root = open_repo(repo)
    path = (root / CONFIG_FILE).resolve()
    name = inert(root.name or str(root))
    if revoke:
        set_trust(path, None)
        print(f"{CONFIG_FILE} of {name} is no longer trusted")
        return
    if not (root / CONFIG_FILE).is_file():
        raise AgentcacheError(f"no {CONFIG_FILE} in {name}: nothing to trust")
    load_config(root)  # refuses a malformed, oversized or linked file before it is trusted
    data = read_capped(root, CONFIG_FILE, MAX_CONFIG_BYTES)
    values = parse_yaml(data.decode("utf-8")) or {}
    set_trust(path, data)
    settings = ", ".join(f"{name}: {json.dumps(values[name])}" for name in widening_settings(values))
    print(f"trusted {CONFIG_FILE} of {name} as it is now (widening settings: {settings or 'none'}); a change to it is untrusted again")
