"""Errors the engine raises for bad input or exhausted resources (one clear line each)."""


class EngineError(Exception):
    """Base for every user-facing engine error."""


class UnknownModelError(EngineError):
    """Not the embedded model, a random test model, a local directory, or a reachable hub id."""


class ModelNotInstalledError(EngineError):
    """The packages that ship a registry model's GGUF are not installed (the message names the install command)."""


class EngineCapacityError(EngineError):
    """A request needs more KV pages than the pool can free."""
