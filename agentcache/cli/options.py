"""Options every `agentcache` command shares."""
from typing import Annotated

import typer

Debug = Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")]
