"""Diagnostics: per-layer plasticity measurements, the per-block probe and the plasticity figure."""
