"""`agentcache script`: multi-agent scripts (format, run, live view, report) on one shared prefix cache."""
