"""`hf-plasticity compare`'s engine: does a restore help on this model and data? Standard fine-tuning, the library's
recipe, the learning-rate-only control and any named strategy, each tuned on a validation split, then confirmed on
paired seeds and scored once on a test split, through the `transformers.Trainer`; resumable, with a report.

The user-facing entry points are `hf_plasticity.compare` (Python) and `hf-plasticity compare` (command line).
"""
