"""Past one machine: the replicas' own prefix-cache counters (status) and a local fleet of vLLM replicas behind
vllm-router, started and stopped by PID files (launch). The routing key every request carries is the OpenAI
backend's (docs/fleet.md)."""
