"""Observability callbacks of a run."""
