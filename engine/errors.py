"""Errors the engine raises for bad input or exhausted resources (one clear line each)."""


class EngineError(Exception):
    """Base for every user-facing engine error."""


class UnknownModelError(EngineError):
    pass


class EmbeddedModelMissingError(EngineError):
    pass


class EngineCapacityError(EngineError):
    pass
