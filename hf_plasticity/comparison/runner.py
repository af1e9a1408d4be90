"""One fine-tuning run of a comparison, through the `transformers.Trainer` (so ``accelerate launch`` runs it on one
GPU, several GPUs or several nodes, and it runs on CPU for small data), and its record.

Every run of every arm is built the same way: the model loaded fresh with the seed set first (the same seed gives the
same new head in every arm), for the ``recommended`` arm its recipe's diagnostic pass (forward passes only; the RNG is
left as it was, so the head and the data order stay paired), `TrainingArguments` from the budget (AdamW, linear warmup
then cosine decay, the seed's data order), the arm's optimizer handed to the `Trainer`, the validation accuracy after
every epoch, and, in the confirmation phase only, the test accuracy once at the end. A strategy arm whose schedule acts
during training (``redo``, ``cbp``, ``rifle``) trains in a [`PlasticityTrainer`] with a [`PlasticityCallback`] of its
default config (``restore=False``: what it does before training is [`prepare_arm`]'s), which applies its resets as the
schedule says; the record counts them.

The ``lp_ft`` arm (LP-FT, Kumar et al., ICLR 2022) trains in two phases, each a `Trainer` of its own with its own
optimizer and its own warmup and cosine schedule over its epochs (as the benchmark's loop starts a phase:
``benchmarks/recipe.py``), on the same freshly loaded model with the same new head:

- the linear probe, the first [`probe_epochs`] epochs: every parameter outside the head frozen (``requires_grad``
  False, restored after), AdamW over the head alone at the own learning rate, the model in eval mode but its head
  during the training steps (the pretrained features and BatchNorm statistics unchanged, as in the benchmark);
- the fine-tuning phase, the rest of the epochs: everything, the backbone at the backbone learning rate and the head at
  the own learning rate, standard fine-tuning's optimizer.

Data order: the `Trainer`'s seeded sampler (accelerate's ``SeedableRandomSampler``) shuffles epoch ``e`` with seed
``data_seed + e``, and a second `Trainer` counts its epochs from 0 again, so with ``data_seed=seed`` the fine-tuning
phase would repeat the probe's orders. It gets ``data_seed=seed + probe_epochs`` instead: its epochs continue the
seed's orders, and every epoch of an ``lp_ft`` run reads the training split in the order the same epoch of the same
seed reads it in every other arm (as the benchmark's runs do: they draw each epoch's order from the seed and the
epoch). Had the orders repeated, the pairing would still hold (a run's order is a function of its seed), only loosened
in the later epochs; ``tests/test_compare_lpft.py`` checks that they do not. The fine-tuning phase's `Trainer` sets
the seed again, so its dropout draws are not those of the same epochs in another arm; the seed pairs the new head and
the data order, not those draws.

The validation accuracy after every epoch of both phases makes one curve; the test accuracy is read once, at the end.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.collectives import process_group_warning, run_on_main
from ..integrations.trainer_adapter import trains_together
from . import arms
from .arms import (
    LP_FT,
    RECOMMENDED,
    check_lp_ft,
    head_modules,
    periodic_config,
    prepare_arm,
    probe_epochs,
    probe_mode,
    probing,
    recipe_for_run,
)
from .store import run_key

TUNE, CONFIRM = "tune", "confirm"


@dataclass(frozen=True)
class Budget:
    """What every run of a comparison gets.

    Args:
        epochs: passes over the training split.
        batch_size: examples per device and step.
        weight_decay: AdamW weight decay (not on biases and norms).
        warmup: share of the steps with a linear warmup (then cosine decay to 0).
    """

    epochs: int = 3
    batch_size: int = 32
    weight_decay: float = 0.05
    warmup: float = 0.1


@dataclass(frozen=True)
class RunSpec:
    """One run: phase (``"tune"`` or ``"confirm"``), arm, its two learning rates (None for an untuned arm: the run
    chooses them) and the seed."""

    phase: str
    arm: str
    backbone_lr: float | None
    own_lr: float | None
    seed: int

    @property
    def key(self) -> str:
        return run_key(self.phase, self.arm, self.backbone_lr, self.own_lr, self.seed)


def accuracy(eval_prediction: Any) -> dict[str, float]:
    """The `Trainer`'s ``compute_metrics``: the share of examples whose top logit is the label. An example with a
    non-finite logit (a diverged run) counts as wrong: ``argmax`` would read NaNs as class 0, so a diverged run would
    score the share of class 0 and could win the tuning."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    finite = np.isfinite(logits).all(axis=-1)
    return {"accuracy": float(((np.argmax(logits, axis=-1) == labels) & finite).mean())}


