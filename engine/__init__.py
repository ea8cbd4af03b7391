"""Local inference engine: model loading, a shared-prefix paged KV pool, and an engine that speaks tokens."""

import logging

# torchao (engine.quant; transformers imports it too when it is installed) logs at import that it cannot load its
# CUDA-only extensions on a CPU, and torch logs a deprecation it triggers: neither is the user's business.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

from engine.engine import Engine
from engine.errors import ModelNotInstalledError, EngineCapacityError, EngineError, UnknownModelError
from engine.model import LoadedModel, load_model
from engine.request import Request, Result, SamplingParams, Timings, Trace, Usage
from engine.sequence import Cancelled

__all__ = [
    "Cancelled", "ModelNotInstalledError", "Engine", "EngineCapacityError", "EngineError", "LoadedModel", "Request",
    "Result", "SamplingParams", "Timings", "Trace", "UnknownModelError", "Usage", "load_model",
]
