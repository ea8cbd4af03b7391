"""Local inference engine: model loading, a shared-prefix paged KV pool, and a runner that speaks tokens."""
