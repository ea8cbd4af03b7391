"""`python -m agentcache.cli`: the same command line as the `agentcache` entry point."""
from agentcache.cli import main

main()
