"""Honest few-shot subject identification: pools, episodes, metrics, baselines, protocols, probe.

The public API is re-exported by :mod:`workbench.evaluate`.
"""
