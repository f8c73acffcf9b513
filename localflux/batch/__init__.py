"""Batch jobs: a TOML job -> ordered items -> crash-safe renders with a manifest (see docs/batch.md)."""
