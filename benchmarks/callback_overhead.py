"""Overhead of PlasticityCallback monitoring on training wall time (a benchmark, not a test).

Trains the same tiny ConvNeXt (32x32, batch 32) for ``--steps`` optimizer steps with the Trainer, without the
callback and with it (diagnostics every 100 steps, 2 probe batches, no restore), alternating the two arms
``--repeats`` times in one process, and prints the median wall time of each and their ratio, plus the share of the
monitored runs' wall time spent inside the callback's events (timed in the same run, so it does not suffer from the
run-to-run noise of a shared machine):

    .venv/bin/python benchmarks/callback_overhead.py --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    ConvNextConfig,
    ConvNextForImageClassification,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_plasticity import PlasticityCallback, PlasticityTrainer  # noqa: E402


def dataset(n: int = 2048) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (n,), generator=generator)
    pixels = 0.3 * torch.randn(n, 3, 32, 32, generator=generator)
    pixels[torch.arange(n), labels] += 1.0
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")


class TimedCallback(PlasticityCallback):
    """PlasticityCallback that adds up the wall time spent in its own events."""

    seconds = 0.0

    def _timed(self, event, *args, **kwargs):
        start = time.perf_counter()
        try:
            return event(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def on_train_begin(self, *args, **kwargs):
        return self._timed(super().on_train_begin, *args, **kwargs)

    def on_step_end(self, *args, **kwargs):
        return self._timed(super().on_step_end, *args, **kwargs)

    def on_train_end(self, *args, **kwargs):
        return self._timed(super().on_train_end, *args, **kwargs)


def train_seconds(data: Dataset, steps: int, callbacks: list) -> float:
    torch.manual_seed(0)
    model = ConvNextForImageClassification(
        ConvNextConfig(hidden_sizes=[16, 32], depths=[2, 2], num_stages=2, num_labels=3)
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=32,
            max_steps=steps,
            learning_rate=1e-3,
            logging_steps=50,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = PlasticityTrainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--diagnostics-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    data = dataset()
    train_seconds(data, 20, [])  # warm-up (imports, allocator)
    plain, monitored, shares = [], [], []
    for _ in range(args.repeats):
        plain.append(train_seconds(data, args.steps, []))
        callback = TimedCallback(restore=False, diagnostics_every=args.diagnostics_every)
        monitored.append(train_seconds(data, args.steps, [callback]))
        shares.append(callback.seconds / monitored[-1])
    base, with_callback = statistics.median(plain), statistics.median(monitored)
    print(f"plain runs (s): {[round(t, 2) for t in plain]}")
    print(f"monitored runs (s): {[round(t, 2) for t in monitored]}")
    print(f"time inside the callback, per monitored run: {[f'{s:.2%}' for s in shares]}")
    print(
        "| model | steps | diagnostics every | without callback (s, median) | with callback (s, median) | ratio | "
        "time inside the callback (median) |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| ConvNeXt 16/32, 32 px, batch 32 | {args.steps} | {args.diagnostics_every} | {base:.2f} | "
        f"{with_callback:.2f} | {with_callback / base:.3f} | {statistics.median(shares):.2%} |"
    )


if __name__ == "__main__":
    main()