def head_fingerprint(model: Any) -> str:
    """A short hash of the classification head's initial values (equal across the arms of one seed: paired runs)."""
    import hashlib

    from ..core.architectures import get_layout

    layout = get_layout(model)
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if layout.in_head(name):
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def versions() -> dict[str, str]:
    import datasets
    import torch
    import transformers

    from ..core.version import __version__

    return {
        "hf_plasticity": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "python": platform.python_version(),
    }


def _ddp_options() -> dict[str, Any]:
    """Several processes (``torchrun``, ``accelerate launch``): DDP should not search for unused parameters (every
    parameter of a classifier gets a gradient); without GPUs they need the gloo backend and ``use_cpu`` (without it
    the `Trainer` does not wrap the model in DDP on CPU, and each process would train a copy of its own)."""
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return {}
    cpu = {} if torch.cuda.is_available() else {"ddp_backend": "gloo", "use_cpu": True}
    return {"ddp_find_unused_parameters": False, **cpu}


def _device(args: Any) -> str:
    import torch

    device = args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return f"{device.type} ({name}) x {args.world_size}"


def _resets(callback: Any) -> dict[str, Any] | None:
    """What a [`PlasticityCallback`]'s periodic strategy did in the run: its name, the number of resets and of entries
    they re-drew (None without a callback)."""
    if callback is None:
        return None
    controller = callback.controller
    return {
        "strategy": controller.name,
        "resets": int(controller.total_resets),
        "reinitialized": int(controller.total_reinitialized),
    }


def _arguments(
    workdir: str, budget: Budget, seed: int, *, epochs: int, learning_rate: float, data_seed: int | None = None
) -> Any:
    """The `TrainingArguments` of one run (or of one phase of an ``lp_ft`` run): AdamW, linear warmup then cosine
    decay over its ``epochs``, the validation accuracy after every epoch, ``seed``'s data order (``data_seed``:
    another epoch offset of it, see [`train_run`])."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=workdir,
        num_train_epochs=epochs,
        per_device_train_batch_size=budget.batch_size,
        per_device_eval_batch_size=budget.batch_size,
        learning_rate=learning_rate,
        weight_decay=budget.weight_decay,
        warmup_steps=budget.warmup,
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to=[],
        seed=seed,
        data_seed=seed if data_seed is None else data_seed,
        remove_unused_columns=False,  # the datasets make pixel values on the fly from the image column
        disable_tqdm=True,  # the comparison shows one bar over its runs
        dataloader_pin_memory=torch.cuda.is_available(),  # no warning per run on CPU
        **_ddp_options(),
    )


def _probe_trainer_class(model: Any) -> type:
    """The `Trainer` class for the linear probe of an ``lp_ft`` run on ``model``: before every training forward pass
    (the `Trainer` puts the model in training mode at each step) the model is put in [`probe_mode`], the frozen
    backbone in eval mode and the head in training mode; evaluation is the `Trainer`'s own (eval mode throughout)."""
    from transformers import Trainer

    head = head_modules(model)  # once, not at every step

    class ProbeTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if model.training:  # a training step (evaluation passes run in eval mode)
                probe_mode(self.model, head)
            return super().compute_loss(model, inputs, *args, **kwargs)

    return ProbeTrainer


