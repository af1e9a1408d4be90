"""`hf-plasticity compare`'s engine: does a restore help on this model and data, and what does skipping the sweep
cost? Standard fine-tuning, the default restore, the learning-rate-only control and any named strategy, each tuned on
a validation split, and the sweep-free recommended recipe (`recommend_recipe`'s rates per run, not tuned), confirmed
on paired seeds and scored once on a test split, through the `transformers.Trainer`; resumable, with a report.

The user-facing entry points are `hf_plasticity.compare` (Python) and `hf-plasticity compare` (command line).
"""
