"""Reproducible measurements: each benchmark prints a table for people and writes JSON for machines."""
