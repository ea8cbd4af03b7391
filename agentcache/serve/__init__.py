"""`agentcache serve`: the OpenAI-compatible HTTP app, chat handling, explicit contexts and metrics."""
