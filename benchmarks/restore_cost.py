"""Restore cost at real scale: restore time divided by the time of one training step, and peak extra memory.

Builds ViT-B/16, ConvNeXt-T and ResNet-50 from their standard configs (random weights, 224 px, 10 labels) and
measures, in one run per model:
- one AdamW training step at batch 8 (median of 3 after a warm-up);
- each restore (data-free and data-dependent), as a ratio to that step;
- the peak resident memory *above* the level before the call, against the model's own size.

Usage:
    python benchmarks/restore_cost.py [--models vit convnext resnet] [--threads 2] [--output docs/restore_cost.json]
        [--only shrink redo units dash diagnose]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from hf_plasticity import (
    DashConfig,
    LayerReinitConfig,
    ReDoConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    diagnose,
    prepare_pretrained,
)

BATCH = 8
CALIBRATION_BATCHES = 8

MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "vit": lambda: ViTForImageClassification(ViTConfig(num_labels=10)),  # ViT-B/16, 224 px
    "convnext": lambda: ConvNextForImageClassification(ConvNextConfig(num_labels=10)),  # ConvNeXt-T
    "resnet": lambda: ResNetForImageClassification(ResNetConfig(num_labels=10)),  # ResNet-50
}

# (row label, config factory, needs data); a factory of None is a `diagnose` pass, not a restore
ARMS: list[tuple[str, Callable[[], Any] | None, bool]] = [
    ("reinit_layers (1 block)", lambda: LayerReinitConfig(num_blocks=1), False),
    ("selective magnitude p=0.01", lambda: SelectiveReinitConfig(utility="magnitude", fraction=0.01), False),
    (
        f"selective grad_x_weight p=0.01, {CALIBRATION_BATCHES} batches",
        lambda: SelectiveReinitConfig(utility="grad_x_weight", fraction=0.01, calibration_batches=CALIBRATION_BATCHES),
        True,
    ),
    ("shrink_perturb 0.8/0.1", lambda: ShrinkPerturbConfig(shrink=0.8, perturb=0.1), False),
    (
        f"redo tau=0.1, {CALIBRATION_BATCHES} batches",
        lambda: ReDoConfig(tau=0.1, calibration_batches=CALIBRATION_BATCHES),
        True,
    ),
    (
        f"selective units grad_x_weight p=0.01, {CALIBRATION_BATCHES} batches",
        lambda: SelectiveReinitConfig(granularity="unit", fraction=0.01, calibration_batches=CALIBRATION_BATCHES),
        True,
    ),
    (f"dash, {CALIBRATION_BATCHES} batches", lambda: DashConfig(calibration_batches=CALIBRATION_BATCHES), True),
    (f"diagnose, {CALIBRATION_BATCHES} batches", None, True),
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the resident set size in a thread; `extra` is the peak above the level at entry."""

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def batches(num: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "pixel_values": torch.randn(BATCH, 3, 224, 224, generator=generator),
            "labels": torch.randint(0, 10, (BATCH,), generator=generator),
        }
        for _ in range(num)
    ]


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(name: str, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Each restore is timed between two training steps, and divided by their mean (the machine is shared)."""
    torch.manual_seed(0)
    model = MODELS[name]()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    data = batches(CALIBRATION_BATCHES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    train_step(model, optimizer, data[0])  # warm-up
    with PeakMemory() as step_memory:
        train_step(model, optimizer, data[0])
    rows = []
    for label, make_config, needs_data in ARMS:
        if only and not any(word in label for word in only):
            continue
        before = train_step(model, optimizer, data[0])
        with PeakMemory() as memory:
            if make_config is None:
                seconds = diagnose(model, data, batches=CALIBRATION_BATCHES).seconds
            else:
                config, arm_data = make_config(), data if needs_data else None
                seconds = prepare_pretrained(model, config, data=arm_data, force=True, diagnostics=False).seconds
        after = train_step(model, optimizer, data[0])
        step = statistics.mean([before, after])
        rows.append(
            {
                "model": name,
                "strategy": label,
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "step_s": round(step, 3),
                "restore_s": round(seconds, 3),
                "restore_over_step": round(seconds / step, 2),
                "target_steps": CALIBRATION_BATCHES + 1 if needs_data else 1,
                "peak_extra_MB": round(memory.extra / 2**20, 1),
                "model_MB": round(model_bytes / 2**20, 1),
                "train_step_peak_extra_MB": round(step_memory.extra / 2**20, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | strategy | restore / step | target | restore (s) | step (s) | peak extra MB | model MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['params_M']}M) | {r['strategy']} | {r['restore_over_step']} | <= {r['target_steps']} "
            f"| {r['restore_s']} | {r['step_s']} | {r['peak_extra_MB']} | {r['model_MB']} |"
        )
    return "\n".join(lines)


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # Large tensors then live in their own mappings and go back to the OS when freed, so the resident set
        # size tracks live memory (glibc otherwise keeps freed memory and hides later peaks).
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="Optional JSON file for the rows.")
    parser.add_argument("--only", nargs="+", default=None, help="Only the rows whose label contains one of these.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for name in args.models for row in measure(name, args.only)]
    print(markdown(rows))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
