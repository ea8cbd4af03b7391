"""Local inference engine: model loading, a shared-prefix paged KV pool, and an engine that speaks tokens."""

from engine.engine import Engine
from engine.errors import ModelNotInstalledError, EngineCapacityError, EngineError, UnknownModelError
from engine.model import LoadedModel, load_model
from engine.request import Request, Result, SamplingParams, Timings, Trace, Usage
from engine.sequence import Cancelled

__all__ = [
    "Cancelled", "ModelNotInstalledError", "Engine", "EngineCapacityError", "EngineError", "LoadedModel", "Request",
    "Result", "SamplingParams", "Timings", "Trace", "UnknownModelError", "Usage", "load_model",
]