def train_run(
    spec: RunSpec,
    *,
    load_model: Callable[[], Any],
    train: Any,
    val: Any,
    test: Any | None,
    budget: Budget,
    workdir: str,
    calibration: Any = None,
) -> dict[str, Any]:
    """Fine-tunes one freshly loaded model as ``spec`` says.

    Args:
        spec: the run.
        load_model: returns the pretrained model with its new head (called after the seed is set).
        train, val, test: datasets that yield ``pixel_values`` and ``labels`` (test None in the tuning phase: it is
            never read there).
        budget: epochs, batch size, weight decay, warmup.
        workdir: the `Trainer`'s output folder (nothing is saved there but its logs).
        calibration: training batches for data-dependent strategies.

    Returns:
        `dict`: the run's record (see [`RunStore`]): its key, phase, arm, the learning rates it trained at
        (``config``), seed, head hash, what was re-drawn before training, validation curve, test accuracy, seconds,
        versions, device, for the ``recommended`` arm what its diagnostic pass read and chose (``recipe``,
        `FineTuneRecipe.to_dict()`; None for the other arms), and for a strategy arm that acts during training its
        resets (``periodic``: ``{"strategy", "resets", "reinitialized"}``, the number of resets and of entries they
        re-drew; None for the other arms), and for ``lp_ft`` the epochs of its linear probe (``probe_epochs``) and
        the share of the epochs they were drawn from (``probe_fraction``, [`PROBE_FRACTION`]: a resume refuses runs
        of another), both None for the other arms (an lp_ft run's ``val_curve`` and ``train_loss`` hold the probe's
        epochs, then the fine-tuning phase's).
    """
    from transformers import PrinterCallback, Trainer, set_seed

    from ..integrations.callback import PlasticityCallback
    from ..integrations.trainer import PlasticityTrainer

    start = time.perf_counter()
    set_seed(spec.seed)
    model = load_model()
    head = head_fingerprint(model)
    check_lp_ft([spec.arm], budget.epochs)  # compare refused it up front; a direct call gets the same refusal
    probe = probe_epochs(budget.epochs) if spec.arm == LP_FT else None
    args = _arguments(
        workdir,
        budget,
        spec.seed,
        epochs=budget.epochs - (probe or 0),
        learning_rate=spec.backbone_lr if spec.backbone_lr is not None else 0.0,  # the recommended arm's: below
        data_seed=spec.seed + (probe or 0),  # lp_ft's fine-tuning phase: the seed's orders from its epoch `probe` on
    )
    apart = process_group_warning(trains_together(args))
    if apart:  # the records would hold one process's copy, trained on its share of the data
        raise RuntimeError(f"compare cannot run this launch: {apart}")
    recipe, backbone_lr, own_lr = None, spec.backbone_lr, spec.own_lr
    if spec.arm == RECOMMENDED:
        model.to(args.device)  # the Trainer's device set-up (under a distributed launch, the process group exists
        # after it), and the pass on the device the run trains on, as the Trainer would place the model
        # measured on rank 0 and broadcast: every process trains at the same rates even where two passes could
        # differ by rounding (a ratio right at the rule's threshold on non-deterministic GPU kernels)
        recipe = run_on_main(
            lambda: recipe_for_run(model, train, seed=spec.seed, epochs=budget.epochs, batch_size=budget.batch_size)
        )
        backbone_lr, own_lr = recipe.backbone_lr, recipe.head_lr
        args.learning_rate = backbone_lr

    def trainer_of(cls: type, run_args: Any, optimizer: Any, callbacks: list[Any] | None = None) -> Any:
        """A `Trainer` of class ``cls`` over this run's model and splits (a phase of it, for lp_ft), with no log
        lines per epoch: the comparison shows one bar over its runs."""
        built = cls(
            model=model,
            args=run_args,
            train_dataset=train,
            eval_dataset=val,
            compute_metrics=accuracy,
            optimizers=(optimizer, None),
            callbacks=callbacks,
        )
        built.remove_callback(PrinterCallback)
        return built

    history: list[dict[str, Any]] = []
    if probe is not None:  # LP-FT's linear probe: the head alone, its own optimizer and schedule over its epochs
        from ..integrations.trainer_optimizer import plasticity_optimizer

        probe_args = _arguments(workdir, budget, spec.seed, epochs=probe, learning_rate=own_lr)
        with probing(model):  # the backbone frozen, so the optimizer holds the head alone; thawed after
            probe_optimizer = plasticity_optimizer(model, probe_args, reinit_lr=own_lr)
            prober = trainer_of(_probe_trainer_class(model), probe_args, probe_optimizer)
            prober.train()
        model.train()  # out of the probe's modes: the fine-tuning phase trains every module
        history += prober.state.log_history
    optimizer, redrawn = prepare_arm(spec.arm, model, args, own_lr=own_lr, calibration=calibration, recipe=recipe)
    periodic = periodic_config(spec.arm)
    # the periodic resets, through the library's Trainer route; the optimizer (and its groups) stays the arm's
    # (its console line per run, "no one-shot restore: ...", would go into the printed report: the record says what
    # it did, so announce=False keeps that line to the logger; anything else printed during training still shows)
    callback = PlasticityCallback(periodic, restore=False, announce=False) if periodic is not None else None
    if callback is None:
        trainer = trainer_of(Trainer, args, optimizer)
    else:
        trainer = trainer_of(PlasticityTrainer, args, optimizer, [callback])
    trainer.train()
    history += trainer.state.log_history
    curve = [entry["eval_accuracy"] for entry in history if "eval_accuracy" in entry]  # both phases of lp_ft
    losses = [entry["loss"] for entry in history if "loss" in entry]
    test_accuracy = trainer.evaluate(test, metric_key_prefix="test")["test_accuracy"] if test is not None else None
    record = {
        "key": spec.key,
        "phase": spec.phase,
        "arm": spec.arm,
        "config": {"backbone_lr": backbone_lr, "own_lr": own_lr},
        "seed": spec.seed,
        "head_init": head,
        "redrawn": redrawn,
        "recipe": recipe.to_dict() if recipe else None,
        "periodic": _resets(callback),
        "probe_epochs": probe,
        "probe_fraction": arms.PROBE_FRACTION if probe is not None else None,  # not in the key: resume checks it
        "val_curve": curve,
        "val_accuracy": curve[-1],
        "train_loss": losses,
        "test_accuracy": test_accuracy,
        "seconds": round(time.perf_counter() - start, 3),
        "versions": versions(),
        "device": _device(args),
    }
    return record
