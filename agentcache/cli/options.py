"""Options every `agentcache` command shares."""
from typing import Annotated, Optional

import typer

Debug = Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")]
DtypeOption = Annotated[Optional[str], typer.Option(
    "--dtype", help="Local engine dtype: auto (bfloat16 on CUDA or a CPU with AMX/AVX-512 BF16, else float32), "
    "float32, bfloat16 or float16.")]
SpeculateOption = Annotated[Optional[str], typer.Option(
    "--speculate", help="Local engine: speculative decoding (drafted tokens verified in one forward; greedy output "
    "unchanged): auto (the default: prompt lookup's drafts, from the reply's own context, sized by their measured "
    "cost and acceptance; a draft model's too where draft_model is set), lookup (always), draft (the registry's "
    "smaller model with the same tokenizer guesses, e.g. the 0.5B for the 1.5B) or off.")]
QuantOption = Annotated[Optional[str], typer.Option(
    "--quant", help="Local engine weights: auto (the default: on a CPU gguf where the model's file holds Q4_K/Q6_K "
    "blocks, else int8 where PyTorch's int8 kernel runs; none elsewhere), none, gguf (the model's own GGUF blocks, "
    "C++ kernels built once per machine; CPU), int8 (per-row) or int4 (grouped; needs bfloat16).")]
