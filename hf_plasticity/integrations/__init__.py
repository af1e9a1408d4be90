"""Integrations, each with one outside library through its documented API: the transformers Trainer, plain loops
and Accelerate, the Hub and model cards, datasets."""
