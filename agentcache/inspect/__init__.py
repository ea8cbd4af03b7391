"""`agentcache inspect`: session view, miss explanation, request diff, prompt rebuild, cost and prices."""
