"""Options every `agentcache` command shares."""
from typing import Annotated, Optional

import typer

Debug = Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")]
DtypeOption = Annotated[Optional[str], typer.Option(
    "--dtype", help="Local engine dtype: auto (bfloat16 on CUDA or a CPU with AMX/AVX-512 BF16, else float32), "
    "float32, bfloat16 or float16.")]
QuantOption = Annotated[Optional[str], typer.Option(
    "--quant", help="Local engine weights: auto (the default: int8 on a CPU where PyTorch's int8 kernel runs, else "
    "none), none, int8 (per-row, about half the time per output token on a CPU) or int4 (grouped; needs bfloat16).")]
