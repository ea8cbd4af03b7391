"""Local inference engine: model loading, a shared-prefix paged KV pool, and a runner that speaks tokens."""

from engine.errors import EmbeddedModelMissingError, EngineCapacityError, EngineError, UnknownModelError
from engine.model import LoadedModel, load_model
from engine.request import Request, Result, SamplingParams, Timings, Trace, Usage
from engine.runner import Engine

__all__ = [
    "EmbeddedModelMissingError", "Engine", "EngineCapacityError", "EngineError", "LoadedModel", "Request",
    "Result", "SamplingParams", "Timings", "Trace", "UnknownModelError", "Usage", "load_model",
]
