"""Local inference engine: model loading, a shared-prefix paged KV pool, and a runner that speaks tokens."""

from engine.errors import EmbeddedModelMissingError, EngineCapacityError, EngineError, UnknownModelError
from engine.model import LoadedModel, load_model
from engine.request import Request, Result, SamplingParams, Timings, Trace, Usage
from engine.runner import Engine
from engine.sequence import Cancelled

__all__ = [
    "Cancelled", "EmbeddedModelMissingError", "Engine", "EngineCapacityError", "EngineError", "LoadedModel", "Request",
    "Result", "SamplingParams", "Timings", "Trace", "UnknownModelError", "Usage", "load_model",
]
