"""Benchmarks: each module exposes ``run(quick: bool) -> dict``; ``python -m bench`` runs them all."""
