"""Run by tests/test_distributed.py on two CPU processes:

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        --main_process_port PORT tests/dist_script.py OUTPUT_DIR

Each rank writes ``OUTPUT_DIR/rank{r}.json`` with checksums of its parameters (after the restore, after periodic
resets, at the end) for (1) a Trainer run with PlasticityCallback under DDP, (2) a plain Accelerate loop with
PlasticityController where rank 1 has fewer calibration batches than rank 0, and (3) the recommended recipe,
`PlasticityCallback(reinit_lr=...)` in a `PlasticityTrainer`, straight and stopped then resumed. The strategy of (1)
and (2) picks the entries it re-draws from the labels it reads, and every rank reads a different shard: ranks agree
only if the plan is shared.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_plasticity import (  # noqa: E402
    PlasticityCallback,
    PlasticityController,
    PlasticityTrainer,
)
from tests import periodic_strategy  # noqa: E402
from tests.models import batches, build, perturb, pretrained  # noqa: E402
from tests.periodic_strategy import EveryNConfig  # noqa: E402
from tests.test_callback import StopAt, training_args  # noqa: E402
from tests.test_training import learnable_dataset  # noqa: E402

RANK = int(os.environ.get("RANK", "0"))
WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))


def checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes (parameters only: BatchNorm running buffers differ across ranks)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Recorder(TrainerCallback):
    """Runs after PlasticityCallback: the checksum right after the restore, after each reset step, at the end."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.sums: dict[str, str] = {}
        self.shard_label_sum = 0

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self.sums["before"] = checksum(model)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.sums["restore"] = checksum(model)
        first = next(iter(train_dataloader.base_dataloader))
        self.shard_label_sum = int(first["labels"].sum())

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self.sums[f"step{state.global_step}"] = checksum(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.sums["end"] = checksum(model)


def trainer_run(out: Path) -> dict:
    model = pretrained("convnext", _model_dir(out, "trainer"))
    callback = PlasticityCallback(EveryNConfig(every_n_steps=2, at_start=True, scored=True), diagnostics_every=2)
    recorder = Recorder(every=2)
    ddp = {"ddp_backend": "gloo", "ddp_find_unused_parameters": False} if WORLD_SIZE > 1 else {}
    args = training_args(out / "trainer", per_device_train_batch_size=8, **ddp)
    trainer = PlasticityTrainer(model=model, args=args, train_dataset=learnable_dataset(64),
                                callbacks=[callback, recorder])  # fmt: skip
    trainer.train()
    return {
        "sums": recorder.sums,
        "shard_label_sum": recorder.shard_label_sum,
        "steps": callback.controller.strategy.steps,
        "logged": len(callback.history),
        "batches_read": len(callback.controller.data.read) if callback.controller.data is not None else 0,
    }


def accelerate_run(out: Path) -> dict:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)  # (save_pretrained writes on the main process only once a process group exists)
    model = perturb(build("convnext"))
    # Uneven calibration data: rank 0 holds 3 batches, rank 1 a single one (a different one).
    data = batches(3 if RANK == 0 else 1, size=4, seed=10 + RANK)
    controller = PlasticityController(
        EveryNConfig(every_n_steps=1, at_start=True, scored=True, calibration_batches=3), data=data
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sums = {"before": checksum(model)}
    controller.restore(model, optimizer=optimizer)  # before wrapping, on every process
    sums["restore"] = checksum(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    controller.attach(accelerator.unwrap_model(model))
    train = batches(3, size=4, seed=20 + RANK)
    for step, batch in enumerate(train, start=1):
        loss = nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        controller.step(step, optimizer=optimizer)
        sums[f"step{step}"] = checksum(accelerator.unwrap_model(model))
    controller.detach()
    sums["end"] = checksum(accelerator.unwrap_model(model))
    return {
        "sums": sums,
        "batches_read": len(controller.data.read),
        "steps": controller.strategy.steps,
        "details": accelerator.unwrap_model(model).config.plasticity.get("details"),
    }


class GroupRates(TrainerCallback):
    def __init__(self) -> None:
        self.rates: list[dict[str, float]] = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append({g["name"]: g["lr"] for g in optimizer.param_groups})


def grouped_trainer(out: Path, extra: list, **settings) -> tuple[PlasticityTrainer, nn.Module]:
    torch.manual_seed(0)  # (built, not loaded: save_pretrained writes on the main process only once a group exists)
    model = perturb(build("convnext"))
    ddp = {"ddp_backend": "gloo", "ddp_find_unused_parameters": False} if WORLD_SIZE > 1 else {}
    args = training_args(out, per_device_train_batch_size=8, warmup_steps=1, lr_scheduler_type="cosine", **ddp,
                         **settings)  # fmt: skip
    callback = PlasticityCallback(reinit_lr=1e-2)
    trainer = PlasticityTrainer(model=model, args=args, train_dataset=learnable_dataset(64),
                                callbacks=[callback, *extra])  # fmt: skip
    return trainer, model


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def grouped_run(out: Path) -> dict:
    """The recipe straight, then stopped after a checkpoint at step 2 and resumed from it: the same groups and the
    same end weights on every rank; rank 0 writes plasticity_config.json and the card's rates into the output."""
    rates = GroupRates()
    trainer, model = grouped_trainer(out / "grouped", [rates])
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in trainer.optimizer.param_groups}
    card = (out / "grouped" / "out" / "README.md").read_text() if RANK == 0 else ""
    barrier()
    settings = dict(save_strategy="steps", save_steps=2)
    first, _ = grouped_trainer(out / "resumed", [StopAt(2)], **settings)
    first.train()
    barrier()
    resumed_trainer, resumed = grouped_trainer(out / "resumed", [], **settings)
    resumed_trainer.train(resume_from_checkpoint=str(out / "resumed" / "out" / "checkpoint-2"))
    return {
        "rates": rates.rates,
        "sizes": sizes,
        "end": checksum(model),
        "resumed_end": checksum(resumed),
        "files": sorted(p.name for p in (out / "grouped" / "out").iterdir()) if RANK == 0 else [],
        "card_rates": [line for line in card.splitlines() if line.startswith("| `redrawn` |")],
    }


def _model_dir(out: Path, name: str) -> Path:
    directory = out / f"{name}-model-rank{RANK}"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def main() -> None:
    out = Path(sys.argv[1])
    faulthandler.dump_traceback_later(
        float(os.environ.get("DIST_SCRIPT_TIMEOUT", "120")) - 10 * RANK, exit=True
    )  # no silent hang
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    periodic_strategy.register()
    result = {
        "world_size": WORLD_SIZE,
        "trainer": trainer_run(out),
        "accelerate": accelerate_run(out),
        "grouped": grouped_run(out),
    }
    (out / f"rank{RANK}.json").write_text(json.dumps(result, indent=2))
    if torch.distributed.is_initialized():  # a clean shutdown: a process group left to exit with the interpreter
        torch.distributed.barrier()  # can abort a rank ("terminate called without an active exception")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
