"""Errors the layers package raises: one clear line each, all under LayersError."""


class LayersError(Exception):
    """Base for every user-facing layers error."""


class LayerOrderError(LayersError):
    """A block would break the L1* L2* L3* order, or a kind sits in the wrong layer."""


class PromptError(LayersError):
    """A prompt or tool spec file is missing or malformed."""


class RepoError(LayersError):
    """The repo root is unusable or a file in it cannot be read."""


class VolatileContentError(LayersError):
    """Strict lint found volatile content in L1 or L2."""


class TokenizerError(LayersError):
    """A token counter cannot be set up."""
