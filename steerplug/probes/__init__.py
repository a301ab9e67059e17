"""Probes: read activations while the model runs (scores per row and token, aggregated, streamed).

Kept import-light: ``steerplug.recipe.spec`` imports :mod:`steerplug.probes.conditions` at load time.
"""
