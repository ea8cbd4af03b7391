"""Allow `python -m textstats`."""
from textstats.cli import main

raise SystemExit(main())
