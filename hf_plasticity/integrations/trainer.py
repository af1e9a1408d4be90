"""`PlasticityTrainer`: the `transformers.Trainer` that runs a [`PlasticityCallback`] with all its guarantees.

transformers documents callbacks as read-only ("for customizations that require changes in the training loop,
subclass `Trainer` and override the methods you need"), and the things a restore changes are such customizations:
the optimizer's groups (re-drawn blocks and the head at their own learning rate), the files of every save
(``plasticity_config.json`` and the card's plasticity section) and the card `Trainer.create_model_card` writes. So
the mixin overrides exactly the methods the `Trainer` documents for this, and the callback does the rest from its
events.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from ..core.optim import unwrap_optimizer
from ..core.unwrap import unwrap_model
from .callback import PlasticityCallback
from .hub import add_plasticity_files


class PlasticityTrainerMixin:
    """Mix into a `transformers.Trainer` subclass (first among its bases) to run a [`PlasticityCallback`] in it:
    ``class MyTrainer(PlasticityTrainerMixin, MyBaseTrainer)``. [`PlasticityTrainer`] is `Trainer` with it.

    - `create_optimizer`: the one-shot restore runs here, before the optimizer exists and before the model is wrapped
      for several processes (a resumed run puts the checkpoint's restore record back instead); with ``reinit_lr``,
      ``head_lr`` or ``layer_decay`` on the callback, the optimizer ``args.optim`` names is built over
      [`plasticity_param_groups`], so the Trainer's scheduler, checkpoints and resumes see every group.
    - `save_model` (final saves and every checkpoint) and `create_model_card`: ``plasticity_config.json`` and the
      card's plasticity section, with every optimizer group's learning rate, are added to the folder.
    - `add_callback`: a [`PlasticityCallback`] added after construction is tied to the trainer too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Tied before `Trainer.__init__` ends with `on_init_end`, where the callback checks its trainer.
        given = [kwargs.get("callbacks")] + [a for a in args if isinstance(a, (list, tuple))]
        for callbacks in given:
            for callback in callbacks or []:
                if isinstance(callback, PlasticityCallback):
                    callback.bind(self)
        super().__init__(*args, **kwargs)
        callback = self.plasticity_callback
        if callback is not None and callback.own_rates and self.optimizer is not None:
            raise ValueError(
                "PlasticityCallback(reinit_lr=..., head_lr=..., layer_decay=...) builds the optimizer, and this "
                "Trainer was given one (`optimizers=`): drop `optimizers=` (the Trainer's scheduler still applies; "
                "`optimizer_cls_and_kwargs=` or `args.optim` choose the optimizer class), or drop those arguments."
            )

    @property
    def plasticity_callback(self) -> PlasticityCallback | None:
        """The [`PlasticityCallback`] this trainer runs (the live instance: transformers may replace it on resume)."""
        found = [c for c in self.callback_handler.callbacks if isinstance(c, PlasticityCallback)]
        for callback in found:
            callback.bind(self)
        return found[0] if found else None

    def add_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        super().add_callback(callback)
        self.plasticity_callback  # noqa: B018  (ties a PlasticityCallback added now to this trainer)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        callback = self.plasticity_callback
        if self.optimizer is None and callback is not None:
            opt_model = self.model if model is None else model
            built: list[torch.optim.Optimizer] = []

            def build() -> None:  # inside the restore's transaction: an optimizer that cannot be built undoes it
                groups = callback.param_groups(opt_model, self.args)
                if groups is not None:
                    if self.optimizer_cls_and_kwargs is not None:
                        optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
                    else:
                        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                    built[:] = [optimizer_cls(groups, **optimizer_kwargs)]

            callback.prepare(self, opt_model, build=build)
            if built:
                self.optimizer = built[0]
                return self.optimizer
        return super().create_optimizer(model)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        self._add_plasticity_files(output_dir or self.args.output_dir)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            self._add_plasticity_files(self.args.output_dir)

    def plasticity_learning_rates(self) -> list[dict[str, Any]]:
        """Every optimizer group's name, base learning rate (before the schedule), weight decay and size; empty before
        the optimizer exists."""
        if self.optimizer is None:
            return []
        rows = []
        for index, group in enumerate(unwrap_optimizer(self.optimizer).param_groups):
            rows.append(
                {
                    "name": group.get("name") or f"group {index}",
                    "lr": float(group.get("initial_lr", group["lr"])),
                    "weight_decay": float(group.get("weight_decay", 0.0)),
                    "parameters": sum(p.numel() for p in group["params"]),
                }
            )
        return rows

    def _add_plasticity_files(self, folder: str) -> None:
        if self.args.should_save and self.plasticity_callback is not None:
            add_plasticity_files(folder, unwrap_model(self.model), learning_rates=self.plasticity_learning_rates())


class PlasticityTrainer(PlasticityTrainerMixin, Trainer):
    """`transformers.Trainer` running a [`PlasticityCallback`]: the same arguments as `Trainer`.

    Example:

    ```python
    >>> from hf_plasticity import PlasticityCallback, PlasticityTrainer
    >>> trainer = PlasticityTrainer(model=model, args=args, train_dataset=train_ds,
    ...     callbacks=[PlasticityCallback(reinit_lr=1e-3, layer_decay=0.9)])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """
